//! A relay fleet on loopback (issue 16): a real `redis-server`, started and stopped by the
//! tests, and three `ferry-relay` nodes sharing one certificate. A host registers at node
//! 1; clients enter the fleet at nodes 2 and 3 and reach it by redirect and by forward,
//! with 16 MiB each way checked; the Redis dump holds no host id, address or key; and
//! with Redis stopped, running and local sessions carry on, cross-node ones are refused
//! with the fleet's reason and `/healthz` says degraded, until Redis is back.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::fleet::Fleet;
use common::quota::{ferry_cat, logged_bytes, usage_of};
use common::{echo_over, http_get, metric, pattern};
use ferry::local::echo_service;
use ferry_client::{Client, Error, Host, HostConfig, HostIdentity, Transport};
use ferry_proto::RefuseReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes each way through every fleet session.
const PAYLOAD: usize = 16 << 20;

/// One session carrying `PAYLOAD` each way through an echo service, checked byte for byte;
/// the session's setup time.
async fn echo_16_mib(client: &Client, seed: u64) -> Result<Duration> {
    let started = Instant::now();
    let session = client.open_session().await?;
    let setup = started.elapsed();
    let data = pattern(seed, PAYLOAD);
    let back =
        tokio::time::timeout(Duration::from_secs(60), echo_over(session, &data)).await.context("echo hung")??;
    ensure!(back.len() == data.len() && back == data, "{} of {PAYLOAD} bytes came back intact", back.len());
    Ok(setup)
}

/// Every host without a token on a tier with a quota: so Redis holds quota counters too.
const EVERYONE_METERED: &str = "[access]\ndefault_tier = \"metered\"\n[[tier]]\nname = \"metered\"\nrate = \"unlimited\"\nquota = \"100 GiB/month\"\n";

async fn reach_the_host_from_every_node(mode: &str, route: &str) -> Result<()> {
    let fleet = Fleet::start_with(mode, EVERYONE_METERED, false).await?;
    let (service, _echo) = echo_service().await?;
    let (host, identity) = fleet.host_at(1, service).await?;
    fleet.wait_presence().await?;
    for n in [2, 3] {
        let client = fleet.client_via(n, &identity)?;
        let setup = echo_16_mib(&client, n as u64).await.with_context(|| format!("entering at node {n}"))?;
        let again = echo_16_mib(&client, 10 + n as u64).await?;
        eprintln!("{mode}: entering at node {n}, the first session was ready in {setup:?}, the next in {again:?}");
        let routed =
            metric(&fleet.metrics(n).await?, &format!("ferry_relay_fleet_sessions_total{{route=\"{route}\"}}"))?;
        ensure!(routed >= 1.0, "node {n} {route} {routed} sessions");
        client.close().await;
    }
    // Each session was paired by the host's own node; redirected clients went there.
    let paired = metric(&fleet.metrics(1).await?, "ferry_relay_sessions_total")?;
    ensure!(paired == 4.0, "node 1 paired {paired} sessions");

    // The host's quota counter is there once node 1 has flushed (once a second).
    fleet.wait_keys("ferry:quota:*").await?;
    // What Redis holds: a keyed hash per host, node ids, expiry times; the host's quota
    // counter (its account's keyed hash, the month, a count) and the counting node's flush
    // marker (its node id, a random process number, a sequence number). No host id in any
    // form, no address, no port, no secret.
    let dump = fleet.redis.dump().await?;
    eprintln!("redis holds:\n{dump}");
    let host_id = identity.key.public();
    let mut forbidden = vec![
        host_id.to_string(),
        host_id.to_string().to_uppercase(),
        host_id.as_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "127.0.0.1".to_owned(),
        "a-test-fleet-secret".to_owned(),
    ];
    forbidden.extend(fleet.addrs.iter().cloned());
    for needle in &forbidden {
        ensure!(!dump.contains(needle.as_str()), "the Redis dump contains {needle:?}");
    }
    let presence: Vec<&str> = dump.lines().filter(|line| line.starts_with("ferry:host:")).collect();
    ensure!(presence.len() == 1 && presence[0].contains("node-1"), "unexpected Redis contents:\n{dump}");
    let counters = dump.lines().filter(|l| l.starts_with("ferry:quota:") && !l.starts_with("ferry:quota:flushed:"));
    ensure!(counters.count() == 1, "not one quota counter (the host's account):\n{dump}");
    ensure!(
        dump.lines().all(|line| line.starts_with("ferry:host:") || line.starts_with("ferry:quota:")),
        "unexpected Redis contents:\n{dump}"
    );
    // Nor do the nodes' logs (at info: each session's close line), redirect or forward.
    let mut fleet = fleet;
    for (n, node) in fleet.nodes.iter_mut().enumerate() {
        let mut log = String::new();
        while let Ok(line) = node.log.try_recv() {
            log.push_str(&line);
            log.push('\n');
        }
        // The host's node paired every session, whichever way the clients came.
        ensure!(n > 0 || log.contains("session closed"), "node 1 logged no session:\n{log}");
        for needle in &forbidden {
            ensure!(!log.contains(needle.as_str()), "a node's log contains {needle:?}:\n{log}");
        }
    }
    host.shutdown().await;
    drop(fleet.dir);
    Ok(())
}

