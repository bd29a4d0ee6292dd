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
use crate::registry::HostLink;
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
    let Registration { host_id, hello, exporter } = registration;
    let Ok((verifier, challenge)) = RelayVerifier::start(&exporter, &hello) else {
        return control::refuse(&mut send, RefuseReason::BadProof).await;
    };
    control::write(&mut send, &Message::Challenge { handshake: challenge }).await?;
    let proof = match control.message(shared.config.handshake_timeout).await? {
        Message::Proof { handshake } => handshake,
        _ => return control::refuse(&mut send, RefuseReason::BadProof).await,
    };
    if verifier.verify(&proof, &host_id).is_err() {
        debug!("registration refused: bad proof");
        return control::refuse(&mut send, RefuseReason::BadProof).await;
    }

    let (incoming_tx, mut incoming) = mpsc::channel(INCOMING_QUEUE);
    let link = match &hop {
        HostHop::Quic(conn) => HostLink::Quic(conn.clone()),
        HostHop::Tcp => HostLink::Tcp(incoming_tx),
    };
    let replaced = CancellationToken::new();
    let generation = shared.registry.register(host_id, link, replaced.clone());
    debug!("host registered");
    let outcome = async {
        control::write(&mut send, &Message::Registered).await?;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    let _ = control::write(&mut send, &Message::GoingAway).await;
                    return Ok(());
                }
                _ = replaced.cancelled() => return Ok(()),
                // The host sends nothing after its proof: any end of the stream, clean or
                // not, ends the registration.
                _ = control.message_unbounded() => return Ok(()),
                Some(session) = incoming.recv() => {
                    control::write(&mut send, &Message::Incoming { session }).await?;
                }
            }
        }
    }
    .await;
    shared.registry.unregister(&host_id, generation);
    debug!("host unregistered");
    outcome
}
