//! How the client checks the relay's certificate: by pin or by public roots.
//!
//! A ticket's pin is the SHA-256 of one public key, and the relay is accepted when
//! - its **leaf** certificate carries that key (self-signed relays, or a ticket pinning a
//!   relay certificate) and the leaf is within its validity period; names and issuers do
//!   not matter, which is what makes self-signed relays safe to use; or
//! - a **CA** certificate the relay sends along (`cert.pem` from `ferry-cert issue` holds
//!   leaf then CA) carries that key, and the leaf properly chains to it: signature,
//!   validity, server-auth usage, and the name the client dialled. Pinning the CA is what
//!   lets an operator renew the relay certificate (new key) without breaking tickets.
//!
//! In both cases rustls then checks that the relay signs the handshake with the leaf key.
//! With `webpki`, the usual chain-to-a-public-root and name checks apply (Mozilla's
//! roots, from `webpki-roots`).
//!
//! A refused certificate is a TLS failure far from the code that can explain it, so the
//! verifier leaves the reason in a [`Rejection`] slot for the hop to turn into an
//! [`Error`] naming the problem. The reason is also the text of the TLS error itself, so
//! a caller that only sees the TLS error still reads it.

use std::sync::{Arc, Mutex, PoisonError};

use ferry_proto::{CertPin, RelayAddr, RelayTrust};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;

/// Why a relay's certificate was refused.
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CertProblem {
    /// Neither the leaf nor any certificate sent with it carries the pinned key.
    #[error("the relay's certificate does not match the ticket's pin")]
    PinMismatch,
    /// The relay sent a CA chain, but the pinned CA did not sign the leaf.
    #[error("the relay's certificate is not signed by the pinned CA")]
    NotFromPinnedCa,
    /// Past its end of validity.
    #[error("the relay's certificate has expired")]
    Expired,
    /// Before its start of validity.
    #[error("the relay's certificate is not valid yet")]
    NotYetValid,
    /// The leaf does not name the address dialled.
    #[error("the relay's certificate is for another name")]
    WrongName,
    /// (`webpki`) no chain to a public root.
    #[error("the relay's certificate is not signed by a publicly trusted CA")]
    Untrusted,
}

/// rustls shows `CertificateError::Other` with `Debug`: make that the sentence too, so a
/// caller that only sees the TLS error (the TCP hop) still reads the reason.
impl std::fmt::Debug for CertProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Where the verifier leaves the reason for refusing a certificate.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rejection {
    problem: Arc<Mutex<Option<CertProblem>>>,
}

impl Rejection {
    fn record(&self, problem: CertProblem) -> rustls::Error {
        *self.problem.lock().unwrap_or_else(PoisonError::into_inner) = Some(problem);
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(problem))))
    }

    /// The reason a certificate was refused, if one was.
    pub(crate) fn problem(&self) -> Option<CertProblem> {
        *self.problem.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The error to report for `relay`, if its certificate was refused.
    pub(crate) fn error(&self, relay: &RelayAddr) -> Option<Error> {
        let addr = relay.addr.clone();
        let pin = match relay.trust {
            RelayTrust::Pin(pin) => Some(pin),
            RelayTrust::WebPki => None,
        };
        Some(match (self.problem()?, pin) {
            (CertProblem::PinMismatch, Some(expected)) => Error::PinMismatch { expected },
            (CertProblem::NotFromPinnedCa, Some(expected)) => Error::RelayCertNotFromPinnedCa { addr, expected },
            (CertProblem::Expired, _) => Error::RelayCertExpired { addr },
            (CertProblem::NotYetValid, _) => Error::RelayCertNotYetValid { addr },
            (CertProblem::WrongName, _) => Error::RelayCertWrongName { addr },
            (_, _) => Error::RelayCertUntrusted { addr },
        })
    }
}

/// Accepts the relay whose leaf, or whose CA, has the pinned public key.
#[derive(Debug)]
pub(crate) struct PinVerifier {
    pin: CertPin,
    algorithms: WebPkiSupportedAlgorithms,
    rejection: Rejection,
}

