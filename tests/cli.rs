//! The `ferry` command as users run it: real processes, a real HTTP server and client,
//! stdin/stdout sessions, and a host killed mid-stream.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::{echo_stack, ferry, ferry_output, wait_for_line};
use ferry::local::{Pattern, echo_service};
use ferry_client::Client;
use ferry_relay::{Relay, RelayConfig, TlsIdentity};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// A relay in this process and a host identity file for the `ferry` binary.
struct Setup {
    relay: Relay,
    dir: tempfile::TempDir,
    key: String,
    relay_addr: String,
    pin: String,
}

async fn setup() -> Result<Setup> {
    let identity = TlsIdentity::self_signed(&["localhost".into()])?;
    let relay = Relay::spawn(RelayConfig::new(([127, 0, 0, 1], 0).into(), identity)).await?;
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("host.key").to_string_lossy().into_owned();
    let host_id = ferry_output(&["host", "init", "--key", &key]).await?;
    assert_eq!(host_id.trim().len(), 52, "host init prints the host id");
    let relay_addr = relay.local_addr().to_string();
    let pin = relay.pin().to_string();
    Ok(Setup { relay, dir, key, relay_addr, pin })
}

impl Setup {
    /// Starts `ferry host run` forwarding to `forward` and waits until it registered.
    async fn host(&self, forward: &str) -> Result<tokio::process::Child> {
        let mut registrations = self.relay.registrations();
        let seen = *registrations.borrow_and_update();
        let child = ferry()
            .args(["host", "run", "--relay", &self.relay_addr, "--pin", &self.pin, "--forward", forward])
            .args(["--key", &self.key])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        tokio::time::timeout(Duration::from_secs(10), registrations.wait_for(|n| *n > seen))
            .await
            .context("the host did not register within 10 s")??;
        Ok(child)
    }

    async fn ticket(&self) -> Result<String> {
        let out =
            ferry_output(&["host", "ticket", "--relay", &self.relay_addr, "--pin", &self.pin, "--key", &self.key])
                .await?;
        Ok(out.trim().to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_service_answers_curl_through_ferry_connect() -> Result<()> {
    let s = setup().await?;
    let www = s.dir.path().join("www");
    std::fs::create_dir(&www)?;
    let mut page = vec![0u8; 2 << 20];
    Pattern::new(80).fill(&mut page);
    std::fs::write(www.join("movie.bin"), &page)?;

    // Port 0: the server picks a free port and names it ("Serving HTTP on 127.0.0.1 port N ...").
    let mut http = tokio::process::Command::new("python3")
        .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
        .current_dir(&www)
        .kill_on_drop(true)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("python3 is needed for this test")?;
    let serving = wait_for_line(&mut http, "Serving HTTP", Duration::from_secs(10)).await?;
    let http_port: u16 = serving
        .split_whitespace()
        .skip_while(|word| *word != "port")
        .nth(1)
        .and_then(|port| port.parse().ok())
        .with_context(|| format!("a port in {serving:?}"))?;

    let _host = s.host(&format!("127.0.0.1:{http_port}")).await?;
    let ticket = s.ticket().await?;
    let mut connect = ferry()
        .args(["connect", &ticket, "--listen", "127.0.0.1:0", "--log", "info"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let line = wait_for_line(&mut connect, "listening on", Duration::from_secs(10)).await?;
    let local = line.split_whitespace().nth(2).context("address in the listening line")?.to_owned();

    let out = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "30"])
        .arg(format!("http://{local}/movie.bin"))
        .output()
        .await
        .context("curl is needed for this test")?;
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), page.len());
    assert!(out.stdout == page, "the page arrived altered");
    // The one line the session gets at `--log info`: how long, how much, which way.
    let stderr = connect.stderr.take().context("stderr")?;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let summary = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("session closed after") {
                return anyhow::Ok(line);
            }
        }
        anyhow::bail!("ferry connect's log ended without a session summary")
    })
    .await
    .context("no session summary within 10 s")??;
    let received: usize = summary
        .split("received ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("a byte count in {summary:?}"))?;
    assert!(received > page.len(), "{summary}");
    assert!(summary.contains("via relay 127.0.0.1:"), "{summary}");
    s.relay.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_cat_returns_a_whole_file_from_an_echo_service_and_exits_zero() -> Result<()> {
    let s = setup().await?;
    let (echo, _task) = echo_service().await?;
    let _host = s.host(&echo.to_string()).await?;
    let ticket = s.ticket().await?;

    let mut data = vec![0u8; 8 << 20];
    Pattern::new(5).fill(&mut data);
    let file = s.dir.path().join("input.bin");
    std::fs::write(&file, &data)?;
    let out = ferry().args(["cat", &ticket]).stdin(std::fs::File::open(&file)?).output().await?;
    assert!(out.status.success(), "ferry cat failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "the echo came back altered");
    s.relay.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line_a_person_understands() -> Result<()> {
    let s = echo_stack().await?;
    let mut ticket = s.stack.ticket.clone();
    ticket.secret = ferry_proto::TicketSecret([1; 32]);
    let cases = [(ticket.encode()?, "ticket's secret is wrong"), ("ferry1notaticket".to_owned(), "invalid ticket")];
    for (ticket, expected) in cases {
        let out = ferry().args(["cat", &ticket]).output().await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(expected), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("host.key").to_string_lossy().into_owned();
    ferry_output(&["host", "init", "--key", &key]).await?;
    let again = ferry().args(["host", "init", "--key", &key]).output().await?;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_host_ends_the_client_session_with_an_error_within_5_s() -> Result<()> {
    let s = setup().await?;
    let (echo, _task) = echo_service().await?;
    let mut host = s.host(&echo.to_string()).await?;
    let ticket: ferry_proto::Ticket = s.ticket().await?.parse()?;
    let client = Client::new(ticket, ferry_proto::StaticKey::generate()?, ferry_client::HopOptions::client());
    let session = client.open_session().await?;

    let (app, bridge) = session.spawn_pipe(64 * 1024);
    let (mut app_read, mut app_write) = tokio::io::split(app);
    // Keep data flowing (bounded: at most 1 GiB or until the session breaks).
    tokio::spawn(async move {
        let chunk = vec![7u8; 16 * 1024];
        for _ in 0..65_536 {
            if app_write.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let mut first = [0u8; 1024];
    app_read.read_exact(&mut first).await.context("the echo started")?;
    tokio::spawn(async move {
        let mut sink = vec![0u8; 64 * 1024];
        while matches!(app_read.read(&mut sink).await, Ok(n) if n > 0) {}
    });

    host.start_kill()?;
    let killed = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(5), bridge).await;
    let ended = killed.elapsed();
    let result = outcome.context("the session did not end within 5 s of the host dying")??;
    let err = result.err().context("a session cut by a dead host must be an error")?;
    eprintln!("session ended {ended:?} after the kill: {err}");
    s.relay.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

/// `ferry demo` runs the real `ferry-relay` beside it (issue 17: the `ferry` binary links no
/// relay), streams the bytes both ways and checks their SHA-256 itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_demo_runs_the_relay_binary_and_verifies_the_bytes() -> Result<()> {
    let out = ferry().args(["demo", "--mib", "8"]).output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("relay (ferry-relay) on 127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("demo: 8 MiB each way through relay + host + client, SHA-256 verified"), "{stdout}");
    Ok(())
}
