//! The load loops, the same for every row; each connects to `entry` (the forwarder's
//! client-side address) and talks to the service in `support::service`. Every loop has
//! a fixed count and a deadline, and checks what came back, so a forwarder that drops or
//! alters bytes fails instead of looking fast.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry::local::Pattern;
use ferry_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::forwarders::{Running, new_client};
use crate::support::service::{MODE_DOWNLOAD, MODE_ECHO, MODE_UPLOAD};

async fn connect(entry: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect(entry).await.with_context(|| format!("connecting to {entry}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn upload(entry: SocketAddr, bytes: u64) -> Result<()> {
    let stream = connect(entry).await?;
    let (mut r, mut w) = stream.into_split();
    let mut block = vec![0u8; 64 * 1024];
    Pattern::new(bytes).fill(&mut block);
    w.write_all(&[MODE_UPLOAD]).await?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        w.write_all(&block[..n]).await?;
        left -= n as u64;
    }
    w.shutdown().await?;
    let got = r.read_u64().await.context("reading the sink's count")?;
    if got != bytes {
        bail!("the sink counted {got} bytes, {bytes} were sent");
    }
    Ok(())
}

async fn download(entry: SocketAddr, bytes: u64) -> Result<()> {
    let mut stream = connect(entry).await?;
    let mut request = vec![MODE_DOWNLOAD];
    request.extend_from_slice(&bytes.to_be_bytes());
    stream.write_all(&request).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    if total != bytes {
        bail!("received {total} bytes, the source sent {bytes}");
    }
    Ok(())
}

/// Which way a transfer goes: client to service, or back.
#[derive(Clone, Copy, Debug)]
pub enum Direction {
    Up,
    Down,
}

/// Aggregate Gbit/s of `sessions` parallel transfers of `each` bytes.
pub async fn throughput(
    entry: SocketAddr,
    dir: Direction,
    sessions: usize,
    each: u64,
    deadline: Duration,
) -> Result<f64> {
    let started = Instant::now();
    let work = async {
        let mut tasks = Vec::new();
        for _ in 0..sessions {
            tasks.push(tokio::spawn(async move {
                match dir {
                    Direction::Up => upload(entry, each).await,
                    Direction::Down => download(entry, each).await,
                }
            }));
        }
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(deadline, work).await.context("timed out")??;
    let secs = started.elapsed().as_secs_f64();
    Ok((sessions as u64 * each) as f64 * 8.0 / secs / 1e9)
}

/// 64-byte request/response round trips on one session: (p50, p99) in µs.
pub async fn latency(entry: SocketAddr, warm_up: usize, count: usize, deadline: Duration) -> Result<(f64, f64)> {
    let work = async {
        let mut stream = connect(entry).await?;
        stream.write_all(&[MODE_ECHO]).await?;
        let request = [0x42u8; 64];
        let mut answer = [0u8; 64];
        let mut samples = Vec::with_capacity(count);
        for i in 0..warm_up + count {
            let started = Instant::now();
            stream.write_all(&request).await?;
            stream.read_exact(&mut answer).await?;
            if i >= warm_up {
                samples.push(started.elapsed());
            }
        }
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1e6
        };
        anyhow::Ok((at(0.50), at(0.99)))
    };
    tokio::time::timeout(deadline, work).await.context("timed out")?
}

/// One short session: connect, exchange one byte through the echo, close.
pub async fn one_exchange(entry: SocketAddr) -> Result<TcpStream> {
    let mut stream = connect(entry).await?;
    stream.write_all(&[MODE_ECHO, 0x11]).await?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await?;
    if byte[0] != 0x11 {
        bail!("the echo answered a different byte");
    }
    Ok(stream)
}

/// New sessions per second: `count` sessions, `in_flight` at a time.
pub async fn setup_rate(entry: SocketAddr, count: usize, in_flight: usize, deadline: Duration) -> Result<f64> {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let work = async {
        let mut workers = Vec::new();
        for _ in 0..in_flight {
            let next = next.clone();
            workers.push(tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                    let mut stream = tokio::time::timeout(Duration::from_secs(10), one_exchange(entry))
                        .await
                        .context("one session took over 10 s")??;
                    stream.shutdown().await?;
                    // Wait for the far end to close too, so the session is really over.
                    let mut rest = [0u8; 8];
                    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut rest)).await;
                }
                anyhow::Ok(())
            }));
        }
        for w in workers {
            w.await??;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(deadline, work).await.context("timed out")??;
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Idle sessions held open; dropping it closes them.
#[derive(Default)]
pub struct IdleSessions {
    streams: Vec<TcpStream>,
    /// ferry: the client end of each session's local pipe, and the bridge tasks.
    pipes: Vec<tokio::io::DuplexStream>,
    bridges: Vec<tokio::task::AbortHandle>,
    clients: Vec<Arc<Client>>,
}

impl IdleSessions {
    pub fn len(&self) -> usize {
        self.streams.len() + self.pipes.len()
    }

    pub async fn close(self) {
        for client in &self.clients {
            client.close().await;
        }
        for b in &self.bridges {
            b.abort();
        }
        drop(self.streams);
        drop(self.pipes);
    }
}

/// Opens TCP sessions through `entry` until `idle` holds `total`, 32 at a time; each one
/// has carried one byte each way, so it is established end to end.
async fn open_idle_tcp(entry: SocketAddr, idle: &mut IdleSessions, total: usize) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut want = total - idle.len();
    while want > 0 || !tasks.is_empty() {
        while want > 0 && tasks.len() < 32 {
            tasks.spawn(tokio::time::timeout(Duration::from_secs(10), one_exchange(entry)));
            want -= 1;
        }
        if let Some(done) = tasks.join_next().await {
            idle.streams.push(done?.context("one session took over 10 s")??);
        }
    }
    Ok(())
}

/// Opens idle sessions until `idle` holds `total`. ferry opens them with the client
/// library directly (spread over clients: a relay allows 1,024 sessions per client
/// connection), each bridged to an in-memory pipe that carries one byte each way.
pub async fn open_idle(run: &Running, idle: &mut IdleSessions, total: usize) -> Result<()> {
    let Some(ferry) = &run.ferry else {
        return open_idle_tcp(run.entry, idle, total).await;
    };
    const PER_CLIENT: usize = 1_000;
    while idle.len() < total {
        if idle.pipes.len() >= idle.clients.len() * PER_CLIENT {
            let client = Arc::new(new_client(&ferry.ticket, ferry.transport, ferry.resumable)?);
            client.warm_up().await?;
            idle.clients.push(client);
        }
        let client = idle.clients.last().context("a client")?.clone();
        let room = (idle.clients.len() * PER_CLIENT - idle.pipes.len()).min(total - idle.len());
        let mut tasks = tokio::task::JoinSet::new();
        let mut want = room;
        while want > 0 || !tasks.is_empty() {
            while want > 0 && tasks.len() < 32 {
                let client = client.clone();
                tasks.spawn(tokio::time::timeout(Duration::from_secs(10), async move {
                    let session = client.open_session().await?;
                    let (mut near, bridge) = session.spawn_pipe(4096);
                    near.write_all(&[MODE_ECHO, 0x11]).await?;
                    let mut byte = [0u8; 1];
                    near.read_exact(&mut byte).await?;
                    anyhow::Ok((near, bridge.abort_handle()))
                }));
                want -= 1;
            }
            if let Some(done) = tasks.join_next().await {
                let (pipe, bridge) = done?.context("one session took over 10 s")??;
                idle.pipes.push(pipe);
                idle.bridges.push(bridge);
            }
        }
    }
    Ok(())
}
