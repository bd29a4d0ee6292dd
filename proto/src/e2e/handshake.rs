//! The client ↔ host handshakes: the full one, Noise `IKpsk2` over X25519 and BLAKE2s with
//! ML-KEM-768 mixed in (hybrid), and the resumed one, `NNpsk0` keyed by an earlier session.
//!
//! ```text
//! prologue = "ferry/1 e2e" | host public key
//! client -> host   e, es, s, ss          (the client's static key, encrypted to the host)
//! host -> client   e, ee, se, psk        (psk = the ticket secret)
//! ```
//! `IK` because the client learns the host key from the ticket, so the host is
//! authenticated in the first round trip; `psk2` because only holders of the ticket can
//! finish it: a client with the wrong secret cannot decrypt the host's answer, and the
//! host hears nothing it can use from it. The host sees the client's static key before it
//! answers, which is where an allow-list is enforced.
//!
//! # Payloads: which service, and the host's answer
//! A host may offer several named services; the client names the one its ticket is for
//! inside message 1's payload, encrypted to the host's key, so a relay never learns it:
//!
//! ```text
//! message 1 payload   empty                              the default service (older clients)
//!                     len:u8 | name | zero padding       65 bytes; len 0 = the default service
//!                                                        (clients before resumption)
//!                     len:u8 | name | padding | flags:u8 66 bytes (classic hello)
//!                     ... | flags:u8 | ML-KEM key (1184) 1250 bytes (hybrid hello, flags bit 1)
//! message 2 payload   code:u8                            0 = accepted, 1 = no such service
//!                     code:u8 | flags:u8                 to a client that sent flags
//!                     code:u8 | flags:u8 | ML-KEM ct     1090 bytes, to a hybrid hello
//! flags               bit 0 = resumable (the sender keeps the session for a resume);
//!                     bit 1 = hybrid (an ML-KEM-768 key follows / its ciphertext follows);
//!                     bit 2 = resumption PSK (the client wants one / the host keeps one);
//!                     other bits are zero and ignored
//! ```
//! Whole messages: a classic hello is 162 bytes and its answer 50; a hybrid hello 1346 and its
//! answer 1138. The name is padded to [`MAX_SERVICE_NAME`] so that every client's message 1 has
//! one length whatever service it asks for (or none), and the host's answer has one length
//! whether it accepts or refuses, so the relay cannot tell a refusal from a session that then
//! ends (the host follows a refusal with a sealed `Fin`, as a service that closes at once
//! would). An empty message 2 payload (a host older than services) reads as accepted.
//!
//! # Hybrid (post-quantum) full handshakes
//! A client of this version sends a fresh ML-KEM-768 encapsulation key behind its flags; the
//! host encapsulates to it and returns the ciphertext behind its own flags, and both ends mix
//! the KEM secret into Noise's split keys ([`crate::e2e::hybrid`]): the record keys, the resume
//! keys and the resumption PSK all depend on it. The host's answer is authenticated by Noise
//! (it is encrypted under keys that need the ticket secret and the host's static key), so a
//! relay cannot strip the hybrid bit; a host that answers without it gives a classic session.
//! Hosts before this version cap a first frame at 256 bytes and drop a hybrid hello: the
//! client library then retries with a classic hello, once, for a host it has not yet seen
//! answer in kind (an active attacker can force that on a first contact; a passive recorder
//! cannot). Tickets carry no KEM key, so they are unchanged.
//!
//! # Resumed handshakes
//! A full handshake in which the client asked for a PSK (flags bit 2) and the host kept one
//! leaves [`Established::psk`] at both ends; the client's next sessions with that host use
//! Noise `NNpsk0` keyed by it ([`ClientHandshake::start_resumed`],
//! [`HostHandshake::read_resumed`]; the layout and the host's table are in
//! [`crate::e2e::psk`]).
//!
//! # Resumable sessions
//! A session is resumable only when both ends said so: the client sets bit 0 of its flags
//! byte, and the host echoes it in its own. An older host ignores the byte (it reads only the
//! name) and answers one byte, which reads as "not resumable"; an older client sends 65 bytes,
//! gets today's one-byte answer and today's session. Both ends of a resumable session derive
//! its [`ResumeKeys`] from the finished handshake (see [`crate::e2e::resume`]).
//!
//! AES-256-GCM is the AEAD because it measured 3.8x faster than ChaCha20-Poly1305 in
//! ring on the reference machine (x86-64 with AES-NI): 9.2 vs 2.4 GiB/s sealing 16 KiB,
//! 5.9 vs 1.8 GiB/s at 1200 bytes (`cargo bench --bench seal -- aead`). Phones with ARMv8
//! crypto extensions have AES instructions too.

use snow::{Builder, HandshakeState};

use crate::e2e::hybrid::{self, KEM_CIPHERTEXT_LEN, KEM_KEY_LEN, KemKeyPair};
use crate::e2e::psk::{self, PSK_ID_LEN, PskTable, RESUMED_NOISE, ResumptionPsk};
use crate::e2e::record::{Opener, Sealer};
use crate::e2e::resume::ResumeKeys;
use crate::ticket::{MAX_SERVICE_NAME, check_service_name};
use crate::{Error, HostId, PublicKey, StaticKey, TicketSecret};

/// Noise protocol name of the end-to-end handshake.
pub const E2E_NOISE: &str = "Noise_IKpsk2_25519_AESGCM_BLAKE2s";
const PROLOGUE_LABEL: &[u8] = b"ferry/1 e2e";
/// The largest handshake message either side sends: a hybrid message 1 is 1346 bytes, its
/// answer 1138 (hosts before the hybrid handshake took at most 256).
pub const MAX_HANDSHAKE_LEN: usize = 2048;
/// Length of message 1's payload as this version writes it: a length byte, the service name
/// padded with zeros to [`MAX_SERVICE_NAME`], then the flags byte.
pub const SERVICE_PAYLOAD_LEN: usize = 1 + MAX_SERVICE_NAME + 1;
/// Length of a hybrid message 1's payload: the service block and flags, then the client's
/// ML-KEM-768 encapsulation key.
pub const HYBRID_PAYLOAD_LEN: usize = SERVICE_PAYLOAD_LEN + KEM_KEY_LEN;
/// Message 1's payload length of clients before the flags byte.
const OLD_SERVICE_PAYLOAD_LEN: usize = 1 + MAX_SERVICE_NAME;
/// Flags bit: the sender keeps the session for a resume.
const FLAG_RESUMABLE: u8 = 1;
/// Flags bit: the handshake is hybrid (message 1 carries an ML-KEM key, message 2 its
/// ciphertext).
const FLAG_HYBRID: u8 = 2;
/// Flags bit: the client wants a resumption PSK (message 1), the host keeps one (message 2).
const FLAG_PSK: u8 = 4;
/// Message 2's payload byte when the host accepts the session.
const ANSWER_ACCEPTED: u8 = 0;

