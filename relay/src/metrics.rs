//! Aggregate metrics: what an operator needs to see the relay is healthy, and nothing more.
//!
//! The values are prometheus-client metrics registered once in a [`Registry`];
//! [`Metrics::render`] encodes them with prometheus-client's Prometheus text encoder
//! (exposition format 0.0.4, what the admin port has always served), so the names and the
//! format an operator scrapes stay what `docs/operators.md` lists.
//!
//! Labels are typed ([`Refusal`], [`Direction`]): a label value is an enum variant, so no
//! label can carry an address, host id or session id, none can be misspelt, and their
//! cardinality is fixed. Every labelled series is created when the metrics are, and its
//! handle kept in an array indexed by the variant, so a hot path (the pump, the accept
//! loop) only ever does one relaxed atomic add: no lock, no allocation, no hash lookup.
//! The handshake histogram is a small type of our own for the same reason:
//! prometheus-client's `Histogram` takes a lock per observation.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_proto::RefuseReason;
use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Why a connection or session was turned away: the `reason` label of
/// `ferry_relay_refused_total`.
///
/// It is `ferry_proto::RefuseReason` (whose [`RefuseReason::label`] is the label text) plus
/// the refusals the relay counts without telling the peer (a handshake that timed out, a
/// TLS client without ALPN `ferry/1`). The
/// conversion from `RefuseReason` is an exhaustive match, so a reason added to the protocol
/// does not compile until it has a label here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Refusal {
    /// [`RefuseReason::UnknownHost`].
    UnknownHost,
    /// [`RefuseReason::HostOverLimit`].
    HostOverLimit,
    /// [`RefuseReason::RelayBusy`].
    RelayBusy,
    /// [`RefuseReason::NotAllowed`].
    NotAllowed,
    /// [`RefuseReason::BadProof`].
    BadProof,
    /// [`RefuseReason::RateLimited`].
    RateLimited,
    /// [`RefuseReason::ShuttingDown`].
    ShuttingDown,
    /// [`RefuseReason::Other`], whatever its code.
    Other,
    /// [`RefuseReason::FleetUnavailable`].
    FleetUnavailable,
    /// [`RefuseReason::QuotaExceeded`].
    QuotaExceeded,
    /// The TLS or QUIC handshake did not finish within the handshake timeout, or the
    /// connection then sent no first message (QUIC: opened no stream) within it.
    HandshakeTimeout,
    /// A TLS client over TCP that did not offer ALPN `ferry/1` (QUIC refuses these in
    /// its handshake): it speaks another protocol, or none.
    NoAlpn,
}

impl Refusal {
    /// Every reason, in the order of their discriminants (the index of their counter).
    const ALL: [Self; 12] = [
        Self::UnknownHost,
        Self::HostOverLimit,
        Self::RelayBusy,
        Self::NotAllowed,
        Self::BadProof,
        Self::RateLimited,
        Self::ShuttingDown,
        Self::Other,
        Self::FleetUnavailable,
        Self::QuotaExceeded,
        Self::HandshakeTimeout,
        Self::NoAlpn,
    ];

    /// The protocol's reason this one stands for, if it is one.
    fn proto(self) -> Option<RefuseReason> {
        Some(match self {
            Self::UnknownHost => RefuseReason::UnknownHost,
            Self::HostOverLimit => RefuseReason::HostOverLimit,
            Self::RelayBusy => RefuseReason::RelayBusy,
            Self::NotAllowed => RefuseReason::NotAllowed,
            Self::BadProof => RefuseReason::BadProof,
            Self::RateLimited => RefuseReason::RateLimited,
            Self::ShuttingDown => RefuseReason::ShuttingDown,
            // Every `Other` code has the same label; 0 stands for all of them.
            Self::Other => RefuseReason::Other(0),
            Self::FleetUnavailable => RefuseReason::FleetUnavailable,
            Self::QuotaExceeded => RefuseReason::QuotaExceeded,
            Self::HandshakeTimeout | Self::NoAlpn => return None,
        })
    }

    /// The label text: the protocol's own label, or `handshake_timeout` / `no_alpn`.
    fn label(self) -> &'static str {
        match self {
            Self::HandshakeTimeout => "handshake_timeout",
            Self::NoAlpn => "no_alpn",
            _ => self.proto().map_or("other", RefuseReason::label),
        }
    }
}

