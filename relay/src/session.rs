//! Pairing: a client's `Connect` becomes a stream on the host's connection, then the pump.
//!
//! The client may send its end-to-end handshake right behind `Connect` (saving a round
//! trip); whatever arrived after the `Connect` message is forwarded to the host first.
//! The one log line per session is written here, at close: a random session number,
//! duration and bytes each way. Nothing else about a session is ever logged.

use std::sync::Arc;
use std::time::Instant;

use ferry_proto::{HostId, Message, RefuseReason};
use quinn::{RecvStream, SendStream};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::control::{self, ControlError, ControlReader};
use crate::pump;
use crate::server::Shared;

/// Serves one client session stream that asked for `host_id`.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut client_send: SendStream,
    reader: ControlReader<RecvStream>,
    host_id: HostId,
    cancel: CancellationToken,
) -> Result<(), ControlError> {
    let Some(host) = shared.registry.lookup(&host_id) else {
        return control::refuse(&mut client_send, RefuseReason::UnknownHost).await;
    };
    let Ok((mut host_send, host_recv)) = host.open_bi().await else {
        return control::refuse(&mut client_send, RefuseReason::UnknownHost).await;
    };
    let session = random_session_number();
    control::write(&mut host_send, &Message::Incoming { session }).await?;
    control::write(&mut client_send, &Message::Accepted).await?;

    let started = Instant::now();
    let (client_recv, first) = reader.into_parts();
    let carried = pump::splice(
        (client_send, client_recv),
        (host_send, host_recv),
        first,
        shared.config.tap.clone(),
        cancel,
    )
    .await;
    info!(
        session = format_args!("{session:016x}"),
        duration_ms = started.elapsed().as_millis() as u64,
        bytes_client_to_host = carried.client_to_host,
        bytes_host_to_client = carried.host_to_client,
        "session closed"
    );
    Ok(())
}

/// A random number that names a session in the one log line it gets; it correlates
/// nothing outside this relay process.
fn random_session_number() -> u64 {
    let mut bytes = [0u8; 8];
    // A failing system RNG only makes the number less random; it is not a secret.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u64::from_ne_bytes(bytes)
}
