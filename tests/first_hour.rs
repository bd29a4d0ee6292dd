//! Issue 17, "the first hour": what a new user meets, against the real `ferry` binary (and
//! the host library where the behaviour is the library's): bad values refused where they
//! are typed, keys that can be shared and allow-listed, a host that backs off when another
//! instance takes its registration, `ferry connect` waiting for a relay that is not up yet,
//! log levels that show ferry's own lines, and `ferry cat`'s summary.

mod common;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{echo_stack, ferry, ferry_output, metric, wait_for_line};
use ferry::local::{Pattern, echo_service};
use ferry_client::{Host, HostConfig, HostIdentity};
use ferry_proto::{RelayAddr, RelayTrust};
use ferry_relay::{Relay, RelayConfig, TlsIdentity};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Runs `ferry` with `args`; returns (exit code, stderr).
async fn ferry_fails(args: &[&str]) -> Result<(i32, String)> {
    let out = ferry().args(args).output().await?;
    ensure!(!out.status.success(), "ferry {args:?} should fail; stdout: {}", String::from_utf8_lossy(&out.stdout));
    Ok((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_refused_where_they_are_typed_with_the_fix() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("host.key").to_string_lossy().into_owned();
    ferry_output(&["host", "init", "--key", &key]).await?;
    let pin = "sha256:bas7sx76qp6n7xyg76sb2um6fuwlxhihzwqcwvdhq37a6kovqlca";

    // An address without a port: refused by clap (exit 2), no ticket printed.
    let (code, err) = ferry_fails(&["host", "ticket", "--key", &key, "--relay", "127.0.0.1", "--pin", pin]).await?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("'127.0.0.1'") && err.contains("no port") && err.contains("name:port"), "{err}");

    // A port alone for --forward: refused before anything registers.
    let run = ["host", "run", "--key", &key, "--relay", "127.0.0.1:4433", "--pin", pin, "--forward"];
    let (code, err) = ferry_fails(&[&run[..], &["8000"]].concat()).await?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("port alone") && err.contains("127.0.0.1:8000"), "{err}");

    // A name that does not resolve: refused at start, saying which flag.
    let (_, err) = ferry_fails(&[&run[..], &["no-such-host.invalid:80"]].concat()).await?;
    assert!(err.contains("--forward no-such-host.invalid:80") && err.contains("resolve"), "{err}");
    assert!(!err.contains("registered"), "{err}");

    // A pin of the wrong form.
    let (code, err) =
        ferry_fails(&["host", "ticket", "--key", &key, "--relay", "relay.test:4433", "--pin", "abc"]).await?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sha256:"), "{err}");

    // A log level that does not exist: refused, not silently `warn`.
    let (code, err) = ferry_fails(&["--log", "bogus", "host", "id", "--key", &key]).await?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("error, warn, info, debug or trace"), "{err}");

    // A registration token the wire cannot carry is refused, not retried forever.
    let long = "t".repeat(256);
    let (_, err) = ferry_fails(&[&run[..], &["127.0.0.1:8000", "--token", &long]].concat()).await?;
    assert!(err.contains("1 to 255"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uppercased_ticket_works_and_the_qr_code_sets_its_own_colours() -> Result<()> {
    let s = echo_stack().await?;
    // What a phone reads from the QR code: the ticket in uppercase. It opens a session.
    let upper = s.stack.ticket.encode()?.to_uppercase();
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("input");
    std::fs::write(&input, b"ping\n")?;
    let out = ferry().args(["cat", &upper]).stdin(std::fs::File::open(&input)?).output().await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"ping\n");

    let key = dir.path().join("host.key").to_string_lossy().into_owned();
    ferry_output(&["host", "init", "--key", &key]).await?;
    let relay = s.stack.relay.local_addr().to_string();
    let pin = s.stack.relay.pin().to_string();
    let out = ferry_output(&["host", "ticket", "--key", &key, "--relay", &relay, "--pin", &pin, "--qr"]).await?;
    let mut lines = out.lines();
    let ticket = lines.next().context("the ticket line")?;
    assert!(ticket.starts_with("ferry1"), "the printed ticket stays lowercase: {ticket}");
    let qr: Vec<&str> = lines.collect();
    assert!(qr.len() > 10, "{out}");
    // Every cell sets foreground and background (black on white), so the terminal's theme
    // cannot invert the code; the decoding itself is tested in src/cli/qr.rs.
    assert!(qr.iter().all(|l| l.starts_with("\x1b[") && l.ends_with("\x1b[0m")), "{out}");
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_file_admits_its_keys_and_the_host_logs_a_refused_key() -> Result<()> {
    let identity = TlsIdentity::self_signed(&["localhost".into()])?;
    let relay = Relay::spawn(RelayConfig::new(([127, 0, 0, 1], 0).into(), identity)).await?;
    let (relay_addr, pin) = (relay.local_addr().to_string(), relay.pin().to_string());
    let (echo, _task) = echo_service().await?;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (host_key, alice, bob) = (path("host.key"), path("alice.key"), path("bob.key"));
    ferry_output(&["host", "init", "--key", &host_key]).await?;

    // `ferry key` makes a client key on first use and prints its public half, the same
    // every time; for a host identity it prints the host id.
    let alice_pub = ferry_output(&["key", &alice]).await?.trim().to_owned();
    assert_eq!(ferry_output(&["key", &alice]).await?.trim(), alice_pub);
    assert_eq!(alice_pub.len(), 52);
    let bob_pub = ferry_output(&["key", &bob]).await?.trim().to_owned();
    let host_id = ferry_output(&["host", "id", "--key", &host_key]).await?;
    assert_eq!(ferry_output(&["key", &host_key]).await?, host_id);
    let allow = path("allowed");
    std::fs::write(&allow, format!("# who may connect\n{alice_pub}   # alice's phone\n\n"))?;

    let mut registrations = relay.registrations();
    let seen = *registrations.borrow_and_update();
    let mut host = ferry()
        .args(["host", "run", "--key", &host_key, "--relay", &relay_addr, "--pin", &pin])
        .args(["--forward", &echo.to_string(), "--allow-file", &allow])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    tokio::time::timeout(Duration::from_secs(10), registrations.wait_for(|n| *n > seen))
        .await
        .context("the host did not register within 10 s")??;
    let ticket = ferry_output(&["host", "ticket", "--key", &host_key, "--relay", &relay_addr, "--pin", &pin]).await?;
    let ticket = ticket.trim();

    let input = path("input");
    std::fs::write(&input, b"ping\n")?;
    let cat = |key: &str| {
        ferry().args(["cat", ticket, "--key", key]).stdin(Stdio::from(std::fs::File::open(&input).unwrap())).output()
    };
    let admitted = cat(&alice).await?;
    assert!(admitted.status.success(), "alice is on the list: {}", String::from_utf8_lossy(&admitted.stderr));
    assert_eq!(admitted.stdout, b"ping\n");
    let refused = cat(&bob).await?;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("allow-list"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // The host's own log names the refused key, so its owner can add it.
    let stderr = host.stderr.take().context("host stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("refused a session") {
                return Ok(line);
            }
        }
        anyhow::bail!("the host exited")
    })
    .await
    .context("no refusal line in the host's log within 10 s")??;
    assert!(line.contains(&bob_pub) && !line.contains(&alice_pub), "{line}");
    assert!(line.contains("--allow"), "{line}");
    host.start_kill()?;
    relay.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_with_one_key_back_off_and_the_relay_counts_replacements() -> Result<()> {
    two_hosts_with_one_key(ferry_client::Transport::Quic).await
}

/// The same over TLS on TCP, where no QUIC close code can say "replaced": the relay says it
/// on the control stream (`Refused{Replaced}`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tcp_hosts_with_one_key_back_off_too() -> Result<()> {
    two_hosts_with_one_key(ferry_client::Transport::Tcp).await
}

