//! Relay certificates on disk: making self-signed ones, reading PEM files, and pins.
//!
//! Shared by `ferry-relay` (which makes a self-signed certificate in its state directory
//! on first start) and `ferry-cert`. Keys are written with mode 0600 and never replaced
//! unless the caller asks, and a key file that other users can read is refused when it is
//! loaded: a leaked relay key lets anyone impersonate the relay to every ticket that pins
//! it. A pin is the SHA-256 of the certificate's SubjectPublicKeyInfo, see
//! `ferry_proto::pin`.
//!
//! The submodules hold the rest of `ferry-cert`'s work: [`ca`] (an own certificate
//! authority and the relay certificates it signs), [`info`] (reading names and validity
//! back out of a certificate) and [`renew`] (reissuing a certificate before it expires).

pub mod ca;
pub mod info;
pub mod renew;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ferry_proto::CertPin;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// File name of the certificate chain inside a certificate directory.
pub const CERT_FILE: &str = "cert.pem";
/// File name of the private key inside a certificate directory.
pub const KEY_FILE: &str = "key.pem";

/// A certificate chain and its private key, ready for rustls.
#[derive(Debug)]
pub struct TlsIdentity {
    /// The chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self { certs: self.certs.clone(), key: self.key.clone_key() }
    }
}

impl TlsIdentity {
    /// Reads a PEM certificate chain and a PEM private key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, Error> {
        Ok(Self { certs: read_certs(cert)?, key: read_key(key)? })
    }

    /// A fresh self-signed identity for `names` (DNS names or IP addresses), in memory.
    pub fn self_signed(names: &[String]) -> Result<Self, Error> {
        let generated = SelfSigned::generate(names)?;
        Ok(Self {
            certs: vec![CertificateDer::from(generated.cert_der)],
            key: PrivateKeyDer::try_from(generated.key_der).map_err(|e| Error::BadCertificate(e.to_string()))?,
        })
    }

    /// The identity in `dir` (`cert.pem`, `key.pem`), made self-signed on first use.
    /// Returns whether it was created now.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), Error> {
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        if cert.exists() || key.exists() {
            return Ok((Self::from_files(&cert, &key)?, false));
        }
        fs::create_dir_all(dir).map_err(|source| Error::Write { path: dir.to_owned(), source })?;
        let generated = SelfSigned::generate(&["ferry-relay".to_owned(), "localhost".to_owned()])?;
        generated.write(dir, false)?;
        Ok((Self::from_files(&cert, &key)?, true))
    }

    /// The pin of the leaf certificate's public key.
    pub fn pin(&self) -> Result<CertPin, Error> {
        let leaf = self.certs.first().ok_or_else(|| Error::BadCertificate("empty chain".into()))?;
        pin_of_cert(leaf)
    }
}

/// The SHA-256 pin of a DER certificate's SubjectPublicKeyInfo.
pub fn pin_of_cert(der: &CertificateDer<'_>) -> Result<CertPin, Error> {
    let cert = webpki::EndEntityCert::try_from(der).map_err(|e| Error::BadCertificate(format!("{e:?}")))?;
    Ok(CertPin::of_spki(cert.subject_public_key_info().as_ref()))
}

/// Reads every certificate in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = fs::read(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem { path: path.to_owned(), what: format!("not a PEM certificate file ({e})") })?;
    if certs.is_empty() {
        return Err(Error::Pem { path: path.to_owned(), what: "holds no certificate".into() });
    }
    Ok(certs)
}

/// Reads the private key in a PEM file, refusing one that other users can read.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = read_private(path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| Error::Pem { path: path.to_owned(), what: format!("holds no usable private key ({e})") })
}

