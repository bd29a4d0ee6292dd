//! A host id can only be registered by the holder of its key, and a registration proof
//! is bound to the connection it was made on.

mod common;

use anyhow::Result;
use bytes::BytesMut;
use common::{echo_stack, read_message};
use ferry_client::HopOptions;
use ferry_client::dial::quic;
use ferry_proto::proof::HostProver;
use ferry_proto::{EXPORTER_LEN, HostId, Message, REGISTRATION_EXPORTER_LABEL, RefuseReason, StaticKey};

struct Attempt {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: BytesMut,
}

/// Opens a control stream and sends `Register` for `claimed` with `hello`.
async fn register(conn: &quinn::Connection, claimed: HostId, hello: Vec<u8>) -> Result<(Attempt, Message)> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&Message::Register { host_id: claimed, token: None, handshake: hello }.to_vec()?).await?;
    let mut buf = BytesMut::new();
    let answer = read_message(&mut recv, &mut buf).await?;
    Ok((Attempt { send, recv, buf }, answer))
}

async fn prove(attempt: &mut Attempt, proof: Vec<u8>) -> Result<Message> {
    attempt.send.write_all(&Message::Proof { handshake: proof }.to_vec()?).await?;
    read_message(&mut attempt.recv, &mut attempt.buf).await
}

fn exporter(conn: &quinn::Connection) -> [u8; EXPORTER_LEN] {
    let mut out = [0u8; EXPORTER_LEN];
    conn.export_keying_material(&mut out, REGISTRATION_EXPORTER_LABEL, b"").unwrap();
    out
}

fn challenge(m: Message) -> Vec<u8> {
    match m {
        Message::Challenge { handshake } => handshake,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_the_key_cannot_register_its_id() -> Result<()> {
    let s = echo_stack().await?;
    let victim = s.stack.identity.key.public();
    let thief = StaticKey::generate()?;
    let conn = quic::connect(&s.stack.ticket.relays[0], &HopOptions::host()).await?;
    let (prover, hello) = HostProver::start(&thief, &exporter(&conn))?;
    let (mut attempt, answer) = register(&conn, victim, hello).await?;
    let proof = prover.answer(&challenge(answer))?;
    assert_eq!(prove(&mut attempt, proof).await?, Message::Refused { reason: RefuseReason::BadProof });
    // The real host is still the one sessions reach.
    assert_eq!(s.stack.relay.registered_hosts(), 1);
    let session = s.stack.client()?.open_session().await;
    assert!(session.is_ok(), "{:?}", session.err());
    s.stack.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_captured_on_one_connection_is_rejected_on_another() -> Result<()> {
    let s = echo_stack().await?;
    let key = StaticKey::generate()?;
    let relay = &s.stack.ticket.relays[0];

    // A genuine registration on connection A; an eavesdropper keeps hello and proof.
    let conn_a = quic::connect(relay, &HopOptions::host()).await?;
    let (prover, hello) = HostProver::start(&key, &exporter(&conn_a))?;
    let (mut attempt_a, answer) = register(&conn_a, key.public(), hello.clone()).await?;
    let proof = prover.answer(&challenge(answer))?;
    assert_eq!(prove(&mut attempt_a, proof.clone()).await?, Message::Registered);

    // Replayed on connection B, the same bytes do not verify.
    let conn_b = quic::connect(relay, &HopOptions::host()).await?;
    let (mut attempt_b, answer) = register(&conn_b, key.public(), hello).await?;
    let _ = challenge(answer);
    assert_eq!(prove(&mut attempt_b, proof).await?, Message::Refused { reason: RefuseReason::BadProof });

    // And a host tricked into proving for connection A while talking on B (a relay in
    // the middle) cannot even answer B's challenge.
    let (prover, hello) = HostProver::start(&key, &exporter(&conn_a))?;
    let (_attempt_c, answer) = register(&conn_b, key.public(), hello).await?;
    assert!(prover.answer(&challenge(answer)).is_err());
    s.stack.shutdown().await;
    Ok(())
}
