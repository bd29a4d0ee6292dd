//! Which QUIC congestion controller a hop uses.
//!
//! Measured on a 50 ms RTT link with 1% random loss each way (`tests/faults.rs`, a
//! userspace impairment proxy): CUBIC, which reads every loss as congestion, moved
//! 16 MiB at 1.45 Mbit/s; BBR, which models bandwidth and RTT instead, at 54 Mbit/s.
//! Media viewers on mobile and Wi-Fi links see exactly that kind of loss, so BBR is the
//! default on every hop (relay, host and client).
//!
//! The price was on fast paths: on loopback (no loss, ~0 RTT, CPU-bound) quinn's BBR kept
//! a window of about twice bandwidth × a minimum RTT of tens of microseconds, a few dozen
//! packets, which one scheduling hiccup of a busy receiver fills; it moved 30–45% fewer
//! bytes than CUBIC there. So BBR here is [`FlooredBbr`]: quinn's BBR whose window is
//! computed as if the round trip were at least a millisecond. Measured with the harness
//! (`cargo bench --bench e2e -- --quick --rounds 1 --only ferry-quic --only rathole-noise`,
//! three interleaved rounds, the 2-core machine quiet): one session up 0.70–0.86 → 0.99–1.13
//! Gbit/s, down 0.99–1.12 → 1.46–1.58, relay CPU 5.0–5.9 → 4.4–4.9 s/GB; CUBIC in the same
//! rounds 0.93–1.14 up and 1.55–1.79 down, so the floor closes the gap on loopback while
//! keeping BBR's loss tolerance on real paths, where the RTT is above the floor and nothing
//! changes. quinn marks its BBR as experimental; CUBIC is one setting away
//! (`congestion = "cubic"` in the relay's config, [`Congestion::Cubic`] in `HopOptions`).

use std::any::Any;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};

use crate::LinkError;

/// A QUIC congestion controller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Congestion {
    /// BBR: paces to the measured bandwidth; robust to random loss. The window has a
    /// floor for sub-millisecond paths ([`FlooredBbr`]).
    #[default]
    Bbr,
    /// CUBIC: loss-based, the classic TCP behaviour.
    Cubic,
}

impl Congestion {
    /// The name config files and flags use (`bbr`, `cubic`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Bbr => "bbr",
            Self::Cubic => "cubic",
        }
    }

    /// Sets this controller on `transport`.
    pub fn apply(self, transport: &mut quinn::TransportConfig) {
        match self {
            Self::Bbr => transport.congestion_controller_factory(Arc::new(FlooredBbrConfig)),
            Self::Cubic => transport.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default())),
        };
    }
}

/// The round trip BBR's window is scaled to at least (see [`FlooredBbr`]).
pub const RTT_FLOOR: Duration = Duration::from_millis(1);

/// Builds [`FlooredBbr`] controllers (what [`Congestion::Bbr`] installs).
#[derive(Debug)]
pub struct FlooredBbrConfig;

impl ControllerFactory for FlooredBbrConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        let inner = Arc::new(quinn::congestion::BbrConfig::default()).build(now, current_mtu);
        Box::new(FlooredBbr { inner, min_rtt: None })
    }
}

/// quinn's BBR with its window computed as if the round trip were at least [`RTT_FLOOR`].
///
/// BBR's window is about twice bandwidth × minimum RTT. On loopback or a LAN the minimum
/// RTT is tens of microseconds, so the window is a few dozen packets: one scheduling hiccup
/// of the receiving process (a millisecond on a busy host) fills it and the sender stops.
/// Scaling the window by `RTT_FLOOR / min_rtt` when the path is faster than that gives it
/// room for a millisecond of jitter; on any path of a millisecond or more it changes nothing.
pub struct FlooredBbr {
    inner: Box<dyn Controller>,
    min_rtt: Option<Duration>,
}

impl Controller for FlooredBbr {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(&mut self, now: Instant, sent: Instant, bytes: u64, app_limited: bool, rtt: &quinn_proto::RttEstimator) {
        self.min_rtt = Some(rtt.min());
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(&mut self, now: Instant, in_flight: u64, app_limited: bool, largest: Option<u64>) {
        self.inner.on_end_acks(now, in_flight, app_limited, largest);
    }

    fn on_congestion_event(&mut self, now: Instant, sent: Instant, persistent: bool, lost_bytes: u64) {
        self.inner.on_congestion_event(now, sent, persistent, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        let window = self.inner.window();
        match self.min_rtt {
            Some(rtt) if !rtt.is_zero() && rtt < RTT_FLOOR => {
                let scaled = u128::from(window).saturating_mul(RTT_FLOOR.as_nanos()) / rtt.as_nanos();
                u64::try_from(scaled).unwrap_or(u64::MAX)
            }
            _ => window,
        }
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = self.inner.metrics();
        metrics.congestion_window = self.window();
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(FlooredBbr { inner: self.inner.clone_box(), min_rtt: self.min_rtt })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl FromStr for Congestion {
    type Err = LinkError;

    fn from_str(s: &str) -> Result<Self, LinkError> {
        match s {
            "bbr" => Ok(Self::Bbr),
            "cubic" => Ok(Self::Cubic),
            other => Err(LinkError::UnknownCongestion { name: other.to_owned() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bbr_window_is_scaled_up_only_on_paths_faster_than_the_floor() {
        let mut bbr = FlooredBbr {
            inner: Arc::new(quinn::congestion::BbrConfig::default()).build(Instant::now(), 1200),
            min_rtt: None,
        };
        let inner = bbr.inner.window();
        assert_eq!(bbr.window(), inner, "no RTT sample yet: BBR's own window");
        bbr.min_rtt = Some(Duration::from_micros(50));
        assert_eq!(bbr.window(), inner * 20, "50 µs: as if the RTT were 1 ms");
        assert_eq!(bbr.metrics().congestion_window, inner * 20);
        bbr.min_rtt = Some(Duration::from_micros(800));
        assert_eq!(bbr.window(), inner * 5 / 4, "800 µs: scaled by 1.25, not rounded down to 1");
        bbr.min_rtt = Some(Duration::from_millis(20));
        assert_eq!(bbr.window(), inner, "a real path above the floor is left alone");
        bbr.min_rtt = Some(Duration::ZERO);
        assert_eq!(bbr.window(), inner);
    }

    #[test]
    fn names_parse_and_an_unknown_one_is_named_in_the_error() {
        assert_eq!("bbr".parse::<Congestion>().unwrap(), Congestion::Bbr);
        assert_eq!("cubic".parse::<Congestion>().unwrap(), Congestion::Cubic);
        for c in [Congestion::Bbr, Congestion::Cubic] {
            assert_eq!(c.name().parse::<Congestion>().unwrap(), c);
        }
        let err = "reno".parse::<Congestion>().unwrap_err();
        assert!(matches!(&err, LinkError::UnknownCongestion { name } if name == "reno"), "{err:?}");
        assert_eq!(err.to_string(), "unknown congestion controller `reno` (use bbr or cubic)");
    }
}
