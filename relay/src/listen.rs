//! The relay's sockets and accept loops: QUIC on UDP and TLS on TCP, one port number.
//!
//! Each accepted connection passes the per-source rate, the connection caps and the
//! pending-handshake caps (`Shared::admit_quic`, `Shared::admit_tcp`) before anything
//! costly, and its handshake runs in its own task, never on an accept loop. A QUIC
//! connection must open its first stream within the handshake timeout (as a TCP one must
//! finish TLS within it), or it is closed: PINGs alone keep no connection. Every stream a
//! handshaken connection carries goes to [`crate::dispatch`]. Every task is spawned on the
//! relay's `TaskTracker` and watches its `CancellationToken`, so shutting the relay down
//! ends them all.
//!
//! A QUIC attempt from an address not yet validated is answered with a Retry instead once
//! handshakes pile up (half of `max_pending_handshakes` taken) or its source has its share
//! of them: a Retry costs one stateless packet, and only a peer that receives at its
//! address can come back with the token, so a flood from forged addresses holds at most
//! half of the pending places and never a real source's. Why not always: a Retry costs
//! the peer a round trip. Measured on loopback, 200 QUIC sessions in a row, each on a new
//! connection (three runs): set-up took 2.80–2.97 ms median without a Retry, 2.95–3.11 ms
//! with one, and the relay's CPU per session was 0.9–1.35 ms either way (noise). So the
//! Retry is about free for the relay, but across the internet it is one more round trip
//! (tens of milliseconds) for every session set-up: honest peers pay it only under load.
//!
//! A refused connection is told why while the budget of explained refusals lasts
//! (`limits::RefusalNotes`): a QUIC one finishes its handshake and is closed with
//! `CLOSE_RATE_LIMITED` or `CLOSE_BUSY` and a reason (an application close is only
//! readable by the peer once the handshake is done; `Incoming::refuse` carries no reason,
//! only the transport's CONNECTION_REFUSED); a TCP one finishes TLS and gets a `Refused`
//! message. Past that budget a refused connection costs nothing: a bare QUIC refusal, a
//! dropped TCP socket.

use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_link::{ConnectionWindow, LinkRecv, LinkSend, split_tls};
use ferry_proto::codes::{CLOSE_BUSY, CLOSE_HANDSHAKE_TIMEOUT, CLOSE_RATE_LIMITED, CLOSE_SHUTDOWN};
use ferry_proto::{EXPORTER_LEN, Message, RefuseReason};
use tokio::net::TcpListener;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::Error;
use crate::dispatch::{StreamHop, dispatch};
use crate::limits::ConnectionSlot;
use crate::metrics::Refusal;
use crate::state::{Admitted, PendingHandshake, QuicAdmission, Shared};

/// Longest an explained refusal may take (its handshake, the message): a refusal is
/// cheap or it is dropped.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Most bytes read from a refused TCP peer while it takes in the refusal (its first
/// message and end-to-end hello fit in far less).
const REFUSAL_DRAIN: usize = 16 * 1024;

/// Enlarges the QUIC socket's buffers; says how to lift the kernel's cap if it applies.
pub(crate) fn enlarge_udp_buffers(socket: &UdpSocket) {
    use ferry_link::udp::{WANTED_BUFFER, tune_socket};
    if let Some(granted) = tune_socket(socket).filter(|b| b.capped()) {
        warn!(
            recv_kib = granted.recv / 1024,
            send_kib = granted.send / 1024,
            "the kernel capped the QUIC socket's buffers below the {} MiB wanted; datagrams that \
             arrive in bursts get dropped and QUIC slows down. Raise the cap with \
             `sysctl -w net.core.rmem_max={WANTED_BUFFER} net.core.wmem_max={WANTED_BUFFER}`",
            WANTED_BUFFER >> 20
        );
    }
}

