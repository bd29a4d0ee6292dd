//! The record layer after the end-to-end handshake.
//!
//! ```text
//! record    = length (u16, big endian) | ciphertext (length bytes, 17..=65535)
//! plaintext = kind (u8) | body
//! kind      = 0 Data (body = application bytes, up to MAX_RECORD_DATA)
//!           | 1 Fin  (empty body: this direction is finished, authenticated)
//!           | 2 Ack  (body = u64 big endian: records received from the peer so far,
//!                     i.e. the highest record counter received plus one; resumable
//!                     sessions only, see `resume`. The top bit set (`ACK_PAUSED`) makes
//!                     it a keep-alive: the sender is alive but its application is not
//!                     reading, so the path is not to be taken for lost)
//! ```
//! Each direction has its own key (the Noise split) and an implicit nonce that counts
//! records, exactly as Noise's `CipherState` (AES-256-GCM, 64-bit big-endian nonce, empty
//! associated data), so a unit test checks the bytes against `snow`'s own transport.
//! Doing the AEAD here rather than in `snow::TransportState` lets each direction live in
//! its own task and seal in place in the output buffer: one copy per record.
//!
//! **Rekey**: after every [`REKEY_INTERVAL`] records in a direction, both ends replace that
//! direction's key with Noise's `REKEY(k)`; no message is needed because both count.
//!
//! **Truncation**: a direction ends with an authenticated `Fin`. A stream that stops
//! without one was cut, and the reader reports it as an error, never as a clean end.
//! Kind 2 is the acknowledgement of resumable sessions ([`crate::e2e::resume`]); an `Ack` in a
//! session that is not resumable is refused by [`Opener::open`]. Kinds 3 and up are reserved.
//!
//! Every record, an `Ack` included, takes the next counter (nonce) of its direction, so a
//! counter names one record for good: a resumed session replays the same sealed bytes under
//! the same counters and never seals two plaintexts under one nonce.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::Error;

/// Largest ciphertext of one record.
pub const MAX_RECORD_LEN: usize = u16::MAX as usize;
/// AEAD tag length.
pub const TAG_LEN: usize = 16;
/// Most application bytes one record carries.
pub const MAX_RECORD_DATA: usize = MAX_RECORD_LEN - TAG_LEN - 1;
/// Records per key before both ends rekey that direction.
pub const REKEY_INTERVAL: u64 = 1 << 16;

/// What a record says.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum RecordKind {
    /// Application bytes.
    Data = 0,
    /// The sender has finished this direction.
    Fin = 1,
    /// How many of the peer's records the sender has received (resumable sessions).
    Ack = 2,
}

/// Bytes of an `Ack` record's body: a u64 count of records received.
pub const ACK_BODY_LEN: usize = 8;
/// The bit of an `Ack` body that makes it a keep-alive of a receiver whose application has
/// stopped reading ([`Opened::Paused`]); counts never reach it.
pub const ACK_PAUSED: u64 = 1 << 63;

/// One opened record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Record {
    /// Application bytes (never empty unless the sender sent an empty record).
    Data(Bytes),
    /// The peer finished writing; this direction is complete.
    Fin,
}

/// One opened record of a resumable session: a [`Record`] or an acknowledgement.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Opened {
    /// Application bytes.
    Data(Bytes),
    /// The peer finished writing.
    Fin,
    /// The peer has received this many of our records (counters `0..n`).
    Ack(u64),
    /// As `Ack`, and the peer's application is not reading: the peer is alive, and what it
    /// has not acknowledged waits for its reader, not for a lost path.
    Paused(u64),
}

/// One direction's AEAD key and record counter.
struct Direction {
    key: LessSafeKey,
    nonce: u64,
    rekey_interval: u64,
}

impl Direction {
    fn new(raw: &[u8; 32], rekey_interval: u64) -> Result<Self, Error> {
        let key = UnboundKey::new(&AES_256_GCM, raw).map_err(|_| Error::BadRecord("bad key length"))?;
        Ok(Self { key: LessSafeKey::new(key), nonce: 0, rekey_interval })
    }

