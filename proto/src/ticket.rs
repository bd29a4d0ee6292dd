//! The ticket: one copy-pasteable string with everything a client needs to reach a host.
//!
//! ```text
//! ferry1<base32( body | sha256(body)[..4] )>
//! body = host public key (32) | ticket secret (32) | relay count (u8, 1..=8)
//!        | per relay: address (u8 length + UTF-8 "name:port") | trust
//! trust = 0x01 | SPKI SHA-256 pin (32)      -- pinned certificate or CA key
//!       | 0x02                             -- publicly trusted (webpki roots)
//!
//! ferry2<base32( body2 | sha256(body2)[..4] )>
//! body2 = the ferry1 body, but relay count 0..=8 | extensions
//! extension = tag (u8) | u8 length | value
//!   0x01 direct address: UTF-8 "ip:port" (or "name:port") where the host accepts
//!        sessions without a relay (up to 8)
//!   0x02 service: UTF-8 name of the host's service the ticket reaches (at most one)
//! ```
//! The prefix is the version: a later format gets a new prefix, and old clients say so
//! instead of misreading it. A ticket with neither direct addresses nor a service is
//! written as `ferry1`, byte for byte what older versions wrote, so it still works with
//! them; `ferry2` is only written when it carries something `ferry1` cannot. Unknown
//! extension tags are skipped (each carries its length), so a later extension does not
//! need a third prefix unless older clients must not ignore it. The 4-byte checksum catches a truncated or mistyped paste
//! before any network traffic. The ticket secret is the Noise PSK of the end-to-end
//! handshake, so whoever holds the ticket can open sessions: treat it like a password.

use std::fmt;
use std::str::FromStr;

use crate::codec::{Reader, put_short_field};
use crate::keys::BASE32;
use crate::{CertPin, Error, HostId, PublicKey, RelayTrust};

/// Version prefix of tickets without extensions (the first format).
pub const TICKET_PREFIX: &str = "ferry1";
/// Version prefix of tickets with direct addresses or a service.
pub const TICKET_PREFIX_V2: &str = "ferry2";

/// Most relays a ticket may list.
pub const MAX_TICKET_RELAYS: usize = 8;
/// Most direct addresses a ticket may list.
pub const MAX_TICKET_DIRECT: usize = 8;
/// Longest service name, bytes.
pub const MAX_SERVICE_NAME: usize = 64;

const EXT_DIRECT: u8 = 1;
const EXT_SERVICE: u8 = 2;

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
    /// Relays the host registers at, in the order clients should try them (may be empty
    /// for a host with relaying off, which lists direct addresses instead).
    pub relays: Vec<RelayAddr>,
    /// Addresses (`ip:port` or `name:port`) where the host accepts sessions without a
    /// relay: the ones its owner advertises, e.g. a forwarded port.
    pub direct: Vec<String>,
    /// The host's service this ticket reaches (`None`: the host's default service).
    pub service: Option<String>,
}

/// Checks a service name: 1 to 64 bytes of ASCII letters, digits, `-`, `_` and `.`, so it
/// can be typed, put in a file name, and never needs quoting.
pub fn check_service_name(name: &str) -> Result<(), Error> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > MAX_SERVICE_NAME || !name.chars().all(allowed) {
        return Err(Error::InvalidTicket(
            "a service name is 1 to 64 letters, digits, `-`, `_` or `.` (as in web or ssh)",
        ));
    }
    Ok(())
}

impl Ticket {
    /// A ticket for `host` through `relays`, with no direct address, for the default service.
    pub fn new(host: HostId, secret: TicketSecret, relays: Vec<RelayAddr>) -> Self {
        Self { host, secret, relays, direct: Vec::new(), service: None }
    }

    /// Whether the ticket needs the second format (it carries direct addresses or a service).
    fn has_extensions(&self) -> bool {
        !self.direct.is_empty() || self.service.is_some()
    }

