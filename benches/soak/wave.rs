//! The load of the soak: one session (open, echo a tagged payload, hold, close, check
//! the byte counts), a wave of them held open together while the relay is sampled, the
//! clients that carry them, and the wait for the relay's numbers to settle afterwards.
//! Every step has a timeout and every wave a deadline, so a stuck relay ends the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferry_client::{Client, HopOptions};
use ferry_proto::{StaticKey, Ticket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::Opts;
use crate::support::procfs::{open_fds, rss_kib};

/// Longest wait for one step (open, echo, close) of one session.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the relay's numbers to settle after the last wave.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The relay's resident memory and open files at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub rss_kib: u64,
    pub fds: u64,
}

impl Sample {
    /// Reads both from `/proc/<pid>`.
    pub fn of(pid: u32) -> Result<Sample> {
        Ok(Sample { rss_kib: rss_kib(pid)?, fds: open_fds(pid)? })
    }

    /// The larger of each.
    pub fn max(self, other: Sample) -> Sample {
        Sample { rss_kib: self.rss_kib.max(other.rss_kib), fds: self.fds.max(other.fds) }
    }
}

/// What one wave did.
#[derive(Debug, Default)]
pub struct WaveResult {
    /// Sessions that opened, echoed and closed cleanly.
    pub ok: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub peak: Sample,
    pub open_and_echo: Duration,
    pub total: Duration,
}

/// One session: open, echo `payload` (tagged with `id`), report, wait for the signal to
/// close, close (half-close travels end to end and back), check the byte counts.
async fn one_session(
    client: Arc<Client>,
    id: u64,
    payload: usize,
    echoed: mpsc::UnboundedSender<Result<(), String>>,
    mut close: watch::Receiver<bool>,
) -> Result<()> {
    let opened = async {
        let session = tokio::time::timeout(STEP_TIMEOUT, client.open_session()).await.context("open timed out")??;
        let (app, bridge) = session.spawn_pipe(16 * 1024);
        let (mut app_r, mut app_w) = tokio::io::split(app);
        let mut data = vec![0u8; payload];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (id.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8;
        }
        let mut back = vec![0u8; payload];
        tokio::time::timeout(STEP_TIMEOUT, async {
            app_w.write_all(&data).await?;
            app_r.read_exact(&mut back).await?;
            anyhow::Ok(())
        })
        .await
        .context("echo timed out")??;
        anyhow::ensure!(back == data, "the echo came back altered");
        anyhow::Ok((app_r, app_w, bridge))
    }
    .await;
    let (mut app_r, mut app_w, bridge) = match opened {
        Ok(parts) => {
            let _ = echoed.send(Ok(()));
            parts
        }
        Err(e) => {
            let _ = echoed.send(Err(format!("{e:#}")));
            return Err(e);
        }
    };
    drop(echoed);
    // The wave's deadline bounds this wait (the sender is dropped or set to true).
    let _ = close.wait_for(|&c| c).await;
    tokio::time::timeout(STEP_TIMEOUT, async {
        app_w.shutdown().await?;
        let mut rest = Vec::new();
        app_r.read_to_end(&mut rest).await?;
        anyhow::ensure!(rest.is_empty(), "{} unexpected bytes after the echo", rest.len());
        let moved = bridge.await??;
        anyhow::ensure!(
            moved.sent == payload as u64 && moved.received == payload as u64,
            "carried {moved:?}, expected {payload} each way"
        );
        anyhow::Ok(())
    })
    .await
    .context("close timed out")?
}

/// Runs one wave of `count` sessions spread over `clients`; nothing in it outlives
/// `deadline`.
pub async fn wave(
    relay_pid: u32,
    clients: &[Arc<Client>],
    first_id: u64,
    count: usize,
    payload: usize,
    deadline: Instant,
) -> WaveResult {
    let started = Instant::now();
    let mut result = WaveResult::default();
    let (echoed_tx, mut echoed_rx) = mpsc::unbounded_channel();
    let (close_tx, close_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let client = clients[i % clients.len()].clone();
        tasks.spawn(one_session(client, first_id + i as u64, payload, echoed_tx.clone(), close_rx.clone()));
    }
    drop(echoed_tx);

    // Every session reports once it has echoed (or failed); sample the relay meanwhile.
    let mut reported = 0usize;
    let mut peak = Sample::of(relay_pid).unwrap_or_default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while reported < count {
        tokio::select! {
            r = echoed_rx.recv() => match r {
                Some(_) => reported += 1,
                None => break,
            },
            _ = tick.tick() => peak = peak.max(Sample::of(relay_pid).unwrap_or_default()),
            _ = tokio::time::sleep_until(deadline.into()) => break,
        }
    }
    // All are open now (those that could): this is the peak.
    peak = peak.max(Sample::of(relay_pid).unwrap_or_default());
    result.open_and_echo = started.elapsed();
    let _ = close_tx.send(true);
    drop(close_tx);

    let mut failures = Vec::new();
    let joined = tokio::time::timeout_at(deadline.into(), async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => result.ok += 1,
                Ok(Err(e)) => failures.push(format!("{e:#}")),
                Err(e) => failures.push(format!("session task: {e}")),
            }
        }
    })
    .await;
    if joined.is_err() {
        failures.push(format!("wave deadline reached with {} sessions unfinished", tasks.len()));
        tasks.abort_all();
    }
    result.failed = count as u64 - result.ok;
    result.first_error = failures.into_iter().next();
    result.peak = peak;
    result.total = started.elapsed();
    result
}

/// Connects `opts.clients` clients to the relay (each has its QUIC or TCP connection up).
pub async fn connect_clients(opts: &Opts, ticket: &Ticket) -> Result<Vec<Arc<Client>>> {
    let mut clients = Vec::new();
    for _ in 0..opts.clients {
        let client =
            Client::new(ticket.clone(), StaticKey::generate()?, HopOptions::client()).with_transport(opts.transport);
        client.warm_up().await.context("a client could not reach the relay")?;
        clients.push(Arc::new(client));
    }
    Ok(clients)
}

/// Closes every client's connection to the relay.
pub async fn close_clients(clients: Vec<Arc<Client>>) {
    for client in &clients {
        client.close().await;
    }
}

/// Samples every second until RSS and fds have not fallen for 3 samples in a row (or
/// `SETTLE_TIMEOUT`); returns the last sample and how long it took.
pub async fn settle(relay_pid: u32) -> Result<(Sample, Duration)> {
    let started = Instant::now();
    let mut last = Sample::of(relay_pid)?;
    let mut steady = 0;
    while started.elapsed() < SETTLE_TIMEOUT && steady < 3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Sample::of(relay_pid)?;
        if now.rss_kib < last.rss_kib || now.fds < last.fds {
            steady = 0;
        } else {
            steady += 1;
        }
        last = now;
    }
    Ok((last, started.elapsed()))
}
