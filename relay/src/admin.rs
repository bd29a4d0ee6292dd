//! The admin listener: `GET /metrics` for Prometheus and `GET /healthz` for load balancers.
//!
//! Two fixed pages do not justify an HTTP stack, so this is a deliberately tiny HTTP/1.1
//! server: it reads one request head (at most [`MAX_REQUEST`] bytes, within
//! [`READ_TIMEOUT`]), answers and closes. It should listen on a private address; even so,
//! anything that reaches it is untrusted, so every read and write is bounded in size and time
//! and the number of connections handled at once is capped. It never logs who connected.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// Longest wait for a whole request head, and for a response to be written.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted; anything larger gets `431` and the connection is closed.
const MAX_REQUEST: usize = 8 * 1024;
/// Admin connections handled at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// How much of a refused oversized request is read and discarded, so the close is a clean
/// FIN the client can read the `431` before, not a reset that destroys it.
const MAX_DRAIN: usize = 64 * 1024;
/// Pause after a failed `accept` (say, out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `/metrics` and `/healthz` on `listener` until `cancel` fires, then waits for the
/// connections in flight (each bounded by its timeouts) to finish.
///
/// `healthy` says whether to answer `/healthz` with `200` or `503` (for example, `false` once
/// a graceful shutdown has begun, so load balancers stop sending new clients).
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    healthy: impl Fn() -> bool + Send + Sync + 'static,
    cancel: CancellationToken,
) {
    let healthy: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(healthy);
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let stream = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                // The peer's address is dropped unread: the admin port logs no addresses.
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin listener cannot accept; retrying");
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        let metrics = metrics.clone();
        let healthy = healthy.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            tokio::select! {
                biased;
                () = cancel.cancelled() => {}
                () = handle(stream, &metrics, healthy.as_ref()) => {}
            }
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Answers one request on `stream` and closes it.
async fn handle(mut stream: TcpStream, metrics: &Metrics, healthy: &(dyn Fn() -> bool + Send + Sync)) {
    let response = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_elapsed) => {
            tracing::debug!("admin request timed out");
            return;
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "admin request unreadable");
            return;
        }
        Ok(Ok(Head::TooLarge)) => Response::text(431, "Request Header Fields Too Large", "request too large\n"),
        Ok(Ok(Head::Complete(head))) => respond(&head, metrics, healthy),
    };
    let too_large = response.status == 431;
    let written = tokio::time::timeout(READ_TIMEOUT, async {
        stream.write_all(&response.encode()).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::debug!("admin response not delivered");
        return;
    }
    if too_large {
        // Unread bytes at close make the kernel send a reset, which can discard the 431 the
        // client has not read yet; read the rest of the request (bounded) first.
        let _ = tokio::time::timeout(Duration::from_secs(1), drain(&mut stream)).await;
    }
}

/// A request head as read from the socket.
enum Head {
    /// Everything up to and including the blank line that ends the head.
    Complete(Vec<u8>),
    /// The head did not end within [`MAX_REQUEST`] bytes.
    TooLarge,
}

/// Reads until the blank line that ends a request head, at most [`MAX_REQUEST`] bytes.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Head> {
    let mut head = Vec::with_capacity(1024);
    const CHUNK: usize = 1024;
    let mut chunk = [0u8; CHUNK];
    loop {
        let room = MAX_REQUEST - head.len();
        if room == 0 {
            return Ok(Head::TooLarge);
        }
        let read = stream.read(&mut chunk[..room.min(CHUNK)]).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        // Look for the end only where it can be: in the new bytes and the three before them.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..read]);
        if head[from..].windows(4).any(|window| window == b"\r\n\r\n") {
            return Ok(Head::Complete(head));
        }
    }
}

async fn drain(stream: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    let mut total = 0;
    while total < MAX_DRAIN {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => total += read,
        }
    }
}

/// The answer to a request head.
fn respond(head: &[u8], metrics: &Metrics, healthy: &(dyn Fn() -> bool + Send + Sync)) -> Response {
    let Some(request_line) = head.split(|byte| *byte == b'\n').next() else {
        return Response::text(400, "Bad Request", "bad request\n");
    };
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "Bad Request", "bad request\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text(505, "HTTP Version Not Supported", "HTTP/1.x only\n");
    }
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    let mut response = match path {
        "/metrics" | "/healthz" if method != "GET" && method != "HEAD" => {
            let mut response = Response::text(405, "Method Not Allowed", "method not allowed\n");
            response.allow = true;
            response
        }
        "/metrics" => Response {
            status: 200,
            reason: "OK",
            content_type: crate::metrics::CONTENT_TYPE,
            body: metrics.render().into_bytes(),
            allow: false,
        },
        "/healthz" if healthy() => Response::text(200, "OK", "ok\n"),
        "/healthz" => Response::text(503, "Service Unavailable", "shutting down\n"),
        _ => Response::text(404, "Not Found", "not found\n"),
    };
    if method == "HEAD" {
        response.body.clear();
    }
    tracing::debug!(method, path, status = response.status, "admin request");
    response
}

