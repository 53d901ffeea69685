//! Backup and restore of the SQLite store. A backup is taken online by mfad itself (root
//! writes the file, mode 0600) with SQLite's backup API, so it is consistent while logins go
//! on. A restore is offline (`mfad --restore FILE`, mfad stopped): it replaces the database
//! file mfad holds open, and it makes sure no code spent after the backup opens a login again.

use crate::sealing::StoreKey;
use crate::store::{Store, StoreError};
use rusqlite::{Connection, OpenFlags, params};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} is not an absolute path")]
    NotAbsolute(String),
    #[error("cannot create {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("{path} cannot be used with this store key: {source}")]
    Store { path: String, source: StoreError },
    #[error("cannot put the restored database in place at {path}: {source}")]
    Replace {
        path: String,
        source: std::io::Error,
    },
}

fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

/// Copies every page of `from` into `to` in one step of the backup API (one read
/// transaction: a consistent snapshot even while mfad writes), retrying for up to 5 s
/// while the database is busy.
fn copy_pages(from: &Connection, to: &mut Connection) -> rusqlite::Result<()> {
    use rusqlite::backup::StepResult;
    let backup = rusqlite::backup::Backup::new(from, to)?;
    for _ in 0..250 {
        match backup.step(-1)? {
            StepResult::Done => return Ok(()),
            StepResult::More | StepResult::Busy | StepResult::Locked => {
                std::thread::sleep(Duration::from_millis(20));
            }
            // The enum is non-exhaustive.
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Err(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
        Some("the database stayed busy for 5 s".into()),
    ))
}

/// What a backup holds, for the administrator's message and the log.
pub struct BackupSummary {
    pub users: i64,
    pub devices: i64,
}

/// Writes a consistent copy of the database at `database` to `dest`, a new file (never
/// overwritten, never through a symlink) with mode 0600. The copy is a self-contained
/// file (no -wal beside it) that records when it was taken.
pub fn backup(database: &Path, dest: &Path, now: i64) -> Result<BackupSummary, BackupError> {
    if !dest.is_absolute() {
        return Err(BackupError::NotAbsolute(dest.display().to_string()));
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dest)
        .map_err(|source| BackupError::Create {
            path: dest.display().to_string(),
            source,
        })?;
    let result = (|| {
        let from = Connection::open_with_flags(database, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sqlite(database))?;
        from.busy_timeout(Duration::from_secs(5))
            .map_err(sqlite(database))?;
        let mut to = Connection::open(dest).map_err(sqlite(dest))?;
        copy_pages(&from, &mut to).map_err(sqlite(dest))?;
        let _mode: String = to
            .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
            .map_err(sqlite(dest))?;
        to.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('backup_taken_at', ?1)",
            [now.to_string().into_bytes()],
        )
        .map_err(sqlite(dest))?;
        let count = |sql: &str| to.query_row(sql, [], |r| r.get::<_, i64>(0));
        Ok(BackupSummary {
            users: count(
                "SELECT count(*) FROM (SELECT name FROM users UNION SELECT user FROM devices
                 UNION SELECT user FROM bypass_codes)",
            )
            .map_err(sqlite(dest))?,
            devices: count("SELECT count(*) FROM devices").map_err(sqlite(dest))?,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}

/// How a restore treats what it cannot know about: codes spent after the backup was taken.
#[derive(Debug, Clone, Copy)]
pub struct RestorePolicy {
    /// The TOTP window (`[totp] window`): every TOTP device's last spent step is raised to
    /// the restore time's step plus this, so no code that could have been accepted up to
    /// the restore is accepted again.
    pub totp_window: u64,
    /// How far every HOTP counter moves forward (default: `[hotp] look_ahead`).
    pub hotp_advance: u64,
    /// Keep the backup's unused bypass codes usable (default: they are all marked spent).
    pub keep_bypass_codes: bool,
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct RestoreReport {
    pub taken_at: Option<i64>,
    pub totp_devices: usize,
    pub hotp_devices: usize,
    /// Users whose unused bypass codes were marked spent (they need new ones).
    pub bypass_users: Vec<String>,
}

/// Replaces the database at `database` with the backup at `from`, after checking that
/// `key` opens it, then raises TOTP steps and HOTP counters, spends the bypass codes (per
/// `policy`), and drops SMS passcodes and remembered logins. Nothing changes at `database`
/// unless every step succeeded. mfad must not be running.
pub fn restore(
    from: &Path,
    database: &Path,
    key: StoreKey,
    policy: RestorePolicy,
    now: i64,
) -> Result<RestoreReport, BackupError> {
    std::fs::metadata(from).map_err(|source| BackupError::Read {
        path: from.display().to_string(),
        source,
    })?;
    // A fresh host has no database directory yet: made as the store makes it (0700).
    if let Some(dir) = database.parent()
        && !dir.exists()
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| BackupError::Create {
                path: dir.display().to_string(),
                source,
            })?;
    }
    let tmp = PathBuf::from(format!("{}.restoring", database.display()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let source = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sqlite(from))?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|source| BackupError::Create {
                path: tmp.display().to_string(),
                source,
            })?;
        {
            let mut to = Connection::open(&tmp).map_err(sqlite(&tmp))?;
            copy_pages(&source, &mut to).map_err(sqlite(&tmp))?;
        }
        // The key check, and the schema brought up to date, by the store itself.
        drop(Store::open(&tmp, key).map_err(|source| BackupError::Store {
            path: from.display().to_string(),
            source,
        })?);
        let mut conn = Connection::open(&tmp).map_err(sqlite(&tmp))?;
        let report = make_safe(&mut conn, policy, now).map_err(sqlite(&tmp))?;
        let _mode: String = conn
            .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
            .map_err(sqlite(&tmp))?;
        drop(conn);
        Ok(report)
    })();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // The old database's WAL must not be replayed onto the restored file.
    let replace = |source| BackupError::Replace {
        path: database.display().to_string(),
        source,
    };
    for suffix in ["-wal", "-shm"] {
        match std::fs::remove_file(format!("{}{suffix}", database.display())) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(replace(e)),
        }
    }
    std::fs::rename(&tmp, database).map_err(replace)?;
    if let Some(dir) = database.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(replace)?;
    }
    Ok(report)
}

