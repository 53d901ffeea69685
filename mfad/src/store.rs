//! The SQLite store: enrolled devices, bypass codes, failure counters and lockouts.
//!
//! Every write is one transaction. Spending a code is a conditional UPDATE whose row count
//! says whether this caller won, so two logins racing on one code cannot both succeed.

use crate::factor::bypass::{self, StoredCode};
use crate::factor::totp::{HashAlgorithm, TotpParams};
use crate::sealing::{KeyError, StoreKey};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        path: String,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database has schema version {0}, newer than this mfad understands")]
    TooNew(i64),
    #[error("a stored value is corrupt: {0}")]
    Corrupt(&'static str),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(
        "the store key is not the one this database was written with (its secrets cannot be \
         read); use the key file that belongs to this database"
    )]
    WrongKey,
}

/// Schema migrations, in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: the walking skeleton.
    "CREATE TABLE users (
        name TEXT PRIMARY KEY,
        failures INTEGER NOT NULL DEFAULT 0,
        locked_until INTEGER
     ) STRICT;
     CREATE TABLE devices (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('totp', 'hotp', 'phone', 'push')),
        name TEXT NOT NULL,
        -- totp and hotp: the key and how codes are made from it
        secret BLOB,
        algorithm TEXT,
        digits INTEGER,
        period INTEGER,
        -- totp: the last time step spent; hotp: the next counter expected
        counter INTEGER NOT NULL DEFAULT 0,
        -- phone: an E.164 number; push: the notifier's target (e.g. an ntfy topic)
        address TEXT,
        is_default INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL
     ) STRICT;
     CREATE UNIQUE INDEX devices_one_default ON devices(user) WHERE is_default = 1;
     CREATE INDEX devices_user ON devices(user);
     CREATE TABLE bypass_codes (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        salt BLOB NOT NULL,
        hash BLOB NOT NULL,
        created INTEGER NOT NULL,
        used_at INTEGER
     ) STRICT;
     CREATE INDEX bypass_codes_user ON bypass_codes(user);
     CREATE TABLE sms_codes (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        salt BLOB NOT NULL,
        hash BLOB NOT NULL,
        expires INTEGER NOT NULL,
        used_at INTEGER
     ) STRICT;
     CREATE INDEX sms_codes_user ON sms_codes(user);
     CREATE TABLE remembered (
        user TEXT NOT NULL,
        addr TEXT NOT NULL,
        key TEXT NOT NULL,
        until INTEGER NOT NULL,
        PRIMARY KEY (user, addr, key)
     ) STRICT;",
    // 2: the security review. Secrets sealed with the store key (the rows are converted by
    // `Store::seal_legacy`, which needs the key); remembered logins carry who vouched for
    // the address (sshd through root, or the user's own helper) and start afresh.
    "CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL
     ) STRICT;
     ALTER TABLE devices ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE bypass_codes ADD COLUMN keyed INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE sms_codes ADD COLUMN keyed INTEGER NOT NULL DEFAULT 0;
     DROP TABLE remembered;
     CREATE TABLE remembered (
        user TEXT NOT NULL,
        scope TEXT NOT NULL CHECK (scope IN ('sshd', 'self')),
        addr TEXT NOT NULL,
        key TEXT NOT NULL,
        until INTEGER NOT NULL,
        PRIMARY KEY (user, scope, addr, key)
     ) STRICT;",
];

/// Who vouched for the client address of a remembered login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RememberScope {
    /// sshd's PAM stack (a root caller): the address is the connection's.
    Sshd,
    /// The user's own ForceCommand helper: the address is what the user's process said.
    OwnHelper,
}

impl RememberScope {
    fn as_str(self) -> &'static str {
        match self {
            RememberScope::Sshd => "sshd",
            RememberScope::OwnHelper => "self",
        }
    }
}

pub struct Store {
    conn: Connection,
    key: StoreKey,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockState {
    pub failures: u32,
    pub locked_until: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Totp,
    Hotp,
    Phone,
    Push,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Totp => "totp",
            DeviceKind::Hotp => "hotp",
            DeviceKind::Phone => "phone",
            DeviceKind::Push => "push",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "totp" => Some(DeviceKind::Totp),
            "hotp" => Some(DeviceKind::Hotp),
            "phone" => Some(DeviceKind::Phone),
            "push" => Some(DeviceKind::Push),
            _ => None,
        }
    }
}

/// The key of a code-generating device.
pub struct OtpKey {
    pub secret: Zeroizing<Vec<u8>>,
    /// For HOTP the period is 0.
    pub params: TotpParams,
    /// TOTP: last spent step. HOTP: next counter expected.
    pub counter: i64,
}

