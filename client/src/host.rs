//! The host: stays registered at its relays and forwards each session to a local service.
//!
//! One task per relay keeps a registration alive: connect, prove the host key (Noise `XN`
//! bound to the hop), then accept the streams the relay opens, one per session. When the
//! relay goes away the task reconnects with jittered exponential backoff. Each session
//! runs the host side of the end-to-end handshake, checks the allow-list, connects to the
//! local service and bridges.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferry_proto::codes::{
    CLOSE_DONE, RESET_HANDSHAKE_FAILED, RESET_NOT_ALLOWED, RESET_SERVICE_UNREACHABLE,
};
use ferry_proto::e2e::HostHandshake;
use ferry_proto::e2e::handshake::MAX_HANDSHAKE_LEN;
use ferry_proto::e2e::record::put_frame;
use ferry_proto::message::RegistrationToken;
use ferry_proto::registration::HostProver;
use ferry_proto::{EXPORTER_LEN, Message, PublicKey, REGISTRATION_EXPORTER_LABEL, RelayAddr};
use quinn::{RecvStream, SendStream, VarInt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::framed::FramedRecv;
use crate::hop::{self, HopOptions};
use crate::{Error, HostIdentity, Session};

/// What a host needs to serve.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The host's key and ticket secret.
    pub identity: HostIdentity,
    /// Relays to stay registered at.
    pub relays: Vec<RelayAddr>,
    /// The local service each session is forwarded to (`host:port`).
    pub forward: String,
    /// Hop tuning.
    pub options: HopOptions,
    /// Only these client keys may open sessions (`None`: anyone holding the ticket).
    pub allow: Option<Vec<PublicKey>>,
    /// Registration token for relays in closed mode.
    pub token: Option<String>,
    /// Longest wait for each step of a handshake.
    pub handshake_timeout: Duration,
}

