//! The relay crate's error type, worded for the operator who will read it.

use std::io;
use std::path::PathBuf;

/// What can stop a relay from starting or a certificate from being made.
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
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Refused to replace an existing key or certificate.
    #[error("{0} already exists; pass --force to replace it")]
    Exists(PathBuf),
    /// A PEM file held no usable certificate or key.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A certificate could not be parsed.
    #[error("the certificate cannot be parsed: {0}")]
    BadCertificate(String),
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
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    CertGen(#[from] rcgen::Error),
    /// An invalid setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A setting that does not make sense (alone, or with the others).
    #[error("invalid configuration: `{key}`: {why}")]
    Setting {
        /// The setting's key in the config file (`deploy/relay.toml`).
        key: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// Configuration text is not valid TOML, has an unknown key, or a value of the wrong type
    /// (toml's message names the line).
    #[error("{}", one_line(.0))]
    ConfigSyntax(toml::de::Error),
    /// A setting in a configuration file that does not make sense, with its line when the file
    /// sets it.
    #[error("`{key}`{}: {why}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    ConfigSetting {
        /// The key, as written in the file.
        key: &'static str,
        /// The 1-based line of the key, if the file sets it.
        line: Option<usize>,
        /// What is wrong.
        why: String,
    },
    /// A configuration file is not valid.
    #[error("{}: {source}", path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong ([`Error::ConfigSyntax`] or [`Error::ConfigSetting`]).
        source: Box<Error>,
    },
    /// rustls offers no TLS 1.3 cipher suite that QUIC can use (a build without one).
    #[error("no TLS 1.3 cipher suite usable for QUIC: {0}")]
    QuicCrypto(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// toml's multi-line message (with its snippet) as one line, for logs and `check-config`.
fn one_line(e: &toml::de::Error) -> String {
    e.to_string().trim_end().replace('\n', " ")
}
