//! ferry-client: the host and client sides of ferry, as a library apps can embed.
//!
//! A **host** (a media server, or any TCP service) keeps an identity key, stays
//! registered at one or more relays and forwards each incoming session to a local port.
//! A **client** holds a ticket and opens end-to-end encrypted sessions to that host
//! through a relay that cannot read them. The `ferry` command is a thin layer over this.
//!
//! A **hop** is the connection between a peer (host or client) and a relay, nothing else.
//!
//! # Layout
//! - [`identity`]: host and client key files (0600, never overwritten).
//! - [`dial`]: opening the hop to a relay — QUIC, TLS over TCP, or the two raced — its
//!   tuning ([`HopOptions`]) and the streams on it.
//! - `verify`: certificate checks by pin or public roots.
//! - [`direct`]: the direct path (sessions without a relay): [`DirectConfig`].
//! - [`host`]: [`Host`] — registration, reconnect with backoff, session forwarding.
//! - [`services`]: [`Services`] — a host's named services and its default one.
//! - `path`: [`Path`], one way to the host (direct or through a relay).
//! - [`client`]: [`Client`] — relay selection and session opening.
//! - `psk_cache`: the client's resumption PSK and handshake counts for its host
//!   ([`HandshakeCounts`]), in memory only.
//! - [`serve`]: [`Client::serve`] — a local listener whose connections become sessions
//!   (what `ferry connect` runs).
//! - [`session`]: [`Session`] — plaintext ↔ sealed records, half-close, truncation checks.
//! - `resume`: resumable sessions — the bridge that moves a session to another path when
//!   its own is lost, and the host's registry resume requests are matched against.
//! - `explain`: hop failures and reset codes turned into explanations.
//! - `backoff`: jittered exponential backoff.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod backoff;
pub mod client;
pub mod dial;
pub mod direct;
mod error;
mod explain;
pub mod host;
pub mod identity;
mod path;
mod psk_cache;
mod resume;
pub mod serve;
pub mod services;
pub mod session;
mod verify;

pub use client::{Client, NEXT_RELAY_AFTER};
pub use dial::{HopOptions, Transport};
pub use direct::DirectConfig;
pub use error::Error;
pub use host::{Host, HostConfig, HostStatus};
pub use identity::HostIdentity;
pub use path::Path;
pub use psk_cache::HandshakeCounts;
pub use resume::{DEFAULT_RESUME_TIMEOUT, STALL_AFTER};
pub use services::Services;
pub use session::{Session, Transferred};
