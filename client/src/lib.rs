//! ferry-client: the host and client sides of ferry, as a library apps can embed.
//!
//! A **host** (a media server, or any TCP service) keeps an identity key, stays
//! registered at one or more relays and forwards each incoming session to a local port.
//! A **client** holds a ticket and opens end-to-end encrypted sessions to that host
//! through a relay that cannot read them. The `ferry` command is a thin layer over this.
//!
//! # Layout
//! - [`identity`]: host and client key files (0600, never overwritten).
//! - [`hop`]: the QUIC connection to a relay and the hop tuning ([`HopOptions`]).
//! - `verify`: certificate checks by pin or public roots.
//! - [`host`]: [`Host`] — registration, reconnect with backoff, session forwarding.
//! - [`client`]: [`Client`] — relay selection and session opening.
//! - [`session`]: [`Session`] — plaintext ↔ sealed records, half-close, truncation checks.
//! - [`dial`]: choosing QUIC or TLS over TCP (raced with a QUIC head start) and opening streams.
//! - `explain`: hop failures and reset codes turned into explanations.
//! - `backoff`: jittered exponential backoff.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod backoff;
pub mod client;
pub mod dial;
mod error;
mod explain;
pub mod hop;
pub mod host;
pub mod identity;
pub mod session;
mod verify;

pub use client::Client;
pub use dial::Transport;
pub use error::Error;
pub use hop::HopOptions;
pub use host::{Host, HostConfig, HostStatus};
pub use identity::HostIdentity;
pub use session::{Session, Transferred};
