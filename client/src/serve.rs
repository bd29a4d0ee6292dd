//! `ferry connect` as a library call: [`Client::serve`] turns every connection to a local
//! listener into one end-to-end session through the client.
//!
//! Shaped like a server's accept loop (mini-redis `server::run`, hyper's and axum's
//! accept handling): the stop signal is injected, every session is a task the loop owns
//! and ends, and a failing `accept` is classified instead of ending the loop. Running out
//! of file descriptors (`EMFILE`) or memory is transient — the sessions that hold them
//! end, and then accepting works again — so it is retried with backoff and reported;
//! errors that concern only the one connection being accepted (reset before it was
//! taken, say) are skipped at once; anything that says the listener itself is unusable
//! ends the loop with the error, never silently.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::{Client, Error};

/// After a cancel, how long [`Client::serve`] waits for its sessions (they end at once:
/// their bridges are cancelled; this bounds a session stuck in a local write).
pub const SESSION_WIND_DOWN: Duration = Duration::from_secs(5);

/// The first and the longest pause after an accept failure that may pass.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Where [`Client::serve`] takes local connections from: a [`TcpListener`], or anything
/// that behaves like one (tests inject failures through this).
pub trait Accept: Send {
    /// The next local connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

impl Accept for TcpListener {
    async fn accept(&mut self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// What a failed `accept` means for the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// Only the connection being accepted is affected: take the next one.
    Connection,
    /// Out of descriptors, buffers or memory (or something unknown): wait, then retry.
    Resources,
    /// The listener cannot work: stop.
    Fatal,
}

fn classify(e: &io::Error) -> Failure {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock | PermissionDenied => {
            Failure::Connection
        }
        InvalidInput | Unsupported => Failure::Fatal,
        _ => match e.raw_os_error() {
            Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EOPNOTSUPP | libc::EFAULT) => Failure::Fatal,
            _ => Failure::Resources,
        },
    }
}

impl Client {
    /// Serves `listener` until `cancel` fires: each accepted connection becomes one
    /// end-to-end session, in a task of its own that ends when the session does or on
    /// cancel. Returns `Ok(())` once cancelled and the sessions have ended (waiting at most
    /// [`SESSION_WIND_DOWN`]), or the error if the listener fails for good. Dropping the
    /// future ends the sessions too.
    pub async fn serve(self: Arc<Self>, mut listener: impl Accept, cancel: CancellationToken) -> Result<(), Error> {
        let sessions = TaskTracker::new();
        let end_sessions = cancel.child_token();
        // Also when this future is dropped rather than cancelled.
        let _end_on_drop = end_sessions.clone().drop_guard();
        let mut backoff = Backoff::new(ACCEPT_BACKOFF.0, ACCEPT_BACKOFF.1);
        let mut failures = 0u64;
        let result = loop {
            let accepted = tokio::select! {
                biased;
                _ = cancel.cancelled() => break Ok(()),
                accepted = listener.accept() => accepted,
            };
            let e = match accepted {
                Ok(stream) => {
                    backoff.reset();
                    sessions.spawn(session(self.clone(), stream, end_sessions.clone()));
                    continue;
                }
                Err(e) => e,
            };
            match classify(&e) {
                Failure::Connection => debug!(error = %e, "a local connection failed before it was accepted"),
                Failure::Fatal => break Err(Error::Accept(e)),
                Failure::Resources => {
                    failures += 1;
                    let delay = backoff.next_delay();
                    warn!(failures, error = %e, "cannot accept a local connection; retrying in {} ms", delay.as_millis());
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => break Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        end_sessions.cancel();
        sessions.close();
        if tokio::time::timeout(SESSION_WIND_DOWN, sessions.wait()).await.is_err() {
            debug!("sessions still running after the wind-down limit; left to end on their own");
        }
        result
    }
}

/// One local connection: open a session and bridge it, until either ends or `cancel`.
async fn session(client: Arc<Client>, stream: TcpStream, cancel: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let opened = tokio::select! {
        biased;
        _ = cancel.cancelled() => return,
        opened = client.open_session() => opened,
    };
    match opened {
        Ok(session) => {
            // Behind NAT on both sides, the relay carries this session, and a direct path
            // may be punched for the next ones (in the background; the relay stays the
            // fallback either way).
            if client.punch_due() {
                let client = client.clone();
                tokio::spawn(async move {
                    if let Err(e) = client.punch().await {
                        debug!("no direct path punched: {}", e.report());
                    }
                });
            }
            let started = std::time::Instant::now();
            let path = session.path().map_or_else(|| "an unknown path".to_owned(), ToString::to_string);
            let hop = match client.transport_in_use().await {
                Some(transport) => format!("{path} ({})", transport.name()),
                None => path,
            };
            let (mut read, mut write) = stream.into_split();
            // Through the client, so that a resumable session survives the loss of its path.
            let resumable = session.is_resumable();
            let result = client.bridge(session, &mut read, &mut write, cancel).await;
            if resumable && matches!(result, Err(ref e) if !matches!(e, Error::Cancelled)) {
                // A resumable session that could not be resumed is a reset for the local
                // application, never a clean end it could take for a complete transfer.
                if let Ok(stream) = read.reunite(write) {
                    let _ = stream.set_zero_linger();
                }
            }
            match result {
                // The one line a session gets, on the user's own machine: how long, how much,
                // which way.
                Ok(carried) => info!(
                    "session closed after {:.1} s: sent {} bytes, received {} bytes, via {hop}",
                    started.elapsed().as_secs_f64(),
                    carried.sent,
                    carried.received
                ),
                Err(Error::Cancelled) => {}
                Err(e) => warn!("a session via {hop} ended with an error: {}", e.report()),
            }
        }
        Err(e) => warn!("cannot open a session: {}", e.report()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_are_sorted_by_what_they_say_about_the_listener() {
        assert_eq!(classify(&io::Error::from_raw_os_error(libc::EMFILE)), Failure::Resources);
        assert_eq!(classify(&io::Error::from_raw_os_error(libc::ENFILE)), Failure::Resources);
        assert_eq!(classify(&io::Error::from_raw_os_error(libc::ENOBUFS)), Failure::Resources);
        assert_eq!(classify(&io::Error::from_raw_os_error(libc::ENOMEM)), Failure::Resources);
        assert_eq!(classify(&io::Error::from_raw_os_error(libc::ECONNABORTED)), Failure::Connection);
        assert_eq!(classify(&io::Error::from_raw_os_error(libc::EPERM)), Failure::Connection);
        assert_eq!(classify(&io::Error::from_raw_os_error(libc::EINVAL)), Failure::Fatal);
        assert_eq!(classify(&io::Error::from_raw_os_error(libc::EBADF)), Failure::Fatal);
    }
}
