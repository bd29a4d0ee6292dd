//! Relay control messages: the few words hosts, clients and relays say before a stream
//! becomes opaque.
//!
//! ```text
//! frame = length (u16, big endian, 1..=4096) | type (u8) | body (length - 1 bytes)
//! ```
//! Decoding is two-phase (as in mini-redis's `Frame::check`): [`Message::check`] says
//! "need more bytes" (`Ok(None)`) apart from "invalid" (`Err`), and the length is checked
//! against [`MAX_MESSAGE_LEN`] before anything is buffered or allocated. Trailing bytes
//! inside a frame are an error, so every message has exactly one encoding.

use std::fmt;
use std::net::SocketAddr;

use bytes::{Buf, BytesMut};

use crate::codec::{Reader, put_long_field, put_short_field, put_socket_addr};
use crate::{Error, HostId, PublicKey};

/// Largest control message (type byte + body), in bytes.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Length of the frame header.
pub const HEADER_LEN: usize = 2;

const REGISTER: u8 = 0x01;
const CHALLENGE: u8 = 0x02;
const PROOF: u8 = 0x03;
const REGISTERED: u8 = 0x04;
const CONNECT: u8 = 0x05;
const ACCEPTED: u8 = 0x06;
const REFUSED: u8 = 0x07;
const INCOMING: u8 = 0x08;
const GOING_AWAY: u8 = 0x09;
const ATTACH: u8 = 0x0a;
const REDIRECT: u8 = 0x0b;
const FORWARD: u8 = 0x0c;
const OBSERVE: u8 = 0x0d;
const OBSERVED: u8 = 0x0e;

/// Length of a [`Message::Forward`] proof (an HMAC-SHA256).
pub const FORWARD_PROOF_LEN: usize = 32;

/// An operator-issued registration token. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationToken(pub String);

impl fmt::Debug for RegistrationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RegistrationToken(<redacted>)")
    }
}

/// Why a relay turned a host or client away. Unknown codes from newer relays survive as
/// [`RefuseReason::Other`] so an old client still prints something useful.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum RefuseReason {
    /// No host with this id is registered at this relay.
    UnknownHost,
    /// The host has as many sessions as the relay allows it.
    HostOverLimit,
    /// The relay is out of buffer memory or capacity.
    RelayBusy,
    /// The relay's access rules do not admit this host (token or allow-list).
    NotAllowed,
    /// The host's registration proof did not verify.
    BadProof,
    /// Too many attempts from this source; try again later.
    RateLimited,
    /// The relay is shutting down.
    ShuttingDown,
    /// The host is not registered at this relay, and this relay cannot ask the rest of its
    /// fleet where it is now (its shared directory is unreachable).
    FleetUnavailable,
    /// The host's byte quota on this relay (its registration token's, or its own) is used
    /// up for the current period (a day or a month, UTC).
    QuotaExceeded,
    /// Another registration of the same host (the same key) replaced this one. Sent on a
    /// TCP host's control stream; a QUIC host learns it from the connection's close code.
    Replaced,
    /// A reason this version does not know.
    Other(u8),
}

impl RefuseReason {
    fn code(self) -> u8 {
        match self {
            Self::UnknownHost => 1,
            Self::HostOverLimit => 2,
            Self::RelayBusy => 3,
            Self::NotAllowed => 4,
            Self::BadProof => 5,
            Self::RateLimited => 6,
            Self::ShuttingDown => 7,
            Self::FleetUnavailable => 8,
            Self::QuotaExceeded => 9,
            Self::Replaced => 10,
            Self::Other(code) => code,
        }
    }

    fn from_code(code: u8) -> Self {
        match code {
            1 => Self::UnknownHost,
            2 => Self::HostOverLimit,
            3 => Self::RelayBusy,
            4 => Self::NotAllowed,
            5 => Self::BadProof,
            6 => Self::RateLimited,
            7 => Self::ShuttingDown,
            8 => Self::FleetUnavailable,
            9 => Self::QuotaExceeded,
            10 => Self::Replaced,
            other => Self::Other(other),
        }
    }

