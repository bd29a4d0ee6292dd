//! Named services behind one host (issue 14, "What must be shown" item 5), and the host's
//! config file: real `ferry` processes and an in-process relay on loopback.
//!
//! Two services behind one host, each reached by its own ticket (bytes checked by SHA-256);
//! a ticket for a service the host does not have is refused by the host with a clear reason
//! (the client's output and the host's log are checked); and a tap on the relay's pump, which
//! sees every byte the relay forwards, finds no service name. A relay-off host (`--no-relay
//! --direct-listen`) serves its named services on the direct path. The host file round trip:
//! `check-config` passes a good file and names the key and line of a bad one.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use common::{ferry, ferry_output};
use ferry::local::{Pattern, pattern_digest};
use ferry_client::{Client, Error, HopOptions, Host, HostConfig, HostIdentity, Services};
use ferry_proto::{RelayAddr, RelayTrust, StaticKey, Ticket};
use ferry_relay::{Relay, RelayConfig, TlsIdentity};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Bytes each service sends per connection.
const LEN: u64 = 1024 * 1024;

/// Names long enough that ciphertext cannot hold one by chance.
const WEB: &str = "media-library";
const SSH: &str = "shell-access";
const MISSING: &str = "no-such-mailbox";

/// A service that sends `LEN` bytes of `Pattern::new(seed)` to every connection, then reads
/// to the client's end and closes: the bytes tell which service a session reached.
async fn pattern_service(seed: u64) -> Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut pattern = Pattern::new(seed);
                let mut buf = vec![0u8; 64 * 1024];
                let mut left = LEN;
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    pattern.fill(&mut buf[..n]);
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
                let _ = stream.shutdown().await;
                let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut Vec::new())).await;
            });
        }
    });
    Ok(addr)
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

/// A relay in this process whose pump hands every forwarded byte to the returned buffer.
async fn tapped_relay() -> Result<(Relay, Arc<Mutex<Vec<u8>>>)> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tap_seen = seen.clone();
    let mut config = RelayConfig::new(([127, 0, 0, 1], 0).into(), TlsIdentity::self_signed(&["localhost".into()])?);
    config.tap = Some(Arc::new(move |bytes: &[u8]| tap_seen.lock().unwrap().extend_from_slice(bytes)));
    Ok((Relay::spawn(config).await?, seen))
}

