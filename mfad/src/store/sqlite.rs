//! The SQLite backend: the embedded default for a single host. One file (mode 0600, in a
//! 0700 directory), WAL: every spent code is durable before the login it opened goes ahead.
//!
//! Group commit: one connection is shared by several handles (one per conversation using
//! the store). A write commits into the WAL without waiting for the disk, then its caller
//! waits until an fsync of the WAL that began after its commit has finished: logins that
//! commit while one fsync runs share the next one, instead of queueing one fsync each behind
//! the connection. Each login's transaction stays its own (a failure undoes only its own
//! writes), and no caller hears "done" before its write is on disk.
//!
//! Inline use (a login's snapshot read and its code transaction, run on the conversation's
//! own thread by [`crate::core::Core::db_login`]): a handle set inline never waits. When the
//! connection is taken, another handle holds a transaction or another process holds the
//! write lock, its statement fails with [`StoreError::WouldBlock`], having changed nothing.
//! The caller then waits on its own task until another handle lets go of the connection
//! ([`Backend::released`]) and tries inline again, for up to 50 ms, before it runs its work
//! on a blocking thread (under load, that round trip was most of mfad's futex calls and context
//! switches: the other worker's login holds the connection for microseconds at a time).
//! Its commits do not wait for the disk, and the caller
//! awaits [`Backend::take_unsynced`] instead, leading the next fsync itself or sleeping
//! until one that covers it is done. Checkpoints (copying the WAL back into the database
//! file, which fsyncs both) never run inline: when a commit leaves [`CHECKPOINT_FRAMES`]
//! pages or more in the WAL one falls due, inline use steps aside, and the next use on a
//! blocking thread runs it first.
//!
//! The login history (the portal's "my recent logins") is kept in a database of its own
//! beside the store ([`history_path`]), on its own connection: its batches of thousands of
//! rows, and the checkpoints they bring, never hold the logins' connection nor fill their
//! WAL. Measured while it shared them (`mfa-bench`, 200 clients): a stream of policy
//! decisions fell from about 19,000/s to 12,000-13,000/s as the history table grew.

use super::backend::{
    Backend, CodeRecord, DeviceRecord, Dump, DumpedCode, DumpedRemembered, EnrolLinkRecord,
    EnrolLinkStep, Failure, LoginReads, LoginRecord, NewBypassCodes, NewDeviceRecord, NewEnrolLink,
    NewSmsCode, NewWebSession, Remembered, WebSessionRecord, WebSessionStep,
};
use super::reads_cache::{ReadsCache, Stamp};
use super::{DeviceKind, FailureEffect, LockState, StoreError, UserSummary};
use crate::sealing::StoreKey;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Schema migrations, in order; `PRAGMA user_version` records how many have run.
pub const MIGRATIONS: &[&str] = &[
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
    // 3: security keys (an OpenSSH sk public key in `address`). SQLite cannot change a
    // CHECK constraint, so the devices table is rebuilt with the same rows and indexes.
    "CREATE TABLE devices_new (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        kind TEXT NOT NULL
            CHECK (kind IN ('totp', 'hotp', 'phone', 'push', 'security-key')),
        name TEXT NOT NULL,
        secret BLOB,
        algorithm TEXT,
        digits INTEGER,
        period INTEGER,
        counter INTEGER NOT NULL DEFAULT 0,
        -- phone: an E.164 number; push: the notifier's target; security-key: TYPE BASE64
        address TEXT,
        is_default INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL,
        sealed INTEGER NOT NULL DEFAULT 0
     ) STRICT;
     INSERT INTO devices_new (id, user, kind, name, secret, algorithm, digits, period,
                              counter, address, is_default, created, sealed)
        SELECT id, user, kind, name, secret, algorithm, digits, period,
               counter, address, is_default, created, sealed FROM devices;
     DROP TABLE devices;
     ALTER TABLE devices_new RENAME TO devices;
     CREATE UNIQUE INDEX devices_one_default ON devices(user) WHERE is_default = 1;
     CREATE INDEX devices_user ON devices(user);",
    // 4: enrolment links (`unenrolled = "link"`): one-time, bound to a user, expiring.
    // `key` is the SHA-256 of the link's token: the table never holds a usable link.
    "CREATE TABLE enrol_links (
        key BLOB PRIMARY KEY,
        user TEXT NOT NULL,
        created INTEGER NOT NULL,
        expires INTEGER NOT NULL,
        used_at INTEGER,
        -- the enrolment page's progress: any node may serve the next step
        password_tries INTEGER NOT NULL DEFAULT 0,
        password_ok_at INTEGER,
        pending_secret BLOB,
        code_tries INTEGER NOT NULL DEFAULT 0,
        last_step INTEGER NOT NULL DEFAULT 0
     ) STRICT;
     CREATE INDEX enrol_links_user ON enrol_links(user);",
    // 5: portal sessions (mfa-web's self-service pages); `key` is the SHA-256 of the cookie.
    "CREATE TABLE web_sessions (
        key BLOB PRIMARY KEY,
        user TEXT NOT NULL,
        created INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        factor_at INTEGER,
        code_tries INTEGER NOT NULL DEFAULT 0,
        csrf TEXT NOT NULL,
        pending_secret BLOB
     ) STRICT;
     CREATE INDEX web_sessions_user ON web_sessions(user);",
    // 6: the login history (the portal's "my recent logins"), kept for `login_history` days.
    "CREATE TABLE logins (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        at INTEGER NOT NULL,
        host TEXT NOT NULL,
        service TEXT NOT NULL,
        rhost TEXT NOT NULL,
        method TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL
     ) STRICT;
     CREATE INDEX logins_user ON logins(user, at);
     CREATE INDEX logins_at ON logins(at);",
    // 7: WebAuthn security keys for the portal (`webauthn`: the credential, JSON, in
    // `address`; its signature counter in `counter`). The devices table is rebuilt as in 3.
    "CREATE TABLE devices_new (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        kind TEXT NOT NULL
            CHECK (kind IN ('totp', 'hotp', 'phone', 'push', 'security-key', 'webauthn')),
        name TEXT NOT NULL,
        secret BLOB,
        algorithm TEXT,
        digits INTEGER,
        period INTEGER,
        counter INTEGER NOT NULL DEFAULT 0,
        -- phone: an E.164 number; push: the notifier's target; security-key: TYPE BASE64;
        -- webauthn: the credential (public key, id), JSON
        address TEXT,
        is_default INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL,
        sealed INTEGER NOT NULL DEFAULT 0
     ) STRICT;
     INSERT INTO devices_new (id, user, kind, name, secret, algorithm, digits, period,
                              counter, address, is_default, created, sealed)
        SELECT id, user, kind, name, secret, algorithm, digits, period,
               counter, address, is_default, created, sealed FROM devices;
     DROP TABLE devices;
     ALTER TABLE devices_new RENAME TO devices;
     CREATE UNIQUE INDEX devices_one_default ON devices(user) WHERE is_default = 1;
     CREATE INDEX devices_user ON devices(user);",
];

/// The login history's own database ([`history_path`]); `PRAGMA user_version` records how
/// many of these have run. The table was the store's own before (its migration 6): the
/// first open of the history moves those rows here ([`HistoryDb::move_from_store`]).
const HISTORY_MIGRATIONS: &[&str] = &[
    // 1: the table and indexes the store's migration 6 made.
    MIGRATIONS[5],
];

/// Where the login history of the store at `store` is kept: beside it, `-history` added
/// to its name before the extension (`/var/lib/mfa/mfa.db`: `/var/lib/mfa/mfa-history.db`).
pub fn history_path(store: &Path) -> PathBuf {
    let stem = store
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match store.extension() {
        Some(ext) => format!("{stem}-history.{}", ext.to_string_lossy()),
        None => format!("{stem}-history"),
    };
    store.with_file_name(name)
}

/// The login history's database: opened at its first use (a store opened only to be
/// migrated or restored never makes one), on a connection of its own.
struct HistoryDb {
    /// The store's file (None: in memory, and so is the history).
    store: Option<PathBuf>,
    conn: Option<Connection>,
}

impl HistoryDb {
    /// The connection, opened now if it is not yet.
    fn conn(&mut self) -> Result<&mut Connection, StoreError> {
        if self.conn.is_none() {
            self.conn = Some(HistoryDb::open(self.store.as_deref())?);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("the login history is not open".into()))
    }

    /// Opens (creating if needed, mode 0600) the history beside the store at `store`, or
    /// in memory, brings its schema up to date, and moves into it the rows a store of an
    /// older version kept itself. Its commits are not fsynced one by one (WAL, `synchronous
    /// = NORMAL`; SQLite's own checkpoints): a crash may lose its last rows, never the
    /// store's, and a file it left is consistent.
    fn open(store: Option<&Path>) -> Result<Connection, StoreError> {
        let conn = match store {
            Some(store) => {
                let path = history_path(store);
                create_private(&path)?;
                let conn = Connection::open(&path)?;
                let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                conn
            }
            None => Connection::open_in_memory()?,
        };
        conn.busy_timeout(BUSY)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > HISTORY_MIGRATIONS.len() as i64 {
            return Err(StoreError::TooNew(version));
        }
        for (i, sql) in HISTORY_MIGRATIONS.iter().enumerate().skip(version as usize) {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;",
                i + 1
            ))?;
        }
        if let Some(store) = store {
            HistoryDb::move_from_store(&conn, store)?;
        }
        Ok(conn)
    }

    /// Moves the rows of the store's own `logins` table (kept there before the history had
    /// its own file) here, and drops that table. Each file commits on its own: a crash
    /// between the two leaves the rows in both, and the next open copies none twice (same
    /// ids).
    fn move_from_store(conn: &Connection, store: &Path) -> Result<(), StoreError> {
        conn.execute("ATTACH DATABASE ?1 AS store", [store.to_string_lossy()])?;
        let moved = (|| -> Result<(), StoreError> {
            let old: i64 = conn.query_row(
                "SELECT count(*) FROM store.sqlite_master WHERE type = 'table' AND name = 'logins'",
                [],
                |r| r.get(0),
            )?;
            if old > 0 {
                conn.execute_batch(
                    "BEGIN IMMEDIATE;
                     INSERT OR IGNORE INTO main.logins
                        (id, user, at, host, service, rhost, method, outcome, detail)
                        SELECT id, user, at, host, service, rhost, method, outcome, detail
                        FROM store.logins;
                     DROP TABLE store.logins;
                     COMMIT;",
                )?;
            }
            Ok(())
        })();
        if moved.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        conn.execute_batch("DETACH DATABASE store")?;
        moved
    }
}

