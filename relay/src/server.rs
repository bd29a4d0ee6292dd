//! The relay as a running thing: listeners, accept loops, per-stream dispatch, shutdown.
//!
//! One port number serves both hops: QUIC on UDP and TLS on TCP. Structured concurrency:
//! every task is spawned on one `TaskTracker` and watches one `CancellationToken`, so
//! [`Relay::shutdown`] stops accepting, ends every session and waits for all tasks.
//! Handshakes run in their own tasks, never on an accept loop.
//!
//! Every hop stream starts with one control message: `Register` makes it a host's control
//! stream (see `host.rs`), `Connect` makes it a client session (see `session.rs`), and
//! `Attach` hands a TCP host's dial-back to its waiting session (see `attach.rs`).

use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener, UdpSocket};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ferry_link::{Framed, LinkRecv, LinkSend, split_tls};
use ferry_proto::codes::{CLOSE_PROTOCOL, CLOSE_SHUTDOWN};
use ferry_proto::{CertPin, EXPORTER_LEN, Message, RefuseReason};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::attach::PendingAttach;
use crate::host::{self, HostHop, Registration};
use crate::limits::{BufferBudget, Limits, SourceRate};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::registry::Registry;
use crate::{Error, RelayConfig, TlsIdentity, admin, session, tls};

/// The settings a reload replaces; tasks take a snapshot when they start.
pub(crate) struct Live {
    pub(crate) policy: Policy,
    pub(crate) limits: Limits,
}

/// State every task of one relay shares.
pub(crate) struct Shared {
    pub(crate) config: RelayConfig,
    pub(crate) registry: Registry,
    pub(crate) pending: PendingAttach,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) budget: Arc<BufferBudget>,
    /// Set when a graceful shutdown starts: no new connections, registrations or sessions.
    pub(crate) draining: CancellationToken,
    live: RwLock<Arc<Live>>,
    rate: SourceRate,
    handshakes: Arc<Semaphore>,
    active_sessions: watch::Sender<usize>,
    /// The TLS acceptor for TCP hops; replaced on certificate reload.
    tcp_tls: RwLock<TlsAcceptor>,
}

/// Counts a running session until dropped.
pub(crate) struct ActiveSession<'a>(&'a Shared);

impl Drop for ActiveSession<'_> {
    fn drop(&mut self) {
        self.0.active_sessions.send_modify(|n| *n -= 1);
        self.0.metrics.session_closed();
    }
}

impl Shared {
    /// The current policy and limits.
    pub(crate) fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Marks a session as running (for metrics and the shutdown drain).
    pub(crate) fn session_started(&self) -> ActiveSession<'_> {
        self.active_sessions.send_modify(|n| *n += 1);
        self.metrics.session_opened();
        ActiveSession(self)
    }

    /// Whether a new connection from `ip` may start its handshake: under the per-source
    /// rate and the pending-handshake cap. The address is used here and forgotten.
    fn admit_connection(&self, ip: IpAddr) -> Option<OwnedSemaphorePermit> {
        if !self.rate.allow(ip, self.live().limits.connections_per_minute_per_source) {
            self.metrics.connections_rate_limited();
            return None;
        }
        let permit = self.handshakes.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.metrics.refused(RefuseReason::RelayBusy.label());
        }
        permit
    }
}

/// A running relay. Call [`Relay::shutdown`] to stop it.
pub struct Relay {
    endpoint: Option<quinn::Endpoint>,
    admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    local_addr: SocketAddr,
    pin: RwLock<CertPin>,
}

/// Enlarges the QUIC socket's buffers; says how to lift the kernel's cap if it applies.
fn enlarge_udp_buffers(socket: &UdpSocket) {
    use ferry_link::udp::{WANTED_BUFFER, tune_socket};
    if let Some(granted) = tune_socket(socket).filter(|b| b.capped()) {
        warn!(
            recv_kib = granted.recv / 1024,
            send_kib = granted.send / 1024,
            "the kernel capped the QUIC socket's buffers below the {} MiB wanted; datagrams that \
             arrive in bursts get dropped and QUIC slows down. Raise the cap with \
             `sysctl -w net.core.rmem_max={WANTED_BUFFER} net.core.wmem_max={WANTED_BUFFER}`",
            WANTED_BUFFER >> 20
        );
    }
}

