//! ferry-cert: the relay's TLS certificates — reading them, making them, renewing them.
//!
//! A ferry ticket authenticates a relay by the SHA-256 pin of a certificate's public key
//! (or by webpki roots). This crate owns everything about those certificates: the
//! [`TlsIdentity`] the relay serves (PEM files, or self-signed on first start), the pins,
//! an own CA whose pin survives renewals, inspection, unattended renewal and, with the
//! `acme` feature (on by default), certificates from an ACME server such as Let's Encrypt.
//! The `ferry-cert` command in the `ferry` package is a thin layer over it; the relay
//! depends on it without `acme`, for [`TlsIdentity`] alone, so it links no HTTP client.
//!
//! Keys are private: written 0600, refused when other users can read them, and files are
//! replaced atomically so a relay reloading on SIGHUP reads the old pair or the new one.
//!
//! # Layout
//! - `identity`: [`TlsIdentity`], reading PEM chains and keys, pins.
//! - `files`: file names, reading secrets only when private (0600), atomic writes.
//! - `pin`: [`pin_of_cert`], the pin a ticket holds.
//! - `keys`: [`KeyAlg`] and random serial numbers for new certificates.
//! - `self_signed`: [`SelfSigned`], the no-setup certificate.
//! - `ca`: an own certificate authority ([`CertAuthority`]) and the relay certificates it
//!   signs ([`Issued`]).
//! - `info`: [`CertInfo`], what a certificate says about itself (`ferry-cert inspect`).
//! - `renew`: [`renew()`], reissuing a CA-signed certificate when it is due.
//! - [`acme`] (feature `acme`): one ACME order over HTTP-01, with its challenge listener
//!   in `acme::http01`.
//! - `error`: [`Error`], the crate's one error type.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

#[cfg(feature = "acme")]
pub mod acme;
mod ca;
mod error;
mod files;
mod identity;
mod info;
mod keys;
mod pin;
mod renew;
mod self_signed;

pub use ca::{CA_CERT_FILE, CA_KEY_FILE, CaOptions, CertAuthority, Issued, LeafOptions};
pub use error::Error;
pub use files::{CERT_FILE, KEY_FILE, read_private, write_file};
pub use identity::{TlsIdentity, read_certs, read_key};
pub use info::CertInfo;
pub use keys::KeyAlg;
pub use pin::pin_of_cert;
pub use renew::{RenewOptions, Renewal, read_leaf, renew, renew_at};
pub use self_signed::SelfSigned;
