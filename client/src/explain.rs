//! Turning hop-level failures into explanations a person can act on.
//!
//! End-to-end reset codes travel through the relay unchanged, and the relay's own codes
//! reach the client only from the relay (it maps any other code a peer sends to "the other
//! side went away", `ferry_proto::codes::from_peer`), so the client can say *why* a session
//! ended; TLS hops carry no codes and read as "cut". A relay
//! that refuses a connection before any message (too many attempts from this address, no
//! room) closes it with a code that reads as the refusal it stands for. A host's refusal
//! inside the end-to-end handshake (no such service) becomes [`Error::NoSuchService`].

use ferry_link::{FramedError, LinkError};
use ferry_proto::RefuseReason;
use ferry_proto::codes::{
    CLOSE_BUSY, CLOSE_HANDSHAKE_TIMEOUT, CLOSE_PROTOCOL, CLOSE_RATE_LIMITED, CLOSE_REPLACED, CLOSE_SHUTDOWN,
    RESET_HANDSHAKE_FAILED, RESET_NOT_ALLOWED, RESET_PEER_LOST, RESET_QUOTA_EXCEEDED, RESET_SERVICE_UNREACHABLE,
    RESET_SHUTDOWN,
};

use crate::Error;

impl From<ferry_proto::Error> for Error {
    fn from(e: ferry_proto::Error) -> Self {
        match e {
            // The host's answer in the handshake: said in the client's terms, so callers can
            // tell it from a broken peer without looking into the wire layer's error.
            ferry_proto::Error::NoSuchService { service } => Error::NoSuchService { service },
            other => Error::Proto(other),
        }
    }
}

impl From<LinkError> for Error {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Reset(code) => reset_error(code),
            LinkError::Closed(code) => close_error(code),
            other => Error::Hop(other),
        }
    }
}

impl From<FramedError> for Error {
    fn from(e: FramedError) -> Self {
        match e {
            FramedError::Closed => Error::Cut("the other end closed the stream early"),
            FramedError::Timeout => Error::Timeout("the other end did not answer in time"),
            FramedError::Proto(e) => Error::Proto(e),
            FramedError::Link(e) => e.into(),
            other => Error::Stream(other),
        }
    }
}

/// Explains a connection close code.
fn close_error(code: u64) -> Error {
    match u32::try_from(code).unwrap_or(u32::MAX) {
        CLOSE_SHUTDOWN => Error::Cut("the relay is shutting down"),
        CLOSE_REPLACED => Error::Replaced,
        CLOSE_PROTOCOL => Error::Cut("the relay closed the connection: protocol violation"),
        CLOSE_RATE_LIMITED => Error::Refused(RefuseReason::RateLimited),
        CLOSE_BUSY => Error::Refused(RefuseReason::RelayBusy),
        CLOSE_HANDSHAKE_TIMEOUT => Error::Cut("the relay closed a connection that opened no stream in time"),
        code => Error::RelayClosed { code },
    }
}

/// Explains a stream reset code.
fn reset_error(code: u64) -> Error {
    match u32::try_from(code).unwrap_or(u32::MAX) {
        RESET_PEER_LOST => Error::Cut("the other end went away mid-session"),
        RESET_SHUTDOWN => Error::Cut("the relay is shutting down"),
        RESET_QUOTA_EXCEEDED => Error::Cut(
            "quota exceeded: the host's relay account used up its data for this period (UTC); \
             wait for the next period, or ask the relay's operator for a larger quota",
        ),
        RESET_NOT_ALLOWED => Error::HostRefused("this client's key is not on the host's allow-list"),
        RESET_SERVICE_UNREACHABLE => Error::HostRefused("the host cannot reach the service it forwards to"),
        RESET_HANDSHAKE_FAILED => Error::HostRefused("the handshake did not verify (is the ticket for this host?)"),
        code => Error::StreamReset { code },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_service_reads_as_the_client_s_error() {
        let e = Error::from(ferry_proto::Error::NoSuchService { service: Some("ssh".into()) });
        assert!(matches!(&e, Error::NoSuchService { service: Some(s) } if s == "ssh"), "{e:?}");
        assert_eq!(e.to_string(), "the host has no service `ssh`; ask its owner for a ticket for one of its services");
        assert!(matches!(Error::from(ferry_proto::Error::HostRejected), Error::Proto(_)));
    }

    #[test]
    fn a_refusing_close_reads_as_the_refusal() {
        let text = |code: u32| Error::from(LinkError::Closed(code.into())).to_string();
        assert_eq!(text(CLOSE_RATE_LIMITED), "the relay refused: too many attempts; try again later");
        assert!(text(CLOSE_BUSY).starts_with("the relay refused: "), "{}", text(CLOSE_BUSY));
        assert!(text(CLOSE_HANDSHAKE_TIMEOUT).contains("no stream in time"));
        assert!(text(0x7777).contains("code 0x7777"));
    }

    #[test]
    fn a_session_ended_for_its_quota_says_so() {
        let text = Error::from(LinkError::Reset(RESET_QUOTA_EXCEEDED.into())).to_string();
        assert!(text.starts_with("the session was cut: quota exceeded: "), "{text}");
    }
}
