//! What the direct path (client straight to host, no relay) adds to the end-to-end
//! handshake: a tag keyed with the ticket secret in front of the client's first message.
//!
//! Through a relay only registered hosts are reachable and the relay has already admitted
//! the client; at a host's own port anyone can knock. Noise `IKpsk2` checks the ticket
//! secret only in the host's answer, so without the tag a stranger who knows the host key
//! could make the host do its share of the handshake and dial its service. The tag is one
//! HMAC-SHA256 the host checks before anything else, so junk and strangers cost it one
//! hash: no public-key operation, no connection to its service.
//!
//! ```text
//! direct hello frame = tag (16) | Noise message 1
//! tag = HMAC-SHA256(ticket secret, "ferry/1 direct" | Noise message 1)[..16]
//! ```
//! A replayed hello passes the tag (it is the same bytes); the host then answers a
//! handshake nobody can finish, exactly as a relayed replay would get.

use ring::hmac;

use crate::TicketSecret;

/// Bytes of the tag in front of a direct hello.
pub const DIRECT_TAG_LEN: usize = 16;
const LABEL: &[u8] = b"ferry/1 direct";

fn tag(secret: &TicketSecret, hello: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &secret.0);
    let mut context = hmac::Context::with_key(&key);
    context.update(LABEL);
    context.update(hello);
    context.sign()
}

/// The client's first frame on a direct stream: the tag, then `hello`.
pub fn seal_direct_hello(secret: &TicketSecret, hello: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DIRECT_TAG_LEN + hello.len());
    out.extend_from_slice(&tag(secret, hello).as_ref()[..DIRECT_TAG_LEN]);
    out.extend_from_slice(hello);
    out
}

/// The Noise message inside a direct hello frame, if its tag was made with `secret`.
pub fn open_direct_hello<'a>(secret: &TicketSecret, frame: &'a [u8]) -> Option<&'a [u8]> {
    let (got, hello) = frame.split_at_checked(DIRECT_TAG_LEN)?;
    let want = tag(secret, hello);
    // Constant time: a byte-by-byte early exit would tell a prober how much it got right.
    let differ = got.iter().zip(&want.as_ref()[..DIRECT_TAG_LEN]).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    (differ == 0).then_some(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_ticket_secret_makes_a_tag_the_host_accepts() {
        let secret = TicketSecret([3; 32]);
        let frame = seal_direct_hello(&secret, b"noise message one");
        assert_eq!(open_direct_hello(&secret, &frame), Some(&b"noise message one"[..]));
        assert_eq!(open_direct_hello(&TicketSecret([4; 32]), &frame), None, "another ticket's secret");
        let mut changed = frame.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert_eq!(open_direct_hello(&secret, &changed), None, "the tag covers the message");
        assert_eq!(open_direct_hello(&secret, &frame[..DIRECT_TAG_LEN - 1]), None, "too short");
    }
}
