//! Hole punching through real kernel NAT (issue 14, shown item 3): host and client each
//! behind a router of their own that masquerades with nftables (tests/common/natlab.rs),
//! a relay on the "public" network between them. The relay carries the first session
//! and the candidate swap; then a punched direct QUIC path carries the later sessions,
//! and the relay's own session counter shows it carried nothing more. A router that
//! defeats punching (symmetric mapping, or UDP dropped) leaves the relay as the path,
//! with no error.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::natlab::{HOST_PUBLIC_IP, Nat, NatLab, RELAY_IP};
use common::process::RelayProcess;
use ferry::local::{echo_service, pattern_digest};
use ferry_client::{Client, DirectConfig, HopOptions, Host, HostConfig, HostIdentity, Path};
use ferry_proto::{RelayAddr, StaticKey, Ticket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the client saw: the first session's path, the punch's outcome and its time, and
/// the path of the sessions after it.
#[derive(Debug)]
struct Outcome {
    first: Option<Path>,
    punched: Option<Path>,
    punch_took: Duration,
    later: Vec<Option<Path>>,
}

/// Runs the whole scene on a lab with these routers.
async fn scene(host_nat: Nat, client_nat: Nat) -> Result<Option<(Outcome, f64)>> {
    let Some(lab) = NatLab::start(host_nat, client_nat).await? else { return Ok(None) };
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state)?;
    let config = format!(
        "[relay]\nlisten = \"0.0.0.0:0\"\nstate_dir = {state:?}\n[admin]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\
         [limits]\nconnections_per_minute_per_source = 0\n[log]\nlevel = \"warn\"\n"
    );
    let relay = RelayProcess::start_in_netns(&lab.netns("wan"), &config, dir.path()).await?;
    let port = relay.addr.rsplit_once(':').context("the relay's port")?.1;
    let relays = vec![RelayAddr { addr: format!("{RELAY_IP}:{port}"), trust: ferry_proto::RelayTrust::Pin(relay.pin) }];

    // The host, behind its NAT: an echo service, a direct port, registered at the relay.
    let identity = HostIdentity::generate()?;
    let (stop_host, host_stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let host_relays = relays.clone();
    let host_identity = identity.clone();
    let host_task = lab.run_on("host", move || async move {
        let (service, _echo) = echo_service().await?;
        let mut config = HostConfig::new(host_identity, host_relays, service.to_string());
        config.direct = Some(DirectConfig::new(([0, 0, 0, 0], 0).into()));
        let host = Host::try_spawn(config)?;
        let mut status = host.status();
        // Registered, and the relay has said which address it sees.
        tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.observed.iter().all(Option::is_some)))
            .await
            .context("the host did not register (or learn its public address)")??;
        let observed = host.status().borrow().observed.clone();
        let _ = ready_tx.send(observed);
        let _ = host_stopped.await;
        host.shutdown().await;
        Ok(())
    });
    let observed = tokio::time::timeout(Duration::from_secs(15), ready).await.context("host start")??;
    eprintln!("the relay sees the host at {observed:?}");
    ensure!(
        observed.iter().flatten().all(|a| a.ip() == std::net::IpAddr::V4(HOST_PUBLIC_IP)),
        "the relay observes the host's router, not the host: {observed:?}"
    );

    // The client, behind its own NAT.
    let ticket = Ticket::new(identity.key.public(), identity.secret.clone(), relays);
    let outcome = lab
        .run_on("client", move || async move {
            let client = Client::new(ticket, StaticKey::generate()?, HopOptions::client());
            let first = echo(&client, 1, 1 << 20).await?;
            let started = Instant::now();
            let punched = client.punch().await.context("the punch attempt itself failed")?;
            let punch_took = started.elapsed();
            let mut later = Vec::new();
            for seed in 2..5 {
                later.push(echo(&client, seed, 16 << 20).await?);
            }
            Ok(Outcome { first, punched, punch_took, later })
        })
        .await
        .context("the client's thread")??;
    let admin = relay.admin.clone().context("admin port")?;
    let carried = lab
        .run_on("wan", move || async move {
            common::metric(&common::http_get(&admin, "/metrics").await?, "ferry_relay_sessions_total")
        })
        .await??;
    let _ = stop_host.send(());
    host_task.await.context("the host's thread")??;
    Ok(Some((outcome, carried)))
}

