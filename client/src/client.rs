//! The client: opens end-to-end sessions to one host, through the relays its ticket lists.
//!
//! One QUIC connection to a relay carries every session as its own stream, so opening a
//! session costs one stream and one Noise handshake, not a new connection. The `Connect`
//! request and the first handshake message leave together, so a session is ready after a
//! single round trip to the host. Relays are tried in ticket order, each with a head start
//! of [`NEXT_RELAY_AFTER`] over the next (so a dead relay first in a ticket costs that, not
//! its connect timeout); a lost connection is re-established by the next session.
//!
//! A relay that belongs to a fleet may answer `Connect` with a redirect to the node the
//! host is registered at. The client dials that node, checking its certificate exactly as
//! it checked the relay that sent it there (a fleet's nodes share one certificate, so a
//! redirect can only lead to a node the ticket already trusts), keeps it as its hop for
//! later sessions, and asks again there. A second redirect is an error: nodes redirect
//! only to where the host is registered, so two in a row mean the fleet is confused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferry_link::Framed;
use ferry_proto::connect::{ClientConnect, ConnectEvent};
use ferry_proto::e2e::ClientHandshake;
use ferry_proto::e2e::handshake::MAX_HANDSHAKE_LEN;
use ferry_proto::e2e::record::put_frame;
use ferry_proto::{RelayAddr, StaticKey, Ticket};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::Mutex;

use crate::dial::{self, HopOptions, RelayHop, Transport};
use crate::{Error, Session};

/// How long a relay of the ticket has to answer before the next one is tried alongside it
/// (twice QUIC's head start over TCP, so a relay that answers only over TCP still wins).
pub const NEXT_RELAY_AFTER: Duration = Duration::from_millis(500);

/// The hop sessions are opened on, and the relay (or fleet node) it leads to.
struct CurrentHop {
    hop: Arc<RelayHop>,
    relay: RelayAddr,
}

/// What a `Connect` on one hop came to (returned once per session, so its size matters
/// not: a boxed session would cost an allocation for nothing).
#[expect(clippy::large_enum_variant, reason = "a short-lived return value")]
enum Opened {
    Session(Session),
    /// The fleet node at this address has the host.
    Redirected(String),
}

/// Opens sessions to the host of one ticket.
pub struct Client {
    ticket: Ticket,
    key: StaticKey,
    options: HopOptions,
    transport: Transport,
    /// Longest wait for the relay's answer and the host's handshake.
    pub handshake_timeout: Duration,
    hop: Mutex<Option<CurrentHop>>,
    /// The transport that last worked, per relay address (for `Transport::Auto`).
    remembered: std::sync::Mutex<HashMap<String, Transport>>,
}

impl Client {
    /// A client for `ticket`, identified to the host by `key`, choosing QUIC or TCP
    /// automatically.
    pub fn new(ticket: Ticket, key: StaticKey, options: HopOptions) -> Self {
        Self {
            ticket,
            key,
            options,
            transport: Transport::Auto,
            handshake_timeout: Duration::from_secs(10),
            hop: Mutex::new(None),
            remembered: std::sync::Mutex::default(),
        }
    }

    /// Uses `transport` for the hop to the relay.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The transport of the current relay hop, once connected.
    pub async fn transport_in_use(&self) -> Option<Transport> {
        self.hop.lock().await.as_ref().map(|current| current.hop.transport())
    }

    /// The relay (or fleet node) address and transport of the current hop, once connected.
    pub async fn hop_in_use(&self) -> Option<(String, Transport)> {
        self.hop.lock().await.as_ref().map(|current| (current.relay.addr.clone(), current.hop.transport()))
    }

