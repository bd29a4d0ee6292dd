//! The post-quantum half of the full handshake: ML-KEM-768 (FIPS 203) beside Noise's X25519,
//! and the key schedule that mixes the two.
//!
//! The client makes a fresh ML-KEM key pair for every full handshake and sends the
//! encapsulation key inside message 1's (encrypted) payload; the host encapsulates to it and
//! returns the ciphertext inside message 2's payload. Both ends then replace Noise's split
//! keys with
//!
//! ```text
//! k_i2r | k_r2i = HKDF-SHA256(salt = handshake hash, ikm = k_i2r | k_r2i | kem secret,
//!                              info = "ferry/1 hybrid keys")[..64]
//! ```
//! so a session's keys need both the X25519 secrets and the KEM secret: recording today's
//! traffic and breaking X25519 later reveals nothing without ML-KEM broken too. Everything
//! derived from a finished handshake (the record keys, issue 15's resume keys, the
//! resumption PSK of [`crate::e2e::psk`]) is derived from these keys, so it inherits the
//! post-quantum secret.
//!
//! This module owns the KEM calls and that one derivation, kept apart from the Noise
//! message layouts of [`crate::e2e::handshake`].

use ml_kem::kem::{Decapsulate, Encapsulate, Kem, KeyExport};
use ml_kem::{MlKem768, ml_kem_768};
use ring::hkdf;

/// Bytes of an ML-KEM-768 encapsulation key (client → host, in message 1).
pub const KEM_KEY_LEN: usize = 1184;
/// Bytes of an ML-KEM-768 ciphertext (host → client, in message 2).
pub const KEM_CIPHERTEXT_LEN: usize = 1088;
const HYBRID_LABEL: &[u8] = b"ferry/1 hybrid keys";

/// The client's ephemeral ML-KEM key pair of one full handshake.
pub(crate) struct KemKeyPair {
    decapsulation: ml_kem_768::DecapsulationKey,
}

impl KemKeyPair {
    /// A fresh key pair from the system's random source.
    pub(crate) fn generate() -> Self {
        let (decapsulation, _) = MlKem768::generate_keypair();
        Self { decapsulation }
    }

    /// The encapsulation key, as message 1 carries it.
    pub(crate) fn public(&self) -> [u8; KEM_KEY_LEN] {
        let mut out = [0u8; KEM_KEY_LEN];
        out.copy_from_slice(&self.decapsulation.encapsulation_key().to_bytes());
        out
    }

    /// The shared secret in the host's `ciphertext` (`None`: not a ciphertext's length).
    /// ML-KEM decapsulation never fails otherwise: a forged ciphertext gives a secret the
    /// host does not have (implicit rejection), so the session's first record fails to open.
    pub(crate) fn decapsulate(&self, ciphertext: &[u8]) -> Option<[u8; 32]> {
        let secret = self.decapsulation.decapsulate_slice(ciphertext).ok()?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&secret);
        Some(out)
    }
}

/// The host's side: encapsulates to the client's `key`; returns the ciphertext for message 2
/// and the shared secret (`None`: not a valid encapsulation key).
pub(crate) fn encapsulate(key: &[u8]) -> Option<([u8; KEM_CIPHERTEXT_LEN], [u8; 32])> {
    let key = ml_kem::Key::<ml_kem_768::EncapsulationKey>::try_from(key).ok()?;
    let key = ml_kem_768::EncapsulationKey::new(&key).ok()?;
    let (ciphertext, secret) = key.encapsulate();
    let mut ct = [0u8; KEM_CIPHERTEXT_LEN];
    ct.copy_from_slice(&ciphertext);
    let mut out = [0u8; 32];
    out.copy_from_slice(&secret);
    #[cfg(test)]
    tamper::apply(&mut out);
    Some((ct, out))
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256 of `ikm` salted with `salt`, expanded with `info` into `out` (at most 255
/// hash lengths, which every caller is far below).
pub(crate) fn hkdf_into(salt: &[u8], ikm: &[&[u8]], info: &[u8], out: &mut [u8]) {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&ikm.concat());
    let info = [info];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("callers ask for at most 64 bytes, far below HKDF-SHA256's 8160");
}

/// Mixes the KEM `secret` into Noise's split keys (see the module doc); returns the hybrid
/// `(initiator_to_responder, responder_to_initiator)`.
pub(crate) fn mix(h: &[u8], i2r: &[u8; 32], r2i: &[u8; 32], secret: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let mut okm = [0u8; 64];
    hkdf_into(h, &[i2r, r2i, secret], HYBRID_LABEL, &mut okm);
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    a.copy_from_slice(&okm[..32]);
    b.copy_from_slice(&okm[32..]);
    (a, b)
}

/// A test hook: flips a byte of the host's KEM secret on this thread, to show that the
/// session keys depend on it.
#[cfg(test)]
pub(crate) mod tamper {
    use std::cell::Cell;

    thread_local! {
        static FLIP: Cell<bool> = const { Cell::new(false) };
    }

    /// Flips a byte of every KEM secret the host side computes on this thread while `on`.
    pub(crate) fn flip_host_secret(on: bool) {
        FLIP.with(|f| f.set(on));
    }

    pub(super) fn apply(secret: &mut [u8; 32]) {
        if FLIP.with(Cell::get) {
            secret[0] ^= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_of_the_kem_agree_and_a_changed_ciphertext_does_not() {
        let pair = KemKeyPair::generate();
        let public = pair.public();
        assert_eq!(public.len(), KEM_KEY_LEN);
        let (ct, host_secret) = encapsulate(&public).unwrap();
        assert_eq!(pair.decapsulate(&ct), Some(host_secret));
        let mut changed = ct;
        changed[7] ^= 1;
        assert_ne!(pair.decapsulate(&changed), Some(host_secret), "implicit rejection gives another secret");
        assert_eq!(pair.decapsulate(&ct[..100]), None);
        assert!(encapsulate(&public[..100]).is_none());
    }

    #[test]
    fn the_mixed_keys_depend_on_every_input() {
        let base = mix(b"h", &[1; 32], &[2; 32], &[3; 32]);
        assert_ne!(base.0, base.1);
        assert_ne!(base, mix(b"h", &[1; 32], &[2; 32], &[4; 32]), "the KEM secret");
        assert_ne!(base, mix(b"h", &[9; 32], &[2; 32], &[3; 32]), "the X25519 keys");
        assert_ne!(base, mix(b"g", &[1; 32], &[2; 32], &[3; 32]), "the handshake hash");
    }
}
