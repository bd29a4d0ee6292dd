//! Self-signed relay certificates: the simplest setup, pinned by their own key.
//!
//! Every new self-signed certificate has a new key and so a new pin, which means new
//! tickets; an own CA ([`crate::CertAuthority`]) avoids that. The relay makes one in its
//! state directory on first start so that it runs with no setup at all.

use std::path::{Path, PathBuf};

use ferry_proto::CertPin;

use crate::Error;
use crate::files::{CERT_FILE, KEY_FILE, create_dir, write_file};
use crate::keys::random_serial;
use crate::pin::pin_of_cert;

/// A freshly generated self-signed certificate (ECDSA P-256) and its key.
pub struct SelfSigned {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key (PKCS#8), PEM.
    pub key_pem: String,
    pub(crate) cert_der: Vec<u8>,
    pub(crate) key_der: Vec<u8>,
    /// Pin of the certificate's public key.
    pub pin: CertPin,
}

impl std::fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSigned").field("pin", &self.pin).finish_non_exhaustive()
    }
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
        create_dir(dir)?;
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        write_file(&key, self.key_pem.as_bytes(), 0o600, force)?;
        write_file(&cert, self.cert_pem.as_bytes(), 0o644, force)?;
        Ok((cert, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TlsIdentity;
    use std::fs;
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
}
