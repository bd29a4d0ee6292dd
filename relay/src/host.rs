//! A host's registration and the life of its control stream.
//!
//! The host proves it holds the key behind its host id (Noise `XN` bound to this hop's
//! TLS exporter, see `ferry_proto::registration`), then stays registered for as long as
//! its control stream and connection live. Sessions reach it as new streams the relay
//! opens on the same connection (see `session.rs`).

use std::sync::Arc;

use ferry_proto::registration::RelayVerifier;
use ferry_proto::{EXPORTER_LEN, HostId, Message, REGISTRATION_EXPORTER_LABEL, RefuseReason};
use quinn::{RecvStream, SendStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::control::{self, ControlError, ControlReader};
use crate::server::Shared;

/// Runs one host's registration on `conn` until the host or the relay goes away.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    mut send: SendStream,
    mut reader: ControlReader<RecvStream>,
    host_id: HostId,
    hello: Vec<u8>,
    cancel: CancellationToken,
) -> Result<(), ControlError> {
    let mut exporter = [0u8; EXPORTER_LEN];
    if conn
        .export_keying_material(&mut exporter, REGISTRATION_EXPORTER_LABEL, b"")
        .is_err()
    {
        return control::refuse(&mut send, RefuseReason::BadProof).await;
    }
    let Ok((verifier, challenge)) = RelayVerifier::start(&exporter, &hello) else {
        return control::refuse(&mut send, RefuseReason::BadProof).await;
    };
    control::write(
        &mut send,
        &Message::Challenge {
            handshake: challenge,
        },
    )
    .await?;
    let proof = match reader.read(shared.config.handshake_timeout).await? {
        Message::Proof { handshake } => handshake,
        _ => return control::refuse(&mut send, RefuseReason::BadProof).await,
    };
    if verifier.verify(&proof, &host_id).is_err() {
        debug!("registration refused: bad proof");
        return control::refuse(&mut send, RefuseReason::BadProof).await;
    }

    let generation = shared.registry.register(host_id, conn.clone());
    debug!("host registered");
    let outcome = async {
        control::write(&mut send, &Message::Registered).await?;
        // Registered until the host closes its control stream, the connection drops or
        // the relay shuts down. The host sends nothing more on this stream today.
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                let _ = control::write(&mut send, &Message::GoingAway).await;
                Ok(())
            }
            _ = conn.closed() => Ok(()),
            message = reader.read_unbounded() => match message {
                Err(ControlError::Closed) => Ok(()),
                Err(e) => Err(e),
                Ok(_) => Ok(()),
            },
        }
    }
    .await;
    shared.registry.unregister(&host_id, generation);
    debug!("host unregistered");
    outcome
}
