//! Certificates from an ACME server (RFC 8555): Let's Encrypt, or any other.
//!
//! A relay with a publicly trusted certificate can be put in tickets as `webpki` (no pin
//! to distribute) or pinned by its leaf key like any other. This module runs one order:
//! it creates an ACME account on first use and keeps its credentials (0600) in the output
//! directory, so later runs — renewals — reuse the same account; it answers the HTTP-01
//! challenge from a small built-in HTTP listener for as long as the order takes; then it
//! writes the new key (0600) and the chain atomically, like the rest of `certs`.
//!
//! ACME talks to the outside world, so it has its own error type ([`AcmeError`]) that
//! wraps the crate's [`Error`] for the file side.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ferry_proto::CertPin;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::Error;
use crate::certs::info::CertInfo;
use crate::certs::{CERT_FILE, KEY_FILE, KeyAlg, read_private, write_file};

/// File name of the ACME account credentials inside the output directory.
pub const ACCOUNT_FILE: &str = "acme-account.json";
/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Path prefix of HTTP-01 challenge requests (RFC 8555 §8.3).
const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";
/// Longest HTTP request head the challenge listener reads.
const MAX_REQUEST: usize = 8 * 1024;
/// How long one challenge request may take to arrive.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong while obtaining a certificate over ACME.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    /// The ACME server refused a request or could not be reached.
    #[error("ACME: {0}")]
    Server(#[from] instant_acme::Error),
    /// The HTTP-01 listener could not be started.
    #[error(
        "cannot listen for the HTTP-01 challenge on {addr}: {source} (port 80 needs root or CAP_NET_BIND_SERVICE, and nothing else may use it)"
    )]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The stored account does not fit this request.
    #[error("{path}: {what}")]
    Account {
        /// The account file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The server did not validate the order.
    #[error("the ACME order failed: {0}")]
    Order(String),
    /// Reading or writing files, or making the key and request.
    #[error(transparent)]
    Files(#[from] Error),
}

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
pub async fn obtain(request: &AcmeRequest) -> Result<Obtained, AcmeError> {
    if request.domains.is_empty() {
        return Err(AcmeError::Order("give at least one --domain".into()));
    }
    std::fs::create_dir_all(&request.out).map_err(|source| Error::Write { path: request.out.clone(), source })?;
    let (account, new_account) = account(request).await?;

    let Challenge::Http01(listen) = request.challenge;
    let listener = TcpListener::bind(listen).await.map_err(|source| AcmeError::Listen { addr: listen, source })?;
    let tokens: Tokens = Arc::default();
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve_http01(listener, tokens.clone(), stop.clone()));
    let result = order(&account, request, &tokens).await;
    stop.cancel();
    let _ = server.await;
    let (chain_pem, key_pem) = result?;

    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AcmeError::Order(format!("the server sent an unreadable certificate ({e})")))?;
    let leaf = chain.first().ok_or_else(|| AcmeError::Order("the server sent no certificate".into()))?;
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
    let certs = crate::certs::read_certs(&cert)?;
    let info = CertInfo::parse(&certs[0])?;
    Ok(info.not_after <= OffsetDateTime::now_utc() + time::Duration::days(within_days.into()))
}

/// The stored account for this directory, or a new one (whose credentials are saved).
async fn account(request: &AcmeRequest) -> Result<(Account, bool), AcmeError> {
    let builder = match &request.ca_root {
        Some(root) => Account::builder_with_root(root)?,
        None => Account::builder()?,
    };
    let path = request.out.join(ACCOUNT_FILE);
    let bad = |what: String| AcmeError::Account { path: path.clone(), what };
    if path.exists() {
        let stored: serde_json::Value =
            serde_json::from_slice(&read_private(&path)?).map_err(|e| bad(format!("not an account file ({e})")))?;
        let directory = stored.get("directory").and_then(|d| d.as_str()).unwrap_or_default();
        if directory != request.directory {
            return Err(bad(format!(
                "this account belongs to {directory}, not {}; use another --out directory for another ACME server",
                request.directory
            )));
        }
        let credentials: AccountCredentials = serde_json::from_value(stored["credentials"].clone())
            .map_err(|e| bad(format!("unreadable credentials ({e})")))?;
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
    let bytes = serde_json::to_vec_pretty(&stored).map_err(|e| bad(e.to_string()))?;
    write_file(&path, &bytes, 0o600, true)?;
    Ok((account, true))
}

/// Places the order, answers its challenges and returns (chain PEM, key PEM).
async fn order(account: &Account, request: &AcmeRequest, tokens: &Tokens) -> Result<(String, String), AcmeError> {
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
            other => return Err(AcmeError::Order(format!("an authorization is {other:?}"))),
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| AcmeError::Order("the server offers no HTTP-01 challenge".into()))?;
        tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(challenge.token.clone(), challenge.key_authorization().as_str().to_owned());
        challenge.set_ready().await?;
    }
    let retry = RetryPolicy::new().timeout(request.timeout);
    let status = order.poll_ready(&retry).await?;
    if status != OrderStatus::Ready {
        let detail = order.state().error.as_ref().map(|p| p.to_string()).unwrap_or_else(|| format!("{status:?}"));
        return Err(AcmeError::Order(format!("the server did not validate the names: {detail}")));
    }

    let key = request.alg.generate()?;
    let params = rcgen::CertificateParams::new(request.domains.clone()).map_err(Error::from)?;
    let csr = params.serialize_request(&key).map_err(Error::from)?;
    order.finalize_csr(csr.der()).await?;
    let chain = order.poll_certificate(&retry).await?;
    Ok((chain, key.serialize_pem()))
}

/// Challenge token → key authorization.
type Tokens = Arc<Mutex<HashMap<String, String>>>;

/// Serves `GET /.well-known/acme-challenge/<token>` until `stop`.
async fn serve_http01(listener: TcpListener, tokens: Tokens, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    debug!("challenge listener: {e}");
                    continue;
                }
            },
        };
        let tokens = tokens.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &tokens)) => {}
            }
        });
    }
}

/// Answers one HTTP request with the key authorization for its token, or 404.
async fn answer(mut stream: TcpStream, tokens: &Tokens) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let body = match (method, target.strip_prefix(CHALLENGE_PATH)) {
        ("GET", Some(token)) => tokens.lock().unwrap_or_else(PoisonError::into_inner).get(token).cloned(),
        _ => None,
    };
    let response = match body {
        Some(body) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn challenge_listener_answers_known_tokens_only() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tokens: Tokens = Arc::default();
        tokens.lock().unwrap().insert("tok".into(), "tok.thumb".into());
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_http01(listener, tokens, stop.clone()));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/.well-known/acme-challenge/tok").await;
        assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with("\r\n\r\ntok.thumb"), "{ok}");
        assert!(get("/.well-known/acme-challenge/other").await.starts_with("HTTP/1.1 404"));
        assert!(get("/").await.starts_with("HTTP/1.1 404"));
        stop.cancel();
        server.await.unwrap();
    }
}
