//! Relay certificates end to end: a ticket pinning an own CA survives renewal (new leaf
//! key) without dropping a running session; certificates for another name, expired ones
//! and ones from another CA are refused with a message naming the problem; and a
//! certificate obtained from a real ACME server (pebble) is served by the relay.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use ferry::local::{Pattern, echo_service, pattern_digest, send_and_digest, wait_registered};
use ferry_cert::{
    CERT_FILE, CaOptions, CertAuthority, Issued, KEY_FILE, KeyAlg, LeafOptions, RenewOptions, Renewal, renew,
};
use ferry_client::{Client, HopOptions, Host, HostConfig, HostIdentity};
use ferry_proto::{CertPin, RelayAddr, RelayTrust, StaticKey, Ticket};
use ferry_relay::{Relay, RelayConfig, Reloadable, TlsIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const MIB: u64 = 1024 * 1024;
const DAY: Duration = Duration::from_secs(86_400);

fn leaf(names: &[&str], ips: &[&str], days: u32) -> LeafOptions {
    LeafOptions {
        dns_names: names.iter().map(|n| (*n).to_owned()).collect(),
        ips: ips.iter().map(|ip| ip.parse().expect("test IPs parse")).collect(),
        days,
        alg: KeyAlg::EcdsaP256,
    }
}

/// Writes `issued` into `dir` and loads it as the relay would.
fn identity_in(dir: &Path, issued: &Issued) -> Result<TlsIdentity> {
    let (cert, key) = issued.write(dir, true)?;
    Ok(TlsIdentity::from_files(&cert, &key)?)
}

async fn relay_with(identity: TlsIdentity) -> Result<Relay> {
    Ok(Relay::spawn(RelayConfig::new(([127, 0, 0, 1], 0).into(), identity)).await?)
}

/// A client for a host that need not exist: certificate checks happen before any lookup.
fn client_for(relay: &Relay, trust: RelayTrust) -> Result<Client> {
    let ticket = Ticket::new(
        StaticKey::generate()?.public(),
        HostIdentity::generate()?.secret,
        vec![RelayAddr { addr: relay.local_addr().to_string(), trust }],
    );
    Ok(Client::new(ticket, StaticKey::generate()?, HopOptions::client()))
}

/// The error text of a client's first session through `relay`.
async fn refusal(relay: &Relay, trust: RelayTrust) -> Result<String> {
    let client = client_for(relay, trust)?;
    let err = tokio::time::timeout(Duration::from_secs(20), client.open_session())
        .await
        .context("the client neither connected nor failed")?
        .err()
        .context("the certificate should have been refused")?;
    Ok(err.to_string())
}

/// A `ferry connect`-style local port for `client`.
async fn local_port(client: Client) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(Arc::new(client).serve(listener, tokio_util::sync::CancellationToken::new()));
    Ok(addr)
}

/// A host in front of an echo service, registered at `relay` through `trust`, and the
/// ticket for it.
async fn echo_host(relay: &Relay, trust: RelayTrust) -> Result<(Host, Ticket)> {
    let (service, _task) = echo_service().await?;
    let identity = HostIdentity::generate()?;
    let relays = vec![RelayAddr { addr: relay.local_addr().to_string(), trust }];
    let host = Host::spawn(HostConfig::new(identity.clone(), relays.clone(), service.to_string()));
    wait_registered(&host, 1).await?;
    Ok((host, Ticket::new(identity.key.public(), identity.secret.clone(), relays)))
}

