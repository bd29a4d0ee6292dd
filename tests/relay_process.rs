//! The `ferry-relay` binary as operators run it: what it logs (and never logs), what its
//! `/metrics` says, SIGHUP certificate reload and SIGTERM drain.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::process::RelayProcess;
use common::{check_prometheus, echo_session, http_get, metric, registered_host, ticket};
use ferry::local::echo_service;
use ferry_cert::SelfSigned;
use ferry_client::{Client, HopOptions};
use ferry_proto::StaticKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MARKER: &[u8] = b"PAYLOAD-MARKER-a41c9e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_hold_only_durations_and_byte_counts_and_metrics_agree() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let config = format!(
        "[relay]\nlisten = \"127.0.0.1:0\"\nstate_dir = {state:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"trace\"\n"
    );
    let mut relay = RelayProcess::start(&config, dir.path(), &[]).await?;
    let (service, _echo) = echo_service().await?;
    let (host, identity) = registered_host(relay.relays(relay.pin), service).await?;
    let ticket = ticket(&identity, relay.relays(relay.pin));
    let client = Client::new(ticket.clone(), StaticKey::generate()?, HopOptions::client());

    let payload: Vec<u8> = MARKER.iter().copied().cycle().take(100_000).collect();
    for _ in 0..20 {
        assert_eq!(echo_session(&client, &payload).await?, payload);
    }
    let mut closes = Vec::new();
    while closes.len() < 20 {
        closes.push(relay.wait_log("session closed").await?);
    }

    // Each close line: duration and bytes, matching what was sent (plus the end-to-end
    // handshake and record overhead, far below 1%).
    let field = |line: &str, key: &str| -> Result<u64> {
        let rest = line.split(&format!("{key}=")).nth(1).with_context(|| format!("{key} in {line}"))?;
        Ok(rest.split(|c: char| !c.is_ascii_digit()).next().unwrap_or_default().parse()?)
    };
    let (mut up, mut down) = (0u64, 0u64);
    for line in &closes {
        field(line, "duration_ms")?;
        let (c2h, h2c) = (field(line, "bytes_client_to_host")?, field(line, "bytes_host_to_client")?);
        for n in [c2h, h2c] {
            // + the ML-KEM key (1184 bytes; its ciphertext the other way is 1088) of the first,
            // hybrid, handshake; the later sessions resume with a 130-byte hello.
            let handshake = 200 + ferry_proto::e2e::hybrid::KEM_KEY_LEN as u64;
            assert!(n >= payload.len() as u64 && n <= payload.len() as u64 * 101 / 100 + handshake, "{line}");
        }
        (up, down) = (up + c2h, down + h2c);
    }

    // /metrics parses and its byte counters equal the bytes the close lines report.
    let admin = relay.admin.clone().context("admin listener")?;
    let response = http_get(&admin, "/metrics").await?;
    let body = response.split("\r\n\r\n").nth(1).context("HTTP body")?;
    check_prometheus(body)?;
    assert_eq!(metric(body, "ferry_relay_bytes_relayed_total{direction=\"client_to_host\"}")?, up as f64);
    assert_eq!(metric(body, "ferry_relay_bytes_relayed_total{direction=\"host_to_client\"}")?, down as f64);
    assert_eq!(metric(body, "ferry_relay_sessions_total")?, 20.0);
    assert!(http_get(&admin, "/healthz").await?.starts_with("HTTP/1.1 200"));

    // Nothing that identifies anyone, at trace level.
    host.shutdown().await;
    relay.signal("TERM")?;
    let _ = relay.child.wait().await?;
    while let Some(line) = relay.log.recv().await {
        relay.seen.push(line);
    }
    let log = relay.seen.join("\n");
    let forbidden = [
        "127.0.0.1".to_owned(),
        relay.addr.clone(),
        identity.key.public().to_string(),
        relay.pin.to_string(),
        ticket.encode()?,
        String::from_utf8_lossy(MARKER).into_owned(),
    ];
    for needle in &forbidden {
        assert!(!log.contains(needle.as_str()), "the relay log contains {needle:?}:\n{log}");
    }
    // The service's port as a number of its own: as a substring, five digits would turn up
    // by chance inside timestamps, byte counts or hex session numbers.
    let port = service.port().to_string();
    assert!(!contains_word(&log, &port), "the relay log contains the service port {port}:\n{log}");
    assert!(relay.seen.len() >= 20, "expected at least the 20 close lines");
    Ok(())
}

