//! Soak harness: opens and closes many sessions through the real `ferry-relay` process
//! and checks that its memory and open files come back down afterwards.
//!
//! `cargo bench --bench soak [-- --sessions N --wave W --clients C --transport quic|tcp
//! --payload BYTES --max-minutes M]`
//!
//! The relay runs as its own process (`target/release/ferry-relay`, built first if
//! missing or older than its sources) on loopback with a temporary state directory, the
//! admin listener off, log level `warn` and limits high enough that nothing is refused.
//! A host (`ferry_client::Host`) forwarding to an echo service and several clients
//! (`ferry_client::Client`; one QUIC connection carries at most 1024 sessions) run in
//! this process. Sessions go in waves: open all of a wave, echo a few bytes on each,
//! sample the relay while they are all open, close them all, next wave. The relay's
//! VmRSS and `/proc/<pid>/fd` count are read cold (host registered, nothing else yet),
//! before (after one warm-up wave, every session and client closed, once the numbers stop
//! falling), at the peak and after (the same idle state after the last wave); "after"
//! must be within ±10% of "before". The warm-up exists because quinn keeps each
//! connection's stream state for reuse, as much as it once had open at once: the first
//! burst sets the relay's idle footprint (see docs/soak.md). Any FAIL line makes the exit
//! code non-zero.
//! See `docs/soak.md` for a run and how to read it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use ferry::local::{echo_service, wait_registered};
use ferry_client::{Client, HopOptions, Host, HostConfig, HostIdentity, Transport};
use ferry_proto::{RelayAddr, RelayTrust, StaticKey, Ticket};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Longest wait for one step (open, echo, close) of one session.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the relay's numbers to settle after the last wave.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// "After" must be within this fraction of "before".
const TOLERANCE: f64 = 0.10;

#[derive(Clone, Debug)]
struct Opts {
    sessions: u64,
    wave: usize,
    clients: usize,
    payload: usize,
    transport: Transport,
    max_time: Duration,
    host_streams: u32,
}

fn parse_args() -> Result<Opts> {
    let mut opts = Opts {
        sessions: 100_000,
        wave: 2_000,
        clients: 0,
        payload: 64,
        transport: Transport::Quic,
        max_time: Duration::from_secs(15 * 60),
        host_streams: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--sessions" => opts.sessions = value("--sessions")?.parse().context("--sessions")?,
            "--wave" => opts.wave = value("--wave")?.parse().context("--wave")?,
            "--clients" => opts.clients = value("--clients")?.parse().context("--clients")?,
            "--host-streams" => opts.host_streams = value("--host-streams")?.parse().context("--host-streams")?,
            "--payload" => opts.payload = value("--payload")?.parse().context("--payload")?,
            "--transport" => opts.transport = value("--transport")?.parse().map_err(anyhow::Error::msg)?,
            "--max-minutes" => {
                let minutes: f64 = value("--max-minutes")?.parse().context("--max-minutes")?;
                opts.max_time = Duration::from_secs_f64(minutes.clamp(0.1, 24.0 * 60.0) * 60.0);
            }
            "-h" | "--help" => {
                println!(
                    "cargo bench --bench soak -- [--sessions N (100000)] [--wave W (2000)] [--clients C (W/500)] [--host-streams S (W+64, at least 1024)]\n\
                     \x20   [--transport quic|tcp (quic)] [--payload BYTES (64)] [--max-minutes M (15)]"
                );
                std::process::exit(0);
            }
            // `cargo bench` passes `--bench`; ignore it and anything unknown.
            _ => {}
        }
    }
    anyhow::ensure!(opts.sessions > 0 && opts.wave > 0, "--sessions and --wave must be at least 1");
    anyhow::ensure!(opts.payload > 0 && opts.payload <= 1 << 20, "--payload must be 1..=1048576 bytes");
    if opts.clients == 0 {
        // At most 500 sessions per client connection: well under the 1024-stream limit.
        opts.clients = opts.wave.div_ceil(500).max(1);
    }
    if opts.host_streams == 0 {
        // One wave plus a margin: ferry_link::credit keeps that many openable right after
        // the previous wave closed (quinn returns stream credit in batches).
        opts.host_streams = u32::try_from(opts.wave + 64).unwrap_or(u32::MAX).max(1024);
    }
    Ok(opts)
}

