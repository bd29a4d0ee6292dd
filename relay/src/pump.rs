//! The pump: splices a client's stream to its host's stream, one task per session.
//!
//! Bytes are moved, not copied, where the transport allows: QUIC hands out received
//! `Bytes` chunks and takes them back for sending; TLS decrypts into a reused buffer.
//! Only data already received is batched; nothing waits for more. The buffer per
//! direction is bounded by the hop's flow control: each QUIC stream's receive window
//! (set from `buffer_per_direction`) or the TCP socket buffers, so a slow reader fills
//! the window, the sender's flow control stops it, and the relay's memory stays bounded.
//!
//! Ends are forwarded faithfully: a clean finish becomes a finish; a reset or a lost
//! connection aborts the whole session (QUIC resets with the code, TLS drops without
//! `close_notify`), so each end sees an error, never a clean end of a cut stream.

use bytes::Bytes;
use ferry_link::{LinkError, LinkRecv, LinkSend};
use ferry_proto::codes::{RESET_PEER_LOST, RESET_SHUTDOWN};
use tokio_util::sync::CancellationToken;

use crate::config::Tap;

/// Chunks taken from the hop per batch.
const BATCH: usize = 32;

/// One side of a session: its stream halves and bytes already read past its header.
pub(crate) struct Side {
    pub(crate) send: LinkSend,
    pub(crate) recv: LinkRecv,
    pub(crate) first: Bytes,
}

/// Bytes carried by a finished session, each way.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Carried {
    pub(crate) client_to_host: u64,
    pub(crate) host_to_client: u64,
}

/// Runs both directions until both have ended, one fails, or the relay shuts down.
pub(crate) async fn splice(client: Side, host: Side, tap: Option<Tap>, relay: &CancellationToken) -> Carried {
    // Cancelled when either direction fails, so the other stops too.
    let session = relay.child_token();
    let up = direction(client.recv, host.send, client.first, tap.clone(), &session, relay);
    let down = direction(host.recv, client.send, host.first, tap, &session, relay);
    let (client_to_host, host_to_client) = tokio::join!(up, down);
    Carried { client_to_host, host_to_client }
}

/// Forwards one direction; returns the bytes forwarded.
async fn direction(
    mut from: LinkRecv,
    mut to: LinkSend,
    first: Bytes,
    tap: Option<Tap>,
    session: &CancellationToken,
    relay: &CancellationToken,
) -> u64 {
    let mut total = 0u64;
    let mut chunks: [Bytes; BATCH] = Default::default();
    let mut pending = 0;
    if !first.is_empty() {
        chunks[0] = first;
        pending = 1;
    }
    let result: Result<(), LinkError> = async {
        loop {
            if pending > 0 {
                for chunk in &chunks[..pending] {
                    if let Some(tap) = &tap {
                        tap(chunk);
                    }
                    total += chunk.len() as u64;
                }
                tokio::select! {
                    biased;
                    _ = session.cancelled() => return Err(LinkError::Lost("session ended".into())),
                    written = to.write_chunks(&mut chunks[..pending]) => written?,
                }
            }
            let read = tokio::select! {
                biased;
                _ = session.cancelled() => return Err(LinkError::Lost("session ended".into())),
                read = from.read_chunks(&mut chunks) => read?,
            };
            match read {
                Some(n) => pending = n,
                None => return to.finish().await,
            }
        }
    }
    .await;
    if result.is_err() {
        let code = if relay.is_cancelled() { RESET_SHUTDOWN } else { RESET_PEER_LOST };
        let code = match result {
            Err(LinkError::Reset(c)) => u32::try_from(c).unwrap_or(code),
            _ => code,
        };
        to.reset(code);
        from.stop(code);
        session.cancel();
    }
    total
}