/// Whether `needle` occurs in `text` with no letter or digit right before or after it.
fn contains_word(text: &str, needle: &str) -> bool {
    text.match_indices(needle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + needle.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

#[test]
fn contains_word_sees_whole_numbers_only() {
    assert!(contains_word("peer 10.0.0.1:38860 closed", "38860"));
    assert!(contains_word("38860", "38860"));
    assert!(!contains_word("bytes=8388608 session=a38860f", "38860"));
    assert!(!contains_word("at 10:31:22.138860Z", "38860"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_new_certificate_without_dropping_sessions_and_sigterm_drains() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    SelfSigned::generate(&["localhost".into()])?.write(&certs, false)?;
    let config = format!(
        "[relay]\nlisten = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\nshutdown_deadline_secs = 2\n[admin]\nenabled = false\n",
        certs.join("cert.pem"),
        certs.join("key.pem")
    );
    let mut relay = RelayProcess::start(&config, dir.path(), &[]).await?;
    let old_pin = relay.pin;
    let (service, _echo) = echo_service().await?;
    let (host, identity) = registered_host(relay.relays(old_pin), service).await?;

    // A session that keeps streaming across the reload.
    let client = Client::new(ticket(&identity, relay.relays(old_pin)), StaticKey::generate()?, HopOptions::client());
    let session = client.open_session().await?;
    let (app, bridge) = session.spawn_pipe(64 * 1024);
    let (mut app_r, mut app_w) = tokio::io::split(app);
    let echo_round = async |app_w: &mut tokio::io::WriteHalf<tokio::io::DuplexStream>,
                            app_r: &mut tokio::io::ReadHalf<tokio::io::DuplexStream>,
                            n: u8|
           -> Result<()> {
        let chunk = vec![n; 32 * 1024];
        app_w.write_all(&chunk).await?;
        let mut back = vec![0u8; chunk.len()];
        app_r.read_exact(&mut back).await?;
        anyhow::ensure!(back == chunk, "round {n} came back altered");
        Ok(())
    };
    echo_round(&mut app_w, &mut app_r, 1).await?;

    let new = SelfSigned::generate(&["localhost".into()])?;
    new.write(&certs, true)?;
    relay.signal("HUP")?;
    let line = relay.wait_log("reloaded; certificate pin:").await?;
    assert!(line.contains(&new.pin.to_string()), "{line}");

    // The running session keeps streaming; a new client pinning the new certificate
    // connects; one pinning the old one is refused.
    for n in 2..10 {
        echo_round(&mut app_w, &mut app_r, n).await?;
    }
    let fresh = Client::new(ticket(&identity, relay.relays(new.pin)), StaticKey::generate()?, HopOptions::client());
    assert_eq!(echo_session(&fresh, b"after reload").await?, b"after reload");
    let stale = Client::new(ticket(&identity, relay.relays(old_pin)), StaticKey::generate()?, HopOptions::client());
    assert!(stale.open_session().await.is_err(), "the old pin must no longer match");

    // SIGTERM: the running session is told the relay is going away, and the relay exits
    // 0 within its 2 s drain deadline (plus start-up slack).
    let started = Instant::now();
    relay.signal("TERM")?;
    let ended = tokio::time::timeout(Duration::from_secs(10), bridge).await.context("session not ended")??;
    let err = ended.err().context("a session cut by shutdown must end with an error")?;
    assert!(err.to_string().contains("shutting down"), "{err}");
    let status = tokio::time::timeout(Duration::from_secs(10), relay.child.wait()).await??;
    assert!(status.success(), "ferry-relay exited with {status}");
    assert!(started.elapsed() < Duration::from_secs(6), "drain took {:?}", started.elapsed());
    host.shutdown().await;
    Ok(())
}

/// The relay restarts itself once with glibc's per-thread cache off (memory goes back after
/// a burst: docs/soak.md), keeping its pid; an operator's own GLIBC_TUNABLES is left alone.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test]
async fn relay_runs_with_its_glibc_tunables_unless_the_operator_set_some() -> Result<()> {
    let environ = |relay: &RelayProcess| -> Result<Vec<String>> {
        let pid = relay.child.id().context("relay pid")?;
        let raw = std::fs::read(format!("/proc/{pid}/environ"))?;
        Ok(raw.split(|&b| b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect())
    };
    let dir = tempfile::tempdir()?;
    let config = format!(
        "[relay]\nlisten = \"127.0.0.1:0\"\nstate_dir = {:?}\n[admin]\nenabled = false\n",
        dir.path().join("state")
    );
    // Printing its pin means the relay is serving: any re-execution has happened by then.
    let relay = RelayProcess::start_with_env(&config, dir.path(), &[], &[("GLIBC_TUNABLES", None)]).await?;
    let wanted = format!("GLIBC_TUNABLES={}", ferry_relay::allocator::TUNABLES);
    assert!(environ(&relay)?.contains(&wanted), "the relay runs without {wanted}");
    drop(relay);

    let own = "GLIBC_TUNABLES=glibc.malloc.arena_max=2";
    let relay =
        RelayProcess::start_with_env(&config, dir.path(), &[], &[("GLIBC_TUNABLES", Some("glibc.malloc.arena_max=2"))])
            .await?;
    let env = environ(&relay)?;
    assert!(env.iter().any(|v| v == own), "the operator's setting was replaced: {env:?}");
    assert!(!env.contains(&wanted));
    Ok(())
}

/// Issue 17: `--log-format json` writes one JSON object per line, with a timestamp, for log
/// collectors; the start-up line goes through the log too.
#[tokio::test]
async fn json_logs_are_one_object_per_line_with_a_timestamp() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = format!(
        "[relay]\nlisten = \"127.0.0.1:0\"\nstate_dir = {:?}\n[admin]\nenabled = false\n[log]\nlevel = \"info\"\n",
        dir.path().join("state")
    );
    let mut relay = RelayProcess::start(&config, dir.path(), &["--log-format", "json"]).await?;
    let line = relay.wait_log("listening (").await?;
    let object: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
    assert!(object["timestamp"].is_string(), "{line}");
    assert_eq!(object["level"], "INFO", "{line}");
    let message = object["fields"]["message"].as_str().context("a message field")?;
    assert!(message.contains("QUIC on UDP"), "{line}");
    Ok(())
}

/// Issue 17: under systemd (`Type=notify`) the relay says when it serves, reloads and stops,
/// on the socket systemd names in NOTIFY_SOCKET (here, one of the test's own).
#[tokio::test]
async fn the_relay_tells_systemd_when_it_is_ready_and_when_it_stops() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let socket_path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path)?;
    let config = format!(
        "[relay]\nlisten = \"127.0.0.1:0\"\nstate_dir = {:?}\n[admin]\nenabled = false\n",
        dir.path().join("state")
    );
    let path = socket_path.to_str().context("a UTF-8 temp path")?;
    let relay = RelayProcess::start_with_env(&config, dir.path(), &[], &[("NOTIFY_SOCKET", Some(path))]).await?;
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf)).await.context("no READY")??;
    assert_eq!(std::str::from_utf8(&buf[..n])?, "READY=1\n");
    // A reload (SIGHUP) is announced with the monotonic clock, then READY again.
    relay.signal("HUP")?;
    let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf)).await.context("no RELOADING")??;
    let reloading = std::str::from_utf8(&buf[..n])?;
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading}");
    let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
        .await
        .context("no READY after reload")??;
    assert_eq!(std::str::from_utf8(&buf[..n])?, "READY=1\n");
    relay.signal("TERM")?;
    let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf)).await.context("no STOPPING")??;
    assert_eq!(std::str::from_utf8(&buf[..n])?, "STOPPING=1\n");
    Ok(())
}
