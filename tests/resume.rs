//! End-to-end resumption (issue 15) against real `ferry-relay` processes on loopback: a host
//! registered at two relays, a resumable client serving a local port (what `ferry connect`
//! runs), and an echo service behind the host. The carrying relay is killed mid-stream; the
//! bytes must arrive exact (SHA-256) over the local connection, which never closes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::netlab::{Machine, NetLab};
use common::process::RelayProcess;
use common::ticket;
use ferry::local::{Pattern, echo_service, pattern_digest};
use ferry_client::{Client, HopOptions, Host, HostConfig, HostIdentity, Transport};
use ferry_proto::{RelayAddr, RelayTrust, StaticKey, Ticket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A relay process in its own directory, draining for at most `drain` on SIGTERM.
async fn relay(dir: &std::path::Path, drain: Duration) -> Result<RelayProcess> {
    let state = dir.join("state");
    std::fs::create_dir_all(&state)?;
    let drain = drain.as_secs();
    let config = format!(
        "[relay]\nlisten = \"127.0.0.1:0\"\nstate_dir = {state:?}\nshutdown_deadline_secs = {drain}\n\
         [admin]\nenabled = true\nlisten = \"127.0.0.1:0\"\n[limits]\nconnections_per_minute_per_source = 0\n[log]\nlevel = \"warn\"\n"
    );
    RelayProcess::start(&config, dir, &[]).await
}

/// Two relays, a host at both in front of an echo service, and a resumable client's local
/// port. `resume_timeout` on both sides.
struct Stack {
    relays: [RelayProcess; 2],
    host: Host,
    client: Arc<Client>,
    local: std::net::SocketAddr,
    _echo: tokio::task::JoinHandle<()>,
    _dirs: [tempfile::TempDir; 2],
}

async fn stack(resume_timeout: Duration) -> Result<Stack> {
    stack_draining(resume_timeout, Duration::from_secs(30)).await
}

/// [`stack`] with relays that drain for at most `drain` on SIGTERM.
async fn stack_draining(resume_timeout: Duration, drain: Duration) -> Result<Stack> {
    stack_with(resume_timeout, drain, false).await
}

/// [`stack_draining`]; with `direct`, the host also has a direct port (on loopback) that
/// the ticket does not name: the client learns it only by punching, through a relay.
async fn stack_with(resume_timeout: Duration, drain: Duration, direct: bool) -> Result<Stack> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let relays = [relay(dirs[0].path(), drain).await?, relay(dirs[1].path(), drain).await?];
    let addrs: Vec<RelayAddr> = relays.iter().flat_map(|r| r.relays(r.pin)).collect();
    let (service, echo) = echo_service().await?;
    let identity = HostIdentity::generate()?;
    let mut config = HostConfig::new(identity.clone(), addrs.clone(), service.to_string());
    config.resume_timeout = resume_timeout;
    if direct {
        config.direct = Some(ferry_client::DirectConfig::new(([127, 0, 0, 1], 0).into()));
    }
    let host = Host::try_spawn(config)?;
    let mut status = host.status();
    tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.registered.iter().all(|r| *r)))
        .await
        .context("the host did not register at both relays")??;
    let mut client =
        Client::new(ticket(&identity, addrs), StaticKey::generate()?, HopOptions::client()).resumable(true);
    client.resume_timeout = resume_timeout;
    let client = Arc::new(client);
    let local = common::local_port(client.clone()).await?;
    Ok(Stack { relays, host, client, local, _echo: echo, _dirs: dirs })
}

/// Progress of a transfer, for the test to act mid-stream and to report the stall.
#[derive(Default)]
struct Progress {
    received: AtomicU64,
    /// The longest wait between two reads, in microseconds.
    longest_gap_us: AtomicU64,
}

/// Sends `len` pattern bytes through `stream` while reading back; returns the SHA-256 and
/// length of what came back, or the read error.
async fn echo(stream: TcpStream, seed: u64, len: u64, progress: &Progress) -> Result<(Vec<u8>, u64), std::io::Error> {
    echo_paced(stream, seed, len, None, progress).await
}

