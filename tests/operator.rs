//! The operator's promises, in process: closed registration, bandwidth tiers, the global
//! buffer budget and the per-source connection rate.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferry::local::{LocalStack, Pattern, echo_service, pattern_digest, send_and_digest};
use ferry_client::{Client, Error, HopOptions, Host, HostConfig, HostIdentity, Session};
use ferry_proto::{RefuseReason, RelayAddr, RelayTrust, StaticKey, Ticket};
use ferry_relay::pacing::Tier;
use ferry_relay::policy::{Policy, TokenRule, hash_token};
use ferry_relay::{Relay, RelayConfig, TlsIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const MIB: u64 = 1024 * 1024;

/// The value of one sample in Prometheus text, e.g. `metric(&text, "ferry_relay_sessions_active")`.
fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {sample} in\n{text}"))
}

fn tier(name: &str, bits: Option<u64>) -> Tier {
    Tier { name: name.into(), rate_bits_per_sec: bits, burst_bytes: 256 * 1024, quota: None }
}

/// A closed relay: token "plus-token" gives the unlimited `plus` tier, everyone else
/// without a token is refused.
fn closed_policy() -> Policy {
    Policy {
        closed: true,
        tokens: vec![TokenRule { name: "plus".into(), sha256: hash_token("plus-token"), tier: Some("plus".into()) }],
        hosts: vec![],
        tiers: vec![tier("free", Some(2_000_000)), tier("plus", None)],
        default_tier: "free".into(),
    }
}

async fn relay_with(tweak: impl FnOnce(&mut RelayConfig)) -> Result<Relay> {
    let mut config = RelayConfig::new(([127, 0, 0, 1], 0).into(), TlsIdentity::self_signed(&["localhost".into()])?);
    tweak(&mut config);
    Ok(Relay::spawn(config).await?)
}

