//! `ferry`: host a service behind NAT, or reach one, through a ferry relay.
//!
//! Thin: parses flags and calls `ferry-client` (and, for `demo`, `ferry::local`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use ferry::local::{LocalStack, echo_service, pattern_digest, send_and_digest};
use ferry_client::identity::{default_dir, load_or_create_client_key};
use ferry_client::{Client, HopOptions, Host, HostConfig, HostIdentity, Transport};
use ferry_link::Congestion;
use ferry_proto::{PublicKey, RelayAddr, RelayTrust, StaticKey, Ticket};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// ferry: reach a service behind NAT through a relay that cannot read your traffic.
///
/// A host (e.g. a media server) runs `ferry host run` and stays connected to a relay;
/// anyone with its ticket runs `ferry connect` (or embeds the library) and gets a local
/// port that leads, end-to-end encrypted, to the host's service.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "warn", env = "FERRY_LOG")]
    log: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the host side: identity, tickets, serving.
    #[command(subcommand)]
    Host(HostCommand),
    /// Open a local port; each connection to it becomes an end-to-end session to the host.
    Connect {
        /// The host's ticket (`ferry1…`).
        ticket: String,
        /// Local address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        key: ClientKey,
        /// Hop to the relay: quic, tcp (TLS over TCP, for networks that block UDP) or
        /// auto (QUIC first, TCP if QUIC does not answer within 250 ms).
        #[arg(long, default_value = "auto")]
        transport: Transport,
    },
    /// One session on stdin/stdout (like netcat); exits 0 when the host ends it cleanly.
    Cat {
        /// The host's ticket (`ferry1…`).
        ticket: String,
        #[command(flatten)]
        key: ClientKey,
        /// Hop to the relay: quic, tcp or auto.
        #[arg(long, default_value = "auto")]
        transport: Transport,
    },
    /// Start a relay, a host in front of an echo service and a client, all on loopback;
    /// stream data through them, verify it and print the throughput.
    Demo {
        /// MiB to send (and receive back).
        #[arg(long, default_value_t = 256)]
        mib: u64,
        /// QUIC congestion controller on every hop: bbr or cubic.
        #[arg(long, default_value = "bbr")]
        congestion: Congestion,
    },
}

#[derive(Subcommand, Debug)]
enum HostCommand {
    /// Create the host identity (key and ticket secret, mode 0600) and print the host id.
    Init {
        #[command(flatten)]
        key: HostKey,
    },
    /// Print the host id.
    Id {
        #[command(flatten)]
        key: HostKey,
    },
    /// Print a ticket that lets a client reach this host through the given relays.
    Ticket {
        #[command(flatten)]
        relays: Relays,
        #[command(flatten)]
        key: HostKey,
        /// Also print the ticket as a QR code (for phones).
        #[arg(long)]
        qr: bool,
    },
    /// Stay registered at the relays and forward each session to a local service.
    Run {
        #[command(flatten)]
        relays: Relays,
        /// The local service to forward sessions to (`host:port`).
        #[arg(long)]
        forward: String,
        /// Only clients with this public key may connect (repeatable; default: anyone
        /// holding the ticket).
        #[arg(long = "allow")]
        allow: Vec<PublicKey>,
        /// Registration token, for relays that require one.
        #[arg(long, env = "FERRY_TOKEN")]
        token: Option<String>,
        /// Hop to the relays: quic, tcp or auto.
        #[arg(long, default_value = "auto")]
        transport: Transport,
        #[command(flatten)]
        key: HostKey,
    },
}

#[derive(Args, Debug)]
struct HostKey {
    /// Host identity file. Default: $FERRY_HOME/host.key (or ~/.config/ferry/host.key).
    #[arg(long = "key")]
    path: Option<PathBuf>,
}

impl HostKey {
    fn path(&self) -> Result<PathBuf> {
        match &self.path {
            Some(p) => Ok(p.clone()),
            None => Ok(default_dir().context("no HOME; pass --key")?.join("host.key")),
        }
    }

    fn load(&self) -> Result<HostIdentity> {
        let path = self.path()?;
        if !path.exists() {
            bail!("no host identity at {}; create one with `ferry host init`", path.display());
        }
        Ok(HostIdentity::load(&path)?)
    }
}

#[derive(Args, Debug)]
struct ClientKey {
    /// Client key file, created on first use, so a host can allow-list this client.
    /// Default: a fresh key for every run.
    #[arg(long = "key")]
    path: Option<PathBuf>,
}

impl ClientKey {
    fn load(&self) -> Result<StaticKey> {
        match &self.path {
            Some(path) => Ok(load_or_create_client_key(path)?),
            None => Ok(StaticKey::generate()?),
        }
    }
}

#[derive(Args, Debug)]
struct Relays {
    /// Relay address (`name:port`), repeatable; pairs with --pin in order.
    #[arg(long = "relay", required = true)]
    relays: Vec<String>,
    /// The relay's certificate pin (`sha256:…`, printed by ferry-relay and ferry-cert) or
    /// `webpki` for a publicly trusted certificate; one per --relay.
    #[arg(long = "pin", required = true)]
    pins: Vec<RelayTrust>,
}

