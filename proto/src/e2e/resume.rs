//! End-to-end resumption: a session that outlives the path carrying it.
//!
//! A resumable session (both ends said so in the handshake, see [`crate::e2e::handshake`])
//! keeps every record it sealed until the peer acknowledges it, so when the path (a relay, a
//! direct stream) is lost the session moves to another path and both ends replay exactly what
//! the other has not received. This module owns the sans-IO parts of that; the async code in
//! `client` only moves bytes:
//!
//! - [`ResumeKeys`]: the session id and the resumption secret, derived from the finished
//!   handshake by both ends (the relay, which saw every handshake byte, cannot).
//! - [`ReplayBuffer`], [`Outbound`]: one direction's sender, sealing records and holding them
//!   until acknowledged. The buffer is the backpressure: when it is full the sender waits, so
//!   the memory a session holds stays under [`Outbound::bound`] whatever the path does.
//! - [`Inbound`]: one direction's receiver, opening records and saying when an
//!   acknowledgement (record kind 2) is due: on receipt, delayed by at most [`ACK_DELAY`]
//!   (or [`ACK_EVERY_RECORDS`] / [`ACK_EVERY_BYTES`], whichever first). A receiver whose
//!   application stops reading sends keep-alives ([`Outbound::seal_keepalive`], an `Ack`
//!   with [`crate::e2e::record::ACK_PAUSED`] set), so its peer tells a paused reader from a
//!   lost path.
//! - [`ClientResume`], [`HostResume`]: the resume request and the host's answer, which prove
//!   the resumption secret and cannot be replayed.
//!
//! ```text
//! resume request = session id (16) | attempt (u64) | received (u64) | mac (16)    48 bytes
//! resume answer  = status (u8) | received (u64) | mac (16)                        25 bytes
//! request mac    = HMAC-SHA256(secret, "ferry/1 resume request" | id | attempt | received)[..16]
//! answer mac     = HMAC-SHA256(secret, "ferry/1 resume answer" | id | attempt | status | received)[..16]
//! status         = 0 resumed | 1 refused (not authenticated: the host may not know the session)
//! ```
//! `received` is the number of the peer's records the sender has opened (the counter of the
//! next one it expects). The attempt number strictly increases per session, and the host
//! takes a request only with an attempt above the last one it took, so a request captured
//! by a relay and sent again (on the same or another path) is refused and leaves the live
//! session alone; the same holds for a second client that replays the first one's request.
//!
//! Room is left for a resumed *handshake* (a PSK from an earlier session, issue 18): that is
//! a new session with fresh keys and is started by a handshake, not by this request.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use ring::{hkdf, hmac};

use crate::Error;
use crate::e2e::record::{ACK_BODY_LEN, MAX_RECORD_LEN, Opened, Opener, RecordKind, Sealer};

/// Bytes of a session id.
pub const SESSION_ID_LEN: usize = 16;
/// Bytes of the MACs of the resume request and answer (HMAC-SHA256, truncated).
pub const RESUME_MAC_LEN: usize = 16;
/// Bytes of an encoded [`ResumeRequest`].
pub const RESUME_REQUEST_LEN: usize = SESSION_ID_LEN + 8 + 8 + RESUME_MAC_LEN;
/// Bytes of an encoded resume answer.
pub const RESUME_ANSWER_LEN: usize = 1 + 8 + RESUME_MAC_LEN;
/// Default bound of one direction's replay buffer (bytes, bookkeeping included). It also
/// bounds what is in flight unacknowledged, so throughput is at most this per round trip:
/// 1 MiB is 160 Mbit/s at a 50 ms round trip.
pub const DEFAULT_REPLAY_LIMIT: usize = 1 << 20;
/// What one buffered record costs besides its bytes (its `Bytes` handle and queue slot),
/// charged against the bound so that many small records cannot exceed it.
pub const RECORD_OVERHEAD: usize = 48;
/// A receiver acknowledges after this many bytes of records...
pub const ACK_EVERY_BYTES: usize = 64 * 1024;
/// ...or after this many records...
pub const ACK_EVERY_RECORDS: u64 = 32;
/// ...or this long after the first record it has not acknowledged arrived, whichever comes
/// first (a peer's `Fin` is acknowledged at once). Acknowledgements follow *receipt*, not the
/// application's reads: a record is acknowledged once it is opened, so a burst of small
/// records costs one acknowledgement, and a receiver whose application stops reading still
/// acknowledges what reached it. The delay holds at most [`ACK_EVERY_BYTES`] back, far under
/// the replay bound, so it costs no throughput.
pub const ACK_DELAY: std::time::Duration = std::time::Duration::from_millis(20);
/// Acknowledgements a sender may hold beyond the data bound. They are never held back (two
/// ends whose buffers are both full must still be able to acknowledge each other), and the
/// peer acknowledges them within [`ACK_EVERY_RECORDS`]; more than this many outstanding
/// means the peer does not acknowledge, and the session fails rather than grow.
pub const MAX_OUTSTANDING_ACKS: usize = 4 * ACK_EVERY_RECORDS as usize;
/// Wire bytes of one sealed `Ack` record.
const ACK_WIRE_LEN: usize = 2 + 1 + ACK_BODY_LEN + crate::e2e::record::TAG_LEN;

const ID_LABEL: &[u8] = b"ferry/1 resume id";
const SECRET_LABEL: &[u8] = b"ferry/1 resume secret";
const REQUEST_LABEL: &[u8] = b"ferry/1 resume request";
const ANSWER_LABEL: &[u8] = b"ferry/1 resume answer";
const STATUS_RESUMED: u8 = 0;
const STATUS_REFUSED: u8 = 1;

/// Which session a resume request is for: random-looking, derived from the handshake.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub [u8; SESSION_ID_LEN]);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // An id links a session's paths: keep it out of logs.
        f.write_str("SessionId(..)")
    }
}

pub use crate::error::ResumeRefusal;

/// A session's id and resumption secret; both ends derive the same from the handshake.
#[derive(Clone)]
pub struct ResumeKeys {
    id: SessionId,
    secret: hmac::Key,
}

impl std::fmt::Debug for ResumeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResumeKeys(..)")
    }
}

/// An HKDF output length for `ring`.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand<const N: usize>(prk: &hkdf::Prk, label: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    // HKDF-SHA256 expands up to 255 * 32 bytes; N is 16 or 32.
    prk.expand(&[label], Len(N)).and_then(|okm| okm.fill(&mut out)).expect("HKDF-SHA256 can expand 16 or 32 bytes");
    out
}

