//! Aggregate metrics: what an operator needs to see the relay is healthy, and nothing more.
//!
//! Every value is a lock-free `AtomicU64`, so the hot paths (the pump, the accept loop) only
//! ever do a relaxed add. Labels come from small fixed sets (a refusal's reason, a byte
//! direction, a histogram bucket): no label can carry an address, host id or session id, so
//! the metrics cannot be used to follow a user, and their cardinality is bounded.
//!
//! [`Metrics::render`] writes the Prometheus text exposition format 0.0.4 by hand; the
//! format is a few lines of text and not worth a dependency.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Refusal reasons with a counter of their own: the labels of
/// `ferry_proto::RefuseReason::label()` plus the relay's own. Anything else counts as `other`.
const REFUSE_REASONS: [&str; 9] = [
    "unknown_host",
    "host_over_limit",
    "relay_busy",
    "not_allowed",
    "bad_proof",
    "rate_limited",
    "shutting_down",
    "handshake_timeout",
    "other",
];

/// Index of `other` in [`REFUSE_REASONS`].
const OTHER_REASON: usize = REFUSE_REASONS.len() - 1;

/// Upper bounds of the handshake histogram's buckets, in nanoseconds, with their `le` labels.
const HANDSHAKE_BUCKETS: [(u64, &str); 12] = [
    (1_000_000, "0.001"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
];

/// The relay's counters, gauges and histograms; shared as `Arc<Metrics>`.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    sessions_total: AtomicU64,
    sessions_active: AtomicU64,
    bytes_client_to_host: AtomicU64,
    bytes_host_to_client: AtomicU64,
    hosts_registered: AtomicU64,
    refused: [AtomicU64; REFUSE_REASONS.len()],
    buffer_in_use: AtomicU64,
    buffer_budget: AtomicU64,
    handshake: Histogram,
    connections_rate_limited: AtomicU64,
}

