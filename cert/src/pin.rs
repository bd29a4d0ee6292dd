//! The pin clients check a relay's certificate by: the SHA-256 of its SubjectPublicKeyInfo
//! (see `ferry_proto::pin`), computed here exactly as clients compute it, so what
//! `ferry-cert` prints is what a ticket must hold. Its own module because everything that
//! makes or reads a certificate (identity, self-signed, CA, inspect) needs it.

use ferry_proto::CertPin;
use rustls_pki_types::CertificateDer;

use crate::Error;

/// The SHA-256 pin of a DER certificate's SubjectPublicKeyInfo.
pub fn pin_of_cert(der: &CertificateDer<'_>) -> Result<CertPin, Error> {
    let cert = webpki::EndEntityCert::try_from(der).map_err(Error::NotEndEntity)?;
    Ok(CertPin::of_spki(cert.subject_public_key_info().as_ref()))
}
