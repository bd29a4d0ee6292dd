//! Byte quotas counted and checked: how many bytes each relay account has carried this
//! period, across the fleet.
//!
//! A tier may carry `quota = "100 GiB/month"` (or `"/day"`). The bytes of every session of
//! a host on such a tier count towards its **account**: the registration token the host
//! registered with (by the token's name, so every host of one customer shares it), or,
//! for a host without a token, the host itself. Accounts are named by a keyed hash (HMAC,
//! with a key from the fleet secret, or a random one without a fleet), never by a host id.
//!
//! Periods (`crate::quota`) are calendar days or months in UTC.
//!
//! **Counting is batched.** A session adds the bytes of each batch it forwards to its
//! account's local count (two atomic operations, no lock, no I/O). A flusher task, once a
//! [`FLUSH_INTERVAL`], hands what accumulated to the store: in memory on a relay of its
//! own (lost on restart), or Redis for a fleet (`crate::fleet`'s usage part, one script
//! call per flush for all of this node's accounts). The answer is every account's total
//! across the fleet, which the next checks use.
//!
//! **Checks** are against what this node knows: the fleet total of the last flush plus the
//! local bytes since. A session is refused `QuotaExceeded` when it starts (and a host when
//! it registers) if its account has nothing left; a running session checks at each batch
//! it forwards, so it learns at once of its own node's bytes and of other nodes' within a
//! flush. The session that crosses the quota is then ended (reset with
//! `RESET_QUOTA_EXCEEDED`, which the client and host explain) or, with the tier's
//! `over_quota_rate`, paced down to that rate for the rest of its life.
//!
//! **Redis trouble loses nothing.** A flush that fails keeps its batch and sends exactly
//! the same batch again (same sequence number) until Redis answers, while new bytes gather
//! for the next one; the script applies a batch only if its sequence number is past the
//! last one it applied for this node process, so a batch whose reply was lost after Redis
//! applied it is not counted twice. Meanwhile checks use the last known total plus every
//! local byte since.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_proto::HostId;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::fleet::{Fleet, FleetConfig, UsageDelta, UsageStore};
use crate::metrics::Metrics;
use crate::quota::{ACCOUNT_ID_LEN, OverQuota, Period, PeriodSpan, Quota, human};

/// How often local usage is flushed to the store and the totals read back.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// How long a period's counter stays in Redis past the period's end (so a late flush or
/// `ferry-relay usage` right after midnight still finds it).
const KEEP_AFTER_END_SECS: i64 = 86_400;

/// Seconds since the Unix epoch now.
fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Whose account: a token's (by name) or a host's own (no name kept).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owner {
    Token(String),
    Host,
}

/// One account's usage in its current period, as this node knows it.
pub(crate) struct Account {
    id: [u8; ACCOUNT_ID_LEN],
    owner: Owner,
    period: Period,
    /// The start of the period the counts are for.
    start: AtomicI64,
    /// The account's total across the fleet at the last flush, plus the local bytes handed
    /// to a flush that has not been answered yet.
    settled: AtomicU64,
    /// Local bytes not yet handed to a flush.
    pending: AtomicU64,
    /// Whether the store has been asked for the account's total (always, in memory).
    known: AtomicBool,
}

impl Account {
    /// What this node knows the account has used this period.
    pub(crate) fn used(&self) -> u64 {
        self.settled.load(Ordering::Acquire).saturating_add(self.pending.load(Ordering::Acquire))
    }

    /// Counts `n` more bytes; what the account has used now.
    fn add(&self, n: u64) -> u64 {
        let pending = self.pending.fetch_add(n, Ordering::AcqRel).saturating_add(n);
        self.settled.load(Ordering::Acquire).saturating_add(pending)
    }

    /// Starts the period `now` is in, if it is a new one: nothing used in it yet.
    fn roll(&self, now: i64) -> PeriodSpan {
        let span = self.period.span_at(now);
        if self.start.swap(span.start, Ordering::AcqRel) != span.start {
            self.settled.store(0, Ordering::Release);
        }
        span
    }
}

/// What a session does with the bytes of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forward them.
    Carry,
    /// The quota is spent: end the session.
    End,
    /// The quota is spent: forward them at this rate (bits per second) from now on.
    Slow(u64),
}