/// Why a host turns a session away inside the handshake: the byte of its answer's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The host has no service of the name the client asked for.
    NoSuchService,
}

impl Refusal {
    /// The byte message 2 carries for this refusal.
    pub fn code(self) -> u8 {
        match self {
            Self::NoSuchService => 1,
        }
    }
}

/// What a client offers in a full handshake; the host's answer says what it took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offer {
    /// A session the ends keep for a resume after a lost path (issue 15).
    pub resumable: bool,
    /// The hybrid X25519 + ML-KEM-768 handshake.
    pub hybrid: bool,
    /// A resumption PSK for this client's next sessions with the host.
    pub psk: bool,
}

impl Offer {
    /// What this version's client offers: hybrid and a PSK, resumable as asked.
    pub fn current(resumable: bool) -> Self {
        Self { resumable, hybrid: true, psk: true }
    }

    fn flags(self) -> u8 {
        let mut flags = 0;
        if self.resumable {
            flags |= FLAG_RESUMABLE;
        }
        if self.hybrid {
            flags |= FLAG_HYBRID;
        }
        if self.psk {
            flags |= FLAG_PSK;
        }
        flags
    }
}

/// Message 1's payload for `service` (`None`: the default service) and `flags`.
fn service_payload(service: Option<&str>, flags: u8) -> Result<[u8; SERVICE_PAYLOAD_LEN], Error> {
    let mut payload = [0u8; SERVICE_PAYLOAD_LEN];
    if let Some(name) = service {
        check_service_name(name)?;
        // Checked above: at most MAX_SERVICE_NAME bytes, so the length fits in the byte.
        payload[0] = name.len() as u8;
        payload[1..=name.len()].copy_from_slice(name.as_bytes());
    }
    payload[OLD_SERVICE_PAYLOAD_LEN] = flags;
    Ok(payload)
}

/// The flags byte of message 1's payload: `None` from a client before flags.
fn read_flags(payload: &[u8]) -> Option<u8> {
    payload.get(OLD_SERVICE_PAYLOAD_LEN).copied()
}

/// The service message 1's decrypted payload names (`None`: the default service). Padding
/// past the name is ignored, so a later version may carry more there.
fn read_service(payload: &[u8]) -> Result<Option<String>, Error> {
    let Some((&len, rest)) = payload.split_first() else { return Ok(None) };
    if len == 0 {
        return Ok(None);
    }
    let name = rest.get(..usize::from(len)).ok_or(Error::BadHello("the service name is cut short"))?;
    let name = std::str::from_utf8(name).map_err(|_| Error::BadHello("the service name is not UTF-8"))?;
    check_service_name(name).map_err(|_| Error::BadHello("the service name has characters names cannot have"))?;
    Ok(Some(name.to_owned()))
}

fn builder<'a>(prologue: &'a [u8], secret: &'a TicketSecret, key: &'a StaticKey) -> Result<Builder<'a>, Error> {
    let params = E2E_NOISE.parse().map_err(Error::Noise)?;
    Ok(Builder::new(params).prologue(prologue)?.psk(2, &secret.0)?.local_private_key(key.private_bytes())?)
}

fn prologue(host: &HostId) -> Vec<u8> {
    [PROLOGUE_LABEL, host.as_bytes()].concat()
}

fn resumed_builder<'a>(prologue: &'a [u8], psk: &'a [u8; 32]) -> Result<Builder<'a>, Error> {
    let params = RESUMED_NOISE.parse().map_err(Error::Noise)?;
    Ok(Builder::new(params).prologue(prologue)?.psk(0, psk)?)
}

fn resumed_prologue(host: &HostId, id: &[u8; PSK_ID_LEN]) -> Vec<u8> {
    [psk::RESUMED_PROLOGUE_LABEL, host.as_bytes(), id].concat()
}

/// What a finished handshake mixes in and derives besides the record keys.
#[derive(Default)]
struct Derive {
    /// The ML-KEM secret of a hybrid handshake.
    kem: Option<[u8; 32]>,
    resumable: bool,
    psk: bool,
}

fn split_session(mut hs: HandshakeState, derive: Derive) -> Result<Established, Error> {
    debug_assert!(hs.is_handshake_finished());
    let (mut initiator_to_responder, mut responder_to_initiator) = hs.dangerously_get_raw_split();
    let h = hs.get_handshake_hash();
    if let Some(secret) = &derive.kem {
        (initiator_to_responder, responder_to_initiator) =
            hybrid::mix(h, &initiator_to_responder, &responder_to_initiator, secret);
    }
    // Derived from the split keys, which only the two ends hold (the handshake hash alone is
    // public: the relay could compute it from the messages it carried).
    let resume = derive.resumable.then(|| ResumeKeys::derive(h, &initiator_to_responder, &responder_to_initiator));
    let psk = derive.psk.then(|| ResumptionPsk::derive(h, &initiator_to_responder, &responder_to_initiator));
    let (sealer, opener) = if hs.is_initiator() {
        (Sealer::new(&initiator_to_responder)?, Opener::new(&responder_to_initiator)?)
    } else {
        (Sealer::new(&responder_to_initiator)?, Opener::new(&initiator_to_responder)?)
    };
    Ok(Established { sealer, opener, resume, psk, hybrid: derive.kem.is_some() })
}

/// The outcome of a finished handshake: the record keys, and the resumption keys when both
/// ends said the session is resumable.
pub struct Established {
    /// Seals this end's records.
    pub sealer: Sealer,
    /// Opens the peer's records.
    pub opener: Opener,
    /// `Some` when both ends agreed to resume this session after a lost path.
    pub resume: Option<ResumeKeys>,
    /// The resumption PSK for the client's next sessions, when the client asked for one and
    /// the host keeps it (full handshakes only).
    pub psk: Option<ResumptionPsk>,
    /// Whether the keys include an ML-KEM secret.
    pub hybrid: bool,
}