/// A histogram with [`HANDSHAKE_BUCKETS`]; counts are per bucket (not cumulative) plus one
/// for values above the last bound. The count is their sum, so `+Inf` always equals `_count`
/// even while other threads observe.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; HANDSHAKE_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Metrics {
    /// A session was paired: counts it and adds it to the active gauge.
    pub(crate) fn session_opened(&self) {
        self.sessions_total.fetch_add(1, Ordering::Relaxed);
        self.sessions_active.fetch_add(1, Ordering::Relaxed);
    }

    /// A session ended, however it ended.
    pub(crate) fn session_closed(&self) {
        saturating_sub(&self.sessions_active, 1);
    }

    /// Bytes forwarded in each direction (called as they are forwarded or once at session end).
    pub(crate) fn bytes_relayed(&self, client_to_host: u64, host_to_client: u64) {
        self.bytes_client_to_host.fetch_add(client_to_host, Ordering::Relaxed);
        self.bytes_host_to_client.fetch_add(host_to_client, Ordering::Relaxed);
    }

    /// A host registered.
    pub(crate) fn host_registered(&self) {
        self.hosts_registered.fetch_add(1, Ordering::Relaxed);
    }

    /// A host's registration ended.
    pub(crate) fn host_unregistered(&self) {
        saturating_sub(&self.hosts_registered, 1);
    }

    /// A connection or session was refused; `reason` is a `RefuseReason::label()`,
    /// `"rate_limited"` or `"handshake_timeout"`. Unknown labels count as `other`, so a
    /// caller can never grow the label set.
    pub(crate) fn refused(&self, reason: &'static str) {
        let index = REFUSE_REASONS.iter().position(|known| *known == reason).unwrap_or(OTHER_REASON);
        self.refused[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes of the buffer budget taken.
    pub(crate) fn buffer_reserved(&self, bytes: u64) {
        self.buffer_in_use.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes of the buffer budget given back.
    pub(crate) fn buffer_released(&self, bytes: u64) {
        saturating_sub(&self.buffer_in_use, bytes);
    }

    /// The configured buffer budget, shown beside what is in use.
    pub(crate) fn set_buffer_budget(&self, bytes: u64) {
        self.buffer_budget.store(bytes, Ordering::Relaxed);
    }

    /// How long a handshake (connection to registration or session request) took.
    pub(crate) fn handshake_seconds(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let bucket = HANDSHAKE_BUCKETS.iter().position(|(bound, _)| nanos <= *bound).unwrap_or(HANDSHAKE_BUCKETS.len());
        self.handshake.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.handshake.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// A connection was turned away by the per-source connection rate limit.
    pub(crate) fn connections_rate_limited(&self) {
        self.connections_rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes of the buffer budget in use now.
    // Read by tests (here and in `limits`); the relay itself only renders.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn buffer_in_use(&self) -> u64 {
        self.buffer_in_use.load(Ordering::Relaxed)
    }

    /// Bytes relayed so far: (client to host, host to client).
    // Read by tests (here and in `limits`); the relay itself only renders.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn bytes_relayed_totals(&self) -> (u64, u64) {
        (self.bytes_client_to_host.load(Ordering::Relaxed), self.bytes_host_to_client.load(Ordering::Relaxed))
    }

    /// Sessions open now.
    // Read by tests (here and in `limits`); the relay itself only renders.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn sessions_active(&self) -> u64 {
        self.sessions_active.load(Ordering::Relaxed)
    }

    /// Everything, in the Prometheus text exposition format 0.0.4.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a `String` cannot fail.
        let _ = self.write_to(&mut out);
        out
    }

    fn write_to(&self, out: &mut String) -> fmt::Result {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);

        family(out, "sessions_active", "gauge", "Sessions open now.")?;
        writeln!(out, "ferry_relay_sessions_active {}", load(&self.sessions_active))?;
        family(out, "sessions_total", "counter", "Sessions paired since the relay started.")?;
        writeln!(out, "ferry_relay_sessions_total {}", load(&self.sessions_total))?;

        family(out, "bytes_relayed_total", "counter", "Bytes forwarded between clients and hosts, by direction.")?;
        writeln!(
            out,
            "ferry_relay_bytes_relayed_total{{direction=\"client_to_host\"}} {}",
            load(&self.bytes_client_to_host)
        )?;
        writeln!(
            out,
            "ferry_relay_bytes_relayed_total{{direction=\"host_to_client\"}} {}",
            load(&self.bytes_host_to_client)
        )?;

        family(out, "hosts_registered", "gauge", "Hosts registered now.")?;
        writeln!(out, "ferry_relay_hosts_registered {}", load(&self.hosts_registered))?;

        family(out, "refused_total", "counter", "Connections and sessions refused, by reason.")?;
        for (reason, count) in REFUSE_REASONS.iter().zip(&self.refused) {
            writeln!(out, "ferry_relay_refused_total{{reason=\"{reason}\"}} {}", load(count))?;
        }

        family(out, "buffer_bytes_in_use", "gauge", "Bytes of the session buffer budget in use.")?;
        writeln!(out, "ferry_relay_buffer_bytes_in_use {}", load(&self.buffer_in_use))?;
        family(out, "buffer_bytes_budget", "gauge", "Bytes the relay may buffer for all sessions together.")?;
        writeln!(out, "ferry_relay_buffer_bytes_budget {}", load(&self.buffer_budget))?;

        family(
            out,
            "handshake_duration_seconds",
            "histogram",
            "Time from connection to registration or session request.",
        )?;
        let mut cumulative = 0u64;
        for ((_, le), count) in HANDSHAKE_BUCKETS.iter().zip(&self.handshake.buckets) {
            cumulative += load(count);
            writeln!(out, "ferry_relay_handshake_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}")?;
        }
        cumulative += load(&self.handshake.buckets[HANDSHAKE_BUCKETS.len()]);
        writeln!(out, "ferry_relay_handshake_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}")?;
        let sum = load(&self.handshake.sum_nanos);
        writeln!(out, "ferry_relay_handshake_duration_seconds_sum {}.{:09}", sum / 1_000_000_000, sum % 1_000_000_000)?;
        writeln!(out, "ferry_relay_handshake_duration_seconds_count {cumulative}")?;

        family(out, "connections_rate_limited_total", "counter", "Connections dropped by the per-source rate limit.")?;
        writeln!(out, "ferry_relay_connections_rate_limited_total {}", load(&self.connections_rate_limited))?;
        Ok(())
    }
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) -> fmt::Result {
    writeln!(out, "# HELP ferry_relay_{name} {help}")?;
    writeln!(out, "# TYPE ferry_relay_{name} {kind}")
}

