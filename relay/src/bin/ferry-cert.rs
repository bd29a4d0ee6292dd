//! `ferry-cert`: make, inspect and renew the relay's TLS certificates.
//!
//! A thin layer over `ferry_relay::certs` (and `ferry_relay::acme`): flags in, files and
//! pins out. Pins go to stdout (so scripts can capture them), everything else to stderr.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args as ClapArgs, Parser, Subcommand};
use ferry_relay::certs::ca::{CaOptions, CertAuthority, LeafOptions};
use ferry_relay::certs::info::CertInfo;
use ferry_relay::certs::renew::{RenewOptions, Renewal, renew};
use ferry_relay::certs::{KEY_FILE, KeyAlg, SelfSigned, read_certs};

/// Provision ferry relay certificates and print the pins that go into tickets.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a self-signed certificate and key (ECDSA P-256) and print its pin.
    ///
    /// Simplest setup, but every new certificate has a new pin, so tickets must be
    /// reissued; an own CA (`ca init` + `issue`) avoids that.
    SelfSigned {
        /// DNS name the relay is reached by (repeatable).
        #[arg(long = "name")]
        names: Vec<String>,
        /// IP address the relay is reached by (repeatable).
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// Directory to write cert.pem and key.pem (0600) into.
        #[arg(long)]
        out: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Manage an own certificate authority for relays.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Sign a relay certificate with your CA and print its pin.
    ///
    /// Writes cert.pem (the relay certificate followed by the CA certificate, so the relay
    /// serves both) and key.pem (0600). The CA's pin is printed too: put that one in
    /// tickets and certificates can be renewed without touching tickets.
    Issue {
        /// The CA directory (from `ferry-cert ca init`).
        #[arg(long)]
        ca: PathBuf,
        /// DNS name the relay is reached by (repeatable).
        #[arg(long = "name")]
        names: Vec<String>,
        /// IP address the relay is reached by (repeatable).
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// Lifetime in days.
        #[arg(long, default_value_t = 90)]
        days: u32,
        #[command(flatten)]
        key: KeyFlags,
        /// Directory to write cert.pem and key.pem into.
        #[arg(long)]
        out: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Print the SHA-256 public-key pin of a PEM certificate (the first in the file).
    ///
    /// Works for relay certificates and CA certificates alike: a ticket may pin the CA
    /// (`ferry-cert pin ca/ca.pem`, or `--ca` on a chain file) so renewed relay
    /// certificates keep working.
    Pin {
        /// The certificate file.
        cert: PathBuf,
        /// Print the pin of the last certificate in the file (the CA of a chain).
        #[arg(long)]
        ca: bool,
    },
    /// Show names, validity, issuer and pin of every certificate in a PEM file.
    Inspect {
        /// The certificate file.
        cert: PathBuf,
    },
    /// Reissue a CA-signed relay certificate if it expires soon (safe to run daily).
    ///
    /// Does nothing unless the certificate expires within --within days (or --force).
    /// The new certificate keeps the old one's names, IP addresses and kind of key but
    /// gets a NEW private key: tickets pinning the CA keep working, tickets pinning the
    /// old relay certificate do not. Files are replaced atomically; with --reload-pid the
    /// relay is then sent SIGHUP to serve the new certificate without dropping sessions.
    Renew {
        /// The CA directory that issued the certificate.
        #[arg(long)]
        ca: PathBuf,
        /// The certificate file (cert.pem) to renew in place.
        #[arg(long)]
        cert: PathBuf,
        /// The key file to replace (default: key.pem next to the certificate).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Renew when the certificate expires within this many days.
        #[arg(long, default_value_t = 30)]
        within: u32,
        /// Lifetime of the new certificate in days.
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Renew even if the certificate is not due.
        #[arg(long)]
        force: bool,
        /// Send SIGHUP to this process (the relay) after renewing.
        #[arg(long)]
        reload_pid: Option<u32>,
    },
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Make a CA key (0600) and certificate, and print the CA's pin.
    ///
    /// Keep the CA directory off the relay machine if you can: only `issue` and `renew`
    /// need it.
    Init {
        /// Directory to write ca.pem and ca-key.pem into.
        #[arg(long)]
        out: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "ferry relay CA")]
        name: String,
        /// Lifetime in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Only allow the CA to sign these DNS names and their subdomains (repeatable;
        /// default: no name constraint).
        #[arg(long = "permit-dns")]
        permit_dns: Vec<String>,
        #[command(flatten)]
        key: KeyFlags,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(ClapArgs, Debug)]
