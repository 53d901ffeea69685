//! Who the system says a user is: the canonical name, whether the account exists, and its
//! groups. NSS in production (files, LDAP, sssd); a table in tests.
//!
//! Every piece of state is keyed by the canonical name NSS returns, so that with a
//! case-insensitive directory (sssd with AD) `ALICE` and `alice` are one account with one
//! lockout counter. A lookup that fails is an error, never "no groups": a group rule must
//! not be decided on a directory outage.

use crate::clock::Clock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("the user database (NSS) could not be read: {0}")]
    Lookup(String),
}

/// An account as the system knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The name as the directory spells it: the key of all of mfad's state.
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Blocking lookups (called off the async threads).
pub trait Accounts: Send + Sync {
    /// The account `name` refers to, `None` when there is none.
    fn by_name(&self, name: &str) -> Result<Option<Account>, AccountsError>;
    /// The account of `uid`, `None` when there is none.
    fn by_uid(&self, uid: u32) -> Result<Option<Account>, AccountsError>;
    /// The names of the account's groups, primary and supplementary.
    fn groups(&self, account: &Account) -> Result<Vec<String>, AccountsError>;
    /// Whether a group of this name exists (a configured group that does not is a typo).
    fn group_exists(&self, name: &str) -> Result<bool, AccountsError>;
    /// The account `name` refers to if it is at hand without asking the directory (a
    /// cache): never blocks, so it may be called on the async threads. `None`: ask
    /// [`Accounts::by_name`].
    fn kept_by_name(&self, _name: &str) -> Option<Account> {
        None
    }
    /// The account of `uid` if it is at hand without asking the directory.
    fn kept_by_uid(&self, _uid: u32) -> Option<Account> {
        None
    }
    /// The account's groups if they are at hand without asking the directory.
    fn kept_groups(&self, _account: &Account) -> Option<Vec<String>> {
        None
    }
}

/// The system's accounts, through NSS.
pub struct NssAccounts;

fn account(u: nix::unistd::User) -> Account {
    Account {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    }
}

/// getpwnam and friends report "no such entry" as 0 or one of these; anything else is a
/// failure of the directory.
fn not_found(e: nix::Error) -> bool {
    matches!(
        e,
        nix::Error::ENOENT | nix::Error::ESRCH | nix::Error::EBADF | nix::Error::EPERM
    )
}

// The one place that asks NSS (clippy's disallowed-methods keeps it so).
#[allow(clippy::disallowed_methods)]
impl Accounts for NssAccounts {
    fn by_name(&self, name: &str) -> Result<Option<Account>, AccountsError> {
        match nix::unistd::User::from_name(name) {
            Ok(u) => Ok(u.map(account)),
            Err(e) if not_found(e) => Ok(None),
            Err(e) => Err(AccountsError::Lookup(format!("getpwnam: {e}"))),
        }
    }

    fn by_uid(&self, uid: u32) -> Result<Option<Account>, AccountsError> {
        match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(u) => Ok(u.map(account)),
            Err(e) if not_found(e) => Ok(None),
            Err(e) => Err(AccountsError::Lookup(format!("getpwuid: {e}"))),
        }
    }

    fn groups(&self, account: &Account) -> Result<Vec<String>, AccountsError> {
        use nix::unistd::{Gid, Group, getgrouplist};
        let cname = std::ffi::CString::new(account.name.as_str())
            .map_err(|_| AccountsError::Lookup("a user name holds a NUL byte".into()))?;
        let gids = getgrouplist(&cname, Gid::from_raw(account.gid))
            .map_err(|e| AccountsError::Lookup(format!("getgrouplist: {e}")))?;
        let mut names = Vec::with_capacity(gids.len());
        for gid in gids {
            match Group::from_gid(gid) {
                Ok(Some(g)) => names.push(g.name),
                // A gid without a name cannot match a configured group name.
                Ok(None) => {}
                Err(e) if not_found(e) => {}
                Err(e) => return Err(AccountsError::Lookup(format!("getgrgid: {e}"))),
            }
        }
        Ok(names)
    }

    fn group_exists(&self, name: &str) -> Result<bool, AccountsError> {
        match nix::unistd::Group::from_name(name) {
            Ok(g) => Ok(g.is_some()),
            Err(e) if not_found(e) => Ok(false),
            Err(e) => Err(AccountsError::Lookup(format!("getgrnam: {e}"))),
        }
    }
}

