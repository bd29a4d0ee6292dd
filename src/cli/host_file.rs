//! The host's TOML config file (`ferry host run --config`, `ferry host ticket --config`,
//! `ferry host check-config`), and how it combines with the command line's flags.
//!
//! It lives in the `ferry` command, not the library: it is a way of writing the command
//! line down (paths relative to the file, flags that override it), while the library takes
//! a typed `HostConfig`. Unknown keys are errors (a typo must not silently fall back to a
//! default), and every error names the key, its line and the fix, as the relay's file does.
//!
//! **Flags win**: a flag replaces what the file says for its key, and a list flag
//! (`--relay`/`--pin`, `--service`/`--forward`, `--allow`/`--allow-file`, `--advertise`)
//! replaces the file's whole list, so what runs is always one of the two, never a mix to
//! puzzle over. `deploy/host.toml` shows and explains every key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use ferry_client::{DirectConfig, HostConfig, HostIdentity, Services, Transport};
use ferry_proto::ticket::check_address;
use ferry_proto::{PublicKey, RelayAddr, RelayTrust, Ticket};
use serde::Deserialize;
use toml::Spanned;

use crate::cli::args;

/// The file as written (values keep their place, for errors that name the line).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostFile {
    key: Option<Spanned<PathBuf>>,
    relay: Option<Spanned<bool>>,
    #[serde(default)]
    relays: Vec<RelayEntry>,
    token: Option<Spanned<String>>,
    transport: Option<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    allow_file: Vec<Spanned<PathBuf>>,
    default_service: Option<Spanned<String>>,
    direct: Option<DirectEntry>,
    #[serde(default)]
    services: BTreeMap<String, Spanned<String>>,
}

/// One `[[relays]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayEntry {
    address: Spanned<String>,
    pin: Spanned<String>,
}

/// `[direct]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectEntry {
    listen: Spanned<String>,
    #[serde(default)]
    tcp: bool,
    #[serde(default)]
    advertise: Vec<Spanned<String>>,
}

/// What a host file says, checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileSettings {
    /// The host identity file (relative paths are taken from the file's directory).
    pub key: Option<PathBuf>,
    /// `relay = false`: no relay is contacted.
    pub relay_off: bool,
    /// `[[relays]]`.
    pub relays: Vec<RelayAddr>,
    /// Registration token.
    pub token: Option<String>,
    /// Hop transport.
    pub transport: Option<Transport>,
    /// Inline allow-listed client keys.
    pub allow: Vec<PublicKey>,
    /// Allow-list files (one key per line).
    pub allow_files: Vec<PathBuf>,
    /// `[direct]`.
    pub direct: Option<DirectConfig>,
    /// `[services]`: name → address.
    pub services: BTreeMap<String, String>,
    /// Which service a ticket without a service name reaches.
    pub default_service: Option<String>,
}

/// Reads and checks a host file.
pub fn load(path: &Path) -> Result<FileSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the host config file {} (--config)", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base).with_context(|| path.display().to_string())
}

/// The 1-based line of a value, from its span.
fn line(text: &str, span: std::ops::Range<usize>) -> usize {
    text.get(..span.start).unwrap_or(text).matches('\n').count() + 1
}

