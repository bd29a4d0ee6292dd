//! Which hosts are registered here: host id → the host's live connection.
//!
//! A DashMap so lookups from many client sessions never contend on one lock, and no
//! guard is ever held across an `.await` (callers get a cloned, cheap connection handle).
//! Each registration gets a generation number, so when a host re-registers (say, after a
//! network change) the old connection's cleanup cannot remove the new entry.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use ferry_proto::HostId;
use ferry_proto::codes::CLOSE_REPLACED;
use tokio::sync::watch;

struct Entry {
    conn: quinn::Connection,
    generation: u64,
}

pub(crate) struct Registry {
    hosts: DashMap<HostId, Entry>,
    next_generation: AtomicU64,
    registrations: watch::Sender<u64>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self {
            hosts: DashMap::new(),
            next_generation: AtomicU64::new(1),
            registrations: watch::Sender::new(0),
        }
    }

    /// Registers `conn` for `id`, closing any connection it replaces. Returns the
    /// generation to pass to [`Registry::unregister`].
    pub(crate) fn register(&self, id: HostId, conn: quinn::Connection) -> u64 {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = self.hosts.insert(id, Entry { conn, generation }) {
            old.conn
                .close(CLOSE_REPLACED.into(), b"replaced by a newer registration");
        }
        self.registrations.send_modify(|n| *n += 1);
        generation
    }

    /// Removes `id` if it still belongs to `generation`.
    pub(crate) fn unregister(&self, id: &HostId, generation: u64) {
        self.hosts
            .remove_if(id, |_, entry| entry.generation == generation);
    }

    /// The live connection of host `id`, if registered.
    pub(crate) fn lookup(&self, id: &HostId) -> Option<quinn::Connection> {
        self.hosts.get(id).map(|entry| entry.conn.clone())
    }

    pub(crate) fn len(&self) -> usize {
        self.hosts.len()
    }

    /// A counter that goes up on every successful registration.
    pub(crate) fn watch_registrations(&self) -> watch::Receiver<u64> {
        self.registrations.subscribe()
    }
}
