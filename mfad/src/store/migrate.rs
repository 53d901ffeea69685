//! Copying a node's state into another store (`mfad --migrate-store`): the way from one
//! host's SQLite file to a cluster's PostgreSQL database, all or nothing.
//!
//! Several nodes that each kept their own SQLite file are merged one after the other. What
//! wins when two nodes know the same thing, and why:
//! - a device (the same user and kind, and the same secret for an app or token, or the same
//!   number or push target): one device; its spent TOTP step or next HOTP counter is the
//!   larger one, so a code spent on any node stays spent;
//! - failure counts are summed (an attacker who spread guesses over the nodes has made them
//!   all), and the later lock is kept;
//! - bypass and SMS codes: the same code (same salt and keyed hash) is one code, spent if it
//!   was spent anywhere; different codes are all kept;
//! - remembered logins are kept, each until its later end;
//! - a user's default device: the target's, else the first node's that had one.

use super::backend::{DeviceRecord, Dump, DumpedCode};
use super::{Store, StoreError};
use std::collections::HashMap;

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateReport {
    pub users: usize,
    pub devices: usize,
    /// Devices the target already had (counters merged).
    pub devices_merged: usize,
    pub bypass_codes: usize,
    pub remembered: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the target store already holds state ({0} users); add --merge to merge this node's \
         state into it"
    )]
    NotEmpty(usize),
}

/// Copies everything `source` holds into `target`, in one transaction on the target. An
/// empty target gets a copy; a non-empty one is refused unless `merge`, and then gets the
/// merge the module documentation describes. Both stores must use the same store key.
pub fn migrate(
    source: &mut Store,
    target: &mut Store,
    merge: bool,
) -> Result<MigrateReport, MigrateError> {
    let incoming = source.backend().dump()?;
    if !target.backend().is_empty()? {
        if !merge {
            let users = target.backend().user_summaries()?.len();
            return Err(MigrateError::NotEmpty(users));
        }
        let existing = target.backend().dump()?;
        let (merged, devices_merged) = merged(target, existing, &incoming)?;
        target.backend().load(&merged, true)?;
        return Ok(report(&incoming, devices_merged));
    }
    target.backend().load(&incoming, false)?;
    Ok(report(&incoming, 0))
}

fn report(d: &Dump, devices_merged: usize) -> MigrateReport {
    let mut users: Vec<&str> = d.users.iter().map(|u| u.0.as_str()).collect();
    users.extend(d.devices.iter().map(|(u, _)| u.as_str()));
    users.extend(d.bypass_codes.iter().map(|c| c.user.as_str()));
    users.sort_unstable();
    users.dedup();
    MigrateReport {
        users: users.len(),
        devices: d.devices.len(),
        devices_merged,
        bypass_codes: d.bypass_codes.len(),
        remembered: d.remembered.len(),
    }
}

/// Whether two stored devices of `user` are the same device: same kind, and the same secret
/// (opened with the store key: sealing is randomized) or the same address.
fn same_device(
    store: &Store,
    user: &str,
    a: &DeviceRecord,
    b: &DeviceRecord,
) -> Result<bool, StoreError> {
    if a.kind != b.kind {
        return Ok(false);
    }
    match (&a.sealed_secret, &b.sealed_secret) {
        (Some(x), Some(y)) => {
            let x = store.key.open(x, user).ok_or(StoreError::WrongKey)?;
            let y = store.key.open(y, user).ok_or(StoreError::WrongKey)?;
            Ok(*x == *y)
        }
        (None, None) => Ok(a.address.is_some() && a.address == b.address),
        _ => Ok(false),
    }
}

