//! The TLS-over-TCP way to open a hop, for networks that block UDP: each stream is a
//! TLS connection of its own (rustls resumes sessions, so later handshakes are cheaper).
//! The same dialer reaches a host's direct port, with the direct path's TLS settings.
//!
//! A new TLS connection costs two round trips and a handshake before a session can start
//! on it, so the dialer keeps one *spare*: the connection that proved the relay reachable,
//! and, while streams open in quick succession (a player fetching each segment on a new
//! connection; a TCP host dialling back for each of them), one dialled in the background as
//! soon as a stream takes the last. A spare is used only while it is young
//! ([`SPARE_MAX_AGE`]): the relay cuts a connection that sends nothing for its handshake
//! timeout (1 s at the least), so an older one is closed by this side first — quietly,
//! before the relay would count it as a timeout — and a stream that finds none dials its
//! own. A client opening a session now and then never holds one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

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

/// How long a connection dialled ahead stays usable. Below the relay's smallest handshake
/// timeout (1 s), so the relay never cuts a spare first.
const SPARE_MAX_AGE: Duration = Duration::from_millis(750);

/// Opens TLS-over-TCP connections to one relay (or one host's direct port).
pub(crate) struct TcpDialer {
    target: Arc<Target>,
    spare: Arc<Mutex<Spare>>,
}

/// Where and how a [`TcpDialer`] connects.
struct Target {
    peer: Peer,
    addr: SocketAddr,
    name: ServerName<'static>,
    connector: TlsConnector,
    rejection: Rejection,
    timeout: Duration,
}

/// The connection dialled ahead, and what decides whether to dial the next.
#[derive(Default)]
struct Spare {
    /// A connection with nothing sent on it yet, and when it was dialled.
    ready: Option<(ClientTls, Instant)>,
    /// When a stream was last taken: a take within [`SPARE_MAX_AGE`] of it dials a spare.
    last_taken: Option<Instant>,
    /// A background dial is under way.
    dialling: bool,
}

impl Spare {
    /// Takes the spare if it is young enough; says whether to dial the next one ahead.
    fn take(&mut self, now: Instant) -> (Option<ClientTls>, bool) {
        let young = |dialled: &Instant| now.saturating_duration_since(*dialled) < SPARE_MAX_AGE;
        let ready = self.ready.take().filter(|(_, dialled)| young(dialled)).map(|(tls, _)| tls);
        let in_a_burst = self.last_taken.is_some_and(|t| young(&t));
        self.last_taken = Some(now);
        let dial_ahead = in_a_burst && !self.dialling;
        self.dialling |= dial_ahead;
        (ready, dial_ahead)
    }
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
        let target = Arc::new(Target {
            peer,
            addr: target,
            name,
            connector: TlsConnector::from(Arc::new(tls)),
            rejection,
            timeout: options.connect_timeout,
        });
        let first = target.dial().await?;
        let spare = Arc::new(Mutex::new(Spare::default()));
        keep_spare(&spare, first);
        Ok(Self { target, spare })
    }

    /// A connection for one stream: the spare if it is young, else a new one. In a burst of
    /// streams, the next spare is dialled in the background meanwhile.
    pub(crate) async fn take_or_dial(&self) -> Result<ClientTls, Error> {
        let (ready, dial_ahead) = lock(&self.spare).take(Instant::now());
        if dial_ahead {
            let (target, spare) = (self.target.clone(), Arc::downgrade(&self.spare));
            tokio::spawn(async move {
                let dialled = target.dial().await.ok();
                // A dialer dropped meanwhile closes the connection with it.
                if let Some(spare) = spare.upgrade() {
                    lock(&spare).dialling = false;
                    if let Some(tls) = dialled {
                        keep_spare(&spare, tls);
                    }
                }
            });
        }
        match ready {
            Some(tls) => Ok(tls),
            None => self.target.dial().await,
        }
    }
}

/// Keeps `tls` as the spare, and closes it once it is too old to use if no stream took it.
fn keep_spare(spare: &Arc<Mutex<Spare>>, tls: ClientTls) {
    let dialled = Instant::now();
    lock(spare).ready = Some((tls, dialled));
    let spare = Arc::downgrade(spare);
    tokio::spawn(async move {
        tokio::time::sleep(SPARE_MAX_AGE).await;
        let Some(spare) = spare.upgrade() else { return };
        let mut spare = lock(&spare);
        if spare.ready.as_ref().is_some_and(|(_, at)| *at == dialled) {
            spare.ready = None;
        }
    });
}

fn lock(spare: &Mutex<Spare>) -> std::sync::MutexGuard<'_, Spare> {
    spare.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Target {
    async fn dial(&self) -> Result<ClientTls, Error> {
        let unreachable = |source: LinkError| self.peer.unreachable(source);
        let attempt = async {
            let tcp = TcpStream::connect(self.addr).await.map_err(|e| unreachable(LinkError::Tcp(e)))?;
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
