//! The relay's settings, with the defaults an operator gets when they set nothing, and
//! the one list of what makes sense (`CoreSettings::problem`), which bounds every
//! duration and count so a value that passes the check can never overflow later (a
//! session's deadline is `now + idle_session_timeout`, which panics past `Instant`'s range).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::limits::Limits;
use crate::policy::Policy;
use crate::{Error, TlsIdentity};

/// Default listen address: every IPv4 interface, UDP and TCP port 4433.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 4433);
/// Default bound on the bytes the relay buffers per session and direction.
pub const DEFAULT_BUFFER_PER_DIRECTION: usize = 1 << 20;

/// A test-only observer of every byte the pump forwards (see [`RelayConfig::tap`]).
pub type Tap = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Default wait for a peer's TLS handshake and first message.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default silence after which a hop connection is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of sessions one client connection can always have open.
pub const DEFAULT_MAX_SESSIONS_PER_CONNECTION: u32 = 1024;
/// Default wait of a graceful shutdown for running sessions.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// Longest any of the relay's timeouts and deadlines may be: one day. Added to any
/// `Instant` a relay can see it never overflows, and past a day a timeout protects
/// nothing: a handshake, an idle connection or session, or a drain that takes longer is
/// not coming back.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Most of any count of hosts, sessions or connections: 2^20 (1,048,576). Each counts
/// at least one QUIC connection or TCP socket, and a process cannot hold more file
/// descriptors than the kernel's `fs.nr_open` ceiling (1,048,576 by default; the systemd
/// unit's `LimitNOFILE` is set to it), nor the memory for more than about a million
/// connections' state on the machines a relay runs on. A higher limit would never be the
/// one that holds, only one that overflows.
pub const MAX_COUNT: usize = 1 << 20;

/// Everything a relay needs to run: settings fixed for its lifetime, and the
/// [`Reloadable`] part that [`crate::Relay::reload`] replaces whole.
#[derive(Clone)]
pub struct RelayConfig {
    /// Where to listen: QUIC on UDP and TLS on TCP share this port number.
    pub listen: SocketAddr,
    /// Serve QUIC (UDP).
    pub quic: bool,
    /// Serve TLS over TCP, for networks that block UDP.
    pub tcp: bool,
    /// QUIC congestion controller for what the relay sends.
    pub congestion: ferry_link::Congestion,
    /// Most bytes buffered per session per direction; also each stream's QUIC receive
    /// window, so a sender that outruns its reader is slowed by flow control.
    pub buffer_per_direction: usize,
    /// Longest wait for a peer to finish the TLS handshake or send its first control
    /// message; slow peers are dropped.
    pub handshake_timeout: Duration,
    /// A connection silent for this long is closed (peers send keep-alives well within it).
    pub idle_timeout: Duration,
    /// Sessions (streams) one client connection can always have open at once; QUIC's limit
    /// is set up to a seventh higher so that quinn's batched credit never leaves fewer
    /// (`ferry_link::credit`).
    pub max_sessions_per_connection: u32,
    /// Where to serve `/metrics` and `/healthz` (`None`: no admin listener).
    pub admin: Option<SocketAddr>,
    /// How long a graceful shutdown waits for running sessions.
    pub shutdown_deadline: Duration,
    /// The certificate, access rules, tiers and limits: what a reload replaces.
    pub reloadable: Reloadable,
    /// This node's fleet, if it belongs to one (`crate::fleet`).
    pub fleet: Option<crate::fleet::FleetConfig>,
    /// Test hook: sees every byte the pump forwards. Used to prove the relay only ever
    /// handles ciphertext; never set by the binaries.
    #[doc(hidden)]
    pub tap: Option<Tap>,
}

/// The settings a running relay can take anew (SIGHUP): its certificate, access rules and
/// tiers, and limits. A reload replaces all of them at once; new connections, registrations
/// and sessions get the new ones, running sessions keep what they started with.
#[derive(Clone, Debug)]
pub struct Reloadable {
    /// The relay's certificate chain and key.
    pub identity: TlsIdentity,
    /// Access rules and bandwidth tiers.
    pub policy: Policy,
    /// Hard limits.
    pub limits: Limits,
}

