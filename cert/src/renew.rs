//! Reissuing a relay certificate before it expires.
//!
//! Renewal runs unattended (a systemd timer, cron), so it must be idempotent: when the
//! certificate is not due it touches nothing, and when it is, the new key and chain
//! replace the old ones atomically (temp file + rename) so a relay reloading at any
//! moment reads either the old pair or the new one. The new certificate keeps the old
//! one's names and IP addresses and kind of key, but gets a **new key**: tickets that pin
//! the CA keep working, tickets that pin the old leaf do not (that is why tickets should
//! pin the CA).

use std::fs;
use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;
use crate::ca::{CertAuthority, Issued, LeafOptions};
use crate::identity::{read_certs, read_key};
use crate::info::{CertInfo, is_ed25519};
use crate::keys::KeyAlg;

/// When and how to renew.
#[derive(Clone, Copy, Debug)]
pub struct RenewOptions {
    /// Renew when the certificate expires within this many days.
    pub within_days: u32,
    /// Lifetime of the new certificate, in days.
    pub days: u32,
    /// Renew even if the certificate is not due.
    pub force: bool,
}

/// What [`renew`] did.
#[derive(Debug)]
pub enum Renewal {
    /// The certificate is not due; nothing was written.
    NotDue {
        /// The current certificate's end of validity.
        not_after: OffsetDateTime,
        /// Whole days left.
        days_left: i64,
    },
    /// A new key and certificate were written.
    Renewed(Issued),
}

/// Renews the certificate in `cert` (key in `key`) with `ca` if it expires within
/// `options.within_days` of now (or always with `force`).
pub fn renew(ca: &CertAuthority, cert: &Path, key: &Path, options: &RenewOptions) -> Result<Renewal, Error> {
    renew_at(ca, cert, key, options, OffsetDateTime::now_utc())
}

/// [`renew`] with an explicit clock, for tests.
pub fn renew_at(
    ca: &CertAuthority,
    cert: &Path,
    key: &Path,
    options: &RenewOptions,
    now: OffsetDateTime,
) -> Result<Renewal, Error> {
    let chain = read_certs(cert)?;
    let leaf = &chain[0];
    let info = CertInfo::parse(leaf)?;
    check_issued_by(leaf, ca, cert)?;
    // The key must exist and be private even when nothing is due: a cron job is where a
    // loosened key mode would otherwise go unnoticed.
    read_key(key)?;

    let days_left = info.days_left(now);
    if !options.force && info.not_after > now + time::Duration::days(options.within_days.into()) {
        return Ok(Renewal::NotDue { not_after: info.not_after, days_left });
    }
    let issued = ca.issue(&LeafOptions {
        dns_names: info.dns_names.clone(),
        ips: info.ips.clone(),
        days: options.days,
        alg: if is_ed25519(&info) { KeyAlg::Ed25519 } else { KeyAlg::EcdsaP256 },
    })?;
    issued.write_to(cert, key, true)?;
    Ok(Renewal::Renewed(issued))
}

/// Refuses to "renew" a certificate with a CA that did not sign it: that would silently
/// change which pin the relay needs.
fn check_issued_by(leaf: &CertificateDer<'_>, ca: &CertAuthority, path: &Path) -> Result<(), Error> {
    let not_ours = || Error::NotIssuedByCa(path.to_owned());
    let (_, leaf) = X509Certificate::from_der(leaf.as_ref()).map_err(|_| not_ours())?;
    let (_, ca_cert) = X509Certificate::from_der(ca.cert().as_ref()).map_err(|e| Error::Unparsable(e.into()))?;
    if leaf.issuer().as_raw() != ca_cert.subject().as_raw() {
        return Err(not_ours());
    }
    leaf.verify_signature(Some(ca_cert.public_key())).map_err(|_| not_ours())
}

/// Reads a PEM certificate file and returns the leaf, for callers that only need it.
pub fn read_leaf(path: &Path) -> Result<CertificateDer<'static>, Error> {
    let bytes = fs::read(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    CertificateDer::from_pem_slice(&bytes).map_err(|source| Error::Pem {
        path: path.to_owned(),
        what: "certificate",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CaOptions;

    fn setup(days: u32) -> (tempfile::TempDir, CertAuthority, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::generate(&CaOptions::default()).unwrap();
        let issued = ca
            .issue(&LeafOptions {
                dns_names: vec!["relay.test".into()],
                ips: vec!["127.0.0.1".parse().unwrap()],
                days,
                alg: KeyAlg::Ed25519,
            })
            .unwrap();
        let (cert, key) = issued.write(dir.path(), false).unwrap();
        (dir, ca, cert, key)
    }

    #[test]
    fn renews_only_when_due_and_keeps_names() {
        let (_dir, ca, cert, key) = setup(90);
        let options = RenewOptions { within_days: 30, days: 90, force: false };
        let before = fs::read(&cert).unwrap();
        assert!(matches!(renew(&ca, &cert, &key, &options).unwrap(), Renewal::NotDue { .. }));
        assert_eq!(fs::read(&cert).unwrap(), before);

        let later = OffsetDateTime::now_utc() + time::Duration::days(75);
        let Renewal::Renewed(issued) = renew_at(&ca, &cert, &key, &options, later).unwrap() else {
            panic!("due in 15 days at that date, should renew");
        };
        let after = CertInfo::parse(&read_leaf(&cert).unwrap()).unwrap();
        assert_eq!(after.dns_names, vec!["relay.test".to_owned()]);
        assert_eq!(after.ips, vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(after.key_alg, "Ed25519");
        assert_eq!(after.pin, issued.leaf_pin);
        crate::TlsIdentity::from_files(&cert, &key).unwrap();
    }

    #[test]
    fn refuses_another_cas_certificate() {
        let (_dir, _ca, cert, key) = setup(90);
        let other = CertAuthority::generate(&CaOptions::default()).unwrap();
        let options = RenewOptions { within_days: 30, days: 90, force: true };
        let err = renew(&other, &cert, &key, &options).unwrap_err().to_string();
        assert!(err.contains("not signed by this CA"), "{err}");
    }
}
