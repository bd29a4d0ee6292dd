//! Hostile input against the real `ferry-relay` binary: garbage before and after the TLS
//! and QUIC handshakes, the wrong ALPN, oversized and truncated control frames, a flood
//! of `Connect`s for unknown hosts, half-open connections and slow loris. Each attack
//! runs in a bounded loop while an honest 32 MiB session streams through the same relay;
//! each must get a bounded reaction (close or clear refusal), the honest bytes must
//! arrive intact, and the relay's memory must stay under a stated bound.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::BytesMut;
use common::process::{Footprint, RelayProcess, rss_kib};
use common::{pattern, registered_host, ticket};
use ferry::local::echo_service;
use ferry_client::HopOptions;
use ferry_client::dial::quic;
use ferry_client::{Client, Host};
use ferry_proto::{Message, PublicKey, RefuseReason, StaticKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const HONEST_BYTES: usize = 32 << 20;
/// The relay's resident memory must stay under this during every attack.
const RSS_BOUND_KIB: u64 = 64 * 1024;
/// After an attack the relay's memory must come back to within this of where it was.
const RETURN_MARGIN_KIB: u64 = 8 * 1024;
/// The relay's handshake timeout in these tests (seconds).
const HANDSHAKE_TIMEOUT: u64 = 2;

/// A relay process, a host in front of an echo service, and a client.
struct Arena {
    relay: RelayProcess,
    _dir: tempfile::TempDir,
    host: Host,
    client: Client,
}

impl Arena {
    async fn start() -> Result<Self> {
        Self::start_with(false, "").await
    }

    /// A relay with the admin port on or off and extra `[limits]` lines, a registered host
    /// and a client.
    async fn start_with(admin: bool, limits: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");
        let admin = if admin { "enabled = true\nlisten = \"127.0.0.1:0\"" } else { "enabled = false" };
        let config = format!(
            "[relay]\nlisten = \"127.0.0.1:0\"\nstate_dir = {state:?}\nhandshake_timeout_secs = {HANDSHAKE_TIMEOUT}\n\
             [admin]\n{admin}\n[limits]\nconnections_per_minute_per_source = 0\n{limits}\n[log]\nlevel = \"warn\"\n"
        );
        let relay = RelayProcess::start(&config, dir.path(), &[]).await?;
        let (service, _echo) = echo_service().await?;
        let (host, identity) = registered_host(relay.relays(relay.pin), service).await?;
        let client =
            Client::new(ticket(&identity, relay.relays(relay.pin)), StaticKey::generate()?, HopOptions::client());
        Ok(Self { relay, _dir: dir, host, client })
    }

    fn pid(&self) -> Result<u32> {
        self.relay.child.id().context("the relay exited")
    }

    /// Runs `attack` while an honest 32 MiB session streams; checks the session's bytes
    /// and the relay's memory.
    async fn survive<F: Future<Output = Result<()>>>(mut self, attack: impl FnOnce(Arc<Self>) -> F) -> Result<()> {
        let mut log = std::mem::replace(&mut self.relay.log, tokio::sync::mpsc::unbounded_channel().1);
        let log_task = tokio::spawn(async move {
            let mut lines = Vec::new();
            while let Some(line) = log.recv().await {
                lines.push(line);
            }
            lines
        });
        let pid = self.pid()?;
        let baseline = Footprint::of(pid)?;
        eprintln!("relay before the attack: {baseline}");
        let arena = Arc::new(self);
        let honest = tokio::spawn(honest_session(arena.clone()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let watch = tokio::spawn(async move {
            let mut peak = 0;
            // Sampled every 50 ms for at most 2 minutes.
            for _ in 0..2_400 {
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match rss_kib(pid) {
                    Ok(kib) => peak = peak.max(kib),
                    Err(_) => break,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        });
        let outcome = attack(arena.clone()).await;
        if let Err(e) = outcome {
            let alive = rss_kib(pid).is_ok();
            if !alive {
                let lines = log_task.await?;
                eprintln!("relay log:\n{}", lines.join("\n"));
            }
            bail!("the attack did not get the expected reaction (relay alive: {alive}): {e:#}");
        }
        tokio::time::timeout(Duration::from_secs(120), honest).await.context("honest session hung")???;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = watch.await?.max(rss_kib(pid)?);
        ensure!(peak < RSS_BOUND_KIB, "relay RSS peaked at {peak} KiB, over the {RSS_BOUND_KIB} KiB bound");
        eprintln!("relay RSS peak during the attack: {peak} KiB");
        // What the attack took is given back once it is over.
        baseline.wait_back(pid, RETURN_MARGIN_KIB).await?;
        let arena = Arc::into_inner(arena).context("arena still shared")?;
        arena.host.shutdown().await;
        Ok(())
    }
}

/// 32 MiB through the relay to the echo service and back, compared byte for byte.
async fn honest_session(arena: Arc<Arena>) -> Result<()> {
    let data = pattern(32, HONEST_BYTES);
    let session = arena.client.open_session().await?;
    let (app, bridge) = session.spawn_pipe(256 * 1024);
    let (mut app_r, mut app_w) = tokio::io::split(app);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        app_w.write_all(&sent).await?;
        app_w.shutdown().await
    });
    let mut back = Vec::with_capacity(HONEST_BYTES);
    app_r.read_to_end(&mut back).await?;
    writer.await??;
    bridge.await??;
    ensure!(back.len() == data.len(), "honest session got {} of {} bytes", back.len(), data.len());
    ensure!(back == data, "honest session bytes altered");
    Ok(())
}

/// Reads until the peer closes (EOF or error); fails if it stays open past `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Result<()> {
    let mut sink = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .context("the relay kept the connection open")
}

/// A TLS client that accepts any certificate (the tests attack the relay, not the
/// client's checks), with the given ALPN.
fn tls_connector(alpn: &[u8]) -> tokio_rustls::TlsConnector {
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls(arena: &Arena, alpn: &[u8]) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(&arena.relay.addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    Ok(tls_connector(alpn).connect(name, tcp).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_the_tls_and_quic_handshakes_is_shrugged_off() -> Result<()> {
    Arena::start()
        .await?
        .survive(async |arena| {
            let junk = pattern(7, 1200);
            for _ in 0..200 {
                let mut tcp = TcpStream::connect(&arena.relay.addr).await?;
                tcp.write_all(&junk).await?;
                closed_within(&mut tcp, Duration::from_secs(3)).await?;
            }
            let udp = UdpSocket::bind("127.0.0.1:0").await?;
            for i in 0..2_000u64 {
                udp.send_to(&pattern(i, 1200), &arena.relay.addr).await?;
            }
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_alpn_and_garbage_after_the_tls_handshake_are_closed() -> Result<()> {
    Arena::start()
        .await?
        .survive(async |arena| {
            for _ in 0..50 {
                ensure!(tls(&arena, b"h2").await.is_err(), "a TLS client without ALPN ferry/1 was accepted");
            }
            for i in 0..100 {
                let mut stream = tls(&arena, ferry_proto::ALPN).await?;
                stream.write_all(&pattern(i, 3000)).await?;
                stream.flush().await?;
                let mut sink = [0u8; 1024];
                tokio::time::timeout(Duration::from_secs(3), async {
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await
                .context("garbage after the TLS handshake left the connection open")?;
            }
            Ok(())
        })
        .await
}

/// A QUIC connection to the relay as a client would open it.
async fn quic(arena: &Arena) -> Result<quinn::Connection> {
    Ok(quic::connect(&arena.relay.relays(arena.relay.pin)[0], &HopOptions::client()).await?)
}

/// Sends `bytes` on a new stream and expects the relay to end the stream within `limit`
/// without answering anything but (at most) a refusal.
async fn stream_is_ended(conn: &quinn::Connection, bytes: &[u8], limit: Duration) -> Result<()> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(bytes).await?;
    tokio::time::timeout(limit, async {
        loop {
            match recv.read_chunk(4096, true).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await
    .context("the relay kept a bad stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_truncated_and_garbage_control_frames_end_their_stream() -> Result<()> {
    Arena::start()
        .await?
        .survive(async |arena| {
            let conn = quic(&arena).await?;
            // Oversized: announces 4097 bytes, one more than a control message may have.
            let mut oversized = vec![0x10, 0x01];
            oversized.extend(pattern(1, 4097));
            // Garbage: not a frame at all.
            let garbage = pattern(2, 300);
            for _ in 0..50 {
                stream_is_ended(&conn, &oversized, Duration::from_secs(3)).await?;
                stream_is_ended(&conn, &garbage, Duration::from_secs(3)).await?;
            }
            // Truncated: a Connect frame cut short, then silence: ended by the timeout.
            let started = Instant::now();
            let mut cut = Message::Connect { host_id: PublicKey([1; 32]) }.to_vec()?;
            cut.truncate(10);
            let conn = quic(&arena).await?;
            let mut streams = tokio::task::JoinSet::new();
            for _ in 0..20 {
                let (conn, cut) = (conn.clone(), cut.clone());
                streams.spawn(
                    async move { stream_is_ended(&conn, &cut, Duration::from_secs(HANDSHAKE_TIMEOUT + 2)).await },
                );
            }
            while let Some(result) = streams.join_next().await {
                result??;
            }
            ensure!(started.elapsed() >= Duration::from_secs(HANDSHAKE_TIMEOUT) - Duration::from_millis(200));
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_flood_for_unknown_hosts_gets_refusals() -> Result<()> {
    Arena::start()
        .await?
        .survive(async |arena| {
            let mut refused = 0;
            for _ in 0..4 {
                let conn = quic(&arena).await?;
                for i in 0..250u8 {
                    let (mut send, mut recv) = conn.open_bi().await?;
                    send.write_all(&Message::Connect { host_id: PublicKey([i; 32]) }.to_vec()?).await?;
                    let mut buf = BytesMut::new();
                    let answer = tokio::time::timeout(Duration::from_secs(3), async {
                        loop {
                            if let Some(m) = Message::decode(&mut buf)? {
                                return anyhow::Ok(m);
                            }
                            match recv.read_chunk(4096, true).await? {
                                Some(c) => buf.extend_from_slice(&c.bytes),
                                None => bail!("stream ended without an answer"),
                            }
                        }
                    })
                    .await??;
                    ensure!(answer == Message::Refused { reason: RefuseReason::UnknownHost }, "{answer:?}");
                    refused += 1;
                }
            }
            ensure!(refused == 1_000);
            Ok(())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_and_slow_loris_are_cut_at_the_handshake_timeout() -> Result<()> {
    Arena::start()
        .await?
        .survive(async |arena| {
            let limit = Duration::from_secs(HANDSHAKE_TIMEOUT + 2);
            // Half-open: TCP connections that never say anything.
            let mut silent = Vec::new();
            for _ in 0..200 {
                silent.push(TcpStream::connect(&arena.relay.addr).await?);
            }
            for stream in &mut silent {
                closed_within(stream, limit).await?;
            }
            // Slow loris: a valid TLS hop that sends its first message one byte at a time.
            let mut loris = Vec::new();
            for _ in 0..20 {
                loris.push(tls(&arena, ferry_proto::ALPN).await?);
            }
            let frame = Message::Connect { host_id: PublicKey([3; 32]) }.to_vec()?;
            let started = Instant::now();
            let mut cut = 0;
            'bytes: for byte in frame.iter().take(frame.len() - 1) {
                for stream in &mut loris {
                    if stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err() {
                        cut += 1;
                    }
                }
                if cut > 0 || started.elapsed() > limit {
                    break 'bytes;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            for stream in &mut loris {
                let mut sink = [0u8; 64];
                tokio::time::timeout(limit, async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} })
                    .await
                    .context("a slow-loris connection outlived the handshake timeout")?;
            }
            ensure!(
                started.elapsed() < limit + Duration::from_secs(1),
                "slow loris held on for {:?}",
                started.elapsed()
            );
            Ok(())
        })
        .await
}

// ---- Issue 13, findings 4, 7 and 8 ----

/// What one session's buffers reserve with the default `buffer_per_direction` (1 MiB).
const SESSION_BUFFERS: u64 = 2 << 20;

impl Arena {
    /// [`Arena::start`] with the admin port on (to read the metrics) and extra `[limits]`.
    async fn start_with_limits(limits: &str) -> Result<Self> {
        Self::start_with(true, limits).await
    }

    /// One sample of the relay's `/metrics`.
    async fn metric(&self, sample: &str) -> Result<f64> {
        let admin = self.relay.admin.as_deref().context("the admin port is off")?;
        common::metric(&common::http_get(admin, "/metrics").await?, sample)
    }

    /// Polls `sample` (every 50 ms, at most `limit`) until `done` holds; how long it took.
    async fn metric_until(&self, sample: &str, limit: Duration, done: impl Fn(f64) -> bool) -> Result<Duration> {
        let started = Instant::now();
        let mut last = f64::NAN;
        while started.elapsed() < limit {
            last = self.metric(sample).await?;
            if done(last) {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{sample} still {last} after {limit:?}")
    }
}

/// A QUIC host registered at the arena's relay that lets the relay open at most
/// `streams` session streams (its QUIC stream limit, as a host's options set it).
async fn host_with_streams(arena: &Arena, streams: u32) -> Result<(Host, PublicKey)> {
    let identity = ferry_client::HostIdentity::generate()?;
    let id = identity.key.public();
    let mut config = ferry_client::HostConfig::new(identity, arena.relay.relays(arena.relay.pin), "127.0.0.1:9".into());
    config.options.max_incoming_streams = streams;
    config.transport = ferry_client::Transport::Quic;
    let host = Host::spawn(config);
    ferry::local::wait_registered(&host, 1).await?;
    Ok((host, id))
}

/// Sends `Connect` for `host_id` on a new stream; the stream, still open.
async fn send_connect(conn: &quinn::Connection, host_id: PublicKey) -> Result<(quinn::SendStream, quinn::RecvStream)> {
    let (mut send, recv) = conn.open_bi().await?;
    send.write_all(&Message::Connect { host_id }.to_vec()?).await?;
    Ok((send, recv))
}

/// The relay's answer on a session stream, within `limit`.
async fn answer(recv: &mut quinn::RecvStream, limit: Duration) -> Result<Message> {
    let mut buf = BytesMut::new();
    tokio::time::timeout(limit, async {
        loop {
            if let Some(m) = Message::decode(&mut buf)? {
                return anyhow::Ok(m);
            }
            match recv.read_chunk(4096, true).await? {
                Some(c) => buf.extend_from_slice(&c.bytes),
                None => bail!("stream ended without an answer"),
            }
        }
    })
    .await
    .context("no answer from the relay")?
}

/// Finding 4: a host that grants no stream, and `Connect`s to it that leave at once, used
/// to hold the buffer budget forever (`sessions_active` 0, everyone else "relay is busy").
/// Now each costs at most the handshake timeout, its buffers come back, a waiting client
/// hears `HostOverLimit`, and the honest host takes new sessions again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_grants_no_stream_holds_no_buffers_past_the_handshake_timeout() -> Result<()> {
    // 24 sessions' worth: the attack can take its host's fair share of it (a third while
    // the honest host holds buffers too, a half once it does not).
    const SLOTS: u64 = 24;
    let arena = Arena::start_with_limits(&format!("buffer_budget = {}\n", SLOTS * SESSION_BUFFERS)).await?;
    arena
        .survive(async |arena| {
            let (stalled, stalled_id) = host_with_streams(&arena, 0).await?;
            let in_use = "ferry_relay_buffer_bytes_in_use";
            // The honest session is running before the attack takes the rest of the budget.
            arena.metric_until("ferry_relay_sessions_active", Duration::from_secs(10), |n| n >= 1.0).await?;
            let pid = arena.pid()?;
            let (rss_before, fds_before) = (rss_kib(pid)?, common::process::fd_count(pid)?);
            let conn = quic(&arena).await?;
            let mut streams = Vec::new();
            for _ in 0..SLOTS {
                streams.push(send_connect(&conn, stalled_id).await?);
            }
            // The attack took its fair share (the rest of its `Connect`s are refused at once).
            let share = SLOTS / 3 * SESSION_BUFFERS;
            arena.metric_until(in_use, Duration::from_secs(5), |v| v >= share as f64).await?;
            // ... and leaves at once.
            let left = Instant::now();
            conn.close(0u32.into(), b"gone");
            drop(streams);
            let bound = Duration::from_secs(HANDSHAKE_TIMEOUT + 2);
            arena.metric_until(in_use, bound, |v| v <= SESSION_BUFFERS as f64).await?;
            eprintln!("buffers of {SLOTS} abandoned sessions given back {:?} after they left", left.elapsed());
            let (rss_after, fds_after) = (rss_kib(pid)?, common::process::fd_count(pid)?);
            eprintln!("relay RSS {rss_before} → {rss_after} KiB, fds {fds_before} → {fds_after}");
            ensure!(fds_after <= fds_before + 2, "relay fds {fds_before} → {fds_after}");

            // A client that waits hears why, within the handshake timeout.
            let conn = quic(&arena).await?;
            let started = Instant::now();
            let (_send, mut recv) = send_connect(&conn, stalled_id).await?;
            let refused = answer(&mut recv, bound).await?;
            let waited = started.elapsed();
            ensure!(refused == Message::Refused { reason: RefuseReason::HostOverLimit }, "{refused:?}");
            ensure!(waited >= Duration::from_secs(HANDSHAKE_TIMEOUT) - Duration::from_millis(200), "{waited:?}");
            eprintln!("a client of the stalled host was refused after {waited:?}");

            // The honest host takes a new session, bytes intact.
            let data = pattern(41, 1 << 20);
            ensure!(common::echo_session(&arena.client, &data).await? == data, "a new honest session's bytes differ");
            let over = arena.metric("ferry_relay_refused_total{reason=\"host_over_limit\"}").await?;
            ensure!(over >= SLOTS as f64, "host_over_limit counted {over} times");
            let unknown = arena.metric("ferry_relay_refused_total{reason=\"unknown_host\"}").await?;
            ensure!(unknown == 0.0, "a registered host was refused as unknown {unknown} times");
            stalled.shutdown().await;
            Ok(())
        })
        .await
}

/// Finding 4, benign form: with `max_sessions_per_host` above the host's own stream limit,
/// the sessions past that limit used to hang and then be counted as `unknown_host`; now
/// they are refused as `HostOverLimit` within the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_past_a_host_stream_limit_are_refused_as_over_limit() -> Result<()> {
    Arena::start_with_limits("max_sessions_per_host = 256\n")
        .await?
        .survive(async |arena| {
            // Limit 4 is announced as ferry_link::credit::stream_limit(4) = 6 streams.
            let (small, small_id) = host_with_streams(&arena, 4).await?;
            let conn = quic(&arena).await?;
            let mut waits = tokio::task::JoinSet::new();
            for _ in 0..12 {
                let (send, mut recv) = send_connect(&conn, small_id).await?;
                waits.spawn(async move {
                    let answer = answer(&mut recv, Duration::from_secs(HANDSHAKE_TIMEOUT + 3)).await;
                    // Kept open until every answer is in, so accepted sessions hold their stream.
                    (answer, send, recv)
                });
            }
            let (mut accepted, mut over, mut held) = (0, 0, Vec::new());
            while let Some(done) = waits.join_next().await {
                let (answer, send, recv) = done?;
                match answer? {
                    Message::Accepted => accepted += 1,
                    Message::Refused { reason: RefuseReason::HostOverLimit } => over += 1,
                    other => bail!("unexpected answer {other:?}"),
                }
                held.push((send, recv));
            }
            ensure!((4..=6).contains(&accepted) && accepted + over == 12, "{accepted} accepted, {over} over the limit");
            let unknown = arena.metric("ferry_relay_refused_total{reason=\"unknown_host\"}").await?;
            ensure!(unknown == 0.0, "a registered host was refused as unknown {unknown} times");
            drop(held);
            small.shutdown().await;
            Ok(())
        })
        .await
}

/// A TLS connector like [`tls_connector`] that offers no ALPN at all.
fn tls_connector_without_alpn() -> tokio_rustls::TlsConnector {
    let mut config = (**tls_connector(ferry_proto::ALPN).config()).clone();
    config.alpn_protocols.clear();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// What the relay answers a `Connect` for an unknown host on a TLS hop with `connector`:
/// `None` if the handshake fails or the connection ends without a ferry message.
async fn ferry_answer_over_tls(arena: &Arena, connector: &tokio_rustls::TlsConnector) -> Result<Option<Message>> {
    let tcp = TcpStream::connect(&arena.relay.addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let limit = Duration::from_secs(HANDSHAKE_TIMEOUT + 2);
    let Ok(mut tls) = tokio::time::timeout(limit, connector.connect(name, tcp)).await? else {
        return Ok(None);
    };
    tls.write_all(&Message::Connect { host_id: PublicKey([9; 32]) }.to_vec()?).await?;
    tls.flush().await?;
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            if let Some(m) = Message::decode(&mut buf)? {
                return Ok(Some(m));
            }
            match tls.read(&mut chunk).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .context("the relay neither answered nor closed")?
}

/// Finding 8: TLS over TCP served the ferry protocol to a client that offers no ALPN
/// (QUIC refuses it). Now it is closed before being served and counted; a client with
/// ALPN `ferry/1` still gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_without_alpn_gets_no_ferry_answer() -> Result<()> {
    Arena::start_with_limits("")
        .await?
        .survive(async |arena| {
            let pid = arena.pid()?;
            let fds_before = common::process::fd_count(pid)?;
            let without = tls_connector_without_alpn();
            for _ in 0..20 {
                let answer = ferry_answer_over_tls(&arena, &without).await?;
                ensure!(answer.is_none(), "a TLS client without ALPN was served: {answer:?}");
            }
            // A list without `ferry/1` is refused by rustls itself, and counted the same.
            let h2 = tls_connector(b"h2");
            for _ in 0..5 {
                ensure!(ferry_answer_over_tls(&arena, &h2).await?.is_none(), "a TLS client with ALPN h2 was served");
            }
            let with = tls_connector(ferry_proto::ALPN);
            let answer = ferry_answer_over_tls(&arena, &with).await?;
            ensure!(answer == Some(Message::Refused { reason: RefuseReason::UnknownHost }), "{answer:?}");
            let counted = arena.metric("ferry_relay_refused_total{reason=\"no_alpn\"}").await?;
            ensure!(counted == 25.0, "refused{{no_alpn}} is {counted}, 25 were refused");
            // Every refused connection's socket is closed (the relay closed first).
            let fds_after = common::process::fd_count(pid)?;
            eprintln!("relay fds: {fds_before} before 25 refused TLS clients, {fds_after} after");
            ensure!(fds_after <= fds_before + 2, "relay fds {fds_before} → {fds_after}");
            Ok(())
        })
        .await
}

/// Finding 7: `check-config` passed values that panic the relay later (every session task
/// for the idle timeout, the start for the handshake cap). Now the file check refuses them
/// with the key and line, and the relay refuses to start with them (exit 1, no panic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_refuses_values_that_would_panic_later() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    for (key, bound) in [("idle_session_timeout_secs", 86_400u64), ("max_pending_handshakes", 1 << 20)] {
        let text = format!(
            "[relay]\nlisten = \"127.0.0.1:0\"\nstate_dir = {state:?}\n[admin]\nenabled = false\n\
             [limits]\n{key} = 18446744073709551615\n"
        );
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, &text)?;
        let relay = env!("CARGO_BIN_EXE_ferry-relay");
        let limit = Duration::from_secs(20);
        for args in [vec!["check-config".as_ref(), path.as_os_str()], vec!["--config".as_ref(), path.as_os_str()]] {
            let run = tokio::process::Command::new(relay).args(&args).kill_on_drop(true).output();
            let out = tokio::time::timeout(limit, run).await.context("the relay ran on with the value")??;
            let stderr = String::from_utf8_lossy(&out.stderr);
            let want = format!("`{key}` (line 7): must be at most {bound}");
            ensure!(out.status.code() == Some(1), "{args:?} with {key}: {:?}\n{stderr}", out.status);
            ensure!(stderr.contains(&want), "{args:?} with {key}: no {want:?} in\n{stderr}");
        }
    }
    Ok(())
}
