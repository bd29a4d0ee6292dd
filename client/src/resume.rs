//! Resumable sessions on the wire: the async half of `ferry_proto::e2e::resume`.
//!
//! A resumable session bridges its local connection to whatever path currently carries it.
//! Each path is run as one *phase*: an upstream future (local reads → sealed records, kept in
//! the replay buffer) and a downstream future (records → local writes; acknowledgements in
//! and out) over that path's stream. A phase ends when both directions are done, or when the
//! path is lost: a read or write error, the stream's end without the session's, or a stall
//! (data outstanding and nothing heard from the peer for [`STALL_AFTER`] while this end was
//! reading the path). Then the local connection stays open and:
//!
//! - the client ([`Reattach`]) sends a resume request on the next working path, reads the
//!   host's answer and replays what the host lacks;
//! - the host ([`ResumeRegistry`]) waits for the client's request, which the path's accept
//!   code checks and hands over ([`serve_resume`]), answers and replays.
//!
//! A session not resumed within the resume timeout ends with an error on both sides, never
//! a clean end. A record is acknowledged when it is opened (on receipt, delayed by at most
//! `ACK_DELAY`), not when the local application has read it; the one record opened and not
//! yet written locally is kept across paths and written on, so a record is delivered exactly
//! once whatever the path does. A paused local reader is therefore no stall: this end, held
//! by its local writer, is not reading the path and judges nothing, and it sends keep-alives
//! (`Ack` with the paused bit) so the peer's watch holds too. The replay buffer stays the
//! backpressure: a sender whose peer stopped reading fills it and waits.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use ferry_link::stream::poll_read_lazily;
use ferry_link::{Framed, LinkSend};
use ferry_proto::codes::{RESET_CANCELLED, RESET_HANDSHAKE_FAILED};
use ferry_proto::e2e::record::{MAX_RECORD_DATA, Opened, RecordKind, put_frame};
use ferry_proto::e2e::resume::{
    ACK_DELAY, ClientResume, HostResume, Inbound, Outbound, RESUME_ANSWER_LEN, ResumeKeys, ResumeRequest, SessionId,
    Taken,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// How long a lost session waits to be resumed before it ends with an error.
pub const DEFAULT_RESUME_TIMEOUT: Duration = Duration::from_secs(30);
/// Data outstanding and nothing heard from the peer for this long, while this end was reading
/// the path: the path is taken as lost (a blackholed relay sends no reset; this is the
/// end-to-end acknowledgement deadline).
pub const STALL_AFTER: Duration = Duration::from_secs(2);
/// A receiver whose local writer has not taken a record for this long sends a keep-alive
/// (well inside the peer's [`STALL_AFTER`])...
const KEEPALIVE_FIRST: Duration = Duration::from_millis(500);
/// ...then the next after this, each pause between them twice the last, up to
/// [`KEEPALIVE_MAX`], while it stays blocked...
const KEEPALIVE_EVERY: Duration = Duration::from_secs(4);
const KEEPALIVE_MAX: Duration = Duration::from_secs(300);

/// ...and the n-th keep-alive in a row holds the peer's stall watch for twice the pause
/// before the next. Rare keep-alives keep what a long pause costs small: every record, a
/// keep-alive too, stays in the replay buffer until acknowledged, and the paused end reads
/// no acknowledgements (128 outstanding fail the session: about ten hours of pause).
fn keepalive_pause(nth: u32) -> Duration {
    KEEPALIVE_EVERY.saturating_mul(1 << nth.saturating_sub(1).min(16)).min(KEEPALIVE_MAX)
}

fn peer_pause_hold(nth: u32) -> Duration {
    keepalive_pause(nth) * 2
}
/// Longest the host waits to write its answer and replay on a new path.
const REPLAY_WRITE_LIMIT: Duration = Duration::from_secs(10);
/// How often the stall detector looks.
const STALL_CHECK: Duration = Duration::from_millis(250);

/// One path's stream pair.
pub(crate) struct Link {
    pub(crate) send: LinkSend,
    pub(crate) recv: Framed,
    /// Fires when the path is about to go (its relay said `GoingAway`, or a better path
    /// came up): the session moves to another path at once, while this one still works.
    pub(crate) leaving: CancellationToken,
}

impl Link {
    /// A path that leaves only when it fails.
    pub(crate) fn new(send: LinkSend, recv: Framed) -> Self {
        Self { send, recv, leaving: CancellationToken::new() }
    }
}

/// How the client side finds a new path: sends `request` as the first end-to-end frame on
/// the next working path and returns that path's stream (the answer not yet read).
pub(crate) trait Reattach: Send + Sync {
    /// One attempt over the client's paths.
    fn attach<'a>(
        &'a self,
        request: &'a [u8],
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Link, Error>> + Send + 'a>>;
}

/// A session waiting on the host for its client: requests that checked, with their stream.
type Arrival = (Taken, Link);

/// The host's live resumable sessions, by id; requests are checked here, before they reach
/// (and could disturb) a live session.
#[derive(Default)]
pub(crate) struct ResumeRegistry {
    sessions: Mutex<HashMap<SessionId, Entry>>,
}

struct Entry {
    resume: Arc<Mutex<HostResume>>,
    shared: Arc<Shared>,
    arrivals: mpsc::Sender<Arrival>,
}

impl std::fmt::Debug for ResumeRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Session ids stay out of logs: only how many.
        f.debug_struct("ResumeRegistry").field("sessions", &self.len()).finish()
    }
}

