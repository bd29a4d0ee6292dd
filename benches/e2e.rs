//! End-to-end benchmark harness: ferry against a direct connection, a plain `socat`
//! forwarder and rathole with its Noise transport, all on loopback, in one run.
//!
//! `cargo build --release && cargo bench --bench e2e [-- --quick] [--rounds N]`
//!
//! Every row is one call to [`measure`] per round with a [`Kind`]; each kind only says
//! how to start its forwarder and where clients connect, so the load loops are the same
//! for all. Rounds are interleaved (every row once, then every row again) and each cell
//! shows the median over rounds, so a noisy neighbour on a small machine shifts all rows
//! alike instead of one; the spread of every row is printed under the table. Idle-session
//! memory is measured in the first round only (it is steady, and slow to measure).
//!
//! Relays run as separate processes (the real `ferry-relay` binary, `socat`, the
//! `rathole` server) so their memory and CPU are read from `/proc`. The ferry host and
//! client run in this process, as the library `ferry host run` / `ferry connect` use.
//! See `docs/benchmarks.md` for what each column means.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry::local::{Pattern, serve_connect, wait_registered};
use ferry_client::{Client, HopOptions, Host, HostConfig, HostIdentity, Transport};
use ferry_proto::{RelayAddr, RelayTrust, StaticKey, Ticket};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

const MIB: u64 = 1024 * 1024;
/// Service request modes (first byte of every connection to the service).
const MODE_UPLOAD: u8 = b'U';
const MODE_DOWNLOAD: u8 = b'D';
const MODE_ECHO: u8 = b'E';

/// How much work each measurement does.
#[derive(Clone, Debug)]
struct Sizes {
    /// Bytes for the one-session transfer, each way.
    single: u64,
    /// Bytes per session for the 8-session transfer, each way.
    per_parallel: u64,
    parallel: usize,
    warm_up: usize,
    round_trips: usize,
    setups: usize,
    in_flight: usize,
    idle: Vec<usize>,
    /// Longest wait for any one measurement.
    deadline: Duration,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                single: 64 * MIB,
                per_parallel: 8 * MIB,
                parallel: 8,
                warm_up: 100,
                round_trips: 1_000,
                setups: 300,
                in_flight: 16,
                idle: vec![1_000],
                deadline: Duration::from_secs(30),
            }
        } else {
            Self {
                single: 512 * MIB,
                per_parallel: 64 * MIB,
                parallel: 8,
                warm_up: 500,
                round_trips: 5_000,
                setups: 2_000,
                in_flight: 16,
                idle: vec![1_000, 10_000],
                deadline: Duration::from_secs(90),
            }
        }
    }
}

/// What the user asked for on the command line.
#[derive(Clone, Debug)]
struct Opts {
    quick: bool,
    /// Measure every row this many times, interleaved; cells are medians.
    rounds: usize,
    /// Also open 10,000 sessions through socat (10,000 forked processes).
    socat_10k: bool,
    /// Only these rows (by name), if given.
    only: Vec<String>,
}

fn parse_args() -> Opts {
    let mut opts = Opts { quick: false, rounds: 0, socat_10k: false, only: Vec::new() };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--socat-10k" => opts.socat_10k = true,
            "--only" => opts.only.extend(args.next()),
            "--rounds" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => opts.rounds = n,
                _ => {
                    eprintln!("--rounds takes a whole number of at least 1");
                    std::process::exit(2);
                }
            },
            // `cargo bench` passes `--bench`; ignore it and anything unknown.
            "-h" | "--help" => {
                println!(
                    "cargo bench --bench e2e -- [--quick] [--rounds N] [--socat-10k] [--only ROW]...\n\
                     rows: direct, ferry-quic, ferry-tcp, socat, rathole-noise\n\
                     --rounds: measure every row N times, interleaved, and show medians (default 3, 1 with --quick)"
                );
                std::process::exit(0);
            }
            _ => {}
        }
    }
    if opts.rounds == 0 {
        opts.rounds = if opts.quick { 1 } else { 3 };
    }
    opts
}

/// The forwarders compared, one row each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Client straight to the service: the ceiling.
    Direct,
    /// ferry over QUIC: real `ferry-relay` process, in-process host and client.
    FerryQuic,
    /// ferry over TCP+TLS (slot for the TCP transport).
    FerryTcp,
    /// `socat` TCP forwarder, one process per connection.
    Socat,
    /// rathole server + client with the Noise transport.
    RatholeNoise,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::FerryQuic => "ferry-quic",
            Kind::FerryTcp => "ferry-tcp",
            Kind::Socat => "socat",
            Kind::RatholeNoise => "rathole-noise",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct (no relay)",
            Kind::FerryQuic => "ferry over QUIC",
            Kind::FerryTcp => "ferry over TCP+TLS",
            Kind::Socat => "socat TCP forwarder",
            Kind::RatholeNoise => "rathole (noise)",
        }
    }
}

/// One row of results; `None` is printed as "n/a" (not applicable or not measured).
#[derive(Clone, Debug, Default)]
struct Row {
    label: String,
    up1: Cell,
    down1: Cell,
    up8: Cell,
    down8: Cell,
    p50: Cell,
    p99: Cell,
    setups: Cell,
    rss: Vec<Cell>,
    cpu_per_gb: Cell,
    note: Option<String>,
}

