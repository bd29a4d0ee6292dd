//! QUIC error codes ferry puts on streams and connections, so the far end can tell the
//! user *why* a stream ended.
//!
//! Stream reset codes are of two kinds. The relay's own ([`RESET_PEER_LOST`],
//! [`RESET_SHUTDOWN`], [`RESET_QUOTA_EXCEEDED`]) say something about the relay, so only
//! the relay may send them; end-to-end codes ([`RESET_CANCELLED`] and the range [`END_TO_END`], where the host's
//! refusals live) are a host's or client's word to the other end and travel through the
//! relay unchanged. The relay passes a peer's code through [`from_peer`], so a peer
//! cannot make the other end believe the relay is shutting down.

use std::ops::RangeInclusive;

/// Stream reset: the other side of the session went away (host or client lost).
pub const RESET_PEER_LOST: u32 = 0x01;
/// Stream reset / connection close: the relay is shutting down.
pub const RESET_SHUTDOWN: u32 = 0x02;
/// Stream reset: the relay ended the session because the host's byte quota is used up
/// (the tier's `over_quota_rate` unset: such sessions end at the next check).
pub const RESET_QUOTA_EXCEEDED: u32 = 0x04;
/// Stream reset: the session was abandoned by the side that reset it.
pub const RESET_CANCELLED: u32 = 0x03;
/// Stream reset by the host: this client's key is not on the host's allow-list.
pub const RESET_NOT_ALLOWED: u32 = 0x20;
/// Stream reset by the host: the host could not reach the local service it forwards to.
pub const RESET_SERVICE_UNREACHABLE: u32 = 0x21;
/// Stream reset by the host: the end-to-end handshake did not verify.
pub const RESET_HANDSHAKE_FAILED: u32 = 0x22;

/// Stream reset codes a host or client may send to the other end, beside
/// [`RESET_CANCELLED`]: passed through the relay unchanged (room for codes to come).
pub const END_TO_END: RangeInclusive<u32> = 0x20..=0x3f;

/// The code the relay sends on when a peer reset or stopped a stream with `code`: an
/// end-to-end code unchanged; the relay's own codes, and any other, as
/// [`RESET_PEER_LOST`] (from the other end's view, the peer went away).
pub fn from_peer(code: u64) -> u32 {
    match u32::try_from(code) {
        Ok(code) if code == RESET_CANCELLED || END_TO_END.contains(&code) => code,
        _ => RESET_PEER_LOST,
    }
}

/// Connection close: a newer registration of the same host replaced this connection.
pub const CLOSE_REPLACED: u32 = 0x10;
/// Connection close: the relay is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 0x11;
/// Connection close: the peer broke the protocol.
pub const CLOSE_PROTOCOL: u32 = 0x12;
/// Connection close: the host or client is done (a normal close).
pub const CLOSE_DONE: u32 = 0x00;
/// Connection close: refused before any message, too many connections or attempts from
/// this address (the relay's per-source rate or connection cap).
pub const CLOSE_RATE_LIMITED: u32 = 0x13;
/// Connection close: refused before any message, the relay has no room for another
/// connection now (its connection or pending-handshake cap).
pub const CLOSE_BUSY: u32 = 0x14;
/// Connection close: the connection opened no stream within the relay's handshake timeout.
pub const CLOSE_HANDSHAKE_TIMEOUT: u32 = 0x15;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_cannot_speak_for_the_relay() {
        for code in [RESET_CANCELLED, RESET_NOT_ALLOWED, RESET_SERVICE_UNREACHABLE, RESET_HANDSHAKE_FAILED, 0x3f] {
            assert_eq!(from_peer(code.into()), code, "an end-to-end code passes");
        }
        for code in [
            0,
            u64::from(RESET_PEER_LOST),
            u64::from(RESET_SHUTDOWN),
            u64::from(RESET_QUOTA_EXCEEDED),
            0x11,
            0x40,
            1 << 40,
        ] {
            assert_eq!(from_peer(code), RESET_PEER_LOST, "{code:#x} from a peer");
        }
    }
}