/// The client's side: started from a ticket.
pub struct ClientHandshake {
    hs: HandshakeState,
    /// The service asked for, to name it if the host has none of that name.
    service: Option<String>,
    /// What this client offered.
    offer: Offer,
    /// The ML-KEM key pair of a hybrid offer.
    kem: Option<KemKeyPair>,
    /// Whether this is a resumed handshake.
    resumed: bool,
}

impl ClientHandshake {
    /// Starts a session to `host`'s `service` (`None`: its default service); returns the
    /// first handshake message to send. Fails with [`Error::InvalidTicket`] for a service
    /// name a ticket cannot carry.
    pub fn start(
        host: &HostId,
        secret: &TicketSecret,
        client_key: &StaticKey,
        service: Option<&str>,
    ) -> Result<(Self, Vec<u8>), Error> {
        Self::start_with(host, secret, client_key, service, false)
    }

    /// As [`ClientHandshake::start`], offering a resumable session when `resumable`; the host's
    /// answer says whether it agreed ([`Established::resume`]). A classic (X25519 only) hello.
    pub fn start_with(
        host: &HostId,
        secret: &TicketSecret,
        client_key: &StaticKey,
        service: Option<&str>,
        resumable: bool,
    ) -> Result<(Self, Vec<u8>), Error> {
        Self::start_offering(host, secret, client_key, service, Offer { resumable, ..Offer::default() })
    }

    /// As [`ClientHandshake::start`], offering what `offer` says: with `offer.hybrid` the
    /// hello carries a fresh ML-KEM-768 key (1346 bytes instead of 162).
    pub fn start_offering(
        host: &HostId,
        secret: &TicketSecret,
        client_key: &StaticKey,
        service: Option<&str>,
        offer: Offer,
    ) -> Result<(Self, Vec<u8>), Error> {
        let block = service_payload(service, offer.flags())?;
        let kem = offer.hybrid.then(KemKeyPair::generate);
        let payload = match &kem {
            Some(pair) => [&block[..], &pair.public()].concat(),
            None => block.to_vec(),
        };
        let prologue = prologue(host);
        let mut hs = builder(&prologue, secret, client_key)?.remote_public_key(host.as_bytes())?.build_initiator()?;
        let mut msg = vec![0u8; MAX_HANDSHAKE_LEN];
        let n = hs.write_message(&payload, &mut msg)?;
        msg.truncate(n);
        Ok((Self { hs, service: service.map(str::to_owned), offer, kem, resumed: false }, msg))
    }

    /// Starts a resumed handshake with `psk`, which an earlier full session with `host`
    /// derived; returns the first frame to send ([`psk::RESUMED_HELLO_LEN`] bytes). When the
    /// host answers [`psk::FALLBACK`], the client forgets the PSK and sends a full hello
    /// on the same stream.
    pub fn start_resumed(
        host: &HostId,
        psk: &ResumptionPsk,
        service: Option<&str>,
        resumable: bool,
    ) -> Result<(Self, Vec<u8>), Error> {
        let offer = Offer { resumable, ..Offer::default() };
        let payload = service_payload(service, offer.flags())?;
        let prologue = resumed_prologue(host, &psk.id);
        let mut hs = resumed_builder(&prologue, &psk.psk)?.build_initiator()?;
        let mut msg = vec![0u8; MAX_HANDSHAKE_LEN];
        msg[..PSK_ID_LEN].copy_from_slice(&psk.id);
        let n = hs.write_message(&payload, &mut msg[PSK_ID_LEN..])?;
        msg.truncate(PSK_ID_LEN + n);
        Ok((Self { hs, service: service.map(str::to_owned), offer, kem: None, resumed: true }, msg))
    }

    /// Whether this is a resumed handshake (whose answer may be [`psk::FALLBACK`]).
    pub fn is_resumed(&self) -> bool {
        self.resumed
    }

    /// Reads the host's answer. Fails with [`Error::HostRejected`] when the ticket's
    /// secret or host key is not the host's, and with [`Error::NoSuchService`] (or
    /// [`Error::HostRefusedCode`] for a reason this version does not know) when the host
    /// turned the session away.
    pub fn finish(self, answer: &[u8]) -> Result<(Sealer, Opener), Error> {
        self.finish_session(answer).map(|s| (s.sealer, s.opener))
    }

    /// As [`ClientHandshake::finish`], with the resumption keys when both ends agreed.
    pub fn finish_session(mut self, answer: &[u8]) -> Result<Established, Error> {
        let mut payload = [0u8; MAX_HANDSHAKE_LEN];
        let n = self.hs.read_message(answer, &mut payload).map_err(|_| Error::HostRejected)?;
        let payload = &payload[..n];
        let host_flags = payload.get(1).copied().unwrap_or(0);
        let resumable = self.offer.resumable && host_flags & FLAG_RESUMABLE != 0;
        // Message 2 is authenticated by Noise, so a relay cannot strip the hybrid bit: only
        // the host can answer classically (hosts of this version answer a hybrid offer in kind).
        let kem = match &self.kem {
            Some(pair) if host_flags & FLAG_HYBRID != 0 => {
                let ct = payload.get(2..2 + KEM_CIPHERTEXT_LEN).ok_or(Error::HostRejected)?;
                Some(pair.decapsulate(ct).ok_or(Error::HostRejected)?)
            }
            _ => None,
        };
        let psk = self.offer.psk && host_flags & FLAG_PSK != 0;
        match payload.first().copied() {
            None | Some(ANSWER_ACCEPTED) => split_session(self.hs, Derive { kem, resumable, psk }),
            Some(code) if code == Refusal::NoSuchService.code() => Err(Error::NoSuchService { service: self.service }),
            Some(code) => Err(Error::HostRefusedCode { code }),
        }
    }
}

/// The host's side: answers a client that holds a ticket.
pub struct HostHandshake {
    hs: HandshakeState,
    client: PublicKey,
    service: Option<String>,
    /// The client's flags byte (`None`: a client before flags, answered with one byte).
    client_flags: Option<u8>,
    /// Whether this host keeps the session for a resume, if the client asks.
    offer_resume: bool,
    /// Whether this host keeps a resumption PSK, if the client asks.
    offer_psk: bool,
    /// The ciphertext and secret of a hybrid handshake, encapsulated when message 1 was read.
    kem: Option<([u8; KEM_CIPHERTEXT_LEN], [u8; 32])>,
    /// Whether this is a resumed handshake.
    resumed: bool,
}