    fn body(&self) -> Result<Vec<u8>, Error> {
        if self.relays.len() > MAX_TICKET_RELAYS || self.direct.len() > MAX_TICKET_DIRECT {
            return Err(Error::InvalidTicket("a ticket lists at most 8 relays and 8 direct addresses"));
        }
        if self.relays.is_empty() && self.direct.is_empty() {
            return Err(Error::InvalidTicket("a ticket lists at least one relay or one direct address"));
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
        for addr in &self.direct {
            if addr.is_empty() || addr.len() > 255 {
                return Err(Error::InvalidTicket("a direct address is empty or longer than 255 bytes"));
            }
            out.push(EXT_DIRECT);
            put_short_field(&mut out, addr.as_bytes());
        }
        if let Some(service) = &self.service {
            check_service_name(service)?;
            out.push(EXT_SERVICE);
            put_short_field(&mut out, service.as_bytes());
        }
        Ok(out)
    }

    /// The ticket's text form (`ferry1…` or `ferry2…`, lowercase).
    pub fn encode(&self) -> Result<String, Error> {
        let mut bytes = self.body()?;
        let sum = ring::digest::digest(&ring::digest::SHA256, &bytes);
        bytes.extend_from_slice(&sum.as_ref()[..CHECKSUM_LEN]);
        let prefix = if self.has_extensions() { TICKET_PREFIX_V2 } else { TICKET_PREFIX };
        Ok(format!("{prefix}{}", BASE32.encode(&bytes)))
    }

    /// Parses a ticket, with an error that says what is wrong with it. Either case is
    /// accepted: the base32 alphabet has one letter per sound, so an uppercased ticket (the
    /// QR code's compact alphanumeric form, or a chat app's shouting) reads the same.
    pub fn decode(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        let prefixed = |prefix: &str| text.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix));
        let version = if prefixed(TICKET_PREFIX) {
            Version::One
        } else if prefixed(TICKET_PREFIX_V2) {
            Version::Two
        } else {
            return Err(if prefixed("ferry") {
                Error::InvalidTicket("this ticket is from a newer ferry version; upgrade ferry")
            } else {
                Error::InvalidTicket("a ticket starts with `ferry1` or `ferry2`")
            });
        };
        let b32 = &text[TICKET_PREFIX.len()..];
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
        Self::parse_body(body, version).map_err(|e| match e {
            Error::Malformed(_) => {
                Error::InvalidTicket("its contents end early (made by a broken or incompatible tool)")
            }
            other => other,
        })
    }

    /// The fields of a checksummed body.
    fn parse_body(body: &[u8], version: Version) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let host = PublicKey(r.array("host key")?);
        let secret = TicketSecret(r.array("ticket secret")?);
        let count = usize::from(r.u8("relay count")?);
        let fewest = if version == Version::One { 1 } else { 0 };
        if count < fewest || count > MAX_TICKET_RELAYS {
            return Err(Error::InvalidTicket("a ticket lists at most 8 relays (a ferry1 ticket at least 1)"));
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
        let mut ticket = Self::new(host, secret, relays);
        if version == Version::One {
            r.finish("trailing bytes").map_err(|_| Error::InvalidTicket("it has trailing bytes"))?;
            return Ok(ticket);
        }
        while !r.is_empty() {
            let tag = r.u8("extension tag")?;
            let value = r.short_field("extension")?;
            let text = || {
                std::str::from_utf8(value)
                    .map(str::to_owned)
                    .map_err(|_| Error::InvalidTicket("a direct address or service name is not UTF-8"))
            };
            match tag {
                EXT_DIRECT if ticket.direct.len() < MAX_TICKET_DIRECT => ticket.direct.push(text()?),
                EXT_DIRECT => return Err(Error::InvalidTicket("a ticket lists at most 8 direct addresses")),
                EXT_SERVICE if ticket.service.is_none() => {
                    let name = text()?;
                    check_service_name(&name)?;
                    ticket.service = Some(name);
                }
                EXT_SERVICE => return Err(Error::InvalidTicket("a ticket names at most one service")),
                _ => {} // A later version's extension: skipped, its length is known.
            }
        }
        if ticket.relays.is_empty() && ticket.direct.is_empty() {
            return Err(Error::InvalidTicket("a ticket lists at least one relay or one direct address"));
        }
        Ok(ticket)
    }
}

