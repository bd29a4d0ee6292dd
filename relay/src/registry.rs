//! Which hosts are registered here: host id → how to reach the host.
//!
//! A DashMap so lookups from many client sessions never contend on one lock, and no
//! guard is ever held across an `.await` (callers get a cloned, cheap handle). Each
//! registration gets a generation number, so when a host re-registers (say, after a
//! network change) the old connection's cleanup cannot remove the new entry.
//!
//! Hosts on TCP get their session streams differently from QUIC hosts: the relay cannot
//! open a stream towards them, so it announces the session on their control connection
//! and waits for the host to dial back with `Attach` (see `attach.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use ferry_proto::HostId;
use ferry_proto::codes::CLOSE_REPLACED;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::limits::SessionCount;
use crate::pacing::Tier;

/// How the relay reaches a registered host.
#[derive(Clone)]
pub(crate) enum HostLink {
    /// Open a bi-stream on the host's QUIC connection.
    Quic(quinn::Connection),
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
    pub(crate) sessions: Arc<SessionCount>,
}

struct Entry {
    handle: HostHandle,
    generation: u64,
    /// Cancelled when a newer registration replaces this one; the host's control task
    /// watches it and ends.
    replaced: CancellationToken,
}

pub(crate) struct Registry {
    hosts: DashMap<HostId, Entry>,
    next_generation: AtomicU64,
    registrations: watch::Sender<u64>,
    /// How many hosts are registered, published on every change.
    count: watch::Sender<usize>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self {
            hosts: DashMap::new(),
            next_generation: AtomicU64::new(1),
            registrations: watch::Sender::new(0),
            count: watch::Sender::new(0),
        }
    }

    /// Registers `link` for `id`, closing any registration it replaces. Returns the
    /// generation to pass to [`Registry::unregister`].
    pub(crate) fn register(&self, id: HostId, handle: HostHandle, replaced: CancellationToken) -> u64 {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = self.hosts.insert(id, Entry { handle, generation, replaced }) {
            old.replaced.cancel();
            if let HostLink::Quic(conn) = old.handle.link {
                conn.close(CLOSE_REPLACED.into(), b"replaced by a newer registration");
            }
        }
        self.registrations.send_modify(|n| *n += 1);
        self.publish_count();
        generation
    }

    /// Removes `id` if it still belongs to `generation`.
    pub(crate) fn unregister(&self, id: &HostId, generation: u64) {
        if self.hosts.remove_if(id, |_, entry| entry.generation == generation).is_some() {
            self.publish_count();
        }
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

    /// Whether `id` is registered.
    pub(crate) fn contains(&self, id: &HostId) -> bool {
        self.hosts.contains_key(id)
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
