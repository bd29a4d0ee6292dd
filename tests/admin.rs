//! The admin port survives hostile clients: 500 idle connections, 1 MiB request heads, a
//! head sent one byte per second and pipelined garbage, all at once against a running
//! relay, while a well-behaved scraper gets `/metrics` in under a second every time.
//!
//! Real sockets on loopback and real time: the timeouts under test are what is measured,
//! so the clock is not paused. Every hostile part is bounded in count, and the whole test
//! in time.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use ferry_relay::{Relay, RelayConfig, TlsIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Idle connections held open against the admin port.
const IDLE: usize = 500;
/// Clients that each send a 1 MiB request head.
const HUGE_HEADS: usize = 4;
/// Clients that each send a head one byte per second.
const SLOW_LORIS: usize = 3;
/// Clients that each send a good request followed by garbage in one write.
const GARBAGE: usize = 20;
/// What a scrape may take, each time, however hostile the other clients are.
const SCRAPE_BOUND: Duration = Duration::from_secs(1);
/// Pause between two scrapes.
const SCRAPE_EVERY: Duration = Duration::from_millis(100);
/// Most scrapes; the scraper stops earlier once the hostile clients are done.
const MAX_SCRAPES: usize = 300;
/// The relay's header-read timeout is 5 s: a slow or idle client must be cut off by then,
/// give or take this much for a loaded machine.
const CUT_OFF_BY: Duration = Duration::from_secs(9);
/// The whole test.
const DEADLINE: Duration = Duration::from_secs(60);

/// Raises the soft open-file limit to `needed` if it is lower (the hard limit permitting):
/// the idle connections count twice, once per end, in this one process.
fn raise_open_file_limit(needed: u64) -> Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|current| current >= needed) {
        return Ok(());
    }
    ensure!(limit.maximum.is_none_or(|maximum| maximum >= needed), "the hard open-file limit is below {needed}");
    setrlimit(Resource::Nofile, Rlimit { current: Some(needed), maximum: limit.maximum })?;
    Ok(())
}

/// One scrape the way Prometheus does it when it does not keep the connection: connect,
/// `GET /metrics`, read the answer to its end. Returns how long it took.
async fn scrape(admin: std::net::SocketAddr) -> Result<Duration> {
    let started = Instant::now();
    let response = tokio::time::timeout(SCRAPE_BOUND, async {
        let mut stream = TcpStream::connect(admin).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nAccept: text/plain\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8(response)?)
    })
    .await
    .with_context(|| format!("a scrape took longer than {SCRAPE_BOUND:?}"))??;
    ensure!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    ensure!(response.contains("\nferry_relay_sessions_active 0\n"), "{response}");
    Ok(started.elapsed())
}

/// Whether the server has closed `stream` (EOF or reset) within `within`, and when.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .context("the server kept a connection open past its timeout")?;
    Ok(started.elapsed())
}

/// Sends a 1 MiB head and reads what comes back; the server must refuse it (`431`) or cut
/// it off, and quickly.
async fn huge_head(admin: std::net::SocketAddr) -> Result<()> {
    let stream = TcpStream::connect(admin).await?;
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut head = b"GET /metrics HTTP/1.1\r\nHost: relay\r\nX-Padding: ".to_vec();
        head.resize(head.len() + (1 << 20), b'a');
        head.extend_from_slice(b"\r\n\r\n");
        // The server stops reading long before the end: this write fails or stalls.
        let _ = tokio::time::timeout(CUT_OFF_BY, write.write_all(&head)).await;
    });
    let mut answer = Vec::new();
    let ended = tokio::time::timeout(CUT_OFF_BY, read.read_to_end(&mut answer)).await;
    writer.abort();
    ensure!(ended.is_ok(), "a 1 MiB head kept its connection open");
    // A reset may destroy the answer before it is read; if one arrived, it is the refusal.
    if !answer.is_empty() {
        let answer = String::from_utf8_lossy(&answer);
        ensure!(answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{answer}");
    }
    Ok(())
}