// ---------------------------------------------------------------------------------------
// The relay process and /proc readings.

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// The newest modification time of the files under `dir`.
fn newest(dir: &Path) -> Option<SystemTime> {
    let mut best = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() { newest(&path) } else { entry.metadata().ok()?.modified().ok() };
        best = best.max(time);
    }
    best
}

/// `target/release/ferry-relay`, built first if missing or older than the sources.
fn ferry_relay_binary() -> Result<PathBuf> {
    let bin = target_dir().join("release/ferry-relay");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let sources = ["relay", "proto", "link"].iter().filter_map(|d| newest(&workspace_root().join(d))).max();
    let why = match (built, sources) {
        (None, _) => Some("missing"),
        (Some(b), Some(s)) if s > b => Some("older than its sources"),
        _ => None,
    };
    if let Some(why) = why {
        println!("target/release/ferry-relay is {why}: running `cargo build --release -p ferry --bin ferry-relay`");
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "ferry", "--bin", "ferry-relay"])
            .current_dir(workspace_root())
            .status()?;
        if !status.success() || !bin.exists() {
            if built.is_some() {
                println!("  build failed: using the existing binary");
            } else {
                bail!("building ferry-relay failed; run `cargo build --release -p ferry --bin ferry-relay` first");
            }
        }
    }
    Ok(bin)
}

/// The relay process; killed when dropped.
struct Relay {
    child: Child,
    pid: u32,
    relays: Vec<RelayAddr>,
    _dir: tempfile::TempDir,
}

impl Relay {
    async fn start(bin: &Path) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = format!(
            "[relay]\nlisten = \"127.0.0.1:0\"\nstate_dir = {:?}\n\
             [admin]\nenabled = false\n\
             [log]\nlevel = \"warn\"\n\
             [limits]\nmax_sessions_per_host = 100000\nmax_pending_handshakes = 65536\n\
             connections_per_minute_per_source = 0\nbuffer_budget = 68719476736\n",
            dir.path().join("state")
        );
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, config)?;
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("relay pid")?;
        let mut lines = BufReader::new(child.stdout.take().context("relay stdout")?).lines();
        let (mut addr, mut pin) = (None, None);
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("ferry relay listening on ") {
                    addr = rest.split_whitespace().next().map(str::to_owned);
                } else if let Some(rest) = line.strip_prefix("certificate pin: ") {
                    pin = Some(rest.trim().parse::<RelayTrust>().context("parsing the pin")?);
                    return anyhow::Ok(());
                }
            }
            bail!("ferry-relay exited before printing its pin")
        })
        .await
        .context("ferry-relay did not start")??;
        // Keep draining both pipes so the relay never blocks on a full one; show warnings.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let mut log = BufReader::new(child.stderr.take().context("relay stderr")?).lines();
        tokio::spawn(async move {
            let mut shown = 0u32;
            while let Ok(Some(line)) = log.next_line().await {
                shown += 1;
                if shown <= 20 {
                    eprintln!("  relay log: {line}");
                }
            }
        });
        let relays = vec![RelayAddr { addr: addr.context("no listen line")?, trust: pin.context("no pin")? }];
        Ok(Self { child, pid, relays, _dir: dir })
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("ferry-relay exited: {status}");
        }
        Ok(())
    }

    fn sample(&self) -> Result<Sample> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).context("reading VmRSS")?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS")?;
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid)).context("reading fds")?.count() as u64;
        Ok(Sample { rss_kib, fds })
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rss_kib: u64,
    fds: u64,
}

