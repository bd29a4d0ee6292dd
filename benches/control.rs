//! Relay control messages: encoding (`Message::encode` into a reused buffer and
//! `Message::to_vec`) and two-phase decoding (`Message::decode` from a `BytesMut`), per
//! message type. Every session costs a `Connect` + `Accepted` pair and every host a
//! `Register` exchange, so these bound the relay's per-session parsing cost.
//!
//! `cargo bench --bench control`

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferry_proto::message::{RefuseReason, RegistrationToken};
use ferry_proto::{Message, StaticKey};
use std::hint::black_box;

fn messages() -> Vec<(&'static str, Message)> {
    let host_id = StaticKey::generate().expect("a key").public();
    vec![
        ("connect", Message::Connect { host_id }),
        ("accepted", Message::Accepted),
        ("refused", Message::Refused { reason: RefuseReason::HostOverLimit }),
        ("incoming", Message::Incoming { session: 0x1234_5678 }),
        (
            "register",
            Message::Register {
                host_id,
                token: Some(RegistrationToken("a-registration-token-of-32-bytes".into())),
                handshake: vec![7; 48],
            },
        ),
        ("proof", Message::Proof { handshake: vec![9; 96] }),
    ]
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("control/encode");
    for (name, message) in messages() {
        let len = message.to_vec().expect("encodes").len();
        group.throughput(Throughput::Bytes(len as u64));
        let mut out = Vec::with_capacity(4096);
        group.bench_with_input(BenchmarkId::new("encode", name), &message, |b, m| {
            b.iter(|| {
                out.clear();
                black_box(m).encode(&mut out).expect("encodes");
                black_box(out.len())
            })
        });
        group.bench_with_input(BenchmarkId::new("to_vec", name), &message, |b, m| {
            b.iter(|| black_box(m).to_vec().expect("encodes"))
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("control/decode");
    for (name, message) in messages() {
        let frame = message.to_vec().expect("encodes");
        group.throughput(Throughput::Bytes(frame.len() as u64));
        let mut buf = BytesMut::with_capacity(4096);
        group.bench_with_input(BenchmarkId::new("decode", name), &frame, |b, frame| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(frame);
                Message::decode(black_box(&mut buf)).expect("valid").expect("whole")
            })
        });
    }
    // The incomplete path: a frame that has only arrived in part says "need more".
    let frame = messages()[4].1.to_vec().expect("encodes");
    let mut buf = BytesMut::from(&frame[..frame.len() / 2]);
    group.bench_function("decode/incomplete-register", |b| {
        b.iter(|| Message::decode(black_box(&mut buf)).expect("valid"))
    });
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
