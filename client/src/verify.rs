//! How the client checks the relay's certificate: by pin or by public roots.
//!
//! With a pin, the relay's leaf certificate must carry the pinned public key and must
//! sign the handshake with it; names and issuers do not matter, which is what makes
//! self-signed relays safe to use. With `webpki`, the usual chain-to-a-public-root and
//! name checks apply (Mozilla's roots, from `webpki-roots`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_proto::{CertPin, RelayTrust};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// Accepts exactly the relay whose leaf public key has the pinned SHA-256.
#[derive(Debug)]
pub(crate) struct PinVerifier {
    pin: CertPin,
    algorithms: WebPkiSupportedAlgorithms,
    /// Set when a certificate was presented and did not match, so the caller can say so
    /// instead of showing a generic TLS failure.
    mismatch: Arc<AtomicBool>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if CertPin::of_spki(cert.subject_public_key_info().as_ref()) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            self.mismatch.store(true, Ordering::Relaxed);
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The hop is TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
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

/// The rustls client configuration for one relay, plus the pin-mismatch flag.
pub(crate) fn client_tls(
    trust: RelayTrust,
) -> Result<(rustls::ClientConfig, Arc<AtomicBool>), rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mismatch = Arc::new(AtomicBool::new(false));
    let mut tls = match trust {
        RelayTrust::Pin(pin) => {
            let verifier = PinVerifier {
                pin,
                algorithms: provider.signature_verification_algorithms,
                mismatch: mismatch.clone(),
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        RelayTrust::WebPki => {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    tls.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
    Ok((tls, mismatch))
}