/// Parses and checks host file text; relative paths are taken from `base`.
pub fn parse(text: &str, base: &Path) -> Result<FileSettings> {
    // toml's own message names the line and column (and, for a typo, the keys it knows).
    let file: HostFile = toml::from_str(text).map_err(|e| anyhow!("{}", e.to_string().trim_end()))?;
    let at =
        |key: &str, span: std::ops::Range<usize>, why: String| anyhow!("`{key}` (line {}): {why}", line(text, span));
    let path = |p: &Spanned<PathBuf>| base.join(p.get_ref());

    let mut relays = Vec::new();
    for (i, entry) in file.relays.iter().enumerate() {
        let addr = entry.address.get_ref().trim();
        check_address(addr).map_err(|e| at(&format!("relays[{i}].address"), entry.address.span(), e.to_string()))?;
        let trust: RelayTrust = entry.pin.get_ref().parse().map_err(|e| {
            at(
                &format!("relays[{i}].pin"),
                entry.pin.span(),
                format!("{e}; the relay prints its pin at start (`ferry-cert pin cert.pem` prints it again)"),
            )
        })?;
        relays.push(RelayAddr { addr: addr.to_owned(), trust });
    }
    let relay_off = file.relay.as_ref().is_some_and(|r| !*r.get_ref());
    if let Some(relay) = file.relay.as_ref().filter(|_| relay_off) {
        if file.direct.is_none() {
            return Err(at(
                "relay",
                relay.span(),
                "relaying is off, so clients can only reach the host directly: add a `[direct]` section \
                 with `listen = \"0.0.0.0:4433\"` (and forward that port), or set `relay = true`"
                    .into(),
            ));
        }
        if !relays.is_empty() {
            return Err(at(
                "relay",
                relay.span(),
                "relaying is off but the file lists `[[relays]]`: remove them, or set `relay = true`".into(),
            ));
        }
    }
    let token = match &file.token {
        Some(token) if token.get_ref().is_empty() || token.get_ref().len() > 255 => {
            return Err(at(
                "token",
                token.span(),
                format!("{} bytes; a registration token has 1 to 255", token.get_ref().len()),
            ));
        }
        token => token.as_ref().map(|t| t.get_ref().clone()),
    };
    let transport = match &file.transport {
        Some(t) => {
            Some(t.get_ref().parse().map_err(|e: ferry_client::Error| at("transport", t.span(), e.to_string()))?)
        }
        None => None,
    };
    let mut allow = Vec::new();
    for (i, key) in file.allow.iter().enumerate() {
        allow.push(key.get_ref().trim().parse().map_err(|e: ferry_proto::Error| {
            at(&format!("allow[{i}]"), key.span(), format!("{e}; a client prints its key with `ferry key FILE`"))
        })?);
    }
    let mut services = BTreeMap::new();
    for (name, addr) in &file.services {
        let key = format!("services.{name}");
        Services::check_name(name).map_err(|e| at(&key, addr.span(), e.report()))?;
        let value = addr.get_ref().trim();
        check_address(value).map_err(|e| at(&key, addr.span(), e.to_string()))?;
        services.insert(name.clone(), value.to_owned());
    }
    if let Some(default) = &file.default_service {
        if !services.contains_key(default.get_ref()) {
            let known = services.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
            let why = if known.is_empty() {
                "there is no `[services]` section to choose from: add one (web = \"127.0.0.1:8096\")".to_owned()
            } else {
                format!("`{}` is not one of the `[services]` ({known})", default.get_ref())
            };
            return Err(at("default_service", default.span(), why));
        }
    }
    if file.default_service.is_none() && services.len() > 1 && !services.contains_key(Services::DEFAULT_NAME) {
        let known = services.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
        bail!(
            "`default_service`: several services ({known}) and none is the default; \
             add `default_service = \"NAME\"` (a ticket without a service reaches that one)"
        );
    }
    let direct = match &file.direct {
        Some(d) => {
            let listen: SocketAddr = d.listen.get_ref().trim().parse().map_err(|_| {
                at("direct.listen", d.listen.span(), "not an `ip:port` address (as in 0.0.0.0:4433)".into())
            })?;
            let mut advertise = Vec::new();
            for (i, addr) in d.advertise.iter().enumerate() {
                let value = addr.get_ref().trim();
                check_address(value).map_err(|e| at(&format!("direct.advertise[{i}]"), addr.span(), e.to_string()))?;
                advertise.push(value.to_owned());
            }
            Some(DirectConfig { listen, tcp: d.tcp, advertise })
        }
        None => None,
    };
    Ok(FileSettings {
        key: file.key.as_ref().map(path),
        relay_off,
        relays,
        token,
        transport,
        allow,
        allow_files: file.allow_file.iter().map(path).collect(),
        direct,
        services,
        default_service: file.default_service.map(Spanned::into_inner),
    })
}

/// What the command line says (flags not given are empty).
#[derive(Debug, Default)]
pub struct Flags {
    /// `--key`.
    pub key: Option<PathBuf>,
    /// `--relay`/`--pin`.
    pub relays: Vec<RelayAddr>,
    /// `--no-relay`.
    pub no_relay: bool,
    /// `--token`.
    pub token: Option<String>,
    /// `--transport`.
    pub transport: Option<Transport>,
    /// `--forward`: the service named `default`.
    pub forward: Option<String>,
    /// `--service NAME=ADDR`.
    pub services: Vec<(String, String)>,
    /// `--default-service`.
    pub default_service: Option<String>,
    /// `--allow`.
    pub allow: Vec<PublicKey>,
    /// `--allow-file`.
    pub allow_files: Vec<PathBuf>,
    /// `--direct-listen`.
    pub direct_listen: Option<SocketAddr>,
    /// `--direct-tcp`.
    pub direct_tcp: bool,
    /// `--advertise`.
    pub advertise: Vec<String>,
}