impl Reloadable {
    /// `identity` with the default (open) policy and limits.
    pub fn new(identity: TlsIdentity) -> Self {
        Self { identity, policy: Policy::default(), limits: Limits::default() }
    }
}

impl RelayConfig {
    /// Defaults for everything but where to listen and which certificate to serve.
    pub fn new(listen: SocketAddr, identity: TlsIdentity) -> Self {
        Self {
            listen,
            quic: true,
            tcp: true,
            congestion: ferry_link::Congestion::default(),
            buffer_per_direction: DEFAULT_BUFFER_PER_DIRECTION,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_sessions_per_connection: DEFAULT_MAX_SESSIONS_PER_CONNECTION,
            admin: None,
            shutdown_deadline: DEFAULT_SHUTDOWN_DEADLINE,
            reloadable: Reloadable::new(identity),
            fleet: None,
            tap: None,
        }
    }

    /// Checks the settings make sense together; the error names the setting by its key in
    /// the config file (`deploy/relay.toml`).
    pub fn validate(&self) -> Result<(), Error> {
        match self.core().problem(&self.reloadable.limits) {
            Some((key, why)) => Err(Error::Setting { key, why }),
            None => Ok(()),
        }
    }

    /// The fixed settings the limits are checked against.
    pub(crate) fn core(&self) -> CoreSettings {
        CoreSettings {
            quic: self.quic,
            tcp: self.tcp,
            buffer_per_direction: self.buffer_per_direction as u64,
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            max_sessions_per_connection: self.max_sessions_per_connection,
            shutdown_deadline: self.shutdown_deadline,
        }
    }
}

/// The settings that must make sense together however the configuration was made: checked
/// by [`RelayConfig::validate`] for library users, by a reload against the running relay's
/// fixed settings, and by the config file's own check, which adds the line. One list, so
/// they cannot drift apart.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CoreSettings {
    pub(crate) quic: bool,
    pub(crate) tcp: bool,
    pub(crate) buffer_per_direction: u64,
    pub(crate) handshake_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_sessions_per_connection: u32,
    pub(crate) shutdown_deadline: Duration,
}

impl CoreSettings {
    /// The first setting that does not make sense with `limits`: its config-file key and
    /// what is wrong.
    pub(crate) fn problem(&self, l: &Limits) -> Option<(&'static str, String)> {
        if !self.quic && !self.tcp {
            return Some(("quic", "enable at least one of `quic` and `tcp`".into()));
        }
        if !(16 * 1024..=1 << 30).contains(&self.buffer_per_direction) {
            return Some(("buffer_per_direction", "must be between 16384 and 1073741824 bytes".into()));
        }
        // (key, value, whether 0 is allowed)
        for (key, duration, zero_ok) in [
            ("handshake_timeout_secs", self.handshake_timeout, false),
            ("idle_timeout_secs", self.idle_timeout, false),
            ("shutdown_deadline_secs", self.shutdown_deadline, true),
            ("idle_session_timeout_secs", l.idle_session_timeout, false),
        ] {
            if duration.is_zero() && !zero_ok {
                return Some((key, "must be at least 1".into()));
            }
            if duration > MAX_DURATION {
                return Some((key, format!("must be at most {} (a day)", MAX_DURATION.as_secs())));
            }
        }
        for (key, count) in [
            ("max_sessions_per_connection", self.max_sessions_per_connection as usize),
            ("max_hosts", l.max_hosts),
            ("max_sessions_per_host", l.max_sessions_per_host),
            ("max_pending_handshakes", l.max_pending_handshakes),
            ("max_pending_handshakes_per_source", l.max_pending_handshakes_per_source),
            ("max_connections", l.max_connections),
            ("max_connections_per_source", l.max_connections_per_source),
        ] {
            if count == 0 {
                return Some((key, "must be at least 1".into()));
            }
            if count > MAX_COUNT {
                return Some((key, format!("must be at most {MAX_COUNT} (more than a process can hold open)")));
            }
        }
        if l.buffer_budget < 2 * self.buffer_per_direction {
            return Some(("buffer_budget", "must hold at least one session (2 × buffer_per_direction)".into()));
        }
        None
    }
}

impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field("listen", &self.listen)
            .field("quic", &self.quic)
            .field("tcp", &self.tcp)
            .field("buffer_per_direction", &self.buffer_per_direction)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_sessions_per_connection", &self.max_sessions_per_connection)
            .field("limits", &self.reloadable.limits)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RelayConfig {
        let identity = TlsIdentity::self_signed(&["localhost".into()]).unwrap();
        RelayConfig::new("127.0.0.1:0".parse().unwrap(), identity)
    }

    #[test]
    fn validate_names_the_setting_at_fault() {
        assert!(config().validate().is_ok());
        let mut c = config();
        c.max_sessions_per_connection = 0;
        assert!(c.validate().unwrap_err().to_string().contains("`max_sessions_per_connection`"));
        let mut c = config();
        c.reloadable.limits.max_hosts = 0;
        assert!(c.validate().unwrap_err().to_string().contains("`max_hosts`: must be at least 1"));
        let mut c = config();
        c.buffer_per_direction = 1 << 20;
        c.reloadable.limits.buffer_budget = 1 << 20;
        assert!(c.validate().unwrap_err().to_string().contains("`buffer_budget`"));
    }

    /// Sets one setting of a config.
    type Set<T> = fn(&mut RelayConfig, T);

    /// Durations and counts that would overflow later are refused here, and the largest
    /// allowed ones pass (issue 13, finding 7).
    #[test]
    fn validate_bounds_every_duration_and_count() {
        let mut c = config();
        c.handshake_timeout = MAX_DURATION;
        c.idle_timeout = MAX_DURATION;
        c.shutdown_deadline = MAX_DURATION;
        c.reloadable.limits.idle_session_timeout = MAX_DURATION;
        c.reloadable.limits.max_hosts = MAX_COUNT;
        c.reloadable.limits.max_sessions_per_host = MAX_COUNT;
        c.reloadable.limits.max_pending_handshakes = MAX_COUNT;
        c.max_sessions_per_connection = MAX_COUNT as u32;
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        let mut zero_deadline = config();
        zero_deadline.shutdown_deadline = Duration::ZERO;
        assert!(zero_deadline.validate().is_ok(), "a zero drain cuts sessions at once");

        let over = MAX_DURATION + Duration::from_secs(1);
        let forever = Duration::from_secs(u64::MAX);
        let cases: [(&str, Set<Duration>); 4] = [
            ("handshake_timeout_secs", |c, d| c.handshake_timeout = d),
            ("idle_timeout_secs", |c, d| c.idle_timeout = d),
            ("shutdown_deadline_secs", |c, d| c.shutdown_deadline = d),
            ("idle_session_timeout_secs", |c, d| c.reloadable.limits.idle_session_timeout = d),
        ];
        for (key, set) in cases {
            for d in [over, forever] {
                let mut c = config();
                set(&mut c, d);
                let err = c.validate().unwrap_err().to_string();
                assert!(err.contains(&format!("`{key}`: must be at most 86400")), "{key} = {d:?}: {err}");
            }
        }
        let cases: [(&str, Set<usize>); 4] = [
            ("max_hosts", |c, n| c.reloadable.limits.max_hosts = n),
            ("max_sessions_per_host", |c, n| c.reloadable.limits.max_sessions_per_host = n),
            ("max_pending_handshakes", |c, n| c.reloadable.limits.max_pending_handshakes = n),
            ("max_sessions_per_connection", |c, n| c.max_sessions_per_connection = n as u32),
        ];
        for (key, set) in cases {
            for n in [MAX_COUNT + 1, u32::MAX as usize] {
                let mut c = config();
                set(&mut c, n);
                let err = c.validate().unwrap_err().to_string();
                assert!(err.contains(&format!("`{key}`: must be at most 1048576")), "{key} = {n}: {err}");
            }
        }
    }
}
