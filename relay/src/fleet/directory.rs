//! The fleet's directory on Redis: which nodes a host is registered at.
//!
//! One sorted set per host, `ferry:host:<hash>`, where `<hash>` is the first 16 bytes (hex)
//! of an HMAC of the host id under a key derived from the fleet secret: whoever reads the
//! database cannot tell which host an entry is for, nor test a host id they know. Its
//! members are node ids; each one's score is when that node's claim expires (Unix
//! milliseconds). A node claims its hosts when they register and again on every
//! heartbeat (`ZADD` and `PEXPIRE` in one transaction per batch), removes its claim when a
//! host leaves (`ZREM`: only its own member, so a host that moved to another node keeps
//! that node's claim), and a lookup reads the members whose claims have not expired,
//! freshest first, with their expiry (the fleet ranks them by it, and probes the first
//! when there is a choice: `Fleet::confirm`). A node that dies simply stops renewing: a node that still has the host
//! renews its claim within a third of a presence period, and from then on its claim is
//! the freshest, so lookups prefer it; the dead node's claim falls out of lookups one
//! presence period after its last renewal and is swept by the next renewal of another
//! node, and the key itself expires once no node renews it.
//!
//! Every call is bounded: the connection (redis-rs's `ConnectionManager`, which reconnects
//! by itself) times out connecting and answering after [`REDIS_TIMEOUT`], so a Redis that
//! is down or slow costs a lookup at most that long.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_proto::HostId;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::FleetConfig;

/// Longest wait for Redis to connect or answer.
pub(crate) const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// Hosts claimed per Redis transaction in a heartbeat.
const BATCH: usize = 1_000;

/// Why the directory could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// Redis refused, failed or did not answer in time. Its own words only: redis-rs's can
    /// name the server's address, and the relay's log holds no address.
    #[error("the fleet directory (Redis) did not answer")]
    Redis(#[from] redis::RedisError),
}

pub(crate) struct Directory {
    redis: ConnectionManager,
    node_id: String,
    key: ring::hmac::Key,
    ttl_ms: u64,
}

impl Directory {
    /// A directory on `config.redis_url`, connected lazily.
    pub(crate) fn new(config: &FleetConfig) -> Result<Self, crate::Error> {
        let client = redis::Client::open(config.redis_url.as_str()).map_err(crate::Error::FleetRedis)?;
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(REDIS_TIMEOUT);
        let redis = ConnectionManager::new_lazy_with_config(client, settings).map_err(crate::Error::FleetRedis)?;
        Ok(Self {
            redis,
            node_id: config.node_id.clone(),
            key: config.secret.hmac_key(b"ferry fleet directory v1"),
            ttl_ms: u64::try_from(config.presence_ttl.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// The Redis key for `host`.
    fn key_of(&self, host: &HostId) -> String {
        let tag = ring::hmac::sign(&self.key, host.as_bytes());
        format!("ferry:host:{}", data_encoding::HEXLOWER.encode(&tag.as_ref()[..16]))
    }

    /// Claims `hosts` for this node for one presence period; with no host, checks that
    /// Redis answers (so a node with no host of its own still knows, and keeps its
    /// connection warm, for the lookups it makes for its clients).
    pub(crate) async fn announce(&self, hosts: &[HostId]) -> Result<(), DirectoryError> {
        if hosts.is_empty() {
            let mut redis = self.redis.clone();
            redis::cmd("PING").query_async::<()>(&mut redis).await?;
            return Ok(());
        }
        let now = now_ms();
        let expires = now.saturating_add(self.ttl_ms);
        for batch in hosts.chunks(BATCH) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for host in batch {
                let key = self.key_of(host);
                // The key outlives the claim a little, so a lookup never finds it gone while
                // a live claim is due.
                pipe.zadd(&key, &self.node_id, expires)
                    .ignore()
                    .pexpire(&key, i64::try_from(2 * self.ttl_ms).unwrap_or(i64::MAX))
                    .ignore()
                    // Claims of nodes that stopped renewing (died) are swept by the others.
                    .zrembyscore(&key, "-inf", format!("({now}"))
                    .ignore();
            }
            let mut redis = self.redis.clone();
            pipe.query_async::<()>(&mut redis).await?;
        }
        Ok(())
    }

    /// Removes this node's claim on `host`.
    pub(crate) async fn withdraw(&self, host: &HostId) -> Result<(), DirectoryError> {
        let mut redis = self.redis.clone();
        redis.zrem::<_, _, ()>(self.key_of(host), &self.node_id).await?;
        Ok(())
    }

    /// The nodes with a live claim on `host`, freshest first, each with when its claim
    /// expires (Unix ms). Asked twice when the first try finds the connection broken but
    /// not slow (Redis restarted: the connection manager reconnects on that failure, and
    /// the second try gets the answer).
    pub(crate) async fn locate(&self, host: &HostId) -> Result<Vec<(String, u64)>, DirectoryError> {
        let key = self.key_of(host);
        let mut redis = self.redis.clone();
        let claims: Vec<(String, f64)> = match redis.zrevrangebyscore_withscores(&key, "+inf", now_ms()).await {
            Err(e) if !e.is_timeout() && (e.is_connection_dropped() || e.is_io_error()) => {
                redis.zrevrangebyscore_withscores(&key, "+inf", now_ms()).await?
            }
            answer => answer?,
        };
        // Scores are Unix milliseconds this code wrote: whole numbers far below 2^53, so the
        // conversion is exact (a negative or odd score from elsewhere saturates harmlessly).
        Ok(claims.into_iter().map(|(node, expires)| (node, expires as u64)).collect())
    }
}

/// Milliseconds since the Unix epoch (nodes' clocks are assumed to agree to well within a
/// presence period, as NTP keeps them).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
