//! Shared by the relay's process-level tests: the real `ferry-relay` binary started with a
//! config file, an echo service, a host and clients from `ferry-client`, and checks.
#![allow(dead_code)] // each test binary uses its own subset

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_client::{Client, Host, HostConfig, HostIdentity};
use ferry_proto::{CertPin, RelayAddr, RelayTrust, Ticket};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::mpsc;

/// An echo service on loopback.
pub async fn echo() -> Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    Ok(addr)
}

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
        let path = dir.join("relay.toml");
        std::fs::write(&path, config)?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry-relay"));
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

pub async fn registered_host(relays: Vec<RelayAddr>, service: std::net::SocketAddr) -> Result<(Host, HostIdentity)> {
    let identity = HostIdentity::generate()?;
    let host = Host::spawn(HostConfig::new(identity.clone(), relays, service.to_string()));
    let mut status = host.status();
    tokio::time::timeout(Duration::from_secs(20), status.wait_for(|s| s.registrations > 0)).await??;
    Ok((host, identity))
}

pub fn ticket(identity: &HostIdentity, relays: Vec<RelayAddr>) -> Ticket {
    Ticket { host: identity.key.public(), secret: identity.secret.clone(), relays }
}

/// One echo session carrying `payload`; returns what came back.
pub async fn echo_session(client: &Client, payload: &[u8]) -> Result<Vec<u8>> {
    let session = client.open_session().await?;
    let (mut app, bridge) = session.spawn_pipe(64 * 1024);
    let (mut app_r, mut app_w) = tokio::io::split(&mut app);
    let (_, back) = tokio::try_join!(
        async {
            app_w.write_all(payload).await?;
            app_w.shutdown().await
        },
        async {
            let mut back = Vec::new();
            app_r.read_to_end(&mut back).await.map(|_| back)
        }
    )?;
    bridge.await??;
    Ok(back)
}

/// The value of one sample in Prometheus text.
pub fn metric(text: &str, sample: &str) -> Result<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .with_context(|| format!("no sample {sample}"))
}

pub async fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    Ok(out)
}

/// Checks Prometheus text exposition: every sample line is `name{labels} value` of a
/// family announced with HELP and TYPE.
pub fn check_prometheus(body: &str) -> Result<()> {
    let mut typed = std::collections::HashSet::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split_whitespace().next().context("TYPE name")?.to_owned());
        } else if !line.starts_with("# HELP ") {
            let (name_labels, value) = line.rsplit_once(' ').context("sample without value")?;
            value.parse::<f64>().with_context(|| format!("bad value in {line:?}"))?;
            let name = name_labels.split('{').next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            anyhow::ensure!(typed.contains(family), "sample {name} has no # TYPE");
        }
    }
    Ok(())
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

/// `len` bytes of a seeded xorshift stream (incompressible, reproducible).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}