/// What must be shown, 1 and 5 (with quota counters present): in redirect mode a client entering at nodes 2 and 3 is sent
/// to node 1 and its sessions carry 16 MiB each way intact; Redis holds no host id, address
/// or key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_entering_at_any_node_are_redirected_to_the_host() -> Result<()> {
    reach_the_host_from_every_node("redirect", "redirected").await
}

/// What must be shown, 1: in forward mode the session is carried from the entry node to the
/// host's node over a link between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_entering_at_any_node_are_forwarded_to_the_host() -> Result<()> {
    reach_the_host_from_every_node("forward", "forwarded").await
}

/// What must be shown, 4: with Redis stopped, a running cross-node session finishes intact,
/// local connects work, cross-node connects are refused as `FleetUnavailable`, `/healthz`
/// says degraded; with Redis back, everything recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_rides_out_a_redis_outage() -> Result<()> {
    let mut fleet = Fleet::start("forward").await?;
    let (service, _echo) = echo_service().await?;
    let (host, identity) = fleet.host_at(1, service).await?;
    fleet.wait_presence().await?;

    // A forwarded session is running when Redis goes away.
    let running_client = fleet.client_via(2, &identity)?;
    let running = running_client.open_session().await?;
    fleet.redis.stop().await?;
    let data = pattern(77, PAYLOAD);
    let back =
        tokio::time::timeout(Duration::from_secs(60), echo_over(running, &data)).await.context("echo hung")??;
    ensure!(back == data, "the running session's bytes were altered by the outage");

    // Local connects work; cross-node ones hear why; the node says it is degraded.
    echo_16_mib(&fleet.client_via(1, &identity)?, 78).await.context("a local session during the outage")?;
    let refused = fleet.client_via(3, &identity)?.open_session().await.err().context("a cross-node session")?;
    ensure!(matches!(refused, Error::Refused(RefuseReason::FleetUnavailable)), "{refused:?}");
    fleet.health_becomes(3, "degraded").await?;
    fleet.health_becomes(1, "degraded").await?;

    // Redis is back (empty: it persisted nothing): the heartbeats restore the directory,
    // and each node, on its next heartbeat, its connection and its health.
    fleet.redis.resume().await?;
    let back = Instant::now();
    fleet.wait_presence().await?;
    fleet.health_becomes(3, "ok").await?;
    eprintln!("node 3 healthy again {:?} after Redis came back", back.elapsed());
    echo_16_mib(&fleet.client_via(3, &identity)?, 79).await.context("a cross-node session after the outage")?;
    host.shutdown().await;
    Ok(())
}

