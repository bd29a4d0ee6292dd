//! How a hop behaves: the tuning hosts and clients give their connection to a relay.
//!
//! Hosts and clients tune it differently: a host keeps its connection alive with frequent
//! keep-alives and a short idle timeout, so a host that dies is noticed by the relay (and
//! its clients) within seconds; a client is gentler on battery and mobile links.

use std::time::Duration;

use ferry_link::{Congestion, TransportSettings};

/// How the hop connection behaves.
#[derive(Clone, Debug)]
pub struct HopOptions {
    /// Keep-alive interval (also keeps NAT mappings open).
    pub keep_alive: Duration,
    /// The connection is declared dead after this long without a packet.
    pub idle_timeout: Duration,
    /// Longest wait for the relay to answer.
    pub connect_timeout: Duration,
    /// Receive window per stream (bytes): how far the peer may run ahead of our reader.
    pub stream_window: u32,
    /// Streams the relay can always open towards us at once (host: concurrent sessions);
    /// QUIC's limit is set up to a seventh higher so that quinn's batched credit never
    /// leaves fewer (`ferry_link::credit`). 0 for a client: the relay opens none.
    pub max_incoming_streams: u32,
    /// QUIC congestion controller (BBR unless told otherwise; see `ferry_link::congestion`).
    pub congestion: Congestion,
    /// The UDP endpoint QUIC hops are dialled from (`None`: a fresh one per hop). A host
    /// with direct sessions dials its relays from its direct socket, and a client dials
    /// relays and hosts from one socket, so that the address a relay observes for them is
    /// the one a punched direct path uses.
    pub endpoint: Option<quinn::Endpoint>,
}

impl HopOptions {
    /// Settings for a host: detect a lost relay (and let the relay detect us) quickly.
    pub fn host() -> Self {
        Self {
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(5),
            stream_window: 1 << 20,
            max_incoming_streams: 1024,
            congestion: Congestion::default(),
            endpoint: None,
        }
    }

    /// Settings for a client.
    pub fn client() -> Self {
        Self {
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            stream_window: 1 << 20,
            max_incoming_streams: 0,
            congestion: Congestion::default(),
            endpoint: None,
        }
    }

    /// The endpoint to dial `target` from: the shared one when it has the target's address
    /// family, else a fresh one.
    pub(crate) fn endpoint_for(&self, target: std::net::SocketAddr) -> Result<quinn::Endpoint, ferry_link::LinkError> {
        match &self.endpoint {
            Some(shared) if shared.local_addr().is_ok_and(|local| local.is_ipv4() == target.is_ipv4()) => {
                Ok(shared.clone())
            }
            _ => ferry_link::udp::client_endpoint(target),
        }
    }

    /// The QUIC transport settings these options stand for (quinn's own send window).
    pub(crate) fn transport(&self) -> TransportSettings {
        TransportSettings {
            stream_window: u64::from(self.stream_window),
            // Every stream on a peer's hop is one of its own sessions, bounded by its own
            // stream limits: the connection adds no limit of its own (`ferry_link::window`).
            connection_window: None,
            send_window: None,
            incoming_streams: self.max_incoming_streams,
            idle_timeout: self.idle_timeout,
            keep_alive: Some(self.keep_alive),
            congestion: self.congestion,
        }
    }
}
