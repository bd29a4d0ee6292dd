//! Human units in the config file: byte sizes as `"1 MiB"` and durations as `"30s"` or
//! `"5m"`, beside the plain integers (bytes, seconds) the keys always took, which keep
//! working. Parsed by the crates of the field (`bytesize`, `humantime`); a value that is
//! neither says what it expected.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// An integer, or text with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrText {
    Int(u64),
    Text(String),
}

/// A byte count: `1048576` or `"1 MiB"` (also `"512 KiB"`, `"1 GB"`).
pub(crate) fn bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match IntOrText::deserialize(deserializer)? {
        IntOrText::Int(n) => Ok(n),
        IntOrText::Text(text) => parse_bytes(&text).map_err(serde::de::Error::custom),
    }
}

/// Whole seconds: `30` or `"30s"` (also `"5m"`, `"1h 30m"`).
pub(crate) fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match IntOrText::deserialize(deserializer)? {
        IntOrText::Int(n) => Ok(n),
        IntOrText::Text(text) => parse_seconds(&text).map_err(serde::de::Error::custom),
    }
}

/// `"1 MiB"` as bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| format!("`{text}` is not a size: write bytes, or a number with a unit such as \"1 MiB\""))
}

/// `"30s"` as whole seconds.
pub fn parse_seconds(text: &str) -> Result<u64, String> {
    let duration: Duration = humantime::parse_duration(text.trim()).map_err(|_| {
        format!("`{text}` is not a duration: write seconds, or a number with a unit such as \"30s\" or \"5m\"")
    })?;
    if duration.subsec_nanos() != 0 {
        return Err(format!("`{text}`: give whole seconds"));
    }
    Ok(duration.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_as_people_write_them() {
        assert_eq!(parse_bytes("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert!(parse_bytes("a lot").unwrap_err().contains("\"1 MiB\""));
        assert_eq!(parse_seconds("30s"), Ok(30));
        assert_eq!(parse_seconds("5m"), Ok(300));
        assert_eq!(parse_seconds("1h 30m"), Ok(5400));
        assert!(parse_seconds("1.5s").unwrap_err().contains("whole seconds"));
        assert!(parse_seconds("soon").unwrap_err().contains("\"30s\""));
    }
}
