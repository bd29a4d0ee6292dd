//! The receive half of a hop stream with its read-ahead buffer.
//!
//! A stream carries control messages, then (for sessions) Noise handshake frames, then
//! records. One buffer serves all three phases so bytes that arrive together — the relay
//! forwards a client's `Connect` and its handshake in one packet — are never lost between
//! phases. Every wait is bounded by the caller's limit.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_proto::Message;
use ferry_proto::e2e::record::take_frame;

use crate::{LinkError, LinkRecv, LinkSend};

/// Why a framed read did not produce what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FramedError {
    /// The stream ended cleanly before a whole message or frame arrived.
    #[error("the stream ended")]
    Closed,
    /// Nothing complete arrived within the limit.
    #[error("timed out")]
    Timeout,
    /// The peer sent something invalid.
    #[error(transparent)]
    Proto(#[from] ferry_proto::Error),
    /// The stream failed.
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// A hop stream's receive half plus bytes read ahead.
pub struct Framed {
    /// The stream.
    pub recv: LinkRecv,
    /// Bytes received but not yet consumed.
    pub buf: BytesMut,
}

impl Framed {
    /// Wraps a receive half.
    pub fn new(recv: LinkRecv) -> Self {
        Self { recv, buf: BytesMut::new() }
    }

    /// Reads more into the buffer; `Ok(false)` at a clean end of stream. An empty buffer
    /// is let go of first, so a stream waiting between records holds none (a session
    /// after a bulk transfer would otherwise keep a record's worth, 64 KiB, while idle).
    pub async fn fill(&mut self) -> Result<bool, LinkError> {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
        self.recv.read_into(&mut self.buf).await
    }

    /// The next control message, within `limit`.
    pub async fn message(&mut self, limit: Duration) -> Result<Message, FramedError> {
        tokio::time::timeout(limit, self.message_unbounded()).await.map_err(|_| FramedError::Timeout)?
    }

    /// The next control message, however long it takes (long-lived control streams).
    pub async fn message_unbounded(&mut self) -> Result<Message, FramedError> {
        loop {
            if let Some(message) = Message::decode(&mut self.buf)? {
                return Ok(message);
            }
            if !self.fill().await? {
                return Err(FramedError::Closed);
            }
        }
    }

    /// The next `u16`-length-prefixed frame of at most `max` bytes, within `limit`.
    pub async fn frame(&mut self, max: usize, limit: Duration) -> Result<BytesMut, FramedError> {
        tokio::time::timeout(limit, async {
            loop {
                if let Some(frame) = take_frame(&mut self.buf, max)? {
                    return Ok(frame);
                }
                if !self.fill().await? {
                    return Err(FramedError::Closed);
                }
            }
        })
        .await
        .map_err(|_| FramedError::Timeout)?
    }

    /// The stream and whatever was read past the last message or frame.
    pub fn into_parts(self) -> (LinkRecv, Bytes) {
        (self.recv, self.buf.freeze())
    }
}

impl LinkSend {
    /// Sends one control message and makes sure it leaves now (the writing twin of
    /// [`Framed::message`]; here, beside it, so that the stream module needs nothing of the
    /// framing).
    pub async fn send_message(&mut self, message: &Message) -> Result<(), FramedError> {
        self.send(&message.to_vec()?).await?;
        Ok(())
    }
}
