//! One row, once: start the forwarder, read the relay's memory from `/proc` cold and
//! with idle sessions open (first round only), run the transfers while reading its CPU
//! time, then latency and session setup, and stop it. The order and the pauses are part
//! of what the numbers mean (memory is read after the relay settles; CPU after socat's
//! children are reaped), so they stay as they are.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::flags::{Opts, Sizes};
use crate::forwarders::{Kind, start};
use crate::load::{Direction, IdleSessions, latency, open_idle, setup_rate, throughput};
use crate::report::{Cell, Row};
use crate::support::procfs::{clock_ticks, cpu_seconds, memory_mib, nofile_hard};

/// Measures one row once; idle-session memory only when `memory` is set.
pub async fn measure(kind: Kind, service: SocketAddr, sizes: &Sizes, opts: &Opts, memory: bool) -> Row {
    let mut row =
        Row { label: kind.label().into(), rss: vec![Cell::NotApplicable; sizes.idle.len() + 1], ..Default::default() };
    if !opts.wants(kind) {
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
    row.setups_serial = Cell::of(
        setup_rate(run.entry, sizes.setups_serial, 1, sizes.deadline).await,
        "session setup one at a time",
        name,
    );

    if let Some(relay) = run.relay.as_mut() {
        if let Err(e) = relay.check_alive() {
            row.note = Some(format!("{e:#}"));
        }
    }
    run.stop().await;
    println!("  {name}: done in {:.1} s", started.elapsed().as_secs_f64());
    row
}
