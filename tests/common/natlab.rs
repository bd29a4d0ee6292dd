//! A test network with real kernel NAT: a "public" network with a relay on it, and a host
//! and a client each behind a router of its own that masquerades with nftables.
//!
//! ```text
//!   host 192.168.1.2 ── hnat (192.168.1.1 | 10.100.1.2) ──┐
//!                                                        wan (10.100.1.1, 10.100.2.1): the relay
//! client 192.168.2.2 ── cnat (192.168.2.1 | 10.100.2.2) ──┘
//! ```
//! Each box is a network namespace made by the test (`fnat-<pid>-<n>-<box>`), joined by
//! veth pairs; everything is removed when the lab drops. A [`Nat::Cone`] router is Linux's
//! plain `masquerade`: it keeps a flow's source port when it can, so one socket gets one
//! public address towards every destination (what hole punching needs), and it lets in
//! only replies to flows that went out. A [`Nat::Symmetric`] router masquerades with
//! `random`: every flow gets a port of its own, which defeats punching. Like a home
//! router's firewall, each router drops what arrives unasked on its public side, forwarded
//! or for itself; dropping also keeps such a packet from leaving a conntrack entry that
//! would clash with the flow a punch then opens the other way (Linux would give that flow
//! another port). Needs root, `ip`
//! and `nft`; [`NatLab::start`] returns `None` and prints `SKIPPED: <why>` without them.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use tokio::sync::oneshot;

use super::netlab::{run_in, run_ip};

/// How a router translates.
#[derive(Clone, Copy, Debug)]
pub enum Nat {
    /// `masquerade`: port-preserving, endpoint-independent mapping.
    Cone,
    /// `masquerade random`: a new port per flow.
    Symmetric,
    /// `masquerade`, but UDP from inside is dropped (a network that allows only TCP).
    UdpBlocked,
}

/// The relay's address on the public network (reachable from both routers).
pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(10, 100, 1, 1);
/// The host's and the client's own (private) addresses.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 2);
/// The routers' public addresses: what the relay sees the host and the client come from.
pub const HOST_PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(10, 100, 1, 2);
pub const CLIENT_PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(10, 100, 2, 2);

pub struct NatLab {
    namespaces: Vec<String>,
    prefix: String,
}

static LABS: AtomicUsize = AtomicUsize::new(0);

impl NatLab {
    /// Builds the network with the two routers' kinds, or `None` where this system cannot.
    pub async fn start(host_nat: Nat, client_nat: Nat) -> Result<Option<Self>> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED: not root (network namespaces need it; CI runs as root)");
            return Ok(None);
        }
        for tool in ["ip", "nft"] {
            if std::process::Command::new(tool).arg("-V").output().is_err() {
                eprintln!("SKIPPED: {tool} is not installed (scripts/test.sh installs it)");
                return Ok(None);
            }
        }
        let prefix = format!("fnat-{}-{}", std::process::id(), LABS.fetch_add(1, Ordering::Relaxed));
        let mut lab = Self { namespaces: Vec::new(), prefix };
        for machine in ["wan", "hnat", "cnat", "host", "client"] {
            let netns = lab.netns(machine);
            run_ip(&["netns", "add", &netns]).await?;
            lab.namespaces.push(netns.clone());
            run_ip(&["-n", &netns, "link", "set", "lo", "up"]).await?;
        }
        // (namespace, interface, address, namespace, interface, address)
        let links = [
            ("wan", "w1", "10.100.1.1/24", "hnat", "wan0", "10.100.1.2/24"),
            ("wan", "w2", "10.100.2.1/24", "cnat", "wan0", "10.100.2.2/24"),
            ("hnat", "lan0", "192.168.1.1/24", "host", "eth0", "192.168.1.2/24"),
            ("cnat", "lan0", "192.168.2.1/24", "client", "eth0", "192.168.2.2/24"),
        ];
        for (a, a_if, a_ip, b, b_if, b_ip) in links {
            let (a, b) = (lab.netns(a), lab.netns(b));
            run_ip(&["link", "add", a_if, "netns", &a, "type", "veth", "peer", "name", b_if, "netns", &b]).await?;
            for (ns, dev, ip) in [(&a, a_if, a_ip), (&b, b_if, b_ip)] {
                run_ip(&["-n", ns, "addr", "add", ip, "dev", dev]).await?;
                run_ip(&["-n", ns, "link", "set", dev, "up"]).await?;
            }
        }
        for (machine, gateway) in
            [("hnat", "10.100.1.1"), ("cnat", "10.100.2.1"), ("host", "192.168.1.1"), ("client", "192.168.2.1")]
        {
            run_ip(&["-n", &lab.netns(machine), "route", "add", "default", "via", gateway]).await?;
        }
        for machine in ["wan", "hnat", "cnat"] {
            lab.exec(machine, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]).await?;
        }
        for (router, nat) in [("hnat", host_nat), ("cnat", client_nat)] {
            let (masquerade, udp) = match nat {
                Nat::Cone => ("masquerade", ""),
                Nat::Symmetric => ("masquerade random", ""),
                Nat::UdpBlocked => ("masquerade", "meta l4proto udp drop\n    "),
            };
            let rules = format!(
                "table ip nat {{\n  chain post {{\n    type nat hook postrouting priority 100;\n    oifname \"wan0\" {masquerade}\n  }}\n}}\n\
                 table ip filter {{\n  chain forward {{\n    type filter hook forward priority 0; policy drop;\n    \
                 ct state established,related accept\n    {udp}iifname \"lan0\" oifname \"wan0\" accept\n  }}\n\
                 chain input {{\n    type filter hook input priority 0; policy accept;\n    \
                 ct state established,related accept\n    iifname \"wan0\" drop\n  }}\n}}\n"
            );
            let path = std::env::temp_dir().join(format!("{}-{router}.nft", lab.prefix));
            std::fs::write(&path, rules)?;
            let loaded = lab.exec(router, &["nft", "-f", &path.to_string_lossy()]).await;
            let _ = std::fs::remove_file(&path);
            loaded?;
        }
        Ok(Some(lab))
    }

    /// The namespace of one box: `wan`, `hnat`, `cnat`, `host` or `client`.
    pub fn netns(&self, machine: &str) -> String {
        format!("{}-{machine}", self.prefix)
    }

    /// Runs a command inside a box's namespace and fails with its stderr.
    pub async fn exec(&self, machine: &str, args: &[&str]) -> Result<String> {
        let out = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.netns(machine)])
            .args(args)
            .output()
            .await
            .context("running ip netns exec")?;
        anyhow::ensure!(
            out.status.success(),
            "{} in {machine}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `task` on a box: on a thread inside its namespace, with a runtime of its own.
    pub fn run_on<F, Fut, T>(&self, machine: &str, task: F) -> oneshot::Receiver<Result<T>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>>,
        T: Send + 'static,
    {
        run_in(self.netns(machine), task)
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for netns in &self.namespaces {
            let _ = std::process::Command::new("ip").args(["netns", "del", netns]).status();
        }
    }
}
