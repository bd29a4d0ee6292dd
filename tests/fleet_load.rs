//! A fleet under load (issue 16, what must be shown 6): three `ferry-relay` processes and a
//! real `redis-server` on loopback, many in-process hosts spread over the nodes, and
//! sessions from fresh clients, each entering the fleet at a random node, every byte checked.
//! Reports sessions per second and the Redis operations per session (Redis's own
//! `INFO commandstats`, before and after), and checks that only cross-node sessions asked
//! the directory, once each.
//!
//! The full size (1,000 hosts, 3,000 sessions) takes longer than the suite should, so it is
//! `#[ignore]`d and run by name (`docs/fleet.md`, "Measured"); a tenth of it runs in the
//! normal suite.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::fleet::{Fleet, Redis, Tuning};
use common::{echo_session, pattern, ticket};
use ferry::local::{echo_service, wait_registered};
use ferry_client::{Client, HopOptions, Host, HostConfig, HostIdentity, Transport};
use ferry_proto::StaticKey;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How much load, and how long it may take.
struct Load {
    hosts: usize,
    sessions: usize,
    /// Sessions running at once.
    in_flight: usize,
    /// Bytes each way per session.
    payload: usize,
    /// The whole session phase must end within this.
    limit: Duration,
}

/// Every host on a tier with a quota, so the nodes flush usage to Redis as in production.
const METERED: &str = "[access]\ndefault_tier = \"metered\"\n[[tier]]\nname = \"metered\"\nrate = \"unlimited\"\nquota = \"100 GiB/month\"\n";

/// Every loopback connection comes from 127.0.0.1: the per-source limits would take the
/// whole test for one flood.
const ONE_SOURCE: &str =
    "max_connections_per_source = 100000\nmax_pending_handshakes = 8192\nmax_pending_handshakes_per_source = 8192\n";

