//! The direct path: sessions between client and host without a relay.
//!
//! A host with `direct` set listens for end-to-end sessions itself — over QUIC on the same
//! UDP socket it uses for its relay connections (so the public address a relay observed
//! for it is also where it can be reached, which is what hole punching needs), and over
//! TLS on TCP when asked. The TLS layer there authenticates nobody: the end-to-end Noise
//! handshake authenticates the host exactly as it does through a relay, and a tag keyed
//! with the ticket secret in front of the client's first message lets the host drop
//! anyone without the ticket before any public-key work or any connection to its service.

use std::net::SocketAddr;

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
