//! The relay's TLS identity: a certificate chain and its key read from PEM files (or made
//! self-signed), and the pin clients check it by.
//!
//! Shared by `ferry-relay` (which makes a self-signed certificate in its state directory
//! on first start) and `ferry-cert`. Its pin is computed in `pin.rs`.

use std::fs;
use std::path::Path;

use ferry_proto::CertPin;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;
use crate::files::{CERT_FILE, KEY_FILE, read_private};
use crate::pin::pin_of_cert;
use crate::self_signed::SelfSigned;

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
            // rcgen serialises keys as PKCS#8.
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_der)),
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
        pin_of_cert(self.certs.first().ok_or(Error::EmptyChain)?)
    }
}

/// Reads every certificate in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = fs::read(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    let certs = CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|source| Error::Pem {
        path: path.to_owned(),
        what: "certificate",
        source,
    })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// Reads the private key in a PEM file, refusing one that other users can read.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = read_private(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| Error::Pem {
        path: path.to_owned(),
        what: "private key",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
    fn in_memory_self_signed_key_belongs_to_its_certificate() {
        use rcgen::PublicKeyData;
        let identity = TlsIdentity::self_signed(&["relay.test".into()]).unwrap();
        assert_eq!(identity.certs.len(), 1);
        let key = rcgen::KeyPair::try_from(&identity.key).unwrap();
        assert_eq!(CertPin::of_spki(&key.subject_public_key_info()), identity.pin().unwrap());
        assert!(matches!(TlsIdentity { certs: vec![], ..identity }.pin(), Err(Error::EmptyChain)));
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
