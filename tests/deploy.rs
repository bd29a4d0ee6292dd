//! The files in `deploy/`: the example configs (relay and host) pass `check-config`, bad
//! configs are refused with the key and line named, the systemd units are well-formed and sandboxed, and
//! certificate renewal writes where, and as whom, the relay can read it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RELAY: &str = env!("CARGO_BIN_EXE_ferry-relay");
const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const EXAMPLE_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/relay.toml");
const EXAMPLE_HOST_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/host.toml");
const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/ferry-relay.service");
const RENEW_UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/ferry-cert-renew.service");
const SYSUSERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/ferry-relay.sysusers");

fn check_config(path: &Path) -> Output {
    Command::new(RELAY).arg("check-config").arg(path).output().expect("run ferry-relay check-config")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `contents` to a fresh temporary file and checks it.
fn check_text(contents: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, contents).unwrap();
    check_config(&path)
}

#[test]
fn example_config_passes_check_config() {
    let out = check_config(Path::new(EXAMPLE_CONFIG));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "check-config failed:\nstdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains(": ok (open mode"), "{stdout}");
    // free, plus and unlimited (the built-in one, redefined).
    assert!(stdout.contains("3 tier(s)"), "{stdout}");
}

#[test]
fn example_config_names_every_key() {
    let example = std::fs::read_to_string(EXAMPLE_CONFIG).unwrap();
    // Set or shown commented out; kept in step with config_file.rs by hand.
    for section in
        ["[relay]", "[admin]", "[access]", "[[access.token]]", "[[access.host]]", "[limits]", "[[tier]]", "[log]"]
    {
        assert!(example.contains(section), "deploy/relay.toml lacks {section}");
    }
    for key in [
        "listen",
        "quic",
        "tcp",
        "cert",
        "key",
        "state_dir",
        "buffer_per_direction",
        "max_sessions_per_connection",
        "handshake_timeout_secs",
        "idle_timeout_secs",
        "shutdown_deadline_secs",
        "enabled",
        "mode",
        "default_tier",
        "name",
        "sha256",
        "tier",
        "id",
        "max_hosts",
        "max_sessions_per_host",
        "max_pending_handshakes",
        "max_pending_handshakes_per_source",
        "connections_per_minute_per_source",
        "buffer_budget",
        "idle_session_timeout_secs",
        "rate",
        "burst_bytes",
        "level",
    ] {
        let assigned = example.lines().any(|line| {
            let line = line.trim_start().trim_start_matches('#').trim_start();
            line.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
        });
        assert!(assigned, "deploy/relay.toml never shows `{key} = ...`");
    }
}

#[test]
fn example_config_commented_rules_are_valid_in_closed_mode() {
    // Uncomment the example token and host rule and close the relay: still valid.
    let example = std::fs::read_to_string(EXAMPLE_CONFIG).unwrap();
    let mut closed = String::new();
    let mut in_rule = false;
    for line in example.lines() {
        let bare = line.strip_prefix("# ").unwrap_or(line);
        if bare == "[[access.token]]" || bare == "[[access.host]]" {
            in_rule = true;
        } else if !line.starts_with("# ") || bare.trim().is_empty() {
            in_rule = false;
        }
        let line = if in_rule { bare } else { line };
        closed.push_str(if line == "mode = \"open\"" { "mode = \"closed\"" } else { line });
        closed.push('\n');
    }
    // The rules come after `[access]` keys and before `[limits]`, so they parse as part of it.
    let out = check_text(&closed);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}\n--- config ---\n{closed}", text(&out.stderr));
    assert!(
        stdout.contains("closed mode") && stdout.contains("1 token(s)") && stdout.contains("1 host rule(s)"),
        "{stdout}"
    );
}

#[test]
fn example_token_hash_matches_hash_token() {
    let out = Command::new(RELAY).args(["hash-token", "example-token-change-me"]).output().unwrap();
    assert!(out.status.success());
    let digest = text(&out.stdout).trim().to_owned();
    assert_eq!(digest.len(), 64);
    let example = std::fs::read_to_string(EXAMPLE_CONFIG).unwrap();
    assert!(example.contains(&format!("sha256 = \"{digest}\"")), "example token hash is stale: {digest}");
}

