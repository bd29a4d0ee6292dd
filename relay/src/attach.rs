//! Sessions waiting for a TCP host to dial back.
//!
//! For a host on TCP the relay sends `Incoming { session }` on the host's control
//! connection and parks the client's side here; the host opens a new TLS connection that
//! starts with `Attach { session }`, and the dispatcher hands that connection over. The
//! session number is random and only ever sent to the host over its authenticated TLS
//! control connection; an unknown or late `Attach` is simply closed.

use bytes::Bytes;
use dashmap::DashMap;
use ferry_link::{LinkRecv, LinkSend};
use tokio::sync::oneshot;

/// The host's side of a session: its stream halves and bytes read past `Attach`.
pub(crate) type Attached = (LinkSend, LinkRecv, Bytes);

#[derive(Default)]
pub(crate) struct PendingAttach {
    waiting: DashMap<u64, oneshot::Sender<Attached>>,
}

impl PendingAttach {
    /// Parks a session until its host attaches (or the receiver is dropped).
    pub(crate) fn expect(&self, session: u64) -> oneshot::Receiver<Attached> {
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(session, tx);
        rx
    }

    /// Forgets a session whose wait ended (timeout or refusal).
    pub(crate) fn forget(&self, session: u64) {
        self.waiting.remove(&session);
    }

    /// Hands an attached connection to its waiting session; gives it back if none waits.
    pub(crate) fn attach(&self, session: u64, attached: Attached) -> Result<(), Attached> {
        match self.waiting.remove(&session) {
            Some((_, tx)) => tx.send(attached),
            None => Err(attached),
        }
    }
}
