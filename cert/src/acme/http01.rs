//! The HTTP-01 challenge listener: proves to the ACME server that we hold the names by
//! answering `GET /.well-known/acme-challenge/<token>` with the token's key authorisation
//! (RFC 8555 §8.3), and nothing else.
//!
//! It listens on port 80 of a public address for as long as an order takes, so anyone may
//! connect: it is HTTP/1.1 on hyper with every resource bounded. At most
//! [`Limits::max_connections`] connections are served at once (more wait in the listen
//! backlog), a request head is at most [`MAX_HEAD`] bytes (hyper answers `431` past that)
//! and must arrive within [`Limits::header_timeout`], a whole connection lasts at most
//! [`Limits::connection_timeout`], and a failed `accept` (out of file descriptors, say) is
//! retried after [`ACCEPT_BACKOFF`] rather than in a spin. One request per connection: the
//! answer is a few dozen bytes and ACME servers do not reuse connections. It never logs who
//! connected or which token was asked for.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::debug;

/// Path prefix of HTTP-01 challenge requests (RFC 8555 §8.3).
const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";
/// Largest request head read (hyper's smallest read buffer).
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// Pause after a failed `accept` before trying again.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How much one listener may hold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Connections served at once.
    pub(crate) max_connections: usize,
    /// Longest wait for a whole request head.
    pub(crate) header_timeout: Duration,
    /// Longest life of one connection, response included.
    pub(crate) connection_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(20),
        }
    }
}

/// Challenge token → key authorisation, filled in by the order as challenges come up.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tokens(Arc<Mutex<HashMap<String, String>>>);

impl Tokens {
    /// Answers `token` with `key_authorization` from now on.
    pub(crate) fn insert(&self, token: String, key_authorization: String) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(token, key_authorization);
    }

    fn get(&self, token: &str) -> Option<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(token).cloned()
    }
}

/// A running challenge listener. Dropping it stops it; [`Http01Server::shutdown`] also
/// waits for its connections to end.
pub(crate) struct Http01Server {
    cancel: CancellationToken,
    tracker: TaskTracker,
    _stop_on_drop: DropGuard,
}

impl Http01Server {
    /// Serves challenges from `tokens` on `listener` until shut down or dropped.
    pub(crate) fn spawn(listener: TcpListener, tokens: Tokens, limits: Limits) -> Self {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(accept_loop(listener, tokens, limits, cancel.clone(), tracker.clone()));
        Self { _stop_on_drop: cancel.clone().drop_guard(), cancel, tracker }
    }

    /// Stops accepting, ends open connections and waits for their tasks.
    pub(crate) async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    tokens: Tokens,
    limits: Limits,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // A slot first: past the cap, connections wait in the kernel's backlog.
        let permit = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return, // never closed
            },
        };
        let stream = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    debug!("challenge listener: accept failed: {e}");
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        tracker.spawn(serve_connection(stream, tokens.clone(), limits, cancel.clone(), permit));
    }
}

/// One connection: one request read within the limits, answered, closed.
async fn serve_connection(
    stream: TcpStream,
    tokens: Tokens,
    limits: Limits,
    cancel: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let service = service_fn(move |request| {
        let response = answer(&tokens, &request);
        async move { Ok::<_, Infallible>(response) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        biased;
        () = cancel.cancelled() => {}
        served = tokio::time::timeout(limits.connection_timeout, connection) => match served {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!("challenge listener: {e}"),
            Err(_) => debug!("challenge listener: connection timed out"),
        },
    }
}

/// The key authorisation for a known token asked for with `GET`, else `404`.
fn answer<B>(tokens: &Tokens, request: &Request<B>) -> Response<String> {
    let key_authorization = match (request.method(), request.uri().path().strip_prefix(CHALLENGE_PATH)) {
        (&Method::GET, Some(token)) if !token.is_empty() => tokens.get(token),
        _ => None,
    };
    match key_authorization {
        Some(body) => {
            let mut response = Response::new(body);
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            response
        }
        None => {
            let mut response = Response::new(String::new());
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Every wait in these tests.
    const WAIT: Duration = Duration::from_secs(10);

    async fn server(limits: Limits) -> (Http01Server, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tokens = Tokens::default();
        tokens.insert("tok".into(), "tok.thumb".into());
        (Http01Server::spawn(listener, tokens, limits), addr)
    }

    /// Sends `request` and reads until the server closes (within [`WAIT`]).
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await.expect("the server closes").unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        exchange(addr, format!("GET {path} HTTP/1.1\r\nHost: relay.test\r\n\r\n").as_bytes()).await
    }

    #[tokio::test]
    async fn serves_the_key_authorisation_and_404s_anything_else() {
        let (server, addr) = server(Limits::default()).await;
        let ok = get(addr, "/.well-known/acme-challenge/tok").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("\r\n\r\ntok.thumb"), "{ok}");
        assert!(ok.to_ascii_lowercase().contains("connection: close"), "{ok}");
        for path in ["/.well-known/acme-challenge/other", "/.well-known/acme-challenge/", "/", "/tok"] {
            let refused = get(addr, path).await;
            assert!(refused.starts_with("HTTP/1.1 404"), "{path}: {refused}");
        }
        let post =
            exchange(addr, b"POST /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                .await;
        assert!(post.starts_with("HTTP/1.1 404"), "{post}");
        let oversized =
            format!("GET /.well-known/acme-challenge/tok HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2 * MAX_HEAD));
        let refused = exchange(addr, oversized.as_bytes()).await;
        assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");
        server.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_while_100_idle_connections_are_open_and_one_sends_garbage() {
        let (server, addr) = server(Limits::default()).await;
        let mut idle = Vec::with_capacity(100);
        for _ in 0..100 {
            idle.push(tokio::time::timeout(WAIT, TcpStream::connect(addr)).await.unwrap().unwrap());
        }
        let garbage = exchange(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n").await;
        assert!(!garbage.starts_with("HTTP/1.1 200"), "{garbage}");
        let ok = get(addr, "/.well-known/acme-challenge/tok").await;
        assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with("\r\n\r\ntok.thumb"), "{ok}");
        assert!(get(addr, "/.well-known/acme-challenge/nope").await.starts_with("HTTP/1.1 404"));
        // The idle connections were open all along: a non-blocking read on each finds
        // nothing to read rather than the server's close.
        for stream in idle {
            let stream = stream.into_std().unwrap();
            let read = std::io::Read::read(&mut &stream, &mut [0u8; 1]);
            assert!(matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "{read:?}");
        }
        tokio::time::timeout(WAIT, server.shutdown()).await.expect("shutdown ends every connection");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_time_out_and_free_their_slots() {
        let limits = Limits {
            max_connections: 4,
            header_timeout: Duration::from_millis(200),
            connection_timeout: Duration::from_secs(2),
        };
        let (server, addr) = server(limits).await;
        let mut idle = Vec::new();
        for _ in 0..limits.max_connections {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // Every slot is held by a silent client; the request waits in the backlog until
        // the header timeout frees one.
        let ok = get(addr, "/.well-known/acme-challenge/tok").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        for mut stream in idle {
            let mut rest = Vec::new();
            tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await.expect("timed-out connection closed").ok();
            assert!(!String::from_utf8_lossy(&rest).contains("tok.thumb"));
        }
        server.shutdown().await;
    }
}