/// Binds UDP and TCP on one port number (a fresh one when port 0 was asked for).
pub(crate) fn bind_both(
    listen: SocketAddr,
    quic: bool,
    tcp: bool,
) -> Result<(Option<UdpSocket>, Option<StdTcpListener>), Error> {
    let bind_err = |source| Error::Bind { addr: listen, source };
    for _ in 0..16 {
        let udp = quic.then(|| UdpSocket::bind(listen)).transpose().map_err(bind_err)?;
        let port = match &udp {
            Some(u) => u.local_addr().map_err(bind_err)?.port(),
            None => listen.port(),
        };
        if !tcp {
            return Ok((udp, None));
        }
        match StdTcpListener::bind(SocketAddr::new(listen.ip(), port)) {
            Ok(listener) => return Ok((udp, Some(listener))),
            // The UDP port's TCP twin is taken: with port 0, try another pair.
            Err(e) if listen.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(bind_err(e)),
        }
    }
    Err(bind_err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free port pair for UDP and TCP")))
}

pub(crate) async fn quic_accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let incoming = tokio::select! {
            biased;
            _ = shared.draining.cancelled() => return,
            _ = cancel.cancelled() => return,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { return };
        match shared.admit_quic(incoming.remote_address().ip(), incoming.remote_address_validated()) {
            QuicAdmission::Admitted(admitted) => {
                tracker.spawn(serve_quic(incoming, admitted, shared.clone(), cancel.clone(), tracker.clone()));
            }
            // Stateless: the relay keeps nothing until the peer comes back with the token.
            // `admit_quic` asks for a Retry only when the address is not validated, and
            // quinn allows one then; should it not, the attempt is dropped.
            QuicAdmission::Retry => {
                if let Err(e) = incoming.retry() {
                    e.into_incoming().ignore();
                }
            }
            QuicAdmission::Refused(reason) if shared.refusal_notes.take() => {
                tracker.spawn(refuse_quic(incoming, reason, cancel.clone()));
            }
            QuicAdmission::Refused(_) => incoming.refuse(),
        }
    }
}

/// Finishes a refused connection's QUIC handshake and closes it with the reason, so the
/// peer reads why (within [`REFUSAL_TIMEOUT`]). It takes no pending-handshake slot: the
/// budget of explained refusals (32 a second) times the timeout bounds how many run.
async fn refuse_quic(incoming: quinn::Incoming, reason: RefuseReason, cancel: CancellationToken) {
    let handshake = async { incoming.accept()?.await };
    let conn = tokio::select! {
        biased;
        _ = cancel.cancelled() => return,
        conn = tokio::time::timeout(REFUSAL_TIMEOUT, handshake) => match conn {
            Ok(Ok(conn)) => conn,
            _ => return debug!("a refused QUIC connection did not finish its handshake"),
        },
    };
    let code = if reason == RefuseReason::RateLimited { CLOSE_RATE_LIMITED } else { CLOSE_BUSY };
    conn.close(code.into(), reason.to_string().as_bytes());
}

async fn serve_quic(
    incoming: quinn::Incoming,
    admitted: Admitted,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let Admitted { handshake: slot, connection: _open } = admitted;
    let started = Instant::now();
    let conn = match tokio::time::timeout(shared.fixed.handshake_timeout, async { incoming.accept()?.await }).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return debug!(error = %e, "QUIC handshake failed"),
        Err(_) => {
            shared.metrics.refused(Refusal::HandshakeTimeout);
            return debug!("QUIC handshake timed out");
        }
    };
    shared.metrics.handshake_seconds(started.elapsed());
    drop(slot);
    // Its receive window widens by one buffer per session it carries (`ferry_link::window`).
    let window = ConnectionWindow::new(conn.clone(), shared.fixed.buffer_per_direction as u64);
    // The first stream is due within the handshake timeout: a connection that only PINGs
    // would otherwise hold its memory and its place for ever.
    let mut deadline = Some(tokio::time::Instant::now() + shared.fixed.handshake_timeout);
    loop {
        let first_stream_due = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let stream = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                conn.close(CLOSE_SHUTDOWN.into(), b"relay shutting down");
                return;
            }
            stream = conn.accept_bi() => stream,
            () = first_stream_due => {
                shared.metrics.refused(Refusal::HandshakeTimeout);
                conn.close(CLOSE_HANDSHAKE_TIMEOUT.into(), b"no stream within the handshake timeout");
                return debug!("QUIC connection opened no stream in time");
            }
        };
        let Ok((send, recv)) = stream else { return };
        deadline = None;
        let hop = StreamHop::Quic(window.clone());
        tracker.spawn(dispatch(shared.clone(), hop, LinkSend::Quic(send), LinkRecv::Quic(recv), cancel.clone()));
    }
}

