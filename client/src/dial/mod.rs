//! Dialling a relay: everything between "here is a relay address" and "here is a stream
//! on the hop".
//!
//! A **hop** is exactly one thing in this crate: the connection between a peer (host or
//! client) and a relay — one QUIC connection ([`quic`]), or TLS over TCP (`tcp`) where
//! UDP is blocked, with one TLS connection per stream. A path through the relay is two
//! hops (client → relay, relay → host); the end-to-end session rides on a stream of each.
//!
//! QUIC is preferred (one connection carries every session as a stream; no head-of-line
//! blocking between sessions). [`Transport::Auto`] races the two ([`race`]); the winner
//! is remembered for the relay by the [`crate::Client`] that asked. The quinn and TLS
//! plumbing under all of this (transport config, UDP endpoint, exporter, address
//! resolution) is `ferry_link`'s, shared with the relay.
//!
//! # Layout
//! - [`options`]: [`HopOptions`], the hop's tuning (host and client defaults).
//! - [`quic`]: opening a QUIC hop.
//! - `tcp`: opening TLS-over-TCP connections to a relay.
//! - [`race`]: QUIC with a head start against TCP.

use std::str::FromStr;

use ferry_link::{LinkRecv, LinkSend, TlsStream, split_tls};
use ferry_proto::{EXPORTER_LEN, RelayAddr};

use crate::Error;

pub mod options;
pub mod quic;
pub mod race;
pub(crate) mod tcp;

pub use options::HopOptions;
pub use race::QUIC_HEAD_START;
use tcp::TcpDialer;

/// Which hop transport to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// QUIC first, TLS over TCP if QUIC does not answer quickly.
    #[default]
    Auto,
    /// QUIC only.
    Quic,
    /// TLS over TCP only.
    Tcp,
}

impl Transport {
    /// The name flags and logs use: `auto`, `quic` or `tcp`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Quic => "quic",
            Self::Tcp => "tcp",
        }
    }
}

impl FromStr for Transport {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "auto" => Ok(Self::Auto),
            "quic" => Ok(Self::Quic),
            "tcp" => Ok(Self::Tcp),
            other => Err(Error::UnknownTransport { name: other.to_owned() }),
        }
    }
}

/// One stream on a hop, with the hop's TLS exporter value (for registration).
pub(crate) struct HopStream {
    pub(crate) send: LinkSend,
    pub(crate) recv: LinkRecv,
    pub(crate) exporter: [u8; EXPORTER_LEN],
}

/// An established hop to one relay.
pub(crate) enum RelayHop {
    /// A QUIC connection; streams are opened on it.
    Quic(quinn::Connection),
    /// TLS over TCP; each stream is a new connection.
    Tcp(Box<TcpDialer>),
}

impl RelayHop {
    /// Whether the hop can still open streams.
    pub(crate) fn is_alive(&self) -> bool {
        match self {
            Self::Quic(conn) => conn.close_reason().is_none(),
            Self::Tcp(_) => true,
        }
    }

    /// Which transport this hop uses.
    pub(crate) fn transport(&self) -> Transport {
        match self {
            Self::Quic(_) => Transport::Quic,
            Self::Tcp(_) => Transport::Tcp,
        }
    }

    /// Opens a new stream to the relay.
    pub(crate) async fn open_stream(&self) -> Result<HopStream, Error> {
        match self {
            Self::Quic(conn) => {
                let (send, recv) = conn.open_bi().await.map_err(ferry_link::stream::connection_error)?;
                let exporter = ferry_link::exporter::quic(conn)?;
                Ok(HopStream { send: LinkSend::Quic(send), recv: LinkRecv::Quic(recv), exporter })
            }
            Self::Tcp(dialer) => {
                let tls = TlsStream::Client(dialer.take_or_dial().await?);
                let exporter = ferry_link::exporter::tls(&tls)?;
                let (send, recv) = split_tls(tls);
                Ok(HopStream { send, recv, exporter })
            }
        }
    }

    /// Asks the relay which address it sees this QUIC connection come from (`Observe`);
    /// `None` over TCP, from a relay too old to answer, or after `timeout`. A relay of
    /// an older version closes the connection instead, so only hosts with a direct port and
    /// clients about to punch ask.
    pub(crate) async fn observe(&self, timeout: std::time::Duration) -> Option<std::net::SocketAddr> {
        let Self::Quic(conn) = self else { return None };
        let ask = async {
            let (send, recv) = conn.open_bi().await.ok()?;
            let mut send = LinkSend::Quic(send);
            send.send_message(&ferry_proto::Message::Observe).await.ok()?;
            let mut recv = ferry_link::Framed::new(LinkRecv::Quic(recv));
            match recv.message(timeout).await.ok()? {
                ferry_proto::Message::Observed { addr } => Some(addr),
                _ => None,
            }
        };
        tokio::time::timeout(timeout, ask).await.ok().flatten()
    }

    /// Closes the hop (QUIC: a connection close; TCP: nothing is held open).
    pub(crate) fn close(&self) {
        if let Self::Quic(conn) = self {
            conn.close(ferry_proto::codes::CLOSE_DONE.into(), b"done");
        }
    }
}

/// Opens a hop to `relay` with the chosen transport.
pub(crate) async fn connect(relay: &RelayAddr, transport: Transport, options: &HopOptions) -> Result<RelayHop, Error> {
    match transport {
        Transport::Quic => quic::connect(relay, options).await.map(RelayHop::Quic),
        Transport::Tcp => TcpDialer::connect(relay, options).await.map(|d| RelayHop::Tcp(Box::new(d))),
        Transport::Auto => race::race(relay, options).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names_parse() {
        assert_eq!("auto".parse::<Transport>().ok(), Some(Transport::Auto));
        assert_eq!("quic".parse::<Transport>().ok(), Some(Transport::Quic));
        assert_eq!("tcp".parse::<Transport>().ok(), Some(Transport::Tcp));
        assert!("udp".parse::<Transport>().is_err());
        let err = "udp".parse::<Transport>().unwrap_err();
        assert!(matches!(&err, Error::UnknownTransport { name } if name == "udp"), "{err:?}");
        assert_eq!(err.to_string(), "unknown transport `udp` (use quic, tcp or auto)");
    }
}
