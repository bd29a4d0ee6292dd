//! The host's proof that it holds the private key behind the host id it registers: the
//! cryptography of registration (the conversation around it is `registration.rs`).
//!
//! A Noise `XN` handshake, host as initiator and relay as responder (the relay has no
//! static key in this handshake: its identity is already proven by TLS):
//!
//! ```text
//! prologue = "ferry/1 registration" | TLS exporter value of this hop (32 bytes)
//! host  -> relay   Register { host_id, token, XN msg 1: e }
//! relay -> host    Challenge { XN msg 2: e, ee }
//! host  -> relay   Proof { XN msg 3: s, se }     -- relay checks s == host_id
//! ```
//! `se` can only be computed by the holder of the host's private key, and the prologue
//! ties the proof to the TLS session it was made on: a proof relayed or replayed onto a
//! different connection fails, because both ends mix different exporter values.

use snow::{Builder, HandshakeState};

use crate::{Error, HostId, PublicKey, StaticKey};

/// Noise protocol name of the registration proof.
pub const REGISTRATION_NOISE: &str = "Noise_XN_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE_LABEL: &[u8] = b"ferry/1 registration";
const MAX_HANDSHAKE_LEN: usize = 256;

fn builder<'a>(prologue: &'a [u8]) -> Result<Builder<'a>, Error> {
    let params = REGISTRATION_NOISE.parse().map_err(Error::Noise)?;
    Ok(Builder::new(params).prologue(prologue)?)
}

fn prologue(exporter: &[u8]) -> Vec<u8> {
    [PROLOGUE_LABEL, exporter].concat()
}

/// The host side of the proof.
pub struct HostProver {
    hs: HandshakeState,
}

impl HostProver {
    /// Starts a proof for `key` on the hop whose exporter value is `exporter`; returns the
    /// handshake bytes for [`crate::Message::Register`].
    pub fn start(key: &StaticKey, exporter: &[u8]) -> Result<(Self, Vec<u8>), Error> {
        let prologue = prologue(exporter);
        let mut hs = builder(&prologue)?.local_private_key(key.private_bytes())?.build_initiator()?;
        let mut msg = vec![0u8; MAX_HANDSHAKE_LEN];
        let n = hs.write_message(&[], &mut msg)?;
        msg.truncate(n);
        Ok((Self { hs }, msg))
    }

    /// Answers the relay's challenge; returns the bytes for [`crate::Message::Proof`].
    pub fn answer(mut self, challenge: &[u8]) -> Result<Vec<u8>, Error> {
        let mut scratch = [0u8; MAX_HANDSHAKE_LEN];
        self.hs
            .read_message(challenge, &mut scratch)
            .map_err(|_| Error::BadProof("the relay's challenge did not verify"))?;
        let mut msg = vec![0u8; MAX_HANDSHAKE_LEN];
        let n = self.hs.write_message(&[], &mut msg)?;
        msg.truncate(n);
        Ok(msg)
    }
}

/// The relay side of the proof.
pub struct RelayVerifier {
    hs: HandshakeState,
}

impl RelayVerifier {
    /// Reads the host's first message and returns the challenge to send back.
    pub fn start(exporter: &[u8], hello: &[u8]) -> Result<(Self, Vec<u8>), Error> {
        let prologue = prologue(exporter);
        let mut hs = builder(&prologue)?.build_responder()?;
        let mut scratch = [0u8; MAX_HANDSHAKE_LEN];
        hs.read_message(hello, &mut scratch)
            .map_err(|_| Error::BadProof("the first handshake message is malformed"))?;
        let mut msg = vec![0u8; MAX_HANDSHAKE_LEN];
        let n = hs.write_message(&[], &mut msg)?;
        msg.truncate(n);
        Ok((Self { hs }, msg))
    }

