//! The TLS-over-TCP way to open a hop, for networks that block UDP: each stream is a
//! TLS connection of its own (rustls resumes sessions, so later handshakes are cheaper).
//! The same dialer reaches a host's direct port, with the direct path's TLS settings.

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
use crate::verify::{Rejection, client_tls_explained, direct_tls};

pub(crate) type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// Who a [`TcpDialer`] dials, for its errors.
pub(crate) enum Peer {
    /// A relay of the ticket (its certificate refusals are explained).
    Relay(RelayAddr),
    /// A host's direct port.
    Host(String),
}

impl Peer {
    fn unreachable(&self, source: LinkError) -> Error {
        match self {
            Self::Relay(relay) => Error::RelayUnreachable { addr: relay.addr.clone(), source },
            Self::Host(addr) => Error::HostUnreachable { addr: addr.clone(), source },
        }
    }
}

/// Opens TLS-over-TCP connections to one relay (or one host's direct port).
pub(crate) struct TcpDialer {
    peer: Peer,
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
        let peer = Peer::Relay(relay.clone());
        let (tls, rejection) =
            client_tls_explained(relay.trust).map_err(|e| peer.unreachable(LinkError::TlsConfig(Box::new(e))))?;
        Self::connect_with(peer, &relay.addr, tls, rejection, options).await
    }

    /// Resolves a host's direct address and opens a first connection to it.
    pub(crate) async fn connect_direct(addr: &str, options: &HopOptions) -> Result<Self, Error> {
        let peer = Peer::Host(addr.to_owned());
        let tls = direct_tls().map_err(|e| peer.unreachable(LinkError::TlsConfig(Box::new(e))))?;
        Self::connect_with(peer, addr, tls, Rejection::default(), options).await
    }

    async fn connect_with(
        peer: Peer,
        addr: &str,
        tls: rustls::ClientConfig,
        rejection: Rejection,
        options: &HopOptions,
    ) -> Result<Self, Error> {
        let target = ferry_link::resolve(addr).await.map_err(|e| peer.unreachable(e))?;
        let name = ServerName::try_from(ferry_link::resolve::server_name(addr).to_owned())
            .map_err(|e| peer.unreachable(LinkError::ServerName(e)))?;
        let dialer = Self {
            peer,
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
        let unreachable = |source: LinkError| self.peer.unreachable(source);
        let attempt = async {
            let tcp = TcpStream::connect(self.target).await.map_err(|e| unreachable(LinkError::Tcp(e)))?;
            tcp.set_nodelay(true)?;
            self.connector.connect(self.name.clone(), tcp).await.map_err(|e| {
                let explained = match &self.peer {
                    Peer::Relay(relay) => self.rejection.error(relay),
                    Peer::Host(_) => None,
                };
                explained.unwrap_or_else(|| unreachable(LinkError::TlsHandshake(e)))
            })
        };
        tokio::time::timeout(self.timeout, attempt).await.map_err(|_| unreachable(LinkError::TcpTimeout))?
    }
}
