//! The ticket: one copy-pasteable string with everything a client needs to reach a host.
//!
//! ```text
//! ferry1<base32( body | sha256(body)[..4] )>
//! body = host public key (32) | ticket secret (32) | relay count (u8, 1..=8)
//!        | per relay: address (u8 length + UTF-8 "name:port") | trust
//! trust = 0x01 | SPKI SHA-256 pin (32)      -- pinned certificate or CA key
//!       | 0x02                             -- publicly trusted (webpki roots)
//! ```
//! The `ferry1` prefix is the version: a later format gets a new prefix, and old clients say
//! so instead of misreading it. The 4-byte checksum catches a truncated or mistyped paste
//! before any network traffic. The ticket secret is the Noise PSK of the end-to-end
//! handshake, so whoever holds the ticket can open sessions: treat it like a password.

use std::fmt;
use std::str::FromStr;

use crate::codec::{Reader, put_short_field};
use crate::keys::BASE32;
use crate::{CertPin, Error, HostId, PublicKey, RelayTrust};

/// Version prefix of every ticket this crate writes and reads.
pub const TICKET_PREFIX: &str = "ferry1";

/// Most relays a ticket may list.
pub const MAX_TICKET_RELAYS: usize = 8;

const CHECKSUM_LEN: usize = 4;
const TRUST_PIN: u8 = 1;
const TRUST_WEBPKI: u8 = 2;

/// The ticket secret: a 32-byte Noise pre-shared key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketSecret(pub [u8; 32]);

impl TicketSecret {
    /// A fresh secret from the system's secure random source.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| Error::InvalidKey("the system random source failed"))?;
        Ok(Self(bytes))
    }

    /// The secret as base32 text, for the host's identity file.
    pub fn to_base32(&self) -> String {
        BASE32.encode(&self.0)
    }

    /// Parses [`TicketSecret::to_base32`] output.
    pub fn from_base32(text: &str) -> Result<Self, Error> {
        crate::keys::decode_32(text).map(Self).ok_or(Error::InvalidKey("the ticket secret is not 52 base32 characters"))
    }
}

impl fmt::Debug for TicketSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketSecret(<redacted>)")
    }
}

/// One relay a ticket lists: where it is and how to trust it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RelayAddr {
    /// `name:port` or `ip:port` (IPv6 in brackets), resolved by the client.
    pub addr: String,
    /// How the client authenticates this relay.
    pub trust: RelayTrust,
}

/// Checks that `addr` has the `name:port` form every address in a ticket needs (an IPv6
/// address in brackets), so a command can refuse `127.0.0.1` or `4433` when it is typed
/// instead of printing a ticket that cannot work. Names are not resolved here: the
/// machine that makes a ticket need not be able to resolve the relay's name.
pub fn check_address(addr: &str) -> Result<(), Error> {
    if addr.parse::<u16>().is_ok() {
        return Err(Error::InvalidAddress("it is a port alone; put the name or IP before it, as in 127.0.0.1:8000"));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(Error::InvalidAddress("it has no port; write name:port, as in relay.example.org:4433"));
    };
    if host.is_empty() {
        return Err(Error::InvalidAddress("it has no name or IP before the port"));
    }
    if host.contains(char::is_whitespace) || host.contains('/') {
        return Err(Error::InvalidAddress("the name holds a space or a slash; give just name:port, no URL"));
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        return Err(Error::InvalidAddress(
            "an IPv6 address with a port goes in brackets, as in [2001:db8::1]:4433 (or it has no port)",
        ));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(Error::InvalidAddress("its port is not a number from 1 to 65535")),
        Ok(_) => Ok(()),
    }
}

/// Everything a client needs to open end-to-end sessions to one host.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Ticket {
    /// The host's public key (its host id).
    pub host: HostId,
    /// The Noise PSK that proves the client was given this ticket.
    pub secret: TicketSecret,
    /// Relays the host registers at, in the order clients should try them.
    pub relays: Vec<RelayAddr>,
}