impl ResumeRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Entry>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Live resumable sessions (for tests and metrics).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Removes a session from the registry when its task ends, however it ends.
struct Registered<'a> {
    registry: &'a ResumeRegistry,
    id: SessionId,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

/// A resume request arrived on a new stream at the host (its first frame): checks it against
/// the live session and hands the stream to it. A refused request resets the stream and
/// leaves the session alone.
pub(crate) async fn serve_resume(registry: &ResumeRegistry, mut link: Link, frame: &[u8]) -> Result<(), Error> {
    let refused = |e: ferry_proto::Error| Error::Proto(e);
    let checked = ResumeRequest::decode(frame).and_then(|request| {
        let sessions = registry.lock();
        let entry = sessions
            .get(&request.id)
            .ok_or(ferry_proto::Error::ResumeRefused { why: ferry_proto::e2e::ResumeRefusal::UnknownSession })?;
        let taken = {
            let out = entry.shared.out();
            entry.resume.lock().unwrap_or_else(PoisonError::into_inner).check(&request, &out)?
        };
        Ok((taken, entry.arrivals.clone()))
    });
    match checked {
        Ok((taken, arrivals)) => {
            if let Err(
                mpsc::error::TrySendError::Full((_, mut link)) | mpsc::error::TrySendError::Closed((_, mut link)),
            ) = arrivals.try_send((taken, link))
            {
                link.send.reset(RESET_HANDSHAKE_FAILED);
                return Err(Error::Cut("the session to resume has ended"));
            }
            Ok(())
        }
        Err(e) => {
            // Unauthenticated on purpose: the host may not know the session at all.
            let mut out = BytesMut::new();
            put_frame(&mut out, &ferry_proto::e2e::resume::refusal_answer()).map_err(refused)?;
            let _ = link.send.write_chunk(out.freeze()).await;
            link.send.reset(RESET_HANDSHAKE_FAILED);
            Err(refused(e))
        }
    }
}

/// What both halves of a phase share: the sending half, and the signals between them.
struct Shared {
    out: Mutex<Outbound>,
    /// An acknowledgement frees room in the replay buffer.
    room: Notify,
    /// The downstream half wants an acknowledgement sent: the count, and whether it is a
    /// keep-alive (this end's local writer is blocked).
    ack: Mutex<Option<(u64, bool)>>,
    ack_wanted: Notify,
    /// Our `Fin` is sealed (set by the upstream half, read by the downstream half).
    fin_sealed: AtomicBool,
    /// The peer's `Fin` is opened (set by the downstream half, read by the watch).
    peer_fin: AtomicBool,
    /// Acknowledgements (and keep-alives) heard from the peer: the path is alive.
    heard: AtomicU64,
    /// Keep-alives heard in a row (no progress in between), and until when the last one
    /// holds the stall watch.
    peer_paused: Mutex<(u32, Option<Instant>)>,
    /// Whether the downstream half is waiting on the path (not on the local writer): only
    /// silence while reading counts against the path.
    reading: AtomicBool,
}