impl ResumeKeys {
    /// Derives the keys from the handshake hash `h` and the two split keys. `h` alone is
    /// public (a relay can compute it from the handshake bytes it carried), so the secret
    /// comes from the split keys, salted with `h`.
    pub fn derive(h: &[u8], initiator_to_responder: &[u8; 32], responder_to_initiator: &[u8; 32]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, h)
            .extract(&[&initiator_to_responder[..], &responder_to_initiator[..]].concat());
        let id = SessionId(expand::<SESSION_ID_LEN>(&prk, ID_LABEL));
        let secret = expand::<32>(&prk, SECRET_LABEL);
        Self { id, secret: hmac::Key::new(hmac::HMAC_SHA256, &secret) }
    }

    /// The session's id, by which the host finds it when a resume request arrives.
    pub fn id(&self) -> SessionId {
        self.id
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; RESUME_MAC_LEN] {
        let mut ctx = hmac::Context::with_key(&self.secret);
        for part in parts {
            ctx.update(part);
        }
        let mut out = [0u8; RESUME_MAC_LEN];
        out.copy_from_slice(&ctx.sign().as_ref()[..RESUME_MAC_LEN]);
        out
    }

    fn request_mac(&self, attempt: u64, received: u64) -> [u8; RESUME_MAC_LEN] {
        self.mac(&[REQUEST_LABEL, &self.id.0, &attempt.to_be_bytes(), &received.to_be_bytes()])
    }

    fn answer_mac(&self, attempt: u64, status: u8, received: u64) -> [u8; RESUME_MAC_LEN] {
        self.mac(&[ANSWER_LABEL, &self.id.0, &attempt.to_be_bytes(), &[status], &received.to_be_bytes()])
    }
}

/// Compares two MACs in time independent of where they differ.
fn macs_equal(a: &[u8; RESUME_MAC_LEN], b: &[u8; RESUME_MAC_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A client's request to move a session onto the path it arrives on.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ResumeRequest {
    /// The session to resume.
    pub id: SessionId,
    /// Strictly increasing per session: the host takes each number at most once.
    pub attempt: u64,
    /// How many of the host's records the client has opened.
    pub received: u64,
    mac: [u8; RESUME_MAC_LEN],
}

impl ResumeRequest {
    /// The request's bytes (the first end-to-end frame on the new path).
    pub fn encode(&self) -> [u8; RESUME_REQUEST_LEN] {
        let mut out = [0u8; RESUME_REQUEST_LEN];
        out[..16].copy_from_slice(&self.id.0);
        out[16..24].copy_from_slice(&self.attempt.to_be_bytes());
        out[24..32].copy_from_slice(&self.received.to_be_bytes());
        out[32..].copy_from_slice(&self.mac);
        out
    }

    /// Reads a request; only its length is checked here, the MAC by [`HostResume::take`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let bytes: &[u8; RESUME_REQUEST_LEN] =
            bytes.try_into().map_err(|_| Error::ResumeRefused { why: ResumeRefusal::Malformed })?;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let mut id = [0u8; SESSION_ID_LEN];
        id.copy_from_slice(&bytes[..16]);
        let mut mac = [0u8; RESUME_MAC_LEN];
        mac.copy_from_slice(&bytes[32..]);
        Ok(Self { id: SessionId(id), attempt: u64_at(16), received: u64_at(24), mac })
    }
}

/// The client's side of resuming one session, across its attempts.
#[derive(Debug)]
pub struct ClientResume {
    keys: ResumeKeys,
    attempt: u64,
}

impl ClientResume {
    /// The resume side of a session whose handshake gave `keys`.
    pub fn new(keys: ResumeKeys) -> Self {
        Self { keys, attempt: 0 }
    }

    /// A request for a new attempt, saying the client has opened `received` host records.
    /// Every call takes a new attempt number; only the answer to the latest one is read.
    pub fn request(&mut self, received: u64) -> ResumeRequest {
        self.attempt += 1;
        let mac = self.keys.request_mac(self.attempt, received);
        ResumeRequest { id: self.keys.id, attempt: self.attempt, received, mac }
    }

    /// Reads the host's answer to the latest request: the number of client records the host
    /// has opened, from which the client replays. A refusal, or an answer not made with the
    /// secret for this attempt, is [`Error::ResumeRefused`].
    pub fn read_answer(&self, answer: &[u8]) -> Result<u64, Error> {
        let refused = |why| Error::ResumeRefused { why };
        let answer: &[u8; RESUME_ANSWER_LEN] = answer.try_into().map_err(|_| refused(ResumeRefusal::Malformed))?;
        let status = answer[0];
        let mut received = [0u8; 8];
        received.copy_from_slice(&answer[1..9]);
        let received = u64::from_be_bytes(received);
        let mut mac = [0u8; RESUME_MAC_LEN];
        mac.copy_from_slice(&answer[9..]);
        if status != STATUS_RESUMED {
            return Err(refused(ResumeRefusal::Refused));
        }
        if !macs_equal(&mac, &self.keys.answer_mac(self.attempt, status, received)) {
            return Err(refused(ResumeRefusal::BadMac));
        }
        Ok(received)
    }
}

/// The host's answer refusing a request: not authenticated, since the host may not know the
/// session (a relay could forge it too, so a client keeps trying other paths until its
/// deadline rather than end the session on one).
pub fn refusal_answer() -> [u8; RESUME_ANSWER_LEN] {
    let mut out = [0u8; RESUME_ANSWER_LEN];
    out[0] = STATUS_REFUSED;
    out
}

/// The host's side of resuming one live session.
#[derive(Debug)]
pub struct HostResume {
    keys: ResumeKeys,
    last_attempt: u64,
}

impl HostResume {
    /// The resume side of a session whose handshake gave `keys`.
    pub fn new(keys: ResumeKeys) -> Self {
        Self { keys, last_attempt: 0 }
    }

    /// The session id requests are matched by.
    pub fn id(&self) -> SessionId {
        self.keys.id
    }

    /// Checks `request` against this session and the host's sending half `out`; on success
    /// records its attempt number (so it is never taken again) and returns the answer to send,
    /// which says the host has opened `received` client records ([`Inbound::received`]), and
    /// the counter from which `out` replays. A refused request changes nothing.
    pub fn take(
        &mut self,
        request: &ResumeRequest,
        out: &Outbound,
        received: u64,
    ) -> Result<([u8; RESUME_ANSWER_LEN], u64), Error> {
        let taken = self.check(request, out)?;
        Ok((self.answer(&taken, received), taken.from))
    }

    /// The checks of [`HostResume::take`] alone, for a host that answers later (once it has
    /// stopped reading the old path, so that its own count is final).
    pub fn check(&mut self, request: &ResumeRequest, out: &Outbound) -> Result<Taken, Error> {
        let refused = |why| Error::ResumeRefused { why };
        if request.id != self.keys.id {
            return Err(refused(ResumeRefusal::UnknownSession));
        }
        if !macs_equal(&request.mac, &self.keys.request_mac(request.attempt, request.received)) {
            return Err(refused(ResumeRefusal::BadMac));
        }
        if request.attempt <= self.last_attempt {
            return Err(refused(ResumeRefusal::StaleAttempt));
        }
        if !out.replay.can_replay_from(request.received) {
            return Err(refused(ResumeRefusal::BadCounters));
        }
        self.last_attempt = request.attempt;
        Ok(Taken { attempt: request.attempt, from: request.received })
    }

