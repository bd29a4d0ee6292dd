//! Which hosts are registered here: host id → how to reach the host.
//!
//! A DashMap so lookups from many client sessions never contend on one lock, and no
//! guard is ever held across an `.await` (callers get a cloned, cheap handle). Each
//! registration gets a generation number, so when a host re-registers (say, after a
//! network change) the old connection's cleanup cannot remove the new entry.
//!
//! `max_hosts` holds under concurrency: a registration takes a [`HostPlace`] when it is
//! admitted, before its proof, and the place becomes the registry entry's if the proof
//! verifies or is given back if not. Places are counted in one atomic, so a burst of
//! concurrent registrations can never pass the cap between a check and an insert. And one
//! QUIC connection carries one registration at a time ([`ConnectionClaim`]), so a single
//! connection (one rate-limit token) cannot register hosts by the thousand.
//!
//! Hosts on TCP get their session streams differently from QUIC hosts: the relay cannot
//! open a stream towards them, so it announces the session on their control connection
//! and waits for the host to dial back with `Attach` (see `attach.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::{DashMap, DashSet};
use ferry_link::ConnectionWindow;
use ferry_proto::HostId;
use ferry_proto::codes::CLOSE_REPLACED;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::budget::HostBuffers;
use crate::limits::CappedCount;
use crate::pacing::Tier;
use crate::quota_usage::Account;

/// How the relay reaches a registered host.
#[derive(Clone)]
pub(crate) enum HostLink {
    /// Open a bi-stream on the host's QUIC connection (its receive window widened by one
    /// buffer per session).
    Quic(Arc<ConnectionWindow>),
    /// Ask the host's control task to send `Incoming { session }`; the host attaches.
    Tcp(mpsc::Sender<u64>),
}

/// What a session needs to know about its host.
#[derive(Clone)]
pub(crate) struct HostHandle {
    pub(crate) link: HostLink,
    /// The host's bandwidth tier, fixed at registration.
    pub(crate) tier: Arc<Tier>,
    /// The host's running sessions, for the per-host limit.
    pub(crate) sessions: Arc<CappedCount>,
    /// What the host's sessions hold of the buffer budget, for its fair share.
    pub(crate) buffers: Arc<HostBuffers>,
    /// The account its sessions' bytes count towards, when its tier has a quota.
    pub(crate) account: Option<Arc<Account>>,
}

impl HostLink {
    /// The host's QUIC connection window, if it is on QUIC.
    pub(crate) fn window(&self) -> Option<&Arc<ConnectionWindow>> {
        match self {
            Self::Quic(window) => Some(window),
            Self::Tcp(_) => None,
        }
    }
}

struct Entry {
    handle: HostHandle,
    generation: u64,
    /// The entry's place under `max_hosts`; given back when the entry goes.
    _place: HostPlace,
    /// Cancelled when a newer registration replaces this one; the host's control task
    /// watches it and ends.
    replaced: CancellationToken,
}

/// One registered or registering host's place under `max_hosts`; given back when dropped.
pub(crate) struct HostPlace(Arc<AtomicUsize>);

impl Drop for HostPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A QUIC connection's one registration; the connection may carry another once dropped.
pub(crate) struct ConnectionClaim<'a> {
    claimed: &'a DashSet<usize>,
    connection: usize,
}

impl Drop for ConnectionClaim<'_> {
    fn drop(&mut self) {
        self.claimed.remove(&self.connection);
    }
}

