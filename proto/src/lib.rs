//! ferry-proto: everything ferry puts on the wire, with no I/O.
//!
//! This crate turns bytes into messages and back, and runs the two Noise handshakes as
//! plain state machines. It never touches a socket, never spawns, and never reads the
//! clock, so every piece is unit tested byte for byte and can be driven by any runtime
//! (the way `quinn-proto` sits under `quinn`). The wire format is drawn in
//! `docs/protocol.md` at the repository root.
//!
//! # Layout
//! - [`codec`]: the length-checked byte reader shared by every decoder.
//! - [`codes`]: QUIC stream and connection error codes and what they mean.
//! - [`keys`]: X25519 static keys and the [`HostId`] (a host's public key in text form).
//! - [`pin`]: how a client trusts a relay: SHA-256 certificate pins or webpki roots.
//! - [`ticket`]: the copy-pasteable string that tells a client how to reach a host.
//! - [`message`]: relay control messages (`Register`, `Connect`, `Refused`, ...) and their framing.
//! - [`proof`]: the host's Noise `XN` proof that it holds its host key, bound to the hop.
//! - [`registration`]: the registration conversation (`Register` → `Challenge` → `Proof` →
//!   `Registered`, then `Incoming`/`GoingAway`), host and relay side, as state machines.
//! - [`connect`]: the connect conversation (`Connect` → `Accepted`/`Refused`, the host's
//!   `Incoming`/`Attach`), every side, as state machines.
//! - [`e2e`]: the client ↔ host Noise `IKpsk2` handshake, the record layer after it, and the
//!   resumption of sessions onto another path (`e2e::resume`).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod codec;
pub mod codes;
pub mod connect;
pub mod e2e;
mod error;
pub mod keys;
pub mod message;
pub mod pin;
pub mod proof;
pub mod registration;
pub mod ticket;

pub use error::Error;
pub use keys::{HostId, PublicKey, StaticKey};
pub use message::{FORWARD_PROOF_LEN, Message, RefuseReason};
pub use pin::{CertPin, RelayTrust};
pub use ticket::{RelayAddr, Ticket, TicketSecret};

/// The ALPN protocol id of ferry's hop to a relay (QUIC and TLS alike).
pub const ALPN: &[u8] = b"ferry/1";

/// Label of the TLS exporter value that binds a host's registration proof to one hop.
pub const REGISTRATION_EXPORTER_LABEL: &[u8] = b"EXPORTER-ferry/1 registration";

/// Length of the exporter value (bytes) that goes into the registration prologue.
pub const EXPORTER_LEN: usize = 32;
