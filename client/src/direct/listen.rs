//! The host's direct port: a QUIC endpoint (shared with the host's relay connections) and,
//! when asked, a TLS-over-TCP listener on the same port number.
//!
//! What a stranger can make the host do here is bounded: QUIC packets that are not QUIC
//! are dropped by quinn; handshakes beyond [`MAX_PENDING_HANDSHAKES`] at once are refused;
//! a connection that opens no stream dies at the hop's idle timeout; a stream whose first
//! frame is not tagged with the ticket secret is reset after one HMAC, before any Noise
//! operation and before the host dials its service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_link::{Framed, LinkRecv, LinkSend, TlsStream, TransportSettings, split_tls};
use ferry_proto::codes::RESET_HANDSHAKE_FAILED;
use ferry_proto::e2e::direct::{DIRECT_TAG_LEN, open_direct_hello};
use ferry_proto::e2e::handshake::MAX_HANDSHAKE_LEN;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::{DIRECT_ALPN, DirectConfig};
use crate::{Error, HopOptions};

/// What a direct session is handed to once its tag checked out: the stream and the
/// Noise message inside the hello (the host's `serve_hello`).
pub(crate) trait Sessions: Clone + Send + Sync + 'static {
    /// Serves one session.
    fn serve(
        &self,
        send: LinkSend,
        recv: Framed,
        hello: Vec<u8>,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// What the accept loops need from the host: its ticket secret (for the tag), its
/// handshake timeout, and where sessions go.
pub(crate) struct Admission<S> {
    pub(crate) secret: ferry_proto::TicketSecret,
    pub(crate) handshake_timeout: std::time::Duration,
    pub(crate) sessions: S,
}

/// Handshakes (QUIC or TLS) the direct port runs at once; more are refused.
pub const MAX_PENDING_HANDSHAKES: usize = 64;

/// The bound sockets of a host's direct port.
pub(crate) struct DirectPort {
    /// The QUIC endpoint; the host's relay connections are dialled from it too.
    pub(crate) endpoint: quinn::Endpoint,
    /// The same UDP socket, for the few datagrams a hole punch sends.
    pub(crate) punch: std::net::UdpSocket,
    tcp: Option<tokio::net::TcpListener>,
    tls: tokio_rustls::TlsAcceptor,
}

impl DirectPort {
    /// Binds `config.listen` (UDP, and TCP on the same port when asked).
    pub(crate) fn bind(config: &DirectConfig, options: &HopOptions) -> Result<Self, Error> {
        let listen_error = |source: std::io::Error| Error::DirectListen { addr: config.listen, source };
        let socket = std::net::UdpSocket::bind(config.listen).map_err(listen_error)?;
        ferry_link::udp::tune_socket(&socket);
        let punch = socket.try_clone().map_err(listen_error)?;
        let tls = server_tls()?;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls.clone())
            .map_err(|e| Error::DirectTls(rustls::Error::General(e.to_string())))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let transport = TransportSettings {
            stream_window: u64::from(options.stream_window),
            connection_window: None,
            send_window: None,
            incoming_streams: options.max_incoming_streams.max(1),
            idle_timeout: options.idle_timeout,
            keep_alive: Some(options.keep_alive),
            congestion: options.congestion,
        };
        let transport = transport
            .build()
            .map_err(|e| Error::DirectListen { addr: config.listen, source: std::io::Error::other(e) })?;
        server.transport_config(Arc::new(transport));
        let endpoint = ferry_link::udp::endpoint(socket, Some(server)).map_err(listen_error)?;
        let local = endpoint.local_addr().map_err(listen_error)?;
        let tcp = if config.tcp {
            let listener = std::net::TcpListener::bind(local).map_err(listen_error)?;
            listener.set_nonblocking(true).map_err(listen_error)?;
            Some(tokio::net::TcpListener::from_std(listener).map_err(listen_error)?)
        } else {
            None
        };
        Ok(Self { endpoint, punch, tcp, tls: tokio_rustls::TlsAcceptor::from(Arc::new(tls)) })
    }

    /// The bound address (the port a `:0` listen address was given).
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// Accepts direct sessions until `cancel`.
    pub(crate) async fn serve<S: Sessions>(
        self,
        admission: Admission<S>,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) {
        let config = Arc::new(admission);
        let pending = Arc::new(AtomicUsize::new(0));
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { return };
                    let Some(slot) = Slot::take(&pending) else {
                        incoming.refuse();
                        continue;
                    };
                    let (config, cancel, tracker2) = (config.clone(), cancel.clone(), tracker.clone());
                    tracker.spawn(async move {
                        let timeout = config.handshake_timeout;
                        let connection = match tokio::time::timeout(timeout, incoming).await {
                            Ok(Ok(connection)) => connection,
                            _ => return debug!("a direct QUIC handshake failed or timed out"),
                        };
                        drop(slot);
                        serve_connection(connection, config, cancel, tracker2).await;
                    });
                }
                accepted = accept_tcp(self.tcp.as_ref()) => {
                    let Ok((tcp, _)) = accepted else { continue };
                    let Some(slot) = Slot::take(&pending) else { continue };
                    let (config, cancel, acceptor) = (config.clone(), cancel.clone(), self.tls.clone());
                    tracker.spawn(async move {
                        let _ = tcp.set_nodelay(true);
                        let tls = match tokio::time::timeout(config.handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => tls,
                            _ => return debug!("a direct TLS handshake failed or timed out"),
                        };
                        drop(slot);
                        let (send, recv) = split_tls(TlsStream::Server(tls));
                        if let Err(e) = serve_stream(&config, send, recv, cancel).await {
                            debug!("direct session ended: {}", e.report());
                        }
                    });
                }
            }
        }
    }
}

