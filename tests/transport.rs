//! The two hops: QUIC and TLS over TCP, in every combination, with automatic fallback
//! when UDP is blocked, and per-session flow control on a shared QUIC connection.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::{ferry, local_port, wait_for_line};
use ferry::local::{LocalStack, echo_service, pattern_digest, send_and_digest};
use ferry_client::{Client, HopOptions, Transport};
use ferry_proto::StaticKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_combination_carries_16_mib_each_way() -> Result<()> {
    let (service, _echo) = echo_service().await?;
    for host_transport in [Transport::Quic, Transport::Tcp] {
        let stack = LocalStack::start_with(service, |_| {}, |h| h.transport = host_transport).await?;
        for client_transport in [Transport::Quic, Transport::Tcp] {
            let client = Client::new(stack.ticket.clone(), StaticKey::generate()?, HopOptions::client())
                .with_transport(client_transport);
            let port = local_port(client).await?;
            let seed = 100 + host_transport as u64 * 10 + client_transport as u64;
            let (digest, len) = send_and_digest(TcpStream::connect(port).await?, seed, 16 * MIB).await?;
            let combo = format!("host {host_transport:?}, client {client_transport:?}");
            assert_eq!(len, 16 * MIB, "{combo}");
            assert_eq!(digest, pattern_digest(seed, 16 * MIB), "{combo}");
        }
        stack.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_connect_falls_back_to_tcp_within_a_second_when_udp_is_blocked() -> Result<()> {
    let (service, _echo) = echo_service().await?;
    // The relay serves no QUIC: UDP to its port goes unanswered, as behind a UDP-blocking
    // firewall. The host (transport auto) falls back too.
    let stack = LocalStack::start(service, |relay| relay.quic = false).await?;
    let ticket = stack.ticket.encode()?;

    let started = Instant::now();
    let mut connect = ferry()
        .args(["connect", &ticket, "--listen", "127.0.0.1:0", "--transport", "auto"])
        .stdout(Stdio::piped())
        .spawn()?;
    let line = wait_for_line(&mut connect, "listening on", Duration::from_secs(10)).await?;
    let fallback = started.elapsed();
    assert!(line.contains("TLS over TCP"), "{line}");
    // Includes starting the process; the QUIC head start is 250 ms.
    assert!(fallback < Duration::from_secs(1), "fallback took {fallback:?}");

    let local = line.split_whitespace().nth(2).context("address in the listening line")?;
    let (digest, len) = send_and_digest(TcpStream::connect(local).await?, 16, 16 * MIB).await?;
    assert_eq!((digest, len), (pattern_digest(16, 16 * MIB), 16 * MIB));
    stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_does_not_hold_up_another_session_on_the_same_quic_connection() -> Result<()> {
    let (service, _echo) = echo_service().await?;
    let stack = LocalStack::start(service, |_| {}).await?;
    let client =
        Client::new(stack.ticket.clone(), StaticKey::generate()?, HopOptions::client()).with_transport(Transport::Quic);

    // Session A writes 64 MiB (far more than every buffer on the path) to the echo service and never reads the answer: its windows
    // fill up along the whole path and it stalls.
    let stalled = client.open_session().await?;
    let (stalled_app, _a) = stalled.spawn_pipe(64 * 1024);
    let (_stalled_read, mut stalled_write) = tokio::io::split(stalled_app);
    let stalled_writer = tokio::spawn(async move {
        let chunk = vec![1u8; 64 * 1024];
        for _ in 0..1024 {
            stalled_write.write_all(&chunk).await?;
        }
        anyhow::Ok(())
    });

    // Session B, on the same QUIC connection, still moves 16 MiB each way.
    let client = Arc::new(client);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?;
    tokio::spawn(client.clone().serve(listener, tokio_util::sync::CancellationToken::new()));
    let b = tokio::time::timeout(Duration::from_secs(60), async {
        send_and_digest(TcpStream::connect(port).await?, 17, 16 * MIB).await
    })
    .await
    .context("session B did not finish while A was stalled")??;
    assert_eq!(b, (pattern_digest(17, 16 * MIB), 16 * MIB));
    assert!(!stalled_writer.is_finished(), "session A was expected to be held back by its own flow control");
    assert_eq!(client.transport_in_use().await, Some(Transport::Quic));
    stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_cat_over_tcp_reports_a_clean_end() -> Result<()> {
    let (service, _echo) = echo_service().await?;
    let stack = LocalStack::start_with(service, |_| {}, |h| h.transport = Transport::Tcp).await?;
    let mut cat = ferry()
        .args(["cat", &stack.ticket.encode()?, "--transport", "tcp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = cat.stdin.take().context("stdin")?;
    stdin.write_all(b"over tcp").await?;
    drop(stdin);
    let mut out = String::new();
    cat.stdout.take().context("stdout")?.read_to_string(&mut out).await?;
    assert_eq!(out, "over tcp");
    assert!(cat.wait().await?.success());
    stack.shutdown().await;
    Ok(())
}

/// A ticket that lists a dead relay first and a live one second: the live one takes over
/// after the dead one's head start (`NEXT_RELAY_AFTER`), not after its connect timeout.
/// The time is reported, not asserted; the session's bytes are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_relay_first_in_the_ticket_costs_only_its_head_start() -> Result<()> {
    let (service, _echo) = echo_service().await?;
    let stack = LocalStack::start(service, |_| {}).await?;
    // A relay address nothing answers at (UDP or TCP), before the live relay.
    let dead = {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        udp.local_addr()?.port()
    };
    let mut ticket = stack.ticket.clone();
    let live = ticket.relays[0].clone();
    ticket.relays.insert(0, ferry_proto::RelayAddr { addr: format!("127.0.0.1:{dead}"), ..live });
    for transport in [Transport::Quic, Transport::Auto] {
        let client =
            Client::new(ticket.clone(), StaticKey::generate()?, HopOptions::client()).with_transport(transport);
        let started = Instant::now();
        client.warm_up().await.context("through the ticket's second relay")?;
        let took = started.elapsed();
        let data = common::pattern(41, 1 << 20);
        assert!(common::echo_session(&client, &data).await? == data, "the echo came back altered");
        eprintln!("{transport:?}: a dead first relay cost {took:?} (head start {:?})", ferry_client::NEXT_RELAY_AFTER);
        client.close().await;
    }
    stack.shutdown().await;
    Ok(())
}

/// The TLS connection a TCP client opens to prove the relay reachable is kept for its first
/// session, and one is dialled ahead while sessions open back to back; but the relay cuts
/// any connection that sends nothing for its handshake timeout. Sessions opened after the
/// client sat idle past that timeout must go through, and the relay must never have to cut
/// a connection dialled ahead (the client closes each one first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_client_idle_past_the_relays_handshake_timeout_still_opens_sessions() -> Result<()> {
    let relay_timeout = Duration::from_secs(1);
    let echo = common::echo_stack_with(|c| c.handshake_timeout = relay_timeout).await?;
    let relay = &echo.stack.relay;
    let count = |sample: &str| common::metric(&relay.metrics_text(), sample).unwrap_or(0.0);
    let client = Client::new(echo.stack.ticket.clone(), StaticKey::generate()?, HopOptions::client())
        .with_transport(Transport::Tcp);
    client.warm_up().await?;
    let payload = common::pattern(5, 64 * 1024);
    for round in 0..2 {
        // Not a synchronisation: the scenario is a client that opens nothing for this long.
        tokio::time::sleep(relay_timeout + Duration::from_millis(500)).await;
        for _ in 0..8 {
            let back = common::echo_session(&client, &payload).await?;
            ensure!(back == payload, "the echo differs (round {round})");
        }
    }
    let cut = count("ferry_relay_refused_total{reason=\"handshake_timeout\"}");
    ensure!(cut == 0.0, "the relay cut {cut} idle connections the client had dialled ahead");
    // Dialling ahead never multiplies connections: at most one TLS handshake per session,
    // plus the warm-up's, a spare left over from each burst, and the host's.
    let handshakes = count("ferry_relay_handshake_duration_seconds_count");
    ensure!(
        (16.0..=16.0 + 1.0 + 2.0 + 1.0).contains(&handshakes),
        "{handshakes} TLS handshakes for 16 sessions, each on a connection of its own"
    );
    Ok(())
}
