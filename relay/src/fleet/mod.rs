//! A relay fleet: nodes that find each other's hosts through a shared directory on Redis.
//!
//! A host registers at one node (or two); a client may enter the fleet at any node. When
//! a `Connect` names a host that is not registered here, the node asks the directory
//! which node has it and then, by the fleet's [`FleetMode`]:
//! - **redirect**: answers `Redirect { node }` with that node's address; the client dials it
//!   (checking it exactly as it checked this node: the fleet's nodes share one certificate)
//!   and asks again. Later sessions of that client go to the owning node directly, so only
//!   the first pays the detour, and no node carries another's bytes. The default.
//! - **forward**: for clients that can reach only one load-balanced address, the node opens
//!   a stream to the owning node over a link between the two (one QUIC connection per
//!   pair, `links`), sends `Forward { host_id, proof }` on it and splices the client's
//!   stream to it. Every byte crosses two nodes; the end-to-end records stay sealed in
//!   both.
//!
//! **What Redis holds** (`directory`): for each registered host, a sorted set named by a
//! keyed hash of its host id (HMAC with the fleet secret, so a Redis dump cannot be matched
//! against known host ids) whose members are the ids of the nodes it is registered at,
//! scored by when each node's claim expires. No addresses (nodes' addresses are in every
//! node's own config), no keys, no session records.
//!
//! **Redis trouble is not an outage.** The directory is consulted only for hosts that are
//! not registered here: local registrations and running sessions never wait on it, and a
//! node starts whether Redis is up or not. While Redis cannot be reached, cross-node
//! connects are refused as `FleetUnavailable` (the client is told why),
//! `/healthz` says `degraded`, and the heartbeat that re-announces every local host
//! restores the directory by itself once Redis is back.
//!
//! The session side of both (a `Connect` for a host that is not here) is the relay's
//! `elsewhere` module; this module owns the membership: directory, links, health.
//!
//! **Byte counters** (`usage`): for quotas (`crate::quota`), one counter per account and
//! period, named by a keyed hash of the token name or host; added to by a script that
//! applies each flush once.
//!
//! **Node links** (`links`) are authenticated both ways: the dialling node accepts only a
//! node presenting the same certificate it serves itself, and each forwarded stream carries
//! an HMAC of the fleet secret over the link's TLS exporter and the host id, which the
//! receiving node checks before it treats the stream as a session.

mod directory;
pub mod file;
mod links;
mod usage;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ferry_proto::{EXPORTER_LEN, FORWARD_PROOF_LEN, HostId};
use tokio_util::sync::CancellationToken;

pub(crate) use directory::DirectoryError;
pub(crate) use usage::{UsageDelta, UsageStore};

use crate::TlsIdentity;
use crate::budget::HostBuffers;
use crate::pacing::Tier;

/// How long a node's claim on a host lasts without a heartbeat.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(10);

/// Longest wait for another node to answer a probe over its link (dialled if need be) when
/// a host has claims at several nodes: nodes of one fleet are close (a data centre's round
/// trip is a millisecond or two, a new link's handshake two of them), and a client's session
/// waits for this, so a node that misses it is passed over rather than waited for.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// How a node sends a client to a host registered at another node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FleetMode {
    /// Tell the client the owning node's address (nodes are individually reachable).
    #[default]
    Redirect,
    /// Carry the session to the owning node over a link between the nodes (clients see
    /// one load-balanced address).
    Forward,
}

/// The fleet secret: keys the host-id hashes in Redis and authenticates nodes to each
/// other. Never printed.
#[derive(Clone)]
pub struct FleetSecret(Vec<u8>);

/// The fewest bytes a fleet secret may have.
pub const MIN_SECRET_LEN: usize = 32;

impl FleetSecret {
    /// `bytes` as the secret, if long enough.
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() >= MIN_SECRET_LEN).then_some(Self(bytes))
    }

    fn hmac_key(&self, purpose: &[u8]) -> ring::hmac::Key {
        // One key per purpose, so a hash made for one job is never valid for the other.
        let base = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        let derived = ring::hmac::sign(&base, purpose);
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref())
    }

    /// The key of the quota accounts' hashes (`crate::quota`).
    pub(crate) fn quota_key(&self) -> ring::hmac::Key {
        self.hmac_key(b"ferry fleet quota account v1")
    }
}

impl std::fmt::Debug for FleetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetSecret(..)")
    }
}

/// This node's place in a fleet: `[fleet]` in the config file.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// The Redis (or Valkey) the fleet shares, `redis://host:port/db`.
    pub redis_url: String,
    /// This node's id (a key of `nodes`).
    pub node_id: String,
    /// The fleet secret.
    pub secret: FleetSecret,
    /// How clients are sent to hosts at other nodes.
    pub mode: FleetMode,
    /// Every node of the fleet: id → the address clients (redirect) or nodes (forward) dial.
    pub nodes: BTreeMap<String, String>,
    /// How long a node's claim on a host lasts without a heartbeat (heartbeats come three
    /// times per period).
    pub presence_ttl: Duration,
}

