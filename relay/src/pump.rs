//! The pump: splices a client's stream to its host's stream, one task per session.
//!
//! Bytes are moved, never copied: quinn hands out received `Bytes` chunks and takes them
//! back for sending (`read_chunks` / `write_all_chunks`). Only chunks already received are
//! batched; nothing waits for more. The buffer per direction is bounded by each stream's
//! QUIC receive window (set from `buffer_per_direction`), so a slow reader fills the
//! window, the sender's flow control stops it, and the relay's memory stays bounded.
//!
//! Ends are forwarded faithfully: a clean finish becomes a finish, a reset or a lost
//! connection becomes a reset with a code, so the far end sees an error, never a
//! clean-looking end of a stream that was cut.

use bytes::Bytes;
use quinn::{ReadError, RecvStream, SendStream, VarInt};
use tokio_util::sync::CancellationToken;

use ferry_proto::codes::{RESET_PEER_LOST, RESET_SHUTDOWN};

use crate::config::Tap;

/// Chunks taken from quinn per batch.
const BATCH: usize = 32;

/// Bytes carried by a finished session, each way.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Carried {
    pub(crate) client_to_host: u64,
    pub(crate) host_to_client: u64,
}

/// Runs both directions until both have ended (or the relay shuts down).
pub(crate) async fn splice(
    client: (SendStream, RecvStream),
    host: (SendStream, RecvStream),
    client_first: Bytes,
    tap: Option<Tap>,
    cancel: CancellationToken,
) -> Carried {
    let (client_send, client_recv) = client;
    let (host_send, host_recv) = host;
    let up = direction(
        client_recv,
        host_send,
        client_first,
        tap.clone(),
        cancel.clone(),
    );
    let down = direction(host_recv, client_send, Bytes::new(), tap, cancel);
    let (client_to_host, host_to_client) = tokio::join!(up, down);
    Carried {
        client_to_host,
        host_to_client,
    }
}

/// Forwards one direction; returns the bytes forwarded.
async fn direction(
    mut from: RecvStream,
    mut to: SendStream,
    first: Bytes,
    tap: Option<Tap>,
    cancel: CancellationToken,
) -> u64 {
    let observe = |chunk: &[u8]| {
        if let Some(tap) = &tap {
            tap(chunk);
        }
    };
    let mut total = 0u64;
    let mut chunks: [Bytes; BATCH] = Default::default();
    if !first.is_empty() {
        observe(&first);
        total += first.len() as u64;
        chunks[0] = first;
        if to.write_all_chunks(&mut chunks[..1]).await.is_err() {
            let _ = from.stop(VarInt::from_u32(RESET_PEER_LOST));
            return total;
        }
    }
    loop {
        let read = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                let _ = to.reset(VarInt::from_u32(RESET_SHUTDOWN));
                let _ = from.stop(VarInt::from_u32(RESET_SHUTDOWN));
                return total;
            }
            read = from.read_chunks(&mut chunks) => read,
        };
        match read {
            Ok(Some(n)) => {
                for chunk in &chunks[..n] {
                    observe(chunk);
                    total += chunk.len() as u64;
                }
                let written = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => Err(()),
                    w = to.write_all_chunks(&mut chunks[..n]) => w.map_err(|_| ()),
                };
                if written.is_err() {
                    let _ = to.reset(VarInt::from_u32(RESET_PEER_LOST));
                    let _ = from.stop(VarInt::from_u32(RESET_PEER_LOST));
                    return total;
                }
            }
            Ok(None) => {
                let _ = to.finish();
                return total;
            }
            Err(ReadError::Reset(code)) => {
                let _ = to.reset(code);
                return total;
            }
            Err(_) => {
                let _ = to.reset(VarInt::from_u32(RESET_PEER_LOST));
                return total;
            }
        }
    }
}
