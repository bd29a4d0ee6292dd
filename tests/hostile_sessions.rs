//! Hostile sessions against the real `ferry-relay` binary (issue 13, findings 1 and 5):
//! viewers that stop reading (a paused video player behaves exactly so) must not freeze
//! the other sessions of their host, and hosts that open sessions as fast as they can must
//! not take the whole buffer budget from everyone else. Each attack runs while honest
//! sessions stream; their bytes are checked, their longest wait for data is bounded, and
//! the relay's memory and file descriptors are measured before, during and after.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::process::{Footprint, RelayProcess};
use common::{http_get, metric, pattern, ticket};
use ferry::local::echo_service;
use ferry_client::{Client, Error, HopOptions, Host, HostConfig, HostIdentity, Session, Transport};
use ferry_proto::{RefuseReason, StaticKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An honest session may not wait for its next bytes longer than this.
const STALL_BOUND: Duration = Duration::from_secs(5);
/// Bytes an honest session reads once the attack is in place.
const HONEST_BYTES: u64 = 32 << 20;
/// The block a source service repeats (its first 8 bytes are the block's number, so a
/// lost, repeated or reordered block is caught as well as an altered byte).
const BLOCK: usize = 64 * 1024;

/// A relay process with its admin port on.
struct Relay {
    process: RelayProcess,
    _dir: tempfile::TempDir,
}

impl Relay {
    async fn start(limits: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");
        let config = format!(
            "[relay]\nlisten = \"127.0.0.1:0\"\nstate_dir = {state:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [limits]\nconnections_per_minute_per_source = 0\n{limits}\n[log]\nlevel = \"warn\"\n"
        );
        let process = RelayProcess::start(&config, dir.path(), &[]).await?;
        Ok(Self { process, _dir: dir })
    }

    fn pid(&self) -> Result<u32> {
        self.process.child.id().context("the relay exited")
    }

    /// A QUIC host registered here, in front of `service`.
    async fn host(&self, service: SocketAddr) -> Result<(Host, HostIdentity)> {
        let identity = HostIdentity::generate()?;
        let mut config = HostConfig::new(identity.clone(), self.process.relays(self.process.pin), service.to_string());
        config.transport = Transport::Quic;
        let host = Host::spawn(config);
        ferry::local::wait_registered(&host, 1).await?;
        Ok((host, identity))
    }

    /// A client of `identity`'s host with a fresh key, on QUIC.
    fn client(&self, identity: &HostIdentity) -> Result<Client> {
        let relays = self.process.relays(self.process.pin);
        Ok(Client::new(ticket(identity, relays), StaticKey::generate()?, HopOptions::client())
            .with_transport(Transport::Quic))
    }

    async fn metric(&self, sample: &str) -> Result<f64> {
        let admin = self.process.admin.as_deref().context("no admin listener")?;
        metric(&http_get(admin, "/metrics").await?, sample)
    }

    fn footprint(&self) -> Result<Footprint> {
        Footprint::of(self.pid()?)
    }
}

/// Block `n` of what a source service sends.
fn block(n: u64) -> Vec<u8> {
    let mut block = pattern(7, BLOCK);
    block[..8].copy_from_slice(&n.to_le_bytes());
    block
}

/// A service that sends numbered blocks to every connection, as fast as it is let, until
/// the connection goes (a media server streaming to a player). How many bytes it has
/// written to each connection is kept, in the order they connected.
async fn source_service() -> Result<(SocketAddr, Arc<Mutex<Vec<Arc<AtomicU64>>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let written: Arc<Mutex<Vec<Arc<AtomicU64>>>> = Arc::default();
    let counters = written.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = Arc::new(AtomicU64::new(0));
            counters.lock().expect("not poisoned").push(count.clone());
            tokio::spawn(async move {
                let template = block(0);
                for n in 0u64.. {
                    let mut next = template.clone();
                    next[..8].copy_from_slice(&n.to_le_bytes());
                    if stream.write_all(&next).await.is_err() {
                        return;
                    }
                    count.fetch_add(BLOCK as u64, Ordering::Relaxed);
                }
            });
        }
    });
    Ok((addr, written))
}

