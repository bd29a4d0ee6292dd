//! End-to-end benchmark harness: ferry against a direct connection, a plain `socat`
//! forwarder and rathole with its Noise transport, all on loopback, in one run.
//!
//! `cargo build --release && cargo bench --bench e2e [-- --quick] [--rounds N]`
//! (`-- --help` lists every flag).
//!
//! Every row is one call to `measure::measure` per round with a `forwarders::Kind`;
//! each kind only says how to start its forwarder and where clients connect, so the
//! load loops are the same for all. Rounds are interleaved (every row once, then every
//! row again) and each cell shows the median over rounds, so a noisy neighbour on a
//! small machine shifts all rows alike instead of one; the spread of every row is printed
//! under the table. Idle-session memory is measured in the first round only (it is
//! steady, and slow to measure).
//!
//! Relays run as separate processes (the real `ferry-relay` binary, `socat`, the
//! `rathole` server) so their memory and CPU are read from `/proc`. The ferry host and
//! client run in this process, as the library `ferry host run` / `ferry connect` use.
//! See `docs/benchmarks.md` for what each column means.
//!
//! # Layout
//! - `flags`: the command line and the sizes it selects.
//! - `forwarders`: the rows and how each forwarder starts.
//! - `load`: the load loops (transfers, round trips, setups, idle sessions).
//! - `measure`: one row once, with the relay's memory and CPU from `/proc`.
//! - `report`: cells, medians, spreads and the table.
//! - this file: the service process and the rounds.
//! - `support` (shared with the soak): the service, `/proc` readers, processes, the
//!   relay process and the binaries.

mod flags;
mod forwarders;
mod load;
mod measure;
mod report;
#[path = "../support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::flags::{Opts, Sizes};
use crate::forwarders::Kind;
use crate::report::{Row, print_table};
use crate::support::process::Proc;
use crate::support::procfs::raise_nofile;
use crate::support::service::service;

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
    Ok((addr, Proc::new(child, "service"), stdin))
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    if opts.serve_service {
        return serve_service_process();
    }
    let rounds_wanted = opts.rounds();
    let sizes = Sizes::new(opts.quick);
    let nofile = raise_nofile();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let started = Instant::now();
    println!(
        "ferry end-to-end benchmark ({} mode), loopback only, {} CPUs, open-file limit {nofile}",
        if opts.quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!("{}", sizes.describe(rounds_wanted));
    let rounds = runtime.block_on(async {
        let (service, _service_proc, _service_stdin) = start_service().await?;
        let mut rounds: Vec<Vec<Row>> = vec![Vec::new(); Kind::ALL.len()];
        for round in 0..rounds_wanted {
            if rounds_wanted > 1 {
                println!("round {} of {}", round + 1, rounds_wanted);
            }
            for (kind, results) in Kind::ALL.iter().zip(&mut rounds) {
                results.push(measure::measure(*kind, service, &sizes, &opts, round == 0).await);
            }
        }
        anyhow::Ok(rounds)
    })?;
    let rows: Vec<Row> = rounds.iter().cloned().map(Row::median).collect();
    println!();
    print_table(&rows, &sizes);
    if rounds_wanted > 1 {
        println!("\nmedians of {rounds_wanted} rounds; the spread (lowest–highest) per row:");
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
