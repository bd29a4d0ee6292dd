//! `ferry wait`: block until something is ready, for scripts and pasted shell blocks
//! (the README's "try all three" among them) that would otherwise race a process started
//! with `&` a moment earlier.
//!
//! Two kinds of readiness, each checked for real rather than guessed with a sleep: a TCP
//! port that accepts a connection (a relay, a local service, `ferry connect`'s listener),
//! and a host that answers through its relay (a ticket: one end-to-end session opens, which
//! needs the relay up, the host registered and the host able to reach its service).

use std::time::Duration;

use anyhow::{Result, bail};
use ferry_client::{Client, HopOptions};
use ferry_proto::{StaticKey, Ticket};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// What to wait for.
#[derive(Debug)]
pub enum Target {
    /// A TCP port that accepts connections (`name:port`).
    Port(String),
    /// The host of a ticket, answering through one of its relays.
    Host(Box<Ticket>),
}

/// A target with what it takes to try it.
enum Probe {
    Port(String),
    Host(Box<Client>),
}

/// Longest pause between two attempts: short, since someone is waiting.
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// Waits until `target` is ready or `limit` has passed; the error names the last failure.
pub async fn wait(target: Target, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(25);
    let probe = match target {
        Target::Host(ticket) => {
            Probe::Host(Box::new(Client::new(*ticket, StaticKey::generate()?, HopOptions::client())))
        }
        Target::Port(addr) => Probe::Port(addr),
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = match &probe {
            Probe::Port(addr) => match tokio::time::timeout(left, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer".to_owned(),
            },
            Probe::Host(client) => match tokio::time::timeout(left, client.open_session()).await {
                Ok(Ok(session)) => {
                    // Proven ready; end the probe session cleanly (nothing sent), but do not
                    // hang on a service that keeps its side open.
                    let probe = session.bridge(tokio::io::empty(), tokio::io::sink(), CancellationToken::new());
                    let _ = tokio::time::timeout(Duration::from_secs(2), probe).await;
                    client.close().await;
                    return Ok(());
                }
                Ok(Err(e)) if gives_up(&e) => return Err(e.into()),
                Ok(Err(e)) => e.report(),
                Err(_) => "no answer".to_owned(),
            },
        };
        debug!(attempt = %attempt, "not ready yet");
        if Instant::now() + pause >= deadline {
            let what = match &probe {
                Probe::Port(addr) => format!("{addr} did not accept a connection"),
                Probe::Host(_) => "the host did not answer through its relay".to_owned(),
            };
            bail!("{what} within {} (last attempt: {attempt})", humantime::format_duration(limit));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Failures that waiting cannot cure: the relay's certificate is refused, or the ticket
/// does not belong to the host that answers, or names a service the host does not have.
fn gives_up(e: &ferry_client::Error) -> bool {
    e.is_relay_certificate_problem()
        || matches!(
            e,
            ferry_client::Error::Proto(ferry_proto::Error::HostRejected) | ferry_client::Error::NoSuchService { .. }
        )
}
