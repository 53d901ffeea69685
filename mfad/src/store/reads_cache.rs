//! The SQLite backend's copy of recent logins' reads ([`Backend::login_reads`]: the lock,
//! the devices, the bypass codes), kept only while the database stays as it was when they
//! were read.
//!
//! Every entry carries the database's [`Stamp`] at its read: SQLite's `PRAGMA data_version`
//! (which moves when another connection, any process, commits: the tests' and the
//! benchmark's harnesses, an administrator's `sqlite3`) and the shared connection's
//! `sqlite3_total_changes` (which moves with each row mfad itself inserts, updates or
//! deletes, whatever the table; even in a transaction rolled back). A read whose stamp
//! differs from the copy's throws the whole copy away: whichever user's rows changed, and
//! however, no login is ever answered from rows older than the database's last change.
//! The login history lives in a database of its own, so its writes leave the copy be.
//!
//! What is kept is what the store holds: secrets stay sealed. A login that asks whether it
//! is remembered (`[policy] remember_for`) reads the store as before: the answer depends on
//! the time as well as on the rows.
//!
//! [`Backend::login_reads`]: super::backend::Backend::login_reads

use super::backend::LoginReads;
use std::collections::HashMap;

/// The most users kept: past it the copy starts again (a few hundred bytes each).
pub(crate) const MAX_USERS: usize = 4096;

/// Where the database stood when rows were read (see the module's notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// `PRAGMA data_version`, read in the same read transaction as the rows.
    pub(crate) version: i64,
    /// `sqlite3_total_changes` of the shared connection.
    pub(crate) changes: u64,
}

#[derive(Default)]
pub(crate) struct ReadsCache {
    stamp: Option<Stamp>,
    users: HashMap<String, LoginReads>,
    /// Reads answered from the copy (tests look).
    pub(crate) hits: u64,
}

impl ReadsCache {
    /// `user`'s reads if they were kept while the database stood at `now`.
    pub(crate) fn get(&mut self, user: &str, now: Stamp) -> Option<LoginReads> {
        self.at(now);
        let found = self.users.get(user).cloned();
        self.hits += u64::from(found.is_some());
        found
    }

    /// Whether `user`'s reads may be kept for the database as it stands after `changes` of
    /// the shared connection's own (`sqlite3_total_changes`): false is sure, true still
    /// needs [`ReadsCache::get`] with the database's whole stamp.
    pub(crate) fn may_have(&self, user: &str, changes: u64) -> bool {
        self.stamp.is_some_and(|s| s.changes == changes) && self.users.contains_key(user)
    }

    /// Keeps `reads`, read from the database as it stood at `at`.
    pub(crate) fn put(&mut self, user: &str, at: Stamp, reads: &LoginReads) {
        self.at(at);
        if self.users.len() >= MAX_USERS {
            self.users.clear();
        }
        self.users.insert(user.to_string(), reads.clone());
    }

    /// Forgets everything read before the database reached `now`.
    fn at(&mut self, now: Stamp) {
        if self.stamp != Some(now) {
            self.users.clear();
            self.stamp = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LockState;

    fn locked(until: i64) -> LoginReads {
        LoginReads {
            lock: LockState {
                failures: 0,
                locked_until: Some(until),
            },
            ..LoginReads::default()
        }
    }

    #[test]
    fn a_copy_is_given_only_while_the_database_stands_where_it_was_read() {
        let mut c = ReadsCache::default();
        let s = |version, changes| Stamp { version, changes };
        assert!(c.get("alice", s(1, 0)).is_none());
        c.put("alice", s(1, 0), &locked(5));
        c.put("bob", s(1, 0), &locked(6));
        assert_eq!(c.get("alice", s(1, 0)).unwrap().lock.locked_until, Some(5));
        // Another process committed: nobody's copy holds.
        assert!(c.get("bob", s(2, 0)).is_none());
        c.put("bob", s(2, 0), &locked(7));
        assert_eq!(c.get("bob", s(2, 0)).unwrap().lock.locked_until, Some(7));
        // mfad changed a row itself.
        assert!(c.get("bob", s(2, 1)).is_none());
        assert_eq!(c.hits, 2);
    }

    #[test]
    fn the_copy_may_have_a_user_only_when_kept_and_no_own_change_came_since() {
        let mut c = ReadsCache::default();
        let s = |version, changes| Stamp { version, changes };
        assert!(!c.may_have("alice", 0));
        c.put("alice", s(1, 3), &locked(5));
        assert!(c.may_have("alice", 3));
        assert!(!c.may_have("bob", 3));
        // mfad changed a row since: the copy is sure not to answer.
        assert!(!c.may_have("alice", 4));
        // Another process's commit is seen only with the whole stamp.
        assert!(c.may_have("alice", 3));
        assert!(c.get("alice", s(2, 3)).is_none());
        assert!(!c.may_have("alice", 3));
    }

    #[test]
    fn the_copy_holds_a_bounded_number_of_users() {
        let mut c = ReadsCache::default();
        let at = Stamp {
            version: 1,
            changes: 0,
        };
        for i in 0..MAX_USERS + 10 {
            c.put(&format!("u{i}"), at, &LoginReads::default());
        }
        assert!(c.users.len() <= MAX_USERS);
        assert!(c.get(&format!("u{}", MAX_USERS + 9), at).is_some());
    }
}
