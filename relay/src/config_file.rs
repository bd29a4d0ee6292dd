//! The relay's TOML configuration file: schema, defaults, validation.
//!
//! Every key has a default, so an empty file is a valid open relay; `deploy/relay.toml`
//! lists every key with a comment. Unknown keys are errors (a typo must not silently
//! fall back to a default), and every error names the key and, where it can, the line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_proto::HostId;
use serde::Deserialize;

use crate::Error;
use crate::config::{CoreSettings, DEFAULT_BUFFER_PER_DIRECTION, DEFAULT_LISTEN};
use crate::limits::Limits;
use crate::pacing::{DEFAULT_BURST_BYTES, Tier, parse_rate};
use crate::policy::{HostRule, Policy, TokenRule};

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
    pub congestion: String,
    /// PEM certificate chain (with `key`); without it a self-signed one is kept in `state_dir`.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Where the self-signed certificate lives.
    pub state_dir: Option<PathBuf>,
    /// Bytes buffered per session and direction.
    pub buffer_per_direction: u64,
    /// Most sessions one client connection may have open.
    pub max_sessions_per_connection: u32,
    /// Seconds a peer has to finish its handshake and first message.
    pub handshake_timeout_secs: u64,
    /// Seconds of silence after which a QUIC connection is dropped.
    pub idle_timeout_secs: u64,
    /// Seconds SIGTERM waits for running sessions before cutting them.
    pub shutdown_deadline_secs: u64,
}

