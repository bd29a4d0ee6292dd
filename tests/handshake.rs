//! The end-to-end handshake kinds over real relay sockets on loopback: the first session with
//! a host takes the full (hybrid) handshake, the next ones the resumed one, and a host that
//! lost the PSK answers with a fallback the client turns into a full handshake unseen by the
//! user. Bytes are checked by SHA-256.

mod common;

use std::sync::Arc;

use anyhow::Result;
use common::{echo_stack, local_port};
use ferry::local::{echo_service, pattern_digest, send_and_digest, wait_registered};
use ferry_client::{HandshakeCounts, Host, HostConfig};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_session_with_a_host_takes_the_resumed_handshake() -> Result<()> {
    let s = echo_stack().await?;
    let client = Arc::new(s.stack.client()?);
    let port = local_port(client.clone()).await?;
    let (digest, len) = send_and_digest(TcpStream::connect(port).await?, 1, MIB).await?;
    assert_eq!((digest, len), (pattern_digest(1, MIB), MIB));
    assert_eq!(client.handshake_counts(), HandshakeCounts { full_hybrid: 1, ..Default::default() });
    for seed in 2..5 {
        let (digest, len) = send_and_digest(TcpStream::connect(port).await?, seed, MIB).await?;
        assert_eq!((digest, len), (pattern_digest(seed, MIB), MIB), "session {seed}");
    }
    let counts = client.handshake_counts();
    assert_eq!(counts, HandshakeCounts { full_hybrid: 1, resumed: 3, ..Default::default() });
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_lost_the_psk_falls_back_to_a_full_handshake_on_the_same_stream() -> Result<()> {
    let s = echo_stack().await?;
    let client = Arc::new(s.stack.client()?);
    let port = local_port(client.clone()).await?;
    let (digest, _) = send_and_digest(TcpStream::connect(port).await?, 1, MIB).await?;
    assert_eq!(digest, pattern_digest(1, MIB));
    // The host restarts (same identity): its PSK table is empty.
    let (service, _task) = echo_service().await?;
    let common::EchoStack { stack, .. } = s;
    let ferry::local::LocalStack { relay, host, identity, ticket } = stack;
    host.shutdown().await;
    let host = Host::spawn(HostConfig::new(identity, ticket.relays.clone(), service.to_string()));
    wait_registered(&host, 1).await?;

    let (digest, len) = send_and_digest(TcpStream::connect(port).await?, 2, MIB).await?;
    assert_eq!((digest, len), (pattern_digest(2, MIB), MIB), "the fallback is invisible to the user");
    let after_fallback = client.handshake_counts();
    assert_eq!(after_fallback, HandshakeCounts { full_hybrid: 2, fallbacks: 1, ..Default::default() });
    // And the full handshake of the fallback left a new PSK the restarted host knows.
    let (digest, _) = send_and_digest(TcpStream::connect(port).await?, 3, MIB).await?;
    assert_eq!(digest, pattern_digest(3, MIB));
    assert_eq!(client.handshake_counts().resumed, 1);
    host.shutdown().await;
    relay.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(())
}

/// On the direct port too (QUIC, and TLS on TCP): the resumed hello travels inside the direct
/// tag, and the host tells it apart by its length as through a relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_port_takes_resumed_handshakes_over_quic_and_tcp() -> Result<()> {
    for transport in [ferry_client::Transport::Quic, ferry_client::Transport::Tcp] {
        let (service, _echo) = echo_service().await?;
        let identity = ferry_client::HostIdentity::generate()?;
        let mut config = HostConfig::new(identity.clone(), Vec::new(), service.to_string());
        let direct = ferry_client::DirectConfig::new(([127, 0, 0, 1], 0).into());
        config.direct = Some(ferry_client::DirectConfig { tcp: transport == ferry_client::Transport::Tcp, ..direct });
        let host = Host::try_spawn(config)?;
        let addr = host.direct_addr().ok_or_else(|| anyhow::anyhow!("the host's direct port"))?;
        let mut ticket = ferry_proto::Ticket::new(identity.key.public(), identity.secret.clone(), Vec::new());
        ticket.direct = vec![addr.to_string()];
        let client =
            ferry_client::Client::new(ticket, ferry_proto::StaticKey::generate()?, ferry_client::HopOptions::client())
                .with_transport(transport);
        for seed in 0..3 {
            let payload = common::pattern(seed, 256 * 1024);
            assert!(common::echo_session(&client, &payload).await? == payload, "{transport:?} session {seed}");
        }
        let counts = client.handshake_counts();
        assert_eq!(counts, HandshakeCounts { full_hybrid: 1, resumed: 2, ..Default::default() }, "{transport:?}");
        host.shutdown().await;
    }
    Ok(())
}
