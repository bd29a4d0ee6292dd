//! What every task of one relay shares, and the one place a reload swaps.
//!
//! [`Shared`] holds the settings fixed at start ([`Fixed`]), the registry and budgets, the
//! draining flag, and the [`Live`] rules behind one lock: a reload builds a new `Live`
//! (certificate, access rules, tiers, limits and the TLS acceptor made from them) and swaps
//! it whole, so no task ever sees half of an old configuration and half of a new one. Tasks
//! take a snapshot (`live()`) when they start and keep it. Nothing here imports the modules
//! that use it (host, session, listeners), so the relay's modules form no loop.

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ferry_proto::RefuseReason;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::attach::PendingAttach;
use crate::budget::BufferBudget;
use crate::config::{Reloadable, Tap};
use crate::fleet::Fleet;
use crate::limits::{CappedCount, ConnectionSlot, CountedSlot, OpenConnections, RefusalNotes, SourceRate};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::{Error, RelayConfig, tls};

/// The settings tasks read that only a restart changes.
pub(crate) struct Fixed {
    pub(crate) handshake_timeout: Duration,
    pub(crate) buffer_per_direction: usize,
    pub(crate) tap: Option<Tap>,
}

/// The reloadable settings in force, with what is derived from them.
pub(crate) struct Live {
    pub(crate) rules: Reloadable,
    /// The TLS acceptor for TCP hops, made from `rules.identity`.
    pub(crate) tcp_tls: TlsAcceptor,
}

impl Live {
    pub(crate) fn new(rules: Reloadable) -> Result<Self, Error> {
        let tcp_tls = TlsAcceptor::from(Arc::new(tls::rustls_server_config(&rules.identity)?));
        Ok(Self { rules, tcp_tls })
    }
}

/// State every task of one relay shares.
pub(crate) struct Shared {
    pub(crate) fixed: Fixed,
    pub(crate) registry: Registry,
    pub(crate) pending: PendingAttach,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) budget: Arc<BufferBudget>,
    /// Set when a graceful shutdown starts: no new connections, registrations or sessions.
    pub(crate) draining: CancellationToken,
    live: RwLock<Arc<Live>>,
    rate: SourceRate,
    /// Connections in their handshake (`max_pending_handshakes`).
    handshakes: Arc<CappedCount>,
    connections: Arc<OpenConnections>,
    /// The budget of refusals explained to the peer (each costs a TLS handshake).
    pub(crate) refusal_notes: RefusalNotes,
    active_sessions: watch::Sender<usize>,
    /// This node's fleet, if it belongs to one.
    pub(crate) fleet: Option<Arc<Fleet>>,
}

/// What an admitted connection holds: its place among the pending handshakes (given back
/// when its handshake is over) and among the open connections (for as long as it is open).
pub(crate) struct Admitted {
    pub(crate) handshake: CountedSlot,
    pub(crate) connection: ConnectionSlot,
}

/// Counts a running session until dropped.
pub(crate) struct ActiveSession<'a>(&'a Shared);

impl Drop for ActiveSession<'_> {
    fn drop(&mut self) {
        self.0.active_sessions.send_modify(|n| *n -= 1);
        self.0.metrics.session_closed();
    }
}

impl Shared {
    /// The shared state for `config`, with its reloadable part in force.
    pub(crate) fn new(config: &RelayConfig) -> Result<Self, Error> {
        let limits = &config.reloadable.limits;
        let metrics = Arc::new(Metrics::default());
        metrics.set_buffer_budget(limits.buffer_budget);
        Ok(Self {
            fixed: Fixed {
                handshake_timeout: config.handshake_timeout,
                buffer_per_direction: config.buffer_per_direction,
                tap: config.tap.clone(),
            },
            registry: Registry::new(),
            pending: PendingAttach::default(),
            budget: BufferBudget::new(limits.buffer_budget),
            metrics,
            draining: CancellationToken::new(),
            live: RwLock::new(Arc::new(Live::new(config.reloadable.clone())?)),
            rate: SourceRate::default(),
            handshakes: Arc::default(),
            connections: Arc::default(),
            refusal_notes: RefusalNotes::default(),
            active_sessions: watch::Sender::new(0),
            fleet: config
                .fleet
                .clone()
                .map(|fleet| Fleet::new(fleet, &config.reloadable.identity, config.buffer_per_direction as u64))
                .transpose()?,
        })
    }

    /// The reloadable settings in force.
    pub(crate) fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Puts `live` in force for everything that starts from now on.
    pub(crate) fn replace_live(&self, live: Live) {
        self.budget.set_cap(live.rules.limits.buffer_budget);
        self.metrics.set_buffer_budget(live.rules.limits.buffer_budget);
        *self.live.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(live);
    }

    /// Marks a session as running (for metrics and the shutdown drain).
    pub(crate) fn session_started(&self) -> ActiveSession<'_> {
        self.active_sessions.send_modify(|n| *n += 1);
        self.metrics.session_opened();
        ActiveSession(self)
    }

    /// The number of running sessions, to wait on.
    pub(crate) fn watch_active_sessions(&self) -> watch::Receiver<usize> {
        self.active_sessions.subscribe()
    }

    /// Whether a new connection from `ip` may start its handshake: under the per-source
    /// rate, the connection caps (overall and per source) and the pending-handshake cap.
    /// A refusal is counted here, by its reason; the address is used here and forgotten
    /// (or kept in memory while the connection is open, for the per-source cap).
    pub(crate) fn admit_connection(&self, ip: IpAddr) -> Result<Admitted, RefuseReason> {
        let live = self.live();
        let limits = &live.rules.limits;
        let admitted = self.admit(ip, limits);
        if let Err(reason) = admitted {
            if reason == RefuseReason::RateLimited {
                self.metrics.connections_rate_limited();
            }
            self.metrics.refused(reason);
        }
        admitted
    }

    fn admit(&self, ip: IpAddr, limits: &crate::limits::Limits) -> Result<Admitted, RefuseReason> {
        if !self.rate.allow(ip, limits.connections_per_minute_per_source) {
            return Err(RefuseReason::RateLimited);
        }
        let connection = self.connections.try_open(ip, limits.max_connections, limits.max_connections_per_source)?;
        let handshake = self.handshakes.try_take(limits.max_pending_handshakes).ok_or(RefuseReason::RelayBusy)?;
        Ok(Admitted { handshake, connection })
    }
}
