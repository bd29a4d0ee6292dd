//! The QUIC way to open a hop: one connection to the relay (or to a host's direct port),
//! carrying every session as its own stream.

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_link::LinkError;
use ferry_proto::RelayAddr;

use super::HopOptions;
use crate::Error;
use crate::verify::client_tls_explained;

/// Opens a QUIC connection to `relay`, verifying it as the ticket says.
pub async fn connect(relay: &RelayAddr, options: &HopOptions) -> Result<quinn::Connection, Error> {
    let unreachable = |source: LinkError| Error::RelayUnreachable { addr: relay.addr.clone(), source };
    let target = ferry_link::resolve(&relay.addr).await.map_err(unreachable)?;
    let (tls, rejection) =
        client_tls_explained(relay.trust).map_err(|e| unreachable(LinkError::TlsConfig(Box::new(e))))?;
    let server_name = ferry_link::resolve::server_name(&relay.addr);
    dial(target, server_name, tls, options).await.map_err(|e| match e {
        // A refused certificate reads as a TLS failure; the verifier left the reason.
        LinkError::Handshake(_) => rejection.error(relay).unwrap_or_else(|| unreachable(e)),
        e => unreachable(e),
    })
}

/// Dials `target` from the hop's endpoint with `tls`, under the hop's transport settings
/// and connect timeout. A failed TLS handshake is [`LinkError::Handshake`].
pub(crate) async fn dial(
    target: SocketAddr,
    server_name: &str,
    tls: rustls::ClientConfig,
    options: &HopOptions,
) -> Result<quinn::Connection, LinkError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(LinkError::QuicCipherSuite)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(options.transport().build()?));
    let endpoint = options.endpoint_for(target)?;
    let connecting = endpoint.connect_with(config, target, server_name).map_err(|e| LinkError::Connect(Box::new(e)))?;
    match tokio::time::timeout(options.connect_timeout, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(LinkError::Handshake(Box::new(e))),
        Err(_) => Err(LinkError::QuicTimeout),
    }
}
