//! The admin listener: `GET /metrics` for Prometheus, `GET /healthz` for load balancers,
//! and `GET /usage` for `ferry-relay usage` (this node's quota accounts and what each used
//! this period: without a fleet, usage lives only in the running relay).
//!
//! HTTP/1.1 on hyper. The port should be private; even so, anything that reaches it is
//! untrusted, so everything a client can hold is bounded: connections served at once
//! ([`MAX_CONNECTIONS`], a semaphore; more wait in the listen backlog), the request head
//! ([`MAX_HEAD`] bytes, [`MAX_HEADERS`] headers, else `431`), the time to send a head
//! ([`HEADER_READ_TIMEOUT`], which also bounds an idle kept-alive connection), the time a
//! request may take from its head to the next ([`REQUEST_TIMEOUT`], so a client that stops
//! reading its response loses the connection) and the requests per kept-alive connection
//! ([`MAX_REQUESTS_PER_CONNECTION`]). A failing `accept` is retried with backoff, never in
//! a spin. Nothing here logs who connected or what they sent.

use std::cell::Cell;
use std::convert::Infallible;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{self, Metrics};

/// Longest wait for a complete request head: from the connection, or from the previous
/// response on a kept-alive connection (so it is also the keep-alive idle timeout).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a request may take from its head being read until the next request (or the
/// end of the connection): answering is instant, so what this bounds is a client that
/// does not read the response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted; anything larger gets `431` and the connection is closed.
/// (8 KiB is also the smallest buffer hyper accepts.)
const MAX_HEAD: usize = 8 * 1024;
/// Most header lines in a request head.
const MAX_HEADERS: usize = 64;
/// Requests served on one kept-alive connection; the last response says `Connection: close`.
const MAX_REQUESTS_PER_CONNECTION: u32 = 100;
/// Admin connections served at once; more wait in the listen backlog. Each is cheap (a
/// task and an 8 KiB buffer) and short-lived (the timeouts above), so the cap is set well
/// above what scrapers and health checks need, to leave room for them beside idle sockets.
const MAX_CONNECTIONS: usize = 1024;
/// How much of a request left unread after a parse error is read and discarded, so the
/// close is a clean FIN the client can read the `400`/`431` before, not a reset that
/// destroys it.
const MAX_DRAIN: usize = 64 * 1024;
/// Longest time spent on that discarding.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How long, once the relay shuts down, a request in flight may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// First pause after a failed `accept` (say, out of file descriptors); it doubles while
/// `accept` keeps failing, up to [`MAX_ACCEPT_BACKOFF`].
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between `accept` attempts.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// What `/healthz` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// `200 ok`.
    Serving,
    /// `200 degraded: …`: serving local hosts and running sessions, but the fleet's
    /// directory is unreachable, so hosts at other nodes cannot be reached through this one.
    /// Still `200`: taking this node out of a load balancer would only make things worse.
    Degraded,
    /// `503 shutting down`: a graceful shutdown has begun; load balancers should stop
    /// sending new clients.
    Draining,
}

/// What `/healthz` reports now.
type Healthy = dyn Fn() -> Health + Send + Sync;

/// What `/usage` answers now.
type Usage = dyn Fn() -> String + Send + Sync;

