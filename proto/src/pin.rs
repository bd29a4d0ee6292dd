//! How a client decides to trust a relay's certificate.
//!
//! Relays usually run with self-signed or private-CA certificates, so a ticket carries a
//! **pin**: the SHA-256 of a certificate's SubjectPublicKeyInfo (as in HPKP and curl's
//! `--pinnedpubkey`). Pinning the key rather than the certificate lets an operator renew
//! a certificate for the same key without breaking tickets. A relay with a publicly
//! trusted certificate is written `webpki` instead.

use std::fmt;
use std::str::FromStr;

use crate::Error;
use crate::keys::{BASE32, decode_32};

/// SHA-256 of a certificate's DER SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertPin(pub [u8; 32]);

impl CertPin {
    /// The pin of a DER-encoded SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }
}

impl fmt::Display for CertPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", BASE32.encode(&self.0))
    }
}

impl fmt::Debug for CertPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertPin({self})")
    }
}

impl FromStr for CertPin {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let body = s.trim().strip_prefix("sha256:").ok_or(Error::InvalidPin("missing the `sha256:` prefix"))?;
        decode_32(body).map(Self).ok_or(Error::InvalidPin("the digest is not 52 base32 characters"))
    }
}

/// How a client authenticates one relay.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RelayTrust {
    /// Some certificate in the relay's chain has this public-key pin.
    Pin(CertPin),
    /// The relay's certificate chains to the system's public roots for its name.
    WebPki,
}

impl fmt::Display for RelayTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pin(pin) => pin.fmt(f),
            Self::WebPki => f.write_str("webpki"),
        }
    }
}

impl FromStr for RelayTrust {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if s.trim() == "webpki" { Ok(Self::WebPki) } else { s.parse().map(Self::Pin) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_text_round_trips() {
        let pin = CertPin::of_spki(b"some spki");
        let text = pin.to_string();
        assert!(text.starts_with("sha256:"));
        assert_eq!(text.parse::<CertPin>().unwrap(), pin);
        assert_eq!(text.parse::<RelayTrust>().unwrap(), RelayTrust::Pin(pin));
        assert_eq!("webpki".parse::<RelayTrust>().unwrap(), RelayTrust::WebPki);
        assert!("sha256:zz".parse::<CertPin>().is_err());
        assert!(text[7..].parse::<CertPin>().is_err());
    }
}
