//! ferry: an end-to-end encrypted relay for reaching services behind NAT.
//!
//! This facade re-exports the library crates and holds [`local`], a whole ferry (relay,
//! host, client and a test service) on loopback, used by `ferry demo`, the end-to-end
//! tests in `tests/` and the benchmark harness in `benches/`.
//!
//! # Layout
//! - [`proto`] (ferry-proto): the sans-IO wire format.
//! - [`relay`] (ferry-relay): the relay node.
//! - [`cert`] (ferry-cert): the relay's certificates (identity and pins, own CA, renewal, ACME).
//! - [`client`] (ferry-client): the host and client library.
//! - [`local`]: relay + host + client on loopback, an echo service and a checked data stream.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub use ferry_cert as cert;
pub use ferry_client as client;
pub use ferry_proto as proto;
pub use ferry_relay as relay;

pub mod local;
