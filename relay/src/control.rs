//! Reading and writing control messages on a hop stream.
//!
//! The parsing is `ferry_proto::Message`; this file only moves bytes, with the relay's
//! handshake timeout around every wait so a silent peer cannot hold a task forever.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_proto::Message;
use ferry_proto::message::{HEADER_LEN, MAX_MESSAGE_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a control exchange ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    #[error("the peer closed the stream")]
    Closed,
    #[error("the peer took too long")]
    Timeout,
    #[error("protocol violation: {0}")]
    Proto(#[from] ferry_proto::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A stream's read half plus the bytes read past the last message.
pub(crate) struct ControlReader<R> {
    inner: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> ControlReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(HEADER_LEN + MAX_MESSAGE_LEN),
        }
    }

    /// The next message, or an error if none arrives within `limit`.
    pub(crate) async fn read(&mut self, limit: Duration) -> Result<Message, ControlError> {
        tokio::time::timeout(limit, self.read_unbounded())
            .await
            .map_err(|_| ControlError::Timeout)?
    }

    /// The next message, waiting as long as it takes (for long-lived control streams).
    pub(crate) async fn read_unbounded(&mut self) -> Result<Message, ControlError> {
        loop {
            if let Some(message) = Message::decode(&mut self.buf)? {
                return Ok(message);
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Err(ControlError::Closed);
            }
        }
    }

    /// The stream and whatever arrived after the last message (the start of the session).
    pub(crate) fn into_parts(self) -> (R, Bytes) {
        (self.inner, self.buf.freeze())
    }
}

/// Writes one message.
pub(crate) async fn write<W: AsyncWrite + Unpin>(
    w: &mut W,
    message: &Message,
) -> Result<(), ControlError> {
    w.write_all(&message.to_vec()?).await?;
    Ok(())
}

/// Tells the peer why it is turned away and ends the stream.
pub(crate) async fn refuse(
    send: &mut quinn::SendStream,
    reason: ferry_proto::RefuseReason,
) -> Result<(), ControlError> {
    write(send, &Message::Refused { reason }).await?;
    let _ = send.finish();
    Ok(())
}