fn relays_of(relay: &Relay) -> Vec<RelayAddr> {
    vec![RelayAddr { addr: relay.local_addr().to_string(), trust: RelayTrust::Pin(relay.pin()) }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_mode_refuses_a_host_without_a_token_and_admits_one_with_it() -> Result<()> {
    let relay = relay_with(|c| c.reloadable.policy = closed_policy()).await?;
    let (service, _echo) = echo_service().await?;

    let stranger = Host::spawn(HostConfig::new(HostIdentity::generate()?, relays_of(&relay), service.to_string()));
    let mut status = stranger.status();
    let refused = tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.last_error.is_some())).await??;
    let reason = refused.last_error.clone().unwrap_or_default();
    assert!(reason.contains("does not allow this host"), "{reason}");
    drop(refused);
    assert_eq!(relay.registered_hosts(), 0);
    stranger.shutdown().await;

    let mut config = HostConfig::new(HostIdentity::generate()?, relays_of(&relay), service.to_string());
    config.token = Some("plus-token".into());
    let member = Host::spawn(config);
    ferry::local::wait_registered(&member, 1).await?;
    assert_eq!(relay.registered_hosts(), 1);
    member.shutdown().await;
    relay.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_megabit_tier_paces_while_an_unlimited_session_is_not_paced() -> Result<()> {
    let mut policy = closed_policy();
    policy.closed = false;
    let relay = relay_with(|c| c.reloadable.policy = policy).await?;
    let (service, _echo) = echo_service().await?;

    let free = HostIdentity::generate()?;
    let free_host = Host::spawn(HostConfig::new(free.clone(), relays_of(&relay), service.to_string()));
    let plus = HostIdentity::generate()?;
    let mut plus_config = HostConfig::new(plus.clone(), relays_of(&relay), service.to_string());
    plus_config.token = Some("plus-token".into());
    let plus_host = Host::spawn(plus_config);
    ferry::local::wait_registered(&free_host, 1).await?;
    ferry::local::wait_registered(&plus_host, 1).await?;

    let port_for = |identity: &HostIdentity| {
        let ticket = Ticket::new(identity.key.public(), identity.secret.clone(), relays_of(&relay));
        Client::new(ticket, StaticKey::generate().expect("key"), HopOptions::client())
    };
    let timed = |client: Client, seed: u64| async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?;
        tokio::spawn(Arc::new(client).serve(listener, tokio_util::sync::CancellationToken::new()));
        let started = Instant::now();
        let got = send_and_digest(TcpStream::connect(port).await?, seed, 2 * MIB).await?;
        anyhow::Ok((got, started.elapsed()))
    };
    // Both run at the same time on the same relay.
    let (paced, unpaced) = tokio::join!(timed(port_for(&free), 1), timed(port_for(&plus), 2));
    let ((paced_digest, paced_len), paced_time) = paced?;
    let ((free_digest, free_len), free_time) = unpaced?;
    assert_eq!((paced_digest, paced_len), (pattern_digest(1, 2 * MIB), 2 * MIB));
    assert_eq!((free_digest, free_len), (pattern_digest(2, 2 * MIB), 2 * MIB));
    // 2 MiB at 2 Mbit/s is 8.4 s; the 256 KiB burst saves 1 s.
    assert!(paced_time >= Duration::from_secs(7), "the 2 Mbit/s session took only {paced_time:?}");
    assert!(free_time < Duration::from_secs(7), "the unlimited session was held back: {free_time:?}");
    eprintln!("paced: {paced_time:?}, unlimited: {free_time:?}");
    free_host.shutdown().await;
    plus_host.shutdown().await;
    relay.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

/// A session whose application writes `len` bytes but reads nothing until `go` fires.
struct StalledReader {
    go: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<Result<(Vec<u8>, u64)>>,
}

fn stall(session: Session, seed: u64, len: u64) -> StalledReader {
    let (app, _bridge) = session.spawn_pipe(64 * 1024);
    let (mut app_read, mut app_write) = tokio::io::split(app);
    tokio::spawn(async move {
        let mut pattern = Pattern::new(seed);
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..len / buf.len() as u64 {
            pattern.fill(&mut buf);
            app_write.write_all(&buf).await?;
        }
        app_write.shutdown().await
    });
    let (go, wait) = tokio::sync::oneshot::channel();
    let done = tokio::spawn(async move {
        wait.await?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = app_read.read(&mut buf).await?;
            if n == 0 {
                return Ok((ctx.finish().as_ref().to_vec(), total));
            }
            ctx.update(&buf[..n]);
            total += n as u64;
        }
    });
    StalledReader { go, done }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buffer_budget_refuses_new_sessions_and_spares_running_ones() -> Result<()> {
    let (service, _echo) = echo_service().await?;
    let stack = LocalStack::start(service, |c| {
        c.buffer_per_direction = MIB as usize;
        c.reloadable.limits.buffer_budget = 4 * MIB;
    })
    .await?;
    let client = stack.client()?;
    // A second host: one host alone may hold only half the budget (its fair share), so
    // filling the budget takes two.
    let relays = stack.ticket.relays.clone();
    let (other_host, other) = common::registered_host(relays.clone(), service).await?;
    let other_client = Client::new(common::ticket(&other, relays), StaticKey::generate()?, HopOptions::client());
    let budget_gauge = |relay: &Relay| metric(&relay.metrics_text(), "ferry_relay_buffer_bytes_in_use");

    // Two sessions fill the 4 MiB budget; their readers stop, so data piles up.
    let first = stall(client.open_session().await?, 31, 16 * MIB);
    assert!(budget_gauge(&stack.relay) <= (4 * MIB) as f64);
    let second = stall(other_client.open_session().await?, 32, 16 * MIB);
    assert_eq!(budget_gauge(&stack.relay), (4 * MIB) as f64);

    let third = client.open_session().await.err().context("a third session must not fit")?;
    assert!(matches!(third, Error::Refused(RefuseReason::RelayBusy)), "{third:?}");
    assert!(budget_gauge(&stack.relay) <= (4 * MIB) as f64);
    let text = stack.relay.metrics_text();
    assert_eq!(metric(&text, "ferry_relay_refused_total{reason=\"relay_busy\"}"), 1.0);

    // Readers continue: both running sessions finish intact.
    for (s, seed) in [(first, 31), (second, 32)] {
        let _ = s.go.send(());
        let (digest, len) = tokio::time::timeout(Duration::from_secs(60), s.done).await???;
        assert_eq!((digest, len), (pattern_digest(seed, 16 * MIB), 16 * MIB));
        assert!(budget_gauge(&stack.relay) <= (4 * MIB) as f64);
    }
    other_host.shutdown().await;
    stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_from_one_source_is_rate_limited_while_an_honest_host_streams() -> Result<()> {
    let (service, _echo) = echo_service().await?;
    let stack = LocalStack::start(service, |c| c.reloadable.limits.connections_per_minute_per_source = 100).await?;
    let relay_addr = stack.relay.local_addr();

    // 2,000 TCP connection attempts from 127.0.0.2, bounded in count and time.
    let flood = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut held = Vec::new();
        for _ in 0..2_000 {
            if Instant::now() > deadline {
                break;
            }
            let socket = TcpSocket::new_v4()?;
            socket.bind("127.0.0.2:0".parse()?)?;
            if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(1), socket.connect(relay_addr)).await {
                held.push(stream);
            }
            // Keep the fd count bounded: hold at most the last 100.
            if held.len() > 100 {
                held.remove(0);
            }
        }
        anyhow::Ok(())
    });

    // Meanwhile the honest host (from 127.0.0.1) is registered and a client streams.
    let client = stack.client()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?;
    tokio::spawn(Arc::new(client).serve(listener, tokio_util::sync::CancellationToken::new()));
    let got = send_and_digest(TcpStream::connect(port).await?, 7, 8 * MIB).await?;
    assert_eq!(got, (pattern_digest(7, 8 * MIB), 8 * MIB));
    flood.await??;

    let limited = metric(&stack.relay.metrics_text(), "ferry_relay_connections_rate_limited_total");
    assert!(limited >= 1_800.0, "only {limited} of 2,000 flood connections were rate-limited");
    // A host re-registering from the honest source is still welcome.
    let extra =
        Host::spawn(HostConfig::new(HostIdentity::generate()?, stack.ticket.relays.clone(), service.to_string()));
    ferry::local::wait_registered(&extra, 1).await?;
    extra.shutdown().await;
    stack.shutdown().await;
    Ok(())
}