impl Row {
    /// Each cell's median over `rounds` of one row (the first note, if any, is kept).
    fn median(rounds: Vec<Row>) -> Row {
        let first = rounds.first().cloned().unwrap_or_default();
        let column = |pick: &dyn Fn(&Row) -> &Cell| Cell::median(rounds.iter().map(pick));
        Row {
            label: first.label.clone(),
            up1: column(&|r| &r.up1),
            down1: column(&|r| &r.down1),
            up8: column(&|r| &r.up8),
            down8: column(&|r| &r.down8),
            p50: column(&|r| &r.p50),
            p99: column(&|r| &r.p99),
            setups: column(&|r| &r.setups),
            // Measured in the first round only.
            rss: first.rss.clone(),
            cpu_per_gb: column(&|r| &r.cpu_per_gb),
            note: rounds.iter().find_map(|r| r.note.clone()),
        }
    }

    /// "column lo–hi" for every column that was measured more than once and varied.
    fn spread(rounds: &[Row]) -> String {
        /// Name, the cell, decimals shown.
        type Column = (&'static str, fn(&Row) -> &Cell, usize);
        let columns: [Column; 8] = [
            ("up 1", |r| &r.up1, 2),
            ("down 1", |r| &r.down1, 2),
            ("up 8", |r| &r.up8, 2),
            ("down 8", |r| &r.down8, 2),
            ("p50", |r| &r.p50, 0),
            ("p99", |r| &r.p99, 0),
            ("setups/s", |r| &r.setups, 0),
            ("CPU s/GB", |r| &r.cpu_per_gb, 2),
        ];
        columns
            .iter()
            .filter_map(|(name, pick, decimals)| {
                let values: Vec<f64> = rounds.iter().filter_map(|r| pick(r).value()).collect();
                let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (values.len() > 1).then(|| format!("{name} {lo:.decimals$}–{hi:.decimals$}"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A measured value, or why there is none.
#[derive(Clone, Debug, Default)]
enum Cell {
    Value(f64),
    /// Measured with fewer sessions than the column says (open-file limit).
    Fewer(f64, usize),
    #[default]
    NotApplicable,
    Failed,
}

impl Cell {
    fn of(result: Result<f64>, what: &str, row: &str) -> Self {
        match result {
            Ok(v) => Cell::Value(v),
            Err(e) => {
                eprintln!("  {row}: {what} failed: {e:#}");
                Cell::Failed
            }
        }
    }

    /// The median of the measured values (the upper one of an even count); failed if
    /// nothing was measured but something failed, not applicable if nothing was tried.
    fn median<'a>(cells: impl Iterator<Item = &'a Cell>) -> Cell {
        let (mut values, mut fewer, mut failed) = (Vec::new(), None, false);
        for cell in cells {
            match cell {
                Cell::Value(v) => values.push(*v),
                Cell::Fewer(v, n) => {
                    values.push(*v);
                    fewer = Some(*n);
                }
                Cell::Failed => failed = true,
                Cell::NotApplicable => {}
            }
        }
        values.sort_by(f64::total_cmp);
        match (values.get(values.len() / 2), fewer) {
            (Some(v), Some(n)) => Cell::Fewer(*v, n),
            (Some(v), None) => Cell::Value(*v),
            (None, _) if failed => Cell::Failed,
            (None, _) => Cell::NotApplicable,
        }
    }

    fn value(&self) -> Option<f64> {
        match self {
            Cell::Value(v) => Some(*v),
            _ => None,
        }
    }

    fn show(&self, decimals: usize) -> String {
        match self {
            Cell::Value(v) => format!("{v:.decimals$}"),
            Cell::Fewer(v, n) => format!("{v:.decimals$} (at {n})"),
            Cell::NotApplicable => "n/a".into(),
            Cell::Failed => "fail".into(),
        }
    }
}

// ---------------------------------------------------------------------------------
// The service behind every forwarder.

/// A TCP service on 127.0.0.1 that does what the first byte of a connection asks:
/// `U` sink (reads to EOF, answers the byte count as u64), `D` + u64 source (sends that
/// many bytes, then closes), `E` echo.
async fn service() -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut block = vec![0u8; 256 * 1024];
    Pattern::new(7).fill(&mut block);
    let block: Arc<[u8]> = block.into();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let block = block.clone();
            tokio::spawn(async move {
                let _ = serve_one(stream, &block).await;
            });
        }
    });
    Ok((addr, task))
}

async fn serve_one(stream: TcpStream, block: &[u8]) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut r, mut w) = stream.into_split();
    let mut mode = [0u8; 1];
    if r.read(&mut mode).await? == 0 {
        return Ok(());
    }
    match mode[0] {
        MODE_UPLOAD => {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                let n = r.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            w.write_all(&total.to_be_bytes()).await?;
            w.shutdown().await
        }
        MODE_DOWNLOAD => {
            let mut left = r.read_u64().await?;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                w.write_all(&block[..n]).await?;
                left -= n as u64;
            }
            w.shutdown().await?;
            let mut sink = [0u8; 64];
            while r.read(&mut sink).await? > 0 {}
            Ok(())
        }
        MODE_ECHO => {
            tokio::io::copy(&mut r, &mut w).await?;
            w.shutdown().await
        }
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------
// Load generators; each connects to `entry` (the forwarder's client-side address).

async fn connect(entry: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect(entry).await.with_context(|| format!("connecting to {entry}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn upload(entry: SocketAddr, bytes: u64) -> Result<()> {
    let stream = connect(entry).await?;
    let (mut r, mut w) = stream.into_split();
    let mut block = vec![0u8; 64 * 1024];
    Pattern::new(bytes).fill(&mut block);
    w.write_all(&[MODE_UPLOAD]).await?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        w.write_all(&block[..n]).await?;
        left -= n as u64;
    }
    w.shutdown().await?;
    let got = r.read_u64().await.context("reading the sink's count")?;
    if got != bytes {
        bail!("the sink counted {got} bytes, {bytes} were sent");
    }
    Ok(())
}

async fn download(entry: SocketAddr, bytes: u64) -> Result<()> {
    let mut stream = connect(entry).await?;
    let mut request = vec![MODE_DOWNLOAD];
    request.extend_from_slice(&bytes.to_be_bytes());
    stream.write_all(&request).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    if total != bytes {
        bail!("received {total} bytes, the source sent {bytes}");
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Direction {
    Up,
    Down,
}

/// Aggregate Gbit/s of `sessions` parallel transfers of `each` bytes.
async fn throughput(entry: SocketAddr, dir: Direction, sessions: usize, each: u64, deadline: Duration) -> Result<f64> {
    let started = Instant::now();
    let work = async {
        let mut tasks = Vec::new();
        for _ in 0..sessions {
            tasks.push(tokio::spawn(async move {
                match dir {
                    Direction::Up => upload(entry, each).await,
                    Direction::Down => download(entry, each).await,
                }
            }));
        }
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(deadline, work).await.context("timed out")??;
    let secs = started.elapsed().as_secs_f64();
    Ok((sessions as u64 * each) as f64 * 8.0 / secs / 1e9)
}

/// 64-byte request/response round trips on one session: (p50, p99) in µs.
async fn latency(entry: SocketAddr, warm_up: usize, count: usize, deadline: Duration) -> Result<(f64, f64)> {
    let work = async {
        let mut stream = connect(entry).await?;
        stream.write_all(&[MODE_ECHO]).await?;
        let request = [0x42u8; 64];
        let mut answer = [0u8; 64];
        let mut samples = Vec::with_capacity(count);
        for i in 0..warm_up + count {
            let started = Instant::now();
            stream.write_all(&request).await?;
            stream.read_exact(&mut answer).await?;
            if i >= warm_up {
                samples.push(started.elapsed());
            }
        }
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1e6
        };
        anyhow::Ok((at(0.50), at(0.99)))
    };
    tokio::time::timeout(deadline, work).await.context("timed out")?
}

/// One short session: connect, exchange one byte through the echo, close.
async fn one_exchange(entry: SocketAddr) -> Result<TcpStream> {
    let mut stream = connect(entry).await?;
    stream.write_all(&[MODE_ECHO, 0x11]).await?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await?;
    if byte[0] != 0x11 {
        bail!("the echo answered a different byte");
    }
    Ok(stream)
}

/// New sessions per second: `count` sessions, `in_flight` at a time.
async fn setup_rate(entry: SocketAddr, count: usize, in_flight: usize, deadline: Duration) -> Result<f64> {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let work = async {
        let mut workers = Vec::new();
        for _ in 0..in_flight {
            let next = next.clone();
            workers.push(tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                    let mut stream = tokio::time::timeout(Duration::from_secs(10), one_exchange(entry))
                        .await
                        .context("one session took over 10 s")??;
                    stream.shutdown().await?;
                    // Wait for the far end to close too, so the session is really over.
                    let mut rest = [0u8; 8];
                    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut rest)).await;
                }
                anyhow::Ok(())
            }));
        }
        for w in workers {
            w.await??;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(deadline, work).await.context("timed out")??;
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Idle sessions held open; dropping it closes them.
#[derive(Default)]
struct IdleSessions {
    streams: Vec<TcpStream>,
    /// ferry: the client end of each session's local pipe, and the bridge tasks.
    pipes: Vec<tokio::io::DuplexStream>,
    bridges: Vec<tokio::task::AbortHandle>,
    clients: Vec<Arc<Client>>,
}

impl IdleSessions {
    fn len(&self) -> usize {
        self.streams.len() + self.pipes.len()
    }

    async fn close(self) {
        for client in &self.clients {
            client.close().await;
        }
        for b in &self.bridges {
            b.abort();
        }
        drop(self.streams);
        drop(self.pipes);
    }
}

/// Opens TCP sessions through `entry` until `idle` holds `total`, 32 at a time; each one
/// has carried one byte each way, so it is established end to end.
async fn open_idle_tcp(entry: SocketAddr, idle: &mut IdleSessions, total: usize) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut want = total - idle.len();
    while want > 0 || !tasks.is_empty() {
        while want > 0 && tasks.len() < 32 {
            tasks.spawn(tokio::time::timeout(Duration::from_secs(10), one_exchange(entry)));
            want -= 1;
        }
        if let Some(done) = tasks.join_next().await {
            idle.streams.push(done?.context("one session took over 10 s")??);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Processes, /proc readings.

/// A child process that is killed, with its whole process group, when dropped.
struct Proc {
    child: Child,
    name: &'static str,
    /// The child leads its own process group (socat forks one process per connection).
    group: bool,
}

impl Proc {
    fn pid(&self) -> Result<u32> {
        self.child.id().with_context(|| format!("{} has exited", self.name))
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status})", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            if self.group {
                // Only the group this harness created for the child.
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = self.child.start_kill();
        }
    }
}

/// Reads `/proc/<pid>/stat`: (parent pid, utime+stime+cutime+cstime in ticks).
fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // Fields after the command name start at field 3 (state); utime is field 14.
    let ppid = num(1)? as u32;
    let ticks = num(11)? + num(12)? + num(13)? + num(14)?;
    Some((ppid, ticks))
}