/// Issue item 1: CA → issue → relay; a ticket pinning the CA connects before and after a
/// forced renewal (new leaf key) and reload, and a session running across the reload
/// keeps streaming, byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_pinned_ticket_survives_renewal_and_reload_mid_session() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = CertAuthority::generate(&CaOptions::default())?;
    ca.write(&dir.path().join("ca"), false)?;
    let ca_pin = ca.pin()?;
    let issued = ca.issue(&leaf(&["relay.test"], &["127.0.0.1"], 90))?;
    let relay = relay_with(identity_in(&dir.path().join("relay"), &issued)?).await?;
    assert_eq!(relay.pin(), issued.leaf_pin);

    let (host, ticket) = echo_host(&relay, RelayTrust::Pin(ca_pin)).await?;
    let first = local_port(Client::new(ticket.clone(), StaticKey::generate()?, HopOptions::client())).await?;
    let (digest, len) = send_and_digest(TcpStream::connect(first).await?, 1, MIB).await?;
    assert_eq!((digest, len), (pattern_digest(1, MIB), MIB));

    // A long session: half its bytes go through (and come back) before the renewal.
    let half = 8 * MIB;
    let stream = TcpStream::connect(first).await?;
    let (mut r, mut w) = stream.into_split();
    let (progress_tx, mut progress) = watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
            total += n as u64;
            progress_tx.send_replace(total);
        }
        anyhow::Ok((ctx.finish().as_ref().to_vec(), total))
    });
    let mut pattern = Pattern::new(7);
    let mut buf = vec![0u8; 64 * 1024];
    let mut send = async |w: &mut tokio::net::tcp::OwnedWriteHalf, mut left: u64| -> Result<()> {
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            pattern.fill(&mut buf[..n]);
            w.write_all(&buf[..n]).await?;
            left -= n as u64;
        }
        Ok(())
    };
    send(&mut w, half).await?;
    tokio::time::timeout(Duration::from_secs(30), progress.wait_for(|n| *n >= half))
        .await
        .context("the first half did not come back")??;

    // Renew (forced: the certificate is fresh) and reload, as the timer and SIGHUP would.
    let cert_path = dir.path().join("relay").join(CERT_FILE);
    let key_path = dir.path().join("relay").join(KEY_FILE);
    let options = RenewOptions { within_days: 30, days: 90, force: true };
    let Renewal::Renewed(renewed) = renew(&ca, &cert_path, &key_path, &options)? else {
        anyhow::bail!("a forced renewal must renew");
    };
    assert_ne!(renewed.leaf_pin, issued.leaf_pin, "renewal makes a new key");
    assert_eq!(renewed.ca_pin, ca_pin);
    let new_pin =
        relay.reload(Reloadable { identity: TlsIdentity::from_files(&cert_path, &key_path)?, ..relay.reloadable() })?;
    assert_eq!(new_pin, renewed.leaf_pin);

    // A new client with the same ticket connects to the renewed relay.
    let second = local_port(Client::new(ticket.clone(), StaticKey::generate()?, HopOptions::client())).await?;
    let (digest, len) = send_and_digest(TcpStream::connect(second).await?, 2, MIB).await?;
    assert_eq!((digest, len), (pattern_digest(2, MIB), MIB));
    // A ticket pinning the old leaf does not: that is why tickets pin the CA.
    let text = refusal(&relay, RelayTrust::Pin(issued.leaf_pin)).await?;
    assert!(text.contains("is not signed by the pinned CA"), "{text}");

    // The session that was running finishes its second half.
    send(&mut w, half).await?;
    w.shutdown().await?;
    let (digest, len) = tokio::time::timeout(Duration::from_secs(60), reader).await.context("session stalled")???;
    assert_eq!(len, 2 * half);
    assert_eq!(digest, pattern_digest(7, 2 * half), "the running session kept streaming byte-exact");

    host.shutdown().await;
    relay.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Issue item 2: another name, an expired certificate, another CA — each refused with a
