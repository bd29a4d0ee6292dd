//! TLS and QUIC settings of the relay's listener.
//!
//! TLS 1.3 only, ALPN `ferry/1`, rustls with the ring provider. QUIC flow-control windows
//! come from the configured per-direction buffer so that memory per session is bounded by
//! configuration, not by how fast peers send: each stream's window is one buffer, and a
//! connection's window starts at one buffer and grows by one per session it carries
//! (`ferry_link::window`, taken in `session.rs` once the session's buffers are reserved).
//! The transport settings are fixed at start; the certificate is reloadable, so the server
//! configs are made from both.

use std::sync::Arc;

use ferry_link::{LinkError, TransportSettings};
use quinn::TransportConfig;

use crate::{Error, RelayConfig, TlsIdentity};

/// The rustls server configuration shared by every hop transport.
pub(crate) fn rustls_server_config(identity: &TlsIdentity) -> Result<rustls::ServerConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())?;
    tls.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
    Ok(tls)
}

/// Connection attempts quinn queues while the accept loop is behind (quinn's default is
/// 65,536, about 100 MiB of first packets). The loop takes each at once (admission is a few
/// atomic operations, the handshake runs in its own task), so a queue this deep only fills
/// in a flood, where shedding the excess is right.
const MAX_QUEUED_ATTEMPTS: usize = 4096;
/// Bytes buffered for one queued attempt past its first packet (quinn's default: 10 MiB, room
/// for 0-RTT data, which ferry does not use; a ClientHello spans two or three packets).
const QUEUED_ATTEMPT_BYTES: u64 = 16 * 1024;
/// Bytes buffered for all queued attempts together (quinn's default: 100 MiB).
const QUEUED_ATTEMPTS_BYTES: u64 = 4 << 20;

/// The quinn server configuration: `identity` with the fixed `transport`.
pub(crate) fn quic_server_config(
    identity: &TlsIdentity,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ServerConfig, Error> {
    let tls = rustls_server_config(identity)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(Error::QuicCrypto)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server
        .transport_config(transport)
        .max_incoming(MAX_QUEUED_ATTEMPTS)
        .incoming_buffer_size(QUEUED_ATTEMPT_BYTES)
        .incoming_buffer_size_total(QUEUED_ATTEMPTS_BYTES);
    Ok(server)
}

/// How many buffers' worth of sent but unacknowledged bytes one connection may have in
/// flight: enough for 16 sessions sending at full speed at once. Acknowledgements come
/// from the peer's QUIC stack, not its reader, so a stalled reader does not hold this up.
const SEND_WINDOW_BUFFERS: u64 = 16;

/// The QUIC transport settings of every connection to this relay.
pub(crate) fn transport_config(config: &RelayConfig) -> Result<TransportConfig, Error> {
    let window = config.buffer_per_direction as u64;
    TransportSettings {
        stream_window: window,
        connection_window: Some(window),
        send_window: Some(window.saturating_mul(SEND_WINDOW_BUFFERS)),
        incoming_streams: config.max_sessions_per_connection,
        idle_timeout: config.idle_timeout,
        keep_alive: None,
        congestion: config.congestion,
    }
    .build()
    .map_err(|e| match e {
        LinkError::IdleTimeoutTooLarge(_) => {
            Error::Setting { key: "idle_timeout_secs", why: "too large for QUIC".into() }
        }
        _ => Error::Setting { key: "buffer_per_direction", why: "too large for QUIC".into() },
    })
}
