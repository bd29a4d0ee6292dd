//! `ferry-cert` as an operator runs it: CA, issue, pin, inspect, renew, key file modes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

fn ferry_cert(args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_ferry-cert"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .context("cannot run ferry-cert")
}

/// Runs `ferry-cert`, fails on a non-zero exit, returns stdout.
fn ok(args: &[&str]) -> Result<String> {
    let out = ferry_cert(args)?;
    ensure!(out.status.success(), "ferry-cert {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

/// Runs `ferry-cert`, expects failure, returns stderr.
fn fails(args: &[&str]) -> Result<String> {
    let out = ferry_cert(args)?;
    ensure!(!out.status.success(), "ferry-cert {args:?} should have failed");
    Ok(String::from_utf8(out.stderr)?)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A CA in `dir/ca` and a 90-day relay certificate from it in `dir/relay`.
fn ca_and_relay(dir: &Path) -> Result<(String, String)> {
    let ca_pin = ok(&["ca", "init", "--out", p(&dir.join("ca"))])?;
    let leaf_pin = ok(&[
        "issue",
        "--ca",
        p(&dir.join("ca")),
        "--name",
        "relay.test",
        "--ip",
        "127.0.0.1",
        "--days",
        "90",
        "--out",
        p(&dir.join("relay")),
    ])?;
    Ok((ca_pin.trim().to_owned(), leaf_pin.trim().to_owned()))
}

#[test]
fn ca_issue_pin_and_inspect() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (ca_pin, leaf_pin) = ca_and_relay(dir.path())?;
    assert!(ca_pin.starts_with("sha256:") && leaf_pin.starts_with("sha256:"));
    assert_ne!(ca_pin, leaf_pin);

    let ca_cert = dir.path().join("ca/ca.pem");
    let chain = dir.path().join("relay/cert.pem");
    assert_eq!(ok(&["pin", p(&ca_cert)])?.trim(), ca_pin, "pin of a CA cert");
    assert_eq!(ok(&["pin", p(&chain)])?.trim(), leaf_pin, "pin of the leaf");
    assert_eq!(ok(&["pin", "--ca", p(&chain)])?.trim(), ca_pin, "CA of the chain");

    let text = ok(&["inspect", p(&chain)])?;
    assert!(text.contains("certificate 1 of 2"), "{text}");
    assert!(text.contains("certificate 2 of 2"), "{text}");
    assert!(text.contains("names:      relay.test, 127.0.0.1"), "{text}");
    assert!(text.contains("issuer:     CN=ferry relay CA"), "{text}");
    assert!(text.contains("expires in 89 days"), "{text}");
    assert!(text.contains(&leaf_pin) && text.contains(&ca_pin), "{text}");
    assert!(text.contains("certificate authority (root)"), "{text}");
    Ok(())
}

#[test]
fn nothing_is_overwritten_without_force() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (ca_pin, _) = ca_and_relay(dir.path())?;
    let ca_dir = dir.path().join("ca");
    let key_before = fs::read(ca_dir.join("ca-key.pem"))?;
    let err = fails(&["ca", "init", "--out", p(&ca_dir)])?;
    assert!(err.contains("already exists; pass --force"), "{err}");
    let err = fails(&["issue", "--ca", p(&ca_dir), "--name", "relay.test", "--out", p(&dir.path().join("relay"))])?;
    assert!(err.contains("already exists; pass --force"), "{err}");
    assert_eq!(fs::read(ca_dir.join("ca-key.pem"))?, key_before);
    assert_eq!(ok(&["pin", p(&ca_dir.join("ca.pem"))])?.trim(), ca_pin);

    let new_pin = ok(&["ca", "init", "--out", p(&ca_dir), "--force"])?;
    assert_ne!(new_pin.trim(), ca_pin);
    Ok(())
}

/// Issue item 4: a daily timer on a fresh certificate touches nothing.
#[test]
fn renew_within_30_days_of_a_fresh_90_day_certificate_changes_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    ca_and_relay(dir.path())?;
    let (cert, key) = (dir.path().join("relay/cert.pem"), dir.path().join("relay/key.pem"));
    let (cert_before, key_before) = (fs::read(&cert)?, fs::read(&key)?);
    let out = ok(&["renew", "--ca", p(&dir.path().join("ca")), "--cert", p(&cert), "--within", "30"])?;
    assert!(out.contains("not renewing"), "{out}");
    assert_eq!(fs::read(&cert)?, cert_before, "cert.pem unchanged");
    assert_eq!(fs::read(&key)?, key_before, "key.pem unchanged");
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("relay"))?.map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "no temp files: {leftovers:?}");
    Ok(())
}

#[test]
fn forced_renewal_keeps_names_and_ca_pin_and_signals_the_relay() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (ca_pin, leaf_pin) = ca_and_relay(dir.path())?;
    let (cert, key) = (dir.path().join("relay/cert.pem"), dir.path().join("relay/key.pem"));
    let key_before = fs::read(&key)?;

    // A stand-in for the relay: SIGHUP ends `sleep`, so its exit status shows the signal.
    let mut relay = Command::new("sleep").arg("30").spawn()?;
    let out = ok(&[
        "renew",
        "--ca",
        p(&dir.path().join("ca")),
        "--cert",
        p(&cert),
        "--within",
        "30",
        "--days",
        "45",
        "--force",
        "--reload-pid",
        &relay.id().to_string(),
    ])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = relay.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            relay.kill()?;
            anyhow::bail!("the relay stand-in got no signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.signal(), Some(1), "SIGHUP");

    assert!(out.contains("renewed"), "{out}");
    assert_ne!(fs::read(&key)?, key_before, "renewal makes a new key");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(ok(&["pin", "--ca", p(&cert)])?.trim(), ca_pin);
    assert_ne!(ok(&["pin", p(&cert)])?.trim(), leaf_pin);
    let text = ok(&["inspect", p(&cert)])?;
    assert!(text.contains("names:      relay.test, 127.0.0.1"), "{text}");
    assert!(text.contains("expires in 44 days"), "{text}");
    Ok(())
}

/// Issue item 5: keys are written 0600 and a key others can read is refused.
#[test]
fn keys_are_private_and_readable_keys_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    ca_and_relay(dir.path())?;
    let ca_key = dir.path().join("ca/ca-key.pem");
    let key = dir.path().join("relay/key.pem");
    assert_eq!(mode(&ca_key), 0o600);
    assert_eq!(mode(&key), 0o600);
    let self_signed = dir.path().join("self");
    ok(&["self-signed", "--name", "relay.test", "--out", p(&self_signed)])?;
    assert_eq!(mode(&self_signed.join("key.pem")), 0o600);

    fs::set_permissions(&key, fs::Permissions::from_mode(0o644))?;
    let err = fails(&[
        "renew",
        "--ca",
        p(&dir.path().join("ca")),
        "--cert",
        p(&dir.path().join("relay/cert.pem")),
        "--force",
    ])?;
    assert!(err.contains("readable by other users (mode 0644)"), "{err}");
    assert!(err.contains("chmod 600"), "{err}");

    fs::set_permissions(&ca_key, fs::Permissions::from_mode(0o644))?;
    let err = fails(&[
        "issue",
        "--ca",
        p(&dir.path().join("ca")),
        "--name",
        "other.test",
        "--out",
        p(&dir.path().join("other")),
    ])?;
    assert!(err.contains("ca-key.pem"), "{err}");
    assert!(err.contains("readable by other users (mode 0644)"), "{err}");
    assert!(!dir.path().join("other").join("key.pem").exists());
    Ok(())
}
