//! The two halves of a hop stream, over QUIC or TLS.
//!
//! QUIC hands out received data as `Bytes` chunks and takes `Bytes` to send, so data is
//! moved, not copied. TLS decrypts into a `BytesMut` whose filled part is split off as
//! `Bytes`; rustls copies on encryption in any case. That buffer exists only while bytes
//! are arriving: a read that has to wait lets go of it, so an idle TLS session holds no
//! read buffer (in a relay that has been busy, a kept 64 KiB buffer is 64 KiB of
//! resident memory per idle connection, since malloc hands out pages touched before).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use quinn::{ReadError, RecvStream, SendStream, VarInt, WriteError};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// A TLS connection to or from a relay (client or server side).
pub type TlsStream = tokio_rustls::TlsStream<TcpStream>;

/// Bytes read from a TLS link per call.
const TLS_READ: usize = 64 * 1024;

/// Why a hop stream failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The peer (or the relay on its behalf) reset the stream with this code.
    #[error("the stream was reset (code {0:#x})")]
    Reset(u64),
    /// The peer closed the whole connection with this application code.
    #[error("the connection was closed (code {0:#x})")]
    Closed(u64),
    /// The connection ended abnormally (lost, timed out, or a TLS connection cut without
    /// `close_notify`).
    #[error("the connection was lost ({0})")]
    Lost(String),
}

impl From<std::io::Error> for LinkError {
    fn from(e: std::io::Error) -> Self {
        Self::Lost(e.to_string())
    }
}

/// The sending half of a hop stream.
pub enum LinkSend {
    /// A QUIC stream.
    Quic(SendStream),
    /// A TLS connection's write half.
    Tls(WriteHalf<TlsStream>),
}

/// The receiving half of a hop stream.
pub enum LinkRecv {
    /// A QUIC stream.
    Quic(RecvStream),
    /// A TLS connection's read half and its decrypt buffer.
    Tls(ReadHalf<TlsStream>, BytesMut),
}

/// Splits a TLS connection into link halves.
pub fn split_tls(tls: TlsStream) -> (LinkSend, LinkRecv) {
    let (read, write) = tokio::io::split(tls);
    (LinkSend::Tls(write), LinkRecv::Tls(read, BytesMut::new()))
}

impl LinkSend {
    /// Sends `bytes` (moved into QUIC without a copy).
    pub async fn write_chunk(&mut self, bytes: Bytes) -> Result<(), LinkError> {
        match self {
            Self::Quic(s) => s.write_chunk(bytes).await.map_err(write_error),
            Self::Tls(w) => Ok(w.write_all(&bytes).await?),
        }
    }

    /// Sends every chunk in `chunks`, in order, taking them (they are left empty).
    pub async fn write_chunks(&mut self, chunks: &mut [Bytes]) -> Result<(), LinkError> {
        match self {
            Self::Quic(s) => s.write_all_chunks(chunks).await.map_err(write_error),
            Self::Tls(w) => {
                // Taken, not borrowed, like QUIC does: a written chunk must not pin its
                // read buffer (64 KiB) while the session waits for its next bytes.
                for chunk in chunks.iter_mut() {
                    w.write_all(&std::mem::take(chunk)).await?;
                }
                // tokio-rustls buffers plaintext; push the records out now.
                Ok(w.flush().await?)
            }
        }
    }

    /// Sends `bytes` and makes sure they leave now (TLS buffers until flushed).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        match self {
            Self::Quic(s) => s.write_all(bytes).await.map_err(write_error),
            Self::Tls(w) => {
                w.write_all(bytes).await?;
                Ok(w.flush().await?)
            }
        }
    }

    /// Sends one control message and makes sure it leaves now (the writing twin of
    /// [`crate::Framed::message`]).
    pub async fn send_message(&mut self, message: &ferry_proto::Message) -> Result<(), crate::FramedError> {
        self.send(&message.to_vec()?).await?;
        Ok(())
    }

    /// Ends this direction cleanly (QUIC FIN / TLS `close_notify` and TCP FIN).
    pub async fn finish(&mut self) -> Result<(), LinkError> {
        match self {
            Self::Quic(s) => s.finish().map_err(|e| LinkError::Lost(e.to_string())),
            Self::Tls(w) => Ok(w.shutdown().await?),
        }
    }

    /// Aborts this direction. QUIC carries `code` to the peer; a TLS link carries no
    /// code: it is dropped without `close_notify`, which the peer reads as an error.
    pub fn reset(&mut self, code: u32) {
        if let Self::Quic(s) = self {
            let _ = s.reset(VarInt::from_u32(code));
        }
    }
}