impl From<RefuseReason> for Refusal {
    fn from(reason: RefuseReason) -> Self {
        match reason {
            RefuseReason::UnknownHost => Self::UnknownHost,
            RefuseReason::HostOverLimit => Self::HostOverLimit,
            RefuseReason::RelayBusy => Self::RelayBusy,
            RefuseReason::NotAllowed => Self::NotAllowed,
            RefuseReason::BadProof => Self::BadProof,
            RefuseReason::RateLimited => Self::RateLimited,
            RefuseReason::ShuttingDown => Self::ShuttingDown,
            // Counted as `hosts_replaced_total`, never as a refusal.
            RefuseReason::Other(_) | RefuseReason::Replaced => Self::Other,
            RefuseReason::FleetUnavailable => Self::FleetUnavailable,
            RefuseReason::QuotaExceeded => Self::QuotaExceeded,
        }
    }
}

impl EncodeLabelValue for Refusal {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        fmt::Write::write_str(encoder, self.label())
    }
}

/// Which way relayed bytes went: the `direction` label of `ferry_relay_bytes_relayed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Direction {
    /// From the client to the host.
    ClientToHost,
    /// From the host to the client.
    HostToClient,
}

impl Direction {
    /// Both directions, in the order of their discriminants (the index of their counter).
    const ALL: [Self; 2] = [Self::ClientToHost, Self::HostToClient];

    fn label(self) -> &'static str {
        match self {
            Self::ClientToHost => "client_to_host",
            Self::HostToClient => "host_to_client",
        }
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        fmt::Write::write_str(encoder, self.label())
    }
}

/// The labels of `ferry_relay_refused_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: Refusal,
}

/// How a session for a host at another node of the fleet was routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum FleetRoute {
    /// The client was told the owning node's address.
    Redirected,
    /// The session was carried to the owning node.
    Forwarded,
}

impl FleetRoute {
    const ALL: [Self; 2] = [Self::Redirected, Self::Forwarded];
}

impl EncodeLabelValue for FleetRoute {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        fmt::Write::write_str(encoder, if *self == Self::Redirected { "redirected" } else { "forwarded" })
    }
}

/// The labels of `ferry_relay_fleet_sessions_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabel {
    route: FleetRoute,
}

/// The labels of `ferry_relay_bytes_relayed_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabel {
    direction: Direction,
}

/// A gauge of a count that cannot be negative.
type CountGauge = Gauge<u64, AtomicU64>;

/// Upper bounds of the handshake histogram's buckets: nanoseconds, and seconds for the
/// `le` label.
const HANDSHAKE_BUCKETS: [(u64, f64); 12] = [
    (1_000_000, 0.001),
    (5_000_000, 0.005),
    (10_000_000, 0.01),
    (25_000_000, 0.025),
    (50_000_000, 0.05),
    (100_000_000, 0.1),
    (250_000_000, 0.25),
    (500_000_000, 0.5),
    (1_000_000_000, 1.0),
    (2_500_000_000, 2.5),
    (5_000_000_000, 5.0),
    (10_000_000_000, 10.0),
];

/// A histogram over [`HANDSHAKE_BUCKETS`] that observes with two relaxed atomic adds.
///
/// Counts are kept per bucket (not cumulative) plus one for values above the last bound;
/// the total count is their sum, so `+Inf` always equals `_count` even while other
/// threads observe during encoding.
#[derive(Clone, Debug, Default)]
struct LatencyHistogram(Arc<LatencyBuckets>);