/// What must be shown, 2: one host registered at nodes 1 and 2 (its relay list names both);
/// node 1 is killed (SIGKILL) just after renewing its claim, while that claim is the
/// freshest. A client entering the fleet at node 3 reaches the host on its first attempt
/// within 1 s (node 3 probes node 1 over the node link, passes it over, and sends or carries
/// the client to node 2); the directory then points at node 2 only, and node 1's claim goes
/// when its expiry passes, not before.
async fn a_host_at_two_nodes_survives_the_death_of_one(mode: &str) -> Result<()> {
    let mut fleet = Fleet::start(mode).await?;
    let (service, _echo) = echo_service().await?;
    let identity = HostIdentity::generate()?;
    let mut config = HostConfig::new(identity.clone(), vec![fleet.relay(1), fleet.relay(2)], service.to_string());
    config.transport = Transport::Quic;
    let host = Host::spawn(config);
    ferry::local::wait_registered(&host, 2).await?;
    let key = fleet.presence_key().await?;
    fleet.claims_become(&key, &["node-1", "node-2"]).await?;
    let earlier = fleet.client_via(3, &identity)?;
    echo_16_mib(&earlier, 90).await.context("before the kill")?;

    // The worst moment: node 1 renews its claim, after node 2 did, and dies. Its claim is
    // then the freshest for most of a heartbeat (a lookup alone would send clients to it).
    // Which node renews last is set by when each started, so the test makes sure of it:
    // right after node 2's renewal, it writes node 1's renewal as node 1 would, and kills
    // node 1 before it can renew again.
    fleet.just_renewed(&key, "node-2").await?;
    let dead_claim_expires = unix_ms() + 3_000;
    fleet.redis.cli(&["ZADD", &key, "XX", &dead_claim_expires.to_string(), "node-1"]).await?;
    fleet.nodes[0].child.kill().await?;
    let killed = Instant::now();
    let paired_before = metric(&fleet.metrics(2).await?, "ferry_relay_sessions_total")?;
    // A client entering at node 3 now: one attempt, ready within 1 s, bytes intact.
    let newcomer = fleet.client_via(3, &identity)?;
    let setup = echo_16_mib(&newcomer, 91).await.context("a client entering at node 3 after the kill")?;
    eprintln!("{mode}: node 1 killed; a new client's first session was ready in {setup:?}");
    ensure!(setup < Duration::from_secs(1), "{mode}: the first session after the kill took {setup:?}");
    let paired = metric(&fleet.metrics(2).await?, "ferry_relay_sessions_total")?;
    ensure!(paired == paired_before + 1.0, "node 2 paired {paired} sessions, {paired_before} before");
    // Node 3 found node 1's claim first and passed it over because it did not answer.
    let passed_over = fleet.nodes[2].wait_log("did not answer a probe").await;
    ensure!(
        passed_over.is_ok(),
        "node 3 never passed over the dead node: {passed_over:?}\n{}",
        fleet.nodes[2].seen.join("\n")
    );

    // The survivor's claim is the only live one once the dead one has expired: by its
    // expiry (swept at the survivor's next renewal), not before.
    fleet.claims_become(&key, &["node-2"]).await?;
    let swept = unix_ms();
    eprintln!("{mode}: node 1's claim went {:?} after the kill", killed.elapsed());
    ensure!(swept >= dead_claim_expires, "node 1's claim went {} ms before its expiry", dead_claim_expires - swept);
    ensure!(
        swept <= dead_claim_expires + 2_000,
        "node 1's claim outlived its expiry by {} ms",
        swept - dead_claim_expires
    );
    let ttl: u64 = fleet.redis.cli(&["PTTL", &key]).await?.parse()?;
    ensure!(ttl > 0 && ttl <= 6_000, "the presence key's TTL is {ttl} ms (twice the presence period at most)");
    // The client that was in the fleet before the kill: in forward mode its hop is node
    // 3's, which carries on at once; a redirected one had been sent to its host's node (maybe node 1)
    // and keeps that hop until it fails (the client's own timeout), then asks node 3 again.
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match echo_16_mib(&earlier, 92).await {
            Ok(_) => break,
            Err(e) if started.elapsed() < Duration::from_secs(30) => eprintln!("attempt {attempts} failed: {e:#}"),
            Err(e) => return Err(e.context("the earlier client could not reach the host 30 s after node 1 died")),
        }
    }
    let again = started.elapsed();
    eprintln!("{mode}: the earlier client reached the host again after {again:?} ({attempts} attempt(s))");
    if mode == "forward" {
        ensure!(again < Duration::from_secs(1) && attempts == 1, "forward: the earlier client took {again:?}");
    }

    host.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_at_two_nodes_survives_the_death_of_one_redirected() -> Result<()> {
    a_host_at_two_nodes_survives_the_death_of_one("redirect").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_at_two_nodes_survives_the_death_of_one_forwarded() -> Result<()> {
    a_host_at_two_nodes_survives_the_death_of_one("forward").await
}

/// Milliseconds since the Unix epoch (the clock the claims' scores use).
fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Fleet {
    /// The one presence key in Redis.
    async fn presence_key(&self) -> Result<String> {
        self.wait_presence().await?;
        let keys = self.redis.cli(&["--scan", "--pattern", "ferry:host:*"]).await?;
        let mut keys = keys.lines();
        let key = keys.next().context("no presence key")?.to_owned();
        ensure!(keys.next().is_none(), "more than one presence key");
        Ok(key)
    }

    /// Waits (at most 10 s) until `node` has just renewed its claim on `key`.
    async fn just_renewed(&self, key: &str, node: &str) -> Result<()> {
        let started = Instant::now();
        let first = self.redis.cli(&["ZSCORE", key, node]).await?;
        while self.redis.cli(&["ZSCORE", key, node]).await? == first {
            ensure!(started.elapsed() < Duration::from_secs(10), "{node} did not renew its claim in 10 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Waits (at most 10 s) until the members of `key` are exactly `nodes`.
    async fn claims_become(&self, key: &str, nodes: &[&str]) -> Result<()> {
        let started = Instant::now();
        loop {
            let members = self.redis.cli(&["ZRANGE", key, "0", "-1"]).await?;
            let mut members: Vec<&str> = members.lines().collect();
            members.sort_unstable();
            if members == nodes {
                return Ok(());
            }
            ensure!(started.elapsed() < Duration::from_secs(10), "claims on the host: {members:?}, not {nodes:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Bytes each way of a session that carries 1.2 MiB in all.
const HALF_OF_1_2_MIB: usize = 629_146;

/// Token `team` on tier `metered`: `quota`, paced to `rate` each way with a 64 KiB burst.
fn team_sections(quota: &str, rate: &str) -> String {
    let hash: String = ferry_relay::policy::hash_token("team-token").iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "[[access.token]]\nname = \"team\"\nsha256 = \"{hash}\"\ntier = \"metered\"\n\
         [[tier]]\nname = \"metered\"\nrate = \"{rate}\"\nburst_bytes = 65536\nquota = \"{quota}\"\n"
    )
}

impl Fleet {
    /// A QUIC host in front of `service`, registered at node `n` with token `team`.
    async fn team_host_at(&self, n: usize, service: SocketAddr) -> Result<(Host, HostIdentity)> {
        let identity = HostIdentity::generate()?;
        let mut config = HostConfig::new(identity.clone(), vec![self.relay(n)], service.to_string());
        config.transport = Transport::Quic;
        config.token = Some("team-token".into());
        let host = Host::spawn(config);
        ferry::local::wait_registered(&host, 1).await?;
        Ok((host, identity))
    }

    /// Waits (at most 10 s) until `ferry-relay usage` (reading Redis, as node 1's config
    /// says) reports exactly `bytes` for token `team`.
    async fn usage_becomes(&self, bytes: u64) -> Result<String> {
        let config = self.dir.path().join("node-1").join("relay.toml");
        let args = ["--config", config.to_str().context("path")?];
        let started = Instant::now();
        loop {
            let (used, report) = usage_of(&args, "team").await?;
            if used == bytes {
                return Ok(report);
            }
            ensure!(started.elapsed() < Duration::from_secs(10), "usage says {used} bytes, not {bytes}:\n{report}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (at most 10 s) until node `n` knows token `team` has used at least `bytes` (its
    /// `/usage`: the fleet's total at its last flush plus its own bytes since).
    async fn node_knows(&self, n: usize, bytes: u64) -> Result<()> {
        let admin = self.nodes[n - 1].admin.as_deref().context("no admin listener")?;
        let started = Instant::now();
        loop {
            let response = http_get(admin, "/usage").await?;
            let known = response
                .lines()
                .find(|line| line.starts_with("token team: "))
                .and_then(|line| line.split_once(" (")?.1.split_once(" bytes)")?.0.parse::<u64>().ok())
                .unwrap_or(0);
            if known >= bytes {
                return Ok(());
            }
            ensure!(started.elapsed() < Duration::from_secs(10), "node {n} knows of {known} bytes, not {bytes}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What must be shown, 3: a 2 MiB/day quota shared by hosts of one token at nodes 1 and 2.
/// 1.2 MiB through node 1; then 1.2 MiB through node 2 crosses the quota and that session
/// is ended (the default `over_quota_rate`), `ferry cat` saying why; the next session at
/// either node is refused `quota exceeded`; `ferry-relay usage` shows exactly what the
/// nodes' sessions carried (their close log lines); Redis holds no token name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_is_counted_across_the_nodes_of_a_fleet() -> Result<()> {
    // Paced at 2 Mbit/s each way, so a 1.2 MiB session lasts about two seconds: the crossing
    // happens in the middle of it, not after it.
    let mut fleet = Fleet::start_with("redirect", &team_sections("2 MiB/day", "2 Mbit/s"), false).await?;
    let (service, _echo) = echo_service().await?;
    let (first_host, first) = fleet.team_host_at(1, service).await?;
    let (second_host, second) = fleet.team_host_at(2, service).await?;

    let data = pattern(31, HALF_OF_1_2_MIB);
    let back = echo_over(fleet.client_via(1, &first)?.open_session().await?, &data).await?;
    ensure!(back == data, "the first 1.2 MiB came back altered");
    let through_1 = logged_bytes(&mut fleet.nodes[0], 1).await?;
    fleet.usage_becomes(through_1).await?;
    fleet.node_knows(2, through_1).await?;

    let (ok, echoed, stderr) = ferry_cat(&second, vec![fleet.relay(2)], &pattern(32, HALF_OF_1_2_MIB)).await?;
    ensure!(!ok && echoed.len() < HALF_OF_1_2_MIB, "the crossing session carried on ({} bytes back)", echoed.len());
    ensure!(stderr.contains("quota exceeded"), "ferry cat said: {stderr}");
    let total = through_1 + logged_bytes(&mut fleet.nodes[1], 1).await?;
    ensure!(total > 2 << 20, "the session ended before the quota was spent: {total} bytes");
    eprintln!("node 1 carried {through_1} bytes, node 2 ended the crossing session at {total} in all");

    let report = fleet.usage_becomes(total).await?;
    eprintln!("ferry-relay usage:\n{report}");
    fleet.node_knows(1, total).await?;
    for (n, identity) in [(1, &first), (2, &second)] {
        let (ok, _, stderr) = ferry_cat(identity, vec![fleet.relay(n)], b"hello").await?;
        ensure!(!ok && stderr.contains("the relay refused: quota exceeded"), "node {n}: ferry cat said: {stderr}");
    }
    let dump = fleet.redis.dump().await?;
    ensure!(!dump.contains("team"), "the Redis dump names the token:\n{dump}");
    first_host.shutdown().await;
    second_host.shutdown().await;
    Ok(())
}

/// What must be shown, 4 (quotas): Redis stops mid-test; sessions go on and their bytes
/// are kept by the node; Redis comes back (with its data: a production Redis persists) and
/// the total is exact: nothing lost, nothing counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_usage_is_exact_across_a_redis_outage() -> Result<()> {
    let mut fleet = Fleet::start_with("redirect", &team_sections("1 GiB/day", "unlimited"), true).await?;
    let (service, _echo) = echo_service().await?;
    let (host, identity) = fleet.team_host_at(1, service).await?;
    let client = fleet.client_via(1, &identity)?;
    let data = pattern(41, 1 << 20);
    ensure!(echo_over(client.open_session().await?, &data).await? == data, "altered before the outage");
    let before = logged_bytes(&mut fleet.nodes[0], 1).await?;
    fleet.usage_becomes(before).await?;

    fleet.redis.stop().await?;
    for seed in [42, 43] {
        let data = pattern(seed, 1 << 20);
        ensure!(echo_over(client.open_session().await?, &data).await? == data, "altered during the outage");
    }
    let during = logged_bytes(&mut fleet.nodes[0], 2).await?;
    // Counted while Redis is away: the node knows the last total plus its own bytes, and
    // its flushes fail (and are kept).
    fleet.node_knows(1, before + during).await?;
    let started = Instant::now();
    while metric(&fleet.metrics(1).await?, "ferry_relay_quota_flushes_failed_total")? < 1.0 {
        ensure!(started.elapsed() < Duration::from_secs(10), "no flush failed in 10 s of outage");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = fleet.dir.path().join("node-1").join("relay.toml");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry-relay"))
        .args(["usage", "--config", config.to_str().context("path")?])
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && stderr.contains("Redis did not answer"), "usage during the outage: {stderr}");

    fleet.redis.resume().await?;
    let back = Instant::now();
    let report = fleet.usage_becomes(before + during).await?;
    eprintln!("usage exact {:?} after Redis came back:\n{report}", back.elapsed());
    host.shutdown().await;
    Ok(())
}

/// CPU time process `pid` has used (user + system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(')').context("stat")?.1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Ok(Duration::from_millis(ticks * 10))
}

/// Not a pass/fail test: measures what each mode costs, for docs/fleet.md. Run by name:
/// `cargo test --release --test fleet -- --ignored measure_redirect_against_forward --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by name"]
async fn measure_redirect_against_forward() -> Result<()> {
    const BYTES: usize = 256 << 20;
    const SETUPS: usize = 50;
    for mode in ["redirect", "forward"] {
        let fleet = Fleet::start(mode).await?;
        let (service, _echo) = echo_service().await?;
        let (host, identity) = fleet.host_at(1, service).await?;
        fleet.wait_presence().await?;
        // Setup: a fresh client's first session, then sessions on its kept hop.
        let mut first = Vec::new();
        let mut later = Vec::new();
        for _ in 0..SETUPS {
            let client = fleet.client_via(2, &identity)?;
            let started = Instant::now();
            drop(client.open_session().await?);
            first.push(started.elapsed());
            let started = Instant::now();
            drop(client.open_session().await?);
            later.push(started.elapsed());
            client.close().await;
        }
        first.sort_unstable();
        later.sort_unstable();
        // Bytes: one session, `BYTES` each way, CPU of the host's node and the entry node.
        let pids: Vec<u32> =
            fleet.nodes.iter().map(|n| n.child.id().context("a node exited")).collect::<Result<_>>()?;
        let before: Vec<Duration> = pids.iter().map(|&p| cpu_time(p)).collect::<Result<_>>()?;
        let client = fleet.client_via(2, &identity)?;
        let session = client.open_session().await?;
        let (app, bridge) = session.spawn_pipe(1 << 20);
        let (mut r, mut w) = tokio::io::split(app);
        let started = Instant::now();
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 1 << 20];
            for _ in 0..BYTES / chunk.len() {
                w.write_all(&chunk).await?;
            }
            w.shutdown().await
        });
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < BYTES {
            let n = r.read(&mut buf).await?;
            ensure!(n > 0, "ended early");
            got += n;
        }
        writer.await??;
        drop(r);
        bridge.abort();
        let elapsed = started.elapsed();
        let after: Vec<Duration> = pids.iter().map(|&p| cpu_time(p)).collect::<Result<_>>()?;
        let gb = 2.0 * BYTES as f64 / 1e9;
        let cpu = |i: usize| (after[i] - before[i]).as_secs_f64() / gb;
        eprintln!(
            "{mode}: setup p50 first {:?} / later {:?} (p90 {:?} / {:?}); {:.2} Gbit/s echoed; CPU-s per GB: host's node {:.2}, entry node {:.2}, fleet {:.2}",
            first[SETUPS / 2],
            later[SETUPS / 2],
            first[SETUPS * 9 / 10],
            later[SETUPS * 9 / 10],
            gb * 8.0 / elapsed.as_secs_f64(),
            cpu(0),
            cpu(1),
            cpu(0) + cpu(1) + cpu(2),
        );
        host.shutdown().await;
    }
    Ok(())
}