impl Shared {
    fn out(&self) -> std::sync::MutexGuard<'_, Outbound> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn want_ack(&self, count: u64, keepalive: bool) {
        *self.ack.lock().unwrap_or_else(PoisonError::into_inner) = Some((count, keepalive));
        self.ack_wanted.notify_one();
    }

    fn take_ack(&self) -> Option<(u64, bool)> {
        self.ack.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Seals the acknowledgement the downstream half asked for.
    fn seal_ack(&self, (count, keepalive): (u64, bool)) -> Result<Bytes, ferry_proto::Error> {
        let mut out = self.out();
        if keepalive { out.seal_keepalive(count) } else { out.seal_ack(count) }
    }

    /// The peer acknowledged `count` records (`paused`: with a keep-alive).
    fn heard(&self, count: u64, paused: bool) -> Result<(), ferry_proto::Error> {
        let progress = self.out().acknowledge(count)?;
        self.room.notify_one();
        self.heard.fetch_add(1, Ordering::AcqRel);
        let mut pause = self.peer_paused.lock().unwrap_or_else(PoisonError::into_inner);
        if paused {
            pause.0 += 1;
            pause.1 = Some(Instant::now() + peer_pause_hold(pause.0));
        } else if progress {
            // The peer's reader took bytes again.
            *pause = (0, None);
        }
        Ok(())
    }

    fn peer_paused(&self) -> bool {
        self.peer_paused.lock().unwrap_or_else(PoisonError::into_inner).1.is_some_and(|until| Instant::now() < until)
    }
}

/// How a phase ended.
enum PhaseEnd {
    /// Both directions finished and acknowledged.
    Done,
    /// The path was lost; the session waits for another.
    Lost,
    /// The host took a resume request while this path still looked alive.
    Switched(Arrival),
}

/// What a phase's halves keep across paths.
struct Ends {
    inbound: Inbound,
    /// Records opened (and so acknowledged) but not yet written locally, the first maybe in
    /// part: written on, on the next path if need be. Only what one read of the path
    /// brought in (no more is read while any waits), so a paused reader holds no more.
    pending: VecDeque<Bytes>,
    /// The peer's `Fin` is opened (delivered once `pending` is written).
    fin_opened: bool,
    /// The peer's `Fin` is delivered: the local write side is shut down.
    fin_received: bool,
    sent: u64,
    received: u64,
}

