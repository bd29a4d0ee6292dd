//! The host: stays registered at its relays and forwards each session to a local service.
//!
//! One task per relay keeps a registration alive: connect, prove the host key (Noise `XN`
//! bound to the hop), then accept the streams the relay opens, one per session. When the
//! relay goes away the task reconnects with jittered exponential backoff. Each session
//! runs the host side of the end-to-end handshake, checks the allow-list, looks up the
//! service the client named inside the handshake ([`Services`]), connects to it and
//! bridges. A client asking for a service the host does not have is told so inside the
//! handshake, and the host logs it in its own log.
//!
//! Every task belongs to the [`Host`] handle: [`Host::shutdown`] ends them and waits, and
//! dropping the handle ends them too (a drop guard over their cancellation token), so a
//! host an application forgets to shut down does not stay registered behind its back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferry_link::{Framed, LinkSend};
use ferry_proto::codes::{CLOSE_REPLACED, RESET_HANDSHAKE_FAILED, RESET_NOT_ALLOWED, RESET_SERVICE_UNREACHABLE};
use ferry_proto::connect;
use ferry_proto::e2e::handshake::MAX_HANDSHAKE_LEN;
use ferry_proto::e2e::psk::FALLBACK;
use ferry_proto::e2e::record::{RecordKind, put_frame};
use ferry_proto::e2e::{FirstFrame, HostHandshake, PskTable, Refusal};
use ferry_proto::message::RegistrationToken;
use ferry_proto::registration::{HostEvent, HostRegistration};
use ferry_proto::{PublicKey, RelayAddr};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::dial::{self, HopOptions, HopStream, RelayHop, Transport};
use crate::direct::listen::{Admission, DirectPort, Sessions};
use crate::direct::punch::{PUNCH_SERVICE, PunchContext};
use crate::{DirectConfig, Error, HostIdentity, Services, Session};

/// What a host needs to serve.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The host's key and ticket secret.
    pub identity: HostIdentity,
    /// Relays to stay registered at (empty: relaying off, direct sessions only).
    pub relays: Vec<RelayAddr>,
    /// Accept sessions without a relay (`None`: only through relays).
    pub direct: Option<DirectConfig>,
    /// The local services sessions are forwarded to, by the name the client asks for.
    pub services: Services,
    /// Hop tuning.
    pub options: HopOptions,
    /// QUIC, TLS over TCP, or automatic.
    pub transport: Transport,
    /// Only these client keys may open sessions (`None`: anyone holding the ticket).
    pub allow: Option<Vec<PublicKey>>,
    /// Registration token for relays in closed mode.
    pub token: Option<String>,
    /// Longest wait for each step of a handshake.
    pub handshake_timeout: Duration,
    /// What answering a hole punch needs (set by [`Host`] when it binds a direct port).
    pub(crate) punch: Option<Arc<HostPunch>>,
    /// How long a resumable session whose path was lost waits for its client to come back
    /// before it ends with an error (default 30 s).
    pub resume_timeout: Duration,
    /// The live resumable sessions, which resume requests are matched against.
    pub(crate) resumes: Arc<crate::resume::ResumeRegistry>,
    /// The resumption PSKs of clients' full handshakes, for their resumed handshakes
    /// (bounded: [`ferry_proto::e2e::psk::DEFAULT_PSK_CAP`] entries, each for
    /// [`ferry_proto::e2e::psk::DEFAULT_PSK_TTL`]).
    pub(crate) psks: Arc<std::sync::Mutex<PskTable>>,
}

impl HostConfig {
    /// Defaults for everything but identity, relays and the forward target, which becomes
    /// the one, default service ([`Services::single`]; set [`HostConfig::services`] for more).
    pub fn new(identity: HostIdentity, relays: Vec<RelayAddr>, forward: String) -> Self {
        Self {
            identity,
            relays,
            direct: None,
            services: Services::single(forward),
            options: HopOptions::host(),
            transport: Transport::Auto,
            allow: None,
            token: None,
            handshake_timeout: Duration::from_secs(10),
            punch: None,
            resume_timeout: crate::resume::DEFAULT_RESUME_TIMEOUT,
            resumes: Arc::default(),
            psks: Arc::default(),
        }
    }
}

