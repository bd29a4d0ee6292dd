//! Choosing and opening the hop to a relay: QUIC, TLS over TCP, or both raced.
//!
//! QUIC is preferred (one connection carries every session as a stream; no head-of-line
//! blocking between sessions). Where UDP is blocked, QUIC gets no answer at all, so with
//! [`Transport::Auto`] the client gives QUIC a short head start ([`QUIC_HEAD_START`]) and
//! then races TLS over TCP against it, like Happy Eyeballs; the winner is remembered for
//! the relay by the [`crate::Client`] that asked. Over TCP each session is its own TLS
//! connection (rustls resumes sessions, so later handshakes are cheaper); the connection
//! that won the race is kept for the first session.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ferry_link::{LinkRecv, LinkSend, TlsStream, split_tls};
use ferry_proto::{EXPORTER_LEN, REGISTRATION_EXPORTER_LABEL, RelayAddr};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::Error;
use crate::hop::{self, HopOptions, server_name};
use crate::verify::{Rejection, client_tls_explained};

/// How long QUIC runs alone before TCP joins the race.
pub const QUIC_HEAD_START: Duration = Duration::from_millis(250);

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

impl FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "quic" => Ok(Self::Quic),
            "tcp" => Ok(Self::Tcp),
            other => Err(format!("unknown transport `{other}` (use quic, tcp or auto)")),
        }
    }
}

/// One stream to the relay, with the hop's TLS exporter value (for registration).
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
                let (send, recv) =
                    conn.open_bi().await.map_err(|e| Error::Cut(format!("cannot open a stream ({e})")))?;
                let mut exporter = [0u8; EXPORTER_LEN];
                conn.export_keying_material(&mut exporter, REGISTRATION_EXPORTER_LABEL, b"")
                    .map_err(|_| Error::Cut("the hop cannot export keying material".into()))?;
                Ok(HopStream { send: LinkSend::Quic(send), recv: LinkRecv::Quic(recv), exporter })
            }
            Self::Tcp(dialer) => {
                let tls = dialer.take_or_dial().await?;
                let mut exporter = [0u8; EXPORTER_LEN];
                tls.get_ref()
                    .1
                    .export_keying_material(&mut exporter, REGISTRATION_EXPORTER_LABEL, Some(b""))
                    .map_err(|_| Error::Cut("the hop cannot export keying material".into()))?;
                let (send, recv) = split_tls(TlsStream::Client(tls));
                Ok(HopStream { send, recv, exporter })
            }
        }
    }

    /// Closes the hop (QUIC: a connection close; TCP: nothing is held open).
    pub(crate) fn close(&self) {
        if let Self::Quic(conn) = self {
            conn.close(ferry_proto::codes::CLOSE_DONE.into(), b"done");
        }
    }
}

type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// Opens TLS-over-TCP connections to one relay.
pub(crate) struct TcpDialer {
    relay: RelayAddr,
    target: SocketAddr,
    name: ServerName<'static>,
    connector: TlsConnector,
    rejection: Rejection,
    timeout: Duration,
    spare: std::sync::Mutex<Option<ClientTls>>,
}

impl TcpDialer {
    /// Resolves the relay and opens a first connection (kept for the first stream).
    async fn connect(relay: &RelayAddr, options: &HopOptions) -> Result<Self, Error> {
        let unreachable = |reason: String| Error::RelayUnreachable { addr: relay.addr.clone(), reason };
        let target = tokio::net::lookup_host(&relay.addr)
            .await
            .map_err(|e| unreachable(format!("cannot resolve the address ({e})")))?
            .next()
            .ok_or_else(|| unreachable("the name resolves to no address".into()))?;
        let name = ServerName::try_from(server_name(&relay.addr).to_owned())
            .map_err(|_| unreachable("the address is not a valid server name".into()))?;
        let (tls, rejection) = client_tls_explained(relay.trust).map_err(|e| unreachable(e.to_string()))?;
        let dialer = Self {
            relay: relay.clone(),
            target,
            name,
            connector: TlsConnector::from(Arc::new(tls)),
            rejection,
            timeout: options.connect_timeout,
            spare: std::sync::Mutex::new(None),
        };
        let first = dialer.dial().await?;
        *dialer.spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(first);
        Ok(dialer)
    }

    async fn take_or_dial(&self) -> Result<ClientTls, Error> {
        let spare = self.spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match spare {
            Some(tls) => Ok(tls),
            None => self.dial().await,
        }
    }

    async fn dial(&self) -> Result<ClientTls, Error> {
        let unreachable = |reason: String| Error::RelayUnreachable { addr: self.relay.addr.clone(), reason };
        let attempt = async {
            let tcp = TcpStream::connect(self.target).await.map_err(|e| unreachable(format!("TCP: {e}")))?;
            tcp.set_nodelay(true)?;
            self.connector
                .connect(self.name.clone(), tcp)
                .await
                .map_err(|e| self.rejection.error(&self.relay).unwrap_or_else(|| unreachable(format!("TLS: {e}"))))
        };
        tokio::time::timeout(self.timeout, attempt).await.map_err(|_| unreachable("no answer over TCP".into()))?
    }
}

/// Opens a hop to `relay` with the chosen transport.
pub(crate) async fn connect(relay: &RelayAddr, transport: Transport, options: &HopOptions) -> Result<RelayHop, Error> {
    match transport {
        Transport::Quic => hop::connect(relay, options).await.map(RelayHop::Quic),
        Transport::Tcp => TcpDialer::connect(relay, options).await.map(|d| RelayHop::Tcp(Box::new(d))),
        Transport::Auto => race(relay, options).await,
    }
}

/// QUIC with a head start, then QUIC and TCP together; the first to succeed wins.
async fn race(relay: &RelayAddr, options: &HopOptions) -> Result<RelayHop, Error> {
    let quic = hop::connect(relay, options);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names_parse() {
        assert_eq!("auto".parse::<Transport>(), Ok(Transport::Auto));
        assert_eq!("quic".parse::<Transport>(), Ok(Transport::Quic));
        assert_eq!("tcp".parse::<Transport>(), Ok(Transport::Tcp));
        assert!("udp".parse::<Transport>().is_err());
    }
}
