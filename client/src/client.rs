//! The client: opens end-to-end sessions to one host, through the relays its ticket lists.
//!
//! One QUIC connection to a relay carries every session as its own stream, so opening a
//! session costs one stream and one Noise handshake, not a new connection. The `Connect`
//! request and the first handshake message leave together, so a session is ready after a
//! single round trip to the host. Relays are tried in ticket order; a lost connection is
//! re-established by the next session.

use std::time::Duration;

use bytes::BytesMut;
use ferry_proto::e2e::ClientHandshake;
use ferry_proto::e2e::handshake::MAX_HANDSHAKE_LEN;
use ferry_proto::e2e::record::put_frame;
use ferry_proto::{Message, StaticKey, Ticket};
use tokio::sync::Mutex;

use crate::framed::FramedRecv;
use crate::hop::{self, HopOptions};
use crate::{Error, Session};

/// Opens sessions to the host of one ticket.
pub struct Client {
    ticket: Ticket,
    key: StaticKey,
    options: HopOptions,
    /// Longest wait for the relay's answer and the host's handshake.
    pub handshake_timeout: Duration,
    conn: Mutex<Option<quinn::Connection>>,
}

impl Client {
    /// A client for `ticket`, identified to the host by `key`.
    pub fn new(ticket: Ticket, key: StaticKey, options: HopOptions) -> Self {
        Self {
            ticket,
            key,
            options,
            handshake_timeout: Duration::from_secs(10),
            conn: Mutex::new(None),
        }
    }

    /// The relay connection, (re)connecting through the ticket's relays in order.
    async fn connection(&self) -> Result<quinn::Connection, Error> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(conn.clone());
        }
        let mut last_error = None;
        for relay in &self.ticket.relays {
            match hop::connect(relay, &self.options).await {
                Ok(conn) => {
                    *slot = Some(conn.clone());
                    return Ok(conn);
                }
                // A pin mismatch is never retried elsewhere silently: report it.
                Err(e @ Error::PinMismatch { .. }) => return Err(e),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Cut("the ticket lists no relay".into())))
    }

    /// Connects to a relay now (sessions would do it lazily), to report problems early.
    pub async fn warm_up(&self) -> Result<(), Error> {
        self.connection().await.map(drop)
    }

    /// Opens one end-to-end session to the host.
    pub async fn open_session(&self) -> Result<Session, Error> {
        let conn = self.connection().await?;
        let (mut send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| Error::Cut(format!("cannot open a stream ({e})")))?;
        let (handshake, hello) =
            ClientHandshake::start(&self.ticket.host, &self.ticket.secret, &self.key)?;
        let mut first = BytesMut::from(
            &Message::Connect {
                host_id: self.ticket.host,
            }
            .to_vec()?[..],
        );
        put_frame(&mut first, &hello)?;
        send.write_chunk(first.freeze())
            .await
            .map_err(|e| Error::Cut(format!("cannot send to the relay ({e})")))?;

        let mut recv = FramedRecv::new(recv);
        match recv.message(self.handshake_timeout).await? {
            Message::Accepted => {}
            Message::Refused { reason } => return Err(Error::Refused(reason)),
            _ => {
                return Err(Error::Cut(
                    "the relay answered with an unexpected message".into(),
                ));
            }
        }
        let answer = recv
            .frame(MAX_HANDSHAKE_LEN, self.handshake_timeout)
            .await?;
        let (sealer, opener) = handshake.finish(&answer)?;
        Ok(Session {
            send,
            recv,
            sealer,
            opener,
        })
    }

    /// Closes the relay connection, letting queued data go out first (bounded wait).
    pub async fn close(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            conn.close(ferry_proto::codes::CLOSE_DONE.into(), b"done");
        }
    }
}