/// [`echo`], writing at most 16 KiB per `pace` when given (a stream that lasts a while).
async fn echo_paced(
    stream: TcpStream,
    seed: u64,
    len: u64,
    pace: Option<Duration>,
    progress: &Progress,
) -> Result<(Vec<u8>, u64), std::io::Error> {
    stream.set_nodelay(true)?;
    let (mut r, mut w) = stream.into_split();
    let writer = async move {
        let mut pattern = Pattern::new(seed);
        let mut buf = vec![0u8; if pace.is_some() { 16 } else { 64 } * 1024];
        let mut left = len;
        let mut ticks = pace.map(tokio::time::interval);
        while left > 0 {
            if let Some(ticks) = &mut ticks {
                ticks.tick().await;
            }
            let n = left.min(buf.len() as u64) as usize;
            pattern.fill(&mut buf[..n]);
            w.write_all(&buf[..n]).await?;
            left -= n as u64;
        }
        w.shutdown().await
    };
    let reader = async {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        let mut last = Instant::now();
        loop {
            let n = r.read(&mut buf).await?;
            let gap = last.elapsed().as_micros() as u64;
            progress.longest_gap_us.fetch_max(gap, Ordering::Relaxed);
            last = Instant::now();
            if n == 0 {
                return Ok::<_, std::io::Error>((ctx.finish().as_ref().to_vec(), total));
            }
            ctx.update(&buf[..n]);
            total += n as u64;
            progress.received.store(total, Ordering::Relaxed);
        }
    };
    let (written, read) = tokio::join!(writer, reader);
    let read = read?;
    written?;
    Ok(read)
}

