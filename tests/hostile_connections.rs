//! Hostile connections against the real `ferry-relay` binary (issue 13, findings 2, 3, 6,
//! 9 and 11): a flood of QUIC Initials that never finish, QUIC connections that never open
//! a stream, a burst of concurrent registrations past `max_hosts`, rate-limited peers, who
//! must be told why, the heap a connection flood leaves behind, and a peer's stream reset
//! code that only the relay may send (finding 10). Each attack runs in a bounded
//! loop while an honest session streams through the same relay; the honest bytes are
//! checked and the longest stall of the honest stream is bounded.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::process::{RelayProcess, rss_kib};
use common::{http_get, metric, pattern, registered_host, ticket};
use ferry::local::echo_service;
use ferry_client::dial::quic;
use ferry_client::{Client, HopOptions, Host, Transport};
use ferry_link::{Framed, LinkSend};
use ferry_proto::codes::CLOSE_HANDSHAKE_TIMEOUT;
use ferry_proto::registration::{HostEvent, HostRegistration};
use ferry_proto::{Message, RefuseReason, StaticKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

/// The relay's handshake timeout in these tests (seconds).
const HANDSHAKE_TIMEOUT: u64 = 2;
/// The honest session may not go without an echoed byte for longer than this.
const STALL_BOUND: Duration = Duration::from_secs(5);
/// The honest session carries at least this many bytes.
const HONEST_MIN: u64 = 2 << 20;

/// A relay process (admin port on), a host in front of an echo service.
struct Relay {
    process: RelayProcess,
    _dir: tempfile::TempDir,
    host: Host,
    identity: ferry_client::HostIdentity,
}

impl Relay {
    /// Starts a relay whose `[limits]` section is `limits`, and registers a host.
    async fn start(limits: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");
        let config = format!(
            "[relay]\nlisten = \"127.0.0.1:0\"\nstate_dir = {state:?}\nhandshake_timeout_secs = {HANDSHAKE_TIMEOUT}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[limits]\n{limits}\n[log]\nlevel = \"warn\"\n"
        );
        let process = RelayProcess::start(&config, dir.path(), &[]).await?;
        let (service, _echo) = echo_service().await?;
        let (host, identity) = registered_host(process.relays(process.pin), service).await?;
        Ok(Self { process, _dir: dir, host, identity })
    }

    fn pid(&self) -> Result<u32> {
        self.process.child.id().context("the relay exited")
    }

    fn client(&self, transport: Transport) -> Client {
        let relays = self.process.relays(self.process.pin);
        Client::new(ticket(&self.identity, relays), StaticKey::generate().expect("a fresh key"), HopOptions::client())
            .with_transport(transport)
    }

    async fn metrics(&self) -> Result<String> {
        http_get(self.process.admin.as_deref().context("no admin listener")?, "/metrics").await
    }

    async fn refused(&self, reason: &str) -> Result<f64> {
        metric(&self.metrics().await?, &format!("ferry_relay_refused_total{{reason=\"{reason}\"}}"))
    }
}

/// CPU time the process `pid` has used (all its threads), in nanoseconds.
fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat"))?;
        total += stat.split_whitespace().next().context("schedstat")?.parse::<u64>()?;
    }
    Ok(total)
}

/// An honest session that streams through the relay until stopped (at most 2 minutes):
/// every echoed byte is compared with what was sent, and the longest wait for one is kept.
struct Honest {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<(u64, Duration)>>,
}