/// Reads a source service's blocks from `app` and checks each one, until `stop` is set
/// and at least `at_least` bytes arrived after `from` was set (at most 2 minutes). Returns
/// the bytes read after `from` and the longest wait for a read.
async fn read_blocks(
    mut app: tokio::io::DuplexStream,
    from: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    at_least: u64,
) -> Result<(u64, Duration)> {
    let template = block(0);
    let (mut offset, mut counted, mut longest) = (0u64, 0u64, Duration::ZERO);
    let started = Instant::now();
    let mut buf = vec![0u8; BLOCK];
    while !(stop.load(Ordering::Relaxed) && counted >= at_least) {
        ensure!(started.elapsed() < Duration::from_secs(120), "still reading after 2 minutes");
        let waited = Instant::now();
        let n = tokio::time::timeout(Duration::from_secs(30), app.read(&mut buf)).await.context("stalled")??;
        longest = longest.max(waited.elapsed());
        ensure!(n > 0, "the session ended after {offset} bytes");
        for &byte in &buf[..n] {
            let at = (offset % BLOCK as u64) as usize;
            let want = if at < 8 { (offset / BLOCK as u64).to_le_bytes()[at] } else { template[at] };
            ensure!(byte == want, "byte {offset} altered");
            offset += 1;
        }
        if from.load(Ordering::Relaxed) {
            counted += n as u64;
        }
    }
    Ok((counted, longest))
}

