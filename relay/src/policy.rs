//! Who may register and at which bandwidth tier: the reloadable access rules.
//!
//! Open mode admits any host that proves its key; closed mode also wants a registration
//! token or an allow-listed host id. Tokens are kept only as SHA-256 digests (tokens are
//! long random strings, so a fast hash is enough; the config file never holds a usable
//! token). A host's tier comes from its token, else its host-id rule, else the default.

use std::sync::Arc;

use ferry_proto::{HostId, RefuseReason};

use crate::pacing::Tier;

/// One registration token (stored hashed).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRule {
    /// A label for the operator (never logged with the token).
    pub name: String,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// Tier for hosts registering with this token.
    pub tier: Option<String>,
}

/// One host-id rule: allow-list entry and/or tier assignment.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRule {
    /// The host.
    pub id: HostId,
    /// Tier for this host.
    pub tier: Option<String>,
}

/// Access rules and tiers.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Closed mode: a host needs a valid token or an allow-listed id.
    pub closed: bool,
    /// Registration tokens.
    pub tokens: Vec<TokenRule>,
    /// Host-id rules.
    pub hosts: Vec<HostRule>,
    /// Named tiers.
    pub tiers: Vec<Tier>,
    /// The tier of hosts no rule names.
    pub default_tier: String,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            closed: false,
            tokens: Vec::new(),
            hosts: Vec::new(),
            tiers: vec![Tier::unlimited()],
            default_tier: "unlimited".into(),
        }
    }
}

/// SHA-256 of a token, as stored in the config.
pub fn hash_token(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl Policy {
    /// Decides whether `host` may register (with `token`), and at which tier.
    pub(crate) fn admit(&self, host: &HostId, token: Option<&str>) -> Result<Arc<Tier>, RefuseReason> {
        // Digests are compared, not tokens: how long a comparison takes says nothing
        // about the token itself.
        let token_rule = token.map(hash_token).and_then(|digest| self.tokens.iter().find(|rule| rule.sha256 == digest));
        let host_rule = self.hosts.iter().find(|rule| &rule.id == host);
        if self.closed && token_rule.is_none() && host_rule.is_none() {
            return Err(RefuseReason::NotAllowed);
        }
        let tier_name = token_rule
            .and_then(|r| r.tier.as_deref())
            .or_else(|| host_rule.and_then(|r| r.tier.as_deref()))
            .unwrap_or(&self.default_tier);
        Ok(Arc::new(self.tier(tier_name).cloned().unwrap_or_else(Tier::unlimited)))
    }

    /// The tier called `name`.
    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::PublicKey;

    fn tier(name: &str, bits: Option<u64>) -> Tier {
        Tier { name: name.into(), rate_bits_per_sec: bits, burst_bytes: 256 * 1024, quota: None }
    }

    fn policy(closed: bool) -> Policy {
        Policy {
            closed,
            tokens: vec![TokenRule { name: "alice".into(), sha256: hash_token("s3cret"), tier: Some("plus".into()) }],
            hosts: vec![HostRule { id: PublicKey([1; 32]), tier: None }],
            tiers: vec![tier("free", Some(2_000_000)), tier("plus", Some(10_000_000))],
            default_tier: "free".into(),
        }
    }

    #[test]
    fn closed_mode_needs_a_token_or_an_allow_listed_id() {
        let p = policy(true);
        assert_eq!(p.admit(&PublicKey([9; 32]), None), Err(RefuseReason::NotAllowed));
        assert_eq!(p.admit(&PublicKey([9; 32]), Some("wrong")), Err(RefuseReason::NotAllowed));
        assert_eq!(p.admit(&PublicKey([9; 32]), Some("s3cret")).unwrap().name, "plus");
        assert_eq!(p.admit(&PublicKey([1; 32]), None).unwrap().name, "free");
    }

    #[test]
    fn open_mode_admits_anyone_at_the_default_tier() {
        let p = policy(false);
        assert_eq!(p.admit(&PublicKey([9; 32]), None).unwrap().name, "free");
        assert_eq!(p.admit(&PublicKey([9; 32]), Some("s3cret")).unwrap().name, "plus");
    }
}
