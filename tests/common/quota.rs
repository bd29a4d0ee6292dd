//! Quota helpers shared by tests/quota.rs and tests/fleet.rs: `ferry cat` as a client
//! prints, the bytes a relay logged, and what `ferry-relay usage` reports.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ferry_client::HostIdentity;
use ferry_proto::RelayAddr;
use tokio::io::AsyncWriteExt;

use super::process::RelayProcess;
use super::{ferry, ticket};

/// `ferry cat` of `identity`'s host at `relays` with `input` on stdin: (success, stdout, stderr).
pub async fn ferry_cat(
    identity: &HostIdentity,
    relays: Vec<RelayAddr>,
    input: &[u8],
) -> Result<(bool, Vec<u8>, String)> {
    let mut cat = ferry()
        .args(["cat", &ticket(identity, relays).encode()?])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = cat.stdin.take().context("stdin")?;
    let input = input.to_vec();
    let feed = tokio::spawn(async move {
        // The relay may end the session before all is written: a broken pipe is expected.
        let _ = stdin.write_all(&input).await;
        let _ = stdin.shutdown().await;
    });
    let out =
        tokio::time::timeout(Duration::from_secs(60), cat.wait_with_output()).await.context("ferry cat hung")??;
    feed.await?;
    Ok((out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// The bytes of every session the relay logged as closed so far (`session closed` lines:
/// both directions), waiting (at most 20 s each) until it has logged `sessions` of them.
pub async fn logged_bytes(relay: &mut RelayProcess, sessions: usize) -> Result<u64> {
    let mut total = 0;
    for _ in 0..sessions {
        let line = relay.wait_log("session closed").await?;
        total += field(&line, "bytes_client_to_host=")? + field(&line, "bytes_host_to_client=")?;
    }
    Ok(total)
}

/// The number after `name` in a log line.
fn field(line: &str, name: &str) -> Result<u64> {
    let rest = line.split_once(name).with_context(|| format!("no {name} in {line:?}"))?.1;
    Ok(rest.split(|c: char| !c.is_ascii_digit()).next().unwrap_or_default().parse()?)
}

/// The bytes `ferry-relay usage` reports for token `name` (its `(N bytes)`), and its output.
pub async fn usage_of(args: &[&str], name: &str) -> Result<(u64, String)> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry-relay")).arg("usage").args(args).output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(out.status.success(), "ferry-relay usage failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    let line = stdout
        .lines()
        .find(|line| line.starts_with(&format!("token {name}: ")))
        .with_context(|| format!("no line for token {name}:\n{stdout}"))?;
    let bytes = line.split_once(" (").and_then(|(_, rest)| rest.split_once(" bytes)")).context("no byte count")?.0;
    Ok((bytes.parse()?, stdout))
}
