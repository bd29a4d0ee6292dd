//! The client: opens end-to-end sessions to one host, over the best path it has.
//!
//! A **path** is one way to the host: straight to a direct address of the host, or through
//! one relay of the ticket. Each session is raced over the paths in order of expected
//! quality — the one that last worked, then direct addresses (learned by punching, then
//! the ticket's), then relays in ticket order, paths that just failed last — each with a
//! head start of [`NEXT_RELAY_AFTER`] over the next, and the first to complete the
//! end-to-end handshake carries the session. So a dead relay (or an unreachable direct
//! address) costs at most its head start, and the path that worked is remembered for the
//! next session. A path that failed is re-checked in the background and moves back up
//! once it answers.
//!
//! One connection per path carries every session as its own stream (QUIC), so a session
//! costs one stream and one Noise handshake, not a new connection. Through a relay the
//! `Connect` request and the first handshake message leave together; on the direct path
//! the first frame is the tagged hello (`ferry_proto::e2e::direct`). Either way a session
//! is ready after one round trip to the host. QUIC hops share one UDP socket, so the
//! address a relay observes for this client is the one a punched path uses.
//!
//! A relay that belongs to a fleet may answer `Connect` with a redirect to the node the
//! host is registered at. The client dials that node, checking its certificate exactly as
//! it checked the relay that sent it there (a fleet's nodes share one certificate, so a
//! redirect can only lead to a node the ticket already trusts), keeps it as that path's
//! hop for later sessions, and asks again there. A second redirect is an error: nodes
//! redirect only to where the host is registered, so two in a row mean the fleet is
//! confused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferry_link::{Framed, LinkSend};
use ferry_proto::connect::{ClientConnect, ConnectEvent};
use ferry_proto::e2e::direct::seal_direct_hello;
use ferry_proto::e2e::handshake::MAX_HANDSHAKE_LEN;
use ferry_proto::e2e::record::put_frame;
use ferry_proto::e2e::{ClientHandshake, Offer};
use ferry_proto::{RelayAddr, StaticKey, Ticket};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::dial::{self, HopOptions, RelayHop, Transport};
use crate::direct::punch::PUNCH_SERVICE;
pub use crate::path::Path;
use crate::{Error, Session};

/// How long a path has to carry a session before the next one is tried alongside it
/// (twice QUIC's head start over TCP, so a relay that answers only over TCP still wins).
pub const NEXT_RELAY_AFTER: Duration = Duration::from_millis(500);