/// The file and the flags, combined (flags win).
#[derive(Debug)]
pub struct Setup {
    /// The identity file (`None`: the default place).
    pub key: Option<PathBuf>,
    /// Relaying is off: no relay is contacted, tickets list direct addresses only.
    pub relay_off: bool,
    /// Relays to register at (empty when relaying is off).
    pub relays: Vec<RelayAddr>,
    token: Option<String>,
    transport: Transport,
    /// The services, when the file or the flags name any.
    pub services: Option<Services>,
    allow: Vec<PublicKey>,
    allow_files: Vec<PathBuf>,
    direct_listen: Option<SocketAddr>,
    direct_tcp: bool,
    /// Addresses the owner tells clients about.
    pub advertise: Vec<String>,
}

/// Combines the file (if any) with the flags: a flag given replaces the file's value, a list
/// flag the file's whole list.
pub fn combine(file: Option<FileSettings>, flags: Flags) -> Result<Setup> {
    let file = file.unwrap_or_default();
    if flags.no_relay && !flags.relays.is_empty() {
        bail!("--no-relay and --relay contradict each other: give one of them");
    }
    let relay_off = flags.no_relay || (flags.relays.is_empty() && file.relay_off);
    let relays = match (relay_off, flags.relays.is_empty()) {
        (true, _) => Vec::new(),
        (false, false) => flags.relays,
        (false, true) => file.relays,
    };
    let services = if flags.forward.is_some() || !flags.services.is_empty() {
        let mut by_name = BTreeMap::new();
        if let Some(forward) = flags.forward {
            by_name.insert(Services::DEFAULT_NAME.to_owned(), forward);
        }
        for (name, addr) in flags.services {
            if by_name.insert(name.clone(), addr).is_some() {
                bail!(
                    "--service {name}=… is given twice (or names `default`, the service --forward sets): \
                     give each service one address"
                );
            }
        }
        let default = flags.default_service.as_deref();
        Some(Services::new(by_name, default).context("--service")?)
    } else if !file.services.is_empty() {
        let default = flags.default_service.as_deref().or(file.default_service.as_deref());
        Some(Services::new(file.services, default).context("`[services]`")?)
    } else {
        if flags.default_service.is_some() {
            bail!("--default-service names a service, but there are none: add --service NAME=ADDR or `[services]`");
        }
        None
    };
    let (allow, allow_files) = if flags.allow.is_empty() && flags.allow_files.is_empty() {
        (file.allow, file.allow_files)
    } else {
        (flags.allow, flags.allow_files)
    };
    let (file_listen, file_tcp, file_advertise) = match file.direct {
        Some(d) => (Some(d.listen), d.tcp, d.advertise),
        None => (None, false, Vec::new()),
    };
    Ok(Setup {
        key: flags.key.or(file.key),
        relay_off,
        relays,
        token: flags.token.or(file.token),
        transport: flags.transport.or(file.transport).unwrap_or_default(),
        services,
        allow,
        allow_files,
        direct_listen: flags.direct_listen.or(file_listen),
        direct_tcp: flags.direct_tcp || file_tcp,
        advertise: if flags.advertise.is_empty() { file_advertise } else { flags.advertise },
    })
}

impl Setup {
    /// The host identity file: the chosen one or the default place.
    pub fn key_path(&self) -> Result<PathBuf> {
        match &self.key {
            Some(path) => Ok(path.clone()),
            None => Ok(ferry_client::identity::default_dir().context("no HOME; pass --key")?.join("host.key")),
        }
    }

    /// Loads the host identity, saying how to make one if there is none.
    pub fn identity(&self) -> Result<HostIdentity> {
        let path = self.key_path()?;
        if !path.exists() {
            bail!("no host identity at {}; create one with `ferry host init`", path.display());
        }
        HostIdentity::load(&path).map_err(Into::into)
    }

    /// Everything `ferry host run` needs, checked: services, relays or a direct listener,
    /// the allow-list (its files read), the identity.
    pub fn host_config(self) -> Result<HostConfig> {
        let identity = self.identity()?;
        self.host_config_with(identity)
    }

