//! Socket buffers for a QUIC hop's UDP socket.
//!
//! Linux gives a UDP socket about 208 KiB of receive buffer by default. A QUIC sender
//! sends bursts (quinn hands the kernel up to 10 packets per `sendmsg` with GSO), and
//! whatever does not fit while the receiver is busy is dropped; every drop is read as
//! congestion. Measured with the benchmark harness on loopback (`--only ferry-quic`), default
//! buffers: 34% of all datagrams dropped for "receive buffer full" under BBR (0.4% under
//! CUBIC); with 8 MiB (as the kernel counts it; 4 MiB asked): 0.02%, and one session's
//! throughput rose from 2.40/2.57 to
//! 3.16/3.52 Gbit/s (up/down) at 1.83 instead of 2.79 relay CPU-seconds per GB.
//!
//! The kernel caps the request at `net.core.rmem_max` / `wmem_max` (often 208 KiB, which
//! makes the request a no-op); [`tune_socket`] reports what it got so the relay can say
//! how to raise the cap. What was also tried, and is not here: larger datagrams (path MTU
//! discovery up to 9,000 or 65,527 bytes on loopback) moved fewer bytes per second, not more.
//!
//! The quinn endpoint on such a socket is made here too ([`endpoint`]), for the relay's
//! listening socket and a peer's outgoing one ([`client_endpoint`]) alike.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use crate::LinkError;

/// The receive and send buffer asked for on every hop's UDP socket.
pub const WANTED_BUFFER: usize = 8 << 20;

/// The buffer sizes a socket ended up with (as the kernel reports them: it doubles the
/// request to account for its own bookkeeping).
#[derive(Clone, Copy, Debug)]
pub struct Buffers {
    /// Receive buffer, bytes.
    pub recv: usize,
    /// Send buffer, bytes.
    pub send: usize,
}

impl Buffers {
    /// Whether the kernel granted less than [`WANTED_BUFFER`] for receiving.
    pub fn capped(&self) -> bool {
        self.recv < WANTED_BUFFER
    }
}

/// Asks for [`WANTED_BUFFER`] each way on `socket`; returns what the kernel granted, or
/// `None` if it cannot say. Failing to enlarge is not an error: the socket works as it is.
pub fn tune_socket(socket: &UdpSocket) -> Option<Buffers> {
    let s = socket2::SockRef::from(socket);
    let _ = s.set_recv_buffer_size(WANTED_BUFFER);
    let _ = s.set_send_buffer_size(WANTED_BUFFER);
    Some(Buffers { recv: s.recv_buffer_size().ok()?, send: s.send_buffer_size().ok()? })
}

/// A quinn endpoint on `socket` (already tuned by the caller, who may want to report
/// what [`tune_socket`] got); `server` makes it accept connections.
pub fn endpoint(socket: UdpSocket, server: Option<quinn::ServerConfig>) -> std::io::Result<quinn::Endpoint> {
    quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, Arc::new(quinn::TokioRuntime))
}

/// An endpoint for dialling `target`: a fresh UDP socket on an ephemeral port of the
/// target's address family, tuned like the relay's (the relay sends bursts to peers too).
pub fn client_endpoint(target: SocketAddr) -> Result<quinn::Endpoint, LinkError> {
    let bind: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(bind).map_err(LinkError::Socket)?;
    tune_socket(&socket);
    endpoint(socket, None).map_err(LinkError::Socket)
}
