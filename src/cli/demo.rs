//! `ferry demo`'s relay: the real `ferry-relay` binary, started beside `ferry` with a
//! temporary config on loopback. The demo runs the relay as a process (not linked in) so
//! that the `ferry` client binary carries no relay, ACME or certificate-issuing code;
//! the host and client are the library, as `ferry host run` and `ferry connect` use it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_link::Congestion;
use ferry_proto::{CertPin, RelayAddr, RelayTrust};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A `ferry-relay` child process on loopback; killed when dropped.
pub struct DemoRelay {
    _child: Child,
    _dir: tempfile::TempDir,
    /// Its address and pin, as a ticket lists them.
    pub relay: RelayAddr,
}

/// Where `ferry-relay` is: beside this executable (as `cargo build` and `cargo install`
/// put it), else on `PATH`.
fn relay_binary() -> Result<PathBuf> {
    let beside = std::env::current_exe().ok().map(|exe| exe.with_file_name("ferry-relay"));
    if let Some(path) = beside.filter(|p| p.is_file()) {
        return Ok(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("ferry-relay"))
        .find(|p| p.is_file());
    on_path.context(
        "ferry demo runs the relay as the `ferry-relay` program, which is neither beside `ferry` nor on PATH; \
         build both (cargo build --release) or install both (cargo install --path .)",
    )
}

impl DemoRelay {
    /// Starts the relay on `127.0.0.1:0` and waits for its address and pin.
    pub async fn start(congestion: Congestion) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("relay.toml");
        std::fs::write(&config, demo_config(dir.path(), congestion))?;
        let mut child = Command::new(relay_binary()?)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start ferry-relay")?;
        let mut lines = BufReader::new(child.stdout.take().context("the relay's stdout")?).lines();
        let (mut addr, mut pin) = (None, None);
        let banner = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("ferry relay listening on ") {
                    addr = rest.split_whitespace().next().map(str::to_owned);
                } else if let Some(rest) = line.strip_prefix("certificate pin: ") {
                    pin = Some(rest.trim().parse::<CertPin>()?);
                    return anyhow::Ok(());
                }
            }
            bail!("ferry-relay exited before it was ready (its errors are above)")
        };
        tokio::time::timeout(Duration::from_secs(20), banner)
            .await
            .context("ferry-relay did not start within 20 s")??;
        let (Some(addr), Some(pin)) = (addr, pin) else { bail!("ferry-relay printed no address") };
        Ok(Self { _child: child, _dir: dir, relay: RelayAddr { addr, trust: RelayTrust::Pin(pin) } })
    }
}

/// A relay on loopback with its state in `dir`, no admin port, quiet.
fn demo_config(dir: &Path, congestion: Congestion) -> String {
    let state = dir.join("state");
    format!(
        "[relay]\nlisten = \"127.0.0.1:0\"\nstate_dir = {state:?}\ncongestion = \"{}\"\n\
         [admin]\nenabled = false\n[log]\nlevel = \"warn\"\n",
        congestion.name()
    )
}
