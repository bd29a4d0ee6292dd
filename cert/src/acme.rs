//! Certificates from an ACME server (RFC 8555): Let's Encrypt, or any other.
//!
//! A relay with a publicly trusted certificate can be put in tickets as `webpki` (no pin
//! to distribute) or pinned by its leaf key like any other. This module runs one order:
//! it creates an ACME account on first use and keeps its credentials (0600) in the output
//! directory, so later runs — renewals — reuse the same account; it answers the HTTP-01
//! challenge from a small HTTP listener (`http01`) for as long as the order takes; then
//! it writes the new key (0600) and the chain atomically, like the rest of the crate.

mod http01;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_proto::CertPin;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use tokio::net::TcpListener;

use self::http01::{Http01Server, Limits, Tokens};
use crate::Error;
use crate::files::{CERT_FILE, KEY_FILE, read_private, write_file};
use crate::identity::read_certs;
use crate::info::CertInfo;
use crate::keys::KeyAlg;

/// File name of the ACME account credentials inside the output directory.
pub const ACCOUNT_FILE: &str = "acme-account.json";
/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// How the server is shown that we control the names.
#[derive(Clone, Copy, Debug)]
pub enum Challenge {
    /// HTTP-01: serve the key authorization over plain HTTP on this address (the server
    /// connects to port 80 of each name; forward it here if this is not port 80).
    Http01(SocketAddr),
}

/// One certificate order.
#[derive(Clone, Debug)]
pub struct AcmeRequest {
    /// The ACME directory URL.
    pub directory: String,
    /// Names for the certificate: DNS names, or IP addresses where the server allows.
    pub domains: Vec<String>,
    /// Contact e-mail for the account (expiry notices), if any.
    pub email: Option<String>,
    /// Directory for `cert.pem`, `key.pem` and the account credentials.
    pub out: PathBuf,
    /// How to answer the challenge.
    pub challenge: Challenge,
    /// An extra root certificate (PEM) to trust for the ACME server's own HTTPS (a test
    /// server such as pebble); `None` uses the system's roots.
    pub ca_root: Option<PathBuf>,
    /// Kind of key for the certificate.
    pub alg: KeyAlg,
    /// Longest wait for validation and for the certificate.
    pub timeout: Duration,
}

/// What [`obtain`] wrote.
#[derive(Debug)]
pub struct Obtained {
    /// The chain (leaf first).
    pub cert: PathBuf,
    /// The key (0600).
    pub key: PathBuf,
    /// Pin of the new certificate's key.
    pub leaf_pin: CertPin,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Whether a new ACME account was created (else the stored one was used).
    pub new_account: bool,
}

/// Runs one order and writes `cert.pem` and `key.pem` into `request.out`, replacing any
/// that are there (decide beforehand whether that is wanted; see [`due`]).
pub async fn obtain(request: &AcmeRequest) -> Result<Obtained, Error> {
    if request.domains.is_empty() {
        return Err(Error::NoDomains);
    }
    crate::files::create_dir(&request.out)?;
    let (account, new_account) = account(request).await?;

    let Challenge::Http01(listen) = request.challenge;
    let listener = TcpListener::bind(listen).await.map_err(|source| Error::Listen { addr: listen, source })?;
    let tokens = Tokens::default();
    let server = Http01Server::spawn(listener, tokens.clone(), Limits::default());
    let result = order(&account, request, &tokens).await;
    server.shutdown().await;
    let (chain_pem, key_pem) = result?;

    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::AcmeChain)?;
    let leaf = chain.first().ok_or(Error::AcmeNoCertificate)?;
    let info = CertInfo::parse(leaf)?;
    let (cert, key) = (request.out.join(CERT_FILE), request.out.join(KEY_FILE));
    write_file(&key, key_pem.as_bytes(), 0o600, true)?;
    write_file(&cert, chain_pem.as_bytes(), 0o644, true)?;
    Ok(Obtained { cert, key, leaf_pin: info.pin, not_after: info.not_after, new_account })
}

/// Whether the certificate in `dir` is missing or expires within `within_days`.
pub fn due(dir: &Path, within_days: u32) -> Result<bool, Error> {
    let cert = dir.join(CERT_FILE);
    if !cert.exists() {
        return Ok(true);
    }
    let certs = read_certs(&cert)?;
    let info = CertInfo::parse(&certs[0])?;
    Ok(info.not_after <= OffsetDateTime::now_utc() + time::Duration::days(within_days.into()))
}

/// The stored account for this directory, or a new one (whose credentials are saved).
async fn account(request: &AcmeRequest) -> Result<(Account, bool), Error> {
    let builder = match &request.ca_root {
        Some(root) => Account::builder_with_root(root)?,
        None => Account::builder()?,
    };
    let path = request.out.join(ACCOUNT_FILE);
    let bad = |source| Error::AccountFile { path: path.clone(), source };
    if path.exists() {
        let stored: serde_json::Value = serde_json::from_slice(&read_private(&path)?).map_err(bad)?;
        let directory = stored.get("directory").and_then(|d| d.as_str()).unwrap_or_default();
        if directory != request.directory {
            return Err(Error::AccountServer {
                path: path.clone(),
                stored: directory.to_owned(),
                requested: request.directory.clone(),
            });
        }
        let credentials: AccountCredentials = serde_json::from_value(stored["credentials"].clone()).map_err(bad)?;
        return Ok((builder.from_credentials(credentials).await?, false));
    }
    let contact = request.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder
        .create(
            &NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false },
            request.directory.clone(),
            None,
        )
        .await?;
    let stored = serde_json::json!({ "directory": request.directory, "credentials": credentials });
    let bytes = serde_json::to_vec_pretty(&stored).map_err(bad)?;
    write_file(&path, &bytes, 0o600, true)?;
    Ok((account, true))
}

/// Places the order, answers its challenges and returns (chain PEM, key PEM).
async fn order(account: &Account, request: &AcmeRequest, tokens: &Tokens) -> Result<(String, String), Error> {
    let identifiers: Vec<Identifier> = request
        .domains
        .iter()
        .map(|d| match d.parse::<IpAddr>() {
            Ok(ip) => Identifier::Ip(ip),
            Err(_) => Identifier::Dns(d.clone()),
        })
        .collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(Error::Authorization(other)),
        }
        let mut challenge = authz.challenge(ChallengeType::Http01).ok_or(Error::NoHttp01)?;
        tokens.insert(challenge.token.clone(), challenge.key_authorization().as_str().to_owned());
        challenge.set_ready().await?;
    }
    let retry = RetryPolicy::new().timeout(request.timeout);
    let status = order.poll_ready(&retry).await?;
    if status != OrderStatus::Ready {
        return Err(Error::NotValidated { status, problem: order.state().error.clone() });
    }

    let key = request.alg.generate()?;
    let params = rcgen::CertificateParams::new(request.domains.clone())?;
    let csr = params.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await?;
    let chain = order.poll_certificate(&retry).await?;
    Ok((chain, key.serialize_pem()))
}