pub struct Device {
    pub id: i64,
    pub kind: DeviceKind,
    pub name: String,
    pub otp: Option<OtpKey>,
    pub address: Option<String>,
    pub is_default: bool,
    pub created: i64,
}

/// A device to insert.
pub struct NewDeviceRow {
    pub kind: DeviceKind,
    pub name: String,
    pub otp: Option<OtpKey>,
    pub address: Option<String>,
}

pub struct BypassRow {
    pub id: i64,
    pub code: StoredCode,
    pub used: bool,
}

/// What a failed attempt did to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureEffect {
    Counted { failures: u32 },
    Locked { until: i64 },
}

impl Store {
    /// Opens (creating if needed) the database at `path`: its directory with mode 0700, the
    /// file with mode 0600, then brings the schema up to date.
    pub fn open(path: &Path, key: StoreKey) -> Result<Store, StoreError> {
        let prepare = |source| StoreError::Prepare {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(prepare)?;
        }
        // Create the file ourselves so that it never exists with a looser mode.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(prepare)?;
        let mut perms = file.metadata().map_err(prepare)?.permissions();
        if perms.mode() & 0o077 != 0 {
            perms.set_mode(0o600);
            std::fs::set_permissions(path, perms).map_err(prepare)?;
        }
        drop(file);
        let conn = Connection::open(path)?;
        Store::init(conn, key)
    }

    /// Opens the database at `path` with the key in `key_file`, creating the key (mode
    /// 0600) when it does not exist yet.
    pub fn open_with_key_file(path: &Path, key_file: &Path) -> Result<Store, StoreError> {
        Store::open(path, StoreKey::load(key_file, true)?)
    }