impl Honest {
    /// Opens the session (so it is running before the attack starts) and streams.
    async fn start(client: Client) -> Result<Self> {
        let session = client.open_session().await?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let chunk = pattern(13, 64 * 1024);
            let (app, bridge) = session.spawn_pipe(256 * 1024);
            let (mut app_r, mut app_w) = tokio::io::split(app);
            let sent = chunk.clone();
            let writer = tokio::spawn(async move {
                let (started, mut written) = (Instant::now(), 0);
                // Paced at ~6 MB/s, so the honest stream leaves the attack the CPU it needs;
                // at least `HONEST_MIN` even if the attack is over sooner.
                while (written < HONEST_MIN || !stopped.load(Ordering::Relaxed))
                    && started.elapsed() < Duration::from_secs(120)
                {
                    app_w.write_all(&sent).await?;
                    written += sent.len() as u64;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                app_w.shutdown().await
            });
            let (mut offset, mut longest) = (0u64, Duration::ZERO);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let waited = Instant::now();
                let n =
                    tokio::time::timeout(Duration::from_secs(30), app_r.read(&mut buf)).await.context("stalled")??;
                longest = longest.max(waited.elapsed());
                if n == 0 {
                    break;
                }
                for &byte in &buf[..n] {
                    ensure!(byte == chunk[(offset % chunk.len() as u64) as usize], "byte {offset} altered");
                    offset += 1;
                }
            }
            writer.await??;
            bridge.await??;
            drop(client);
            Ok((offset, longest))
        });
        Ok(Self { stop, task })
    }

    /// Stops the stream and checks it: every byte back, no stall past [`STALL_BOUND`].
    async fn finish(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let (bytes, longest) = tokio::time::timeout(Duration::from_secs(60), self.task).await.context("hung")???;
        eprintln!("honest session: {} KiB echoed intact, longest wait {longest:?}", bytes / 1024);
        ensure!(bytes >= HONEST_MIN, "the honest session carried only {bytes} bytes");
        ensure!(longest < STALL_BOUND, "the honest session stalled for {longest:?}");
        Ok(())
    }
}

