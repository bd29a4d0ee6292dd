//! A `Connect` for a host that is not registered here: find its node, then redirect the
//! client there or forward the session to it.
//!
//! Forwarding admits the session here as a local one is admitted (buffer budget with the
//! host's fair share, a share of the client connection's window), opens a stream to the
//! owning node on the link to it, sends `Forward` and splices the two streams. The owning
//! node answers the client itself (`Accepted` or `Refused`, passed through as bytes) and
//! paces the session by the host's tier; this node only carries ciphertext, and logs the
//! one line it logs for every session.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferry_link::{ConnectionWindow, Framed, FramedError, LinkError, LinkRecv, LinkSend};
use ferry_proto::connect::RelayConnect;
use ferry_proto::{HostId, Message, RefuseReason};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Fleet, FleetMode};
use crate::metrics::FleetRoute;
use crate::state::Shared;
use crate::{control, pump};

/// Serves a `Connect` for `connect.host_id()`, which is not registered at this node.
pub(crate) async fn serve_elsewhere(
    shared: Arc<Shared>,
    fleet: Arc<Fleet>,
    client_window: Option<Arc<ConnectionWindow>>,
    mut client_send: LinkSend,
    client: Framed,
    connect: RelayConnect,
    cancel: CancellationToken,
) -> Result<(), FramedError> {
    let metrics = &shared.metrics;
    let host_id = *connect.host_id();
    let nodes: Vec<(String, String)> = match fleet.locate(&host_id).await {
        Ok(nodes) => nodes.into_iter().map(|(id, addr)| (id.to_owned(), addr.to_owned())).collect(),
        Err(e) => {
            debug!(error = %e, "the fleet directory did not answer");
            return control::refuse(&mut client_send, RefuseReason::FleetUnavailable, metrics).await;
        }
    };
    let Some((_, freshest)) = nodes.first() else {
        return control::refuse(&mut client_send, RefuseReason::UnknownHost, metrics).await;
    };
    match fleet.mode() {
        FleetMode::Redirect => {
            metrics.fleet_routed(FleetRoute::Redirected);
            client_send.send_message(&connect.redirect(freshest.clone())).await?;
            client_send.finish().await?;
            Ok(())
        }
        FleetMode::Forward => {
            let to = Target { host_id, nodes: &nodes };
            forward(&shared, &fleet, client_window, client_send, client, to, &cancel).await
        }
    }
}

/// Where a forwarded session goes: the host, and the nodes that have it, freshest first.
struct Target<'a> {
    host_id: HostId,
    nodes: &'a [(String, String)],
}

async fn forward(
    shared: &Shared,
    fleet: &Fleet,
    client_window: Option<Arc<ConnectionWindow>>,
    mut client_send: LinkSend,
    client: Framed,
    to: Target<'_>,
    cancel: &CancellationToken,
) -> Result<(), FramedError> {
    let metrics = &shared.metrics;
    let buffers = 2 * shared.fixed.buffer_per_direction as u64;
    let share = fleet.forwarded_share(&to.host_id);
    let reservation = match shared.budget.try_reserve(&share, buffers, metrics) {
        Ok(reservation) => reservation,
        Err(reason) => return control::refuse(&mut client_send, reason, metrics).await,
    };
    let window = client_window.map(|w| w.share());
    // The first node that takes the stream carries the session (a node that just died
    // still has the freshest claim for up to a third of a presence period).
    let opened = async {
        let mut failure = None;
        for (node, addr) in to.nodes {
            let attempt = async {
                let link = fleet.links.open(node, addr).await?;
                let mut send = LinkSend::Quic(link.send);
                let proof = fleet.forward_proof(&link.exporter, &to.host_id);
                send.send_message(&Message::Forward { host_id: to.host_id, proof }).await?;
                Ok::<_, OpenError>((send, LinkRecv::Quic(link.recv)))
            };
            match attempt.await {
                Ok(opened) => return Ok(opened),
                Err(e) => failure = Some(e),
            }
        }
        Err(failure.unwrap_or(OpenError::NoNode))
    };
    let (node_send, node_recv) = match tokio::time::timeout(shared.fixed.handshake_timeout, opened).await {
        Ok(Ok(opened)) => opened,
        outcome => {
            match outcome {
                Ok(Err(e)) => warn!(error = %e, "could not reach another node of the fleet"),
                Err(_) => warn!("another node of the fleet did not take a forwarded session in time"),
                Ok(Ok(_)) => {}
            }
            drop((window, reservation));
            return control::refuse(&mut client_send, RefuseReason::FleetUnavailable, metrics).await;
        }
    };
    let _held = (window, reservation);
    metrics.fleet_routed(FleetRoute::Forwarded);
    let _active = shared.session_started();
    let started = Instant::now();
    let (client_recv, client_first) = client.into_parts();
    let carried = pump::splice(
        pump::Side { send: client_send, recv: client_recv, first: client_first },
        pump::Side { send: node_send, recv: node_recv, first: Bytes::new() },
        pump::Shaping {
            tier: &fleet.unpaced,
            idle_timeout: shared.live().rules.limits.idle_session_timeout,
            tap: shared.fixed.tap.clone(),
        },
        cancel,
    )
    .await;
    metrics.bytes_relayed(carried.client_to_host, carried.host_to_client);
    info!(
        duration_ms = started.elapsed().as_millis() as u64,
        bytes_client_to_host = carried.client_to_host,
        bytes_host_to_client = carried.host_to_client,
        "forwarded session closed"
    );
    Ok(())
}

/// Why a forwarded stream could not be opened: the link, or the `Forward` write.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Framed(#[from] FramedError),
    #[error("no node has the host")]
    NoNode,
}