    /// Checks the host's proof; succeeds only if it was made with the private key of
    /// `claimed` on this very hop.
    pub fn verify(mut self, proof: &[u8], claimed: &HostId) -> Result<(), Error> {
        let mut scratch = [0u8; MAX_HANDSHAKE_LEN];
        self.hs
            .read_message(proof, &mut scratch)
            .map_err(|_| Error::BadProof("it was not made on this connection or is corrupt"))?;
        let proven = self
            .hs
            .get_remote_static()
            .and_then(|s| <[u8; 32]>::try_from(s).ok())
            .map(PublicKey)
            .ok_or(Error::BadProof("no static key in the proof"))?;
        if &proven == claimed {
            Ok(())
        } else {
            Err(Error::BadProof("the host does not hold the key of the host id it claims"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(prover_key: &StaticKey, claimed: HostId, host_exp: &[u8], relay_exp: &[u8]) -> Result<(), Error> {
        let (prover, hello) = HostProver::start(prover_key, host_exp)?;
        let (verifier, challenge) = RelayVerifier::start(relay_exp, &hello)?;
        let proof = prover.answer(&challenge)?;
        verifier.verify(&proof, &claimed)
    }

    #[test]
    fn holder_of_the_key_registers() {
        let key = StaticKey::generate().unwrap();
        run(&key, key.public(), &[1; 32], &[1; 32]).unwrap();
    }

    #[test]
    fn another_key_cannot_claim_a_host_id() {
        let victim = StaticKey::generate().unwrap();
        let thief = StaticKey::generate().unwrap();
        let err = run(&thief, victim.public(), &[1; 32], &[1; 32]).unwrap_err();
        assert!(matches!(err, Error::BadProof(_)));
    }

    #[test]
    fn proof_made_for_another_hop_fails() {
        let key = StaticKey::generate().unwrap();
        // The host believes it is on hop A; the relay's connection is hop B.
        let prover_hop = [1u8; 32];
        let relay_hop = [2u8; 32];
        let (prover, hello) = HostProver::start(&key, &prover_hop).unwrap();
        let (verifier, challenge) = RelayVerifier::start(&relay_hop, &hello).unwrap();
        // The challenge no longer decrypts for the host, and a proof forced through fails.
        match prover.answer(&challenge) {
            Err(_) => {}
            Ok(proof) => assert!(verifier.verify(&proof, &key.public()).is_err()),
        }
    }

    #[test]
    fn replayed_proof_fails_on_a_new_handshake() {
        let key = StaticKey::generate().unwrap();
        let exp = [3u8; 32];
        let (prover, hello) = HostProver::start(&key, &exp).unwrap();
        let (_first, challenge) = RelayVerifier::start(&exp, &hello).unwrap();
        let captured = prover.answer(&challenge).unwrap();
        // Same hello replayed, fresh relay ephemeral: the captured proof is useless.
        let (second, _) = RelayVerifier::start(&exp, &hello).unwrap();
        assert!(second.verify(&captured, &key.public()).is_err());
    }

    #[test]
    fn garbage_handshakes_are_errors() {
        assert!(RelayVerifier::start(&[0; 32], &[1, 2, 3]).is_err());
        let key = StaticKey::generate().unwrap();
        let (_, hello) = HostProver::start(&key, &[0; 32]).unwrap();
        let (verifier, _) = RelayVerifier::start(&[0; 32], &hello).unwrap();
        assert!(verifier.verify(&[0; 64], &key.public()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn random_registration_bytes_never_panic(
            hello in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            proof in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let key = StaticKey::from_private([5; 32]);
            let _ = RelayVerifier::start(&[0; 32], &hello);
            let (_, good_hello) = HostProver::start(&key, &[0; 32]).unwrap();
            let (verifier, _) = RelayVerifier::start(&[0; 32], &good_hello).unwrap();
            proptest::prop_assert!(verifier.verify(&proof, &key.public()).is_err());
            let (prover, _) = HostProver::start(&key, &[0; 32]).unwrap();
            let _ = prover.answer(&hello);
        }
    }
}
