//! The relay's hard limits: where sessions, connections and connection rates are bounded
//! (the memory of sessions is `crate::budget`'s).
//!
//! - `SourceKey`: what one source is. An IPv4 address; for IPv6 the address's /64 (a
//!   subscriber or a LAN is given a whole /64, so keying on the full address would hand
//!   one machine 2^64 sources); an IPv4-mapped IPv6 address counts as its IPv4 address.
//!   Every per-source limit below keys on it.
//! - `SourceRate`: new connections per source per minute, on governor's keyed rate
//!   limiter; sources are kept in memory only (never logged), swept on a schedule and
//!   capped in number, so the map stays bounded. Past the cap, a source not yet tracked
//!   shares a bucket with others, chosen by a keyed hash of its key among
//!   `OVERFLOW_SHARDS` buckets: one flooder of forged sources would have to drain every
//!   shard to lock out newcomers, and cannot aim at one newcomer's shard (the hash key is
//!   random per process). Evicting the oldest entries instead would hand each forged
//!   source a fresh burst once the table churns, and needs an order governor's store
//!   does not keep; sharding keeps the cap and costs at most 4,096 more entries (about
//!   200 KiB).
//! - `CappedCount`: sessions per host, and connections in their handshake, under a cap
//!   that follows reloads.
//! - `PerSource`: a count per source under a cap, its entry kept only while non-zero; used
//!   for open connections per source and for pending handshakes per (validated) source.
//! - `OpenConnections`: hop connections open at once, overall and per source, so no
//!   flood of connections that stay open (a QUIC connection kept alive by PINGs costs
//!   about 100 KiB) can take the relay's memory; the sources of open connections are kept
//!   in memory only while those connections are open. The overall count is published on
//!   a `watch` channel, which the heap trim (`allocator.rs`) watches.
//! - `RefusalNotes`: how many refusals per second are explained to the peer; each costs
//!   a TLS handshake, so past this rate a refused connection is dropped unexplained.
//!
//! Pending handshakes are bounded by a `CappedCount` overall and a `PerSource` per source
//! (see `state.rs`, which also says when QUIC's address validation is asked for).

use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use ferry_proto::RefuseReason;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::{Quota, RateLimiter};
use tokio::sync::watch;
use tokio::time::Instant;

/// The numeric limits a reload can change.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Most hosts registered at once.
    pub max_hosts: usize,
    /// Most concurrent sessions per host.
    pub max_sessions_per_host: usize,
    /// Most connections in their TLS handshake or first message at once.
    pub max_pending_handshakes: usize,
    /// Most connections in their handshake at once from one source (whose address QUIC
    /// has validated, or any TCP one); see `listen.rs` for how QUIC validates.
    pub max_pending_handshakes_per_source: usize,
    /// New connections allowed per source address per minute (0 = unlimited).
    pub connections_per_minute_per_source: u32,
    /// The sum of all session buffers, in bytes.
    pub buffer_budget: u64,
    /// A session with no bytes either way for this long is closed.
    pub idle_session_timeout: Duration,
    /// Most hop connections (QUIC connections and TLS connections together) open at once.
    pub max_connections: usize,
    /// Most hop connections open at once from one source address.
    pub max_connections_per_source: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_hosts: 10_000,
            max_sessions_per_host: 256,
            max_pending_handshakes: 1024,
            max_pending_handshakes_per_source: 64,
            connections_per_minute_per_source: 600,
            buffer_budget: 1 << 30,
            idle_session_timeout: Duration::from_secs(300),
            max_connections: 16_384,
            max_connections_per_source: 512,
        }
    }
}

/// A count under a cap that is passed in at each take, not fixed at creation, so a reload
/// takes effect at once: lowering the cap turns newcomers away until enough holders have
/// left; raising it admits more at once. Used for the sessions of one host and for the
/// connections in their handshake (`max_pending_handshakes`).
#[derive(Default)]
pub(crate) struct CappedCount(AtomicUsize);

/// One place in a [`CappedCount`]; given back when dropped, however its holder ends.
pub(crate) struct CountedSlot(Arc<CappedCount>);

