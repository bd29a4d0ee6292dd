//! The relay as a running thing: listener, accept loop, per-connection dispatch, shutdown.
//!
//! Structured concurrency: every task is spawned on one `TaskTracker` and watches one
//! `CancellationToken`, so [`Relay::shutdown`] stops accepting, ends every session and
//! waits for all tasks. Handshakes run in their own tasks, never on the accept loop.
//!
//! Every stream a peer opens starts with one control message: `Register` makes the
//! connection a host's (see `host.rs`), `Connect` makes the stream a session (see
//! `session.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_proto::codes::{CLOSE_PROTOCOL, CLOSE_SHUTDOWN};
use ferry_proto::{CertPin, Message};
use quinn::{RecvStream, SendStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::control::{ControlError, ControlReader};
use crate::registry::Registry;
use crate::{Error, RelayConfig, TlsIdentity, host, session, tls};

/// State every task of one relay shares.
pub(crate) struct Shared {
    pub(crate) config: RelayConfig,
    pub(crate) registry: Registry,
}

/// A running relay. Dropping it without [`Relay::shutdown`] aborts nothing: call shutdown.
pub struct Relay {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    local_addr: SocketAddr,
    pin: CertPin,
}

impl Relay {
    /// Binds the listener and starts serving.
    pub async fn spawn(config: RelayConfig) -> Result<Self, Error> {
        config.validate()?;
        let pin = config.identity.pin()?;
        let server_config = tls::quic_server_config(&config)?;
        let endpoint = quinn::Endpoint::server(server_config, config.listen).map_err(|source| {
            Error::Bind {
                addr: config.listen,
                source,
            }
        })?;
        let local_addr = endpoint.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            config,
            registry: Registry::new(),
        });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(accept_loop(
            endpoint.clone(),
            shared.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
        Ok(Self {
            endpoint,
            shared,
            cancel,
            tracker,
            local_addr,
            pin,
        })
    }

    /// The address the relay listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The pin of the certificate the relay serves.
    pub fn pin(&self) -> CertPin {
        self.pin
    }

    /// Serves `identity` to new connections from now on; running connections and their
    /// sessions keep the certificate they started with (certificate renewal, SIGHUP).
    pub fn set_identity(&self, identity: TlsIdentity) -> Result<CertPin, Error> {
        let mut config = self.shared.config.clone();
        config.identity = identity;
        let pin = config.identity.pin()?;
        self.endpoint.set_server_config(Some(tls::quic_server_config(&config)?));
        Ok(pin)
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

    /// Stops accepting, tells hosts the relay is going away, ends every session and waits
    /// (at most `deadline`) for all tasks to finish.
    pub async fn shutdown(self, deadline: Duration) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            debug!("shutdown deadline passed with tasks still running");
        }
        self.endpoint
            .close(CLOSE_SHUTDOWN.into(), b"relay shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let incoming = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { return };
        tracker.spawn(serve_connection(
            incoming,
            shared.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
    }
}

async fn serve_connection(
    incoming: quinn::Incoming,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let conn = match tokio::time::timeout(shared.config.handshake_timeout, async {
        incoming.accept()?.await
    })
    .await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            debug!("handshake timed out");
            return;
        }
    };
    loop {
        let stream = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                conn.close(CLOSE_SHUTDOWN.into(), b"relay shutting down");
                return;
            }
            stream = conn.accept_bi() => stream,
        };
        let Ok((send, recv)) = stream else { return };
        tracker.spawn(serve_stream(
            shared.clone(),
            conn.clone(),
            send,
            recv,
            cancel.clone(),
        ));
    }
}

/// Reads a stream's first message and hands it to the host or session logic.
async fn serve_stream(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    send: SendStream,
    recv: RecvStream,
    cancel: CancellationToken,
) {
    let mut reader = ControlReader::new(recv);
    let first = match reader.read(shared.config.handshake_timeout).await {
        Ok(message) => message,
        Err(e) => {
            debug!(error = %e, "stream ended before its first message");
            return;
        }
    };
    let outcome = match first {
        Message::Register {
            host_id,
            token: _,
            handshake,
        } => host::serve(shared, conn, send, reader, host_id, handshake, cancel).await,
        Message::Connect { host_id } => session::serve(shared, send, reader, host_id, cancel).await,
        _ => {
            conn.close(CLOSE_PROTOCOL.into(), b"unexpected first message");
            Err(ControlError::Proto(ferry_proto::Error::Malformed(
                "unexpected first message",
            )))
        }
    };
    if let Err(e) = outcome {
        debug!(error = %e, "stream ended with an error");
    }
}
