//! A test network: machines in network namespaces made by the test, joined by
//! `tests/netlab/linkemu.py` (netem's delay and loss, and blocked UDP, in user space: this
//! kernel has no `sch_netem`).
//!
//! Each machine is a namespace (`ferry-<pid>-<n>-<name>`) with its own TUN device and
//! address `10.201.0.<i+1>`; code runs "on" a machine in a thread that entered the
//! namespace and drives its own current-thread tokio runtime, so every socket it opens is
//! that machine's. Traffic only ever goes to these addresses or to a namespace's own
//! loopback. Everything is removed when the lab drops. Needs root, `ip` (iproute2),
//! `/dev/net/tun` and python3; [`NetLab::start`] returns `None` and prints
//! `SKIPPED: <why>` when one is missing.

use std::future::Future;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::oneshot;

/// One machine: a name, and its settings for the emulator (`delay=MS`, `jitter=MS`,
/// `loss=P`, `udp=off`), which describe its access link in both directions.
pub struct Machine {
    pub name: &'static str,
    pub link: Vec<String>,
}

impl Machine {
    pub fn new(name: &'static str, link: &[&str]) -> Self {
        Self { name, link: link.iter().map(|s| s.to_string()).collect() }
    }
}

/// Packets one machine sent: delivered, lost as its link settings say, lost because the
/// emulator's delay line was full.
#[derive(Debug)]
pub struct LinkStats {
    pub name: String,
    pub sent: u64,
    pub dropped: u64,
    pub overflow: u64,
}

impl LinkStats {
    /// The share of the machine's packets lost as configured.
    pub fn loss(&self) -> f64 {
        self.dropped as f64 / (self.sent + self.dropped + self.overflow).max(1) as f64
    }
}

pub struct NetLab {
    emulator: Child,
    // Declared after `emulator`, so dropped after it: the namespaces go last.
    namespaces: Namespaces,
    commands: ChildStdin,
    output: Lines<BufReader<ChildStdout>>,
}

static LABS: AtomicUsize = AtomicUsize::new(0);

impl NetLab {
    /// Makes the machines and the links between them, or `None` (after printing why)
    /// where this system cannot.
    pub async fn start(machines: &[Machine]) -> Result<Option<Self>> {
        if let Some(why) = missing_prerequisite() {
            eprintln!("SKIPPED: {why}; the network-namespace test did not run");
            return Ok(None);
        }
        let lab = LABS.fetch_add(1, Ordering::Relaxed);
        // Removed again on drop, also when a step below fails.
        let mut namespaces = Namespaces(Vec::new());
        let mut args = vec![concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netlab/linkemu.py").to_owned()];
        for (i, machine) in machines.iter().enumerate() {
            let netns = format!("ferry-{}-{lab}-{}", std::process::id(), machine.name);
            let addr = Ipv4Addr::new(10, 201, 0, i as u8 + 1);
            run_ip(&["netns", "add", &netns]).await?;
            namespaces.0.push((machine.name, netns.clone(), addr));
            args.extend(["--node".into(), machine.name.into(), netns, addr.to_string()]);
            args.extend(machine.link.iter().cloned());
        }
        let mut emulator = tokio::process::Command::new("python3")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting tests/netlab/linkemu.py with python3")?;
        let commands = emulator.stdin.take().context("emulator stdin")?;
        let output = BufReader::new(emulator.stdout.take().context("emulator stdout")?).lines();
        let mut lab = Self { emulator, namespaces, commands, output };
        let ready = tokio::time::timeout(Duration::from_secs(10), lab.output.next_line()).await;
        match ready {
            Ok(Ok(Some(line))) if line == "ready" => Ok(Some(lab)),
            other => bail!("the link emulator did not start: {other:?}"),
        }
    }

    /// The address of a machine on the lab network.
    pub fn addr(&self, machine: &str) -> Ipv4Addr {
        self.machine(machine).2
    }

    /// (machine, namespace, address) of a machine of this lab.
    fn machine(&self, machine: &str) -> &(&'static str, String, Ipv4Addr) {
        self.namespaces.0.iter().find(|(name, ..)| *name == machine).expect("a machine of this lab")
    }

    /// Runs `task` on `machine`: on a thread inside its namespace, on a runtime of its
    /// own. The result comes back on the receiver.
    pub fn run_on<F, Fut, T>(&self, machine: &str, task: F) -> oneshot::Receiver<Result<T>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>>,
        T: Send + 'static,
    {
        run_in(self.machine(machine).1.clone(), task)
    }

    /// Changes a machine's link settings while the lab runs (`loss=0.5`, `udp=off`...).
    pub async fn set(&mut self, machine: &str, settings: &[&str]) -> Result<()> {
        let line = format!("set {machine} {}\n", settings.join(" "));
        self.commands.write_all(line.as_bytes()).await?;
        Ok(self.commands.flush().await?)
    }

    /// What became of the packets each machine sent into the lab network.
    pub async fn stats(&mut self) -> Result<Vec<LinkStats>> {
        self.commands.write_all(b"stats\n").await?;
        self.commands.flush().await?;
        let mut stats = Vec::new();
        while stats.len() < self.namespaces.0.len() {
            let line = self.output.next_line().await?.context("the link emulator exited")?;
            let field = |key: &str| {
                line.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|v| v.parse().ok()).unwrap_or(0)
            };
            let name = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
            stats.push(LinkStats {
                name,
                sent: field("sent="),
                dropped: field("dropped="),
                overflow: field("overflow="),
            });
        }
        Ok(stats)
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        let _ = self.emulator.start_kill();
    }
}

/// The lab's namespaces as (machine, namespace, address); deleted on drop.
struct Namespaces(Vec<(&'static str, String, Ipv4Addr)>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for (_, netns, _) in &self.0 {
            let _ = std::process::Command::new("ip").args(["netns", "del", netns]).status();
        }
    }
}

/// Runs `task` on a thread inside the namespace `netns`, on a runtime of its own; the
/// result comes back on the receiver (shared by this lab and `natlab`).
pub fn run_in<F, Fut, T>(netns: String, task: F) -> oneshot::Receiver<Result<T>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
    T: Send + 'static,
{
    let (done, result) = oneshot::channel();
    std::thread::spawn(move || {
        let outcome = enter(&netns).and_then(|()| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(task())
        });
        let _ = done.send(outcome);
    });
    result
}

/// Moves the calling thread into the named network namespace.
pub fn enter(netns: &str) -> Result<()> {
    let file = std::fs::File::open(format!("/run/netns/{netns}")).with_context(|| format!("namespace {netns}"))?;
    rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
        .with_context(|| format!("entering namespace {netns}"))
}

pub async fn run_ip(args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new("ip").args(args).output().await.context("running ip")?;
    anyhow::ensure!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

fn missing_prerequisite() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root (network namespaces need it; CI runs as root)".into());
    }
    if std::fs::metadata("/dev/net/tun").is_err() {
        return Some("no /dev/net/tun".into());
    }
    for (tool, arg) in [("ip", "-V"), ("python3", "--version")] {
        if std::process::Command::new(tool).arg(arg).output().is_err() {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}
