//! ferry-relay: the relay node that pairs hosts with clients and splices their streams.
//!
//! Hosts connect out to the relay and register under their host id (proving they hold
//! its key); clients ask for a host id; the relay opens a stream to the host and pumps
//! bytes both ways. Everything it pumps is end-to-end encrypted between client and host:
//! the relay holds no key that could read it, keeps only bounded in-memory buffers and
//! logs one line per session (duration and byte counts).
//!
//! # Layout
//! - `server`: [`Relay`] — the handle: start, reload, shutdown (and stop on drop).
//! - `state`: what every task shares, and the reloadable settings swapped whole.
//! - `listen`: binding one port for QUIC and TCP, the accept loops, the TLS handshake.
//! - `dispatch`: a stream's first message decides what it is.
//! - `host`: a host's registration (the conversation is `ferry_proto::registration`) and
//!   the life of its control stream.
//! - `session`: pairing a client's `Connect` (`ferry_proto::connect`) with a stream to the
//!   host; the close log line.
//! - `elsewhere`: a `Connect` for a host at another node of the fleet: redirect or forward.
//! - `pump`: the bounded, zero-copy splice of two streams.
//! - `registry`: host id → how to reach the host (QUIC connection or TCP control task).
//! - `attach`: sessions waiting for a TCP host to dial back.
//! - `control`: refusals, counted in the metrics.
//! - [`config`]: [`RelayConfig`], its [`Reloadable`] part and the defaults; [`config_file`]:
//!   the TOML file, checked, and turned into a [`RelayConfig`].
//! - [`policy`]: open/closed registration, hashed tokens, host rules, tier assignment.
//! - [`fleet`]: nodes that find each other's hosts through a directory on Redis, and
//!   redirect or forward clients to them.
//! - `budget`: the buffer budget for sessions, and each host's fair share of it.
//! - [`limits`]: per-host sessions, per-source (IPv4 or IPv6 /64) connection rate, pending
//!   handshakes per source, open connections (overall and per source), the budget of
//!   explained refusals.
//! - [`pacing`]: bandwidth tiers and the token bucket that paces sessions.
//! - [`quota`]: byte quotas per day or month (`quota = "100 GiB/month"` on a tier) and their
//!   UTC periods; [`quota_usage`]: the accounts (token names, or hosts, by keyed hash), the
//!   batched counting, the flusher (in memory, or Redis through `fleet`), the checks.
//! - `metrics`: aggregate counters, gauges and histograms, and `process_metrics` (memory,
//!   fds, CPU, start time); `admin`: `/metrics` and `/healthz`.
//! - [`log`]: the log filter that keeps dependencies (which log addresses) silent.
//! - `tls`: rustls and quinn settings of the listener.
//! - [`units`]: `"1 MiB"` and `"30s"` in the config file, beside plain integers.
//!
//! The certificate it serves, [`TlsIdentity`], comes from the `ferry-cert` crate (which
//! also makes, renews and obtains certificates); the `ferry-relay` binary is in the
//! `ferry` package.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod admin;
pub mod allocator;
mod attach;
mod budget;
pub mod config;
pub mod config_file;
mod control;
mod dispatch;
mod elsewhere;
mod error;
pub mod fleet;
mod host;
pub mod limits;
mod listen;
pub mod log;
mod metrics;
pub mod pacing;
pub mod policy;
mod process_metrics;
mod pump;
pub mod quota;
pub mod quota_usage;
mod registry;
mod server;
mod session;
mod state;
mod tls;
pub mod units;

pub use config::{RelayConfig, Reloadable};
pub use error::Error;
pub use ferry_cert::TlsIdentity;
pub use server::Relay;
