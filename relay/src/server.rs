//! The relay as a running thing: [`Relay`], the handle that starts, reloads and stops it.
//!
//! One port number serves both hops: QUIC on UDP and TLS on TCP (`listen.rs`). Structured
//! concurrency: every task is spawned on one `TaskTracker` and watches one
//! `CancellationToken`, so [`Relay::shutdown`] stops accepting, ends every session and waits
//! for all tasks; dropping a `Relay` without it cancels the same token (a drop guard), so no
//! task outlives its handle either way.

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ferry_proto::CertPin;
use ferry_proto::codes::CLOSE_SHUTDOWN;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::config::{CoreSettings, Reloadable};
use crate::listen::{bind_both, enlarge_udp_buffers, quic_accept_loop, tcp_accept_loop};
use crate::state::{Live, Shared};
use crate::{Error, RelayConfig, admin, tls};

/// A running relay. Call [`Relay::shutdown`] to stop it gracefully; dropping it stops it
/// at once.
pub struct Relay {
    endpoint: Option<quinn::Endpoint>,
    admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    local_addr: SocketAddr,
    /// The fixed settings a reload is checked against.
    core: CoreSettings,
    /// The QUIC transport settings (fixed), for server configs made on reload.
    quic_transport: Arc<quinn::TransportConfig>,
    pin: RwLock<CertPin>,
    /// Cancels every task when the handle is dropped without `shutdown`.
    _stop_on_drop: DropGuard,
}

impl Relay {
    /// Binds the listeners and starts serving.
    pub async fn spawn(config: RelayConfig) -> Result<Self, Error> {
        config.validate()?;
        let pin = config.reloadable.identity.pin()?;
        let (udp, tcp) = bind_both(config.listen, config.quic, config.tcp)?;
        let bind_err = |source| Error::Bind { addr: config.listen, source };
        let quic_transport = Arc::new(tls::transport_config(&config)?);
        let endpoint = match udp {
            Some(socket) => Some({
                enlarge_udp_buffers(&socket);
                let server = tls::quic_server_config(&config.reloadable.identity, quic_transport.clone())?;
                ferry_link::udp::endpoint(socket, Some(server)).map_err(bind_err)?
            }),
            None => None,
        };
        let tcp = match tcp {
            Some(listener) => {
                listener.set_nonblocking(true).map_err(bind_err)?;
                Some(TcpListener::from_std(listener).map_err(bind_err)?)
            }
            None => None,
        };
        let local_addr = match (&endpoint, &tcp) {
            (Some(e), _) => e.local_addr(),
            (None, Some(l)) => l.local_addr(),
            // `validate` refused a relay with neither.
            (None, None) => {
                return Err(Error::Setting { key: "quic", why: "enable at least one of QUIC and TCP".into() });
            }
        }
        .map_err(bind_err)?;

        let admin = match config.admin {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?),
            None => None,
        };
        let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose().map_err(bind_err)?;

