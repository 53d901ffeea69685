//! `mfad --check-config`: what parsing cannot see. A config can parse and still fail at
//! start (a TLS file that is missing) or fail open (a typo in `require_groups` names a group
//! nobody is in, so nobody is asked for a second factor). Errors stop the check (exit 2);
//! warnings are printed and the check passes.

use crate::accounts::Accounts;
use crate::config::{Config, StoreLocation};
use std::path::Path;

/// What the check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// The directories the shipped unit (packaging/mfad.service) lets mfad write.
const UNIT_WRITABLE: &[&str] = &["/var/lib/mfa", "/run/mfa"];

/// Checks `config` against the system: groups through `accounts`, files on disk.
pub fn check(config: &Config, accounts: &dyn Accounts) -> Findings {
    let mut f = Findings::default();
    let policy = &config.policy;
    for (key, groups) in [
        ("policy.require_groups", &policy.require_groups),
        ("policy.exempt_groups", &policy.exempt_groups),
    ] {
        for g in groups {
            match accounts.group_exists(g) {
                Ok(true) => {}
                Ok(false) => f.errors.push(format!(
                    "{key}: there is no group {g:?} (a misspelt group in require_groups \
                     asks nobody for a second factor)"
                )),
                Err(e) => f.warnings.push(format!(
                    "{key}: cannot look group {g:?} up now ({e}); check it exists"
                )),
            }
        }
    }
    for net in &policy.trusted_networks {
        if net.trunc() != *net {
            f.warnings.push(format!(
                "policy.trusted_networks: {net} has host bits set; it means {} (write that)",
                net.trunc()
            ));
        }
    }
    let writable = |p: &Path| UNIT_WRITABLE.iter().any(|d| p.starts_with(d));
    if config.location == StoreLocation::Sqlite && !writable(&config.database) {
        f.warnings.push(format!(
            "database {} is outside {}: the shipped systemd unit lets mfad write only there \
             (add the directory to ReadWritePaths= in a drop-in)",
            config.database.display(),
            UNIT_WRITABLE.join(" and ")
        ));
    }
    if !writable(&config.socket) {
        f.warnings.push(format!(
            "socket {} is outside {}: the shipped systemd unit lets mfad write only there",
            config.socket.display(),
            UNIT_WRITABLE.join(" and ")
        ));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::AccountTable;

    fn table() -> AccountTable {
        AccountTable::new().with("alice", 1000, &["staff", "hpc-users"])
    }

    fn config(toml: &str) -> Config {
        Config::parse(toml, Path::new("/etc/mfa/mfad.toml")).unwrap()
    }

    #[test]
    fn a_misspelt_group_is_an_error_and_a_real_one_is_not() {
        let c = config("[policy]\nrequire_groups = [\"hpc-user\"]\nexempt_groups = [\"staff\"]\n");
        let f = check(&c, &table());
        assert_eq!(f.errors.len(), 1, "{f:?}");
        assert!(f.errors[0].contains("\"hpc-user\""), "{f:?}");
        assert!(f.errors[0].starts_with("policy.require_groups"), "{f:?}");
        let c = config("[policy]\nrequire_groups = [\"hpc-users\"]\n");
        assert_eq!(check(&c, &table()), Findings::default());
    }

    #[test]
    fn a_network_with_host_bits_is_a_warning_naming_what_it_means() {
        let c = config("[policy]\ntrusted_networks = [\"10.0.0.1/8\", \"192.0.2.0/24\"]\n");
        let f = check(&c, &table());
        assert!(f.errors.is_empty());
        assert_eq!(f.warnings.len(), 1, "{f:?}");
        assert!(f.warnings[0].contains("10.0.0.1/8") && f.warnings[0].contains("10.0.0.0/8"));
    }

    #[test]
    fn a_database_the_unit_cannot_write_is_a_warning() {
        let c = config("database = \"/srv/mfa/mfa.db\"\n");
        let f = check(&c, &table());
        assert!(
            f.warnings.iter().any(|w| w.contains("/srv/mfa/mfa.db")),
            "{f:?}"
        );
        assert_eq!(check(&config(""), &table()), Findings::default());
    }
}
