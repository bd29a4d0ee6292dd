//! Links between the nodes of a fleet, for forward mode: one QUIC connection from this
//! node to each node it forwards to, dialled on first use and again once it is gone,
//! carrying one stream per forwarded session.
//!
//! The dialling node accepts only a peer that presents the very certificate this node
//! serves (the fleet's nodes share one certificate, so that clients can check any node
//! with one pin): a stranger at a node's address cannot pose as the node. The other way
//! round, each stream proves knowledge of the fleet secret (`Forward`'s proof, checked by
//! the receiving node in `dispatch`).
//!
//! The link's receive window is not limited at the connection level (as on hosts and
//! clients, `ferry_link::window`): every stream on it is a session this node admitted and
//! reserved buffers for, so the streams' own windows bound what the peer can send, and a
//! forwarded session whose viewer paused can never freeze the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_link::{Congestion, LinkError, TransportSettings};
use ferry_proto::EXPORTER_LEN;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::sync::Mutex;

use crate::TlsIdentity;

/// Longest wait for a link to another node to be dialled.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Keep-alive on a link: a node that dies is noticed within a few seconds.
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// A link silent for this long is dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Sessions one link can always carry at once, in both directions.
const STREAMS: u32 = 4096;

/// A stream to another node, and the link's exporter (for the `Forward` proof).
pub(crate) struct LinkStream {
    pub(crate) send: quinn::SendStream,
    pub(crate) recv: quinn::RecvStream,
    pub(crate) exporter: [u8; EXPORTER_LEN],
}

pub(crate) struct Links {
    client: quinn::ClientConfig,
    /// Open links by node id; one dial at a time (the lock is held while dialling, so
    /// concurrent sessions to a node that just went away wait for one new link).
    open: Mutex<HashMap<String, (quinn::Endpoint, quinn::Connection)>>,
}

impl Links {
    pub(crate) fn new(identity: &TlsIdentity, stream_window: u64) -> Result<Self, crate::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let own = identity.certs.first().cloned().ok_or(crate::Error::FleetSetting {
            why: "this node has no certificate to recognise its fleet's other nodes by".into(),
        })?;
        let verifier = SameCertificate { own, algorithms: provider.signature_verification_algorithms };
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        tls.alpn_protocols = vec![ferry_proto::ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| crate::Error::FleetSetting { why: format!("no QUIC cipher suite for node links: {e}") })?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        let transport = TransportSettings {
            stream_window,
            connection_window: None,
            send_window: None,
            incoming_streams: STREAMS,
            idle_timeout: IDLE_TIMEOUT,
            keep_alive: Some(KEEP_ALIVE),
            congestion: Congestion::default(),
        }
        .build()
        .map_err(|e| crate::Error::FleetSetting { why: format!("node link transport: {e}") })?;
        client.transport_config(Arc::new(transport));
        Ok(Self { client, open: Mutex::new(HashMap::new()) })
    }

    /// A new stream to node `id` at `addr`, over its link (dialled if there is none).
    pub(crate) async fn open(&self, id: &str, addr: &str) -> Result<LinkStream, LinkError> {
        let conn = self.connection(id, addr).await?;
        let exporter = ferry_link::exporter::quic(&conn)?;
        let (send, recv) = tokio::time::timeout(DIAL_TIMEOUT, conn.open_bi())
            .await
            .map_err(|_| LinkError::QuicTimeout)?
            .map_err(ferry_link::stream::connection_error)?;
        Ok(LinkStream { send, recv, exporter })
    }

    /// Whether node `id` at `addr` answers on its link within `limit`: an `Observe` round
    /// trip (any node answers it, and doing so changes nothing there), the link dialled if
    /// there is none. A node that died keeps its link looking open until the idle timeout;
    /// this tells within one round trip.
    pub(crate) async fn answers(&self, id: &str, addr: &str, limit: Duration) -> bool {
        let probe = async {
            let link = self.open(id, addr).await?;
            let mut send = ferry_link::LinkSend::Quic(link.send);
            send.send_message(&ferry_proto::Message::Observe).await?;
            let mut recv = ferry_link::Framed::new(ferry_link::LinkRecv::Quic(link.recv));
            let answer = recv.message(limit).await?;
            Ok::<_, ferry_link::FramedError>(matches!(answer, ferry_proto::Message::Observed { .. }))
        };
        matches!(tokio::time::timeout(limit, probe).await, Ok(Ok(true)))
    }

    /// Drops the link to node `id` (it did not answer), so that the next use dials afresh.
    pub(crate) async fn forget(&self, id: &str) {
        if let Some((_, conn)) = self.open.lock().await.remove(id) {
            conn.close(0u32.into(), b"not answering");
        }
    }

    async fn connection(&self, id: &str, addr: &str) -> Result<quinn::Connection, LinkError> {
        let mut open = self.open.lock().await;
        if let Some((_, conn)) = open.get(id).filter(|(_, c)| c.close_reason().is_none()) {
            return Ok(conn.clone());
        }
        let target = ferry_link::resolve(addr).await?;
        let endpoint = ferry_link::udp::client_endpoint(target)?;
        let name = ferry_link::resolve::server_name(addr);
        let connecting =
            endpoint.connect_with(self.client.clone(), target, name).map_err(|e| LinkError::Connect(Box::new(e)))?;
        let conn = tokio::time::timeout(DIAL_TIMEOUT, connecting)
            .await
            .map_err(|_| LinkError::QuicTimeout)?
            .map_err(|e| LinkError::Handshake(Box::new(e)))?;
        open.insert(id.to_owned(), (endpoint, conn.clone()));
        Ok(conn)
    }
}

/// Accepts exactly one certificate: this node's own, which every node of the fleet serves.
#[derive(Debug)]
struct SameCertificate {
    own: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SameCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.own.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            // Said in the error itself: this is what an operator sees in the node's log.
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
                NotTheFleetCertificate,
            )))))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the node presented another certificate than this node's: the nodes of a fleet must share one certificate")]
struct NotTheFleetCertificate;