impl HostHandshake {
    /// Reads the client's first message. Fails with [`Error::ClientRejected`] when it was
    /// not made for this host's key.
    pub fn read(key: &StaticKey, secret: &TicketSecret, hello: &[u8]) -> Result<Self, Error> {
        let prologue = prologue(&key.public());
        let mut hs = builder(&prologue, secret, key)?.build_responder()?;
        let mut payload = [0u8; MAX_HANDSHAKE_LEN];
        let n = hs.read_message(hello, &mut payload).map_err(|_| Error::ClientRejected)?;
        let payload = &payload[..n];
        let service = read_service(payload)?;
        let client_flags = read_flags(payload);
        let kem = match client_flags {
            Some(flags) if flags & FLAG_HYBRID != 0 => {
                let key = payload
                    .get(SERVICE_PAYLOAD_LEN..HYBRID_PAYLOAD_LEN)
                    .ok_or(Error::BadHello("the ML-KEM key is cut short"))?;
                Some(hybrid::encapsulate(key).ok_or(Error::BadHello("the ML-KEM key is not a valid key"))?)
            }
            _ => None,
        };
        let client = hs
            .get_remote_static()
            .and_then(|s| <[u8; 32]>::try_from(s).ok())
            .map(PublicKey)
            .ok_or(Error::ClientRejected)?;
        Ok(Self { hs, client, service, client_flags, offer_resume: false, offer_psk: false, kem, resumed: false })
    }

    /// Reads a resumed hello ([`psk::FirstFrame::Resumed`]) against `table` at `now`.
    /// `None` when its id is unknown or expired or the PSK does not open it: the host then
    /// answers [`psk::FALLBACK`] and reads a full hello next.
    pub fn read_resumed(key: &StaticKey, table: &mut PskTable, frame: &[u8], now: std::time::Instant) -> Option<Self> {
        let (id, hello) = frame.split_first_chunk::<PSK_ID_LEN>()?;
        let (psk, client) = table.get(id, now)?;
        let prologue = resumed_prologue(&key.public(), id);
        let mut hs = resumed_builder(&prologue, &psk).ok()?.build_responder().ok()?;
        let mut payload = [0u8; MAX_HANDSHAKE_LEN];
        let n = hs.read_message(hello, &mut payload).ok()?;
        let service = read_service(&payload[..n]).ok()?;
        let client_flags = read_flags(&payload[..n]);
        Some(Self {
            hs,
            client,
            service,
            client_flags,
            offer_resume: false,
            offer_psk: false,
            kem: None,
            resumed: true,
        })
    }

    /// The client's static public key, for an allow-list (for a resumed handshake, the key
    /// its full handshake authenticated).
    pub fn client_key(&self) -> PublicKey {
        self.client
    }

    /// The service the client asks for (`None`: the default service).
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// Whether the client offered a resumable session.
    pub fn client_offers_resume(&self) -> bool {
        self.client_flags.is_some_and(|f| f & FLAG_RESUMABLE != 0)
    }

    /// Whether this is a resumed handshake.
    pub fn is_resumed(&self) -> bool {
        self.resumed
    }

    /// Whether this host agrees to resume the session (default: no, today's session). Only a
    /// host that keeps sessions for a resume says yes.
    pub fn offer_resume(&mut self, yes: bool) {
        self.offer_resume = yes;
    }

    /// Whether this host keeps a resumption PSK for the client, if it asks (default: no).
    /// A host that says yes puts [`Established::psk`] in its [`PskTable`].
    pub fn offer_psk(&mut self, yes: bool) {
        self.offer_psk = yes;
    }

    /// Accepts the client: returns the answer to send and the session's record keys.
    pub fn accept(self) -> Result<(Vec<u8>, Sealer, Opener), Error> {
        self.answer(ANSWER_ACCEPTED)
    }

    /// As [`HostHandshake::accept`], with the resumption keys when both ends agreed.
    pub fn accept_session(self) -> Result<(Vec<u8>, Established), Error> {
        self.answer_session(ANSWER_ACCEPTED)
    }

    /// Turns the client away for `why`: returns the answer to send and the record keys, so
    /// the host can follow it with a sealed `Fin`, as a session that ends at once would.
    pub fn refuse(self, why: Refusal) -> Result<(Vec<u8>, Sealer, Opener), Error> {
        self.answer(why.code())
    }

    fn answer(self, code: u8) -> Result<(Vec<u8>, Sealer, Opener), Error> {
        self.answer_session(code).map(|(msg, s)| (msg, s.sealer, s.opener))
    }

