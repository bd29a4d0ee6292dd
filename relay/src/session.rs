//! Pairing: a client's `Connect` becomes a stream to the host, then the pump.
//!
//! Admission happens here, in order: the relay is not draining, the host is registered,
//! the host is under its session limit, and the session's buffers fit in the global
//! budget — each failure is a `Refused` with its reason, and running sessions are never
//! touched. The client may send its end-to-end handshake right behind `Connect` (saving
//! a round trip); whatever arrived after the `Connect` message is forwarded to the host
//! first. The one log line per session is written here, at close: a random session
//! number, duration and bytes each way. Nothing else about a session is ever logged.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferry_link::{Framed, FramedError, LinkRecv, LinkSend};
use ferry_proto::RefuseReason;
use ferry_proto::connect::{self, RelayConnect};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::control;
use crate::pump;
use crate::registry::HostLink;
use crate::state::Shared;

/// Serves one client session stream that began with `Connect` (the conversation's rules
/// are `ferry_proto::connect`'s: one answer, `Accepted` or `Refused`).
#[expect(clippy::manual_async_fn, reason = "an `async fn` keeps its arguments twice (pump module docs)")]
pub(crate) fn serve(
    shared: Arc<Shared>,
    mut client_send: LinkSend,
    client: Framed,
    connect: RelayConnect,
    cancel: CancellationToken,
) -> impl Future<Output = Result<(), FramedError>> {
    // Not an `async fn`: that would keep every argument twice for the session's lifetime
    // (see the pump's module docs).
    async move {
        let metrics = &shared.metrics;
        if shared.draining.is_cancelled() {
            return control::refuse(&mut client_send, RefuseReason::ShuttingDown, metrics).await;
        }
        let Some(host) = shared.registry.lookup(connect.host_id()) else {
            return control::refuse(&mut client_send, RefuseReason::UnknownHost, metrics).await;
        };
        let live = shared.live();
        let Some(_slot) = host.sessions.try_take(live.rules.limits.max_sessions_per_host) else {
            return control::refuse(&mut client_send, RefuseReason::HostOverLimit, metrics).await;
        };
        let buffers = 2 * shared.fixed.buffer_per_direction as u64;
        let Some(_reservation) = shared.budget.try_reserve(buffers, metrics) else {
            return control::refuse(&mut client_send, RefuseReason::RelayBusy, metrics).await;
        };
        let session = random_session_number();
        let Some((host_send, host_recv, host_first)) = open_to_host(&shared, host.link, session).await else {
            return control::refuse(&mut client_send, RefuseReason::UnknownHost, metrics).await;
        };
        client_send.send_message(&connect.accept()).await?;

        let _active = shared.session_started();
        let started = Instant::now();
        let (client_recv, client_first) = client.into_parts();
        let carried = pump::splice(
            pump::Side { send: client_send, recv: client_recv, first: client_first },
            pump::Side { send: host_send, recv: host_recv, first: host_first },
            pump::Shaping {
                tier: &host.tier,
                idle_timeout: live.rules.limits.idle_session_timeout,
                tap: shared.fixed.tap.clone(),
            },
            &cancel,
        )
        .await;
        metrics.bytes_relayed(carried.client_to_host, carried.host_to_client);
        info!(
            session = format_args!("{session:016x}"),
            duration_ms = started.elapsed().as_millis() as u64,
            bytes_client_to_host = carried.client_to_host,
            bytes_host_to_client = carried.host_to_client,
            "session closed"
        );
        Ok(())
    }
}

/// Opens the host's side of a session: a new QUIC stream, or a TCP host's dial-back.
async fn open_to_host(shared: &Shared, link: HostLink, session: u64) -> Option<(LinkSend, LinkRecv, Bytes)> {
    match link {
        HostLink::Quic(conn) => {
            let (send, recv) = conn.open_bi().await.ok()?;
            let mut send = LinkSend::Quic(send);
            send.send_message(&connect::announce(session)).await.ok()?;
            Some((send, LinkRecv::Quic(recv), Bytes::new()))
        }
        HostLink::Tcp(announce) => {
            let attached = shared.pending.expect(session);
            if announce.try_send(session).is_err() {
                shared.pending.forget(session);
                return None;
            }
            let result = tokio::time::timeout(shared.fixed.handshake_timeout, attached).await;
            shared.pending.forget(session);
            result.ok()?.ok()
        }
    }
}

/// A random number that names a session in the one log line it gets and, for TCP hosts,
/// in the dial-back; it correlates nothing outside this relay process.
fn random_session_number() -> u64 {
    let mut bytes = [0u8; 8];
    // A failing system RNG only makes the number less random.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u64::from_ne_bytes(bytes)
}