impl Sample {
    fn max(self, other: Sample) -> Sample {
        Sample { rss_kib: self.rss_kib.max(other.rss_kib), fds: self.fds.max(other.fds) }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------
// Sessions.

/// What one wave did.
#[derive(Debug, Default)]
struct WaveResult {
    /// Sessions that opened, echoed and closed cleanly.
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    peak: Sample,
    open_and_echo: Duration,
    total: Duration,
}

/// One session: open, echo `payload` (tagged with `id`), report, wait for the signal to
/// close, close (half-close travels end to end and back), check the byte counts.
async fn one_session(
    client: Arc<Client>,
    id: u64,
    payload: usize,
    echoed: mpsc::UnboundedSender<Result<(), String>>,
    mut close: watch::Receiver<bool>,
) -> Result<()> {
    let opened = async {
        let session = tokio::time::timeout(STEP_TIMEOUT, client.open_session()).await.context("open timed out")??;
        let (app, bridge) = session.spawn_pipe(16 * 1024);
        let (mut app_r, mut app_w) = tokio::io::split(app);
        let mut data = vec![0u8; payload];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (id.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8;
        }
        let mut back = vec![0u8; payload];
        tokio::time::timeout(STEP_TIMEOUT, async {
            app_w.write_all(&data).await?;
            app_r.read_exact(&mut back).await?;
            anyhow::Ok(())
        })
        .await
        .context("echo timed out")??;
        anyhow::ensure!(back == data, "the echo came back altered");
        anyhow::Ok((app_r, app_w, bridge))
    }
    .await;
    let (mut app_r, mut app_w, bridge) = match opened {
        Ok(parts) => {
            let _ = echoed.send(Ok(()));
            parts
        }
        Err(e) => {
            let _ = echoed.send(Err(format!("{e:#}")));
            return Err(e);
        }
    };
    drop(echoed);
    // The wave's deadline bounds this wait (the sender is dropped or set to true).
    let _ = close.wait_for(|&c| c).await;
    tokio::time::timeout(STEP_TIMEOUT, async {
        app_w.shutdown().await?;
        let mut rest = Vec::new();
        app_r.read_to_end(&mut rest).await?;
        anyhow::ensure!(rest.is_empty(), "{} unexpected bytes after the echo", rest.len());
        let moved = bridge.await??;
        anyhow::ensure!(
            moved.sent == payload as u64 && moved.received == payload as u64,
            "carried {moved:?}, expected {payload} each way"
        );
        anyhow::Ok(())
    })
    .await
    .context("close timed out")?
}

/// Runs one wave of `count` sessions spread over `clients`; nothing in it outlives
/// `deadline`.
async fn wave(
    relay: &Relay,
    clients: &[Arc<Client>],
    first_id: u64,
    count: usize,
    payload: usize,
    deadline: Instant,
) -> WaveResult {
    let started = Instant::now();
    let mut result = WaveResult::default();
    let (echoed_tx, mut echoed_rx) = mpsc::unbounded_channel();
    let (close_tx, close_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let client = clients[i % clients.len()].clone();
        tasks.spawn(one_session(client, first_id + i as u64, payload, echoed_tx.clone(), close_rx.clone()));
    }
    drop(echoed_tx);

    // Every session reports once it has echoed (or failed); sample the relay meanwhile.
    let mut reported = 0usize;
    let mut peak = relay.sample().unwrap_or_default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while reported < count {
        tokio::select! {
            r = echoed_rx.recv() => match r {
                Some(_) => reported += 1,
                None => break,
            },
            _ = tick.tick() => peak = peak.max(relay.sample().unwrap_or_default()),
            _ = tokio::time::sleep_until(deadline.into()) => break,
        }
    }
    // All are open now (those that could): this is the peak.
    peak = peak.max(relay.sample().unwrap_or_default());
    result.open_and_echo = started.elapsed();
    let _ = close_tx.send(true);
    drop(close_tx);

    let mut failures = Vec::new();
    let joined = tokio::time::timeout_at(deadline.into(), async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => result.ok += 1,
                Ok(Err(e)) => failures.push(format!("{e:#}")),
                Err(e) => failures.push(format!("session task: {e}")),
            }
        }
    })
    .await;
    if joined.is_err() {
        failures.push(format!("wave deadline reached with {} sessions unfinished", tasks.len()));
        tasks.abort_all();
    }
    result.failed = count as u64 - result.ok;
    result.first_error = failures.into_iter().next();
    result.peak = peak;
    result.total = started.elapsed();
    result
}

/// Connects `opts.clients` clients to the relay (each has its QUIC or TCP connection up).
async fn connect_clients(opts: &Opts, ticket: &Ticket) -> Result<Vec<Arc<Client>>> {
    let mut clients = Vec::new();
    for _ in 0..opts.clients {
        let client =
            Client::new(ticket.clone(), StaticKey::generate()?, HopOptions::client()).with_transport(opts.transport);
        client.warm_up().await.context("a client could not reach the relay")?;
        clients.push(Arc::new(client));
    }
    Ok(clients)
}

