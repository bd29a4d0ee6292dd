//! A relay fleet on loopback for tests/fleet.rs and tests/fleet_load.rs: a real
//! `redis-server` of the test's own (started and stopped by the test) and three
//! `ferry-relay` processes sharing one certificate, one fleet secret and one node table.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferry_client::{Client, HopOptions, Host, HostConfig, HostIdentity, Transport};
use ferry_proto::{RelayAddr, RelayTrust, StaticKey};
use tokio::process::{Child, Command};

use super::process::RelayProcess;
use super::{http_get, ticket};

/// A port free for both UDP and TCP on loopback now (a relay binds both).
pub fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port pair on loopback")
}

/// A `redis-server` of the test's own, on loopback, persisting nothing (or, `persist`,
/// every write to its append-only file at once, so a restart keeps the counters as a
/// production Redis keeps them).
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    persist: bool,
    child: Option<Child>,
}

impl Redis {
    pub async fn start(dir: &Path, persist: bool) -> Result<Self> {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            listener.local_addr()?.port()
        };
        let mut redis = Self { port, dir: dir.to_owned(), persist, child: None };
        redis.resume().await?;
        Ok(redis)
    }

    /// Starts the server (again) on its port, and waits (at most 10 s) until it answers.
    pub async fn resume(&mut self) -> Result<()> {
        let aof: &[&str] =
            if self.persist { &["--appendonly", "yes", "--appendfsync", "always"] } else { &["--appendonly", "no"] };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(aof)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (scripts/test.sh installs it)")?;
        self.child = Some(child);
        let started = Instant::now();
        while self.cli(&["PING"]).await.ok().as_deref() != Some("PONG") {
            ensure!(started.elapsed() < Duration::from_secs(10), "redis-server did not answer within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis-cli` with `args`; its output, trimmed.
    pub async fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string(), "--raw"]).args(args).output().await?;
        ensure!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    /// Every key and every value in the database, as text.
    pub async fn dump(&self) -> Result<String> {
        let mut dump = String::new();
        for key in self.cli(&["--scan"]).await?.lines().filter(|k| !k.is_empty()) {
            let kind = self.cli(&["TYPE", key]).await?;
            let value = match kind.as_str() {
                "zset" => self.cli(&["ZRANGE", key, "0", "-1", "WITHSCORES"]).await?,
                "string" => self.cli(&["GET", key]).await?,
                "hash" => self.cli(&["HGETALL", key]).await?,
                other => format!("<{other}>"),
            };
            dump.push_str(&format!("{key} ({kind}): {}\n", value.replace('\n', " ")));
        }
        Ok(dump)
    }
}

/// How [`Fleet::start_tuned`] configures its nodes.
#[derive(Clone, Copy)]
pub struct Tuning<'a> {
    /// `redirect` or `forward`.
    pub mode: &'a str,
    /// More sections of every node's config (access rules, tiers).
    pub sections: &'a str,
    /// Whether Redis persists every write (append-only file, fsync always).
    pub persist: bool,
    /// `[fleet] presence_ttl_secs`.
    pub presence_ttl_secs: u64,
    /// More `[limits]` keys, one a line.
    pub limits: &'a str,
}

impl Default for Tuning<'_> {
    fn default() -> Self {
        Self { mode: "redirect", sections: "", persist: false, presence_ttl_secs: 3, limits: "" }
    }
}

/// Three relay nodes of one fleet, sharing one certificate.
pub struct Fleet {
    pub nodes: Vec<RelayProcess>,
    pub addrs: Vec<String>,
    pub redis: Redis,
    pub dir: tempfile::TempDir,
}

impl Fleet {
    pub async fn start(mode: &str) -> Result<Self> {
        Self::start_with(mode, "", false).await
    }

    /// Three nodes whose config files also hold `sections` (access rules, tiers), with a
    /// Redis that persists its writes or not.
    pub async fn start_with(mode: &str, sections: &str, persist: bool) -> Result<Self> {
        Self::start_tuned(&Tuning { mode, sections, persist, ..Tuning::default() }).await
    }