    /// The relay hop, (re)connecting through the ticket's relays in order.
    async fn hop(&self) -> Result<(Arc<RelayHop>, RelayAddr), Error> {
        let mut slot = self.hop.lock().await;
        if let Some(current) = slot.as_ref().filter(|c| c.hop.is_alive()) {
            return Ok((current.hop.clone(), current.relay.clone()));
        }
        // Relays in ticket order, each with a head start over the next: the next joins once
        // the ones before have failed or `NEXT_RELAY_AFTER` has passed without an answer, so
        // a dead relay costs at most the head start, not its connect timeout.
        let relays = &self.ticket.relays;
        let dial = |i: usize| async move { (i, self.dial(&relays[i]).await) };
        let mut dialling = FuturesUnordered::new();
        let mut next = 0;
        let mut failures = Vec::new();
        while next < relays.len() || !dialling.is_empty() {
            if dialling.is_empty() {
                dialling.push(dial(next));
                next += 1;
                continue;
            }
            tokio::select! {
                Some((i, dialled)) = dialling.next() => match dialled {
                    Ok(hop) => {
                        *slot = Some(CurrentHop { hop: hop.clone(), relay: relays[i].clone() });
                        return Ok((hop, relays[i].clone()));
                    }
                    // A certificate problem is never retried elsewhere silently: report it.
                    Err(e) if e.is_relay_certificate_problem() => return Err(e),
                    Err(e) => {
                        // Said now, not only after the last relay has had its turn too.
                        if next < relays.len() || !dialling.is_empty() {
                            tracing::warn!("{}; trying the ticket's other relays", e.report());
                        }
                        failures.push((i, e));
                    }
                },
                () = tokio::time::sleep(NEXT_RELAY_AFTER), if next < relays.len() => {
                    dialling.push(dial(next));
                    next += 1;
                }
            }
        }
        failures.sort_by_key(|(i, _)| *i);
        let mut failures: Vec<Error> = failures.into_iter().map(|(_, e)| e).collect();
        match failures.len() {
            0 => Err(Error::Cut("the ticket lists no relay")),
            1 => Err(failures.remove(0)),
            _ => Err(Error::NoRelayAnswered { failures }),
        }
    }

    /// Dials `relay` with the transport that last worked for it (or the chosen one).
    async fn dial(&self, relay: &RelayAddr) -> Result<Arc<RelayHop>, Error> {
        let remembered =
            self.remembered.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&relay.addr).copied();
        let transport = match (self.transport, remembered) {
            (Transport::Auto, Some(known)) => known,
            (chosen, _) => chosen,
        };
        match dial::connect(relay, transport, &self.options).await {
            Ok(hop) => {
                self.remembered
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(relay.addr.clone(), hop.transport());
                Ok(Arc::new(hop))
            }
            Err(e) => {
                // A remembered transport that stopped working is forgotten.
                self.remembered.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&relay.addr);
                Err(e)
            }
        }
    }

    /// Dials the fleet node `node` that `via` redirected us to, with `via`'s trust, and
    /// makes it the hop for later sessions.
    async fn follow_redirect(&self, via: &RelayAddr, node: String) -> Result<Arc<RelayHop>, Error> {
        let relay = RelayAddr { addr: node, trust: via.trust };
        let hop = self.dial(&relay).await?;
        *self.hop.lock().await = Some(CurrentHop { hop: hop.clone(), relay });
        Ok(hop)
    }

    /// Connects to a relay now (sessions would do it lazily), to report problems early.
    pub async fn warm_up(&self) -> Result<(), Error> {
        self.hop().await.map(drop)
    }

    /// Opens one end-to-end session to the host.
    pub async fn open_session(&self) -> Result<Session, Error> {
        let (hop, relay) = self.hop().await?;
        match self.open_on(&hop).await? {
            Opened::Session(session) => Ok(session),
            Opened::Redirected(node) => match self.open_on(&*self.follow_redirect(&relay, node).await?).await? {
                Opened::Session(session) => Ok(session),
                Opened::Redirected(_) => Err(Error::Cut("the relay's fleet redirected the session twice")),
            },
        }
    }

    /// Opens a session on `hop`: `Connect` and the handshake, or the relay's redirect.
    async fn open_on(&self, hop: &RelayHop) -> Result<Opened, Error> {
        let stream = hop.open_stream().await?;
        let mut send = stream.send;
        let (handshake, hello) =
            ClientHandshake::start(&self.ticket.host, &self.ticket.secret, &self.key, self.ticket.service.as_deref())?;
        let (mut conversation, connect) = ClientConnect::start(self.ticket.host);
        // `Connect` and the first handshake message leave together: one round trip.
        let mut first = BytesMut::from(&connect.to_vec()?[..]);
        put_frame(&mut first, &hello)?;
        send.write_chunks(&mut [first.freeze()]).await?;

        let mut recv = Framed::new(stream.recv);
        match conversation.handle(recv.message(self.handshake_timeout).await?)? {
            ConnectEvent::Accepted => {}
            ConnectEvent::Refused(reason) => return Err(Error::Refused(reason)),
            ConnectEvent::Redirected(node) => return Ok(Opened::Redirected(node)),
        }
        let answer = recv.frame(MAX_HANDSHAKE_LEN, self.handshake_timeout).await?;
        let (sealer, opener) = handshake.finish(&answer)?;
        Ok(Opened::Session(Session { send, recv, sealer, opener }))
    }

    /// Closes the relay connection.
    pub async fn close(&self) {
        if let Some(current) = self.hop.lock().await.take() {
            current.hop.close();
        }
    }
}
