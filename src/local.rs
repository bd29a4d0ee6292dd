//! A whole ferry on loopback: a relay, a host forwarding to a local service, and a
//! ticket for clients. `ferry demo`, the end-to-end tests and the benchmark harness all
//! start from here, so they exercise exactly the code users run.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferry_client::{Client, HopOptions, Host, HostConfig, HostIdentity};
use ferry_proto::{RelayAddr, RelayTrust, StaticKey, Ticket};
use ferry_relay::{Relay, RelayConfig, TlsIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A relay and a host on loopback, and the ticket that reaches the host.
pub struct LocalStack {
    /// The running relay.
    pub relay: Relay,
    /// The running host.
    pub host: Host,
    /// The host's identity.
    pub identity: HostIdentity,
    /// A ticket for the host through the relay.
    pub ticket: Ticket,
}

impl LocalStack {
    /// Starts a relay on `127.0.0.1:0` (after `tweak` adjusts its config) and a host
    /// forwarding to `service`, and waits until the host is registered.
    pub async fn start(service: SocketAddr, tweak: impl FnOnce(&mut RelayConfig)) -> Result<Self> {
        Self::start_with(service, tweak, |_| {}).await
    }

    /// Like [`LocalStack::start`], with `host_tweak` adjusting the host's config too.
    pub async fn start_with(
        service: SocketAddr,
        tweak: impl FnOnce(&mut RelayConfig),
        host_tweak: impl FnOnce(&mut HostConfig),
    ) -> Result<Self> {
        let identity = TlsIdentity::self_signed(&["localhost".into(), "127.0.0.1".into()])?;
        let mut config = RelayConfig::new(([127, 0, 0, 1], 0).into(), identity);
        tweak(&mut config);
        let relay = Relay::spawn(config).await?;
        let identity = HostIdentity::generate()?;
        let relays = vec![RelayAddr { addr: relay.local_addr().to_string(), trust: RelayTrust::Pin(relay.pin()) }];
        let mut host_config = HostConfig::new(identity.clone(), relays.clone(), service.to_string());
        host_tweak(&mut host_config);
        let host = Host::spawn(host_config);
        wait_registered(&host, 1).await?;
        let ticket = Ticket::new(identity.key.public(), identity.secret.clone(), relays);
        Ok(Self { relay, host, identity, ticket })
    }

    /// A client for this stack's ticket with a fresh key.
    pub fn client(&self) -> Result<Client> {
        Ok(Client::new(self.ticket.clone(), StaticKey::generate()?, HopOptions::client()))
    }

    /// Stops host and relay.
    pub async fn shutdown(self) {
        self.host.shutdown().await;
        self.relay.shutdown(Duration::from_secs(5)).await;
    }
}

/// Waits (at most 10 s) until `host` has registered `count` times in total.
pub async fn wait_registered(host: &Host, count: u64) -> Result<()> {
    let mut status = host.status();
    let wait = status.wait_for(|s| s.registrations >= count);
    match tokio::time::timeout(Duration::from_secs(10), wait).await {
        Ok(Ok(_)) => Ok(()),
        _ => bail!("the host did not register: {}", host.status().borrow().last_error.clone().unwrap_or_default()),
    }
}

/// An echo service on `127.0.0.1:0`: every connection gets its bytes back, and its
/// write side is closed when the reader reaches end of stream (half-close respected).
pub async fn echo_service() -> Result<(SocketAddr, JoinHandle<()>)> {
    echo_service_on(([127, 0, 0, 1], 0).into()).await
}

/// [`echo_service`] on another address (a test network's own, say).
pub async fn echo_service_on(bind: SocketAddr) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let (mut r, mut w) = stream.into_split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    Ok((addr, task))
}

/// A deterministic pseudo-random byte stream (xorshift64*), so a sender and a checker
/// agree on many MiB of incompressible data without storing it.
#[derive(Clone, Debug)]
pub struct Pattern(u64);

impl Pattern {
    /// A stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Fills `buf` with the next bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// SHA-256 of `len` bytes of `Pattern::new(seed)`.
pub fn pattern_digest(seed: u64, len: u64) -> Vec<u8> {
    let mut pattern = Pattern::new(seed);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        pattern.fill(&mut buf[..n]);
        ctx.update(&buf[..n]);
        left -= n as u64;
    }
    ctx.finish().as_ref().to_vec()
}

/// Sends `len` bytes of `Pattern::new(seed)` on `stream` while reading everything that
/// comes back; closes the write side after the last byte. Returns the SHA-256 and the
/// length of what came back.
pub async fn send_and_digest(stream: TcpStream, seed: u64, len: u64) -> Result<(Vec<u8>, u64)> {
    stream.set_nodelay(true)?;
    let (mut r, mut w) = stream.into_split();
    let writer = async move {
        let mut pattern = Pattern::new(seed);
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            pattern.fill(&mut buf[..n]);
            w.write_all(&buf[..n]).await.context("sending")?;
            left -= n as u64;
        }
        w.shutdown().await.context("closing the write side")?;
        anyhow::Ok(())
    };
    let reader = async move {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = r.read(&mut buf).await.context("receiving")?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
            total += n as u64;
        }
        anyhow::Ok((ctx.finish().as_ref().to_vec(), total))
    };
    let ((), received) = tokio::try_join!(writer, reader)?;
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_seeded() {
        let (mut a, mut b, mut c) = (Pattern::new(1), Pattern::new(1), Pattern::new(2));
        let (mut x, mut y, mut z) = ([0u8; 100], [0u8; 100], [0u8; 100]);
        a.fill(&mut x);
        b.fill(&mut y);
        c.fill(&mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_eq!(pattern_digest(1, 100), ring::digest::digest(&ring::digest::SHA256, &x).as_ref());
    }
}