/// Which side runs the session, and how it gets its next path.
pub(crate) enum Side<'a> {
    /// The client: re-attaches through `reattach`.
    Client { resume: ClientResume, reattach: &'a dyn Reattach },
    /// The host: waits for a checked request in `registry`.
    Host { registry: &'a ResumeRegistry, resume: Arc<Mutex<HostResume>> },
    /// A side that cannot re-attach (a client bridged without its `Client`): a lost path
    /// ends the session with an error, as a session that is not resumable does.
    Fixed,
}

/// The parts of an established resumable session.
pub(crate) struct Resumable {
    pub(crate) link: Link,
    pub(crate) out: Outbound,
    pub(crate) inbound: Inbound,
    pub(crate) keys: ResumeKeys,
}

/// Bridges a resumable session to a local connection until both directions have ended and
/// been acknowledged (`Ok` with the plaintext bytes sent and received), `cancel` fires, or
/// the session could not be resumed within `resume_timeout` of losing its path.
pub(crate) async fn bridge<R, W>(
    session: Resumable,
    side: Side<'_>,
    mut local_read: R,
    mut local_write: W,
    resume_timeout: Duration,
    cancel: CancellationToken,
) -> Result<(u64, u64), Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Resumable { mut link, out, inbound, keys } = session;
    let shared = Arc::new(Shared {
        out: Mutex::new(out),
        room: Notify::new(),
        ack: Mutex::new(None),
        ack_wanted: Notify::new(),
        fin_sealed: AtomicBool::new(false),
        peer_fin: AtomicBool::new(false),
        heard: AtomicU64::new(0),
        peer_paused: Mutex::new((0, None)),
        reading: AtomicBool::new(false),
    });
    let mut ends =
        Ends { inbound, pending: VecDeque::new(), fin_opened: false, fin_received: false, sent: 0, received: 0 };
    let (arrivals_tx, mut arrivals) = mpsc::channel::<Arrival>(1);
    let mut side = side;
    let _registered = match &side {
        Side::Host { registry, resume } => {
            registry
                .lock()
                .insert(keys.id(), Entry { resume: resume.clone(), shared: shared.clone(), arrivals: arrivals_tx });
            Some(Registered { registry, id: keys.id() })
        }
        _ => None,
    };
    let result = async {
        loop {
            let host = matches!(side, Side::Host { .. });
            let end = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Error::Cancelled),
                end = phase(&mut link, &shared, &mut ends, &mut local_read, &mut local_write, host.then_some(&mut arrivals)) => end?,
            };
            let arrival = match end {
                PhaseEnd::Done => {
                    let _ = link.send.finish().await;
                    drain_to_end(&mut link.recv).await;
                    return Ok((ends.sent, ends.received));
                }
                PhaseEnd::Switched(arrival) => Some(arrival),
                PhaseEnd::Lost => None,
            };
            link.send.reset(RESET_CANCELLED);
            link.recv.recv.stop(RESET_CANCELLED);
            let deadline = Instant::now() + resume_timeout;
            link = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Error::Cancelled),
                next = reattach(&mut side, &shared, &ends, &mut arrivals, arrival, deadline) => next?,
            };
        }
    }
    .await;
    if result.is_err() {
        link.send.reset(RESET_CANCELLED);
        link.recv.recv.stop(RESET_CANCELLED);
    }
    result
}

/// Finds the session its next path: the client asks on its paths until `deadline`, the host
/// waits for a request that checks. Either way the answer is exchanged and what the other
/// end lacks is replayed before the next phase starts.
async fn reattach(
    side: &mut Side<'_>,
    shared: &Shared,
    ends: &Ends,
    arrivals: &mut mpsc::Receiver<Arrival>,
    mut arrival: Option<Arrival>,
    deadline: Instant,
) -> Result<Link, Error> {
    let timed_out = || Error::Timeout("the session's path was lost and it was not resumed within the resume timeout");
    match side {
        Side::Fixed => Err(Error::Cut("the path was lost and this side cannot resume the session")),
        Side::Client { resume, reattach } => loop {
            if Instant::now() >= deadline {
                return Err(timed_out());
            }
            let request = resume.request(ends.inbound.received()).encode();
            let attempt = async {
                let mut link = reattach.attach(&request).await?;
                let answer = link.recv.frame(RESUME_ANSWER_LEN, STALL_AFTER * 2).await?;
                let from = resume.read_answer(&answer).map_err(Error::Proto)?;
                let replay = shared.out().replay_from(from).map_err(Error::Proto)?;
                write_all(&mut link.send, replay).await?;
                Ok::<_, Error>(link)
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(link)) => return Ok(link),
                Err(_) => return Err(timed_out()),
                // Every path failed this round: wait a little, then go round again.
                Ok(Err(e)) => {
                    tracing::debug!("resume attempt failed: {}", e.report());
                    tokio::time::sleep_until((Instant::now() + Duration::from_millis(200)).min(deadline)).await;
                }
            }
        },
        Side::Host { resume, .. } => loop {
            let (taken, mut link) = match arrival.take() {
                Some(arrival) => arrival,
                None => match tokio::time::timeout_at(deadline, arrivals.recv()).await {
                    Ok(Some(arrival)) => arrival,
                    Ok(None) | Err(_) => return Err(timed_out()),
                },
            };
            let answer = resume.lock().unwrap_or_else(PoisonError::into_inner).answer(&taken, ends.inbound.received());
            let replay = shared.out().replay_from(taken.from).map_err(Error::Proto)?;
            let mut first = BytesMut::new();
            put_frame(&mut first, &answer).map_err(Error::Proto)?;
            let mut chunks = vec![first.freeze()];
            chunks.extend(replay);
            match tokio::time::timeout(REPLAY_WRITE_LIMIT, write_all(&mut link.send, chunks)).await {
                Ok(Ok(())) => return Ok(link),
                // That path died at once (or does not move); wait for the next request.
                _ => {
                    link.send.reset(RESET_CANCELLED);
                    continue;
                }
            }
        },
    }
}