/// Serves `/metrics` and `/healthz` on `listener` until `cancel` fires, then waits for the
/// connections in flight (each bounded by [`SHUTDOWN_GRACE`]) to finish.
///
/// `healthy` says what to answer `/healthz` with (see [`Health`]), `usage` what to answer
/// `/usage` with.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    healthy: impl Fn() -> Health + Send + Sync + 'static,
    usage: impl Fn() -> String + Send + Sync + 'static,
    cancel: CancellationToken,
) {
    let healthy: Arc<Healthy> = Arc::new(healthy);
    let usage: Arc<Usage> = Arc::new(usage);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .keep_alive(true)
        // `Content-Type`, not `content-type`: what this port has always sent, and what
        // naive scripts grep for.
        .title_case_headers(true);
    let http = Arc::new(http);
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = ACCEPT_BACKOFF;
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
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            },
        };
        backoff = ACCEPT_BACKOFF;
        let (metrics, http, cancel) = (metrics.clone(), http.clone(), cancel.clone());
        let answers = Answers { healthy: healthy.clone(), usage: usage.clone() };
        tracker.spawn(async move {
            handle(stream, &http, &metrics, &answers, &cancel).await;
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// What the answers of `/healthz` and `/usage` come from.
struct Answers {
    healthy: Arc<Healthy>,
    usage: Arc<Usage>,
}

/// Serves one connection until the client closes it, a limit ends it or `cancel` fires.
async fn handle(
    mut stream: TcpStream,
    http: &http1::Builder,
    metrics: &Metrics,
    answers: &Answers,
    cancel: &CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    // When the request being served must be done (`None` between requests).
    let (deadline_tx, mut deadline_rx) = watch::channel(None::<Instant>);
    let served = Cell::new(0u32);
    let service = service_fn(move |request: Request<Incoming>| {
        deadline_tx.send_replace(Some(Instant::now() + REQUEST_TIMEOUT));
        served.set(served.get() + 1);
        let mut response = respond(&request, metrics, answers);
        if served.get() >= MAX_REQUESTS_PER_CONNECTION {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        std::future::ready(Ok::<_, Infallible>(response))
    });
    // Borrowing the stream keeps it ours once hyper is done, to drain it after an error.
    let mut connection = pin!(http.serve_connection(TokioIo::new(&mut stream), service));
    let mut grace = None;
    let outcome = loop {
        let deadline = match (*deadline_rx.borrow_and_update(), grace) {
            (Some(request), Some(grace)) => Some(std::cmp::min(request, grace)),
            (request, grace) => request.or(grace),
        };
        tokio::select! {
            biased;
            () = cancel.cancelled(), if grace.is_none() => {
                // Idle connections close now; a request in flight gets a moment to finish.
                connection.as_mut().graceful_shutdown();
                grace = Some(Instant::now() + SHUTDOWN_GRACE);
            }
            outcome = connection.as_mut() => break Some(outcome),
            Ok(()) = deadline_rx.changed() => {}
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break None,
        }
    };
    match outcome {
        None => tracing::debug!("admin connection timed out"),
        Some(Ok(())) => {}
        Some(Err(error)) if error.is_parse() || error.is_parse_too_large() => {
            tracing::debug!("admin request unreadable");
            // hyper has answered `400` or `431`; unread bytes at close would make the kernel
            // send a reset, which can discard that answer before the client reads it.
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, finish_and_drain(&mut stream)).await;
        }
        Some(Err(error)) => tracing::debug!(%error, "admin connection failed"),
    }
}

/// Ends the write side, then reads and discards what the client still sends (bounded).
async fn finish_and_drain(stream: &mut TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut chunk = [0u8; 4096];
    let mut total = 0;
    while total < MAX_DRAIN {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => total += read,
        }
    }
}

/// The answer to one request.
fn respond(request: &Request<Incoming>, metrics: &Metrics, answers: &Answers) -> Response<Full<Bytes>> {
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    // The route is logged by name, never the path a client sent.
    let (route, status, content_type, body) = match request.uri().path() {
        "/metrics" | "/healthz" | "/usage" if !reads => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            tracing::debug!(method = %request.method(), status = 405, "admin request");
            return response;
        }
        "/metrics" => ("metrics", StatusCode::OK, metrics::CONTENT_TYPE, Bytes::from(metrics.render())),
        "/usage" => ("usage", StatusCode::OK, TEXT, Bytes::from((answers.usage)())),
        "/healthz" => match (answers.healthy)() {
            Health::Serving => ("healthz", StatusCode::OK, TEXT, Bytes::from_static(b"ok\n")),
            Health::Degraded => (
                "healthz",
                StatusCode::OK,
                TEXT,
                Bytes::from_static(b"degraded: the fleet directory (Redis) is unreachable; local hosts are served\n"),
            ),
            Health::Draining => {
                ("healthz", StatusCode::SERVICE_UNAVAILABLE, TEXT, Bytes::from_static(b"shutting down\n"))
            }
        },
        _ => ("other", StatusCode::NOT_FOUND, TEXT, Bytes::from_static(b"not found\n")),
    };
    tracing::debug!(method = %request.method(), route, status = status.as_u16(), "admin request");
    // For `HEAD`, hyper sends these headers (the body's length included) and no body.
    with_body(status, content_type, body)
}