/// Creates the file at `path` (and its directory, mode 0700) with mode 0600 if it does not
/// exist, so that it never exists with a looser mode; tightens the mode of one that does.
fn create_private(path: &Path) -> Result<(), StoreError> {
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
    Ok(())
}

/// How long a handle waits for another handle's transaction to end (as SQLite's own busy
/// timeout would for another connection).
const BUSY: Duration = Duration::from_secs(5);

/// Pages in the WAL after which a checkpoint falls due, as SQLite's own autocheckpoint
/// (about 4 MiB of 4 KiB pages: some 500 logins' commits of one to three pages, or a few
/// history batches). Counted in pages, not commits: the login history commits hundreds of
/// rows at once, and a node serving only logins that need no code writes nothing else.
const CHECKPOINT_FRAMES: u64 = 1000;

thread_local! {
    /// The pages in the WAL after the last commit made on this thread, as SQLite's WAL hook
    /// reports it within that commit ([`note_wal_frames`]); taken by [`Held`]'s drop on the
    /// same thread, before the connection is given back.
    static WAL_FRAMES: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// SQLite's WAL hook: called on the committing thread after each commit with the pages now
/// in the WAL (setting it turns SQLite's own autocheckpoint off; mfad runs its own).
fn note_wal_frames(_: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.set(Some(u64::try_from(frames).unwrap_or(0)));
    Ok(())
}

/// Bytes the WAL is written out to (zeros) when mfad opens the database: a login's commit
/// then overwrites blocks the file already has, and its fsync flushes those alone. A
/// commit that grows the file also makes the file system commit its journal for the new
/// blocks and the new size: measured on this project's ext4 machines, an fdatasync after a
/// 4 KiB append took 290–430 µs where one after a 4 KiB overwrite took 155–250 µs. A
/// checkpoint falls due at [`CHECKPOINT_FRAMES`] pages of WAL (4 MiB), after
/// which SQLite writes the WAL from its start again (it never shrinks it: no
/// `journal_size_limit`), so 8 MiB covers the WAL of a busy store.
pub const WAL_PRESIZE: u64 = 8 << 20;

/// Free space the file system must keep beyond [`WAL_PRESIZE`] for the WAL to be written
/// out: on a nearly full disk the room is left to the database and its checkpoints.
const WAL_PRESIZE_HEADROOM: u64 = 10 * WAL_PRESIZE;

/// Bytes free to an unprivileged writer on the file system `fs` describes.
fn free_bytes(fs: &nix::sys::statvfs::Statvfs) -> u64 {
    fs.blocks_available().saturating_mul(fs.fragment_size())
}

/// Whether a WAL `wal_len` bytes long may be written out to [`WAL_PRESIZE`] with `free`
/// bytes free: the rest of the room and [`WAL_PRESIZE_HEADROOM`] must be.
fn wal_fits(free: u64, wal_len: u64) -> bool {
    free >= WAL_PRESIZE.saturating_sub(wal_len) + WAL_PRESIZE_HEADROOM
}

/// What [`presize_wal`] did.
#[derive(Debug, PartialEq, Eq)]
enum Presized {
    /// The WAL is [`WAL_PRESIZE`] long or longer.
    Done,
    /// Less than the room and [`WAL_PRESIZE_HEADROOM`] was free: nothing written.
    LowOnSpace { available: u64 },
}

/// Writes zeros from the end of the WAL at `wal_path` up to [`WAL_PRESIZE`] and fsyncs it,
/// holding SQLite's write lock (`BEGIN IMMEDIATE`) so that no other connection, in this
/// process or another, appends a frame meanwhile. Zeros past the last frame are what SQLite
/// itself leaves there after it restarts the WAL (frames that fail its checksum): recovery
/// after a crash reads frames up to the first invalid one and stops. Nothing is written on a
/// file system with less than the room and [`WAL_PRESIZE_HEADROOM`] free.
fn presize_wal(conn: &Connection, wal_path: &Path) -> std::io::Result<Presized> {
    use std::os::unix::fs::FileExt;
    let sql = |e: rusqlite::Error| std::io::Error::other(e.to_string());
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql)?;
    let written = (|| {
        let file = OpenOptions::new().write(true).open(wal_path)?;
        let mut at = file.metadata()?.len();
        if at >= WAL_PRESIZE {
            return Ok(Presized::Done);
        }
        let fs = nix::sys::statvfs::fstatvfs(&file).map_err(std::io::Error::from)?;
        let available = free_bytes(&fs);
        if !wal_fits(available, at) {
            return Ok(Presized::LowOnSpace { available });
        }
        let zeros = vec![0u8; 1 << 20];
        while at < WAL_PRESIZE {
            let n = (WAL_PRESIZE - at).min(zeros.len() as u64);
            file.write_all_at(&zeros[..n as usize], at)?;
            at += n;
        }
        file.sync_all()?;
        Ok(Presized::Done)
    })();
    // Nothing was written through SQLite: the end of the transaction only drops the lock.
    conn.execute_batch("ROLLBACK").map_err(sql)?;
    written
}

/// Runs one of SQLite's transaction statements (`BEGIN`, `COMMIT`, `ROLLBACK`) prepared once
/// and kept in the connection's statement cache: rusqlite's `execute_batch` and
/// `Transaction` parse it again at each call, and a login runs four of them.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// A read transaction on the connection (one WAL read lock for all its reads), rolled back
/// when dropped without [`ReadTx::commit`], whatever ended it.
struct ReadTx<'c> {
    conn: &'c Connection,
}

impl<'c> ReadTx<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<ReadTx<'c>> {
        control(conn, "BEGIN")?;
        Ok(ReadTx { conn })
    }

    fn commit(self) -> rusqlite::Result<()> {
        // On failure the transaction is still open: the drop rolls it back.
        control(self.conn, "COMMIT")
    }
}

impl std::ops::Deref for ReadTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for ReadTx<'_> {
    fn drop(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = control(self.conn, "ROLLBACK");
        }
    }
}

/// One handle on the shared SQLite connection.
pub struct SqliteBackend {
    shared: Arc<Shared>,
    /// Tells this handle's transaction apart from the others'.
    id: u64,
    /// Whether this handle opened a transaction ([`Backend::begin`]) not yet ended.
    in_tx: bool,
    /// Never wait: see the module's documentation.
    inline: bool,
    /// Set inline, the last commit this handle made (0: none), not yet known to be on disk.
    unsynced: u64,
}

/// The connection, and the WAL's durability, shared by all handles.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a transaction ends (the connection is free again).
    free: Condvar,
    /// Commits made so far (each one numbered; durable once `synced` reaches it).
    commits: AtomicU64,
    sync: Mutex<SyncState>,
    synced_cv: Condvar,
    /// The WAL file (None in memory: nothing to make durable).
    wal: Option<std::fs::File>,
    /// Tells waiting tasks that an fsync ended (its value: how many have).
    synced_tx: tokio::sync::watch::Sender<u64>,
    /// Whether checkpoints are taken out of the commits ([`Shared::hold`]; false in
    /// memory, where SQLite's own autocheckpoint stays).
    checkpoints: bool,
    /// The pages in the WAL after the last commit ([`note_wal_frames`]).
    wal_frames: AtomicU64,
    /// A checkpoint is due: inline use waits for nothing, so it steps aside
    /// ([`StoreError::WouldBlock`]) and the next blocking use runs it ([`Shared::hold`]).
    checkpoint_due: std::sync::atomic::AtomicBool,
    next_id: AtomicU64,
    /// Raised each time the connection is let go of ([`Backend::released`]).
    released: Arc<tokio::sync::Notify>,
    /// The login history, apart from the logins' connection (see the module's documentation).
    history: Mutex<HistoryDb>,
}

struct State {
    conn: Connection,
    /// The handle whose transaction is open, if any.
    owner: Option<u64>,
    /// Blocking uses waiting in [`Shared::hold`] for another's transaction to end: the
    /// condvar is signalled only when there are some (a signal costs a system call even
    /// when nobody waits).
    waiting: usize,
    /// Recent logins' reads, while the database is as they found it.
    reads: ReadsCache,
}

#[derive(Default)]
struct SyncState {
    /// Every commit numbered up to this one is on disk.
    synced: u64,
    /// Whether an fsync of the WAL is running (its caller syncs for everyone waiting).
    syncing: bool,
    /// An fsync failed: what the kernel had not written may be lost, so no later write is
    /// reported durable (mfad needs a restart, which reopens the database).
    failed: Option<String>,
    /// Blocking callers waiting in [`Shared::durable`] for an fsync to end (see
    /// [`State::waiting`]).
    waiting: usize,
}

