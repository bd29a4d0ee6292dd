//! The forwarders compared, one row each, and how to start them. Each [`Kind`] only says
//! how its forwarder starts and where clients connect ([`Running::entry`]), so the load
//! loops are the same for all. Relays run as separate processes (the real `ferry-relay`
//! binary, `socat`, the `rathole` server) so their memory and CPU can be read from
//! `/proc`; the ferry host and client run in this process, as the library
//! `ferry host run` / `ferry connect` use.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry::local::wait_registered;
use ferry_client::{Client, HopOptions, Host, HostConfig, HostIdentity, Transport};
use ferry_proto::{StaticKey, Ticket};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::task::JoinHandle;

use crate::load::one_exchange;
use crate::support::process::Proc;
use crate::support::relay::{RelayLog, RelayProcess};
use crate::support::tools::{ferry_relay_binary, rathole_binary, socat_binary};

/// The forwarders compared, one row each (the value names are `--only`'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Client straight to the service: the ceiling.
    Direct,
    /// ferry over QUIC: real `ferry-relay` process, in-process host and client.
    FerryQuic,
    /// ferry over QUIC with resumable sessions (acknowledgements and replay buffers), as
    /// `ferry connect` opens them by default.
    FerryQuicResumable,
    /// ferry over TCP+TLS (slot for the TCP transport).
    FerryTcp,
    /// ferry with the client on TCP+TLS and the host on QUIC (a viewer whose network
    /// blocks UDP).
    FerryMixed,
    /// ferry with the client on QUIC and the host on TCP+TLS (a host whose network blocks UDP).
    FerryMixedReverse,
    /// ferry's direct path: the client straight to the host's direct port (QUIC), no
    /// relay. A punched path is the same connection once punched.
    FerryDirect,
    /// `socat` TCP forwarder, one process per connection.
    Socat,
    /// rathole server + client with the Noise transport.
    RatholeNoise,
}

impl Kind {
    /// Every row, in table order.
    pub const ALL: [Kind; 9] = [
        Kind::Direct,
        Kind::FerryQuic,
        Kind::FerryQuicResumable,
        Kind::FerryTcp,
        Kind::FerryMixed,
        Kind::FerryMixedReverse,
        Kind::FerryDirect,
        Kind::Socat,
        Kind::RatholeNoise,
    ];

    /// The row's name in messages and for `--only`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::FerryQuic => "ferry-quic",
            Kind::FerryQuicResumable => "ferry-quic-resumable",
            Kind::FerryTcp => "ferry-tcp",
            Kind::FerryMixed => "ferry-mixed",
            Kind::FerryMixedReverse => "ferry-mixed-reverse",
            Kind::FerryDirect => "ferry-direct",
            Kind::Socat => "socat",
            Kind::RatholeNoise => "rathole-noise",
        }
    }

    /// The row's label in the table.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct (no relay)",
            Kind::FerryQuic => "ferry over QUIC",
            Kind::FerryQuicResumable => "ferry over QUIC, resumable",
            Kind::FerryTcp => "ferry over TCP+TLS",
            Kind::FerryMixed => "ferry, client TCP, host QUIC",
            Kind::FerryMixedReverse => "ferry, client QUIC, host TCP",
            Kind::FerryDirect => "ferry direct (no relay)",
            Kind::Socat => "socat TCP forwarder",
            Kind::RatholeNoise => "rathole (noise)",
        }
    }
}

/// A running forwarder: where clients connect, and the relay process to watch.
pub struct Running {
    pub entry: SocketAddr,
    pub relay: Option<Proc>,
    /// Other processes (rathole's client side).
    helpers: Vec<Proc>,
    pub ferry: Option<FerrySide>,
    /// Sockets per session in the busiest process (relay, rathole client, or this
    /// harness holding the host side): 0 for ferry over QUIC, whose relay multiplexes
    /// sessions on UDP.
    pub fd_per_session: usize,
    _dir: Option<tempfile::TempDir>,
}

/// The in-process parts of ferry: host, a client and its local listener.
pub struct FerrySide {
    pub host: Host,
    client: Arc<Client>,
    pub ticket: Ticket,
    pub transport: Transport,
    /// Whether the client asks for resumable sessions.
    pub resumable: bool,
    connect: JoinHandle<()>,
}

