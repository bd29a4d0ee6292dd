//! Certificate files on disk: their names, reading secrets only when they are private,
//! and writing atomically.
//!
//! Keys are written with mode 0600 and never replaced unless the caller asks, and a key
//! file that other users can read is refused when it is loaded: a leaked relay key lets
//! anyone impersonate the relay to every ticket that pins it. Writes go through a temporary
//! file and a rename, so a relay reloading on SIGHUP never reads half a file.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::Error;

/// File name of the certificate chain inside a certificate directory.
pub const CERT_FILE: &str = "cert.pem";
/// File name of the private key inside a certificate directory.
pub const KEY_FILE: &str = "key.pem";

/// Reads a file that holds a secret (a private key, ACME account credentials), after
/// checking that only its owner can read or write it (mode `& 0o077 == 0`).
pub fn read_private(path: &Path) -> Result<Vec<u8>, Error> {
    let meta = fs::metadata(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyReadable { path: path.to_owned(), mode });
    }
    fs::read(path).map_err(|source| Error::Read { path: path.to_owned(), source })
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

/// Creates `dir` and its parents.
pub(crate) fn create_dir(dir: &Path) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|source| Error::Write { path: dir.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::read_key;
    use crate::self_signed::SelfSigned;

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
}
