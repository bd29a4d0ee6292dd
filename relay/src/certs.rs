//! Relay certificates on disk: making self-signed ones, reading PEM files, and pins.
//!
//! Shared by `ferry-relay` (which makes a self-signed certificate in its state directory
//! on first start) and `ferry-cert`. Keys are written with mode 0600 and never replaced
//! unless the caller asks; a pin is the SHA-256 of the certificate's SubjectPublicKeyInfo,
//! see `ferry_proto::pin`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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
        Self {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsIdentity {
    /// Reads a PEM certificate chain and a PEM private key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, Error> {
        Ok(Self {
            certs: read_certs(cert)?,
            key: read_key(key)?,
        })
    }

    /// A fresh self-signed identity for `names` (DNS names or IP addresses), in memory.
    pub fn self_signed(names: &[String]) -> Result<Self, Error> {
        let generated = SelfSigned::generate(names)?;
        Ok(Self {
            certs: vec![CertificateDer::from(generated.cert_der)],
            key: PrivateKeyDer::try_from(generated.key_der)
                .map_err(|e| Error::BadCertificate(e.to_string()))?,
        })
    }

    /// The identity in `dir` (`cert.pem`, `key.pem`), made self-signed on first use.
    /// Returns whether it was created now.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), Error> {
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        if cert.exists() || key.exists() {
            return Ok((Self::from_files(&cert, &key)?, false));
        }
        fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_owned(),
            source,
        })?;
        let generated = SelfSigned::generate(&["ferry-relay".to_owned(), "localhost".to_owned()])?;
        generated.write(dir, false)?;
        Ok((Self::from_files(&cert, &key)?, true))
    }

    /// The pin of the leaf certificate's public key.
    pub fn pin(&self) -> Result<CertPin, Error> {
        let leaf = self
            .certs
            .first()
            .ok_or_else(|| Error::BadCertificate("empty chain".into()))?;
        pin_of_cert(leaf)
    }
}

/// The SHA-256 pin of a DER certificate's SubjectPublicKeyInfo.
pub fn pin_of_cert(der: &CertificateDer<'_>) -> Result<CertPin, Error> {
    let cert = webpki::EndEntityCert::try_from(der)
        .map_err(|e| Error::BadCertificate(format!("{e:?}")))?;
    Ok(CertPin::of_spki(cert.subject_public_key_info().as_ref()))
}

/// Reads every certificate in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            path: path.to_owned(),
            what: format!("not a PEM certificate file ({e})"),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            path: path.to_owned(),
            what: "holds no certificate".into(),
        });
    }
    Ok(certs)
}

/// Reads the private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| Error::Pem {
        path: path.to_owned(),
        what: format!("holds no usable private key ({e})"),
    })
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
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().map_or("ferry-relay", String::as_str),
        );
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
        fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_owned(),
            source,
        })?;
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        write_file(&key, self.key_pem.as_bytes(), 0o600, force)?;
        write_file(&cert, self.cert_pem.as_bytes(), 0o644, force)?;
        Ok((cert, key))
    }
}

/// Writes a file with `mode`, atomically (temp file + rename), refusing to replace an
/// existing file unless `force`.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<(), Error> {
    if !force && path.exists() {
        return Err(Error::Exists(path.to_owned()));
    }
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
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
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let identity = TlsIdentity::from_files(&cert, &key).unwrap();
        assert_eq!(identity.pin().unwrap(), made.pin);
        assert!(matches!(
            made.write(dir.path(), false),
            Err(Error::Exists(_))
        ));
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
    fn garbage_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pem");
        fs::write(&p, "hello").unwrap();
        assert!(
            read_certs(&p)
                .unwrap_err()
                .to_string()
                .contains("no certificate")
        );
        assert!(read_key(&p).is_err());
    }
}
