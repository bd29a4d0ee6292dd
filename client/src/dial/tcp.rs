//! The TLS-over-TCP way to open a hop, for networks that block UDP: each stream is a
//! TLS connection of its own (rustls resumes sessions, so later handshakes are cheaper).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ferry_link::LinkError;
use ferry_proto::RelayAddr;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::HopOptions;
use crate::Error;
use crate::verify::{Rejection, client_tls_explained};

pub(crate) type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// Opens TLS-over-TCP connections to one relay.
pub(crate) struct TcpDialer {
    relay: RelayAddr,
    target: SocketAddr,
    name: ServerName<'static>,
    connector: TlsConnector,
    rejection: Rejection,
    timeout: Duration,
    /// The connection that proved the relay reachable, kept for the first stream.
    spare: Mutex<Option<ClientTls>>,
}

impl TcpDialer {
    /// Resolves the relay and opens a first connection (kept for the first stream).
    pub(crate) async fn connect(relay: &RelayAddr, options: &HopOptions) -> Result<Self, Error> {
        let unreachable = |source: LinkError| Error::RelayUnreachable { addr: relay.addr.clone(), source };
        let target = ferry_link::resolve(&relay.addr).await.map_err(unreachable)?;
        let name = ServerName::try_from(ferry_link::resolve::server_name(&relay.addr).to_owned())
            .map_err(|e| unreachable(LinkError::ServerName(e)))?;
        let (tls, rejection) =
            client_tls_explained(relay.trust).map_err(|e| unreachable(LinkError::TlsConfig(Box::new(e))))?;
        let dialer = Self {
            relay: relay.clone(),
            target,
            name,
            connector: TlsConnector::from(Arc::new(tls)),
            rejection,
            timeout: options.connect_timeout,
            spare: Mutex::new(None),
        };
        let first = dialer.dial().await?;
        *dialer.spare.lock().unwrap_or_else(PoisonError::into_inner) = Some(first);
        Ok(dialer)
    }

    /// The spare connection if there is one, else a new one.
    pub(crate) async fn take_or_dial(&self) -> Result<ClientTls, Error> {
        let spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner).take();
        match spare {
            Some(tls) => Ok(tls),
            None => self.dial().await,
        }
    }

    async fn dial(&self) -> Result<ClientTls, Error> {
        let unreachable = |source: LinkError| Error::RelayUnreachable { addr: self.relay.addr.clone(), source };
        let attempt = async {
            let tcp = TcpStream::connect(self.target).await.map_err(|e| unreachable(LinkError::Tcp(e)))?;
            tcp.set_nodelay(true)?;
            self.connector.connect(self.name.clone(), tcp).await.map_err(|e| {
                self.rejection.error(&self.relay).unwrap_or_else(|| unreachable(LinkError::TlsHandshake(e)))
            })
        };
        tokio::time::timeout(self.timeout, attempt).await.map_err(|_| unreachable(LinkError::TcpTimeout))?
    }
}
