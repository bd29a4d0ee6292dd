//! A host's registration and the life of its control stream.
//!
//! The host proves it holds the key behind its host id (Noise `XN` bound to this hop's
//! TLS exporter, see `ferry_proto::proof`), then stays registered for as long as
//! its control stream lives. Sessions reach a QUIC host as new streams the relay opens on
//! its connection; a TCP host is told `Incoming { session }` here and dials back (see
//! `attach.rs`).

use std::sync::Arc;

use ferry_link::{ConnectionWindow, Framed, FramedError, LinkSend};
use ferry_proto::registration::{RelayAction, RelayRegistration};
use ferry_proto::{Message, RefuseReason};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::control;
use crate::pacing::Tier;
use crate::policy::hash_token;
use crate::quota_usage::Account;
use crate::registry::{HostHandle, HostLink, HostPlace};
use crate::state::Shared;

/// Most session announcements queued for one TCP host's control stream.
const INCOMING_QUEUE: usize = 64;

/// The host's hop, as far as registration cares.
pub(crate) enum HostHop {
    /// A QUIC connection (sessions are streams the relay opens on it), with the receive
    /// window its sessions widen.
    Quic(Arc<ConnectionWindow>),
    /// A TLS connection (sessions are announced on it and attached by the host).
    Tcp,
}

/// Runs one host's registration until the host or the relay goes away. The conversation's
/// rules are `ferry_proto::registration`'s; this only moves its messages and keeps the
/// registry.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    hop: HostHop,
    mut send: LinkSend,
    mut control: Framed,
    mut registration: RelayRegistration,
    cancel: CancellationToken,
) -> Result<(), FramedError> {
    let metrics = &shared.metrics;
    // One registration per QUIC connection at a time: a second one on the same connection
    // would let one connection (one rate-limit token) register hosts by the thousand.
    // The claim (and the host's place) are given back before a refusal is sent: the host
    // may try again on this connection as soon as it hears it.
    let claim = match &hop {
        HostHop::Quic(window) => match shared.registry.claim_connection(window.connection().stable_id()) {
            Some(claim) => Some(claim),
            None => return control::refuse(&mut send, RefuseReason::RateLimited, metrics).await,
        },
        HostHop::Tcp => None,
    };
    // Access rules first: a host that may not register costs no Diffie-Hellman.
    let (tier, account, place, mut action) = match admission(&shared, &registration) {
        Ok((tier, account, place)) => (tier, account, place, registration.admit()),
        Err(reason) => {
            drop(claim);
            return control::refuse(&mut send, reason, metrics).await;
        }
    };
    loop {
        match action {
            RelayAction::Send(message) => {
                send.send_message(&message).await?;
                action = registration.handle(control.message(shared.fixed.handshake_timeout).await?);
            }
            RelayAction::Refuse(reason) => {
                if reason == RefuseReason::BadProof {
                    debug!("registration refused: bad proof");
                }
                drop((claim, place));
                return control::refuse(&mut send, reason, metrics).await;
            }
            RelayAction::End => return Ok(()),
            RelayAction::Registered { reply, .. } => {
                let registered = Registered { hop, tier, account, place, reply };
                // The claim is held while the host stays registered on this connection.
                let stayed = stay_registered(&shared, registered, send, control, registration, &cancel).await;
                drop(claim);
                break stayed;
            }
        }
    }
}

/// What an admitted host gets: its tier, its quota account, its place under `max_hosts`.
type Admission = (Arc<Tier>, Option<Arc<Account>>, HostPlace);

/// Whether this relay takes the host now (not draining, the access rules admit it, its
/// quota not spent, room for one more host), at which tier, the account its bytes count
/// towards (if its tier has a quota), and the host's place under `max_hosts` — taken now,
/// before the proof, so that concurrent registrations cannot all pass the cap; a failed
/// proof drops it.
fn admission(shared: &Shared, registration: &RelayRegistration) -> Result<Admission, RefuseReason> {
    if shared.draining.is_cancelled() {
        return Err(RefuseReason::ShuttingDown);
    }
    let live = shared.live();
    let host_id = registration.host_id();
    let tier = live.rules.policy.admit(host_id, registration.token())?;
    let account = match &tier.quota {
        Some(quota) => {
            // The token's name names the account (every host of one token shares it).
            let digest = registration.token().map(hash_token);
            let token = digest.and_then(|d| live.rules.policy.tokens.iter().find(|rule| rule.sha256 == d));
            let account = shared.quotas.account(host_id, token.map(|rule| rule.name.as_str()), quota.period);
            // A host whose quota is spent could serve no session: it hears why now.
            if account.used() >= quota.bytes {
                return Err(RefuseReason::QuotaExceeded);
            }
            Some(account)
        }
        None => None,
    };
    let place = shared.registry.reserve(host_id, live.rules.limits.max_hosts).ok_or(RefuseReason::RelayBusy)?;
    Ok((tier, account, place))
}

/// A host whose proof verified.
struct Registered {
    hop: HostHop,
    tier: Arc<Tier>,
    account: Option<Arc<Account>>,
    /// Its place under `max_hosts`, which the registry entry keeps.
    place: HostPlace,
    /// The `Registered` message, sent once the host is in the registry (so a client the host
    /// tells at once finds it).
    reply: Message,
}

/// A registered host's control stream: sessions are announced on it (TCP hosts) until the
/// host, a newer registration of it, or the relay ends it.
async fn stay_registered(
    shared: &Shared,
    registered: Registered,
    mut send: LinkSend,
    mut control: Framed,
    mut registration: RelayRegistration,
    cancel: &CancellationToken,
) -> Result<(), FramedError> {
    let Registered { hop, tier, account, place, reply } = registered;
    let host_id = *registration.host_id();
    let (incoming_tx, mut incoming) = mpsc::channel(INCOMING_QUEUE);
    let link = match &hop {
        HostHop::Quic(window) => HostLink::Quic(window.clone()),
        HostHop::Tcp => HostLink::Tcp(incoming_tx),
    };
    let replaced = CancellationToken::new();
    let handle = HostHandle { link, tier, sessions: Arc::default(), buffers: Arc::default(), account };
    let generation = shared.registry.register(host_id, handle, place, replaced.clone());
    shared.metrics.host_registered();
    if let Some(fleet) = &shared.fleet {
        fleet.announce(host_id);
    }
    debug!("host registered");
    let outcome = async {
        send.send_message(&reply).await?;
        loop {
            tokio::select! {
                biased;
                _ = shared.draining.cancelled() => {
                    let _ = send.send_message(&registration.going_away()).await;
                    return Ok(());
                }
                _ = cancel.cancelled() => return Ok(()),
                _ = replaced.cancelled() => {
                    shared.metrics.host_replaced();
                    // A QUIC host reads the connection's close code; a TCP host, this.
                    let _ = send.send_message(&Message::Refused { reason: RefuseReason::Replaced }).await;
                    return Ok(());
                }
                // The host sends nothing after its proof: any end of the stream, clean or
                // not, ends the registration.
                _ = control.message_unbounded() => return Ok(()),
                Some(session) = incoming.recv() => {
                    if let Some(announce) = registration.incoming(session) {
                        send.send_message(&announce).await?;
                    }
                }
            }
        }
    }
    .await;
    if shared.registry.unregister(&host_id, generation)
        && let Some(fleet) = &shared.fleet
    {
        fleet.withdraw(host_id);
    }
    shared.metrics.host_unregistered();
    debug!("host unregistered");
    outcome
}
