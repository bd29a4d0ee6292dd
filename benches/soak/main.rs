//! Soak harness: opens and closes many sessions through the real `ferry-relay` process
//! and checks that its memory and open files come back down afterwards.
//!
//! `cargo bench --bench soak [-- --sessions N --wave W --clients C --transport quic|tcp
//! --payload BYTES --max-minutes M --host-streams S]`
//!
//! The relay runs as its own process (`target/release/ferry-relay`, built first if
//! missing or older than its sources; `support::relay`) on loopback with a temporary state directory, the
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
//! See `docs/soak.md` for a run and how to read it; `-- --help` lists every flag.
//!
//! # Layout
//! - this file: the flags, the run (cold, warm-up, waves, after) and the report.
//! - `wave`: one session, one wave, the clients, settling, the relay's samples.
//! - `support` (shared with e2e): the relay process, `/proc` readers, the binaries.

#[path = "../support/mod.rs"]
mod support;
mod wave;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use ferry::local::{echo_service, wait_registered};
use ferry_client::{Host, HostConfig, HostIdentity, Transport};
use ferry_proto::Ticket;

use crate::support::relay::{RelayLog, RelayProcess};
use crate::support::tools::ferry_relay_binary;
use crate::wave::{Sample, close_clients, connect_clients, settle, wave};

/// "After" must be within this fraction of "before".
const TOLERANCE: f64 = 0.10;

/// Opens and closes many sessions through the real ferry-relay process and checks that
/// its memory and open files come back down afterwards.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "soak",
    bin_name = "cargo bench --bench soak --",
    after_help = "See docs/soak.md for a run and how to read it."
)]
struct Flags {
    /// Sessions in the measured waves (a warm-up wave comes first and is not counted).
    #[arg(long, value_name = "N", default_value_t = 100_000,
          value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..))]
    sessions: u64,
    /// Sessions open at once: each wave opens this many, echoes on each, closes them all.
    #[arg(long, value_name = "W", default_value_t = 2_000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    wave: usize,
    /// Client connections carrying a wave [default: one per 500 sessions of a wave; 0
    /// means the default].
    #[arg(long, value_name = "C")]
    clients: Option<usize>,
    /// The host's incoming stream limit [default: wave + 64, at least 1024; 0 means the
    /// default].
    #[arg(long, value_name = "S")]
    host_streams: Option<u32>,
    /// How host and clients reach the relay.
    #[arg(long, value_enum, default_value_t = TransportFlag::Quic)]
    transport: TransportFlag,
    /// Bytes echoed per session (1..=1048576).
    #[arg(long, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1 << 20))]
    payload: usize,
    /// Stop after this many minutes and report how far it got (clamped to 0.1..=1440).
    #[arg(long, value_name = "M", default_value_t = 15.0)]
    max_minutes: f64,
    /// Passed by `cargo bench` to every `harness = false` target; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// `--transport`'s values, the ones `ferry_client::Transport` parses.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TransportFlag {
    Quic,
    Tcp,
    Auto,
}

impl From<TransportFlag> for Transport {
    fn from(flag: TransportFlag) -> Self {
        match flag {
            TransportFlag::Quic => Transport::Quic,
            TransportFlag::Tcp => Transport::Tcp,
            TransportFlag::Auto => Transport::Auto,
        }
    }
}

/// The run's settings, defaults filled in.
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

impl From<Flags> for Opts {
    fn from(flags: Flags) -> Self {
        Opts {
            sessions: flags.sessions,
            wave: flags.wave,
            // At most 500 sessions per client connection: well under the 1024-stream limit.
            clients: flags.clients.filter(|&c| c > 0).unwrap_or(flags.wave.div_ceil(500).max(1)),
            payload: flags.payload,
            transport: flags.transport.into(),
            max_time: Duration::from_secs_f64(flags.max_minutes.clamp(0.1, 24.0 * 60.0) * 60.0),
            // One wave plus a margin: ferry_link::credit keeps that many openable right
            // after the previous wave closed (quinn returns stream credit in batches).
            host_streams: flags
                .host_streams
                .filter(|&s| s > 0)
                .unwrap_or(u32::try_from(flags.wave + 64).unwrap_or(u32::MAX).max(1024)),
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
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
    let opts = Opts::from(Flags::parse());
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

    let mut relay = RelayProcess::start(&bin, RelayLog::Echo(20)).await?;
    let (service, _service_task) = echo_service().await?;
    let identity = HostIdentity::generate()?;
    let mut host_config = HostConfig::new(identity.clone(), relay.relays.clone(), service.to_string());
    // The relay opens one stream to the host per session: room for a whole wave.
    host_config.options.max_incoming_streams = opts.host_streams;
    host_config.transport = opts.transport;
    let host = Host::spawn(host_config);
    wait_registered(&host, 1).await?;
    let ticket = Ticket::new(identity.key.public(), identity.secret.clone(), relay.relays.clone());

    // Cold: host registered, nothing else yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cold = Sample::of(relay.pid)?;
    println!("relay pid {}: cold: RSS {:.1} MiB, {} fds", relay.pid, mib(cold.rss_kib), cold.fds);

    // Warm-up: one wave at full concurrency, then the same idle state as at the end (no
    // client connected, no session, numbers settled). quinn keeps each connection's
    // per-stream receive state for reuse, as many as the connection ever had open at
    // once (quinn PR #1999), so the host's connection keeps a wave's worth: the relay's
    // idle footprint after its first burst is its baseline from then on.
    let clients = connect_clients(&opts, &ticket).await?;
    // Ids above any the measured waves use (they only tag the echoed bytes).
    let r = wave(relay.pid, &clients, u64::MAX / 2, opts.wave, opts.payload, deadline).await;
    if r.failed > 0 {
        bail!(
            "the warm-up wave failed: {} of {} sessions ({})",
            r.failed,
            opts.wave,
            r.first_error.unwrap_or_default()
        );
    }
    close_clients(clients).await;
    let (before, _) = settle(relay.pid).await?;
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
        if let Err(e) = relay.proc.check_alive() {
            stopped_early = Some(format!("{e:#}"));
            break;
        }
        let between = Sample::of(relay.pid)?;
        let count = (opts.sessions - (n - 1) * opts.wave as u64).min(opts.wave as u64) as usize;
        let first = next_id.fetch_add(count as u64, Ordering::Relaxed);
        let r = wave(relay.pid, &clients, first, count, opts.payload, deadline).await;
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
    relay.proc.check_alive()?;
    let (after, settled_in) = settle(relay.pid).await?;
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