impl Running {
    /// Stops the in-process ferry parts (bounded), then kills the processes.
    pub async fn stop(mut self) {
        if let Some(f) = self.ferry.take() {
            f.connect.abort();
            f.client.close().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), f.host.shutdown()).await;
        }
        self.helpers.clear();
        self.relay = None;
    }
}

/// Starts `kind`'s forwarder in front of `service` and waits until it carries traffic.
pub async fn start(kind: Kind, service: SocketAddr) -> Result<Running> {
    match kind {
        Kind::Direct => {
            Ok(Running { entry: service, relay: None, helpers: Vec::new(), ferry: None, fd_per_session: 2, _dir: None })
        }
        Kind::FerryQuic => start_ferry(service, Transport::Quic, Transport::Quic, false).await,
        Kind::FerryQuicResumable => start_ferry(service, Transport::Quic, Transport::Quic, true).await,
        Kind::FerryTcp => start_ferry(service, Transport::Tcp, Transport::Tcp, false).await,
        Kind::FerryMixed => start_ferry(service, Transport::Tcp, Transport::Quic, false).await,
        Kind::FerryMixedReverse => start_ferry(service, Transport::Quic, Transport::Tcp, false).await,
        Kind::FerryDirect => start_ferry_direct(service).await,
        Kind::Socat => start_socat(service).await,
        Kind::RatholeNoise => start_rathole(service).await,
    }
}

/// A `ferry-relay` process (QUIC and TCP on one port), an in-process host on
/// `host_transport` and client on `client_transport`, and a local listener like
/// `ferry connect`; `resumable`: the client asks for resumable sessions.
async fn start_ferry(
    service: SocketAddr,
    client_transport: Transport,
    host_transport: Transport,
    resumable: bool,
) -> Result<Running> {
    let bin = ferry_relay_binary()?;
    let RelayProcess { proc: relay, relays, dir, .. } = RelayProcess::start(&bin, RelayLog::File).await?;

    let identity = HostIdentity::generate()?;
    let mut config = HostConfig::new(identity.clone(), relays.clone(), service.to_string());
    // Room for the 10,000 idle sessions (the default suits a media server, not this).
    config.options.max_incoming_streams = 16_384;
    config.transport = host_transport;
    let host = Host::spawn(config);
    wait_registered(&host, 1).await?;
    let ticket = Ticket::new(identity.key.public(), identity.secret.clone(), relays);
    let (entry, ferry) = ferry_side(host, ticket, client_transport, resumable).await?;
    Ok(Running {
        entry,
        relay: Some(relay),
        helpers: Vec::new(),
        ferry: Some(ferry),
        // Over TCP the host opens a TLS data connection per session, and connects to
        // the service, both from this process.
        fd_per_session: if client_transport == Transport::Quic && host_transport == Transport::Quic { 0 } else { 3 },
        _dir: Some(dir),
    })
}

/// A warmed-up client for `ticket` behind a local listener like `ferry connect`, beside
/// `host`: the entry point and the in-process parts.
async fn ferry_side(
    host: Host,
    ticket: Ticket,
    transport: Transport,
    resumable: bool,
) -> Result<(SocketAddr, FerrySide)> {
    let client = Arc::new(new_client(&ticket, transport, resumable)?);
    client.warm_up().await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let entry = listener.local_addr()?;
    let connect = tokio::spawn({
        let client = client.clone();
        async move { drop(client.serve(listener, tokio_util::sync::CancellationToken::new()).await) }
    });
    Ok((entry, FerrySide { host, client, ticket, transport, resumable, connect }))
}

/// An in-process host with a direct port on loopback and no relay, and a client whose
/// ticket lists only that port, behind a local listener like `ferry connect`.
async fn start_ferry_direct(service: SocketAddr) -> Result<Running> {
    let identity = HostIdentity::generate()?;
    let mut config = HostConfig::new(identity.clone(), Vec::new(), service.to_string());
    config.options.max_incoming_streams = 16_384;
    config.direct = Some(ferry_client::DirectConfig::new(([127, 0, 0, 1], 0).into()));
    let host = Host::try_spawn(config)?;
    let direct = host.direct_addr().context("the host's direct port")?;
    let mut ticket = Ticket::new(identity.key.public(), identity.secret.clone(), Vec::new());
    ticket.direct = vec![direct.to_string()];
    let (entry, ferry) = ferry_side(host, ticket, Transport::Quic, false).await?;
    Ok(Running { entry, relay: None, helpers: Vec::new(), ferry: Some(ferry), fd_per_session: 0, _dir: None })
}