impl Ticket {
    fn body(&self) -> Result<Vec<u8>, Error> {
        if self.relays.is_empty() || self.relays.len() > MAX_TICKET_RELAYS {
            return Err(Error::InvalidTicket("a ticket lists between 1 and 8 relays"));
        }
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(self.host.as_bytes());
        out.extend_from_slice(&self.secret.0);
        out.push(self.relays.len() as u8);
        for relay in &self.relays {
            if relay.addr.is_empty() || relay.addr.len() > 255 {
                return Err(Error::InvalidTicket("a relay address is empty or longer than 255 bytes"));
            }
            put_short_field(&mut out, relay.addr.as_bytes());
            match relay.trust {
                RelayTrust::Pin(pin) => {
                    out.push(TRUST_PIN);
                    out.extend_from_slice(&pin.0);
                }
                RelayTrust::WebPki => out.push(TRUST_WEBPKI),
            }
        }
        Ok(out)
    }

    /// The ticket's text form (`ferry1…`, lowercase).
    pub fn encode(&self) -> Result<String, Error> {
        let mut bytes = self.body()?;
        let sum = ring::digest::digest(&ring::digest::SHA256, &bytes);
        bytes.extend_from_slice(&sum.as_ref()[..CHECKSUM_LEN]);
        Ok(format!("{TICKET_PREFIX}{}", BASE32.encode(&bytes)))
    }

