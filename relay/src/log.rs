//! The relay's log filter, built so that no level can leak who talks to whom.
//!
//! The relay's own events never carry an address, host id, key, ticket, pin or payload:
//! the only per-session event is the close line (random session number, duration, bytes).
//! Dependencies are another matter — QUIC and TLS libraries log peer addresses at debug
//! and trace, and UDP send errors at warn — so they are switched off entirely, at every
//! level an operator can choose.

/// Log levels an operator may set.
pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Whether `level` is one of [`LEVELS`].
pub fn is_level(level: &str) -> bool {
    LEVELS.contains(&level)
}

/// The `tracing` filter directive for `level`: the relay's own crates at that level,
/// everything else off.
pub fn filter_directive(level: &str) -> String {
    format!("off,ferry_relay={level},ferry_link={level}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_are_always_off() {
        for level in LEVELS {
            let d = filter_directive(level);
            assert!(d.starts_with("off,"), "{d}");
            assert!(!d.contains("quinn") && !d.contains("rustls"));
        }
        assert!(!is_level("verbose"));
    }
}