/// A running node's fleet membership: the directory, the links to other nodes, health.
pub(crate) struct Fleet {
    config: FleetConfig,
    directory: directory::Directory,
    pub(crate) links: links::Links,
    /// The byte counters of the quotas.
    pub(crate) usage: UsageStore,
    /// Cleared when a directory operation fails, set when one succeeds.
    reachable: AtomicBool,
    /// Keys the `Forward` proofs.
    forward_key: ring::hmac::Key,
    /// Forwarded sessions are paced by the owning node, not here.
    pub(crate) unpaced: Tier,
    /// What the sessions forwarded from here hold of this node's buffer budget, per host
    /// (their fair share, as for local hosts); emptied of unused entries on each heartbeat.
    forwarded: Mutex<std::collections::HashMap<HostId, Arc<HostBuffers>>>,
    /// Nodes whose link did not answer a probe ([`Fleet::confirm`]), and since when.
    suspects: Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl Fleet {
    /// Joins the fleet. No connection is made yet: Redis is reached lazily, so the node
    /// starts whether Redis is up or not. [`Fleet::heartbeat`] must then run.
    pub(crate) fn new(
        config: FleetConfig,
        identity: &TlsIdentity,
        stream_window: u64,
    ) -> Result<Arc<Self>, crate::Error> {
        let directory = directory::Directory::new(&config)?;
        let links = links::Links::new(identity, stream_window)?;
        let usage = UsageStore::new(&config)?;
        let forward_key = config.secret.hmac_key(b"ferry fleet forward v1");
        Ok(Arc::new(Self {
            config,
            directory,
            links,
            usage,
            reachable: AtomicBool::new(true),
            forward_key,
            unpaced: Tier::unlimited(),
            forwarded: Mutex::default(),
            suspects: Mutex::default(),
        }))
    }

    /// The fair-share account of sessions forwarded from here to `host`.
    pub(crate) fn forwarded_share(&self, host: &HostId) -> Arc<HostBuffers> {
        let mut forwarded = self.forwarded.lock().unwrap_or_else(PoisonError::into_inner);
        forwarded.entry(*host).or_default().clone()
    }

    /// Whether the directory answered the last time it was asked.
    pub(crate) fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    fn note<T, E>(&self, result: Result<T, E>) -> Result<T, E> {
        self.reachable.store(result.is_ok(), Ordering::Relaxed);
        result
    }

    /// Records (in the background) that `host` is registered here.
    pub(crate) fn announce(self: &Arc<Self>, host: HostId) {
        let fleet = self.clone();
        tokio::spawn(async move {
            let _ = fleet.note(fleet.directory.announce(&[host]).await);
        });
    }

    /// Removes (in the background) this node's claim on `host`, if it is still this node's.
    pub(crate) fn withdraw(self: &Arc<Self>, host: HostId) {
        let fleet = self.clone();
        tokio::spawn(async move {
            let _ = fleet.note(fleet.directory.withdraw(&host).await);
        });
    }

    /// Re-announces every local host three times per presence period, until `cancel`.
    /// `local_hosts` says which hosts are registered here now.
    pub(crate) async fn heartbeat(self: Arc<Self>, local_hosts: impl Fn() -> Vec<HostId>, cancel: CancellationToken) {
        let mut every = tokio::time::interval(self.config.presence_ttl / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = every.tick() => {}
            }
            let hosts = local_hosts();
            let _ = self.note(self.directory.announce(&hosts).await);
            // Accounts no session holds any more.
            self.forwarded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, share| Arc::strong_count(share) > 1);
        }
    }

    /// Where `host` is registered, other than here: the nodes (id, address) with a live
    /// claim, best first ([`rank`]: claims renewed within the last two heartbeats before
    /// older ones, nodes that failed a probe lately last, freshest first within each);
    /// empty if no other node has it. Nodes this node's config does not list are skipped
    /// (a node of another fleet config, or a typo there).
    pub(crate) async fn locate(&self, host: &HostId) -> Result<Vec<(String, String)>, DirectoryError> {
        let claims = self.note(self.directory.locate(host).await)?;
        let claims: Vec<(String, u64)> = claims
            .into_iter()
            .filter(|(id, _)| *id != self.config.node_id && self.config.nodes.contains_key(id))
            .collect();
        let suspects = self.suspects();
        let ranked = rank(claims, directory::now_ms(), self.heartbeat_ms(), |id| suspects.contains(id));
        Ok(ranked
            .into_iter()
            .filter_map(|id| self.config.nodes.get_key_value(&id))
            .map(|(id, addr)| (id.clone(), addr.clone()))
            .collect())
    }

    /// `nodes` (as [`Fleet::locate`] ranked them) with the first one that answers a probe
    /// over its node link first. Only when there is a choice: a claim's age cannot tell a
    /// node that died a moment ago from a live one (both renewed within the last
    /// heartbeat), a probe can. Each node but the last gets [`PROBE_TIMEOUT`]; one that
    /// does not answer is suspected (ranked last for a presence period, so only the first
    /// session after a node's death pays the probe) and its link is dropped. If none
    /// answers, the order stays as it was (the nodes may not reach each other at the
    /// addresses clients use; the client then finds out itself).
    pub(crate) async fn confirm(&self, mut nodes: Vec<(String, String)>) -> Vec<(String, String)> {
        let mut unanswered = Vec::new();
        while nodes.len() > 1 {
            let (id, addr) = &nodes[0];
            if self.links.answers(id, addr, PROBE_TIMEOUT).await {
                break;
            }
            // Once per node death and entry node (it is suspected from now on); no id.
            tracing::info!("a node claiming a host did not answer a probe; trying the next");
            self.links.forget(id).await;
            self.suspect(id.clone());
            unanswered.push(nodes.remove(0));
        }
        nodes.extend(unanswered);
        nodes
    }

    fn heartbeat_ms(&self) -> u64 {
        u64::try_from((self.config.presence_ttl / 3).as_millis()).unwrap_or(u64::MAX)
    }

    /// The nodes suspected now (a failed probe less than a presence period ago).
    fn suspects(&self) -> std::collections::HashSet<String> {
        let mut suspects = self.suspects.lock().unwrap_or_else(PoisonError::into_inner);
        let ttl = self.config.presence_ttl;
        suspects.retain(|_, since| since.elapsed() < ttl);
        suspects.keys().cloned().collect()
    }

    fn suspect(&self, id: String) {
        let mut suspects = self.suspects.lock().unwrap_or_else(PoisonError::into_inner);
        suspects.insert(id, std::time::Instant::now());
    }

    /// The proof a `Forward` for `host` carries on the link whose exporter is `exporter`.
    pub(crate) fn forward_proof(&self, exporter: &[u8; EXPORTER_LEN], host: &HostId) -> [u8; FORWARD_PROOF_LEN] {
        let mut ctx = ring::hmac::Context::with_key(&self.forward_key);
        ctx.update(exporter);
        ctx.update(host.as_bytes());
        let mut proof = [0u8; FORWARD_PROOF_LEN];
        proof.copy_from_slice(ctx.sign().as_ref());
        proof
    }

    /// Whether `proof` is this fleet's for `host` on the link with `exporter`.
    pub(crate) fn verify_forward(&self, exporter: &[u8; EXPORTER_LEN], host: &HostId, proof: &[u8]) -> bool {
        let mut message = Vec::with_capacity(EXPORTER_LEN + 32);
        message.extend_from_slice(exporter);
        message.extend_from_slice(host.as_bytes());
        ring::hmac::verify(&self.forward_key, &message, proof).is_ok()
    }

    pub(crate) fn mode(&self) -> FleetMode {
        self.config.mode
    }

    /// The key of the quota accounts' hashes.
    pub(crate) fn quota_key(&self) -> ring::hmac::Key {
        self.config.secret.quota_key()
    }
}