    /// [`Setup::host_config`] with an identity already loaded.
    pub fn host_config_with(self, identity: HostIdentity) -> Result<HostConfig> {
        let Some(services) = self.services else {
            bail!(
                "no service to forward sessions to: pass --forward ADDR or --service NAME=ADDR, \
                 or list `[services]` in the config file"
            );
        };
        if !self.relay_off && self.relays.is_empty() {
            bail!(
                "no relay to register at: pass --relay ADDR --pin PIN, or list `[[relays]]` in the config file \
                 (or turn relaying off with --no-relay and a direct listener)"
            );
        }
        let direct = match self.direct_listen {
            Some(listen) => Some(DirectConfig { listen, tcp: self.direct_tcp, advertise: self.advertise }),
            None if self.relay_off => bail!(
                "relaying is off (--no-relay or `relay = false`) and there is no direct listener, so no client \
                 could reach the host: pass --direct-listen ADDR (or `[direct] listen` in the config file), \
                 or turn relaying on"
            ),
            None if self.direct_tcp || !self.advertise.is_empty() => {
                bail!("--direct-tcp and --advertise need a direct listener: pass --direct-listen ADDR too")
            }
            None => None,
        };
        if let Some(token) = &self.token {
            if token.is_empty() || token.len() > 255 {
                bail!("--token is {} bytes; a registration token has 1 to 255", token.len());
            }
        }
        let mut allow = self.allow;
        for file in &self.allow_files {
            allow.extend(args::read_allow_file(file)?);
        }
        let restricted = !allow.is_empty() || !self.allow_files.is_empty();
        let mut config = HostConfig::new(identity, self.relays, String::new());
        config.services = services;
        config.direct = direct;
        config.transport = self.transport;
        config.allow = restricted.then_some(allow);
        config.token = self.token;
        Ok(config)
    }

    /// The ticket for `identity`, for `service` (checked against the file's services when it
    /// lists some): the relays, and the advertised direct addresses.
    pub fn ticket(&self, identity: &HostIdentity, service: Option<String>) -> Result<Ticket> {
        if let (Some(name), Some(services)) = (&service, &self.services) {
            if !services.contains(name) {
                bail!(
                    "--service {name}: the host has no such service (its services: {}); \
                     a ticket for it would be refused",
                    services.names()
                );
            }
        }
        if let Some(name) = &service {
            Services::check_name(name).with_context(|| format!("--service {name}"))?;
        }
        if self.relay_off && self.advertise.is_empty() {
            bail!(
                "relaying is off, so the ticket needs a direct address: pass --advertise ADDR (a port forwarded to \
                 the host's direct listener) or list `advertise` in the config file's `[direct]`, or turn relaying on"
            );
        }
        if !self.relay_off && self.relays.is_empty() {
            bail!(
                "no relay for the ticket: pass --relay ADDR --pin PIN or --config FILE with `[[relays]]` \
                 (for a ticket with direct addresses only: --no-relay --advertise ADDR)"
            );
        }
        let mut ticket = Ticket::new(identity.key.public(), identity.secret.clone(), self.relays.clone());
        ticket.direct = self.advertise.clone();
        ticket.service = service;
        Ok(ticket)
    }
}

