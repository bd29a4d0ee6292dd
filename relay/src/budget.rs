//! The buffer budget: the memory all sessions may make the relay hold, and each host's
//! fair share of it.
//!
//! A session can make the relay hold up to one buffer per direction (`buffer_per_direction`:
//! each QUIC stream's receive window, and its share of its connection's window, see
//! `ferry_link::window`), so it reserves both up front, before the relay reaches for the
//! host, and gives them back when it ends. An idle session holds far less (a few KiB), but
//! a session whose reader stops can fill its windows at any moment and the relay has no way
//! to take the credit back: the worst case is the honest reservation. When the budget is
//! spent, new sessions are refused as busy and running ones are never touched.
//!
//! **Fair share.** Reservations are taken first come, first served, so without more a few
//! hosts could take the whole budget: two self-made hosts with 511 idle sessions each (one
//! byte per few minutes keeps a session) did, and every other host's new sessions were
//! refused. Running sessions cannot be pre-empted, so the room for newcomers must be kept
//! before it is needed: a host that already holds some of the budget may take more only up
//! to `budget / (hosts holding any + 1)`. With `n` hosts holding buffers, one share is
//! always left for a host that holds none, and each of the `n` is capped at the same share
//! (max-min fair: the share shrinks as hosts arrive, and a host over it takes no new
//! sessions until it is back under). A host's first session needs only room in the budget.
//! A lone host may so take half the budget (with the defaults, 512 MiB: 256 sessions, its
//! default session limit). A refusal for the share is `HostOverLimit`: the host cannot take
//! more sessions now, others can.
//!
//! Sybils (an attacker registering many hosts) are bounded by the per-source connection
//! caps and rates, and by the registration policy; between them, the share is per host.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ferry_proto::RefuseReason;

use crate::metrics::Metrics;

/// The global budget for session buffers.
pub(crate) struct BufferBudget {
    /// One lock for the totals: a reservation checks the free budget, the host's holding
    /// and the number of holders together (a few hundred nanoseconds, once per session).
    state: Mutex<Totals>,
}

struct Totals {
    cap: u64,
    in_use: u64,
    /// Hosts holding any part of the budget.
    holders: u64,
}

/// What one host's sessions hold of the budget (changed only under the budget's lock;
/// atomic so that a host handle can be shared without a lock of its own).
#[derive(Default)]
pub(crate) struct HostBuffers(AtomicU64);

/// Bytes reserved from the budget for one session; given back when dropped.
pub(crate) struct Reservation {
    budget: Arc<BufferBudget>,
    host: Arc<HostBuffers>,
    metrics: Arc<Metrics>,
    bytes: u64,
}

