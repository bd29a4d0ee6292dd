//! The client's memory of its host between sessions: the resumption PSK of its last full
//! handshake (so the next session takes the short, resumed handshake), whether the host has
//! answered a hybrid hello (so the client never falls back to a classic one for it), and
//! counts of each kind of handshake.
//!
//! In memory only: a PSK is a session secret and never touches the disk; a restarted
//! client does one full handshake. A [`crate::Client`] talks to one host (its ticket's), so
//! one entry is the whole cache.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use ferry_proto::e2e::ResumptionPsk;
use ferry_proto::e2e::psk::DEFAULT_PSK_TTL;

/// How many sessions began with each kind of handshake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandshakeCounts {
    /// Full handshakes with the ML-KEM secret mixed in.
    pub full_hybrid: u64,
    /// Full handshakes without it (a host before the hybrid handshake).
    pub full_classic: u64,
    /// Resumed handshakes (`NNpsk0` with the PSK of an earlier session).
    pub resumed: u64,
    /// Resumed hellos the host did not know, answered by a fall back to a full handshake.
    pub fallbacks: u64,
}

#[derive(Default)]
struct State {
    psk: Option<(ResumptionPsk, Instant)>,
    hybrid_seen: bool,
    counts: HandshakeCounts,
}

/// See the module doc.
#[derive(Default)]
pub(crate) struct PskCache {
    state: Mutex<State>,
}

impl PskCache {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data, valid after any panic elsewhere.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The PSK to resume with at `now`, unless it is older than the host keeps PSKs.
    pub(crate) fn current(&self, now: Instant) -> Option<ResumptionPsk> {
        let mut state = self.state();
        match &state.psk {
            Some((psk, at)) if now.duration_since(*at) < DEFAULT_PSK_TTL => Some(psk.clone()),
            Some(_) => {
                state.psk = None;
                None
            }
            None => None,
        }
    }

    /// The host did not know the PSK: forget it (the full handshake that follows brings a new one).
    pub(crate) fn fell_back(&self) {
        let mut state = self.state();
        state.psk = None;
        state.counts.fallbacks += 1;
    }

    /// Notes a finished handshake: its kind, and the PSK it left, if any, received at `now`.
    pub(crate) fn finished(&self, resumed: bool, hybrid: bool, psk: Option<ResumptionPsk>, now: Instant) {
        let mut state = self.state();
        if resumed {
            state.counts.resumed += 1;
        } else if hybrid {
            state.counts.full_hybrid += 1;
            state.hybrid_seen = true;
        } else {
            state.counts.full_classic += 1;
        }
        if let Some(psk) = psk {
            state.psk = Some((psk, now));
        }
    }

    /// Whether this host has answered a hybrid hello in kind (then a dropped hybrid hello
    /// is never retried as a classic one: that would be a downgrade).
    pub(crate) fn hybrid_seen(&self) -> bool {
        self.state().hybrid_seen
    }

    /// The counts so far.
    pub(crate) fn counts(&self) -> HandshakeCounts {
        self.state().counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::e2e::{ClientHandshake, HostHandshake, Offer};
    use ferry_proto::{StaticKey, TicketSecret};

    /// A PSK as a real full handshake leaves it.
    fn sample_psk() -> ResumptionPsk {
        let host = StaticKey::generate().unwrap();
        let client = StaticKey::generate().unwrap();
        let secret = TicketSecret([1; 32]);
        let offer = Offer::current(false);
        let (ch, hello) = ClientHandshake::start_offering(&host.public(), &secret, &client, None, offer).unwrap();
        let mut hh = HostHandshake::read(&host, &secret, &hello).unwrap();
        hh.offer_psk(true);
        let (answer, _) = hh.accept_session().unwrap();
        ch.finish_session(&answer).unwrap().psk.unwrap()
    }

    #[test]
    fn a_psk_is_kept_until_the_host_would_have_dropped_it_and_a_fallback_forgets_it() {
        let cache = PskCache::default();
        let now = Instant::now();
        assert!(cache.current(now).is_none());
        let psk = sample_psk();
        cache.finished(false, true, Some(psk.clone()), now);
        assert!(cache.hybrid_seen());
        assert_eq!(cache.current(now + DEFAULT_PSK_TTL / 2), Some(psk.clone()));
        assert!(cache.current(now + DEFAULT_PSK_TTL).is_none(), "expired");
        cache.finished(false, true, Some(psk), now);
        cache.fell_back();
        assert!(cache.current(now).is_none());
        cache.finished(true, false, None, now);
        let counts = cache.counts();
        assert_eq!(counts, HandshakeCounts { full_hybrid: 2, full_classic: 0, resumed: 1, fallbacks: 1 });
    }
}
