//! QUIC error codes ferry puts on streams and connections, so the far end can tell the
//! user *why* a stream ended. They travel through the relay unchanged.

/// Stream reset: the other side of the session went away (host or client lost).
pub const RESET_PEER_LOST: u32 = 0x01;
/// Stream reset / connection close: the relay is shutting down.
pub const RESET_SHUTDOWN: u32 = 0x02;
/// Stream reset: the session was abandoned by the side that reset it.
pub const RESET_CANCELLED: u32 = 0x03;
/// Stream reset by the host: this client's key is not on the host's allow-list.
pub const RESET_NOT_ALLOWED: u32 = 0x20;
/// Stream reset by the host: the host could not reach the local service it forwards to.
pub const RESET_SERVICE_UNREACHABLE: u32 = 0x21;
/// Stream reset by the host: the end-to-end handshake did not verify.
pub const RESET_HANDSHAKE_FAILED: u32 = 0x22;

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
