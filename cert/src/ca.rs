//! An own certificate authority for relays: make one, load it, sign relay certificates.
//!
//! Why a CA at all when relays can be self-signed: a ticket pins one public key. Pinning
//! a self-signed leaf means every renewal (new key) breaks every ticket. Pinning a small
//! private CA instead lets the operator reissue the relay's certificate — new key, new
//! validity — as often as they like while tickets keep working, and keeps the CA key off
//! the relay machine entirely. The CA may only sign end-entity certificates (path length
//! 0); name constraints are off unless asked for, because a pin already limits the CA to
//! ferry's tickets.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_proto::CertPin;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, NameConstraints, PublicKeyData, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;

use crate::Error;
use crate::files::{CERT_FILE, KEY_FILE, create_dir, write_file};
use crate::identity::read_key;
use crate::info::CertInfo;
use crate::keys::{KeyAlg, random_serial};
use crate::pin::pin_of_cert;

/// File name of the CA certificate inside a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside a CA directory.
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// Clocks of peers drift: certificates start being valid a little in the past.
const BACKDATE: Duration = Duration::from_secs(3600);

/// How a new CA is made.
#[derive(Clone, Debug)]
pub struct CaOptions {
    /// The CA's common name (shown by `inspect` and in TLS error messages).
    pub name: String,
    /// How long the CA certificate is valid.
    pub days: u32,
    /// Kind of key.
    pub alg: KeyAlg,
    /// If not empty, the CA may only sign certificates for these DNS names (and their
    /// subdomains): an X.509 name constraint. Empty means no constraint.
    pub permitted_dns: Vec<String>,
}

impl Default for CaOptions {
    fn default() -> Self {
        Self { name: "ferry relay CA".into(), days: 3650, alg: KeyAlg::EcdsaP256, permitted_dns: Vec::new() }
    }
}

/// A relay certificate to be signed.
#[derive(Clone, Debug)]
pub struct LeafOptions {
    /// DNS names clients reach the relay by.
    pub dns_names: Vec<String>,
    /// IP addresses clients reach the relay by.
    pub ips: Vec<IpAddr>,
    /// How long the certificate is valid.
    pub days: u32,
    /// Kind of key.
    pub alg: KeyAlg,
}