/// The connection, held for one statement or one handle's transaction.
struct Held<'a> {
    guard: MutexGuard<'a, State>,
    /// Where the WAL's length after a commit made while held is left ([`Shared::wal_frames`]).
    frames: &'a AtomicU64,
    /// Taken inline: SQLite's busy timeout is off until it is given back.
    inline: bool,
    /// Dropped after `guard` (fields drop in order): tells inline users waiting for the
    /// connection that it is free.
    _release: Release<'a>,
}

/// Raises [`Shared::released`] when dropped.
struct Release<'a>(&'a tokio::sync::Notify);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(frames) = WAL_FRAMES.take() {
            self.frames.store(frames, Ordering::SeqCst);
        }
        if self.inline {
            let _ = self.guard.conn.busy_timeout(BUSY);
        }
    }
}

impl std::ops::Deref for Held<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Unavailable("the store's connection was left in an unknown state".into())
}

impl Shared {
    /// Waits until commit number `seq` is on disk: runs the fsync itself when none is
    /// running, else waits for the running one and, if that began before `seq` was
    /// committed, for the next.
    fn durable(&self, seq: u64) -> Result<(), StoreError> {
        let Some(wal) = &self.wal else {
            return Ok(());
        };
        let mut s = self.sync.lock().map_err(poisoned)?;
        loop {
            if let Some(why) = &s.failed {
                return Err(StoreError::Unavailable(format!(
                    "writing the database's log to disk failed earlier ({why}); restart mfad"
                )));
            }
            if s.synced >= seq {
                return Ok(());
            }
            if !s.syncing {
                s.syncing = true;
                drop(s);
                self.sync_once(wal)?;
                s = self.sync.lock().map_err(poisoned)?;
                continue;
            }
            s.waiting += 1;
            s = self.synced_cv.wait(s).map_err(poisoned)?;
            s.waiting -= 1;
        }
    }

    /// [`Shared::durable`] for a task: waits without holding a thread, but when no fsync
    /// is running, runs it itself (on its own thread, which the runtime has handed its
    /// other tasks away from: see [`crate::blocking`]).
    async fn durable_async(self: Arc<Self>, seq: u64) -> Result<(), StoreError> {
        if self.wal.is_none() {
            return Ok(());
        }
        loop {
            // Subscribed before the state is read: an fsync that ends after the read wakes
            // this task.
            let mut ended = self.synced_tx.subscribe();
            let lead = {
                let mut s = self.sync.lock().map_err(poisoned)?;
                if let Some(why) = &s.failed {
                    return Err(StoreError::Unavailable(format!(
                        "writing the database's log to disk failed earlier ({why}); restart mfad"
                    )));
                }
                if s.synced >= seq {
                    return Ok(());
                }
                !std::mem::replace(&mut s.syncing, true)
            };
            if lead {
                // On this task's own thread (no hand-off on the login's path); runs to its
                // end even if the task is dropped meanwhile, so `syncing` is always put back.
                let shared = Arc::clone(&self);
                crate::blocking::run_in_place(move || match &shared.wal {
                    Some(wal) => shared.sync_once(wal),
                    None => Ok(()),
                })
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))??;
                continue;
            }
            let _ = ended.changed().await;
        }
    }

    /// One fsync of the WAL by the caller that set `syncing`: covers every commit numbered
    /// before it begins (numbers are given after COMMIT returns, so their pages are in the
    /// WAL already), then wakes everyone waiting and asks for a checkpoint when due.
    fn sync_once(&self, wal: &std::fs::File) -> Result<(), StoreError> {
        let target = self.commits.load(Ordering::SeqCst);
        let result = wal.sync_data();
        let mut s = self.sync.lock().map_err(poisoned)?;
        s.syncing = false;
        match result {
            Ok(()) => s.synced = s.synced.max(target),
            Err(e) => s.failed = Some(e.to_string()),
        }
        let wake = s.waiting > 0;
        drop(s);
        if wake {
            self.synced_cv.notify_all();
        }
        self.synced_tx.send_modify(|n| *n = n.wrapping_add(1));
        if self.checkpoints && self.wal_frames.swap(0, Ordering::SeqCst) >= CHECKPOINT_FRAMES {
            self.checkpoint_due.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// The connection, once no transaction but `id`'s holds it (waits up to [`BUSY`]). A
    /// checkpoint due is run first, the connection held: copying the WAL back into the
    /// database file (which fsyncs both) is then some blocking thread's work, as SQLite's
    /// autocheckpoint is a committing connection's, never inline work's; and no commit
    /// slips in, so the WAL is copied whole and the next commit starts it afresh.
    fn hold(&self, id: u64) -> Result<Held<'_>, StoreError> {
        let mut guard = self.state.lock().map_err(poisoned)?;
        let deadline = Instant::now() + BUSY;
        while guard.owner.is_some_and(|o| o != id) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Unavailable(
                    "the store stayed busy with another login's transaction".into(),
                ));
            }
            guard.waiting += 1;
            guard = self.free.wait_timeout(guard, left).map_err(poisoned)?.0;
            guard.waiting -= 1;
        }
        if guard.owner.is_none() && self.checkpoint_due.swap(false, Ordering::SeqCst) {
            let done = guard
                .conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            if let Err(e) = done {
                tracing::warn!("checkpoint of the database's log failed: {e}");
            }
        }
        Ok(Held {
            guard,
            frames: &self.wal_frames,
            inline: false,
            _release: Release(&self.released),
        })
    }
}