/// Registration state, per relay in the order of [`HostConfig::relays`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostStatus {
    /// Whether each relay currently has this host registered.
    pub registered: Vec<bool>,
    /// Total successful registrations so far (goes up on every re-registration).
    pub registrations: u64,
    /// The last problem, worded for a person.
    pub last_error: Option<String>,
    /// How often another instance of this host (the same key) took a registration over.
    pub replaced: u64,
    /// Where the direct port is bound, if the host has one.
    pub direct: Option<std::net::SocketAddr>,
    /// Per relay, the address it sees this host's connection come from (asked only with a
    /// direct port: it is a hole punch's candidate).
    pub observed: Vec<Option<std::net::SocketAddr>>,
}

/// A running host. Call [`Host::shutdown`] to stop it gracefully; dropping it stops its
/// tasks too, without waiting for them.
pub struct Host {
    cancel: CancellationToken,
    tracker: TaskTracker,
    status: watch::Receiver<HostStatus>,
    status_tx: Arc<watch::Sender<HostStatus>>,
    /// The live resumable sessions (shared with the tasks).
    resumes: Arc<crate::resume::ResumeRegistry>,
    /// Cancels every task when the handle is dropped.
    _stop_on_drop: DropGuard,
}

impl Host {
    /// Starts serving in the background. A direct port that cannot be bound is reported
    /// in [`HostStatus::last_error`] (and logged); [`Host::try_spawn`] returns it instead.
    pub fn spawn(config: HostConfig) -> Self {
        let mut config = config;
        let (direct, failed) = match config.direct.as_ref().map(|direct| DirectPort::bind(direct, &config.options)) {
            Some(Ok(port)) => (Some(port), None),
            Some(Err(e)) => {
                config.direct = None;
                tracing::error!("{}", e.report());
                (None, Some(e.report()))
            }
            None => (None, None),
        };
        let host = Self::start(config, direct);
        if let Some(report) = failed {
            host.status_tx.send_modify(|s| s.last_error = Some(report));
        }
        host
    }

    /// Starts serving in the background, or says why the direct port cannot be bound.
    pub fn try_spawn(config: HostConfig) -> Result<Self, Error> {
        let direct = config.direct.as_ref().map(|direct| DirectPort::bind(direct, &config.options)).transpose()?;
        Ok(Self::start(config, direct))
    }

    fn start(mut config: HostConfig, direct: Option<DirectPort>) -> Self {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let direct_addr = direct.as_ref().and_then(DirectPort::local_addr);
        // The relays are dialled from the direct socket: what they observe is where the
        // host can be reached (and punched to).
        if let Some(direct) = &direct {
            config.options.endpoint = Some(direct.endpoint.clone());
        }
        let initial = HostStatus {
            registered: vec![false; config.relays.len()],
            observed: vec![None; config.relays.len()],
            direct: direct_addr,
            ..Default::default()
        };
        let (status_tx, status) = watch::channel(initial);
        let status_tx = Arc::new(status_tx);
        if let (Some(direct), Some(bound)) = (&direct, direct_addr) {
            match direct.punch.try_clone() {
                Ok(socket) => {
                    let context = PunchContext { socket, bound };
                    config.punch = Some(Arc::new(HostPunch { context, status: status.clone() }));
                }
                Err(e) => warn!("no hole punching: cannot share the direct socket ({e})"),
            }
        }
        let config = Arc::new(config);
        let resumes = config.resumes.clone();
        for index in 0..config.relays.len() {
            tracker.spawn(stay_registered(config.clone(), index, status_tx.clone(), cancel.clone(), tracker.clone()));
        }
        if let Some(direct) = direct {
            let admission = Admission {
                secret: config.identity.secret.clone(),
                handshake_timeout: config.handshake_timeout,
                sessions: DirectSessions(config.clone()),
            };
            tracker.spawn(direct.serve(admission, cancel.clone(), tracker.clone()));
        }
        Self { _stop_on_drop: cancel.clone().drop_guard(), cancel, tracker, status, status_tx, resumes }
    }

