//! Resumed handshakes: a client that finished a full handshake with a host opens its next
//! sessions with a short one, keyed by a resumption PSK both ends derived from that session.
//!
//! ```text
//! psk = HKDF-SHA256(salt = h, ikm = k_i2r | k_r2i, "ferry/1 resumption psk")[..32]
//! id  = HKDF-SHA256(salt = h, ikm = k_i2r | k_r2i, "ferry/1 resumption id")[..16]
//! ```
//! over the full session's (hybrid) keys, so the PSK inherits its post-quantum secret. The
//! resumed handshake is Noise `NNpsk0` with fresh ephemeral keys on both sides, so it is
//! forward secret through `ee` (two X25519 operations per side, against `IKpsk2`'s five):
//!
//! ```text
//! prologue = "ferry/1 e2e resumed" | host public key | id
//! frame    = id (16) | Noise message 1
//! client -> host   psk, e                (payload: the service block and flags, as a full hello)
//! host -> client   e, ee                 (payload: code, flags)
//! ```
//! The host keeps a bounded [`PskTable`] of id → (PSK, the client's static key it
//! authenticated in the full handshake, expiry) and enforces its allow-list on that key. An id
//! it does not know (expired, evicted, forged, or the host restarted) or a message the PSK
//! does not open is answered with [`FALLBACK`], a one-byte frame: the client then sends a
//! full hello on the same stream (one extra round trip, never an error to the user). Someone
//! holding the ticket but not the earlier session's keys cannot make a resumed hello the
//! host opens, nor read its answer.
//!
//! The id is sent in clear and reused until it expires, so a relay can tell that two
//! sessions come from a client that resumed with the same PSK (it already sees which hop they
//! come from).
//!
//! This module also owns the first-frame dispatch table ([`FirstFrame::classify`]).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::PublicKey;
use crate::e2e::hybrid::hkdf_into;
use crate::e2e::resume::RESUME_REQUEST_LEN;
use crate::ticket::MAX_SERVICE_NAME;

/// Noise protocol name of the resumed handshake.
pub const RESUMED_NOISE: &str = "Noise_NNpsk0_25519_AESGCM_BLAKE2s";
/// Bytes of a PSK id.
pub const PSK_ID_LEN: usize = 16;
/// The host's answer to a resumed hello it cannot take: "send a full hello".
pub const FALLBACK: &[u8] = &[0xff];
/// Length of a resumed hello frame: id, ephemeral key, the payload (the full hello's service
/// block and flags, `handshake::SERVICE_PAYLOAD_LEN`, spelled out here so that `handshake`,
/// which uses this module, is not imported back) and its tag.
pub const RESUMED_HELLO_LEN: usize = PSK_ID_LEN + 32 + (1 + MAX_SERVICE_NAME + 1) + 16;
/// How many PSKs a host keeps by default.
pub const DEFAULT_PSK_CAP: usize = 4096;
/// How long a host keeps a PSK by default (the client keeps it as long, then does a full
/// handshake, which also renews the post-quantum secret).
pub const DEFAULT_PSK_TTL: Duration = Duration::from_secs(12 * 3600);
const PSK_LABEL: &[u8] = b"ferry/1 resumption psk";
const ID_LABEL: &[u8] = b"ferry/1 resumption id";
pub(crate) const RESUMED_PROLOGUE_LABEL: &[u8] = b"ferry/1 e2e resumed";

/// What a session's first frame at the host is, by its length (through a relay, after the
/// `Connect`; on the direct port, after the tag). Lengths are the whole dispatch, so the
/// relay needs to understand nothing new:
///
/// | length | what |
/// |---|---|
/// | 48 ([`RESUME_REQUEST_LEN`]) | a resume request of a live session (issue 15) |
/// | 130 ([`RESUMED_HELLO_LEN`]) | a resumed hello (`NNpsk0`) |
/// | anything else | a full hello (`IKpsk2`): 96 (no payload), 161 (service), 162 (flags), 1346 (hybrid) |
///
/// No full hello is 48 or 130 bytes: a full hello is 96 bytes plus its payload, and no
/// version sends a 34-byte payload; a later full format must keep off both lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstFrame {
    /// A resume request of a live session.
    ResumeRequest,
    /// A resumed handshake keyed by a PSK.
    Resumed,
    /// A full handshake.
    Full,
}

impl FirstFrame {
    /// Classifies a first frame.
    pub fn classify(frame: &[u8]) -> Self {
        match frame.len() {
            RESUME_REQUEST_LEN => Self::ResumeRequest,
            RESUMED_HELLO_LEN => Self::Resumed,
            _ => Self::Full,
        }
    }
}

/// A resumption PSK and its id, derived by both ends of a finished full handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct ResumptionPsk {
    pub(crate) id: [u8; PSK_ID_LEN],
    pub(crate) psk: [u8; 32],
}

impl fmt::Debug for ResumptionPsk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("ResumptionPsk").finish_non_exhaustive()
    }
}

impl ResumptionPsk {
    /// Derives the PSK from a finished handshake's hash `h` and its (hybrid) split keys.
    pub(crate) fn derive(h: &[u8], i2r: &[u8; 32], r2i: &[u8; 32]) -> Self {
        let mut id = [0u8; PSK_ID_LEN];
        let mut psk = [0u8; 32];
        hkdf_into(h, &[i2r, r2i], ID_LABEL, &mut id);
        hkdf_into(h, &[i2r, r2i], PSK_LABEL, &mut psk);
        Self { id, psk }
    }

    /// The id the client sends in front of a resumed hello.
    pub fn id(&self) -> [u8; PSK_ID_LEN] {
        self.id
    }