    fn nonce(n: u64) -> Nonce {
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&n.to_be_bytes());
        Nonce::assume_unique_for_key(bytes)
    }

    /// Rekeys when the record about to be processed starts a new interval.
    fn before_record(&mut self) -> Result<(), Error> {
        if self.nonce > 0 && self.nonce % self.rekey_interval == 0 {
            // Noise REKEY(k): the first 32 bytes of ENCRYPT(k, 2^64 - 1, ε, zeros).
            let mut next = [0u8; 32];
            let _tag = self
                .key
                .seal_in_place_separate_tag(Self::nonce(u64::MAX), Aad::empty(), &mut next)
                .map_err(|_| Error::BadRecord("rekey failed"))?;
            *self = Self::new(&next, self.rekey_interval).map(|d| Self { nonce: self.nonce, ..d })?;
        }
        Ok(())
    }
}

/// Seals outgoing records for one direction.
pub struct Sealer(Direction);

impl Sealer {
    /// A sealer from the raw Noise split key of this direction.
    pub fn new(key: &[u8; 32]) -> Result<Self, Error> {
        Self::with_rekey_interval(key, REKEY_INTERVAL)
    }

    /// A sealer that rekeys after `interval` records (tests use small intervals).
    pub fn with_rekey_interval(key: &[u8; 32], interval: u64) -> Result<Self, Error> {
        Ok(Self(Direction::new(key, interval.max(1))?))
    }

    /// Appends one framed record carrying `data` to `out`.
    pub fn seal(&mut self, kind: RecordKind, data: &[u8], out: &mut BytesMut) -> Result<(), Error> {
        if data.len() > MAX_RECORD_DATA {
            return Err(Error::BadRecord("more data than one record carries"));
        }
        if kind == RecordKind::Fin && !data.is_empty() {
            return Err(Error::BadRecord("a Fin record carries no data"));
        }
        if kind == RecordKind::Ack && data.len() != ACK_BODY_LEN {
            return Err(Error::BadRecord("an Ack record carries one 8-byte count"));
        }
        let d = &mut self.0;
        d.before_record()?;
        let len = 1 + data.len() + TAG_LEN;
        out.reserve(2 + len);
        out.put_u16(len as u16);
        let start = out.len();
        out.put_u8(kind as u8);
        out.extend_from_slice(data);
        let tag = d
            .key
            .seal_in_place_separate_tag(Direction::nonce(d.nonce), Aad::empty(), &mut out[start..])
            .map_err(|_| Error::BadRecord("seal failed"))?;
        out.extend_from_slice(tag.as_ref());
        d.nonce += 1;
        Ok(())
    }

    /// Records sealed so far.
    pub fn records(&self) -> u64 {
        self.0.nonce
    }
}

/// Opens incoming records for one direction.
pub struct Opener {
    dir: Direction,
    finished: bool,
}

impl Opener {
    /// An opener from the raw Noise split key of this direction.
    pub fn new(key: &[u8; 32]) -> Result<Self, Error> {
        Self::with_rekey_interval(key, REKEY_INTERVAL)
    }

    /// An opener that rekeys after `interval` records; must match the peer's sealer.
    pub fn with_rekey_interval(key: &[u8; 32], interval: u64) -> Result<Self, Error> {
        Ok(Self { dir: Direction::new(key, interval.max(1))?, finished: false })
    }

    /// Takes one record from the front of `buf`: `Ok(None)` means "read more". Any error
    /// means the stream is corrupt or forged and must be dropped.
    pub fn open(&mut self, buf: &mut BytesMut) -> Result<Option<Record>, Error> {
        match self.open_any(buf)? {
            None => Ok(None),
            Some(Opened::Data(data)) => Ok(Some(Record::Data(data))),
            Some(Opened::Fin) => Ok(Some(Record::Fin)),
            Some(Opened::Ack(_) | Opened::Paused(_)) => {
                Err(Error::BadRecord("an acknowledgement in a session that is not resumable"))
            }
        }
    }

