//! Faults: a relay cut mid-stream, a client killed mid-session, a network that
//! blackholes, and a lossy, high-latency link. Honest streams either arrive intact or
//! end with an error; never as a clean, shorter transfer.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::ferry;
use common::impair::{Impairment, udp_proxy};
use ferry::local::{LocalStack, Pattern, echo_service};
use ferry_client::{Client, HopOptions, Transport};
use ferry_proto::{RelayAddr, RelayTrust, StaticKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const MIB: usize = 1024 * 1024;

/// The value of one sample in Prometheus text.
fn metric(text: &str, sample: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok()).unwrap_or(f64::NAN)
}

async fn cut_relay_under_ferry_cat(transport: &str) -> Result<()> {
    let (service, _echo) = echo_service().await?;
    let host_transport = if transport == "tcp" { Transport::Tcp } else { Transport::Quic };
    let stack = LocalStack::start_with(service, |_| {}, |h| h.transport = host_transport).await?;
    let mut cat = ferry()
        .args(["cat", &stack.ticket.encode()?, "--transport", transport])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = cat.stdin.take().context("stdin")?;
    // Feed data until the pipe breaks (bounded: 1 GiB).
    tokio::spawn(async move {
        let mut block = vec![0u8; 64 * 1024];
        Pattern::new(9).fill(&mut block);
        for _ in 0..16_384 {
            if stdin.write_all(&block).await.is_err() {
                break;
            }
        }
    });
    let mut stdout = cat.stdout.take().context("stdout")?;
    let mut first = vec![0u8; MIB];
    stdout.read_exact(&mut first).await.context("the echo started")?;
    tokio::spawn(async move {
        let mut sink = vec![0u8; 64 * 1024];
        while matches!(stdout.read(&mut sink).await, Ok(n) if n > 0) {}
    });

    // The relay goes away mid-stream. Its resets and close usually arrive at once; if the
    // client's socket was too full to take them (a busy machine), the client's idle
    // timeout (20 s) is the bound.
    stack.relay.shutdown(Duration::ZERO).await;
    let limit = HopOptions::client().idle_timeout + Duration::from_secs(5);
    let status = tokio::time::timeout(limit, cat.wait()).await.context("ferry cat hung")??;
    let mut stderr = String::new();
    cat.stderr.take().context("stderr")?.read_to_string(&mut stderr).await?;
    ensure!(!status.success(), "ferry cat reported success for a cut stream ({transport})");
    ensure!(stderr.trim_end().lines().count() == 1, "expected one error line, got {stderr:?}");
    eprintln!("{transport}: {}", stderr.trim_end());
    stack.host.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_cut_mid_stream_is_an_error_for_ferry_cat_over_quic() -> Result<()> {
    cut_relay_under_ferry_cat("quic").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_cut_mid_stream_is_an_error_for_ferry_cat_over_tcp() -> Result<()> {
    cut_relay_under_ferry_cat("tcp").await
}

/// A service that reports (once) when a connection to it ends, and how many bytes it got.
async fn watching_service() -> Result<(std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<u64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut total = 0u64;
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                    if stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = tx.send(total);
            });
        }
    });
    Ok((addr, rx))
}

