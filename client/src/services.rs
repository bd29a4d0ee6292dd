//! A host's named services: which local address each session is forwarded to.
//!
//! A host may offer several services (`web` → `127.0.0.1:8096`, `ssh` → `127.0.0.1:22`);
//! a client names one inside the end-to-end handshake (never visible to a relay), and a
//! ticket that names none reaches the default one. The set is checked when it is built —
//! names as tickets carry them, addresses of the `host:port` form, a default that is one of
//! them — so a host never starts with a service no ticket could reach.

use std::collections::BTreeMap;

use ferry_proto::ticket::{check_address, check_service_name};

use crate::Error;

/// Name → local `host:port`, and which one a ticket without a service name reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Services {
    by_name: BTreeMap<String, String>,
    default: String,
}

impl Services {
    /// The name of the service a single `--forward` target gets.
    pub const DEFAULT_NAME: &'static str = "default";

    /// One service, named [`Services::DEFAULT_NAME`] and the default: what a host with a
    /// single forward target offers. The address is not checked here (a name that does not
    /// resolve fails at the session, as it always has).
    pub fn single(forward: impl Into<String>) -> Self {
        let by_name = BTreeMap::from([(Self::DEFAULT_NAME.to_owned(), forward.into())]);
        Self { by_name, default: Self::DEFAULT_NAME.to_owned() }
    }

    /// Checks a name a host's service may have: one a ticket can carry, and not starting
    /// with `.` (those are ferry's own, such as the hole-punching exchange's).
    pub fn check_name(name: &str) -> Result<(), Error> {
        check_service_name(name).map_err(|source| Error::InvalidService { name: name.to_owned(), source })?;
        if name.starts_with('.') {
            return Err(Error::ReservedService { name: name.to_owned() });
        }
        Ok(())
    }

    /// Several services and the default one (`None`: the one named
    /// [`Services::DEFAULT_NAME`] if there is one, else the only service).
    pub fn new(by_name: BTreeMap<String, String>, default: Option<&str>) -> Result<Self, Error> {
        for (name, addr) in &by_name {
            Self::check_name(name)?;
            check_address(addr).map_err(|source| Error::InvalidServiceAddress {
                name: name.clone(),
                addr: addr.clone(),
                source,
            })?;
        }
        let default = match default {
            Some(name) if by_name.contains_key(name) => name.to_owned(),
            Some(name) => {
                return Err(Error::UnknownDefaultService { name: name.to_owned(), services: list(&by_name) });
            }
            None if by_name.contains_key(Self::DEFAULT_NAME) => Self::DEFAULT_NAME.to_owned(),
            None => match by_name.keys().next() {
                Some(only) if by_name.len() == 1 => only.clone(),
                Some(_) => return Err(Error::NoDefaultService { services: list(&by_name) }),
                None => return Err(Error::NoServices),
            },
        };
        Ok(Self { by_name, default })
    }

    /// The address for the service a client asks for (`None`: the default service), or
    /// `None` when the host has no service of that name.
    pub fn get(&self, name: Option<&str>) -> Option<&str> {
        self.by_name.get(name.unwrap_or(&self.default)).map(String::as_str)
    }

    /// The default service's name.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// Whether the host has a service of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Every service, by name, with its address.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_name.iter().map(|(name, addr)| (name.as_str(), addr.as_str()))
    }

    /// The names, comma-separated (for messages to the host's owner).
    pub fn names(&self) -> String {
        list(&self.by_name)
    }
}

fn list(by_name: &BTreeMap<String, String>) -> String {
    by_name.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(n, a)| ((*n).to_owned(), (*a).to_owned())).collect()
    }

    #[test]
    fn a_single_forward_is_the_default_service() {
        let s = Services::single("127.0.0.1:8096");
        assert_eq!(s.get(None), Some("127.0.0.1:8096"));
        assert_eq!(s.get(Some("default")), Some("127.0.0.1:8096"));
        assert_eq!(s.get(Some("ssh")), None);
    }

    #[test]
    fn the_default_is_named_or_the_only_one() {
        let two = map(&[("web", "127.0.0.1:8096"), ("ssh", "127.0.0.1:22")]);
        let s = Services::new(two.clone(), Some("web")).unwrap();
        assert_eq!((s.get(None), s.get(Some("ssh"))), (Some("127.0.0.1:8096"), Some("127.0.0.1:22")));
        assert_eq!(s.default_name(), "web");
        let err = Services::new(two.clone(), None).unwrap_err().to_string();
        assert!(err.contains("ssh, web") && err.contains("default"), "{err}");
        let err = Services::new(two, Some("mail")).unwrap_err().to_string();
        assert!(err.contains("`mail`") && err.contains("ssh, web"), "{err}");
        let named = Services::new(map(&[("default", "127.0.0.1:80"), ("ssh", "127.0.0.1:22")]), None).unwrap();
        assert_eq!(named.default_name(), "default");
        let one = Services::new(map(&[("ssh", "127.0.0.1:22")]), None).unwrap();
        assert_eq!(one.get(None), Some("127.0.0.1:22"));
        assert!(matches!(Services::new(BTreeMap::new(), None), Err(Error::NoServices)));
    }

    #[test]
    fn names_and_addresses_are_checked() {
        let err = Services::new(map(&[("we b", "127.0.0.1:1")]), None).unwrap_err();
        assert!(matches!(err, Error::InvalidService { .. }), "{err}");
        let err = Services::new(map(&[(".punch", "127.0.0.1:1")]), None).unwrap_err();
        assert!(matches!(err, Error::ReservedService { .. }), "{err}");
        let err = Services::new(map(&[("web", "127.0.0.1")]), None).unwrap_err();
        assert!(err.report().contains("no port"), "{}", err.report());
    }
}