    /// A short label for metrics (`refused_total{reason="..."}`).
    pub fn label(self) -> &'static str {
        match self {
            Self::UnknownHost => "unknown_host",
            Self::HostOverLimit => "host_over_limit",
            Self::RelayBusy => "relay_busy",
            Self::NotAllowed => "not_allowed",
            Self::BadProof => "bad_proof",
            Self::RateLimited => "rate_limited",
            Self::ShuttingDown => "shutting_down",
            Self::FleetUnavailable => "fleet_unavailable",
            Self::QuotaExceeded => "quota_exceeded",
            Self::Replaced => "replaced",
            Self::Other(_) => "other",
        }
    }
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownHost => f.write_str("the host is not connected to this relay (is `ferry host run` running?)"),
            Self::HostOverLimit => f.write_str("the host has reached its session limit on this relay"),
            Self::RelayBusy => f.write_str("the relay is busy; try again shortly or use another relay"),
            Self::NotAllowed => f.write_str("the relay does not allow this host (check the registration token)"),
            Self::BadProof => f.write_str("the host could not prove it holds its key"),
            Self::RateLimited => f.write_str("too many attempts; try again later"),
            Self::ShuttingDown => f.write_str("the relay is shutting down"),
            Self::FleetUnavailable => f.write_str(
                "the host is not on this relay node and the node cannot reach its fleet's directory now; \
                 try again shortly or another relay of the ticket",
            ),
            Self::QuotaExceeded => f.write_str(
                "quota exceeded: the host has used up the data its relay account may carry this period; \
                 wait for the next period (UTC), or ask the relay's operator for a larger quota",
            ),
            Self::Replaced => f.write_str("another instance of this host (the same host key) registered at the relay"),
            Self::Other(code) => write!(f, "the relay refused (reason code {code})"),
        }
    }
}

/// One relay control message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message {
    /// Host → relay: register under `host_id`; `handshake` is the first `XN` message.
    Register {
        /// The host id the host claims; the proof must match it.
        host_id: HostId,
        /// Registration token, when the relay is in closed mode.
        token: Option<RegistrationToken>,
        /// Noise `XN` message 1 (`-> e`).
        handshake: Vec<u8>,
    },
    /// Relay → host: Noise `XN` message 2 (`<- e, ee`).
    Challenge {
        /// The handshake bytes.
        handshake: Vec<u8>,
    },
    /// Host → relay: Noise `XN` message 3 (`-> s, se`), proving the host key.
    Proof {
        /// The handshake bytes.
        handshake: Vec<u8>,
    },
    /// Relay → host: registration accepted.
    Registered,
    /// Client → relay: open a session to this host.
    Connect {
        /// The host to reach.
        host_id: HostId,
    },
    /// Relay → client: the stream now leads to the host.
    Accepted,
    /// Relay → host or client: request refused.
    Refused {
        /// Why.
        reason: RefuseReason,
    },
    /// Relay → host: header of a new session stream.
    Incoming {
        /// Relay-local session number (random; correlates nothing outside the relay).
        session: u64,
    },
    /// Relay → host or client: the relay is shutting down; move elsewhere.
    GoingAway,
    /// Host → relay, first message of a new TLS connection: this connection carries the
    /// session the relay announced with `Incoming { session }` on the control connection.
    Attach {
        /// The session number from `Incoming`.
        session: u64,
    },
    /// Relay → client, the answer to `Connect`: the host is registered at another node of
    /// this relay's fleet; dial `node` (checking it as this relay was checked: a fleet's
    /// nodes share one certificate) and send `Connect` there. The stream ends.
    Redirect {
        /// The node's address, `name:port` (at most 255 bytes).
        node: String,
    },
    /// Relay node → relay node, first message of a stream on a link between two nodes of
    /// one fleet: open a session to `host_id` for a client of the sending node, exactly as
    /// `Connect` does (the answer and the client's bytes follow on the stream). `proof` is
    /// the fleet secret's HMAC over the link's TLS exporter and `host_id`, so only a node of
    /// the fleet can send it, and only on this connection.
    Forward {
        /// The host to reach.
        host_id: HostId,
        /// HMAC-SHA256 of the fleet secret (see the relay's `fleet` module).
        proof: [u8; FORWARD_PROOF_LEN],
    },
    /// Host or client → relay, first message of a stream: which address does the relay see
    /// this connection come from? (For hole punching: behind a NAT, the public one.) The
    /// relay answers `Observed` and ends the stream; a relay too old to know it ends the
    /// stream, and the peer simply punches without it.
    Observe,
    /// Relay → host or client, the answer to `Observe`. The relay never logs it.
    Observed {
        /// The connection's source address as the relay sees it.
        addr: SocketAddr,
    },
}