pub(crate) async fn tcp_accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shared.draining.cancelled() => return,
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => match shared.admit_tcp(peer.ip()) {
                Ok(admitted) => {
                    tracker.spawn(serve_tcp(tcp, admitted, shared.clone(), cancel.clone()));
                }
                Err(reason) if shared.refusal_notes.take() => {
                    tracker.spawn(refuse_tcp(tcp, reason, shared.clone(), cancel.clone()));
                }
                // Past the budget of explained refusals, dropping the socket closes it.
                Err(_) => drop(tcp),
            },
            // Out of file descriptors or similar: back off briefly instead of spinning.
            Err(e) => {
                debug!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[expect(clippy::manual_async_fn, reason = "an `async fn` keeps its arguments twice (pump module docs)")]
fn serve_tcp(
    tcp: tokio::net::TcpStream,
    admitted: Admitted,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> impl Future<Output = ()> {
    // The handshake's state (1.5 KiB) is boxed, so the connection's task keeps no room for
    // it during the session. Not an `async fn`, which would keep every argument twice (see
    // the pump's module docs).
    async move {
        let Admitted { handshake: slot, connection } = admitted;
        // Held while the connection is open: it counts towards the connection caps.
        let _open: ConnectionSlot = connection;
        if let Some((send, recv, exporter)) = Box::pin(accept_tls(tcp, slot, &shared)).await {
            dispatch(shared, StreamHop::Tcp { exporter }, send, recv, cancel).await;
        }
    }
}

/// Finishes a refused TCP connection's TLS handshake and sends `Refused { reason }` as the
/// answer to the message the peer is about to send (within [`REFUSAL_TIMEOUT`]). What the
/// peer sends is read (up to [`REFUSAL_DRAIN`]) until it hangs up: a socket closed with
/// bytes unread is reset, and the reset can destroy the refusal before the peer read it.
async fn refuse_tcp(tcp: tokio::net::TcpStream, reason: RefuseReason, shared: Arc<Shared>, cancel: CancellationToken) {
    let _ = tcp.set_nodelay(true);
    let acceptor = shared.live().tcp_tls.clone();
    let refusal = async {
        let tls = acceptor.accept(tcp).await.ok()?;
        let (mut send, mut recv) = split_tls(tokio_rustls::TlsStream::Server(tls));
        send.send_message(&Message::Refused { reason }).await.ok()?;
        send.finish().await.ok()?;
        let mut drained = 0;
        while drained < REFUSAL_DRAIN {
            match recv.read_chunk().await {
                Ok(Some(chunk)) => drained += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
        Some(())
    };
    tokio::select! {
        biased;
        _ = cancel.cancelled() => {}
        _ = tokio::time::timeout(REFUSAL_TIMEOUT, refusal) => {}
    }
}

/// The TLS handshake of a TCP connection (bounded by the handshake timeout); the hop's
/// halves and its registration exporter, or `None` if it failed.
///
/// ALPN `ferry/1` is required, as QUIC requires it: rustls refuses a client whose ALPN
/// list lacks it, but serves one that sends no list at all (TLS's lenient rule; there is
/// no rustls option to make it strict), so the ClientHello is read first and such a
/// client is closed before the relay signs anything for it. Both kinds are counted as
/// `refused{no_alpn}` and never reach the ferry protocol.
async fn accept_tls(
    tcp: tokio::net::TcpStream,
    slot: PendingHandshake,
    shared: &Shared,
) -> Option<(LinkSend, LinkRecv, [u8; EXPORTER_LEN])> {
    let _ = tcp.set_nodelay(true);
    let started = Instant::now();
    let config = shared.live().tcp_tls.config().clone();
    let handshake = async {
        let hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        let offered = hello.client_hello().alpn().is_some_and(|mut offered| offered.next().is_some());
        if !offered {
            return Ok(None);
        }
        hello.into_stream(config).await.map(Some)
    };
    let tls = match tokio::time::timeout(shared.fixed.handshake_timeout, handshake).await {
        Ok(Ok(Some(tls))) => tls,
        Ok(Ok(None)) => {
            shared.metrics.refused(Refusal::NoAlpn);
            debug!("a TLS client offered no ALPN");
            return None;
        }
        Ok(Err(e)) => {
            if is_no_alpn(&e) {
                shared.metrics.refused(Refusal::NoAlpn);
            }
            debug!(error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            shared.metrics.refused(Refusal::HandshakeTimeout);
            debug!("TLS handshake timed out");
            return None;
        }
    };
    shared.metrics.handshake_seconds(started.elapsed());
    drop(slot);
    let tls = tokio_rustls::TlsStream::Server(tls);
    let exporter = ferry_link::exporter::tls(&tls).ok()?;
    let (send, recv) = split_tls(tls);
    Some((send, recv, exporter))
}

/// Whether a failed TLS handshake was rustls refusing a client whose ALPN list lacks
/// `ferry/1` (tokio-rustls carries the rustls error inside the `io::Error`).
fn is_no_alpn(e: &std::io::Error) -> bool {
    let inner = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    matches!(inner, Some(rustls::Error::NoApplicationProtocol))
}
