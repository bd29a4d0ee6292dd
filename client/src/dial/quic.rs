//! The QUIC way to open a hop: one connection to the relay, authenticated by pin or
//! public roots, carrying every session as its own stream.

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
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| unreachable(LinkError::QuicCipherSuite(e)))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(options.transport().build().map_err(unreachable)?));

    let endpoint = options.endpoint_for(target).map_err(unreachable)?;
    let connecting = endpoint
        .connect_with(config, target, ferry_link::resolve::server_name(&relay.addr))
        .map_err(|e| unreachable(LinkError::Connect(Box::new(e))))?;
    match tokio::time::timeout(options.connect_timeout, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        // A refused certificate reads as a TLS failure; the verifier left the reason.
        Ok(Err(e)) => Err(rejection.error(relay).unwrap_or_else(|| unreachable(LinkError::Handshake(Box::new(e))))),
        Err(_) => Err(unreachable(LinkError::QuicTimeout)),
    }
}