/// One session carrying `len` pattern bytes to the echo service and back (by digest);
/// returns its path.
async fn echo(client: &Client, seed: u64, len: usize) -> Result<Option<Path>> {
    let session = client.open_session().await?;
    let path = session.path().cloned();
    let (app, bridge) = session.spawn_pipe(256 * 1024);
    let (mut read, mut write) = tokio::io::split(app);
    let data = common::pattern(seed, len);
    let send = async {
        write.write_all(&data).await?;
        write.shutdown().await
    };
    let receive = async {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let (mut buf, mut got) = (vec![0u8; 64 * 1024], 0usize);
        loop {
            let n = read.read(&mut buf).await?;
            if n == 0 {
                return std::io::Result::Ok((digest.finish(), got));
            }
            digest.update(&buf[..n]);
            got += n;
        }
    };
    let (_, (digest, got)) = tokio::time::timeout(Duration::from_secs(60), async { tokio::try_join!(send, receive) })
        .await
        .context("the echo did not finish")??;
    bridge.await??;
    ensure!(
        got == len && digest.as_ref() == pattern_digest(seed, len as u64),
        "the bytes came back altered ({got} of {len})"
    );
    Ok(path)
}

#[tokio::test]
async fn a_punched_direct_path_carries_the_later_sessions() -> Result<()> {
    let Some((outcome, carried)) = scene(Nat::Cone, Nat::Cone).await? else { return Ok(()) };
    eprintln!(
        "cone NAT on both sides: punched in {:?}; {outcome:?}; the relay carried {carried} sessions",
        outcome.punch_took
    );
    ensure!(matches!(outcome.first, Some(Path::Relay(_))), "the first session goes through the relay: {outcome:?}");
    let Some(Path::Direct(addr)) = &outcome.punched else { anyhow::bail!("no punched path: {outcome:?}") };
    ensure!(addr.starts_with(&HOST_PUBLIC_IP.to_string()), "the path leads to the host's router: {addr}");
    ensure!(outcome.later.iter().all(|p| p == &outcome.punched), "later sessions go direct: {outcome:?}");
    // The first session and the candidate swap; nothing after.
    ensure!(carried == 2.0, "the relay carried {carried} sessions, not just the rendezvous");
    Ok(())
}

#[tokio::test]
async fn a_symmetric_nat_falls_back_to_the_relay_without_an_error() -> Result<()> {
    let Some((outcome, carried)) = scene(Nat::Cone, Nat::Symmetric).await? else { return Ok(()) };
    eprintln!("symmetric NAT at the client: {outcome:?}; the relay carried {carried} sessions");
    ensure!(outcome.punched.is_none(), "a symmetric NAT cannot be punched: {outcome:?}");
    ensure!(outcome.later.iter().all(|p| matches!(p, Some(Path::Relay(_)))), "the relay stays the path: {outcome:?}");
    ensure!(carried == 2.0 + outcome.later.len() as f64, "{carried}");
    Ok(())
}

#[tokio::test]
async fn blocked_udp_falls_back_to_the_relay_over_tcp_without_an_error() -> Result<()> {
    let Some((outcome, carried)) = scene(Nat::Cone, Nat::UdpBlocked).await? else { return Ok(()) };
    eprintln!("UDP blocked at the client: {outcome:?}; the relay carried {carried} sessions");
    ensure!(outcome.punched.is_none(), "no UDP, no punch: {outcome:?}");
    ensure!(outcome.later.iter().all(|p| matches!(p, Some(Path::Relay(_)))), "the relay stays the path: {outcome:?}");
    Ok(())
}
