//! Turning hop-level failures into explanations a person can act on.
//!
//! Reset codes travel through the relay unchanged (see `ferry_proto::codes`), so the
//! client can say *why* a session ended; TLS hops carry no codes and read as "cut".

use ferry_link::{FramedError, LinkError};
use ferry_proto::codes::{
    CLOSE_PROTOCOL, CLOSE_REPLACED, CLOSE_SHUTDOWN, RESET_HANDSHAKE_FAILED, RESET_NOT_ALLOWED, RESET_PEER_LOST,
    RESET_SERVICE_UNREACHABLE, RESET_SHUTDOWN,
};

use crate::Error;

impl From<LinkError> for Error {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Reset(code) => reset_error(code),
            LinkError::Closed(code) => close_error(code),
            LinkError::Lost(why) => Error::Cut(format!("the connection to the relay was lost ({why})")),
            other => Error::Cut(other.to_string()),
        }
    }
}

impl From<FramedError> for Error {
    fn from(e: FramedError) -> Self {
        match e {
            FramedError::Closed => Error::Cut("the other end closed the stream early".into()),
            FramedError::Timeout => Error::Timeout("the other end did not answer in time"),
            FramedError::Proto(e) => Error::Proto(e),
            FramedError::Link(e) => e.into(),
            other => Error::Cut(other.to_string()),
        }
    }
}

/// Explains a connection close code.
fn close_error(code: u64) -> Error {
    match u32::try_from(code).unwrap_or(u32::MAX) {
        CLOSE_SHUTDOWN => Error::Cut("the relay is shutting down".into()),
        CLOSE_REPLACED => Error::Cut("this host registered again elsewhere; this connection was replaced".into()),
        CLOSE_PROTOCOL => Error::Cut("the relay closed the connection: protocol violation".into()),
        other => Error::Cut(format!("the relay closed the connection (code {other:#x})")),
    }
}

/// Explains a stream reset code.
fn reset_error(code: u64) -> Error {
    match u32::try_from(code).unwrap_or(u32::MAX) {
        RESET_PEER_LOST => Error::Cut("the other end went away mid-session".into()),
        RESET_SHUTDOWN => Error::Cut("the relay is shutting down".into()),
        RESET_NOT_ALLOWED => Error::HostRefused("this client's key is not on the host's allow-list"),
        RESET_SERVICE_UNREACHABLE => Error::HostRefused("the host cannot reach the service it forwards to"),
        RESET_HANDSHAKE_FAILED => Error::HostRefused("the handshake did not verify (is the ticket for this host?)"),
        other => Error::Cut(format!("the other end reset the stream (code {other:#x})")),
    }
}
