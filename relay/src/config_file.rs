//! The relay's TOML configuration file: schema, defaults, validation.
//!
//! Every key has a default, so an empty file is a valid open relay; `deploy/relay.toml`
//! lists every key with a comment. Unknown keys are errors (a typo must not silently
//! fall back to a default), and every error names the key and, where it can, the line.
//! Every duration and count is bounded as the file is checked, by the same list the
//! library's `RelayConfig::validate` and a reload use (`CoreSettings::problem`), so a
//! value `check-config` passes cannot panic the relay later.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_link::Congestion;
use ferry_proto::HostId;
use serde::{Deserialize, Deserializer};
use toml::de::{DeTable, DeValue};

use crate::config::{
    DEFAULT_BUFFER_PER_DIRECTION, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LISTEN,
    DEFAULT_MAX_SESSIONS_PER_CONNECTION, DEFAULT_SHUTDOWN_DEADLINE, Reloadable,
};
use crate::fleet::file::FleetSection;
use crate::limits::Limits;
use crate::pacing::{DEFAULT_BURST_BYTES, Tier, parse_rate};
use crate::policy::{HostRule, Policy, TokenRule};
use crate::quota::{OverQuota, Quota, parse_quota};
use crate::units;
use crate::{Error, RelayConfig, TlsIdentity};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Listener, certificate, buffers and timeouts.
    #[serde(default)]
    pub relay: RelaySection,
    /// The metrics and health listener.
    #[serde(default)]
    pub admin: AdminSection,
    /// Who may register.
    #[serde(default)]
    pub access: AccessSection,
    /// Hard limits.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Bandwidth tiers (`[[tier]]` tables).
    #[serde(default, rename = "tier")]
    pub tiers: Vec<TierSection>,
    /// Logging.
    #[serde(default)]
    pub log: LogSection,
    /// This node's fleet (`crate::fleet`); absent: a relay on its own.
    pub fleet: Option<FleetSection>,
}

/// `[relay]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySection {
    /// QUIC (UDP) and TLS (TCP) listen address; both use the port.
    pub listen: SocketAddr,
    /// Serve QUIC.
    pub quic: bool,
    /// Serve TLS over TCP.
    pub tcp: bool,
    /// QUIC congestion controller: `bbr` (robust to random loss) or `cubic`.
    #[serde(deserialize_with = "congestion")]
    pub congestion: Congestion,
    /// PEM certificate chain (with `key`); without it a self-signed one is kept in `state_dir`.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Where the self-signed certificate lives.
    pub state_dir: Option<PathBuf>,
    /// Bytes buffered per session and direction.
    #[serde(deserialize_with = "units::bytes")]
    pub buffer_per_direction: u64,
    /// Most sessions one client connection may have open.
    pub max_sessions_per_connection: u32,
    /// Seconds a peer has to finish its handshake and first message.
    #[serde(deserialize_with = "units::seconds")]
    pub handshake_timeout_secs: u64,
    /// Seconds of silence after which a QUIC connection is dropped.
    #[serde(deserialize_with = "units::seconds")]
    pub idle_timeout_secs: u64,
    /// Seconds SIGTERM waits for running sessions before cutting them.
    #[serde(deserialize_with = "units::seconds")]
    pub shutdown_deadline_secs: u64,
}

/// `congestion = "bbr"`: parsed once, here, so a wrong name is a syntax error with its line.
fn congestion<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Congestion, D::Error> {
    let name = String::deserialize(deserializer)?;
    name.parse().map_err(serde::de::Error::custom)
}

impl Default for RelaySection {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            quic: true,
            tcp: true,
            congestion: Congestion::default(),
            cert: None,
            key: None,
            state_dir: None,
            buffer_per_direction: DEFAULT_BUFFER_PER_DIRECTION as u64,
            max_sessions_per_connection: DEFAULT_MAX_SESSIONS_PER_CONNECTION,
            handshake_timeout_secs: DEFAULT_HANDSHAKE_TIMEOUT.as_secs(),
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT.as_secs(),
            shutdown_deadline_secs: DEFAULT_SHUTDOWN_DEADLINE.as_secs(),
        }
    }
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Serve `/metrics` and `/healthz`.
    pub enabled: bool,
    /// Where (keep it private: loopback or a management network).
    pub listen: SocketAddr,
}