impl SqliteBackend {
    /// Opens (creating if needed) the database at `path`: its directory with mode 0700, the
    /// file with mode 0600, then brings the schema up to date and seals what older versions
    /// stored in clear with `key`.
    pub fn open(path: &Path, key: &StoreKey) -> Result<SqliteBackend, StoreError> {
        create_private(path)?;
        SqliteBackend::init(Connection::open(path)?, key, Some(path))
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory(key: &StoreKey) -> Result<SqliteBackend, StoreError> {
        SqliteBackend::init(Connection::open_in_memory()?, key, None)
    }

    fn init(
        conn: Connection,
        key: &StoreKey,
        path: Option<&Path>,
    ) -> Result<SqliteBackend, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Every statement of a login's path is prepared once and kept (about 15 of them):
        // parsing SQL was a tenth of mfad's instructions per login.
        conn.set_prepared_statement_cache_capacity(32);
        // WAL keeps readers off the writer's back. SQLite does not fsync at COMMIT
        // (synchronous=NORMAL); the handles fsync the WAL themselves before any write is
        // reported done ([`Shared::durable`]), so concurrent commits share one fsync.
        // Checkpoints still fsync the WAL and the database file first.
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        let grouped = path.is_some() && mode.eq_ignore_ascii_case("wal");
        conn.pragma_update(None, "synchronous", if grouped { "NORMAL" } else { "FULL" })?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut backend = SqliteBackend {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    conn,
                    owner: None,
                    waiting: 0,
                    reads: ReadsCache::default(),
                }),
                free: Condvar::new(),
                commits: AtomicU64::new(0),
                sync: Mutex::new(SyncState::default()),
                synced_cv: Condvar::new(),
                wal: None,
                synced_tx: tokio::sync::watch::Sender::new(0),
                checkpoints: false,
                wal_frames: AtomicU64::new(0),
                checkpoint_due: std::sync::atomic::AtomicBool::new(false),
                next_id: AtomicU64::new(1),
                released: Arc::new(tokio::sync::Notify::new()),
                history: Mutex::new(HistoryDb {
                    store: path.map(Path::to_path_buf),
                    conn: None,
                }),
            }),
            id: 0,
            in_tx: false,
            inline: false,
            unsynced: 0,
        };
        backend.migrate()?;
        backend.seal_legacy(key)?;
        if grouped && let Some(path) = path {
            let mut wal_path = path.as_os_str().to_owned();
            wal_path.push("-wal");
            // The migrations above wrote through the WAL, so it exists; it stays (the same
            // file) while this connection is open.
            let wal = std::fs::File::open(&wal_path).map_err(|source| StoreError::Prepare {
                path: path.display().to_string(),
                source,
            })?;
            wal.sync_data().map_err(|source| StoreError::Prepare {
                path: path.display().to_string(),
                source,
            })?;
            // Only a gain in speed: a store that cannot have it is served all the same,
            // unless its write lock could not be given back.
            let held = backend.lock()?;
            let presized = presize_wal(&held.conn, Path::new(&wal_path));
            if !held.conn.is_autocommit() {
                let why = match &presized {
                    Err(e) => format!(": {e}"),
                    Ok(_) => String::new(),
                };
                return Err(StoreError::Unavailable(format!(
                    "the database stayed in a transaction after its log was written out{why}"
                )));
            }
            drop(held);
            match presized {
                Ok(Presized::Done) => {}
                Ok(Presized::LowOnSpace { available }) => tracing::info!(
                    "{} MiB free beside the database: its log is not written out ahead \
                     (each login's fsync then also commits the file's new blocks)",
                    available >> 20
                ),
                Err(e) => tracing::warn!(
                    "writing the database's log out ahead failed ({e}); logins go on, \
                     their fsyncs costing a little more"
                ),
            }
            // A commit never runs a checkpoint by itself (it fsyncs the WAL and the
            // database file): see [`Shared::hold`].
            match Arc::get_mut(&mut backend.shared) {
                Some(shared) => {
                    shared.wal = Some(wal);
                    shared.checkpoints = true;
                }
                None => return Err(StoreError::Unavailable("store opened twice".into())),
            }
            // Each commit reports the WAL's length instead, and a checkpoint falls due by it.
            let held = backend.lock()?;
            held.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            held.conn.wal_hook(Some(note_wal_frames));
        }
        Ok(backend)
    }

    /// Another handle on the same connection (for another conversation at the same time).
    pub fn handle(&self) -> SqliteBackend {
        SqliteBackend {
            shared: self.shared.clone(),
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            in_tx: false,
            inline: false,
            unsynced: 0,
        }
    }

    /// The connection, once no other handle's transaction holds it (waits up to [`BUSY`]).
    /// Inline, it waits for nothing: [`StoreError::WouldBlock`] when the connection is
    /// taken or another handle's transaction holds it, and SQLite's busy timeout is off
    /// (another process's write lock: SQLITE_BUSY at once). Within this handle's own
    /// transaction the others only ever hold the mutex for a moment: taken as usual.
    fn lock(&self) -> Result<Held<'_>, StoreError> {
        if self.inline && !self.in_tx {
            if self.shared.checkpoint_due.load(Ordering::SeqCst) {
                return Err(StoreError::WouldBlock);
            }
            let guard = match self.shared.state.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::WouldBlock) => return Err(StoreError::WouldBlock),
                Err(TryLockError::Poisoned(e)) => return Err(poisoned(e)),
            };
            if guard.owner.is_some_and(|o| o != self.id) {
                return Err(StoreError::WouldBlock);
            }
            guard.conn.busy_timeout(Duration::ZERO)?;
            return Ok(Held {
                guard,
                frames: &self.shared.wal_frames,
                inline: true,
                _release: Release(&self.shared.released),
            });
        }
        self.lock_waiting()
    }

    /// The connection, once no other handle's transaction holds it (waits up to [`BUSY`]).
    fn lock_waiting(&self) -> Result<Held<'_>, StoreError> {
        self.shared.hold(self.id)
    }

    /// After a write outside [`Backend::begin`]: numbers it and waits until it is on disk
    /// (inline: notes it for [`Backend::take_unsynced`]). Inside a transaction,
    /// [`Backend::commit`] does this once for all its writes.
    fn written(&mut self) -> Result<(), StoreError> {
        if self.in_tx {
            return Ok(());
        }
        let seq = self.shared.commits.fetch_add(1, Ordering::SeqCst) + 1;
        if self.inline {
            self.unsynced = seq;
            return Ok(());
        }
        self.shared.durable(seq)
    }

    /// One statement on its own; returns the rows it changed. A statement that changed
    /// nothing (a spend that lost, nothing to clear) wrote nothing to wait for.
    fn change(&mut self, sql: &str, params: impl rusqlite::Params) -> Result<usize, StoreError> {
        let n = self.lock()?.conn.prepare_cached(sql)?.execute(params)?;
        if n > 0 {
            self.written()?;
        }
        Ok(n)
    }

    /// Several statements as one change (a savepoint inside the caller's transaction, if
    /// any), durable before it returns.
    fn change_all<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Savepoint<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.lock()?;
        let tx = guard.conn.savepoint()?;
        let value = f(&tx)?;
        tx.commit()?;
        drop(guard);
        self.written()?;
        Ok(value)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let mut guard = self.lock()?;
        let tx = guard
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

    /// Checks that the database belongs to this key (recording the key's check value in a
    /// new database), then seals what older versions stored in clear: TOTP/HOTP keys are
    /// encrypted and one-time code hashes keyed. One transaction: all rows or none.
    fn seal_legacy(&mut self, key: &StoreKey) -> Result<(), StoreError> {
        let mut guard = self.lock()?;
        let tx = guard
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        check_key(&tx, &key.check_value())?;
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
                params![id, key.seal(&secret, &user)],
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
                    params![id, &key.code_tag(&hash)[..]],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn codes(
        &mut self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<CodeRecord>, StoreError> {
        codes(&self.lock()?.conn, sql, args)
    }
}

fn codes(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<CodeRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok(CodeRecord {
            id: r.get(0)?,
            salt: r.get(1)?,
            tag: r.get(2)?,
            used: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn lock_state(conn: &Connection, user: &str) -> Result<LockState, StoreError> {
    Ok(conn
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

fn devices(conn: &Connection, user: &str) -> Result<Vec<DeviceRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, name, secret, algorithm, digits, period, counter, address,
                is_default, created
         FROM devices WHERE user = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([user], device_record)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

const BYPASS_CODES: &str = "SELECT id, salt, hash, used_at IS NOT NULL FROM bypass_codes
                            WHERE user = ?1 ORDER BY id";

fn is_remembered(conn: &Connection, l: &Remembered<'_>, now: i64) -> Result<bool, StoreError> {
    let (user, scope, addr, key) = (l.user, l.scope, l.addr, l.key);
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM remembered
              WHERE user = ?1 AND scope = ?2 AND addr = ?3 AND key = ?4 AND until > ?5)",
        )?
        .query_row(params![user, scope, addr, key, now], |r| r.get(0))?)
}

/// Where the database stands for `conn` (see `reads_cache`): in a transaction, where its
/// reads stand.
fn stamp(conn: &Connection) -> Result<Stamp, StoreError> {
    let version = conn
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))?;
    Ok(Stamp {
        version,
        changes: conn.total_changes(),
    })
}

/// A login's reads ([`Backend::login_reads`]) on `conn`, as they stand.
fn login_reads(
    conn: &Connection,
    user: &str,
    remembered: Option<&Remembered<'_>>,
    now: i64,
) -> Result<LoginReads, StoreError> {
    Ok(LoginReads {
        lock: lock_state(conn, user)?,
        devices: devices(conn, user)?,
        bypass_codes: codes(conn, BYPASS_CODES, [user])?,
        remembered: match remembered {
            Some(l) => is_remembered(conn, l, now)?,
            None => false,
        },
    })
}

fn check_key(tx: &Connection, check: &[u8; 32]) -> Result<(), StoreError> {
    let stored: Option<Vec<u8>> = tx
        .query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match stored {
        Some(v) if bool::from(v.as_slice().ct_eq(&check[..])) => Ok(()),
        Some(_) => Err(StoreError::WrongKey),
        None => {
            tx.execute(
                "INSERT INTO meta(key, value) VALUES ('key_check', ?1)",
                [&check[..]],
            )?;
            Ok(())
        }
    }
}

fn insert_device(tx: &Connection, d: &NewDeviceRecord, now: i64) -> Result<i64, StoreError> {
    let has_default: bool = tx
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM devices WHERE user = ?1 AND is_default = 1)")?
        .query_row([&d.user], |r| r.get(0))?;
    tx.prepare_cached(
        "INSERT INTO devices(user, kind, name, secret, algorithm, digits, period, counter,
                             address, is_default, created, sealed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1)",
    )?
    .execute(params![
        d.user,
        d.kind,
        d.name,
        d.sealed_secret,
        d.algorithm,
        d.digits,
        d.period,
        d.counter,
        d.address,
        !has_default,
        now
    ])?;
    Ok(tx.last_insert_rowid())
}

impl Backend for SqliteBackend {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn handle(&self) -> Option<Box<dyn Backend>> {
        Some(Box::new(SqliteBackend::handle(self)))
    }

    fn set_inline(&mut self, on: bool) -> bool {
        self.inline = on;
        true
    }

    fn released(&self) -> Option<Arc<tokio::sync::Notify>> {
        (!self.shared.checkpoint_due.load(Ordering::SeqCst))
            .then(|| Arc::clone(&self.shared.released))
    }

    fn take_unsynced(&mut self) -> Option<super::backend::DurableFuture> {
        let seq = std::mem::take(&mut self.unsynced);
        (seq > 0).then(|| {
            let fut: super::backend::DurableFuture =
                Box::pin(Arc::clone(&self.shared).durable_async(seq));
            fut
        })
    }

    fn is_broken(&self) -> bool {
        // A handle given back with its transaction still open (its caller panicked): the
        // pool drops it, and dropping it ends that transaction.
        self.in_tx
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        let mut held = self.lock()?;
        control(&held.conn, "BEGIN IMMEDIATE")?;
        held.owner = Some(self.id);
        drop(held);
        self.in_tx = true;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let mut held = self.lock()?;
        // On failure the transaction stays this handle's until `rollback`.
        control(&held.conn, "COMMIT")?;
        held.owner = None;
        let wake = held.waiting > 0;
        drop(held);
        self.in_tx = false;
        if wake {
            self.shared.free.notify_all();
        }
        // Answered only once the WAL holding this commit is on disk.
        self.written()
    }

    fn rollback(&mut self) {
        if !self.in_tx {
            return;
        }
        self.in_tx = false;
        // Taken as usual even inline: the transaction must end.
        let wake = match self.lock_waiting() {
            Ok(mut held) => {
                if held.owner == Some(self.id) {
                    let _ = control(&held.conn, "ROLLBACK");
                    held.owner = None;
                }
                held.waiting > 0
            }
            Err(_) => true,
        };
        if wake {
            self.shared.free.notify_all();
        }
    }