    /// The answer to a taken request, saying the host has opened `received` client records.
    pub fn answer(&self, taken: &Taken, received: u64) -> [u8; RESUME_ANSWER_LEN] {
        let mut answer = [0u8; RESUME_ANSWER_LEN];
        answer[0] = STATUS_RESUMED;
        answer[1..9].copy_from_slice(&received.to_be_bytes());
        answer[9..].copy_from_slice(&self.keys.answer_mac(taken.attempt, STATUS_RESUMED, received));
        answer
    }
}

/// A resume request the host took: its attempt, and where the host's replay starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The request's attempt number (the answer is bound to it).
    pub attempt: u64,
    /// The client has opened this many host records: replay from here.
    pub from: u64,
}

/// Sealed records of one direction, kept until the peer acknowledges them.
#[derive(Debug)]
pub struct ReplayBuffer {
    /// Sealed records, and whether each is an acknowledgement.
    records: VecDeque<(Bytes, bool)>,
    /// Counter of `records[0]`: the peer has acknowledged everything before it.
    first: u64,
    /// Bytes charged: each record's length plus [`RECORD_OVERHEAD`].
    charged: usize,
    /// How many of the held records are acknowledgements.
    acks: usize,
    limit: usize,
}

fn cost(wire_len: usize) -> usize {
    wire_len + RECORD_OVERHEAD
}

impl ReplayBuffer {
    /// A buffer for data records of at most `limit` bytes. One record is always taken into
    /// an empty buffer, so a sender makes progress whatever the limit.
    pub fn new(limit: usize) -> Self {
        Self { records: VecDeque::new(), first: 0, charged: 0, acks: 0, limit }
    }

    /// Whether a data record of `wire_len` bytes fits now.
    pub fn has_room(&self, wire_len: usize) -> bool {
        let data = self.data_charged();
        data == 0 || data + cost(wire_len) <= self.limit
    }

    /// Bytes charged for `Data` and `Fin` records (what the limit bounds).
    pub fn data_charged(&self) -> usize {
        self.charged - self.acks * cost(ACK_WIRE_LEN)
    }

    /// Bytes held now, bookkeeping included.
    pub fn charged(&self) -> usize {
        self.charged
    }

    /// The most this buffer ever holds: the data limit (or one largest record, if the limit
    /// is smaller) plus the outstanding acknowledgements.
    pub fn bound(&self) -> usize {
        self.limit.max(cost(2 + MAX_RECORD_LEN)) + MAX_OUTSTANDING_ACKS * cost(ACK_WIRE_LEN)
    }

    /// Records held (not yet acknowledged).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Counter of the next record to be sealed.
    pub fn next(&self) -> u64 {
        self.first + self.records.len() as u64
    }

    fn push(&mut self, sealed: Bytes, is_ack: bool) {
        self.charged += cost(sealed.len());
        self.acks += usize::from(is_ack);
        self.records.push_back((sealed, is_ack));
    }

    /// The peer has received `received` records: let go of those. An old count is ignored
    /// (acknowledgements can overtake each other across paths); a count of records never
    /// sealed is a broken or forged peer.
    pub fn acknowledge(&mut self, received: u64) -> Result<(), Error> {
        if received > self.next() {
            return Err(Error::BadRecord("the peer acknowledged records never sent"));
        }
        while self.first < received {
            let Some((record, is_ack)) = self.records.pop_front() else { break };
            self.charged -= cost(record.len());
            self.acks -= usize::from(is_ack);
            self.first += 1;
        }
        // A queue that held many small records keeps its slots otherwise: an idle session
        // would hold them for good.
        if self.records.capacity() > 64 && self.records.len() < self.records.capacity() / 4 {
            self.records.shrink_to(self.records.len() * 2);
        }
        Ok(())
    }

    /// Whether a peer that has received `received` records can be brought up to date.
    pub fn can_replay_from(&self, received: u64) -> bool {
        (self.first..=self.next()).contains(&received)
    }

    /// The sealed records from counter `received` on, to send again on a new path (the same
    /// bytes under the same counters: no nonce is ever used for two plaintexts).
    pub fn replay_from(&self, received: u64) -> Result<impl Iterator<Item = &Bytes>, Error> {
        if !self.can_replay_from(received) {
            return Err(Error::ResumeRefused { why: ResumeRefusal::BadCounters });
        }
        // In range: `received - first` is at most `records.len()`.
        Ok(self.records.iter().skip((received - self.first) as usize).map(|(record, _)| record))
    }
}

/// The sending half of a resumable session: seals records and keeps them for a replay.
pub struct Outbound {
    sealer: Sealer,
    replay: ReplayBuffer,
}

impl Outbound {
    /// A sender over `sealer` whose replay buffer holds at most `limit` bytes of data.
    pub fn new(sealer: Sealer, limit: usize) -> Self {
        Self { sealer, replay: ReplayBuffer::new(limit) }
    }

    /// Whether `data_len` application bytes can be sealed now; when not, wait for an
    /// acknowledgement (the backpressure that bounds the session's memory).
    pub fn has_room(&self, data_len: usize) -> bool {
        self.replay.has_room(2 + 1 + data_len + crate::e2e::record::TAG_LEN)
    }

    /// Seals a `Data` or `Fin` record, keeps it for a replay and returns its bytes to send.
    /// Fails with [`Error::ReplayFull`] when [`Outbound::has_room`] says no.
    pub fn seal(&mut self, kind: RecordKind, data: &[u8]) -> Result<Bytes, Error> {
        if kind == RecordKind::Ack {
            return Err(Error::BadRecord("acknowledgements are sealed with Outbound::seal_ack"));
        }
        if !self.has_room(data.len()) {
            return Err(Error::ReplayFull);
        }
        self.seal_kept(kind, data, false)
    }

    /// Seals an acknowledgement that `received` peer records have been opened. Never held
    /// back by the data bound; fails when the peer leaves too many of them unacknowledged.
    pub fn seal_ack(&mut self, received: u64) -> Result<Bytes, Error> {
        self.seal_ack_body(received)
    }

    /// Seals a keep-alive: an acknowledgement of `received` that also says this end's
    /// application is not reading (its peer then holds its stall watch, see
    /// [`Opened::Paused`]). Costs what an `Ack` costs, and is acknowledged like one.
    pub fn seal_keepalive(&mut self, received: u64) -> Result<Bytes, Error> {
        if received & crate::e2e::record::ACK_PAUSED != 0 {
            return Err(Error::BadRecord("a count too large to acknowledge"));
        }
        self.seal_ack_body(received | crate::e2e::record::ACK_PAUSED)
    }

