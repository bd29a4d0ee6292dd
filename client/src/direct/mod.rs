//! The direct path: sessions between client and host without a relay.
//!
//! A host with `direct` set listens for end-to-end sessions itself — over QUIC on the same
//! UDP socket it dials its relays from (so the public address a relay observes for it is
//! also where it can be reached, which is what hole punching needs), and over TLS on TCP
//! when asked. The TLS layer there authenticates nobody: the end-to-end Noise handshake
//! authenticates the host exactly as it does through a relay, and a tag keyed with the
//! ticket secret in front of the client's first message (`ferry_proto::e2e::direct`) lets
//! the host drop anyone without the ticket before any public-key work or any connection to
//! its service.
//!
//! On a direct stream there is no `Connect` and no relay answer: the client's first frame
//! is the tagged hello, the host's first frame the handshake answer, then records, exactly
//! as through a relay.
//!
//! # Layout
//! - [`listen`]: the host's side — the sockets, the self-signed certificate, the accept loops.
//! - `dial`: the client's side — QUIC or TLS over TCP to a host address.
//! - [`punch`]: hole punching — the candidate swap through a relay, the host's datagrams.

use std::net::SocketAddr;

pub(crate) mod dial;
pub mod listen;
pub mod punch;

/// The ALPN id of a host's direct port (not a relay's `ferry/1`: a client can never take
/// a host for a relay or the other way round).
pub const DIRECT_ALPN: &[u8] = b"ferry-direct/1";

/// Where and how a host accepts direct sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectConfig {
    /// The UDP (and, with `tcp`, TCP) address to listen on, e.g. `0.0.0.0:4433`.
    pub listen: SocketAddr,
    /// Also accept TLS over TCP on the same port (for clients whose UDP is blocked).
    pub tcp: bool,
    /// Addresses the owner tells clients about in tickets (`ip:port` or `name:port`,
    /// e.g. a port forwarded on the router), tried before any relay.
    pub advertise: Vec<String>,
}

impl DirectConfig {
    /// Direct sessions over QUIC on `listen`, advertising nothing.
    pub fn new(listen: SocketAddr) -> Self {
        Self { listen, tcp: false, advertise: Vec::new() }
    }
}
