//! Refusals on a hop stream (messages are written with `LinkSend::send_message` and read
//! with `ferry_link::Framed`).

use ferry_link::{FramedError, LinkSend};
use ferry_proto::{Message, RefuseReason};

use crate::metrics::Metrics;

/// Tells the peer why it is turned away (and the metrics) and ends the stream.
pub(crate) async fn refuse(send: &mut LinkSend, reason: RefuseReason, metrics: &Metrics) -> Result<(), FramedError> {
    metrics.refused(reason);
    send.send_message(&Message::Refused { reason }).await?;
    send.finish().await?;
    Ok(())
}