#[derive(Debug, Default)]
struct LatencyBuckets {
    counts: [AtomicU64; HANDSHAKE_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    fn observe(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let bucket = HANDSHAKE_BUCKETS.iter().position(|(bound, _)| nanos <= *bound).unwrap_or(HANDSHAKE_BUCKETS.len());
        self.0.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let mut buckets = [(0.0, 0u64); HANDSHAKE_BUCKETS.len()];
        for ((bucket, (_, le)), count) in buckets.iter_mut().zip(&HANDSHAKE_BUCKETS).zip(&self.0.counts) {
            *bucket = (*le, count.load(Ordering::Relaxed));
        }
        let above = self.0.counts[HANDSHAKE_BUCKETS.len()].load(Ordering::Relaxed);
        let count = buckets.iter().map(|(_, n)| n).sum::<u64>() + above;
        // Seconds as a float, the unit Prometheus expects; exact to the nanosecond for
        // sums up to about 100 days of handshake time.
        let sum = Duration::from_nanos(self.0.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        // The encoder makes the buckets cumulative and adds `+Inf` with `count`.
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The relay's counters, gauges and histograms; shared as `Arc<Metrics>`.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// What [`Metrics::render`] encodes; holds clones of the handles below.
    registry: Registry,
    sessions_total: Counter,
    sessions_active: CountGauge,
    /// Indexed by [`Direction`].
    bytes_relayed: [Counter; Direction::ALL.len()],
    hosts_registered: CountGauge,
    /// Indexed by [`Refusal`].
    refused: [Counter; Refusal::ALL.len()],
    buffer_in_use: CountGauge,
    buffer_budget: CountGauge,
    handshake: LatencyHistogram,
    connections_rate_limited: Counter,
    hosts_replaced: Counter,
    /// Indexed by [`FleetRoute`].
    fleet_routed: [Counter; FleetRoute::ALL.len()],
    quic_retries: Counter,
    quota_flushes_failed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        // prometheus-client appends `_total` to counters and a full stop to help texts.
        // The process's own figures under their usual names; the relay's under its prefix.
        let mut root = Registry::default();
        root.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        let registry = root.sub_registry_with_prefix("ferry_relay");
        registry.register(
            "build",
            "The relay's version",
            prometheus_client::metrics::info::Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let sessions_active = CountGauge::default();
        registry.register("sessions_active", "Sessions open now", sessions_active.clone());
        let sessions_total = Counter::default();
        registry.register("sessions", "Sessions paired since the relay started", sessions_total.clone());

        let by_direction = Family::<DirectionLabel, Counter>::default();
        let bytes_relayed =
            Direction::ALL.map(|direction| by_direction.get_or_create_owned(&DirectionLabel { direction }));
        registry.register("bytes_relayed", "Bytes forwarded between clients and hosts, by direction", by_direction);

        let hosts_registered = CountGauge::default();
        registry.register("hosts_registered", "Hosts registered now", hosts_registered.clone());

        let by_reason = Family::<ReasonLabel, Counter>::default();
        let refused = Refusal::ALL.map(|reason| by_reason.get_or_create_owned(&ReasonLabel { reason }));
        registry.register("refused", "Connections and sessions refused, by reason", by_reason);

        let buffer_in_use = CountGauge::default();
        registry.register("buffer_bytes_in_use", "Bytes of the session buffer budget in use", buffer_in_use.clone());
        let buffer_budget = CountGauge::default();
        registry.register(
            "buffer_bytes_budget",
            "Bytes the relay may buffer for all sessions together",
            buffer_budget.clone(),
        );

        let handshake = LatencyHistogram::default();
        registry.register(
            "handshake_duration_seconds",
            "Time from connection to registration or session request",
            handshake.clone(),
        );

        let connections_rate_limited = Counter::default();
        registry.register(
            "connections_rate_limited",
            "Connections refused by the per-source rate limit or connection cap",
            connections_rate_limited.clone(),
        );
        let hosts_replaced = Counter::default();
        registry.register(
            "hosts_replaced",
            "Registrations closed because the same host registered again (two instances with one key take turns)",
            hosts_replaced.clone(),
        );
        let by_route = Family::<RouteLabel, Counter>::default();
        let fleet_routed = FleetRoute::ALL.map(|route| by_route.get_or_create_owned(&RouteLabel { route }));
        registry.register("fleet_sessions", "Sessions for hosts at other nodes of the fleet, by route", by_route);
        let quic_retries = Counter::default();
        registry.register(
            "quic_retries",
            "QUIC connection attempts sent a Retry to prove their address (handshakes piling up)",
            quic_retries.clone(),
        );
        let quota_flushes_failed = Counter::default();
        registry.register(
            "quota_flushes_failed",
            "Quota usage flushes to the fleet's Redis that failed (kept, and sent again until one succeeds)",
            quota_flushes_failed.clone(),
        );
        Self {
            fleet_routed,
            quota_flushes_failed,
            registry: root,
            sessions_total,
            sessions_active,
            bytes_relayed,
            hosts_registered,
            refused,
            buffer_in_use,
            buffer_budget,
            handshake,
            connections_rate_limited,
            hosts_replaced,
            quic_retries,
        }
    }
}

impl Metrics {
    /// A session was paired: counts it and adds it to the active gauge.
    pub(crate) fn session_opened(&self) {
        self.sessions_total.inc();
        self.sessions_active.inc();
    }

    /// A session ended, however it ended.
    pub(crate) fn session_closed(&self) {
        saturating_sub(&self.sessions_active, 1);
    }

    /// Bytes forwarded in each direction (called as they are forwarded or once at session end).
    pub(crate) fn bytes_relayed(&self, client_to_host: u64, host_to_client: u64) {
        self.bytes_relayed[Direction::ClientToHost as usize].inc_by(client_to_host);
        self.bytes_relayed[Direction::HostToClient as usize].inc_by(host_to_client);
    }

    /// A session for a host at another node was redirected or forwarded.
    pub(crate) fn fleet_routed(&self, route: FleetRoute) {
        self.fleet_routed[route as usize].inc();
    }

    /// A quota usage flush to Redis failed (its batch is sent again).
    pub(crate) fn quota_flush_failed(&self) {
        self.quota_flushes_failed.inc();
    }

    /// A host registered.
    pub(crate) fn host_registered(&self) {
        self.hosts_registered.inc();
    }

    /// A host's registration ended.
    pub(crate) fn host_unregistered(&self) {
        saturating_sub(&self.hosts_registered, 1);
    }

    /// A connection or session was refused: a protocol [`RefuseReason`] or a [`Refusal`].
    pub(crate) fn refused(&self, reason: impl Into<Refusal>) {
        self.refused[reason.into() as usize].inc();
    }

    /// Bytes of the buffer budget taken.
    pub(crate) fn buffer_reserved(&self, bytes: u64) {
        self.buffer_in_use.inc_by(bytes);
    }

    /// Bytes of the buffer budget given back.
    pub(crate) fn buffer_released(&self, bytes: u64) {
        saturating_sub(&self.buffer_in_use, bytes);
    }

    /// The configured buffer budget, shown beside what is in use.
    pub(crate) fn set_buffer_budget(&self, bytes: u64) {
        self.buffer_budget.set(bytes);
    }

    /// How long a handshake (connection to registration or session request) took.
    pub(crate) fn handshake_seconds(&self, duration: Duration) {
        self.handshake.observe(duration);
    }

    /// A connection was turned away by the per-source connection rate or connection cap.
    pub(crate) fn connections_rate_limited(&self) {
        self.connections_rate_limited.inc();
    }

    /// A registration was closed by a newer registration of the same host.
    pub(crate) fn host_replaced(&self) {
        self.hosts_replaced.inc();
    }

    /// A QUIC connection attempt was sent a Retry.
    pub(crate) fn quic_retry(&self) {
        self.quic_retries.inc();
    }

    /// Bytes of the buffer budget in use now.
    // Read by tests (here and in `limits`); the relay itself only renders.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn buffer_in_use(&self) -> u64 {
        self.buffer_in_use.get()
    }

    /// Bytes relayed so far: (client to host, host to client).
    // Read by tests (here and in `limits`); the relay itself only renders.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn bytes_relayed_totals(&self) -> (u64, u64) {
        let [client_to_host, host_to_client] = &self.bytes_relayed;
        (client_to_host.get(), host_to_client.get())
    }

    /// Sessions open now.
    // Read by tests (here and in `limits`); the relay itself only renders.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn sessions_active(&self) -> u64 {
        self.sessions_active.get()
    }

