//! A userspace link between a client and the relay that can delay, drop and blackhole
//! UDP datagrams: what `tc netem` would do, for kernels without `sch_netem` (this
//! machine's has none) and without root.
//!
//! The proxy listens on 127.0.0.1:0 and forwards every datagram from its one client to
//! the relay and back. Everything is bounded: a fixed delay, a loss rate from a seeded
//! PRNG (reproducible), and a blackhole switch.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use tokio::net::UdpSocket;

/// Knobs of one impaired link.
pub struct Impairment {
    /// One-way delay added to every datagram.
    pub delay: Duration,
    /// Drop probability per datagram, in parts per million.
    pub loss_ppm: u32,
    blackhole: AtomicBool,
    dropped: AtomicU64,
}

impl Impairment {
    pub fn new(delay: Duration, loss_ppm: u32) -> Arc<Self> {
        Arc::new(Self { delay, loss_ppm, blackhole: AtomicBool::new(false), dropped: AtomicU64::new(0) })
    }

    /// Drops everything, both ways, while `on`.
    pub fn set_blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::Relaxed);
    }

    /// Datagrams dropped so far (loss and blackhole).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Starts the proxy towards `relay`; returns the address clients should use.
pub async fn udp_proxy(relay: SocketAddr, link: Arc<Impairment>) -> Result<SocketAddr> {
    let outside = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let inside = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    inside.connect(relay).await?;
    let addr = outside.local_addr()?;
    let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();

    // Client → relay.
    let (o, i, l, c) = (outside.clone(), inside.clone(), link.clone(), client.clone());
    tokio::spawn(async move {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = o.recv_from(&mut buf).await {
            *c.lock().unwrap() = Some(from);
            if drop_it(&l, &mut rng) {
                continue;
            }
            let (i, datagram, delay) = (i.clone(), buf[..n].to_vec(), l.delay);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = i.send(&datagram).await;
            });
        }
    });
    // Relay → client.
    tokio::spawn(async move {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = inside.recv(&mut buf).await {
            let Some(to) = *client.lock().unwrap() else { continue };
            if drop_it(&link, &mut rng) {
                continue;
            }
            let (o, datagram, delay) = (outside.clone(), buf[..n].to_vec(), link.delay);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = o.send_to(&datagram, to).await;
            });
        }
    });
    Ok(addr)
}

fn drop_it(link: &Impairment, rng: &mut u64) -> bool {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let lost = link.blackhole.load(Ordering::Relaxed) || (*rng % 1_000_000) < u64::from(link.loss_ppm);
    if lost {
        link.dropped.fetch_add(1, Ordering::Relaxed);
    }
    lost
}
