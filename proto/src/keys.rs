//! X25519 static keys and their text form.
//!
//! A host's identity is its long-term X25519 key; its **host id** is the public half written
//! as lowercase base32 without padding (52 characters), which survives copy-paste, URLs and
//! case-folding chat apps. Clients may hold a static key too, so a host can allow-list them.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use curve25519_dalek::montgomery::MontgomeryPoint;
use data_encoding::{Encoding, Specification};

use crate::Error;

/// Lowercase base32 without padding; decoding also accepts uppercase.
pub(crate) static BASE32: LazyLock<Encoding> = LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.translate.from.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    spec.translate.to.push_str("abcdefghijklmnopqrstuvwxyz");
    spec.encoding().expect("the base32 specification is valid")
});

/// Decodes exactly 32 bytes of base32 text.
pub(crate) fn decode_32(text: &str) -> Option<[u8; 32]> {
    let bytes = BASE32.decode(text.trim().as_bytes()).ok()?;
    bytes.try_into().ok()
}

/// An X25519 public key: a host id, or a client's identity on a host's allow-list.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

/// A host's id is its public key.
pub type HostId = PublicKey;

impl PublicKey {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE32.encode(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        decode_32(s).map(Self).ok_or(Error::InvalidHostId("expected 52 base32 characters (a-z, 2-7)"))
    }
}

/// An X25519 private key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct StaticKey {
    private: [u8; 32],
    public: PublicKey,
}

impl StaticKey {
    /// Makes a new random key from the system's secure random source.
    pub fn generate() -> Result<Self, Error> {
        let mut private = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut private)
            .map_err(|_| Error::InvalidKey("the system random source failed"))?;
        Ok(Self::from_private(private))
    }

    /// Rebuilds a key from its private bytes.
    pub fn from_private(private: [u8; 32]) -> Self {
        let public = PublicKey(MontgomeryPoint::mul_base_clamped(private).to_bytes());
        Self { private, public }
    }

    /// The private bytes, for Noise and for writing the key file.
    pub fn private_bytes(&self) -> &[u8; 32] {
        &self.private
    }

    /// The public half (for a host: its host id).
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The private key as base32 text, for key files.
    pub fn to_base32(&self) -> String {
        BASE32.encode(&self.private)
    }

    /// Parses a private key written by [`StaticKey::to_base32`].
    pub fn from_base32(text: &str) -> Result<Self, Error> {
        decode_32(text).map(Self::from_private).ok_or(Error::InvalidKey("expected 52 base32 characters"))
    }
}

impl fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StaticKey(public: {}, private: <redacted>)", self.public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_matches_snow() {
        let pair = snow::Builder::new("Noise_XX_25519_ChaChaPoly_BLAKE2s".parse().unwrap()).generate_keypair().unwrap();
        let key = StaticKey::from_private(pair.private.try_into().unwrap());
        assert_eq!(key.public().0.as_slice(), pair.public.as_slice());
    }

    #[test]
    fn host_id_text_round_trips_and_ignores_case() {
        let key = StaticKey::generate().unwrap();
        let text = key.public().to_string();
        assert_eq!(text.len(), 52);
        assert!(text.chars().all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
        assert_eq!(text.parse::<HostId>().unwrap(), key.public());
        assert_eq!(text.to_uppercase().parse::<HostId>().unwrap(), key.public());
        assert!("not-a-key".parse::<HostId>().is_err());
        assert!(text[..50].parse::<HostId>().is_err());
    }

    #[test]
    fn debug_redacts_private_key() {
        let key = StaticKey::generate().unwrap();
        let dbg = format!("{key:?}");
        assert!(!dbg.contains(&key.to_base32()));
        assert_eq!(StaticKey::from_base32(&key.to_base32()).unwrap().public(), key.public());
    }
}
