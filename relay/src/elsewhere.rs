//! A `Connect` for a host that is not registered here but at another node of this relay's
//! fleet (`crate::fleet`): find its node, then redirect the client there or forward the
//! session to it.
//!
//! When several nodes claim the host (a host registered at two), the first that answers a
//! probe over its node link is chosen (`Fleet::confirm`), in both modes: a node that died
//! a moment ago still has a fresh claim, and a redirect to it would cost the client its
//! dial timeout.
//!
//! Forwarding admits the session here as a local one is admitted (buffer budget with the
//! host's fair share, a share of the client connection's window), opens a stream to the
//! owning node on the link to it and sends `Forward`. It reads that node's answer itself,
//! so that a node that died or no longer has the host is passed over for the next one that
//! claims it, then tells the client (`Accepted`, or the owner's refusal) and splices the two
//! streams. The owning node paces the session by the host's tier; this node only carries
//! ciphertext, and logs the one line it logs for every session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_link::{ConnectionWindow, Framed, FramedError, LinkError, LinkRecv, LinkSend};
use ferry_proto::connect::RelayConnect;
use ferry_proto::{HostId, Message, RefuseReason};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::fleet::{Fleet, FleetMode};
use crate::metrics::FleetRoute;
use crate::state::Shared;
use crate::{control, pump};

/// Serves a `Connect` for `connect.host_id()`, which is not registered at this node.
pub(crate) async fn serve(
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
    let nodes = match fleet.locate(&host_id).await {
        Ok(nodes) => nodes,
        Err(e) => {
            debug!(error = %e, "the fleet directory did not answer");
            return control::refuse(&mut client_send, RefuseReason::FleetUnavailable, metrics).await;
        }
    };
    if nodes.is_empty() {
        return control::refuse(&mut client_send, RefuseReason::UnknownHost, metrics).await;
    }
    // A host at several nodes (one of which may have just died): the first that answers.
    let nodes = fleet.confirm(nodes).await;
    let Some((_, best)) = nodes.first() else {
        return control::refuse(&mut client_send, RefuseReason::UnknownHost, metrics).await;
    };
    match fleet.mode() {
        FleetMode::Redirect => {
            metrics.fleet_routed(FleetRoute::Redirected);
            client_send.send_message(&connect.redirect(best.clone())).await?;
            client_send.finish().await?;
            Ok(())
        }
        FleetMode::Forward => {
            let to = Target { host_id, nodes: &nodes };
            forward(&shared, &fleet, client_window, client_send, client, to, &cancel).await
        }
    }
}

/// Where a forwarded session goes: the host, and the nodes that have it, best first.
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
    let (node_send, node_recv, node_first) = match reach_owner(shared, fleet, &to).await {
        Ok(Reached::Accepted(opened)) => opened,
        Ok(Reached::Refused(reason)) => {
            drop((window, reservation));
            return control::refuse(&mut client_send, reason, metrics).await;
        }
        Err(e) => {
            warn!(error = %e, "could not reach the node that has the host");
            drop((window, reservation));
            return control::refuse(&mut client_send, RefuseReason::FleetUnavailable, metrics).await;
        }
    };
    client_send.send_message(&Message::Accepted).await?;
    let _held = (window, reservation);
    metrics.fleet_routed(FleetRoute::Forwarded);
    let _active = shared.session_started();
    let started = Instant::now();
    let (client_recv, client_first) = client.into_parts();
    let carried = pump::splice(
        pump::Side { send: client_send, recv: client_recv, first: client_first },
        pump::Side { send: node_send, recv: node_recv, first: node_first },
        pump::Shaping {
            tier: &fleet.unpaced,
            idle_timeout: shared.live().rules.limits.idle_session_timeout,
            tap: shared.fixed.tap.clone(),
            // Counted by the owning node, which pairs the session with the host.
            meter: None,
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

/// What the owning node answered a `Forward`.
enum Reached {
    /// It took the session: the stream to it, and what it sent past `Accepted`.
    Accepted((LinkSend, LinkRecv, Bytes)),
    /// It refused, for this reason (passed on to the client).
    Refused(RefuseReason),
}

/// Longest wait for a node's answer to `Forward` while another node could be tried: a
/// node answers once it has opened the stream to its host (a round trip on a live link),
/// so a node that says nothing for this long is taken for dead.
const ANSWER_BEFORE_NEXT: Duration = Duration::from_secs(1);

/// Sends `Forward` to the nodes that claim the host, freshest first, until one answers.
/// A node that cannot be reached, does not answer in time, or does not have the host (a
/// claim gone stale) is passed over for the next; the last one gets what is left of the
/// handshake timeout. The answer is read here, not just passed through, so that a dead
/// node (whose link still looks open) costs a second, not the session.
async fn reach_owner(shared: &Shared, fleet: &Fleet, to: &Target<'_>) -> Result<Reached, OpenError> {
    let deadline = tokio::time::Instant::now() + shared.fixed.handshake_timeout;
    let mut failure = OpenError::NoNode;
    for (n, (node, addr)) in to.nodes.iter().enumerate() {
        let last = n + 1 == to.nodes.len();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wait = if last { left } else { left.min(ANSWER_BEFORE_NEXT) };
        let attempt = async {
            let link = fleet.links.open(node, addr).await?;
            let mut send = LinkSend::Quic(link.send);
            let proof = fleet.forward_proof(&link.exporter, &to.host_id);
            send.send_message(&Message::Forward { host_id: to.host_id, proof }).await?;
            let mut recv = Framed::new(LinkRecv::Quic(link.recv));
            let answer = recv.message(wait).await?;
            Ok::<_, OpenError>((send, recv, answer))
        };
        match tokio::time::timeout(wait, attempt).await {
            Ok(Ok((send, recv, Message::Accepted))) => {
                let (recv, first) = recv.into_parts();
                return Ok(Reached::Accepted((send, recv, first)));
            }
            Ok(Ok((_, _, Message::Refused { reason: RefuseReason::UnknownHost }))) if !last => {
                debug!("a node's claim on a host was stale");
            }
            Ok(Ok((_, _, Message::Refused { reason }))) => return Ok(Reached::Refused(reason)),
            Ok(Ok((_, _, other))) => failure = OpenError::Answer(other.name()),
            Ok(Err(e)) => failure = e,
            Err(_) => failure = OpenError::Silent,
        }
    }
    Err(failure)
}

/// Why a forwarded stream could not be opened: the link, or the `Forward` write.
/// Logged by its own words only, never its source's: those can name a node's address, and
/// the relay's log holds no address.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("the link to it failed")]
    Link(#[from] LinkError),
    #[error("its stream failed")]
    Framed(#[from] FramedError),
    #[error("no node has the host")]
    NoNode,
    #[error("the node answered {0} to Forward")]
    Answer(&'static str),
    #[error("the node did not answer in time")]
    Silent,
}
