//! `ferry-cert`: make and inspect the relay's TLS certificates.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use ferry_relay::certs::{SelfSigned, pin_of_cert, read_certs};

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
    /// Print the SHA-256 public-key pin of a PEM certificate (the first in the file).
    Pin {
        /// The certificate file.
        cert: PathBuf,
    },
}

fn main() -> Result<()> {
    match Args::parse().command {
        Command::SelfSigned {
            names,
            ips,
            out,
            force,
        } => {
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
        Command::Pin { cert } => {
            let certs = read_certs(&cert)?;
            println!("{}", pin_of_cert(&certs[0])?);
        }
    }
    Ok(())
}