struct KeyFlags {
    /// Use an Ed25519 key instead of ECDSA P-256.
    #[arg(long)]
    ed25519: bool,
}

impl KeyFlags {
    fn alg(&self) -> KeyAlg {
        if self.ed25519 { KeyAlg::Ed25519 } else { KeyAlg::EcdsaP256 }
    }
}

fn main() -> Result<()> {
    match Args::parse().command {
        Command::SelfSigned { names, ips, out, force } => {
            let mut all = names;
            all.extend(ips.iter().map(IpAddr::to_string));
            if all.is_empty() {
                bail!("give at least one --name or --ip that clients will use to reach the relay");
            }
            let made = SelfSigned::generate(&all)?;
            let (cert, key) = made.write(&out, force)?;
            eprintln!("wrote {} and {}", cert.display(), key.display());
            println!("{}", made.pin);
        }
        Command::Ca(CaCommand::Init { out, name, days, permit_dns, key, force }) => {
            let ca = CertAuthority::generate(&CaOptions { name, days, alg: key.alg(), permitted_dns: permit_dns })?;
            let (cert, key) = ca.write(&out, force)?;
            eprintln!("wrote {} and {} (keep the key secret); the CA's pin:", cert.display(), key.display());
            println!("{}", ca.pin()?);
        }
        Command::Issue { ca, names, ips, days, key, out, force } => {
            if names.is_empty() && ips.is_empty() {
                bail!("give at least one --name or --ip that clients will use to reach the relay");
            }
            let authority = CertAuthority::load(&ca)?;
            let issued = authority.issue(&LeafOptions { dns_names: names, ips, days, alg: key.alg() })?;
            let (cert, key) = issued.write(&out, force)?;
            eprintln!("wrote {} and {}", cert.display(), key.display());
            eprintln!("CA pin (put this in tickets so renewals keep working): {}", issued.ca_pin);
            eprintln!("relay certificate pin:");
            println!("{}", issued.leaf_pin);
        }
        Command::Pin { cert, ca } => {
            let certs = read_certs(&cert)?;
            let chosen = if ca { certs.last() } else { certs.first() };
            let chosen = chosen.context("the file holds no certificate")?;
            println!("{}", CertInfo::parse(chosen)?.pin);
        }
        Command::Inspect { cert } => {
            let certs = read_certs(&cert)?;
            for (i, der) in certs.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                println!("certificate {} of {} in {}", i + 1, certs.len(), cert.display());
                println!("{}", CertInfo::parse(der)?);
            }
        }
        Command::Renew { ca, cert, key, within, days, force, reload_pid } => {
            let key = key.unwrap_or_else(|| cert.with_file_name(KEY_FILE));
            let authority = CertAuthority::load(&ca)?;
            let options = RenewOptions { within_days: within, days, force };
            match renew(&authority, &cert, &key, &options)? {
                Renewal::NotDue { days_left, .. } => {
                    println!(
                        "{} is valid for {days_left} more days; not renewing (due within {within} days)",
                        cert.display()
                    );
                }
                Renewal::Renewed(issued) => {
                    println!(
                        "renewed {} (new relay certificate pin {}; CA pin {} unchanged)",
                        cert.display(),
                        issued.leaf_pin,
                        issued.ca_pin
                    );
                    if let Some(pid) = reload_pid {
                        reload(pid)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Sends SIGHUP to the relay so it serves the new certificate (`kill -HUP`, which keeps
/// this crate free of `unsafe` and of a signals dependency).
fn reload(pid: u32) -> Result<()> {
    if pid == 0 {
        bail!("--reload-pid 0 is not a process (is the relay running?)");
    }
    let status =
        std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().context("cannot run `kill`")?;
    if !status.success() {
        bail!("could not send SIGHUP to process {pid}: the certificate was renewed, reload the relay by hand");
    }
    eprintln!("sent SIGHUP to process {pid}");
    Ok(())
}