async fn kill_client_mid_session(transport: &str, limit: Duration) -> Result<()> {
    let (service, mut ended) = watching_service().await?;
    let stack = LocalStack::start(service, |_| {}).await?;
    let mut cat = ferry()
        .args(["cat", &stack.ticket.encode()?, "--transport", transport])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = cat.stdin.take().context("stdin")?;
    stdin.write_all(b"hello before the crash").await?;
    let mut back = [0u8; 22];
    cat.stdout.take().context("stdout")?.read_exact(&mut back).await?;
    assert_eq!(&back, b"hello before the crash");

    cat.start_kill()?;
    let killed = Instant::now();
    let got = tokio::time::timeout(limit, ended.recv()).await.context("the host kept the local connection open")?;
    assert_eq!(got, Some(22));
    // Nothing leaks: the relay's session ends too, and its gauge agrees.
    let mut active = stack.relay.active_sessions();
    tokio::time::timeout(limit, active.wait_for(|n| *n == 0))
        .await
        .context("the relay still counts the dead client's session")??;
    assert_eq!(metric(&stack.relay.metrics_text(), "ferry_relay_sessions_active"), 0.0);
    eprintln!("{transport}: local connection closed {:?} after the client died", killed.elapsed());
    drop(stdin);
    stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_tcp_client_closes_the_hosts_local_connection_at_once() -> Result<()> {
    kill_client_mid_session("tcp", Duration::from_secs(5)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_quic_client_closes_the_hosts_local_connection_within_the_idle_timeout() -> Result<()> {
    // A QUIC client that dies sends nothing: the relay notices when the connection's
    // idle timeout (the client's 20 s) runs out.
    kill_client_mid_session("quic", Duration::from_secs(30)).await
}

/// A stack whose client reaches the relay through an impaired UDP link.
async fn impaired(link: Arc<Impairment>, options: HopOptions) -> Result<(LocalStack, Client)> {
    let (service, _echo) = echo_service().await?;
    let stack = LocalStack::start(service, |_| {}).await?;
    let proxy = udp_proxy(stack.relay.local_addr(), link).await?;
    let mut ticket = stack.ticket.clone();
    ticket.relays = vec![RelayAddr { addr: proxy.to_string(), trust: RelayTrust::Pin(stack.relay.pin()) }];
    let client = Client::new(ticket, StaticKey::generate()?, options).with_transport(Transport::Quic);
    Ok((stack, client))
}

/// Echoes `rounds` × 64 KiB through `session`, checking each round; `between` runs after
/// the first round.
async fn echo_rounds(client: &Client, rounds: u8, between: impl Future<Output = ()>) -> Result<()> {
    let session = client.open_session().await?;
    let (app, bridge) = session.spawn_pipe(256 * 1024);
    let (mut app_r, mut app_w) = tokio::io::split(app);
    let mut between = Some(between);
    for n in 0..rounds {
        let chunk = vec![n; 64 * 1024];
        app_w.write_all(&chunk).await?;
        let mut back = vec![0u8; chunk.len()];
        app_r.read_exact(&mut back).await?;
        ensure!(back == chunk, "round {n} altered");
        if let Some(f) = between.take() {
            f.await;
        }
    }
    app_w.shutdown().await?;
    ensure!(app_r.read(&mut [0u8; 1]).await? == 0);
    bridge.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_blackhole_is_ridden_out_within_the_idle_timeout() -> Result<()> {
    let link = Impairment::new(Duration::ZERO, 0);
    let (stack, client) = impaired(link.clone(), HopOptions::client()).await?;
    let outage = async {
        link.set_blackhole(true);
        // The fault itself lasts 10 s; this sleep is the outage, not a synchronisation.
        tokio::time::sleep(Duration::from_secs(10)).await;
        link.set_blackhole(false);
    };
    // Writes during the outage wait; keep-alives resume the connection afterwards.
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(40), echo_rounds(&client, 16, outage)).await??;
    ensure!(link.dropped() > 0, "the blackhole dropped nothing");
    eprintln!("session survived a 10 s blackhole ({} datagrams dropped) in {:?}", link.dropped(), started.elapsed());
    stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackhole_longer_than_the_idle_timeout_ends_the_session_with_an_error() -> Result<()> {
    let link = Impairment::new(Duration::ZERO, 0);
    let options =
        HopOptions { keep_alive: Duration::from_secs(1), idle_timeout: Duration::from_secs(3), ..HopOptions::client() };
    let (stack, client) = impaired(link.clone(), options).await?;
    let started = Instant::now();
    let outage = async {
        link.set_blackhole(true);
    };
    let result = tokio::time::timeout(Duration::from_secs(15), echo_rounds(&client, 4, outage)).await?;
    let err = result.err().context("a session across a dead link must fail")?;
    ensure!(started.elapsed() < Duration::from_secs(8), "took {:?} to notice", started.elapsed());
    eprintln!("dead link noticed after {:?}: {err:#}", started.elapsed());
    stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_cross_a_lossy_50_ms_link_intact_over_quic() -> Result<()> {
    // 25 ms each way (50 ms RTT) and 1% loss each way. The kernel here has no sch_netem,
    // so the impairment is a userspace UDP proxy; TCP cannot be impaired this way.
    // One way (client → service) so the test stays near a minute: loss-based congestion
    // control manages a couple of Mbit/s on such a link.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let service = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    ctx.update(&buf[..n]);
                }
                let _ = stream.write_all(ctx.finish().as_ref()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    let link = Impairment::new(Duration::from_millis(25), 10_000);
    let stack = LocalStack::start(service, |_| {}).await?;
    let proxy = udp_proxy(stack.relay.local_addr(), link.clone()).await?;
    let mut ticket = stack.ticket.clone();
    ticket.relays = vec![RelayAddr { addr: proxy.to_string(), trust: RelayTrust::Pin(stack.relay.pin()) }];
    let options = HopOptions { stream_window: 4 << 20, ..HopOptions::client() };
    let client = Client::new(ticket, StaticKey::generate()?, options).with_transport(Transport::Quic);

    let session = client.open_session().await?;
    let (app, bridge) = session.spawn_pipe(256 * 1024);
    let (mut app_r, mut app_w) = tokio::io::split(app);
    let mut data = vec![0u8; 16 * MIB];
    Pattern::new(50).fill(&mut data);
    let started = Instant::now();
    app_w.write_all(&data).await?;
    app_w.shutdown().await?;
    let mut digest = Vec::new();
    tokio::time::timeout(Duration::from_secs(240), app_r.read_to_end(&mut digest)).await??;
    bridge.await??;
    let secs = started.elapsed().as_secs_f64();
    ensure!(digest == ring::digest::digest(&ring::digest::SHA256, &data).as_ref(), "the service got different bytes");
    eprintln!(
        "16 MiB over 50 ms RTT, 1% loss, QUIC: {secs:.1} s, {:.2} Mbit/s, {} datagrams dropped",
        16.0 * 8.0 * 1.048_576 / secs,
        link.dropped()
    );
    stack.shutdown().await;
    Ok(())
}