/// A complete response; always followed by closing the connection.
struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    /// Whether to add `Allow: GET, HEAD` (on `405`).
    allow: bool,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: &str) -> Self {
        Self { status, reason, content_type: "text/plain; charset=utf-8", body: body.as_bytes().to_vec(), allow: false }
    }

    fn encode(&self) -> Vec<u8> {
        let allow = if self.allow { "Allow: GET, HEAD\r\n" } else { "" };
        // A HEAD response's length is that of the GET body; ours is cleared, so for HEAD the
        // length is 0, which clients accept since they read no body either way.
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len(),
        );
        let mut bytes = Vec::with_capacity(head.len() + self.body.len());
        bytes.extend_from_slice(head.as_bytes());
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    struct Admin {
        addr: SocketAddr,
        healthy: Arc<AtomicBool>,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(metrics: Arc<Metrics>) -> Admin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let healthy = Arc::new(AtomicBool::new(true));
        let cancel = CancellationToken::new();
        let flag = healthy.clone();
        let task = tokio::spawn(serve(listener, metrics, move || flag.load(Ordering::Relaxed), cancel.clone()));
        Admin { addr, healthy, cancel, task }
    }

    /// Sends `request` raw and returns (status line, headers, body) of the response, read to EOF.
    async fn fetch(addr: SocketAddr, request: &[u8]) -> (String, String, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await.unwrap().unwrap();
        let response = String::from_utf8(response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let (status, headers) = head.split_once("\r\n").unwrap();
        (status.to_owned(), headers.to_owned(), body.to_owned())
    }

    async fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
        fetch(addr, format!("GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n").as_bytes()).await
    }

    #[tokio::test]
    async fn serves_metrics_health_and_not_found() {
        let metrics = Arc::new(Metrics::default());
        metrics.session_opened();
        let admin = start(metrics.clone()).await;

        let (status, headers, body) = get(admin.addr, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(headers.contains("Content-Type: text/plain; version=0.0.4"), "{headers}");
        assert!(headers.contains("Connection: close"), "{headers}");
        assert!(headers.contains(&format!("Content-Length: {}", body.len())), "{headers}");
        assert!(body.contains("\nferry_relay_sessions_active 1\n"), "{body}");

        let (status, headers, body) = get(admin.addr, "/healthz").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(headers.contains("Connection: close"), "{headers}");
        assert_eq!(body, "ok\n");

        admin.healthy.store(false, Ordering::Relaxed);
        let (status, _, body) = get(admin.addr, "/healthz").await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(body, "shutting down\n");

        let (status, headers, _) = get(admin.addr, "/nope").await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        assert!(headers.contains("Connection: close"), "{headers}");

        let (status, headers, _) = fetch(admin.addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
        assert!(headers.contains("Allow: GET, HEAD"), "{headers}");

        let (status, _, body) = get(admin.addr, "/metrics?name[]=x").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.starts_with("# HELP"));

        let (status, _, _) = fetch(admin.addr, b"nonsense\r\n\r\n").await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request");

        admin.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), admin.task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn oversized_request_gets_431_and_is_closed() {
        let admin = start(Arc::new(Metrics::default())).await;
        let mut request = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
        request.resize(MAX_REQUEST + 1024, b'a');
        request.extend_from_slice(b"\r\n\r\n");
        let (status, headers, _) = fetch(admin.addr, &request).await;
        assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
        assert!(headers.contains("Connection: close"), "{headers}");

        // The server still answers afterwards.
        let (status, _, _) = get(admin.addr, "/healthz").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        admin.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), admin.task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_request_split_across_reads_is_answered() {
        let admin = start(Arc::new(Metrics::default())).await;
        let mut stream = TcpStream::connect(admin.addr).await.unwrap();
        for piece in [&b"GET /hea"[..], b"lthz HTTP/1.1\r\n", b"Host: x\r", b"\n\r", b"\n"] {
            stream.write_all(piece).await.unwrap();
            stream.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nok\n"), "{response}");
        admin.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), admin.task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_does_not_wait_for_idle_connections() {
        let admin = start(Arc::new(Metrics::default())).await;
        // A client that connects and says nothing must not hold up shutdown for the read timeout.
        let _idle = TcpStream::connect(admin.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        admin.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(1), admin.task).await.unwrap().unwrap();
    }
}