fn merge_codes(into: &mut Vec<DumpedCode>, incoming: &[DumpedCode]) {
    for c in incoming {
        match into
            .iter_mut()
            .find(|k| k.user == c.user && k.salt == c.salt && k.tag == c.tag)
        {
            Some(k) => {
                k.used_at = match (k.used_at, c.used_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                k.time = k.time.max(c.time);
            }
            None => into.push(c.clone()),
        }
    }
}

/// `existing` with `incoming` merged in; also returns how many devices were matched.
fn merged(store: &Store, mut existing: Dump, incoming: &Dump) -> Result<(Dump, usize), StoreError> {
    let mut users: HashMap<String, (u32, Option<i64>)> = existing
        .users
        .drain(..)
        .map(|(n, f, l)| (n, (f, l)))
        .collect();
    for (name, failures, locked) in &incoming.users {
        let e = users.entry(name.clone()).or_insert((0, None));
        e.0 = e.0.saturating_add(*failures);
        e.1 = match (e.1, *locked) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    let mut names: Vec<_> = users.into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    existing.users = names.into_iter().map(|(n, (f, l))| (n, f, l)).collect();

    let mut matched = 0;
    for (user, d) in &incoming.devices {
        let mut found = None;
        for (i, (u, e)) in existing.devices.iter().enumerate() {
            if u == user && same_device(store, user, e, d)? {
                found = Some(i);
                break;
            }
        }
        match found {
            Some(i) => {
                let e = &mut existing.devices[i].1;
                e.counter = e.counter.max(d.counter);
                matched += 1;
            }
            None => {
                let has_default = existing
                    .devices
                    .iter()
                    .any(|(u, e)| u == user && e.is_default);
                let mut d = d.clone();
                d.is_default = d.is_default && !has_default;
                existing.devices.push((user.clone(), d));
            }
        }
    }
    merge_codes(&mut existing.bypass_codes, &incoming.bypass_codes);
    merge_codes(&mut existing.sms_codes, &incoming.sms_codes);
    for r in &incoming.remembered {
        match existing
            .remembered
            .iter_mut()
            .find(|k| k.user == r.user && k.scope == r.scope && k.addr == r.addr && k.key == r.key)
        {
            Some(k) => k.until = k.until.max(r.until),
            None => existing.remembered.push(r.clone()),
        }
    }
    Ok((existing, matched))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factor::bypass;
    use crate::factor::totp::TotpParams;
    use crate::sealing::StoreKey;
    use crate::store::RememberScope;
    use crate::store::sqlite::SqliteBackend;
    use std::sync::Arc;

    fn params() -> TotpParams {
        TotpParams::default()
    }

    fn stores(n: usize) -> Vec<Store> {
        let key = Arc::new(StoreKey::generate().unwrap());
        (0..n)
            .map(|_| {
                let b = SqliteBackend::open_in_memory(&key).unwrap();
                Store::from_backend(Box::new(b), Arc::clone(&key)).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_copy_into_an_empty_store_keeps_everything_and_spent_codes_stay_spent() {
        let mut s = stores(2);
        let (a, b) = s.split_at_mut(1);
        let (node, target) = (&mut a[0], &mut b[0]);
        let id = node
            .add_totp_device("ann", "app", b"secret-ann", params(), 100, 0)
            .unwrap();
        assert!(node.spend_totp_step(id, 105).unwrap());
        let (shown, stored) = bypass::generate(&crate::random::OsRandom);
        node.replace_bypass_codes("ann", &stored, 0).unwrap();
        let spent = node.unused_bypass_codes("ann").unwrap()[0].id;
        assert!(node.spend_bypass_code(spent, 5).unwrap());
        node.record_failure("bob", 10, 10, 60).unwrap();
        node.lock_until("carl", 5000).unwrap();
        node.remember("ann", RememberScope::Sshd, "192.0.2.7", "", 0, 900)
            .unwrap();

        let report = migrate(node, target, false).unwrap();
        assert_eq!(report.devices, 1);
        assert_eq!(report.users, 3);
        let devices = target.devices("ann").unwrap();
        assert_eq!(devices.len(), 1);
        let otp = devices[0].otp.as_ref().unwrap();
        assert_eq!(
            &otp.secret[..],
            b"secret-ann",
            "the secret opens with the same key"
        );
        assert!(devices[0].is_default);
        let tid = devices[0].id;
        assert!(
            !target.spend_totp_step(tid, 105).unwrap(),
            "step 105 was spent"
        );
        assert!(target.spend_totp_step(tid, 106).unwrap());
        let codes = target.bypass_codes("ann").unwrap();
        assert_eq!(codes.len(), bypass::COUNT);
        assert!(
            codes[0].used,
            "the spent bypass code is spent in the target"
        );
        assert!(target.code_matches(&codes[1].code, &shown[1]));
        assert_eq!(target.lock_state("bob").unwrap().failures, 1);
        assert_eq!(target.lock_state("carl").unwrap().locked_until, Some(5000));
        assert!(
            target
                .is_remembered("ann", RememberScope::Sshd, "192.0.2.7", "", 10)
                .unwrap()
        );
    }

    #[test]
    fn a_non_empty_target_is_refused_unless_merging_and_nothing_changes() {
        let mut s = stores(2);
        let (a, b) = s.split_at_mut(1);
        let (node, target) = (&mut a[0], &mut b[0]);
        node.add_totp_device("ann", "app", b"k1", params(), 1, 0)
            .unwrap();
        target
            .add_totp_device("zed", "app", b"k2", params(), 1, 0)
            .unwrap();
        let before = target.backend().dump().unwrap();
        assert!(matches!(
            migrate(node, target, false),
            Err(MigrateError::NotEmpty(1))
        ));
        assert_eq!(target.backend().dump().unwrap(), before);
    }

    #[test]
    fn merging_two_nodes_keeps_the_larger_counter_sums_failures_and_keeps_later_locks() {
        let mut s = stores(3);
        let (first, rest) = s.split_at_mut(1);
        let (second, target) = rest.split_at_mut(1);
        let (n1, n2, target) = (&mut first[0], &mut second[0], &mut target[0]);
        // The same app enrolled through a restore on both nodes, used on each.
        let d1 = n1
            .add_totp_device("ann", "app", b"same-secret", params(), 100, 0)
            .unwrap();
        let d2 = n2
            .add_totp_device("ann", "app", b"same-secret", params(), 100, 0)
            .unwrap();
        assert!(n1.spend_totp_step(d1, 120).unwrap());
        assert!(n2.spend_totp_step(d2, 130).unwrap());
        // A second, different app only on node 2.
        n2.add_totp_device("ann", "tablet", b"other", params(), 1, 0)
            .unwrap();
        for _ in 0..3 {
            n1.record_failure("bob", 10, 10, 60).unwrap();
        }
        for _ in 0..4 {
            n2.record_failure("bob", 10, 10, 60).unwrap();
        }
        n1.lock_until("carl", 5000).unwrap();
        n2.lock_until("carl", 7000).unwrap();
        // The same bypass codes on both (one backup restored twice); spent on node 2 only.
        let (shown, stored) = bypass::generate(&crate::random::OsRandom);
        n1.replace_bypass_codes("ann", &stored, 0).unwrap();
        let dump = n1.backend().dump().unwrap();
        n2.backend()
            .load(
                &Dump {
                    bypass_codes: dump.bypass_codes,
                    ..Dump::default()
                },
                false,
            )
            .unwrap();
        let id = n2.unused_bypass_codes("ann").unwrap()[2].id;
        assert!(n2.spend_bypass_code(id, 9).unwrap());

        migrate(n1, target, false).unwrap();
        let report = migrate(n2, target, true).unwrap();
        assert_eq!(report.devices_merged, 1);

        let devices = target.devices("ann").unwrap();
        assert_eq!(devices.len(), 2, "the same app once, the tablet added");
        let app = devices
            .iter()
            .find(|d| d.otp.as_ref().unwrap().secret[..] == b"same-secret"[..])
            .unwrap();
        assert_eq!(app.otp.as_ref().unwrap().counter, 130);
        assert!(!target.spend_totp_step(app.id, 125).unwrap());
        assert_eq!(
            devices.iter().filter(|d| d.is_default).count(),
            1,
            "one default"
        );
        assert_eq!(target.lock_state("bob").unwrap().failures, 7);
        assert_eq!(target.lock_state("carl").unwrap().locked_until, Some(7000));
        let codes = target.bypass_codes("ann").unwrap();
        assert_eq!(codes.len(), bypass::COUNT, "the same codes once");
        assert!(codes[2].used, "spent on node 2, spent after the merge");
        assert!(target.code_matches(&codes[2].code, &shown[2]));
        assert_eq!(codes.iter().filter(|c| c.used).count(), 1);
    }
}