/// A certificate authority whose key is in memory.
pub struct CertAuthority {
    cert: CertificateDer<'static>,
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority").field("pin", &self.pin().ok()).finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// Makes a new CA (key and self-signed certificate) valid from now.
    pub fn generate(options: &CaOptions) -> Result<Self, Error> {
        let key = options.alg.generate()?;
        let mut params = CertificateParams::default();
        params.serial_number = Some(random_serial()?);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, options.name.as_str());
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        (params.not_before, params.not_after) = validity(options.days)?;
        if !options.permitted_dns.is_empty() {
            params.name_constraints = Some(NameConstraints {
                permitted_subtrees: options.permitted_dns.iter().map(|n| GeneralSubtree::DnsName(n.clone())).collect(),
                excluded_subtrees: Vec::new(),
            });
        }
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), cert: cert.der().clone(), key })
    }

    /// Loads the CA in `dir` (`ca.pem`, `ca-key.pem`); the key must be private (0600).
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        let cert_pem =
            fs::read_to_string(&cert_path).map_err(|source| Error::Read { path: cert_path.clone(), source })?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|source| Error::Pem {
            path: cert_path.clone(),
            what: "CA certificate",
            source,
        })?;
        let key =
            KeyPair::try_from(&read_key(&key_path)?).map_err(|source| Error::Key { path: key_path.clone(), source })?;
        let ca = Self { cert, cert_pem, key };
        let info = CertInfo::parse(&ca.cert)?;
        if !info.is_ca {
            return Err(Error::NotCa(cert_path));
        }
        if info.pin != CertPin::of_spki(&ca.key.subject_public_key_info()) {
            return Err(Error::CaKeyMismatch { key: key_path, cert: cert_path });
        }
        Ok(ca)
    }

    /// Writes `ca.pem` and `ca-key.pem` (0600) into `dir`, refusing to replace them
    /// unless `force`.
    pub fn write(&self, dir: &Path, force: bool) -> Result<(PathBuf, PathBuf), Error> {
        create_dir(dir)?;
        let (cert, key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        if !force {
            for path in [&cert, &key] {
                if path.exists() {
                    return Err(Error::Exists(path.clone()));
                }
            }
        }
        write_file(&key, self.key.serialize_pem().as_bytes(), 0o600, force)?;
        write_file(&cert, self.cert_pem.as_bytes(), 0o644, force)?;
        Ok((cert, key))
    }

    /// The CA certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The pin of the CA's public key: put it in tickets so renewed relay certificates
    /// keep working.
    pub fn pin(&self) -> Result<CertPin, Error> {
        Ok(CertInfo::parse(&self.cert)?.pin)
    }

    /// Signs a new relay certificate (with a new key) for `leaf`, valid from now for
    /// `leaf.days`.
    pub fn issue(&self, leaf: &LeafOptions) -> Result<Issued, Error> {
        let (not_before, not_after) = validity(leaf.days)?;
        self.sign(leaf, not_before, not_after)
    }

    /// Signs a relay certificate valid from `not_before` to `not_after` (`leaf.days` is
    /// ignored): for tests and drills that need a certificate that has already expired
    /// or is not valid yet.
    pub fn issue_for_period(
        &self,
        leaf: &LeafOptions,
        not_before: std::time::SystemTime,
        not_after: std::time::SystemTime,
    ) -> Result<Issued, Error> {
        self.sign(leaf, not_before.into(), not_after.into())
    }

    fn sign(&self, leaf: &LeafOptions, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<Issued, Error> {
        if leaf.dns_names.is_empty() && leaf.ips.is_empty() {
            return Err(Error::NoNames);
        }
        let key = leaf.alg.generate()?;
        let mut params = CertificateParams::default();
        params.serial_number = Some(random_serial()?);
        params.subject_alt_names = leaf
            .dns_names
            .iter()
            .map(|n| {
                rcgen::string::Ia5String::try_from(n.as_str())
                    .map(SanType::DnsName)
                    .map_err(|source| Error::BadDnsName { name: n.clone(), source })
            })
            .chain(leaf.ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
            .collect::<Result<_, _>>()?;
        params.distinguished_name = DistinguishedName::new();
        let common_name =
            leaf.dns_names.first().cloned().or_else(|| leaf.ips.first().map(IpAddr::to_string)).unwrap_or_default();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = (not_before, not_after);

        let issuer = Issuer::from_ca_cert_der(&self.cert, &self.key)?;
        let cert = params.signed_by(&key, &issuer)?;
        let leaf_pin = pin_of_cert(cert.der())?;
        Ok(Issued {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
            leaf_pin,
            ca_pin: self.pin()?,
            not_after: params.not_after,
        })
    }
}

/// A relay certificate just signed by a [`CertAuthority`], with its new key.
pub struct Issued {
    /// The chain, PEM: the relay certificate, then the CA certificate (so the relay
    /// presents both and clients pinning the CA can check the signature).
    pub chain_pem: String,
    /// The relay's new private key (PKCS#8), PEM.
    pub key_pem: String,
    /// Pin of the relay certificate's own key (changes with every issue).
    pub leaf_pin: CertPin,
    /// Pin of the CA (stays the same across renewals).
    pub ca_pin: CertPin,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("leaf_pin", &self.leaf_pin)
            .field("ca_pin", &self.ca_pin)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Writes `cert.pem` (the chain) and `key.pem` (0600) into `dir`, refusing to replace
    /// existing files unless `force`.
    pub fn write(&self, dir: &Path, force: bool) -> Result<(PathBuf, PathBuf), Error> {
        create_dir(dir)?;
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        self.write_to(&cert, &key, force)?;
        Ok((cert, key))
    }

    /// Writes the chain to `cert` and the key to `key` (0600). The key goes first, so a
    /// relay that reloads between the two renames fails to match them and keeps serving
    /// the old pair rather than a certificate whose key it does not have.
    pub fn write_to(&self, cert: &Path, key: &Path, force: bool) -> Result<(), Error> {
        if !force {
            for path in [cert, key] {
                if path.exists() {
                    return Err(Error::Exists(path.to_owned()));
                }
            }
        }
        write_file(key, self.key_pem.as_bytes(), 0o600, force)?;
        write_file(cert, self.chain_pem.as_bytes(), 0o644, force)
    }
}

/// `[now - BACKDATE, now + days]`.
fn validity(days: u32) -> Result<(OffsetDateTime, OffsetDateTime), Error> {
    if days == 0 {
        return Err(Error::ZeroDays);
    }
    let now = OffsetDateTime::now_utc();
    let not_after = now.checked_add(time::Duration::days(i64::from(days))).ok_or(Error::TooManyDays(days))?;
    Ok((now - BACKDATE, not_after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TlsIdentity;

    #[test]
    fn issued_chain_verifies_against_the_ca() {
        let ca = CertAuthority::generate(&CaOptions::default()).unwrap();
        let issued = ca
            .issue(&LeafOptions {
                dns_names: vec!["relay.test".into()],
                ips: vec!["127.0.0.1".parse().unwrap()],
                days: 90,
                alg: KeyAlg::EcdsaP256,
            })
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = issued.write(dir.path(), false).unwrap();
        let identity = TlsIdentity::from_files(&cert, &key).unwrap();
        assert_eq!(identity.certs.len(), 2, "leaf then CA");
        assert_eq!(identity.pin().unwrap(), issued.leaf_pin);

        let anchor = webpki::anchor_from_trusted_cert(ca.cert()).unwrap();
        let leaf = webpki::EndEntityCert::try_from(&identity.certs[0]).unwrap();
        let now = rustls_pki_types::UnixTime::now();
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .unwrap();
        let name = rustls_pki_types::ServerName::try_from("relay.test").unwrap();
        leaf.verify_is_valid_for_subject_name(&name).unwrap();
    }

    #[test]
    fn ca_round_trips_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::generate(&CaOptions { alg: KeyAlg::Ed25519, ..CaOptions::default() }).unwrap();
        ca.write(dir.path(), false).unwrap();
        let loaded = CertAuthority::load(dir.path()).unwrap();
        assert_eq!(loaded.pin().unwrap(), ca.pin().unwrap());
        assert!(matches!(ca.write(dir.path(), false), Err(Error::Exists(_))));
    }
}