/// The `Content-Type` of plain-text answers.
const TEXT: &str = "text/plain; charset=utf-8";

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_body(status, TEXT, Bytes::from_static(body.as_bytes()))
}

fn with_body(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU8, Ordering};

    use super::*;

    struct Admin {
        addr: SocketAddr,
        /// 0 serving, 1 degraded, 2 draining.
        healthy: Arc<AtomicU8>,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(metrics: Arc<Metrics>) -> Admin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let healthy = Arc::new(AtomicU8::new(0));
        let cancel = CancellationToken::new();
        let flag = healthy.clone();
        let health = move || match flag.load(Ordering::Relaxed) {
            0 => Health::Serving,
            1 => Health::Degraded,
            _ => Health::Draining,
        };
        let task = tokio::spawn(serve(
            listener,
            metrics,
            health,
            || "token alice: 1 B (1 bytes)\n".to_owned(),
            cancel.clone(),
        ));
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

    /// One request on its own connection; `Connection: close` so the response ends at EOF.
    async fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
        fetch(addr, format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n").as_bytes()).await
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

        admin.healthy.store(1, Ordering::Relaxed);
        let (status, _, body) = get(admin.addr, "/healthz").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.starts_with("degraded: "), "{body}");

        admin.healthy.store(2, Ordering::Relaxed);
        let (status, _, body) = get(admin.addr, "/healthz").await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(body, "shutting down\n");

        let (status, _, body) = get(admin.addr, "/usage").await;
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "token alice: 1 B (1 bytes)\n"));

        let (status, headers, _) = get(admin.addr, "/nope").await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        assert!(headers.contains("Connection: close"), "{headers}");

        let (status, headers, _) =
            fetch(admin.addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
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
        request.resize(MAX_HEAD + 1024, b'a');
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
        for piece in [&b"GET /hea"[..], b"lthz HTTP/1.1\r\n", b"Host: x\r", b"\nConnection: close\r", b"\n\r", b"\n"] {
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

    /// Reads one response (head and `Content-Length` body) from a kept-alive connection.
    async fn read_response(stream: &mut tokio::io::BufReader<TcpStream>) -> (String, String) {
        use tokio::io::AsyncBufReadExt;
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            let read = stream.read_line(&mut head).await.unwrap();
            assert!(read > 0, "the connection closed mid-response: {head}");
        }
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .map_or(0, |length| length.parse().unwrap());
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.unwrap();
        (head, String::from_utf8(body).unwrap())
    }

    #[tokio::test]
    async fn a_kept_alive_connection_serves_a_bounded_number_of_requests() {
        let metrics = Arc::new(Metrics::default());
        let admin = start(metrics.clone()).await;
        let mut stream = tokio::io::BufReader::new(TcpStream::connect(admin.addr).await.unwrap());
        for served in 1..=MAX_REQUESTS_PER_CONNECTION {
            let path = if served % 2 == 0 { "/metrics" } else { "/healthz" };
            let request = format!("GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n");
            stream.get_mut().write_all(request.as_bytes()).await.unwrap();
            let (head, body) = tokio::time::timeout(Duration::from_secs(5), read_response(&mut stream)).await.unwrap();
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            assert!(body == "ok\n" || body.contains("\nferry_relay_sessions_active 0\n"), "{body}");
            let last = served == MAX_REQUESTS_PER_CONNECTION;
            assert_eq!(head.contains("\r\nConnection: close\r\n"), last, "request {served}: {head}");
        }
        // After the last one the server closes the connection.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await.unwrap().unwrap();
        assert!(rest.is_empty());
        admin.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), admin.task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn head_gets_the_headers_of_get_and_no_body() {
        let admin = start(Arc::new(Metrics::default())).await;
        let (_, get_headers, get_body) = get(admin.addr, "/metrics").await;
        let (status, headers, body) =
            fetch(admin.addr, b"HEAD /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.is_empty(), "{body}");
        assert!(headers.contains(&format!("Content-Length: {}", get_body.len())), "{headers}");
        assert!(get_headers.contains(&format!("Content-Length: {}", get_body.len())), "{get_headers}");
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