/// `pid` and all its live descendants.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut known: HashSet<u32> = tree.iter().copied().collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return tree;
    };
    let all: Vec<(u32, u32)> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, proc_stat(p)?.0)))
        .collect();
    loop {
        let before = tree.len();
        for &(p, parent) in &all {
            if known.contains(&parent) && known.insert(p) {
                tree.push(p);
            }
        }
        if tree.len() == before {
            return tree;
        }
    }
}

/// CPU seconds used by `pid` and its descendants (live, and reaped ones via cutime).
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> f64 {
    process_tree(pid).iter().filter_map(|&p| proc_stat(p)).map(|(_, t)| t as f64 / ticks_per_second).sum()
}

fn status_kib(pid: u32, field: &str, file: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// Memory of `pid` in MiB: its VmRSS; for a forking relay (socat: one process per
/// connection) the sum of the whole tree's PSS, so shared pages are counted once.
fn memory_mib(pid: u32, forks: bool) -> Result<f64> {
    let kib = if forks {
        process_tree(pid).iter().filter_map(|&p| status_kib(p, "Pss:", "smaps_rollup")).sum()
    } else {
        status_kib(pid, "VmRSS:", "status").context("reading VmRSS")?
    };
    Ok(kib as f64 / 1024.0)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Raises the open-file limit for 10,000 sessions of TCP forwarders (each holds several
/// sockets per session, some in this process): to 200,000 where allowed (root), else the
/// soft limit to the hard one. Uses `prlimit(1)` on this process, so no `unsafe` and no
/// extra dependency; children inherit the new limit.
fn raise_nofile() -> String {
    let me = std::process::id().to_string();
    let set = |limit: &str| {
        std::process::Command::new("prlimit")
            .args(["--pid", &me, &format!("--nofile={limit}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !set("200000:200000") {
        let hard = std::process::Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        if !hard.is_empty() {
            set(&format!("{hard}:"));
        }
    }
    std::process::Command::new("sh")
        .args(["-c", &format!("prlimit --pid {me} --nofile --noheadings --output SOFT,HARD")])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join("/"))
        .unwrap_or_else(|| "unknown".into())
}

/// `N` distinct free loopback ports for forwarders that take a port number, not a
/// listener (all held until all are picked, so none repeats).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let held = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    let ports = held.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<std::io::Result<Vec<_>>>()?;
    ports.try_into().map_err(|_| anyhow::anyhow!("could not pick {N} ports"))
}

/// Waits until one echo exchange works through `entry` (the forwarder is ready).
async fn wait_ready(entry: SocketAddr, proc: &mut Proc) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        proc.check_alive()?;
        match tokio::time::timeout(Duration::from_secs(1), one_exchange(entry)).await {
            Ok(Ok(_)) => return Ok(()),
            _ if Instant::now() > until => bail!("{} never became ready", proc.name),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// `target/release/ferry-relay`, built first if missing.
fn ferry_relay_binary() -> Result<PathBuf> {
    let bin = target_dir().join("release/ferry-relay");
    if !bin.exists() {
        println!("target/release/ferry-relay is missing: running `cargo build --release -p ferry --bin ferry-relay`");
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "ferry", "--bin", "ferry-relay"])
            .current_dir(workspace_root())
            .status()?;
        if !status.success() || !bin.exists() {
            bail!("building ferry-relay failed; run `cargo build --release` first");
        }
    }
    Ok(bin)
}

/// `socat`, installed with apt-get if missing.
fn socat_binary() -> Result<PathBuf> {
    let found = |name: &str| {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.exists()))
    };
    if let Some(p) = found("socat") {
        return Ok(p);
    }
    println!("socat is missing: running `apt-get install -y socat`");
    let status =
        std::process::Command::new("apt-get").args(["install", "-y", "socat"]).stdout(Stdio::null()).status()?;
    if !status.success() {
        bail!("could not install socat; install it with your package manager");
    }
    found("socat").context("socat still not found after installing it")
}

/// `target/bench-tools/bin/rathole`, installed with `cargo install` if missing.
fn rathole_binary() -> Result<PathBuf> {
    let root = target_dir().join("bench-tools");
    let bin = root.join("bin/rathole");
    if bin.exists() {
        return Ok(bin);
    }
    // Not `--locked`: rathole 0.5.0's lock file pins a `time` release that no longer
    // compiles on current Rust. Only the features the benchmark needs.
    println!(
        "rathole is missing: running `cargo install --root {} rathole --no-default-features --features server,client,noise` (a few minutes)",
        root.display()
    );
    let status = std::process::Command::new(env!("CARGO"))
        .arg("install")
        .arg("--root")
        .arg(&root)
        .args(["rathole", "--no-default-features", "--features", "server,client,noise"])
        .status()?;
    if !status.success() || !bin.exists() {
        bail!("installing rathole failed");
    }
    Ok(bin)
}

// ---------------------------------------------------------------------------------
// Starting each forwarder.

/// A running forwarder: where clients connect, and the relay process to watch.
struct Running {
    entry: SocketAddr,
    relay: Option<Proc>,
    /// Other processes (rathole's client side).
    helpers: Vec<Proc>,
    ferry: Option<FerrySide>,
    /// Sockets per session in the busiest process (relay, rathole client, or this
    /// harness holding the host side): 0 for ferry over QUIC, whose relay multiplexes
    /// sessions on UDP.
    fd_per_session: usize,
    _dir: Option<tempfile::TempDir>,
}

/// The in-process parts of ferry: host, a client and its local listener.
struct FerrySide {
    host: Host,
    client: Arc<Client>,
    ticket: Ticket,
    transport: Transport,
    connect: JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(f) = self.ferry.take() {
            f.connect.abort();
            f.client.close().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), f.host.shutdown()).await;
        }
        self.helpers.clear();
        self.relay = None;
    }
}

