//! What every task of one relay shares, and the one place a reload swaps.
//!
//! [`Shared`] holds the settings fixed at start ([`Fixed`]), the registry and budgets, the
//! draining flag, the quota accounts, and the [`Live`] rules behind one lock: a reload
//! builds a new `Live` (certificate, access rules, tiers, limits and the TLS acceptor made
//! from them) and swaps it whole, so no task ever sees half of an old configuration and half of a new one. Tasks
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
use crate::limits::{
    CappedCount, ConnectionSlot, CountedSlot, Limits, OpenConnections, PerSource, RefusalNotes, SourceKey, SourceRate,
    SourceSlot,
};
use crate::metrics::Metrics;
use crate::quota_usage::Quotas;
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
    /// Connections in their handshake per source whose address is validated (a QUIC
    /// connection that came back with a Retry token, or TCP): the per-source cap
    /// `max_pending_handshakes_per_source` is enforced on these only, so a forged
    /// source cannot use up a real one's places.
    handshakes_validated: Arc<PerSource>,
    /// The same for QUIC connections whose address is not validated: never refused by
    /// it, only sent a Retry once their source has its share (see [`Shared::admit_quic`]).
    handshakes_unvalidated: Arc<PerSource>,
    connections: Arc<OpenConnections>,
    /// The budget of refusals explained to the peer (each costs a TLS handshake).
    pub(crate) refusal_notes: RefusalNotes,
    active_sessions: watch::Sender<usize>,
    /// This node's fleet, if it belongs to one.
    pub(crate) fleet: Option<Arc<Fleet>>,
    /// The quota accounts of the hosts here and their usage (through the fleet's Redis,
    /// or in memory).
    pub(crate) quotas: Arc<Quotas>,
}

/// What an admitted connection holds: its place among the pending handshakes (given back
/// when its handshake is over) and among the open connections (for as long as it is open).
pub(crate) struct Admitted {
    pub(crate) handshake: PendingHandshake,
    pub(crate) connection: ConnectionSlot,
}

/// A connection's places among the pending handshakes, overall and for its source; given
/// back when dropped.
pub(crate) struct PendingHandshake {
    _overall: CountedSlot,
    _source: SourceSlot,
}

