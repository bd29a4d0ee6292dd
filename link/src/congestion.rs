//! Which QUIC congestion controller a hop uses.
//!
//! Measured on a 50 ms RTT link with 1% random loss each way (`tests/faults.rs`, a
//! userspace impairment proxy): CUBIC, which reads every loss as congestion, moved
//! 16 MiB at 1.45 Mbit/s; BBR, which models bandwidth and RTT instead, at 54 Mbit/s.
//! Media viewers on mobile and Wi-Fi links see exactly that kind of loss, so BBR is the
//! default on every hop (relay, host and client).
//!
//! The price, measured with `ferry demo --mib 128 --congestion bbr|cubic` on the 2-core
//! machine with other work running: on loopback (no loss, ~0 RTT, CPU-bound) quinn's BBR
//! paces below what the CPU allows, 0.31–0.36 Gbit/s each way against CUBIC's
//! 0.62–0.73. Loopback is not where viewers are, so BBR stays the default; quinn marks
//! its BBR as experimental, and CUBIC is one setting away (`congestion = "cubic"` in the
//! relay's config, [`Congestion::Cubic`] in `HopOptions`).

use std::str::FromStr;
use std::sync::Arc;

use crate::LinkError;

/// A QUIC congestion controller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Congestion {
    /// BBR: paces to the measured bandwidth; robust to random loss.
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
            Self::Bbr => transport.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default())),
            Self::Cubic => transport.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default())),
        };
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
