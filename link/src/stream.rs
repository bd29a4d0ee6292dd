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

/// What can go wrong on a hop: setting it up, dialling it, or one of its streams.
///
/// Causes are kept as sources (print the chain, e.g. with `{:#}` in anyhow, for the
/// whole story); each message reads on its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The peer (or the relay on its behalf) reset the stream with this code.
    #[error("the stream was reset (code {0:#x})")]
    Reset(u64),
    /// The peer closed the whole connection with this application code.
    #[error("the connection was closed (code {0:#x})")]
    Closed(u64),
    /// The QUIC connection ended abnormally (lost, timed out, or a transport error).
    #[error("the connection was lost")]
    Lost(#[source] Box<quinn::ConnectionError>),
    /// A TLS connection failed, or was cut without `close_notify`.
    #[error("the connection was lost")]
    Io(#[from] std::io::Error),
    /// A QUIC stream could not be read (already stopped here, or 0-RTT data refused).
    #[error("the stream cannot be read")]
    Read(#[source] Box<ReadError>),
    /// A QUIC stream could not be written (already finished or reset here, or 0-RTT data refused).
    #[error("the stream cannot be written")]
    Write(#[source] Box<WriteError>),
    /// A QUIC stream could not be finished: it already was, or was reset.
    #[error("the stream cannot be finished")]
    Finish(#[source] quinn::ClosedStream),
    /// This end gave up the stream (its session was cancelled).
    #[error("the session was ended")]
    Cancelled,
    /// Resolving the peer's name failed.
    #[error("cannot resolve the address")]
    Resolve(#[source] std::io::Error),
    /// The name resolved, but to no address.
    #[error("the name resolves to no address")]
    NoAddress,
    /// The address cannot be used as a TLS server name.
    #[error("the address is not a valid server name")]
    ServerName(#[source] rustls::pki_types::InvalidDnsNameError),
    /// The local UDP socket for QUIC could not be opened.
    #[error("cannot open a UDP socket")]
    Socket(#[source] std::io::Error),
    /// The TLS configuration could not be built.
    #[error("cannot set up TLS")]
    TlsConfig(#[source] Box<rustls::Error>),
    /// The TLS configuration has no cipher suite QUIC can start with.
    #[error("no TLS 1.3 cipher suite usable for QUIC")]
    QuicCipherSuite(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    /// quinn refused to start the connection (bad address or configuration).
    #[error("cannot start a QUIC connection")]
    Connect(#[source] Box<quinn::ConnectError>),
    /// The QUIC handshake failed.
    #[error("the QUIC handshake failed")]
    Handshake(#[source] Box<quinn::ConnectionError>),
    /// No QUIC handshake completed in time.
    #[error("no answer (is UDP blocked, or the relay down?)")]
    QuicTimeout,
    /// The TCP connection could not be made.
    #[error("TCP connection failed")]
    Tcp(#[source] std::io::Error),
    /// The TLS handshake over TCP failed.
    #[error("TLS handshake failed")]
    TlsHandshake(#[source] std::io::Error),
    /// No TCP and TLS handshake completed in time.
    #[error("no answer over TCP")]
    TcpTimeout,
    /// The hop's TLS exporter value could not be derived (the TLS error, if there is one).
    #[error("the hop cannot export keying material")]
    Exporter(#[source] Option<Box<rustls::Error>>),
    /// A flow-control window beyond what QUIC can express.
    #[error("window too large ({0} bytes)")]
    WindowTooLarge(u64),
    /// An idle timeout beyond what QUIC can express.
    #[error("idle timeout too large")]
    IdleTimeoutTooLarge(#[source] quinn::VarIntBoundsExceeded),
    /// Not the name of a congestion controller.
    #[error("unknown congestion controller `{name}` (use bbr or cubic)")]
    UnknownCongestion {
        /// What was given.
        name: String,
    },
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
                write_all_vectored(w, chunks).await?;
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

    /// Ends this direction cleanly (QUIC FIN / TLS `close_notify` and TCP FIN).
    pub async fn finish(&mut self) -> Result<(), LinkError> {
        match self {
            Self::Quic(s) => s.finish().map_err(LinkError::Finish),
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

/// Hands every chunk to rustls in vectored writes, taking each chunk once it is written.
///
/// One write per chunk would make one TLS record per chunk, and chunks from a QUIC stream
/// are packet-sized (~1.2 KB): a session from a QUIC hop onto a TLS hop then cost a record
/// header, a tag and an AEAD call per packet at both ends. A vectored write lets rustls cut
/// records across chunks, up to its 16 KiB record size. Taken, not borrowed, like QUIC
/// does: a written chunk must not pin its read buffer (64 KiB) while the session waits
/// for its next bytes.
async fn write_all_vectored<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, chunks: &mut [Bytes]) -> std::io::Result<()> {
    /// Most chunks per vectored write (the pump's batches are 32).
    const MAX_SLICES: usize = 32;
    let mut next = 0;
    while next < chunks.len() {
        if chunks[next].is_empty() {
            next += 1;
            continue;
        }
        // The slices are gathered inside each poll, on the stack: held across the await they
        // would be part of this future, and so of every session's task while it sits idle.
        let pending = &chunks[next..];
        let mut written = std::future::poll_fn(|cx| {
            let mut slices = [std::io::IoSlice::new(&[]); MAX_SLICES];
            let mut filled = 0;
            for (slot, chunk) in slices.iter_mut().zip(pending.iter().filter(|c| !c.is_empty())) {
                *slot = std::io::IoSlice::new(chunk);
                filled += 1;
            }
            std::pin::Pin::new(&mut *w).poll_write_vectored(cx, &slices[..filled])
        })
        .await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 && next < chunks.len() {
            let chunk = &mut chunks[next];
            if written >= chunk.len() {
                written -= chunk.len();
                *chunk = Bytes::new();
                next += 1;
            } else {
                bytes::Buf::advance(chunk, written);
                written = 0;
            }
        }
    }
    Ok(())
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
        other => LinkError::Read(Box::new(other)),
    }
}

fn write_error(e: WriteError) -> LinkError {
    match e {
        WriteError::Stopped(code) => LinkError::Reset(code.into_inner()),
        WriteError::ConnectionLost(e) => connection_error(e),
        other => LinkError::Write(Box::new(other)),
    }
}

/// A QUIC connection's end as a [`LinkError`]: an application close keeps its code (the
/// reason a peer can explain), anything else is a loss with its cause.
pub fn connection_error(e: quinn::ConnectionError) -> LinkError {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => LinkError::Closed(close.error_code.into_inner()),
        other => LinkError::Lost(Box::new(other)),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `limit` bytes per call, across slices, and counts the calls.
    struct Stingy {
        got: Vec<u8>,
        limit: usize,
        calls: usize,
    }

    impl tokio::io::AsyncWrite for Stingy {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)])
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            self.calls += 1;
            let mut taken = 0;
            for buf in bufs {
                let n = buf.len().min(self.limit - taken);
                self.got.extend_from_slice(&buf[..n]);
                taken += n;
            }
            Poll::Ready(Ok(taken))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn vectored_writes_send_every_chunk_in_order_through_partial_writes() {
        // 100 chunks of packet-like and odd sizes, some empty; a writer taking 5,000 bytes a call.
        let mut chunks: Vec<Bytes> =
            (0..100u32).map(|i| Bytes::from(vec![i as u8; [1200, 0, 7, 3000, 1][i as usize % 5]])).collect();
        let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut w = Stingy { got: Vec::new(), limit: 5_000, calls: 0 };
        write_all_vectored(&mut w, &mut chunks).await.unwrap();
        assert_eq!(w.got, expected);
        assert!(chunks.iter().all(Bytes::is_empty), "every chunk is taken once written");
        // Fewer calls than non-empty chunks: chunks are coalesced, not written one by one.
        assert!(w.calls <= expected.len().div_ceil(5_000) + 4, "{} calls", w.calls);
    }

    /// A pump direction holds its write future in its task for the session's whole life, so
    /// its size is paid by every idle session, twice at the relay: the batch of slices for a
    /// vectored write (512 bytes) must live inside one poll, not across the await (600 bytes
    /// when it did, 88 now).
    #[test]
    fn a_vectored_write_future_holds_no_slice_batch() {
        let mut sink = tokio::io::sink();
        let mut chunks: [Bytes; 0] = [];
        let write = write_all_vectored(&mut sink, &mut chunks);
        assert!(std::mem::size_of_val(&write) <= 128, "{} bytes", std::mem::size_of_val(&write));
    }

    /// Every pump direction and session future carries a `Result<_, LinkError>`: the large
    /// causes (quinn and rustls errors) are boxed so that keeping them costs nothing on
    /// the success path (24 bytes, what the flattened `String` took).
    #[test]
    fn a_link_error_stays_small() {
        assert!(std::mem::size_of::<LinkError>() <= 24, "{}", std::mem::size_of::<LinkError>());
    }
}