impl PinVerifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), CertProblem> {
        let leaf = webpki::EndEntityCert::try_from(end_entity).map_err(|_| CertProblem::PinMismatch)?;
        if CertPin::of_spki(leaf.subject_public_key_info().as_ref()) == self.pin {
            return check_validity(end_entity, now);
        }
        let Some(index) = intermediates.iter().position(|c| spki_pin(c) == Some(self.pin)) else {
            return Err(if intermediates.is_empty() { CertProblem::PinMismatch } else { CertProblem::NotFromPinnedCa });
        };
        let anchor =
            webpki::anchor_from_trusted_cert(&intermediates[index]).map_err(|_| CertProblem::NotFromPinnedCa)?;
        let others: Vec<CertificateDer<'_>> =
            intermediates.iter().enumerate().filter(|(i, _)| *i != index).map(|(_, c)| c.clone()).collect();
        leaf.verify_for_usage(
            self.algorithms.all,
            &[anchor],
            &others,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| match e {
            webpki::Error::CertExpired { .. } => CertProblem::Expired,
            webpki::Error::CertNotValidYet { .. } => CertProblem::NotYetValid,
            _ => CertProblem::NotFromPinnedCa,
        })?;
        leaf.verify_is_valid_for_subject_name(server_name).map_err(|_| CertProblem::WrongName)
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.check(end_entity, intermediates, server_name, now) {
            Ok(()) => Ok(ServerCertVerified::assertion()),
            Err(problem) => Err(self.rejection.record(problem)),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The hop is TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The public-roots verifier, with its refusals recorded as [`CertProblem`]s.
#[derive(Debug)]
struct WebPkiExplained {
    inner: Arc<WebPkiServerVerifier>,
    rejection: Rejection,
}

impl ServerCertVerifier for WebPkiExplained {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now).map_err(|e| match e {
            rustls::Error::InvalidCertificate(ref c) => self.rejection.record(match c {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => CertProblem::Expired,
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => CertProblem::NotYetValid,
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                    CertProblem::WrongName
                }
                _ => CertProblem::Untrusted,
            }),
            other => other,
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The pin of a certificate's public key, if it parses.
fn spki_pin(der: &CertificateDer<'_>) -> Option<CertPin> {
    let cert = webpki::EndEntityCert::try_from(der).ok()?;
    Some(CertPin::of_spki(cert.subject_public_key_info().as_ref()))
}

/// A pinned leaf must still be within its validity period: a pin says whose key it is,
/// not that the operator still vouches for it.
fn check_validity(der: &CertificateDer<'_>, now: UnixTime) -> Result<(), CertProblem> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|_| CertProblem::PinMismatch)?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        Err(CertProblem::NotYetValid)
    } else if now > validity.not_after.timestamp() {
        Err(CertProblem::Expired)
    } else {
        Ok(())
    }
}

/// The rustls client configuration for one relay, plus the slot where a refused
/// certificate's reason is left.
pub(crate) fn client_tls_explained(trust: RelayTrust) -> Result<(rustls::ClientConfig, Rejection), rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let rejection = Rejection::default();
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        RelayTrust::Pin(pin) => Arc::new(PinVerifier {
            pin,
            algorithms: provider.signature_verification_algorithms,
            rejection: rejection.clone(),
        }),
        RelayTrust::WebPki => {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            Arc::new(WebPkiExplained { inner, rejection: rejection.clone() })
        }
    };
    let mut tls = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
    tls.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
    Ok((tls, rejection))
}

/// The rustls client configuration for a host's direct port: any certificate is accepted
/// (the host makes a fresh self-signed one each start), because the end-to-end Noise
/// handshake that follows authenticates the host by its key, as through a relay. rustls
/// still checks that the host signs the TLS handshake with the certificate it sent.
pub(crate) fn direct_tls() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate { algorithms: provider.signature_verification_algorithms });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![crate::direct::DIRECT_ALPN.to_vec()];
    Ok(tls)
}

/// Accepts every certificate: for the direct path only, where Noise authenticates.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA, and a leaf for `name` it signs, valid from `from` to `to` (unix seconds).
    fn ca_and_leaf(name: &str, from: i64, to: i64) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        ca.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        leaf.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        leaf.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        (leaf_cert.der().clone(), ca_cert.der().clone())
    }

    fn verifier(pin: CertPin) -> PinVerifier {
        PinVerifier {
            pin,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
            rejection: Rejection::default(),
        }
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn ca_pin_checks_chain_name_and_time() {
        let (leaf, ca) = ca_and_leaf("relay.test", 1_700_000_000, 1_900_000_000);
        let v = verifier(spki_pin(&ca).unwrap());
        let name = ServerName::try_from("relay.test").unwrap();
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(NOW));
        assert_eq!(v.check(&leaf, std::slice::from_ref(&ca), &name, now), Ok(()));

        let other = ServerName::try_from("other.test").unwrap();
        assert_eq!(v.check(&leaf, std::slice::from_ref(&ca), &other, now), Err(CertProblem::WrongName));
        let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(2_000_000_000));
        assert_eq!(v.check(&leaf, std::slice::from_ref(&ca), &name, later), Err(CertProblem::Expired));
        // Another CA's chain, even one that carries the pinned CA certificate along.
        let (other_leaf, other_ca) = ca_and_leaf("relay.test", 1_700_000_000, 1_900_000_000);
        assert_eq!(
            v.check(&other_leaf, std::slice::from_ref(&other_ca), &name, now),
            Err(CertProblem::NotFromPinnedCa)
        );
        assert_eq!(v.check(&other_leaf, &[other_ca, ca], &name, now), Err(CertProblem::NotFromPinnedCa));
        // No chain at all and no matching leaf: a plain mismatch.
        assert_eq!(v.check(&other_leaf, &[], &name, now), Err(CertProblem::PinMismatch));
    }

    #[test]
    fn leaf_pin_ignores_names_but_not_time() {
        let (leaf, _) = ca_and_leaf("relay.test", 1_700_000_000, 1_900_000_000);
        let v = verifier(spki_pin(&leaf).unwrap());
        let any = ServerName::try_from("anything.test").unwrap();
        let at = |s| UnixTime::since_unix_epoch(std::time::Duration::from_secs(s));
        assert_eq!(v.check(&leaf, &[], &any, at(NOW)), Ok(()));
        assert_eq!(v.check(&leaf, &[], &any, at(2_000_000_000)), Err(CertProblem::Expired));
        assert_eq!(v.check(&leaf, &[], &any, at(1_600_000_000)), Err(CertProblem::NotYetValid));
    }

    #[test]
    fn rejections_become_errors_naming_the_problem() {
        let r = Rejection::default();
        let relay = RelayAddr { addr: "relay.test:4433".into(), trust: RelayTrust::Pin(CertPin([7; 32])) };
        assert!(r.error(&relay).is_none());
        let tls_error = r.record(CertProblem::Expired);
        assert!(tls_error.to_string().contains("has expired"), "{tls_error}");
        let text = r.error(&relay).unwrap().to_string();
        assert!(text.contains("the relay's certificate has expired"), "{text}");
        r.record(CertProblem::PinMismatch);
        assert!(matches!(r.error(&relay), Some(Error::PinMismatch { .. })));
    }
}
