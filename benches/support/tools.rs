//! Where the programs a bench runs come from: this workspace's target directory, the
//! `ferry-relay` binary (built when missing or stale), `socat` (installed with apt-get
//! when missing) and rathole (`cargo install`ed under the target directory). Each says
//! what it runs, so a first run that builds or installs is not mistaken for a hang.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

/// The workspace root (the root package is the one that owns the benches).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `$CARGO_TARGET_DIR`, else `target/` under the workspace root.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// The newest modification time of the files under `dir` (`None` if it does not exist).
fn newest(dir: &Path) -> Option<SystemTime> {
    let mut best = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() { newest(&path) } else { entry.metadata().ok()?.modified().ok() };
        best = best.max(time);
    }
    best
}

/// The command that builds the relay. No `-p`: the `ferry-relay` binary has lived in
/// the `ferry-relay` package and in the root package (`src/bin/ferry-relay.rs`); both are
/// default members, so `--bin` finds it in either layout.
pub const BUILD_RELAY: &str = "cargo build --release --bin ferry-relay";

/// Directories whose files go into the relay binary, in either layout (missing ones
/// are skipped).
const RELAY_SOURCES: [&str; 5] = ["relay", "proto", "link", "cert", "src/bin"];

/// `target/release/ferry-relay`, built first (with [`BUILD_RELAY`]) if missing or older
/// than its sources. If that build fails, an existing binary is used and that is said.
/// Checked once per run: a bench that starts the relay for every row must not run cargo
/// between its measurements.
pub fn ferry_relay_binary() -> Result<PathBuf> {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    if let Some(bin) = CHECKED.get() {
        return Ok(bin.clone());
    }
    let bin = target_dir().join("release/ferry-relay");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let sources = RELAY_SOURCES.iter().filter_map(|d| newest(&workspace_root().join(d))).max();
    let why = match (built, sources) {
        (None, _) => Some("missing"),
        (Some(b), Some(s)) if s > b => Some("older than its sources"),
        _ => None,
    };
    if let Some(why) = why {
        println!("target/release/ferry-relay is {why}: running `{BUILD_RELAY}`");
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--release", "--bin", "ferry-relay"])
            .current_dir(workspace_root())
            .status()?;
        if !status.success() || !bin.exists() {
            if built.is_some() {
                println!("  build failed: using the existing binary");
            } else {
                bail!("building ferry-relay failed; run `{BUILD_RELAY}` first");
            }
        }
    }
    Ok(CHECKED.get_or_init(|| bin).clone())
}

/// `socat`, installed with apt-get if missing.
pub fn socat_binary() -> Result<PathBuf> {
    let found = |name: &str| {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.exists()))
    };
    if let Some(p) = found("socat") {
        return Ok(p);
    }
    println!("socat is missing: running `apt-get install -y socat`");
    let status =
        std::process::Command::new("apt-get").args(["install", "-y", "socat"]).stdout(Stdio::null()).status()?;
    if !status.success() {
        bail!("could not install socat; install it with your package manager");
    }
    found("socat").context("socat still not found after installing it")
}

/// `target/bench-tools/bin/rathole`, installed with `cargo install` if missing.
pub fn rathole_binary() -> Result<PathBuf> {
    let root = target_dir().join("bench-tools");
    let bin = root.join("bin/rathole");
    if bin.exists() {
        return Ok(bin);
    }
    // Not `--locked`: rathole 0.5.0's lock file pins a `time` release that no longer
    // compiles on current Rust. Only the features the benchmark needs.
    println!(
        "rathole is missing: running `cargo install --root {} rathole --no-default-features --features server,client,noise` (a few minutes)",
        root.display()
    );
    let status = std::process::Command::new(env!("CARGO"))
        .arg("install")
        .arg("--root")
        .arg(&root)
        .args(["rathole", "--no-default-features", "--features", "server,client,noise"])
        .status()?;
    if !status.success() || !bin.exists() {
        bail!("installing rathole failed");
    }
    Ok(bin)
}