/// One of [`MAX_PENDING_HANDSHAKES`] places, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(pending: &Arc<AtomicUsize>) -> Option<Self> {
        let taken = pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_PENDING_HANDSHAKES).then_some(n + 1));
        taken.is_ok().then(|| Self(pending.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn accept_tcp(
    listener: Option<&tokio::net::TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Each stream a client opens on a direct QUIC connection is one session.
async fn serve_connection<S: Sessions>(
    connection: quinn::Connection,
    config: Arc<Admission<S>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (send, recv) = tokio::select! {
            biased;
            _ = cancel.cancelled() => return connection.close(ferry_proto::codes::CLOSE_DONE.into(), b"host stopping"),
            stream = connection.accept_bi() => match stream {
                Ok(stream) => stream,
                Err(_) => return,
            },
        };
        let (config, cancel) = (config.clone(), cancel.clone());
        tracker.spawn(async move {
            if let Err(e) = serve_stream(&config, LinkSend::Quic(send), LinkRecv::Quic(recv), cancel).await {
                debug!("direct session ended: {}", e.report());
            }
        });
    }
}

/// A direct stream: the tagged hello, checked before anything else, then the session.
async fn serve_stream<S: Sessions>(
    config: &Admission<S>,
    mut send: LinkSend,
    recv: LinkRecv,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let mut recv = Framed::new(recv);
    let frame = recv.frame(DIRECT_TAG_LEN + MAX_HANDSHAKE_LEN, config.handshake_timeout).await?;
    let Some(hello) = open_direct_hello(&config.secret, &frame) else {
        send.reset(RESET_HANDSHAKE_FAILED);
        return Err(Error::HostRefused("a direct session without this host's ticket"));
    };
    config.sessions.serve(send, recv, hello.to_vec(), cancel).await
}

/// A fresh self-signed certificate for the direct port. Nobody checks it (the Noise
/// handshake authenticates the host); TLS needs one all the same.
fn server_tls() -> Result<rustls::ServerConfig, Error> {
    let key = rcgen::KeyPair::generate().map_err(|e| Error::DirectTls(rustls::Error::General(e.to_string())))?;
    let cert = rcgen::CertificateParams::new(vec!["ferry-direct".to_owned()])
        .and_then(|params| params.self_signed(&key))
        .map_err(|e| Error::DirectTls(rustls::Error::General(e.to_string())))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::DirectTls)?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .map_err(Error::DirectTls)?;
    tls.alpn_protocols = vec![DIRECT_ALPN.to_vec()];
    Ok(tls)
}
