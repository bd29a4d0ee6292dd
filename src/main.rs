//! `ferry`: host a service behind NAT, or reach one, through a ferry relay.
//!
//! Thin: parses flags (checked as they are parsed, see [`cli::args`]) and calls
//! `ferry-client` (and, for `demo`, `ferry::local`).

mod cli;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use cli::{args, host_file};
use ferry::local::{echo_service, pattern_digest, send_and_digest};
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
// No bare `about`: it would take the package's description instead of this text.
#[derive(Parser, Debug)]
#[command(name = "ferry", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level of ferry's own lines: error, warn, info, debug or trace (its libraries
    /// stay at error), or a full tracing filter such as `ferry_client=debug,quinn=info`.
    #[arg(long, global = true, default_value = "warn", env = "FERRY_LOG", value_parser = args::log_filter)]
    log: String,
    /// Log lines as text, or as one JSON object per line (for log collectors).
    #[arg(long, global = true, default_value = "text", env = "FERRY_LOG_FORMAT")]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable, coloured on a terminal.
    Text,
    /// One JSON object per line: timestamp, level, target, fields.
    Json,
}

#[derive(Subcommand, Debug)]
#[expect(clippy::large_enum_variant, reason = "parsed once per run; boxing would only add noise")]
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
        /// Do not make sessions resumable. By default, when the relay carrying a session
        /// dies, drains or is blackholed (or a direct path comes up), the session moves to
        /// another path of the ticket without losing a byte and the local connection stays
        /// open; hosts from before resumption get plain sessions either way.
        #[arg(long)]
        no_resume: bool,
        /// Resumable sessions (the default now; kept so that older command lines work).
        #[arg(long, hide = true, conflicts_with = "no_resume")]
        resume: bool,
    },
    /// One session on stdin/stdout (like netcat); exits 0 when the host ends it cleanly.
    ///
    /// On a terminal, stderr shows the bytes and rate each way and the path (direct, or
    /// which relay) while it runs, and a summary at the end (elsewhere the summary is an
    /// info line: `--log info`); `--progress` and `--quiet` force the counters on or off.
    Cat {
        /// The host's ticket (`ferry1…`).
        ticket: String,
        #[command(flatten)]
        key: ClientKey,
        /// Hop to the relay: quic, tcp or auto.
        #[arg(long, default_value = "auto")]
        transport: Transport,
        /// Draw the live counters (bytes, rate, path) on stderr even when it is not a terminal.
        #[arg(long, conflicts_with = "quiet")]
        progress: bool,
        /// Draw no counters and print no summary.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Print the public half of a key file, for a host's `--allow` or `--allow-file`.
    ///
    /// Takes a client key (`ferry connect --key FILE`) or a host identity (then it prints
    /// the host id). A client key that does not exist yet is created (0600), as `--key`
    /// would, so `ferry key ~/.config/ferry/phone.key` is also how to make one.
    Key {
        /// The key file.
        file: PathBuf,
    },
    /// Wait until a TCP port accepts connections (`name:port`), or until the host of a
    /// ticket answers through its relay (`ferry1…`); exits 1 if the time runs out.
    ///
    /// For scripts that start things in the background: `ferry wait 127.0.0.1:4433`
    /// after starting a relay, `ferry wait "$TICKET"` after starting a host.
    Wait {
        /// `name:port`, or a ticket.
        target: String,
        /// How long to wait (`30s`, `2m`).
        #[arg(long, default_value = "30s", value_parser = args::duration)]
        timeout: Duration,
    },
    /// Print a shell completion script: `ferry completions bash > ~/.local/share/bash-completion/completions/ferry`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `ferry man | man -l -`.
    Man,
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
    /// Print a ticket that lets a client reach this host, through its relays or directly.
    ///
    /// The ticket holds the host id, a secret, each relay's address and pin, the addresses
    /// given with --advertise and the service it is for. Anyone holding it can open
    /// sessions: share it like a password. With --config, relays, advertised addresses and
    /// the list of services come from the host's config file (flags given here win).
    Ticket {
        /// The host's config file (as for `host run`): relays, `[direct] advertise`, and
        /// the services --service is checked against.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        relays: Relays,
        /// A ticket with no relay: direct addresses only (--advertise, or the config
        /// file's), for a host that runs with relaying off.
        #[arg(long, conflicts_with = "relays")]
        no_relay: bool,
        /// An address where clients can reach the host directly (`ip:port` or
        /// `name:port`, e.g. a port forwarded to its --direct-listen), tried before any
        /// relay; repeatable.
        #[arg(long = "advertise", value_parser = args::address)]
        advertise: Vec<String>,
        /// The host's service this ticket reaches (default: the host's default service).
        /// Checked against the config file's services when --config is given.
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        key: HostKey,
        /// Also print the ticket as a QR code (for phones; black on white, so it scans on
        /// light and dark terminals alike).
        #[arg(long)]
        qr: bool,
    },
    /// Stay registered at the relays and forward each session to a local service.
    ///
    /// Settings come from flags, from a config file (--config; every key is shown in
    /// deploy/host.toml), or both: a flag replaces the file's value for its key, and a list
    /// flag (--relay/--pin, --service/--forward, --allow/--allow-file, --advertise) the
    /// file's whole list.
    Run {
        /// The host's config file (TOML; `ferry host check-config --config FILE` checks it).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        relays: Relays,
        /// The local service to forward sessions to (`name:port`, e.g. 127.0.0.1:8096): the
        /// service named `default`, which tickets without a service name reach.
        #[arg(long, value_parser = args::address)]
        forward: Option<String>,
        /// A named service, `NAME=ADDR` (e.g. `ssh=127.0.0.1:22`), repeatable; a ticket made
        /// with `ferry host ticket --service NAME` reaches it. The client names the service
        /// inside the end-to-end handshake, so the relay never learns it.
        #[arg(long = "service", value_parser = args::service)]
        services: Vec<(String, String)>,
        /// The service tickets without a service name reach (default: the one --forward
        /// sets, or the only one).
        #[arg(long)]
        default_service: Option<String>,
        /// Relaying off: contact no relay at all; clients reach the host only directly
        /// (needs --direct-listen, and tickets made with --no-relay --advertise ADDR).
        #[arg(long, conflicts_with = "relays")]
        no_relay: bool,
        /// Accept sessions directly, without a relay, on this UDP address (QUIC), e.g.
        /// 0.0.0.0:4433.
        #[arg(long)]
        direct_listen: Option<SocketAddr>,
        /// Also accept direct sessions over TLS on TCP, on the --direct-listen port (for
        /// clients whose UDP is blocked).
        // Not `requires = "direct_listen"`: the config file may give the listener.
        #[arg(long)]
        direct_tcp: bool,
        /// An address clients can reach the host at directly (e.g. a port forwarded on the
        /// router to --direct-listen); repeatable. Put it in tickets with `host ticket
        /// --advertise`.
        #[arg(long = "advertise", value_parser = args::address)]
        advertise: Vec<String>,
        /// Only clients with this public key may connect (repeatable; default: anyone
        /// holding the ticket). A client prints its key with `ferry key FILE`; the host
        /// logs the key of each client it refuses.
        #[arg(long = "allow")]
        allow: Vec<PublicKey>,
        /// Like --allow, one key per line from a file (`#` comments, blank lines ignored).
        #[arg(long = "allow-file")]
        allow_file: Vec<PathBuf>,
        /// Registration token, for relays that require one.
        #[arg(long, env = "FERRY_TOKEN", value_parser = args::token)]
        token: Option<String>,
        /// Hop to the relays: quic, tcp or auto (the default).
        #[arg(long)]
        transport: Option<Transport>,
        #[command(flatten)]
        key: HostKey,
    },
    /// Check a host config file without starting anything: every key known and well-formed,
    /// the key file readable, service addresses and allow-listed keys parsed, relays or a
    /// direct listener present; prints a summary, or the key, line and fix of the problem.
    CheckConfig {
        /// The host's config file.
        #[arg(long)]
        config: PathBuf,
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
    /// Relay address (`name:port`, e.g. relay.example.org:4433), repeatable; pairs with
    /// --pin in order. Needed unless the config file lists relays or relaying is off.
    #[arg(long = "relay", value_parser = args::address)]
    relays: Vec<String>,
    /// The relay's certificate pin (`sha256:…`: the relay prints it at start, and
    /// `ferry-cert pin cert.pem` prints it again), or `webpki` for a publicly trusted
    /// certificate; one per --relay.
    #[arg(long = "pin")]
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
    // Checked by `args::log_filter` at parse time; the fallback is never taken.
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
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
        Command::Host(HostCommand::Ticket { config, relays, no_relay, advertise, service, key, qr }) => {
            let file = config.as_deref().map(host_file::load).transpose()?;
            let flags =
                host_file::Flags { key: key.path, relays: relays.list()?, no_relay, advertise, ..Default::default() };
            let setup = host_file::combine(file, flags)?;
            let ticket = setup.ticket(&setup.identity()?, service)?;
            let text = ticket.encode()?;
            println!("{text}");
            if qr {
                print!("{}", cli::qr::render(&text)?);
            }
        }
        Command::Host(HostCommand::CheckConfig { config }) => println!("{}", host_file::check(&config)?),
        Command::Host(HostCommand::Run {
            config,
            relays,
            forward,
            services,
            default_service,
            no_relay,
            direct_listen,
            direct_tcp,
            advertise,
            allow,
            allow_file,
            token,
            transport,
            key,
        }) => {
            let file = config.as_deref().map(host_file::load).transpose()?;
            let flags = host_file::Flags {
                key: key.path,
                relays: relays.list()?,
                no_relay,
                token,
                transport,
                forward,
                services,
                default_service,
                allow,
                allow_files: allow_file,
                direct_listen,
                direct_tcp,
                advertise,
            };
            let config = host_file::combine(file, flags)?.host_config()?;
            // A name that does not resolve is a typo to report now, not at the first session.
            for (name, addr) in config.services.iter() {
                let what = if name == ferry_client::Services::DEFAULT_NAME {
                    format!("--forward {addr}")
                } else {
                    format!("service {name} ({addr})")
                };
                let resolved = tokio::time::timeout(Duration::from_secs(10), tokio::net::lookup_host(addr))
                    .await
                    .map(|found| found.map(|mut addrs| addrs.next().is_some()));
                match resolved {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => bail!("{what}: the name resolves to no address"),
                    Ok(Err(e)) => bail!("{what}: cannot resolve the name ({e})"),
                    Err(_) => bail!("{what}: resolving the name took over 10 s"),
                }
            }
            host_run(config).await?;
        }
        Command::Connect { ticket, listen, key, transport, no_resume, resume: _ } => {
            let client = Client::new(parse_ticket(&ticket)?, key.load()?, HopOptions::client());
            let client = Arc::new(client.with_transport(transport).resumable(!no_resume));
            if !reach_relay(&client).await? {
                return Ok(());
            }
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
        Command::Cat { ticket, key, transport, progress, quiet } => {
            let client =
                Client::new(parse_ticket(&ticket)?, key.load()?, HopOptions::client()).with_transport(transport);
            let session = client.open_session().await?;
            let show = match (progress, quiet) {
                (true, _) => cli::progress::Show::Always,
                (_, true) => cli::progress::Show::Never,
                _ => cli::progress::Show::Auto,
            };
            let path = session.path().map_or_else(|| "an unknown path".to_owned(), ToString::to_string);
            let progress = cli::progress::Progress::new(show, path);
            let stdin = progress.sent.wrap_async_read(tokio::io::stdin());
            let stdout = progress.received.wrap_async_write(tokio::io::stdout());
            let result = session.bridge(stdin, stdout, CancellationToken::new()).await;
            client.close().await;
            progress.finish(result.as_ref().ok().copied());
            result?;
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "ferry", &mut script);
            print_all(&script)?;
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut page)?;
            print_all(&page)?;
        }
        Command::Key { file } => println!("{}", public_key_of(&file)?),
        Command::Wait { target, timeout } => {
            let target = if target.trim().get(..5).is_some_and(|p| p.eq_ignore_ascii_case("ferry")) {
                cli::wait::Target::Host(Box::new(parse_ticket(&target)?))
            } else {
                cli::wait::Target::Port(args::address(&target).map_err(|why| anyhow::anyhow!("{target}: {why}"))?)
            };
            cli::wait::wait(target, timeout).await?;
        }
        Command::Demo { mib, congestion } => demo(mib, congestion).await?,
    }
    Ok(())
}