    fn answer_session(mut self, code: u8) -> Result<(Vec<u8>, Established), Error> {
        let accepted = code == ANSWER_ACCEPTED;
        let resumable = accepted && self.offer_resume && self.client_offers_resume();
        let client_flags = self.client_flags.unwrap_or(0);
        let psk = accepted && !self.resumed && self.offer_psk && client_flags & FLAG_PSK != 0;
        let mut flags = 0;
        if resumable {
            flags |= FLAG_RESUMABLE;
        }
        if psk {
            flags |= FLAG_PSK;
        }
        // Only a client that sent flags hears them: an older one gets its one byte. A refusal
        // is as long as an acceptance to the same client (it carries the ciphertext too).
        let mut payload = if self.client_flags.is_some() { vec![code, flags] } else { vec![code] };
        if let Some((ct, _)) = &self.kem {
            payload[1] |= FLAG_HYBRID;
            payload.extend_from_slice(ct);
        }
        let mut msg = vec![0u8; MAX_HANDSHAKE_LEN];
        let n = self.hs.write_message(&payload, &mut msg)?;
        msg.truncate(n);
        let kem = self.kem.map(|(_, secret)| secret);
        let session = split_session(self.hs, Derive { kem, resumable, psk })?;
        Ok((msg, session))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::psk::FirstFrame;
    use crate::e2e::record::{Record, RecordKind};
    use bytes::BytesMut;

    type Keys = (Sealer, Opener);

    /// Runs a handshake; returns the client's keys, the host's keys and the client key.
    fn pair(client_secret: &TicketSecret) -> Result<(Keys, Keys, PublicKey), Error> {
        let host = StaticKey::generate().unwrap();
        let client = StaticKey::generate().unwrap();
        let host_secret = TicketSecret([5; 32]);
        let (ch, hello) = ClientHandshake::start(&host.public(), client_secret, &client, None)?;
        let hh = HostHandshake::read(&host, &host_secret, &hello)?;
        assert_eq!(hh.client_key(), client.public());
        let (answer, hs, ho) = hh.accept()?;
        let (cs, co) = ch.finish(&answer)?;
        Ok(((cs, co), (hs, ho), client.public()))
    }

    #[test]
    fn handshake_then_records_both_ways() {
        let ((mut cs, mut co), (mut hs, mut ho), _) = pair(&TicketSecret([5; 32])).unwrap();
        let mut wire = BytesMut::new();
        cs.seal(RecordKind::Data, b"hello host", &mut wire).unwrap();
        assert!(!wire.windows(10).any(|w| w == b"hello host"), "records are encrypted");
        assert_eq!(ho.open(&mut wire).unwrap(), Some(Record::Data(b"hello host"[..].into())));
        hs.seal(RecordKind::Data, b"hello client", &mut wire).unwrap();
        hs.seal(RecordKind::Fin, b"", &mut wire).unwrap();
        assert_eq!(co.open(&mut wire).unwrap(), Some(Record::Data(b"hello client"[..].into())));
        assert_eq!(co.open(&mut wire).unwrap(), Some(Record::Fin));
    }

    #[test]
    fn wrong_ticket_secret_is_rejected() {
        let err = pair(&TicketSecret([6; 32])).err().expect("must fail");
        assert!(matches!(err, Error::HostRejected), "{err}");
        assert!(err.to_string().contains("ticket"));
    }

    #[test]
    fn hello_for_another_host_is_rejected() {
        let host = StaticKey::generate().unwrap();
        let other = StaticKey::generate().unwrap();
        let secret = TicketSecret([1; 32]);
        let client = StaticKey::generate().unwrap();
        let (_, hello) = ClientHandshake::start(&other.public(), &secret, &client, None).unwrap();
        assert!(matches!(HostHandshake::read(&host, &secret, &hello), Err(Error::ClientRejected)));
        assert!(HostHandshake::read(&host, &secret, &[0; 10]).is_err());
    }

    /// A client of the version before services: Noise with empty payloads.
    fn old_client(host: &StaticKey, secret: &TicketSecret) -> (HandshakeState, Vec<u8>) {
        let client = StaticKey::generate().unwrap();
        let prologue = prologue(&host.public());
        let mut hs = builder(&prologue, secret, &client)
            .unwrap()
            .remote_public_key(host.public().as_bytes())
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut msg = vec![0u8; MAX_HANDSHAKE_LEN];
        let n = hs.write_message(&[], &mut msg).unwrap();
        msg.truncate(n);
        (hs, msg)
    }

    #[test]
    fn the_service_name_travels_encrypted_in_message_1() {
        let host = StaticKey::generate().unwrap();
        let client = StaticKey::generate().unwrap();
        let secret = TicketSecret([3; 32]);
        for service in [None, Some("ssh"), Some("web"), Some("a"), Some("media-server"), Some(&*"x".repeat(64))] {
            let (_, hello) = ClientHandshake::start(&host.public(), &secret, &client, service).unwrap();
            // One length whatever is asked for, so the length does not tell the service either.
            assert_eq!(hello.len(), 32 + 48 + SERVICE_PAYLOAD_LEN + 16, "{service:?}");
            assert!(hello.len() <= MAX_HANDSHAKE_LEN);
            // Long names only: a 1-byte name turns up in 162 random bytes about half the time.
            if let Some(name) = service.filter(|n| n.len() >= 8) {
                assert!(!hello.windows(name.len()).any(|w| w == name.as_bytes()), "{name} in clear");
            }
            let hh = HostHandshake::read(&host, &secret, &hello).unwrap();
            assert_eq!(hh.service(), service);
        }
        let err = ClientHandshake::start(&host.public(), &secret, &client, Some("we b")).err().expect("a bad name");
        assert!(err.to_string().contains("service name"), "{err}");
        assert!(ClientHandshake::start(&host.public(), &secret, &client, Some(&"x".repeat(65))).is_err());
    }

    #[test]
    fn a_refusal_reads_as_no_such_service_and_is_as_long_as_an_acceptance() {
        let host = StaticKey::generate().unwrap();
        let client = StaticKey::generate().unwrap();
        let secret = TicketSecret([3; 32]);
        let (ch, hello) = ClientHandshake::start(&host.public(), &secret, &client, Some("ssh")).unwrap();
        let hh = HostHandshake::read(&host, &secret, &hello).unwrap();
        let (refusal, _, _) = hh.refuse(Refusal::NoSuchService).unwrap();
        let err = ch.finish(&refusal).err().expect("refused");
        assert!(matches!(&err, Error::NoSuchService { service: Some(s) } if s == "ssh"), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the host has no service `ssh`; ask its owner for a ticket for one of its services"
        );

        let (ch, hello) = ClientHandshake::start(&host.public(), &secret, &client, None).unwrap();
        let (acceptance, _, _) = HostHandshake::read(&host, &secret, &hello).unwrap().accept().unwrap();
        assert_eq!(acceptance.len(), refusal.len(), "the relay cannot tell them apart by length");
        ch.finish(&acceptance).unwrap();

        let (ch, hello) = ClientHandshake::start(&host.public(), &secret, &client, None).unwrap();
        let hh = HostHandshake::read(&host, &secret, &hello).unwrap();
        let (refusal, _, _) = hh.refuse(Refusal::NoSuchService).unwrap();
        let err = ch.finish(&refusal).err().expect("refused");
        assert!(err.to_string().starts_with("the host has no default service;"), "{err}");
    }

    #[test]
    fn an_unknown_refusal_code_is_reported_with_its_number() {
        let host = StaticKey::generate().unwrap();
        let client = StaticKey::generate().unwrap();
        let secret = TicketSecret([3; 32]);
        let (ch, hello) = ClientHandshake::start(&host.public(), &secret, &client, None).unwrap();
        let hh = HostHandshake::read(&host, &secret, &hello).unwrap();
        let (answer, _, _) = hh.answer(9).unwrap();
        assert!(matches!(ch.finish(&answer), Err(Error::HostRefusedCode { code: 9 })));
    }

    #[test]
    fn an_old_client_s_empty_payload_reaches_the_default_service() {
        let host = StaticKey::generate().unwrap();
        let secret = TicketSecret([4; 32]);
        let (mut old, hello) = old_client(&host, &secret);
        let hh = HostHandshake::read(&host, &secret, &hello).unwrap();
        assert_eq!(hh.service(), None);
        let (answer, _, _) = hh.accept().unwrap();
        // The old client reads the one-byte acceptance and ignores it.
        let mut scratch = [0u8; MAX_HANDSHAKE_LEN];
        assert_eq!(old.read_message(&answer, &mut scratch).unwrap(), 1);
        assert!(old.is_handshake_finished());
    }

    /// A host answering `hello` with plain Noise and the message 2 `payload` it is given, as
    /// hosts of older layouts do: the answer, the hello's payload, and the host's state.
    fn old_host_answer(
        host: &StaticKey,
        secret: &TicketSecret,
        hello: &[u8],
        payload: &[u8],
    ) -> (Vec<u8>, Vec<u8>, HandshakeState) {
        let mut old = builder(&prologue(&host.public()), secret, host).unwrap().build_responder().unwrap();
        let mut scratch = [0u8; MAX_HANDSHAKE_LEN];
        let n = old.read_message(hello, &mut scratch).unwrap();
        let mut answer = vec![0u8; MAX_HANDSHAKE_LEN];
        let len = old.write_message(payload, &mut answer).unwrap();
        answer.truncate(len);
        (answer, scratch[..n].to_vec(), old)
    }

    #[test]
    fn an_old_host_s_empty_answer_is_an_acceptance() {
        let host = StaticKey::generate().unwrap();
        let client = StaticKey::generate().unwrap();
        let secret = TicketSecret([4; 32]);
        let (ch, hello) = ClientHandshake::start(&host.public(), &secret, &client, Some("web")).unwrap();
        let (answer, _, _) = old_host_answer(&host, &secret, &hello, &[]);
        ch.finish(&answer).unwrap();
    }

    #[test]
    fn a_malformed_service_payload_is_refused() {
        assert_eq!(read_service(&[]).unwrap(), None);
        assert_eq!(read_service(&[0; SERVICE_PAYLOAD_LEN]).unwrap(), None);
        assert_eq!(read_service(b"\x03ssh").unwrap().as_deref(), Some("ssh"));
        assert!(matches!(read_service(b"\x05ssh"), Err(Error::BadHello(_))));
        assert!(matches!(read_service(b"\x03s h"), Err(Error::BadHello(_))));
        assert!(matches!(read_service(&[2, 0xff, 0xfe]), Err(Error::BadHello(_))));
    }

    /// Runs a handshake with resumption offered as given; returns both ends' sessions.
    fn resumable_pair(client_offers: bool, host_offers: bool) -> (Established, Established, usize) {
        let host = StaticKey::generate().unwrap();
        let client = StaticKey::generate().unwrap();
        let secret = TicketSecret([7; 32]);
        let (ch, hello) =
            ClientHandshake::start_with(&host.public(), &secret, &client, Some("web"), client_offers).unwrap();
        let mut hh = HostHandshake::read(&host, &secret, &hello).unwrap();
        assert_eq!(hh.client_offers_resume(), client_offers);
        hh.offer_resume(host_offers);
        let (answer, host_end) = hh.accept_session().unwrap();
        let client_end = ch.finish_session(&answer).unwrap();
        (client_end, host_end, answer.len())
    }

    #[test]
    fn a_session_is_resumable_only_when_both_ends_say_so() {
        let (c, h, _) = resumable_pair(true, true);
        let (ck, hk) = (c.resume.expect("both offered"), h.resume.expect("both offered"));
        assert_eq!(ck.id(), hk.id(), "both ends derive the same session id");
        // And the same secret: a request the client makes verifies at the host.
        let mut client = crate::e2e::resume::ClientResume::new(ck);
        let mut host = crate::e2e::resume::HostResume::new(hk);
        let out = crate::e2e::resume::Outbound::new(Sealer::new(&[1; 32]).unwrap(), 1 << 16);
        let (answer, _) = host.take(&client.request(0), &out, 0).unwrap();
        assert_eq!(client.read_answer(&answer).unwrap(), 0);

        for (client_offers, host_offers) in [(true, false), (false, true), (false, false)] {
            let (c, h, _) = resumable_pair(client_offers, host_offers);
            assert!(c.resume.is_none() && h.resume.is_none(), "{client_offers} {host_offers}");
        }
        // Two sessions never share an id.
        let (a, _, _) = resumable_pair(true, true);
        let (b, _, _) = resumable_pair(true, true);
        assert_ne!(a.resume.unwrap().id(), b.resume.unwrap().id());
    }

    #[test]
    fn the_answer_to_a_client_with_flags_is_two_bytes_and_a_refusal_as_long() {
        let (_, _, accepted_len) = resumable_pair(true, true);
        let (_, _, plain_len) = resumable_pair(false, false);
        assert_eq!(accepted_len, plain_len, "the answer's length does not tell resumable sessions apart");
        let host = StaticKey::generate().unwrap();
        let client = StaticKey::generate().unwrap();
        let secret = TicketSecret([7; 32]);
        let (ch, hello) = ClientHandshake::start_with(&host.public(), &secret, &client, Some("ssh"), true).unwrap();
        let mut hh = HostHandshake::read(&host, &secret, &hello).unwrap();
        hh.offer_resume(true);
        let (refusal, _, _) = hh.refuse(Refusal::NoSuchService).unwrap();
        assert_eq!(refusal.len(), accepted_len);
        assert!(matches!(ch.finish_session(&refusal), Err(Error::NoSuchService { .. })));
        // An old client's answer is one byte shorter: Noise adds 48 bytes to the payload.
        let (_, hello) = old_client(&host, &secret);
        let (old_answer, _, _) = HostHandshake::read(&host, &secret, &hello).unwrap().accept().unwrap();
        assert_eq!(old_answer.len() + 1, accepted_len);
    }

    #[test]
    fn a_client_before_flags_gets_a_session_that_is_not_resumable() {
        let host = StaticKey::generate().unwrap();
        let secret = TicketSecret([4; 32]);
        let client = StaticKey::generate().unwrap();
        // The 65-byte payload of the version before resumption.
        let prologue = prologue(&host.public());
        let mut old = builder(&prologue, &secret, &client)
            .unwrap()
            .remote_public_key(host.public().as_bytes())
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut hello = vec![0u8; MAX_HANDSHAKE_LEN];
        let mut payload = [0u8; OLD_SERVICE_PAYLOAD_LEN];
        payload[..4].copy_from_slice(b"\x03web");
        let n = old.write_message(&payload, &mut hello).unwrap();
        hello.truncate(n);
        let mut hh = HostHandshake::read(&host, &secret, &hello).unwrap();
        assert_eq!(hh.service(), Some("web"));
        assert!(!hh.client_offers_resume());
        hh.offer_resume(true);
        let (answer, session) = hh.accept_session().unwrap();
        assert!(session.resume.is_none());
        let mut scratch = [0u8; MAX_HANDSHAKE_LEN];
        assert_eq!(old.read_message(&answer, &mut scratch).unwrap(), 1, "today's one-byte answer");
        assert_eq!(scratch[0], ANSWER_ACCEPTED);
    }

    /// A full handshake with `offer`; returns both ends, the hello's and the answer's length.
    fn offered_pair(offer: Offer) -> (Established, Established, StaticKey, PublicKey, usize, usize) {
        let host = StaticKey::generate().unwrap();
        let client = StaticKey::generate().unwrap();
        let secret = TicketSecret([7; 32]);
        let (ch, hello) =
            ClientHandshake::start_offering(&host.public(), &secret, &client, Some("web"), offer).unwrap();
        let mut hh = HostHandshake::read(&host, &secret, &hello).unwrap();
        hh.offer_resume(true);
        hh.offer_psk(true);
        let (answer, host_end) = hh.accept_session().unwrap();
        let client_end = ch.finish_session(&answer).unwrap();
        (client_end, host_end, host, client.public(), hello.len(), answer.len())
    }

    /// Seals a record at `from` and opens it at `to`.
    fn record_crosses(from: &mut Sealer, to: &mut Opener) -> bool {
        let mut wire = BytesMut::new();
        from.seal(RecordKind::Data, b"first record", &mut wire).unwrap();
        matches!(to.open(&mut wire), Ok(Some(Record::Data(d))) if &d[..] == b"first record")
    }

    #[test]
    fn a_hybrid_handshake_gives_working_keys_and_its_sizes_are_as_documented() {
        let (mut c, mut h, _, _, hello_len, answer_len) = offered_pair(Offer::current(true));
        assert!(c.hybrid && h.hybrid);
        assert_eq!(hello_len, 32 + 48 + HYBRID_PAYLOAD_LEN + 16);
        assert_eq!(hello_len, 1346);
        assert_eq!(answer_len, 48 + 2 + KEM_CIPHERTEXT_LEN);
        assert_eq!(answer_len, 1138);
        assert!(hello_len <= MAX_HANDSHAKE_LEN && answer_len <= MAX_HANDSHAKE_LEN);
        assert!(record_crosses(&mut c.sealer, &mut h.opener));
        assert!(record_crosses(&mut h.sealer, &mut c.opener));
        assert_eq!(c.resume.unwrap().id(), h.resume.unwrap().id());
        assert_eq!(c.psk.unwrap(), h.psk.unwrap());
    }

    #[test]
    fn the_session_keys_depend_on_the_ml_kem_secret() {
        let host = StaticKey::generate().unwrap();
        let client = StaticKey::generate().unwrap();
        let secret = TicketSecret([7; 32]);
        let offer = Offer::current(true);
        let (ch, hello) = ClientHandshake::start_offering(&host.public(), &secret, &client, None, offer).unwrap();
        crate::e2e::hybrid::tamper::flip_host_secret(true);
        let read = HostHandshake::read(&host, &secret, &hello);
        crate::e2e::hybrid::tamper::flip_host_secret(false);
        let mut hh = read.unwrap();
        hh.offer_resume(true);
        hh.offer_psk(true);
        let (answer, mut h) = hh.accept_session().unwrap();
        // The handshake itself completes (the KEM is mixed in after Noise)…
        let mut c = ch.finish_session(&answer).unwrap();
        // …but no record opens: the keys differ by the KEM secret alone.
        assert!(!record_crosses(&mut c.sealer, &mut h.opener));
        assert!(!record_crosses(&mut h.sealer, &mut c.opener));
        assert_ne!(c.resume.unwrap().id(), h.resume.unwrap().id(), "the resume keys too");
        assert_ne!(c.psk.unwrap(), h.psk.unwrap(), "and the resumption PSK");
    }

    #[test]
    fn a_hybrid_refusal_is_as_long_as_an_acceptance() {
        let host = StaticKey::generate().unwrap();
        let client = StaticKey::generate().unwrap();
        let secret = TicketSecret([7; 32]);
        let offer = Offer::current(false);
        let (ch, hello) =
            ClientHandshake::start_offering(&host.public(), &secret, &client, Some("ssh"), offer).unwrap();
        let (refusal, _, _) =
            HostHandshake::read(&host, &secret, &hello).unwrap().refuse(Refusal::NoSuchService).unwrap();
        assert_eq!(refusal.len(), 1138);
        assert!(matches!(ch.finish_session(&refusal), Err(Error::NoSuchService { .. })));
    }

    #[test]
    fn a_new_client_gets_a_classic_session_from_a_host_answering_without_the_hybrid_bit() {
        // A host that read only the service and flags (as hosts before the hybrid handshake
        // do) and answers `code | flags` with no hybrid bit.
        let host = StaticKey::generate().unwrap();
        let client = StaticKey::generate().unwrap();
        let secret = TicketSecret([4; 32]);
        let (ch, hello) =
            ClientHandshake::start_offering(&host.public(), &secret, &client, Some("web"), Offer::current(true))
                .unwrap();
        let (answer, payload, mut old) = old_host_answer(&host, &secret, &hello, &[ANSWER_ACCEPTED, 0]);
        assert_eq!(read_service(&payload).unwrap().as_deref(), Some("web"), "the old layout still reads");
        let (i2r, r2i) = old.dangerously_get_raw_split();
        let mut c = ch.finish_session(&answer).unwrap();
        assert!(!c.hybrid && c.resume.is_none() && c.psk.is_none());
        let mut host_opener = Opener::new(&i2r).unwrap();
        let mut host_sealer = Sealer::new(&r2i).unwrap();
        assert!(record_crosses(&mut c.sealer, &mut host_opener));
        assert!(record_crosses(&mut host_sealer, &mut c.opener));
    }

    #[test]
    fn a_host_claiming_hybrid_without_a_ciphertext_is_rejected() {
        let host = StaticKey::generate().unwrap();
        let client = StaticKey::generate().unwrap();
        let secret = TicketSecret([4; 32]);
        let (ch, hello) =
            ClientHandshake::start_offering(&host.public(), &secret, &client, None, Offer::current(false)).unwrap();
        let (answer, _, _) = old_host_answer(&host, &secret, &hello, &[ANSWER_ACCEPTED, FLAG_HYBRID]);
        assert!(matches!(ch.finish_session(&answer), Err(Error::HostRejected)));
    }

    #[test]
    fn a_cut_or_invalid_ml_kem_key_is_a_bad_hello() {
        let host = StaticKey::generate().unwrap();
        let client = StaticKey::generate().unwrap();
        let secret = TicketSecret([4; 32]);
        let mut hs = builder(&prologue(&host.public()), &secret, &client)
            .unwrap()
            .remote_public_key(host.public().as_bytes())
            .unwrap()
            .build_initiator()
            .unwrap();
        let payload = service_payload(None, FLAG_HYBRID).unwrap();
        let mut hello = vec![0u8; MAX_HANDSHAKE_LEN];
        let n = hs.write_message(&payload, &mut hello).unwrap();
        hello.truncate(n);
        assert!(matches!(HostHandshake::read(&host, &secret, &hello), Err(Error::BadHello(_))));
    }

    /// A full handshake that leaves a PSK at both ends and in the host's table.
    fn with_psk(table: &mut PskTable, now: std::time::Instant) -> (StaticKey, PublicKey, ResumptionPsk) {
        let (c, h, host, client, _, _) = offered_pair(Offer::current(false));
        let (psk, host_psk) = (c.psk.expect("asked and kept"), h.psk.expect("asked and kept"));
        assert_eq!(psk, host_psk, "both ends derive the same PSK");
        table.insert(&host_psk, client, now);
        (host, client, psk)
    }

    #[test]
    fn a_resumed_handshake_gives_working_keys_and_the_full_handshake_s_client_key() {
        let now = std::time::Instant::now();
        let mut table = PskTable::default();
        let (host, client, psk) = with_psk(&mut table, now);
        let (ch, hello) = ClientHandshake::start_resumed(&host.public(), &psk, Some("web"), true).unwrap();
        assert!(ch.is_resumed());
        assert_eq!(hello.len(), crate::e2e::psk::RESUMED_HELLO_LEN);
        assert_eq!(FirstFrame::classify(&hello), FirstFrame::Resumed);
        let mut hh = HostHandshake::read_resumed(&host, &mut table, &hello, now).expect("a known PSK");
        assert!(hh.is_resumed());
        assert_eq!(hh.client_key(), client, "the key the allow-list is checked against");
        assert_eq!(hh.service(), Some("web"));
        hh.offer_resume(true);
        hh.offer_psk(true);
        let (answer, mut h) = hh.accept_session().unwrap();
        assert_eq!(answer.len(), 32 + 2 + 16);
        let mut c = ch.finish_session(&answer).unwrap();
        assert!(record_crosses(&mut c.sealer, &mut h.opener));
        assert!(record_crosses(&mut h.sealer, &mut c.opener));
        assert_eq!(c.resume.unwrap().id(), h.resume.unwrap().id(), "a resumed session is resumable too");
        assert!(c.psk.is_none() && h.psk.is_none(), "the PSK is reused, not renewed, until it expires");
    }

    #[test]
    fn a_resumed_handshake_needs_the_earlier_session_s_secret_not_just_the_ticket() {
        let now = std::time::Instant::now();
        let mut table = PskTable::default();
        let (host, _, psk) = with_psk(&mut table, now);
        // Someone with the ticket and the id seen on the wire, but not the PSK.
        let (_, forged) = ClientHandshake::start_resumed(&host.public(), &psk.forged(), None, false).unwrap();
        assert!(HostHandshake::read_resumed(&host, &mut table, &forged, now).is_none(), "wrong PSK");
        let mut unknown = forged.clone();
        unknown[0] ^= 1;
        assert!(HostHandshake::read_resumed(&host, &mut table, &unknown, now).is_none(), "unknown id");
        // A genuine hello altered in flight.
        let (_, mut hello) = ClientHandshake::start_resumed(&host.public(), &psk, None, false).unwrap();
        *hello.last_mut().unwrap() ^= 1;
        assert!(HostHandshake::read_resumed(&host, &mut table, &hello, now).is_none(), "altered");
        // A genuine hello made for another host.
        let other = StaticKey::generate().unwrap();
        let (_, hello) = ClientHandshake::start_resumed(&other.public(), &psk, None, false).unwrap();
        assert!(HostHandshake::read_resumed(&host, &mut table, &hello, now).is_none(), "another host");
        // After the TTL the host has forgotten it.
        let (_, hello) = ClientHandshake::start_resumed(&host.public(), &psk, None, false).unwrap();
        let late = now + crate::e2e::psk::DEFAULT_PSK_TTL;
        assert!(HostHandshake::read_resumed(&host, &mut table, &hello, late).is_none(), "expired");
        assert!(HostHandshake::read_resumed(&host, &mut table, &[0; 5], now).is_none(), "short");
    }

    #[test]
    fn a_client_with_a_forged_psk_cannot_read_a_host_s_resumed_answer() {
        let now = std::time::Instant::now();
        let mut table = PskTable::default();
        let (host, _, psk) = with_psk(&mut table, now);
        let (_, hello) = ClientHandshake::start_resumed(&host.public(), &psk, None, false).unwrap();
        let (answer, _) =
            HostHandshake::read_resumed(&host, &mut table, &hello, now).unwrap().accept_session().unwrap();
        let (forger, _) = ClientHandshake::start_resumed(&host.public(), &psk.forged(), None, false).unwrap();
        assert!(matches!(forger.finish_session(&answer), Err(Error::HostRejected)));
    }

    #[test]
    fn the_psk_is_kept_only_when_both_ends_say_so() {
        let (c, h, ..) = offered_pair(Offer { psk: false, ..Offer::current(false) });
        assert!(c.psk.is_none() && h.psk.is_none());
        // A host that does not keep PSKs.
        let host = StaticKey::generate().unwrap();
        let client = StaticKey::generate().unwrap();
        let secret = TicketSecret([7; 32]);
        let (ch, hello) =
            ClientHandshake::start_offering(&host.public(), &secret, &client, None, Offer::current(false)).unwrap();
        let (answer, h) = HostHandshake::read(&host, &secret, &hello).unwrap().accept_session().unwrap();
        let c = ch.finish_session(&answer).unwrap();
        assert!(c.psk.is_none() && h.psk.is_none());
    }

    proptest::proptest! {
        #[test]
        fn random_handshake_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let host = StaticKey::from_private([7; 32]);
            let secret = TicketSecret([1; 32]);
            let _ = HostHandshake::read(&host, &secret, &bytes);
            let client = StaticKey::from_private([8; 32]);
            let (handshake, _) = ClientHandshake::start(&host.public(), &secret, &client, Some("web")).unwrap();
            let _ = handshake.finish(&bytes);
        }
    }
}