        let shared = Arc::new(Shared::new(&config)?);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        if let Some(listener) = admin {
            let state = shared.clone();
            let health = move || {
                if state.draining.is_cancelled() {
                    admin::Health::Draining
                } else if state.fleet.as_ref().is_some_and(|fleet| !fleet.reachable()) {
                    admin::Health::Degraded
                } else {
                    admin::Health::Serving
                }
            };
            let quotas = shared.quotas.clone();
            let usage = move || quotas.report();
            tracker.spawn(admin::serve(listener, shared.metrics.clone(), health, usage, cancel.clone()));
        }
        tracker.spawn(shared.quotas.clone().run(cancel.clone()));
        if let Some(fleet) = &shared.fleet {
            let state = shared.clone();
            tracker.spawn(fleet.clone().heartbeat(move || state.registry.host_ids(), cancel.clone()));
        }
        if let Some(endpoint) = &endpoint {
            tracker.spawn(quic_accept_loop(endpoint.clone(), shared.clone(), cancel.clone(), tracker.clone()));
        }
        if let Some(listener) = tcp {
            tracker.spawn(tcp_accept_loop(listener, shared.clone(), cancel.clone(), tracker.clone()));
        }
        Ok(Self {
            endpoint,
            admin_addr,
            shared,
            _stop_on_drop: cancel.clone().drop_guard(),
            cancel,
            tracker,
            local_addr,
            core: config.core(),
            quic_transport,
            pin: RwLock::new(pin),
        })
    }

    /// The address the relay listens on (with the real port when 0 was asked for); QUIC
    /// and TCP share the port number.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics` and `/healthz` are served, if anywhere.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The pin of the certificate the relay serves to new connections.
    pub fn pin(&self) -> CertPin {
        *self.pin.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reloadable settings in force.
    pub fn reloadable(&self) -> Reloadable {
        self.shared.live().rules.clone()
    }

    /// Puts new reloadable settings in force, all at once (certificate renewal, SIGHUP):
    /// new connections, registrations and sessions get them; running connections and
    /// sessions keep the certificate and rules they started with. Settings that do not make
    /// sense with the relay's fixed ones are refused and the running ones kept. Returns the
    /// pin of the certificate now served.
    pub fn reload(&self, rules: Reloadable) -> Result<CertPin, Error> {
        if let Some((key, why)) = self.core.problem(&rules.limits) {
            return Err(Error::Setting { key, why });
        }
        let pin = rules.identity.pin()?;
        let quic = match &self.endpoint {
            Some(_) => Some(tls::quic_server_config(&rules.identity, self.quic_transport.clone())?),
            None => None,
        };
        let live = Live::new(rules)?;
        if let (Some(endpoint), Some(quic)) = (&self.endpoint, quic) {
            endpoint.set_server_config(Some(quic));
        }
        self.shared.replace_live(live);
        *self.pin.write().unwrap_or_else(PoisonError::into_inner) = pin;
        Ok(pin)
    }

    /// The number of running sessions; await `wait_for` on it instead of polling.
    pub fn active_sessions(&self) -> watch::Receiver<usize> {
        self.shared.watch_active_sessions()
    }

    /// The number of hop connections open now (QUIC and TCP, handshaking ones included), as
    /// it changes: the heap trim waits on it beside [`Relay::active_sessions`].
    pub fn open_connections(&self) -> watch::Receiver<usize> {
        self.shared.watch_open_connections()
    }

    /// The metrics in Prometheus text format (what `/metrics` serves).
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render()
    }

    /// How many hosts are registered right now.
    pub fn registered_hosts(&self) -> usize {
        self.shared.registry.len()
    }

    /// A counter that increases with every successful host registration; tests and
    /// supervisors await it instead of polling.
    pub fn registrations(&self) -> watch::Receiver<u64> {
        self.shared.registry.watch_registrations()
    }

    /// How many hosts are registered, as it changes (the awaitable twin of
    /// [`Relay::registered_hosts`]): tests await an unregistration on it.
    pub fn registered_hosts_watch(&self) -> watch::Receiver<usize> {
        self.shared.registry.watch_count()
    }

    /// Graceful shutdown: stops accepting connections, registrations and sessions, tells
    /// hosts the relay is going away, lets running sessions finish for up to `deadline`,
    /// then ends whatever is left (peers see "the relay is shutting down") and waits for
    /// every task.
    pub async fn shutdown(self, deadline: Duration) {
        self.shared.draining.cancel();
        let mut active = self.shared.watch_active_sessions();
        if tokio::time::timeout(deadline, active.wait_for(|n| *n == 0)).await.is_err() {
            debug!("shutdown deadline passed with sessions running; ending them");
        }
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await.is_err() {
            debug!("tasks still running after the shutdown deadline");
        }
        if let Some(endpoint) = &self.endpoint {
            endpoint.close(CLOSE_SHUTDOWN.into(), b"relay shutting down");
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Without `shutdown`, connections would linger until their idle timeout.
        if let Some(endpoint) = &self.endpoint {
            endpoint.close(CLOSE_SHUTDOWN.into(), b"relay stopped");
        }
    }
}