async fn start(kind: Kind, service: SocketAddr) -> Result<Running> {
    match kind {
        Kind::Direct => {
            Ok(Running { entry: service, relay: None, helpers: Vec::new(), ferry: None, fd_per_session: 2, _dir: None })
        }
        Kind::FerryQuic => start_ferry(service, Transport::Quic).await,
        Kind::FerryTcp => start_ferry(service, Transport::Tcp).await,
        Kind::Socat => start_socat(service).await,
        Kind::RatholeNoise => start_rathole(service).await,
    }
}

/// A `ferry-relay` process (QUIC and TCP on one port), an in-process host and client
/// both on `transport`, and a local listener like `ferry connect`.
async fn start_ferry(service: SocketAddr, transport: Transport) -> Result<Running> {
    let bin = ferry_relay_binary()?;
    let dir = tempfile::tempdir()?;
    let log = std::fs::File::create(dir.path().join("relay.log"))?;
    // Limits high enough that the harness measures the relay, not its abuse protection
    // (10,000 sessions through one host; a new TCP connection per session from one IP).
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "[admin]\nenabled = false\n[limits]\nmax_sessions_per_host = 100000\nmax_pending_handshakes = 65536\n\
         connections_per_minute_per_source = 0\nbuffer_budget = 68719476736\n",
    )?;
    let mut child = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--log", "warn", "--state-dir"])
        .arg(dir.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("relay stdout")?;
    let mut relay = Proc { child, name: "ferry-relay", group: false };
    let mut lines = BufReader::new(stdout).lines();
    let (mut addr, mut pin) = (None, None);
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix("ferry relay listening on ") {
                addr = rest.split_whitespace().next().map(str::to_owned);
            } else if let Some(rest) = line.strip_prefix("certificate pin: ") {
                pin = Some(rest.trim().to_owned());
            }
            if addr.is_some() && pin.is_some() {
                break;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .context("ferry-relay did not print its address and pin")??;
    relay.check_alive()?;
    let (Some(addr), Some(pin)) = (addr, pin) else {
        bail!("ferry-relay exited before printing its address and pin");
    };
    // Keep draining stdout so the relay never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let trust: RelayTrust = pin.parse().context("parsing the relay's pin")?;
    let relays = vec![RelayAddr { addr, trust }];

    let identity = HostIdentity::generate()?;
    let mut config = HostConfig::new(identity.clone(), relays.clone(), service.to_string());
    // Room for the 10,000 idle sessions (the default suits a media server, not this).
    config.options.max_incoming_streams = 16_384;
    config.transport = transport;
    let host = Host::spawn(config);
    wait_registered(&host, 1).await?;
    let ticket = Ticket { host: identity.key.public(), secret: identity.secret.clone(), relays };
    let client = Arc::new(new_client(&ticket, transport)?);
    client.warm_up().await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let entry = listener.local_addr()?;
    let connect = tokio::spawn(serve_connect(client.clone(), listener));
    Ok(Running {
        entry,
        relay: Some(relay),
        helpers: Vec::new(),
        ferry: Some(FerrySide { host, client, ticket, transport, connect }),
        // Over TCP the host opens a TLS data connection per session, and connects to
        // the service, both from this process.
        fd_per_session: if transport == Transport::Quic { 0 } else { 3 },
        _dir: Some(dir),
    })
}

fn new_client(ticket: &Ticket, transport: Transport) -> Result<Client> {
    Ok(Client::new(ticket.clone(), StaticKey::generate()?, HopOptions::client()).with_transport(transport))
}

async fn start_socat(service: SocketAddr) -> Result<Running> {
    let bin = socat_binary()?;
    let [port] = free_ports()?;
    let child = Command::new(bin)
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay,backlog=1024"))
        .arg(format!("TCP:{service},nodelay"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .context("starting socat")?;
    let mut relay = Proc { child, name: "socat", group: true };
    let entry: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_ready(entry, &mut relay).await?;
    Ok(Running { entry, relay: Some(relay), helpers: Vec::new(), ferry: None, fd_per_session: 2, _dir: None })
}

/// `rathole --genkey`: (private, public), base64.
async fn rathole_keys(bin: &Path) -> Result<(String, String)> {
    let out = Command::new(bin).arg("--genkey").output().await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let (mut private, mut public) = (None, None);
    while let Some(line) = lines.next() {
        if line.to_ascii_lowercase().starts_with("private key") {
            private = lines.next().map(str::to_owned);
        } else if line.to_ascii_lowercase().starts_with("public key") {
            public = lines.next().map(str::to_owned);
        }
    }
    match (private, public) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!("cannot read `rathole --genkey` output: {text}"),
    }
}

async fn start_rathole(service: SocketAddr) -> Result<Running> {
    let bin = rathole_binary()?;
    let dir = tempfile::tempdir()?;
    let (private, public) = rathole_keys(&bin).await?;
    let [control, visitor] = free_ports()?;
    let token = "ferry-bench-token";
    let server_toml = format!(
        "[server]\nbind_addr = \"127.0.0.1:{control}\"\n\n\
         [server.transport]\ntype = \"noise\"\n\n\
         [server.transport.noise]\nlocal_private_key = \"{private}\"\n\n\
         [server.services.bench]\ntoken = \"{token}\"\nbind_addr = \"127.0.0.1:{visitor}\"\nnodelay = true\n"
    );
    let client_toml = format!(
        "[client]\nremote_addr = \"127.0.0.1:{control}\"\n\n\
         [client.transport]\ntype = \"noise\"\n\n\
         [client.transport.noise]\nremote_public_key = \"{public}\"\n\n\
         [client.services.bench]\ntoken = \"{token}\"\nlocal_addr = \"{service}\"\nnodelay = true\n"
    );
    let server_path = dir.path().join("server.toml");
    let client_path = dir.path().join("client.toml");
    std::fs::write(&server_path, server_toml)?;
    std::fs::write(&client_path, client_toml)?;
    let spawn = |path: &Path, name: &'static str| -> Result<Proc> {
        let log = std::fs::File::create(dir.path().join(format!("{name}.log")))?;
        let child = Command::new(&bin)
            .arg(path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc { child, name, group: false })
    };
    let mut server = spawn(&server_path, "rathole server")?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = spawn(&client_path, "rathole client")?;
    let entry: SocketAddr = ([127, 0, 0, 1], visitor).into();
    wait_ready(entry, &mut server).await?;
    Ok(Running { entry, relay: Some(server), helpers: vec![client], ferry: None, fd_per_session: 2, _dir: Some(dir) })
}

// ---------------------------------------------------------------------------------
// One row.

/// Opens idle sessions until `idle` holds `total`. ferry opens them with the client
/// library directly (spread over clients: a relay allows 1,024 sessions per client
/// connection), each bridged to an in-memory pipe that carries one byte each way.
async fn open_idle(run: &Running, idle: &mut IdleSessions, total: usize) -> Result<()> {
    let Some(ferry) = &run.ferry else {
        return open_idle_tcp(run.entry, idle, total).await;
    };
    const PER_CLIENT: usize = 1_000;
    while idle.len() < total {
        if idle.pipes.len() >= idle.clients.len() * PER_CLIENT {
            let client = Arc::new(new_client(&ferry.ticket, ferry.transport)?);
            client.warm_up().await?;
            idle.clients.push(client);
        }
        let client = idle.clients.last().context("a client")?.clone();
        let room = (idle.clients.len() * PER_CLIENT - idle.pipes.len()).min(total - idle.len());
        let mut tasks = tokio::task::JoinSet::new();
        let mut want = room;
        while want > 0 || !tasks.is_empty() {
            while want > 0 && tasks.len() < 32 {
                let client = client.clone();
                tasks.spawn(tokio::time::timeout(Duration::from_secs(10), async move {
                    let session = client.open_session().await?;
                    let (mut near, bridge) = session.spawn_pipe(4096);
                    near.write_all(&[MODE_ECHO, 0x11]).await?;
                    let mut byte = [0u8; 1];
                    near.read_exact(&mut byte).await?;
                    anyhow::Ok((near, bridge.abort_handle()))
                }));
                want -= 1;
            }
            if let Some(done) = tasks.join_next().await {
                let (pipe, bridge) = done?.context("one session took over 10 s")??;
                idle.pipes.push(pipe);
                idle.bridges.push(bridge);
            }
        }
    }
    Ok(())
}

/// Measures one row once; idle-session memory only when `memory` is set.
async fn measure(kind: Kind, service: SocketAddr, sizes: &Sizes, opts: &Opts, memory: bool) -> Row {
    let mut row =
        Row { label: kind.label().into(), rss: vec![Cell::NotApplicable; sizes.idle.len() + 1], ..Default::default() };
    if !opts.only.is_empty() && !opts.only.iter().any(|o| o == kind.name()) {
        row.note = Some("skipped (--only)".into());
        return row;
    }
    let started = Instant::now();
    println!("{}: starting{}", kind.label(), if memory { "" } else { " (memory: first round only)" });
    let mut run = match start(kind, service).await {
        Ok(run) => run,
        Err(e) => {
            eprintln!("  {}: could not start: {e:#}", kind.name());
            row.note = Some(format!("could not start: {e:#}"));
            return row;
        }
    };
    let name = kind.name();
    let relay_pid = run.relay.as_ref().and_then(|p| p.pid().ok());
    let ticks = clock_ticks();

    // Memory: right after start (host registered, no session), then with idle sessions.
    if let Some(pid) = relay_pid.filter(|_| memory) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        row.rss[0] = Cell::of(memory_mib(pid, kind == Kind::Socat), "rss", name);
        let mut idle = IdleSessions::default();
        for (i, &count) in sizes.idle.iter().enumerate() {
            if kind == Kind::Socat && count > 1_000 && !opts.socat_10k {
                println!("  {name}: skipping {count} idle sessions (one process each; --socat-10k to run)");
                continue;
            }
            // A TCP forwarder holds several sockets per session in one process (rathole's
            // server and client two each); stay under the open-file limit.
            let limit = (nofile_hard().saturating_sub(500) / run.fd_per_session.max(1)) / 500 * 500;
            let count = if run.fd_per_session > 0 && count > limit {
                println!(
                    "  {name}: open-file limit {}: opening {limit} idle sessions instead of {count}",
                    nofile_hard()
                );
                limit
            } else {
                count
            };
            let wanted = sizes.idle[i];
            println!("  {name}: opening {count} idle sessions");
            let opened = tokio::time::timeout(sizes.deadline * 2, open_idle(&run, &mut idle, count))
                .await
                .context("timed out")
                .and_then(|r| r);
            let mib = match opened {
                Ok(()) => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    memory_mib(pid, kind == Kind::Socat)
                }
                Err(e) => Err(e),
            };
            row.rss[i + 1] = match Cell::of(mib, &format!("{count} idle sessions"), name) {
                Cell::Value(v) if count < wanted => Cell::Fewer(v, count),
                cell => cell,
            };
            if matches!(row.rss[i + 1], Cell::Failed) {
                break;
            }
        }
        println!("  {name}: closing {} idle sessions", idle.len());
        idle.close().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some(ferry) = &run.ferry {
            // If the host lost its relay meanwhile, wait (bounded) until it is back.
            let mut status = ferry.host.status();
            let back = status.wait_for(|s| s.registered.iter().all(|r| *r));
            let _ = tokio::time::timeout(Duration::from_secs(15), back).await;
        }
    }

    // Throughput; the relay's CPU time over all four transfers gives CPU s per GB.
    println!("  {name}: throughput");
    let cpu_before = relay_pid.map(|p| cpu_seconds(p, ticks));
    let mut moved = 0u64;
    let single = sizes.single;
    let (n, each) = (sizes.parallel, sizes.per_parallel);
    for (cell, dir, sessions, bytes) in [
        (&mut row.up1, Direction::Up, 1, single),
        (&mut row.down1, Direction::Down, 1, single),
        (&mut row.up8, Direction::Up, n, each),
        (&mut row.down8, Direction::Down, n, each),
    ] {
        *cell = Cell::of(throughput(run.entry, dir, sessions, bytes, sizes.deadline).await, "throughput", name);
        if matches!(cell, Cell::Value(_)) {
            moved += sessions as u64 * bytes;
        }
    }
    if let (Some(pid), Some(before)) = (relay_pid, cpu_before) {
        // socat's per-connection processes are counted once reaped (cutime/cstime).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let used = cpu_seconds(pid, ticks) - before;
        row.cpu_per_gb = if moved > 0 { Cell::Value(used / (moved as f64 / 1e9)) } else { Cell::Failed };
    }

    println!("  {name}: latency");
    match latency(run.entry, sizes.warm_up, sizes.round_trips, sizes.deadline).await {
        Ok((p50, p99)) => {
            row.p50 = Cell::Value(p50);
            row.p99 = Cell::Value(p99);
        }
        Err(e) => {
            eprintln!("  {name}: latency failed: {e:#}");
            row.p50 = Cell::Failed;
            row.p99 = Cell::Failed;
        }
    }

    println!("  {name}: session setup");
    row.setups =
        Cell::of(setup_rate(run.entry, sizes.setups, sizes.in_flight, sizes.deadline).await, "session setup", name);

    if let Some(relay) = run.relay.as_mut() {
        if let Err(e) = relay.check_alive() {
            row.note = Some(format!("{e:#}"));
        }
    }
    run.stop().await;
    println!("  {name}: done in {:.1} s", started.elapsed().as_secs_f64());
    row
}

