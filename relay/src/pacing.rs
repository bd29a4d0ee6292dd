//! Bandwidth pacing: a token bucket that delays a byte stream to a rate, never dropping bytes.
//!
//! A relay that only bounds its buffers still lets one session take the whole uplink; tiers
//! cap a session's rate instead. The pump asks the bucket before it forwards a chunk and
//! waits as long as the bucket says, so flow control pushes the slowdown back to the sender
//! and nothing is ever discarded.
//!
//! The bucket keeps its balance in nano-bytes (bytes × 10⁹) as an integer, so refilling for
//! `elapsed` nanoseconds at `rate` bytes per second is the exact product `elapsed × rate`:
//! no float drift accumulates over a long session, and waits are rounded up by at most
//! one nanosecond. A chunk larger than the burst is allowed (debt model): it waits for the
//! whole deficit, so big chunks are paced as exactly as small ones. The bucket stays
//! hand-written (the per-source connection rate uses governor) because governor's GCRA has
//! no debt: it refuses a request larger than its burst outright (`InsufficientCapacity`),
//! so pacing chunks of any size on it would mean splitting them.
//!
//! The arithmetic (`TokenBucket::ready_at`, `TokenBucket::consume`) takes `now` as an
//! argument, so it is tested with made-up instants; only `TokenBucket::take` touches the
//! clock.

use tokio::time::{Duration, Instant};

use crate::quota::Quota;

/// Burst a tier gets when its configuration names none: 256 KiB, a few round trips of a
/// fast link, so short exchanges are not slowed at all.
pub const DEFAULT_BURST_BYTES: u64 = 256 * 1024;

/// Nano-bytes per byte: the fixed-point scale of the bucket's balance.
const SCALE: i128 = 1_000_000_000;

/// Paces a byte stream to `rate_bytes_per_sec`, allowing bursts of up to `burst_bytes`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate_bytes_per_sec: u64,
    burst_bytes: u64,
    /// Balance in nano-bytes at `last`, at most `burst_bytes × SCALE`; never negative between calls.
    tokens: i128,
    /// When `tokens` was last brought up to date.
    last: Instant,
}

impl TokenBucket {
    /// A bucket that starts full, so the first `burst_bytes` go out at once.
    ///
    /// A rate of zero would stall forever, so it is taken as one byte per second.
    pub(crate) fn new(rate_bytes_per_sec: u64, burst_bytes: u64) -> Self {
        Self::new_at(rate_bytes_per_sec, burst_bytes, Instant::now())
    }

    fn new_at(rate_bytes_per_sec: u64, burst_bytes: u64, now: Instant) -> Self {
        Self {
            rate_bytes_per_sec: rate_bytes_per_sec.max(1),
            burst_bytes,
            tokens: i128::from(burst_bytes) * SCALE,
            last: now,
        }
    }

    /// Waits until `n` bytes may be sent, then takes them.
    ///
    /// `n` may exceed the burst: the call then waits for the whole deficit, so large chunks
    /// are still paced exactly. Cancel-safe: if the future is dropped while waiting, nothing
    /// has been taken.
    pub(crate) async fn take(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        let deadline = self.ready_at(n, Instant::now());
        tokio::time::sleep_until(deadline).await;
        self.consume(n, Instant::now());
    }

