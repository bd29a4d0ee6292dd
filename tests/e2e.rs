//! End to end over QUIC on loopback: a real relay, host and client, a real service, and
//! the bytes that arrive checked by SHA-256.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use common::{echo_stack, echo_stack_with, local_port};
use ferry::local::{Pattern, pattern_digest, send_and_digest};
use ferry_client::{Client, Error, HopOptions, Host, HostConfig, HostIdentity};
use ferry_proto::{CertPin, RefuseReason, RelayAddr, RelayTrust, StaticKey, Ticket, TicketSecret};
use ferry_relay::{Relay, RelayConfig, TlsIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_arrive_byte_exact() -> Result<()> {
    let s = echo_stack().await?;
    let port = local_port(s.stack.client()?).await?;
    let (digest, len) = send_and_digest(TcpStream::connect(port).await?, 64, 64 * MIB).await?;
    assert_eq!(len, 64 * MIB);
    assert_eq!(digest, pattern_digest(64, 64 * MIB));
    s.stack.shutdown().await;
    Ok(())
}

/// The end-to-end keys roll over every `REKEY_INTERVAL` (65,536) records per direction
/// in the middle of a real session: one-byte round trips make one record each way per
/// round, so 70,000 of them cross the interval in both directions, and every byte must
/// come back right. (That the keys really change at that count is checked byte for byte
/// against snow in ferry-proto's record tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outlasts_the_rekey_interval_in_both_directions() -> Result<()> {
    use ferry_proto::e2e::record::REKEY_INTERVAL;
    let s = echo_stack().await?;
    let port = local_port(s.stack.client()?).await?;
    let mut stream = TcpStream::connect(port).await?;
    stream.set_nodelay(true)?;
    let rounds = REKEY_INTERVAL + 4_464;
    tokio::time::timeout(Duration::from_secs(180), async {
        let mut back = [0u8; 1];
        for round in 0..rounds {
            let byte = (round % 251) as u8;
            stream.write_all(&[byte]).await?;
            stream.read_exact(&mut back).await?;
            assert_eq!(back[0], byte, "round {round}");
        }
        anyhow::Ok(())
    })
    .await??;
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_sessions_of_one_mib_arrive_intact() -> Result<()> {
    let s = echo_stack().await?;
    let port = local_port(s.stack.client()?).await?;
    let sessions: Vec<_> = (0..50u64)
        .map(|seed| {
            tokio::spawn(async move {
                let got = send_and_digest(TcpStream::connect(port).await?, seed, MIB).await?;
                anyhow::Ok((seed, got))
            })
        })
        .collect();
    for session in sessions {
        let (seed, (digest, len)) = session.await??;
        assert_eq!(len, MIB, "session {seed}");
        assert_eq!(digest, pattern_digest(seed, MIB), "session {seed}");
    }
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ticket_secret_is_refused_by_the_host() -> Result<()> {
    let s = echo_stack().await?;
    let mut ticket = s.stack.ticket.clone();
    ticket.secret = TicketSecret([0x42; 32]);
    let client = Client::new(ticket, StaticKey::generate()?, HopOptions::client());
    let err = client.open_session().await.err().expect("a wrong secret must not open a session");
    assert!(matches!(err, Error::Proto(ferry_proto::Error::HostRejected)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("ticket") && !text.contains('\n'), "{text}");
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_does_not_match_the_pin_is_refused() -> Result<()> {
    let s = echo_stack().await?;
    let mut ticket = s.stack.ticket.clone();
    let wrong = CertPin([7; 32]);
    ticket.relays[0].trust = RelayTrust::Pin(wrong);
    let client = Client::new(ticket, StaticKey::generate()?, HopOptions::client());
    let err = client.open_session().await.err().expect("a wrong pin must not connect");
    assert!(matches!(err, Error::PinMismatch { expected } if expected == wrong), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("does not match the ticket's pin") && !text.contains('\n'), "{text}");
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_an_unknown_host_is_refused_with_a_reason() -> Result<()> {
    let s = echo_stack().await?;
    let mut ticket = s.stack.ticket.clone();
    ticket.host = StaticKey::generate()?.public();
    let client = Client::new(ticket, StaticKey::generate()?, HopOptions::client());
    let err = client.open_session().await.err().expect("unknown host");
    assert!(matches!(err, Error::Refused(RefuseReason::UnknownHost)), "{err:?}");
    assert!(err.to_string().contains("not connected to this relay"), "{err}");
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_only_ever_sees_ciphertext() -> Result<()> {
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let tap_seen = seen.clone();
    let s = echo_stack_with(move |config| {
        config.tap = Some(Arc::new(move |bytes: &[u8]| tap_seen.lock().unwrap().extend_from_slice(bytes)));
    })
    .await?;
    let marker = b"FERRY-PLAINTEXT-MARKER-7f3a";
    let payload: Vec<u8> = marker.iter().copied().cycle().take(256 * 1024).collect();

    let session = s.stack.client()?.open_session().await?;
    let (mut app, bridge) = session.spawn_pipe(64 * 1024);
    let (mut app_read, mut app_write) = tokio::io::split(&mut app);
    let (_, echoed) = tokio::try_join!(
        async {
            app_write.write_all(&payload).await?;
            app_write.shutdown().await
        },
        async {
            let mut back = Vec::new();
            app_read.read_to_end(&mut back).await.map(|_| back)
        }
    )?;
    assert_eq!(echoed, payload, "the session itself carried the plaintext");
    bridge.await??;

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.len() >= 2 * payload.len(), "the tap saw {} bytes, fewer than were relayed", seen.len());
    assert!(!seen.windows(marker.len()).any(|w| w == marker), "plaintext marker visible to the relay");
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_lets_the_service_answer_after_the_client_finishes() -> Result<()> {
    // A service that reads everything first, then answers with its length: only works
    // if the client's end of stream reaches it and its answer still comes back.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let service = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut all = Vec::new();
                stream.read_to_end(&mut all).await?;
                stream.write_all(format!("got {} bytes", all.len()).as_bytes()).await?;
                stream.shutdown().await
            });
        }
    });
    let stack = ferry::local::LocalStack::start(service, |_| {}).await?;
    let port = local_port(stack.client()?).await?;
    let mut stream = TcpStream::connect(port).await?;
    let mut data = vec![0u8; 3 * MIB as usize];
    Pattern::new(3).fill(&mut data);
    stream.write_all(&data).await?;
    stream.shutdown().await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    assert_eq!(answer, format!("got {} bytes", 3 * MIB));
    stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_work_again_after_the_relay_restarts() -> Result<()> {
    let (service, _echo) = ferry::local::echo_service().await?;
    // The same certificate before and after, as a relay with a state directory keeps it.
    let identity = TlsIdentity::self_signed(&["localhost".into()])?;
    let relay = Relay::spawn(RelayConfig::new(([127, 0, 0, 1], 0).into(), identity.clone())).await?;
    let addr = relay.local_addr();
    let host_identity = HostIdentity::generate()?;
    let relays = vec![RelayAddr { addr: addr.to_string(), trust: RelayTrust::Pin(relay.pin()) }];
    let host = Host::spawn(HostConfig::new(host_identity.clone(), relays.clone(), service.to_string()));
    ferry::local::wait_registered(&host, 1).await?;

    relay.shutdown(Duration::from_secs(2)).await;
    let relay = spawn_on_same_port(RelayConfig::new(addr, identity)).await?;
    // No manual step: the host notices, backs off and registers again by itself.
    ferry::local::wait_registered(&host, 2).await?;

    let ticket = Ticket::new(host_identity.key.public(), host_identity.secret.clone(), relays);
    let port = local_port(Client::new(ticket, StaticKey::generate()?, HopOptions::client())).await?;
    let (digest, len) = send_and_digest(TcpStream::connect(port).await?, 9, MIB).await?;
    assert_eq!((digest, len), (pattern_digest(9, MIB), MIB));
    host.shutdown().await;
    relay.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

/// Binds a relay on a port that was just released; the old socket may take a moment to
/// close, so binding is retried a bounded number of times.
async fn spawn_on_same_port(config: RelayConfig) -> Result<Relay> {
    let mut last = None;
    for _ in 0..100 {
        match Relay::spawn(config.clone()).await {
            Ok(relay) => return Ok(relay),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last.expect("at least one attempt").into())
}