// ---------------------------------------------------------------------------------
// The table.

fn print_table(rows: &[Row], sizes: &Sizes) {
    let mut header = vec![
        "".to_string(),
        "up 1 (Gbit/s)".into(),
        "down 1".into(),
        format!("up {}", sizes.parallel),
        format!("down {}", sizes.parallel),
        "RTT p50 (µs)".into(),
        "RTT p99".into(),
        "setups/s".into(),
        "RSS idle (MiB)".into(),
    ];
    for count in &sizes.idle {
        header.push(format!("RSS {}k", count / 1000));
    }
    header.push("CPU s/GB".into());
    header.push("÷ rathole-noise, same column order".into());

    let cells = |r: &Row| -> Vec<(Cell, usize, bool)> {
        // (cell, decimals, higher is better)
        let mut v = vec![
            (r.up1.clone(), 2, true),
            (r.down1.clone(), 2, true),
            (r.up8.clone(), 2, true),
            (r.down8.clone(), 2, true),
            (r.p50.clone(), 0, false),
            (r.p99.clone(), 0, false),
            (r.setups.clone(), 0, true),
        ];
        for c in &r.rss {
            v.push((c.clone(), 1, false));
        }
        v.push((r.cpu_per_gb.clone(), 2, false));
        v
    };
    let reference = rows.iter().find(|r| r.label == Kind::RatholeNoise.label()).map(cells);
    let mut table: Vec<Vec<String>> = vec![header];
    for row in rows {
        let mine = cells(row);
        let mut line = vec![row.label.clone()];
        line.extend(mine.iter().map(|(c, d, _)| c.show(*d)));
        let ratios: Vec<String> = match &reference {
            Some(reference) if row.label != Kind::RatholeNoise.label() => mine
                .iter()
                .zip(reference)
                .map(|((a, _, _), (b, _, _))| match (a.value(), b.value()) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                    _ => "-".into(),
                })
                .collect(),
            _ => vec![],
        };
        let last = match (&row.note, ratios.is_empty()) {
            (Some(note), _) => note.clone(),
            (None, true) => "1 (reference)".into(),
            (None, false) => ratios.join(" "),
        };
        line.push(last);
        table.push(line);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| table.iter().map(|l| l.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0))
        .collect();
    for (n, line) in table.iter().enumerate() {
        let padded: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i] - c.chars().count();
                if i == 0 || i + 1 == line.len() {
                    format!("{c}{}", " ".repeat(pad))
                } else {
                    format!("{}{c}", " ".repeat(pad))
                }
            })
            .collect();
        println!("| {} |", padded.join(" | "));
        if n == 0 {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    if i == 0 || i + 1 == widths.len() {
                        "-".repeat(*w)
                    } else {
                        format!("{}:", "-".repeat(w.saturating_sub(1)))
                    }
                })
                .collect();
            println!("| {} |", rule.join(" | "));
        }
    }
}

