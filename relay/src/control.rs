//! Writing control messages and refusals on a hop stream (reading is `ferry_link::Framed`).

use ferry_link::{FramedError, LinkSend};
use ferry_proto::{Message, RefuseReason};

use crate::metrics::Metrics;

/// Writes one message and makes sure it leaves now.
pub(crate) async fn write(send: &mut LinkSend, message: &Message) -> Result<(), FramedError> {
    send.send(&message.to_vec()?).await?;
    Ok(())
}

/// Tells the peer why it is turned away (and the metrics) and ends the stream.
pub(crate) async fn refuse(send: &mut LinkSend, reason: RefuseReason, metrics: &Metrics) -> Result<(), FramedError> {
    metrics.refused(reason.label());
    write(send, &Message::Refused { reason }).await?;
    send.finish().await?;
    Ok(())
}
