//! TLS and QUIC settings of the relay's listener.
//!
//! TLS 1.3 only, ALPN `ferry/1`, rustls with the ring provider. QUIC flow-control windows
//! come from the configured per-direction buffer so that memory per session is bounded by
//! configuration, not by how fast peers send.

use std::sync::Arc;

use ferry_link::TransportSettings;
use quinn::TransportConfig;

use crate::{Error, RelayConfig};

/// The rustls server configuration shared by every hop transport.
pub(crate) fn rustls_server_config(config: &RelayConfig) -> Result<rustls::ServerConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(config.identity.certs.clone(), config.identity.key.clone_key())?;
    tls.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
    Ok(tls)
}

/// The quinn server configuration.
pub(crate) fn quic_server_config(config: &RelayConfig) -> Result<quinn::ServerConfig, Error> {
    let tls = rustls_server_config(config)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| Error::Config(format!("no TLS 1.3 cipher suite usable for QUIC: {e}")))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(config)?));
    Ok(server)
}

fn transport_config(config: &RelayConfig) -> Result<TransportConfig, Error> {
    let window = config.buffer_per_direction as u64;
    TransportSettings {
        stream_window: window,
        send_window: Some(window.saturating_mul(ferry_link::transport::CONNECTION_WINDOWS)),
        incoming_streams: config.max_sessions_per_connection,
        idle_timeout: config.idle_timeout,
        keep_alive: None,
        congestion: config.congestion,
    }
    .build()
    .map_err(|e| Error::Config(e.to_string()))
}
