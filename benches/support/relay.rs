//! The real `ferry-relay` process, as operators run it, on `127.0.0.1:0` with a
//! temporary state directory, the admin listener off, log level `warn` and limits high
//! enough that a bench measures the relay, not its abuse protection (10,000 sessions
//! through one host; a new TCP connection per session from one address). Its address and
//! certificate pin are read from what it prints at start.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_proto::{RelayAddr, RelayTrust};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::process::Proc;

/// The relay config every bench uses (listen address, state directory and log level
/// are passed as flags, which win over the environment).
const CONFIG: &str = "[admin]\nenabled = false\n[limits]\nmax_sessions_per_host = 100000\nmax_pending_handshakes = 65536\n\
                      max_pending_handshakes_per_source = 65536\nconnections_per_minute_per_source = 0\nmax_connections = 1048576\nmax_connections_per_source = 1048576\n\
                      buffer_budget = 68719476736\n";

/// Longest wait for the relay to print its address and pin.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the relay's log (stderr) goes.
#[derive(Clone, Copy, Debug)]
pub enum RelayLog {
    /// To `relay.log` in the relay's temporary directory (quiet during a measurement).
    File,
    /// Echoed to this process's stderr, the first this-many lines.
    Echo(u32),
}

/// A running `ferry-relay` process; killed when dropped.
pub struct RelayProcess {
    /// The process (killed on drop).
    pub proc: Proc,
    /// Its pid, for `/proc` readings.
    pub pid: u32,
    /// How hosts and clients reach it: its address and pin.
    pub relays: Vec<RelayAddr>,
    /// Config, state and log; removed when dropped, after the process.
    pub dir: tempfile::TempDir,
}

impl RelayProcess {
    /// Starts `bin` and waits (bounded) until it has printed its address and pin.
    pub async fn start(bin: &Path, log: RelayLog) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("relay.toml");
        std::fs::write(&config, CONFIG)?;
        let stderr = match log {
            RelayLog::File => Stdio::from(std::fs::File::create(dir.path().join("relay.log"))?),
            RelayLog::Echo(_) => Stdio::piped(),
        };
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--log", "warn", "--state-dir"])
            .arg(dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("relay stdout")?;
        let stderr = child.stderr.take();
        let mut proc = Proc::new(child, "ferry-relay");
        let pid = proc.pid()?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut addr, mut pin) = (None, None);
        let read = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("ferry relay listening on ") {
                    addr = rest.split_whitespace().next().map(str::to_owned);
                } else if let Some(rest) = line.strip_prefix("certificate pin: ") {
                    pin = Some(rest.trim().to_owned());
                }
                if addr.is_some() && pin.is_some() {
                    break;
                }
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(START_TIMEOUT, read).await.context("ferry-relay did not print its address and pin")??;
        proc.check_alive()?;
        let (Some(addr), Some(pin)) = (addr, pin) else {
            bail!("ferry-relay exited before printing its address and pin");
        };
        // Keep draining the pipes so the relay never blocks on a full one.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        if let (Some(stderr), RelayLog::Echo(first)) = (stderr, log) {
            let mut log = BufReader::new(stderr).lines();
            tokio::spawn(async move {
                let mut shown = 0u32;
                while let Ok(Some(line)) = log.next_line().await {
                    shown += 1;
                    if shown <= first {
                        eprintln!("  relay log: {line}");
                    }
                }
            });
        }
        let trust: RelayTrust = pin.parse().context("parsing the relay's pin")?;
        Ok(Self { proc, pid, relays: vec![RelayAddr { addr, trust }], dir })
    }
}
