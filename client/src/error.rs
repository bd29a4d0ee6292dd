//! The client library's error type: every variant reads as a one-line explanation a
//! person can act on, and keeps what caused it as its source, so that the whole story
//! ([`Error::report`], or `{:#}` in anyhow) is there for whoever needs it.

use std::io;
use std::path::PathBuf;

use ferry_link::{FramedError, LinkError};
use ferry_proto::{CertPin, RefuseReason};

/// What can go wrong while hosting or connecting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The relay could not be reached or the hop could not be set up.
    #[error("cannot reach the relay at {addr}")]
    RelayUnreachable {
        /// The relay address from the ticket or flags.
        addr: String,
        /// What went wrong.
        #[source]
        source: LinkError,
    },
    /// Neither transport reached the relay (`Transport::Auto`): each one's own failure, so a
    /// TCP "connection refused" is not hidden behind QUIC's silence.
    #[error("neither QUIC nor TLS over TCP reached the relay: QUIC: {}; TCP: {}", quic.report(), tcp.report())]
    NoTransportAnswered {
        /// Why QUIC failed.
        quic: Box<Error>,
        /// Why TLS over TCP failed.
        tcp: Box<Error>,
    },
    /// None of a ticket's relays could be reached; each one's failure, in ticket order.
    #[error("none of the ticket's {} relays answered: {}", failures.len(), one_line(failures))]
    NoRelayAnswered {
        /// Why each relay failed.
        failures: Vec<Error>,
    },
    /// None of a ticket's paths (direct addresses and relays) led to the host.
    #[error("none of the ticket's {} ways to the host worked: {}", failures.len(), one_line(failures))]
    NoPathAnswered {
        /// Why each path failed, in the order they were tried.
        failures: Vec<Error>,
    },
    /// A host with relaying off could not be reached at any of its direct addresses.
    #[error(
        "cannot reach the host directly and it has relaying off; its owner must forward its direct port on the router (and advertise it: ferry host run --advertise), or turn relaying on ({})",
        one_line(failures)
    )]
    DirectOnlyUnreachable {
        /// Why each direct address failed.
        failures: Vec<Error>,
    },
    /// A host's direct port could not be reached or the hop to it could not be set up.
    #[error("cannot reach the host directly at {addr}")]
    HostUnreachable {
        /// The direct address from the ticket or learned from the host.
        addr: String,
        /// What went wrong.
        #[source]
        source: LinkError,
    },
    /// The host could not listen for direct sessions.
    #[error("cannot listen for direct sessions on {addr} (is another host or program using that port?)")]
    DirectListen {
        /// The listen address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The direct port's TLS setup failed (a bug or an unusable crypto provider).
    #[error("cannot set up TLS for direct sessions")]
    DirectTls(#[source] rustls::Error),
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
    /// The host has no service of the name the ticket asks for (its answer inside the
    /// end-to-end handshake, which the relay cannot read).
    #[error(
        "the host has no {}; ask its owner for a ticket for one of its services",
        service.as_deref().map_or_else(|| "default service".to_owned(), |name| format!("service `{name}`"))
    )]
    NoSuchService {
        /// The service the ticket names (`None`: a ticket for the default service).
        service: Option<String>,
    },
    /// A host's service name that a ticket could not carry.
    #[error("service `{name}`: not a valid service name")]
    InvalidService {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        #[source]
        source: ferry_proto::Error,
    },
    /// A host's service name that starts with `.`: those are ferry's own.
    #[error("service `{name}`: names starting with `.` are reserved for ferry's own use; pick another")]
    ReservedService {
        /// The name as given.
        name: String,
    },
    /// A host's service address that is not `host:port`.
    #[error("service `{name}`: `{addr}` is not a `host:port` address")]
    InvalidServiceAddress {
        /// The service.
        name: String,
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        #[source]
        source: ferry_proto::Error,
    },
    /// Several services and none named the default.
    #[error("several services ({services}) and no default one: name the one a ticket without a service reaches")]
    NoDefaultService {
        /// The services, comma-separated.
        services: String,
    },
    /// The default service named is not one of the host's services.
    #[error("the default service `{name}` is not one of the host's services ({services})")]
    UnknownDefaultService {
        /// The name given as the default.
        name: String,
        /// The services, comma-separated.
        services: String,
    },
    /// A host with no service to forward sessions to.
    #[error("the host has no service to forward sessions to")]
    NoServices,
    /// The session or the relay connection ended abnormally, for a reason ferry can name.
    #[error("the session was cut: {0}")]
    Cut(&'static str),
    /// Another instance of this host (the same host key) registered at the relay, which
    /// keeps one registration per host and closed this one.
    #[error(
        "another instance of this host is running (the same host key registered at the relay and replaced this one)"
    )]
    Replaced,
    /// The relay closed the connection with a code this version does not know.
    #[error("the session was cut: the relay closed the connection (code {code:#x})")]
    RelayClosed {
        /// The QUIC application close code.
        code: u32,
    },
    /// The other end reset the stream with a code this version does not know.
    #[error("the session was cut: the other end reset the stream (code {code:#x})")]
    StreamReset {
        /// The QUIC reset code.
        code: u32,
    },
    /// The hop under the session failed (lost, timed out, a TLS connection cut).
    #[error("the session was cut")]
    Hop(#[source] LinkError),
    /// A stream to the relay failed while a message or frame was being read.
    #[error("the session was cut")]
    Stream(#[source] FramedError),
    /// The session was cancelled by its owner (see [`crate::Session::bridge`]).
    #[error("the session was cancelled")]
    Cancelled,
    /// The local listener of [`crate::Client::serve`] failed in a way retrying cannot fix.
    #[error("cannot accept local connections")]
    Accept(#[source] io::Error),
    /// Not the name of a hop transport.
    #[error("unknown transport `{name}` (use quic, tcp or auto)")]
    UnknownTransport {
        /// What was given.
        name: String,
    },
    /// A peer did not answer in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// A key or identity file could not be read or written.
    #[error("{path}: {what}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What failed ("cannot read", "cannot create", ...).
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A key file other users can read: refused, since whoever reads it is this host.
    #[error("{path}: is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    KeyFileExposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Refused to replace an existing key file.
    #[error("{path}: already exists; refusing to overwrite a key")]
    KeyFileExists {
        /// The file.
        path: PathBuf,
    },
    /// A key file without the line it must have.
    #[error("{path}: no `{field} = ...` line")]
    KeyFileMissing {
        /// The file.
        path: PathBuf,
        /// The missing field.
        field: &'static str,
    },
    /// A key file whose key does not parse.
    #[error("{path}: invalid key")]
    KeyFileInvalid {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ferry_proto::Error,
    },
    /// A wire-format or handshake error (its text says which).
    #[error(transparent)]
    Proto(ferry_proto::Error),
    /// An I/O error on a local socket or file.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Each failure's whole story, `; `-separated.
fn one_line(failures: &[Error]) -> String {
    failures.iter().map(Error::report).collect::<Vec<_>>().join("; ")
}

impl Error {
    /// This error and every cause under it on one line, `: `-separated (what a person
    /// should read; `to_string()` gives the first part only).
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            text.push_str(": ");
            text.push_str(&e.to_string());
            cause = e.source();
        }
        text
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_relay_s_failure_is_reported() {
        let unreachable = |addr: &str| Error::RelayUnreachable {
            addr: addr.into(),
            source: LinkError::Tcp(io::Error::other("refused")),
        };
        let e = Error::NoRelayAnswered { failures: vec![unreachable("a.test:1"), unreachable("b.test:2")] };
        assert_eq!(
            e.report(),
            "none of the ticket's 2 relays answered: cannot reach the relay at a.test:1: TCP connection failed: refused; \
             cannot reach the relay at b.test:2: TCP connection failed: refused"
        );
    }

    #[test]
    fn a_report_carries_the_causes_on_one_line() {
        let e = Error::RelayUnreachable {
            addr: "relay.test:4433".into(),
            source: LinkError::Tcp(io::Error::other("refused")),
        };
        assert_eq!(e.to_string(), "cannot reach the relay at relay.test:4433");
        assert_eq!(e.report(), "cannot reach the relay at relay.test:4433: TCP connection failed: refused");
        assert!(matches!(
            std::error::Error::source(&e).and_then(|s| s.downcast_ref::<LinkError>()),
            Some(LinkError::Tcp(_))
        ));
    }
}