/// What to do with a new QUIC connection attempt.
pub(crate) enum QuicAdmission {
    /// Go on with its handshake.
    Admitted(Admitted),
    /// Send it a Retry first, so its next attempt proves it owns its address.
    Retry,
    /// Turn it away, for this reason.
    Refused(RefuseReason),
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
        let fleet = config
            .fleet
            .clone()
            .map(|fleet| Fleet::new(fleet, &config.reloadable.identity, config.buffer_per_direction as u64))
            .transpose()?;
        Ok(Self {
            fixed: Fixed {
                handshake_timeout: config.handshake_timeout,
                buffer_per_direction: config.buffer_per_direction,
                tap: config.tap.clone(),
            },
            registry: Registry::new(),
            pending: PendingAttach::default(),
            budget: BufferBudget::new(limits.buffer_budget),
            quotas: Arc::new(Quotas::new(fleet.clone(), metrics.clone())),
            metrics,
            draining: CancellationToken::new(),
            live: RwLock::new(Arc::new(Live::new(config.reloadable.clone())?)),
            rate: SourceRate::default(),
            handshakes: Arc::default(),
            handshakes_validated: Arc::default(),
            handshakes_unvalidated: Arc::default(),
            connections: Arc::default(),
            refusal_notes: RefusalNotes::default(),
            active_sessions: watch::Sender::new(0),
            fleet,
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

    /// The number of open hop connections, to wait on (the heap trim watches it).
    pub(crate) fn watch_open_connections(&self) -> watch::Receiver<usize> {
        self.connections.watch()
    }

    /// Whether a new TCP connection from `ip` may start its handshake: under the
    /// per-source rate, the connection caps (overall and per source) and the
    /// pending-handshake caps (overall and per source; TCP's own handshake has proved
    /// the address). A refusal is counted here, by its reason; the address is used here
    /// and forgotten (or kept in memory while the connection is open, for the per-source
    /// caps).
    pub(crate) fn admit_tcp(&self, ip: IpAddr) -> Result<Admitted, RefuseReason> {
        let live = self.live();
        let limits = &live.rules.limits;
        let source = SourceKey::of(ip);
        let admitted = match self.handshakes_validated.try_take(source, limits.max_pending_handshakes_per_source) {
            Some(pending) => self.admit(source, limits, pending),
            None => Err(RefuseReason::RateLimited),
        };
        self.count_refusal(admitted)
    }

    /// What to do with a new QUIC connection attempt from `ip`, whose address QUIC has
    /// `validated` (it came back with a Retry token) or not.
    ///
    /// An attempt whose address is not validated is sent a Retry (which costs the relay
    /// one stateless packet and holds nothing) once half of `max_pending_handshakes` are
    /// taken, or once its source holds `max_pending_handshakes_per_source` unvalidated
    /// places: a flood from forged addresses, which cannot answer a Retry, then holds at
    /// most half of the places for the handshake timeout, and the other half is left to
    /// peers that proved their address. Below that, honest peers pay no extra round trip.
    /// The per-source cap refuses only validated attempts, so forging someone's address
    /// can cost them a round trip but never a refusal.
    pub(crate) fn admit_quic(&self, ip: IpAddr, validated: bool) -> QuicAdmission {
        let live = self.live();
        let limits = &live.rules.limits;
        let source = SourceKey::of(ip);
        let per_source = limits.max_pending_handshakes_per_source;
        let admitted = if validated {
            match self.handshakes_validated.try_take(source, per_source) {
                Some(pending) => self.admit(source, limits, pending),
                None => Err(RefuseReason::RateLimited),
            }
        } else {
            let crowded = self.handshakes.taken() >= limits.max_pending_handshakes / 2;
            match (!crowded).then(|| self.handshakes_unvalidated.try_take(source, per_source)).flatten() {
                Some(pending) => self.admit(source, limits, pending),
                None => {
                    self.metrics.quic_retry();
                    return QuicAdmission::Retry;
                }
            }
        };
        match self.count_refusal(admitted) {
            Ok(admitted) => QuicAdmission::Admitted(admitted),
            Err(reason) => QuicAdmission::Refused(reason),
        }
    }

    /// Counts a refusal by its reason, and passes the outcome on.
    fn count_refusal(&self, admitted: Result<Admitted, RefuseReason>) -> Result<Admitted, RefuseReason> {
        if let Err(reason) = admitted {
            if reason == RefuseReason::RateLimited {
                self.metrics.connections_rate_limited();
            }
            self.metrics.refused(reason);
        }
        admitted
    }

    /// The checks every admitted connection passes, once it has its source's pending place.
    fn admit(&self, source: SourceKey, limits: &Limits, pending: SourceSlot) -> Result<Admitted, RefuseReason> {
        if !self.rate.allow(source, limits.connections_per_minute_per_source) {
            return Err(RefuseReason::RateLimited);
        }
        let connection =
            self.connections.try_open(source, limits.max_connections, limits.max_connections_per_source)?;
        let overall = self.handshakes.try_take(limits.max_pending_handshakes).ok_or(RefuseReason::RelayBusy)?;
        Ok(Admitted { handshake: PendingHandshake { _overall: overall, _source: pending }, connection })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TlsIdentity;

    /// Shared state with `pending` places for handshakes, `per_source` each.
    fn shared(pending: usize, per_source: usize) -> Shared {
        let identity = TlsIdentity::self_signed(&["localhost".into()]).unwrap();
        let mut config = RelayConfig::new("127.0.0.1:0".parse().unwrap(), identity);
        let limits = &mut config.reloadable.limits;
        limits.max_pending_handshakes = pending;
        limits.max_pending_handshakes_per_source = per_source;
        limits.connections_per_minute_per_source = 0;
        Shared::new(&config).unwrap()
    }

    fn admitted(admission: QuicAdmission) -> Option<Admitted> {
        match admission {
            QuicAdmission::Admitted(admitted) => Some(admitted),
            _ => None,
        }
    }

    #[test]
    fn unvalidated_attempts_get_a_retry_once_half_the_places_are_taken() {
        let shared = shared(8, 8);
        let forged = |n: u8| IpAddr::from([10, 0, 0, n]);
        let held: Vec<_> = (0..4).map(|n| admitted(shared.admit_quic(forged(n), false)).unwrap()).collect();
        assert!(matches!(shared.admit_quic(forged(9), false), QuicAdmission::Retry), "half are taken");
        // Validated attempts take the other half, and then the relay is full.
        let honest = IpAddr::from([192, 0, 2, 1]);
        let validated: Vec<_> = (0..4).map(|_| admitted(shared.admit_quic(honest, true)).unwrap()).collect();
        assert!(matches!(shared.admit_quic(honest, true), QuicAdmission::Refused(RefuseReason::RelayBusy)));
        drop((held, validated));
        assert!(admitted(shared.admit_quic(forged(9), false)).is_some(), "places come back");
    }

    #[test]
    fn the_per_source_cap_refuses_only_validated_sources() {
        let shared = shared(64, 2);
        let source = IpAddr::from([192, 0, 2, 1]);
        // Someone forging this address takes its two unvalidated places ...
        let forged: Vec<_> = (0..2).map(|_| admitted(shared.admit_quic(source, false)).unwrap()).collect();
        // ... and the next unvalidated attempt from it is asked to prove its address,
        assert!(matches!(shared.admit_quic(source, false), QuicAdmission::Retry));
        // which the real owner does: its places are its own.
        let own: Vec<_> = (0..2).map(|_| admitted(shared.admit_quic(source, true)).unwrap()).collect();
        assert!(matches!(shared.admit_quic(source, true), QuicAdmission::Refused(RefuseReason::RateLimited)));
        // Another address of the same IPv6 /64 is the same source; TCP counts as validated.
        assert!(matches!(shared.admit_tcp(source), Err(RefuseReason::RateLimited)));
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        let first = shared.admit_tcp(v6(1)).unwrap();
        let second = shared.admit_tcp(v6(2)).unwrap();
        assert!(matches!(shared.admit_tcp(v6(3)), Err(RefuseReason::RateLimited)));
        drop((forged, own, first, second));
    }
}
