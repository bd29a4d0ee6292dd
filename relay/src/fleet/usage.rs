//! The fleet's byte counters on Redis, for quotas (`crate::quota` decides what to count).
//!
//! One counter per account and period, `ferry:quota:<account>:<period>` (a string holding
//! an integer), where `<account>` is the keyed hash of a token name or host (32 hex
//! characters) and `<period>` is `2026-12-01` or `2026-12`; it expires a day after its
//! period ends. A node adds its bytes once a flush with one script call for all its
//! accounts, and the call answers every account's total.
//!
//! **Counted once, whatever Redis does.** A node process numbers its flushes and sends a
//! failed one again, unchanged, until it gets an answer. The script (run atomically by
//! Redis) applies a flush only if its number is past the last one applied for this node
//! process, which it keeps in `ferry:quota:flushed:<node id>:<process>` (expires after a
//! week). So a flush whose answer was lost after Redis applied it — the case a plain
//! `INCRBY` cannot tell from one that failed before — is not applied again when it is
//! resent: the resend only reads the totals. A flush that errors before Redis ran it is
//! applied by the resend. A Redis that restarted without its data has lost the counters
//! and the marker together, and the resend counts the batch again there, as it should.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::directory::REDIS_TIMEOUT;
use super::{DirectoryError, FleetConfig};
use crate::quota::ACCOUNT_ID_LEN;

/// How long a node process's last-flush marker outlives its last flush: far longer than
/// any outage a resend waits through.
const MARKER_TTL_SECS: u64 = 7 * 86_400;

/// Adds a flush's deltas unless this node process's flush `seq` was applied already;
/// returns every counter's total. An account with nothing to add (in a flush only to bring
/// its total back) is only read: one command instead of two, and no counter made for it. KEYS: the marker, then the counters; ARGV: `seq`, the
/// marker's expiry, then each counter's delta and expiry (Unix seconds).
const ADD: &str = r"
local done = tonumber(redis.call('GET', KEYS[1]) or '0')
local seq = tonumber(ARGV[1])
local apply = seq > done
local totals = {}
for i = 2, #KEYS do
  if apply and ARGV[2 * i - 1] ~= '0' then
    totals[#totals + 1] = redis.call('INCRBY', KEYS[i], ARGV[2 * i - 1])
    redis.call('EXPIREAT', KEYS[i], ARGV[2 * i])
  else
    totals[#totals + 1] = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
end
if apply then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return totals
";

/// One account's bytes in one flush.
pub(crate) struct UsageDelta<'a> {
    /// The account's keyed hash.
    pub(crate) account: &'a [u8; ACCOUNT_ID_LEN],
    /// The period's tag.
    pub(crate) period: &'a str,
    /// When the counter may go (Unix seconds).
    pub(crate) expire_at: i64,
    /// Bytes to add.
    pub(crate) delta: u64,
}

/// The counters on the fleet's Redis.
pub(crate) struct UsageStore {
    /// Its own connection, so a flush never waits behind a directory lookup or the reverse.
    redis: ConnectionManager,
    /// This node process's last-flush marker.
    marker: String,
    script: redis::Script,
}

impl UsageStore {
    /// The counters on `config.redis_url`, connected lazily.
    pub(crate) fn new(config: &FleetConfig) -> Result<Self, crate::Error> {
        let client = redis::Client::open(config.redis_url.as_str()).map_err(crate::Error::FleetRedis)?;
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(REDIS_TIMEOUT);
        let redis = ConnectionManager::new_lazy_with_config(client, settings).map_err(crate::Error::FleetRedis)?;
        // A process of its own each start: its flush numbers start again at 1.
        let mut process = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut process);
        let marker = format!("ferry:quota:flushed:{}:{}", config.node_id, data_encoding::HEXLOWER.encode(&process));
        Ok(Self { redis, marker, script: redis::Script::new(ADD) })
    }

    /// Adds flush `seq` (unless applied already) and answers each counter's total.
    pub(crate) async fn add(&self, seq: u64, deltas: &[UsageDelta<'_>]) -> Result<Vec<u64>, DirectoryError> {
        let mut call = self.script.prepare_invoke();
        call.key(&self.marker);
        for delta in deltas {
            call.key(key(delta.account, delta.period));
        }
        call.arg(seq).arg(MARKER_TTL_SECS);
        for delta in deltas {
            call.arg(delta.delta).arg(delta.expire_at);
        }
        let mut redis = self.redis.clone();
        // Bounded by the connection's answer timeout (twice when a fresh Redis must be sent
        // the script first).
        Ok(call.invoke_async(&mut redis).await?)
    }

    /// One account's total in one period (0 if nothing was counted).
    pub(crate) async fn total(&self, account: &[u8; ACCOUNT_ID_LEN], period: &str) -> Result<u64, DirectoryError> {
        let mut redis = self.redis.clone();
        let total: Option<u64> = redis::cmd("GET").arg(key(account, period)).query_async(&mut redis).await?;
        Ok(total.unwrap_or(0))
    }
}

/// The counter of `account` in `period`.
fn key(account: &[u8; ACCOUNT_ID_LEN], period: &str) -> String {
    format!("ferry:quota:{}:{period}", data_encoding::HEXLOWER.encode(account))
}