async fn two_hosts_with_one_key(transport: ferry_client::Transport) -> Result<()> {
    let identity = TlsIdentity::self_signed(&["localhost".into()])?;
    let relay = Relay::spawn(RelayConfig::new(([127, 0, 0, 1], 0).into(), identity)).await?;
    let relays = vec![RelayAddr { addr: relay.local_addr().to_string(), trust: RelayTrust::Pin(relay.pin()) }];
    let (echo, _task) = echo_service().await?;
    let host_identity = HostIdentity::generate()?;
    let spawn = || {
        let mut config = HostConfig::new(host_identity.clone(), relays.clone(), echo.to_string());
        config.transport = transport;
        Host::spawn(config)
    };
    let first = spawn();
    ferry::local::wait_registered(&first, 1).await?;
    let second = spawn();

    // The second takes the registration over; the first is told it was replaced.
    let mut status = first.status();
    tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.replaced >= 1))
        .await
        .context("the first host was not told it was replaced within 10 s")??;
    let said = status.borrow().last_error.clone().unwrap_or_default();
    assert!(said.contains("another instance of this host is running"), "{said}");
    assert!(metric(&relay.metrics_text(), "ferry_relay_hosts_replaced_total")? >= 1.0);

    // Then they take turns at most every second or two, not ~12 times a second: count the
    // registrations the relay sees in a 5 s window.
    let window = Duration::from_secs(5);
    let mut registrations = relay.registrations();
    let start = *registrations.borrow_and_update();
    let _ = tokio::time::timeout(window, async {
        // Bounded: stops at 1,000 changes (a busy loop would hit that well within 5 s).
        for _ in 0..1_000 {
            if registrations.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    let during = *registrations.borrow() - start;
    eprintln!("registrations in {window:?} with two instances of one host: {during}");
    assert!(during <= 6, "{during} registrations in {window:?}: the two instances do not back off");
    assert!(relay.registered_hosts() <= 1);
    first.shutdown().await;
    second.shutdown().await;
    relay.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_connect_waits_for_a_relay_that_is_not_up_yet() -> Result<()> {
    // The ticket names a relay that does not run yet: a known certificate, a free port.
    let tls = TlsIdentity::self_signed(&["localhost".into()])?;
    let pin = tls.pin()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let relays = vec![RelayAddr { addr: addr.to_string(), trust: RelayTrust::Pin(pin) }];
    let host_identity = HostIdentity::generate()?;
    let ticket = common::ticket(&host_identity, relays.clone()).encode()?;

    let mut connect = ferry()
        .args(["connect", &ticket, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = connect.stderr.take().context("stderr")?;
    let mut errors = BufReader::new(stderr).lines();
    let retry = tokio::time::timeout(Duration::from_secs(15), errors.next_line())
        .await
        .context("ferry connect said nothing within 15 s")??
        .context("ferry connect exited")?;
    assert!(retry.contains("cannot reach the relay") && retry.contains("retrying in"), "{retry}");

    let relay = Relay::spawn(RelayConfig::new(addr, tls)).await?;
    let (echo, _task) = echo_service().await?;
    let host = Host::spawn(HostConfig::new(host_identity, relays, echo.to_string()));
    ferry::local::wait_registered(&host, 1).await?;
    let line = wait_for_line(&mut connect, "listening on", Duration::from_secs(20)).await?;
    let local = line.split_whitespace().nth(2).context("address in the listening line")?.to_owned();
    let mut stream = tokio::net::TcpStream::connect(&local).await?;
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        stream.write_all(b"hello").await?;
        stream.shutdown().await?;
        stream.read_to_end(&mut back).await
    })
    .await
    .context("no echo through ferry connect within 10 s")??;
    assert_eq!(back, b"hello");
    connect.start_kill()?;
    host.shutdown().await;
    relay.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_debug_shows_ferry_s_lines_and_not_its_libraries() -> Result<()> {
    let s = echo_stack().await?;
    // A host that never registers: `wait` retries against a live relay (real TLS and QUIC
    // handshakes each time) and logs each attempt at debug.
    let mut ticket = s.stack.ticket.clone();
    ticket.host = ferry_proto::StaticKey::generate()?.public();
    let out = ferry().args(["--log", "debug", "wait", &ticket.encode()?, "--timeout", "2s"]).output().await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("the host did not answer through its relay within 2s"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.iter().any(|l| l.contains("DEBUG") && l.contains("ferry")), "{stderr}");
    assert!(!lines.iter().any(|l| l.contains("rustls") || l.contains("quinn")), "{stderr}");
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_cat_says_what_moved_at_log_info() -> Result<()> {
    let s = echo_stack().await?;
    let dir = tempfile::tempdir()?;
    let mut data = vec![0u8; 1 << 20];
    Pattern::new(17).fill(&mut data);
    let file = dir.path().join("input.bin");
    std::fs::write(&file, &data)?;
    let out = ferry()
        .args(["--log", "info", "cat", &s.stack.ticket.encode()?])
        .stdin(std::fs::File::open(&file)?)
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(out.stdout == data, "the echo came back altered");
    assert!(stderr.contains("sent 1.00 MiB, received 1.00 MiB in "), "{stderr}");
    // The summary names the path (issue 14: the user sees the path).
    assert!(stderr.contains(" via relay 127.0.0.1:"), "{stderr}");

    // `--quiet`: nothing at all on stderr, even at --log info.
    let out = ferry()
        .args(["--log", "info", "cat", "--quiet", &s.stack.ticket.encode()?])
        .stdin(std::fs::File::open(&file)?)
        .output()
        .await?;
    assert!(out.status.success() && out.stdout == data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("sent 1.00 MiB"), "--quiet printed a summary: {stderr}");
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_binary_names_itself_and_check_config_checks_state_dir() -> Result<()> {
    for (bin, name) in
        [(env!("CARGO_BIN_EXE_ferry-cert"), "ferry-cert"), (env!("CARGO_BIN_EXE_ferry-relay"), "ferry-relay")]
    {
        let version = tokio::process::Command::new(bin).arg("--version").output().await?;
        let version = String::from_utf8(version.stdout)?;
        assert!(version.starts_with(&format!("{name} ")), "{version}");
        let help = tokio::process::Command::new(bin).arg("--help").output().await?;
        let help = String::from_utf8(help.stdout)?;
        let first = help.lines().next().unwrap_or_default();
        assert!(!first.contains("The `ferry` command"), "{name} --help opens with the package's text: {first}");
    }
    let cert_help = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry-cert")).arg("--help").output().await?;
    assert!(String::from_utf8(cert_help.stdout)?.starts_with("Provision ferry relay certificates"));

    // A state_dir under a file cannot work: check-config says so, and what to do.
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("file"), "")?;
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, format!("[relay]\nstate_dir = {:?}\n", dir.path().join("file/state")))?;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry-relay"))
        .arg("check-config")
        .arg(&config)
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check-config passed a state_dir it cannot use");
    assert!(stderr.contains("cannot keep the relay's certificate in state_dir"), "{stderr}");
    assert!(stderr.contains("--state-dir"), "the fix is named: {stderr}");
    assert_eq!(stderr.matches("not a directory").count(), 1, "the cause is said once: {stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_parse_and_completions_and_man_page_are_generated() -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let target = format!("127.0.0.1:{port}"); // nothing listens there once the probe is dropped
    let out = ferry()
        .args(["--log-format", "json", "--log", "debug", "wait", &target, "--timeout", "300ms"])
        .output()
        .await?;
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr)?;
    let (logs, last) = stderr.trim_end().rsplit_once('\n').context("log lines, then the error")?;
    assert!(last.starts_with("ferry: ") && last.contains("did not accept a connection"), "{last}");
    let mut parsed = 0;
    for line in logs.lines() {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        assert_eq!(v["level"], "DEBUG", "{line}");
        assert!(v["target"].as_str().is_some_and(|t| t.starts_with("ferry")), "{line}");
        assert!(v["timestamp"].is_string() && v["fields"]["message"].is_string(), "{line}");
        parsed += 1;
    }
    assert!(parsed >= 1, "{stderr}");

    let bash = ferry_output(&["completions", "bash"]).await?;
    assert!(bash.contains("_ferry()") && bash.contains("allow-file") && bash.contains("wait"), "bash completion");
    let man = ferry_output(&["man"]).await?;
    assert!(man.contains(".TH ferry 1") && man.contains("reach a service behind NAT"), "man page");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_whose_relays_are_all_down_names_each_failure() -> Result<()> {
    let pin = TlsIdentity::self_signed(&["localhost".into()])?.pin()?;
    let dead = |_: usize| -> Result<RelayAddr> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Ok(RelayAddr { addr: format!("127.0.0.1:{port}"), trust: RelayTrust::Pin(pin) })
    };
    let relays = (0..3).map(dead).collect::<Result<Vec<_>>>()?;
    let ticket = common::ticket(&HostIdentity::generate()?, relays.clone()).encode()?;
    let out = ferry().args(["cat", &ticket, "--transport", "tcp"]).output().await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("ferry: none of the ticket's 3 relays answered: "), "{stderr}");
    for relay in &relays {
        assert!(last.contains(&relay.addr), "{} missing: {last}", relay.addr);
    }
    // The first two are said as they fail, not only at the end.
    assert_eq!(stderr.matches("trying the ticket's other relays").count(), 2, "{stderr}");
    Ok(())
}