/// message that names the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_name_expired_and_foreign_ca_certificates_are_refused_by_name() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = CertAuthority::generate(&CaOptions::default())?;
    let ca_pin = RelayTrust::Pin(ca.pin()?);

    // Signed by the pinned CA, but for a name the client did not dial (it dials 127.0.0.1).
    let other_name = ca.issue(&leaf(&["elsewhere.test"], &["127.0.0.2"], 90))?;
    let relay = relay_with(identity_in(&dir.path().join("name"), &other_name)?).await?;
    let text = refusal(&relay, ca_pin).await?;
    assert!(text.contains("the relay's certificate is for another name"), "{text}");
    relay.shutdown(Duration::from_secs(5)).await;

    // Signed by the pinned CA, right name, expired yesterday.
    let now = SystemTime::now();
    let expired = ca.issue_for_period(&leaf(&["relay.test"], &["127.0.0.1"], 1), now - 91 * DAY, now - DAY)?;
    let relay = relay_with(identity_in(&dir.path().join("expired"), &expired)?).await?;
    let text = refusal(&relay, ca_pin).await?;
    assert!(text.contains("the relay's certificate has expired"), "{text}");
    // Pinning the expired leaf itself does not make it acceptable either.
    let text = refusal(&relay, RelayTrust::Pin(expired.leaf_pin)).await?;
    assert!(text.contains("the relay's certificate has expired"), "{text}");
    relay.shutdown(Duration::from_secs(5)).await;

    // Right name, valid, but from another CA.
    let other_ca = CertAuthority::generate(&CaOptions { name: "someone else's CA".into(), ..CaOptions::default() })?;
    let foreign = other_ca.issue(&leaf(&["relay.test"], &["127.0.0.1"], 90))?;
    let relay = relay_with(identity_in(&dir.path().join("foreign"), &foreign)?).await?;
    let text = refusal(&relay, ca_pin).await?;
    assert!(text.contains("the relay's certificate is not signed by the pinned CA"), "{text}");
    // The same relay, pinned by its own CA, is fine: the refusals above are about trust.
    let client = client_for(&relay, RelayTrust::Pin(other_ca.pin()?))?;
    let err = client.open_session().await.err().context("no such host: must be refused by the relay")?;
    assert!(matches!(err, ferry_client::Error::Refused(_)), "{err:?}");
    relay.shutdown(Duration::from_secs(5)).await;

    // A self-signed relay whose key is simply not the pinned one: the classic mismatch.
    let relay = relay_with(TlsIdentity::self_signed(&["127.0.0.1".into()])?).await?;
    let text = refusal(&relay, RelayTrust::Pin(CertPin([9; 32]))).await?;
    assert!(text.contains("does not match the ticket's pin"), "{text}");
    relay.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// `N` distinct free loopback TCP ports for pebble and the challenge listener, which
/// need the numbers before either binds them. They are drawn below the kernel's
/// ephemeral range (32768+), so no outgoing connection of a test running alongside can
/// take one in the gap, and all are held until all are picked, so none repeats.
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut held = Vec::with_capacity(N);
    for _ in 0..1000 {
        if held.len() == N {
            break;
        }
        let mut bytes = [0u8; 2];
        SystemRandom::new().fill(&mut bytes).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let port = 20_000 + u16::from_le_bytes(bytes) % 12_000;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    let ports: Vec<u16> = held.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?;
    ports.try_into().map_err(|_| anyhow::anyhow!("no {N} free loopback ports in 20000-31999"))
}

/// pebble (Debian's package, installed by `scripts/test.sh`) on loopback, killed on drop.
struct Pebble {
    _child: tokio::process::Child,
    directory: String,
    root: std::path::PathBuf,
    /// Where pebble validates HTTP-01: the challenge listener must bind it.
    http_port: u16,
}