/// Closes every client's connection to the relay.
async fn close_clients(clients: Vec<Arc<Client>>) {
    for client in &clients {
        client.close().await;
    }
}

/// Samples every second until RSS and fds have not fallen for 3 samples in a row (or
/// `SETTLE_TIMEOUT`); returns the last sample and how long it took.
async fn settle(relay: &Relay) -> Result<(Sample, Duration)> {
    let started = Instant::now();
    let mut last = relay.sample()?;
    let mut steady = 0;
    while started.elapsed() < SETTLE_TIMEOUT && steady < 3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = relay.sample()?;
        if now.rss_kib < last.rss_kib || now.fds < last.fds {
            steady = 0;
        } else {
            steady += 1;
        }
        last = now;
    }
    Ok((last, started.elapsed()))
}

fn within(before: u64, after: u64) -> bool {
    (after as f64 - before as f64).abs() <= before as f64 * TOLERANCE
}

#[tokio::main]
async fn main() {
    match run().await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("soak: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Returns whether every check passed.
async fn run() -> Result<bool> {
    let opts = parse_args()?;
    let started = Instant::now();
    let deadline = started + opts.max_time;
    // Build (if needed) before the clock that measures the load starts.
    let bin = ferry_relay_binary()?;
    println!(
        "soak: {} sessions in waves of {}, {} clients over {:?}, {} bytes echoed per session, stop after {:.0} s",
        opts.sessions,
        opts.wave,
        opts.clients,
        opts.transport,
        opts.payload,
        opts.max_time.as_secs_f64()
    );
    for var in ["GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"] {
        if let Ok(v) = std::env::var(var) {
            println!("  (relay inherits {var}={v})");
        }
    }

    let mut relay = Relay::start(&bin).await?;
    let (service, _service_task) = echo_service().await?;
    let identity = HostIdentity::generate()?;
    let mut host_config = HostConfig::new(identity.clone(), relay.relays.clone(), service.to_string());
    // The relay opens one stream to the host per session: room for a whole wave.
    host_config.options.max_incoming_streams = opts.host_streams;
    host_config.transport = opts.transport;
    let host = Host::spawn(host_config);
    wait_registered(&host, 1).await?;
    let ticket = Ticket { host: identity.key.public(), secret: identity.secret.clone(), relays: relay.relays.clone() };

    // Cold: host registered, nothing else yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cold = relay.sample()?;
    println!("relay pid {}: cold: RSS {:.1} MiB, {} fds", relay.pid, mib(cold.rss_kib), cold.fds);

    // Warm-up: one wave at full concurrency, then the same idle state as at the end (no
    // client connected, no session, numbers settled). quinn keeps each connection's
    // per-stream receive state for reuse, as many as the connection ever had open at
    // once (quinn PR #1999), so the host's connection keeps a wave's worth: the relay's
    // idle footprint after its first burst is its baseline from then on.
    let clients = connect_clients(&opts, &ticket).await?;
    // Ids above any the measured waves use (they only tag the echoed bytes).
    let r = wave(&relay, &clients, u64::MAX / 2, opts.wave, opts.payload, deadline).await;
    if r.failed > 0 {
        bail!(
            "the warm-up wave failed: {} of {} sessions ({})",
            r.failed,
            opts.wave,
            r.first_error.unwrap_or_default()
        );
    }
    close_clients(clients).await;
    let (before, _) = settle(&relay).await?;
    println!(
        "warm-up: {} sessions, peak RSS {:.1} MiB; before (idle again): RSS {:.1} MiB, {} fds",
        opts.wave,
        mib(r.peak.rss_kib),
        mib(before.rss_kib),
        before.fds
    );

    let clients = connect_clients(&opts, &ticket).await?;
    let load_started = Instant::now();
    let mut peak = before;
    let (mut done, mut failed) = (0u64, 0u64);
    let mut first_error: Option<String> = None;
    let mut stopped_early = None;
    let next_id = AtomicU64::new(0);
    let waves = opts.sessions.div_ceil(opts.wave as u64);
    for n in 1..=waves {
        if Instant::now() >= deadline {
            stopped_early = Some(format!("time limit reached before wave {n}"));
            break;
        }
        if let Err(e) = relay.check_alive() {
            stopped_early = Some(format!("{e:#}"));
            break;
        }
        let between = relay.sample()?;
        let count = (opts.sessions - (n - 1) * opts.wave as u64).min(opts.wave as u64) as usize;
        let first = next_id.fetch_add(count as u64, Ordering::Relaxed);
        let r = wave(&relay, &clients, first, count, opts.payload, deadline).await;
        peak = peak.max(r.peak);
        done += r.ok;
        failed += r.failed;
        if first_error.is_none() {
            first_error.clone_from(&r.first_error);
        }
        let elapsed = load_started.elapsed().as_secs_f64();
        if n == 1 || n == waves || n % 5 == 0 || r.failed > 0 {
            println!(
                "wave {n:>3}/{waves}: {:>6} ok {:>4} failed | open+echo {:>5.2} s, wave {:>5.2} s | relay between waves {:>6.1} MiB {:>5} fds, peak {:>6.1} MiB {:>5} fds | {done} done in {elapsed:.1} s",
                r.ok,
                r.failed,
                r.open_and_echo.as_secs_f64(),
                r.total.as_secs_f64(),
                mib(between.rss_kib),
                between.fds,
                mib(r.peak.rss_kib),
                r.peak.fds,
            );
        }
        if let Some(e) = &r.first_error {
            println!("  first error in wave {n}: {e}");
        }
        // A relay or host that is failing whole waves will not recover by itself.
        if r.ok == 0 {
            stopped_early = Some(format!("wave {n} had no successful session"));
            break;
        }
    }
    let load_time = load_started.elapsed();

    // After: every client connection closed, sessions gone, numbers settled.
    close_clients(clients).await;
    relay.check_alive()?;
    let (after, settled_in) = settle(&relay).await?;
    let registrations = host.status().borrow().registrations;
    host.shutdown().await;

    let total = started.elapsed();
    let rate = done as f64 / load_time.as_secs_f64();
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| sessions done (opened, echoed, closed) | {done} of {} |", opts.sessions);
    println!("| sessions failed | {failed} |");
    println!("| wave size / clients / transport | {} / {} / {:?} |", opts.wave, opts.clients, opts.transport);
    println!("| load time | {:.1} s |", load_time.as_secs_f64());
    println!("| sessions per second | {rate:.0} |");
    println!(
        "| total time (incl. start and settle {:.0} s) | {:.1} s |",
        settled_in.as_secs_f64(),
        total.as_secs_f64()
    );
    println!();
    println!("| relay | cold | before (after warm-up) | peak | after | after / before |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| RSS (MiB) | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
        mib(cold.rss_kib),
        mib(before.rss_kib),
        mib(peak.rss_kib),
        mib(after.rss_kib),
        after.rss_kib as f64 / before.rss_kib as f64
    );
    println!(
        "| open fds | {} | {} | {} | {} | {:.2} |",
        cold.fds,
        before.fds,
        peak.fds,
        after.fds,
        after.fds as f64 / before.fds as f64
    );
    println!();
    if registrations > 1 {
        println!("note: the host registered {registrations} times (it lost the relay during the run)");
    }
    if let Some(why) = &stopped_early {
        println!("note: stopped early: {why}");
    }
    if let Some(e) = &first_error {
        println!("note: first session error: {e}");
    }

    let checks = [
        ("all sessions done", done == opts.sessions && stopped_early.is_none()),
        ("no session failed", failed == 0),
        ("RSS after within ±10% of before", within(before.rss_kib, after.rss_kib)),
        ("fds after within ±10% of before", within(before.fds, after.fds)),
    ];
    for (what, ok) in checks {
        println!("{}: {what}", if ok { "PASS" } else { "FAIL" });
    }
    println!(
        "info: after / cold = {:.2}: what the first burst left in place (quinn's stream state pool and the heap pages it pins; docs/soak.md)",
        after.rss_kib as f64 / cold.rss_kib as f64
    );
    drop(relay);
    Ok(checks.iter().all(|(_, ok)| *ok))
}