impl Default for RelaySection {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 4433))),
            quic: true,
            tcp: true,
            congestion: "bbr".into(),
            cert: None,
            key: None,
            state_dir: None,
            buffer_per_direction: DEFAULT_BUFFER_PER_DIRECTION as u64,
            max_sessions_per_connection: 1024,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 30,
            shutdown_deadline_secs: 30,
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
        Self { enabled: true, listen: SocketAddr::from(([127, 0, 0, 1], 9090)) }
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
    /// New connections per source address per minute (0 = unlimited).
    pub connections_per_minute_per_source: u32,
    /// Sum of all session buffers, bytes.
    pub buffer_budget: u64,
    /// Seconds without bytes after which a session is closed.
    pub idle_session_timeout_secs: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            max_hosts: l.max_hosts,
            max_sessions_per_host: l.max_sessions_per_host,
            max_pending_handshakes: l.max_pending_handshakes,
            connections_per_minute_per_source: l.connections_per_minute_per_source,
            buffer_budget: l.buffer_budget,
            idle_session_timeout_secs: l.idle_session_timeout.as_secs(),
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

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<(Self, Checked), Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<(Self, Checked), String> {
        let file: Self = toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))?;
        let checked = file.check().map_err(|(key, why)| match line_of(text, key) {
            Some(line) => format!("`{key}` (line {line}): {why}"),
            None => format!("`{key}`: {why}"),
        })?;
        Ok((file, checked))
    }

    /// Semantic checks; an error names the offending key.
    fn check(&self) -> Result<Checked, (&'static str, String)> {
        let r = &self.relay;
        if r.cert.is_some() != r.key.is_some() {
            return Err(("cert", "set both `cert` and `key`, or neither".into()));
        }
        if r.congestion.parse::<ferry_link::Congestion>().is_err() {
            return Err(("congestion", "use `bbr` or `cubic`".into()));
        }
        let l = &self.limits;
        let limits = Limits {
            max_hosts: l.max_hosts,
            max_sessions_per_host: l.max_sessions_per_host,
            max_pending_handshakes: l.max_pending_handshakes,
            connections_per_minute_per_source: l.connections_per_minute_per_source,
            buffer_budget: l.buffer_budget,
            idle_session_timeout: Duration::from_secs(l.idle_session_timeout_secs),
        };
        let core = CoreSettings {
            quic: r.quic,
            tcp: r.tcp,
            buffer_per_direction: r.buffer_per_direction,
            handshake_timeout: Duration::from_secs(r.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(r.idle_timeout_secs),
            max_sessions_per_connection: r.max_sessions_per_connection,
            limits: &limits,
        };
        if let Some(problem) = core.problem() {
            return Err(problem);
        }
        if !crate::log::is_level(&self.log.level) {
            return Err(("level", "use error, warn, info, debug or trace".into()));
        }

        let mut tiers = vec![Tier::unlimited()];
        for t in &self.tiers {
            let rate = parse_rate(&t.rate).map_err(|e| ("rate", format!("tier `{}`: {e}", t.name)))?;
            let tier = Tier {
                name: t.name.clone(),
                rate_bits_per_sec: rate,
                burst_bytes: t.burst_bytes.unwrap_or(DEFAULT_BURST_BYTES),
            };
            tiers.retain(|existing| existing.name != tier.name);
            tiers.push(tier);
        }
        let known = |name: &str| tiers.iter().any(|t| t.name == name);
        if !known(&self.access.default_tier) {
            return Err(("default_tier", format!("no tier is called `{}`", self.access.default_tier)));
        }
        let mut tokens = Vec::new();
        for t in &self.access.tokens {
            let sha256 = parse_hex32(&t.sha256).ok_or((
                "sha256",
                format!("token `{}`: expected 64 hex digits (ferry-relay hash-token TOKEN)", t.name),
            ))?;
            if let Some(tier) = t.tier.as_deref().filter(|n| !known(n)) {
                return Err(("tier", format!("token `{}`: no tier is called `{tier}`", t.name)));
            }
            tokens.push(TokenRule { name: t.name.clone(), sha256, tier: t.tier.clone() });
        }
        let mut hosts = Vec::new();
        for h in &self.access.hosts {
            let id: HostId = h.id.parse().map_err(|e: ferry_proto::Error| ("id", e.to_string()))?;
            if let Some(tier) = h.tier.as_deref().filter(|n| !known(n)) {
                return Err(("tier", format!("host rule: no tier is called `{tier}`")));
            }
            hosts.push(HostRule { id, tier: h.tier.clone() });
        }
        if self.access.mode == Mode::Closed && tokens.is_empty() && hosts.is_empty() {
            return Err(("mode", "closed mode with no token and no host rule admits nobody".into()));
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

/// The 1-based line where `key` is first assigned, for error messages.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_an_open_relay_with_defaults() {
        let (file, checked) = FileConfig::parse("").unwrap();
        assert_eq!(file.relay.listen.port(), 4433);
        assert!(!checked.policy.closed);
        assert_eq!(checked.limits, Limits::default());
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let err = FileConfig::parse("[limits]\n\nmax_hosts = 0\n").unwrap_err();
        assert!(err.contains("`max_hosts` (line 3)"), "{err}");
        let err = FileConfig::parse("[limits]\nmax_hostz = 3\n").unwrap_err();
        assert!(err.contains("max_hostz") && err.contains("line 2"), "{err}");
        let err = FileConfig::parse("[[tier]]\nname = \"free\"\nrate = \"fast\"\n").unwrap_err();
        assert!(err.contains("`rate` (line 3)"), "{err}");
        let err = FileConfig::parse("[access]\nmode = \"closed\"\n").unwrap_err();
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
            let err = FileConfig::parse(text).unwrap_err();
            assert!(err.contains(&format!("`{key}` (line")), "{text:?}: {err}");
        }
    }

    #[test]
    fn tokens_and_tiers_are_checked() {
        let text = format!(
            "[access]\nmode = \"closed\"\ndefault_tier = \"free\"\n[[access.token]]\nname = \"a\"\nsha256 = \"{}\"\ntier = \"plus\"\n\
             [[tier]]\nname = \"free\"\nrate = \"2 Mbit/s\"\n[[tier]]\nname = \"plus\"\nrate = \"10 Mbit/s\"\n",
            "ab".repeat(32)
        );
        let (_, checked) = FileConfig::parse(&text).unwrap();
        assert!(checked.policy.closed);
        assert_eq!(checked.policy.tokens[0].sha256, [0xab; 32]);
        assert_eq!(checked.policy.tier("free").unwrap().rate_bits_per_sec, Some(2_000_000));
        let bad = text.replace("tier = \"plus\"", "tier = \"gold\"");
        assert!(FileConfig::parse(&bad).unwrap_err().contains("gold"));
    }
}
