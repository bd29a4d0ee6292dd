//! The relay crate's error type, worded for the operator who will read it.
//!
//! Certificate problems (unreadable PEM, a key others can read) are `ferry_cert`'s errors,
//! carried whole in [`Error::Certificate`].

use std::io;
use std::path::PathBuf;

/// What can stop a relay from starting or reloading.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The relay's certificate or key is unusable.
    #[error(transparent)]
    Certificate(#[from] ferry_cert::Error),
    /// rustls refused the certificate and key (for example, they do not match).
    #[error("TLS setup failed: {0} (do the certificate and key belong together?)")]
    Tls(#[from] rustls::Error),
    /// The UDP port could not be bound.
    #[error("cannot listen on {addr}: {source} (is another relay running on that port?)")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// An invalid setting.
    #[error("invalid configuration: {0}")]
    Config(String),
}
