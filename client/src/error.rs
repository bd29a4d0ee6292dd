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
    /// The relay's certificate is past its end of validity.
    #[error("the relay's certificate has expired (relay {addr}); its operator must renew it (ferry-cert renew)")]
    RelayCertExpired {
        /// The relay address from the ticket or flags.
        addr: String,
    },
    /// The relay's certificate is not valid yet: usually a wrong clock on one side.
    #[error("the relay's certificate is not valid yet (relay {addr}); check this device's clock and the relay's")]
    RelayCertNotYetValid {
        /// The relay address from the ticket or flags.
        addr: String,
    },
    /// The relay's certificate does not name the address the client dialled.
    #[error("the relay's certificate is for another name (relay {addr}): it lists neither this name nor this address")]
    RelayCertWrongName {
        /// The relay address from the ticket or flags.
        addr: String,
    },
    /// The relay presents a CA-signed certificate, but not one the pinned CA signed.
    #[error(
        "the relay's certificate is not signed by the pinned CA {expected} (relay {addr}: another CA, a replaced certificate, or someone intercepting the connection)"
    )]
    RelayCertNotFromPinnedCa {
        /// The relay address from the ticket or flags.
        addr: String,
        /// The pin the ticket or flags asked for.
        expected: CertPin,
    },
    /// A publicly trusted (`webpki`) relay certificate does not chain to a known root.
    #[error(
        "the relay's certificate is not signed by a publicly trusted CA (relay {addr}); use a pin in the ticket for a private or self-signed certificate"
    )]
    RelayCertUntrusted {
        /// The relay address from the ticket or flags.
        addr: String,
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

impl Error {
    /// Whether this is a refusal of the relay's certificate (wrong pin, expired, wrong
    /// name, untrusted): retrying the same relay over another transport cannot help, and
    /// the user must see it.
    pub fn is_relay_certificate_problem(&self) -> bool {
        matches!(
            self,
            Self::PinMismatch { .. }
                | Self::RelayCertExpired { .. }
                | Self::RelayCertNotYetValid { .. }
                | Self::RelayCertWrongName { .. }
                | Self::RelayCertNotFromPinnedCa { .. }
                | Self::RelayCertUntrusted { .. }
        )
    }
}