/// `ferry host check-config`: everything `host run` would check before touching the network
/// (the key file readable, the allow files read, every value parsed); returns the summary.
pub fn check(path: &Path) -> Result<String> {
    let setup = combine(Some(load(path)?), Flags::default())?;
    let (relays, relay_off) = (setup.relays.len(), setup.relay_off);
    let identity = setup.identity().with_context(|| format!("{}: `key`", path.display()))?;
    let config = setup.host_config_with(identity).with_context(|| path.display().to_string())?;
    let services: Vec<String> = config
        .services
        .iter()
        .map(|(name, _)| if name == config.services.default_name() { format!("{name} (default)") } else { name.into() })
        .collect();
    let relays = if relay_off { "relaying off".to_owned() } else { format!("{relays} relay(s)") };
    let direct = match &config.direct {
        Some(d) => format!("direct on {}{}", d.listen, if d.tcp { " (QUIC and TCP)" } else { "" }),
        None => "no direct listener".into(),
    };
    let allow = match &config.allow {
        Some(keys) => format!("{} allowed client key(s)", keys.len()),
        None => "any client with a ticket".into(),
    };
    Ok(format!(
        "{}: ok (host id {}, {relays}, services: {}, {direct}, {allow})",
        path.display(),
        config.identity.key.public(),
        services.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn parsed(text: &str) -> Result<FileSettings> {
        parse(text, Path::new("/etc/ferry"))
    }

    fn error(text: &str) -> String {
        format!("{:#}", parsed(text).unwrap_err())
    }

    #[test]
    fn a_whole_file_parses() {
        let client = ferry_proto::StaticKey::generate().unwrap().public();
        let text = format!(
            "key = \"host.key\"\ntoken = \"t\"\ntransport = \"tcp\"\nallow = [\"{client}\"]\nallow_file = [\"/x/allowed\"]\n\
             default_service = \"web\"\n\n[[relays]]\naddress = \"relay.example.org:4433\"\npin = \"{PIN}\"\n\n\
             [[relays]]\naddress = \"b.example.org:4433\"\npin = \"webpki\"\n\n\
             [direct]\nlisten = \"0.0.0.0:4433\"\ntcp = true\nadvertise = [\"203.0.113.7:4433\"]\n\n\
             [services]\nweb = \"127.0.0.1:8096\"\nssh = \"127.0.0.1:22\"\n"
        );
        let f = parsed(&text).unwrap();
        assert_eq!(f.key.as_deref(), Some(Path::new("/etc/ferry/host.key")), "relative to the file");
        assert_eq!(f.relays.len(), 2);
        assert_eq!(f.relays[1].trust, RelayTrust::WebPki);
        assert_eq!((f.token.as_deref(), f.transport), (Some("t"), Some(Transport::Tcp)));
        assert_eq!(f.allow, vec![client]);
        assert_eq!(f.allow_files, vec![PathBuf::from("/x/allowed")]);
        let direct = f.direct.clone().unwrap();
        assert_eq!((direct.listen.port(), direct.tcp, direct.advertise.len()), (4433, true, 1));
        assert_eq!(f.services.len(), 2);
        let setup = combine(Some(f), Flags::default()).unwrap();
        let services = setup.services.unwrap();
        assert_eq!((services.default_name(), services.get(Some("ssh"))), ("web", Some("127.0.0.1:22")));
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let err = error("[[relays]]\naddress = \"r:1\"\npin = \"sha256:nope\"\n");
        assert!(err.starts_with("`relays[0].pin` (line 3): invalid certificate pin"), "{err}");
        let err = error("\n[services]\nweb = \"127.0.0.1\"\n");
        assert!(err.starts_with("`services.web` (line 3):") && err.contains("no port"), "{err}");
        let err = error("default_service = \"mail\"\n[services]\nweb = \"127.0.0.1:1\"\n");
        assert!(err.starts_with("`default_service` (line 1): `mail` is not one of the `[services]` (web)"), "{err}");
        let err = error("[services]\nweb = \"127.0.0.1:1\"\nssh = \"127.0.0.1:2\"\n");
        assert!(err.contains("default_service = \"NAME\""), "{err}");
        let err = error("relay = false\n");
        assert!(err.starts_with("`relay` (line 1): relaying is off") && err.contains("[direct]"), "{err}");
        let err = error("[direct]\nlisten = \"0.0.0.0\"\n");
        assert!(err.starts_with("`direct.listen` (line 2):"), "{err}");
        let err = error("allow = [\"not-a-key\"]\n");
        assert!(err.starts_with("`allow[0]` (line 1):") && err.contains("ferry key FILE"), "{err}");
        let err = error("\n\nforwrd = \"127.0.0.1:1\"\n");
        assert!(err.contains("line 3") && err.contains("forwrd"), "{err}");
        let err = error("[services]\n\"we b\" = \"127.0.0.1:1\"\n");
        assert!(err.starts_with("`services.we b` (line 2):") && err.contains("service name"), "{err}");
        let err = error("[services]\n\".punch\" = \"127.0.0.1:1\"\n");
        assert!(err.starts_with("`services..punch` (line 2):") && err.contains("reserved"), "{err}");
    }

    #[test]
    fn flags_replace_what_the_file_says() {
        let file = parsed(&format!(
            "token = \"file\"\n[[relays]]\naddress = \"file.example:1\"\npin = \"{PIN}\"\n\
             [services]\nweb = \"127.0.0.1:1\"\n"
        ))
        .unwrap();
        let flags = Flags {
            relays: vec![RelayAddr { addr: "flag.example:2".into(), trust: RelayTrust::WebPki }],
            token: Some("flag".into()),
            services: vec![("ssh".into(), "127.0.0.1:22".into())],
            ..Flags::default()
        };
        let setup = combine(Some(file.clone()), flags).unwrap();
        assert_eq!(setup.relays[0].addr, "flag.example:2");
        assert_eq!(setup.token.as_deref(), Some("flag"));
        let services = setup.services.unwrap();
        assert_eq!((services.get(None), services.contains("web")), (Some("127.0.0.1:22"), false));
        // Without flags, the file's.
        let setup = combine(Some(file), Flags::default()).unwrap();
        assert_eq!((setup.relays[0].addr.as_str(), setup.token.as_deref()), ("file.example:1", Some("file")));
    }

    #[test]
    fn direct_flags_complete_the_file_s_listener() {
        let identity = HostIdentity::generate().unwrap();
        let file =
            parsed("relay = false\n[direct]\nlisten = \"0.0.0.0:4433\"\n[services]\nweb = \"127.0.0.1:1\"\n").unwrap();
        let flags = Flags { direct_tcp: true, advertise: vec!["192.0.2.7:4433".into()], ..Flags::default() };
        let config = combine(Some(file), flags).unwrap().host_config_with(identity.clone()).unwrap();
        let direct = config.direct.unwrap();
        assert!(config.relays.is_empty() && direct.tcp, "{direct:?}");
        assert_eq!(direct.advertise, vec!["192.0.2.7:4433".to_owned()]);
        // Without a listener anywhere, --direct-tcp says what it lacks.
        let flags = Flags { direct_tcp: true, forward: Some("127.0.0.1:1".into()), ..Flags::default() };
        let flags =
            Flags { relays: vec![RelayAddr { addr: "r.example:1".into(), trust: RelayTrust::WebPki }], ..flags };
        let err = format!("{:#}", combine(None, flags).unwrap().host_config_with(identity).unwrap_err());
        assert!(err.contains("--direct-listen"), "{err}");
    }

    #[test]
    fn forward_is_the_default_service_beside_named_ones() {
        let flags = Flags {
            forward: Some("127.0.0.1:80".into()),
            services: vec![("ssh".into(), "127.0.0.1:22".into())],
            ..Flags::default()
        };
        let services = combine(None, flags).unwrap().services.unwrap();
        assert_eq!((services.default_name(), services.get(Some("ssh"))), ("default", Some("127.0.0.1:22")));
        let twice = Flags {
            services: vec![("a".into(), "127.0.0.1:1".into()), ("a".into(), "127.0.0.1:2".into())],
            ..Flags::default()
        };
        assert!(format!("{:#}", combine(None, twice).unwrap_err()).contains("given twice"));
    }

    #[test]
    fn relay_off_needs_a_direct_listener_and_tickets_a_direct_address() {
        let identity = HostIdentity::generate().unwrap();
        let flags = Flags { no_relay: true, forward: Some("127.0.0.1:1".into()), ..Flags::default() };
        let err = format!("{:#}", combine(None, flags).unwrap().host_config_with(identity.clone()).unwrap_err());
        assert!(err.contains("--direct-listen") && err.contains("turn relaying on"), "{err}");
        let flags = Flags {
            no_relay: true,
            forward: Some("127.0.0.1:1".into()),
            direct_listen: Some(([127, 0, 0, 1], 4433).into()),
            ..Flags::default()
        };
        let config = combine(None, flags).unwrap().host_config_with(identity.clone()).unwrap();
        assert!(config.relays.is_empty() && config.direct.is_some());

        let setup = combine(None, Flags { no_relay: true, ..Flags::default() }).unwrap();
        let err = format!("{:#}", setup.ticket(&identity, None).unwrap_err());
        assert!(err.contains("--advertise"), "{err}");
        let setup =
            combine(None, Flags { no_relay: true, advertise: vec!["203.0.113.7:4433".into()], ..Flags::default() })
                .unwrap();
        let ticket = setup.ticket(&identity, Some("web".into())).unwrap();
        assert!(ticket.relays.is_empty());
        assert_eq!((ticket.direct.len(), ticket.service.as_deref()), (1, Some("web")));
    }

    #[test]
    fn a_ticket_s_service_is_checked_against_the_file() {
        let identity = HostIdentity::generate().unwrap();
        let file = parsed(&format!(
            "[[relays]]\naddress = \"r.example:1\"\npin = \"{PIN}\"\n[services]\nweb = \"127.0.0.1:1\"\n"
        ))
        .unwrap();
        let setup = combine(Some(file), Flags::default()).unwrap();
        let err = format!("{:#}", setup.ticket(&identity, Some("ssh".into())).unwrap_err());
        assert!(err.contains("no such service (its services: web)"), "{err}");
        assert_eq!(setup.ticket(&identity, Some("web".into())).unwrap().service.as_deref(), Some("web"));
    }
}