/// Starts pebble with its own HTTPS certificate from a fresh CA (whose root the ACME
/// client is told to trust) and HTTP-01 validation against a free loopback port (`http_port`), or
/// returns `None` (after saying so) when pebble is not installed.
async fn start_pebble(dir: &Path) -> Result<Option<Pebble>> {
    if std::process::Command::new("pebble").arg("-h").output().is_err() {
        eprintln!("SKIPPED: pebble is not installed (scripts/test.sh installs it with apt-get); ACME not tested");
        return Ok(None);
    }
    let ca = CertAuthority::generate(&CaOptions { name: "pebble test root".into(), ..CaOptions::default() })?;
    let (root, _) = ca.write(&dir.join("pebble-ca"), false)?;
    let (cert, key) = ca.issue(&leaf(&["localhost"], &["127.0.0.1"], 2))?.write(&dir.join("pebble-https"), false)?;
    let [listen, management, tls, http_port] = free_ports()?;
    let config = format!(
        r#"{{"pebble": {{"listenAddress": "127.0.0.1:{listen}", "managementListenAddress": "127.0.0.1:{management}",
            "certificate": "{}", "privateKey": "{}", "httpPort": {http_port}, "tlsPort": {},
            "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}"#,
        cert.display(),
        key.display(),
        tls
    );
    let config_path = dir.join("pebble.json");
    std::fs::write(&config_path, config)?;
    let mut child = tokio::process::Command::new("pebble")
        .arg("-config")
        .arg(&config_path)
        // Validation is real (pebble fetches the token from our listener); only its
        // random 0-15 s pause before validating is switched off.
        .env("PEBBLE_VA_NOSLEEP", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    common::wait_for_line(&mut child, "Listening on", Duration::from_secs(20)).await?;
    // pebble logs before it binds: wait (bounded) until its port accepts connections.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", listen)).await.is_err() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "pebble did not open port {listen}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Keep draining pebble's log so it never blocks on a full pipe.
    if let Some(mut out) = child.stdout.take() {
        tokio::spawn(async move { tokio::io::copy(&mut out, &mut tokio::io::sink()).await });
    }
    Ok(Some(Pebble { _child: child, directory: format!("https://127.0.0.1:{listen}/dir"), root, http_port }))
}

/// Issue item 3: a certificate from a real ACME server over HTTP-01 on loopback, served
/// by the relay to a client that pins the issued leaf's key; a second run reuses the
/// stored account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_certificate_from_pebble_is_served_by_the_relay() -> Result<()> {
    use ferry_cert::acme::{self, AcmeRequest, Challenge};

    let dir = tempfile::tempdir()?;
    let Some(pebble) = start_pebble(dir.path()).await? else {
        return Ok(());
    };
    let out = dir.path().join("relay");
    let request = AcmeRequest {
        directory: pebble.directory.clone(),
        domains: vec!["localhost".into()],
        email: Some("operator@example.org".into()),
        out: out.clone(),
        challenge: Challenge::Http01(([127, 0, 0, 1], pebble.http_port).into()),
        ca_root: Some(pebble.root.clone()),
        alg: KeyAlg::EcdsaP256,
        timeout: Duration::from_secs(30),
    };
    let obtained = tokio::time::timeout(Duration::from_secs(60), acme::obtain(&request)).await??;
    assert!(obtained.new_account);
    assert_eq!(
        std::fs::metadata(out.join(acme::ACCOUNT_FILE))?.permissions().mode() & 0o777,
        0o600,
        "account credentials are private"
    );
    assert_eq!(std::fs::metadata(&obtained.key)?.permissions().mode() & 0o777, 0o600);

    let identity = TlsIdentity::from_files(&obtained.cert, &obtained.key)?;
    assert!(identity.certs.len() >= 2, "pebble sends leaf and intermediate");
    let relay = relay_with(identity).await?;
    assert_eq!(relay.pin(), obtained.leaf_pin);
    let (host, ticket) = echo_host(&relay, RelayTrust::Pin(obtained.leaf_pin)).await?;
    let port = local_port(Client::new(ticket, StaticKey::generate()?, HopOptions::client())).await?;
    let (digest, len) = send_and_digest(TcpStream::connect(port).await?, 3, MIB).await?;
    assert_eq!((digest, len), (pattern_digest(3, MIB), MIB));

    // Renewal: the stored account is reused and the pair replaced with a new key.
    let again = tokio::time::timeout(Duration::from_secs(60), acme::obtain(&request)).await??;
    assert!(!again.new_account, "the account from the first run is reused");
    assert_ne!(again.leaf_pin, obtained.leaf_pin);

    host.shutdown().await;
    relay.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
