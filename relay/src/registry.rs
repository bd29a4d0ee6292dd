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

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use ferry_proto::HostId;
use ferry_proto::codes::CLOSE_REPLACED;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How the relay reaches a registered host.
#[derive(Clone)]
pub(crate) enum HostLink {
    /// Open a bi-stream on the host's QUIC connection.
    Quic(quinn::Connection),
    /// Ask the host's control task to send `Incoming { session }`; the host attaches.
    Tcp(mpsc::Sender<u64>),
}

struct Entry {
    link: HostLink,
    generation: u64,
    /// Cancelled when a newer registration replaces this one; the host's control task
    /// watches it and ends.
    replaced: CancellationToken,
}

pub(crate) struct Registry {
    hosts: DashMap<HostId, Entry>,
    next_generation: AtomicU64,
    registrations: watch::Sender<u64>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self { hosts: DashMap::new(), next_generation: AtomicU64::new(1), registrations: watch::Sender::new(0) }
    }

    /// Registers `link` for `id`, closing any registration it replaces. Returns the
    /// generation to pass to [`Registry::unregister`].
    pub(crate) fn register(&self, id: HostId, link: HostLink, replaced: CancellationToken) -> u64 {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = self.hosts.insert(id, Entry { link, generation, replaced }) {
            old.replaced.cancel();
            if let HostLink::Quic(conn) = old.link {
                conn.close(CLOSE_REPLACED.into(), b"replaced by a newer registration");
            }
        }
        self.registrations.send_modify(|n| *n += 1);
        generation
    }

    /// Removes `id` if it still belongs to `generation`.
    pub(crate) fn unregister(&self, id: &HostId, generation: u64) {
        self.hosts.remove_if(id, |_, entry| entry.generation == generation);
    }

    /// How to reach host `id`, if registered.
    pub(crate) fn lookup(&self, id: &HostId) -> Option<HostLink> {
        self.hosts.get(id).map(|entry| entry.link.clone())
    }

    pub(crate) fn len(&self) -> usize {
        self.hosts.len()
    }

    /// A counter that goes up on every successful registration.
    pub(crate) fn watch_registrations(&self) -> watch::Receiver<u64> {
        self.registrations.subscribe()
    }
}