    /// Brings the balance up to `now` and says when `n` bytes will have been earned.
    fn ready_at(&mut self, n: u64, now: Instant) -> Instant {
        self.refill(now);
        let deficit = i128::from(n) * SCALE - self.tokens;
        if deficit <= 0 {
            return now;
        }
        let rate = i128::from(self.rate_bytes_per_sec);
        // Round up, so the bytes are fully earned by the deadline.
        let nanos = (deficit + rate - 1) / rate;
        now + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Takes `n` bytes at `now`, counting everything earned since the last update.
    ///
    /// What was earned while waiting is added before the cap applies, so a chunk larger than
    /// the burst uses all of it; only what is left over is capped at the burst.
    fn consume(&mut self, n: u64, now: Instant) {
        let earned = self.earned_since_last(now);
        self.tokens = (self.tokens.saturating_add(earned) - i128::from(n) * SCALE).min(self.cap());
        self.last = now.max(self.last);
    }

    fn refill(&mut self, now: Instant) {
        let earned = self.earned_since_last(now);
        self.tokens = self.tokens.saturating_add(earned).min(self.cap());
        self.last = now.max(self.last);
    }

    fn earned_since_last(&self, now: Instant) -> i128 {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        i128::try_from(elapsed).unwrap_or(i128::MAX).saturating_mul(i128::from(self.rate_bytes_per_sec))
    }

    fn cap(&self) -> i128 {
        i128::from(self.burst_bytes) * SCALE
    }
}

/// A named bandwidth tier; a rate of `None` means unlimited.
#[derive(Clone, Debug, PartialEq)]
pub struct Tier {
    /// The name operators use for the tier in configuration.
    pub name: String,
    /// Most bits per second a session of this tier may send each way; `None` is unlimited.
    pub rate_bits_per_sec: Option<u64>,
    /// Bytes a session may send at once before pacing starts ([`DEFAULT_BURST_BYTES`] by default).
    pub burst_bytes: u64,
    /// Bytes each account of the tier may carry per day or month, and what a running
    /// session gets once they are spent; `None`: no quota.
    pub quota: Option<Quota>,
}

impl Tier {
    /// The tier that never paces.
    pub fn unlimited() -> Self {
        Self { name: "unlimited".to_owned(), rate_bits_per_sec: None, burst_bytes: DEFAULT_BURST_BYTES, quota: None }
    }

    /// A fresh, full bucket for one session and direction, or `None` when the tier is unlimited.
    pub(crate) fn bucket(&self) -> Option<TokenBucket> {
        // Fewer than 8 bit/s rounds to one byte per second rather than to a stall.
        self.rate_bits_per_sec.map(|bits| TokenBucket::new((bits / 8).max(1), self.burst_bytes))
    }
}

/// A bandwidth rate that cannot be read; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRate(String);

/// Parses a rate such as `"2 Mbit/s"`, `"10Mbit/s"`, `"500 kbit/s"`, `"1.5 Gbit/s"` or
/// `"unlimited"` (case-insensitive; SI prefixes, 1000-based) into bits per second, `None`
/// meaning unlimited.
///
/// Rates are in bits because that is how links are sold; a rate of zero is refused because
/// it would stall every session (use `"unlimited"` to switch pacing off).
pub fn parse_rate(text: &str) -> Result<Option<u64>, BadRate> {
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    const EXPECTED: &str = "expected a rate such as \"10 Mbit/s\" (units bit/s, kbit/s, Mbit/s, Gbit/s, Tbit/s) \
                            or \"unlimited\"";
    let split = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(BadRate(format!("{text:?}: no number; {EXPECTED}")));
    }
    let unit = unit.trim_start().to_ascii_lowercase();
    let multiplier: u64 = match unit.as_str() {
        "bit/s" => 1,
        "kbit/s" => 1_000,
        "mbit/s" => 1_000_000,
        "gbit/s" => 1_000_000_000,
        "tbit/s" => 1_000_000_000_000,
        "" => return Err(BadRate(format!("{text:?}: no unit; {EXPECTED}"))),
        "b/s" | "kb/s" | "mb/s" | "gb/s" | "tb/s" | "bps" | "kbps" | "mbps" | "gbps" => {
            return Err(BadRate(format!("{text:?}: ambiguous unit {unit:?} (bits or bytes?); {EXPECTED}")));
        }
        _ => return Err(BadRate(format!("{text:?}: unknown unit {unit:?}; {EXPECTED}"))),
    };
    let bits = scaled_decimal(number, multiplier).map_err(|why| BadRate(format!("{text:?}: {why}; {EXPECTED}")))?;
    if bits == 0 {
        return Err(BadRate(format!(
            "{text:?}: a rate of zero would stall every session; use \"unlimited\" for no limit"
        )));
    }
    Ok(Some(bits))
}

