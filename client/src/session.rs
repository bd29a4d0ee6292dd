//! An end-to-end session: plaintext on a local socket (or stdin/stdout) on one side,
//! sealed records on the relay stream on the other.
//!
//! Each direction runs on its own and sends as soon as it has bytes: one local read
//! becomes one record (up to `MAX_RECORD_DATA`), so a 64-byte request leaves at once and
//! a bulk transfer fills 64 KiB records. Sealed records are handed to the hop by
//! ownership (`write_chunk`), with no copy on QUIC.
//!
//! Ends are explicit: local EOF becomes an authenticated `Fin` record and a stream
//! finish, and the peer's `Fin` becomes a half-close of the local socket, so half-close
//! works end to end. A stream that ends without `Fin` is reported as cut, never as a
//! clean, shorter transfer.
//!
//! A resumable session (both ends agreed in the handshake) is bridged by
//! [`crate::Client::bridge`] instead (the `resume` module), which keeps the local connection
//! across paths; bridged here, without a client to find another path, it ends with an error
//! when its path is lost.
//!
//! The owner can end a session at any time through the token it passed to
//! [`Session::bridge`]: the bridge then resets the relay stream both ways (the peer sees a
//! cut, not a clean end) and returns [`Error::Cancelled`].

use bytes::BytesMut;
use ferry_link::stream::poll_read_lazily;
use ferry_link::{Framed, LinkSend};
use ferry_proto::codes::RESET_CANCELLED;
use ferry_proto::e2e::record::{MAX_RECORD_DATA, Record, RecordKind};
use ferry_proto::e2e::resume::{DEFAULT_REPLAY_LIMIT, Inbound, Outbound, ResumeKeys};
use ferry_proto::e2e::{Opener, Sealer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::path::Path;

/// Bytes moved by a session that ended cleanly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transferred {
    /// Plaintext bytes sent to the peer.
    pub sent: u64,
    /// Plaintext bytes received from the peer.
    pub received: u64,
}

/// An established end-to-end session, ready to carry bytes.
pub struct Session {
    pub(crate) send: LinkSend,
    pub(crate) recv: Framed,
    pub(crate) sealer: Sealer,
    pub(crate) opener: Opener,
    /// The way this session reaches the host (client side; `None` on the host's side).
    pub(crate) path: Option<Path>,
    /// The resumption keys when both ends agreed the session is resumable.
    pub(crate) resume: Option<ResumeKeys>,
}

impl Session {
    /// The way this session reaches the host: direct, or which relay (client side only).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_ref()
    }

    /// Whether both ends agreed to resume this session on another path when its own is lost.
    pub fn is_resumable(&self) -> bool {
        self.resume.is_some()
    }

    /// The parts a resumable bridge runs on (`Err(self)` for a session that is not resumable).
    #[expect(clippy::result_large_err, reason = "called once per session, and moved on at once")]
    pub(crate) fn into_resumable(self) -> Result<crate::resume::Resumable, Self> {
        match self.resume {
            None => Err(self),
            Some(keys) => Ok(crate::resume::Resumable {
                link: crate::resume::Link::new(self.send, self.recv),
                out: Outbound::new(self.sealer, DEFAULT_REPLAY_LIMIT),
                inbound: Inbound::new(self.opener),
                keys,
            }),
        }
    }

    /// Carries bytes both ways until both directions have ended cleanly, or until `cancel`
    /// fires ([`Error::Cancelled`]); on any error, and on cancel, the relay stream is reset
    /// so the peer learns of it too.
    pub async fn bridge<R, W>(
        self,
        mut local_read: R,
        mut local_write: W,
        cancel: CancellationToken,
    ) -> Result<Transferred, Error>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let session = match self.into_resumable() {
            Ok(resumable) => {
                let side = crate::resume::Side::Fixed;
                let timeout = crate::resume::DEFAULT_RESUME_TIMEOUT;
                let (sent, received) =
                    crate::resume::bridge(resumable, side, local_read, local_write, timeout, cancel).await?;
                return Ok(Transferred { sent, received });
            }
            Err(session) => session,
        };
        let Self { mut send, mut recv, sealer, opener, .. } = session;
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Error::Cancelled),
            both = async {
                tokio::try_join!(
                    upstream(&mut local_read, &mut send, sealer),
                    downstream(&mut recv, opener, &mut local_write)
                )
            } => both,
        };
        match result {
            Ok((sent, received)) => Ok(Transferred { sent, received }),
            Err(e) => {
                send.reset(RESET_CANCELLED);
                recv.recv.stop(RESET_CANCELLED);
                Err(e)
            }
        }
    }

    /// Runs the session in a task of its own against an in-memory pipe of `capacity` bytes
    /// each way: returns the application's end (bytes written to it go to the peer, the
    /// peer's bytes can be read from it; shutting down its write side ends this direction)
    /// and the task, which ends as [`Session::bridge`] does. For embedding ferry in an
    /// application without a socket in between. The application ends the session through
    /// its end of the pipe.
    pub fn spawn_pipe(
        self,
        capacity: usize,
    ) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<Result<Transferred, Error>>) {
        let (app, local) = tokio::io::duplex(capacity);
        let (read, write) = tokio::io::split(local);
        (app, tokio::spawn(self.bridge(read, write, CancellationToken::new())))
    }
}

async fn upstream<R: AsyncRead + Unpin>(local: &mut R, send: &mut LinkSend, mut sealer: Sealer) -> Result<u64, Error> {
    // Allocated for a read that finds bytes, let go of while waiting: a host with a
    // thousand idle viewers holds no 64 KiB per session here.
    let mut plain = BytesMut::new();
    let mut out = BytesMut::new();
    let mut total = 0u64;
    loop {
        plain.clear();
        let n = std::future::poll_fn(|cx| poll_read_lazily(local, cx, &mut plain, MAX_RECORD_DATA)).await?;
        let kind = if n == 0 { RecordKind::Fin } else { RecordKind::Data };
        sealer.seal(kind, &plain[..n], &mut out)?;
        send.write_chunks(&mut [out.split().freeze()]).await?;
        if n == 0 {
            send.finish().await?;
            return Ok(total);
        }
        total += n as u64;
    }
}

async fn downstream<W: AsyncWrite + Unpin>(recv: &mut Framed, mut opener: Opener, local: &mut W) -> Result<u64, Error> {
    let mut total = 0u64;
    loop {
        while let Some(record) = opener.open(&mut recv.buf)? {
            match record {
                Record::Data(bytes) => {
                    total += bytes.len() as u64;
                    local.write_all(&bytes).await?;
                }
                Record::Fin => {
                    local.flush().await?;
                    local.shutdown().await?;
                    drain_to_end(recv).await;
                    return Ok(total);
                }
            }
        }
        // Everything complete has been handed over; flush before waiting for more.
        local.flush().await?;
        if !recv.fill().await? {
            return Err(Error::Cut(
                "the stream ended without the other end's end-of-stream mark (the relay or network cut it)",
            ));
        }
    }
}

/// After the peer's `Fin`, reads on to the hop's own end of stream (the peer finishes right
/// behind it). Over TLS this matters: closing a TCP socket with unread bytes in it (the
/// peer's `close_notify`) sends a reset, which can destroy data still on its way to the
/// relay. Bounded; anything after `Fin` is dropped (the record layer already refuses it).
async fn drain_to_end(recv: &mut Framed) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(true) = recv.fill().await {
            recv.buf.clear();
        }
    })
    .await;
}