/// Binds UDP and TCP on one port number (a fresh one when port 0 was asked for).
fn bind_both(listen: SocketAddr, quic: bool, tcp: bool) -> Result<(Option<UdpSocket>, Option<StdTcpListener>), Error> {
    let bind_err = |source| Error::Bind { addr: listen, source };
    for _ in 0..16 {
        let udp = quic.then(|| UdpSocket::bind(listen)).transpose().map_err(bind_err)?;
        let port = match &udp {
            Some(u) => u.local_addr().map_err(bind_err)?.port(),
            None => listen.port(),
        };
        if !tcp {
            return Ok((udp, None));
        }
        match StdTcpListener::bind(SocketAddr::new(listen.ip(), port)) {
            Ok(listener) => return Ok((udp, Some(listener))),
            // The UDP port's TCP twin is taken: with port 0, try another pair.
            Err(e) if listen.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(bind_err(e)),
        }
    }
    Err(bind_err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free port pair for UDP and TCP")))
}

impl Relay {
    /// Binds the listeners and starts serving.
    pub async fn spawn(config: RelayConfig) -> Result<Self, Error> {
        config.validate()?;
        let pin = config.identity.pin()?;
        let (udp, tcp) = bind_both(config.listen, config.quic, config.tcp)?;
        let bind_err = |source| Error::Bind { addr: config.listen, source };
        let tcp_tls = TlsAcceptor::from(Arc::new(tls::rustls_server_config(&config)?));
        let endpoint = match udp {
            Some(socket) => Some({
                enlarge_udp_buffers(&socket);
                quinn::Endpoint::new(
                    quinn::EndpointConfig::default(),
                    Some(tls::quic_server_config(&config)?),
                    socket,
                    Arc::new(quinn::TokioRuntime),
                )
                .map_err(bind_err)?
            }),
            None => None,
        };
        let tcp = match tcp {
            Some(listener) => {
                listener.set_nonblocking(true).map_err(bind_err)?;
                Some(TcpListener::from_std(listener).map_err(bind_err)?)
            }
            None => None,
        };
        let local_addr = match (&endpoint, &tcp) {
            (Some(e), _) => e.local_addr(),
            (None, Some(l)) => l.local_addr(),
            (None, None) => {
                return Err(Error::Config("enable at least one of QUIC and TCP".into()));
            }
        }
        .map_err(bind_err)?;

        let admin = match config.admin {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?),
            None => None,
        };
        let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose().map_err(bind_err)?;

        let metrics = Arc::new(Metrics::default());
        metrics.set_buffer_budget(config.limits.buffer_budget);
        let shared = Arc::new(Shared {
            registry: Registry::new(),
            pending: PendingAttach::default(),
            budget: BufferBudget::new(config.limits.buffer_budget),
            metrics,
            draining: CancellationToken::new(),
            rate: SourceRate::default(),
            handshakes: Arc::new(Semaphore::new(config.limits.max_pending_handshakes)),
            active_sessions: watch::Sender::new(0),
            live: RwLock::new(Arc::new(Live { policy: config.policy.clone(), limits: config.limits.clone() })),
            tcp_tls: RwLock::new(tcp_tls),
            config,
        });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        if let Some(listener) = admin {
            let health = shared.clone();
            let healthy = move || !health.draining.is_cancelled();
            tracker.spawn(admin::serve(listener, shared.metrics.clone(), healthy, cancel.clone()));
        }
        if let Some(endpoint) = &endpoint {
            tracker.spawn(quic_accept_loop(endpoint.clone(), shared.clone(), cancel.clone(), tracker.clone()));
        }
        if let Some(listener) = tcp {
            tracker.spawn(tcp_accept_loop(listener, shared.clone(), cancel.clone(), tracker.clone()));
        }
        Ok(Self { endpoint, admin_addr, shared, cancel, tracker, local_addr, pin: RwLock::new(pin) })
    }

    /// The address the relay listens on (with the real port when 0 was asked for); QUIC
    /// and TCP share the port number.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics` and `/healthz` are served, if anywhere.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The pin of the certificate the relay serves to new connections.
    pub fn pin(&self) -> CertPin {
        *self.pin.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves `identity` to new connections from now on; running connections and their
    /// sessions keep the certificate they started with (certificate renewal, SIGHUP).
    pub fn set_identity(&self, identity: TlsIdentity) -> Result<CertPin, Error> {
        let mut config = self.shared.config.clone();
        config.identity = identity;
        let pin = config.identity.pin()?;
        if let Some(endpoint) = &self.endpoint {
            endpoint.set_server_config(Some(tls::quic_server_config(&config)?));
        }
        let acceptor = TlsAcceptor::from(Arc::new(tls::rustls_server_config(&config)?));
        *self.shared.tcp_tls.write().unwrap_or_else(PoisonError::into_inner) = acceptor;
        *self.pin.write().unwrap_or_else(PoisonError::into_inner) = pin;
        Ok(pin)
    }

    /// Applies new access rules, tiers and limits to new connections, registrations and
    /// sessions; running sessions keep the rules they started with. (The pending-handshake
    /// cap is fixed at start.)
    pub fn set_policy(&self, policy: Policy, limits: Limits) {
        self.shared.budget.set_cap(limits.buffer_budget);
        self.shared.metrics.set_buffer_budget(limits.buffer_budget);
        *self.shared.live.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(Live { policy, limits });
    }

    /// The number of running sessions; await `wait_for` on it instead of polling.
    pub fn active_sessions(&self) -> watch::Receiver<usize> {
        self.shared.active_sessions.subscribe()
    }

    /// The metrics in Prometheus text format (what `/metrics` serves).
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render()
    }

    /// How many hosts are registered right now.
    pub fn registered_hosts(&self) -> usize {
        self.shared.registry.len()
    }

    /// A counter that increases with every successful host registration; tests and
    /// supervisors await it instead of polling.
    pub fn registrations(&self) -> watch::Receiver<u64> {
        self.shared.registry.watch_registrations()
    }

    /// How many hosts are registered, as it changes (the awaitable twin of
    /// [`Relay::registered_hosts`]): tests await an unregistration on it.
    pub fn registered_hosts_watch(&self) -> watch::Receiver<usize> {
        self.shared.registry.watch_count()
    }

    /// Graceful shutdown: stops accepting connections, registrations and sessions, tells
    /// hosts the relay is going away, lets running sessions finish for up to `deadline`,
    /// then ends whatever is left (peers see "the relay is shutting down") and waits for
    /// every task.
    pub async fn shutdown(self, deadline: Duration) {
        self.shared.draining.cancel();
        let mut active = self.shared.active_sessions.subscribe();
        if tokio::time::timeout(deadline, active.wait_for(|n| *n == 0)).await.is_err() {
            debug!("shutdown deadline passed with sessions running; ending them");
        }
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await.is_err() {
            debug!("tasks still running after the shutdown deadline");
        }
        if let Some(endpoint) = self.endpoint {
            endpoint.close(CLOSE_SHUTDOWN.into(), b"relay shutting down");
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }
}

/// Which hop a stream arrived on.
enum StreamHop {
    Quic(quinn::Connection),
    Tcp { exporter: [u8; EXPORTER_LEN] },
}

async fn quic_accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let incoming = tokio::select! {
            biased;
            _ = shared.draining.cancelled() => return,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { return };
        let Some(permit) = shared.admit_connection(incoming.remote_address().ip()) else {
            incoming.refuse();
            continue;
        };
        tracker.spawn(serve_quic(incoming, permit, shared.clone(), cancel.clone(), tracker.clone()));
    }
}