    /// An in-memory store with a fresh key, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?, StoreKey::generate()?)
    }

    fn init(conn: Connection, key: StoreKey) -> Result<Store, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Every statement of a login's path is prepared once and kept (about 15 of them):
        // parsing SQL was a tenth of mfad's instructions per login.
        conn.set_prepared_statement_cache_capacity(32);
        // WAL keeps readers off the writer's back; FULL sync makes every spent code durable
        // before the login it opened goes ahead.
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut store = Store { conn, key };
        store.migrate()?;
        store.seal_legacy()?;
        Ok(store)
    }

    /// Checks that the database belongs to this key (recording the key's check value in a
    /// new database), then seals what older versions stored in clear: TOTP/HOTP keys are
    /// encrypted and one-time code hashes keyed. One transaction: all rows or none.
    fn seal_legacy(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let check = self.key.check_value();
        let stored: Option<Vec<u8>> = tx
            .query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match stored {
            Some(v) if bool::from(v.as_slice().ct_eq(&check[..])) => {}
            Some(_) => return Err(StoreError::WrongKey),
            None => {
                tx.execute(
                    "INSERT INTO meta(key, value) VALUES ('key_check', ?1)",
                    [&check[..]],
                )?;
            }
        }
        let clear: Vec<(i64, String, Zeroizing<Vec<u8>>)> = tx
            .prepare(
                "SELECT id, user, secret FROM devices WHERE sealed = 0 AND secret IS NOT NULL",
            )?
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, Zeroizing::new(r.get(2)?)))
            })?
            .collect::<rusqlite::Result<_>>()?;
        for (id, user, secret) in clear {
            tx.execute(
                "UPDATE devices SET secret = ?2, sealed = 1 WHERE id = ?1",
                params![id, self.key.seal(&secret, &user)],
            )?;
        }
        for table in ["bypass_codes", "sms_codes"] {
            let rows: Vec<(i64, Vec<u8>)> = tx
                .prepare(&format!("SELECT id, hash FROM {table} WHERE keyed = 0"))?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (id, hash) in rows {
                tx.execute(
                    &format!("UPDATE {table} SET hash = ?2, keyed = 1 WHERE id = ?1"),
                    params![id, &self.key.code_tag(&hash)[..]],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs `f` in one write transaction: everything it wrote is committed together, or
    /// (when it fails) nothing is. Holding the write lock from the start, whatever `f` read
    /// (a lock, a counter) is still true when it writes.
    pub fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(value) => match self.conn.execute_batch("COMMIT") {
                Ok(()) => Ok(value),
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    Err(e.into())
                }
            },
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Whether `answer` is the one-time code stored as `stored` (constant time).
    pub fn code_matches(&self, stored: &StoredCode, answer: &str) -> bool {
        let tag = self.key.code_tag(&bypass::hash(&stored.salt, answer));
        bool::from(tag.ct_eq(&stored.hash))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > MIGRATIONS.len() as i64 {
            return Err(StoreError::TooNew(version));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    pub fn lock_state(&self, user: &str) -> Result<LockState, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT failures, locked_until FROM users WHERE name = ?1")?
            .query_row([user], |r| {
                Ok(LockState {
                    failures: r.get(0)?,
                    locked_until: r.get(1)?,
                })
            })
            .optional()?
            .unwrap_or_default())
    }

    /// Counts one failure; at `max_failures` (0: never) locks until `now + duration`.
    pub fn record_failure(
        &mut self,
        user: &str,
        now: i64,
        max_failures: u32,
        duration: u64,
    ) -> Result<FailureEffect, StoreError> {
        let tx = self.conn.savepoint()?;
        tx.prepare_cached(
            "INSERT INTO users(name, failures) VALUES (?1, 1)
             ON CONFLICT(name) DO UPDATE SET failures = failures + 1",
        )?
        .execute([user])?;
        let failures: u32 = tx
            .prepare_cached("SELECT failures FROM users WHERE name = ?1")?
            .query_row([user], |r| r.get(0))?;
        let effect = if max_failures > 0 && failures >= max_failures {
            // A lock is never shortened: a lock already set for longer (a report) stays.
            let until: i64 = tx
                .prepare_cached(
                    "UPDATE users SET failures = 0,
                        locked_until = max(coalesce(locked_until, 0), ?2)
                     WHERE name = ?1 RETURNING locked_until",
                )?
                .query_row(params![user, now.saturating_add(duration as i64)], |r| {
                    r.get(0)
                })?;
            tx.execute("DELETE FROM remembered WHERE user = ?1", [user])?;
            FailureEffect::Locked { until }
        } else {
            FailureEffect::Counted { failures }
        };
        tx.commit()?;
        Ok(effect)
    }

    /// After a success: the count of consecutive failures starts again.
    pub fn clear_failures(&mut self, user: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("UPDATE users SET failures = 0 WHERE name = ?1 AND failures <> 0")?
            .execute([user])?;
        Ok(())
    }

    /// Lifts a lock and clears the counter. Returns whether there was anything to clear.
    /// Remembered logins are forgotten too: whatever caused the lock may have used them.
    pub fn unlock(&mut self, user: &str) -> Result<bool, StoreError> {
        let tx = self.conn.savepoint()?;
        let n = tx.execute(
            "UPDATE users SET failures = 0, locked_until = NULL
             WHERE name = ?1 AND (failures <> 0 OR locked_until IS NOT NULL)",
            [user],
        )?;
        tx.execute("DELETE FROM remembered WHERE user = ?1", [user])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Locks the account until `until` at once (a login the user reported as not theirs).
    /// Remembered logins are forgotten: the user said a login was not theirs.
    pub fn lock_until(&mut self, user: &str, until: i64) -> Result<(), StoreError> {
        let tx = self.conn.savepoint()?;
        tx.execute(
            "INSERT INTO users(name, failures, locked_until) VALUES (?1, 0, ?2)
             ON CONFLICT(name) DO UPDATE SET locked_until = max(coalesce(locked_until, 0), ?2)",
            params![user, until],
        )?;
        tx.execute("DELETE FROM remembered WHERE user = ?1", [user])?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets the user's remembered logins; returns how many there were.
    pub fn forget_remembered(&mut self, user: &str) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM remembered WHERE user = ?1", [user])?)
    }

    /// Records an SMS passcode (keyed hash) valid until `expires`. It is the user's only
    /// live one: every earlier code, spent or not, is dropped, so requests never pile up
    /// codes that a guess could hit.
    pub fn add_sms_code(
        &mut self,
        user: &str,
        code: &StoredCode,
        now: i64,
        expires: i64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.savepoint()?;
        tx.execute(
            "DELETE FROM sms_codes WHERE user = ?1 AND (used_at IS NULL OR expires <= ?2)",
            params![user, now],
        )?;
        tx.execute(
            "INSERT INTO sms_codes(user, salt, hash, expires, keyed) VALUES (?1, ?2, ?3, ?4, 1)",
            params![
                user,
                &code.salt[..],
                &self.key.code_tag(&code.hash)[..],
                expires
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The user's SMS passcodes that have not expired, spent or not.
    pub fn sms_codes(&self, user: &str, now: i64) -> Result<Vec<BypassRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, salt, hash, used_at IS NOT NULL FROM sms_codes
             WHERE user = ?1 AND expires > ?2 ORDER BY id",
        )?;
        collect_codes(stmt.query_map(params![user, now], code_row)?)
    }

    /// Spends an SMS passcode: succeeds only for the first caller, before it expires.
    pub fn spend_sms_code(&mut self, id: i64, now: i64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE sms_codes SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL AND expires > ?2",
            )?
            .execute(params![id, now])?;
        Ok(n == 1)
    }

    /// Remembers a second factor from `addr` with key fingerprint `key` until `until`.
    pub fn remember(
        &mut self,
        user: &str,
        scope: RememberScope,
        addr: &str,
        key: &str,
        now: i64,
        until: i64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.savepoint()?;
        tx.execute("DELETE FROM remembered WHERE until <= ?1", [now])?;
        tx.execute(
            "INSERT INTO remembered(user, scope, addr, key, until) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(user, scope, addr, key) DO UPDATE SET until = excluded.until",
            params![user, scope.as_str(), addr, key, until],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Whether a second factor from exactly this address and key, vouched for by `scope`,
    /// is still remembered.
    pub fn is_remembered(
        &self,
        user: &str,
        scope: RememberScope,
        addr: &str,
        key: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM remembered
                  WHERE user = ?1 AND scope = ?2 AND addr = ?3 AND key = ?4 AND until > ?5)",
            )?
            .query_row(params![user, scope.as_str(), addr, key, now], |r| r.get(0))?)
    }

    /// Forgets everything about `user`: devices, bypass codes, counters.
    pub fn reset_user(&mut self, user: &str) -> Result<(), StoreError> {
        let tx = self.conn.savepoint()?;
        tx.execute("DELETE FROM remembered WHERE user = ?1", [user])?;
        tx.execute("DELETE FROM sms_codes WHERE user = ?1", [user])?;
        tx.execute("DELETE FROM devices WHERE user = ?1", [user])?;
        tx.execute("DELETE FROM bypass_codes WHERE user = ?1", [user])?;
        tx.execute("DELETE FROM users WHERE name = ?1", [user])?;
        tx.commit()?;
        Ok(())
    }

    /// A user's devices, oldest first (the order `mfa devices` numbers them in).
    pub fn devices(&self, user: &str) -> Result<Vec<Device>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, kind, name, secret, algorithm, digits, period, counter, address,
                    is_default, created
             FROM devices WHERE user = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([user], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?.map(Zeroizing::new),
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<u32>>(5)?,
                r.get::<_, Option<u64>>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, bool>(9)?,
                r.get::<_, i64>(10)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (
                id,
                kind,
                name,
                secret,
                alg,
                digits,
                period,
                counter,
                address,
                is_default,
                created,
            ) = row?;
            let kind = DeviceKind::parse(&kind).ok_or(StoreError::Corrupt("device kind"))?;
            let otp = match (kind, secret, alg, digits) {
                (DeviceKind::Totp | DeviceKind::Hotp, Some(sealed), Some(alg), Some(digits)) => {
                    Some(OtpKey {
                        secret: self.key.open(&sealed, user).ok_or(StoreError::WrongKey)?,
                        params: TotpParams {
                            algorithm: HashAlgorithm::parse(&alg)
                                .ok_or(StoreError::Corrupt("device algorithm"))?,
                            digits,
                            period: period.unwrap_or(0),
                        },
                        counter,
                    })
                }
                (DeviceKind::Totp | DeviceKind::Hotp, ..) => {
                    return Err(StoreError::Corrupt("code device without a key"));
                }
                _ => None,
            };
            out.push(Device {
                id,
                kind,
                name,
                otp,
                address,
                is_default,
                created,
            });
        }
        Ok(out)
    }

    fn insert_device(
        tx: &rusqlite::Connection,
        key: &StoreKey,
        user: &str,
        d: &NewDeviceRow,
        now: i64,
    ) -> Result<i64, StoreError> {
        let has_default: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM devices WHERE user = ?1 AND is_default = 1)",
            [user],
            |r| r.get(0),
        )?;
        let otp = d.otp.as_ref();
        let sealed = otp.map(|o| key.seal(&o.secret, user));
        tx.execute(
            "INSERT INTO devices(user, kind, name, secret, algorithm, digits, period, counter,
                                 address, is_default, created, sealed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1)",
            params![
                user,
                d.kind.as_str(),
                d.name,
                sealed,
                otp.map(|o| o.params.algorithm.as_str()),
                otp.map(|o| o.params.digits),
                otp.and_then(|o| (d.kind == DeviceKind::Totp).then_some(o.params.period)),
                otp.map(|o| o.counter).unwrap_or(0),
                d.address,
                !has_default,
                now
            ],
        )?;
        Ok(tx.last_insert_rowid())
    }

    /// Adds a device; the user's first device becomes the default method.
    pub fn add_device(
        &mut self,
        user: &str,
        d: &NewDeviceRow,
        now: i64,
    ) -> Result<i64, StoreError> {
        let tx = self.conn.savepoint()?;
        let id = Store::insert_device(&tx, &self.key, user, d, now)?;
        tx.commit()?;
        Ok(id)
    }

    /// Adds many devices in one transaction: all or none.
    pub fn add_devices(
        &mut self,
        rows: &[(String, NewDeviceRow)],
        now: i64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.savepoint()?;
        for (user, d) in rows {
            Store::insert_device(&tx, &self.key, user, d, now)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// An authenticator app whose code for `confirmed_step` the user just typed; that step
    /// counts as spent.
    pub fn add_totp_device(
        &mut self,
        user: &str,
        name: &str,
        secret: &[u8],
        params: TotpParams,
        confirmed_step: u64,
        now: i64,
    ) -> Result<i64, StoreError> {
        self.add_device(
            user,
            &NewDeviceRow {
                kind: DeviceKind::Totp,
                name: name.to_string(),
                otp: Some(OtpKey {
                    secret: Zeroizing::new(secret.to_vec()),
                    params,
                    counter: confirmed_step as i64,
                }),
                address: None,
            },
            now,
        )
    }

    pub fn set_default(&mut self, user: &str, device: i64) -> Result<(), StoreError> {
        let tx = self.conn.savepoint()?;
        tx.execute(
            "UPDATE devices SET is_default = 0 WHERE user = ?1 AND is_default = 1",
            [user],
        )?;
        tx.execute(
            "UPDATE devices SET is_default = 1 WHERE user = ?1 AND id = ?2",
            params![user, device],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes a device; if it was the default, the oldest remaining device takes its place.
    /// Remembered logins are forgotten: one of them may have been proved with that device.
    pub fn remove_device(&mut self, user: &str, device: i64) -> Result<(), StoreError> {
        let tx = self.conn.savepoint()?;
        tx.execute(
            "DELETE FROM devices WHERE user = ?1 AND id = ?2",
            params![user, device],
        )?;
        tx.execute("DELETE FROM remembered WHERE user = ?1", [user])?;
        tx.execute(
            "UPDATE devices SET is_default = 1 WHERE id = (SELECT id FROM devices WHERE user = ?1
             ORDER BY id LIMIT 1) AND NOT EXISTS (SELECT 1 FROM devices WHERE user = ?1 AND is_default = 1)",
            [user],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Spends time step `step` of a TOTP device: succeeds only if no step as late was spent.
    pub fn spend_totp_step(&mut self, device: i64, step: u64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE devices SET counter = ?2 WHERE id = ?1 AND kind = 'totp' AND counter < ?2",
            )?
            .execute(params![device, step as i64])?;
        Ok(n == 1)
    }

    /// Spends HOTP counter `counter`: the next expected becomes `counter + 1`, and succeeds
    /// only if no caller got there first.
    pub fn spend_hotp_counter(&mut self, device: i64, counter: u64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE devices SET counter = ?2 + 1 WHERE id = ?1 AND kind = 'hotp' AND counter <= ?2",
            )?
            .execute(params![device, counter as i64])?;
        Ok(n == 1)
    }

    pub fn unused_bypass_codes(&self, user: &str) -> Result<Vec<BypassRow>, StoreError> {
        Ok(self
            .bypass_codes(user)?
            .into_iter()
            .filter(|r| !r.used)
            .collect())
    }

    /// All of a user's current bypass codes, spent or not.
    pub fn bypass_codes(&self, user: &str) -> Result<Vec<BypassRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, salt, hash, used_at IS NOT NULL FROM bypass_codes WHERE user = ?1 ORDER BY id",
        )?;
        collect_codes(stmt.query_map([user], code_row)?)
    }

    /// Replaces all of a user's bypass codes with `codes`, in one transaction.
    pub fn replace_bypass_codes(
        &mut self,
        user: &str,
        codes: &[StoredCode],
        now: i64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.savepoint()?;
        tx.execute("DELETE FROM bypass_codes WHERE user = ?1", [user])?;
        for c in codes {
            tx.execute(
                "INSERT INTO bypass_codes(user, salt, hash, created, keyed)
                 VALUES (?1, ?2, ?3, ?4, 1)",
                params![user, &c.salt[..], &self.key.code_tag(&c.hash)[..], now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Spends a bypass code: succeeds only for the first caller.
    pub fn spend_bypass_code(&mut self, id: i64, now: i64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE bypass_codes SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL",
            )?
            .execute(params![id, now])?;
        Ok(n == 1)
    }
}

/// What `mfa admin list` shows of one user: no secret, only counts and state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSummary {
    pub name: String,
    pub failures: u32,
    pub locked_until: Option<i64>,
    /// The kind of each device, oldest first.
    pub device_kinds: Vec<DeviceKind>,
    pub bypass_left: u32,
}

impl Store {
    /// How many accounts are locked out at `now`.
    pub fn locked_users(&self, now: i64) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM users WHERE locked_until > ?1",
            [now],
            |r| r.get(0),
        )?)
    }

    /// Every user the store holds anything for (a failure count, a lock, a device, a bypass
    /// code, spent or not), sorted by name. Read in one transaction, so the counts agree.
    pub fn user_summaries(&mut self) -> Result<Vec<UserSummary>, StoreError> {
        use std::collections::BTreeMap;
        let tx = self.conn.transaction()?;
        let mut users: BTreeMap<String, UserSummary> = BTreeMap::new();
        fn slot(users: &mut BTreeMap<String, UserSummary>, name: String) -> &mut UserSummary {
            users.entry(name.clone()).or_insert_with(|| UserSummary {
                name,
                ..Default::default()
            })
        }
        {
            let mut stmt = tx.prepare("SELECT name, failures, locked_until FROM users")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })?;
            for row in rows {
                let (name, failures, locked_until) = row?;
                let u = slot(&mut users, name);
                u.failures = failures;
                u.locked_until = locked_until;
            }
            let mut stmt = tx.prepare("SELECT user, kind FROM devices ORDER BY user, id")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (name, kind) = row?;
                let kind = DeviceKind::parse(&kind).ok_or(StoreError::Corrupt("device kind"))?;
                slot(&mut users, name).device_kinds.push(kind);
            }
            let mut stmt =
                tx.prepare("SELECT user, sum(used_at IS NULL) FROM bypass_codes GROUP BY user")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
            for row in rows {
                let (name, left) = row?;
                slot(&mut users, name).bypass_left = left;
            }
        }
        tx.commit()?;
        Ok(users.into_values().collect())
    }
}