/// Sends a head one byte per second; the server must cut the connection off long before
/// the head is complete.
async fn slow_loris(admin: std::net::SocketAddr) -> Result<Duration> {
    let head = b"GET /metrics HTTP/1.1\r\nHost: relay\r\nX-Slow: 0123456789\r\n\r\n";
    let mut stream = TcpStream::connect(admin).await?;
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    for byte in head {
        if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
            return Ok(started.elapsed());
        }
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Ok(started.elapsed()),
                Ok(_) => anyhow::bail!("the server answered an incomplete head"),
            },
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    anyhow::bail!("the server waited {:?} for a head sent one byte per second", started.elapsed())
}

/// A good request and garbage behind it in one write: the request is answered, the
/// garbage refused, the connection closed.
async fn pipelined_garbage(admin: std::net::SocketAddr, seed: u8) -> Result<()> {
    let mut stream = TcpStream::connect(admin).await?;
    let mut bytes = b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n".to_vec();
    bytes.extend((0..4096u32).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 0x80));
    bytes.extend_from_slice(b"\r\n\r\n");
    stream.write_all(&bytes).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(CUT_OFF_BY, stream.read_to_end(&mut answer))
        .await
        .context("pipelined garbage kept its connection open")??;
    let answer = String::from_utf8_lossy(&answer);
    ensure!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    ensure!(answer.contains("\r\n\r\nok\nHTTP/1.1 400 Bad Request\r\n"), "{answer}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_answers_scrapers_while_hostile_clients_pile_up() -> Result<()> {
    raise_open_file_limit(4096)?;
    let identity = TlsIdentity::self_signed(&["localhost".into()])?;
    let mut config = RelayConfig::new(([127, 0, 0, 1], 0).into(), identity);
    config.admin = Some(([127, 0, 0, 1], 0).into());
    let relay = Relay::spawn(config).await?;
    let admin = relay.admin_addr().context("admin listener")?;

    tokio::time::timeout(DEADLINE, async {
        scrape(admin).await.context("a scrape before any attack")?;

        let mut idle = Vec::with_capacity(IDLE);
        for _ in 0..IDLE {
            idle.push(TcpStream::connect(admin).await?);
        }
        scrape(admin).await.context("a scrape beside 500 idle connections")?;

        let mut hostile = JoinSet::new();
        for _ in 0..HUGE_HEADS {
            hostile.spawn(async move { huge_head(admin).await.context("1 MiB head") });
        }
        for _ in 0..SLOW_LORIS {
            hostile.spawn(async move {
                let cut = slow_loris(admin).await.context("slow loris")?;
                ensure!(cut <= CUT_OFF_BY, "a slow loris was cut off only after {cut:?}");
                Ok(())
            });
        }
        for seed in 0..GARBAGE {
            hostile.spawn(async move { pipelined_garbage(admin, seed as u8).await.context("pipelined garbage") });
        }
        // The idle connections must be closed by the server, which frees their slots.
        let idle_closed = tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for stream in &mut idle {
                slowest = slowest.max(closed_within(stream, CUT_OFF_BY).await?);
            }
            anyhow::Ok(slowest)
        });

        let mut scrapes = 0;
        let mut slowest = Duration::ZERO;
        while !hostile.is_empty() && scrapes < MAX_SCRAPES {
            slowest = slowest.max(scrape(admin).await.with_context(|| format!("scrape {scrapes} under attack"))?);
            scrapes += 1;
            tokio::select! {
                Some(done) = hostile.join_next() => done??,
                () = tokio::time::sleep(SCRAPE_EVERY) => {}
            }
        }
        while let Some(done) = hostile.join_next().await {
            done??;
        }
        idle_closed.await??;
        // The slow clients take seconds to cut off; scrapes went on all that time.
        ensure!(scrapes >= 10, "only {scrapes} scrapes ran while the attack lasted");
        scrape(admin).await.context("a scrape after the attack")?;
        eprintln!("{scrapes} scrapes under attack, slowest {slowest:?}");
        anyhow::Ok(())
    })
    .await
    .context("the test's deadline")??;
    relay.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