/// `ferry cat TICKET` with nothing on stdin: (success, stdout, stderr), within 30 s.
async fn cat(ticket: &str) -> Result<(bool, Vec<u8>, String)> {
    let out = tokio::time::timeout(Duration::from_secs(30), ferry().args(["cat", ticket]).output())
        .await
        .context("ferry cat took over 30 s")??;
    Ok((out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_behind_one_host_each_by_its_own_ticket_and_the_relay_never_sees_a_name() -> Result<()> {
    let (relay, seen) = tapped_relay().await?;
    let (web, ssh) = (pattern_service(1).await?, pattern_service(2).await?);
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("host.key");
    ferry_output(&["host", "init", "--key", &key.to_string_lossy()]).await?;
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "key = \"host.key\"\ndefault_service = \"{WEB}\"\n\n[[relays]]\naddress = \"{}\"\npin = \"{}\"\n\n\
             [services]\n{WEB} = \"{web}\"\n{SSH} = \"{ssh}\"\n",
            relay.local_addr(),
            relay.pin()
        ),
    )?;
    let config = config.to_string_lossy().into_owned();
    let checked = ferry_output(&["host", "check-config", "--config", &config]).await?;
    assert!(checked.contains(&format!("services: {WEB} (default), {SSH}")), "{checked}");

    let mut registrations = relay.registrations();
    let seen_before = *registrations.borrow_and_update();
    let mut host =
        ferry().args(["host", "run", "--config", &config]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    tokio::time::timeout(Duration::from_secs(10), registrations.wait_for(|n| *n > seen_before))
        .await
        .context("the host did not register within 10 s")??;

    // Each ticket reaches its own service; one without a service reaches the default.
    for (service, seed) in [(Some(WEB), 1), (Some(SSH), 2), (None, 1)] {
        let mut args = vec!["host", "ticket", "--config", &config];
        if let Some(name) = service {
            args.extend(["--service", name]);
        }
        let ticket = ferry_output(&args).await?;
        assert_eq!(Ticket::decode(ticket.trim())?.service.as_deref(), service);
        let (ok, bytes, stderr) = cat(ticket.trim()).await?;
        assert!(ok, "ferry cat for {service:?} failed: {stderr}");
        assert_eq!(bytes.len() as u64, LEN, "{service:?}");
        assert_eq!(sha256(&bytes), pattern_digest(seed, LEN), "{service:?} reached the wrong service");
    }

    // A ticket for a service the host does not have (made without --config, so unchecked).
    let (relay_addr, pin) = (relay.local_addr().to_string(), relay.pin().to_string());
    let args = ["host", "ticket", "--key", &*key.to_string_lossy(), "--relay", &relay_addr, "--pin", &pin];
    let ticket = ferry_output(&[&args[..], &["--service", MISSING]].concat()).await?;
    let (ok, bytes, stderr) = cat(ticket.trim()).await?;
    assert!(!ok && bytes.is_empty(), "a session for a missing service carried {} bytes", bytes.len());
    assert!(
        stderr.contains(&format!(
            "the host has no service `{MISSING}`; ask its owner for a ticket for one of its services"
        )),
        "{stderr}"
    );
    // The host says so in its own log, naming what it has.
    let log = host.stderr.take().context("host stderr")?;
    let mut lines = BufReader::new(log).lines();
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("refused a session for service") {
                return anyhow::Ok(line);
            }
        }
        anyhow::bail!("the host's log ended without the refusal")
    })
    .await
    .context("no refusal in the host's log within 10 s")??;
    assert!(refused.contains(MISSING) && refused.contains(&format!("{WEB}, {SSH}")), "{refused}");

    // The relay forwarded every session's bytes (handshakes included) and saw no name.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.len() as u64 >= 3 * LEN, "the tap saw {} bytes, fewer than were relayed", seen.len());
    for name in [WEB, SSH, MISSING] {
        assert!(!seen.windows(name.len()).any(|w| w == name.as_bytes()), "the relay saw the service name {name}");
    }
    host.kill().await?;
    relay.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_reports_a_missing_service_and_serves_the_others_meanwhile() -> Result<()> {
    let relay =
        Relay::spawn(RelayConfig::new(([127, 0, 0, 1], 0).into(), TlsIdentity::self_signed(&["localhost".into()])?))
            .await?;
    let relays = vec![RelayAddr { addr: relay.local_addr().to_string(), trust: RelayTrust::Pin(relay.pin()) }];
    let (web, ssh) = (pattern_service(1).await?, pattern_service(2).await?);
    let identity = HostIdentity::generate()?;
    let mut config = HostConfig::new(identity.clone(), relays.clone(), String::new());
    config.services = Services::new(
        [(WEB.to_owned(), web.to_string()), (SSH.to_owned(), ssh.to_string())].into_iter().collect(),
        Some(WEB),
    )?;
    let host = Host::spawn(config);
    ferry::local::wait_registered(&host, 1).await?;

    let ticket_for = |service: Option<&str>| {
        let mut t = Ticket::new(identity.key.public(), identity.secret.clone(), relays.clone());
        t.service = service.map(str::to_owned);
        Client::new(t, StaticKey::generate().unwrap(), HopOptions::client())
    };
    let err = ticket_for(Some(MISSING)).open_session().await.err().context("a missing service must be refused")?;
    assert!(matches!(&err, Error::NoSuchService { service: Some(s) } if s == MISSING), "{err:?}");
    for (service, seed) in [(Some(SSH), 2), (None, 1)] {
        let session = ticket_for(service).open_session().await?;
        let (mut app, bridge) = session.spawn_pipe(64 * 1024);
        app.shutdown().await?;
        let mut bytes = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), app.read_to_end(&mut bytes)).await??;
        bridge.await??;
        assert_eq!(sha256(&bytes), pattern_digest(seed, LEN), "{service:?}");
    }
    host.shutdown().await;
    relay.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Writes `text` as a host file next to a host identity; runs check-config on it.
