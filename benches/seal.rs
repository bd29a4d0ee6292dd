//! Record sealing and opening per record size, and the AEAD choice behind it:
//! ring's AES-256-GCM against ChaCha20-Poly1305 on the same buffers.
//!
//! `cargo bench --bench seal`

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferry_proto::e2e::record::RecordKind;
use ferry_proto::e2e::{Opener, Sealer};
use ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

const SIZES: [usize; 4] = [64, 1200, 16 * 1024, 65_000];

fn aead_choice(c: &mut Criterion) {
    let mut group = c.benchmark_group("aead");
    for size in [1200usize, 16 * 1024, 65_000] {
        group.throughput(Throughput::Bytes(size as u64));
        for (name, alg) in [("aes256gcm", &AES_256_GCM), ("chacha20poly1305", &CHACHA20_POLY1305)] {
            let key = LessSafeKey::new(UnboundKey::new(alg, &[7; 32]).expect("32-byte key"));
            let mut buf = vec![0u8; size];
            let mut n = 0u64;
            group.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.iter(|| {
                    let mut nonce = [0u8; 12];
                    nonce[4..].copy_from_slice(&n.to_be_bytes());
                    n += 1;
                    key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
                        .expect("seal")
                })
            });
        }
    }
    group.finish();
}

fn records(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let data = vec![1u8; size];
        group.bench_with_input(BenchmarkId::new("seal+open", size), &size, |b, _| {
            let mut sealer = Sealer::new(&[3; 32]).expect("key");
            let mut opener = Opener::new(&[3; 32]).expect("key");
            let mut wire = BytesMut::with_capacity(2 * 65_536);
            b.iter(|| {
                sealer.seal(RecordKind::Data, &data, &mut wire).expect("seal");
                opener.open(&mut wire).expect("open").expect("a whole record")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, aead_choice, records);
criterion_main!(benches);