    /// As [`Opener::open`], also taking acknowledgements (resumable sessions).
    pub fn open_any(&mut self, buf: &mut BytesMut) -> Result<Option<Opened>, Error> {
        let Some(mut sealed) = take_frame(buf, MAX_RECORD_LEN)? else {
            return Ok(None);
        };
        if sealed.len() < 1 + TAG_LEN {
            return Err(Error::BadRecord("record shorter than its tag"));
        }
        let d = &mut self.dir;
        d.before_record()?;
        let plain_len = d
            .key
            .open_in_place(Direction::nonce(d.nonce), Aad::empty(), &mut sealed)
            .map_err(|_| Error::RecordAuth)?
            .len();
        d.nonce += 1;
        sealed.truncate(plain_len);
        let kind = sealed.get_u8();
        // After `Fin` a resumable peer still acknowledges what it receives; nothing else.
        if self.finished && kind != RecordKind::Ack as u8 {
            return Err(Error::BadRecord("data after the end of the stream"));
        }
        match kind {
            0 => Ok(Some(Opened::Data(sealed.freeze()))),
            1 if sealed.is_empty() => {
                self.finished = true;
                Ok(Some(Opened::Fin))
            }
            1 => Err(Error::BadRecord("a Fin record carried data")),
            2 => {
                let count = <[u8; ACK_BODY_LEN]>::try_from(&sealed[..])
                    .map_err(|_| Error::BadRecord("an Ack record's body is not one 8-byte count"))?;
                let count = u64::from_be_bytes(count);
                Ok(Some(if count & ACK_PAUSED == 0 { Opened::Ack(count) } else { Opened::Paused(count & !ACK_PAUSED) }))
            }
            _ => Err(Error::BadRecord("unknown record kind")),
        }
    }

    /// Records opened so far (the counter of the next record expected).
    pub fn records(&self) -> u64 {
        self.dir.nonce
    }