    /// Everything, in the Prometheus text exposition format 0.0.4 ([`CONTENT_TYPE`]).
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a `String` cannot fail, and our own metrics' encoders only pass the
        // writer's errors on.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// Lowers a gauge without wrapping below zero: a stray extra decrement must not show as 2⁶⁴.
fn saturating_sub(gauge: &CountGauge, amount: u64) {
    let _ =
        gauge.inner().fetch_update(Ordering::Relaxed, Ordering::Relaxed, |value| Some(value.saturating_sub(amount)));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The value of one series (its name and labels exactly as rendered) in `text`.
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
    }

    /// The sample lines of `text` as (series, value); every other line is `# HELP` or `# TYPE`.
    fn samples(text: &str) -> Vec<(&str, f64)> {
        assert!(text.ends_with('\n'), "the exposition ends with a newline");
        text.lines()
            .filter(|line| {
                assert!(!line.is_empty(), "no blank lines");
                !line.starts_with("# HELP ") && !line.starts_with("# TYPE ")
            })
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample has a value: {line}"));
                (series, value.parse().unwrap_or_else(|_| panic!("value is a float: {line}")))
            })
            .collect()
    }

    #[test]
    fn empty_metrics_render_valid_text() {
        let text = Metrics::default().render();
        let samples = samples(&text);
        // Nothing has happened: every count is 0 but the build's info (1) and the process's
        // own figures, which a live process always has.
        let fresh = |series: &str| series.starts_with("ferry_relay_build_info") || series.starts_with("process_");
        assert!(samples.iter().all(|(series, value)| *value == 0.0 || fresh(series)), "{text}");
        // Every family is declared, names as operators know them.
        for family in [
            "sessions_active gauge",
            "sessions_total counter",
            "bytes_relayed_total counter",
            "hosts_registered gauge",
            "refused_total counter",
            "buffer_bytes_in_use gauge",
            "buffer_bytes_budget gauge",
            "handshake_duration_seconds histogram",
            "connections_rate_limited_total counter",
            "quic_retries_total counter",
        ] {
            assert!(text.contains(&format!("\n# TYPE ferry_relay_{family}\n")), "{family} in\n{text}");
        }
        for (series, _) in &samples {
            assert!(series.starts_with("ferry_relay_") || series.starts_with("process_"), "{series}");
        }
        for family in
            ["process_cpu_seconds_total counter", "process_resident_memory_bytes gauge", "process_open_fds gauge"]
        {
            assert!(text.contains(&format!("\n# TYPE {family}\n")), "{family} in\n{text}");
        }
        assert!(
            text.contains(&format!("ferry_relay_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))),
            "{text}"
        );
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
        metrics.refused(RefuseReason::UnknownHost);
        metrics.refused(RefuseReason::RateLimited);
        metrics.refused(Refusal::HandshakeTimeout);
        metrics.refused(Refusal::HandshakeTimeout);
        metrics.refused(RefuseReason::Other(42));
        metrics.set_buffer_budget(64 << 20);
        metrics.buffer_reserved(3 << 20);
        metrics.buffer_released(1 << 20);
        metrics.handshake_seconds(Duration::from_micros(500));
        metrics.handshake_seconds(Duration::from_millis(5));
        metrics.handshake_seconds(Duration::from_millis(300));
        metrics.handshake_seconds(Duration::from_secs(60));
        metrics.connections_rate_limited();
        metrics.quic_retry();
        metrics.quic_retry();

        let text = metrics.render();
        samples(&text);
        let value = |series: &str| value(&text, series);
        assert_eq!(value("ferry_relay_sessions_active"), 2.0);
        assert_eq!(value("ferry_relay_sessions_total"), 3.0);
        assert_eq!(value("ferry_relay_bytes_relayed_total{direction=\"client_to_host\"}"), 1024.0);
        assert_eq!(value("ferry_relay_bytes_relayed_total{direction=\"host_to_client\"}"), 23.0);
        assert_eq!(value("ferry_relay_hosts_registered"), 1.0);
        let reason = |r: &str| value(&format!("ferry_relay_refused_total{{reason=\"{r}\"}}"));
        assert_eq!(reason("unknown_host"), 1.0);
        assert_eq!(reason("rate_limited"), 1.0);
        assert_eq!(reason("handshake_timeout"), 2.0);
        assert_eq!(reason("other"), 1.0);
        assert_eq!(reason("bad_proof"), 0.0);
        assert_eq!(value("ferry_relay_buffer_bytes_in_use"), f64::from(2u32 << 20));
        assert_eq!(value("ferry_relay_buffer_bytes_budget"), f64::from(64u32 << 20));
        let le = |l: &str| value(&format!("ferry_relay_handshake_duration_seconds_bucket{{le=\"{l}\"}}"));
        assert_eq!(le("0.001"), 1.0);
        assert_eq!(le("0.005"), 2.0, "a bound is inclusive");
        assert_eq!(le("0.25"), 2.0);
        assert_eq!(le("0.5"), 3.0);
        assert_eq!(le("10"), 3.0);
        assert_eq!(le("+Inf"), 4.0);
        assert_eq!(value("ferry_relay_handshake_duration_seconds_count"), 4.0);
        let sum = value("ferry_relay_handshake_duration_seconds_sum");
        assert!((sum - 60.3055).abs() < 1e-9, "{sum}");
        assert_eq!(value("ferry_relay_connections_rate_limited_total"), 1.0);
        assert_eq!(value("ferry_relay_quic_retries_total"), 2.0);

        // The buckets are cumulative, in increasing order of their bounds, ending in `+Inf`.
        let buckets: Vec<(f64, f64)> = samples(&text)
            .into_iter()
            .filter_map(|(series, count)| {
                let le = series.strip_prefix("ferry_relay_handshake_duration_seconds_bucket{le=\"")?;
                let le = le.strip_suffix("\"}")?;
                Some((if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? }, count))
            })
            .collect();
        assert_eq!(buckets.len(), HANDSHAKE_BUCKETS.len() + 1);
        assert!(buckets.windows(2).all(|pair| pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1), "{buckets:?}");
        assert_eq!(buckets.last().map(|(le, _)| *le), Some(f64::INFINITY));

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
            RefuseReason::FleetUnavailable,
            RefuseReason::QuotaExceeded,
            RefuseReason::Other(200),
        ];
        for reason in reasons {
            assert_eq!(Refusal::from(reason).label(), reason.label(), "{reason:?} has no counter of its own");
        }
        // One counter per reason, each at the index of its discriminant, each label distinct.
        for (index, reason) in Refusal::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, index, "{reason:?}");
        }
        let labels: BTreeSet<_> = Refusal::ALL.map(Refusal::label).into_iter().collect();
        assert_eq!(labels.len(), Refusal::ALL.len());
        for (index, direction) in Direction::ALL.into_iter().enumerate() {
            assert_eq!(direction as usize, index, "{direction:?}");
        }
        // Every reason is rendered, zero or not.
        let text = Metrics::default().render();
        for label in labels {
            value(&text, &format!("ferry_relay_refused_total{{reason=\"{label}\"}}"));
        }
    }

    #[test]
    fn the_operators_guide_lists_every_metric_and_no_other() {
        let guide = include_str!("../../docs/operators.md");
        let section = guide.split("## Metrics and health").nth(1).and_then(|rest| rest.split("\n## ").next());
        let section = section.expect("docs/operators.md has a metrics section");
        let listed: BTreeSet<&str> = section
            .lines()
            .filter_map(|line| line.strip_prefix("| `ferry_relay_"))
            .map(|rest| rest.split(['`', '{']).next().unwrap_or_default())
            .collect();
        let text = Metrics::default().render();
        let rendered: BTreeSet<&str> =
            text.lines().filter_map(|line| line.strip_prefix("# TYPE ferry_relay_")?.split(' ').next()).collect();
        assert_eq!(listed, rendered);
        // And the refusal reasons the guide names are the labels.
        let reasons = section.lines().find(|line| line.contains("`ferry_relay_refused_total")).unwrap();
        for reason in Refusal::ALL {
            assert!(reasons.contains(&format!("`{}`", reason.label())), "{reason:?} is not in the guide");
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
        assert_eq!(value(&metrics.render(), "ferry_relay_hosts_registered"), 0.0);
    }

    #[test]
    fn no_label_can_carry_an_id() {
        // Labels are enums, so an address cannot even be passed; an unknown protocol code
        // is counted as `other`, never as its number.
        let metrics = Metrics::default();
        metrics.refused(RefuseReason::Other(203));
        let text = metrics.render();
        assert!(!text.contains("203"), "{text}");
        let labels: BTreeSet<&str> = samples(&text)
            .into_iter()
            .filter_map(|(series, _)| series.split_once('{'))
            .flat_map(|(_, labels)| labels.trim_end_matches('}').split(','))
            .filter_map(|pair| pair.split_once('=').map(|(key, _)| key))
            .collect();
        assert_eq!(labels, BTreeSet::from(["direction", "le", "reason", "route", "version"]));
    }
}