impl BufferBudget {
    pub(crate) fn new(cap: u64) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(Totals { cap, in_use: 0, holders: 0 }) })
    }

    /// Changes the budget (reload); reservations already made stay.
    pub(crate) fn set_cap(&self, cap: u64) {
        self.totals().cap = cap;
    }

    /// Reserves `bytes` for a session of `host`, or says why not: the budget is spent
    /// (`RelayBusy`) or the host holds its fair share (`HostOverLimit`).
    pub(crate) fn try_reserve(
        self: &Arc<Self>,
        host: &Arc<HostBuffers>,
        bytes: u64,
        metrics: &Arc<Metrics>,
    ) -> Result<Reservation, RefuseReason> {
        let mut totals = self.totals();
        if bytes > totals.cap.saturating_sub(totals.in_use) {
            return Err(RefuseReason::RelayBusy);
        }
        let held = host.0.load(Ordering::Acquire);
        if held > 0 {
            let share = totals.cap / totals.holders.saturating_add(1);
            if held.saturating_add(bytes) > share {
                return Err(RefuseReason::HostOverLimit);
            }
        } else {
            totals.holders += 1;
        }
        totals.in_use += bytes;
        host.0.store(held + bytes, Ordering::Release);
        drop(totals);
        metrics.buffer_reserved(bytes);
        Ok(Reservation { budget: self.clone(), host: host.clone(), metrics: metrics.clone(), bytes })
    }

    fn totals(&self) -> std::sync::MutexGuard<'_, Totals> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut totals = self.budget.totals();
        totals.in_use = totals.in_use.saturating_sub(self.bytes);
        let held = self.host.0.load(Ordering::Acquire).saturating_sub(self.bytes);
        self.host.0.store(held, Ordering::Release);
        if held == 0 {
            totals.holders = totals.holders.saturating_sub(1);
        }
        drop(totals);
        self.metrics.buffer_released(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: u64 = 2 << 20;

    fn hosts<const N: usize>() -> [Arc<HostBuffers>; N] {
        std::array::from_fn(|_| Arc::default())
    }

    #[test]
    fn budget_is_never_exceeded_and_is_returned() {
        let metrics = Arc::new(Metrics::default());
        let budget = BufferBudget::new(2 * SESSION);
        let [a, b, c] = hosts();
        let ra = budget.try_reserve(&a, SESSION, &metrics).unwrap();
        let rb = budget.try_reserve(&b, SESSION, &metrics).unwrap();
        assert_eq!(budget.try_reserve(&c, 1, &metrics).err(), Some(RefuseReason::RelayBusy));
        assert_eq!(metrics.buffer_in_use(), 2 * SESSION);
        drop(ra);
        assert!(budget.try_reserve(&c, SESSION, &metrics).is_ok());
        drop(rb);
        assert_eq!(metrics.buffer_in_use(), 0);
    }

    #[test]
    fn a_lone_host_takes_half_and_leaves_room_for_the_next() {
        let metrics = Arc::new(Metrics::default());
        let budget = BufferBudget::new(64 * SESSION);
        let [greedy, newcomer] = hosts();
        let mut held = Vec::new();
        while let Ok(r) = budget.try_reserve(&greedy, SESSION, &metrics) {
            held.push(r);
        }
        assert_eq!(held.len(), 32, "alone, a host may hold half the budget");
        assert_eq!(
            budget.try_reserve(&greedy, SESSION, &metrics).err(),
            Some(RefuseReason::HostOverLimit),
            "past its share a host is over its limit, the relay is not busy"
        );
        let first = budget.try_reserve(&newcomer, SESSION, &metrics).expect("a newcomer always finds room");
        drop(first);
        drop(held);
        assert_eq!(metrics.buffer_in_use(), 0);
        assert_eq!(budget.totals().holders, 0, "hosts holding nothing are not counted");
    }

    /// Finding 5 of issue 13: two hosts opening sessions as fast as they can used to take
    /// the whole budget. Now, however their requests interleave, a third host gets a
    /// third of it.
    #[test]
    fn greedy_hosts_cannot_take_the_budget_from_others() {
        let metrics = Arc::new(Metrics::default());
        let budget = BufferBudget::new(512 * SESSION);
        let [a, b, honest] = hosts();
        let mut held = Vec::new();
        for _ in 0..1_000 {
            for host in [&a, &b] {
                if let Ok(r) = budget.try_reserve(host, SESSION, &metrics) {
                    held.push(r);
                }
            }
        }
        let greedy = held.len() as u64;
        assert!(greedy <= 2 * 512 / 3, "two hosts hold {greedy} of 512 sessions' buffers");
        let mut honest_sessions = Vec::new();
        while let Ok(r) = budget.try_reserve(&honest, SESSION, &metrics) {
            honest_sessions.push(r);
        }
        assert!(honest_sessions.len() as u64 >= 512 / 4, "the honest host got {}", honest_sessions.len());
        // As the greedy hosts' sessions end, their share goes to whoever asks.
        drop(held);
        assert!(budget.try_reserve(&a, SESSION, &metrics).is_ok());
    }

    #[test]
    fn reservations_racing_on_threads_never_pass_the_budget_or_a_share() {
        let metrics = Arc::new(Metrics::default());
        let budget = BufferBudget::new(90 * SESSION);
        let [a, b] = hosts();
        let held: Vec<Reservation> = std::thread::scope(|scope| {
            let workers: Vec<_> = [&a, &b, &a, &b]
                .into_iter()
                .map(|host| {
                    let (budget, metrics) = (&budget, &metrics);
                    scope.spawn(move || {
                        (0..200).filter_map(|_| budget.try_reserve(host, SESSION, metrics).ok()).collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
        });
        let total: u64 = held.iter().map(|r| r.bytes).sum();
        assert!(total <= 90 * SESSION);
        for host in [&a, &b] {
            // Each ends at or under the two-holder share (a third), plus the one session
            // it may have taken while it was the lone holder of half.
            assert!(host.0.load(Ordering::Acquire) <= 45 * SESSION);
        }
        assert_eq!(metrics.buffer_in_use(), total);
    }
}