    /// Parses a ticket, with an error that says what is wrong with it. Either case is
    /// accepted: the base32 alphabet has one letter per sound, so an uppercased ticket (the
    /// QR code's compact alphanumeric form, or a chat app's shouting) reads the same.
    pub fn decode(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        let prefixed = |prefix: &str| text.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix));
        let Some(b32) = text.get(TICKET_PREFIX.len()..).filter(|_| prefixed(TICKET_PREFIX)) else {
            return Err(if prefixed("ferry") {
                Error::InvalidTicket("this ticket is from a newer ferry version; upgrade ferry")
            } else {
                Error::InvalidTicket("a ticket starts with `ferry1`")
            });
        };
        let bytes = BASE32
            .decode(b32.as_bytes())
            .map_err(|_| Error::InvalidTicket("it is not valid base32 (was it cut or mistyped?)"))?;
        if bytes.len() < CHECKSUM_LEN {
            return Err(Error::InvalidTicket("it is too short (was it cut?)"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        let want = ring::digest::digest(&ring::digest::SHA256, body);
        if &want.as_ref()[..CHECKSUM_LEN] != sum {
            return Err(Error::InvalidTicket("its checksum does not match (was it cut or mistyped?)"));
        }
        // The checksum held, so the text arrived whole: a body that ends early was written
        // wrong, not pasted wrong, and the reader's field name would only confuse.
        Self::parse_body(body).map_err(|e| match e {
            Error::Malformed(_) => {
                Error::InvalidTicket("its contents end early (made by a broken or incompatible tool)")
            }
            other => other,
        })
    }

    /// The fields of a checksummed body.
    fn parse_body(body: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let host = PublicKey(r.array("host key")?);
        let secret = TicketSecret(r.array("ticket secret")?);
        let count = usize::from(r.u8("relay count")?);
        if count == 0 || count > MAX_TICKET_RELAYS {
            return Err(Error::InvalidTicket("a ticket lists between 1 and 8 relays"));
        }
        let mut relays = Vec::with_capacity(count);
        for _ in 0..count {
            let addr = std::str::from_utf8(r.short_field("relay address")?)
                .map_err(|_| Error::InvalidTicket("a relay address is not UTF-8"))?
                .to_owned();
            let trust = match r.u8("relay trust")? {
                TRUST_PIN => RelayTrust::Pin(CertPin(r.array("relay pin")?)),
                TRUST_WEBPKI => RelayTrust::WebPki,
                _ => return Err(Error::InvalidTicket("unknown relay trust kind")),
            };
            relays.push(RelayAddr { addr, trust });
        }
        r.finish("trailing bytes").map_err(|_| Error::InvalidTicket("it has trailing bytes"))?;
        Ok(Self { host, secret, relays })
    }
}

impl FromStr for Ticket {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::decode(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Ticket {
        Ticket {
            host: PublicKey([7; 32]),
            secret: TicketSecret([9; 32]),
            relays: vec![
                RelayAddr { addr: "relay.example.org:4433".into(), trust: RelayTrust::Pin(CertPin([1; 32])) },
                RelayAddr { addr: "[::1]:443".into(), trust: RelayTrust::WebPki },
            ],
        }
    }

    #[test]
    fn ticket_round_trips() {
        let t = sample();
        let text = t.encode().unwrap();
        assert!(text.starts_with("ferry1"));
        assert_eq!(Ticket::decode(&text).unwrap(), t);
        assert_eq!(Ticket::decode(&format!("  {text}\n")).unwrap(), t);
    }

    #[test]
    fn damaged_tickets_are_explained() {
        let text = sample().encode().unwrap();
        let cut = &text[..text.len() - 3];
        assert!(Ticket::decode(cut).unwrap_err().to_string().contains("cut"));
        let mut flipped = text.clone().into_bytes();
        let i = flipped.len() / 2;
        flipped[i] = if flipped[i] == b'a' { b'b' } else { b'a' };
        let err = Ticket::decode(std::str::from_utf8(&flipped).unwrap()).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        assert!(Ticket::decode("ferry2abc").unwrap_err().to_string().contains("newer"));
        assert!(Ticket::decode("hello").is_err());
    }

    #[test]
    fn addresses_without_a_port_are_refused_with_the_fix() {
        for good in ["relay.example.org:4433", "127.0.0.1:1", "[::1]:443", "localhost:65535"] {
            check_address(good).unwrap();
        }
        let why = |addr: &str| check_address(addr).unwrap_err().to_string();
        assert!(why("127.0.0.1").contains("no port"), "{}", why("127.0.0.1"));
        assert!(why("8000").contains("port alone"), "{}", why("8000"));
        assert!(why("::1").contains("brackets"), "{}", why("::1"));
        assert!(why(":4433").contains("no name"), "{}", why(":4433"));
        assert!(why("relay:0").contains("1 to 65535"), "{}", why("relay:0"));
        assert!(why("relay:http").contains("1 to 65535"), "{}", why("relay:http"));
        assert!(why("https://relay:443").contains("no URL"), "{}", why("https://relay:443"));
    }

    #[test]
    fn an_uppercased_ticket_reads_the_same() {
        let t = sample();
        let upper = t.encode().unwrap().to_uppercase();
        assert!(upper.starts_with("FERRY1"));
        assert_eq!(Ticket::decode(&upper).unwrap(), t);
        assert!(Ticket::decode("FERRY2ABC").unwrap_err().to_string().contains("newer"));
    }

    #[test]
    fn a_whole_but_short_body_is_a_ticket_error() {
        // A body cut inside the first relay address, with a checksum that matches it.
        let mut body = sample().body().unwrap();
        body.truncate(32 + 32 + 1 + 3);
        let sum = ring::digest::digest(&ring::digest::SHA256, &body);
        body.extend_from_slice(&sum.as_ref()[..CHECKSUM_LEN]);
        let err = Ticket::decode(&format!("ferry1{}", BASE32.encode(&body))).unwrap_err().to_string();
        assert!(err.starts_with("invalid ticket: its contents end early"), "{err}");
        assert!(!err.contains("control message"), "{err}");
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert!(!format!("{:?}", sample()).contains("9, 9"));
    }

    proptest! {
        #[test]
        fn random_text_never_panics(s in "\\PC{0,300}") {
            let _ = Ticket::decode(&s);
        }

        #[test]
        fn random_payload_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Ticket::decode(&format!("ferry1{}", BASE32.encode(&bytes)));
        }

        #[test]
        fn encode_decode_is_identity(
            host in any::<[u8; 32]>(),
            secret in any::<[u8; 32]>(),
            relays in proptest::collection::vec(("[a-z0-9.:-]{1,60}", proptest::option::of(any::<[u8; 32]>())), 1..=8),
        ) {
            let t = Ticket {
                host: PublicKey(host),
                secret: TicketSecret(secret),
                relays: relays.into_iter().map(|(addr, pin)| RelayAddr {
                    addr,
                    trust: pin.map_or(RelayTrust::WebPki, |p| RelayTrust::Pin(CertPin(p))),
                }).collect(),
            };
            prop_assert_eq!(Ticket::decode(&t.encode().unwrap()).unwrap(), t);
        }
    }
}
