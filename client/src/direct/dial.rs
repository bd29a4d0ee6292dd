//! The client's side of the direct path: a hop straight to a host address, over QUIC (from
//! the client's shared endpoint, so a punched mapping is the one used) or TLS over TCP,
//! raced like a relay's transports.

use ferry_link::LinkError;

use crate::Error;
use crate::dial::race::race_these;
use crate::dial::tcp::TcpDialer;
use crate::dial::{HopOptions, RelayHop, Transport};
use crate::verify::direct_tls;

/// Opens a hop to the host's direct port at `addr`.
pub(crate) async fn connect(addr: &str, transport: Transport, options: &HopOptions) -> Result<RelayHop, Error> {
    match transport {
        Transport::Quic => quic(addr, options).await.map(RelayHop::Quic),
        Transport::Tcp => TcpDialer::connect_direct(addr, options).await.map(|d| RelayHop::Tcp(Box::new(d))),
        Transport::Auto => race_these(quic(addr, options), TcpDialer::connect_direct(addr, options)).await,
    }
}

/// A QUIC connection to the host's direct port.
pub(crate) async fn quic(addr: &str, options: &HopOptions) -> Result<quinn::Connection, Error> {
    let unreachable = |source: LinkError| Error::HostUnreachable { addr: addr.to_owned(), source };
    let target = ferry_link::resolve(addr).await.map_err(unreachable)?;
    let tls = direct_tls().map_err(|e| unreachable(LinkError::TlsConfig(Box::new(e))))?;
    crate::dial::quic::dial(target, "ferry-direct", tls, options).await.map_err(unreachable)
}