async fn write_all(send: &mut LinkSend, mut chunks: Vec<Bytes>) -> Result<(), Error> {
    if chunks.is_empty() {
        return Ok(());
    }
    send.write_chunks(&mut chunks).await?;
    Ok(())
}

/// Runs the session over one path until it is done, lost, or (host) switched.
async fn phase<R, W>(
    link: &mut Link,
    shared: &Shared,
    ends: &mut Ends,
    local_read: &mut R,
    local_write: &mut W,
    arrivals: Option<&mut mpsc::Receiver<Arrival>>,
) -> Result<PhaseEnd, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let stop = CancellationToken::new();
    let Link { send, recv, leaving } = link;
    let Ends { inbound, pending, fin_opened, fin_received, sent, received } = ends;
    let up = upstream(send, local_read, shared, sent, &stop);
    let down = Downstream { recv, local: local_write, shared, inbound, pending, fin_opened, fin_received, received };
    let down = down.run(&stop);
    let watch = async {
        let mut arrivals = arrivals;
        // How long the path has been silent while data was outstanding and this end read it.
        let mut silent = Duration::ZERO;
        let mut heard = shared.heard.load(Ordering::Acquire);
        // Whether a request to leave came when only acknowledgements were left to exchange.
        let mut stay = false;
        loop {
            let arrival = async {
                match arrivals.as_deref_mut() {
                    Some(arrivals) => arrivals.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                _ = leaving.cancelled(), if !stay => {
                    if shared.fin_sealed.load(Ordering::Acquire) && shared.peer_fin.load(Ordering::Acquire) {
                        // Both ends have said all they will: the peer may be done with the
                        // session already and would not know it on another path. Finish here.
                        stay = true;
                        continue;
                    }
                    tracing::info!("the path is going away: moving the session to another");
                    stop.cancel();
                    return None;
                }
                Some(arrival) = arrival => {
                    stop.cancel();
                    return Some(arrival);
                }
                _ = tokio::time::sleep(STALL_CHECK) => {
                    let now_heard = shared.heard.load(Ordering::Acquire);
                    let outstanding = shared.out().replay().data_charged() > 0;
                    if now_heard != heard || !outstanding || shared.peer_paused() {
                        // Heard from the peer, nothing to hear about, or the peer's reader is
                        // paused: the path is fine.
                        heard = now_heard;
                        silent = Duration::ZERO;
                    } else if shared.reading.load(Ordering::Acquire) {
                        // Held by our own local writer we read nothing, so silence says nothing.
                        silent += STALL_CHECK;
                        if silent >= STALL_AFTER {
                            tracing::info!("nothing heard for {STALL_AFTER:?} with data outstanding: the path is lost");
                            stop.cancel();
                            return None;
                        }
                    }
                }
            }
        }
    };
    let (up, down, arrival) = tokio::join!(up, down, watch);
    let (up, down) = (up?, down?);
    if let Some(arrival) = arrival {
        return Ok(PhaseEnd::Switched(arrival));
    }
    Ok(if up && down { PhaseEnd::Done } else { PhaseEnd::Lost })
}

