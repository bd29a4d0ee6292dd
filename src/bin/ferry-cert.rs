//! `ferry-cert`: make, inspect and renew the relay's TLS certificates.
//!
//! A thin layer over `ferry_cert` (and `ferry_cert::acme`): flags in, files and
//! pins out. Pins go to stdout (so scripts can capture them), everything else to stderr.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args as ClapArgs, Parser, Subcommand};
use ferry_cert::acme::{self, AcmeRequest, Challenge};
use ferry_cert::{
    CERT_FILE, CaOptions, CertAuthority, CertInfo, KEY_FILE, KeyAlg, LeafOptions, RenewOptions, Renewal, SelfSigned,
    read_certs, renew,
};

/// Provision ferry relay certificates and print the pins that go into tickets.
///
/// Self-signed (one command), an own CA (pins that survive renewal) or ACME; `pin`
/// prints the pin of any certificate, `inspect` what a certificate holds. See
/// docs/certificates.md.
// `name`: the package is `ferry`, whose name and description clap would take otherwise.
#[derive(Parser, Debug)]
#[command(name = "ferry-cert", version)]
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
    /// Obtain a certificate from an ACME server (Let's Encrypt or any RFC 8555 CA).
    ///
    /// Answers the HTTP-01 challenge itself. The account is created on first use and
    /// stored in --out, so renewals (run it again with --within) reuse it. A new key is
    /// made for every certificate: put `webpki` in tickets for a publicly trusted one.
    Acme(AcmeArgs),
}

/// Options of `ferry-cert acme`.
#[derive(ClapArgs, Debug)]
struct AcmeArgs {
    /// The ACME directory URL (default: Let's Encrypt).
    #[arg(long, conflicts_with = "staging")]
    directory: Option<String>,
    /// Use Let's Encrypt's staging directory (untrusted certificates, for trying things).
    #[arg(long)]
    staging: bool,
    /// DNS name for the certificate (repeatable).
    #[arg(long = "domain", required = true)]
    domains: Vec<String>,
    /// Contact e-mail for the ACME account (expiry notices).
    #[arg(long)]
    email: Option<String>,
    /// Directory for cert.pem, key.pem (0600) and the ACME account (reused on renewal).
    #[arg(long)]
    out: PathBuf,
    /// Serve the HTTP-01 challenge on this address (the ACME server connects to port 80
    /// of each name).
    #[arg(long = "http-01", value_name = "ADDR", default_value = "0.0.0.0:80")]
    http_01: SocketAddr,
    /// An extra root certificate (PEM) to trust for the ACME server's HTTPS, e.g. a test
    /// server such as pebble.
    #[arg(long)]
    ca_root: Option<PathBuf>,
    /// Only order when the certificate in --out is missing or expires within this many
    /// days (for a daily timer); it is then replaced.
    #[arg(long)]
    within: Option<u32>,
    /// Replace an existing certificate and key regardless.
    #[arg(long)]
    force: bool,
    /// Longest wait for validation and issuance, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    #[command(flatten)]
    key: KeyFlags,
    /// Send SIGHUP to this process (the relay) after a new certificate is written.
    #[arg(long)]
    reload_pid: Option<u32>,
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
        Command::Acme(args) => run_acme(args)?,
    }
    Ok(())
}

fn run_acme(args: AcmeArgs) -> Result<()> {
    let exists = args.out.join(CERT_FILE).exists() || args.out.join(KEY_FILE).exists();
    if exists && !args.force {
        match args.within {
            None => bail!(
                "{} already holds a certificate; pass --within DAYS to renew it when due, or --force",
                args.out.display()
            ),
            Some(days) if !acme::due(&args.out, days)? => {
                println!("{} is not due for renewal (within {days} days); nothing to do", args.out.display());
                return Ok(());
            }
            Some(_) => {}
        }
    }
    let directory = match (args.directory, args.staging) {
        (Some(url), _) => url,
        (None, true) => acme::LETS_ENCRYPT_STAGING.to_owned(),
        (None, false) => acme::LETS_ENCRYPT.to_owned(),
    };
    let request = AcmeRequest {
        directory,
        domains: args.domains,
        email: args.email,
        out: args.out,
        challenge: Challenge::Http01(args.http_01),
        ca_root: args.ca_root,
        alg: args.key.alg(),
        timeout: Duration::from_secs(args.timeout),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let obtained = runtime.block_on(acme::obtain(&request))?;
    if obtained.new_account {
        eprintln!("created an ACME account; its credentials are in {}", request.out.join(acme::ACCOUNT_FILE).display());
    }
    eprintln!(
        "wrote {} and {} (valid until {})",
        obtained.cert.display(),
        obtained.key.display(),
        obtained.not_after.date()
    );
    println!("{}", obtained.leaf_pin);
    if let Some(pid) = args.reload_pid {
        reload(pid)?;
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
