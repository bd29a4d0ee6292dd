//! [`Transport::Auto`](super::Transport::Auto): QUIC with a head start, then QUIC and TCP
//! together, like Happy Eyeballs.
//!
//! Where UDP is blocked QUIC gets no answer at all, so waiting for its timeout would cost
//! seconds; after [`QUIC_HEAD_START`] TLS over TCP joins and the first to succeed wins. A
//! certificate refusal ends the race at once: the other transport would reach the same
//! relay with the same certificate.

use std::time::Duration;

use ferry_proto::RelayAddr;

use super::tcp::TcpDialer;
use super::{HopOptions, RelayHop, quic};
use crate::Error;

/// How long QUIC runs alone before TCP joins the race.
pub const QUIC_HEAD_START: Duration = Duration::from_millis(250);

/// QUIC with a head start, then QUIC and TCP together; the first to succeed wins.
pub(crate) async fn race(relay: &RelayAddr, options: &HopOptions) -> Result<RelayHop, Error> {
    let quic = quic::connect(relay, options);
    tokio::pin!(quic);
    let mut quic_error = None;
    tokio::select! {
        result = &mut quic => match result {
            Ok(conn) => return Ok(RelayHop::Quic(conn)),
            Err(e) if e.is_relay_certificate_problem() => return Err(e),
            Err(e) => quic_error = Some(e),
        },
        _ = tokio::time::sleep(QUIC_HEAD_START) => {}
    }
    let tcp = TcpDialer::connect(relay, options);
    tokio::pin!(tcp);
    if quic_error.is_some() {
        return tcp.await.map(|d| RelayHop::Tcp(Box::new(d)));
    }
    tokio::select! {
        result = &mut quic => match result {
            Ok(conn) => Ok(RelayHop::Quic(conn)),
            Err(e) if e.is_relay_certificate_problem() => Err(e),
            Err(_) => tcp.await.map(|d| RelayHop::Tcp(Box::new(d))),
        },
        result = &mut tcp => match result {
            Ok(dialer) => Ok(RelayHop::Tcp(Box::new(dialer))),
            Err(e) if e.is_relay_certificate_problem() => Err(e),
            Err(_) => quic.await.map(RelayHop::Quic),
        },
    }
}