/// Local reads → sealed records on this path (and the acknowledgements the downstream half
/// asks for). `Ok(true)`: our `Fin` is sealed and everything acknowledged; `Ok(false)`: the
/// phase was stopped or the path failed.
async fn upstream<R: AsyncRead + Unpin>(
    send: &mut LinkSend,
    local: &mut R,
    shared: &Shared,
    sent: &mut u64,
    stop: &CancellationToken,
) -> Result<bool, Error> {
    let mut plain = BytesMut::new();
    loop {
        let fin_sealed = shared.fin_sealed.load(Ordering::Acquire);
        if let Some(wanted) = shared.take_ack() {
            let ack = shared.seal_ack(wanted)?;
            if !write_or_stop(send, ack, stop).await {
                return Ok(false);
            }
            continue;
        }
        let (room, all_acked) = {
            let out = shared.out();
            (out.has_room(MAX_RECORD_DATA), out.replay().data_charged() == 0)
        };
        if fin_sealed && all_acked {
            // Keep acknowledging until the other half is done too, and send the last
            // acknowledgement (of the peer's `Fin`) before the stream finishes.
            tokio::select! {
                biased;
                _ = stop.cancelled() => return finish_on_stop(send, shared).await,
                _ = shared.ack_wanted.notified() => continue,
            }
        }
        tokio::select! {
            biased;
            // The acknowledgement of our `Fin` may have come with the stop (the downstream
            // half saw both ends done before this half looked again): finish, not fail.
            _ = stop.cancelled() => return finish_on_stop(send, shared).await,
            _ = shared.ack_wanted.notified() => continue,
            _ = shared.room.notified(), if !room || fin_sealed => continue,
            read = std::future::poll_fn(|cx| poll_read_lazily(local, cx, &mut plain, MAX_RECORD_DATA)), if room && !fin_sealed => {
                let n = read?;
                let kind = if n == 0 { RecordKind::Fin } else { RecordKind::Data };
                let record = shared.out().seal(kind, &plain[..n])?;
                plain.clear();
                *sent += n as u64;
                if n == 0 {
                    shared.fin_sealed.store(true, Ordering::Release);
                }
                if !write_or_stop(send, record, stop).await {
                    return Ok(false);
                }
            }
        }
    }
}

/// The phase stopped: when our `Fin` is sealed and everything acknowledged (the session is
/// done on this side), sends the last acknowledgement (of the peer's `Fin`) before the stream
/// finishes and says done (`Ok(true)`); otherwise `Ok(false)`.
async fn finish_on_stop(send: &mut LinkSend, shared: &Shared) -> Result<bool, Error> {
    let done = shared.fin_sealed.load(Ordering::Acquire) && shared.out().replay().data_charged() == 0;
    if !done {
        return Ok(false);
    }
    if let Some(wanted) = shared.take_ack() {
        let ack = shared.seal_ack(wanted)?;
        let _ = tokio::time::timeout(STALL_AFTER, send.write_chunks(&mut [ack])).await;
    }
    Ok(true)
}

/// Writes one record unless the phase stops first (a write to a blackholed path can wait
/// for flow control for ever; the record stays in the replay buffer). `false`: stopped, or
/// the write failed (which stops the phase).
async fn write_or_stop(send: &mut LinkSend, record: Bytes, stop: &CancellationToken) -> bool {
    let mut chunks = [record];
    tokio::select! {
        biased;
        _ = stop.cancelled() => false,
        written = send.write_chunks(&mut chunks) => {
            if written.is_err() {
                stop.cancel();
            }
            written.is_ok()
        }
    }
}

/// Records on this path → local writes; acknowledgements both ways.
struct Downstream<'a, W> {
    recv: &'a mut Framed,
    local: &'a mut W,
    shared: &'a Shared,
    inbound: &'a mut Inbound,
    pending: &'a mut VecDeque<Bytes>,
    fin_opened: &'a mut bool,
    fin_received: &'a mut bool,
    received: &'a mut u64,
}

