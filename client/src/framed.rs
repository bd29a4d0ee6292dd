//! The receive side of a hop stream: control messages first, then handshake frames, then
//! end-to-end records, all from one buffer so nothing read ahead is lost between phases.
//! Quinn's stream errors are turned into messages a person can act on here.

use std::time::Duration;

use bytes::BytesMut;
use ferry_proto::Message;
use ferry_proto::codes::{
    RESET_HANDSHAKE_FAILED, RESET_NOT_ALLOWED, RESET_PEER_LOST, RESET_SERVICE_UNREACHABLE,
    RESET_SHUTDOWN,
};
use ferry_proto::e2e::record::take_frame;
use quinn::{ReadError, RecvStream};

use crate::Error;

/// Most bytes taken from quinn per read.
const READ_CHUNK: usize = 64 * 1024;

/// A stream's receive half with its read-ahead buffer.
pub(crate) struct FramedRecv {
    pub(crate) recv: RecvStream,
    pub(crate) buf: BytesMut,
}

impl FramedRecv {
    pub(crate) fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            buf: BytesMut::new(),
        }
    }

    /// Reads more bytes into the buffer; `false` at a clean end of stream.
    pub(crate) async fn fill(&mut self) -> Result<bool, Error> {
        match self.recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => {
                self.buf.extend_from_slice(&chunk.bytes);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(read_error(e)),
        }
    }

    /// The next control message, within `limit`.
    pub(crate) async fn message(&mut self, limit: Duration) -> Result<Message, Error> {
        tokio::time::timeout(limit, async {
            loop {
                if let Some(message) = Message::decode(&mut self.buf)? {
                    return Ok(message);
                }
                if !self.fill().await? {
                    return Err(Error::Cut("the relay closed the stream".into()));
                }
            }
        })
        .await
        .map_err(|_| Error::Timeout("no answer from the relay"))?
    }

    /// The next length-prefixed frame of at most `max` bytes, within `limit`.
    pub(crate) async fn frame(&mut self, max: usize, limit: Duration) -> Result<BytesMut, Error> {
        tokio::time::timeout(limit, async {
            loop {
                if let Some(frame) = take_frame(&mut self.buf, max)? {
                    return Ok(frame);
                }
                if !self.fill().await? {
                    return Err(Error::Cut("the stream ended during the handshake".into()));
                }
            }
        })
        .await
        .map_err(|_| Error::Timeout("the other end did not finish the handshake"))?
    }
}

/// Explains why a stream ended abnormally.
pub(crate) fn read_error(e: ReadError) -> Error {
    match e {
        ReadError::Reset(code) => reset_error(code.into_inner()),
        ReadError::ConnectionLost(e) => {
            Error::Cut(format!("the connection to the relay was lost ({e})"))
        }
        other => Error::Cut(other.to_string()),
    }
}

/// Explains a stream reset code.
pub(crate) fn reset_error(code: u64) -> Error {
    match u32::try_from(code).unwrap_or(u32::MAX) {
        RESET_PEER_LOST => Error::Cut("the other end went away mid-session".into()),
        RESET_SHUTDOWN => Error::Cut("the relay is shutting down".into()),
        RESET_NOT_ALLOWED => {
            Error::HostRefused("this client's key is not on the host's allow-list")
        }
        RESET_SERVICE_UNREACHABLE => {
            Error::HostRefused("the host cannot reach the service it forwards to")
        }
        RESET_HANDSHAKE_FAILED => {
            Error::HostRefused("the handshake did not verify (is the ticket for this host?)")
        }
        other => Error::Cut(format!("the other end reset the stream (code {other:#x})")),
    }
}