    fn schema_version(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .lock()?
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn check_key(&mut self, check: &[u8; 32]) -> Result<(), StoreError> {
        check_key(&self.lock()?.conn, check)?;
        self.written()
    }

    fn lock_state(&mut self, user: &str) -> Result<LockState, StoreError> {
        lock_state(&self.lock()?.conn, user)
    }

    fn login_reads(
        &mut self,
        user: &str,
        remembered: Option<&Remembered<'_>>,
        now: i64,
    ) -> Result<LoginReads, StoreError> {
        let mut held = self.lock()?;
        if self.in_tx {
            // The caller's transaction is the snapshot already.
            return login_reads(&held.conn, user, remembered, now);
        }
        let State { conn, reads, .. } = &mut *held;
        // Kept reads, while nothing has changed the database since (see `reads_cache`);
        // not for a remembered login, whose answer depends on the time too. When the copy
        // may have them (none of mfad's own changes since, the user in it), where the
        // database stands is read alone, one statement in a read transaction of its own:
        // the copy answers when nothing else has changed the database either.
        if remembered.is_none() && reads.may_have(user, conn.total_changes()) {
            let at = stamp(conn)?;
            if let Some(kept) = reads.get(user, at) {
                return Ok(kept);
            }
        }
        // One read transaction (one WAL read lock), ended before the connection is given
        // back, whatever happens. Where the database stands is read in it, with the rows.
        let tx = ReadTx::begin(conn)?;
        let at = match remembered {
            None => Some(stamp(&tx)?),
            Some(_) => None,
        };
        let found = login_reads(&tx, user, remembered, now)?;
        tx.commit()?;
        if let Some(at) = at {
            reads.put(user, at, &found);
        }
        Ok(found)
    }

    fn record_failure(&mut self, f: &Failure<'_>) -> Result<FailureEffect, StoreError> {
        let (user, now, max_failures, duration) = (f.user, f.now, f.max_failures, f.duration);
        self.change_all(|tx| {
            let failures: u32 = tx
                .prepare_cached(
                    "INSERT INTO users(name, failures) VALUES (?1, 1)
                     ON CONFLICT(name) DO UPDATE SET failures = failures + 1
                     RETURNING failures",
                )?
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
            Ok(effect)
        })
    }

    fn clear_failures(&mut self, user: &str) -> Result<(), StoreError> {
        self.change(
            "UPDATE users SET failures = 0 WHERE name = ?1 AND failures <> 0",
            [user],
        )?;
        Ok(())
    }

    fn unlock(&mut self, user: &str) -> Result<bool, StoreError> {
        self.change_all(|tx| {
            let n = tx.execute(
                "UPDATE users SET failures = 0, locked_until = NULL
                 WHERE name = ?1 AND (failures <> 0 OR locked_until IS NOT NULL)",
                [user],
            )?;
            tx.execute("DELETE FROM remembered WHERE user = ?1", [user])?;
            Ok(n > 0)
        })
    }

    fn lock_until(&mut self, user: &str, until: i64) -> Result<(), StoreError> {
        self.change_all(|tx| {
            tx.execute(
                "INSERT INTO users(name, failures, locked_until) VALUES (?1, 0, ?2)
                 ON CONFLICT(name) DO UPDATE SET locked_until = max(coalesce(locked_until, 0), ?2)",
                params![user, until],
            )?;
            tx.execute("DELETE FROM remembered WHERE user = ?1", [user])?;
            Ok(())
        })
    }

    fn forget_remembered(&mut self, user: &str) -> Result<usize, StoreError> {
        let n = self.change("DELETE FROM remembered WHERE user = ?1", [user])?;
        Ok(n)
    }

    fn locked_users(&mut self, now: i64) -> Result<i64, StoreError> {
        Ok(self.lock()?.conn.query_row(
            "SELECT count(*) FROM users WHERE locked_until > ?1",
            [now],
            |r| r.get(0),
        )?)
    }

    fn locked_accounts(
        &mut self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<(String, u32, i64)>, StoreError> {
        let held = self.lock()?;
        let mut stmt = held.conn.prepare_cached(
            "SELECT name, failures, locked_until FROM users WHERE locked_until > ?1
             ORDER BY name LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn replace_sms_code(&mut self, code: &NewSmsCode<'_>) -> Result<(), StoreError> {
        let (user, salt, tag, now, expires) =
            (code.user, code.salt, code.tag, code.now, code.expires);
        self.change_all(|tx| {
            tx.execute(
                "DELETE FROM sms_codes WHERE user = ?1 AND (used_at IS NULL OR expires <= ?2)",
                params![user, now],
            )?;
            tx.execute(
                "INSERT INTO sms_codes(user, salt, hash, expires, keyed) VALUES (?1, ?2, ?3, ?4, 1)",
                params![user, salt, tag, expires],
            )?;
            Ok(())
        })
    }

    fn sms_codes(&mut self, user: &str, now: i64) -> Result<Vec<CodeRecord>, StoreError> {
        self.codes(
            "SELECT id, salt, hash, used_at IS NOT NULL FROM sms_codes
             WHERE user = ?1 AND expires > ?2 ORDER BY id",
            params![user, now],
        )
    }

    fn spend_sms_code(&mut self, id: i64, now: i64) -> Result<bool, StoreError> {
        let n = self.change(
            "UPDATE sms_codes SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL AND expires > ?2",
            params![id, now],
        )?;
        Ok(n == 1)
    }

    fn add_enrol_link(&mut self, link: &NewEnrolLink<'_>) -> Result<(), StoreError> {
        let (key, user, now, expires) = (link.key, link.user, link.now, link.expires);
        self.change_all(|tx| {
            tx.execute(
                "DELETE FROM enrol_links WHERE expires <= ?2 OR (user = ?1 AND used_at IS NULL)",
                params![user, now],
            )?;
            tx.execute(
                "INSERT INTO enrol_links(key, user, created, expires) VALUES (?1, ?2, ?3, ?4)",
                params![key, user, now, expires],
            )?;
            Ok(())
        })
    }

    fn enrol_link(
        &mut self,
        key: &[u8; 32],
        now: i64,
    ) -> Result<Option<EnrolLinkRecord>, StoreError> {
        Ok(self
            .lock()?
            .conn
            .prepare_cached(
                "SELECT user, password_tries, password_ok_at, pending_secret, code_tries,
                        last_step
                 FROM enrol_links WHERE key = ?1 AND used_at IS NULL AND expires > ?2",
            )?
            .query_row(params![&key[..], now], |r| {
                Ok(EnrolLinkRecord {
                    user: r.get(0)?,
                    password_tries: r.get(1)?,
                    password_ok_at: r.get(2)?,
                    sealed_secret: r.get(3)?,
                    code_tries: r.get(4)?,
                    last_step: r.get(5)?,
                })
            })
            .optional()?)
    }

    fn enrol_link_step(
        &mut self,
        key: &[u8; 32],
        step: EnrolLinkStep<'_>,
        now: i64,
    ) -> Result<Option<u32>, StoreError> {
        const LIVE: &str = "key = ?1 AND used_at IS NULL AND expires > ?2";
        let (set, extra): (&str, Option<rusqlite::types::Value>) = match step {
            EnrolLinkStep::Password { max } => (
                "password_tries = password_tries + 1 WHERE password_tries < ?3 AND",
                Some(i64::from(max).into()),
            ),
            EnrolLinkStep::PasswordOk => ("password_ok_at = ?2 WHERE", None),
            EnrolLinkStep::Pending(sealed) => (
                "pending_secret = ?3, code_tries = 0 WHERE",
                Some(sealed.map(<[u8]>::to_vec).into()),
            ),
            EnrolLinkStep::CodeMiss { max } => (
                "code_tries = code_tries + 1, pending_secret = CASE WHEN code_tries + 1 >= ?3 \
                 THEN NULL ELSE pending_secret END WHERE",
                Some(i64::from(max).into()),
            ),
            EnrolLinkStep::Idle => (
                "password_ok_at = NULL, pending_secret = NULL, code_tries = 0 WHERE",
                None,
            ),
        };
        let count = match step {
            EnrolLinkStep::Password { .. } => "password_tries",
            EnrolLinkStep::CodeMiss { .. } => "code_tries",
            _ => "0",
        };
        let sql = format!("UPDATE enrol_links SET last_step = ?2, {set} {LIVE} RETURNING {count}");
        self.change_all(|tx| {
            let mut stmt = tx.prepare_cached(&sql)?;
            let row = match extra {
                Some(v) => stmt.query_row(params![&key[..], now, v], |r| r.get::<_, u32>(0)),
                None => stmt.query_row(params![&key[..], now], |r| r.get::<_, u32>(0)),
            };
            Ok(row.optional()?)
        })
    }

    fn spend_enrol_link(
        &mut self,
        key: &[u8; 32],
        user: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = self.change(
            "UPDATE enrol_links SET used_at = ?3, pending_secret = NULL
             WHERE key = ?1 AND user = ?2 AND used_at IS NULL AND expires > ?3",
            params![&key[..], user, now],
        )?;
        Ok(n == 1)
    }

    fn add_web_session(&mut self, n: &NewWebSession<'_>) -> Result<(), StoreError> {
        self.change_all(|tx| {
            tx.execute(
                "DELETE FROM web_sessions WHERE created < ?1 OR last_seen < ?2",
                params![n.created_before, n.idle_before],
            )?;
            tx.execute(
                "INSERT INTO web_sessions(key, user, created, last_seen, csrf)
                 VALUES (?1, ?2, ?3, ?3, ?4)",
                params![&n.key[..], n.user, n.now, n.csrf],
            )?;
            Ok(())
        })
    }

    fn web_session(&mut self, key: &[u8; 32]) -> Result<Option<WebSessionRecord>, StoreError> {
        Ok(self
            .lock()?
            .conn
            .prepare_cached(
                "SELECT user, created, last_seen, factor_at, code_tries, csrf, pending_secret
                 FROM web_sessions WHERE key = ?1",
            )?
            .query_row(params![&key[..]], |r| {
                Ok(WebSessionRecord {
                    user: r.get(0)?,
                    created: r.get(1)?,
                    last_seen: r.get(2)?,
                    factor_at: r.get(3)?,
                    code_tries: r.get(4)?,
                    csrf: r.get(5)?,
                    pending_secret: r.get(6)?,
                })
            })
            .optional()?)
    }

    fn web_session_step(
        &mut self,
        key: &[u8; 32],
        step: WebSessionStep<'_>,
        now: i64,
    ) -> Result<Option<u32>, StoreError> {
        let key = &key[..];
        self.change_all(|tx| {
            let row = match step {
                WebSessionStep::Touch => tx
                    .prepare_cached(
                        "UPDATE web_sessions SET last_seen = ?2 WHERE key = ?1 RETURNING 0",
                    )?
                    .query_row(params![key, now], |r| r.get::<_, u32>(0)),
                WebSessionStep::Factor => tx
                    .prepare_cached(
                        "UPDATE web_sessions SET last_seen = ?2, factor_at = ?2, code_tries = 0
                         WHERE key = ?1 RETURNING 0",
                    )?
                    .query_row(params![key, now], |r| r.get::<_, u32>(0)),
                WebSessionStep::CodeMiss { max } => tx
                    .prepare_cached(
                        "UPDATE web_sessions SET last_seen = ?2, code_tries = code_tries + 1
                         WHERE key = ?1 AND code_tries < ?3 RETURNING code_tries",
                    )?
                    .query_row(params![key, now, max], |r| r.get::<_, u32>(0)),
                WebSessionStep::End => tx
                    .prepare_cached("DELETE FROM web_sessions WHERE key = ?1 RETURNING 0")?
                    .query_row(params![key], |r| r.get::<_, u32>(0)),
                WebSessionStep::Pending(sealed) => tx
                    .prepare_cached(
                        "UPDATE web_sessions SET last_seen = ?2, pending_secret = ?3
                         WHERE key = ?1 RETURNING 0",
                    )?
                    .query_row(params![key, now, sealed], |r| r.get::<_, u32>(0)),
            };
            Ok(row.optional()?)
        })
    }

    fn remember(&mut self, l: &Remembered<'_>, now: i64, until: i64) -> Result<(), StoreError> {
        let (user, scope, addr, key) = (l.user, l.scope, l.addr, l.key);
        self.change_all(|tx| {
            tx.execute("DELETE FROM remembered WHERE until <= ?1", [now])?;
            tx.execute(
                "INSERT INTO remembered(user, scope, addr, key, until) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(user, scope, addr, key) DO UPDATE SET until = excluded.until",
                params![user, scope, addr, key, until],
            )?;
            Ok(())
        })
    }

    fn is_remembered(&mut self, l: &Remembered<'_>, now: i64) -> Result<bool, StoreError> {
        is_remembered(&self.lock()?.conn, l, now)
    }

    fn reset_user(&mut self, user: &str) -> Result<(), StoreError> {
        self.change_all(|tx| {
            tx.execute("DELETE FROM remembered WHERE user = ?1", [user])?;
            tx.execute("DELETE FROM sms_codes WHERE user = ?1", [user])?;
            tx.execute("DELETE FROM enrol_links WHERE user = ?1", [user])?;
            tx.execute("DELETE FROM web_sessions WHERE user = ?1", [user])?;
            tx.execute("DELETE FROM devices WHERE user = ?1", [user])?;
            tx.execute("DELETE FROM bypass_codes WHERE user = ?1", [user])?;
            tx.execute("DELETE FROM users WHERE name = ?1", [user])?;
            Ok(())
        })
    }

    fn devices(&mut self, user: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        devices(&self.lock()?.conn, user)
    }

    fn add_devices(&mut self, rows: &[NewDeviceRecord], now: i64) -> Result<Vec<i64>, StoreError> {
        self.change_all(|tx| {
            let mut ids = Vec::with_capacity(rows.len());
            for d in rows {
                ids.push(insert_device(tx, d, now)?);
            }
            Ok(ids)
        })
    }

    fn set_default(&mut self, user: &str, device: i64) -> Result<(), StoreError> {
        self.change_all(|tx| {
            tx.execute(
                "UPDATE devices SET is_default = 0 WHERE user = ?1 AND is_default = 1",
                [user],
            )?;
            tx.execute(
                "UPDATE devices SET is_default = 1 WHERE user = ?1 AND id = ?2",
                params![user, device],
            )?;
            Ok(())
        })
    }

    fn rename_device(&mut self, user: &str, device: i64, name: &str) -> Result<bool, StoreError> {
        let n = self.change(
            "UPDATE devices SET name = ?3 WHERE user = ?1 AND id = ?2",
            params![user, device, name],
        )?;
        Ok(n == 1)
    }

    fn record_logins(&mut self, rows: &[LoginRecord], before: i64) -> Result<(), StoreError> {
        let mut history = self.shared.history.lock().map_err(poisoned)?;
        let tx = history.conn()?.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO logins(user, at, host, service, rhost, method, outcome, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for r in rows {
                insert.execute(params![
                    r.user, r.at, r.host, r.service, r.rhost, r.method, r.outcome, r.detail
                ])?;
            }
            tx.execute("DELETE FROM logins WHERE at < ?1", [before])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn recent_logins(&mut self, user: &str, limit: u32) -> Result<Vec<LoginRecord>, StoreError> {
        let mut history = self.shared.history.lock().map_err(poisoned)?;
        let mut stmt = history.conn()?.prepare_cached(
            "SELECT id, user, at, host, service, rhost, method, outcome, detail FROM logins
             WHERE user = ?1 ORDER BY at DESC, id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![user, limit], |r| {
            Ok(LoginRecord {
                id: r.get(0)?,
                user: r.get(1)?,
                at: r.get(2)?,
                host: r.get(3)?,
                service: r.get(4)?,
                rhost: r.get(5)?,
                method: r.get(6)?,
                outcome: r.get(7)?,
                detail: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn remove_device(&mut self, user: &str, device: i64) -> Result<(), StoreError> {
        self.change_all(|tx| {
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
            Ok(())
        })
    }

    fn spend_totp_step(&mut self, device: i64, step: u64) -> Result<bool, StoreError> {
        let n = self.change(
            "UPDATE devices SET counter = ?2 WHERE id = ?1 AND kind = 'totp' AND counter < ?2",
            params![device, step as i64],
        )?;
        Ok(n == 1)
    }

    fn spend_hotp_counter(&mut self, device: i64, counter: u64) -> Result<bool, StoreError> {
        let n = self.change(
            "UPDATE devices SET counter = ?2 + 1
             WHERE id = ?1 AND kind IN ('hotp', 'webauthn') AND counter <= ?2",
            params![device, counter as i64],
        )?;
        Ok(n == 1)
    }

    fn bypass_codes(&mut self, user: &str) -> Result<Vec<CodeRecord>, StoreError> {
        self.codes(BYPASS_CODES, [user])
    }

    fn replace_bypass_codes(&mut self, new: &NewBypassCodes<'_>) -> Result<(), StoreError> {
        let (user, codes, now) = (new.user, new.codes, new.now);
        self.change_all(|tx| {
            tx.execute("DELETE FROM bypass_codes WHERE user = ?1", [user])?;
            for (salt, tag) in codes {
                tx.execute(
                    "INSERT INTO bypass_codes(user, salt, hash, created, keyed)
                     VALUES (?1, ?2, ?3, ?4, 1)",
                    params![user, salt, tag, now],
                )?;
            }
            Ok(())
        })
    }

    fn spend_bypass_code(&mut self, id: i64, now: i64) -> Result<bool, StoreError> {
        let n = self.change(
            "UPDATE bypass_codes SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL",
            params![id, now],
        )?;
        Ok(n == 1)
    }

    fn user_summaries(&mut self) -> Result<Vec<UserSummary>, StoreError> {
        use std::collections::BTreeMap;
        let mut guard = self.lock()?;
        let tx = guard.conn.transaction()?;
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

    fn dump(&mut self) -> Result<Dump, StoreError> {
        let mut guard = self.lock()?;
        let tx = guard.conn.transaction()?;
        let mut dump = Dump::default();
        {
            let mut stmt =
                tx.prepare("SELECT name, failures, locked_until FROM users ORDER BY name")?;
            dump.users = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut stmt = tx.prepare(
                "SELECT id, kind, name, secret, algorithm, digits, period, counter, address,
                        is_default, created, user
                 FROM devices ORDER BY id",
            )?;
            dump.devices = stmt
                .query_map([], |r| Ok((r.get(11)?, device_record(r)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (table, time, out) in [
                ("bypass_codes", "created", &mut dump.bypass_codes),
                ("sms_codes", "expires", &mut dump.sms_codes),
            ] {
                let mut stmt = tx.prepare(&format!(
                    "SELECT user, salt, hash, {time}, used_at FROM {table} ORDER BY id"
                ))?;
                *out = stmt
                    .query_map([], |r| {
                        Ok(DumpedCode {
                            user: r.get(0)?,
                            salt: r.get(1)?,
                            tag: r.get(2)?,
                            time: r.get(3)?,
                            used_at: r.get(4)?,
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
            }
            let mut stmt = tx.prepare(
                "SELECT user, scope, addr, key, until FROM remembered ORDER BY user, scope, addr, key",
            )?;
            dump.remembered = stmt
                .query_map([], |r| {
                    Ok(DumpedRemembered {
                        user: r.get(0)?,
                        scope: r.get(1)?,
                        addr: r.get(2)?,
                        key: r.get(3)?,
                        until: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
        }
        tx.commit()?;
        Ok(dump)
    }

    fn is_empty(&mut self) -> Result<bool, StoreError> {
        Ok(self.lock()?.conn.query_row(
            "SELECT NOT EXISTS(SELECT 1 FROM users) AND NOT EXISTS(SELECT 1 FROM devices)
                AND NOT EXISTS(SELECT 1 FROM bypass_codes) AND NOT EXISTS(SELECT 1 FROM sms_codes)
                AND NOT EXISTS(SELECT 1 FROM remembered)",
            [],
            |r| r.get(0),
        )?)
    }

    fn load(&mut self, dump: &Dump, replace: bool) -> Result<(), StoreError> {
        let mut guard = self.lock()?;
        let tx = guard
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if replace {
            tx.execute_batch(
                "DELETE FROM remembered; DELETE FROM sms_codes; DELETE FROM bypass_codes;
                 DELETE FROM devices; DELETE FROM users;",
            )?;
        }
        for (name, failures, locked_until) in &dump.users {
            tx.execute(
                "INSERT INTO users(name, failures, locked_until) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET failures = excluded.failures,
                    locked_until = excluded.locked_until",
                params![name, failures, locked_until],
            )?;
        }
        for (user, d) in &dump.devices {
            tx.execute(
                "INSERT INTO devices(user, kind, name, secret, algorithm, digits, period, counter,
                                     address, is_default, created, sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1)",
                params![
                    user,
                    d.kind,
                    d.name,
                    d.sealed_secret,
                    d.algorithm,
                    d.digits,
                    d.period,
                    d.counter,
                    d.address,
                    d.is_default,
                    d.created
                ],
            )?;
        }
        for (table, time, codes) in [
            ("bypass_codes", "created", &dump.bypass_codes),
            ("sms_codes", "expires", &dump.sms_codes),
        ] {
            for c in codes {
                tx.execute(
                    &format!(
                        "INSERT INTO {table}(user, salt, hash, {time}, used_at, keyed)
                         VALUES (?1, ?2, ?3, ?4, ?5, 1)"
                    ),
                    params![c.user, c.salt, c.tag, c.time, c.used_at],
                )?;
            }
        }
        for r in &dump.remembered {
            tx.execute(
                "INSERT INTO remembered(user, scope, addr, key, until) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(user, scope, addr, key) DO UPDATE SET until = max(until, excluded.until)",
                params![r.user, r.scope, r.addr, r.key, r.until],
            )?;
        }
        tx.commit()?;
        drop(guard);
        self.written()?;
        Ok(())
    }
}

impl Drop for SqliteBackend {
    fn drop(&mut self) {
        self.rollback();
    }
}

fn device_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRecord> {
    Ok(DeviceRecord {
        id: r.get(0)?,
        kind: r.get(1)?,
        name: r.get(2)?,
        sealed_secret: r.get(3)?,
        algorithm: r.get(4)?,
        digits: r.get(5)?,
        period: r.get(6)?,
        counter: r.get(7)?,
        address: r.get(8)?,
        is_default: r.get(9)?,
        created: r.get(10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> SqliteBackend {
        SqliteBackend::open(&dir.join("mfa.db"), &StoreKey::generate().unwrap()).unwrap()
    }

    /// The value of `PRAGMA name` on the shared connection.
    fn pragma(b: &SqliteBackend, name: &str) -> i64 {
        b.lock()
            .unwrap()
            .conn
            .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .unwrap()
    }

    fn synced(b: &SqliteBackend) -> u64 {
        b.shared.sync.lock().unwrap().synced
    }

    #[test]
    fn a_login_is_never_answered_from_kept_reads_older_than_the_databases_last_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let reads = |b: &mut SqliteBackend| b.login_reads("alice", None, 0).unwrap();
        let hits = |b: &SqliteBackend| b.lock().unwrap().reads.hits;
        let phone = NewDeviceRecord {
            user: "alice".into(),
            kind: "phone".into(),
            name: "phone".into(),
            sealed_secret: None,
            algorithm: None,
            digits: None,
            period: None,
            counter: 0,
            address: Some("+15555550100".into()),
        };
        b.add_devices(std::slice::from_ref(&phone), 1).unwrap();
        assert_eq!(reads(&mut b).devices.len(), 1);
        // Nothing changed: the second read is the kept one, the same.
        assert_eq!(reads(&mut b).devices.len(), 1);
        assert_eq!(hits(&b), 1);

        // mfad's own writes, on any table a login reads.
        b.lock_until("alice", 100).unwrap();
        assert_eq!(reads(&mut b).lock.locked_until, Some(100));
        b.add_devices(std::slice::from_ref(&phone), 2).unwrap();
        assert_eq!(reads(&mut b).devices.len(), 2);
        // Another user's change empties the copy too; a write rolled back leaves the rows
        // as they were.
        b.lock_until("bob", 100).unwrap();
        b.begin().unwrap();
        b.lock_until("alice", 150).unwrap();
        b.rollback();
        let before = hits(&b);
        assert_eq!(reads(&mut b).lock.locked_until, Some(100));
        assert_eq!(hits(&b), before);

        // Another process's commit (an administrator's sqlite3, a harness): seen at once.
        let other = Connection::open(dir.path().join("mfa.db")).unwrap();
        reads(&mut b);
        other
            .execute(
                "UPDATE users SET locked_until = 300 WHERE name = 'alice'",
                [],
            )
            .unwrap();
        assert_eq!(reads(&mut b).lock.locked_until, Some(300));
        other
            .execute("DELETE FROM devices WHERE user = 'alice'", [])
            .unwrap();
        assert!(reads(&mut b).devices.is_empty());

        // A remembered login is read each time (its answer depends on the time).
        let before = hits(&b);
        let asked = Remembered {
            user: "alice",
            scope: "sshd",
            addr: "192.0.2.1",
            key: "-",
        };
        for _ in 0..2 {
            assert!(!b.login_reads("alice", Some(&asked), 0).unwrap().remembered);
        }
        assert_eq!(hits(&b), before);
    }

    #[tokio::test]
    async fn inline_use_waits_for_nothing_and_its_commit_is_awaited_apart() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path());
        let mut holder = first.handle();
        let mut inline = first.handle();
        assert!(Backend::set_inline(&mut inline, true));

        // Another handle's transaction holds the connection: inline, a read and a
        // transaction are refused at once, having changed nothing.
        holder.begin().unwrap();
        holder.lock_until("held", 100).unwrap();
        assert!(matches!(
            inline.lock_state("u"),
            Err(StoreError::WouldBlock)
        ));
        assert!(matches!(inline.begin(), Err(StoreError::WouldBlock)));
        assert!(!inline.in_tx);
        holder.commit().unwrap();

        // Another process's write lock: SQLITE_BUSY at once, not after the busy timeout,
        // and the timeout is back for everyone else afterwards.
        let other = Connection::open(dir.path().join("mfa.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let busy = inline.begin().unwrap_err();
        assert!(busy.is_contention(), "{busy}");
        other.execute_batch("ROLLBACK").unwrap();
        let timeout: i64 = pragma(&first, "busy_timeout");
        assert_eq!(timeout, BUSY.as_millis() as i64);

        // Free: the transaction commits at once and is not on disk until awaited.
        inline.begin().unwrap();
        inline.lock_until("u", 200).unwrap();
        inline.commit().unwrap();
        let seq = inline.shared.commits.load(Ordering::SeqCst);
        assert!(synced(&inline) < seq);
        let durable = inline.take_unsynced().expect("a commit to wait for");
        assert!(inline.take_unsynced().is_none());
        durable.await.unwrap();
        assert!(synced(&inline) >= seq);
        assert_eq!(inline.lock_state("u").unwrap().locked_until, Some(200));

        // A read commits nothing: nothing to wait for.
        inline.lock_state("held").unwrap();
        assert!(inline.take_unsynced().is_none());
    }

    #[tokio::test]
    async fn inline_use_that_met_a_held_connection_is_told_when_it_is_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path());
        let mut holder = first.handle();
        let mut inline = first.handle();
        Backend::set_inline(&mut inline, true);

        // The signal is taken before the attempt; the attempt meets the holder's
        // transaction; the holder's commit, made before the caller waits, still ends the
        // wait. (A wait may also end early, on a release nobody waited for: the caller
        // then only tries once more.)
        holder.begin().unwrap();
        let released = inline.released().expect("SQLite raises the signal");
        let release = released.notified();
        assert!(matches!(inline.begin(), Err(StoreError::WouldBlock)));
        holder.lock_until("held", 100).unwrap();
        holder.commit().unwrap();
        tokio::time::timeout(Duration::from_secs(5), release)
            .await
            .expect("never told that the connection was let go");
        // Tried again, inline use goes on.
        inline.begin().unwrap();
        inline.lock_until("u", 1).unwrap();
        inline.commit().unwrap();
        inline.take_unsynced().unwrap().await.unwrap();

        // A checkpoint due: only a blocking use runs it, so inline use is not told to try
        // again.
        first.shared.checkpoint_due.store(true, Ordering::SeqCst);
        assert!(inline.released().is_none());
        assert!(matches!(
            inline.lock_state("u"),
            Err(StoreError::WouldBlock)
        ));
        let mut blocking = first.handle();
        blocking.lock_state("u").unwrap();
        assert!(!first.shared.checkpoint_due.load(Ordering::SeqCst));
        assert!(inline.released().is_some());
    }

    /// The condvars are signalled only when someone waits: those who do must still be woken
    /// by the commit (a rollback, an fsync) they wait for, not by the end of their timeout.
    #[test]
    fn blocking_uses_waiting_for_a_transaction_or_an_fsync_are_woken_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path());
        for end_by_commit in [true, false] {
            let mut holder = first.handle();
            holder.begin().unwrap();
            holder.lock_until("held", 1).unwrap();
            let mut waiter = first.handle();
            let started = Instant::now();
            let waiting = std::thread::spawn(move || {
                let r = waiter.lock_until("w", 2);
                (r, started.elapsed())
            });
            // Until the waiter is in the condvar.
            while first.shared.state.lock().unwrap().waiting == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            if end_by_commit {
                holder.commit().unwrap();
            } else {
                holder.rollback();
            }
            let (r, took) = waiting.join().unwrap();
            r.unwrap();
            assert!(took < BUSY, "woken only by the busy timeout");
            assert_eq!(first.shared.state.lock().unwrap().waiting, 0);
        }

        // An fsync running: a blocking commit waits for it, then for its own.
        first.shared.sync.lock().unwrap().syncing = true;
        let mut writer = first.handle();
        let writing = std::thread::spawn(move || writer.lock_until("x", 3));
        while first.shared.sync.lock().unwrap().waiting == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let wal = first.shared.wal.as_ref().unwrap();
        first.shared.sync_once(wal).unwrap();
        writing.join().unwrap().unwrap();
        assert_eq!(first.shared.sync.lock().unwrap().waiting, 0);
        assert!(synced(&first) >= first.shared.commits.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn many_inline_commits_share_fsyncs_and_each_waits_for_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path());
        let mut waits = Vec::new();
        for i in 0..50 {
            let mut h = first.handle();
            Backend::set_inline(&mut h, true);
            h.lock_until(&format!("u{i}"), 1).unwrap();
            waits.push((
                h.shared.commits.load(Ordering::SeqCst),
                h.take_unsynced().unwrap(),
            ));
        }
        let all = first.shared.commits.load(Ordering::SeqCst);
        for (seq, wait) in waits {
            wait.await.unwrap();
            assert!(synced(&first) >= seq);
        }
        assert!(synced(&first) >= all);
    }

    #[test]
    fn commits_never_checkpoint_the_log_inline_and_it_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let auto: i64 = pragma(&b, "wal_autocheckpoint");
        assert_eq!(auto, 0, "a login's commit must not run a checkpoint");
        // Each commit adds pages to the WAL; unchecked, 3,000 of them make it tens of MB.
        for i in 0..3_000 {
            b.lock_until(&format!("user-{i:05}"), i).unwrap();
        }
        let wal = dir.path().join("mfa.db-wal");
        let size = std::fs::metadata(&wal).unwrap().len();
        let pages: i64 = pragma(&b, "page_size");
        // About CHECKPOINT_FRAMES pages between two restarts, and what was committed
        // while the last checkpoint ran: within the size written out when the store was
        // opened, which it therefore never outgrew.
        let bound = CHECKPOINT_FRAMES * pages as u64 * 3 / 2;
        assert!(bound < WAL_PRESIZE);
        if written_out(dir.path()) {
            assert_eq!(size, WAL_PRESIZE, "the WAL outgrew its first size");
        } else {
            assert!(size <= bound, "the WAL grew to {size} bytes");
        }
    }

    fn login_row(i: usize) -> LoginRecord {
        LoginRecord {
            id: 0,
            user: format!("user-{:05}", i % 400),
            at: 1_700_000_000 + i as i64,
            host: "login1".into(),
            service: "sshd".into(),
            rhost: format!("10.1.{}.{}", i / 250 % 250, i % 250),
            method: "-".into(),
            outcome: "allowed".into(),
            detail: "trusted network".into(),
        }
    }

    /// The rows of the `logins` table in the SQLite file at `path`.
    fn logins_in(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT count(*) FROM logins", [], |r| r.get(0))
            .unwrap()
    }

    /// A stream of logins that need no code (a trusted network, a remembered login: the
    /// transfers of a busy node) writes nothing on the login's path, only the history's
    /// batches. Those go to the history's own file, on its own connection: the logins'
    /// connection is never held for them, their WAL never grows by them, and the history's
    /// own WAL stays within SQLite's checkpoints.
    #[test]
    fn the_history_keeps_its_own_file_and_leaves_the_logins_log_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(dir.path());
        let commits = b.shared.commits.load(Ordering::SeqCst);
        let store_wal = dir.path().join("mfa.db-wal");
        let store_wal_len = std::fs::metadata(&store_wal).unwrap().len();
        let history = dir.path().join("mfa-history.db");
        assert_eq!(history_path(&dir.path().join("mfa.db")), history);
        assert!(!history.exists(), "made before the history was first used");
        let wal = dir.path().join("mfa-history.db-wal");
        let mut largest = 0;
        for batch in 0..100 {
            let rows: Vec<LoginRecord> = (0..512).map(|i| login_row(batch * 512 + i)).collect();
            // The logins' connection is taken meanwhile, as by a login's transaction: the
            // history does not wait for it.
            let held = b.lock().unwrap();
            let mut writer = b.handle();
            let (done, recorded) = std::sync::mpsc::channel();
            std::thread::spawn(move || done.send(writer.record_logins(&rows, 0)));
            let recorded = recorded.recv_timeout(Duration::from_secs(30));
            assert!(
                matches!(recorded, Ok(Ok(()))),
                "batch {batch} waited for the logins' connection: {recorded:?}"
            );
            drop(held);
            largest = largest.max(std::fs::metadata(&wal).unwrap().len());
        }
        assert_eq!(
            b.shared.commits.load(Ordering::SeqCst),
            commits,
            "the history committed on the logins' connection"
        );
        assert_eq!(std::fs::metadata(&store_wal).unwrap().len(), store_wal_len);
        let pages: u64 = Connection::open(&history)
            .unwrap()
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        // SQLite's own checkpoints, at 1,000 pages of WAL, and one batch beyond.
        assert!(
            largest <= 3_000 * pages,
            "the history's WAL grew to {largest} bytes"
        );
        let mode = std::fs::metadata(&history).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the history's file is {mode:o}");
        assert_eq!(logins_in(&history), 100 * 512);
        let shown = b.recent_logins("user-00007", 3).unwrap();
        let at: Vec<i64> = shown.iter().map(|r| r.at).collect();
        let last = 1_700_000_000 + (100 * 512 - 1) as i64;
        let newest = last - (last - 1_700_000_000 - 7) % 400;
        assert_eq!(at, vec![newest, newest - 400, newest - 800]);
    }

    /// A store made before the history had its own file kept the rows itself: the first use
    /// of the history moves them there and drops the store's table, once, even when a crash
    /// came between the two commits the move makes.
    #[test]
    fn rows_the_store_kept_itself_move_to_the_history_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mfa.db");
        let key = StoreKey::generate().unwrap();
        let old: Vec<LoginRecord> = (0..30).map(login_row).collect();
        let keep_old = |conn: &Connection| {
            for (i, r) in old.iter().enumerate() {
                conn.execute(
                    "INSERT INTO logins(id, user, at, host, service, rhost, method, outcome, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        i as i64 + 1,
                        r.user,
                        r.at,
                        r.host,
                        r.service,
                        r.rhost,
                        r.method,
                        r.outcome,
                        r.detail
                    ],
                )
                .unwrap();
            }
        };
        {
            // The store as the version before left it: its migrations made `logins`.
            let b = SqliteBackend::open(&path, &key).unwrap();
            keep_old(&b.lock().unwrap().conn);
        }
        let mut b = SqliteBackend::open(&path, &key).unwrap();
        assert_eq!(b.recent_logins("user-00003", 20).unwrap().len(), 1);
        b.record_logins(&[login_row(403)], 0).unwrap();
        let history = history_path(&path);
        assert_eq!(logins_in(&history), 31);
        let store_tables: i64 = b
            .lock()
            .unwrap()
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'logins'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(store_tables, 0, "the store kept its logins table");
        drop(b);
        // A crash after the history's commit and before the store's: the rows in both.
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(HISTORY_MIGRATIONS[0]).unwrap();
            keep_old(&conn);
        }
        let mut b = SqliteBackend::open(&path, &key).unwrap();
        let shown = b.recent_logins("user-00003", 20).unwrap();
        assert_eq!(
            shown.iter().map(|r| r.at).collect::<Vec<_>>(),
            vec![1_700_000_403, 1_700_000_003]
        );
        assert_eq!(logins_in(&history), 31);
    }

    /// Whether the file system holding `dir` had the room for the WAL to be written out
    /// ([`presize_wal`]); on a nearly full one (under ~90 MiB free) it is not, and the
    /// tests check the WAL without its written-out size.
    fn written_out(dir: &Path) -> bool {
        let available = free_bytes(&nix::sys::statvfs::statvfs(dir).unwrap());
        let room = wal_fits(available, 0);
        if !room {
            eprintln!("{available} bytes free: the WAL is not written out here");
        }
        room
    }

    #[test]
    fn the_written_out_log_keeps_every_commit_through_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let key = StoreKey::generate().unwrap();
        let mut b = SqliteBackend::open(&dir.path().join("mfa.db"), &key).unwrap();
        let wal = dir.path().join("mfa.db-wal");
        let presized = written_out(dir.path());
        if presized {
            assert_eq!(std::fs::metadata(&wal).unwrap().len(), WAL_PRESIZE);
        }
        for i in 0..20 {
            b.lock_until(&format!("user-{i}"), 100 + i).unwrap();
        }
        // What a crash leaves on disk, mfad still running: the database file and the WAL,
        // the commits in the WAL only (no checkpoint yet), zeros after them; no -shm,
        // so opening it makes SQLite rebuild its index of the WAL from the frames.
        let crashed = tempfile::tempdir().unwrap();
        std::fs::copy(dir.path().join("mfa.db"), crashed.path().join("mfa.db")).unwrap();
        std::fs::copy(&wal, crashed.path().join("mfa.db-wal")).unwrap();
        let plain = Connection::open(crashed.path().join("mfa.db")).unwrap();
        let integrity: String = plain
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
        drop(plain);
        let mut after = SqliteBackend::open(&crashed.path().join("mfa.db"), &key).unwrap();
        for i in 0..20 {
            let state = after.lock_state(&format!("user-{i}")).unwrap();
            assert_eq!(state.locked_until, Some(100 + i), "user-{i}");
        }
        // And it goes on: a new commit after the recovered ones, the log still its size.
        after.lock_until("user-new", 5).unwrap();
        assert_eq!(after.lock_state("user-new").unwrap().locked_until, Some(5));
        if presized {
            assert_eq!(
                std::fs::metadata(crashed.path().join("mfa.db-wal"))
                    .unwrap()
                    .len(),
                WAL_PRESIZE
            );
        }
    }
}