/// Orders claims (node id, expiry in Unix ms) for trying: those renewed within the last two
/// heartbeats of `now` (a live node renews every heartbeat) and not `suspected` first, then
/// the rest; freshest first within each group. Stale claims are kept, last: a host's only
/// claims may be old while its node's heartbeat waits on a slow Redis.
fn rank(mut claims: Vec<(String, u64)>, now: u64, heartbeat_ms: u64, suspected: impl Fn(&str) -> bool) -> Vec<String> {
    // Renewed at `expiry - ttl` = `expiry - 3 heartbeats`: within two heartbeats of now
    // when the claim still has more than one heartbeat to live.
    let fresh = |expires: u64| expires > now.saturating_add(heartbeat_ms);
    claims.sort_by_key(|(id, expires)| (!fresh(*expires) || suspected(id), std::cmp::Reverse(*expires)));
    claims.into_iter().map(|(id, _)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::rank;

    fn claims(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|(id, at)| ((*id).to_owned(), *at)).collect()
    }

    #[test]
    fn fresh_claims_come_first_freshest_first() {
        // Heartbeat 1 s, TTL 3 s, now 10 s: a claim expiring after 11 s was renewed
        // within two heartbeats.
        let ranked = rank(claims(&[("a", 12_000), ("b", 12_900), ("c", 10_500)]), 10_000, 1_000, |_| false);
        assert_eq!(ranked, ["b", "a", "c"]);
    }

    #[test]
    fn a_stale_claim_goes_last_even_when_alone_first() {
        let ranked = rank(claims(&[("old", 10_900), ("new", 11_100)]), 10_000, 1_000, |_| false);
        assert_eq!(ranked, ["new", "old"]);
        assert_eq!(rank(claims(&[("old", 10_900)]), 10_000, 1_000, |_| false), ["old"]);
    }

    #[test]
    fn a_suspected_node_goes_last() {
        let ranked = rank(claims(&[("dead", 12_950), ("live", 12_100)]), 10_000, 1_000, |id| id == "dead");
        assert_eq!(ranked, ["live", "dead"]);
    }
}