async fn serve_quic(
    incoming: quinn::Incoming,
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let started = Instant::now();
    let conn = match tokio::time::timeout(shared.config.handshake_timeout, async { incoming.accept()?.await }).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return debug!(error = %e, "QUIC handshake failed"),
        Err(_) => {
            shared.metrics.refused("handshake_timeout");
            return debug!("QUIC handshake timed out");
        }
    };
    shared.metrics.handshake_seconds(started.elapsed());
    drop(permit);
    loop {
        let stream = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                conn.close(CLOSE_SHUTDOWN.into(), b"relay shutting down");
                return;
            }
            stream = conn.accept_bi() => stream,
        };
        let Ok((send, recv)) = stream else { return };
        let hop = StreamHop::Quic(conn.clone());
        tracker.spawn(dispatch(shared.clone(), hop, LinkSend::Quic(send), LinkRecv::Quic(recv), cancel.clone()));
    }
}

async fn tcp_accept_loop(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken, tracker: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shared.draining.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // Dropping the socket closes it: over the rate or too many handshakes.
                if let Some(permit) = shared.admit_connection(peer.ip()) {
                    tracker.spawn(serve_tcp(tcp, permit, shared.clone(), cancel.clone()));
                }
            }
            // Out of file descriptors or similar: back off briefly instead of spinning.
            Err(e) => {
                debug!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[expect(clippy::manual_async_fn, reason = "an `async fn` keeps its arguments twice (pump module docs)")]
fn serve_tcp(
    tcp: tokio::net::TcpStream,
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> impl Future<Output = ()> {
    // The handshake's state (1.5 KiB) is boxed, so the connection's task keeps no room for
    // it during the session. Not an `async fn`, which would keep every argument twice (see
    // the pump's module docs).
    async move {
        if let Some((send, recv, exporter)) = Box::pin(accept_tls(tcp, permit, &shared)).await {
            dispatch(shared, StreamHop::Tcp { exporter }, send, recv, cancel).await;
        }
    }
}

/// The TLS handshake of a TCP connection (bounded by the handshake timeout); the hop's
/// halves and its registration exporter, or `None` if it failed.
async fn accept_tls(
    tcp: tokio::net::TcpStream,
    permit: OwnedSemaphorePermit,
    shared: &Shared,
) -> Option<(LinkSend, LinkRecv, [u8; EXPORTER_LEN])> {
    let _ = tcp.set_nodelay(true);
    let started = Instant::now();
    let acceptor = shared.tcp_tls.read().unwrap_or_else(PoisonError::into_inner).clone();
    let tls = match tokio::time::timeout(shared.config.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            debug!(error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            shared.metrics.refused("handshake_timeout");
            debug!("TLS handshake timed out");
            return None;
        }
    };
    shared.metrics.handshake_seconds(started.elapsed());
    drop(permit);
    let tls = tokio_rustls::TlsStream::Server(tls);
    let exporter = ferry_link::exporter::tls(&tls).ok()?;
    let (send, recv) = split_tls(tls);
    Some((send, recv, exporter))
}

/// Reads a stream's first message and hands the stream to the host, session or attach logic.
/// (Not an `async fn`, which would keep every argument twice for the stream's lifetime.)
fn dispatch(
    shared: Arc<Shared>,
    hop: StreamHop,
    send: LinkSend,
    recv: LinkRecv,
    cancel: CancellationToken,
) -> impl Future<Output = ()> {
    let mut framed = Framed::new(recv);
    async move {
        let first = match framed.message(shared.config.handshake_timeout).await {
            Ok(message) => message,
            Err(e) => return debug!(error = %e, "stream ended before its first message"),
        };
        let outcome = match first {
            Message::Register { host_id, token, handshake } => {
                let (host_hop, exporter) = match hop {
                    StreamHop::Quic(conn) => {
                        let Ok(exporter) = ferry_link::exporter::quic(&conn) else { return };
                        (HostHop::Quic(conn), exporter)
                    }
                    StreamHop::Tcp { exporter } => (HostHop::Tcp, exporter),
                };
                let token = token.map(|t| t.0);
                let registration = Registration { host_id, token, hello: handshake, exporter };
                // Boxed: a host's control stream is one per host, but its future is the largest
                // of these branches and would otherwise set the size of every session's task.
                Box::pin(host::serve(shared, host_hop, send, framed, registration, cancel)).await
            }
            Message::Connect { host_id } => session::serve(shared, send, framed, host_id, cancel).await,
            Message::Attach { session } => {
                let (recv, first) = framed.into_parts();
                // An unknown or late session: the connection is dropped.
                let _ = shared.pending.attach(session, (send, recv, first));
                Ok(())
            }
            _ => {
                if let StreamHop::Quic(conn) = hop {
                    conn.close(CLOSE_PROTOCOL.into(), b"unexpected first message");
                }
                return debug!("unexpected first message");
            }
        };
        if let Err(e) = outcome {
            debug!(error = %e, "stream ended with an error");
        }
    }
}
