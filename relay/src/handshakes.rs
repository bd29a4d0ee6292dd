//! The cap on connections in their handshake (TLS, then the first control message).
//!
//! A counter, not a semaphore with a fixed number of permits, so the cap
//! (`max_pending_handshakes`) takes effect on reload like every other limit: lowering it
//! turns new connections away until enough running handshakes have finished; raising it
//! admits more at once. Each admitted connection holds a [`HandshakeSlot`] until its
//! handshake is over, however it ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many connections are in their handshake now.
#[derive(Default)]
pub(crate) struct HandshakeGate(AtomicUsize);

/// One connection's place among the pending handshakes; given back when dropped.
pub(crate) struct HandshakeSlot(Arc<HandshakeGate>);

impl HandshakeGate {
    /// A slot, unless `max` handshakes are already running.
    pub(crate) fn try_enter(self: &Arc<Self>, max: usize) -> Option<HandshakeSlot> {
        self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(HandshakeSlot(self.clone()))
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_and_follows_a_reload() {
        let gate = Arc::new(HandshakeGate::default());
        let held: Vec<_> = (0..3).map(|_| gate.try_enter(3).unwrap()).collect();
        assert!(gate.try_enter(3).is_none(), "a fourth handshake over a cap of 3");
        assert!(gate.try_enter(4).is_some(), "a raised cap admits at once");
        drop(held);
        // Lowered below what was running: admits again once enough have finished.
        let one = gate.try_enter(1).unwrap();
        assert!(gate.try_enter(1).is_none());
        drop(one);
        assert!(gate.try_enter(1).is_some());
    }
}
