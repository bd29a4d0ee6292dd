//! `[fleet]` in the relay's config file: checked with the rest of the file, then turned into
//! a [`FleetConfig`] (which reads the secret file, so `check-config` tells of a missing or
//! short secret before the relay starts).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{DEFAULT_PRESENCE_TTL, FleetConfig, FleetMode, FleetSecret, MIN_SECRET_LEN};
use crate::Error;

/// The environment variable that, when set, gives the Redis URL (it may hold a password,
/// so it can come from a secret store rather than the file).
pub const REDIS_URL_ENV: &str = "FERRY_RELAY_FLEET_REDIS_URL";

/// Longest presence period: past an hour a dead node's hosts would stay unreachable
/// through other nodes for too long to be what anyone wants.
const MAX_PRESENCE_TTL_SECS: u64 = 3600;

/// `[fleet]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    /// `redis://host:port/db`; [`REDIS_URL_ENV`] wins over it.
    pub redis_url: Option<String>,
    /// This node's id, a key of `nodes`; unset: the machine's host name.
    pub node_id: Option<String>,
    /// A file holding the fleet secret (at least 32 bytes).
    pub secret_file: PathBuf,
    /// `redirect` (default) or `forward`.
    #[serde(default, deserialize_with = "mode")]
    pub mode: FleetMode,
    /// Seconds a node's claim on a host lasts without a heartbeat.
    #[serde(default = "default_ttl")]
    pub presence_ttl_secs: u64,
    /// Every node: id → the address clients (redirect) or nodes (forward) dial.
    pub nodes: BTreeMap<String, String>,
}

fn default_ttl() -> u64 {
    DEFAULT_PRESENCE_TTL.as_secs()
}

fn mode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<FleetMode, D::Error> {
    match String::deserialize(deserializer)?.as_str() {
        "redirect" => Ok(FleetMode::Redirect),
        "forward" => Ok(FleetMode::Forward),
        other => Err(serde::de::Error::custom(format!("unknown fleet mode `{other}` (use redirect or forward)"))),
    }
}

impl FleetSection {
    /// What is wrong with the section, without reading files: `(key, why)`.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.nodes.is_empty() {
            return Some(("nodes", "list every node of the fleet: `[fleet.nodes]` id = \"address:port\"".into()));
        }
        if let Some((id, _)) = self.nodes.iter().find(|(_, addr)| !addr.contains(':')) {
            return Some((
                "nodes",
                format!("node `{id}`: give the address with its port, like `relay-0.example.org:4433`"),
            ));
        }
        if let Some(id) = self.node_id.as_deref().filter(|id| !self.nodes.contains_key(*id)) {
            return Some(("node_id", format!("`{id}` is not one of the nodes in `[fleet.nodes]`")));
        }
        if !(1..=MAX_PRESENCE_TTL_SECS).contains(&self.presence_ttl_secs) {
            return Some(("presence_ttl_secs", format!("use 1 to {MAX_PRESENCE_TTL_SECS} seconds")));
        }
        if self.redis_url.is_none() && std::env::var_os(REDIS_URL_ENV).is_none() {
            return Some(("redis_url", format!("set `redis_url` (or {REDIS_URL_ENV})")));
        }
        None
    }

    /// The fleet configuration: reads the secret and, without `node_id`, the host name.
    pub fn fleet_config(&self) -> Result<FleetConfig, Error> {
        let setting = |key, why: String| Error::Setting { key, why };
        if let Some((key, why)) = self.problem() {
            return Err(setting(key, why));
        }
        let redis_url = match std::env::var(REDIS_URL_ENV) {
            Ok(url) => url,
            Err(_) => self.redis_url.clone().unwrap_or_default(),
        };
        let bytes = std::fs::read(&self.secret_file)
            .map_err(|source| Error::Read { path: self.secret_file.clone(), source })?;
        let secret = FleetSecret::new(bytes.trim_ascii().to_vec()).ok_or_else(|| {
            setting(
                "secret_file",
                format!(
                    "{} holds fewer than {MIN_SECRET_LEN} bytes; make one with \
                     `head -c 32 /dev/urandom | base64 > fleet.secret` and give every node the same",
                    self.secret_file.display()
                ),
            )
        })?;
        let node_id = match &self.node_id {
            Some(id) => id.clone(),
            None => {
                host_name().ok_or_else(|| setting("node_id", "set `node_id` (the host name is unreadable)".into()))?
            }
        };
        if !self.nodes.contains_key(&node_id) {
            return Err(setting(
                "node_id",
                format!("this node's id `{node_id}` (its host name) is not one of `[fleet.nodes]`; set `node_id`"),
            ));
        }
        Ok(FleetConfig {
            redis_url,
            node_id,
            secret,
            mode: self.mode,
            nodes: self.nodes.clone(),
            presence_ttl: Duration::from_secs(self.presence_ttl_secs),
        })
    }
}

/// The machine's host name (a Kubernetes StatefulSet pod's name: `relay-0`): `HOSTNAME`
/// if set (shells and Kubernetes set it), else the kernel's.
fn host_name() -> Option<String> {
    let name = match std::env::var("HOSTNAME") {
        Ok(name) if !name.trim().is_empty() => name,
        _ => std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?,
    };
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}
