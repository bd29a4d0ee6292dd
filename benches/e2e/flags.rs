//! The command line (clap) and what it means in work: [`Opts`] is what the user asked
//! for, [`Sizes`] how much each measurement moves in full or quick mode. The sizes are
//! part of what a table means: before/after tables are only comparable at equal sizes.

use std::time::Duration;

use clap::Parser;

use crate::forwarders::Kind;

const MIB: u64 = 1024 * 1024;

/// ferry against a direct connection, socat and rathole (Noise), on loopback.
///
/// Run `cargo build --release` first (the harness runs target/release/ferry-relay).
/// Every row is measured once per round, rounds interleaved; cells are medians over
/// rounds.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "e2e",
    bin_name = "cargo bench --bench e2e --",
    after_help = "See docs/benchmarks.md for what each column means."
)]
pub struct Opts {
    /// Smaller sizes (64 MiB transfers, 1,000 idle sessions only) and 1 round by default.
    #[arg(long)]
    pub quick: bool,
    /// Measure every row this many times, interleaved, and show medians [default: 3, 1
    /// with --quick].
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    rounds: Option<usize>,
    /// Also open 10,000 idle sessions through socat (it forks 10,000 processes).
    #[arg(long = "socat-10k")]
    pub socat_10k: bool,
    /// Measure only this row (repeatable); the others are shown as skipped.
    #[arg(long, value_name = "ROW")]
    pub only: Vec<Kind>,
    /// Run only the target service and print its address; exit when stdin closes. The
    /// harness starts itself this way, so service sockets do not count against its own
    /// open-file limit.
    #[arg(long, hide = true)]
    pub serve_service: bool,
    /// Passed by `cargo bench` to every `harness = false` target; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Opts {
    /// How many rounds: `--rounds`, else 3 (1 with `--quick`).
    pub fn rounds(&self) -> usize {
        self.rounds.unwrap_or(if self.quick { 1 } else { 3 })
    }

    /// Whether `kind`'s row is measured (no `--only`, or named by one).
    pub fn wants(&self, kind: Kind) -> bool {
        self.only.is_empty() || self.only.contains(&kind)
    }
}

/// How much work each measurement does.
#[derive(Clone, Debug)]
pub struct Sizes {
    /// Bytes for the one-session transfer, each way.
    pub single: u64,
    /// Bytes per session for the 8-session transfer, each way.
    pub per_parallel: u64,
    pub parallel: usize,
    pub warm_up: usize,
    pub round_trips: usize,
    pub setups: usize,
    /// Sessions for the one-at-a-time setup rate.
    pub setups_serial: usize,
    pub in_flight: usize,
    pub idle: Vec<usize>,
    /// Longest wait for any one measurement.
    pub deadline: Duration,
}

impl Sizes {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                single: 64 * MIB,
                per_parallel: 8 * MIB,
                parallel: 8,
                warm_up: 100,
                round_trips: 1_000,
                setups: 300,
                setups_serial: 200,
                in_flight: 16,
                idle: vec![1_000],
                deadline: Duration::from_secs(30),
            }
        } else {
            Self {
                single: 512 * MIB,
                per_parallel: 64 * MIB,
                parallel: 8,
                warm_up: 500,
                round_trips: 5_000,
                setups: 2_000,
                setups_serial: 1_000,
                in_flight: 16,
                idle: vec![1_000, 10_000],
                deadline: Duration::from_secs(90),
            }
        }
    }

    /// The header line that says what was measured.
    pub fn describe(&self, rounds: usize) -> String {
        format!(
            "transfers: 1 session x {} MiB, {} sessions x {} MiB, each way; {} round trips; {} session setups ({} in flight) and {} one at a time; idle sessions {:?}; {} round(s), interleaved",
            self.single / MIB,
            self.parallel,
            self.per_parallel / MIB,
            self.round_trips,
            self.setups,
            self.in_flight,
            self.setups_serial,
            self.idle,
            rounds,
        )
    }
}
