//! How many streams to let a QUIC peer open so that a wanted number is always openable.
//!
//! quinn announces new stream credit (MAX_STREAMS) only once more than an eighth of the
//! limit has been freed (`queue_max_stream_id` in quinn-proto), so when a burst of
//! sessions closes, up to an eighth of their credit stays unannounced until more streams
//! close. Seen in the soak: a host allowing 1,064 streams, with waves of 1,000 sessions
//! back to back, could open only 931 of the next wave; the other 69 waited for credit
//! until they timed out. Setting quinn's limit to `wanted + wanted / 7 + 2` keeps `wanted`
//! openable even with an eighth of it unannounced.

use quinn::VarInt;

/// The QUIC concurrent-stream limit that keeps `wanted` streams openable at any time
/// (0 stays 0: a peer that may open no streams).
pub fn stream_limit(wanted: u32) -> VarInt {
    if wanted == 0 {
        return VarInt::from_u32(0);
    }
    let wanted = u64::from(wanted);
    VarInt::from_u64(wanted + wanted / 7 + 2).unwrap_or(VarInt::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wanted_count_stays_openable_with_an_eighth_of_the_limit_unannounced() {
        assert_eq!(stream_limit(0).into_inner(), 0);
        for wanted in (1..20_000).chain([u32::MAX / 2, u32::MAX]) {
            let limit = stream_limit(wanted).into_inner();
            // quinn holds back up to floor(limit / 8) freed streams' credit.
            let openable = limit - limit / 8;
            assert!(openable >= u64::from(wanted), "wanted {wanted}: limit {limit} leaves {openable}");
            assert!(limit <= u64::from(wanted) * 8 / 7 + 2, "wanted {wanted}: limit {limit} is more than needed");
        }
    }
}
