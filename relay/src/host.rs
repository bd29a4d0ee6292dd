//! A host's registration and the life of its control stream.
//!
//! The host proves it holds the key behind its host id (Noise `XN` bound to this hop's
//! TLS exporter, see `ferry_proto::registration`), then stays registered for as long as
//! its control stream lives. Sessions reach a QUIC host as new streams the relay opens on
//! its connection; a TCP host is told `Incoming { session }` here and dials back (see
//! `attach.rs`).

use std::sync::Arc;

use ferry_link::{Framed, FramedError, LinkSend};
use ferry_proto::registration::RelayVerifier;
use ferry_proto::{EXPORTER_LEN, HostId, Message, RefuseReason};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::control;
use crate::registry::{HostHandle, HostLink};
use crate::server::Shared;

/// Most session announcements queued for one TCP host's control stream.
const INCOMING_QUEUE: usize = 64;

/// The host's hop, as far as registration cares.
pub(crate) enum HostHop {
    /// A QUIC connection (sessions are streams the relay opens on it).
    Quic(quinn::Connection),
    /// A TLS connection (sessions are announced on it and attached by the host).
    Tcp,
}

/// What the host sent in `Register`.
pub(crate) struct Registration {
    pub(crate) host_id: HostId,
    pub(crate) token: Option<String>,
    pub(crate) hello: Vec<u8>,
    /// This hop's TLS exporter value, which the proof must be bound to.
    pub(crate) exporter: [u8; EXPORTER_LEN],
}

/// Runs one host's registration until the host or the relay goes away.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    hop: HostHop,
    mut send: LinkSend,
    mut control: Framed,
    registration: Registration,
    cancel: CancellationToken,
) -> Result<(), FramedError> {
    let Registration { host_id, token, hello, exporter } = registration;
    let metrics = &shared.metrics;
    let live = shared.live();
    if shared.draining.is_cancelled() {
        return control::refuse(&mut send, RefuseReason::ShuttingDown, metrics).await;
    }
    // Access rules first: a host that may not register costs no Diffie-Hellman.
    let tier = match live.policy.admit(&host_id, token.as_deref()) {
        Ok(tier) => tier,
        Err(reason) => return control::refuse(&mut send, reason, metrics).await,
    };
    if shared.registry.len() >= live.limits.max_hosts && !shared.registry.contains(&host_id) {
        return control::refuse(&mut send, RefuseReason::RelayBusy, metrics).await;
    }
    let Ok((verifier, challenge)) = RelayVerifier::start(&exporter, &hello) else {
        return control::refuse(&mut send, RefuseReason::BadProof, metrics).await;
    };
    send.send_message(&Message::Challenge { handshake: challenge }).await?;
    let proof = match control.message(shared.config.handshake_timeout).await? {
        Message::Proof { handshake } => handshake,
        _ => return control::refuse(&mut send, RefuseReason::BadProof, metrics).await,
    };
    if verifier.verify(&proof, &host_id).is_err() {
        debug!("registration refused: bad proof");
        return control::refuse(&mut send, RefuseReason::BadProof, metrics).await;
    }

    let (incoming_tx, mut incoming) = mpsc::channel(INCOMING_QUEUE);
    let link = match &hop {
        HostHop::Quic(conn) => HostLink::Quic(conn.clone()),
        HostHop::Tcp => HostLink::Tcp(incoming_tx),
    };
    let replaced = CancellationToken::new();
    let handle = HostHandle { link, tier, sessions: Arc::default() };
    let generation = shared.registry.register(host_id, handle, replaced.clone());
    metrics.host_registered();
    debug!("host registered");
    let outcome = async {
        send.send_message(&Message::Registered).await?;
        loop {
            tokio::select! {
                biased;
                _ = shared.draining.cancelled() => {
                    let _ = send.send_message(&Message::GoingAway).await;
                    return Ok(());
                }
                _ = cancel.cancelled() => return Ok(()),
                _ = replaced.cancelled() => return Ok(()),
                // The host sends nothing after its proof: any end of the stream, clean or
                // not, ends the registration.
                _ = control.message_unbounded() => return Ok(()),
                Some(session) = incoming.recv() => {
                    send.send_message(&Message::Incoming { session }).await?;
                }
            }
        }
    }
    .await;
    shared.registry.unregister(&host_id, generation);
    metrics.host_unregistered();
    debug!("host unregistered");
    outcome
}