/// Lowers a gauge without wrapping below zero: a stray extra decrement must not show as 2⁶⁴.
fn saturating_sub(gauge: &AtomicU64, amount: u64) {
    let _ = gauge.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |value| Some(value.saturating_sub(amount)));
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use ferry_proto::RefuseReason;

    use super::*;

    /// One sample line: name, labels (in order) and value.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    /// A small checker for the text format: every line is a HELP, a TYPE or a sample
    /// `name{labels} value`; every sample belongs to a family declared (HELP and TYPE) before
    /// it; histograms have cumulative buckets ending in `+Inf` equal to `_count`.
    fn parse(text: &str) -> Vec<Sample> {
        assert!(text.ends_with('\n'), "the exposition ends with a newline");
        let mut helped = BTreeSet::new();
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            assert!(!line.is_empty(), "no blank lines");
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has a name and a text");
                assert!(!help.is_empty());
                assert!(helped.insert(name.to_owned()), "one HELP per family: {name}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
                assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
                assert!(helped.contains(name), "HELP comes before TYPE: {name}");
                assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "one TYPE per family: {name}");
                continue;
            }
            assert!(!line.starts_with('#'), "only HELP and TYPE comments: {line}");
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value is a float: {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("labels end with }");
                    let labels = labels
                        .split(',')
                        .map(|pair| {
                            let (key, quoted) = pair.split_once('=').expect("label is key=\"value\"");
                            let value = quoted.strip_prefix('"').and_then(|v| v.strip_suffix('"')).expect("quoted");
                            assert!(!value.contains(['"', '\\', '\n']), "label value needs no escaping");
                            (key.to_owned(), value.to_owned())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, Vec::new()),
            };
            assert!(name.starts_with("ferry_relay_"), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix).filter(|base| types.get(*base).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "sample before its HELP/TYPE: {line}");
            samples.push(Sample { name: name.to_owned(), labels, value });
        }
        for (family, kind) in &types {
            assert!(samples.iter().any(|s| s.name.starts_with(family.as_str())), "family without samples: {family}");
            if kind == "histogram" {
                check_histogram(family, &samples);
            }
        }
        samples
    }

    fn check_histogram(family: &str, samples: &[Sample]) {
        let buckets: Vec<(&str, f64)> = samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
            .map(|s| {
                assert_eq!(s.labels.len(), 1);
                assert_eq!(s.labels[0].0, "le");
                (s.labels[0].1.as_str(), s.value)
            })
            .collect();
        assert!(buckets.len() >= 2);
        let mut previous_bound = f64::NEG_INFINITY;
        let mut previous_count = 0.0;
        for (le, count) in &buckets {
            let bound = if *le == "+Inf" { f64::INFINITY } else { le.parse().expect("le is a float") };
            assert!(bound > previous_bound, "bounds increase: {le}");
            assert!(*count >= previous_count, "buckets are cumulative: {le}");
            previous_bound = bound;
            previous_count = *count;
        }
        assert_eq!(buckets.last().map(|(le, _)| *le), Some("+Inf"));
        let count = samples.iter().find(|s| s.name == format!("{family}_count")).expect("_count").value;
        let sum = samples.iter().find(|s| s.name == format!("{family}_sum")).expect("_sum").value;
        assert_eq!(previous_count, count, "+Inf equals _count");
        assert!(sum >= 0.0);
    }

    fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
        samples
            .iter()
            .find(|s| s.name == name && label.is_none_or(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v)))
            .unwrap_or_else(|| panic!("no sample {name} {label:?}"))
            .value
    }

    #[test]
    fn empty_metrics_render_valid_text() {
        let samples = parse(&Metrics::default().render());
        assert!(samples.iter().all(|s| s.value == 0.0));
    }

    #[test]
    fn render_is_valid_text_and_reports_every_change() {
        let metrics = Metrics::default();
        metrics.session_opened();
        metrics.session_opened();
        metrics.session_opened();
        metrics.session_closed();
        metrics.bytes_relayed(1_000, 20);
        metrics.bytes_relayed(24, 3);
        metrics.host_registered();
        metrics.host_registered();
        metrics.host_unregistered();
        metrics.refused(RefuseReason::UnknownHost.label());
        metrics.refused("rate_limited");
        metrics.refused("handshake_timeout");
        metrics.refused("handshake_timeout");
        metrics.refused("something new");
        metrics.set_buffer_budget(64 << 20);
        metrics.buffer_reserved(3 << 20);
        metrics.buffer_released(1 << 20);
        metrics.handshake_seconds(Duration::from_micros(500));
        metrics.handshake_seconds(Duration::from_millis(5));
        metrics.handshake_seconds(Duration::from_millis(300));
        metrics.handshake_seconds(Duration::from_secs(60));
        metrics.connections_rate_limited();

        let samples = parse(&metrics.render());
        assert_eq!(value(&samples, "ferry_relay_sessions_active", None), 2.0);
        assert_eq!(value(&samples, "ferry_relay_sessions_total", None), 3.0);
        let direction = |d| Some(("direction", d));
        assert_eq!(value(&samples, "ferry_relay_bytes_relayed_total", direction("client_to_host")), 1024.0);
        assert_eq!(value(&samples, "ferry_relay_bytes_relayed_total", direction("host_to_client")), 23.0);
        assert_eq!(value(&samples, "ferry_relay_hosts_registered", None), 1.0);
        let reason = |r| Some(("reason", r));
        assert_eq!(value(&samples, "ferry_relay_refused_total", reason("unknown_host")), 1.0);
        assert_eq!(value(&samples, "ferry_relay_refused_total", reason("rate_limited")), 1.0);
        assert_eq!(value(&samples, "ferry_relay_refused_total", reason("handshake_timeout")), 2.0);
        assert_eq!(value(&samples, "ferry_relay_refused_total", reason("other")), 1.0);
        assert_eq!(value(&samples, "ferry_relay_refused_total", reason("bad_proof")), 0.0);
        assert_eq!(value(&samples, "ferry_relay_buffer_bytes_in_use", None), f64::from(2u32 << 20));
        assert_eq!(value(&samples, "ferry_relay_buffer_bytes_budget", None), f64::from(64u32 << 20));
        let le = |l| Some(("le", l));
        let bucket = "ferry_relay_handshake_duration_seconds_bucket";
        assert_eq!(value(&samples, bucket, le("0.001")), 1.0);
        assert_eq!(value(&samples, bucket, le("0.005")), 2.0, "a bound is inclusive");
        assert_eq!(value(&samples, bucket, le("0.25")), 2.0);
        assert_eq!(value(&samples, bucket, le("0.5")), 3.0);
        assert_eq!(value(&samples, bucket, le("10")), 3.0);
        assert_eq!(value(&samples, bucket, le("+Inf")), 4.0);
        assert_eq!(value(&samples, "ferry_relay_handshake_duration_seconds_count", None), 4.0);
        let sum = value(&samples, "ferry_relay_handshake_duration_seconds_sum", None);
        assert!((sum - 60.3055).abs() < 1e-9, "{sum}");
        assert_eq!(value(&samples, "ferry_relay_connections_rate_limited_total", None), 1.0);

        assert_eq!(metrics.sessions_active(), 2);
        assert_eq!(metrics.bytes_relayed_totals(), (1024, 23));
        assert_eq!(metrics.buffer_in_use(), 2 << 20);
    }

    #[test]
    fn every_proto_refusal_has_its_own_label() {
        let reasons = [
            RefuseReason::UnknownHost,
            RefuseReason::HostOverLimit,
            RefuseReason::RelayBusy,
            RefuseReason::NotAllowed,
            RefuseReason::BadProof,
            RefuseReason::RateLimited,
            RefuseReason::ShuttingDown,
            RefuseReason::Other(200),
        ];
        for reason in reasons {
            assert!(REFUSE_REASONS.contains(&reason.label()), "{reason:?} has no counter of its own");
        }
    }

    #[test]
    fn gauges_do_not_wrap_below_zero() {
        let metrics = Metrics::default();
        metrics.session_closed();
        metrics.host_unregistered();
        metrics.buffer_released(10);
        assert_eq!(metrics.sessions_active(), 0);
        assert_eq!(metrics.buffer_in_use(), 0);
        assert_eq!(value(&parse(&metrics.render()), "ferry_relay_hosts_registered", None), 0.0);
    }

    #[test]
    fn no_label_can_carry_an_id() {
        let metrics = Metrics::default();
        metrics.refused("203.0.113.7");
        let text = metrics.render();
        assert!(!text.contains("203.0.113.7"));
        let labels: BTreeSet<String> =
            parse(&text).into_iter().flat_map(|s| s.labels.into_iter().map(|(key, _)| key)).collect();
        assert_eq!(labels, ["direction", "le", "reason"].map(String::from).into_iter().collect());
    }
}