impl HostConfig {
    /// Defaults for everything but identity, relays and the forward target.
    pub fn new(identity: HostIdentity, relays: Vec<RelayAddr>, forward: String) -> Self {
        Self {
            identity,
            relays,
            forward,
            options: HopOptions::host(),
            allow: None,
            token: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Registration state, per relay in the order of [`HostConfig::relays`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostStatus {
    /// Whether each relay currently has this host registered.
    pub registered: Vec<bool>,
    /// Total successful registrations so far (goes up on every re-registration).
    pub registrations: u64,
    /// The last problem, worded for a person.
    pub last_error: Option<String>,
}

/// A running host. Call [`Host::shutdown`] to stop it.
pub struct Host {
    cancel: CancellationToken,
    tracker: TaskTracker,
    status: watch::Receiver<HostStatus>,
}

impl Host {
    /// Starts serving in the background.
    pub fn spawn(config: HostConfig) -> Self {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let initial = HostStatus {
            registered: vec![false; config.relays.len()],
            ..Default::default()
        };
        let (status_tx, status) = watch::channel(initial);
        let status_tx = Arc::new(status_tx);
        let config = Arc::new(config);
        for index in 0..config.relays.len() {
            tracker.spawn(stay_registered(
                config.clone(),
                index,
                status_tx.clone(),
                cancel.clone(),
                tracker.clone(),
            ));
        }
        Self {
            cancel,
            tracker,
            status,
        }
    }

    /// Registration status; await `changed()` on it to follow registrations.
    pub fn status(&self) -> watch::Receiver<HostStatus> {
        self.status.clone()
    }

    /// Closes the relay connections and ends every session.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

async fn stay_registered(
    config: Arc<HostConfig>,
    index: usize,
    status: Arc<watch::Sender<HostStatus>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let relay = &config.relays[index];
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    while !cancel.is_cancelled() {
        let attempt = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            attempt = register(&config, relay) => attempt,
        };
        match attempt {
            Ok((conn, control)) => {
                backoff.reset();
                status.send_modify(|s| {
                    s.registered[index] = true;
                    s.registrations += 1;
                });
                let ended = serve(&config, &conn, control, &cancel, &tracker).await;
                status.send_modify(|s| {
                    s.registered[index] = false;
                    s.last_error = Some(ended.clone());
                });
                debug!(reason = %ended, "registration ended");
            }
            Err(e) => {
                warn!("relay {}: {e}", relay.addr);
                status.send_modify(|s| s.last_error = Some(e.to_string()));
            }
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// The control stream of a registration. Both halves stay open for as long as the host
/// wants to stay registered: the relay takes a finished stream as an unregistration.
struct Control {
    _send: SendStream,
    recv: FramedRecv,
}

/// Connects to `relay` and proves the host key; returns the connection and the control
/// stream (on which the relay says when it is going away).
async fn register(
    config: &HostConfig,
    relay: &RelayAddr,
) -> Result<(quinn::Connection, Control), Error> {
    let conn = hop::connect(relay, &config.options).await?;
    let lost = |e: &dyn std::fmt::Display| Error::Cut(format!("registration: {e}"));
    let (mut send, recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
    let mut exporter = [0u8; EXPORTER_LEN];
    conn.export_keying_material(&mut exporter, REGISTRATION_EXPORTER_LABEL, b"")
        .map_err(|_| Error::Cut("the hop cannot export keying material".into()))?;
    let (prover, hello) = HostProver::start(&config.identity.key, &exporter)?;
    let register = Message::Register {
        host_id: config.identity.key.public(),
        token: config.token.clone().map(RegistrationToken),
        handshake: hello,
    };
    send.write_all(&register.to_vec()?)
        .await
        .map_err(|e| lost(&e))?;
    let mut control = FramedRecv::new(recv);
    let challenge = match control.message(config.handshake_timeout).await? {
        Message::Challenge { handshake } => handshake,
        Message::Refused { reason } => return Err(Error::Refused(reason)),
        _ => {
            return Err(Error::Cut(
                "the relay answered the registration with an unexpected message".into(),
            ));
        }
    };
    let proof = prover.answer(&challenge)?;
    send.write_all(&Message::Proof { handshake: proof }.to_vec()?)
        .await
        .map_err(|e| lost(&e))?;
    match control.message(config.handshake_timeout).await? {
        Message::Registered => Ok((
            conn,
            Control {
                _send: send,
                recv: control,
            },
        )),
        Message::Refused { reason } => Err(Error::Refused(reason)),
        _ => Err(Error::Cut(
            "the relay answered the proof with an unexpected message".into(),
        )),
    }
}

/// Accepts session streams until the registration ends; returns why it ended.
async fn serve(
    config: &Arc<HostConfig>,
    conn: &quinn::Connection,
    mut control: Control,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> String {
    let forever = Duration::from_secs(u64::from(u32::MAX));
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                conn.close(CLOSE_DONE.into(), b"host shutting down");
                return "the host is shutting down".into();
            }
            message = control.recv.message(forever) => {
                return match message {
                    Ok(Message::GoingAway) => "the relay is going away".into(),
                    Ok(_) => "the relay sent an unexpected control message".into(),
                    Err(e) => e.to_string(),
                };
            }
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let config = config.clone();
                    tracker.spawn(async move {
                        if let Err(e) = serve_session(&config, send, recv).await {
                            debug!("session ended: {e}");
                        }
                    });
                }
                Err(e) => return format!("the relay connection ended ({e})"),
            },
        }
    }
}

/// One session: handshake, allow-list, local connection, bridge.
async fn serve_session(
    config: &HostConfig,
    mut send: SendStream,
    recv: RecvStream,
) -> Result<(), Error> {
    let mut recv = FramedRecv::new(recv);
    match recv.message(config.handshake_timeout).await? {
        Message::Incoming { .. } => {}
        _ => {
            return Err(Error::Cut(
                "a session stream did not start with Incoming".into(),
            ));
        }
    }
    let hello = recv
        .frame(MAX_HANDSHAKE_LEN, config.handshake_timeout)
        .await?;
    let reset = |send: &mut SendStream, code: u32| {
        let _ = send.reset(VarInt::from_u32(code));
    };
    let handshake = match HostHandshake::read(&config.identity.key, &config.identity.secret, &hello)
    {
        Ok(h) => h,
        Err(e) => {
            reset(&mut send, RESET_HANDSHAKE_FAILED);
            return Err(e.into());
        }
    };
    if let Some(allow) = &config.allow {
        if !allow.contains(&handshake.client_key()) {
            reset(&mut send, RESET_NOT_ALLOWED);
            return Err(Error::HostRefused("client key not on the allow-list"));
        }
    }
    let local = match tokio::time::timeout(
        config.handshake_timeout,
        TcpStream::connect(&config.forward),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            reset(&mut send, RESET_SERVICE_UNREACHABLE);
            return Err(Error::Io(e));
        }
        Err(_) => {
            reset(&mut send, RESET_SERVICE_UNREACHABLE);
            return Err(Error::Timeout(
                "the local service did not accept the connection",
            ));
        }
    };
    local.set_nodelay(true)?;
    let (answer, sealer, opener) = handshake.accept()?;
    let mut out = BytesMut::new();
    put_frame(&mut out, &answer)?;
    send.write_chunk(out.freeze())
        .await
        .map_err(|e| Error::Cut(e.to_string()))?;
    let (local_read, local_write) = local.into_split();
    Session {
        send,
        recv,
        sealer,
        opener,
    }
    .bridge(local_read, local_write)
    .await?;
    Ok(())
}
