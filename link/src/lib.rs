//! ferry-link: one bidirectional stream on a hop to or from a relay, over QUIC or TLS,
//! and the plumbing every hop shares (transport config, UDP endpoint, TLS exporter,
//! address resolution), so the relay and its peers set it up one way.
//!
//! A hop stream is a QUIC bi-stream (many per connection) or a whole TLS-over-TCP
//! connection (one per stream, for networks that block UDP). The relay's pump, the host
//! and the client all speak to [`LinkSend`] / [`LinkRecv`] and never care which, so every
//! combination (client on QUIC, host on TCP, and the reverse) works without special cases.
//!
//! Ends keep their meaning across both: a clean finish is QUIC FIN or TLS `close_notify`;
//! an abort is a QUIC reset with a code, or a TLS connection dropped without
//! `close_notify` (the peer reads it as an error, never as a clean end; TLS cannot carry
//! the code).
//!
//! # Layout
//! - [`stream`]: [`LinkSend`] and [`LinkRecv`], the two halves of a hop stream.
//! - [`congestion`]: [`Congestion`], the QUIC congestion controller (BBR by default, and why).
//! - [`framed`]: [`Framed`], the receive half with its read-ahead buffer, for control
//!   messages, handshake frames and records in turn.
//! - [`credit`]: how many streams to allow so that the wanted number stays openable.
//! - [`udp`]: socket buffers for QUIC's UDP socket (and why they matter), and the quinn
//!   endpoint on it.
//! - [`transport`]: [`TransportSettings`], the one place a hop's quinn transport config is
//!   built (windows, stream limit, idle timeout, keep-alive, congestion).
//! - [`window`]: [`ConnectionWindow`], a connection receive window of one stream window
//!   per session, so stalled streams cannot freeze the others (the relay's host links).
//! - [`exporter`]: the TLS exporter value that binds a registration to its hop, over QUIC
//!   and TLS alike.
//! - [`resolve`](mod@resolve): a relay address (`name:port`) to the socket address to dial.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod congestion;
pub mod credit;
pub mod exporter;
pub mod framed;
pub mod resolve;
pub mod stream;
pub mod transport;
pub mod udp;
pub mod window;

pub use congestion::Congestion;
pub use framed::{Framed, FramedError};
pub use resolve::resolve;
pub use stream::{LinkError, LinkRecv, LinkSend, TlsStream, split_tls};
pub use transport::TransportSettings;
pub use window::{ConnectionWindow, WindowShare};
