//! `ferry-relay`: run a ferry relay node.
//!
//! Thin: parses flags, loads the config file, starts [`ferry_relay::Relay`], reloads on
//! SIGHUP and drains on SIGTERM/SIGINT.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ferry_relay::Relay;
use ferry_relay::config_file::FileConfig;

/// Run a ferry relay: hosts and clients connect to it, it cannot read what it forwards.
///
/// Media servers (hosts) connect out to it, remote clients connect to it, and it forwards
/// their end-to-end encrypted streams without being able to read them. With no flags it listens on 0.0.0.0:4433 (QUIC on UDP, TLS on TCP) with a
/// self-signed certificate made on first start, and prints the pin hosts and clients
/// need. Settings come from --config (see deploy/relay.toml); flags override the file.
/// SIGHUP reloads the certificate, access rules, tiers and limits without dropping
/// sessions; SIGTERM stops accepting and drains running sessions before exiting.
// `name`: the package is `ferry`, whose name and description clap would take otherwise.
#[derive(Parser, Debug)]
#[command(name = "ferry-relay", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file.
    #[arg(long, env = "FERRY_RELAY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on: UDP for QUIC and TCP for TLS share the port number.
    #[arg(long, env = "FERRY_RELAY_LISTEN")]
    listen: Option<SocketAddr>,
    /// PEM certificate chain to serve (with --key). Without it, a self-signed certificate
    /// is kept in the state directory.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Where the self-signed certificate is kept. Default: $STATE_DIRECTORY (systemd),
    /// else $XDG_STATE_HOME/ferry-relay, else ~/.local/state/ferry-relay.
    #[arg(long, env = "FERRY_RELAY_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Most bytes buffered per session and direction: bytes, or a size such as "1 MiB".
    #[arg(long, value_parser = ferry_relay::units::parse_bytes)]
    buffer: Option<u64>,
    /// Do not serve QUIC (UDP); clients and hosts must use --transport tcp or auto.
    #[arg(long, conflicts_with = "no_tcp")]
    no_quic: bool,
    /// Do not serve TLS over TCP.
    #[arg(long)]
    no_tcp: bool,
    /// Serve /metrics and /healthz here (default 127.0.0.1:4434), or `off`.
    #[arg(long)]
    admin: Option<String>,
    /// Log level: error, warn, info, debug or trace. No level logs addresses, host ids,
    /// keys or payload.
    #[arg(long, env = "FERRY_LOG")]
    log: Option<String>,
    /// Log lines as text, or as one JSON object per line (for log collectors).
    #[arg(long, env = "FERRY_RELAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Text,
    /// One JSON object per line: timestamp, level, target, fields.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a configuration file and exit (0 if it is valid).
    CheckConfig {
        /// The file.
        file: PathBuf,
    },
    /// Print the SHA-256 of a registration token, for `[[access.token]] sha256 = ...`.
    HashToken {
        /// The token hosts will pass with --token.
        token: String,
    },
    /// List the bytes each registration token's hosts have carried in the current quota
    /// period (tokens whose tier has a `quota`), read from the fleet's Redis; without a
    /// `[fleet]`, usage lives only in the running relay and is read from its admin port.
    Usage {
        /// The running relay's admin address, instead of the file's `[admin] listen`
        /// (without `[fleet]` only).
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
}

impl Args {
    /// The file (or the defaults) with the flags applied.
    fn settings(&self) -> Result<FileConfig> {
        let mut file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let r = &mut file.relay;
        if let Some(listen) = self.listen {
            r.listen = listen;
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            (r.cert, r.key) = (Some(cert.clone()), Some(key.clone()));
        }
        if let Some(dir) = &self.state_dir {
            r.state_dir = Some(dir.clone());
        }
        if let Some(buffer) = self.buffer {
            r.buffer_per_direction = buffer;
        }
        r.quic &= !self.no_quic;
        r.tcp &= !self.no_tcp;
        match self.admin.as_deref() {
            Some("off") => file.admin.enabled = false,
            Some(addr) => {
                file.admin.enabled = true;
                file.admin.listen = addr.parse().context("--admin takes an address like 127.0.0.1:4434, or `off`")?;
            }
            None => {}
        }
        if let Some(level) = &self.log {
            if !ferry_relay::log::is_level(level) {
                bail!("--log takes one of {}", ferry_relay::log::LEVELS.join(", "));
            }
            file.log.level = level.clone();
        }
        Ok(file)
    }
}

fn check_config(path: &Path) -> Result<()> {
    let file = FileConfig::load(path)?;
    for named in [&file.relay.cert, &file.relay.key].into_iter().flatten() {
        if !named.exists() {
            bail!("{}: `cert`/`key` names {}, which does not exist", path.display(), named.display());
        }
    }
    let policy = file.checked()?.policy;
    // As the user running check-config: run it as the relay's user.
    file.check_files().with_context(|| path.display().to_string())?;
    if let Some(fleet) = &file.fleet {
        // Reads the secret file (and the host name without `node_id`), as the start will.
        let fleet = fleet.fleet_config()?;
        println!("{}: fleet node `{}` of {}, {:?} mode", path.display(), fleet.node_id, fleet.nodes.len(), fleet.mode);
    }
    println!(
        "{}: ok ({} mode, {} tier(s), {} token(s), {} host rule(s))",
        path.display(),
        if policy.closed { "closed" } else { "open" },
        policy.tiers.len(),
        policy.tokens.len(),
        policy.hosts.len()
    );
    Ok(())
}