pub(crate) struct Registry {
    hosts: DashMap<HostId, Entry>,
    /// Registered hosts plus registrations under way: what `max_hosts` caps.
    places: Arc<AtomicUsize>,
    /// QUIC connections (by `stable_id`) that carry a registration now.
    claimed: DashSet<usize>,
    next_generation: AtomicU64,
    registrations: watch::Sender<u64>,
    /// How many hosts are registered, published on every change.
    count: watch::Sender<usize>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self {
            hosts: DashMap::new(),
            places: Arc::default(),
            claimed: DashSet::new(),
            next_generation: AtomicU64::new(1),
            registrations: watch::Sender::new(0),
            count: watch::Sender::new(0),
        }
    }

    /// A place for a registration of `id`, unless `max` hosts are registered or
    /// registering. A host already registered may always register again (it replaces
    /// itself, so the number of hosts does not grow); its new place is taken all the same,
    /// so it holds until the old entry is gone.
    pub(crate) fn reserve(&self, id: &HostId, max: usize) -> Option<HostPlace> {
        let under_cap =
            self.places.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok();
        if !under_cap {
            if !self.hosts.contains_key(id) {
                return None;
            }
            self.places.fetch_add(1, Ordering::AcqRel);
        }
        Some(HostPlace(self.places.clone()))
    }

    /// Marks QUIC connection `connection` (its `stable_id`) as carrying a registration,
    /// unless it already carries one.
    pub(crate) fn claim_connection(&self, connection: usize) -> Option<ConnectionClaim<'_>> {
        self.claimed.insert(connection).then_some(ConnectionClaim { claimed: &self.claimed, connection })
    }

    /// Registers `link` for `id` in `place`, closing any registration it replaces.
    /// Returns the generation to pass to [`Registry::unregister`].
    pub(crate) fn register(
        &self,
        id: HostId,
        handle: HostHandle,
        place: HostPlace,
        replaced: CancellationToken,
    ) -> u64 {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = self.hosts.insert(id, Entry { handle, generation, _place: place, replaced }) {
            old.replaced.cancel();
            if let HostLink::Quic(window) = old.handle.link {
                window.connection().close(CLOSE_REPLACED.into(), b"replaced by a newer registration");
            }
        }
        self.registrations.send_modify(|n| *n += 1);
        self.publish_count();
        generation
    }

    /// Removes `id` if it still belongs to `generation`; whether it did (a newer
    /// registration of the host stays).
    pub(crate) fn unregister(&self, id: &HostId, generation: u64) -> bool {
        let removed = self.hosts.remove_if(id, |_, entry| entry.generation == generation).is_some();
        if removed {
            self.publish_count();
        }
        removed
    }

    /// The count is read under the watch's lock, so concurrent changes publish in order
    /// and the last one published is the map's size after the last change.
    fn publish_count(&self) {
        self.count.send_if_modified(|n| {
            let now = self.hosts.len();
            std::mem::replace(n, now) != now
        });
    }

    /// How to reach host `id`, if registered.
    pub(crate) fn lookup(&self, id: &HostId) -> Option<HostHandle> {
        self.hosts.get(id).map(|entry| entry.handle.clone())
    }

    /// The ids of the hosts registered now (for the fleet's heartbeat).
    pub(crate) fn host_ids(&self) -> Vec<HostId> {
        self.hosts.iter().map(|entry| *entry.key()).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.hosts.len()
    }

    /// A counter that goes up on every successful registration.
    pub(crate) fn watch_registrations(&self) -> watch::Receiver<u64> {
        self.registrations.subscribe()
    }

    /// The number of registered hosts, as it changes.
    pub(crate) fn watch_count(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::PublicKey;

    #[test]
    fn places_cap_registrations_under_way_and_follow_the_entries() {
        let registry = Registry::new();
        let (a, b, c) = (PublicKey([1; 32]), PublicKey([2; 32]), PublicKey([3; 32]));
        let pa = registry.reserve(&a, 2).unwrap();
        let pb = registry.reserve(&b, 2).unwrap();
        assert!(registry.reserve(&c, 2).is_none(), "two registrations under way fill a cap of 2");
        drop(pb);
        // A failed proof gives its place back.
        let pc = registry.reserve(&c, 2).unwrap();
        drop(pc);
        let (tx, _rx) = mpsc::channel(1);
        let handle = || HostHandle {
            link: HostLink::Tcp(tx.clone()),
            tier: Arc::new(crate::pacing::Tier::unlimited()),
            sessions: Arc::default(),
            buffers: Arc::default(),
            account: None,
        };
        let generation = registry.register(a, handle(), pa, CancellationToken::new());
        // A registered host may register again even at the cap; replacing keeps one place.
        let _other = registry.reserve(&b, 2).unwrap();
        let again = registry.reserve(&a, 2).expect("a re-registration is never over the cap");
        registry.register(a, handle(), again, CancellationToken::new());
        assert!(registry.reserve(&c, 2).is_none());
        registry.unregister(&a, generation);
        assert_eq!(registry.len(), 1, "the old generation's cleanup left the new entry");
        assert_eq!(registry.places.load(Ordering::Acquire), 2);
    }

    #[test]
    fn a_connection_carries_one_registration_at_a_time() {
        let registry = Registry::new();
        let claim = registry.claim_connection(7).unwrap();
        assert!(registry.claim_connection(7).is_none());
        assert!(registry.claim_connection(8).is_some());
        drop(claim);
        assert!(registry.claim_connection(7).is_some());
    }
}