/// Keep-alive interval of a resumable client's QUIC hops (at most; see [`Client::resumable`]).
pub const RESUMABLE_KEEP_ALIVE: Duration = Duration::from_secs(1);
/// Idle timeout of a resumable client's QUIC hops (at most).
pub const RESUMABLE_IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a path that failed stays at the back of the order (unless its background
/// re-check finds it working again sooner).
const FAILED_PATH_BACKOFF: Duration = Duration::from_secs(30);
/// Background re-checks of a failed path: attempts, and the pause before the first
/// (doubling after each).
const RECHECK_ATTEMPTS: u32 = 6;
const RECHECK_FIRST_PAUSE: Duration = Duration::from_secs(1);

/// How long a punched dial waits for its handshake (it spans a few of QUIC's
/// retransmissions, the ones the host's datagrams open the way for).
const PUNCH_DIAL_TIMEOUT: Duration = Duration::from_secs(4);
/// How long after a punch the next may be tried.
pub const PUNCH_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// An open connection along one path. For a relay path redirected by its fleet, the hop
/// leads to the node the redirect named.
struct PathHop {
    hop: Arc<RelayHop>,
    /// The relay or fleet node the hop leads to (relay paths; `None` on direct paths).
    relay: Option<RelayAddr>,
}

/// What a session attempt on one hop came to (returned once per session, so its size
/// matters not: a boxed session would cost an allocation for nothing).
#[expect(clippy::large_enum_variant, reason = "a short-lived return value")]
enum Opened {
    Session(Session),
    /// The fleet node at this address has the host.
    Redirected(String),
}

/// What the client knows about its paths (shared with background re-checks).
#[derive(Default)]
struct Paths {
    /// Open connections, per path.
    hops: HashMap<Path, PathHop>,
    /// The path the last session took.
    last_good: Option<Path>,
    /// Paths that failed, and when.
    failed: HashMap<Path, Instant>,
    /// Direct addresses learned from the host (a punched path), tried before the ticket's.
    learned: Vec<String>,
    /// The transport that last worked, per path (for `Transport::Auto`).
    transports: HashMap<Path, Transport>,
    /// When a punch was last tried.
    punched_at: Option<Instant>,
    /// The host said it cannot punch (no direct port).
    host_cannot_punch: bool,
}

/// Opens sessions to the host of one ticket.
pub struct Client {
    ticket: Ticket,
    key: StaticKey,
    options: HopOptions,
    transport: Transport,
    /// Longest wait for the relay's answer and the host's handshake.
    pub handshake_timeout: Duration,
    /// Whether sessions offer resumption (the host must agree; see [`Client::bridge`]).
    resumable: bool,
    /// How long a resumable session whose path was lost tries to resume before it ends
    /// with an error (default 30 s).
    pub resume_timeout: Duration,
    paths: Arc<Mutex<Paths>>,
    /// The UDP endpoint every IPv4 QUIC hop is dialled from, made on first use.
    endpoint: OnceLock<quinn::Endpoint>,
    /// The resumption PSK of the last full handshake, and handshake counts.
    psk: crate::psk_cache::PskCache,
    /// Resume attempts made so far, by every session of this client.
    resume_attempts: std::sync::atomic::AtomicU64,
    /// Resumable sessions bridged now (each holds its replay buffers until it ends).
    live_resumable: Arc<std::sync::atomic::AtomicUsize>,
    /// Parent of the `leaving` token of every resumable session riding a relay: cancelled
    /// (and replaced) when a direct path comes up, so those sessions move onto it.
    off_relays: Mutex<tokio_util::sync::CancellationToken>,
}

/// Counts a resumable session as live for as long as it is held.
struct Live(Arc<std::sync::atomic::AtomicUsize>);

impl Live {
    fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Client {
    /// A client for `ticket`, identified to the host by `key`, choosing QUIC or TCP
    /// automatically.
    pub fn new(ticket: Ticket, key: StaticKey, options: HopOptions) -> Self {
        Self {
            ticket,
            key,
            options,
            transport: Transport::Auto,
            handshake_timeout: Duration::from_secs(10),
            resumable: false,
            resume_timeout: crate::resume::DEFAULT_RESUME_TIMEOUT,
            paths: Arc::default(),
            endpoint: OnceLock::new(),
            psk: crate::psk_cache::PskCache::default(),
            resume_attempts: Default::default(),
            live_resumable: Arc::default(),
            off_relays: Mutex::default(),
        }
    }

    /// How many sessions began with each kind of end-to-end handshake (full hybrid, full
    /// classic, resumed, and resumed hellos the host did not know).
    pub fn handshake_counts(&self) -> crate::HandshakeCounts {
        self.psk.counts()
    }

    /// Offers resumable sessions: a session bridged with [`Client::bridge`] then survives
    /// the loss of its path (another relay, or the direct path, carries it on). Its QUIC
    /// hops then keep alive and time out as a host's do ([`RESUMABLE_KEEP_ALIVE`],
    /// [`RESUMABLE_IDLE_TIMEOUT`]), so a blackholed relay is noticed within seconds even
    /// while no data flows (while it does, the end-to-end acknowledgements notice it in
    /// about two, over TCP too).
    pub fn resumable(mut self, yes: bool) -> Self {
        self.resumable = yes;
        if yes {
            self.options.keep_alive = self.options.keep_alive.min(RESUMABLE_KEEP_ALIVE);
            self.options.idle_timeout = self.options.idle_timeout.min(RESUMABLE_IDLE_TIMEOUT);
        }
        self
    }

    /// Bridges `session` to a local connection as [`Session::bridge`] does; a resumable
    /// session whose path is lost keeps the local connection open and re-attaches through
    /// the next working path, ending with an error only after [`Client::resume_timeout`].
    pub async fn bridge<R, W>(
        &self,
        session: Session,
        local_read: R,
        local_write: W,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<crate::Transferred, Error>
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        let relayed = matches!(session.path, Some(Path::Relay(_)));
        match session.into_resumable() {
            Ok(mut resumable) => {
                if relayed {
                    resumable.link.leaving = self.relay_leaving();
                }
                let _live = Live::new(&self.live_resumable);
                let resume = ferry_proto::e2e::ClientResume::new(resumable.keys.clone());
                let side = crate::resume::Side::Client { resume, reattach: self };
                let timeout = self.resume_timeout;
                let (sent, received) =
                    crate::resume::bridge(resumable, side, local_read, local_write, timeout, cancel).await?;
                Ok(crate::Transferred { sent, received })
            }
            Err(session) => session.bridge(local_read, local_write, cancel).await,
        }
    }

    /// One resume attempt on `path`: the request as the stream's first end-to-end frame
    /// (after `Connect` through a relay, tagged on the direct path, as a hello is).
    async fn attach_via(&self, path: Path, request: &[u8]) -> Result<crate::resume::Link, Error> {
        let (hop, _) = self.hop(&path).await?;
        let stream = hop.open_stream().await?;
        let mut send = stream.send;
        let mut recv = Framed::new(stream.recv);
        let mut first = BytesMut::new();
        match &path {
            Path::Direct(_) => {
                put_frame(&mut first, &seal_direct_hello(&self.ticket.secret, request))?;
                send.write_chunks(&mut [first.freeze()]).await?;
            }
            Path::Relay(_) => {
                let (mut conversation, connect) = ClientConnect::start(self.ticket.host);
                first.extend_from_slice(&connect.to_vec()?);
                put_frame(&mut first, request)?;
                let leaving = self.relay_leaving();
                send.write_chunks(&mut [first.freeze()]).await?;
                match conversation.handle(recv.message(self.handshake_timeout).await?)? {
                    ConnectEvent::Accepted => {}
                    ConnectEvent::Refused(reason) => return Err(Error::Refused(reason)),
                    ConnectEvent::Redirected(_) => return Err(Error::Cut("a redirect while resuming a session")),
                }
                return Ok(crate::resume::Link { send, recv, leaving });
            }
        }
        Ok(crate::resume::Link::new(send, recv))
    }

    /// The `leaving` token of a resumable session on a relay path: it fires when a direct
    /// path comes up ([`Client::move_off_relays`]).
    fn relay_leaving(&self) -> tokio_util::sync::CancellationToken {
        // A child unregisters itself from its parent when dropped: ended sessions leave
        // nothing behind.
        self.off_relays.lock().unwrap_or_else(PoisonError::into_inner).child_token()
    }

    /// A direct path came up: every resumable session riding a relay moves onto it (a
    /// resume request as the direct stream's first frame, as after a lost path), and the
    /// relayed streams are closed, releasing the relay.
    fn move_off_relays(&self) {
        let leaving = std::mem::take(&mut *self.off_relays.lock().unwrap_or_else(PoisonError::into_inner));
        leaving.cancel();
    }

    /// How many times this client's sessions have tried to re-attach to their host after
    /// losing a path (each attempt over all paths counts once).
    pub fn resume_attempts(&self) -> u64 {
        self.resume_attempts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Resumable sessions bridged by this client now, running or trying to resume.
    pub fn resumable_sessions(&self) -> usize {
        self.live_resumable.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Uses `transport` for every hop.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    fn paths(&self) -> std::sync::MutexGuard<'_, Paths> {
        self.paths.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The transport of the hop the last session took.
    pub async fn transport_in_use(&self) -> Option<Transport> {
        let paths = self.paths();
        let last = paths.last_good.as_ref()?;
        paths.hops.get(last).map(|h| h.hop.transport())
    }

    /// The relay (or fleet node) address and transport of the hop the last session took,
    /// when that was a relay.
    pub async fn hop_in_use(&self) -> Option<(String, Transport)> {
        let paths = self.paths();
        let last = paths.last_good.as_ref()?;
        let hop = paths.hops.get(last)?;
        Some((hop.relay.as_ref()?.addr.clone(), hop.hop.transport()))
    }

    /// The path the last session took.
    pub fn path_in_use(&self) -> Option<Path> {
        self.paths().last_good.clone()
    }

    /// Every path of the ticket (and learned), best first.
    fn ranked(&self) -> Vec<Path> {
        let paths = self.paths();
        let mut order: Vec<Path> = Vec::new();
        let mut add = |path: Path| {
            if !order.contains(&path) {
                order.push(path);
            }
        };
        if let Some(last) = &paths.last_good {
            add(last.clone());
        }
        for addr in paths.learned.iter().chain(&self.ticket.direct) {
            add(Path::Direct(addr.clone()));
        }
        for relay in &self.ticket.relays {
            add(Path::Relay(relay.addr.clone()));
        }
        // Failed paths (recently) go last, in the same relative order.
        let recently_failed = |path: &Path| paths.failed.get(path).is_some_and(|at| at.elapsed() < FAILED_PATH_BACKOFF);
        order.sort_by_key(recently_failed);
        order
    }

    /// The hop options with this client's shared endpoint.
    fn hop_options(&self) -> Result<HopOptions, Error> {
        let mut options = self.options.clone();
        if options.endpoint.is_none() {
            let endpoint = match self.endpoint.get() {
                Some(endpoint) => endpoint.clone(),
                None => {
                    // IPv4, any interface, an ephemeral port (IPv6 targets get a fresh one).
                    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
                    ferry_link::udp::tune_socket(&socket);
                    let fresh = ferry_link::udp::endpoint(socket, None)?;
                    self.endpoint.get_or_init(|| fresh).clone()
                }
            };
            options.endpoint = Some(endpoint);
        }
        Ok(options)
    }

    fn relay_of(&self, addr: &str) -> Option<&RelayAddr> {
        self.ticket.relays.iter().find(|r| r.addr == addr)
    }

    /// The open hop along `path`, or a new one.
    async fn hop(&self, path: &Path) -> Result<(Arc<RelayHop>, Option<RelayAddr>), Error> {
        if let Some(open) = self.paths().hops.get(path).filter(|h| h.hop.is_alive()) {
            return Ok((open.hop.clone(), open.relay.clone()));
        }
        let relay = match path {
            Path::Relay(addr) => self.relay_of(addr).cloned(),
            Path::Direct(_) => None,
        };
        let hop = self.dial(path, relay.as_ref()).await?;
        self.paths().hops.insert(path.clone(), PathHop { hop: hop.clone(), relay: relay.clone() });
        Ok((hop, relay))
    }

    /// Dials `path` with the transport that last worked for it (or the chosen one).
    async fn dial(&self, path: &Path, relay: Option<&RelayAddr>) -> Result<Arc<RelayHop>, Error> {
        let remembered = self.paths().transports.get(path).copied();
        let transport = match (self.transport, remembered) {
            (Transport::Auto, Some(known)) => known,
            (chosen, _) => chosen,
        };
        let options = self.hop_options()?;
        let dialled = match (path, relay) {
            (Path::Direct(addr), _) => crate::direct::dial::connect(addr, transport, &options).await,
            (Path::Relay(_), Some(relay)) => dial::connect(relay, transport, &options).await,
            (Path::Relay(_), None) => Err(Error::Cut("the ticket does not list this relay")),
        };
        match dialled {
            Ok(hop) => {
                self.paths().transports.insert(path.clone(), hop.transport());
                Ok(Arc::new(hop))
            }
            Err(e) => {
                // A remembered transport that stopped working is forgotten.
                self.paths().transports.remove(path);
                Err(e)
            }
        }
    }

    /// Connects along the best path now (sessions would do it lazily), to report problems
    /// early: the paths are dialled in order, each with its head start, until one answers.
    pub async fn warm_up(&self) -> Result<(), Error> {
        let ((), path) = self.race(|path| async move { self.hop(&path).await.map(drop) }).await?;
        // Where the next session goes first (and what `transport_in_use` reports).
        self.paths().last_good.get_or_insert(path);
        Ok(())
    }

    /// Opens one end-to-end session to the host, over the first path that carries it.
    pub async fn open_session(&self) -> Result<Session, Error> {
        let (session, path) = self.race(|path| self.open_via(path)).await?;
        let mut paths = self.paths();
        paths.failed.remove(&path);
        match paths.last_good.replace(path.clone()) {
            Some(before) if before != path => tracing::info!("the path to the host changed: {before} -> {path}"),
            Some(_) => {}
            None => tracing::info!("reaching the host via {path}"),
        }
        Ok(session)
    }

    /// Runs `attempt` over the ranked paths, each with a head start of
    /// [`NEXT_RELAY_AFTER`] over the next; the first success wins. A certificate problem
    /// ends the race at once (it is never retried elsewhere silently).
    async fn race<T, F, Fut>(&self, attempt: F) -> Result<(T, Path), Error>
    where
        F: Fn(Path) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let order = self.ranked();
        let relays_only = order.iter().all(|p| matches!(p, Path::Relay(_)));
        let run = |i: usize| {
            let path = order[i].clone();
            let attempt = attempt(path);
            async move { (i, attempt.await) }
        };
        let mut running = FuturesUnordered::new();
        let mut next = 0;
        let mut failures = Vec::new();
        while next < order.len() || !running.is_empty() {
            if running.is_empty() {
                running.push(run(next));
                next += 1;
                continue;
            }
            tokio::select! {
                Some((i, outcome)) = running.next() => match outcome {
                    Ok(value) => return Ok((value, order[i].clone())),
                    Err(e) if e.is_relay_certificate_problem() => return Err(e),
                    Err(e) => {
                        self.failed(&order[i]);
                        if next < order.len() || !running.is_empty() {
                            // The error names the address already.
                            let others = if relays_only { "relays" } else { "ways to the host" };
                            tracing::warn!("{}; trying the ticket's other {others}", e.report());
                        }
                        failures.push((i, e));
                    }
                },
                () = tokio::time::sleep(NEXT_RELAY_AFTER), if next < order.len() => {
                    running.push(run(next));
                    next += 1;
                }
            }
        }
        failures.sort_by_key(|(i, _)| *i);
        let mut failures: Vec<Error> = failures.into_iter().map(|(_, e)| e).collect();
        // A host with relaying off that no address of it answers at: the one line that
        // names the fix (a refusal by the host itself is reported as it is).
        let unreachable = |e: &Error| matches!(e, Error::HostUnreachable { .. } | Error::NoTransportAnswered { .. });
        if self.ticket.relays.is_empty() && !failures.is_empty() && failures.iter().all(unreachable) {
            return Err(Error::DirectOnlyUnreachable { failures });
        }
        match failures.len() {
            0 => Err(Error::Cut("the ticket lists no way to the host")),
            1 => Err(failures.remove(0)),
            _ if relays_only => Err(Error::NoRelayAnswered { failures }),
            _ => Err(Error::NoPathAnswered { failures }),
        }
    }

    /// Remembers that `path` failed: it goes to the back of the order, its hop is let go
    /// if it is dead (a live one is kept: other sessions may be running on it, and a
    /// refusal is no reason to cut them), and a background task re-checks it.
    fn failed(&self, path: &Path) {
        let first_failure = {
            let mut paths = self.paths();
            if paths.hops.get(path).is_some_and(|open| !open.hop.is_alive()) {
                paths.hops.remove(path);
            }
            if paths.last_good.as_ref() == Some(path) {
                paths.last_good = None;
            }
            paths.failed.insert(path.clone(), Instant::now()).is_none()
        };
        if first_failure && tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(recheck(Arc::downgrade(&self.paths), self.recheck_dialer(path)));
        }
    }

    /// What a background re-check of `path` needs, owned (it outlives no client: it holds
    /// the paths only weakly and stops when the client is gone).
    fn recheck_dialer(&self, path: &Path) -> Recheck {
        Recheck {
            path: path.clone(),
            relay: match path {
                Path::Relay(addr) => self.relay_of(addr).cloned(),
                Path::Direct(_) => None,
            },
            transport: self.transport,
            options: self.hop_options().unwrap_or_else(|_| self.options.clone()),
        }
    }

    /// One session attempt along `path`.
    async fn open_via(&self, path: Path) -> Result<Session, Error> {
        let (hop, relay) = self.hop(&path).await?;
        let opened = match &path {
            Path::Direct(_) => Opened::Session(self.open_direct(&hop).await?),
            Path::Relay(_) => self.open_on(&hop, self.ticket.service.as_deref()).await?,
        };
        let session = match (opened, relay) {
            (Opened::Session(session), _) => session,
            (Opened::Redirected(node), Some(via)) => {
                let hop = self.follow_redirect(&path, &via, node).await?;
                match self.open_on(&hop, self.ticket.service.as_deref()).await? {
                    Opened::Session(session) => session,
                    Opened::Redirected(_) => return Err(Error::Cut("the relay's fleet redirected the session twice")),
                }
            }
            (Opened::Redirected(_), None) => return Err(Error::Cut("a redirect on a direct path")),
        };
        Ok(Session { path: Some(path), ..session })
    }

    /// Dials the fleet node `node` that `via` redirected us to, with `via`'s trust, and
    /// makes it `path`'s hop for later sessions.
    async fn follow_redirect(&self, path: &Path, via: &RelayAddr, node: String) -> Result<Arc<RelayHop>, Error> {
        let relay = RelayAddr { addr: node, trust: via.trust };
        let hop = Arc::new(dial::connect(&relay, self.transport, &self.hop_options()?).await?);
        self.paths().hops.insert(path.clone(), PathHop { hop: hop.clone(), relay: Some(relay) });
        Ok(hop)
    }

    /// Opens a session on a relay `hop`: `Connect` and the handshake, or the relay's redirect.
    /// A hybrid hello that a host before the hybrid handshake drops is retried once as a
    /// classic one, unless this host has answered a hybrid hello before.
    async fn open_on(&self, hop: &RelayHop, service: Option<&str>) -> Result<Opened, Error> {
        match self.open_on_with(hop, service, true).await {
            Err(e) if self.dropped_hybrid(&e) => self.open_on_with(hop, service, false).await,
            other => other,
        }
    }

    async fn open_on_with(&self, hop: &RelayHop, service: Option<&str>, hybrid: bool) -> Result<Opened, Error> {
        let stream = hop.open_stream().await?;
        let mut send = stream.send;
        let (handshake, hello) = self.hello(service, hybrid)?;
        let (mut conversation, connect) = ClientConnect::start(self.ticket.host);
        // `Connect` and the first handshake message leave together: one round trip.
        let mut first = BytesMut::from(&connect.to_vec()?[..]);
        put_frame(&mut first, &hello)?;
        send.write_chunks(&mut [first.freeze()]).await?;

        let mut recv = Framed::new(stream.recv);
        match conversation.handle(recv.message(self.handshake_timeout).await?)? {
            ConnectEvent::Accepted => {}
            ConnectEvent::Refused(reason) => return Err(Error::Refused(reason)),
            ConnectEvent::Redirected(node) => return Ok(Opened::Redirected(node)),
        }
        let established = self.finish_handshake(handshake, service, &mut send, &mut recv).await?;
        let ferry_proto::e2e::Established { sealer, opener, resume, .. } = established;
        Ok(Opened::Session(Session { send, recv, sealer, opener, path: None, resume }))
    }

    /// Opens a session on a direct `hop`: the tagged hello, then the host's answer.
    async fn open_direct(&self, hop: &RelayHop) -> Result<Session, Error> {
        match self.open_direct_with(hop, true).await {
            Err(e) if self.dropped_hybrid(&e) => self.open_direct_with(hop, false).await,
            other => other,
        }
    }

    async fn open_direct_with(&self, hop: &RelayHop, hybrid: bool) -> Result<Session, Error> {
        let stream = hop.open_stream().await?;
        let mut send = stream.send;
        let service = self.ticket.service.as_deref();
        let (handshake, hello) = self.hello(service, hybrid)?;
        let mut first = BytesMut::new();
        put_frame(&mut first, &seal_direct_hello(&self.ticket.secret, &hello))?;
        send.write_chunks(&mut [first.freeze()]).await?;
        let mut recv = Framed::new(stream.recv);
        let established = self.finish_handshake(handshake, service, &mut send, &mut recv).await?;
        let ferry_proto::e2e::Established { sealer, opener, resume, .. } = established;
        Ok(Session { send, recv, sealer, opener, path: None, resume })
    }

    /// The first handshake message: resumed when a PSK from an earlier full session with
    /// this host is at hand, else a full one (hybrid unless `hybrid` is false).
    fn hello(&self, service: Option<&str>, hybrid: bool) -> Result<(ClientHandshake, Vec<u8>), Error> {
        let (host, secret) = (&self.ticket.host, &self.ticket.secret);
        if let Some(psk) = self.psk.current(Instant::now()) {
            return Ok(ClientHandshake::start_resumed(host, &psk, service, self.resumable)?);
        }
        let offer = Offer { hybrid, ..Offer::current(self.resumable) };
        Ok(ClientHandshake::start_offering(host, secret, &self.key, service, offer)?)
    }

    /// Reads the host's answer to `handshake`. A resumed hello the host does not know is
    /// answered with a fallback: the full hello then follows on the same stream (one more
    /// round trip; on the direct path it needs no tag, the first frame's admitted the stream).
    async fn finish_handshake(
        &self,
        handshake: ClientHandshake,
        service: Option<&str>,
        send: &mut LinkSend,
        recv: &mut Framed,
    ) -> Result<ferry_proto::e2e::Established, Error> {
        let mut answer = recv.frame(MAX_HANDSHAKE_LEN, self.handshake_timeout).await?;
        let mut handshake = handshake;
        if handshake.is_resumed() && answer[..] == *ferry_proto::e2e::psk::FALLBACK {
            self.psk.fell_back();
            let offer = Offer::current(self.resumable);
            let (full, hello) =
                ClientHandshake::start_offering(&self.ticket.host, &self.ticket.secret, &self.key, service, offer)?;
            let mut out = BytesMut::new();
            put_frame(&mut out, &hello)?;
            send.write_chunks(&mut [out.freeze()]).await?;
            answer = recv.frame(MAX_HANDSHAKE_LEN, self.handshake_timeout).await?;
            handshake = full;
        }
        let resumed = handshake.is_resumed();
        let mut established = handshake.finish_session(&answer)?;
        self.psk.finished(resumed, established.hybrid, established.psk.take(), Instant::now());
        Ok(established)
    }

    /// Whether `e` is how a host before the hybrid handshake drops a hybrid hello (its
    /// first-frame cap was 256 bytes: it closes or resets the stream without an answer), for a
    /// host not known to answer hybrid hellos.
    fn dropped_hybrid(&self, e: &Error) -> bool {
        !self.psk.hybrid_seen()
            && self.psk.current(Instant::now()).is_none()
            && matches!(e, Error::Cut(_) | Error::StreamReset { .. } | Error::Stream(_))
    }

    /// Tries to punch a direct path to the host through NAT (`direct::punch`): asks the
    /// relay of the last session which address it sees this client at, swaps candidates
    /// with the host inside an end-to-end session through that relay, then dials every
    /// host candidate over QUIC at once while the host sends towards ours. The first
    /// connection that completes becomes a direct path, tried first by later sessions;
    /// `Ok(None)` when nothing got through (a symmetric NAT, UDP blocked, a host without a
    /// direct port) — the relay then simply stays the path.
    pub async fn punch(&self) -> Result<Option<Path>, Error> {
        self.paths().punched_at = Some(Instant::now());
        let relay_hop = {
            let paths = self.paths();
            paths
                .last_good
                .iter()
                .chain(paths.hops.keys())
                .filter(|p| matches!(p, Path::Relay(_)))
                .find_map(|p| paths.hops.get(p).filter(|h| h.hop.is_alive()).map(|h| h.hop.clone()))
        };
        let Some(hop) = relay_hop else { return Ok(None) };
        // Punching is UDP's: a client whose relay hop is TCP has no UDP mapping to offer.
        if hop.transport() != Transport::Quic {
            return Ok(None);
        }
        let options = HopOptions { connect_timeout: PUNCH_DIAL_TIMEOUT, ..self.hop_options()? };
        let bound = options.endpoint.as_ref().and_then(|e| e.local_addr().ok());
        let Some(bound) = bound else { return Ok(None) };
        let observed = hop.observe(Duration::from_secs(2)).await;
        let ours = crate::direct::punch::candidates(bound, observed.as_slice());
        let session = match self.open_on(&hop, Some(PUNCH_SERVICE)).await {
            Ok(Opened::Session(session)) => session,
            Ok(Opened::Redirected(_)) => return Ok(None),
            // A host without a direct port (or from before punching): never asked again.
            Err(Error::NoSuchService { .. }) => {
                self.paths().host_cannot_punch = true;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let theirs = crate::direct::punch::exchange(session, &ours).await?;
        let mut dials: FuturesUnordered<_> = theirs
            .into_iter()
            .map(|addr| {
                let options = &options;
                async move { (addr, crate::direct::dial::quic(&addr.to_string(), options).await) }
            })
            .collect();
        while let Some((addr, dialled)) = dials.next().await {
            let Ok(conn) = dialled else { continue };
            let path = Path::Direct(addr.to_string());
            let mut paths = self.paths();
            paths.hops.insert(path.clone(), PathHop { hop: Arc::new(RelayHop::Quic(conn)), relay: None });
            paths.transports.insert(path.clone(), Transport::Quic);
            if !paths.learned.contains(&addr.to_string()) {
                paths.learned.insert(0, addr.to_string());
            }
            paths.last_good = Some(path.clone());
            drop(paths);
            tracing::info!("punched a direct path to the host: later sessions go {path}");
            self.move_off_relays();
            return Ok(Some(path));
        }
        Ok(None)
    }

    /// Whether a punch is worth trying now: the last session went through a relay, no
    /// direct path is open, and no punch was tried in the last [`PUNCH_AGAIN_AFTER`]. A
    /// `true` claims the attempt (it counts as tried from now), so a player that opens
    /// several connections at once starts one punch, not one per connection.
    pub fn punch_due(&self) -> bool {
        let mut paths = self.paths();
        let via_relay = matches!(paths.last_good, Some(Path::Relay(_)));
        let direct_open = paths.hops.iter().any(|(p, h)| matches!(p, Path::Direct(_)) && h.hop.is_alive());
        let recently = paths.punched_at.is_some_and(|at| at.elapsed() < PUNCH_AGAIN_AFTER);
        let due = via_relay && !direct_open && !recently && !paths.host_cannot_punch;
        if due {
            paths.punched_at = Some(Instant::now());
        }
        due
    }

    /// Closes every connection.
    pub async fn close(&self) {
        let hops: Vec<PathHop> = self.paths().hops.drain().map(|(_, h)| h).collect();
        for open in hops {
            open.hop.close();
        }
    }
}

/// A background re-check of one failed path.
struct Recheck {
    path: Path,
    relay: Option<RelayAddr>,
    transport: Transport,
    options: HopOptions,
}

/// Re-dials a failed path a few times with growing pauses; once it answers, its failure is
/// forgotten (it moves back up the order) and its hop is kept for the next session. Stops
/// early when the client is gone or another session found the path working.
async fn recheck(paths: Weak<Mutex<Paths>>, check: Recheck) {
    let mut pause = RECHECK_FIRST_PAUSE;
    for _ in 0..RECHECK_ATTEMPTS {
        tokio::time::sleep(pause).await;
        pause *= 2;
        let Some(shared) = paths.upgrade() else { return };
        if !shared.lock().unwrap_or_else(PoisonError::into_inner).failed.contains_key(&check.path) {
            return;
        }
        drop(shared);
        let dialled = match (&check.path, &check.relay) {
            (Path::Direct(addr), _) => crate::direct::dial::connect(addr, check.transport, &check.options).await,
            (Path::Relay(_), Some(relay)) => dial::connect(relay, check.transport, &check.options).await,
            (Path::Relay(_), None) => return,
        };
        if let Ok(hop) = dialled {
            let Some(shared) = paths.upgrade() else { return hop.close() };
            let mut state = shared.lock().unwrap_or_else(PoisonError::into_inner);
            state.failed.remove(&check.path);
            state.hops.insert(check.path.clone(), PathHop { hop: Arc::new(hop), relay: check.relay.clone() });
            tracing::info!("{} answers again", check.path);
            return;
        }
    }
}

impl crate::resume::Reattach for Client {
    fn attach<'a>(
        &'a self,
        request: &'a [u8],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<crate::resume::Link, Error>> + Send + 'a>> {
        self.resume_attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(async move { self.race(|path| self.attach_via(path, request)).await.map(|(link, _)| link) })
    }
}