impl LinkRecv {
    /// Appends what arrives next to `buf`; `Ok(false)` at a clean end of stream.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> Result<bool, LinkError> {
        match self {
            Self::Quic(r) => match r.read_chunk(TLS_READ, true).await {
                Ok(Some(chunk)) => {
                    buf.extend_from_slice(&chunk.bytes);
                    Ok(true)
                }
                Ok(None) => Ok(false),
                Err(e) => Err(read_error(e)),
            },
            Self::Tls(r, _) => Ok(std::future::poll_fn(|cx| poll_read_lazily(r, cx, buf, TLS_READ)).await? > 0),
        }
    }

    /// Waits for the next chunk and takes it; `Ok(None)` at a clean end of stream. Holds
    /// no buffer while it waits (QUIC hands over chunks it already holds; TLS reserves its
    /// read buffer only for a read that finds bytes). Cancel-safe.
    pub async fn read_chunk(&mut self) -> Result<Option<Bytes>, LinkError> {
        match self {
            Self::Quic(r) => Ok(r.read_chunk(usize::MAX, true).await.map_err(read_error)?.map(|c| c.bytes)),
            Self::Tls(r, scratch) => {
                if std::future::poll_fn(|cx| poll_read_lazily(r, cx, scratch, TLS_READ)).await? == 0 {
                    return Ok(None);
                }
                Ok(Some(scratch.split().freeze()))
            }
        }
    }

    /// Appends chunks that have already arrived, without waiting, until `batch` holds
    /// `max`; returns whether the stream has ended cleanly behind them. Over TLS one read
    /// already took everything the connection had, so this adds nothing there.
    pub async fn read_ready(&mut self, batch: &mut Vec<Bytes>, max: usize) -> Result<bool, LinkError> {
        let Self::Quic(r) = self else { return Ok(false) };
        std::future::poll_fn(|cx| {
            while batch.len() < max {
                // read_chunk is cancel-safe: a poll that finds nothing loses nothing.
                match std::pin::pin!(r.read_chunk(usize::MAX, true)).poll(cx) {
                    Poll::Ready(Ok(Some(chunk))) => batch.push(chunk.bytes),
                    Poll::Ready(Ok(None)) => return Poll::Ready(Ok(true)),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(read_error(e))),
                    Poll::Pending => break,
                }
            }
            Poll::Ready(Ok(false))
        })
        .await
    }

    /// Tells the peer to stop sending (QUIC only; a TLS link is dropped instead).
    pub fn stop(&mut self, code: u32) {
        if let Self::Quic(r) = self {
            let _ = r.stop(VarInt::from_u32(code));
        }
    }
}

/// Reads at most `max` bytes of what has arrived into `buf`, reserving `max` first when
/// less than a quarter of it is spare; if nothing has arrived, lets go of the buffer (unless
/// it holds unread bytes) before waiting, so a waiting reader holds no buffer. For
/// `poll_fn`; the read is cancel-safe like the reader's own.
pub fn poll_read_lazily<R: AsyncRead + Unpin>(
    reader: &mut R,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    max: usize,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < max / 4 {
        buf.reserve(max);
    }
    let polled = tokio_util::io::poll_read_buf(Pin::new(reader), cx, &mut (&mut *buf).limit(max));
    if polled.is_pending() && buf.is_empty() {
        *buf = BytesMut::new();
    }
    polled
}

fn read_error(e: ReadError) -> LinkError {
    match e {
        ReadError::Reset(code) => LinkError::Reset(code.into_inner()),
        ReadError::ConnectionLost(e) => connection_error(e),
        other => LinkError::Lost(other.to_string()),
    }
}

fn write_error(e: WriteError) -> LinkError {
    match e {
        WriteError::Stopped(code) => LinkError::Reset(code.into_inner()),
        WriteError::ConnectionLost(e) => connection_error(e),
        other => LinkError::Lost(other.to_string()),
    }
}

fn connection_error(e: quinn::ConnectionError) -> LinkError {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => LinkError::Closed(close.error_code.into_inner()),
        other => LinkError::Lost(other.to_string()),
    }
}
