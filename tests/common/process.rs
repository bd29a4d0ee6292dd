//! The real `ferry-relay` binary as a child process: started with a config file, its
//! banner and log read as they arrive, signalled, and measured from `/proc`.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_proto::{CertPin, RelayAddr, RelayTrust};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::mpsc;

/// A running `ferry-relay` process and its output.
pub struct RelayProcess {
    pub child: Child,
    pub addr: String,
    pub admin: Option<String>,
    pub pin: CertPin,
    /// Every stderr line (the log), as it arrives.
    pub log: mpsc::UnboundedReceiver<String>,
    pub seen: Vec<String>,
}

impl RelayProcess {
    pub async fn start(config: &str, dir: &std::path::Path, extra: &[&str]) -> Result<Self> {
        Self::start_with_env(config, dir, extra, &[]).await
    }

    /// `start`, with environment variables set (`Some`) or removed (`None`).
    pub async fn start_with_env(
        config: &str,
        dir: &std::path::Path,
        extra: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> Result<Self> {
        Self::launch(Command::new(env!("CARGO_BIN_EXE_ferry-relay")), config, dir, extra, env).await
    }

    /// `start`, inside the network namespace `netns` (`ip netns exec`).
    pub async fn start_in_netns(netns: &str, config: &str, dir: &std::path::Path) -> Result<Self> {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_ferry-relay")]);
        Self::launch(command, config, dir, &[], &[]).await
    }

    async fn launch(
        mut command: Command,
        config: &str,
        dir: &std::path::Path,
        extra: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> Result<Self> {
        let path = dir.join("relay.toml");
        std::fs::write(&path, config)?;
        for (key, value) in env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let mut child = command
            .arg("--config")
            .arg(&path)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let (mut addr, mut admin, mut pin) = (None, None, None);
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("ferry relay listening on ") {
                    addr = rest.split_whitespace().next().map(str::to_owned);
                } else if let Some(rest) = line.strip_prefix("metrics on http://") {
                    admin = rest.strip_suffix("/metrics").map(str::to_owned);
                } else if let Some(rest) = line.strip_prefix("certificate pin: ") {
                    pin = Some(rest.parse::<CertPin>()?);
                    return anyhow::Ok(());
                }
            }
            bail!("ferry-relay exited before printing its pin")
        })
        .await
        .context("ferry-relay did not start")??;
        let log = forward_lines(child.stderr.take().context("stderr")?);
        Ok(Self { child, addr: addr.context("no listen line")?, admin, pin: pin.context("no pin")?, log, seen: vec![] })
    }

    pub fn relays(&self, pin: CertPin) -> Vec<RelayAddr> {
        vec![RelayAddr { addr: self.addr.clone(), trust: RelayTrust::Pin(pin) }]
    }

    /// Waits for a log line containing `needle`.
    pub async fn wait_log(&mut self, needle: &str) -> Result<String> {
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = self.log.recv().await {
                self.seen.push(line.clone());
                if line.contains(needle) {
                    return Ok(line);
                }
            }
            bail!("the relay's log ended without {needle:?}")
        })
        .await
        .with_context(|| format!("no log line with {needle:?}"))?
    }

    pub fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.child.id().context("relay already exited")?;
        let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }
}

fn forward_lines(stderr: ChildStderr) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

/// Open file descriptors of process `pid`.
pub fn fd_count(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// A process's resident memory and open file descriptors.
#[derive(Clone, Copy, Debug)]
pub struct Footprint {
    pub rss_kib: u64,
    pub fds: usize,
}

impl Footprint {
    /// Process `pid`'s footprint now.
    pub fn of(pid: u32) -> Result<Self> {
        Ok(Self { rss_kib: rss_kib(pid)?, fds: fd_count(pid)? })
    }

    /// Waits (at most 20 s) until process `pid` holds no more file descriptors than this
    /// baseline and its memory is back within `margin_kib` of it; prints both.
    pub async fn wait_back(self, pid: u32, margin_kib: u64) -> Result<Self> {
        let started = std::time::Instant::now();
        loop {
            let now = Self::of(pid)?;
            if now.fds <= self.fds && now.rss_kib <= self.rss_kib + margin_kib {
                eprintln!("relay after the attack: {now} (baseline {self}), {:?} after it ended", started.elapsed());
                return Ok(now);
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("the relay stayed at {now} after the attack (baseline {self}, margin {margin_kib} KiB)");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl std::fmt::Display for Footprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} KiB resident, {} fds", self.rss_kib, self.fds)
    }
}