type CodeRow = (i64, Vec<u8>, Vec<u8>, bool);

/// Reads `id, salt, hash, used` of a one-time code table.
fn code_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CodeRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn collect_codes(
    rows: impl Iterator<Item = rusqlite::Result<CodeRow>>,
) -> Result<Vec<BypassRow>, StoreError> {
    let mut out = Vec::new();
    for row in rows {
        let (id, salt, hash, used) = row?;
        let salt = salt
            .try_into()
            .map_err(|_| StoreError::Corrupt("code salt"))?;
        let hash = hash
            .try_into()
            .map_err(|_| StoreError::Corrupt("code hash"))?;
        out.push(BypassRow {
            id,
            code: StoredCode { salt, hash },
            used,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factor::bypass;

    fn params() -> TotpParams {
        TotpParams {
            algorithm: HashAlgorithm::Sha1,
            digits: 6,
            period: 30,
        }
    }

    #[test]
    fn a_new_database_file_is_private_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/mfa.db");
        let key = dir.path().join("store.key");
        let store = Store::open(&path, StoreKey::load(&key, true).unwrap()).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        drop(store);
        // Opening again runs no migration twice.
        let store = Store::open(&path, StoreKey::load(&key, false).unwrap()).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        drop(store);
        // Another key cannot open it.
        assert!(matches!(
            Store::open(&path, StoreKey::generate().unwrap()),
            Err(StoreError::WrongKey)
        ));
    }

    #[test]
    fn a_time_step_is_spent_once_and_older_steps_never() {
        let mut s = Store::open_in_memory().unwrap();
        let id = s
            .add_totp_device("alice", "phone", b"k", params(), 100, 0)
            .unwrap();
        assert!(
            !s.spend_totp_step(id, 100).unwrap(),
            "confirming step is spent"
        );
        assert!(s.spend_totp_step(id, 102).unwrap());
        assert!(!s.spend_totp_step(id, 102).unwrap());
        assert!(!s.spend_totp_step(id, 101).unwrap());
        assert!(s.spend_totp_step(id, 103).unwrap());
    }

    #[test]
    fn an_hotp_counter_moves_forward_only() {
        let mut s = Store::open_in_memory().unwrap();
        let id = s
            .add_device(
                "dave",
                &NewDeviceRow {
                    kind: DeviceKind::Hotp,
                    name: "token".into(),
                    otp: Some(OtpKey {
                        secret: Zeroizing::new(b"k".to_vec()),
                        params: TotpParams {
                            algorithm: HashAlgorithm::Sha1,
                            digits: 6,
                            period: 0,
                        },
                        counter: 0,
                    }),
                    address: None,
                },
                0,
            )
            .unwrap();
        assert!(s.spend_hotp_counter(id, 3).unwrap());
        assert_eq!(
            s.devices("dave").unwrap()[0].otp.as_ref().unwrap().counter,
            4
        );
        assert!(!s.spend_hotp_counter(id, 3).unwrap());
        assert!(!s.spend_hotp_counter(id, 2).unwrap());
        assert!(s.spend_hotp_counter(id, 4).unwrap());
    }

    #[test]
    fn the_first_device_is_the_default_and_removal_hands_it_on() {
        let mut s = Store::open_in_memory().unwrap();
        let a = s.add_totp_device("e", "a", b"k", params(), 1, 0).unwrap();
        let b = s.add_totp_device("e", "b", b"k", params(), 1, 0).unwrap();
        let c = s.add_totp_device("e", "c", b"k", params(), 1, 0).unwrap();
        let defaults = |s: &Store| -> Vec<i64> {
            s.devices("e")
                .unwrap()
                .iter()
                .filter(|d| d.is_default)
                .map(|d| d.id)
                .collect()
        };
        assert_eq!(defaults(&s), vec![a]);
        s.set_default("e", c).unwrap();
        assert_eq!(defaults(&s), vec![c]);
        s.remove_device("e", c).unwrap();
        assert_eq!(defaults(&s), vec![a]);
        s.remove_device("e", b).unwrap();
        assert_eq!(defaults(&s), vec![a]);
        // Another user's device id is not ours to remove.
        s.remove_device("f", a).unwrap();
        assert_eq!(s.devices("e").unwrap().len(), 1);
    }

    #[test]
    fn failures_lock_at_the_limit_and_reset() {
        let mut s = Store::open_in_memory().unwrap();
        for i in 1..3 {
            assert_eq!(
                s.record_failure("bob", 1000, 3, 60).unwrap(),
                FailureEffect::Counted { failures: i }
            );
        }
        assert_eq!(
            s.record_failure("bob", 1000, 3, 60).unwrap(),
            FailureEffect::Locked { until: 1060 }
        );
        assert_eq!(s.lock_state("bob").unwrap().locked_until, Some(1060));
        assert!(s.unlock("bob").unwrap());
        assert_eq!(s.lock_state("bob").unwrap(), LockState::default());
        assert!(!s.unlock("bob").unwrap());
    }

    #[test]
    fn bypass_codes_are_replaced_whole_and_spent_once() {
        let mut s = Store::open_in_memory().unwrap();
        let (_, first) = bypass::generate();
        s.replace_bypass_codes("carol", &first, 0).unwrap();
        let (_, second) = bypass::generate();
        s.replace_bypass_codes("carol", &second, 1).unwrap();
        let (shown, second) = bypass::generate();
        s.replace_bypass_codes("carol", &second, 2).unwrap();
        let rows = s.unused_bypass_codes("carol").unwrap();
        assert_eq!(rows.len(), bypass::COUNT);
        assert!(s.code_matches(&rows[0].code, &shown[0]));
        assert!(!s.code_matches(&rows[1].code, &shown[0]));
        // What is stored is keyed: the plain salted hash of the code is not in the row.
        assert_ne!(rows[0].code.hash, second[0].hash);
        assert!(s.spend_bypass_code(rows[0].id, 5).unwrap());
        assert!(!s.spend_bypass_code(rows[0].id, 6).unwrap());
        assert_eq!(
            s.unused_bypass_codes("carol").unwrap().len(),
            bypass::COUNT - 1
        );
    }

    #[test]
    fn reset_forgets_the_user_only() {
        let mut s = Store::open_in_memory().unwrap();
        s.add_totp_device("a", "x", b"k", params(), 1, 0).unwrap();
        s.add_totp_device("b", "x", b"k", params(), 1, 0).unwrap();
        s.record_failure("a", 0, 10, 60).unwrap();
        s.reset_user("a").unwrap();
        assert!(s.devices("a").unwrap().is_empty());
        assert_eq!(s.lock_state("a").unwrap(), LockState::default());
        assert_eq!(s.devices("b").unwrap().len(), 1);
    }

    #[test]
    fn remembered_logins_go_on_lock_report_unlock_and_device_removal() {
        let mut s = Store::open_in_memory().unwrap();
        let id = s.add_totp_device("u", "app", b"k", params(), 1, 0).unwrap();
        let sshd = RememberScope::Sshd;
        let remember = |s: &mut Store| s.remember("u", sshd, "192.0.2.1", "", 0, 1000).unwrap();
        let is = |s: &Store| s.is_remembered("u", sshd, "192.0.2.1", "", 10).unwrap();
        remember(&mut s);
        assert!(is(&s));
        assert!(
            !s.is_remembered("u", RememberScope::OwnHelper, "192.0.2.1", "", 10)
                .unwrap()
        );
        s.lock_until("u", 500).unwrap();
        assert!(!is(&s), "a report or lock forgets");
        remember(&mut s);
        s.unlock("u").unwrap();
        assert!(!is(&s), "an unlock forgets");
        remember(&mut s);
        for _ in 0..3 {
            s.record_failure("u", 10, 3, 60).unwrap();
        }
        assert!(!is(&s), "a lockout forgets");
        s.unlock("u").unwrap();
        remember(&mut s);
        s.remove_device("u", id).unwrap();
        assert!(!is(&s), "removing a device forgets");
        remember(&mut s);
        assert_eq!(s.forget_remembered("u").unwrap(), 1);
        assert!(!is(&s));
    }

    #[test]
    fn a_new_sms_code_replaces_every_earlier_one() {
        let mut s = Store::open_in_memory().unwrap();
        let mut shown = Vec::new();
        for _ in 0..3 {
            let (code, stored) = bypass::new_code(7);
            s.add_sms_code("u", &stored, 100, 400).unwrap();
            shown.push(code);
        }
        let rows = s.sms_codes("u", 100).unwrap();
        assert_eq!(rows.len(), 1, "one live SMS code per user");
        assert!(s.code_matches(&rows[0].code, &shown[2]));
        assert!(!s.code_matches(&rows[0].code, &shown[0]) || shown[0] == shown[2]);
    }

    #[test]
    fn a_lock_is_never_shortened_by_a_lockout() {
        let mut s = Store::open_in_memory().unwrap();
        s.lock_until("u", 100_000).unwrap();
        for _ in 0..3 {
            s.record_failure("u", 1000, 3, 60).unwrap();
        }
        assert_eq!(s.lock_state("u").unwrap().locked_until, Some(100_000));
    }

    #[test]
    fn a_copy_of_the_database_holds_no_secret_and_no_plain_code_hash() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("mfa.db");
        let mut s = Store::open_with_key_file(&db, &dir.path().join("store.key")).unwrap();
        let secret = b"a-very-recognisable-totp-key";
        s.add_totp_device("u", "app", secret, params(), 1, 0)
            .unwrap();
        let (shown, stored) = bypass::generate();
        s.replace_bypass_codes("u", &stored, 0).unwrap();
        drop(s);
        let raw = std::fs::read(&db).unwrap();
        let wal = std::fs::read(db.with_extension("db-wal")).unwrap_or_default();
        for bytes in [&raw, &wal] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret));
            for c in &stored {
                assert!(
                    !bytes.windows(32).any(|w| w == c.hash),
                    "a plain salted hash is stored"
                );
            }
        }
        // Brute force over the 10^8 codes needs the key: with the salt alone, the stored
        // value matches none of the candidates (checked on the real code).
        let conn = Connection::open(&db).unwrap();
        let (salt, hash): (Vec<u8>, Vec<u8>) = conn
            .query_row(
                "SELECT salt, hash FROM bypass_codes ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let salt: [u8; 16] = salt.try_into().unwrap();
        assert_ne!(bypass::hash(&salt, &shown[0]).to_vec(), hash);
    }

    #[test]
    fn a_database_from_before_the_store_key_is_sealed_at_its_first_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("old.db");
        // Schema 1 as an older mfad wrote it: the key and the salted hash in clear.
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        let (code, stored) = bypass::new_code(8);
        conn.execute(
            "INSERT INTO devices(user, kind, name, secret, algorithm, digits, period, counter,
                                 is_default, created)
             VALUES ('u', 'totp', 'app', ?1, 'SHA1', 6, 30, 0, 1, 0)",
            [&b"old-clear-secret"[..]],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO bypass_codes(user, salt, hash, created) VALUES ('u', ?1, ?2, 0)",
            params![&stored.salt[..], &stored.hash[..]],
        )
        .unwrap();
        drop(conn);
        let s = Store::open_with_key_file(&db, &dir.path().join("k")).unwrap();
        let devices = s.devices("u").unwrap();
        assert_eq!(
            &devices[0].otp.as_ref().unwrap().secret[..],
            b"old-clear-secret"
        );
        let rows = s.unused_bypass_codes("u").unwrap();
        assert!(
            s.code_matches(&rows[0].code, &code),
            "an old bypass code still works"
        );
        drop(s);
        let conn = Connection::open(&db).unwrap();
        let raw: Vec<u8> = conn
            .query_row("SELECT secret FROM devices", [], |r| r.get(0))
            .unwrap();
        assert_ne!(raw, b"old-clear-secret");
    }
}