impl<W: AsyncWrite + Unpin> Downstream<'_, W> {
    /// `Ok(true)`: the peer's `Fin` is delivered and our own is acknowledged; `Ok(false)`:
    /// stopped or the path failed.
    async fn run(self, stop: &CancellationToken) -> Result<bool, Error> {
        // When the oldest record not yet acknowledged arrived (the delayed acknowledgement).
        let mut unacked_since: Option<Instant> = None;
        let ack_timer = |since: Option<Instant>| async move {
            match since {
                Some(at) => tokio::time::sleep_until(at + ACK_DELAY).await,
                None => std::future::pending().await,
            }
        };
        loop {
            // Everything complete that reached us is opened, and so acknowledged, at once.
            while let Some(record) = self.inbound.open(&mut self.recv.buf)? {
                match record {
                    Opened::Data(bytes) => self.pending.push_back(bytes),
                    Opened::Fin => {
                        *self.fin_opened = true;
                        self.shared.peer_fin.store(true, Ordering::Release);
                    }
                    Opened::Ack(count) => self.shared.heard(count, false)?,
                    Opened::Paused(count) => self.shared.heard(count, true)?,
                }
                if self.inbound.ack_due() {
                    self.shared.want_ack(self.inbound.take_ack(), false);
                    unacked_since = None;
                } else if self.inbound.has_unacknowledged() {
                    unacked_since.get_or_insert_with(Instant::now);
                }
            }
            if !self.pending.is_empty() {
                // Deliver what was opened before reading more; the write is cancel-safe (a
                // `write` either took bytes or took none), so a phase may stop here.
                let mut keepalive_at = Instant::now() + KEEPALIVE_FIRST;
                let mut keepalives = 0;
                while let Some(front) = self.pending.front_mut() {
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return Ok(false),
                        written = self.local.write(&front[..]) => {
                            let n = written?;
                            if n == 0 {
                                return Err(Error::Io(std::io::ErrorKind::WriteZero.into()));
                            }
                            front.advance(n);
                            if front.is_empty() {
                                self.pending.pop_front();
                            }
                            *self.received += n as u64;
                        }
                        () = ack_timer(unacked_since) => {
                            self.shared.want_ack(self.inbound.take_ack(), false);
                            unacked_since = None;
                        }
                        () = tokio::time::sleep_until(keepalive_at) => {
                            // The local reader is not taking bytes: tell the peer we are here.
                            self.shared.want_ack(self.inbound.take_ack(), true);
                            unacked_since = None;
                            keepalives += 1;
                            keepalive_at = Instant::now() + keepalive_pause(keepalives);
                        }
                    }
                }
                self.local.flush().await?;
                // A read full of small records leaves many slots behind; an idle session
                // would hold them for good (up to 128 KiB for 19-byte records).
                if self.pending.capacity() > 16 {
                    *self.pending = VecDeque::new();
                }
            }
            if *self.fin_opened && !*self.fin_received {
                self.local.flush().await?;
                self.local.shutdown().await?;
                *self.fin_received = true;
            }
            let fin_acked =
                self.shared.fin_sealed.load(Ordering::Acquire) && self.shared.out().replay().data_charged() == 0;
            if *self.fin_received && fin_acked {
                if self.inbound.has_unacknowledged() {
                    self.shared.want_ack(self.inbound.take_ack(), false);
                }
                // Both directions complete: tell the upstream half, which finishes the stream.
                stop.cancel();
                return Ok(true);
            }
            self.shared.reading.store(true, Ordering::Release);
            let filled = tokio::select! {
                biased;
                _ = stop.cancelled() => None,
                filled = self.recv.fill() => Some(filled),
                () = ack_timer(unacked_since) => {
                    self.shared.want_ack(self.inbound.take_ack(), false);
                    unacked_since = None;
                    Some(Ok(true))
                }
            };
            self.shared.reading.store(false, Ordering::Release);
            match filled {
                None => return Ok(false),
                Some(Ok(true)) => {}
                Some(_) => {
                    stop.cancel();
                    return Ok(false);
                }
            }
        }
    }
}

/// After both directions are done, reads on to the stream's end (bounded), so that closing
/// a TLS hop with unread bytes in it does not reset what is still on its way.
async fn drain_to_end(recv: &mut Framed) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(true) = recv.fill().await {
            recv.buf.clear();
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalives_come_before_the_hold_they_gave_runs_out() {
        assert!(KEEPALIVE_FIRST < STALL_AFTER, "the first one beats the peer's stall deadline");
        let mut at = KEEPALIVE_FIRST;
        for nth in 1..=128 {
            // Keep-alive `nth` went out at `at`; the next goes out before its hold ends.
            assert!(keepalive_pause(nth) < peer_pause_hold(nth), "{nth}");
            at += keepalive_pause(nth);
        }
        assert!(keepalive_pause(1) == KEEPALIVE_EVERY && keepalive_pause(40) == KEEPALIVE_MAX);
        // 128 of them (the outstanding-ack limit) span hours, not minutes.
        assert!(at > Duration::from_secs(9 * 3600), "{at:?}");
    }
}