/// Which format a ticket's prefix announced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    One,
    Two,
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
        Ticket::new(
            PublicKey([7; 32]),
            TicketSecret([9; 32]),
            vec![
                RelayAddr { addr: "relay.example.org:4433".into(), trust: RelayTrust::Pin(CertPin([1; 32])) },
                RelayAddr { addr: "[::1]:443".into(), trust: RelayTrust::WebPki },
            ],
        )
    }

    #[test]
    fn a_ticket_without_extensions_is_the_first_format_byte_for_byte() {
        // What ferry1-only versions wrote: prefix, body, checksum, nothing else.
        let t = sample();
        let text = t.encode().unwrap();
        assert!(text.starts_with("ferry1"), "{text}");
        let bytes = BASE32.decode(&text.as_bytes()["ferry1".len()..]).unwrap();
        assert_eq!(&bytes[..bytes.len() - CHECKSUM_LEN], &t.body().unwrap()[..]);
        assert_eq!(bytes.len(), 32 + 32 + 1 + (1 + 22 + 1 + 32) + (1 + 9 + 1) + CHECKSUM_LEN);
    }

    #[test]
    fn direct_addresses_and_a_service_use_the_second_format() {
        let mut t = sample();
        t.direct = vec!["192.0.2.7:4433".into(), "[2001:db8::7]:4433".into()];
        t.service = Some("web".into());
        let text = t.encode().unwrap();
        assert!(text.starts_with("ferry2"), "{text}");
        assert_eq!(Ticket::decode(&text).unwrap(), t);
        assert_eq!(Ticket::decode(&text.to_uppercase()).unwrap(), t);

        // Relaying off: direct addresses only.
        t.relays.clear();
        assert_eq!(Ticket::decode(&t.encode().unwrap()).unwrap(), t);
        t.direct.clear();
        t.service = None;
        assert!(t.encode().unwrap_err().to_string().contains("at least one relay or one direct"));
    }

    #[test]
    fn unknown_extensions_are_skipped_and_bad_service_names_refused() {
        let mut t = sample();
        t.service = Some("ssh".into());
        let mut body = t.body().unwrap();
        body.extend_from_slice(&[0x7f, 3, b'x', b'y', b'z']);
        let sum = ring::digest::digest(&ring::digest::SHA256, &body);
        body.extend_from_slice(&sum.as_ref()[..CHECKSUM_LEN]);
        assert_eq!(Ticket::decode(&format!("ferry2{}", BASE32.encode(&body))).unwrap(), t);

        for bad in ["", "a b", "web/1", &"x".repeat(65)] {
            assert!(check_service_name(bad).is_err(), "{bad:?}");
        }
        t.service = Some("we b".into());
        assert!(t.encode().unwrap_err().to_string().contains("service name"));
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
        assert!(Ticket::decode("ferry3abc").unwrap_err().to_string().contains("newer"));
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
        assert!(Ticket::decode("FERRY3ABC").unwrap_err().to_string().contains("newer"));
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
            let _ = Ticket::decode(&format!("ferry2{}", BASE32.encode(&bytes)));
        }

        #[test]
        fn encode_decode_is_identity(
            host in any::<[u8; 32]>(),
            secret in any::<[u8; 32]>(),
            relays in proptest::collection::vec(("[a-z0-9.:-]{1,60}", proptest::option::of(any::<[u8; 32]>())), 1..=8),
            direct in proptest::collection::vec("[a-z0-9.:-]{1,60}", 0..=8),
            service in proptest::option::of("[a-z0-9_.-]{1,64}"),
        ) {
            let mut t = Ticket::new(
                PublicKey(host),
                TicketSecret(secret),
                relays.into_iter().map(|(addr, pin)| RelayAddr {
                    addr,
                    trust: pin.map_or(RelayTrust::WebPki, |p| RelayTrust::Pin(CertPin(p))),
                }).collect(),
            );
            prop_assert_eq!(Ticket::decode(&t.encode().unwrap()).unwrap(), t.clone());
            t.direct = direct;
            t.service = service;
            prop_assert_eq!(Ticket::decode(&t.encode().unwrap()).unwrap(), t);
        }
    }
}