/// Waits (bounded) until `progress` has seen `bytes` come back.
async fn until_received(progress: &Progress, bytes: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.received.load(Ordering::Relaxed) < bytes {
        ensure!(Instant::now() < deadline, "the transfer did not reach {bytes} bytes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The index of the relay carrying the client's sessions.
fn carrying(stack: &Stack, addr: &str) -> Result<usize> {
    stack.relays.iter().position(|r| r.addr == addr).context("the hop in use is neither relay")
}

/// Issue 15, shown item 2: the relay carrying a session is killed with SIGKILL mid-stream; the
/// session moves to the other relay and 256 MiB each way arrive byte-exact, the local
/// connection never closing.
#[tokio::test]
async fn a_session_survives_sigkill_of_its_relay() -> Result<()> {
    const LEN: u64 = 256 << 20;
    let mut stack = stack(Duration::from_secs(30)).await?;
    let progress = Progress::default();
    let stream = TcpStream::connect(stack.local).await?;
    let transfer = echo(stream, 15, LEN, &progress);
    let kill = async {
        until_received(&progress, LEN / 4).await?;
        let (addr, _) = stack.client.hop_in_use().await.context("no hop in use")?;
        let which = carrying(&stack, &addr)?;
        stack.relays[which].signal("KILL")?;
        let killed_at = Instant::now();
        let at = progress.received.load(Ordering::Relaxed);
        anyhow::Ok((which, killed_at, at))
    };
    let (result, killed) = tokio::join!(transfer, kill);
    let (which, killed_at, at) = killed?;
    let (digest, got) = result.context("the local connection saw an error")?;
    ensure!(got == LEN, "{got} of {LEN} bytes came back");
    ensure!(digest == pattern_digest(15, LEN), "the bytes came back altered");
    let stall = Duration::from_micros(progress.longest_gap_us.load(Ordering::Relaxed));
    eprintln!(
        "relay {} SIGKILLed after {at} bytes back; transfer complete {:?} later; longest stall between reads {stall:?}",
        which + 1,
        killed_at.elapsed()
    );
    stack.relays[which].child.wait().await?;
    stack.host.shutdown().await;
    Ok(())
}

/// Issue 15, shown item 4: SIGTERM on the carrying relay with 100 resumable sessions in
/// flight. The relay tells the host `GoingAway`; the host moves its resumable sessions off it
/// at once (they resume through the other relay), so every session's bytes are exact and the
/// relay exits as soon as they have left, well before its drain deadline.
#[tokio::test]
async fn sigterm_moves_sessions_away_and_the_relay_exits_before_its_deadline() -> Result<()> {
    const SESSIONS: usize = 100;
    const LEN: u64 = 2 << 20;
    let drain = Duration::from_secs(60);
    // 16 KiB every 50 ms: each session lasts about 6 s, so all are in flight together.
    let pace = Some(Duration::from_millis(50));
    let mut stack = stack_draining(Duration::from_secs(30), drain).await?;
    stack.client.warm_up().await?;
    let progress: Vec<Arc<Progress>> = (0..SESSIONS).map(|_| Arc::default()).collect();
    let mut transfers = tokio::task::JoinSet::new();
    for (i, slot) in progress.iter().enumerate() {
        let (local, progress) = (stack.local, slot.clone());
        transfers.spawn(async move {
            let stream = TcpStream::connect(local).await?;
            let seed = 100 + i as u64;
            let (digest, got) =
                echo_paced(stream, seed, LEN, pace, &progress).await.context("a local connection saw an error")?;
            ensure!(got == LEN && digest == pattern_digest(seed, LEN), "session {i}: {got} of {LEN} bytes, or altered");
            anyhow::Ok(())
        });
        // One at a time (each has its first bytes back before the next opens), so every
        // session takes the path the client prefers rather than racing onto both.
        until_received(slot, 1).await?;
    }
    let mut carried = [0.0; 2];
    for (n, relay) in stack.relays.iter().enumerate() {
        let metrics = common::http_get(relay.admin.as_deref().context("no admin")?, "/metrics").await?;
        carried[n] = common::metric(&metrics, "ferry_relay_sessions_active")?;
    }
    let which = usize::from(carried[1] > carried[0]);
    let carried = carried[which];
    let in_flight = progress.iter().filter(|p| p.received.load(Ordering::Relaxed) < LEN).count();
    let attempts_before = stack.client.resume_attempts();
    stack.relays[which].signal("TERM")?;
    let termed = Instant::now();
    let exited = tokio::time::timeout(drain, stack.relays[which].child.wait()).await;
    let exit_after = termed.elapsed();
    ensure!(exited.is_ok(), "the relay did not exit within its drain deadline ({drain:?})");
    let mut done = 0;
    while let Some(joined) = tokio::time::timeout(Duration::from_secs(120), transfers.join_next())
        .await
        .context("the sessions did not finish")?
    {
        joined??;
        done += 1;
    }
    ensure!(done == SESSIONS);
    ensure!(carried >= 1.0, "the relay carried no session when it was told to stop");
    eprintln!(
        "relay {} SIGTERMed carrying {carried} sessions ({in_flight} of {SESSIONS} in flight): exited after \
         {exit_after:?} (deadline {drain:?}); {SESSIONS} sessions x {LEN} B each way exact; resume attempts: \
         {attempts_before} before, {} after",
        which + 1,
        stack.client.resume_attempts() - attempts_before
    );
    ensure!(exit_after < drain / 4, "the relay waited for its deadline instead of its sessions leaving");
    stack.host.shutdown().await;
    Ok(())
}

/// Issue 15, shown item 5: a relayed session moves onto a direct path that comes up
/// mid-stream. The ticket names no direct address, so the session starts through a relay;
/// `ferry connect`'s serve loop then punches (through the relay) and learns the host's
/// direct port, and the running session resumes over it. Afterwards the relay's
/// active-session gauge is 0 while the transfer is still running, and the bytes are exact.
#[tokio::test]
async fn a_relayed_session_moves_onto_a_direct_path_mid_stream() -> Result<()> {
    const LEN: u64 = 16 << 20;
    // 16 KiB every 4 ms: about 4 s, long enough to move mid-stream.
    let pace = Some(Duration::from_millis(4));
    let stack = stack_with(Duration::from_secs(30), Duration::from_secs(30), true).await?;
    let progress = Progress::default();
    let stream = TcpStream::connect(stack.local).await?;
    let transfer = echo_paced(stream, 19, LEN, pace, &progress);
    let watch = async {
        until_received(&progress, 1).await?;
        // The move: a direct path learned and the session resumed onto it. (A resume attempt
        // shows the session started through a relay: the ticket names no direct address,
        // and only sessions riding a relay are moved. `path_in_use` alone would not: the
        // punch may already have made the direct path the preferred one.)
        let deadline = Instant::now() + Duration::from_secs(20);
        while stack.client.resume_attempts() == 0
            || !matches!(stack.client.path_in_use(), Some(ferry_client::Path::Direct(_)))
        {
            ensure!(Instant::now() < deadline, "the session never moved onto the direct path");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The relay is released while the transfer still runs.
        let mut active = [1.0; 2];
        while active.iter().any(|a| *a != 0.0) {
            ensure!(Instant::now() < deadline, "the relays still carry {active:?} sessions");
            for (n, relay) in stack.relays.iter().enumerate() {
                let metrics = common::http_get(relay.admin.as_deref().context("no admin")?, "/metrics").await?;
                active[n] = common::metric(&metrics, "ferry_relay_sessions_active")?;
            }
        }
        let at = progress.received.load(Ordering::Relaxed);
        ensure!(at < LEN, "the transfer was over before the relay was released");
        anyhow::Ok(at)
    };
    let (result, watched) = tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(transfer, watch) })
        .await
        .context("the transfer did not finish")?;
    let released_at = watched?;
    let (digest, got) = result.context("the local connection saw an error")?;
    ensure!(got == LEN, "{got} of {LEN} bytes came back");
    ensure!(digest == pattern_digest(19, LEN), "the bytes came back altered");
    let stall = Duration::from_micros(progress.longest_gap_us.load(Ordering::Relaxed));
    eprintln!(
        "moved relay -> direct mid-stream: relays' active sessions 0 at {released_at} of {LEN} bytes back; \
         {LEN} B each way exact; longest stall between reads {stall:?}; {} resume attempts",
        stack.client.resume_attempts()
    );
    stack.host.shutdown().await;
    Ok(())
}

/// A player that stops reading for longer than the stall deadline is no lost path: acks come
/// from the record layer on receipt and a blocked receiver sends keep-alives, so no resume is
/// attempted, and the bytes are intact once it reads again.
#[tokio::test]
async fn a_paused_reader_is_not_a_stall() -> Result<()> {
    const LEN: u64 = 16 << 20;
    const PAUSE_AT: u64 = 1 << 20;
    let pause = ferry_client::STALL_AFTER * 5 / 2;
    let stack = stack(Duration::from_secs(30)).await?;
    let stream = TcpStream::connect(stack.local).await?;
    stream.set_nodelay(true)?;
    let (mut r, mut w) = stream.into_split();
    let writer = async move {
        let mut pattern = Pattern::new(17);
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = LEN;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            pattern.fill(&mut buf[..n]);
            w.write_all(&buf[..n]).await?;
            left -= n as u64;
        }
        w.shutdown().await?;
        anyhow::Ok(())
    };
    let reader = async {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let (mut total, mut paused) = (0u64, false);
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return anyhow::Ok((ctx.finish().as_ref().to_vec(), total));
            }
            ctx.update(&buf[..n]);
            total += n as u64;
            if total >= PAUSE_AT && !paused {
                // The viewer pressed pause: nothing is read while the other side keeps
                // writing, until every buffer on the way is full.
                paused = true;
                tokio::time::sleep(pause).await;
            }
        }
    };
    let (written, read) = tokio::time::timeout(Duration::from_secs(120), async { tokio::join!(writer, reader) })
        .await
        .context("the paused transfer did not finish")?;
    written?;
    let (digest, got) = read?;
    ensure!(got == LEN, "{got} of {LEN} bytes came back");
    ensure!(digest == pattern_digest(17, LEN), "the bytes came back altered");
    let attempts = stack.client.resume_attempts();
    ensure!(attempts == 0, "a paused reader caused {attempts} resume attempts");
    eprintln!("paused {pause:?} after {PAUSE_AT} bytes: {LEN} bytes exact, no resume attempt");
    stack.host.shutdown().await;
    Ok(())
}