impl Message {
    /// The message's name, for errors ("the relay sent Accepted where Challenge belongs").
    pub fn name(&self) -> &'static str {
        match self {
            Self::Register { .. } => "Register",
            Self::Challenge { .. } => "Challenge",
            Self::Proof { .. } => "Proof",
            Self::Registered => "Registered",
            Self::Connect { .. } => "Connect",
            Self::Accepted => "Accepted",
            Self::Refused { .. } => "Refused",
            Self::Incoming { .. } => "Incoming",
            Self::GoingAway => "GoingAway",
            Self::Attach { .. } => "Attach",
            Self::Redirect { .. } => "Redirect",
            Self::Forward { .. } => "Forward",
            Self::Observe => "Observe",
            Self::Observed { .. } => "Observed",
        }
    }

    /// Appends this message's frame to `out`.
    ///
    /// Fails only when a field is too long for the format (a caller bug or a huge token).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        out.extend_from_slice(&[0, 0]);
        match self {
            Self::Register { host_id, token, handshake } => {
                out.push(REGISTER);
                out.extend_from_slice(host_id.as_bytes());
                match token {
                    Some(RegistrationToken(t)) if t.len() <= 255 => put_short_field(out, t.as_bytes()),
                    Some(_) => {
                        return Err(Error::Malformed("registration token longer than 255 bytes"));
                    }
                    None => put_short_field(out, &[]),
                }
                put_long_field(out, checked_len(handshake)?);
            }
            Self::Challenge { handshake } => {
                out.push(CHALLENGE);
                put_long_field(out, checked_len(handshake)?);
            }
            Self::Proof { handshake } => {
                out.push(PROOF);
                put_long_field(out, checked_len(handshake)?);
            }
            Self::Registered => out.push(REGISTERED),
            Self::Connect { host_id } => {
                out.push(CONNECT);
                out.extend_from_slice(host_id.as_bytes());
            }
            Self::Accepted => out.push(ACCEPTED),
            Self::Refused { reason } => {
                out.push(REFUSED);
                out.push(reason.code());
            }
            Self::Incoming { session } => {
                out.push(INCOMING);
                out.extend_from_slice(&session.to_be_bytes());
            }
            Self::GoingAway => out.push(GOING_AWAY),
            Self::Attach { session } => {
                out.push(ATTACH);
                out.extend_from_slice(&session.to_be_bytes());
            }
            Self::Redirect { node } => {
                if node.len() > 255 {
                    return Err(Error::Malformed("redirect address longer than 255 bytes"));
                }
                out.push(REDIRECT);
                put_short_field(out, node.as_bytes());
            }
            Self::Forward { host_id, proof } => {
                out.push(FORWARD);
                out.extend_from_slice(host_id.as_bytes());
                out.extend_from_slice(proof);
            }
            Self::Observe => out.push(OBSERVE),
            Self::Observed { addr } => {
                out.push(OBSERVED);
                put_socket_addr(out, addr);
            }
        }
        let len = out.len() - start - HEADER_LEN;
        if len > MAX_MESSAGE_LEN {
            out.truncate(start);
            return Err(Error::MessageTooLarge { len, max: MAX_MESSAGE_LEN });
        }
        out[start..start + HEADER_LEN].copy_from_slice(&(len as u16).to_be_bytes());
        Ok(())
    }

    /// This message as one frame.
    pub fn to_vec(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(64);
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Phase one: is a whole frame at the front of `buf`? `Ok(Some(n))` gives its total
    /// length, `Ok(None)` means "read more", `Err` means the peer is broken or hostile.
    pub fn check(buf: &[u8]) -> Result<Option<usize>, Error> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
        if len == 0 {
            return Err(Error::Malformed("empty frame"));
        }
        if len > MAX_MESSAGE_LEN {
            return Err(Error::MessageTooLarge { len, max: MAX_MESSAGE_LEN });
        }
        Ok((buf.len() >= HEADER_LEN + len).then_some(HEADER_LEN + len))
    }

    /// Phase two: takes one whole message from the front of `buf`, or `Ok(None)` if more
    /// bytes are needed. On `Err` the stream must be closed: framing is lost.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Self>, Error> {
        let Some(total) = Self::check(buf)? else {
            return Ok(None);
        };
        let message = Self::parse(&buf[HEADER_LEN..total]);
        buf.advance(total);
        message.map(Some)
    }

    /// Parses one frame body (type byte + fields).
    fn parse(frame: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(frame);
        let message = match r.u8("message type")? {
            REGISTER => {
                let host_id = PublicKey(r.array("host id")?);
                let token = r.short_field("token")?;
                let token = if token.is_empty() {
                    None
                } else {
                    let t = std::str::from_utf8(token).map_err(|_| Error::Malformed("token is not UTF-8"))?;
                    Some(RegistrationToken(t.to_owned()))
                };
                let handshake = r.long_field("handshake")?.to_vec();
                Self::Register { host_id, token, handshake }
            }
            CHALLENGE => Self::Challenge { handshake: r.long_field("handshake")?.to_vec() },
            PROOF => Self::Proof { handshake: r.long_field("handshake")?.to_vec() },
            REGISTERED => Self::Registered,
            CONNECT => Self::Connect { host_id: PublicKey(r.array("host id")?) },
            ACCEPTED => Self::Accepted,
            REFUSED => Self::Refused { reason: RefuseReason::from_code(r.u8("reason")?) },
            INCOMING => Self::Incoming { session: r.u64("session")? },
            GOING_AWAY => Self::GoingAway,
            ATTACH => Self::Attach { session: r.u64("session")? },
            REDIRECT => {
                let node = std::str::from_utf8(r.short_field("redirect address")?)
                    .map_err(|_| Error::Malformed("redirect address is not UTF-8"))?;
                Self::Redirect { node: node.to_owned() }
            }
            FORWARD => Self::Forward { host_id: PublicKey(r.array("host id")?), proof: r.array("forward proof")? },
            OBSERVE => Self::Observe,
            OBSERVED => Self::Observed { addr: r.socket_addr()? },
            other => return Err(Error::UnknownMessage(other)),
        };
        r.finish("trailing bytes in message")?;
        Ok(message)
    }
}

