//! `ferry-relay`: run a ferry relay node.
//!
//! Thin: parses flags, loads the certificate, starts [`ferry_relay::Relay`] and waits for
//! SIGINT/SIGTERM to shut it down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use ferry_relay::config::{DEFAULT_BUFFER_PER_DIRECTION, DEFAULT_LISTEN};
use ferry_relay::{Relay, RelayConfig, TlsIdentity};

/// Run a ferry relay: media servers (hosts) connect out to it, remote clients connect
/// to it, and it forwards their end-to-end encrypted streams without being able to read
/// them. With no flags it listens on UDP 0.0.0.0:4433 with a self-signed certificate made
/// on first start, and prints the pin hosts and clients need.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Address to listen on: UDP for QUIC and TCP for TLS share the port number.
    #[arg(long, default_value = DEFAULT_LISTEN, env = "FERRY_RELAY_LISTEN")]
    listen: SocketAddr,
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
    /// Do not serve QUIC (UDP); clients and hosts must use --transport tcp or auto.
    #[arg(long, conflicts_with = "no_tcp")]
    no_quic: bool,
    /// Do not serve TLS over TCP.
    #[arg(long)]
    no_tcp: bool,
    /// Most bytes buffered per session and direction.
    #[arg(long, default_value_t = DEFAULT_BUFFER_PER_DIRECTION)]
    buffer: usize,
    /// Log filter (error, warn, info, debug, trace). The relay never logs addresses,
    /// host ids, keys or payload at any level.
    #[arg(long, default_value = "info", env = "FERRY_LOG")]
    log: String,
}

fn default_state_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return Ok(PathBuf::from(dir).join("ferry-relay"));
    }
    let home = std::env::var_os("HOME").context("no HOME; pass --state-dir")?;
    Ok(PathBuf::from(home).join(".local/state/ferry-relay"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log).context("invalid --log filter")?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let identity = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => TlsIdentity::from_files(cert, key)?,
        _ => {
            let dir = match &args.state_dir {
                Some(dir) => dir.clone(),
                None => default_state_dir()?,
            };
            let (identity, created) = TlsIdentity::load_or_create(&dir)?;
            if created {
                eprintln!("created a self-signed certificate in {}", dir.display());
            }
            identity
        }
    };
    let mut config = RelayConfig::new(args.listen, identity);
    config.buffer_per_direction = args.buffer;
    config.quic = !args.no_quic;
    config.tcp = !args.no_tcp;
    let relay = Relay::spawn(config).await?;
    let hops = match (args.no_quic, args.no_tcp) {
        (false, false) => "QUIC on UDP, TLS on TCP",
        (true, _) => "TLS on TCP only",
        (_, true) => "QUIC on UDP only",
    };
    println!("ferry relay listening on {} ({hops})", relay.local_addr());
    println!("certificate pin: {}", relay.pin());
    println!(
        "hosts run:  ferry host run --relay <this-machine>:{} --pin {} --forward <service>",
        relay.local_addr().port(),
        relay.pin()
    );

    shutdown_signal().await?;
    eprintln!("shutting down");
    relay.shutdown(Duration::from_secs(10)).await;
    Ok(())
}

async fn shutdown_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