    /// A PSK with the same id and another secret: what someone holding only the id has.
    #[cfg(test)]
    pub(crate) fn forged(&self) -> Self {
        Self { id: self.id, psk: [0x42; 32] }
    }
}

struct Entry {
    psk: [u8; 32],
    client: PublicKey,
    expires: Instant,
}

/// The host's PSKs: id → (PSK, client key, expiry), at most `cap` of them, each for `ttl`.
/// When full, the oldest goes (expired or not): every entry lives `ttl`, so insertion order
/// is expiry order, and a queue of ids in that order makes each insert O(1).
pub struct PskTable {
    entries: HashMap<[u8; PSK_ID_LEN], Entry>,
    /// Ids oldest first, with the expiry they were inserted with (an id re-inserted later
    /// leaves a stale pair behind, skipped when it comes up).
    order: VecDeque<([u8; PSK_ID_LEN], Instant)>,
    cap: usize,
    ttl: Duration,
}

impl fmt::Debug for PskTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The count only: never an id, a key or a secret.
        f.debug_struct("PskTable").field("len", &self.entries.len()).field("cap", &self.cap).finish()
    }
}

impl Default for PskTable {
    fn default() -> Self {
        Self::new(DEFAULT_PSK_CAP, DEFAULT_PSK_TTL)
    }
}

impl PskTable {
    /// A table of at most `cap` PSKs, each kept for `ttl`.
    pub fn new(cap: usize, ttl: Duration) -> Self {
        Self { entries: HashMap::new(), order: VecDeque::new(), cap: cap.max(1), ttl }
    }

    /// How many PSKs the table holds (expired ones until they are swept).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps `psk`, which a full handshake with `client` derived at `now`.
    pub fn insert(&mut self, psk: &ResumptionPsk, client: PublicKey, now: Instant) {
        // Expired entries at the front go first, then the oldest while still full.
        while let Some(&(id, expires)) = self.order.front() {
            if expires > now && self.entries.len() < self.cap {
                break;
            }
            self.order.pop_front();
            if self.entries.get(&id).is_some_and(|e| e.expires == expires) {
                self.entries.remove(&id);
            }
        }
        let expires = now + self.ttl;
        self.entries.insert(psk.id, Entry { psk: psk.psk, client, expires });
        self.order.push_back((psk.id, expires));
        // Stale pairs (re-inserted ids) cannot pile up past a multiple of the cap.
        if self.order.len() > 2 * self.cap {
            let entries = &self.entries;
            self.order.retain(|(id, expires)| entries.get(id).is_some_and(|e| e.expires == *expires));
        }
    }

    /// The PSK and client key of `id`, if it is known and not expired at `now`.
    pub(crate) fn get(&mut self, id: &[u8; PSK_ID_LEN], now: Instant) -> Option<([u8; 32], PublicKey)> {
        let entry = self.entries.get(id)?;
        if entry.expires <= now {
            self.entries.remove(id);
            return None;
        }
        Some((entry.psk, entry.client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psk(n: u8) -> ResumptionPsk {
        ResumptionPsk::derive(&[n], &[n; 32], &[n; 32])
    }

    #[test]
    fn the_dispatch_table_tells_every_known_first_frame_apart() {
        assert_eq!(FirstFrame::classify(&[0; RESUME_REQUEST_LEN]), FirstFrame::ResumeRequest);
        assert_eq!(FirstFrame::classify(&[0; RESUMED_HELLO_LEN]), FirstFrame::Resumed);
        assert_eq!(RESUMED_HELLO_LEN, 130);
        for old in [96, 161, 162, 1346] {
            assert_eq!(FirstFrame::classify(&vec![0; old]), FirstFrame::Full, "{old}");
        }
    }

    #[test]
    fn the_table_forgets_a_psk_after_its_ttl() {
        let now = Instant::now();
        let mut table = PskTable::new(8, Duration::from_secs(60));
        let client = PublicKey([1; 32]);
        table.insert(&psk(1), client, now);
        assert_eq!(table.get(&psk(1).id, now + Duration::from_secs(59)), Some((psk(1).psk, client)));
        assert_eq!(table.get(&psk(1).id, now + Duration::from_secs(60)), None);
        assert!(table.is_empty(), "an expired entry is dropped when looked up");
        assert_eq!(table.get(&psk(2).id, now), None, "never inserted");
    }

    #[test]
    fn the_table_holds_at_most_its_cap_and_drops_the_oldest() {
        let start = Instant::now();
        let mut table = PskTable::new(3, Duration::from_secs(60));
        for n in 0..10u8 {
            table.insert(&psk(n), PublicKey([n; 32]), start + Duration::from_secs(u64::from(n)));
            assert!(table.len() <= 3);
        }
        let now = start + Duration::from_secs(10);
        for n in 0..7u8 {
            assert!(table.get(&psk(n).id, now).is_none(), "{n} was evicted");
        }
        for n in 7..10u8 {
            assert!(table.get(&psk(n).id, now).is_some(), "{n} is among the newest");
        }
        // Expired entries make room before live ones are evicted.
        let late = start + Duration::from_secs(68);
        table.insert(&psk(20), PublicKey([20; 32]), late);
        assert!(table.get(&psk(9).id, late).is_some(), "live, so kept");
        assert_eq!(table.len(), 2, "7 and 8 expired and were swept");
    }

    #[test]
    fn the_debug_form_shows_no_secret() {
        let p = psk(3);
        assert_eq!(format!("{p:?}"), "ResumptionPsk { .. }");
    }
}
