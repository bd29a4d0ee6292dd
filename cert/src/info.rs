//! Reading a certificate back: names, validity, issuer and pin.
//!
//! `ferry-cert inspect` shows this to operators, and renewal needs it to know when a
//! certificate expires and which names the replacement must carry. Parsing is done with
//! `x509-parser`; the pin is computed exactly as clients compute it (see
//! [`crate::pin_of_cert`]), so what `inspect` prints is what a ticket must hold.

use std::fmt;
use std::net::IpAddr;

use ferry_proto::CertPin;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;
use crate::pin::pin_of_cert;

/// What a certificate says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject distinguished name, RFC 4514 text.
    pub subject: String,
    /// Issuer distinguished name, RFC 4514 text.
    pub issuer: String,
    /// DNS names in the subjectAltName extension.
    pub dns_names: Vec<String>,
    /// IP addresses in the subjectAltName extension.
    pub ips: Vec<IpAddr>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Whether this is a CA certificate (basic constraints `cA`).
    pub is_ca: bool,
    /// Whether subject and issuer are the same name (a root or a self-signed leaf).
    pub self_issued: bool,
    /// The public key algorithm, in words.
    pub key_alg: &'static str,
    /// Serial number, hex.
    pub serial: String,
    /// SHA-256 pin of the public key.
    pub pin: CertPin,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn parse(der: &CertificateDer<'_>) -> Result<Self, Error> {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| Error::Unparsable(e.into()))?;
        let mut dns_names = Vec::new();
        let mut ips = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) => dns_names.push((*n).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            ips.push(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        let validity = cert.validity();
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            dns_names,
            ips,
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
            is_ca: cert.is_ca(),
            self_issued: cert.subject().as_raw() == cert.issuer().as_raw(),
            key_alg: key_alg(&cert),
            serial: cert.raw_serial_as_string(),
            pin: pin_of_cert(der)?,
        })
    }

    /// Whole days from `now` until the end of validity (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }

    /// What kind of certificate this is, in words.
    pub fn kind(&self) -> &'static str {
        match (self.is_ca, self.self_issued) {
            (true, true) => "certificate authority (root)",
            (true, false) => "certificate authority (intermediate)",
            (false, true) => "self-signed relay certificate",
            (false, false) => "relay certificate signed by a CA",
        }
    }
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = OffsetDateTime::now_utc();
        let names: Vec<String> = self.dns_names.iter().cloned().chain(self.ips.iter().map(IpAddr::to_string)).collect();
        let state = if now < self.not_before {
            "NOT YET VALID".to_owned()
        } else if now > self.not_after {
            format!("EXPIRED {} days ago", -self.days_left(now))
        } else {
            format!("valid, expires in {} days", self.days_left(now))
        };
        writeln!(f, "kind:       {}", self.kind())?;
        writeln!(f, "subject:    {}", self.subject)?;
        writeln!(f, "issuer:     {}", self.issuer)?;
        if names.is_empty() {
            writeln!(f, "names:      (none)")?;
        } else {
            writeln!(f, "names:      {}", names.join(", "))?;
        }
        writeln!(f, "not before: {}", date(self.not_before))?;
        writeln!(f, "not after:  {}", date(self.not_after))?;
        writeln!(f, "status:     {state}")?;
        writeln!(f, "key:        {}", self.key_alg)?;
        writeln!(f, "serial:     {}", self.serial)?;
        write!(f, "pin:        {}", self.pin)
    }
}

/// `2026-05-01 12:00:00 UTC`.
fn date(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn key_alg(cert: &X509Certificate<'_>) -> &'static str {
    let oid = cert.public_key().algorithm.algorithm.to_id_string();
    match oid.as_str() {
        "1.2.840.10045.2.1" => "ECDSA",
        "1.3.101.112" => "Ed25519",
        "1.2.840.113549.1.1.1" => "RSA",
        _ => "other",
    }
}

/// Whether `info`'s key is Ed25519 (renewal keeps the kind of key).
pub(crate) fn is_ed25519(info: &CertInfo) -> bool {
    info.key_alg == "Ed25519"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SelfSigned;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn self_signed_is_described() {
        let made = SelfSigned::generate(&["relay.test".into(), "127.0.0.1".into()]).unwrap();
        let der = CertificateDer::from_pem_slice(made.cert_pem.as_bytes()).unwrap();
        let info = CertInfo::parse(&der).unwrap();
        assert_eq!(info.dns_names, vec!["relay.test".to_owned()]);
        assert_eq!(info.ips, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(info.pin, made.pin);
        assert!(!info.is_ca);
        assert!(info.self_issued);
        let text = info.to_string();
        assert!(text.contains("relay.test, 127.0.0.1"), "{text}");
        assert!(text.contains(&made.pin.to_string()), "{text}");
    }
}