/// Runs `attempts` futures made by `attempt`, at most `width` at once.
async fn bounded<T: Send + 'static, F>(attempts: usize, width: usize, attempt: impl Fn(usize) -> F) -> Result<Vec<T>>
where
    F: Future<Output = Result<T>> + Send + 'static,
{
    let mut running = JoinSet::new();
    let mut done = Vec::with_capacity(attempts);
    for n in 0..attempts {
        if running.len() >= width {
            done.push(running.join_next().await.context("a running attempt")???);
        }
        running.spawn(attempt(n));
    }
    while let Some(result) = running.join_next().await {
        done.push(result??);
    }
    Ok(done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_connections_that_open_no_stream_are_closed_at_the_handshake_timeout() -> Result<()> {
    const IDLE: usize = 1_000;
    let relay = Relay::start(
        "max_connections_per_source = 4096\nmax_pending_handshakes_per_source = 4096\n\
         connections_per_minute_per_source = 0",
    )
    .await?;
    let pid = relay.pid()?;
    let honest = Honest::start(relay.client(Transport::Quic)).await?;
    let baseline = rss_kib(pid)?;
    let started = Instant::now();
    // Keep-alives every second: without a deadline, PINGs would keep these open for ever.
    let options = HopOptions { keep_alive: Duration::from_secs(1), ..HopOptions::client() };
    let target = relay.process.relays(relay.process.pin).remove(0);
    let idle = tokio::spawn(bounded(IDLE, IDLE, move |_| {
        let (target, options) = (target.clone(), options.clone());
        async move {
            let conn = quic::connect(&target, &options).await?;
            let opened = Instant::now();
            let limit = Duration::from_secs(HANDSHAKE_TIMEOUT + 8);
            let closed = tokio::time::timeout(limit, conn.closed()).await.context("an idle connection lived on")?;
            anyhow::Ok((closed, opened.elapsed()))
        }
    }));
    // The relay's memory while the connections are open (sampled for at most 30 s).
    let mut peak = baseline;
    for _ in 0..300 {
        peak = peak.max(rss_kib(pid)?);
        if idle.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed = tokio::time::timeout(Duration::from_secs(30), idle).await.context("idle connections hung")???;
    for (reason, lived) in &closed {
        match reason {
            quinn::ConnectionError::ApplicationClosed(close)
                if close.error_code.into_inner() == u64::from(CLOSE_HANDSHAKE_TIMEOUT) => {}
            other => bail!("an idle connection ended otherwise: {other}"),
        }
        ensure!(*lived >= Duration::from_millis(HANDSHAKE_TIMEOUT * 1000 - 300), "closed early, after {lived:?}");
    }
    eprintln!("{IDLE} idle QUIC connections closed at the deadline within {:?}", started.elapsed());
    ensure!(relay.refused("handshake_timeout").await? >= IDLE as f64);
    honest.finish().await?;
    // The connections' memory is freed, not held: the relay trims its heap once the session
    // and connection counts have changed and then stayed put for 2 s (`ferry_relay::allocator`;
    // that connections alone suffice is checked by
    // `heap_freed_by_a_connection_flood_is_returned_without_a_session`). A one-byte session
    // after the flood is one more change; at most 5 tries of 3 s each.
    let near_baseline = baseline + 8 * 1024;
    let mut after = rss_kib(pid)?;
    let probe = relay.client(Transport::Quic);
    for _ in 0..5 {
        if after <= near_baseline {
            break;
        }
        ensure!(common::echo_session(&probe, b"x").await? == b"x");
        tokio::time::sleep(ferry_relay::allocator::QUIET_BEFORE_TRIM + Duration::from_secs(1)).await;
        after = rss_kib(pid)?;
    }
    eprintln!("relay RSS: baseline {baseline} KiB, peak {peak} KiB with {IDLE} idle connections, after {after} KiB");
    ensure!(after <= near_baseline, "the relay kept {after} KiB (baseline {baseline} KiB)");
    relay.host.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_capped_per_source() -> Result<()> {
    let relay = Relay::start("max_connections_per_source = 8\nconnections_per_minute_per_source = 0").await?;
    let honest = Honest::start(relay.client(Transport::Quic)).await?;
    // The host and the honest client hold two of the source's eight places.
    let target = relay.process.relays(relay.process.pin).remove(0);
    let mut held = Vec::new();
    for _ in 0..6 {
        let conn = quic::connect(&target, &HopOptions::client()).await?;
        // A stream with a message keeps each past the first-stream deadline.
        let (mut send, _recv) = conn.open_bi().await?;
        send.write_all(&Message::Connect { host_id: ferry_proto::PublicKey([7; 32]) }.to_vec()?).await?;
        held.push((conn, send, _recv));
    }
    let before = relay.refused("rate_limited").await?;
    let refused = relay.client(Transport::Quic).open_session().await.err().context("a ninth connection")?;
    ensure!(refused.to_string().contains("too many attempts"), "{}", refused.report());
    ensure!(relay.refused("rate_limited").await? > before);

    // A stream whose first message never completes is cut at the handshake timeout and
    // counted as `handshake_timeout`, like a TLS handshake that never finishes.
    let timeouts = relay.refused("handshake_timeout").await?;
    let (mut send, mut recv) = held[0].0.open_bi().await?;
    send.write_all(&[0x10]).await?;
    let limit = Duration::from_secs(HANDSHAKE_TIMEOUT + 3);
    let ended = tokio::time::timeout(limit, recv.read_chunk(64, true)).await.context("the stream lived on")?;
    ensure!(!matches!(ended, Ok(Some(_))), "the relay answered a cut message");
    ensure!(relay.refused("handshake_timeout").await? == timeouts + 1.0, "the timeout was not counted");
    drop(held);
    honest.finish().await?;
    relay.host.shutdown().await;
    Ok(())
}

/// One raw registration of a fresh host id on its own QUIC connection: whether the relay
/// registered it (the connection is kept open while it stays registered) or refused why.
async fn register_once(target: ferry_proto::RelayAddr) -> Result<(Registration, quinn::Connection)> {
    let conn = quic::connect(&target, &HopOptions::host()).await?;
    let outcome = register_on(&conn).await?;
    Ok((outcome, conn))
}

/// How a registration ended: registered (with its control stream, kept open: a finished
/// control stream is an unregistration) or refused.
type Registration = Result<LinkSend, RefuseReason>;

/// Runs the registration conversation on a new stream of `conn`.
async fn register_on(conn: &quinn::Connection) -> Result<Registration> {
    register_as(conn, &StaticKey::generate()?).await
}

/// Runs the registration conversation of the host `key` on a new stream of `conn`.
async fn register_as(conn: &quinn::Connection, key: &StaticKey) -> Result<Registration> {
    let exporter = ferry_link::exporter::quic(conn)?;
    let (mut registration, register) = HostRegistration::start(key, None, &exporter)?;
    let (send, recv) = conn.open_bi().await?;
    let mut send = LinkSend::Quic(send);
    send.send_message(&register).await?;
    let mut recv = Framed::new(ferry_link::LinkRecv::Quic(recv));
    loop {
        match registration.handle(recv.message(Duration::from_secs(20)).await?)? {
            HostEvent::Send(message) => send.send_message(&message).await?,
            HostEvent::Registered => return Ok(Ok(send)),
            HostEvent::Refused(reason) => return Ok(Err(reason)),
            other => bail!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_never_pass_max_hosts() -> Result<()> {
    const MAX_HOSTS: usize = 50;
    let relay = Relay::start(&format!(
        "max_hosts = {MAX_HOSTS}\nmax_pending_handshakes_per_source = 256\nconnections_per_minute_per_source = 0"
    ))
    .await?;
    let honest = Honest::start(relay.client(Transport::Quic)).await?;
    let target = relay.process.relays(relay.process.pin).remove(0);
    // 200 registrations at once (the honest host holds one place already).
    let outcomes = bounded(200, 200, |_| register_once(target.clone())).await?;
    let registered = outcomes.iter().filter(|(outcome, _)| outcome.is_ok()).count();
    let busy = outcomes.iter().filter(|(outcome, _)| matches!(outcome, Err(RefuseReason::RelayBusy))).count();
    eprintln!("200 concurrent registrations: {registered} registered, {busy} refused as busy");
    ensure!(registered == MAX_HOSTS - 1, "{registered} registered beside the honest host, cap {MAX_HOSTS}");
    ensure!(registered + busy == 200, "{} registrations ended otherwise", 200 - registered - busy);
    let hosts = metric(&relay.metrics().await?, "ferry_relay_hosts_registered")?;
    ensure!(hosts == MAX_HOSTS as f64, "{hosts} hosts registered");

    // A second registration on one connection is refused, with a reason.
    let (_, conn) = outcomes.iter().find(|(outcome, _)| outcome.is_ok()).context("one registered")?;
    let second = register_on(conn).await?;
    ensure!(
        matches!(second, Err(RefuseReason::RateLimited)),
        "a second registration on one connection: {:?}",
        second.err()
    );
    honest.finish().await?;
    relay.host.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_client_is_told_why_and_counted() -> Result<()> {
    // A burst of 4 connections a minute: the host and the honest client take two.
    let relay = Relay::start("connections_per_minute_per_source = 4").await?;
    let honest = Honest::start(relay.client(Transport::Quic)).await?;
    let target = relay.process.relays(relay.process.pin).remove(0);
    let mut spent = Vec::new();
    for _ in 0..2 {
        spent.push(quic::connect(&target, &HopOptions::client()).await?);
    }
    let before = relay.refused("rate_limited").await?;
    for transport in [Transport::Quic, Transport::Tcp] {
        let refused = relay.client(transport).open_session().await.err().context("over the rate")?;
        eprintln!("{transport:?} client over the rate: {}", refused.report());
        ensure!(refused.to_string().contains("too many attempts"), "{transport:?}: {}", refused.report());
    }
    let after = relay.refused("rate_limited").await?;
    ensure!(after >= before + 2.0, "refused_total{{rate_limited}} went from {before} to {after}");

    // What an explanation costs, and that a flood cannot make the relay explain more than
    // its budget (32 a second): 100 refused attempts in a burst, the first 20 (within the
    // budget) and the other 80 timed apart by the relay's CPU.
    let pid = relay.pid()?;
    let started = Instant::now();
    let mut explained = [0usize; 2];
    let mut cpu = [0u64; 2];
    for (phase, attempts) in [(0, 0..20), (1, 20..100)] {
        let cpu_before = cpu_ns(pid)?;
        for attempt in attempts {
            let transport = if attempt % 2 == 0 { Transport::Quic } else { Transport::Tcp };
            let refused = relay.client(transport).open_session().await.err().context("over the rate")?;
            if refused.to_string().contains("too many attempts") {
                explained[phase] += 1;
            }
        }
        cpu[phase] = cpu_ns(pid)? - cpu_before;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "100 refused attempts in {elapsed:?}: the first 20, {} explained, took the relay {} µs of CPU each; \
         the next 80, {} explained, {} µs each",
        explained[0],
        cpu[0] / 20_000,
        explained[1],
        cpu[1] / 80_000
    );
    let total = explained[0] + explained[1];
    let budget = 32 + (elapsed.as_secs_f64() * 32.0).ceil() as usize;
    ensure!(total <= budget, "{total} refusals explained in {elapsed:?}, over the budget of {budget}");
    ensure!(explained[0] == 20, "only {} of the first 20 refusals explained", explained[0]);
    honest.finish().await?;
    relay.host.shutdown().await;
    Ok(())
}

/// A UDP socket that sends but never receives: a QUIC client on it starts handshakes it
/// can never finish (nor answer a Retry), exactly what a flood from forged addresses is.
#[derive(Debug)]
struct Deaf(Arc<dyn quinn::AsyncUdpSocket>);

impl quinn::AsyncUdpSocket for Deaf {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.0.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        self.0.try_send(transmit)
    }

    fn poll_recv(
        &self,
        _: &mut std::task::Context,
        _: &mut [std::io::IoSliceMut<'_>],
        _: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Pending
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.local_addr()
    }
}

/// A flood of QUIC Initials (real ClientHellos, each a new connection) from `sources`
/// loopback addresses, `per_source_per_second` each, that never finish their handshake.
/// Runs until `stop` is set or `limit` attempts are made; returns how many were sent.
async fn initial_flood(
    relay: std::net::SocketAddr,
    sources: std::ops::RangeInclusive<u8>,
    per_source_per_second: u32,
    limit: usize,
    stop: Arc<AtomicBool>,
) -> Result<usize> {
    let runtime = quinn::default_runtime().context("a runtime")?;
    let mut endpoints = Vec::new();
    for last in sources {
        let socket = std::net::UdpSocket::bind(std::net::SocketAddr::from(([127, 0, 0, last], 0)))?;
        let deaf = Arc::new(Deaf(runtime.wrap_udp_socket(socket)?));
        endpoints.push(quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            None,
            deaf,
            runtime.clone(),
        )?);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Never used to verify anything: no ServerHello ever reaches a deaf endpoint.
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    tls.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls)?));
    // Kept, not dropped: a dropped connection would tell the relay it is gone.
    let mut attempts = Vec::with_capacity(limit);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_source_per_second);
    while attempts.len() < limit && !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        for endpoint in &endpoints {
            attempts.push(endpoint.connect_with(config.clone(), relay, "ferry")?);
        }
    }
    Ok(attempts.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_quic_initials_locks_out_no_one() -> Result<()> {
    // 500 Initials a second from 10 sources against 16 pending places held 2 s each: a
    // place comes free 8 times a second and the flood takes it within 2 ms, so before the
    // fix an honest attempt found one about 2 % of the time (issue 13, finding 2).
    const PENDING: usize = 16;
    let relay = Relay::start(&format!("max_pending_handshakes = {PENDING}")).await?;
    let pid = relay.pid()?;
    let baseline = common::process::Footprint::of(pid)?;
    let honest = Honest::start(relay.client(Transport::Quic)).await?;
    let target: std::net::SocketAddr = relay.process.addr.parse()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flood = tokio::spawn(initial_flood(target, 2..=11, 50, 10_000, stop.clone()));
    // Two handshake timeouts in: the flood holds every place it can.
    tokio::time::sleep(Duration::from_secs(2 * HANDSHAKE_TIMEOUT)).await;

    // A new host registers and a new session to it streams, both over QUIC, during the flood.
    let started = Instant::now();
    let relays = relay.process.relays(relay.process.pin);
    let (service, _echo) = echo_service().await?;
    let (host, identity) = registered_host(relays.clone(), service).await.context("registering in the flood")?;
    let registered = started.elapsed();
    ensure!(registered < Duration::from_secs(3), "registering took {registered:?}");
    let client = Client::new(ticket(&identity, relays), StaticKey::generate()?, HopOptions::client())
        .with_transport(Transport::Quic);
    let newcomer = Honest::start(client).await.context("a new session in the flood")?;
    let opened = started.elapsed();
    eprintln!("during the flood: a new host registered in {registered:?}, its first session opened in {opened:?}");
    newcomer.finish().await?;
    honest.finish().await?;
    stop.store(true, Ordering::Relaxed);
    let sent = tokio::time::timeout(Duration::from_secs(10), flood).await.context("the flood hung")???;
    let retries = metric(&relay.metrics().await?, "ferry_relay_quic_retries_total")?;
    eprintln!("{sent} Initials sent from 10 sources; the relay answered {retries} with a Retry");
    ensure!(sent > 4 * PENDING, "the flood sent only {sent} Initials");
    ensure!(retries > 0.0, "no Retry was sent");
    ensure!(opened < Duration::from_secs(4), "registering and opening a session took {opened:?}");
    host.shutdown().await;
    // The flood's last handshakes end at the handshake timeout; then memory (after the
    // heap trims) and file descriptors are back where they were. The margin is twice the
    // other attacks': measured 13.5–15 MiB after (baseline 9.5) with this test alone, but
    // up to 25 MiB when the file's other tests (1,000-connection floods against their own
    // relays) share the two cores; a trim forced 20 s later freed nothing more, so what
    // stays is not memory held but, most likely, heap fragmented by the burst (Initials
    // that quinn queued while the accept loop was starved).
    baseline.wait_back(pid, 16 * 1024).await?;
    relay.host.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heap_freed_by_a_connection_flood_is_returned_without_a_session() -> Result<()> {
    const IDLE: usize = 1_000;
    let relay = Relay::start(
        "max_connections_per_source = 4096\nmax_pending_handshakes_per_source = 4096\n\
         connections_per_minute_per_source = 0",
    )
    .await?;
    let pid = relay.pid()?;
    let sessions = || async { metric(&relay.metrics().await?, "ferry_relay_sessions_total") };
    ensure!(sessions().await? == 0.0);
    let baseline = rss_kib(pid)?;
    // Connections that open no stream: the relay closes each at the handshake timeout.
    let target = relay.process.relays(relay.process.pin).remove(0);
    let closed = bounded(IDLE, IDLE, move |_| {
        let target = target.clone();
        async move {
            let conn = quic::connect(&target, &HopOptions::client()).await?;
            let limit = Duration::from_secs(HANDSHAKE_TIMEOUT + 8);
            tokio::time::timeout(limit, conn.closed()).await.context("an idle connection lived on")?;
            anyhow::Ok(())
        }
    });
    let peak = tokio::time::timeout(Duration::from_secs(30), async {
        let mut peak = baseline;
        tokio::pin!(closed);
        loop {
            tokio::select! {
                done = &mut closed => break done.map(|_| peak),
                () = tokio::time::sleep(Duration::from_millis(100)) => peak = peak.max(rss_kib(pid)?),
            }
        }
    })
    .await
    .context("idle connections hung")??;
    // All closed: once the counts are quiet the relay trims, and once more later (closed
    // connections' state is freed after their draining period), though no session came or
    // went. At most both periods and 3 s, sampled every 250 ms.
    let near_baseline = baseline + 8 * 1024;
    let closed_at = Instant::now();
    let bound = ferry_relay::allocator::QUIET_BEFORE_TRIM + ferry_relay::allocator::TRIM_AGAIN_AFTER;
    let mut after = rss_kib(pid)?;
    while after > near_baseline && closed_at.elapsed() < bound + Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = rss_kib(pid)?;
    }
    eprintln!(
        "relay RSS: baseline {baseline} KiB, peak {peak} KiB with {IDLE} idle connections, {after} KiB {:?} after \
         they closed",
        closed_at.elapsed()
    );
    ensure!(peak > near_baseline, "the flood did not raise the relay's memory ({peak} KiB): nothing to return");
    ensure!(after <= near_baseline, "the relay kept {after} KiB (baseline {baseline} KiB)");
    ensure!(sessions().await? == 0.0, "a session ran");
    relay.host.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_reset_a_stream_in_the_relays_name() -> Result<()> {
    use ferry_proto::codes::{RESET_NOT_ALLOWED, RESET_PEER_LOST, RESET_SHUTDOWN};
    let relay = Relay::start("").await?;
    let target = relay.process.relays(relay.process.pin).remove(0);
    // A raw host, so it can reset a session's stream with any code it likes.
    let key = StaticKey::generate()?;
    let host = quic::connect(&target, &HopOptions::host()).await?;
    let _control = register_as(&host, &key).await?.map_err(|reason| anyhow::anyhow!("refused: {reason}"))?;
    // The host resets with `sent`; the client must read `seen`.
    for (sent, seen) in
        [(RESET_SHUTDOWN, RESET_PEER_LOST), (RESET_PEER_LOST, RESET_PEER_LOST), (RESET_NOT_ALLOWED, RESET_NOT_ALLOWED)]
    {
        let client = quic::connect(&target, &HopOptions::client()).await?;
        let (mut send, mut recv) = client.open_bi().await?;
        send.write_all(&Message::Connect { host_id: key.public() }.to_vec()?).await?;
        let (mut host_send, mut host_recv) =
            tokio::time::timeout(Duration::from_secs(5), host.accept_bi()).await.context("no session stream")??;
        host_send.reset(sent.into())?;
        host_recv.stop(sent.into())?;
        // Whatever came before (`Accepted`), the stream must end in a reset.
        let code = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match recv.read_chunk(64 * 1024, true).await {
                    Ok(Some(_)) => continue,
                    Ok(None) => bail!("the stream finished cleanly"),
                    Err(quinn::ReadError::Reset(code)) => return Ok(code.into_inner()),
                    Err(e) => bail!("the stream ended otherwise: {e}"),
                }
            }
        })
        .await
        .context("the reset never arrived")??;
        eprintln!("host reset with {sent:#x}: the client read {code:#x}");
        ensure!(code == u64::from(seen), "a host's {sent:#x} reached the client as {code:#x}, not {seen:#x}");
    }
    relay.host.shutdown().await;
    Ok(())
}