/// `number × multiplier` for a decimal `number` (digits, at most one point), exactly.
fn scaled_decimal(number: &str, multiplier: u64) -> Result<u64, String> {
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
        return Err(format!("{number:?} is not a number"));
    }
    const TOO_BIG: &str = "the rate is too large";
    let whole_value: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| TOO_BIG.to_owned())? };
    let mut bits = whole_value.checked_mul(multiplier).ok_or_else(|| TOO_BIG.to_owned())?;
    // Each fractional digit is worth a tenth of the one before; all must land on whole bits.
    let mut place = multiplier;
    for digit in fraction.bytes() {
        let digit = u64::from(digit - b'0');
        if place % 10 != 0 {
            if digit != 0 {
                return Err(format!("{number:?} is finer than one bit per second"));
            }
            continue;
        }
        place /= 10;
        bits = bits.checked_add(digit * place).ok_or_else(|| TOO_BIG.to_owned())?;
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `total` bytes through `bucket` in `step`-byte chunks, advancing a made-up clock
    /// exactly as `take` would, and returns the clock when the last chunk went out.
    fn pace(bucket: &mut TokenBucket, start: Instant, total: u64, step: u64) -> Instant {
        let mut now = start;
        let mut sent = 0;
        while sent < total {
            let n = step.min(total - sent);
            now = bucket.ready_at(n, now);
            bucket.consume(n, now);
            sent += n;
        }
        now
    }

    #[test]
    fn paces_small_steps_to_the_exact_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new_at(1_000_000, 100_000, start);
        let end = pace(&mut bucket, start, 1_100_000, 10_000);
        // 100 000 bytes of burst are free; the other 1 000 000 take one second.
        assert_eq!(end - start, Duration::from_secs(1));
    }

    #[test]
    fn first_burst_is_immediate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new_at(1_000_000, 100_000, start);
        assert_eq!(pace(&mut bucket, start, 100_000, 10_000), start);
        // The next byte has to be earned.
        assert_eq!(bucket.ready_at(1_000, start) - start, MS);
    }

    #[test]
    fn take_larger_than_burst_waits_for_the_whole_deficit() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new_at(1_000_000, 100_000, start);
        let ready = bucket.ready_at(500_000, start);
        assert_eq!(ready - start, Duration::from_millis(400));
        bucket.consume(500_000, ready);
        // The debt is repaid exactly: nothing is left over and nothing is owed.
        assert_eq!(bucket.ready_at(1_000, ready) - ready, MS);
    }

    #[test]
    fn large_take_after_burst_spent_costs_its_full_size() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new_at(1_000_000, 100_000, start);
        bucket.consume(100_000, start);
        assert_eq!(bucket.ready_at(500_000, start) - start, Duration::from_millis(500));
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new_at(1_000_000, 100_000, start);
        bucket.consume(100_000, start);
        let later = start + Duration::from_secs(60);
        assert_eq!(pace(&mut bucket, later, 100_000, 10_000), later);
        assert_eq!(bucket.ready_at(10_000, later) - later, 10 * MS);
    }

    #[test]
    fn odd_rates_do_not_drift() {
        let start = Instant::now();
        // 3 bytes per second: each byte is 333.33… ms, rounded up per wait; the rounding is
        // credited back, so it never accumulates. The 1-byte burst is free.
        let mut bucket = TokenBucket::new_at(3, 1, start);
        let end = pace(&mut bucket, start, 3_001, 1);
        assert!(end - start >= Duration::from_secs(1_000));
        assert!(end - start <= Duration::from_secs(1_000) + Duration::from_nanos(1));
    }

    #[test]
    fn interrupted_wait_takes_nothing() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new_at(1_000_000, 100_000, start);
        bucket.consume(100_000, start);
        // A caller asks, then gives up (its `take` future is dropped) and asks again later.
        let _ = bucket.ready_at(50_000, start);
        let later = start + 20 * MS;
        assert_eq!(bucket.ready_at(50_000, later) - later, 30 * MS);
    }

    /// Asserts `elapsed` is `want` within a millisecond.
    fn assert_about(elapsed: Duration, want: Duration) {
        let error = elapsed.abs_diff(want);
        assert!(error <= MS, "took {elapsed:?}, wanted {want:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn take_paces_a_stream_to_the_rate_on_the_tokio_clock() {
        let mut bucket = TokenBucket::new(1_000_000, 100_000);
        let start = Instant::now();
        for _ in 0..10 {
            bucket.take(10_000).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the first burst is immediate");
        for _ in 0..100 {
            bucket.take(10_000).await;
        }
        assert_about(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn take_larger_than_burst_waits_for_the_deficit_on_the_tokio_clock() {
        let mut bucket = TokenBucket::new(1_000_000, 100_000);
        let start = Instant::now();
        bucket.take(500_000).await;
        assert_about(start.elapsed(), Duration::from_millis(400));
        let after = Instant::now();
        bucket.take(500_000).await;
        assert_about(after.elapsed(), Duration::from_millis(500));
        bucket.take(0).await;
        assert_about(after.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_take_charges_nothing() {
        let mut bucket = TokenBucket::new(1_000_000, 100_000);
        bucket.take(100_000).await;
        let start = Instant::now();
        let gave_up = tokio::time::timeout(100 * MS, bucket.take(1_000_000)).await;
        assert!(gave_up.is_err());
        // The 100 ms waited earned 100 000 bytes, and the abandoned take used none of them.
        bucket.take(100_000).await;
        assert_about(start.elapsed(), 100 * MS);
    }

    #[test]
    fn tiers_make_buckets_in_bytes() {
        assert!(Tier::unlimited().bucket().is_none());
        assert_eq!(Tier::unlimited().burst_bytes, 256 * 1024);
        let tier = Tier { name: "basic".into(), rate_bits_per_sec: Some(2_000_000), burst_bytes: 4096, quota: None };
        let bucket = tier.bucket().expect("a limited tier has a bucket");
        assert_eq!(bucket.rate_bytes_per_sec, 250_000);
        assert_eq!(bucket.burst_bytes, 4096);
    }

    #[test]
    fn parses_rates() {
        let cases: &[(&str, Option<u64>)] = &[
            ("2 Mbit/s", Some(2_000_000)),
            ("10Mbit/s", Some(10_000_000)),
            ("500 kbit/s", Some(500_000)),
            ("1 Gbit/s", Some(1_000_000_000)),
            ("1 gbit/S", Some(1_000_000_000)),
            ("  1.5 MBIT/S ", Some(1_500_000)),
            (".5 kbit/s", Some(500)),
            ("64 bit/s", Some(64)),
            ("2 Tbit/s", Some(2_000_000_000_000)),
            ("unlimited", None),
            ("UNLIMITED", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_rate(text), Ok(*want), "{text}");
        }
    }

    #[test]
    fn rejects_bad_rates_clearly() {
        let cases: &[(&str, &str)] = &[
            ("", "no number"),
            ("fast", "no number"),
            ("10", "no unit"),
            ("10 Mbit", "unknown unit"),
            ("10 furlongs", "unknown unit"),
            ("10 MB/s", "ambiguous unit"),
            ("10 mbps", "ambiguous unit"),
            ("0 Mbit/s", "zero"),
            ("0.0 kbit/s", "zero"),
            ("1.2.3 Mbit/s", "not a number"),
            (". Mbit/s", "not a number"),
            ("1.5 bit/s", "finer than one bit"),
            ("-1 Mbit/s", "no number"),
            ("99999999999999999999 bit/s", "too large"),
            ("20000000 Tbit/s", "too large"),
        ];
        for (text, want) in cases {
            let error = parse_rate(text).expect_err(text).to_string();
            assert!(error.contains(want), "{text:?} gave {error:?}, wanted it to mention {want:?}");
        }
    }
}