async fn check_config(dir: &Path, text: &str) -> Result<std::process::Output> {
    let path = dir.join("host.toml");
    std::fs::write(&path, text)?;
    Ok(ferry().args(["host", "check-config", "--config"]).arg(&path).output().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_passes_a_good_file_and_names_key_and_line_of_a_bad_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    ferry_output(&["host", "init", "--key", &dir.path().join("host.key").to_string_lossy()]).await?;
    let head = "key = \"host.key\"\n[[relays]]\naddress = \"relay.example.org:4433\"\npin = \"webpki\"\n";

    let out = check_config(dir.path(), &format!("{head}[services]\nweb = \"127.0.0.1:8096\"\n")).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(": ok (") && stdout.contains("services: web (default)"), "{stdout}");

    for (text, wants) in [
        // A service address without a name: line 6 of the file.
        (format!("{head}[services]\nweb = \"8096\"\n"), &["`services.web` (line 6)", "port alone"][..]),
        (format!("{head}[services]\nweb = \"127.0.0.1:1\"\nwbe = \"x\"\n"), &["`services.wbe` (line 7)", "no port"]),
        ("relay = false\n[services]\nweb = \"127.0.0.1:1\"\n".into(), &["`relay` (line 1)", "[direct]"]),
        (format!("{head}forwrd = \"127.0.0.1:1\"\n"), &["line 5", "forwrd"]),
        (
            format!("{head}[services]\nweb = \"127.0.0.1:1\"\n").replace("webpki", "sha256:xyz"),
            &["`relays[0].pin` (line 4)"],
        ),
        (
            format!("allow = [\"nope\"]\n{head}[services]\nweb = \"127.0.0.1:1\"\n"),
            &["`allow[0]` (line 1)", "ferry key"],
        ),
        // The key file must be readable.
        (
            format!("{head}[services]\nweb = \"127.0.0.1:1\"\n").replace("host.key", "missing.key"),
            &["missing.key", "ferry host init"],
        ),
        // Relays, and at least one service.
        (head.to_owned(), &["no service to forward sessions to"]),
        ("key = \"host.key\"\n[services]\nweb = \"127.0.0.1:1\"\n".into(), &["no relay to register at"]),
    ] {
        let out = check_config(dir.path(), &text).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "check-config passed:\n{text}");
        for want in wants {
            assert!(stderr.contains(want), "{want:?} missing for\n{text}\n---\n{stderr}");
        }
    }
    Ok(())
}

/// Relaying off from the command line: no relay exists at all, the host listens directly,
/// and a ticket made with `--no-relay --advertise` reaches the named service it asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_off_host_serves_its_named_services_directly() -> Result<()> {
    let (web, ssh) = (pattern_service(1).await?, pattern_service(2).await?);
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("host.key").to_string_lossy().into_owned();
    ferry_output(&["host", "init", "--key", &key]).await?;
    let (web, ssh) = (format!("{WEB}={web}"), format!("{SSH}={ssh}"));
    let mut host = ferry()
        .args(["host", "run", "--key", &key, "--no-relay", "--direct-listen", "127.0.0.1:0"])
        .args(["--service", &web, "--service", &ssh, "--default-service", WEB])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let log = host.stderr.take().context("host stderr")?;
    let mut lines = BufReader::new(log).lines();
    let listening = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("direct sessions on") {
                return anyhow::Ok(line);
            }
        }
        anyhow::bail!("the host's log ended before it listened")
    })
    .await
    .context("the host did not listen within 10 s")??;
    assert!(listening.contains("relaying is off"), "{listening}");
    let addr = listening.rsplit(' ').next().context("an address")?.to_owned();
    let ticket =
        ferry_output(&["host", "ticket", "--key", &key, "--no-relay", "--advertise", &addr, "--service", SSH]).await?;
    let (ok, bytes, stderr) = cat(ticket.trim()).await?;
    assert!(ok, "ferry cat through the direct path failed: {stderr}");
    assert_eq!(sha256(&bytes), pattern_digest(2, LEN), "the direct path reached the wrong service");
    host.kill().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_off_needs_a_direct_listener_and_its_tickets_a_direct_address() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("host.key").to_string_lossy().into_owned();
    ferry_output(&["host", "init", "--key", &key]).await?;
    let out = ferry().args(["host", "run", "--key", &key, "--no-relay", "--forward", "127.0.0.1:1"]).output().await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--direct-listen") && stderr.contains("turn relaying on"),
        "{stderr}"
    );

    let out = ferry().args(["host", "ticket", "--key", &key, "--no-relay"]).output().await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--advertise"), "{stderr}");
    let out = ferry().args(["host", "ticket", "--key", &key]).output().await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--relay") && stderr.contains("--no-relay"), "{stderr}");

    let ticket =
        ferry_output(&["host", "ticket", "--key", &key, "--no-relay", "--advertise", "192.0.2.7:4433"]).await?;
    let ticket = Ticket::decode(ticket.trim())?;
    assert!(ticket.relays.is_empty());
    assert_eq!(ticket.direct, vec!["192.0.2.7:4433".to_owned()]);
    Ok(())
}
