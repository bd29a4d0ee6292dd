//! The first message of every hop stream decides what the stream is.
//!
//! `Register` makes it a host's control stream (`host.rs`), `Connect` a client session
//! (`session.rs`), and `Attach` hands a TCP host's dial-back to its waiting session
//! (`attach.rs`), and `Observe` is answered with the address the connection comes from
//! (over QUIC only: a peer punching a UDP path needs its UDP mapping; never logged).
//! Anything else closes the stream (and, on QUIC, the connection: the peer
//! speaks another protocol).

use std::sync::Arc;

use ferry_link::{ConnectionWindow, Framed, FramedError, LinkRecv, LinkSend};
use ferry_proto::codes::CLOSE_PROTOCOL;
use ferry_proto::connect::RelayConnect;
use ferry_proto::registration::RelayRegistration;
use ferry_proto::{EXPORTER_LEN, Message};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::host::{self, HostHop};
use crate::metrics::Refusal;
use crate::session::{self, Asker};
use crate::state::Shared;

/// Which hop a stream arrived on.
pub(crate) enum StreamHop {
    /// A QUIC connection, with the receive window its sessions widen.
    Quic(Arc<ConnectionWindow>),
    Tcp {
        exporter: [u8; EXPORTER_LEN],
    },
}

/// Reads a stream's first message and hands the stream to the host, session or attach logic.
/// (Not an `async fn`, which would keep every argument twice for the stream's lifetime.)
pub(crate) fn dispatch(
    shared: Arc<Shared>,
    hop: StreamHop,
    send: LinkSend,
    recv: LinkRecv,
    cancel: CancellationToken,
) -> impl Future<Output = ()> {
    let mut framed = Framed::new(recv);
    async move {
        let first = match framed.message(shared.fixed.handshake_timeout).await {
            Ok(message) => message,
            Err(e) => {
                // Silence past the handshake timeout is a refusal like a slow TLS handshake.
                if matches!(e, FramedError::Timeout) {
                    shared.metrics.refused(Refusal::HandshakeTimeout);
                }
                return debug!(error = %e, "stream ended before its first message");
            }
        };
        let outcome = match first {
            Message::Register { host_id, token, handshake } => {
                let (host_hop, exporter) = match hop {
                    StreamHop::Quic(window) => {
                        let Ok(exporter) = ferry_link::exporter::quic(window.connection()) else { return };
                        (HostHop::Quic(window), exporter)
                    }
                    StreamHop::Tcp { exporter } => (HostHop::Tcp, exporter),
                };
                let registration = RelayRegistration::new(host_id, token, handshake, &exporter);
                // Boxed: a host's control stream is one per host, but its future is the largest
                // of these branches and would otherwise set the size of every session's task.
                Box::pin(host::serve(shared, host_hop, send, framed, registration, cancel)).await
            }
            Message::Connect { host_id } => {
                let window = match hop {
                    StreamHop::Quic(window) => Some(window),
                    StreamHop::Tcp { .. } => None,
                };
                session::serve(shared, window, send, framed, RelayConnect::new(host_id), Asker::Client, cancel).await
            }
            Message::Forward { host_id, proof } => {
                // Only over QUIC, only with a fleet, only with the fleet's proof for this link.
                let (StreamHop::Quic(window), Some(fleet)) = (hop, shared.fleet.clone()) else {
                    return debug!("a Forward where no fleet link can be");
                };
                let proven = ferry_link::exporter::quic(window.connection())
                    .is_ok_and(|exporter| fleet.verify_forward(&exporter, &host_id, &proof));
                if !proven {
                    shared.metrics.refused(Refusal::BadProof);
                    window.connection().close(CLOSE_PROTOCOL.into(), b"not a node of this fleet");
                    return debug!("a Forward without the fleet's proof");
                }
                let connect = RelayConnect::new(host_id);
                session::serve(shared, Some(window), send, framed, connect, Asker::FleetNode, cancel).await
            }
            Message::Observe => {
                let StreamHop::Quic(window) = hop else { return debug!("an Observe over TCP") };
                let addr = window.connection().remote_address();
                let addr = std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port());
                let mut send = send;
                let _ = send.send_message(&Message::Observed { addr }).await;
                let _ = send.finish().await;
                Ok(())
            }
            Message::Attach { session } => {
                let (recv, first) = framed.into_parts();
                // An unknown or late session: the connection is dropped.
                let _ = shared.pending.attach(session, (send, recv, first));
                Ok(())
            }
            _ => {
                if let StreamHop::Quic(window) = hop {
                    window.connection().close(CLOSE_PROTOCOL.into(), b"unexpected first message");
                }
                return debug!("unexpected first message");
            }
        };
        if let Err(e) = outcome {
            debug!(error = %e, "stream ended with an error");
        }
    }
}