/// A running session's share of its account: counts its bytes, says when to stop.
pub(crate) struct Meter {
    account: Arc<Account>,
    quota: Quota,
    /// Set once the session is ended for its quota, so both directions say why.
    ended: AtomicBool,
}

impl Meter {
    pub(crate) fn new(account: Arc<Account>, quota: Quota) -> Self {
        Self { account, quota, ended: AtomicBool::new(false) }
    }

    /// Counts a batch of `n` bytes the session took from one end.
    pub(crate) fn count(&self, n: u64) -> Verdict {
        if self.account.add(n) <= self.quota.bytes {
            return Verdict::Carry;
        }
        match self.quota.over {
            OverQuota::End => {
                self.ended.store(true, Ordering::Release);
                Verdict::End
            }
            OverQuota::Pace { rate_bits_per_sec } => Verdict::Slow(rate_bits_per_sec),
        }
    }

    /// Whether the session was ended for its quota.
    pub(crate) fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }
}

/// A flush handed to the store and not answered yet: sent again, unchanged, until it is.
struct Batch {
    seq: u64,
    entries: Vec<(Arc<Account>, PeriodSpan, u64)>,
}

impl Batch {
    fn deltas(&self) -> Vec<UsageDelta<'_>> {
        self.entries
            .iter()
            .map(|(account, span, delta)| UsageDelta {
                account: &account.id,
                period: &span.tag,
                expire_at: span.end + KEEP_AFTER_END_SECS,
                delta: *delta,
            })
            .collect()
    }
}

/// The flusher's bookkeeping: the last batch's sequence number and the batch not answered yet.
#[derive(Default)]
struct Flushing {
    seq: u64,
    in_flight: Option<Batch>,
}

/// The batch to send now: the unanswered one, unchanged, or else a new one with every
/// account's bytes since the last (zero too: the answer refreshes its total).
fn prepare(flushing: &mut Flushing, accounts: Vec<Arc<Account>>, now: i64) -> Option<&Batch> {
    if flushing.in_flight.is_none() {
        if accounts.is_empty() {
            return None;
        }
        flushing.seq += 1;
        let entries = accounts
            .into_iter()
            .map(|account| {
                let span = account.period.span_at(now);
                // Taken first, then added: a check in between sees a little less, never the
                // same bytes twice.
                let delta = account.pending.swap(0, Ordering::AcqRel);
                account.settled.fetch_add(delta, Ordering::AcqRel);
                (account, span, delta)
            })
            .collect();
        flushing.in_flight = Some(Batch { seq: flushing.seq, entries });
    }
    flushing.in_flight.as_ref()
}

/// Takes the store's answer to the batch in flight: the totals (and the batch is done), or
/// none (it failed, or its answer was lost: the batch is kept and sent again as it is).
fn settle(flushing: &mut Flushing, totals: Option<Vec<u64>>) {
    let Some(totals) = totals else { return };
    if let Some(batch) = flushing.in_flight.take() {
        for ((account, span, _), total) in batch.entries.iter().zip(totals) {
            // A batch of a period that has since ended says nothing about this one.
            if account.start.load(Ordering::Acquire) == span.start {
                account.settled.store(total, Ordering::Release);
                account.known.store(true, Ordering::Release);
            }
        }
    }
}

/// An account's place in the book: its hash, and the period it is counted over.
type AccountKey = ([u8; ACCOUNT_ID_LEN], Period);

/// This node's accounts and the flusher's state.
pub(crate) struct Quotas {
    /// Keys the account hashes.
    key: ring::hmac::Key,
    accounts: Mutex<HashMap<AccountKey, Arc<Account>>>,
    /// Where usage is shared; `None`: in memory, this node only.
    fleet: Option<Arc<Fleet>>,
    /// The flusher's unanswered batch and last sequence number (only the flusher takes it).
    flushing: tokio::sync::Mutex<Flushing>,
    metrics: Arc<Metrics>,
}