impl Default for AdminSection {
    fn default() -> Self {
        // The relay's port plus one: Prometheus takes 9090 and its exporters 9100-9999.
        Self { enabled: true, listen: SocketAddr::from(([127, 0, 0, 1], 4434)) }
    }
}

/// Open or closed registration.
#[derive(Debug, Default, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Any host that proves its key may register.
    #[default]
    Open,
    /// Only hosts with a token or an allow-listed id.
    Closed,
}

/// `[access]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessSection {
    /// `open` or `closed`.
    pub mode: Mode,
    /// Tier of hosts no rule names.
    pub default_tier: String,
    /// `[[access.token]]` tables.
    #[serde(rename = "token")]
    pub tokens: Vec<TokenSection>,
    /// `[[access.host]]` tables.
    #[serde(rename = "host")]
    pub hosts: Vec<HostSection>,
}

impl Default for AccessSection {
    fn default() -> Self {
        Self { mode: Mode::Open, default_tier: "unlimited".into(), tokens: Vec::new(), hosts: Vec::new() }
    }
}

/// `[[access.token]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    /// A label for the operator.
    pub name: String,
    /// Hex SHA-256 of the token (`ferry-relay hash-token TOKEN`).
    pub sha256: String,
    /// Tier for hosts using this token.
    pub tier: Option<String>,
}

/// `[[access.host]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// The host id (52 base32 characters).
    pub id: String,
    /// Tier for this host.
    pub tier: Option<String>,
}

/// `[limits]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Most hosts registered at once.
    pub max_hosts: usize,
    /// Most concurrent sessions per host.
    pub max_sessions_per_host: usize,
    /// Most connections in their handshake at once.
    pub max_pending_handshakes: usize,
    /// Most connections in their handshake at once from one source.
    pub max_pending_handshakes_per_source: usize,
    /// New connections per source address per minute (0 = unlimited).
    pub connections_per_minute_per_source: u32,
    /// Sum of all session buffers, bytes.
    #[serde(deserialize_with = "units::bytes")]
    pub buffer_budget: u64,
    /// Seconds without bytes after which a session is closed.
    #[serde(deserialize_with = "units::seconds")]
    pub idle_session_timeout_secs: u64,
    /// Most hop connections open at once.
    pub max_connections: usize,
    /// Most hop connections open at once from one source address.
    pub max_connections_per_source: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            max_hosts: l.max_hosts,
            max_sessions_per_host: l.max_sessions_per_host,
            max_pending_handshakes: l.max_pending_handshakes,
            max_pending_handshakes_per_source: l.max_pending_handshakes_per_source,
            connections_per_minute_per_source: l.connections_per_minute_per_source,
            buffer_budget: l.buffer_budget,
            idle_session_timeout_secs: l.idle_session_timeout.as_secs(),
            max_connections: l.max_connections,
            max_connections_per_source: l.max_connections_per_source,
        }
    }
}

/// `[[tier]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSection {
    /// Tier name.
    pub name: String,
    /// `"2 Mbit/s"`, `"500 kbit/s"`, `"unlimited"`.
    pub rate: String,
    /// Burst in bytes (default 256 KiB).
    pub burst_bytes: Option<u64>,
    /// Bytes each account (a token, or a host without one) may carry per UTC day or month:
    /// `"100 GiB/month"`, `"2 MiB/day"`. Unset: no quota.
    pub quota: Option<String>,
    /// What a running session gets once its account's quota is spent: this rate (`"1
    /// Mbit/s"`); unset: the session ends at the next check.
    pub over_quota_rate: Option<String>,
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// error, warn, info, debug or trace. No level shows addresses, ids, keys or payload.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

/// The checked, typed result of a config file (everything but the certificate).
#[derive(Debug, Clone)]
pub struct Checked {
    /// Access rules and tiers.
    pub policy: Policy,
    /// Hard limits.
    pub limits: Limits,
}

