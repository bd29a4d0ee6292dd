//! Shared harness for the end-to-end tests: everything binds port 0 on loopback, child
//! processes are killed when their guard drops, and waits are on events with a deadline.
#![allow(dead_code)] // each test binary uses its own subset

pub mod fleet;
pub mod impair;
pub mod natlab;
pub mod netlab;
pub mod process;
pub mod quota;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::BytesMut;
use ferry::local::{LocalStack, Pattern, echo_service, wait_registered};
use ferry_client::{Client, Host, HostConfig, HostIdentity};
use ferry_proto::{Message, RelayAddr, Ticket};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A relay + host in front of an echo service.
pub struct EchoStack {
    pub stack: LocalStack,
    pub service: std::net::SocketAddr,
}

pub async fn echo_stack() -> Result<EchoStack> {
    echo_stack_with(|_| {}).await
}

pub async fn echo_stack_with(tweak: impl FnOnce(&mut ferry_relay::RelayConfig)) -> Result<EchoStack> {
    let (service, _task) = echo_service().await?;
    let stack = LocalStack::start(service, tweak).await?;
    Ok(EchoStack { stack, service })
}

/// The `ferry` binary built for these tests.
pub fn ferry() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.kill_on_drop(true).stdin(Stdio::null());
    cmd
}

/// Runs `ferry` to completion and returns stdout (fails with stderr on a non-zero exit).
pub async fn ferry_output(args: &[&str]) -> Result<String> {
    let out = ferry().args(args).output().await?;
    anyhow::ensure!(out.status.success(), "ferry {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

/// Reads lines of `child`'s stdout until one contains `needle` (at most `limit`).
pub async fn wait_for_line(child: &mut Child, needle: &str, limit: Duration) -> Result<String> {
    let stdout = child.stdout.as_mut().context("stdout not piped")?;
    let mut lines = BufReader::new(stdout).lines();
    tokio::time::timeout(limit, async {
        while let Some(line) = lines.next_line().await? {
            if line.contains(needle) {
                return Ok(line);
            }
        }
        anyhow::bail!("the process ended before printing {needle:?}")
    })
    .await
    .with_context(|| format!("no line with {needle:?} within {limit:?}"))?
}

/// Reads one control message from a raw relay stream (for protocol-level tests).
pub async fn read_message(recv: &mut quinn::RecvStream, buf: &mut BytesMut) -> Result<Message> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(m) = Message::decode(buf)? {
                return Ok(m);
            }
            match recv.read_chunk(4096, true).await? {
                Some(chunk) => buf.extend_from_slice(&chunk.bytes),
                None => anyhow::bail!("stream ended"),
            }
        }
    })
    .await?
}

/// A `ferry connect`-style local port for `client` (owned, or shared when the test still
/// asks it things): each connection becomes a session.
pub async fn local_port(client: impl Into<std::sync::Arc<ferry_client::Client>>) -> Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let client: std::sync::Arc<ferry_client::Client> = client.into();
    tokio::spawn(client.serve(listener, tokio_util::sync::CancellationToken::new()));
    Ok(addr)
}

/// A host with a fresh identity in front of `service`, once it has registered at `relays`.
pub async fn registered_host(relays: Vec<RelayAddr>, service: std::net::SocketAddr) -> Result<(Host, HostIdentity)> {
    let identity = HostIdentity::generate()?;
    let host = Host::spawn(HostConfig::new(identity.clone(), relays, service.to_string()));
    wait_registered(&host, 1).await?;
    Ok((host, identity))
}

/// The ticket for `identity` at `relays`.
pub fn ticket(identity: &HostIdentity, relays: Vec<RelayAddr>) -> Ticket {
    Ticket::new(identity.key.public(), identity.secret.clone(), relays)
}

/// One echo session carrying `payload`; returns what came back.
pub async fn echo_session(client: &Client, payload: &[u8]) -> Result<Vec<u8>> {
    echo_over(client.open_session().await?, payload).await
}

/// `payload` through an open session to an echo service; what came back.
pub async fn echo_over(session: ferry_client::Session, payload: &[u8]) -> Result<Vec<u8>> {
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

/// One `GET` over plain HTTP/1.1 (within 10 s); returns the whole response, head and body.
pub async fn http_get(addr: &str, path: &str) -> Result<String> {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await?;
        Ok(out)
    })
    .await
    .with_context(|| format!("GET {path} from {addr} took over 10 s"))?
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

/// `len` bytes of `Pattern::new(seed)` (incompressible, reproducible).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    Pattern::new(seed).fill(&mut out);
    out
}
