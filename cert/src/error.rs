//! The crate's one error type, worded for the operator who will read it.
//!
//! Each variant says what went wrong in the operator's terms (which file, which name,
//! what to do about it); the library error underneath, where there is one, is kept as the
//! [`source`](std::error::Error::source) rather than pasted into the message, so
//! `anyhow`'s `{:#}` shows each cause once.

use std::io;
use std::path::PathBuf;

/// What can go wrong reading, making, renewing or obtaining a certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Refused to replace an existing key or certificate.
    #[error("{} already exists; pass --force to replace it", .0.display())]
    Exists(PathBuf),
    /// A file is not the PEM it should be.
    #[error("{} holds no usable {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What it should hold ("certificate", "private key", "CA certificate").
        what: &'static str,
        /// What the PEM reader found.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A PEM file holds no certificate at all.
    #[error("{} holds no certificate", .0.display())]
    NoCertificate(PathBuf),
    /// A private key file that other users can read.
    #[error(
        "{}: this private key is readable by other users (mode {mode:04o}); a key others can read \
         lets them impersonate the relay. Restrict it with `chmod 600 {}` (and consider making a \
         new key if it may have been copied)",
        path.display(),
        path.display()
    )]
    KeyReadable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A private key that cannot sign certificates (the CA's key).
    #[error("{} holds no usable private key", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why the key is unusable.
        #[source]
        source: rcgen::Error,
    },
    /// The CA directory's certificate is not a CA certificate.
    #[error("{} is not a CA certificate (no CA basic constraint)", .0.display())]
    NotCa(PathBuf),
    /// The CA directory's key is not the key of its certificate.
    #[error("{} does not belong to the certificate {}", key.display(), cert.display())]
    CaKeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// Renewal with a CA that did not issue the certificate (it would change the pin the
    /// relay needs).
    #[error(
        "{} was not signed by this CA; renew it with the CA that issued it (or issue a new \
         certificate with `ferry-cert issue`)",
        .0.display()
    )]
    NotIssuedByCa(PathBuf),
    /// A certificate could not be parsed.
    #[error("the certificate cannot be parsed")]
    Unparsable(#[source] x509_parser::error::X509Error),
    /// A certificate that cannot serve as a relay's (leaf) certificate.
    #[error("the certificate is not a usable end-entity certificate")]
    NotEndEntity(#[source] webpki::Error),
    /// A certificate chain with no certificate in it.
    #[error("the certificate chain is empty")]
    EmptyChain,
    /// A certificate was asked for without any name.
    #[error("a relay certificate needs at least one DNS name or IP address")]
    NoNames,
    /// A name that cannot go into a certificate.
    #[error("{name:?} is not a valid DNS name")]
    BadDnsName {
        /// The name.
        name: String,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
    /// A lifetime of zero days.
    #[error("a certificate must be valid for at least one day")]
    ZeroDays,
    /// A lifetime that ends past what a certificate can say.
    #[error("{0} days is too far in the future")]
    TooManyDays(u32),
    /// Making a key, certificate or signing request failed.
    #[error("cannot make the certificate")]
    Generate(#[from] rcgen::Error),
    /// The operating system gave no random bytes (for a serial number).
    #[error("the system random generator failed")]
    Random(#[source] ring::error::Unspecified),

    /// The ACME server refused a request or could not be reached.
    #[cfg(feature = "acme")]
    #[error("the ACME server refused a request or could not be reached")]
    Acme(#[from] instant_acme::Error),
    /// The HTTP-01 listener could not be started.
    #[cfg(feature = "acme")]
    #[error(
        "cannot listen for the HTTP-01 challenge on {addr} (port 80 needs root or \
         CAP_NET_BIND_SERVICE, and nothing else may use it)"
    )]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The stored ACME account file cannot be read or written as JSON.
    #[cfg(feature = "acme")]
    #[error("{} is not a usable ACME account file", path.display())]
    AccountFile {
        /// The account file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The stored ACME account belongs to another ACME server.
    #[cfg(feature = "acme")]
    #[error(
        "{}: this account belongs to {stored}, not {requested}; use another --out directory for \
         another ACME server",
        path.display()
    )]
    AccountServer {
        /// The account file.
        path: PathBuf,
        /// The directory URL the account was made at.
        stored: String,
        /// The directory URL asked for now.
        requested: String,
    },
    /// An ACME order without any name.
    #[cfg(feature = "acme")]
    #[error("an ACME order needs at least one name; give at least one --domain")]
    NoDomains,
    /// The ACME server put an authorization in a state that cannot become valid.
    #[cfg(feature = "acme")]
    #[error("the ACME order failed: an authorization is {0:?}")]
    Authorization(instant_acme::AuthorizationStatus),
    /// The ACME server offers no challenge this tool can answer.
    #[cfg(feature = "acme")]
    #[error("the ACME order failed: the server offers no HTTP-01 challenge")]
    NoHttp01,
    /// The ACME server did not validate the names.
    #[cfg(feature = "acme")]
    #[error("the ACME order failed: the server did not validate the names (order {status:?})")]
    NotValidated {
        /// Where the order ended.
        status: instant_acme::OrderStatus,
        /// What the server said, if it said anything.
        #[source]
        problem: Option<instant_acme::Problem>,
    },
    /// The ACME server's certificate chain is not PEM.
    #[cfg(feature = "acme")]
    #[error("the ACME order failed: the server sent an unreadable certificate")]
    AcmeChain(#[source] rustls_pki_types::pem::Error),
    /// The ACME server's answer held no certificate.
    #[cfg(feature = "acme")]
    #[error("the ACME order failed: the server sent no certificate")]
    AcmeNoCertificate,
}
