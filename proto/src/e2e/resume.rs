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
//!   acknowledgement (record kind 2) is due.
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
/// ...or after this many records, whichever comes first.
pub const ACK_EVERY_RECORDS: u64 = 32;
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

/// Why a resume was refused (the request checked by the host, or the answer by the client).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ResumeRefusal {
    /// The request is not `RESUME_REQUEST_LEN` bytes, or the answer not `RESUME_ANSWER_LEN`.
    Malformed,
    /// The host knows no live session of this id (ended, timed out, or never resumable).
    UnknownSession,
    /// The MAC does not verify: made without the resumption secret.
    BadMac,
    /// The attempt number is not above the last one taken: a replayed request.
    StaleAttempt,
    /// The counters name records the other end never sent or has already let go of.
    BadCounters,
    /// The host answered with a refusal.
    Refused,
}

impl std::fmt::Display for ResumeRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Malformed => "the message has the wrong length",
            Self::UnknownSession => "the host knows no live session of that id",
            Self::BadMac => "it was not made with the session's resumption secret",
            Self::StaleAttempt => "its attempt number was already used (a replay)",
            Self::BadCounters => "its record counters do not fit the session",
            Self::Refused => "the host refused it",
        })
    }
}

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
        let mut answer = [0u8; RESUME_ANSWER_LEN];
        answer[0] = STATUS_RESUMED;
        answer[1..9].copy_from_slice(&received.to_be_bytes());
        answer[9..].copy_from_slice(&self.keys.answer_mac(request.attempt, STATUS_RESUMED, received));
        Ok((answer, request.received))
    }
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
    /// A buffer for data records of at most `limit` bytes (raised to fit one largest record,
    /// so a sender can always make progress).
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(cost(2 + MAX_RECORD_LEN));
        Self { records: VecDeque::new(), first: 0, charged: 0, acks: 0, limit }
    }

    /// Whether a data record of `wire_len` bytes fits now.
    pub fn has_room(&self, wire_len: usize) -> bool {
        self.charged - self.acks * cost(ACK_WIRE_LEN) + cost(wire_len) <= self.limit
    }

    /// Bytes held now, bookkeeping included.
    pub fn charged(&self) -> usize {
        self.charged
    }

    /// The most this buffer ever holds: the data limit plus the outstanding acknowledgements.
    pub fn bound(&self) -> usize {
        self.limit + MAX_OUTSTANDING_ACKS * cost(ACK_WIRE_LEN)
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
        if self.replay.acks >= MAX_OUTSTANDING_ACKS {
            return Err(Error::BadRecord("the peer does not acknowledge our acknowledgements"));
        }
        self.seal_kept(RecordKind::Ack, &received.to_be_bytes(), true)
    }

    fn seal_kept(&mut self, kind: RecordKind, data: &[u8], is_ack: bool) -> Result<Bytes, Error> {
        let mut out = BytesMut::with_capacity(2 + 1 + data.len() + crate::e2e::record::TAG_LEN);
        self.sealer.seal(kind, data, &mut out)?;
        let sealed = out.freeze();
        self.replay.push(sealed.clone(), is_ack);
        Ok(sealed)
    }

    /// The peer acknowledged `received` records (an `Ack`, or its count in a resume).
    pub fn acknowledge(&mut self, received: u64) -> Result<(), Error> {
        self.replay.acknowledge(received)
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
    /// Whether a `Data` or `Fin` is among them (what an idle flush answers).
    unacked_data: bool,
}

impl Inbound {
    /// A receiver over `opener`.
    pub fn new(opener: Opener) -> Self {
        Self { opener, unacked_records: 0, unacked_bytes: 0, unacked_data: false }
    }

    /// Takes one record from the front of `buf` (`Ok(None)`: read more). After a path is
    /// lost the caller drops the partial record left in its buffer; the counters stay.
    pub fn open(&mut self, buf: &mut BytesMut) -> Result<Option<Opened>, Error> {
        let before = buf.len();
        let opened = self.opener.open_any(buf)?;
        if let Some(record) = &opened {
            self.unacked_records += 1;
            self.unacked_bytes += before - buf.len();
            self.unacked_data |= !matches!(record, Opened::Ack(_));
        }
        Ok(opened)
    }

    /// Records opened so far: what a resume request or an `Ack` says.
    pub fn received(&self) -> u64 {
        self.opener.records()
    }

    /// Whether enough has arrived since the last acknowledgement that one should go now.
    pub fn ack_due(&self) -> bool {
        self.unacked_records >= ACK_EVERY_RECORDS || self.unacked_bytes >= ACK_EVERY_BYTES
    }

    /// Whether data or a `Fin` arrived since the last acknowledgement: then an idle input
    /// acknowledges at once, so the peer's buffer empties. Acknowledgements alone do not
    /// count here (two idle ends would otherwise acknowledge each other for ever).
    pub fn has_unacknowledged(&self) -> bool {
        self.unacked_data
    }

    /// The count to acknowledge now; resets the thresholds.
    pub fn take_ack(&mut self) -> u64 {
        self.unacked_records = 0;
        self.unacked_bytes = 0;
        self.unacked_data = false;
        self.received()
    }

    /// Whether the peer's authenticated `Fin` has arrived.
    pub fn is_finished(&self) -> bool {
        self.opener.is_finished()
    }
}