impl CappedCount {
    /// How many places are taken now.
    pub(crate) fn taken(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Takes a place unless `max` are already taken.
    pub(crate) fn try_take(self: &Arc<Self>, max: usize) -> Option<CountedSlot> {
        self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(CountedSlot(self.clone()))
    }
}

impl Drop for CountedSlot {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One source, as every per-source limit counts it (see the module docs): an IPv4
/// address, or the /64 prefix of an IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SourceKey {
    /// An IPv4 address, also when it arrived IPv4-mapped on a dual-stack socket.
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl SourceKey {
    /// The source `ip` belongs to.
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                None => Self::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// A count per source under a cap passed in at each take; a source's entry exists only
/// while its count is above zero, so the map never holds more entries than places taken.
#[derive(Default)]
pub(crate) struct PerSource(DashMap<SourceKey, usize>);

/// One place in a [`PerSource`]; given back when dropped.
pub(crate) struct SourceSlot {
    counts: Arc<PerSource>,
    source: SourceKey,
}

impl PerSource {
    /// Takes a place for `source` unless it holds `max` already.
    pub(crate) fn try_take(self: &Arc<Self>, source: SourceKey, max: usize) -> Option<SourceSlot> {
        // The entry's shard stays locked while it is checked and counted, so racing
        // connections from one source cannot both take its last place.
        let mut count = self.0.entry(source).or_insert(0);
        if *count >= max {
            let unused = *count == 0;
            drop(count);
            if unused {
                self.0.remove_if(&source, |_, n| *n == 0);
            }
            return None;
        }
        *count += 1;
        Some(SourceSlot { counts: self.clone(), source })
    }

    /// Whether no source holds a place.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        if let Entry::Occupied(mut entry) = self.counts.0.entry(self.source) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

/// Hop connections open now: how many in all, and how many per source.
///
/// The total lives in a `watch` channel (its lock makes the check against the cap and the
/// count one step), so whoever cares when connections come and go (the heap trim) can
/// wait on it instead of polling.
pub(crate) struct OpenConnections {
    total: watch::Sender<usize>,
    by_source: Arc<PerSource>,
}

impl Default for OpenConnections {
    fn default() -> Self {
        Self { total: watch::Sender::new(0), by_source: Arc::default() }
    }
}

/// One open connection's place in [`OpenConnections`]; given back when dropped.
pub(crate) struct ConnectionSlot {
    open: Arc<OpenConnections>,
    _source: SourceSlot,
}

impl OpenConnections {
    /// A place for one more connection from `source`, or why not: the relay is full
    /// ([`RefuseReason::RelayBusy`]) or the source has `per_source` open already
    /// ([`RefuseReason::RateLimited`]).
    pub(crate) fn try_open(
        self: &Arc<Self>,
        source: SourceKey,
        max: usize,
        per_source: usize,
    ) -> Result<ConnectionSlot, RefuseReason> {
        let taken = self.total.send_if_modified(|n| {
            let room = *n < max;
            if room {
                *n += 1;
            }
            room
        });
        if !taken {
            return Err(RefuseReason::RelayBusy);
        }
        let Some(source) = self.by_source.try_take(source, per_source) else {
            self.total.send_modify(|n| *n -= 1);
            return Err(RefuseReason::RateLimited);
        };
        Ok(ConnectionSlot { open: self.clone(), _source: source })
    }

    /// The number of open connections, as it changes.
    pub(crate) fn watch(&self) -> watch::Receiver<usize> {
        self.total.subscribe()
    }

    /// Connections open now, in all.
    #[cfg(test)]
    fn total(&self) -> usize {
        *self.total.borrow()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.total.send_modify(|n| *n -= 1);
    }
}

/// Refusals explained to the peer per second (with a burst as large): each costs the relay
/// a TLS handshake, about 0.5 ms of CPU against 0.07 ms for a bare refusal (measured by
/// `tests/hostile_connections.rs`, QUIC and TCP alike), so a flood of refused connections
/// costs at most about 2 % of a core in explanations; past the rate, refused connections
/// are turned away bare, as they always were.
const EXPLAINED_REFUSALS_PER_SECOND: u32 = 32;

/// The budget of explained refusals: one governor direct (unkeyed) rate limiter.
pub(crate) struct RefusalNotes {
    limiter: RateLimiter<
        governor::state::direct::NotKeyed,
        governor::state::InMemoryState,
        TokioClock,
        NoOpMiddleware<TokioInstant>,
    >,
}

impl Default for RefusalNotes {
    fn default() -> Self {
        let rate = NonZeroU32::new(EXPLAINED_REFUSALS_PER_SECOND).expect("the constant is not zero");
        Self { limiter: RateLimiter::direct_with_clock(Quota::per_second(rate), TokioClock) }
    }
}

impl RefusalNotes {
    /// Whether one more refusal may be explained now.
    pub(crate) fn take(&self) -> bool {
        self.limiter.check().is_ok()
    }
}

/// Most sources tracked at once. Past it, a source not yet tracked shares one of
/// [`OVERFLOW_SHARDS`] buckets with other such sources, so a flood of forged addresses
/// cannot grow memory without bound (about 50 bytes a source: a few MiB at most).
const MAX_SOURCES: usize = 100_000;

/// The buckets untracked sources share once [`MAX_SOURCES`] are tracked, picked by a
/// keyed hash. To refuse every newcomer, a flood must drain them all: 4,096 bursts (at the
/// default 600 a minute, about 40,000 connections a second) instead of one.
const OVERFLOW_SHARDS: u16 = 4096;

/// How often the map is swept of sources whose bucket has refilled (the limiter treats
/// them exactly as sources it has never seen). A bucket refills within a minute, so an
/// address is forgotten at most about 70 s after its last connection.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// A key of the rate limiter's map: a tracked source, or one of the shared buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum RateKey {
    Source(SourceKey),
    Overflow(u16),
}

/// New-connection rate per source address: a governor keyed rate limiter (GCRA, which
/// admits a burst of `per_minute` and then one connection every `60 s / per_minute`,
/// the token bucket this used to hand-roll).
///
/// Sources live only in memory, are never logged, and are swept on a schedule
/// ([`SWEEP_EVERY`]); their number is capped by [`MAX_SOURCES`].
pub(crate) struct SourceRate {
    /// The limiter for the rate it was built for; rebuilt when a reload changes the rate
    /// (governor's quota is fixed per limiter), which gives every source a fresh burst.
    current: RwLock<Option<Arc<Keyed>>>,
    /// The source cap, [`MAX_SOURCES`] except in tests.
    max_sources: usize,
    /// The number of shared buckets past the cap, [`OVERFLOW_SHARDS`] except in tests.
    shards: u16,
}

/// A limiter and when its map was last swept.
struct Keyed {
    per_minute: NonZeroU32,
    limiter: RateLimiter<RateKey, Sources, TokioClock, NoOpMiddleware<TokioInstant>>,
    /// Taken with `try_lock` by whichever connection finds a sweep due; the others skip it.
    last_sweep: Mutex<Instant>,
}

impl Default for SourceRate {
    fn default() -> Self {
        Self::with_max_sources(MAX_SOURCES, OVERFLOW_SHARDS)
    }
}

impl SourceRate {
    fn with_max_sources(max_sources: usize, shards: u16) -> Self {
        Self { current: RwLock::new(None), max_sources, shards: shards.max(1) }
    }

    /// Whether a new connection from `source` is allowed now, at `per_minute` (0 = always).
    pub(crate) fn allow(&self, source: SourceKey, per_minute: u32) -> bool {
        let Some(per_minute) = NonZeroU32::new(per_minute) else {
            return true;
        };
        let keyed = self.keyed(per_minute);
        keyed.sweep_if_due();
        keyed.limiter.check_key(&RateKey::Source(source)).is_ok()
    }

    /// The limiter for `per_minute`, built anew if the rate changed.
    fn keyed(&self, per_minute: NonZeroU32) -> Arc<Keyed> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner).clone();
        match current {
            Some(keyed) if keyed.per_minute == per_minute => keyed,
            _ => {
                let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
                match &*current {
                    // Another connection rebuilt it first.
                    Some(keyed) if keyed.per_minute == per_minute => keyed.clone(),
                    _ => {
                        let keyed = Arc::new(Keyed::new(per_minute, self.max_sources, self.shards));
                        *current = Some(keyed.clone());
                        keyed
                    }
                }
            }
        }
    }