/// The accounts NSS found, kept for a few seconds (`user_cache`): a burst of logins of the
/// same users (scp in a loop, a cluster's jobs) asks the directory once per user and period.
/// Only positive answers are kept: a user NSS does not know, or a directory that fails, is
/// asked again at the next login. At most [`CACHE_ENTRIES`] accounts; past that, the
/// expired ones go, and if none has, all.
pub struct CachedAccounts {
    inner: Arc<dyn Accounts>,
    clock: Arc<dyn Clock>,
    ttl: i64,
    names: Kept<String, Account>,
    uids: Kept<u32, Account>,
    groups: Kept<(String, u32), Vec<String>>,
}

/// Values with the time (on the clock) they are kept until.
type Kept<K, V> = Mutex<HashMap<K, (i64, V)>>;

/// The most accounts (and group lists) [`CachedAccounts`] keeps.
pub const CACHE_ENTRIES: usize = 10_000;

impl CachedAccounts {
    /// `ttl` seconds on `clock`; 0 keeps nothing.
    pub fn new(inner: Arc<dyn Accounts>, clock: Arc<dyn Clock>, ttl: u64) -> Self {
        CachedAccounts {
            inner,
            clock,
            ttl: i64::try_from(ttl).unwrap_or(i64::MAX),
            names: Mutex::new(HashMap::new()),
            uids: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
        }
    }

    fn cached<K, V>(&self, map: &Kept<K, V>, key: &K) -> Option<V>
    where
        K: std::hash::Hash + Eq,
        V: Clone,
    {
        let now = self.clock.now();
        let map = map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(key) {
            Some((until, value)) if now < *until => Some(value.clone()),
            _ => None,
        }
    }

    fn keep<K: std::hash::Hash + Eq, V>(
        &self,
        map: &Mutex<HashMap<K, (i64, V)>>,
        key: K,
        value: V,
    ) {
        if self.ttl == 0 {
            return;
        }
        let now = self.clock.now();
        let mut map = map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= CACHE_ENTRIES {
            map.retain(|_, (until, _)| now < *until);
            if map.len() >= CACHE_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, (now.saturating_add(self.ttl), value));
    }
}

impl Accounts for CachedAccounts {
    fn kept_by_name(&self, name: &str) -> Option<Account> {
        self.cached(&self.names, &name.to_string())
    }

    fn kept_by_uid(&self, uid: u32) -> Option<Account> {
        self.cached(&self.uids, &uid)
    }

    fn kept_groups(&self, account: &Account) -> Option<Vec<String>> {
        self.cached(&self.groups, &(account.name.clone(), account.gid))
    }

    fn by_name(&self, name: &str) -> Result<Option<Account>, AccountsError> {
        if let Some(account) = self.cached(&self.names, &name.to_string()) {
            return Ok(Some(account));
        }
        let found = self.inner.by_name(name)?;
        if let Some(account) = &found {
            self.keep(&self.names, name.to_string(), account.clone());
        }
        Ok(found)
    }

    fn by_uid(&self, uid: u32) -> Result<Option<Account>, AccountsError> {
        if let Some(account) = self.cached(&self.uids, &uid) {
            return Ok(Some(account));
        }
        let found = self.inner.by_uid(uid)?;
        if let Some(account) = &found {
            self.keep(&self.uids, uid, account.clone());
        }
        Ok(found)
    }

    fn groups(&self, account: &Account) -> Result<Vec<String>, AccountsError> {
        let key = (account.name.clone(), account.gid);
        if let Some(groups) = self.cached(&self.groups, &key) {
            return Ok(groups);
        }
        let groups = self.inner.groups(account)?;
        self.keep(&self.groups, key, groups.clone());
        Ok(groups)
    }

    fn group_exists(&self, name: &str) -> Result<bool, AccountsError> {
        self.inner.group_exists(name)
    }
}

/// A fixed table of accounts, for tests: optionally case-insensitive (like sssd with AD),
/// optionally failing (like a directory outage).
#[derive(Default)]
pub struct AccountTable {
    accounts: Vec<(Account, Vec<String>)>,
    case_insensitive: bool,
    failing: bool,
    failing_groups: bool,
}