impl Quotas {
    /// The usage book of a node: shared through `fleet`'s Redis, or in memory.
    pub(crate) fn new(fleet: Option<Arc<Fleet>>, metrics: Arc<Metrics>) -> Self {
        let key = match &fleet {
            Some(fleet) => fleet.quota_key(),
            None => {
                // Only this process ever sees these hashes, so any key will do.
                let mut bytes = [0u8; 32];
                let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
                ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes)
            }
        };
        Self { key, accounts: Mutex::default(), fleet, flushing: tokio::sync::Mutex::default(), metrics }
    }

    /// The account `host` counts towards when it registered with the token called
    /// `token_name` (or none), counted over `period`.
    pub(crate) fn account(&self, host: &HostId, token_name: Option<&str>, period: Period) -> Arc<Account> {
        let (id, owner) = match token_name {
            Some(name) => (account_id(&self.key, AccountOf::Token(name)), Owner::Token(name.to_owned())),
            None => (account_id(&self.key, AccountOf::Host(host)), Owner::Host),
        };
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        accounts
            .entry((id, period))
            .or_insert_with(|| {
                Arc::new(Account {
                    id,
                    owner,
                    period,
                    start: AtomicI64::new(period.span_at(unix_now()).start),
                    settled: AtomicU64::new(0),
                    pending: AtomicU64::new(0),
                    known: AtomicBool::new(self.fleet.is_none()),
                })
            })
            .clone()
    }

    /// Whether `account` has room left under `quota` for a new session. An account this node
    /// has not asked Redis about yet is read first (once, bounded by Redis's timeout; if
    /// Redis does not answer, what this node knows decides).
    pub(crate) async fn has_room(&self, account: &Account, quota: &Quota) -> bool {
        if let (Some(fleet), false) = (&self.fleet, account.known.load(Ordering::Acquire)) {
            let span = account.roll(unix_now());
            match fleet.usage.total(&account.id, &span.tag).await {
                Ok(total) => {
                    account.settled.fetch_max(total, Ordering::AcqRel);
                }
                Err(e) => debug!(error = %e, "could not read an account's usage"),
            }
            // Asked once either way: with Redis away, the next sessions do not wait on it
            // again, and the flusher's next answer brings the total.
            account.known.store(true, Ordering::Release);
        }
        account.used() < quota.bytes
    }

    /// Flushes once a [`FLUSH_INTERVAL`] until `cancel`, then once more (so a node that
    /// stops hands over what its sessions carried).
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut every = tokio::time::interval(FLUSH_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = every.tick() => {}
            }
            self.flush().await;
        }
        self.flush().await;
    }

    /// One flush: hands the local counts to the store and takes the totals back.
    pub(crate) async fn flush(&self) {
        let now = unix_now();
        let mut flushing = self.flushing.lock().await;
        let accounts = self.accounts_in_use(now);
        let Some(fleet) = &self.fleet else {
            for account in accounts {
                let delta = account.pending.swap(0, Ordering::AcqRel);
                account.settled.fetch_add(delta, Ordering::AcqRel);
            }
            return;
        };
        let Some(batch) = prepare(&mut flushing, accounts, now) else { return };
        let deltas = batch.deltas();
        let answer = fleet.usage.add(batch.seq, &deltas).await;
        if let Err(e) = &answer {
            debug!(error = %e, "usage not flushed; kept for the next flush");
            self.metrics.quota_flush_failed();
        }
        settle(&mut flushing, answer.ok());
    }

    /// The accounts to flush, with those nothing needs any more dropped from the book.
    fn accounts_in_use(&self, now: i64) -> Vec<Arc<Account>> {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        let in_memory = self.fleet.is_none();
        accounts.retain(|_, account| {
            account.roll(now);
            // Held by a registered host or an unanswered batch, or holding counts not
            // flushed yet; in memory the book itself is the store, so it keeps this
            // period's counts.
            Arc::strong_count(account) > 1
                || account.pending.load(Ordering::Acquire) > 0
                || (in_memory && account.used() > 0)
        });
        accounts.values().cloned().collect()
    }

    /// What `/usage` answers: one line per account with usage this period on this node.
    pub(crate) fn report(&self) -> String {
        let now = unix_now();
        let accounts: Vec<Arc<Account>> =
            self.accounts.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        let mut lines: Vec<String> = accounts
            .iter()
            .map(|account| {
                let span = account.roll(now);
                usage_line(&account.owner, &account.id, account.used(), account.period, &span.tag)
            })
            .collect();
        lines.sort();
        let mut out = String::new();
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

/// One line of a usage report: `token alice: 1.2 MiB (1258291 bytes) in day 2026-12-01`.
fn usage_line(owner: &Owner, id: &[u8; ACCOUNT_ID_LEN], used: u64, period: Period, tag: &str) -> String {
    let who = match owner {
        Owner::Token(name) => format!("token {name}"),
        // The keyed hash only: the admin port shows no host id either.
        Owner::Host => format!("host #{}", data_encoding::HEXLOWER.encode(&id[..4])),
    };
    format!("{who}: {} ({used} bytes) in {} {tag} (UTC)", human(used), period.name())
}

/// What an account is of: a token (by name), or a host without one.
#[derive(Clone, Copy)]
enum AccountOf<'a> {
    Token(&'a str),
    Host(&'a HostId),
}

/// The keyed hash naming an account (a prefix keeps a token's and a host's apart).
fn account_id(key: &ring::hmac::Key, of: AccountOf<'_>) -> [u8; ACCOUNT_ID_LEN] {
    let mut ctx = ring::hmac::Context::with_key(key);
    match of {
        AccountOf::Token(name) => {
            ctx.update(b"token\0");
            ctx.update(name.as_bytes());
        }
        AccountOf::Host(host) => {
            ctx.update(b"host\0");
            ctx.update(host.as_bytes());
        }
    }
    let mut id = [0u8; ACCOUNT_ID_LEN];
    id.copy_from_slice(&ctx.sign().as_ref()[..ACCOUNT_ID_LEN]);
    id
}

/// A token whose usage `ferry-relay usage` reports, with its tier's quota.
#[derive(Clone, Debug)]
pub struct TokenQuota {
    /// The token's name (`[[access.token]] name`).
    pub name: String,
    /// Its tier's quota.
    pub quota: Quota,
}

/// The fleet's usage of each of `tokens` in the current period, read from Redis with the
/// fleet secret's hashes: one report line per token.
pub async fn fleet_usage(config: &FleetConfig, tokens: &[TokenQuota]) -> Result<String, crate::Error> {
    let key = config.secret.quota_key();
    let store = UsageStore::new(config)?;
    let now = unix_now();
    let mut out = String::new();
    for token in tokens {
        let id = account_id(&key, AccountOf::Token(&token.name));
        let span = token.quota.period.span_at(now);
        let used = store
            .total(&id, &span.tag)
            .await
            .map_err(|crate::fleet::DirectoryError::Redis(e)| crate::Error::FleetUnreachable(e))?;
        let line = usage_line(&Owner::Token(token.name.clone()), &id, used, token.quota.period, &span.tag);
        let _ = writeln!(out, "{line} of {}", token.quota);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::tests::at;

    fn quota(bytes: u64, over: OverQuota) -> Quota {
        Quota { bytes, period: Period::Day, over }
    }

    #[test]
    fn a_session_crossing_the_quota_ends_or_slows() {
        let quotas = Quotas::new(None, Arc::default());
        let host = ferry_proto::PublicKey([7; 32]);
        let account = quotas.account(&host, Some("alice"), Period::Day);
        let ending = Meter::new(account.clone(), quota(1000, OverQuota::End));
        assert_eq!(ending.count(600), Verdict::Carry);
        assert_eq!(ending.count(400), Verdict::Carry, "exactly the quota is still within it");
        assert!(!ending.ended());
        assert_eq!(ending.count(1), Verdict::End);
        assert!(ending.ended());
        let slowing = Meter::new(account.clone(), quota(1000, OverQuota::Pace { rate_bits_per_sec: 8000 }));
        assert_eq!(slowing.count(1), Verdict::Slow(8000));
        assert_eq!(account.used(), 1002);
        // Another host with the same token shares the account; without a token, a host has its own.
        assert!(Arc::ptr_eq(&account, &quotas.account(&ferry_proto::PublicKey([8; 32]), Some("alice"), Period::Day)));
        let own = quotas.account(&host, None, Period::Day);
        assert_eq!(own.used(), 0);
        assert_ne!(own.id, account.id);
    }

    #[tokio::test]
    async fn in_memory_flushes_keep_the_count_and_refuse_once_spent() {
        let quotas = Quotas::new(None, Arc::default());
        let host = ferry_proto::PublicKey([7; 32]);
        let account = quotas.account(&host, Some("alice"), Period::Day);
        let q = quota(1000, OverQuota::End);
        assert!(quotas.has_room(&account, &q).await);
        Meter::new(account.clone(), q).count(999);
        quotas.flush().await;
        assert_eq!((account.settled.load(Ordering::Acquire), account.pending.load(Ordering::Acquire)), (999, 0));
        assert!(quotas.has_room(&account, &q).await);
        Meter::new(account.clone(), q).count(1);
        assert!(!quotas.has_room(&account, &q).await, "nothing left before the flush either");
        let id = account.id;
        drop(account);
        quotas.flush().await;
        // No host holds the account any more; in memory its count is kept for the period.
        let report = quotas.report();
        assert!(report.contains("token alice: 1000 B (1000 bytes) in day "), "{report}");
        let again = quotas.account(&host, Some("alice"), Period::Day);
        assert_eq!((again.id, again.used()), (id, 1000));
    }

    #[test]
    fn a_new_period_starts_from_nothing() {
        let quotas = Quotas::new(None, Arc::default());
        let account = quotas.account(&ferry_proto::PublicKey([7; 32]), None, Period::Day);
        account.settled.store(500, Ordering::Release);
        account.start.store(at("2026-11-30T00:00:00Z"), Ordering::Release);
        account.roll(at("2026-12-01T00:00:01Z"));
        assert_eq!(account.used(), 0);
        account.settled.store(5, Ordering::Release);
        account.roll(at("2026-12-01T23:00:00Z"));
        assert_eq!(account.used(), 5, "the same period keeps its count");
        let report = quotas.report();
        assert!(report.starts_with("host #"), "a host's account shows its hash only: {report}");
    }

    /// What the Redis script does, in memory: a batch is applied only if its sequence number
    /// is past the last one applied; either way the totals come back.
    #[derive(Default)]
    struct FakeScript {
        applied: u64,
        counts: HashMap<String, u64>,
    }

    impl FakeScript {
        fn run(&mut self, seq: u64, deltas: &[UsageDelta<'_>]) -> Vec<u64> {
            let apply = seq > self.applied;
            self.applied = self.applied.max(seq);
            deltas
                .iter()
                .map(|d| {
                    let count = self.counts.entry(format!("{:?}:{}", d.account, d.period)).or_default();
                    if apply {
                        *count += d.delta;
                    }
                    *count
                })
                .collect()
        }
    }

    #[test]
    fn a_failed_or_unanswered_flush_is_sent_again_unchanged_and_counted_once() {
        let quotas = Quotas::new(None, Arc::default());
        let account = quotas.account(&ferry_proto::PublicKey([7; 32]), Some("alice"), Period::Day);
        let now = unix_now();
        let key = format!("{:?}:{}", account.id, Period::Day.span_at(now).tag);
        let mut redis = FakeScript::default();
        // Other nodes have counted 1000 bytes already.
        redis.counts.insert(key.clone(), 1000);
        let mut flushing = Flushing::default();
        let accounts = || vec![account.clone()];

        account.add(100);
        let batch = prepare(&mut flushing, accounts(), now).unwrap();
        assert_eq!((batch.seq, batch.entries[0].2), (1, 100));
        // Redis is down: nothing applied, nothing answered.
        settle(&mut flushing, None);
        assert_eq!(account.used(), 100, "the local view keeps the bytes");

        account.add(50);
        let batch = prepare(&mut flushing, accounts(), now).unwrap();
        assert_eq!((batch.seq, batch.entries[0].2), (1, 100), "the same batch again, the new bytes wait");
        // Applied, but the answer is lost on the way back.
        redis.run(batch.seq, &batch.deltas());
        settle(&mut flushing, None);
        assert_eq!(account.used(), 150);

        let batch = prepare(&mut flushing, accounts(), now).unwrap();
        assert_eq!(batch.seq, 1);
        let totals = redis.run(batch.seq, &batch.deltas());
        assert_eq!(totals, [1100], "a batch already applied is not applied twice");
        settle(&mut flushing, Some(totals));
        assert_eq!(account.used(), 1150, "the fleet's total, plus the bytes not flushed yet");

        let batch = prepare(&mut flushing, accounts(), now).unwrap();
        assert_eq!((batch.seq, batch.entries[0].2), (2, 50));
        let totals = redis.run(batch.seq, &batch.deltas());
        settle(&mut flushing, Some(totals));
        assert_eq!((account.used(), redis.counts[&key]), (1150, 1150), "every byte once");
        assert!(flushing.in_flight.is_none());
    }
}
