//! Shared harness for the end-to-end tests: everything binds port 0 on loopback, child
//! processes are killed when their guard drops, and waits are on events with a deadline.
#![allow(dead_code)] // each test binary uses its own subset

pub mod impair;
pub mod netlab;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::BytesMut;
use ferry::local::{LocalStack, echo_service};
use ferry_proto::Message;
use tokio::io::{AsyncBufReadExt, BufReader};
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
