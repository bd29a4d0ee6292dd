//! `ferry cat`'s progress and summary: bytes each way while a transfer runs (on a terminal
//! only, like `curl` and `rsync` do), and one line at the end saying what moved.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use ferry_client::Transferred;
use indicatif::{HumanBytes, HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Two counters, "sent" and "received", drawn on stderr when it is a terminal.
pub struct Progress {
    bars: MultiProgress,
    /// Counts what is read from stdin and sent.
    pub sent: ProgressBar,
    /// Counts what is received and written to stdout.
    pub received: ProgressBar,
    started: Instant,
    terminal: bool,
}

impl Progress {
    /// Counters that draw only if stderr is a terminal (a pipe or a log file gets the summary
    /// line alone, at `--log info`).
    pub fn new() -> Self {
        let terminal = std::io::stderr().is_terminal();
        let target = if terminal { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bars = MultiProgress::with_draw_target(target);
        let style = ProgressStyle::with_template("{prefix:>8} {bytes:>11} {binary_bytes_per_sec:>13} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bar = |name: &'static str| {
            let bar = bars.add(ProgressBar::no_length().with_style(style.clone()).with_prefix(name));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        };
        let (sent, received) = (bar("sent"), bar("received"));
        Self { bars, sent, received, started: Instant::now(), terminal }
    }

    /// Clears the counters and says what moved (on the terminal, or as an `info` line).
    pub fn finish(self, outcome: Option<Transferred>) {
        self.sent.finish_and_clear();
        self.received.finish_and_clear();
        let _ = self.bars.clear();
        let elapsed = self.started.elapsed();
        let (sent, received) = match outcome {
            Some(t) => (t.sent, t.received),
            None => (self.sent.position(), self.received.position()),
        };
        let line = summary(sent, received, elapsed);
        if self.terminal {
            eprintln!("{line}");
        } else {
            tracing::info!("{line}");
        }
    }
}

/// `sent 200.00 MiB, received 200.00 MiB in 3 seconds`.
fn summary(sent: u64, received: u64, elapsed: Duration) -> String {
    format!(
        "sent {}, received {} in {}",
        HumanBytes(sent),
        HumanBytes(received),
        HumanDuration(elapsed.max(Duration::from_millis(1)))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_both_directions_in_human_units() {
        let line = summary(200 << 20, 3 << 10, Duration::from_secs(3));
        assert_eq!(line, "sent 200.00 MiB, received 3.00 KiB in 3 seconds");
    }
}