/// A client for `ticket` with a fresh key.
pub fn new_client(ticket: &Ticket, transport: Transport, resumable: bool) -> Result<Client> {
    Ok(Client::new(ticket.clone(), StaticKey::generate()?, HopOptions::client())
        .with_transport(transport)
        .resumable(resumable))
}

async fn start_socat(service: SocketAddr) -> Result<Running> {
    let bin = socat_binary()?;
    let [port] = free_ports()?;
    let child = Command::new(bin)
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay,backlog=1024"))
        .arg(format!("TCP:{service},nodelay"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .context("starting socat")?;
    let mut relay = Proc { child, name: "socat", group: true };
    let entry: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_ready(entry, &mut relay).await?;
    Ok(Running { entry, relay: Some(relay), helpers: Vec::new(), ferry: None, fd_per_session: 2, _dir: None })
}

/// `rathole --genkey`: (private, public), base64.
async fn rathole_keys(bin: &Path) -> Result<(String, String)> {
    let out = Command::new(bin).arg("--genkey").output().await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let (mut private, mut public) = (None, None);
    while let Some(line) = lines.next() {
        if line.to_ascii_lowercase().starts_with("private key") {
            private = lines.next().map(str::to_owned);
        } else if line.to_ascii_lowercase().starts_with("public key") {
            public = lines.next().map(str::to_owned);
        }
    }
    match (private, public) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!("cannot read `rathole --genkey` output: {text}"),
    }
}

async fn start_rathole(service: SocketAddr) -> Result<Running> {
    let bin = rathole_binary()?;
    let dir = tempfile::tempdir()?;
    let (private, public) = rathole_keys(&bin).await?;
    let [control, visitor] = free_ports()?;
    let token = "ferry-bench-token";
    let server_toml = format!(
        "[server]\nbind_addr = \"127.0.0.1:{control}\"\n\n\
         [server.transport]\ntype = \"noise\"\n\n\
         [server.transport.noise]\nlocal_private_key = \"{private}\"\n\n\
         [server.services.bench]\ntoken = \"{token}\"\nbind_addr = \"127.0.0.1:{visitor}\"\nnodelay = true\n"
    );
    let client_toml = format!(
        "[client]\nremote_addr = \"127.0.0.1:{control}\"\n\n\
         [client.transport]\ntype = \"noise\"\n\n\
         [client.transport.noise]\nremote_public_key = \"{public}\"\n\n\
         [client.services.bench]\ntoken = \"{token}\"\nlocal_addr = \"{service}\"\nnodelay = true\n"
    );
    let server_path = dir.path().join("server.toml");
    let client_path = dir.path().join("client.toml");
    std::fs::write(&server_path, server_toml)?;
    std::fs::write(&client_path, client_toml)?;
    let spawn = |path: &Path, name: &'static str| -> Result<Proc> {
        let log = std::fs::File::create(dir.path().join(format!("{name}.log")))?;
        let child = Command::new(&bin)
            .arg(path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc::new(child, name))
    };
    let mut server = spawn(&server_path, "rathole server")?;
    // rathole has no readiness signal; `wait_ready` below is the real wait, this only
    // lets the server bind its control port before the client's first attempt.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = spawn(&client_path, "rathole client")?;
    let entry: SocketAddr = ([127, 0, 0, 1], visitor).into();
    wait_ready(entry, &mut server).await?;
    Ok(Running { entry, relay: Some(server), helpers: vec![client], ferry: None, fd_per_session: 2, _dir: Some(dir) })
}

/// `N` distinct free loopback ports for forwarders that take a port number, not a
/// listener (all held until all are picked, so none repeats).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let held = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    let ports = held.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<std::io::Result<Vec<_>>>()?;
    ports.try_into().map_err(|_| anyhow::anyhow!("could not pick {N} ports"))
}

/// Waits until one echo exchange works through `entry` (the forwarder is ready).
async fn wait_ready(entry: SocketAddr, proc: &mut Proc) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        proc.check_alive()?;
        match tokio::time::timeout(Duration::from_secs(1), one_exchange(entry)).await {
            Ok(Ok(_)) => return Ok(()),
            _ if Instant::now() > until => bail!("{} never became ready", proc.name),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
