//! The end-to-end handshake's cost per session, both ends in memory (no sockets): the full
//! classic handshake (`IKpsk2`, X25519 only), the full hybrid one (with ML-KEM-768) and the
//! resumed one (`NNpsk0` with a PSK from an earlier full session). Also prints each kind's
//! bytes on the wire (first frame + answer).
//!
//! `cargo bench --bench handshake` — on a shared machine compare the kinds within one run
//! (ratios), not absolute times across runs.

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use ferry_proto::e2e::{ClientHandshake, HostHandshake, Offer, PskTable, ResumptionPsk};
use ferry_proto::{StaticKey, TicketSecret};

struct Ends {
    host: StaticKey,
    client: StaticKey,
    secret: TicketSecret,
}

impl Ends {
    fn new() -> Self {
        Self {
            host: StaticKey::generate().expect("random keys"),
            client: StaticKey::generate().expect("random keys"),
            secret: TicketSecret([9; 32]),
        }
    }

    /// One full handshake with `offer`; returns the PSK it left and the bytes on the wire.
    fn full(&self, offer: Offer, table: &mut PskTable) -> (Option<ResumptionPsk>, usize) {
        let (ch, hello) =
            ClientHandshake::start_offering(&self.host.public(), &self.secret, &self.client, Some("web"), offer)
                .expect("hello");
        let mut hh = HostHandshake::read(&self.host, &self.secret, &hello).expect("read");
        hh.offer_psk(true);
        let (answer, host_end) = hh.accept_session().expect("answer");
        if let Some(psk) = &host_end.psk {
            table.insert(psk, self.client.public(), Instant::now());
        }
        // (The table insert is in the measurement, as on a host; it is O(1).)
        let client_end = ch.finish_session(&answer).expect("finish");
        (client_end.psk, hello.len() + answer.len())
    }

    /// One resumed handshake with `psk`; returns the bytes on the wire.
    fn resumed(&self, psk: &ResumptionPsk, table: &mut PskTable) -> usize {
        let (ch, hello) = ClientHandshake::start_resumed(&self.host.public(), psk, Some("web"), false).expect("hello");
        let hh = HostHandshake::read_resumed(&self.host, table, &hello, Instant::now()).expect("a known PSK");
        let (answer, _) = hh.accept_session().expect("answer");
        ch.finish_session(&answer).expect("finish");
        hello.len() + answer.len()
    }
}

fn handshakes(c: &mut Criterion) {
    let ends = Ends::new();
    let mut table = PskTable::default();
    let classic = Offer { psk: true, ..Offer::default() };
    let hybrid = Offer::current(false);
    let (_, classic_bytes) = ends.full(classic, &mut table);
    let (psk, hybrid_bytes) = ends.full(hybrid, &mut table);
    let psk = psk.expect("the host keeps a PSK");
    let resumed_bytes = ends.resumed(&psk, &mut table);
    println!(
        "handshake bytes on the wire (first frame + answer, without framing): full classic {classic_bytes}, full hybrid {hybrid_bytes}, resumed {resumed_bytes}"
    );

    // The full runs keep their PSKs in a table of their own: thousands of them would evict
    // the one the resumed run uses, as a busy host evicts its oldest.
    let mut scratch = PskTable::default();
    let mut group = c.benchmark_group("handshake");
    group.bench_function("full_classic", |b| b.iter(|| ends.full(classic, &mut scratch)));
    group.bench_function("full_hybrid", |b| b.iter(|| ends.full(hybrid, &mut scratch)));
    group.bench_function("resumed", |b| b.iter(|| ends.resumed(&psk, &mut table)));
    group.finish();
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
