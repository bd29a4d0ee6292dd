//! Flag values checked where they are typed: an address without a port, a port alone, a
//! log level that does not exist or an allow-list line that is not a key is refused by the
//! command that takes it, with the fix in the message, instead of failing later (or never).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_proto::PublicKey;

/// The crates whose log lines are ferry's own; everything else (rustls, quinn, tokio) stays
/// at `error` whatever level is asked for, so `--log debug` shows ferry, not its libraries.
/// (Their warnings are about the same failures ferry reports in its own words, such as a
/// peer that is not a relay; a full filter reaches them when needed.)
const OWN_CRATES: [&str; 4] = ["ferry", "ferry_client", "ferry_link", "ferry_proto"];

/// The levels `--log` takes by name.
const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// `--relay` and `--forward`: a `name:port` address.
pub fn address(text: &str) -> Result<String, String> {
    let text = text.trim();
    ferry_proto::ticket::check_address(text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

/// `--service NAME=ADDR`: a service name as tickets carry it and a `name:port` address.
pub fn service(text: &str) -> Result<(String, String), String> {
    let Some((name, addr)) = text.split_once('=') else {
        return Err("write it as NAME=ADDR, as in web=127.0.0.1:8096".into());
    };
    let name = name.trim();
    ferry_client::Services::check_name(name).map_err(|e| e.report())?;
    Ok((name.to_owned(), address(addr)?))
}

/// `--log`: a level for ferry's own lines, or a full `tracing` filter for whoever needs
/// one (anything with `=`, such as `ferry_client=debug,quinn=info`). Returns the filter.
/// `--token`: 1 to 255 bytes (what the registration message carries), so a longer one is
/// refused here instead of failing every registration attempt for ever.
pub fn token(text: &str) -> Result<String, String> {
    match text.len() {
        1..=255 => Ok(text.to_owned()),
        n => Err(format!("{n} bytes; a registration token has 1 to 255 (ask the relay's operator for the right one)")),
    }
}

pub fn log_filter(text: &str) -> Result<String, String> {
    let text = text.trim();
    if LEVELS.contains(&text) {
        let own: Vec<String> = OWN_CRATES.iter().map(|c| format!("{c}={text}")).collect();
        return Ok(format!("error,{}", own.join(",")));
    }
    if text.contains('=') {
        return tracing_subscriber::EnvFilter::builder()
            .parse(text)
            .map(|_| text.to_owned())
            .map_err(|e| format!("not a tracing filter ({e}); use error, warn, info, debug or trace"));
    }
    Err("use error, warn, info, debug or trace (or a filter such as ferry_client=debug,quinn=info)".into())
}

/// `--timeout`: a duration with its unit (`30s`, `2m`, `500ms`).
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("{e} (write it with a unit, as in 30s or 2m)"))
}

/// Reads an allow-list file: one client public key per line (as `ferry key` prints it),
/// `#` starting a comment, blank lines ignored.
pub fn read_allow_file(path: &Path) -> Result<Vec<PublicKey>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read --allow-file {}", path.display()))?;
    parse_allow_list(&text).with_context(|| format!("--allow-file {}", path.display()))
}

fn parse_allow_list(text: &str) -> Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let key = line.split('#').next().unwrap_or_default().trim();
        if key.is_empty() {
            continue;
        }
        let key: PublicKey = key.parse().with_context(|| {
            format!("line {}: not a client public key (print one with `ferry key FILE`)", number + 1)
        })?;
        keys.push(key);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_names_ferry_s_own_crates_and_keeps_libraries_at_error() {
        let filter = log_filter("debug").unwrap();
        assert!(filter.starts_with("error,"), "{filter}");
        assert!(filter.contains("ferry=debug") && filter.contains("ferry_client=debug"), "{filter}");
        assert!(!filter.contains("rustls") && !filter.contains("quinn"), "{filter}");
        assert!(log_filter("warn").unwrap().starts_with("error,ferry=warn,"));
        assert_eq!(log_filter("quinn=info,ferry=trace").unwrap(), "quinn=info,ferry=trace");
    }

    #[test]
    fn a_bogus_level_is_refused_with_the_choices() {
        let why = log_filter("bogus").unwrap_err();
        assert!(why.contains("error, warn, info, debug or trace"), "{why}");
        assert!(log_filter("ferry=loud").is_err());
    }

    #[test]
    fn addresses_are_checked_at_parse_time() {
        assert_eq!(address(" relay.example.org:4433 ").unwrap(), "relay.example.org:4433");
        assert!(token(&"t".repeat(255)).is_ok());
        assert!(token(&"t".repeat(256)).unwrap_err().contains("1 to 255"));
        assert!(token("").is_err());
        assert!(address("127.0.0.1").unwrap_err().contains("no port"));
        assert!(address("8000").unwrap_err().contains("127.0.0.1:8000"));
    }

    #[test]
    fn a_service_is_a_name_and_an_address() {
        assert_eq!(service("web=127.0.0.1:8096").unwrap(), ("web".to_owned(), "127.0.0.1:8096".to_owned()));
        assert!(service("127.0.0.1:8096").unwrap_err().contains("NAME=ADDR"));
        assert!(service("we b=127.0.0.1:1").unwrap_err().contains("service name"));
        assert!(service(".punch=127.0.0.1:1").unwrap_err().contains("reserved"));
        assert!(service("web=8096").unwrap_err().contains("port alone"));
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(duration("30").unwrap_err().contains("unit"));
    }

    #[test]
    fn an_allow_list_takes_comments_and_names_the_bad_line() {
        let a = ferry_proto::StaticKey::generate().unwrap().public();
        let b = ferry_proto::StaticKey::generate().unwrap().public();
        let text = format!("# the family's phones\n{a}  # alice\n\n   {b}\n");
        assert_eq!(parse_allow_list(&text).unwrap(), vec![a, b]);
        let bad = format!("{a}\nnot-a-key\n");
        let why = format!("{:#}", parse_allow_list(&bad).unwrap_err());
        assert!(why.starts_with("line 2: not a client public key"), "{why}");
    }
}