/// Where in the file a problem is: a path of table keys and array indexes, then the key.
type Problem = (Vec<Segment>, &'static str, String);

/// One step of a path into the file (`tier`, `1`, ...).
#[derive(Clone, Copy, Debug)]
enum Segment {
    Key(&'static str),
    Index(usize),
}

impl FileConfig {
    /// Reads, parses and checks `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|e| Error::ConfigFile { path: path.to_owned(), source: Box::new(e) })
    }

    /// Parses and checks config text; every error names the key and, where the file sets
    /// it, its line (exact for repeated tables such as the second `[[tier]]`).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let file: Self = toml::from_str(text).map_err(Error::ConfigSyntax)?;
        file.check().map_err(|(path, key, why)| Error::ConfigSetting { key, line: line_of(text, &path, key), why })?;
        Ok(file)
    }

    /// The access rules, tiers and limits this file sets, checked.
    pub fn checked(&self) -> Result<Checked, Error> {
        self.check().map_err(|(_, key, why)| Error::ConfigSetting { key, line: None, why })
    }

    /// The settings a reload replaces: the certificate this file names (or the state
    /// directory's self-signed one, made on first use), access rules, tiers and limits.
    pub fn reloadable(&self) -> Result<Reloadable, Error> {
        let Checked { policy, limits } = self.check().map_err(|(_, key, why)| Error::Setting { key, why })?;
        Ok(Reloadable { identity: self.identity()?, policy, limits })
    }

    /// The whole relay configuration this file (with any overrides applied) describes.
    pub fn relay_config(&self) -> Result<RelayConfig, Error> {
        let r = &self.relay;
        let reloadable = self.reloadable()?;
        let mut config = RelayConfig::new(r.listen, reloadable.identity.clone());
        config.reloadable = reloadable;
        config.quic = r.quic;
        config.tcp = r.tcp;
        config.congestion = r.congestion;
        config.buffer_per_direction = usize::try_from(r.buffer_per_direction)
            .map_err(|_| Error::Setting { key: "buffer_per_direction", why: "too large for this machine".into() })?;
        config.max_sessions_per_connection = r.max_sessions_per_connection;
        config.handshake_timeout = Duration::from_secs(r.handshake_timeout_secs);
        config.idle_timeout = Duration::from_secs(r.idle_timeout_secs);
        config.shutdown_deadline = Duration::from_secs(r.shutdown_deadline_secs);
        config.admin = self.admin.enabled.then_some(self.admin.listen);
        config.fleet = self.fleet.as_ref().map(FleetSection::fleet_config).transpose()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks, as the user running this, that the relay can use the files this file names:
    /// `cert` and `key` can be read, or else `state_dir` can hold (or already holds, readably)
    /// the self-signed certificate. For `check-config`, which would otherwise pass a file
    /// the relay cannot start with.
    pub fn check_files(&self) -> Result<(), Error> {
        let readable = |path: &Path| {
            std::fs::File::open(path).map(drop).map_err(|source| Error::Read { path: path.to_owned(), source })
        };
        match (&self.relay.cert, &self.relay.key) {
            (Some(cert), Some(key)) => readable(cert).and_then(|()| readable(key)),
            _ => {
                let dir = self.state_dir()?;
                let (cert, key) = (dir.join(ferry_cert::CERT_FILE), dir.join(ferry_cert::KEY_FILE));
                if cert.exists() || key.exists() {
                    readable(&cert).and_then(|()| readable(&key))
                } else {
                    writable_dir(&dir).map_err(|source| Error::StateDir { path: dir, source })
                }
            }
        }
    }

    /// `state_dir`, or its default.
    fn state_dir(&self) -> Result<PathBuf, Error> {
        match &self.relay.state_dir {
            Some(dir) => Ok(dir.clone()),
            None => default_state_dir(),
        }
    }

    /// The certificate the file names, or the state directory's self-signed one.
    fn identity(&self) -> Result<TlsIdentity, Error> {
        match (&self.relay.cert, &self.relay.key) {
            (Some(cert), Some(key)) => Ok(TlsIdentity::from_files(cert, key)?),
            _ => {
                let dir = self.state_dir()?;
                if !dir.join(ferry_cert::CERT_FILE).exists() && !dir.join(ferry_cert::KEY_FILE).exists() {
                    // Before making a certificate: the error then says what to do.
                    writable_dir(&dir).map_err(|source| Error::StateDir { path: dir.clone(), source })?;
                }
                let (identity, created) = TlsIdentity::load_or_create(&dir)?;
                if created {
                    tracing::info!("created a self-signed certificate in {}", dir.display());
                }
                Ok(identity)
            }
        }
    }

    fn check(&self) -> Result<Checked, Problem> {
        use Segment::{Index, Key};
        let at = |path: &[Segment], key: &'static str, why: String| (path.to_vec(), key, why);
        let r = &self.relay;
        if r.cert.is_some() != r.key.is_some() {
            return Err(at(&[Key("relay")], "cert", "set both `cert` and `key`, or neither".into()));
        }
        let l = &self.limits;
        let limits = Limits {
            max_hosts: l.max_hosts,
            max_sessions_per_host: l.max_sessions_per_host,
            max_pending_handshakes: l.max_pending_handshakes,
            max_pending_handshakes_per_source: l.max_pending_handshakes_per_source,
            connections_per_minute_per_source: l.connections_per_minute_per_source,
            buffer_budget: l.buffer_budget,
            idle_session_timeout: Duration::from_secs(l.idle_session_timeout_secs),
            max_connections: l.max_connections,
            max_connections_per_source: l.max_connections_per_source,
        };
        let core = crate::config::CoreSettings {
            quic: r.quic,
            tcp: r.tcp,
            buffer_per_direction: r.buffer_per_direction,
            handshake_timeout: Duration::from_secs(r.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(r.idle_timeout_secs),
            max_sessions_per_connection: r.max_sessions_per_connection,
            shutdown_deadline: Duration::from_secs(r.shutdown_deadline_secs),
        };
        if let Some((key, why)) = core.problem(&limits) {
            let section = if LimitsSection::KEYS.contains(&key) { "limits" } else { "relay" };
            return Err(at(&[Key(section)], key, why));
        }
        if let Some((key, why)) = self.fleet.as_ref().and_then(FleetSection::problem) {
            return Err(at(&[Key("fleet")], key, why));
        }
        if !crate::log::is_level(&self.log.level) {
            return Err(at(&[Key("log")], "level", "use error, warn, info, debug or trace".into()));
        }

        let mut tiers = vec![Tier::unlimited()];
        for (i, t) in self.tiers.iter().enumerate() {
            let rate = parse_rate(&t.rate)
                .map_err(|e| at(&[Key("tier"), Index(i)], "rate", format!("tier `{}`: {e}", t.name)))?;
            let quota = tier_quota(t).map_err(|(key, why)| at(&[Key("tier"), Index(i)], key, why))?;
            let tier = Tier {
                name: t.name.clone(),
                rate_bits_per_sec: rate,
                burst_bytes: t.burst_bytes.unwrap_or(DEFAULT_BURST_BYTES),
                quota,
            };
            tiers.retain(|existing| existing.name != tier.name);
            tiers.push(tier);
        }
        let known = |name: &str| tiers.iter().any(|t| t.name == name);
        let access = Key("access");
        if !known(&self.access.default_tier) {
            return Err(at(&[access], "default_tier", format!("no tier is called `{}`", self.access.default_tier)));
        }
        let mut tokens = Vec::new();
        for (i, t) in self.access.tokens.iter().enumerate() {
            let here = [access, Key("token"), Index(i)];
            let sha256 = parse_hex32(&t.sha256).ok_or_else(|| {
                at(
                    &here,
                    "sha256",
                    format!("token `{}`: expected 64 hex digits (ferry-relay hash-token TOKEN)", t.name),
                )
            })?;
            if let Some(tier) = t.tier.as_deref().filter(|n| !known(n)) {
                return Err(at(&here, "tier", format!("token `{}`: no tier is called `{tier}`", t.name)));
            }
            tokens.push(TokenRule { name: t.name.clone(), sha256, tier: t.tier.clone() });
        }
        let mut hosts = Vec::new();
        for (i, h) in self.access.hosts.iter().enumerate() {
            let here = [access, Key("host"), Index(i)];
            let id: HostId = h.id.parse().map_err(|e: ferry_proto::Error| at(&here, "id", e.to_string()))?;
            if let Some(tier) = h.tier.as_deref().filter(|n| !known(n)) {
                return Err(at(&here, "tier", format!("host rule: no tier is called `{tier}`")));
            }
            hosts.push(HostRule { id, tier: h.tier.clone() });
        }
        if self.access.mode == Mode::Closed && tokens.is_empty() && hosts.is_empty() {
            return Err(at(&[access], "mode", "closed mode with no token and no host rule admits nobody".into()));
        }
        Ok(Checked {
            policy: Policy {
                closed: self.access.mode == Mode::Closed,
                tokens,
                hosts,
                tiers,
                default_tier: self.access.default_tier.clone(),
            },
            limits,
        })
    }
}

impl LimitsSection {
    /// The keys of `[limits]` (the cross-setting check reports keys of both sections).
    const KEYS: [&'static str; 9] = [
        "max_hosts",
        "max_sessions_per_host",
        "max_pending_handshakes",
        "max_pending_handshakes_per_source",
        "connections_per_minute_per_source",
        "buffer_budget",
        "idle_session_timeout_secs",
        "max_connections",
        "max_connections_per_source",
    ];
}

/// A tier's `quota` and `over_quota_rate`, checked: `(key, why)` when wrong.
fn tier_quota(t: &TierSection) -> Result<Option<Quota>, (&'static str, String)> {
    let Some(text) = &t.quota else {
        return match t.over_quota_rate {
            Some(_) => Err((
                "over_quota_rate",
                format!("tier `{}`: `over_quota_rate` needs a `quota` (such as \"100 GiB/month\")", t.name),
            )),
            None => Ok(None),
        };
    };
    let (bytes, period) = parse_quota(text).map_err(|why| ("quota", format!("tier `{}`: {why}", t.name)))?;
    let over = match &t.over_quota_rate {
        None => OverQuota::End,
        Some(rate) => match parse_rate(rate) {
            Ok(Some(rate_bits_per_sec)) => OverQuota::Pace { rate_bits_per_sec },
            Ok(None) => {
                return Err((
                    "over_quota_rate",
                    format!(
                        "tier `{}`: an unlimited over-quota rate would make the quota do nothing; give a rate \
                         such as \"1 Mbit/s\", or leave `over_quota_rate` out to end sessions over quota",
                        t.name
                    ),
                ));
            }
            Err(e) => return Err(("over_quota_rate", format!("tier `{}`: {e}", t.name))),
        },
    };
    Ok(Some(Quota { bytes, period, over }))
}

/// Whether this user can make `dir` (or it exists) and write in it: a file is created and
/// removed in `dir`, or in its nearest existing parent if `dir` is still to be made.
fn writable_dir(dir: &Path) -> std::io::Result<()> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => break,
        }
    }
    if existing.exists() && !existing.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is a file, not a directory", existing.display()),
        ));
    }
    let probe = existing.join(format!(".ferry-relay-write-check-{}", std::process::id()));
    std::fs::OpenOptions::new().write(true).create_new(true).open(&probe)?;
    std::fs::remove_file(&probe)
}