impl Relays {
    fn list(&self) -> Result<Vec<RelayAddr>> {
        if self.relays.len() != self.pins.len() {
            bail!("give one --pin for each --relay ({} relays, {} pins)", self.relays.len(), self.pins.len());
        }
        Ok(self
            .relays
            .iter()
            .zip(&self.pins)
            .map(|(addr, trust)| RelayAddr { addr: addr.clone(), trust: *trust })
            .collect())
    }
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli.command)) {
        eprintln!("ferry: {e:#}");
        std::process::exit(1);
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Host(HostCommand::Init { key }) => {
            let path = key.path()?;
            let identity = HostIdentity::create(&path)?;
            eprintln!("created {}", path.display());
            println!("{}", identity.key.public());
        }
        Command::Host(HostCommand::Id { key }) => println!("{}", key.load()?.key.public()),
        Command::Host(HostCommand::Ticket { relays, key, qr }) => {
            let identity = key.load()?;
            let ticket = Ticket { host: identity.key.public(), secret: identity.secret, relays: relays.list()? };
            let text = ticket.encode()?;
            println!("{text}");
            if qr {
                let code = qrcode::QrCode::new(text.as_bytes()).context("the ticket does not fit in a QR code")?;
                println!("{}", code.render::<qrcode::render::unicode::Dense1x2>().quiet_zone(true).build());
            }
        }
        Command::Host(HostCommand::Run { relays, forward, allow, token, transport, key }) => {
            let mut config = HostConfig::new(key.load()?, relays.list()?, forward);
            config.transport = transport;
            config.allow = (!allow.is_empty()).then_some(allow);
            config.token = token;
            host_run(config).await?;
        }
        Command::Connect { ticket, listen, key, transport } => {
            let client = Client::new(parse_ticket(&ticket)?, key.load()?, HopOptions::client());
            let client = Arc::new(client.with_transport(transport));
            client.warm_up().await?;
            let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
            let via = match client.transport_in_use().await {
                Some(Transport::Tcp) => "TLS over TCP",
                _ => "QUIC",
            };
            println!(
                "listening on {} — each connection is an end-to-end session to the host (relay hop: {via})",
                listener.local_addr()?
            );
            // Ends on Ctrl-C (0), or with the listener's error (1): never silently.
            let cancel = CancellationToken::new();
            let serving = client.clone().serve(listener, cancel.clone());
            tokio::pin!(serving);
            let served = tokio::select! {
                served = &mut serving => served,
                signal = tokio::signal::ctrl_c() => {
                    cancel.cancel();
                    let served = serving.await;
                    signal?;
                    served
                }
            };
            client.close().await;
            served?;
        }
        Command::Cat { ticket, key, transport } => {
            let client =
                Client::new(parse_ticket(&ticket)?, key.load()?, HopOptions::client()).with_transport(transport);
            let session = client.open_session().await?;
            let result = session.bridge(tokio::io::stdin(), tokio::io::stdout(), CancellationToken::new()).await;
            client.close().await;
            result?;
        }
        Command::Demo { mib, congestion } => demo(mib, congestion).await?,
    }
    Ok(())
}

fn parse_ticket(text: &str) -> Result<Ticket> {
    Ok(Ticket::decode(text)?)
}

async fn host_run(config: HostConfig) -> Result<()> {
    let relays: Vec<String> = config.relays.iter().map(|r| r.addr.clone()).collect();
    eprintln!("host id {}", config.identity.key.public());
    eprintln!("forwarding sessions to {}", config.forward);
    let host = Host::spawn(config);
    let mut status = host.status();
    let mut was = status.borrow().registered.clone();
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r?; break; }
            changed = status.changed() => {
                if changed.is_err() { break; }
                let now = status.borrow_and_update().clone();
                for (i, (before, after)) in was.iter().zip(&now.registered).enumerate() {
                    match (before, after) {
                        (false, true) => eprintln!("registered at {}", relays[i]),
                        (true, false) => eprintln!("lost {} ({}); reconnecting", relays[i], now.last_error.clone().unwrap_or_default()),
                        _ => {}
                    }
                }
                was = now.registered;
            }
        }
    }
    host.shutdown().await;
    Ok(())
}

async fn demo(mib: u64, congestion: Congestion) -> Result<()> {
    let bytes = mib * 1024 * 1024;
    let (service, _echo) = echo_service().await?;
    let stack =
        LocalStack::start_with(service, |r| r.congestion = congestion, |h| h.options.congestion = congestion).await?;
    println!(
        "relay on {} (pin {}), host registered, echo service on {service}",
        stack.relay.local_addr(),
        stack.relay.pin()
    );
    let options = HopOptions { congestion, ..HopOptions::client() };
    let client = Arc::new(Client::new(stack.ticket.clone(), StaticKey::generate()?, options));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let local = listener.local_addr()?;
    let stop = CancellationToken::new();
    let connect = tokio::spawn(client.clone().serve(listener, stop.clone()));

    let seed = 0x5eed;
    let started = Instant::now();
    let (digest, received) = send_and_digest(TcpStream::connect(local).await?, seed, bytes).await?;
    let elapsed = started.elapsed();
    if received != bytes || digest != pattern_digest(seed, bytes) {
        bail!("data mismatch: sent {bytes} bytes, got {received} back with a different checksum");
    }
    let gbits = (bytes as f64 * 8.0) / elapsed.as_secs_f64() / 1e9;
    println!(
        "demo: {mib} MiB each way through relay + host + client, SHA-256 verified, in {:.2} s: {gbits:.2} Gbit/s each way",
        elapsed.as_secs_f64()
    );
    stop.cancel();
    connect.await??;
    client.close().await;
    tokio::time::timeout(Duration::from_secs(10), stack.shutdown()).await.ok();
    Ok(())
}
