//! The relay's hard limits: where memory, sessions and connection rates are bounded.
//!
//! - [`BufferBudget`]: the sum of all pump buffers. Each session reserves its two
//!   directions' buffers up front; when the budget is spent new sessions are refused as
//!   busy and running ones are untouched.
//! - [`SourceRate`]: new connections per source address per minute, a token bucket per
//!   address kept in memory only (never logged), pruned so the map stays bounded.
//! - [`SessionCount`]: sessions per host.
//!
//! Pending handshakes are bounded by a semaphore in `server.rs`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// The numeric limits a reload can change.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Most hosts registered at once.
    pub max_hosts: usize,
    /// Most concurrent sessions per host.
    pub max_sessions_per_host: usize,
    /// Most connections in their TLS handshake or first message at once.
    pub max_pending_handshakes: usize,
    /// New connections allowed per source address per minute (0 = unlimited).
    pub connections_per_minute_per_source: u32,
    /// The sum of all session buffers, in bytes.
    pub buffer_budget: u64,
    /// A session with no bytes either way for this long is closed.
    pub idle_session_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_hosts: 10_000,
            max_sessions_per_host: 256,
            max_pending_handshakes: 1024,
            connections_per_minute_per_source: 600,
            buffer_budget: 1 << 30,
            idle_session_timeout: Duration::from_secs(300),
        }
    }
}

/// The global budget for session buffers.
pub(crate) struct BufferBudget {
    in_use: AtomicU64,
    cap: AtomicU64,
}

/// Bytes reserved from the budget; released when dropped.
pub(crate) struct Reservation {
    budget: Arc<BufferBudget>,
    metrics: Arc<Metrics>,
    bytes: u64,
}

impl BufferBudget {
    pub(crate) fn new(cap: u64) -> Arc<Self> {
        Arc::new(Self { in_use: AtomicU64::new(0), cap: AtomicU64::new(cap) })
    }

    /// Changes the budget (reload); reservations already made stay.
    pub(crate) fn set_cap(&self, cap: u64) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// Reserves `bytes`, or `None` if that would exceed the budget.
    pub(crate) fn try_reserve(self: &Arc<Self>, bytes: u64, metrics: &Arc<Metrics>) -> Option<Reservation> {
        let cap = self.cap.load(Ordering::Relaxed);
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| used.checked_add(bytes).filter(|&n| n <= cap))
            .ok()?;
        metrics.buffer_reserved(bytes);
        Some(Reservation { budget: self.clone(), metrics: metrics.clone(), bytes })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(self.bytes, Ordering::AcqRel);
        self.metrics.buffer_released(self.bytes);
    }
}

/// Sessions of one host.
#[derive(Default)]
pub(crate) struct SessionCount(AtomicUsize);

/// One session's place in its host's count; released when dropped.
pub(crate) struct SessionSlot(Arc<SessionCount>);

impl SessionCount {
    /// Takes a slot unless the host already has `max` sessions.
    pub(crate) fn try_take(self: &Arc<Self>, max: usize) -> Option<SessionSlot> {
        self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(SessionSlot(self.clone()))
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Most source addresses tracked at once; beyond it, stale entries are pruned first and
/// then unknown sources share one bucket, so memory stays bounded under a spoofed flood.
const MAX_SOURCES: usize = 100_000;

/// New-connection rate per source address.
#[derive(Default)]
pub(crate) struct SourceRate {
    buckets: DashMap<IpAddr, (f64, Instant)>,
}

impl SourceRate {
    /// Whether a new connection from `ip` is allowed now, at `per_minute` (0 = always).
    pub(crate) fn allow(&self, ip: IpAddr, per_minute: u32) -> bool {
        if per_minute == 0 {
            return true;
        }
        let now = Instant::now();
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&ip) {
            self.prune(now);
        }
        let key = if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&ip) {
            IpAddr::from([0u8; 16])
        } else {
            ip
        };
        let burst = f64::from(per_minute);
        let per_sec = burst / 60.0;
        let mut entry = self.buckets.entry(key).or_insert((burst, now));
        let (tokens, last) = *entry;
        let refilled = (tokens + now.duration_since(last).as_secs_f64() * per_sec).min(burst);
        if refilled >= 1.0 {
            *entry = (refilled - 1.0, now);
            true
        } else {
            *entry = (refilled, now);
            false
        }
    }

    /// Drops sources not seen for a minute: their buckets have refilled completely, so
    /// forgetting them changes nothing.
    pub(crate) fn prune(&self, now: Instant) {
        self.buckets.retain(|_, (_, last)| now.duration_since(*last) < Duration::from_secs(60));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_never_exceeded_and_is_returned() {
        let metrics = Arc::new(Metrics::default());
        let budget = BufferBudget::new(4 << 20);
        let a = budget.try_reserve(2 << 20, &metrics).unwrap();
        let b = budget.try_reserve(2 << 20, &metrics).unwrap();
        assert!(budget.try_reserve(1, &metrics).is_none());
        assert_eq!(metrics.buffer_in_use(), 4 << 20);
        drop(a);
        assert!(budget.try_reserve(2 << 20, &metrics).is_some());
        drop(b);
        assert_eq!(metrics.buffer_in_use(), 0);
    }

    #[test]
    fn sessions_per_host_are_capped() {
        let count = Arc::new(SessionCount::default());
        let slots: Vec<_> = (0..3).map(|_| count.try_take(3).unwrap()).collect();
        assert!(count.try_take(3).is_none());
        drop(slots);
        assert!(count.try_take(3).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn source_rate_limits_one_address_not_another() {
        let rate = SourceRate::default();
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 1].into();
        let allowed = (0..100).filter(|_| rate.allow(a, 60)).count();
        assert_eq!(allowed, 60);
        assert!(rate.allow(b, 60));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(rate.allow(a, 60), "one token per second refills");
        assert!(!rate.allow(a, 60));
    }
}