/// `ferry-relay usage`: each token's usage this period, from Redis or the relay's admin port.
async fn usage(config: Option<&Path>, admin: Option<SocketAddr>) -> Result<()> {
    let path = config.context("`usage` needs --config: the relay's file (its tokens, tiers and [fleet])")?;
    let file = FileConfig::load(path)?;
    let policy = file.checked()?.policy;
    let mut tokens = Vec::new();
    for token in &policy.tokens {
        let tier = token.tier.as_deref().unwrap_or(&policy.default_tier);
        match policy.tier(tier).and_then(|tier| tier.quota) {
            Some(quota) => tokens.push(ferry_relay::quota_usage::TokenQuota { name: token.name.clone(), quota }),
            None => println!("token {}: not counted (tier `{tier}` has no quota)", token.name),
        }
    }
    match &file.fleet {
        Some(fleet) => {
            let fleet = fleet.fleet_config()?;
            print!("{}", ferry_relay::quota_usage::fleet_usage(&fleet, &tokens).await?);
        }
        None => {
            let addr = admin.unwrap_or(file.admin.listen);
            println!(
                "no [fleet]: usage is counted in the running relay only (and starts again when it restarts); \
                 from http://{addr}/usage:"
            );
            print!("{}", admin_get(addr, "/usage").await?);
        }
    }
    Ok(())
}

/// The body of `GET path` on the relay's admin port (plain HTTP/1.0, within 5 s, at most
/// 1 MiB): one request of a one-shot command, where an HTTP client crate would be the
/// larger part of the work.
async fn admin_get(addr: SocketAddr, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: relay\r\n\r\n").as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(1 << 20).read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(std::time::Duration::from_secs(5), fetch)
        .await
        .with_context(|| format!("the relay's admin port {addr} did not answer in 5 s"))?
        .with_context(|| format!("cannot read http://{addr}{path} (is the relay running, with [admin] on?)"))?;
    let (head, body) = response.split_once("\r\n\r\n").context("the admin port sent no HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("http://{addr}{path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

fn main() {
    let args = Args::parse();
    if args.command.is_none() {
        // Before the runtime's threads exist: it may replace this process (same pid).
        ferry_relay::allocator::reexec_with_tunables();
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    if let Err(e) = result {
        eprintln!("ferry-relay: {e:#}");
        if let Some(hint) = e.chain().find_map(|c| c.downcast_ref::<ferry_relay::Error>()).and_then(|e| e.hint()) {
            eprintln!("  {hint}");
        }
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    match &args.command {
        Some(Command::CheckConfig { file }) => return check_config(file),
        Some(Command::Usage { admin }) => return usage(args.config.as_deref(), *admin).await,
        Some(Command::HashToken { token }) => {
            let digest = ferry_relay::policy::hash_token(token);
            println!("{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>());
            return Ok(());
        }
        None => {}
    }
    let settings = args.settings()?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(ferry_relay::log::filter_directive(
            &settings.log.level,
        ))?)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }

    let config = settings.relay_config()?;
    let deadline = config.shutdown_deadline;
    let (quic, tcp) = (config.quic, config.tcp);
    let relay = Relay::spawn(config).await?;
    // The handlers go in before anyone is told the relay is up (banner, READY=1): a SIGHUP
    // or SIGTERM sent the moment it is must reload or drain, not take the default action
    // and kill the process.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(ferry_relay::allocator::trim_when_quiet(relay.active_sessions(), relay.open_connections()));
    let hops = match (quic, tcp) {
        (true, true) => "QUIC on UDP, TLS on TCP",
        (false, _) => "TLS on TCP only",
        (_, false) => "QUIC on UDP only",
    };
    // The banner goes to stdout for scripts; a closed stdout (`ferry-relay | head -1`)
    // must not take the relay down, so write errors are ignored.
    let banner = format!(
        "ferry relay listening on {} ({hops})\n{}certificate pin: {}\n\
         hosts run:  ferry host run --relay <this-machine>:{} --pin {} --forward <service>\n",
        relay.local_addr(),
        relay.admin_addr().map(|a| format!("metrics on http://{a}/metrics\n")).unwrap_or_default(),
        relay.pin(),
        relay.local_addr().port(),
        relay.pin(),
    );
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(banner.as_bytes()).and_then(|()| stdout.flush());
    drop(stdout);
    // And once in the log, with its timestamp; no address, not even the relay's own (the log
    // never holds one: tests/relay_process.rs checks it at trace level).
    tracing::info!("listening ({hops}); the address and certificate pin are on standard output");
    // Under systemd (`Type=notify`): serving now. Elsewhere NOTIFY_SOCKET is unset and this
    // does nothing; a service manager that went away must not take the relay down.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r?; break; }
            _ = term.recv() => break,
            _ = hup.recv() => match notify_reloading().and_then(|()| reload(&args, &relay)) {
                Ok(pin) => {
                    tracing::info!("reloaded; certificate pin: {pin}");
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                }
                Err(e) => {
                    tracing::warn!("reload failed, keeping the running settings: {e:#}");
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                }
            },
        }
    }
    tracing::info!("shutting down: draining sessions for up to {}s", deadline.as_secs());
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    relay.shutdown(deadline).await;
    Ok(())
}

/// Tells systemd a reload has begun (`RELOADING=1` with the monotonic clock, as
/// `Type=notify-reload` wants; `READY=1` follows when it is done, whether it worked or not).
fn notify_reloading() -> Result<()> {
    let now = sd_notify::NotifyState::monotonic_usec_now()?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading, now]);
    Ok(())
}

/// SIGHUP: re-read the file, certificate, access rules, tiers and limits, and put them in
/// force together. Listener settings (address, transports, buffers) need a restart.
fn reload(args: &Args, relay: &Relay) -> Result<ferry_proto::CertPin> {
    Ok(relay.reload(args.settings()?.reloadable()?)?)
}
