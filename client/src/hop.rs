//! The hop to a relay: one QUIC connection, authenticated by pin or public roots.
//!
//! Hosts and clients tune it differently ([`HopOptions`]): a host keeps its connection
//! alive with frequent keep-alives and a short idle timeout, so a host that dies is
//! noticed by the relay (and its clients) within seconds; a client is gentler on
//! battery and mobile links.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_link::Congestion;
use ferry_proto::RelayAddr;
use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::Error;
use crate::verify::client_tls_explained;

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
        }
    }

    fn transport(&self) -> Result<TransportConfig, Error> {
        let idle =
            IdleTimeout::try_from(self.idle_timeout).map_err(|_| Error::Cut("idle timeout out of range".into()))?;
        let mut t = TransportConfig::default();
        t.keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(Some(idle))
            .stream_receive_window(VarInt::from_u32(self.stream_window))
            .receive_window(VarInt::from_u64(u64::from(self.stream_window) * 16).unwrap_or(VarInt::MAX))
            .max_concurrent_bidi_streams(ferry_link::credit::stream_limit(self.max_incoming_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(0));
        self.congestion.apply(&mut t);
        Ok(t)
    }
}

/// Splits `name:port` / `[v6]:port` into the TLS server name and the port.
pub(crate) fn server_name(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Opens a QUIC connection to `relay`, verifying it as the ticket says.
pub async fn connect(relay: &RelayAddr, options: &HopOptions) -> Result<quinn::Connection, Error> {
    let unreachable = |reason: String| Error::RelayUnreachable { addr: relay.addr.clone(), reason };
    let target: SocketAddr = tokio::net::lookup_host(&relay.addr)
        .await
        .map_err(|e| unreachable(format!("cannot resolve the address ({e})")))?
        .next()
        .ok_or_else(|| unreachable("the name resolves to no address".into()))?;
    let (tls, rejection) = client_tls_explained(relay.trust).map_err(|e| unreachable(e.to_string()))?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| unreachable(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(options.transport()?));

    let bind: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let no_socket = |e: std::io::Error| unreachable(format!("cannot open a UDP socket ({e})"));
    let socket = std::net::UdpSocket::bind(bind).map_err(no_socket)?;
    ferry_link::udp::tune_socket(&socket);
    let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, Arc::new(quinn::TokioRuntime))
        .map_err(no_socket)?;
    let connecting =
        endpoint.connect_with(config, target, server_name(&relay.addr)).map_err(|e| unreachable(e.to_string()))?;
    let conn = match tokio::time::timeout(options.connect_timeout, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            // A refused certificate reads as a TLS failure; the verifier left the reason.
            return Err(rejection.error(relay).unwrap_or_else(|| unreachable(e.to_string())));
        }
        Err(_) => {
            return Err(unreachable("no answer (is UDP blocked, or the relay down?)".into()));
        }
    };
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::server_name;

    #[test]
    fn server_names_from_addresses() {
        assert_eq!(server_name("relay.example.org:4433"), "relay.example.org");
        assert_eq!(server_name("127.0.0.1:4433"), "127.0.0.1");
        assert_eq!(server_name("[::1]:4433"), "::1");
    }
}