/// Reads a file that holds a secret (a private key, ACME account credentials), after
/// checking that only its owner can read or write it (mode `& 0o077 == 0`).
pub fn read_private(path: &Path) -> Result<Vec<u8>, Error> {
    let meta = fs::metadata(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Pem {
            path: path.to_owned(),
            what: format!(
                "this private key is readable by other users (mode {mode:04o}); a key others \
                 can read lets them impersonate the relay. Restrict it with `chmod 600 {}` \
                 (and consider making a new key if it may have been copied)",
                path.display()
            ),
        });
    }
    fs::read(path).map_err(|source| Error::Read { path: path.to_owned(), source })
}

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
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Config("the system random generator failed".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

/// A freshly generated self-signed certificate (ECDSA P-256) and its key.
pub struct SelfSigned {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key (PKCS#8), PEM.
    pub key_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
    /// Pin of the certificate's public key.
    pub pin: CertPin,
}

impl SelfSigned {
    /// Generates a certificate valid for `names` (each a DNS name or an IP address).
    pub fn generate(names: &[String]) -> Result<Self, Error> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        params.serial_number = Some(random_serial()?);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, names.first().map_or("ferry-relay", String::as_str));
        let cert = params.self_signed(&key)?;
        let pin = pin_of_cert(cert.der())?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            pin,
        })
    }

    /// Writes `cert.pem` and `key.pem` (0600) into `dir`; refuses to replace existing
    /// files unless `force`.
    pub fn write(&self, dir: &Path, force: bool) -> Result<(PathBuf, PathBuf), Error> {
        fs::create_dir_all(dir).map_err(|source| Error::Write { path: dir.to_owned(), source })?;
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        write_file(&key, self.key_pem.as_bytes(), 0o600, force)?;
        write_file(&cert, self.cert_pem.as_bytes(), 0o644, force)?;
        Ok((cert, key))
    }
}

/// Writes a file with `mode`, atomically (temp file + rename), refusing to replace an
/// existing file unless `force`.
///
/// A reader (a relay reloading on SIGHUP) sees either the old file or the new one, never
/// half of one. The temporary file is created fresh, so it never inherits the mode of a
/// leftover from an interrupted run; without `force` the final step is a hard link, which
/// fails instead of replacing a file that appeared in the meantime.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<(), Error> {
    if !force && path.exists() {
        return Err(Error::Exists(path.to_owned()));
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let write = || -> std::io::Result<()> {
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if force {
            fs::rename(&tmp, path)
        } else {
            let linked = fs::hard_link(&tmp, path);
            let _ = fs::remove_file(&tmp);
            linked
        }
    };
    write().map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists if !force => Error::Exists(path.to_owned()),
        _ => Error::Write { path: path.to_owned(), source },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn self_signed_round_trips_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let made = SelfSigned::generate(&["relay.test".into(), "127.0.0.1".into()]).unwrap();
        let (cert, key) = made.write(dir.path(), false).unwrap();
        assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        let identity = TlsIdentity::from_files(&cert, &key).unwrap();
        assert_eq!(identity.pin().unwrap(), made.pin);
        assert!(matches!(made.write(dir.path(), false), Err(Error::Exists(_))));
    }

    #[test]
    fn state_dir_identity_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = TlsIdentity::load_or_create(dir.path()).unwrap();
        assert!(created);
        let (second, created) = TlsIdentity::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(first.pin().unwrap(), second.pin().unwrap());
    }

    #[test]
    fn readable_keys_are_refused_and_tmp_files_do_not_leak_modes() {
        let dir = tempfile::tempdir().unwrap();
        let made = SelfSigned::generate(&["relay.test".into()]).unwrap();
        // A leftover world-readable temp file must not lend its mode to the key.
        fs::write(dir.path().join("key.pem.tmp"), "old").unwrap();
        let (_, key) = made.write(dir.path(), false).unwrap();
        assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_key(&key).unwrap_err().to_string();
        assert!(err.contains("readable by other users"), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn garbage_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pem");
        fs::write(&p, "hello").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_certs(&p).unwrap_err().to_string().contains("no certificate"));
        assert!(read_key(&p).is_err());
    }
}
