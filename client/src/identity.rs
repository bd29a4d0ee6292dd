//! Identity files: the host's key and ticket secret, and a client's optional key.
//!
//! Plain `name = base32` lines with a comment on top, so an operator can see what the
//! file is. Written 0600 and never overwritten; a key file others can read is refused.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ferry_proto::{StaticKey, TicketSecret};

use crate::Error;

/// A host's long-term identity: its Noise static key and the ticket secret (PSK).
#[derive(Clone, Debug)]
pub struct HostIdentity {
    /// The static key; its public half is the host id.
    pub key: StaticKey,
    /// The secret every ticket of this host carries.
    pub secret: TicketSecret,
}

impl HostIdentity {
    /// A fresh random identity.
    pub fn generate() -> Result<Self, Error> {
        Ok(Self { key: StaticKey::generate()?, secret: TicketSecret::generate()? })
    }

    /// Creates a new identity file at `path` (mode 0600); fails if it exists.
    pub fn create(path: &Path) -> Result<Self, Error> {
        let identity = Self::generate()?;
        let text = format!(
            "# ferry host identity. Keep it secret: whoever has it can impersonate this host.\n\
             host-key = {}\nticket-secret = {}\n",
            identity.key.to_base32(),
            identity.secret.to_base32()
        );
        write_new_secret_file(path, &text)?;
        Ok(identity)
    }

    /// Loads an identity file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = read_secret_file(path)?;
        let key = field(path, &text, "host-key")?;
        let secret = field(path, &text, "ticket-secret")?;
        let bad = |source| Error::KeyFileInvalid { path: path.to_owned(), source };
        Ok(Self {
            key: StaticKey::from_base32(&key).map_err(bad)?,
            secret: TicketSecret::from_base32(&secret).map_err(bad)?,
        })
    }
}

/// Loads a client key file, creating it (0600) on first use.
pub fn load_or_create_client_key(path: &Path) -> Result<StaticKey, Error> {
    if path.exists() {
        let text = read_secret_file(path)?;
        let key = field(path, &text, "client-key")?;
        return StaticKey::from_base32(&key).map_err(|source| Error::KeyFileInvalid { path: path.to_owned(), source });
    }
    let key = StaticKey::generate()?;
    let text = format!("# ferry client key. Hosts may allow-list its public half.\nclient-key = {}\n", key.to_base32());
    write_new_secret_file(path, &text)?;
    Ok(key)
}

/// The directory ferry keeps its files in: `$FERRY_HOME`, else `$XDG_CONFIG_HOME/ferry`,
/// else `~/.config/ferry`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FERRY_HOME") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(dir).join("ferry"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config/ferry"))
}

fn field(path: &Path, text: &str, name: &'static str) -> Result<String, Error> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().to_owned())
        .ok_or_else(|| Error::KeyFileMissing { path: path.to_owned(), field: name })
}

fn read_secret_file(path: &Path) -> Result<String, Error> {
    let bad = |what| move |source| Error::KeyFile { path: path.to_owned(), what, source };
    let meta = fs::metadata(path).map_err(bad("cannot read"))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::KeyFileExposed { path: path.to_owned(), mode: meta.permissions().mode() & 0o777 });
    }
    fs::read_to_string(path).map_err(bad("cannot read"))
}

fn write_new_secret_file(path: &Path, text: &str) -> Result<(), Error> {
    let bad = |what| move |source| Error::KeyFile { path: path.to_owned(), what, source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(bad("cannot create its directory"))?;
    }
    let mut file =
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::KeyFileExists { path: path.to_owned() },
            _ => bad("cannot create")(e),
        })?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(bad("cannot write"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/host.key");
        let made = HostIdentity::create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let loaded = HostIdentity::load(&path).unwrap();
        assert_eq!(loaded.key.public(), made.key.public());
        assert_eq!(loaded.secret, made.secret);
        assert!(HostIdentity::create(&path).unwrap_err().to_string().contains("refusing to overwrite"));
    }

    #[test]
    fn world_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.key");
        let key = load_or_create_client_key(&path).unwrap();
        assert_eq!(load_or_create_client_key(&path).unwrap().public(), key.public());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create_client_key(&path).unwrap_err().to_string().contains("chmod 600"));
    }
}