/// `--serve-service`: run only the service (in its own process, so its sockets do not
/// count against this process's open-file limit); print its address; exit when stdin
/// closes (the harness ended).
fn serve_service_process() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let (addr, _task) = service().await?;
        println!("service {addr}");
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while stdin.read(&mut buf).await.unwrap_or(0) > 0 {}
        anyhow::Ok(())
    })?;
    runtime.shutdown_background();
    Ok(())
}

/// Starts this program in `--serve-service` mode and returns its address.
async fn start_service() -> Result<(SocketAddr, Proc, tokio::process::ChildStdin)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve-service")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the service process")?;
    let stdin = child.stdin.take().context("service stdin")?;
    let stdout = child.stdout.take().context("service stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("the service did not start")??
        .context("the service exited")?;
    let addr = line.strip_prefix("service ").context("unexpected service output")?.parse()?;
    let proc = Proc { child, name: "service", group: false };
    Ok((addr, proc, stdin))
}

/// The hard open-file limit of this process.
fn nofile_hard() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(4).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--serve-service") {
        return serve_service_process();
    }
    let opts = parse_args();
    let sizes = Sizes::new(opts.quick);
    let nofile = raise_nofile();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let started = Instant::now();
    println!(
        "ferry end-to-end benchmark ({} mode), loopback only, {} CPUs, open-file limit {nofile}",
        if opts.quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "transfers: 1 session x {} MiB, {} sessions x {} MiB, each way; {} round trips; {} session setups ({} in flight); idle sessions {:?}; {} round(s), interleaved",
        sizes.single / MIB,
        sizes.parallel,
        sizes.per_parallel / MIB,
        sizes.round_trips,
        sizes.setups,
        sizes.in_flight,
        sizes.idle,
        opts.rounds,
    );
    let rounds = runtime.block_on(async {
        let (service, _service_proc, _service_stdin) = start_service().await?;
        let kinds = [Kind::Direct, Kind::FerryQuic, Kind::FerryTcp, Kind::Socat, Kind::RatholeNoise];
        let mut rounds: Vec<Vec<Row>> = vec![Vec::new(); kinds.len()];
        for round in 0..opts.rounds {
            if opts.rounds > 1 {
                println!("round {} of {}", round + 1, opts.rounds);
            }
            for (kind, results) in kinds.iter().zip(&mut rounds) {
                results.push(measure(*kind, service, &sizes, &opts, round == 0).await);
            }
        }
        anyhow::Ok(rounds)
    })?;
    let rows: Vec<Row> = rounds.iter().cloned().map(Row::median).collect();
    println!();
    print_table(&rows, &sizes);
    if opts.rounds > 1 {
        println!("\nmedians of {} rounds; the spread (lowest–highest) per row:", opts.rounds);
        for (row, results) in rows.iter().zip(&rounds) {
            let spread = Row::spread(results);
            if !spread.is_empty() {
                println!("  {}: {spread}", row.label);
            }
        }
    }
    println!(
        "\nratios (last column) are this row / rathole-noise, per column in order; total {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // Background tasks (idle bridges, drained pipes) end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}
