//! Who must prove a second factor, and when it may be skipped: exempt and required groups,
//! trusted networks, remembered authentications and security keys. Evaluated by mfad only, in
//! this order (documented in conf/mfad.toml): groups, lock, enrolment, trusted networks,
//! remembered, security keys.

use crate::factor::security_key::SecurityKey;
use crate::store::Device;
use ipnet::IpNet;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::net::IpAddr;

/// Longest `remember_for` a site may configure: a week.
pub const MAX_REMEMBER: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Members of any of these groups never need a second factor. Wins over require_groups.
    pub exempt_groups: Vec<String>,
    /// When not empty, only members of these groups need a second factor.
    pub require_groups: Vec<String>,
    /// Logins from these networks (CIDR) need no second factor.
    pub trusted_networks: Vec<IpNet>,
    /// After a second factor, the same user from the same client address (and, where sshd
    /// exposes it, the same public key) is not asked again for this many seconds. 0: off.
    pub remember_for: u64,
    /// With `unenrolled = "enroll"`: also offer in-login enrolment outside trusted networks.
    pub enroll_from_anywhere: bool,
    /// A login whose publickey step (as sshd exposes it, `ExposeAuthInfo yes`) used one of
    /// the user's registered security keys passes the second factor without a prompt.
    pub security_key: bool,
}

/// A `[policy]` value out of its range.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy.remember_for = {0} is out of range: must be 0 to {MAX_REMEMBER} seconds")]
    RememberFor(u64),
    #[error("policy: {0:?} is not a group name")]
    NotAGroup(String),
}

impl PolicyConfig {
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.remember_for > MAX_REMEMBER {
            return Err(PolicyError::RememberFor(self.remember_for));
        }
        for g in self.exempt_groups.iter().chain(&self.require_groups) {
            if g.is_empty() || g.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(PolicyError::NotAGroup(g.clone()));
            }
        }
        Ok(())
    }

    pub fn is_trusted(&self, addr: Option<IpAddr>) -> bool {
        addr.is_some_and(|a| self.trusted_networks.iter().any(|n| n.contains(&a)))
    }
}

/// Why the groups decide what they decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRule {
    Exempt(String),
    NotRequired,
    Required,
}

pub fn group_rule(policy: &PolicyConfig, groups: &[String]) -> GroupRule {
    if let Some(g) = policy.exempt_groups.iter().find(|g| groups.contains(g)) {
        return GroupRule::Exempt(g.clone());
    }
    if !policy.require_groups.is_empty()
        && !policy.require_groups.iter().any(|g| groups.contains(g))
    {
        return GroupRule::NotRequired;
    }
    GroupRule::Required
}

/// The client's address: PAM_RHOST when it is an address, else the first field of
/// SSH_CONNECTION. IPv4-mapped IPv6 addresses count as IPv4.
pub fn client_addr(rhost: Option<&str>, ssh_connection: Option<&str>) -> Option<IpAddr> {
    rhost
        .and_then(|r| r.parse::<IpAddr>().ok())
        .or_else(|| ssh_connection.and_then(|c| c.split_whitespace().next()?.parse().ok()))
        .map(|a| a.to_canonical())
}

/// The user's registered security key that a publickey step of this login used, when
/// `[policy] security_key` is on and root (sshd) passed the auth info. A user's own process
/// (the ForceCommand helper, pamtester) can write any text there, so its word counts for
/// nothing.
pub fn security_key_used(
    policy: &PolicyConfig,
    caller_uid: u32,
    auth_info: Option<&str>,
    devices: &[Device],
) -> Option<SecurityKey> {
    if !policy.security_key || caller_uid != 0 {
        return None;
    }
    let auth_info = auth_info?;
    devices
        .iter()
        .filter_map(Device::security_key)
        .find(|k| k.used_in(auth_info))
}

/// A fingerprint of the public keys a publickey step used (from SSH_AUTH_INFO_0), or ""
/// when the login used no key.
pub fn key_fingerprint(auth_info: Option<&str>) -> String {
    let keys: Vec<&str> = auth_info
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("publickey "))
        .map(str::trim)
        .collect();
    if keys.is_empty() {
        return String::new();
    }
    let mut h = Sha256::new();
    for k in keys {
        h.update(k.as_bytes());
        h.update(b"\n");
    }
    data_encoding::HEXLOWER.encode(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PolicyConfig {
        PolicyConfig {
            exempt_groups: vec!["svc".into()],
            require_groups: vec!["users".into()],
            trusted_networks: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            ..Default::default()
        }
    }

    #[test]
    fn exempt_wins_over_required_and_required_narrows_who_is_asked() {
        let p = policy();
        assert_eq!(
            group_rule(&p, &["users".into(), "svc".into()]),
            GroupRule::Exempt("svc".into())
        );
        assert_eq!(group_rule(&p, &["users".into()]), GroupRule::Required);
        assert_eq!(group_rule(&p, &["staff".into()]), GroupRule::NotRequired);
        assert_eq!(
            group_rule(&PolicyConfig::default(), &["staff".into()]),
            GroupRule::Required
        );
    }

    #[test]
    fn trusted_networks_match_v4_v6_and_mapped_addresses() {
        let p = policy();
        assert!(p.is_trusted(client_addr(Some("10.1.2.3"), None)));
        assert!(p.is_trusted(client_addr(Some("::ffff:10.1.2.3"), None)));
        assert!(p.is_trusted(client_addr(Some("fd12::1"), None)));
        assert!(!p.is_trusted(client_addr(Some("192.0.2.1"), None)));
        assert!(!p.is_trusted(client_addr(Some("host.example.org"), None)));
        assert!(p.is_trusted(client_addr(
            Some("host.example.org"),
            Some("10.9.9.9 51000 10.0.0.1 22")
        )));
        assert!(!p.is_trusted(None));
    }

    #[test]
    fn key_fingerprints_differ_by_key_and_are_empty_without_one() {
        let a = key_fingerprint(Some("publickey ssh-ed25519 AAAAC3Nza1\n"));
        let b = key_fingerprint(Some("publickey ssh-ed25519 AAAAC3Nza2\n"));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(key_fingerprint(Some("password\n")), "");
        assert_eq!(key_fingerprint(None), "");
    }

    #[test]
    fn remember_for_is_capped() {
        let p = PolicyConfig {
            remember_for: MAX_REMEMBER + 1,
            ..Default::default()
        };
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("policy.remember_for")
        );
    }
}