/// Writes generated text to stdout; a reader that stops early (`| head`) is not an error.
fn print_all(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn parse_ticket(text: &str) -> Result<Ticket> {
    Ok(Ticket::decode(text)?)
}

/// The public half of a host identity or a client key file (created if it does not exist).
fn public_key_of(path: &Path) -> Result<PublicKey> {
    if path.exists() {
        match HostIdentity::load(path) {
            Ok(identity) => return Ok(identity.key.public()),
            // Not a host identity: read it as a client key below.
            Err(ferry_client::Error::KeyFileMissing { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    } else {
        eprintln!("creating a client key at {}", path.display());
    }
    Ok(load_or_create_client_key(path)?.public())
}

/// `ferry connect`'s first contact with a relay: a relay that is down (not yet started,
/// restarting) is retried with backoff, saying so, until it answers or Ctrl-C; a refused
/// certificate is not, since waiting cannot fix it. Returns false on Ctrl-C.
async fn reach_relay(client: &Client) -> Result<bool> {
    let mut pause = Duration::from_millis(250);
    loop {
        let error = match client.warm_up().await {
            Ok(()) => return Ok(true),
            Err(e) if e.is_relay_certificate_problem() => return Err(e.into()),
            Err(e) => e,
        };
        eprintln!("ferry: {}; retrying in {}", error.report(), humantime::format_duration(pause));
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r?; return Ok(false); }
            _ = tokio::time::sleep(pause) => {}
        }
        // Whole seconds past one, so the message stays readable.
        pause = (pause * 2).min(Duration::from_secs(10));
        if pause > Duration::from_secs(1) {
            pause = Duration::from_secs(pause.as_secs());
        }
    }
}

async fn host_run(config: HostConfig) -> Result<()> {
    let relays: Vec<String> = config.relays.iter().map(|r| r.addr.clone()).collect();
    eprintln!("host id {}", config.identity.key.public());
    match config.services.get(Some(ferry_client::Services::DEFAULT_NAME)) {
        Some(addr) if config.services.iter().count() == 1 => eprintln!("forwarding sessions to {addr}"),
        _ => {
            for (name, addr) in config.services.iter() {
                let default = if name == config.services.default_name() { " (the default)" } else { "" };
                eprintln!("service {name}{default}: forwarding sessions to {addr}");
            }
        }
    }
    let relay_off = config.relays.is_empty();
    // A direct port that cannot be bound is an error the user must see at once (a port
    // in use, a wrong address), not a log line behind a host that runs without it.
    let host = if config.direct.is_some() { Host::try_spawn(config)? } else { Host::spawn(config) };
    match host.direct_addr() {
        // The bound address (a port 0 in --direct-listen becomes the real one).
        Some(addr) if relay_off => eprintln!("relaying is off: no relay is contacted; direct sessions on {addr}"),
        Some(addr) => eprintln!("direct sessions on {addr}"),
        None if relay_off => {
            host.shutdown().await;
            bail!(
                "relaying is off and the direct listener could not be opened (the log says why), so no client could reach this host"
            );
        }
        None => {}
    }
    let mut status = host.status();
    let mut was = status.borrow().registered.clone();
    let mut replaced = status.borrow().replaced;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r?; break; }
            changed = status.changed() => {
                if changed.is_err() { break; }
                let now = status.borrow_and_update().clone();
                for (i, (before, after)) in was.iter().zip(&now.registered).enumerate() {
                    match (before, after) {
                        (false, true) => eprintln!("registered at {}", relays[i]),
                        // A replacement is logged by the host itself, with its pause.
                        (true, false) if now.replaced > replaced => {}
                        (true, false) => eprintln!("lost {} ({}); reconnecting", relays[i], now.last_error.clone().unwrap_or_default()),
                        _ => {}
                    }
                }
                was = now.registered;
                replaced = now.replaced;
            }
        }
    }
    host.shutdown().await;
    Ok(())
}

async fn demo(mib: u64, congestion: Congestion) -> Result<()> {
    let bytes = mib * 1024 * 1024;
    let (service, _echo) = echo_service().await?;
    let relay = cli::demo::DemoRelay::start(congestion).await?;
    let identity = HostIdentity::generate()?;
    let mut host_config = HostConfig::new(identity.clone(), vec![relay.relay.clone()], service.to_string());
    host_config.options.congestion = congestion;
    let host = Host::spawn(host_config);
    ferry::local::wait_registered(&host, 1).await?;
    let ticket = Ticket::new(identity.key.public(), identity.secret.clone(), vec![relay.relay.clone()]);
    let pin = match relay.relay.trust {
        RelayTrust::Pin(pin) => pin.to_string(),
        RelayTrust::WebPki => "webpki".into(),
    };
    println!("relay (ferry-relay) on {} (pin {pin}), host registered, echo service on {service}", relay.relay.addr);
    let options = HopOptions { congestion, ..HopOptions::client() };
    let client = Arc::new(Client::new(ticket, StaticKey::generate()?, options));
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
    tokio::time::timeout(Duration::from_secs(10), host.shutdown()).await.ok();
    drop(relay);
    Ok(())
}
