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
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The relay's certificate or key is unusable.
    #[error(transparent)]
    Certificate(#[from] ferry_cert::Error),
    /// The state directory cannot hold the self-signed certificate for the user running the
    /// relay (not writable, not a directory).
    /// [`Error::hint`] says what to do.
    #[error("cannot keep the relay's certificate in state_dir {}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// rustls refused the certificate and key (for example, they do not match).
    #[error("TLS setup failed (do the certificate and key belong together?)")]
    Tls(#[from] rustls::Error),
    /// The UDP port could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: io::Error,
    },
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
    #[error("{}", path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong ([`Error::ConfigSyntax`] or [`Error::ConfigSetting`]).
        source: Box<Error>,
    },
    /// The fleet's Redis did not answer (reading usage for `ferry-relay usage`).
    #[error("the fleet's Redis did not answer")]
    FleetUnreachable(#[source] redis::RedisError),
    /// The `[fleet]` Redis URL is not one redis-rs understands.
    #[error("invalid `[fleet] redis_url` (use redis://host:port/db)")]
    FleetRedis(#[source] redis::RedisError),
    /// The fleet cannot be set up as configured.
    #[error("fleet: {why}")]
    FleetSetting {
        /// What is wrong.
        why: String,
    },
    /// rustls offers no TLS 1.3 cipher suite that QUIC can use (a build without one).
    #[error("no TLS 1.3 cipher suite usable for QUIC")]
    QuicCrypto(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// toml's multi-line message (with its snippet) as one line, for logs and `check-config`.
fn one_line(e: &toml::de::Error) -> String {
    e.to_string().trim_end().replace('\n', " ")
}

impl Error {
    /// What to do about this error, for the line a command prints after it (the message
    /// itself states the cause, once).
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::StateDir { .. } => Some(
                "give a directory this user can write with --state-dir DIR (or `state_dir` in the config), \
                 leave `state_dir` unset to use ~/.local/state/ferry-relay, or run the relay as the directory's owner",
            ),
            Self::Bind { .. } => Some(
                "if another program (another relay?) holds that port, stop it or pick another port with --listen; \
                 a port below 1024 needs root or CAP_NET_BIND_SERVICE",
            ),
            _ => None,
        }
    }
}
