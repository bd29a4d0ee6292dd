//! The client library's error type: every variant reads as a one-line explanation a
//! person can act on.

use std::io;
use std::path::PathBuf;

use ferry_proto::{CertPin, RefuseReason};

/// What can go wrong while hosting or connecting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The relay could not be reached or the hop failed.
    #[error("cannot reach the relay at {addr}: {reason}")]
    RelayUnreachable {
        /// The relay address from the ticket or flags.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The relay's certificate does not match the pin.
    #[error(
        "the relay's certificate does not match the ticket's pin {expected} (wrong relay, a replaced certificate, or someone intercepting the connection)"
    )]
    PinMismatch {
        /// The pin the ticket or flags asked for.
        expected: CertPin,
    },
    /// The relay turned the request away.
    #[error("the relay refused: {0}")]
    Refused(RefuseReason),
    /// The host ended the session before it started, with a reason.
    #[error("the host refused the session: {0}")]
    HostRefused(&'static str),
    /// The session or the relay connection ended abnormally.
    #[error("the session was cut: {0}")]
    Cut(String),
    /// A peer did not answer in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// A key or identity file problem.
    #[error("{path}: {what}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A wire-format or handshake error (its text says which).
    #[error(transparent)]
    Proto(#[from] ferry_proto::Error),
    /// An I/O error on a local socket or file.
    #[error(transparent)]
    Io(#[from] io::Error),
}
