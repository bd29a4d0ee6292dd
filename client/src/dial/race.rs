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
    race_these(quic::connect(relay, options), TcpDialer::connect(relay, options)).await
}

/// [`race`] over any pair of QUIC and TCP attempts (a relay's, or a host's direct port's).
pub(crate) async fn race_these(
    quic: impl Future<Output = Result<quinn::Connection, Error>>,
    tcp: impl Future<Output = Result<TcpDialer, Error>>,
) -> Result<RelayHop, Error> {
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
    tokio::pin!(tcp);
    let both = |quic: Error, tcp: Error| Error::NoTransportAnswered { quic: Box::new(quic), tcp: Box::new(tcp) };
    if let Some(quic_error) = quic_error {
        return tcp.await.map(|d| RelayHop::Tcp(Box::new(d))).map_err(|tcp| both(quic_error, tcp));
    }
    tokio::select! {
        result = &mut quic => match result {
            Ok(conn) => Ok(RelayHop::Quic(conn)),
            Err(e) if e.is_relay_certificate_problem() => Err(e),
            Err(quic_error) => tcp.await.map(|d| RelayHop::Tcp(Box::new(d))).map_err(|tcp| both(quic_error, tcp)),
        },
        result = &mut tcp => match result {
            Ok(dialer) => Ok(RelayHop::Tcp(Box::new(dialer))),
            Err(e) if e.is_relay_certificate_problem() => Err(e),
            Err(tcp_error) => quic.await.map(RelayHop::Quic).map_err(|quic| both(quic, tcp_error)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::{CertPin, RelayTrust};

    /// Issue 17: with the relay down, `ferry connect` said only that QUIC got no answer (is
    /// UDP blocked?) and hid TCP's immediate "connection refused". Both are said now.
    #[tokio::test]
    async fn when_both_transports_fail_each_ones_failure_is_said() {
        // A port nothing listens on, UDP or TCP.
        let port = {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            udp.local_addr().unwrap().port()
        };
        let relay = RelayAddr { addr: format!("127.0.0.1:{port}"), trust: RelayTrust::Pin(CertPin([0; 32])) };
        let options = HopOptions { connect_timeout: Duration::from_millis(600), ..HopOptions::client() };
        let Err(e) = race(&relay, &options).await else { panic!("nothing listens there") };
        let report = e.report();
        assert!(matches!(e, Error::NoTransportAnswered { .. }), "{report}");
        assert!(report.contains("QUIC: ") && report.contains("; TCP: "), "{report}");
        assert!(report.to_lowercase().contains("refused"), "TCP's own failure is named: {report}");
    }
}
