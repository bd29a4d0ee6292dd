//! Hole punching: a direct path between a client and a host that are both behind NAT.
//!
//! The two meet through a relay first. Each asks its relay which address it sees it come
//! from (`Observe`: behind a NAT, the public side of its UDP mapping), then the client
//! opens an end-to-end session to the host's reserved service [`PUNCH_SERVICE`] through
//! the relay, and the two swap their candidate addresses inside it — the relay sees
//! ciphertext only. Then both send at once: the host sends a few datagrams from its direct
//! socket to each client candidate (opening its own NAT towards the client), while the
//! client dials QUIC to each host candidate from the socket its relay hop uses (so its
//! mapping is the one the relay observed). Once the host's datagrams have opened its
//! side, the client's retransmitted handshake gets through, and the QUIC connection is the
//! client's direct path for later sessions. A NAT that gives every destination its own
//! mapping (symmetric) or a network that drops UDP defeats this; the relay then simply
//! stays the path, with no error.
//!
//! ```text
//! candidates = count (u8, ≤ MAX_CANDIDATES) | count × (family 4|6, address, port u16)
//! client -> host   candidates, Fin
//! host -> client   candidates, Fin      (then the host's datagrams, the client's dials)
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use ferry_proto::codec::{Reader, put_socket_addr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Error, Session};

/// The service name a client asks for to swap candidates (names starting with `.` are
/// ferry's own; a host's services cannot take them).
pub const PUNCH_SERVICE: &str = ".punch";
/// Most candidates either side sends.
pub const MAX_CANDIDATES: usize = 16;
/// The host's datagrams towards each client candidate: how many, and how far apart
/// (together they span the client's first QUIC retransmissions).
const PUNCH_DATAGRAMS: u32 = 20;
const PUNCH_INTERVAL: Duration = Duration::from_millis(100);
/// Longest wait for the other side's candidates.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Encodes `addrs` (the first [`MAX_CANDIDATES`]), each as the relay's `Observed` answer
/// carries an address.
pub fn encode_candidates(addrs: &[SocketAddr]) -> Vec<u8> {
    let addrs = &addrs[..addrs.len().min(MAX_CANDIDATES)];
    let mut out = vec![addrs.len() as u8];
    for addr in addrs {
        put_socket_addr(&mut out, addr);
    }
    out
}

/// Decodes [`encode_candidates`] output; `None` if it is malformed.
pub fn decode_candidates(bytes: &[u8]) -> Option<Vec<SocketAddr>> {
    let mut r = Reader::new(bytes);
    let count = r.u8("candidate count").ok()?;
    if usize::from(count) > MAX_CANDIDATES {
        return None;
    }
    let addrs = (0..count).map(|_| r.socket_addr()).collect::<Result<Vec<_>, _>>().ok()?;
    r.finish("trailing bytes after the candidates").ok()?;
    Some(addrs)
}

/// This machine's own addresses with `port`, plus `observed` (what relays saw), without
/// duplicates or unusable ones. Loopback is kept only when `port`'s socket is bound to
/// loopback (a test, or a host that only takes local clients).
pub fn candidates(bound: SocketAddr, observed: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    let mut add = |addr: SocketAddr| {
        if !out.contains(&addr) && !addr.ip().is_unspecified() && addr.port() != 0 {
            out.push(addr);
        }
    };
    for addr in observed {
        add(*addr);
    }
    if bound.ip().is_unspecified() {
        for interface in if_addrs::get_if_addrs().unwrap_or_default() {
            let ip = interface.ip();
            if !ip.is_loopback() && ip.is_ipv4() == bound.is_ipv4() {
                add(SocketAddr::new(ip, bound.port()));
            }
        }
    } else {
        add(bound);
    }
    out
}

/// What a host needs to answer a punch: its direct socket and where it is bound.
#[derive(Debug)]
pub struct PunchContext {
    pub(crate) socket: std::net::UdpSocket,
    pub(crate) bound: SocketAddr,
}

/// The host's side of a punch: its candidates (with `observed`, what its relays see) for
/// the client's, then datagrams towards the client's. Its own log says only that it
/// happened (never the addresses).
pub(crate) async fn host_side(context: &PunchContext, observed: &[SocketAddr], session: Session) -> Result<(), Error> {
    let ours = candidates(context.bound, observed);
    let theirs = exchange(session, &ours).await?;
    tracing::debug!(candidates = theirs.len(), "punching towards a client");
    send_punches(&context.socket, &theirs).await;
    Ok(())
}

/// Swaps candidates over `session`: sends ours, returns theirs.
pub async fn exchange(session: Session, ours: &[SocketAddr]) -> Result<Vec<SocketAddr>, Error> {
    let (mut app, bridge) = session.spawn_pipe(4096);
    let (mut read, mut write) = tokio::io::split(&mut app);
    let swap = async {
        let send = async {
            write.write_all(&encode_candidates(ours)).await?;
            write.shutdown().await
        };
        let receive = async {
            let mut theirs = Vec::new();
            (&mut read).take(1 + 19 * MAX_CANDIDATES as u64).read_to_end(&mut theirs).await.map(|_| theirs)
        };
        tokio::try_join!(send, receive).map(|(_, theirs)| theirs)
    };
    let theirs = tokio::time::timeout(EXCHANGE_TIMEOUT, swap)
        .await
        .map_err(|_| Error::Timeout("the other side did not send its addresses"))??;
    drop(app);
    let _ = bridge.await;
    decode_candidates(&theirs).ok_or(Error::Cut("the other side's addresses were malformed"))
}

/// The host's half of the punch: a few datagrams from its direct socket to each client
/// candidate, spread over the client's first handshake retransmissions. The datagrams
/// are one zero byte: quinn at the client drops them; only the NAT mappings matter.
pub async fn send_punches(socket: &std::net::UdpSocket, targets: &[SocketAddr]) {
    for _ in 0..PUNCH_DATAGRAMS {
        for target in targets {
            // Non-blocking (quinn set the socket so); a full buffer just skips one.
            let _ = socket.send_to(&[0], target);
        }
        tokio::time::sleep(PUNCH_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_round_trip_and_junk_is_refused() {
        let addrs: Vec<SocketAddr> =
            vec!["192.0.2.7:4433".parse().unwrap(), "[2001:db8::1]:9".parse().unwrap(), "10.0.0.2:1".parse().unwrap()];
        assert_eq!(decode_candidates(&encode_candidates(&addrs)), Some(addrs.clone()));
        let mut bytes = encode_candidates(&addrs);
        bytes.push(0);
        assert_eq!(decode_candidates(&bytes), None, "trailing bytes");
        assert_eq!(decode_candidates(&[1, 5, 0, 0]), None, "unknown family");
        assert_eq!(decode_candidates(&[17]), None, "too many");
        assert_eq!(decode_candidates(&[]), None);
        let many: Vec<SocketAddr> = (0..40).map(|i| SocketAddr::from(([10, 0, 0, i], 1))).collect();
        assert_eq!(decode_candidates(&encode_candidates(&many)).map(|a| a.len()), Some(MAX_CANDIDATES));
    }

    #[test]
    fn a_loopback_socket_offers_itself_and_what_relays_saw() {
        let bound: SocketAddr = "127.0.0.1:4433".parse().unwrap();
        let seen: SocketAddr = "198.51.100.4:4433".parse().unwrap();
        assert_eq!(candidates(bound, &[seen, seen]), vec![seen, bound]);
    }
}