    fn seal_ack_body(&mut self, body: u64) -> Result<Bytes, Error> {
        if self.replay.acks >= MAX_OUTSTANDING_ACKS {
            return Err(Error::BadRecord("the peer does not acknowledge our acknowledgements"));
        }
        self.seal_kept(RecordKind::Ack, &body.to_be_bytes(), true)
    }

    fn seal_kept(&mut self, kind: RecordKind, data: &[u8], is_ack: bool) -> Result<Bytes, Error> {
        let mut out = BytesMut::with_capacity(2 + 1 + data.len() + crate::e2e::record::TAG_LEN);
        self.sealer.seal(kind, data, &mut out)?;
        let sealed = out.freeze();
        self.replay.push(sealed.clone(), is_ack);
        Ok(sealed)
    }

    /// The peer acknowledged `received` records (an `Ack`, or its count in a resume).
    /// `Ok(true)` when that let go of records (progress), `Ok(false)` for an old count.
    pub fn acknowledge(&mut self, received: u64) -> Result<bool, Error> {
        let before = self.replay.len();
        self.replay.acknowledge(received)?;
        Ok(self.replay.len() < before)
    }

    /// The records to send again to a peer that has opened `received`, acknowledging what
    /// came before.
    pub fn replay_from(&mut self, received: u64) -> Result<Vec<Bytes>, Error> {
        let records = self.replay.replay_from(received)?.cloned().collect();
        self.replay.acknowledge(received)?;
        Ok(records)
    }

    /// The replay buffer (sizes, counters).
    pub fn replay(&self) -> &ReplayBuffer {
        &self.replay
    }

    /// The most memory the replay buffer ever holds, in bytes.
    pub fn bound(&self) -> usize {
        self.replay.bound()
    }

    /// Records sealed and not yet acknowledged (the stall detector watches it move).
    pub fn unacknowledged(&self) -> usize {
        self.replay.len()
    }
}

/// The receiving half of a resumable session: opens records and says when to acknowledge.
pub struct Inbound {
    opener: Opener,
    /// Records of any kind since the last acknowledgement.
    unacked_records: u64,
    unacked_bytes: usize,
    /// Whether a `Data` or `Fin` is among them (what a delayed acknowledgement answers).
    unacked_data: bool,
    /// Whether the peer's `Fin` is among them (acknowledged at once: the peer waits for it
    /// to finish the stream).
    unacked_fin: bool,
}

impl Inbound {
    /// A receiver over `opener`.
    pub fn new(opener: Opener) -> Self {
        Self { opener, unacked_records: 0, unacked_bytes: 0, unacked_data: false, unacked_fin: false }
    }

    /// Takes one record from the front of `buf` (`Ok(None)`: read more). After a path is
    /// lost the caller drops the partial record left in its buffer; the counters stay.
    pub fn open(&mut self, buf: &mut BytesMut) -> Result<Option<Opened>, Error> {
        let before = buf.len();
        let opened = self.opener.open_any(buf)?;
        if let Some(record) = &opened {
            self.unacked_records += 1;
            self.unacked_bytes += before - buf.len();
            self.unacked_data |= matches!(record, Opened::Data(_) | Opened::Fin);
            self.unacked_fin |= matches!(record, Opened::Fin);
        }
        Ok(opened)
    }

    /// Records opened so far: what a resume request or an `Ack` says.
    pub fn received(&self) -> u64 {
        self.opener.records()
    }

    /// Whether enough has arrived since the last acknowledgement that one should go now
    /// (without waiting for [`ACK_DELAY`]): [`ACK_EVERY_RECORDS`], [`ACK_EVERY_BYTES`], or the
    /// peer's `Fin`.
    pub fn ack_due(&self) -> bool {
        self.unacked_records >= ACK_EVERY_RECORDS || self.unacked_bytes >= ACK_EVERY_BYTES || self.unacked_fin
    }

    /// Whether data or a `Fin` arrived since the last acknowledgement: then one goes at the
    /// latest [`ACK_DELAY`] after the first of them arrived (the caller keeps the clock), so
    /// the peer's buffer empties. Acknowledgements alone do not count here (two idle ends
    /// would otherwise acknowledge each other for ever).
    pub fn has_unacknowledged(&self) -> bool {
        self.unacked_data
    }

    /// The count to acknowledge now; resets the thresholds.
    pub fn take_ack(&mut self) -> u64 {
        self.unacked_records = 0;
        self.unacked_bytes = 0;
        self.unacked_data = false;
        self.unacked_fin = false;
        self.received()
    }