    /// Whether the peer's authenticated `Fin` has arrived.
    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

/// Appends `bytes` with the 2-byte length prefix (for handshake messages).
pub fn put_frame(out: &mut BytesMut, bytes: &[u8]) -> Result<(), Error> {
    let len = u16::try_from(bytes.len()).map_err(|_| Error::BadRecord("frame longer than 65535 bytes"))?;
    out.put_u16(len);
    out.extend_from_slice(bytes);
    Ok(())
}

/// Takes one length-prefixed frame of at most `max` bytes from the front of `buf`.
pub fn take_frame(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, Error> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
    if len > max {
        return Err(Error::BadRecord("frame longer than allowed here"));
    }
    if buf.len() < 2 + len {
        return Ok(None);
    }
    buf.advance(2);
    Ok(Some(buf.split_to(len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A finished IKpsk2 handshake in snow, plus the raw split of the same state.
    fn snow_pair() -> (snow::TransportState, snow::TransportState, [u8; 32], [u8; 32]) {
        let params: snow::params::NoiseParams = crate::e2e::E2E_NOISE.parse().unwrap();
        let ik = snow::Builder::new(params.clone()).generate_keypair().unwrap();
        let rk = snow::Builder::new(params.clone()).generate_keypair().unwrap();
        let psk = [4u8; 32];
        let mut i = snow::Builder::new(params.clone())
            .local_private_key(&ik.private)
            .unwrap()
            .remote_public_key(&rk.public)
            .unwrap()
            .psk(2, &psk)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut r = snow::Builder::new(params)
            .local_private_key(&rk.private)
            .unwrap()
            .psk(2, &psk)
            .unwrap()
            .build_responder()
            .unwrap();
        let (mut a, mut b) = ([0u8; 256], [0u8; 256]);
        let n = i.write_message(&[], &mut a).unwrap();
        r.read_message(&a[..n], &mut b).unwrap();
        let n = r.write_message(&[], &mut a).unwrap();
        i.read_message(&a[..n], &mut b).unwrap();
        let (k1, k2) = i.dangerously_get_raw_split();
        (i.into_transport_mode().unwrap(), r.into_transport_mode().unwrap(), k1, k2)
    }

    #[test]
    fn records_are_byte_identical_to_snow_including_rekey() {
        let (mut snow_i, _, k1, _) = snow_pair();
        let mut ours = Sealer::with_rekey_interval(&k1, 3).unwrap();
        for i in 0..10u32 {
            if i > 0 && i % 3 == 0 {
                snow_i.rekey_outgoing();
            }
            let payload = [&[RecordKind::Data as u8][..], &i.to_be_bytes(), b" payload"].concat();
            let mut theirs = vec![0u8; 128];
            let n = snow_i.write_message(&payload, &mut theirs).unwrap();
            let mut wire = BytesMut::new();
            ours.seal(RecordKind::Data, &payload[1..], &mut wire).unwrap();
            assert_eq!(&wire[2..], &theirs[..n], "record {i}");
            assert_eq!(usize::from(u16::from_be_bytes([wire[0], wire[1]])), n);
        }
    }

    #[test]
    fn rekeyed_stream_opens_and_tampering_is_detected() {
        let key = [8u8; 32];
        let mut sealer = Sealer::with_rekey_interval(&key, 4).unwrap();
        let mut opener = Opener::with_rekey_interval(&key, 4).unwrap();
        let mut wire = BytesMut::new();
        for i in 0..20u8 {
            sealer.seal(RecordKind::Data, &[i; 100], &mut wire).unwrap();
        }
        for i in 0..20u8 {
            assert_eq!(opener.open(&mut wire).unwrap(), Some(Record::Data(vec![i; 100].into())));
        }
        sealer.seal(RecordKind::Data, b"x", &mut wire).unwrap();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        assert!(matches!(opener.open(&mut wire), Err(Error::RecordAuth)));
    }

    #[test]
    fn fin_ends_the_direction() {
        let key = [1u8; 32];
        let mut sealer = Sealer::new(&key).unwrap();
        let mut opener = Opener::new(&key).unwrap();
        let mut wire = BytesMut::new();
        sealer.seal(RecordKind::Fin, b"", &mut wire).unwrap();
        sealer.seal(RecordKind::Data, b"late", &mut wire).unwrap();
        assert_eq!(opener.open(&mut wire).unwrap(), Some(Record::Fin));
        assert!(opener.is_finished());
        assert!(opener.open(&mut wire).is_err());
        assert!(sealer.seal(RecordKind::Fin, b"data", &mut wire).is_err());
        assert!(sealer.seal(RecordKind::Data, &vec![0; MAX_RECORD_DATA + 1], &mut wire).is_err());
    }

    #[test]
    fn dropped_or_reordered_records_fail() {
        let key = [2u8; 32];
        let mut sealer = Sealer::new(&key).unwrap();
        let mut opener = Opener::new(&key).unwrap();
        let (mut first, mut second) = (BytesMut::new(), BytesMut::new());
        sealer.seal(RecordKind::Data, b"one", &mut first).unwrap();
        sealer.seal(RecordKind::Data, b"two", &mut second).unwrap();
        assert!(matches!(opener.open(&mut second), Err(Error::RecordAuth)));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..70000)) {
            let mut opener = Opener::new(&[3; 32]).unwrap();
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = opener.open(&mut buf) {}
        }

        #[test]
        fn seal_then_open_is_identity(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..20)) {
            let mut sealer = Sealer::with_rekey_interval(&[9; 32], 5).unwrap();
            let mut opener = Opener::with_rekey_interval(&[9; 32], 5).unwrap();
            let mut wire = BytesMut::new();
            for c in &chunks {
                sealer.seal(RecordKind::Data, c, &mut wire).unwrap();
            }
            for c in &chunks {
                prop_assert_eq!(opener.open(&mut wire).unwrap(), Some(Record::Data(Bytes::copy_from_slice(c))));
            }
            prop_assert!(wire.is_empty());
        }
    }
}