/// Finding 1 and the test 2: 64 sessions of one host stop reading (their viewer
/// paused) while another session of the same host, already running, and a new one on
/// the paused viewer's own connection stream at full speed. The relay's window for the
/// host's connection used to be 16 stream windows, so 16 stalled sessions froze the rest
/// of the host (and the viewer's own connection window, 16 stream windows too, froze its
/// new session); now each session brings its own share of the connection's window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_that_stop_reading_freeze_no_other_session_of_their_host() -> Result<()> {
    const STALLED: usize = 64;
    let relay = Relay::start("").await?;
    let (service, written) = source_service().await?;
    let (host, identity) = relay.host(service).await?;
    let baseline = relay.footprint()?;
    eprintln!("relay before the attack: {baseline}");

    // The honest session, streaming from before the viewers pause to after.
    let (stalled_in_place, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let honest_client = relay.client(&identity)?;
    let (app, honest_bridge) = honest_client.open_session().await?.spawn_pipe(256 * 1024);
    let running = tokio::spawn(read_blocks(app, stalled_in_place.clone(), stop.clone(), HONEST_BYTES));

    // 64 sessions on one viewer's connection whose application never reads.
    let viewer = relay.client(&identity)?;
    let mut paused = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        paused.push(viewer.open_session().await?.spawn_pipe(64 * 1024));
    }
    // In place once the service has pushed each of them more than the relay's window and
    // the viewer's together (2 MiB), and the relay holds a window's worth for each (its
    // memory has grown by 1 MiB a session): their bytes wait in the relay for a reader.
    let filled = Instant::now();
    loop {
        let pushed: Vec<u64> =
            written.lock().expect("not poisoned").iter().map(|c| c.load(Ordering::Relaxed)).collect();
        // The running session is one of them (it reads all it is sent).
        let full = pushed.iter().filter(|&&n| n > 2 << 20).count().saturating_sub(1);
        let held_mib = relay.footprint()?.rss_kib.saturating_sub(baseline.rss_kib) >> 10;
        if full >= STALLED && held_mib >= STALLED as u64 {
            break;
        }
        if filled.elapsed() > Duration::from_secs(30) {
            bail!(
                "{full} of {STALLED} paused sessions got their windows' worth and the relay holds {held_mib} MiB \
                 for them: the sessions froze each other"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during = relay.footprint()?;
    eprintln!("{STALLED} paused sessions in place after {:?}; relay: {during}", filled.elapsed());
    stalled_in_place.store(true, Ordering::Relaxed);

    // A new session on the paused viewer's own connection streams too.
    let started = Instant::now();
    let (app, new_bridge) = viewer.open_session().await?.spawn_pipe(256 * 1024);
    let (new_bytes, new_longest) =
        read_blocks(app, Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(true)), HONEST_BYTES)
            .await
            .context("the new session")?;
    let new_rate = new_bytes as f64 / started.elapsed().as_secs_f64() / 1e6;
    stop.store(true, Ordering::Relaxed);
    let (running_bytes, running_longest) =
        tokio::time::timeout(Duration::from_secs(60), running).await.context("the running session hung")???;
    eprintln!(
        "while {STALLED} sessions stalled: the running session read {} MiB intact (longest wait {running_longest:?}), \
         a new one {} MiB at {new_rate:.0} MB/s (longest wait {new_longest:?})",
        running_bytes >> 20,
        new_bytes >> 20
    );
    ensure!(running_longest < STALL_BOUND, "the running session stalled for {running_longest:?}");
    ensure!(new_longest < STALL_BOUND, "the new session stalled for {new_longest:?}");

    // The attack ends: everything closes, and the relay gives back what it took.
    for bridge in [honest_bridge, new_bridge] {
        bridge.abort();
    }
    for (app, bridge) in paused {
        drop(app);
        bridge.abort();
    }
    viewer.close().await;
    honest_client.close().await;
    relay.metric_until_zero("ferry_relay_sessions_active").await?;
    baseline.wait_back(relay.pid()?, 8 * 1024).await?;
    host.shutdown().await;
    Ok(())
}

impl Relay {
    /// Polls `sample` (every 50 ms, at most 20 s) until it is 0.
    async fn metric_until_zero(&self, sample: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            let value = self.metric(sample).await?;
            if value == 0.0 {
                return Ok(());
            }
            ensure!(started.elapsed() < Duration::from_secs(20), "{sample} still {value} after 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Opens sessions to the host of `client` until the relay refuses one (at most `most`);
/// the sessions, held open and idle, and the reason of the refusal.
async fn open_until_refused(client: &Client, most: usize) -> Result<(Vec<Session>, Option<RefuseReason>)> {
    let mut held = Vec::new();
    for _ in 0..most {
        match client.open_session().await {
            Ok(session) => held.push(session),
            Err(Error::Refused(reason)) => return Ok((held, Some(reason))),
            Err(e) => return Err(e).context("a greedy session failed otherwise than by a refusal"),
        }
    }
    Ok((held, None))
}

/// Finding 5: two self-made hosts holding idle sessions used to reserve the whole buffer
/// budget (each session reserves its two buffers up front), and every other host's new
/// sessions were refused as busy. Now a host holding buffers may take only its fair
/// share, so an honest host opening sessions afterwards still gets its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_hosts_cannot_take_the_whole_buffer_budget() -> Result<()> {
    /// The budget holds this many sessions' buffers (2 × 1 MiB each).
    const SLOTS: u64 = 48;
    let relay = Relay::start(&format!("buffer_budget = {}\nmax_sessions_per_host = 1000\n", SLOTS * (2 << 20))).await?;
    let (echo, _task) = echo_service().await?;
    let baseline = relay.footprint()?;
    eprintln!("relay before the attack: {baseline}");

    // The attacker: two hosts of its own and sessions to them, opened in turns, held idle.
    let mut greedy = Vec::new();
    let mut held = Vec::new();
    for _ in 0..2 {
        let (host, identity) = relay.host(echo).await?;
        greedy.push((host, relay.client(&identity)?));
    }
    for _ in 0..SLOTS {
        for (_, client) in &greedy {
            held.extend(open_until_refused(client, 1).await?.0);
        }
    }
    let taken = held.len() as u64;
    eprintln!("two greedy hosts hold {taken} idle sessions of a budget for {SLOTS}");
    ensure!(taken < SLOTS, "the greedy hosts took all {SLOTS} sessions' buffers");

    // An honest host opens sessions now, and they stream intact.
    let (honest_host, identity) = relay.host(echo).await?;
    let honest = relay.client(&identity)?;
    let (sessions, refusal) = open_until_refused(&honest, SLOTS as usize).await?;
    eprintln!("the honest host then got {} sessions (then {refusal:?})", sessions.len());
    ensure!(sessions.len() as u64 >= SLOTS / 4, "the honest host got only {} sessions", sessions.len());
    ensure!(
        refusal.is_some_and(|r| r == RefuseReason::HostOverLimit || r == RefuseReason::RelayBusy),
        "refused as {refusal:?}"
    );
    let data = pattern(41, 8 << 20);
    for session in sessions.into_iter().take(2) {
        let (app, bridge) = session.spawn_pipe(256 * 1024);
        let (mut r, mut w) = tokio::io::split(app);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await?;
            w.shutdown().await
        });
        let mut back = Vec::with_capacity(data.len());
        tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut back)).await.context("echo hung")??;
        writer.await??;
        bridge.await??;
        ensure!(back == data, "the honest session's bytes came back altered ({} of {})", back.len(), data.len());
    }
    // The greedy hosts over their share are told so, not that the relay is busy.
    let (_, greedy_refusal) = open_until_refused(&greedy[0].1, 1).await?;
    ensure!(greedy_refusal == Some(RefuseReason::HostOverLimit), "a greedy host was refused as {greedy_refusal:?}");

    drop(held);
    for (host, client) in greedy {
        client.close().await;
        host.shutdown().await;
    }
    honest.close().await;
    relay.metric_until_zero("ferry_relay_buffer_bytes_in_use").await?;
    baseline.wait_back(relay.pid()?, 8 * 1024).await?;
    honest_host.shutdown().await;
    Ok(())
}
