//! What every new certificate needs besides its names: a key of the chosen kind and a
//! random serial number.

use crate::Error;

/// Which kind of key a new certificate gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyAlg {
    /// ECDSA on P-256 with SHA-256: what every TLS stack accepts.
    #[default]
    EcdsaP256,
    /// Ed25519: smaller and faster, accepted by rustls (not by every other client).
    Ed25519,
}

impl KeyAlg {
    /// A fresh key pair of this kind.
    pub fn generate(self) -> Result<rcgen::KeyPair, Error> {
        let alg = match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        };
        Ok(rcgen::KeyPair::generate_for(alg)?)
    }
}

/// A random positive 16-byte serial number (RFC 5280 asks for unique serials per issuer;
/// random ones need no state on disk).
pub(crate) fn random_serial() -> Result<rcgen::SerialNumber, Error> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(Error::Random)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}
