//! Pairing: a client's `Connect` becomes a stream to the host, then the pump.
//!
//! The client may send its end-to-end handshake right behind `Connect` (saving a round
//! trip); whatever arrived after the `Connect` message is forwarded to the host first.
//! The one log line per session is written here, at close: a random session number,
//! duration and bytes each way. Nothing else about a session is ever logged.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferry_link::{Framed, FramedError, LinkRecv, LinkSend};
use ferry_proto::{HostId, Message, RefuseReason};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::control;
use crate::pump;
use crate::registry::HostLink;
use crate::server::Shared;

/// Serves one client session stream that asked for `host_id`.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut client_send: LinkSend,
    client: Framed,
    host_id: HostId,
    cancel: CancellationToken,
) -> Result<(), FramedError> {
    let Some(link) = shared.registry.lookup(&host_id) else {
        return control::refuse(&mut client_send, RefuseReason::UnknownHost).await;
    };
    let session = random_session_number();
    let Some((host_send, host_recv, host_first)) = open_to_host(&shared, link, session).await else {
        return control::refuse(&mut client_send, RefuseReason::UnknownHost).await;
    };
    control::write(&mut client_send, &Message::Accepted).await?;

    let started = Instant::now();
    let (client_recv, client_first) = client.into_parts();
    let carried = pump::splice(
        pump::Side { send: client_send, recv: client_recv, first: client_first },
        pump::Side { send: host_send, recv: host_recv, first: host_first },
        shared.config.tap.clone(),
        &cancel,
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

/// Opens the host's side of a session: a new QUIC stream, or a TCP host's dial-back.
async fn open_to_host(shared: &Shared, link: HostLink, session: u64) -> Option<(LinkSend, LinkRecv, Bytes)> {
    match link {
        HostLink::Quic(conn) => {
            let (send, recv) = conn.open_bi().await.ok()?;
            let mut send = LinkSend::Quic(send);
            control::write(&mut send, &Message::Incoming { session }).await.ok()?;
            Some((send, LinkRecv::Quic(recv), Bytes::new()))
        }
        HostLink::Tcp(announce) => {
            let attached = shared.pending.expect(session);
            if announce.try_send(session).is_err() {
                shared.pending.forget(session);
                return None;
            }
            let result = tokio::time::timeout(shared.config.handshake_timeout, attached).await;
            shared.pending.forget(session);
            result.ok()?.ok()
        }
    }
}

/// A random number that names a session in the one log line it gets; it correlates
/// nothing outside this relay process.
fn random_session_number() -> u64 {
    let mut bytes = [0u8; 8];
    // A failing system RNG only makes the number less random; it is not a secret for
    // QUIC hosts. For TCP hosts it names the dial-back, which also needs the host's hop.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u64::from_ne_bytes(bytes)
}