    /// Three nodes as `tuning` says.
    pub async fn start_tuned(tuning: &Tuning<'_>) -> Result<Self> {
        let Tuning { mode, sections, persist, presence_ttl_secs, limits } = *tuning;
        let dir = tempfile::tempdir()?;
        let redis = Redis::start(dir.path(), persist).await?;
        let secret = dir.path().join("fleet.secret");
        std::fs::write(&secret, "a-test-fleet-secret-of-more-than-32-bytes")?;
        let (identity, _) = ferry_cert::TlsIdentity::load_or_create(&dir.path().join("cert"))?;
        drop(identity);
        let (cert, key) =
            (dir.path().join("cert").join(ferry_cert::CERT_FILE), dir.path().join("cert").join(ferry_cert::KEY_FILE));
        let addrs: Vec<String> =
            (0..3).map(|_| free_port().map(|p| format!("127.0.0.1:{p}"))).collect::<Result<_>>()?;
        let table: String = addrs.iter().enumerate().map(|(i, a)| format!("node-{} = \"{a}\"\n", i + 1)).collect();
        let mut nodes = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let config = format!(
                "[relay]\nlisten = \"{addr}\"\ncert = {cert:?}\nkey = {key:?}\nhandshake_timeout_secs = 5\n\
                 [admin]\nlisten = \"127.0.0.1:0\"\n[limits]\nconnections_per_minute_per_source = 0\n{limits}\
                 [log]\nlevel = \"info\"\n{sections}\
                 [fleet]\nredis_url = \"{}\"\nnode_id = \"node-{}\"\nsecret_file = {secret:?}\nmode = \"{mode}\"\n\
                 presence_ttl_secs = {presence_ttl_secs}\n[fleet.nodes]\n{table}",
                redis.url(),
                i + 1
            );
            let node_dir = dir.path().join(format!("node-{}", i + 1));
            std::fs::create_dir_all(&node_dir)?;
            nodes.push(RelayProcess::start(&config, &node_dir, &[]).await?);
        }
        Ok(Self { nodes, addrs, redis, dir })
    }

    /// How a ticket names node `n` (1-based).
    pub fn relay(&self, n: usize) -> RelayAddr {
        RelayAddr { addr: self.addrs[n - 1].clone(), trust: RelayTrust::Pin(self.nodes[0].pin) }
    }

    /// A QUIC host in front of `service`, registered at node `n`.
    pub async fn host_at(&self, n: usize, service: SocketAddr) -> Result<(Host, HostIdentity)> {
        let identity = HostIdentity::generate()?;
        let mut config = HostConfig::new(identity.clone(), vec![self.relay(n)], service.to_string());
        config.transport = Transport::Quic;
        let host = Host::spawn(config);
        ferry::local::wait_registered(&host, 1).await?;
        Ok((host, identity))
    }

    /// A client of `identity`'s host whose ticket names only node `n`.
    pub fn client_via(&self, n: usize, identity: &HostIdentity) -> Result<Client> {
        Ok(Client::new(ticket(identity, vec![self.relay(n)]), StaticKey::generate()?, HopOptions::client())
            .with_transport(Transport::Quic))
    }

    pub async fn metrics(&self, n: usize) -> Result<String> {
        http_get(self.nodes[n - 1].admin.as_deref().context("no admin listener")?, "/metrics").await
    }

    pub async fn healthz(&self, n: usize) -> Result<String> {
        let response = http_get(self.nodes[n - 1].admin.as_deref().context("no admin listener")?, "/healthz").await?;
        Ok(response.split_once("\r\n\r\n").map_or(response.clone(), |(_, body)| body.to_owned()))
    }

    /// Waits (at most 10 s) until `/healthz` of node `n` starts with `want`.
    pub async fn health_becomes(&self, n: usize, want: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            let body = self.healthz(n).await?;
            if body.starts_with(want) {
                return Ok(());
            }
            ensure!(started.elapsed() < Duration::from_secs(10), "node {n} /healthz still says {body:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (at most 10 s) until the directory has `host` at some node.
    pub async fn wait_presence(&self) -> Result<()> {
        self.wait_keys("ferry:host:*").await
    }

    /// Waits (at most 10 s) until Redis has a key matching `pattern`.
    pub async fn wait_keys(&self, pattern: &str) -> Result<()> {
        let started = Instant::now();
        while self.redis.cli(&["--scan", "--pattern", pattern]).await?.is_empty() {
            ensure!(started.elapsed() < Duration::from_secs(10), "no {pattern} key in Redis after 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}