    /// Whether the peer's authenticated `Fin` has arrived.
    pub fn is_finished(&self) -> bool {
        self.opener.is_finished()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::record::{MAX_RECORD_DATA, Opener, Record};
    use proptest::prelude::*;

    fn keys(seed: u8) -> ResumeKeys {
        ResumeKeys::derive(&[seed; 32], &[seed.wrapping_add(1); 32], &[seed.wrapping_add(2); 32])
    }

    fn refusal(result: Result<impl std::fmt::Debug, Error>) -> ResumeRefusal {
        match result {
            Err(Error::ResumeRefused { why }) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// A host sending half holding `n` records of 100 bytes, none acknowledged.
    fn host_out(n: usize) -> Outbound {
        let mut out = Outbound::new(Sealer::new(&[3; 32]).unwrap(), DEFAULT_REPLAY_LIMIT);
        for _ in 0..n {
            out.seal(RecordKind::Data, &[7; 100]).unwrap();
        }
        out
    }

    #[test]
    fn keys_depend_on_the_split_keys_not_only_on_the_public_hash() {
        let a = ResumeKeys::derive(&[1; 32], &[2; 32], &[3; 32]);
        let b = ResumeKeys::derive(&[1; 32], &[2; 32], &[4; 32]);
        assert_ne!(a.id(), b.id());
        assert_ne!(a.request_mac(1, 0), b.request_mac(1, 0));
        assert_eq!(a.id(), ResumeKeys::derive(&[1; 32], &[2; 32], &[3; 32]).id());
        assert_eq!(format!("{a:?} {:?}", a.id()), "ResumeKeys(..) SessionId(..)", "secrets stay out of logs");
    }

    #[test]
    fn a_resume_round_trip_gives_both_ends_the_other_s_counter() {
        let mut client = ClientResume::new(keys(1));
        let mut host = HostResume::new(keys(1));
        let mut out = host_out(10);
        let request = client.request(4);
        let wire = request.encode();
        assert_eq!(wire.len(), RESUME_REQUEST_LEN);
        let request = ResumeRequest::decode(&wire).unwrap();
        let (answer, from) = host.take(&request, &out, 7).unwrap();
        assert_eq!(from, 4);
        assert_eq!(out.replay_from(from).unwrap().len(), 6, "only what the client lacks");
        assert_eq!(out.replay().len(), 6, "the client's count acknowledged the first four");
        assert_eq!(client.read_answer(&answer).unwrap(), 7);
    }

    #[test]
    fn a_replayed_request_is_refused_and_the_live_session_is_untouched() {
        let mut client = ClientResume::new(keys(1));
        let mut host = HostResume::new(keys(1));
        let out = host_out(10);
        let captured = client.request(2).encode();
        host.take(&ResumeRequest::decode(&captured).unwrap(), &out, 0).unwrap();
        // A relay that carried the request sends it again, on this or another path; or a
        // second client tries to join the resumed session with it.
        for _ in 0..3 {
            let again = ResumeRequest::decode(&captured).unwrap();
            assert_eq!(refusal(host.take(&again, &out, 0)), ResumeRefusal::StaleAttempt);
        }
        assert_eq!(out.replay().len(), 10, "nothing acknowledged, nothing dropped");
        assert_eq!(host.last_attempt, 1);
        // The real client's next attempt still works.
        let (answer, _) = host.take(&client.request(3), &out, 0).unwrap();
        assert_eq!(client.read_answer(&answer).unwrap(), 0);
        assert_eq!(host.last_attempt, 2);
    }

    #[test]
    fn a_request_forged_without_the_secret_is_refused_and_changes_nothing() {
        let mut host = HostResume::new(keys(1));
        let out = host_out(5);
        // Someone who knows the id (a relay saw it) but not the secret.
        let mut forger = ClientResume::new(keys(9));
        let mut forged = forger.request(0);
        forged.id = host.id();
        assert_eq!(refusal(host.take(&forged, &out, 0)), ResumeRefusal::BadMac);
        // A genuine request with its counter or attempt changed in flight.
        let mut client = ClientResume::new(keys(1));
        let mut wire = client.request(1).encode();
        wire[31] ^= 1;
        assert_eq!(refusal(host.take(&ResumeRequest::decode(&wire).unwrap(), &out, 0)), ResumeRefusal::BadMac);
        let mut wire = client.request(1).encode();
        wire[23] = wire[23].wrapping_add(5);
        assert_eq!(refusal(host.take(&ResumeRequest::decode(&wire).unwrap(), &out, 0)), ResumeRefusal::BadMac);
        // Another session's request, and junk.
        let mut other = ClientResume::new(keys(2));
        assert_eq!(refusal(host.take(&other.request(0), &out, 0)), ResumeRefusal::UnknownSession);
        assert_eq!(refusal(ResumeRequest::decode(&wire[1..])), ResumeRefusal::Malformed);
        assert_eq!(host.last_attempt, 0, "no refused request moved the attempt");
        assert_eq!(out.replay().len(), 5);
        // The client's own later attempt (its attempts 1 and 2 went to the forgeries) works.
        assert!(host.take(&client.request(0), &out, 0).is_ok());
    }

    #[test]
    fn counters_the_host_cannot_serve_are_refused_before_the_attempt_is_taken() {
        let mut client = ClientResume::new(keys(1));
        let mut host = HostResume::new(keys(1));
        let mut out = host_out(10);
        out.acknowledge(3).unwrap();
        for received in [0, 2, 11, u64::MAX] {
            assert_eq!(refusal(host.take(&client.request(received), &out, 0)), ResumeRefusal::BadCounters);
        }
        assert_eq!(host.last_attempt, 0);
        assert!(host.take(&client.request(3), &out, 0).is_ok());
        assert!(host.take(&client.request(10), &out, 0).is_ok());
    }

    #[test]
    fn a_forged_or_stale_answer_is_refused() {
        let mut client = ClientResume::new(keys(1));
        let mut host = HostResume::new(keys(1));
        let out = host_out(1);
        let (first_answer, _) = host.take(&client.request(0), &out, 0).unwrap();
        client.request(0);
        assert_eq!(refusal(client.read_answer(&first_answer)), ResumeRefusal::BadMac, "an answer to an older attempt");
        let mut fake = [0u8; RESUME_ANSWER_LEN];
        fake[8] = 1;
        assert_eq!(refusal(client.read_answer(&fake)), ResumeRefusal::BadMac);
        assert_eq!(refusal(client.read_answer(&refusal_answer())), ResumeRefusal::Refused);
        assert_eq!(refusal(client.read_answer(&fake[1..])), ResumeRefusal::Malformed);
    }

    #[test]
    fn acks_are_refused_outside_resumable_sessions_and_allowed_after_fin() {
        let key = [5u8; 32];
        let mut sealer = Sealer::new(&key).unwrap();
        let mut wire = BytesMut::new();
        sealer.seal(RecordKind::Fin, b"", &mut wire).unwrap();
        sealer.seal(RecordKind::Ack, &9u64.to_be_bytes(), &mut wire).unwrap();
        let mut resumable = Opener::new(&key).unwrap();
        let mut plain = Opener::new(&key).unwrap();
        let mut copy = wire.clone();
        assert_eq!(resumable.open_any(&mut wire).unwrap(), Some(Opened::Fin));
        assert_eq!(resumable.open_any(&mut wire).unwrap(), Some(Opened::Ack(9)));
        assert_eq!(plain.open(&mut copy).unwrap(), Some(Record::Fin));
        assert!(plain.open(&mut copy).is_err());
        assert!(sealer.seal(RecordKind::Ack, b"short", &mut wire).is_err());
        // Data after Fin is still refused in a resumable session.
        sealer.seal(RecordKind::Data, b"late", &mut wire).unwrap();
        assert!(resumable.open_any(&mut wire).is_err());
    }

    #[test]
    fn an_ack_of_records_never_sent_fails_and_old_acks_are_ignored() {
        let mut out = host_out(4);
        assert!(out.acknowledge(5).is_err());
        out.acknowledge(3).unwrap();
        out.acknowledge(1).unwrap();
        assert_eq!(out.replay().len(), 1);
        assert_eq!(out.replay().next(), 4);
    }

    #[test]
    fn a_full_buffer_refuses_data_but_not_acks_and_an_ack_frees_it() {
        let mut out = Outbound::new(Sealer::new(&[1; 32]).unwrap(), 0);
        let mut sealed = 0u64;
        while out.has_room(1000) {
            out.seal(RecordKind::Data, &[0; 1000]).unwrap();
            sealed += 1;
            assert!(sealed < 1000, "the buffer is bounded");
        }
        assert!(matches!(out.seal(RecordKind::Data, &[0; 1000]), Err(Error::ReplayFull)));
        assert!(out.replay().charged() <= out.bound());
        out.seal_ack(3).unwrap();
        out.acknowledge(1).unwrap();
        assert!(out.has_room(1000));
        // A peer that never acknowledges our acknowledgements cannot make us grow.
        let mut stuck = Outbound::new(Sealer::new(&[1; 32]).unwrap(), 0);
        for i in 0..MAX_OUTSTANDING_ACKS as u64 {
            stuck.seal_ack(i).unwrap();
        }
        assert!(stuck.seal_ack(0).is_err());
        assert!(stuck.replay().charged() <= stuck.bound());
    }

    /// Sends `records` records of `size` bytes one way, the receiver reading `batch` records
    /// at a time and acknowledging as the bridge does (when due, and when its input goes
    /// idle); returns (data wire bytes, ack records, ack wire bytes, peak replay bytes).
    fn ack_cost(records: usize, size: usize, batch: usize) -> (usize, usize, usize, usize) {
        let mut out = Outbound::new(Sealer::new(&[1; 32]).unwrap(), DEFAULT_REPLAY_LIMIT);
        let mut inb = Inbound::new(Opener::new(&[1; 32]).unwrap());
        let mut back = Outbound::new(Sealer::new(&[2; 32]).unwrap(), DEFAULT_REPLAY_LIMIT);
        let mut back_in = Inbound::new(Opener::new(&[2; 32]).unwrap());
        let (mut data_bytes, mut acks, mut ack_bytes, mut peak) = (0, 0, 0, 0);
        let data = vec![7u8; size];
        let mut sent = 0;
        while sent < records {
            let mut wire = BytesMut::new();
            for _ in 0..batch.min(records - sent) {
                assert!(out.has_room(size), "the acknowledgements keep room");
                let record = out.seal(RecordKind::Data, &data).unwrap();
                data_bytes += record.len();
                wire.extend_from_slice(&record);
                sent += 1;
            }
            peak = peak.max(out.replay().charged());
            let mut ack_wire = BytesMut::new();
            while let Some(opened) = inb.open(&mut wire).unwrap() {
                assert!(matches!(opened, Opened::Data(_)));
                if inb.ack_due() {
                    ack_wire.extend_from_slice(&back.seal_ack(inb.take_ack()).unwrap());
                }
            }
            if inb.has_unacknowledged() {
                ack_wire.extend_from_slice(&back.seal_ack(inb.take_ack()).unwrap());
            }
            while let Some(opened) = back_in.open(&mut ack_wire).unwrap() {
                let Opened::Ack(n) = opened else { panic!("only acks come back") };
                acks += 1;
                ack_bytes += ACK_WIRE_LEN;
                out.acknowledge(n).unwrap();
            }
            // The sender's own acks of the acks, as its 32-record rule sends them.
            if back_in.ack_due() {
                back.acknowledge(back_in.take_ack()).unwrap();
            }
        }
        (data_bytes, acks, ack_bytes, peak)
    }

    #[test]
    fn acknowledgements_cost_under_a_tenth_of_a_percent_in_bulk() {
        // 256 MiB in full records, read one record at a time (the worst case for bulk: every
        // read ends idle, so every record is acknowledged on its own).
        let (data, acks, ack_bytes, peak) = ack_cost(4097, MAX_RECORD_DATA, 1);
        let overhead = ack_bytes as f64 / data as f64;
        eprintln!(
            "bulk: {data} data bytes, {acks} acks, {ack_bytes} ack bytes ({:.4} %), replay peak {peak} B",
            overhead * 100.0
        );
        assert!(overhead < 0.001, "{overhead}");
        // Read 8 records at a time: fewer acknowledgements still.
        let (data, acks, ack_bytes, _) = ack_cost(4096, MAX_RECORD_DATA, 8);
        eprintln!("bulk, 8 records per read: {acks} acks, {:.4} %", ack_bytes as f64 / data as f64 * 100.0);
        // Interactive: 100-byte records, each read alone: one ack per record.
        let (data, acks, ack_bytes, _) = ack_cost(1000, 100, 1);
        eprintln!(
            "interactive, 100-byte records: {acks} acks, {:.1} % of the data bytes",
            ack_bytes as f64 / data as f64 * 100.0
        );
        assert!(acks <= 1000);
        let (data, acks, ack_bytes, _) = ack_cost(1024, 100, 64);
        eprintln!("small records, 64 per read: {acks} acks, {:.1} %", ack_bytes as f64 / data as f64 * 100.0);
        assert!(acks <= 1024 / ACK_EVERY_RECORDS as usize + 1024 / 64);
    }

    /// Sends `records` records of `size` bytes one way, one every `gap_us` microseconds (a
    /// fake clock), the receiver acknowledging on receipt as the bridge does: when
    /// [`Inbound::ack_due`], else [`ACK_DELAY`] after the first unacknowledged record.
    /// Returns (data wire bytes, ack records, ack wire bytes).
    fn timed_ack_cost(records: usize, size: usize, gap_us: u64) -> (usize, usize, usize) {
        let mut out = Outbound::new(Sealer::new(&[1; 32]).unwrap(), DEFAULT_REPLAY_LIMIT);
        let mut inb = Inbound::new(Opener::new(&[1; 32]).unwrap());
        let mut back = Outbound::new(Sealer::new(&[2; 32]).unwrap(), DEFAULT_REPLAY_LIMIT);
        let delay = ACK_DELAY.as_micros() as u64;
        let (mut data_bytes, mut acks) = (0, 0);
        // When the first unacknowledged record arrived (µs on the fake clock).
        let mut since: Option<u64> = None;
        let data = vec![7u8; size];
        for i in 0..records as u64 {
            let now = i * gap_us;
            // The delay timer fires before this record arrives.
            if since.is_some_and(|at| at + delay <= now) {
                back.seal_ack(inb.take_ack()).unwrap();
                acks += 1;
                since = None;
            }
            let record = out.seal(RecordKind::Data, &data).unwrap();
            data_bytes += record.len();
            let mut wire = BytesMut::from(&record[..]);
            let Some(Opened::Data(_)) = inb.open(&mut wire).unwrap() else { panic!("a data record") };
            since.get_or_insert(now);
            if inb.ack_due() {
                let n = inb.take_ack();
                back.seal_ack(n).unwrap();
                out.acknowledge(n).unwrap();
                acks += 1;
                since = None;
            }
            // The sender's replay buffer lets go as acknowledgements come (instantly here).
            if since.is_none() {
                out.acknowledge(inb.received()).unwrap();
            }
            back.acknowledge(back.replay().next()).unwrap();
        }
        if inb.has_unacknowledged() {
            acks += 1;
        }
        (data_bytes, acks, acks * ACK_WIRE_LEN)
    }

    #[test]
    fn acknowledgements_on_receipt_cover_bursts_of_small_records() {
        // 100-byte records read one at a time used to cost one 27-byte ack each (22.7 %).
        // Acknowledged on receipt with the delay, a record every millisecond (a game, a
        // chatty protocol) costs one ack per 20 of them.
        let (data, acks, ack_bytes) = timed_ack_cost(1000, 100, 1000);
        let overhead = ack_bytes as f64 / data as f64;
        eprintln!(
            "100-byte records, one per ms: {acks} acks for 1000 records, {:.2} % of the data bytes",
            overhead * 100.0
        );
        assert!(acks <= 1000 / 20 + 1, "{acks}");
        assert!(overhead < 0.02, "{overhead}");
        // Faster still: the record-count threshold takes over.
        let (data, acks, ack_bytes) = timed_ack_cost(1024, 100, 100);
        eprintln!("100-byte records, one per 0.1 ms: {acks} acks, {:.2} %", ack_bytes as f64 / data as f64 * 100.0);
        assert!(acks <= 1024 / ACK_EVERY_RECORDS as usize + 1, "{acks}");
        // One record every 100 ms (typing): nothing to coalesce, one ack each, as before.
        let (data, acks, ack_bytes) = timed_ack_cost(100, 100, 100_000);
        eprintln!("100-byte records, one per 100 ms: {acks} acks, {:.1} %", ack_bytes as f64 / data as f64 * 100.0);
        assert_eq!(acks, 100);
        // Bulk: full records back to back, one ack per record (the byte threshold).
        let (data, acks, ack_bytes) = timed_ack_cost(4096, MAX_RECORD_DATA, 10);
        eprintln!("bulk: {acks} acks, {:.4} %", ack_bytes as f64 / data as f64 * 100.0);
        assert!((ack_bytes as f64 / data as f64) < 0.001);
    }

    #[test]
    fn a_keepalive_is_an_acknowledgement_that_says_paused() {
        let mut out = host_out(3);
        let mut wire = BytesMut::new();
        let mut back = Outbound::new(Sealer::new(&[4; 32]).unwrap(), DEFAULT_REPLAY_LIMIT);
        wire.extend_from_slice(&back.seal_keepalive(2).unwrap());
        wire.extend_from_slice(&back.seal_ack(3).unwrap());
        let mut inb = Inbound::new(Opener::new(&[4; 32]).unwrap());
        assert_eq!(inb.open(&mut wire).unwrap(), Some(Opened::Paused(2)));
        assert!(!inb.has_unacknowledged(), "a keep-alive is not data to acknowledge");
        assert_eq!(inb.open(&mut wire).unwrap(), Some(Opened::Ack(3)));
        assert!(out.acknowledge(2).unwrap(), "progress");
        assert!(!out.acknowledge(2).unwrap(), "the same count again is no progress");
        assert_eq!(back.replay().len(), 2, "a keep-alive is kept for a replay like any record");
        assert!(back.seal_keepalive(crate::e2e::record::ACK_PAUSED).is_err());
        // A plain session refuses both.
        let mut plain = Opener::new(&[4; 32]).unwrap();
        let mut wire = BytesMut::from(&back.replay_from(0).unwrap()[0][..]);
        assert!(plain.open(&mut wire).is_err());
    }

    #[test]
    fn a_fin_is_acknowledged_at_once() {
        let mut sealer = Sealer::new(&[6; 32]).unwrap();
        let mut wire = BytesMut::new();
        sealer.seal(RecordKind::Data, b"last", &mut wire).unwrap();
        sealer.seal(RecordKind::Fin, b"", &mut wire).unwrap();
        let mut inb = Inbound::new(Opener::new(&[6; 32]).unwrap());
        inb.open(&mut wire).unwrap();
        assert!(!inb.ack_due(), "one small record waits for the delay");
        assert!(inb.has_unacknowledged());
        inb.open(&mut wire).unwrap();
        assert!(inb.ack_due(), "the Fin does not wait");
        assert_eq!(inb.take_ack(), 2);
        assert!(!inb.ack_due());
    }

    #[test]
    fn an_idle_buffer_lets_go_of_its_slots() {
        let mut out = Outbound::new(Sealer::new(&[1; 32]).unwrap(), DEFAULT_REPLAY_LIMIT);
        for _ in 0..5000 {
            out.seal(RecordKind::Data, b"tiny").unwrap();
        }
        assert!(out.replay.records.capacity() >= 5000);
        out.acknowledge(5000).unwrap();
        assert_eq!(out.replay().charged(), 0);
        assert!(out.replay.records.capacity() <= 64, "{}", out.replay.records.capacity());
    }

    // ---- the simulated path ----

    /// One end of a resumable session in the simulation.
    struct End {
        out: Outbound,
        inb: Inbound,
        /// What this end's application writes, and how much of it has been sealed.
        app: Vec<u8>,
        sealed: usize,
        fin_sealed: bool,
        /// What this end has delivered to its application.
        delivered: Vec<u8>,
        /// Received bytes not yet a whole record (dropped when the path is lost).
        rx: BytesMut,
        /// The largest the replay buffer ever held, and its data part.
        peak: usize,
        peak_data: usize,
    }

    impl End {
        fn new(seal_key: u8, open_key: u8, app: Vec<u8>, limit: usize) -> Self {
            Self {
                out: Outbound::new(Sealer::with_rekey_interval(&[seal_key; 32], 7).unwrap(), limit),
                inb: Inbound::new(Opener::with_rekey_interval(&[open_key; 32], 7).unwrap()),
                app,
                sealed: 0,
                fin_sealed: false,
                delivered: Vec::new(),
                rx: BytesMut::new(),
                peak: 0,
                peak_data: 0,
            }
        }

        /// Seals up to `len` more application bytes (or the `Fin`) if the buffer has room.
        fn write(&mut self, len: usize) -> Option<Bytes> {
            let len = len.min(self.app.len() - self.sealed);
            let record = if len > 0 {
                if !self.out.has_room(len) {
                    return None;
                }
                let record = self.out.seal(RecordKind::Data, &self.app[self.sealed..self.sealed + len]).unwrap();
                self.sealed += len;
                record
            } else if !self.fin_sealed && self.sealed == self.app.len() {
                if !self.out.has_room(0) {
                    return None;
                }
                self.fin_sealed = true;
                self.out.seal(RecordKind::Fin, b"").unwrap()
            } else {
                return None;
            };
            self.peak = self.peak.max(self.out.replay().charged());
            self.peak_data = self.peak_data.max(self.out.replay().data_charged());
            Some(record)
        }

        /// Takes arrived bytes; returns the acknowledgement to send, if one is due.
        fn read(&mut self, bytes: &[u8]) -> Option<Bytes> {
            self.rx.extend_from_slice(bytes);
            while let Some(record) = self.inb.open(&mut self.rx).unwrap() {
                match record {
                    Opened::Data(data) => self.delivered.extend_from_slice(&data),
                    Opened::Fin => {}
                    Opened::Ack(n) | Opened::Paused(n) => {
                        self.out.acknowledge(n).unwrap();
                    }
                }
            }
            self.inb.ack_due().then(|| self.ack())
        }

        fn ack(&mut self) -> Bytes {
            let ack = self.out.seal_ack(self.inb.take_ack()).unwrap();
            self.peak = self.peak.max(self.out.replay().charged());
            ack
        }

        fn done(&self, peer: &End) -> bool {
            self.delivered.len() == peer.app.len() && self.inb.is_finished()
        }
    }

    /// One ordered direction of the path: frames in flight, in order.
    type Flight = std::collections::VecDeque<Bytes>;

    #[derive(Clone, Debug)]
    enum Op {
        /// The client (true) or host writes this many bytes.
        Write(bool, usize),
        /// Toward the client (true) or host: deliver this many frames, then part of the next.
        Deliver(bool, usize, usize),
        /// The client or host input goes idle: acknowledge what is unacknowledged.
        Idle(bool),
        /// The path dies: everything in flight is lost.
        Cut,
        /// The client resumes on a new path; the request, or the host's answer and the start
        /// of its replay, may be lost with that path too.
        Resume { lose_request: bool, lose_answer: bool },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<bool>(), 0..4000usize).prop_map(|(c, n)| Op::Write(c, n)),
            4 => (any::<bool>(), 0..6usize, 0..200usize).prop_map(|(c, n, p)| Op::Deliver(c, n, p)),
            1 => any::<bool>().prop_map(Op::Idle),
            1 => Just(Op::Cut),
            1 => (any::<bool>(), any::<bool>()).prop_map(|(r, a)| Op::Resume { lose_request: r, lose_answer: a }),
        ]
    }

    struct Sim {
        client: End,
        host: End,
        client_resume: ClientResume,
        host_resume: HostResume,
        to_client: Flight,
        to_host: Flight,
        alive: bool,
        resumes: u32,
    }

    impl Sim {
        fn send(&mut self, toward_client: bool, frame: Option<Bytes>) {
            // On a dead path writes go nowhere; the records stay in the replay buffer.
            if let (Some(frame), true) = (frame, self.alive) {
                if toward_client { self.to_client.push_back(frame) } else { self.to_host.push_back(frame) }
            }
        }

        fn deliver(&mut self, toward_client: bool, frames: usize, part: usize) {
            for i in 0..=frames {
                let flight = if toward_client { &mut self.to_client } else { &mut self.to_host };
                let Some(mut frame) = flight.pop_front() else { return };
                if i == frames {
                    // Part of one more frame; the rest stays in flight.
                    let part = part.min(frame.len());
                    let rest = frame.split_off(part);
                    if !rest.is_empty() {
                        flight.push_front(rest);
                    }
                }
                let (to, back) = if toward_client { (&mut self.client, false) } else { (&mut self.host, true) };
                let ack = to.read(&frame);
                self.send(back, ack);
            }
        }

        fn idle(&mut self, client: bool) {
            let end = if client { &mut self.client } else { &mut self.host };
            if end.inb.has_unacknowledged() {
                let ack = end.ack();
                self.send(!client, Some(ack));
            }
        }

        fn cut(&mut self) {
            self.alive = false;
            self.to_client.clear();
            self.to_host.clear();
            // The partial record each end had is lost with its path.
            self.client.rx.clear();
            self.host.rx.clear();
        }

        fn resume(&mut self, lose_request: bool, lose_answer: bool) {
            self.cut();
            let request = self.client_resume.request(self.client.inb.received());
            if lose_request {
                return;
            }
            let request = ResumeRequest::decode(&request.encode()).unwrap();
            let (answer, from) = self.host_resume.take(&request, &self.host.out, self.host.inb.received()).unwrap();
            self.alive = true;
            for record in self.host.out.replay_from(from).unwrap() {
                self.to_client.push_back(record);
            }
            if lose_answer {
                // The new path dies under the answer and the replay.
                self.cut();
                return;
            }
            let from = self.client_resume.read_answer(&answer).unwrap();
            for record in self.client.out.replay_from(from).unwrap() {
                self.to_host.push_back(record);
            }
            self.resumes += 1;
        }

        fn apply(&mut self, op: Op) {
            match op {
                Op::Write(client, len) => {
                    let frame = if client { self.client.write(len) } else { self.host.write(len) };
                    self.send(!client, frame);
                }
                Op::Deliver(toward_client, frames, part) => self.deliver(toward_client, frames, part),
                Op::Idle(client) => self.idle(client),
                Op::Cut => self.cut(),
                Op::Resume { lose_request, lose_answer } => self.resume(lose_request, lose_answer),
            }
        }

        fn check(&self) -> Result<(), TestCaseError> {
            for (end, peer) in [(&self.client, &self.host), (&self.host, &self.client)] {
                // Never a gap, a duplicate or a reordering: always a prefix of what was sent.
                prop_assert_eq!(&end.delivered[..], &peer.app[..end.delivered.len()]);
                prop_assert!(end.out.replay().charged() <= end.out.bound());
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn the_delivered_stream_is_the_sent_stream_whatever_the_path_does(
            client_app in proptest::collection::vec(any::<u8>(), 0..40_000),
            host_app in proptest::collection::vec(any::<u8>(), 0..40_000),
            limit in 0..60_000usize,
            ops in proptest::collection::vec(op(), 0..400),
        ) {
            let mut sim = Sim {
                client: End::new(1, 2, client_app, limit),
                host: End::new(2, 1, host_app, limit),
                client_resume: ClientResume::new(keys(4)),
                host_resume: HostResume::new(keys(4)),
                to_client: Flight::new(),
                to_host: Flight::new(),
                alive: true,
                resumes: 0,
            };
            for op in ops {
                sim.apply(op);
                sim.check()?;
            }
            let mid_run = (sim.resumes, sim.client.delivered.len() + sim.host.delivered.len());
            // Then a path that stays up until both streams are through: resume if needed,
            // write, deliver and acknowledge. Bounded: each round moves at least one record.
            if !sim.alive {
                sim.resume(false, false);
            }
            let mut rounds = 0;
            while !(sim.client.done(&sim.host) && sim.host.done(&sim.client)) {
                rounds += 1;
                prop_assert!(rounds < 10_000, "no progress");
                for client in [true, false] {
                    sim.apply(Op::Write(client, 4000));
                }
                sim.deliver(true, usize::MAX - 1, 0);
                sim.deliver(false, usize::MAX - 1, 0);
                sim.idle(true);
                sim.idle(false);
                sim.check()?;
            }
            if std::env::var_os("RESUME_SIM_STATS").is_some() {
                eprintln!("resumes {} (before the final run: {}), delivered mid-run {}, peaks {} {} of {}",
                    sim.resumes, mid_run.0, mid_run.1, sim.client.peak, sim.host.peak, sim.client.out.bound());
            }
            prop_assert_eq!(&sim.client.delivered, &sim.host.app);
            prop_assert_eq!(&sim.host.delivered, &sim.client.app);
            for end in [&sim.client, &sim.host] {
                prop_assert!(end.peak <= end.out.bound(), "peak {} over {}", end.peak, end.out.bound());
                // The data bound proper: the limit, or one record into an empty buffer.
                let one_record = cost(2 + 1 + 4000 + crate::e2e::record::TAG_LEN);
                prop_assert!(end.peak_data <= limit.max(one_record), "data peak {} over {limit}", end.peak_data);
            }
        }
    }
}