    /// The address the direct port is bound to (`None` without one).
    pub fn direct_addr(&self) -> Option<std::net::SocketAddr> {
        self.status.borrow().direct
    }

    /// Resumable sessions alive now, running or waiting for their client to come back
    /// (each holds its replay buffers until it ends).
    pub fn resumable_sessions(&self) -> usize {
        self.resumes.len()
    }

    /// Registration status; await `changed()` on it to follow registrations.
    pub fn status(&self) -> watch::Receiver<HostStatus> {
        self.status.clone()
    }

    /// Closes the relay connections and ends every session.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

async fn stay_registered(
    config: Arc<HostConfig>,
    index: usize,
    status: Arc<watch::Sender<HostStatus>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let relay = &config.relays[index];
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    // Two instances with one key replace each other at the relay, each registering again at
    // once: without a pause of its own that grows (and is only reset by a registration that
    // lasts), they would take turns several times a second, forever.
    let mut replaced_backoff = Backoff::new(REPLACED_PAUSE, REPLACED_PAUSE_CAP);
    while !cancel.is_cancelled() {
        let attempt = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            attempt = register(&config, relay) => attempt,
        };
        match attempt {
            Ok((hop, control)) => {
                backoff.reset();
                status.send_modify(|s| {
                    s.registered[index] = true;
                    s.registrations += 1;
                });
                if config.direct.is_some() {
                    let (hop, status) = (hop.clone(), status.clone());
                    tracker.spawn(async move {
                        let observed = hop.observe(OBSERVE_TIMEOUT).await;
                        status.send_modify(|s| s.observed[index] = observed);
                    });
                }
                let since = Instant::now();
                let ended = serve(&config, hop, control, &cancel, &tracker).await;
                if since.elapsed() >= REPLACED_PAUSE_CAP {
                    replaced_backoff.reset();
                }
                let replaced = matches!(ended, Ended::Replaced);
                let reason = ended.report();
                status.send_modify(|s| {
                    s.registered[index] = false;
                    s.observed[index] = None;
                    s.last_error = Some(reason.clone());
                    s.replaced += u64::from(replaced);
                });
                if replaced {
                    let pause = replaced_backoff.next_delay();
                    warn!(
                        "relay {}: another instance of this host is running (the same host key); \
                         registering again in {:.1} s. Stop the other instance, or give this one its own key (ferry host init)",
                        relay.addr,
                        pause.as_secs_f64()
                    );
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    continue;
                }
                debug!(reason = %reason, "registration ended");
            }
            Err(e) => {
                let report = e.report();
                warn!("relay {}: {report}", relay.addr);
                status.send_modify(|s| s.last_error = Some(report));
            }
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Longest wait for a relay's `Observed` answer.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(2);

/// First pause after another instance of this host took the registration over.
const REPLACED_PAUSE: Duration = Duration::from_secs(2);
/// Longest such pause; a registration that lasts this long resets it.
const REPLACED_PAUSE_CAP: Duration = Duration::from_secs(60);

/// Why a registration ended.
enum Ended {
    /// Another instance of this host registered and the relay closed this one.
    Replaced,
    /// Anything else, worded for a person.
    Other(String),
}

impl Ended {
    fn report(&self) -> String {
        match self {
            Self::Replaced => Error::Replaced.report(),
            Self::Other(reason) => reason.clone(),
        }
    }
}

impl From<Error> for Ended {
    fn from(e: Error) -> Self {
        match e {
            Error::Replaced | Error::Refused(ferry_proto::RefuseReason::Replaced) => Self::Replaced,
            other => Self::Other(other.report()),
        }
    }
}

/// The control stream of a registration. Both halves stay open for as long as the host
/// wants to stay registered: the relay takes a finished stream as an unregistration. The
/// conversation on it (what may come when) is `ferry_proto::registration`'s.
struct Control {
    send: LinkSend,
    recv: Framed,
    registration: HostRegistration,
}

/// Connects to `relay` and proves the host key; returns the hop and the control stream
/// (on which the relay announces TCP sessions and says when it is going away).
async fn register(config: &HostConfig, relay: &RelayAddr) -> Result<(Arc<RelayHop>, Control), Error> {
    let hop = dial::connect(relay, config.transport, &config.options).await?;
    let HopStream { mut send, recv, exporter } = hop.open_stream().await?;
    let token = config.token.clone().map(RegistrationToken);
    let (mut registration, register) = HostRegistration::start(&config.identity.key, token, &exporter)?;
    send.send_message(&register).await?;
    let mut recv = Framed::new(recv);
    loop {
        match registration.handle(recv.message(config.handshake_timeout).await?)? {
            HostEvent::Send(message) => send.send_message(&message).await?,
            HostEvent::Registered => return Ok((Arc::new(hop), Control { send, recv, registration })),
            HostEvent::Refused(reason) => return Err(Error::Refused(reason)),
            // Not before registration: the conversation answers those with an error.
            HostEvent::Incoming { .. } | HostEvent::GoingAway => {
                return Err(Error::Cut("the relay announced a session before registering the host"));
            }
        }
    }
}

/// Accepts sessions until the registration ends; returns why it ended. A QUIC relay
/// opens a stream per session; a TCP relay announces `Incoming` on the control stream
/// and the host dials back with `Attach`.
async fn serve(
    config: &Arc<HostConfig>,
    hop: Arc<RelayHop>,
    mut control: Control,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Ended {
    let quic = match hop.as_ref() {
        RelayHop::Quic(conn) => Some(conn.clone()),
        RelayHop::Tcp(_) => None,
    };
    // Fired when the relay says it is going away: the resumable sessions it carries move.
    let leaving = CancellationToken::new();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                hop.close();
                let _ = control.send.finish().await;
                return Ended::Other("the host is shutting down".into());
            }
            message = control.recv.message_unbounded() => {
                let event = match message {
                    Ok(message) => control.registration.handle(message).map_err(Error::from),
                    Err(e) => Err(Error::from(e)),
                };
                match event {
                    Ok(HostEvent::Incoming { session }) if quic.is_none() => {
                        let (config, hop, cancel) = (config.clone(), hop.clone(), cancel.clone());
                        let leaving = leaving.clone();
                        tracker.spawn(async move {
                            if let Err(e) = attach_session(&config, &hop, session, cancel, leaving).await {
                                debug!("session ended: {}", e.report());
                            }
                        });
                    }
                    Ok(HostEvent::GoingAway) => {
                        // Resumable sessions move to another path now, not when the relay's
                        // drain deadline cuts them (zero loss: their replay buffers cover
                        // what was in flight); the relay exits once they have left.
                        leaving.cancel();
                        return Ended::Other("the relay is going away".into());
                    }
                    Ok(HostEvent::Refused(reason)) => return Error::Refused(reason).into(),
                    Ok(_) => return Ended::Other("the relay sent an unexpected control message".into()),
                    Err(e) => return e.into(),
                }
            }
            stream = accept_stream(quic.as_ref()) => match stream {
                Ok((send, recv)) => {
                    let (config, cancel, leaving) = (config.clone(), cancel.clone(), leaving.clone());
                    tracker.spawn(async move {
                        let mut recv = Framed::new(ferry_link::LinkRecv::Quic(recv));
                        let started = match recv.message(config.handshake_timeout).await {
                            Ok(first) => connect::host_stream_opened(first).map(drop).map_err(Error::from),
                            Err(e) => Err(e.into()),
                        };
                        let result = match started {
                            Ok(()) => serve_session(&config, LinkSend::Quic(send), recv, cancel, leaving).await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = result {
                            debug!("session ended: {}", e.report());
                        }
                    });
                }
                Err(quinn::ConnectionError::ApplicationClosed(close))
                    if close.error_code == quinn::VarInt::from_u32(CLOSE_REPLACED) =>
                {
                    return Ended::Replaced;
                }
                Err(e) => return Ended::Other(format!("the relay connection ended ({e})")),
            },
        }
    }
}

/// The next session stream a QUIC relay opens; never resolves for a TCP hop.
async fn accept_stream(
    quic: Option<&quinn::Connection>,
) -> Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError> {
    match quic {
        Some(conn) => conn.accept_bi().await,
        None => std::future::pending().await,
    }
}

/// A TCP relay announced a session: dial back, attach, then serve it.
async fn attach_session(
    config: &HostConfig,
    hop: &RelayHop,
    session: u64,
    cancel: CancellationToken,
    leaving: CancellationToken,
) -> Result<(), Error> {
    let HopStream { mut send, recv, .. } = hop.open_stream().await?;
    send.send_message(&connect::attach(session)).await?;
    serve_session(config, send, Framed::new(recv), cancel, leaving).await
}

/// What a host answers a punch with: its direct socket, and its status (what each relay
/// observes of it).
#[derive(Debug)]
pub(crate) struct HostPunch {
    context: PunchContext,
    status: watch::Receiver<HostStatus>,
}

/// The direct port's sessions go where relayed ones go, once their tag checked out.
#[derive(Clone)]
struct DirectSessions(Arc<HostConfig>);

impl Sessions for DirectSessions {
    async fn serve(
        &self,
        send: LinkSend,
        recv: Framed,
        hello: Vec<u8>,
        cancel: CancellationToken,
    ) -> Result<(), Error> {
        // A direct stream leaves only when it fails.
        serve_hello(&self.0, send, recv, &hello, cancel, CancellationToken::new()).await
    }
}

/// One session through a relay: its handshake message, then [`serve_hello`].
async fn serve_session(
    config: &HostConfig,
    send: LinkSend,
    mut recv: Framed,
    cancel: CancellationToken,
    leaving: CancellationToken,
) -> Result<(), Error> {
    let hello = recv.frame(MAX_HANDSHAKE_LEN, config.handshake_timeout).await?;
    serve_hello(config, send, recv, &hello, cancel, leaving).await
}

/// One session once its first handshake message is read (through a relay or on the
/// direct port): handshake, allow-list, service lookup, local connection, bridge (until
/// `cancel`). `leaving` fires when the path the stream came on is going away: a resumable
/// session then moves to another.
pub(crate) async fn serve_hello(
    config: &HostConfig,
    mut send: LinkSend,
    mut recv: Framed,
    hello: &[u8],
    cancel: CancellationToken,
    leaving: CancellationToken,
) -> Result<(), Error> {
    // The first-frame dispatch table (`FirstFrame::classify`): by length, nothing the relay
    // must understand.
    let kind = FirstFrame::classify(hello);
    if kind == FirstFrame::ResumeRequest {
        // No Noise message 1 is this short (at least 96 bytes): a client resuming a session.
        let link = crate::resume::Link { send, recv, leaving: leaving.clone() };
        return crate::resume::serve_resume(&config.resumes, link, hello).await;
    }
    let resumed = (kind == FirstFrame::Resumed).then(|| {
        let mut table = config.psks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        HostHandshake::read_resumed(&config.identity.key, &mut table, hello, Instant::now())
    });
    let read = match resumed {
        Some(Some(handshake)) => Ok(handshake),
        Some(None) => {
            // A PSK this host does not have (expired, evicted, forged, or from before a
            // restart): the client sends a full hello on the same stream.
            let mut out = BytesMut::new();
            put_frame(&mut out, FALLBACK)?;
            send.write_chunk(out.freeze()).await?;
            let full = recv.frame(MAX_HANDSHAKE_LEN, config.handshake_timeout).await?;
            HostHandshake::read(&config.identity.key, &config.identity.secret, &full)
        }
        None => HostHandshake::read(&config.identity.key, &config.identity.secret, hello),
    };
    let mut handshake = match read {
        Ok(h) => h,
        Err(e) => {
            send.reset(RESET_HANDSHAKE_FAILED);
            return Err(e.into());
        }
    };
    if let Some(allow) = &config.allow {
        if !allow.contains(&handshake.client_key()) {
            // The host's own log (never the relay's), so its owner can admit the client:
            // the key is what `--allow` takes.
            warn!(
                "refused a session from client key {}: not on the allow-list (add it with --allow or --allow-file to admit it)",
                handshake.client_key()
            );
            send.reset(RESET_NOT_ALLOWED);
            return Err(Error::HostRefused("client key not on the allow-list"));
        }
    }
    if handshake.service() == Some(PUNCH_SERVICE) {
        // A client asking to punch a direct path: only a host with a direct port can.
        let Some(punch) = config.punch.clone() else {
            return refuse(send, handshake, Refusal::NoSuchService).await;
        };
        let (answer, sealer, opener) = handshake.accept()?;
        let mut out = BytesMut::new();
        put_frame(&mut out, &answer)?;
        send.write_chunk(out.freeze()).await?;
        let session = Session { send, recv, sealer, opener, path: None, resume: None };
        let observed: Vec<std::net::SocketAddr> = punch.status.borrow().observed.iter().flatten().copied().collect();
        return crate::direct::punch::host_side(&punch.context, &observed, session).await;
    }
    let Some(forward) = config.services.get(handshake.service()) else {
        // The host's own log (never the relay's), so its owner sees what clients ask for.
        warn!(
            "refused a session for service `{}`: this host has no such service (its services: {})",
            handshake.service().unwrap_or(config.services.default_name()),
            config.services.names()
        );
        return refuse(send, handshake, Refusal::NoSuchService).await;
    };
    let local = match tokio::time::timeout(config.handshake_timeout, TcpStream::connect(forward)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            send.reset(RESET_SERVICE_UNREACHABLE);
            return Err(Error::Io(e));
        }
        Err(_) => {
            send.reset(RESET_SERVICE_UNREACHABLE);
            return Err(Error::Timeout("the local service did not accept the connection"));
        }
    };
    local.set_nodelay(true)?;
    // This host keeps sessions for a resume whenever the client asks.
    handshake.offer_resume(true);
    // And keeps a resumption PSK for every client that asks, so its next session is short.
    handshake.offer_psk(true);
    let client_key = handshake.client_key();
    let (answer, established) = handshake.accept_session()?;
    if let Some(psk) = &established.psk {
        let mut table = config.psks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        table.insert(psk, client_key, Instant::now());
    }
    let mut out = BytesMut::new();
    put_frame(&mut out, &answer)?;
    send.write_chunk(out.freeze()).await?;
    let (local_read, local_write) = local.into_split();
    let ferry_proto::e2e::Established { sealer, opener, resume, .. } = established;
    let session = Session { send, recv, sealer, opener, path: None, resume };
    match session.into_resumable() {
        Ok(mut resumable) => {
            resumable.link.leaving = leaving;
            let resume = Arc::new(std::sync::Mutex::new(ferry_proto::e2e::HostResume::new(resumable.keys.clone())));
            let side = crate::resume::Side::Host { registry: &config.resumes, resume };
            crate::resume::bridge(resumable, side, local_read, local_write, config.resume_timeout, cancel).await?;
        }
        Err(session) => {
            session.bridge(local_read, local_write, cancel).await?;
        }
    }
    Ok(())
}

/// Turns a client away inside the handshake: the refusal, then a sealed `Fin` and a clean
/// finish, which is what a session whose service closes at once looks like to the relay.
async fn refuse(mut send: LinkSend, handshake: HostHandshake, why: Refusal) -> Result<(), Error> {
    let (answer, mut sealer, _) = handshake.refuse(why)?;
    let mut out = BytesMut::new();
    put_frame(&mut out, &answer)?;
    sealer.seal(RecordKind::Fin, &[], &mut out)?;
    send.write_chunk(out.freeze()).await?;
    send.finish().await?;
    Err(Error::HostRefused("the client asked for a service this host does not have"))
}