    /// How many sources are tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.current.read().unwrap_or_else(PoisonError::into_inner).as_ref().map_or(0, |keyed| keyed.limiter.len())
    }
}

impl Keyed {
    fn new(per_minute: NonZeroU32, max_sources: usize, shards: u16) -> Self {
        let sources = Sources { map: DashMapStateStore::default(), max_sources, shards, hasher: RandomState::new() };
        Self {
            per_minute,
            limiter: RateLimiter::new(Quota::per_minute(per_minute), sources, TokioClock),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Forgets the sources the limiter no longer needs, if [`SWEEP_EVERY`] has passed.
    fn sweep_if_due(&self) {
        let Ok(mut last_sweep) = self.last_sweep.try_lock() else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(*last_sweep) >= SWEEP_EVERY {
            *last_sweep = now;
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
    }
}

/// The limiter's state: governor's DashMap store with a cap on its size.
struct Sources {
    map: DashMapStateStore<RateKey>,
    max_sources: usize,
    shards: u16,
    /// SipHash with keys drawn at random when the limiter is built: which shard a source
    /// falls in cannot be known from outside.
    hasher: RandomState,
}

impl StateStore for Sources {
    type Key = RateKey;

    fn measure_and_replace<T, F, E>(&self, key: &RateKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // Racing connections can each add one source past the cap: the map stays within
        // the cap plus the shards plus the number of connections accepted at once.
        if self.map.len() >= self.max_sources && !self.map.contains_key(key) {
            let shard = (self.hasher.hash_one(key) % u64::from(self.shards)) as u16;
            return self.map.measure_and_replace(&RateKey::Overflow(shard), f);
        }
        self.map.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<RateKey> for Sources {
    fn retain_recent(&self, drop_below: Nanos) {
        self.map.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&self.map);
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Governor's clock reading tokio's: the limiter then runs on the same clock as every
/// other timer in the relay, and paused time drives it in tests.
#[derive(Clone, Copy, Debug, Default)]
struct TokioClock;

/// An instant of [`TokioClock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct TokioInstant(Instant);

impl Clock for TokioClock {
    type Instant = TokioInstant;

    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now())
    }
}

impl Add<Nanos> for TokioInstant {
    type Output = Self;

    fn add(self, nanos: Nanos) -> Self {
        // Governor adds at most a bucket's refill time to a recent instant; saturate at the
        // instant itself rather than panic should an overflow ever be asked for.
        Self(self.0.checked_add(Duration::from(nanos)).unwrap_or(self.0))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    fn saturating_sub(&self, nanos: Nanos) -> Self {
        Self(self.0.checked_sub(Duration::from(nanos)).unwrap_or(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_per_host_are_capped() {
        let count = Arc::new(CappedCount::default());
        let slots: Vec<_> = (0..3).map(|_| count.try_take(3).unwrap()).collect();
        assert!(count.try_take(3).is_none());
        drop(slots);
        assert!(count.try_take(3).is_some());
    }

    #[test]
    fn the_cap_holds_and_follows_a_reload() {
        let gate = Arc::new(CappedCount::default());
        let held: Vec<_> = (0..3).map(|_| gate.try_take(3).unwrap()).collect();
        assert!(gate.try_take(3).is_none(), "a fourth handshake over a cap of 3");
        assert!(gate.try_take(4).is_some(), "a raised cap admits at once");
        drop(held);
        // Lowered below what was running: admits again once enough have finished.
        let one = gate.try_take(1).unwrap();
        assert!(gate.try_take(1).is_none());
        drop(one);
        assert!(gate.try_take(1).is_some());
    }

    #[test]
    fn open_connections_are_capped_overall_and_per_source() {
        let open = Arc::new(OpenConnections::default());
        let a = SourceKey::of(IpAddr::from([127, 0, 0, 2]));
        let b = SourceKey::of(IpAddr::from([127, 0, 0, 3]));
        let held: Vec<_> = (0..2).map(|_| open.try_open(a, 3, 2).unwrap()).collect();
        assert_eq!(open.try_open(a, 3, 2).err(), Some(RefuseReason::RateLimited), "a third from one source");
        let from_b = open.try_open(b, 3, 2).unwrap();
        assert_eq!(open.try_open(b, 3, 2).err(), Some(RefuseReason::RelayBusy), "a fourth in all");
        assert_eq!(open.total(), 3);
        drop(held);
        drop(from_b);
        assert_eq!(open.total(), 0);
        assert!(open.by_source.is_empty(), "a source is forgotten with its last connection");
        // A refused source leaves nothing behind either.
        assert!(open.try_open(a, 3, 0).is_err());
        assert!(open.by_source.is_empty());
        assert_eq!(open.total(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn explained_refusals_are_rate_limited() {
        let notes = RefusalNotes::default();
        let explained = (0..1_000).filter(|_| notes.take()).count();
        assert_eq!(explained, EXPLAINED_REFUSALS_PER_SECOND as usize);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(notes.take());
    }

    #[tokio::test(start_paused = true)]
    async fn source_rate_limits_one_address_not_another() {
        let rate = SourceRate::default();
        let a = SourceKey::of(IpAddr::from([127, 0, 0, 2]));
        let b = SourceKey::of(IpAddr::from([127, 0, 0, 1]));
        let allowed = (0..100).filter(|_| rate.allow(a, 60)).count();
        assert_eq!(allowed, 60);
        assert!(rate.allow(b, 60));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(rate.allow(a, 60), "one token per second refills");
        assert!(!rate.allow(a, 60));
    }

    #[test]
    fn zero_is_unlimited_and_tracks_nobody() {
        let rate = SourceRate::default();
        let a = SourceKey::of(IpAddr::from([127, 0, 0, 2]));
        assert!((0..10_000).all(|_| rate.allow(a, 0)));
        assert_eq!(rate.tracked(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_applies_the_new_rate() {
        let rate = SourceRate::default();
        let a = SourceKey::of(IpAddr::from([127, 0, 0, 2]));
        assert_eq!((0..100).filter(|_| rate.allow(a, 10)).count(), 10);
        assert_eq!((0..100).filter(|_| rate.allow(a, 30)).count(), 30, "a new rate starts with its own burst");
        assert!((0..100).all(|_| rate.allow(a, 0)), "0 switches the limit off");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_forged_sources_cannot_grow_the_map() {
        // One shared bucket past the cap, as it was before the overflow was sharded.
        let rate = SourceRate::with_max_sources(1_000, 1);
        let honest = SourceKey::of(IpAddr::from([127, 0, 0, 1]));
        assert!(rate.allow(honest, 60));
        // One forged source per /64 (addresses within one /64 are one source).
        let forged = |n: u32| {
            SourceKey::of(IpAddr::from(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(n) << 64)))
        };
        let allowed = (0..5_000).filter(|&n| rate.allow(forged(n), 60)).count();
        assert!(rate.tracked() <= 1_001, "{} sources tracked", rate.tracked());
        // 999 forged sources got buckets of their own (one connection each); the other
        // 4,001 shared one bucket, which let its burst of 60 through.
        assert_eq!(allowed, 999 + 60);
        // A source tracked before the flood keeps its own bucket.
        assert!(rate.allow(honest, 60));
    }

    #[tokio::test(start_paused = true)]
    async fn sources_are_forgotten_once_their_bucket_has_refilled() {
        let rate = SourceRate::default();
        let source = |n: u32| SourceKey::of(IpAddr::from([10, 0, (n >> 8) as u8, n as u8]));
        for n in 0..500 {
            assert!(rate.allow(source(n), 60));
        }
        assert_eq!(rate.tracked(), 500);
        // Within the sweep interval nothing is forgotten, even though these buckets have
        // refilled after a second.
        tokio::time::advance(SWEEP_EVERY / 2).await;
        assert!(rate.allow(source(0), 60));
        assert_eq!(rate.tracked(), 500);
        // The next sweep drops every refilled bucket; only the source just seen is left.
        tokio::time::advance(SWEEP_EVERY).await;
        assert!(rate.allow(source(1), 60));
        assert_eq!(rate.tracked(), 1);
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_ipv4_as_ipv4() {
        let v6 = |s: &str| SourceKey::of(s.parse::<IpAddr>().expect("an address"));
        assert_eq!(v6("2001:db8:1:2::1"), v6("2001:db8:1:2:ffff:ffff:ffff:ffff"), "one /64 is one source");
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"), "the next /64 is another");
        assert_eq!(v6("::ffff:192.0.2.7"), SourceKey::of(IpAddr::from([192, 0, 2, 7])), "IPv4-mapped is IPv4");
        assert_ne!(SourceKey::of(IpAddr::from([192, 0, 2, 7])), SourceKey::of(IpAddr::from([192, 0, 2, 8])));
    }

    #[tokio::test(start_paused = true)]
    async fn one_ipv6_64_shares_one_rate_and_one_connection_cap() {
        let rate = SourceRate::default();
        let in_64 =
            |n: u64| SourceKey::of(IpAddr::from(std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(n))));
        // Every address of the /64 draws from one bucket of 60.
        assert_eq!((0..1_000).filter(|&n| rate.allow(in_64(n), 60)).count(), 60);
        assert_eq!(rate.tracked(), 1);
        let open = Arc::new(OpenConnections::default());
        let held: Vec<_> = (0..4).filter_map(|n| open.try_open(in_64(n), 100, 4).ok()).collect();
        assert_eq!(held.len(), 4);
        assert_eq!(open.try_open(in_64(99), 100, 4).err(), Some(RefuseReason::RateLimited));
    }

    #[tokio::test(start_paused = true)]
    async fn newcomers_past_the_source_cap_are_not_locked_out_by_a_flood() {
        let rate = SourceRate::with_max_sources(1_000, OVERFLOW_SHARDS);
        let forged = |n: u32| SourceKey::of(IpAddr::from([10, (n >> 16) as u8, (n >> 8) as u8, n as u8]));
        // 20,000 forged sources: 1,000 tracked, the other 19,000 spread over the shards
        // (under 5 each on average; a burst is 60).
        let flooded = (0..20_000).filter(|&n| rate.allow(forged(n), 60)).count();
        assert!(rate.tracked() <= 1_000 + usize::from(OVERFLOW_SHARDS), "{} tracked", rate.tracked());
        // Through one shared bucket only 1,000 + 60 would have passed.
        assert!(flooded > 19_000, "only {flooded} of the flood passed: the shards were not used");
        // Honest newcomers, none tracked: each finds its shard's bucket far from empty.
        let newcomer = |n: u32| SourceKey::of(IpAddr::from([192, 0, (n >> 8) as u8, n as u8]));
        let admitted = (0..200).filter(|&n| rate.allow(newcomer(n), 60)).count();
        assert_eq!(admitted, 200, "newcomers were refused past the source cap");
        // The same flood against one shared bucket (the old fallback) refuses them all.
        let single = SourceRate::with_max_sources(1_000, 1);
        for n in 0..20_000 {
            single.allow(forged(n), 60);
        }
        assert_eq!((0..200).filter(|&n| single.allow(newcomer(n), 60)).count(), 0);
    }

    #[test]
    fn pending_places_are_capped_per_source_and_forgotten() {
        let pending = Arc::new(PerSource::default());
        let a = SourceKey::of(IpAddr::from([127, 0, 0, 2]));
        let b = SourceKey::of(IpAddr::from([127, 0, 0, 3]));
        let held: Vec<_> = (0..3).map(|_| pending.try_take(a, 3).expect("under the cap")).collect();
        assert!(pending.try_take(a, 3).is_none(), "a fourth from one source");
        let other = pending.try_take(b, 3).expect("another source has its own places");
        drop(held);
        drop(other);
        assert!(pending.is_empty());
    }

    #[tokio::test]
    async fn open_connections_are_published() {
        let open = Arc::new(OpenConnections::default());
        let mut watch = open.watch();
        let a = SourceKey::of(IpAddr::from([127, 0, 0, 2]));
        let slot = open.try_open(a, 3, 3).expect("room");
        assert!(watch.has_changed().expect("open"));
        assert_eq!(*watch.borrow_and_update(), 1);
        drop(slot);
        assert_eq!(*watch.borrow_and_update(), 0);
    }
}