/// Calls per command since Redis started (`INFO commandstats`), without the test's own.
async fn command_calls(redis: &Redis) -> Result<BTreeMap<String, u64>> {
    let info = redis.cli(&["INFO", "commandstats"]).await?;
    let mut calls = BTreeMap::new();
    for line in info.lines() {
        let Some((name, stats)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
        if name == "info" || name.starts_with("command") {
            continue;
        }
        let count = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .context("a commandstats line without calls=")?
            .parse()?;
        calls.insert(name.to_owned(), count);
    }
    Ok(calls)
}

/// A tiny deterministic generator (splitmix64): which host, which node; the seed is printed.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

async fn carry(mode: &str, load: Load) -> Result<()> {
    let tuning = Tuning { mode, sections: METERED, presence_ttl_secs: 10, limits: ONE_SOURCE, ..Tuning::default() };
    let fleet = Fleet::start_tuned(&tuning).await?;
    let (service, _echo) = echo_service().await?;

    // The hosts, round robin over the nodes.
    let registering = Instant::now();
    let mut hosts = Vec::with_capacity(load.hosts);
    for i in 0..load.hosts {
        let identity = HostIdentity::generate()?;
        let mut config = HostConfig::new(identity.clone(), vec![fleet.relay(1 + i % 3)], service.to_string());
        config.transport = Transport::Quic;
        hosts.push((Host::spawn(config), identity, 1 + i % 3));
    }
    for (host, _, _) in &hosts {
        wait_registered(host, 1).await?;
    }
    let started = Instant::now();
    loop {
        let claimed: usize =
            fleet.redis.cli(&["EVAL", "return #redis.call('KEYS', ARGV[1])", "0", "ferry:host:*"]).await?.parse()?;
        if claimed == load.hosts {
            break;
        }
        ensure!(started.elapsed() < Duration::from_secs(20), "{claimed} of {} hosts in the directory", load.hosts);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("{mode}: {} hosts registered and claimed in {:?}", load.hosts, registering.elapsed());

    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
    eprintln!("{mode}: dice seed {seed}");
    let mut dice = Dice(seed);
    let before = command_calls(&fleet.redis).await?;
    let gate = Arc::new(Semaphore::new(load.in_flight));
    let mut running = JoinSet::new();
    let mut cross_node = 0u64;
    let mut done = 0usize;
    let began = Instant::now();
    for s in 0..load.sessions {
        let (_, identity, home) = &hosts[dice.below(hosts.len())];
        let entry = 1 + dice.below(3);
        cross_node += u64::from(entry != *home);
        let permit = gate.clone().acquire_owned().await?;
        let client =
            Client::new(ticket(identity, vec![fleet.relay(entry)]), StaticKey::generate()?, HopOptions::client())
                .with_transport(Transport::Quic);
        let payload = load.payload;
        running.spawn(async move {
            let _permit = permit;
            let data = pattern(s as u64, payload);
            let outcome = tokio::time::timeout(Duration::from_secs(30), echo_session(&client, &data)).await;
            client.close().await;
            match outcome {
                Ok(Ok(back)) if back == data => Ok(()),
                Ok(Ok(back)) => bail!("session {s}: {} of {payload} bytes came back intact", back.len()),
                Ok(Err(e)) => Err(e.context(format!("session {s} (entering at node {entry})"))),
                Err(_) => bail!("session {s} hung for 30 s"),
            }
        });
        while let Some(finished) = running.try_join_next() {
            finished??;
            done += 1;
        }
        ensure!(began.elapsed() < load.limit, "{done} of {} sessions in {:?}", load.sessions, load.limit);
    }
    while let Some(finished) = tokio::time::timeout(load.limit.saturating_sub(began.elapsed()), running.join_next())
        .await
        .with_context(|| format!("{done} of {} sessions within {:?}", load.sessions, load.limit))?
    {
        finished??;
        done += 1;
    }
    let took = began.elapsed();
    let after = command_calls(&fleet.redis).await?;
    ensure!(done == load.sessions, "{done} of {} sessions", load.sessions);

    let sessions = load.sessions as f64;
    let mut total = 0;
    let mut lines = Vec::new();
    for (name, calls) in &after {
        let delta = calls - before.get(name).copied().unwrap_or(0);
        if delta > 0 {
            total += delta;
            lines.push(format!("{name} {delta} ({:.3}/session)", delta as f64 / sessions));
        }
    }
    eprintln!(
        "{mode}: {} sessions ({cross_node} cross-node) of {} B each way over {} hosts in {took:?}: {:.0} sessions/s; \
         Redis: {total} commands, {:.2} per session, while running: {}",
        load.sessions,
        load.payload,
        load.hosts,
        sessions / took.as_secs_f64(),
        total as f64 / sessions,
        lines.join(", ")
    );
    // A session to a host at its entry node asks Redis nothing; a cross-node one looks
    // the host up once (fresh clients: the redirected ones do not come back).
    let lookups =
        after.get("zrevrangebyscore").copied().unwrap_or(0) - before.get("zrevrangebyscore").copied().unwrap_or(0);
    ensure!(lookups == cross_node, "{lookups} directory lookups for {cross_node} cross-node sessions");
    for (host, _, _) in hosts {
        host.shutdown().await;
    }
    Ok(())
}

/// A tenth of the full load, in the normal suite: 100 hosts, 300 sessions, redirect mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_carries_300_sessions_to_100_hosts() -> Result<()> {
    let load = Load { hosts: 100, sessions: 300, in_flight: 16, payload: 32 << 10, limit: Duration::from_secs(60) };
    carry("redirect", load).await
}

/// What must be shown, 6, redirect mode: 1,000 hosts, 3,000 sessions.
/// `cargo test --test fleet_load -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a load test (about a minute), run by name"]
async fn a_fleet_carries_3000_sessions_to_1000_hosts_redirected() -> Result<()> {
    let load = Load { hosts: 1000, sessions: 3000, in_flight: 32, payload: 32 << 10, limit: Duration::from_secs(240) };
    carry("redirect", load).await
}

/// What must be shown, 6, forward mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a load test (about a minute), run by name"]
async fn a_fleet_carries_3000_sessions_to_1000_hosts_forwarded() -> Result<()> {
    let load = Load { hosts: 1000, sessions: 3000, in_flight: 32, payload: 32 << 10, limit: Duration::from_secs(240) };
    carry("forward", load).await
}