/// The state directory's default: `$STATE_DIRECTORY` (systemd), else
/// `$XDG_STATE_HOME/ferry-relay`, else `~/.local/state/ferry-relay`.
pub fn default_state_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return Ok(PathBuf::from(dir).join("ferry-relay"));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/ferry-relay")),
        None => Err(Error::Setting { key: "state_dir", why: "no HOME to keep it under; pass --state-dir".into() }),
    }
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The 1-based line where the file sets `key` under `path`, read from the parsed document's
/// spans (so the second `[[tier]]`'s `rate` is found in the second table, not the first);
/// `None` when the file does not set it (a default or a command-line flag).
fn line_of(text: &str, path: &[Segment], key: &str) -> Option<usize> {
    let document = DeTable::parse(text).ok()?;
    let mut table = document.get_ref();
    let mut steps = path.iter();
    while let Some(step) = steps.next() {
        let Segment::Key(name) = step else { return None };
        table = match table.get(*name)?.get_ref() {
            DeValue::Table(t) => t,
            // An array of tables: the next step says which one.
            DeValue::Array(items) => match (steps.next(), items) {
                (Some(Segment::Index(i)), items) => match items.get(*i)?.get_ref() {
                    DeValue::Table(t) => t,
                    _ => return None,
                },
                _ => return None,
            },
            _ => return None,
        };
    }
    let (found, _) = table.get_key_value(key)?;
    Some(text.get(..found.span().start)?.matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_take_units_and_plain_integers_alike() {
        let human = FileConfig::parse(
            "[relay]\nbuffer_per_direction = \"512 KiB\"\nhandshake_timeout_secs = \"5s\"\nidle_timeout_secs = \"1m\"\n\
             [limits]\nbuffer_budget = \"1 GiB\"\nidle_session_timeout_secs = \"5m\"\n",
        )
        .unwrap();
        let plain = FileConfig::parse(
            "[relay]\nbuffer_per_direction = 524288\nhandshake_timeout_secs = 5\nidle_timeout_secs = 60\n\
             [limits]\nbuffer_budget = 1073741824\nidle_session_timeout_secs = 300\n",
        )
        .unwrap();
        assert_eq!(human.relay.buffer_per_direction, plain.relay.buffer_per_direction);
        assert_eq!(human.relay.handshake_timeout_secs, 5);
        assert_eq!(human.relay.idle_timeout_secs, 60);
        assert_eq!(human.limits.buffer_budget, plain.limits.buffer_budget);
        assert_eq!(human.limits.idle_session_timeout_secs, 300);
        let wrong = FileConfig::parse("[relay]\n\nbuffer_per_direction = \"lots\"\n").unwrap_err().to_string();
        assert!(wrong.contains("line 3") && wrong.contains("\"1 MiB\""), "{wrong}");
    }

    #[test]
    fn empty_file_is_an_open_relay_with_defaults() {
        let file = FileConfig::parse("").unwrap();
        let checked = file.checked().unwrap();
        assert_eq!(file.relay.listen.port(), 4433);
        assert!(!checked.policy.closed);
        assert_eq!(checked.limits, Limits::default());
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let err = FileConfig::parse("[limits]\n\nmax_hosts = 0\n").unwrap_err().to_string();
        assert!(err.contains("`max_hosts` (line 3)"), "{err}");
        let err = FileConfig::parse("[limits]\nmax_hostz = 3\n").unwrap_err().to_string();
        assert!(err.contains("max_hostz") && err.contains("line 2"), "{err}");
        let err = FileConfig::parse("[[tier]]\nname = \"free\"\nrate = \"fast\"\n").unwrap_err().to_string();
        assert!(err.contains("`rate` (line 3)"), "{err}");
        let err = FileConfig::parse("[access]\nmode = \"closed\"\n").unwrap_err().to_string();
        assert!(err.contains("admits nobody"), "{err}");
    }

    /// The settings the library's `RelayConfig::validate` refuses are refused here too, with
    /// their line, not only later when the relay starts (`max_sessions_per_connection = 0`
    /// used to pass `check-config`).
    #[test]
    fn the_file_check_refuses_what_the_library_refuses() {
        for (text, key) in [
            ("[relay]\nmax_sessions_per_connection = 0\n", "max_sessions_per_connection"),
            ("[relay]\nquic = false\ntcp = false\n", "quic"),
            ("[relay]\nbuffer_per_direction = 1024\n", "buffer_per_direction"),
            ("[relay]\nidle_timeout_secs = 0\n", "idle_timeout_secs"),
            ("[limits]\nbuffer_budget = 1000\n", "buffer_budget"),
        ] {
            let err = FileConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}` (line")), "{text:?}: {err}");
        }
    }

    /// Durations and counts past their bound are refused with their key and line, the
    /// two values of issue 13 finding 7 among them; the bounds themselves pass.
    #[test]
    fn durations_and_counts_are_bounded() {
        let huge = u64::MAX;
        for (section, key, bound) in [
            ("relay", "handshake_timeout_secs", 86_400),
            ("relay", "idle_timeout_secs", 86_400),
            ("relay", "shutdown_deadline_secs", 86_400),
            ("limits", "idle_session_timeout_secs", 86_400),
            ("limits", "max_hosts", 1 << 20),
            ("limits", "max_sessions_per_host", 1 << 20),
            ("limits", "max_pending_handshakes", 1 << 20),
            ("limits", "max_pending_handshakes_per_source", 1 << 20),
            ("relay", "max_sessions_per_connection", 1 << 20),
        ] {
            let at_bound = format!("[{section}]\n{key} = {bound}\n");
            assert!(FileConfig::parse(&at_bound).is_ok(), "{at_bound:?}: {:?}", FileConfig::parse(&at_bound).err());
            let values = if key == "max_sessions_per_connection" {
                vec![bound + 1, u64::from(u32::MAX)]
            } else {
                vec![bound + 1, huge]
            };
            for value in values {
                let text = format!("# a comment\n[{section}]\n{key} = {value}\n");
                let err = FileConfig::parse(&text).unwrap_err().to_string();
                assert!(err.contains(&format!("`{key}` (line 3): must be at most {bound}")), "{text:?}: {err}");
            }
        }
        // A drain of 0 cuts sessions at once; the other durations must be at least 1.
        assert!(FileConfig::parse("[relay]\nshutdown_deadline_secs = 0\n").is_ok());
        let err = FileConfig::parse("[limits]\nidle_session_timeout_secs = 0\n").unwrap_err().to_string();
        assert!(err.contains("`idle_session_timeout_secs` (line 2): must be at least 1"), "{err}");
    }

    #[test]
    fn tokens_and_tiers_are_checked() {
        let text = format!(
            "[access]\nmode = \"closed\"\ndefault_tier = \"free\"\n[[access.token]]\nname = \"a\"\nsha256 = \"{}\"\ntier = \"plus\"\n\
             [[tier]]\nname = \"free\"\nrate = \"2 Mbit/s\"\n[[tier]]\nname = \"plus\"\nrate = \"10 Mbit/s\"\n",
            "ab".repeat(32)
        );
        let checked = FileConfig::parse(&text).unwrap().checked().unwrap();
        assert!(checked.policy.closed);
        assert_eq!(checked.policy.tokens[0].sha256, [0xab; 32]);
        assert_eq!(checked.policy.tier("free").unwrap().rate_bits_per_sec, Some(2_000_000));
        let bad = text.replace("tier = \"plus\"", "tier = \"gold\"");
        assert!(FileConfig::parse(&bad).unwrap_err().to_string().contains("gold"));
    }

    #[test]
    fn tier_quotas_are_read_and_checked() {
        use crate::quota::Period;
        let text = "[[tier]]\nname = \"metered\"\nrate = \"10 Mbit/s\"\nquota = \"100 GiB/month\"\n\
                    [[tier]]\nname = \"slowed\"\nrate = \"unlimited\"\nquota = \"2 MiB/day\"\nover_quota_rate = \"64 kbit/s\"\n";
        let checked = FileConfig::parse(text).unwrap().checked().unwrap();
        let metered = checked.policy.tier("metered").unwrap().quota.unwrap();
        assert_eq!((metered.bytes, metered.period, metered.over), (100 << 30, Period::Month, OverQuota::End));
        let slowed = checked.policy.tier("slowed").unwrap().quota.unwrap();
        assert_eq!((slowed.bytes, slowed.period), (2 << 20, Period::Day));
        assert_eq!(slowed.over, OverQuota::Pace { rate_bits_per_sec: 64_000 });
        assert_eq!(checked.policy.tier("unlimited").unwrap().quota, None);
        for (tier, key, want) in [
            ("quota = \"100 GiB\"", "quota", "no period"),
            ("quota = \"100 GiB/week\"", "quota", "use day or month"),
            ("quota = \"0 B/day\"", "quota", "zero"),
            ("over_quota_rate = \"1 Mbit/s\"", "over_quota_rate", "needs a `quota`"),
            ("quota = \"1 GiB/day\"\nover_quota_rate = \"unlimited\"", "over_quota_rate", "do nothing"),
            ("quota = \"1 GiB/day\"\nover_quota_rate = \"1 MB/s\"", "over_quota_rate", "ambiguous"),
        ] {
            let text = format!("[[tier]]\nname = \"t\"\nrate = \"1 Mbit/s\"\n{tier}\n");
            let line = 3 + tier.lines().count();
            let err = FileConfig::parse(&text).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}` (line {line})")) && err.contains(want), "{text:?}: {err}");
        }
    }

    /// A wrong value in the second of two repeated tables is reported at its own line, not
    /// at the first table's key of the same name.
    #[test]
    fn repeated_tables_report_their_own_line() {
        let text = "[[tier]]\nname = \"free\"\nrate = \"2 Mbit/s\"\n\n[[tier]]\nname = \"plus\"\nrate = \"fast\"\n";
        let err = FileConfig::parse(text).unwrap_err().to_string();
        assert!(err.contains("`rate` (line 7)"), "{err}");
        let text = format!(
            "[access]\nmode = \"closed\"\n[[access.token]]\nname = \"a\"\nsha256 = \"{}\"\n[[access.token]]\nname = \"b\"\nsha256 = \"nothex\"\n",
            "ab".repeat(32)
        );
        let err = FileConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains("`sha256` (line 8)") && err.contains("token `b`"), "{err}");
    }

    /// The file's conversion is the library's: what the binary runs is tested here.
    #[test]
    fn the_file_becomes_a_relay_config() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[relay]\nlisten = \"127.0.0.1:0\"\nstate_dir = {:?}\ncongestion = \"cubic\"\nidle_timeout_secs = 7\n\
             [admin]\nenabled = false\n[limits]\nmax_pending_handshakes = 5\n",
            dir.path()
        );
        let config = FileConfig::parse(&text).unwrap().relay_config().unwrap();
        assert_eq!(config.congestion, Congestion::Cubic);
        assert_eq!(config.idle_timeout, Duration::from_secs(7));
        assert_eq!(config.admin, None);
        assert_eq!(config.reloadable.limits.max_pending_handshakes, 5);
        assert!(dir.path().join("cert.pem").exists(), "the self-signed certificate is made on first use");
        let err = FileConfig::parse("[relay]\ncongestion = \"reno\"\n").unwrap_err().to_string();
        assert!(err.contains("reno") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn a_state_dir_the_relay_cannot_use_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let text = format!("[relay]\nstate_dir = {:?}\n", file.join("state"));
        let config = FileConfig::parse(&text).unwrap();
        for err in [config.check_files().unwrap_err(), config.relay_config().unwrap_err()] {
            assert!(matches!(err, Error::StateDir { .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.contains("state_dir"), "{text}");
            let hint = err.hint().unwrap();
            assert!(hint.contains("--state-dir") && hint.contains("run the relay as"), "{hint}");
            let cause = std::error::Error::source(&err).unwrap().to_string();
            assert!(cause.contains("is a file, not a directory"), "{cause}");
            assert!(!text.contains(&cause), "the cause is said once: {text}");
        }
        let fine = FileConfig::parse(&format!("[relay]\nstate_dir = {:?}\n", dir.path().join("a/b"))).unwrap();
        fine.check_files().unwrap();
        assert!(!dir.path().join("a").exists(), "checking makes nothing");
        let files = FileConfig::parse(&format!("[relay]\ncert = {:?}\nkey = {:?}\n", file, dir.path().join("missing")));
        assert!(matches!(files.unwrap().check_files(), Err(Error::Read { .. })));
    }
}