impl AccountTable {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds `name` with `uid` and the group names `groups`.
    pub fn with(mut self, name: &str, uid: u32, groups: &[&str]) -> Self {
        self.accounts.push((
            Account {
                name: name.to_string(),
                uid,
                gid: uid,
            },
            groups.iter().map(|g| g.to_string()).collect(),
        ));
        self
    }
    /// Names match whatever their case, as with sssd's `case_sensitive = false`.
    pub fn case_insensitive(mut self) -> Self {
        self.case_insensitive = true;
        self
    }
    /// Every lookup fails, as when the directory is down.
    pub fn failing(mut self) -> Self {
        self.failing = true;
        self
    }
    /// Group lookups fail (users are still found), as when only the group map is down.
    pub fn failing_groups(mut self) -> Self {
        self.failing_groups = true;
        self
    }
    fn check(&self) -> Result<(), AccountsError> {
        if self.failing {
            return Err(AccountsError::Lookup("the test directory is down".into()));
        }
        Ok(())
    }
}

impl Accounts for AccountTable {
    fn by_name(&self, name: &str) -> Result<Option<Account>, AccountsError> {
        self.check()?;
        Ok(self
            .accounts
            .iter()
            .find(|(a, _)| {
                if self.case_insensitive {
                    a.name.eq_ignore_ascii_case(name)
                } else {
                    a.name == name
                }
            })
            .map(|(a, _)| a.clone()))
    }
    fn by_uid(&self, uid: u32) -> Result<Option<Account>, AccountsError> {
        self.check()?;
        Ok(self
            .accounts
            .iter()
            .find(|(a, _)| a.uid == uid)
            .map(|(a, _)| a.clone()))
    }
    fn groups(&self, account: &Account) -> Result<Vec<String>, AccountsError> {
        self.check()?;
        if self.failing_groups {
            return Err(AccountsError::Lookup("the test group map is down".into()));
        }
        Ok(self
            .accounts
            .iter()
            .find(|(a, _)| a.name == account.name)
            .map(|(_, g)| g.clone())
            .unwrap_or_default())
    }
    fn group_exists(&self, name: &str) -> Result<bool, AccountsError> {
        self.check()?;
        Ok(self
            .accounts
            .iter()
            .any(|(_, g)| g.iter().any(|n| n == name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A table that counts the lookups that reach it.
    struct Counting {
        table: AccountTable,
        names: AtomicUsize,
        uids: AtomicUsize,
        groups: AtomicUsize,
    }

    impl Accounts for Counting {
        fn by_name(&self, name: &str) -> Result<Option<Account>, AccountsError> {
            self.names.fetch_add(1, Ordering::SeqCst);
            self.table.by_name(name)
        }
        fn by_uid(&self, uid: u32) -> Result<Option<Account>, AccountsError> {
            self.uids.fetch_add(1, Ordering::SeqCst);
            self.table.by_uid(uid)
        }
        fn groups(&self, account: &Account) -> Result<Vec<String>, AccountsError> {
            self.groups.fetch_add(1, Ordering::SeqCst);
            self.table.groups(account)
        }
        fn group_exists(&self, name: &str) -> Result<bool, AccountsError> {
            self.table.group_exists(name)
        }
    }

    fn counting(table: AccountTable) -> Arc<Counting> {
        Arc::new(Counting {
            table,
            names: AtomicUsize::new(0),
            uids: AtomicUsize::new(0),
            groups: AtomicUsize::new(0),
        })
    }

    #[test]
    fn the_cache_asks_nss_once_per_user_and_period_and_never_keeps_a_miss() {
        let clock = FakeClock::new(1_000);
        let nss = counting(AccountTable::new().with("alice", 1000, &["users", "hpc"]));
        let cache = CachedAccounts::new(nss.clone(), Arc::new(clock.clone()), 5);
        // What is kept is at hand without a lookup (mfad takes it on the async threads).
        assert_eq!(cache.kept_by_name("alice"), None);
        let alice = cache.by_name("alice").unwrap().unwrap();
        assert_eq!(cache.kept_by_name("alice"), Some(alice.clone()));
        assert_eq!(cache.kept_groups(&alice), None);
        for _ in 0..3 {
            assert_eq!(cache.by_name("alice").unwrap().unwrap(), alice);
            assert_eq!(cache.groups(&alice).unwrap(), ["users", "hpc"]);
        }
        assert_eq!(nss.names.load(Ordering::SeqCst), 1);
        assert_eq!(nss.groups.load(Ordering::SeqCst), 1);
        // A name NSS does not know is asked about every time (it may be added any moment).
        assert!(cache.by_name("bob").unwrap().is_none());
        assert!(cache.by_name("bob").unwrap().is_none());
        assert_eq!(nss.names.load(Ordering::SeqCst), 3);
        // Once the period is over, NSS is asked again.
        assert_eq!(cache.kept_groups(&alice).unwrap(), ["users", "hpc"]);
        assert_eq!(cache.kept_by_name("bob"), None);
        clock.advance(5);
        assert_eq!(cache.kept_by_name("alice"), None);
        assert_eq!(cache.kept_groups(&alice), None);
        cache.by_name("alice").unwrap().unwrap();
        cache.groups(&alice).unwrap();
        assert_eq!(nss.names.load(Ordering::SeqCst), 4);
        assert_eq!(nss.groups.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_cache_keeps_an_account_by_uid_for_the_period_and_never_a_miss() {
        let clock = FakeClock::new(1_000);
        let nss = counting(AccountTable::new().with("alice", 1000, &[]));
        let cache = CachedAccounts::new(nss.clone(), Arc::new(clock.clone()), 5);
        assert_eq!(cache.kept_by_uid(1000), None);
        let alice = cache.by_uid(1000).unwrap().unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(cache.kept_by_uid(1000), Some(alice.clone()));
        for _ in 0..3 {
            assert_eq!(cache.by_uid(1000).unwrap().unwrap(), alice);
        }
        assert_eq!(nss.uids.load(Ordering::SeqCst), 1);
        // A uid without an account is asked about every time.
        assert!(cache.by_uid(4242).unwrap().is_none());
        assert!(cache.by_uid(4242).unwrap().is_none());
        assert_eq!(nss.uids.load(Ordering::SeqCst), 3);
        clock.advance(5);
        assert_eq!(cache.kept_by_uid(1000), None);
        cache.by_uid(1000).unwrap().unwrap();
        assert_eq!(nss.uids.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_failing_directory_is_never_cached_and_user_cache_0_keeps_nothing() {
        let clock = FakeClock::new(1_000);
        let failing = CachedAccounts::new(
            Arc::new(AccountTable::new().with("alice", 1000, &[]).failing()),
            Arc::new(clock.clone()),
            5,
        );
        assert!(failing.by_name("alice").is_err());
        assert!(failing.by_name("alice").is_err());
        let nss = counting(AccountTable::new().with("alice", 1000, &[]));
        let off = CachedAccounts::new(nss.clone(), Arc::new(clock), 0);
        off.by_name("alice").unwrap().unwrap();
        off.by_name("alice").unwrap().unwrap();
        assert_eq!(nss.names.load(Ordering::SeqCst), 2);
        assert_eq!(off.kept_by_name("alice"), None);
    }

    #[test]
    fn nss_knows_root_by_name_and_uid_and_not_a_made_up_name() {
        let root = NssAccounts.by_name("root").unwrap().unwrap();
        assert_eq!((root.name.as_str(), root.uid), ("root", 0));
        assert_eq!(NssAccounts.by_uid(0).unwrap().unwrap().name, "root");
        assert!(NssAccounts.by_name("no-such-user-mfa-x").unwrap().is_none());
        assert!(
            NssAccounts
                .groups(&root)
                .unwrap()
                .contains(&"root".to_string())
        );
    }

    #[test]
    fn a_case_insensitive_table_gives_the_canonical_name() {
        let t = AccountTable::new()
            .with("alice", 1000, &["users"])
            .case_insensitive();
        assert_eq!(t.by_name("ALICE").unwrap().unwrap().name, "alice");
        assert!(
            AccountTable::new()
                .with("alice", 1000, &[])
                .by_name("ALICE")
                .unwrap()
                .is_none()
        );
        assert!(AccountTable::new().failing().by_name("alice").is_err());
    }
}