fn checked_len(bytes: &[u8]) -> Result<&[u8], Error> {
    if bytes.len() > MAX_MESSAGE_LEN {
        Err(Error::MessageTooLarge { len: bytes.len(), max: MAX_MESSAGE_LEN })
    } else {
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use proptest::prelude::*;

    fn host() -> HostId {
        PublicKey([0xab; 32])
    }

    #[test]
    fn connect_is_byte_exact() {
        let bytes = Message::Connect { host_id: host() }.to_vec().unwrap();
        let mut want = vec![0, 33, CONNECT];
        want.extend_from_slice(&[0xab; 32]);
        assert_eq!(bytes, want);
        assert_eq!(Message::Accepted.to_vec().unwrap(), vec![0, 1, ACCEPTED]);
        assert_eq!(Message::Refused { reason: RefuseReason::UnknownHost }.to_vec().unwrap(), vec![0, 2, REFUSED, 1]);
    }

    #[test]
    fn partial_frames_ask_for_more() {
        let bytes = Message::Connect { host_id: host() }.to_vec().unwrap();
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(Message::decode(&mut buf).unwrap(), None, "cut at {cut}");
            assert_eq!(buf.len(), cut, "nothing consumed while incomplete");
        }
    }

    #[test]
    fn oversized_frames_are_rejected_before_buffering() {
        let mut buf = BytesMut::from(&[0x10, 0x01][..]);
        assert!(matches!(Message::decode(&mut buf), Err(Error::MessageTooLarge { len: 4097, .. })));
        let mut empty = BytesMut::from(&[0, 0][..]);
        assert!(Message::decode(&mut empty).is_err());
    }

    #[test]
    fn unknown_and_trailing_are_errors() {
        let mut buf = BytesMut::from(&[0, 1, 0x7f][..]);
        assert!(matches!(Message::decode(&mut buf), Err(Error::UnknownMessage(0x7f))));
        let mut buf = BytesMut::from(&[0, 2, ACCEPTED, 0][..]);
        assert!(Message::decode(&mut buf).is_err());
    }

    #[test]
    fn unknown_refuse_reason_survives() {
        let mut buf = BytesMut::from(&[0, 2, REFUSED, 200][..]);
        assert_eq!(Message::decode(&mut buf).unwrap(), Some(Message::Refused { reason: RefuseReason::Other(200) }));
    }

    #[test]
    fn token_debug_is_redacted() {
        let m = Message::Register {
            host_id: host(),
            token: Some(RegistrationToken("hunter2".into())),
            handshake: vec![1, 2],
        };
        assert!(!format!("{m:?}").contains("hunter2"));
    }

    fn any_reason() -> impl Strategy<Value = RefuseReason> {
        any::<u8>().prop_map(RefuseReason::from_code)
    }

    fn any_message() -> impl Strategy<Value = Message> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..200);
        prop_oneof![
            (any::<[u8; 32]>(), proptest::option::of("[ -~]{1,255}"), bytes()).prop_map(|(h, t, hs)| {
                Message::Register { host_id: PublicKey(h), token: t.map(RegistrationToken), handshake: hs }
            }),
            bytes().prop_map(|handshake| Message::Challenge { handshake }),
            bytes().prop_map(|handshake| Message::Proof { handshake }),
            Just(Message::Registered),
            any::<[u8; 32]>().prop_map(|h| Message::Connect { host_id: PublicKey(h) }),
            Just(Message::Accepted),
            any_reason().prop_map(|reason| Message::Refused { reason }),
            any::<u64>().prop_map(|session| Message::Incoming { session }),
            Just(Message::GoingAway),
            any::<u64>().prop_map(|session| Message::Attach { session }),
            "[ -~]{0,255}".prop_map(|node| Message::Redirect { node }),
            (any::<[u8; 32]>(), any::<[u8; 32]>())
                .prop_map(|(h, proof)| Message::Forward { host_id: PublicKey(h), proof }),
            Just(Message::Observe),
            (any::<[u8; 16]>(), any::<bool>(), any::<u16>()).prop_map(|(ip, v4, port)| {
                let ip = if v4 { IpAddr::from([ip[0], ip[1], ip[2], ip[3]]) } else { IpAddr::from(ip) };
                Message::Observed { addr: SocketAddr::new(ip, port) }
            }),
        ]
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
            let mut buf = BytesMut::from(&bytes[..]);
            // Decode until the buffer is exhausted, incomplete or invalid; every step must
            // consume a bounded, announced amount and never more than was there.
            while let Ok(Some(_)) = Message::decode(&mut buf) {}
            prop_assert!(buf.len() <= bytes.len());
        }

        #[test]
        fn encode_then_decode_is_identity(messages in proptest::collection::vec(any_message(), 1..5)) {
            let mut wire = Vec::new();
            for m in &messages {
                m.encode(&mut wire).unwrap();
            }
            let mut buf = BytesMut::from(&wire[..]);
            for m in &messages {
                let got = Message::decode(&mut buf).unwrap();
                prop_assert_eq!(got.as_ref(), Some(m));
            }
            prop_assert!(buf.is_empty());
        }
    }
}