/// Issue 15, shown item 6: both relays dead: the session ends with an error after the resume
/// timeout, the local connection is reset (never a clean end of stream), and neither end
/// holds the session any more (the host's registry of waiting sessions is empty).
#[tokio::test]
async fn with_both_relays_dead_the_session_ends_with_a_reset_after_the_timeout() -> Result<()> {
    const LEN: u64 = 64 << 20;
    let timeout = Duration::from_secs(3);
    let stack = stack(timeout).await?;
    let progress = Progress::default();
    let stream = TcpStream::connect(stack.local).await?;
    let transfer = echo(stream, 16, LEN, &progress);
    let kill = async {
        until_received(&progress, 1 << 20).await?;
        // What must return to baseline: one live session at each end, holding its buffers.
        ensure!(stack.host.resumable_sessions() == 1 && stack.client.resumable_sessions() == 1);
        for relay in &stack.relays {
            relay.signal("KILL")?;
        }
        anyhow::Ok(Instant::now())
    };
    let (result, killed) = tokio::time::timeout(timeout * 10, async { tokio::join!(transfer, kill) })
        .await
        .context("the session neither resumed nor ended")?;
    let killed_at = killed?;
    let waited = killed_at.elapsed();
    match result {
        Err(e) => ensure!(
            matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe),
            "the local connection ended with {e}, not a reset"
        ),
        Ok((_, got)) => anyhow::bail!("the local connection ended cleanly after {got} bytes"),
    }
    ensure!(waited >= timeout, "the session ended after {waited:?}, before the resume timeout");
    // Memory back to baseline: neither end holds the session (and its replay buffers) any
    // more. The host gives up on its own resume timeout, a moment after the client may.
    let deadline = Instant::now() + timeout * 3;
    while stack.host.resumable_sessions() + stack.client.resumable_sessions() > 0 {
        ensure!(
            Instant::now() < deadline,
            "sessions still held: host {}, client {}",
            stack.host.resumable_sessions(),
            stack.client.resumable_sessions()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("both relays killed: the local connection was reset {waited:?} later (resume timeout {timeout:?})");
    Ok(())
}

/// A relay on lab machine `machine` until `stop` fires: its address and pin.
async fn lab_relay(
    lab: &NetLab,
    machine: &'static str,
) -> Result<(RelayAddr, tokio::sync::oneshot::Sender<()>, tokio::sync::oneshot::Receiver<Result<()>>)> {
    let listen = std::net::SocketAddr::from((lab.addr(machine), 0));
    let (ready, started) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = lab.run_on(machine, move || async move {
        let identity = ferry_relay::TlsIdentity::self_signed(&["localhost".into()])?;
        let relay = ferry_relay::Relay::spawn(ferry_relay::RelayConfig::new(listen, identity)).await?;
        let _ = ready.send((relay.local_addr(), relay.pin()));
        let _ = stopped.await;
        relay.shutdown(Duration::from_secs(1)).await;
        Ok(())
    });
    let (addr, pin) = started.await.context("the relay did not start")?;
    Ok((RelayAddr { addr: addr.to_string(), trust: RelayTrust::Pin(pin) }, stop, done))
}

/// Issue 15, shown item 3: the carrying relay is blackholed (every packet to and from it
/// dropped: no reset, no ICMP) mid-stream, in a lab of network namespaces; the session
/// resumes through the other relay within a few seconds and the bytes arrive exact.
async fn a_session_survives_a_blackholed_relay(transport: Transport) -> Result<()> {
    const LEN: u64 = 8 << 20;
    let machines = [
        Machine::new("relay1", &[]),
        Machine::new("relay2", &[]),
        Machine::new("host", &[]),
        Machine::new("client", &["delay=2"]),
    ];
    let Some(mut lab) = NetLab::start(&machines).await? else {
        return Ok(());
    };
    let (relay1, stop1, done1) = lab_relay(&lab, "relay1").await?;
    let (relay2, stop2, done2) = lab_relay(&lab, "relay2").await?;
    let relays = vec![relay1.clone(), relay2.clone()];
    let identity = HostIdentity::generate()?;
    let ticket = Ticket::new(identity.key.public(), identity.secret.clone(), relays.clone());
    let (registered, is_registered) = tokio::sync::oneshot::channel();
    let (stop_host, host_stopped) = tokio::sync::oneshot::channel::<()>();
    let host_done = lab.run_on("host", move || async move {
        let (service, _echo) = echo_service().await?;
        let mut config = HostConfig::new(identity, relays, service.to_string());
        config.transport = transport;
        let host = Host::spawn(config);
        ferry::local::wait_registered(&host, 2).await?;
        let _ = registered.send(());
        let _ = host_stopped.await;
        host.shutdown().await;
        Ok(())
    });
    is_registered.await.context("the host did not register at both relays")?;
    let (carrying_tx, carrying) = tokio::sync::oneshot::channel();
    let session = lab.run_on("client", move || async move {
        let client = Arc::new(
            Client::new(ticket, StaticKey::generate()?, HopOptions::client()).resumable(true).with_transport(transport),
        );
        let local = common::local_port(client.clone()).await?;
        let progress = Progress::default();
        let transfer = echo(TcpStream::connect(local).await?, 18, LEN, &progress);
        let report = async {
            until_received(&progress, 2 << 20).await?;
            let (addr, _) = client.hop_in_use().await.context("no hop in use")?;
            let _ = carrying_tx.send(addr);
            anyhow::Ok(())
        };
        let (result, reported) =
            tokio::time::timeout(Duration::from_secs(120), async { tokio::join!(transfer, report) })
                .await
                .context("the transfer did not finish")?;
        reported?;
        let (digest, got) = result.context("the local connection saw an error")?;
        let stall = Duration::from_micros(progress.longest_gap_us.load(Ordering::Relaxed));
        anyhow::Ok((digest, got, stall, client.resume_attempts()))
    });
    let carrying = carrying.await.context("the client did not report its hop")?;
    let dark = if carrying == relay1.addr { "relay1" } else { "relay2" };
    ensure!(carrying == relay1.addr || carrying == relay2.addr, "the hop in use is neither relay");
    lab.set(dark, &["loss=1"]).await?;
    let darkened = Instant::now();
    let (digest, got, stall, attempts) = session.await??;
    let took = darkened.elapsed();
    ensure!(got == LEN, "{got} of {LEN} bytes came back");
    ensure!(digest == pattern_digest(18, LEN), "the bytes came back altered");
    ensure!(attempts >= 1, "the session never moved off the blackholed relay");
    eprintln!(
        "{}: {dark} blackholed mid-stream; {LEN} B each way exact, complete {took:?} later, longest stall \
         between reads {stall:?}, {attempts} resume attempts",
        transport.name()
    );
    ensure!(stall < Duration::from_secs(8), "the session stalled for {stall:?}");
    lab.set(dark, &["loss=0"]).await?;
    let _ = stop_host.send(());
    host_done.await??;
    for (stop, done) in [(stop1, done1), (stop2, done2)] {
        let _ = stop.send(());
        done.await??;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_a_blackholed_relay_over_quic() -> Result<()> {
    a_session_survives_a_blackholed_relay(Transport::Quic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_a_blackholed_relay_over_tcp() -> Result<()> {
    a_session_survives_a_blackholed_relay(Transport::Tcp).await
}
