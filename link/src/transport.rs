//! The quinn transport settings of a hop, built in one place for the relay and for peers.
//!
//! The relay and the host and client set the same handful of knobs — flow-control windows,
//! how many streams the other side may open, idle timeout, keep-alive and the congestion
//! controller — with different numbers. [`TransportSettings`] names the knobs and
//! [`TransportSettings::build`] turns them into a `quinn::TransportConfig`, so the two
//! sides cannot drift apart in *how* a setting is applied (uni-streams are always off).

use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::{Congestion, LinkError};

/// What a hop's QUIC transport is tuned with.
#[derive(Clone, Copy, Debug)]
pub struct TransportSettings {
    /// Receive window per stream (bytes).
    pub stream_window: u64,
    /// Receive window of the whole connection at its start (bytes); `None`: unlimited, so
    /// only the stream windows bound it. The relay starts at one stream window and widens
    /// it per session (`crate::window`); peers, whose streams are all their own sessions,
    /// leave it unlimited.
    pub connection_window: Option<u64>,
    /// Send window for the whole connection (bytes); `None` keeps quinn's default.
    pub send_window: Option<u64>,
    /// Bi-streams the other side can always open at once (`crate::credit` sets quinn's
    /// limit a little higher so that this many stay openable).
    pub incoming_streams: u32,
    /// The connection is declared dead after this long without a packet.
    pub idle_timeout: Duration,
    /// Keep-alive interval (also keeps NAT mappings open); `None` sends none.
    pub keep_alive: Option<Duration>,
    /// The congestion controller.
    pub congestion: Congestion,
}

impl TransportSettings {
    /// The quinn transport configuration for these settings.
    pub fn build(&self) -> Result<TransportConfig, LinkError> {
        let varint = |v: u64| VarInt::from_u64(v).map_err(|_| LinkError::WindowTooLarge(v));
        let idle = IdleTimeout::try_from(self.idle_timeout).map_err(LinkError::IdleTimeoutTooLarge)?;
        let mut t = TransportConfig::default();
        t.max_concurrent_bidi_streams(crate::credit::stream_limit(self.incoming_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .stream_receive_window(varint(self.stream_window)?)
            .receive_window(self.connection_window.map_or(Ok(VarInt::MAX), varint)?)
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(self.keep_alive);
        if let Some(window) = self.send_window {
            t.send_window(window);
        }
        self.congestion.apply(&mut t);
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TransportSettings {
        TransportSettings {
            stream_window: 1 << 20,
            connection_window: None,
            send_window: None,
            incoming_streams: 0,
            idle_timeout: Duration::from_secs(20),
            keep_alive: Some(Duration::from_secs(5)),
            congestion: Congestion::Bbr,
        }
    }

    #[test]
    fn out_of_range_settings_are_refused_with_their_reason() {
        assert!(settings().build().is_ok());
        let too_wide = TransportSettings { stream_window: u64::MAX, ..settings() };
        assert!(matches!(too_wide.build(), Err(LinkError::WindowTooLarge(_))));
        let wide = TransportSettings { connection_window: Some(1 << 62), ..settings() };
        assert!(matches!(wide.build(), Err(LinkError::WindowTooLarge(_))));
        let forever = TransportSettings { idle_timeout: Duration::MAX, ..settings() };
        let err = forever.build().unwrap_err();
        assert!(matches!(err, LinkError::IdleTimeoutTooLarge(_)));
        assert!(std::error::Error::source(&err).is_some(), "the bounds error is kept");
    }
}
