//! `ferry cat`'s progress and summary: bytes and rate each way and the path while a
//! transfer runs (on a terminal unless told otherwise, like `curl` and `rsync` do), and one
//! line at the end saying what moved and which way.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use ferry_client::Transferred;
use indicatif::{HumanBytes, HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether to draw the live counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    /// On a terminal only.
    Auto,
    /// Always (`--progress`), also into a pipe or a file.
    Always,
    /// Never (`--quiet`): neither the counters nor the summary.
    Never,
}

/// Two counters, "sent" and "received", drawn on stderr, with the session's path.
pub struct Progress {
    bars: MultiProgress,
    /// Counts what is read from stdin and sent.
    pub sent: ProgressBar,
    /// Counts what is received and written to stdout.
    pub received: ProgressBar,
    started: Instant,
    terminal: bool,
    show: Show,
    path: String,
    /// Plain progress lines, once a second, where `--progress` asked for counters on
    /// something that is not a terminal (indicatif draws only on terminals).
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Counters for a session along `path` (its `Display`: `direct 192.0.2.7:4433`, `relay
    /// relay.example:4433`), drawn as `show` says (a pipe or a log file gets the summary line
    /// alone, at `--log info`, unless `Always`).
    pub fn new(show: Show, path: String) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let draw = match show {
            Show::Auto => terminal,
            Show::Always => true,
            Show::Never => false,
        };
        let target = if draw { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bars = MultiProgress::with_draw_target(target);
        let template = format!("{{prefix:>8}} {{bytes:>11}} {{binary_bytes_per_sec:>13}} {{elapsed}} via {path}");
        let style = ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bar = |name: &'static str| {
            let bar = bars.add(ProgressBar::no_length().with_style(style.clone()).with_prefix(name));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        };
        let (sent, received) = (bar("sent"), bar("received"));
        let ticker = (show == Show::Always && !terminal).then(|| {
            let (sent, received, path) = (sent.clone(), received.clone(), path.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                every.tick().await;
                loop {
                    every.tick().await;
                    eprintln!(
                        "sent {} ({}/s), received {} ({}/s) via {path}",
                        HumanBytes(sent.position()),
                        HumanBytes(sent.per_sec() as u64),
                        HumanBytes(received.position()),
                        HumanBytes(received.per_sec() as u64)
                    );
                }
            })
        });
        Self { bars, sent, received, started: Instant::now(), terminal: draw, show, path, ticker }
    }

    /// Clears the counters and says what moved (on the terminal, or as an `info` line).
    pub fn finish(self, outcome: Option<Transferred>) {
        if let Some(ticker) = &self.ticker {
            ticker.abort();
        }
        self.sent.finish_and_clear();
        self.received.finish_and_clear();
        let _ = self.bars.clear();
        let elapsed = self.started.elapsed();
        let (sent, received) = match outcome {
            Some(t) => (t.sent, t.received),
            None => (self.sent.position(), self.received.position()),
        };
        let line = format!("{} via {}", summary(sent, received, elapsed), self.path);
        if self.show == Show::Never {
            tracing::debug!("{line}");
        } else if self.terminal {
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
