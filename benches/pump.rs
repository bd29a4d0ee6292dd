//! The record path in memory: plaintext sealed into records (`Sealer`), written into a
//! `tokio::io::duplex` pipe, read back and opened (`Opener`), as one session direction
//! does between a local socket and the relay stream, minus the network. A plain copy
//! through the same pipe is the baseline, so the difference is the cost of the records.
//!
//! `cargo bench --bench pump`

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ferry_proto::e2e::record::{MAX_RECORD_DATA, Record, RecordKind};
use ferry_proto::e2e::{Opener, Sealer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes moved per iteration.
const TOTAL: usize = 16 * 1024 * 1024;
/// Pipe capacity, about a relay's per-direction buffer.
const PIPE: usize = 1 << 20;

/// Seals `TOTAL` bytes in records of `chunk` bytes into one end of a pipe and opens
/// them from the other; returns the plaintext bytes received.
async fn sealed(chunk: usize) -> usize {
    let (mut tx, mut rx) = tokio::io::duplex(PIPE);
    let writer = tokio::spawn(async move {
        let mut sealer = Sealer::new(&[3; 32]).expect("key");
        let plain = vec![0x5au8; chunk];
        let mut out = BytesMut::with_capacity(2 * (chunk + 64));
        let mut left = TOTAL;
        while left > 0 {
            let n = left.min(chunk);
            sealer.seal(RecordKind::Data, &plain[..n], &mut out).expect("seal");
            tx.write_all(&out).await.expect("write");
            out.clear();
            left -= n;
        }
        sealer.seal(RecordKind::Fin, &[], &mut out).expect("seal");
        tx.write_all(&out).await.expect("write");
    });
    let mut opener = Opener::new(&[3; 32]).expect("key");
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut received = 0;
    'read: loop {
        buf.reserve(128 * 1024);
        if rx.read_buf(&mut buf).await.expect("read") == 0 {
            break;
        }
        while let Some(record) = opener.open(&mut buf).expect("open") {
            match record {
                Record::Data(data) => received += data.len(),
                Record::Fin => break 'read,
            }
        }
    }
    writer.await.expect("writer");
    received
}

/// The same bytes through the same pipe without records.
async fn plain(chunk: usize) -> usize {
    let (mut tx, mut rx) = tokio::io::duplex(PIPE);
    let writer = tokio::spawn(async move {
        let plain = vec![0x5au8; chunk];
        let mut left = TOTAL;
        while left > 0 {
            let n = left.min(chunk);
            tx.write_all(&plain[..n]).await.expect("write");
            left -= n;
        }
    });
    let mut buf = vec![0u8; 128 * 1024];
    let mut received = 0;
    loop {
        let n = rx.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        received += n;
    }
    writer.await.expect("writer");
    received
}

fn pump(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("runtime");
    let mut group = c.benchmark_group("pump");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.sample_size(20);
    for chunk in [1200usize, 16 * 1024, MAX_RECORD_DATA] {
        group.bench_with_input(BenchmarkId::new("seal+pipe+open", chunk), &chunk, |b, &c| {
            b.iter(|| assert_eq!(runtime.block_on(sealed(c)), TOTAL))
        });
        group.bench_with_input(BenchmarkId::new("pipe only", chunk), &chunk, |b, &c| {
            b.iter(|| assert_eq!(runtime.block_on(plain(c)), TOTAL))
        });
    }
    group.finish();
}

criterion_group!(benches, pump);
criterion_main!(benches);