/// The restore's safety step, in one transaction.
fn make_safe(
    conn: &mut Connection,
    policy: RestorePolicy,
    now: i64,
) -> rusqlite::Result<RestoreReport> {
    let tx = conn.transaction()?;
    let taken_at = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'backup_taken_at'",
            [],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .ok()
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse().ok());
    let totp_devices = tx.execute(
        "UPDATE devices SET counter = max(counter, ?1 / period + ?2)
         WHERE kind = 'totp' AND period > 0",
        params![now.max(0), policy.totp_window as i64],
    )?;
    let hotp_devices = tx.execute(
        "UPDATE devices SET counter = counter + ?1 WHERE kind = 'hotp'",
        [policy.hotp_advance as i64],
    )?;
    let mut bypass_users = Vec::new();
    if !policy.keep_bypass_codes {
        let mut stmt = tx.prepare(
            "SELECT DISTINCT user FROM bypass_codes WHERE used_at IS NULL ORDER BY user",
        )?;
        bypass_users = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<_>>()?;
        drop(stmt);
        tx.execute(
            "UPDATE bypass_codes SET used_at = ?1 WHERE used_at IS NULL",
            [now],
        )?;
    }
    tx.execute("DELETE FROM sms_codes", [])?;
    tx.execute("DELETE FROM remembered", [])?;
    tx.execute("DELETE FROM meta WHERE key = 'backup_taken_at'", [])?;
    tx.commit()?;
    Ok(RestoreReport {
        taken_at,
        totp_devices,
        hotp_devices,
        bypass_users,
    })
}