#[test]
fn bad_value_is_refused_naming_key_and_line() {
    let out = check_text("# limits\n[limits]\nmax_hosts = 0\n");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("`max_hosts` (line 3)"), "{stderr}");
    assert!(stderr.contains("must be at least 1"), "{stderr}");
}

#[test]
fn unknown_key_is_refused_naming_key_and_line() {
    let out = check_text("[limits]\nmax_hosts = 10\nmax_hostz = 3\n");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("max_hostz"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
}

#[test]
fn missing_certificate_file_is_refused() {
    let out = check_text("[relay]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("does not exist"), "{}", text(&out.stderr));
}

/// deploy/host.toml with its paths (key file, allow file) pointed into `dir`, where a host
/// identity and an allow file with one client key are made; returns the config's path.
fn host_example_in(dir: &Path) -> PathBuf {
    let key = dir.join("host.key");
    let out = Command::new(FERRY).args(["host", "init", "--key"]).arg(&key).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let client = ferry_proto::StaticKey::generate().unwrap().public();
    let allowed = dir.join("allowed-clients");
    std::fs::write(&allowed, format!("# the family's phones\n{client}  # alice\n")).unwrap();
    let example = std::fs::read_to_string(EXAMPLE_HOST_CONFIG).unwrap();
    assert!(example.contains("\"/var/lib/ferry-host/host.key\"") && example.contains("\"/etc/ferry/allowed-clients\""));
    let config = example
        .replace("\"/var/lib/ferry-host/host.key\"", &format!("{:?}", key.display().to_string()))
        .replace("\"/etc/ferry/allowed-clients\"", &format!("{:?}", allowed.display().to_string()));
    let path = dir.join("host.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn example_host_config_passes_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = host_example_in(dir.path());
    let out = Command::new(FERRY).args(["host", "check-config", "--config"]).arg(&path).output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "check-config failed:\nstdout: {stdout}\nstderr: {stderr}");
    for part in
        [": ok (", "2 relay(s)", "services: ssh, web (default)", "direct on 0.0.0.0:4433", "1 allowed client key(s)"]
    {
        assert!(stdout.contains(part), "{part:?} missing from {stdout}");
    }
    // The same file makes tickets: its relays, its advertised address, a service it has.
    let out = Command::new(FERRY).args(["host", "ticket", "--service", "ssh", "--config"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ticket = ferry_proto::Ticket::decode(text(&out.stdout).trim()).unwrap();
    assert_eq!(ticket.relays.len(), 2);
    assert_eq!(ticket.direct, vec!["203.0.113.7:4433".to_owned()]);
    assert_eq!(ticket.service.as_deref(), Some("ssh"));
    let out =
        Command::new(FERRY).args(["host", "ticket", "--service", "mail", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no such service (its services: ssh, web)"), "{}", text(&out.stderr));
}

#[test]
fn example_host_config_names_every_key() {
    let example = std::fs::read_to_string(EXAMPLE_HOST_CONFIG).unwrap();
    // Set or shown commented out; kept in step with src/cli/host_file.rs by hand.
    for section in ["[[relays]]", "[direct]", "[services]"] {
        assert!(example.contains(section), "deploy/host.toml lacks {section}");
    }
    for key in [
        "key",
        "relay",
        "token",
        "transport",
        "allow",
        "allow_file",
        "default_service",
        "address",
        "pin",
        "listen",
        "tcp",
        "advertise",
    ] {
        let assigned = example.lines().any(|line| {
            let line = line.trim_start().trim_start_matches('#').trim_start();
            line.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
        });
        assert!(assigned, "deploy/host.toml never shows `{key} = ...`");
    }
}

/// Keys the unit must set, with the value each must have (`None`: any value).
const REQUIRED_UNIT_KEYS: &[(&str, &str, Option<&str>)] = &[
    ("Service", "User", Some("ferry-relay")),
    ("Service", "Group", Some("ferry-relay")),
    ("Service", "StateDirectory", Some("ferry-relay")),
    ("Service", "ConfigurationDirectory", Some("ferry")),
    ("Service", "NoNewPrivileges", Some("yes")),
    ("Service", "ProtectSystem", Some("strict")),
    ("Service", "ProtectHome", Some("yes")),
    ("Service", "PrivateTmp", Some("yes")),
    ("Service", "PrivateDevices", Some("yes")),
    ("Service", "ProtectKernelTunables", Some("yes")),
    ("Service", "ProtectKernelModules", Some("yes")),
    ("Service", "ProtectKernelLogs", Some("yes")),
    ("Service", "ProtectControlGroups", Some("yes")),
    ("Service", "RestrictAddressFamilies", Some("AF_INET AF_INET6 AF_UNIX")),
    ("Service", "RestrictNamespaces", Some("yes")),
    ("Service", "LockPersonality", Some("yes")),
    ("Service", "MemoryDenyWriteExecute", Some("yes")),
    ("Service", "SystemCallArchitectures", Some("native")),
    ("Service", "SystemCallFilter", Some("@system-service")),
    ("Service", "CapabilityBoundingSet", Some("CAP_NET_BIND_SERVICE")),
    ("Service", "AmbientCapabilities", Some("CAP_NET_BIND_SERVICE")),
    ("Service", "LimitNOFILE", Some("1048576")),
    ("Service", "ExecStart", Some("/usr/local/bin/ferry-relay --config /etc/ferry/relay.toml")),
    ("Service", "ExecReload", Some("/bin/kill -HUP $MAINPID")),
    ("Service", "KillSignal", Some("SIGTERM")),
    ("Service", "TimeoutStopSec", None),
    ("Service", "Restart", Some("on-failure")),
    ("Unit", "Description", None),
    ("Install", "WantedBy", None),
];

/// `(section, key, value)` of every assignment; panics on a line that is neither a comment,
/// blank, `[Section]` nor `Key=Value`.
fn parse_unit(unit: &str) -> Vec<(String, String, String)> {
    let mut section: Option<String> = None;
    let mut entries = Vec::new();
    for (i, line) in unit.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(!line.ends_with('\\'), "line {n}: continuation lines are not used in this unit");
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            assert!(["Unit", "Service", "Install"].contains(&name), "line {n}: unexpected section [{name}]");
            section = Some(name.to_owned());
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("line {n}: not `Key=Value`: {line}"));
        let key = key.trim();
        assert!(!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()), "line {n}: bad key `{key}`");
        assert!(!value.trim().is_empty(), "line {n}: `{key}` has no value");
        let section = section.clone().unwrap_or_else(|| panic!("line {n}: `{key}` before any [Section]"));
        entries.push((section, key.to_owned(), value.trim().to_owned()));
    }
    entries
}

#[test]
fn systemd_unit_syntax_and_required_keys() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let entries = parse_unit(&unit);
    for (section, key, value) in REQUIRED_UNIT_KEYS {
        let found: Vec<&str> =
            entries.iter().filter(|(s, k, _)| s == section && k == key).map(|(_, _, v)| v.as_str()).collect();
        assert!(!found.is_empty(), "[{section}] {key}= is missing");
        if let Some(value) = value {
            assert!(found.contains(value), "[{section}] {key}= is {found:?}, expected {value:?}");
        }
    }
    // systemd must wait longer than the relay drains for (relay.toml's shutdown_deadline_secs,
    // plus the few seconds the relay takes to close connections afterwards).
    let stop: u64 = service_value(&entries, "TimeoutStopSec")
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec in plain seconds");
    let example = std::fs::read_to_string(EXAMPLE_CONFIG).unwrap();
    let drain: u64 = example
        .lines()
        .find_map(|l| l.strip_prefix("shutdown_deadline_secs = "))
        .and_then(|v| v.trim().parse().ok())
        .expect("shutdown_deadline_secs in deploy/relay.toml");
    assert!(stop >= drain + 10, "TimeoutStopSec={stop} leaves no room after a {drain}s drain");
}

/// The value of `[Service] key=` in a unit (the last one, as systemd reads it).
fn service_value(entries: &[(String, String, String)], key: &str) -> Option<String> {
    entries.iter().rev().find(|(s, k, _)| s == "Service" && k == key).map(|(_, _, v)| v.clone())
}

/// Renewal must run as the relay's user and write where the example config points the relay:
/// a key written by anyone else is one the relay cannot read (it refuses keys other users can
/// read), and a SIGHUP after renewal would then keep the old certificate until it expired.
#[test]
fn renewal_runs_as_the_relay_user_and_writes_where_the_relay_reads() {
    let relay = parse_unit(&std::fs::read_to_string(UNIT).unwrap());
    let renew = parse_unit(&std::fs::read_to_string(RENEW_UNIT).unwrap());
    let user = service_value(&relay, "User").expect("the relay unit names its User=");
    assert_eq!(service_value(&renew, "User").as_deref(), Some(user.as_str()), "renewal runs as another user");
    assert_eq!(service_value(&renew, "Group"), service_value(&relay, "Group"), "renewal runs in another group");
    assert!(service_value(&relay, "DynamicUser").is_none_or(|v| v == "no"), "a dynamic user cannot read renewed keys");

    let example = std::fs::read_to_string(EXAMPLE_CONFIG).unwrap();
    let cert = example
        .lines()
        .find_map(|l| l.trim_start_matches(['#', ' ']).strip_prefix("cert = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("deploy/relay.toml shows a cert = path");
    let dir = Path::new(cert).parent().unwrap().to_str().unwrap();
    let exec = service_value(&renew, "ExecStart").unwrap();
    assert!(exec.contains(&format!("--cert {cert} ")), "renewal renews {exec}, the example config serves {cert}");
    let writable = service_value(&renew, "ReadWritePaths").unwrap_or_default();
    assert!(writable.split_whitespace().any(|p| p == dir), "renewal cannot write {dir} (ReadWritePaths={writable})");

    let sysusers = std::fs::read_to_string(SYSUSERS).unwrap();
    assert!(
        sysusers.lines().any(|l| l.split_whitespace().take(2).eq(["u", user.as_str()])),
        "deploy/ferry-relay.sysusers does not create {user}"
    );
}

fn which(program: &str) -> Option<PathBuf> {
    let out = Command::new("which").arg(program).output().ok()?;
    out.status.success().then(|| PathBuf::from(text(&out.stdout).trim()))
}

#[test]
fn systemd_analyze_verify() {
    let Some(analyze) = which("systemd-analyze") else {
        println!("skipped: systemd-analyze not installed (systemd_unit_syntax_and_required_keys checks the syntax)");
        eprintln!("skipped: systemd-analyze not installed (systemd_unit_syntax_and_required_keys checks the syntax)");
        return;
    };
    for (file, name) in [(UNIT, "ferry-relay.service"), (RENEW_UNIT, "ferry-cert-renew.service")] {
        analyze_unit(&analyze, file, name);
    }
}

fn analyze_unit(analyze: &Path, file: &str, name: &str) {
    // The installed paths of the binaries do not exist here: point the unit at the built ones,
    // so the only complaints left are about the unit itself.
    let unit = std::fs::read_to_string(file)
        .unwrap()
        .replace("/usr/local/bin/ferry-relay", RELAY)
        .replace("/usr/local/bin/ferry-cert", env!("CARGO_BIN_EXE_ferry-cert"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(analyze).arg("verify").arg(&path).output().expect("run systemd-analyze verify");
    let stderr = text(&out.stderr);
    // `verify` reports unknown keys, unparsable values and lines without `=` on stderr with
    // the file and line, but still exits 0; anything naming the unit file is a failure.
    let unit_file = path.display().to_string();
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            l.contains(&unit_file)
                || l.contains(&format!("{name}:"))
                || ["Unknown key", "Unknown section", "Failed to parse", "Missing '='", "Invalid"]
                    .iter()
                    .any(|p| l.contains(p))
        })
        .collect();
    assert!(out.status.success() && problems.is_empty(), "systemd-analyze verify {name}: {}\n{stderr}", out.status);
    if !stderr.trim().is_empty() {
        eprintln!("systemd-analyze verify {name} (not about the unit):\n{stderr}");
    }
}
