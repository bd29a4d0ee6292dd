//! Pairing: a client's `Connect` becomes a stream to the host, then the pump.
//!
//! Admission happens here, in order: the relay is not draining, the host is registered,
//! its quota account (if its tier has a quota, `crate::quota_usage`) has bytes left, the
//! host is under its session limit, and the session's buffers fit in the global
//! budget and the host's fair share of it (`crate::budget`) — each failure is a `Refused`
//! with its reason, and running sessions are never touched. An admitted session then
//! widens the receive window of each QUIC connection it rides on by one buffer
//! (`ferry_link::window`), so sessions whose readers stopped can never hold the window
//! that the connection's other sessions need.
//!
//! The client may send its end-to-end handshake right behind `Connect` (saving a round
//! trip); whatever arrived after the `Connect` message is forwarded to the host first.
//! The one log line per session is written here, at close: a random session number,
//! duration and bytes each way. Nothing else about a session is ever logged.
//!
//! Reaching the host is a wait on the host, so it is bounded by the handshake timeout:
//! a QUIC host that grants no stream credit (or no flow-control credit for `Incoming`),
//! or a TCP host that does not dial back, costs a waiting client at most that long. The
//! client is then refused as `HostOverLimit`, not `UnknownHost`: the host *is* registered,
//! it just cannot take a session now (its stream limit is the host's own session limit),
//! so the client should try again later rather than check the host is running. Only a
//! host whose connection is gone while the relay reaches for it is `UnknownHost`. The
//! session's place in its host's count and its buffer reservation are given back
//! before the refusal is sent, so a client that hears it can start anew at once.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferry_link::{ConnectionWindow, Framed, FramedError, LinkRecv, LinkSend};
use ferry_proto::RefuseReason;
use ferry_proto::connect::{self, RelayConnect};
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::control;
use crate::elsewhere;
use crate::pump;
use crate::quota_usage::Meter;
use crate::registry::HostLink;
use crate::state::Shared;

/// Who asked for a session.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asker {
    /// A client, with `Connect`: a host registered at another node of the fleet is looked up.
    Client,
    /// Another node of the fleet, with `Forward`: it looked the host up already, so a host
    /// not registered here is unknown (never forwarded again: no loops).
    FleetNode,
}

/// Serves one client session stream that began with `Connect` or `Forward` (the
/// conversation's rules are `ferry_proto::connect`'s: one answer, `Accepted`, `Refused`
/// or, for a client of a fleet node, `Redirect`).
#[expect(clippy::manual_async_fn, reason = "an `async fn` keeps its arguments twice (pump module docs)")]
pub(crate) fn serve(
    shared: Arc<Shared>,
    client_window: Option<Arc<ConnectionWindow>>,
    mut client_send: LinkSend,
    client: Framed,
    connect: RelayConnect,
    asker: Asker,
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
            if let (Some(fleet), Asker::Client) = (shared.fleet.clone(), asker) {
                // Boxed: only these sessions pay for the routing future's room.
                let routed =
                    elsewhere::serve(shared.clone(), fleet, client_window, client_send, client, connect, cancel);
                return Box::pin(routed).await;
            }
            return control::refuse(&mut client_send, RefuseReason::UnknownHost, metrics).await;
        };
        let meter = match (&host.account, &host.tier.quota) {
            (Some(account), Some(quota)) => {
                // Boxed: a Redis read may be in it, and only these sessions pay for its room.
                if !Box::pin(shared.quotas.has_room(account, quota)).await {
                    return control::refuse(&mut client_send, RefuseReason::QuotaExceeded, metrics).await;
                }
                Some(Arc::new(Meter::new(account.clone(), *quota)))
            }
            _ => None,
        };
        let live = shared.live();
        let Some(slot) = host.sessions.try_take(live.rules.limits.max_sessions_per_host) else {
            return control::refuse(&mut client_send, RefuseReason::HostOverLimit, metrics).await;
        };
        let buffers = 2 * shared.fixed.buffer_per_direction as u64;
        let reservation = match shared.budget.try_reserve(&host.buffers, buffers, metrics) {
            Ok(reservation) => reservation,
            Err(reason) => return control::refuse(&mut client_send, reason, metrics).await,
        };
        // The buffers reserved are the room these shares let the two hops fill.
        let windows = (client_window.map(|w| w.share()), host.link.window().map(|w| w.share()));
        let session = random_session_number();
        // Boxed: its timer lives only while the host's side is opened; unboxed, the room for
        // it would stay in every session's future for the session's whole life.
        let (host_send, host_recv, host_first) = match Box::pin(open_to_host(&shared, host.link, session)).await {
            Ok(opened) => opened,
            Err(reason) => {
                // Given back first: a client that hears the refusal may retry at once.
                drop((windows, reservation, slot));
                return control::refuse(&mut client_send, reason, metrics).await;
            }
        };
        // Held for the session's life: dropped when this future ends, however it ends.
        let _held = (windows, slot, reservation);
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
                meter,
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

/// Opens the host's side of a session: a new QUIC stream, or a TCP host's dial-back,
/// within the handshake timeout. The error is the reason to give the client.
async fn open_to_host(
    shared: &Shared,
    link: HostLink,
    session: u64,
) -> Result<(LinkSend, LinkRecv, Bytes), RefuseReason> {
    let limit = shared.fixed.handshake_timeout;
    match link {
        HostLink::Quic(window) => {
            let conn = window.connection();
            // Both waits are on the host: stream credit for `open_bi`, then flow-control
            // credit for `Incoming`.
            let opened = tokio::time::timeout(limit, async {
                let (send, recv) =
                    conn.open_bi().await.inspect_err(|e| debug!(error = %e, "opening a host stream failed")).ok()?;
                let mut send = LinkSend::Quic(send);
                send.send_message(&connect::announce(session))
                    .await
                    .inspect_err(|e| debug!(error = %e, "sending `Incoming` to the host failed"))
                    .ok()?;
                Some((send, LinkRecv::Quic(recv), Bytes::new()))
            })
            .await;
            match opened {
                Ok(Some(opened)) => Ok(opened),
                // The host's connection failed under us: it is going away.
                Ok(None) => Err(RefuseReason::UnknownHost),
                Err(_) => {
                    debug!("the host granted no stream within the handshake timeout");
                    Err(RefuseReason::HostOverLimit)
                }
            }
        }
        HostLink::Tcp(announce) => {
            let attached = shared.pending.expect(session);
            if let Err(e) = announce.try_send(session) {
                shared.pending.forget(session);
                // Full: the host's control task is behind, it cannot take a session now.
                return Err(match e {
                    TrySendError::Full(_) => RefuseReason::HostOverLimit,
                    TrySendError::Closed(_) => RefuseReason::UnknownHost,
                });
            }
            let result = tokio::time::timeout(limit, attached).await;
            shared.pending.forget(session);
            match result {
                Ok(Ok(attached)) => Ok(attached),
                // The host is registered (its control task took the announcement) but did
                // not dial back in time.
                Ok(Err(_)) | Err(_) => Err(RefuseReason::HostOverLimit),
            }
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
