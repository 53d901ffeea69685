//! The store: enrolled devices, bypass codes, SMS codes, failure counters, lockouts and
//! remembered logins, behind a [`Backend`] (SQLite on one host, PostgreSQL for a cluster).
//!
//! [`Store`] holds the rules that do not depend on the database: device secrets are sealed
//! with the store key before they reach a backend and opened when read; one-time codes are
//! stored as keyed hashes and compared in constant time. Every write is one transaction.
//! Spending a code is a conditional UPDATE whose row count says whether this caller won, so
//! two logins racing on one code cannot both succeed.

pub mod backend;
pub mod migrate;
pub mod open;
pub mod pg_approvals;
pub mod pool;
pub mod postgres;
pub(crate) mod reads_cache;
pub mod sqlite;

use crate::factor::bypass::{self, StoredCode};
use crate::factor::security_key::SecurityKey;
use crate::factor::totp::{HashAlgorithm, TotpParams};
use crate::sealing::{KeyError, StoreKey};
pub use backend::{Backend, EnrolLinkStep, LoginRecord, WebSessionRecord, WebSessionStep};
use backend::{CodeRecord, DeviceRecord, NewDeviceRecord};
use sqlite::SqliteBackend;
use std::path::Path;
use std::sync::Arc;
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
    /// tokio-postgres never shows the password in its messages; its causes (a TLS or io
    /// error) are shown too, since they say what to fix.
    #[error("PostgreSQL: {}", postgres::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("PostgreSQL did not finish {what} within {after:?}; the connection is dropped")]
    Timeout {
        what: &'static str,
        after: std::time::Duration,
    },
    #[error("PostgreSQL store: {0}")]
    Config(String),
    #[error("the PostgreSQL connection is lost or timed out; a new one is needed")]
    Broken,
    #[error("an earlier statement failed, so PostgreSQL rolled the transaction back")]
    TransactionAborted,
    /// Inline use only ([`Backend::set_inline`]): the statement would have had to wait;
    /// nothing was changed, and the caller runs its work again where it may wait.
    #[error("the store is busy (inline use would have waited)")]
    WouldBlock,
    /// The store cannot be reached (no connection within the time allowed, a connection
    /// lost): logins get the fail mode.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether inline use met another's lock: the work is run again where it may wait.
    pub fn is_contention(&self) -> bool {
        match self {
            StoreError::WouldBlock => true,
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }

    /// Whether the error says the store is out of reach (rather than wrong or corrupt):
    /// such errors are logged once per outage.
    pub fn is_outage(&self) -> bool {
        match self {
            StoreError::Unavailable(_) | StoreError::Timeout { .. } | StoreError::Broken => true,
            StoreError::Postgres(e) => postgres::is_connection_error(e),
            _ => false,
        }
    }
}

/// Who vouched for the client address of a remembered login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RememberScope {
    /// sshd's PAM stack (a root caller): the address is the connection's.
    Sshd,
    /// The user's own ForceCommand helper: the address is what the user's process said.
    OwnHelper,
}

impl RememberScope {
    pub fn as_str(self) -> &'static str {
        match self {
            RememberScope::Sshd => "sshd",
            RememberScope::OwnHelper => "self",
        }
    }
}

/// The store's rules over a [`Backend`]: secrets sealed and opened, one-time codes keyed
/// and compared in constant time, with the store key.
pub struct Store {
    backend: Box<dyn Backend>,
    key: Arc<StoreKey>,
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
    /// An OpenSSH security-key public key; the key (`TYPE BASE64`) is in `address`.
    SecurityKey,
    /// A WebAuthn security key for the portal (webauthn-rs's credential, JSON, in
    /// `address`; its signature counter in `counter`). ssh logins cannot use it.
    WebKey,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Totp => "totp",
            DeviceKind::Hotp => "hotp",
            DeviceKind::Phone => "phone",
            DeviceKind::Push => "push",
            DeviceKind::SecurityKey => "security-key",
            DeviceKind::WebKey => "webauthn",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "totp" => Some(DeviceKind::Totp),
            "hotp" => Some(DeviceKind::Hotp),
            "phone" => Some(DeviceKind::Phone),
            "push" => Some(DeviceKind::Push),
            "security-key" => Some(DeviceKind::SecurityKey),
            "webauthn" => Some(DeviceKind::WebKey),
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

impl Device {
    /// The public key of a security-key device (checked when it was added; `None` for
    /// other kinds, or a stored key that no longer parses).
    pub fn security_key(&self) -> Option<SecurityKey> {
        match (self.kind, &self.address) {
            (DeviceKind::SecurityKey, Some(key)) => SecurityKey::parse(key).ok(),
            _ => None,
        }
    }
}

/// A device to insert.
pub struct NewDeviceRow {
    pub kind: DeviceKind,
    pub name: String,
    pub otp: Option<OtpKey>,
    pub address: Option<String>,
}

/// A live enrolment link and the page's progress on it.
pub struct EnrolLink {
    pub user: String,
    pub password_tries: u32,
    pub password_ok: bool,
    /// The new app waiting for a code from it.
    pub secret: Option<Zeroizing<Vec<u8>>>,
    pub code_tries: u32,
    /// When the page last did a step (0: never).
    pub last_step: i64,
}

/// What a portal session's new app is sealed to (see [`enrol_context`]).
fn session_context(user: &str) -> String {
    format!("web-session:{user}")
}

/// What a pending app's secret is sealed to: a link's, never a device's (a sealed pending
/// secret copied into a device row does not open).
fn enrol_context(user: &str) -> String {
    format!("enrol-link:{user}")
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

/// What a login needs to know about its user before asking anything, read in one go.
pub struct LoginSnapshot {
    pub lock: LockState,
    /// The user's devices, secrets opened, oldest first.
    pub devices: Vec<Device>,
    /// Bypass codes not yet used.
    pub bypass_left: usize,
    /// A second factor from this address and key is remembered (false when not asked).
    pub remembered: bool,
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

/// A login from `addr` with key fingerprint `key`, vouched for by `scope`, as the backend
/// stores it.
fn remembered<'a>(
    user: &'a str,
    scope: RememberScope,
    addr: &'a str,
    key: &'a str,
) -> backend::Remembered<'a> {
    backend::Remembered {
        user,
        scope: scope.as_str(),
        addr,
        key,
    }
}

impl Store {
    /// A store over `backend`, checking (or, in a new database, recording) that the
    /// backend's data belongs to `key`.
    pub fn from_backend(
        mut backend: Box<dyn Backend>,
        key: Arc<StoreKey>,
    ) -> Result<Store, StoreError> {
        backend.check_key(&key.check_value())?;
        Ok(Store { backend, key })
    }

    /// Opens (creating if needed) the SQLite database at `path`: its directory with mode
    /// 0700, the file with mode 0600, then brings the schema up to date.
    pub fn open(path: &Path, key: StoreKey) -> Result<Store, StoreError> {
        let backend = SqliteBackend::open(path, &key)?;
        Store::from_backend(Box::new(backend), Arc::new(key))
    }

    /// Opens the SQLite database at `path` with the key in `key_file`, creating the key
    /// (mode 0600) when it does not exist yet.
    pub fn open_with_key_file(path: &Path, key_file: &Path) -> Result<Store, StoreError> {
        Store::open(path, StoreKey::load(key_file, true)?)
    }

    /// An in-memory SQLite store with a fresh key, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let key = StoreKey::generate()?;
        let backend = SqliteBackend::open_in_memory(&key)?;
        Store::from_backend(Box::new(backend), Arc::new(key))
    }

    /// `sqlite` or `postgresql`.
    pub fn backend_kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// Whether the connection under this store is beyond use.
    pub fn is_broken(&self) -> bool {
        self.backend.is_broken()
    }

    /// The backend, as stored (for copying a store: secrets stay sealed).
    pub fn backend(&mut self) -> &mut dyn Backend {
        self.backend.as_mut()
    }

    /// See [`Backend::set_inline`].
    pub fn set_inline(&mut self, on: bool) -> bool {
        self.backend.set_inline(on)
    }

    /// See [`Backend::take_unsynced`].
    pub fn take_unsynced(&mut self) -> Option<backend::DurableFuture> {
        self.backend.take_unsynced()
    }

    /// See [`Backend::released`].
    pub fn released(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        self.backend.released()
    }

    /// Runs `f` in one write transaction: everything it wrote is committed together, or
    /// (when it fails) nothing is. Whatever `f` read (a lock, a counter) is still true when
    /// it writes: SQLite holds the write lock from the start, PostgreSQL the user's row
    /// from [`Store::lock_state`] on.
    pub fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.backend.begin()?;
        match f(self) {
            Ok(value) => match self.backend.commit() {
                Ok(()) => Ok(value),
                Err(e) => {
                    self.backend.rollback();
                    Err(e)
                }
            },
            Err(e) => {
                self.backend.rollback();
                Err(e)
            }
        }
    }

    /// Whether `answer` is the one-time code stored as `stored` (constant time).
    pub fn code_matches(&self, stored: &StoredCode, answer: &str) -> bool {
        let tag = self.key.code_tag(&bypass::hash(&stored.salt, answer));
        bool::from(tag.ct_eq(&stored.hash))
    }

    pub fn schema_version(&mut self) -> Result<i64, StoreError> {
        self.backend.schema_version()
    }

    pub fn lock_state(&mut self, user: &str) -> Result<LockState, StoreError> {
        self.backend.lock_state(user)
    }

    /// Counts one failure; at `max_failures` (0: never) locks until `now + duration`.
    pub fn record_failure(
        &mut self,
        user: &str,
        now: i64,
        max_failures: u32,
        duration: u64,
    ) -> Result<FailureEffect, StoreError> {
        self.backend.record_failure(&backend::Failure {
            user,
            now,
            max_failures,
            duration,
        })
    }

    /// After a success: the count of consecutive failures starts again.
    pub fn clear_failures(&mut self, user: &str) -> Result<(), StoreError> {
        self.backend.clear_failures(user)
    }

    /// Lifts a lock and clears the counter. Returns whether there was anything to clear.
    /// Remembered logins are forgotten too: whatever caused the lock may have used them.
    pub fn unlock(&mut self, user: &str) -> Result<bool, StoreError> {
        self.backend.unlock(user)
    }

    /// Locks the account until `until` at once (a login the user reported as not theirs).
    /// Remembered logins are forgotten: the user said a login was not theirs.
    pub fn lock_until(&mut self, user: &str, until: i64) -> Result<(), StoreError> {
        self.backend.lock_until(user, until)
    }

    /// Forgets the user's remembered logins; returns how many there were.
    pub fn forget_remembered(&mut self, user: &str) -> Result<usize, StoreError> {
        self.backend.forget_remembered(user)
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
        let tag = self.key.code_tag(&code.hash);
        self.backend.replace_sms_code(&backend::NewSmsCode {
            user,
            salt: &code.salt,
            tag: &tag,
            now,
            expires,
        })
    }

    /// The user's SMS passcodes that have not expired, spent or not.
    pub fn sms_codes(&mut self, user: &str, now: i64) -> Result<Vec<BypassRow>, StoreError> {
        collect_codes(self.backend.sms_codes(user, now)?)
    }

    /// Spends an SMS passcode: succeeds only for the first caller, before it expires.
    pub fn spend_sms_code(&mut self, id: i64, now: i64) -> Result<bool, StoreError> {
        self.backend.spend_sms_code(id, now)
    }

    /// Records an enrolment link (by the SHA-256 of its token) for `user`, valid until
    /// `expires`; it replaces the user's earlier unspent link.
    pub fn add_enrol_link(
        &mut self,
        key: &[u8; 32],
        user: &str,
        now: i64,
        expires: i64,
    ) -> Result<(), StoreError> {
        self.backend.add_enrol_link(&backend::NewEnrolLink {
            key,
            user,
            now,
            expires,
        })
    }

    /// The user a live (unspent, unexpired) enrolment link is bound to.
    pub fn enrol_link_user(
        &mut self,
        key: &[u8; 32],
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        Ok(self.backend.enrol_link(key, now)?.map(|l| l.user))
    }

    /// A live enrolment link with the page's progress on it, its pending app unsealed.
    pub fn enrol_link(
        &mut self,
        key: &[u8; 32],
        now: i64,
    ) -> Result<Option<EnrolLink>, StoreError> {
        let Some(r) = self.backend.enrol_link(key, now)? else {
            return Ok(None);
        };
        let secret = match r.sealed_secret {
            Some(sealed) => Some(
                self.key
                    .open(&sealed, &enrol_context(&r.user))
                    .ok_or(StoreError::WrongKey)?,
            ),
            None => None,
        };
        Ok(Some(EnrolLink {
            user: r.user,
            password_tries: r.password_tries,
            password_ok: r.password_ok_at.is_some(),
            secret,
            code_tries: r.code_tries,
            last_step: r.last_step,
        }))
    }

    /// Records a step of the enrolment page on a live link (see [`EnrolLinkStep`]; a new
    /// pending app goes through [`Store::enrol_link_pending`]).
    pub fn enrol_link_step(
        &mut self,
        key: &[u8; 32],
        step: EnrolLinkStep<'_>,
        now: i64,
    ) -> Result<Option<u32>, StoreError> {
        self.backend.enrol_link_step(key, step, now)
    }

    /// Holds `secret` (sealed for `user`'s link, not usable as a device's) as the link's
    /// pending app; false when the link is no longer live.
    pub fn enrol_link_pending(
        &mut self,
        key: &[u8; 32],
        user: &str,
        secret: &[u8],
        now: i64,
    ) -> Result<bool, StoreError> {
        let sealed = self.key.seal(secret, &enrol_context(user));
        Ok(self
            .backend
            .enrol_link_step(key, EnrolLinkStep::Pending(Some(&sealed)), now)?
            .is_some())
    }

    /// Spends `user`'s enrolment link: succeeds only for the first caller, before it expires.
    pub fn spend_enrol_link(
        &mut self,
        key: &[u8; 32],
        user: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.backend.spend_enrol_link(key, user, now)
    }

    /// Records a portal session (by the SHA-256 of its cookie) for `user`, and drops every
    /// session created before `created_before` or idle since before `idle_before`.
    pub fn add_web_session(
        &mut self,
        key: &[u8; 32],
        user: &str,
        csrf: &str,
        now: i64,
        (created_before, idle_before): (i64, i64),
    ) -> Result<(), StoreError> {
        self.backend.add_web_session(&backend::NewWebSession {
            key,
            user,
            csrf,
            now,
            created_before,
            idle_before,
        })
    }

    /// The portal session `key`, if it exists (its limits are the caller's to apply).
    pub fn web_session(&mut self, key: &[u8; 32]) -> Result<Option<WebSessionRecord>, StoreError> {
        self.backend.web_session(key)
    }

    /// Changes a portal session (see [`WebSessionStep`]).
    pub fn web_session_step(
        &mut self,
        key: &[u8; 32],
        step: WebSessionStep<'_>,
        now: i64,
    ) -> Result<Option<u32>, StoreError> {
        self.backend.web_session_step(key, step, now)
    }

    /// Holds `secret` (sealed for `user`'s portal session, not usable as a device's) as the
    /// session's new app, or drops it (`None`); false when the session is gone.
    pub fn web_session_pending(
        &mut self,
        key: &[u8; 32],
        user: &str,
        secret: Option<&[u8]>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let sealed = secret.map(|s| self.key.seal(s, &session_context(user)));
        Ok(self
            .backend
            .web_session_step(key, WebSessionStep::Pending(sealed.as_deref()), now)?
            .is_some())
    }

    /// The new app a portal session holds, unsealed.
    pub fn web_session_secret(
        &self,
        session: &WebSessionRecord,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        match &session.pending_secret {
            Some(sealed) => Ok(Some(
                self.key
                    .open(sealed, &session_context(&session.user))
                    .ok_or(StoreError::WrongKey)?,
            )),
            None => Ok(None),
        }
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
        self.backend
            .remember(&remembered(user, scope, addr, key), now, until)
    }

    /// Everything a login reads before its first prompt: the lock, the devices, the bypass
    /// codes left and, when `remembered` names an address, whether a login from there
    /// (`scope`, `addr`, `key`) is remembered. The device rows (secrets included) are read
    /// once per login; the login's write transaction spends from them by id.
    pub fn login_snapshot(
        &mut self,
        user: &str,
        remembered: Option<(RememberScope, &str, &str)>,
        now: i64,
    ) -> Result<LoginSnapshot, StoreError> {
        let asked = remembered.map(|(scope, addr, key)| self::remembered(user, scope, addr, key));
        let reads = self.backend.login_reads(user, asked.as_ref(), now)?;
        self.snapshot_from(user, reads)
    }

    /// [`Store::login_snapshot`] on the caller's task, where the backend reads without a
    /// blocking thread (PostgreSQL: [`backend::Backend::login_reads_async`]); `None` where
    /// it cannot.
    pub async fn login_snapshot_async(
        &mut self,
        user: &str,
        remembered: Option<(RememberScope, &str, &str)>,
        now: i64,
    ) -> Option<Result<LoginSnapshot, StoreError>> {
        let asked = remembered.map(|(scope, addr, key)| self::remembered(user, scope, addr, key));
        let reads = self
            .backend
            .login_reads_async(user, asked.as_ref(), now)?
            .await;
        Some(reads.and_then(|reads| self.snapshot_from(user, reads)))
    }

    /// A login's snapshot from what the store holds, its secrets opened.
    fn snapshot_from(
        &self,
        user: &str,
        reads: backend::LoginReads,
    ) -> Result<LoginSnapshot, StoreError> {
        Ok(LoginSnapshot {
            lock: reads.lock,
            devices: self.open_devices(user, reads.devices)?,
            bypass_left: reads.bypass_codes.iter().filter(|c| !c.used).count(),
            remembered: reads.remembered,
        })
    }

    /// Whether a second factor from exactly this address and key, vouched for by `scope`,
    /// is still remembered.
    pub fn is_remembered(
        &mut self,
        user: &str,
        scope: RememberScope,
        addr: &str,
        key: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.backend
            .is_remembered(&remembered(user, scope, addr, key), now)
    }

    /// Forgets everything about `user`: devices, bypass codes, counters.
    pub fn reset_user(&mut self, user: &str) -> Result<(), StoreError> {
        self.backend.reset_user(user)
    }

    /// A user's devices, oldest first (the order `mfa devices` numbers them in), their
    /// secrets opened.
    pub fn devices(&mut self, user: &str) -> Result<Vec<Device>, StoreError> {
        let rows = self.backend.devices(user)?;
        self.open_devices(user, rows)
    }

    /// Rows of `user`'s devices as stored, their secrets opened.
    fn open_devices(&self, user: &str, rows: Vec<DeviceRecord>) -> Result<Vec<Device>, StoreError> {
        rows.into_iter()
            .map(|r| self.open_device(user, r))
            .collect()
    }

    fn open_device(&self, user: &str, r: DeviceRecord) -> Result<Device, StoreError> {
        let kind = DeviceKind::parse(&r.kind).ok_or(StoreError::Corrupt("device kind"))?;
        let otp = match (kind, r.sealed_secret, r.algorithm, r.digits) {
            (DeviceKind::Totp | DeviceKind::Hotp, Some(sealed), Some(alg), Some(digits)) => {
                Some(OtpKey {
                    secret: self.key.open(&sealed, user).ok_or(StoreError::WrongKey)?,
                    params: TotpParams {
                        algorithm: HashAlgorithm::parse(&alg)
                            .ok_or(StoreError::Corrupt("device algorithm"))?,
                        digits,
                        period: r.period.unwrap_or(0),
                    },
                    counter: r.counter,
                })
            }
            (DeviceKind::Totp | DeviceKind::Hotp, ..) => {
                return Err(StoreError::Corrupt("code device without a key"));
            }
            _ => None,
        };
        Ok(Device {
            id: r.id,
            kind,
            name: r.name,
            otp,
            address: r.address,
            is_default: r.is_default,
            created: r.created,
        })
    }

    fn seal_device(&self, user: &str, d: &NewDeviceRow) -> NewDeviceRecord {
        let otp = d.otp.as_ref();
        NewDeviceRecord {
            user: user.to_string(),
            kind: d.kind.as_str().to_string(),
            name: d.name.clone(),
            sealed_secret: otp.map(|o| self.key.seal(&o.secret, user)),
            algorithm: otp.map(|o| o.params.algorithm.as_str().to_string()),
            digits: otp.map(|o| o.params.digits),
            period: otp.and_then(|o| (d.kind == DeviceKind::Totp).then_some(o.params.period)),
            counter: otp.map(|o| o.counter).unwrap_or(0),
            address: d.address.clone(),
        }
    }

    /// Adds a device; the user's first device becomes the default method.
    pub fn add_device(
        &mut self,
        user: &str,
        d: &NewDeviceRow,
        now: i64,
    ) -> Result<i64, StoreError> {
        let row = self.seal_device(user, d);
        self.backend
            .add_devices(std::slice::from_ref(&row), now)?
            .first()
            .copied()
            .ok_or(StoreError::Corrupt("no id for a new device"))
    }

    /// Adds many devices in one transaction: all or none.
    pub fn add_devices(
        &mut self,
        rows: &[(String, NewDeviceRow)],
        now: i64,
    ) -> Result<(), StoreError> {
        let sealed: Vec<NewDeviceRecord> = rows
            .iter()
            .map(|(user, d)| self.seal_device(user, d))
            .collect();
        self.backend.add_devices(&sealed, now)?;
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
        self.backend.set_default(user, device)
    }

    /// Renames device `device` of `user`: false when the user has no such device.
    pub fn rename_device(
        &mut self,
        user: &str,
        device: i64,
        name: &str,
    ) -> Result<bool, StoreError> {
        self.backend.rename_device(user, device, name)
    }

    /// The accounts locked at `now` (name, failures, locked until), by name, at most `limit`.
    pub fn locked_accounts(
        &mut self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<(String, u32, i64)>, StoreError> {
        self.backend.locked_accounts(now, limit)
    }

    /// Appends logins to the history and drops the rows older than `before`.
    pub fn record_logins(&mut self, rows: &[LoginRecord], before: i64) -> Result<(), StoreError> {
        self.backend.record_logins(rows, before)
    }

    /// The newest `limit` logins of `user`, newest first.
    pub fn recent_logins(
        &mut self,
        user: &str,
        limit: u32,
    ) -> Result<Vec<LoginRecord>, StoreError> {
        self.backend.recent_logins(user, limit)
    }

    /// Removes a device; if it was the default, the oldest remaining device takes its place.
    /// Remembered logins are forgotten: one of them may have been proved with that device.
    pub fn remove_device(&mut self, user: &str, device: i64) -> Result<(), StoreError> {
        self.backend.remove_device(user, device)
    }

    /// Spends time step `step` of a TOTP device: succeeds only if no step as late was spent.
    pub fn spend_totp_step(&mut self, device: i64, step: u64) -> Result<bool, StoreError> {
        self.backend.spend_totp_step(device, step)
    }

    /// The user's lock, and unless it holds at `now`, step `step` of TOTP device `device`
    /// spent: `None` when locked (nothing spent), else whether the step was spent (see
    /// [`backend::Backend::lock_state_and_spend_totp`]).
    pub fn lock_state_and_spend_totp(
        &mut self,
        user: &str,
        device: i64,
        step: u64,
        now: i64,
    ) -> Result<(LockState, Option<bool>), StoreError> {
        self.backend
            .lock_state_and_spend_totp(user, device, step, now)
    }

    /// A TOTP login's write when its code is good, as one change of its own, on the
    /// caller's task: step `step` of device `device` spent and the user's failures cleared,
    /// and with `remember` (`scope`, `addr`, `key`, until when) the login remembered,
    /// unless the user is locked at `now`. `false` when nothing changed; `None` where the
    /// backend has no such change, or a transaction is open (see
    /// [`backend::Backend::spend_totp_at_once_async`]). Either way but `true`, the
    /// caller's transaction decides.
    pub async fn spend_totp_at_once_async(
        &mut self,
        user: &str,
        device: i64,
        step: u64,
        now: i64,
        remember: Option<(RememberScope, &str, &str, i64)>,
    ) -> Option<Result<bool, StoreError>> {
        let login =
            remember.map(|(scope, addr, key, until)| (remembered(user, scope, addr, key), until));
        let remember = login.as_ref().map(|(l, until)| (l, *until));
        Some(
            self.backend
                .spend_totp_at_once_async(user, device, step, now, remember)?
                .await,
        )
    }

    /// Spends HOTP counter `counter`: the next expected becomes `counter + 1`, and succeeds
    /// only if no caller got there first.
    pub fn spend_hotp_counter(&mut self, device: i64, counter: u64) -> Result<bool, StoreError> {
        self.backend.spend_hotp_counter(device, counter)
    }

    pub fn unused_bypass_codes(&mut self, user: &str) -> Result<Vec<BypassRow>, StoreError> {
        Ok(self
            .bypass_codes(user)?
            .into_iter()
            .filter(|r| !r.used)
            .collect())
    }

    /// All of a user's current bypass codes, spent or not.
    pub fn bypass_codes(&mut self, user: &str) -> Result<Vec<BypassRow>, StoreError> {
        collect_codes(self.backend.bypass_codes(user)?)
    }

    /// Replaces all of a user's bypass codes with `codes`, in one transaction.
    pub fn replace_bypass_codes(
        &mut self,
        user: &str,
        codes: &[StoredCode],
        now: i64,
    ) -> Result<(), StoreError> {
        let keyed: Vec<(Vec<u8>, Vec<u8>)> = codes
            .iter()
            .map(|c| (c.salt.to_vec(), self.key.code_tag(&c.hash).to_vec()))
            .collect();
        self.backend.replace_bypass_codes(&backend::NewBypassCodes {
            user,
            codes: &keyed,
            now,
        })
    }

    /// Spends a bypass code: succeeds only for the first caller.
    pub fn spend_bypass_code(&mut self, id: i64, now: i64) -> Result<bool, StoreError> {
        self.backend.spend_bypass_code(id, now)
    }

    /// How many accounts are locked out at `now`.
    pub fn locked_users(&mut self, now: i64) -> Result<i64, StoreError> {
        self.backend.locked_users(now)
    }

    /// Every user the store holds anything for (a failure count, a lock, a device, a bypass
    /// code, spent or not), sorted by name. Read in one transaction, so the counts agree.
    pub fn user_summaries(&mut self) -> Result<Vec<UserSummary>, StoreError> {
        self.backend.user_summaries()
    }
}

fn collect_codes(rows: Vec<CodeRecord>) -> Result<Vec<BypassRow>, StoreError> {
    rows.into_iter()
        .map(|r| {
            Ok(BypassRow {
                id: r.id,
                code: StoredCode {
                    salt: r
                        .salt
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("code salt"))?,
                    hash: r
                        .tag
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("code hash"))?,
                },
                used: r.used,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    // The behaviour every backend shares is tested once for both, in
    // mfad/tests/store_postgres.rs (`on_sqlite::*`, `on_postgresql::*`); here, what is
    // SQLite's own: the file, its modes, the sealing of older databases.
    use super::sqlite::MIGRATIONS;
    use super::*;
    use crate::factor::bypass;
    use rusqlite::{Connection, params};
    use std::os::unix::fs::PermissionsExt;

    fn params() -> TotpParams {
        TotpParams::default()
    }

    #[test]
    fn a_new_database_file_is_private_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/mfa.db");
        let key = dir.path().join("store.key");
        let mut store = Store::open(&path, StoreKey::load(&key, true).unwrap()).unwrap();
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
        let mut store = Store::open(&path, StoreKey::load(&key, false).unwrap()).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        drop(store);
        // Another key cannot open it.
        assert!(matches!(
            Store::open(&path, StoreKey::generate().unwrap()),
            Err(StoreError::WrongKey)
        ));
    }

    #[test]
    fn a_copy_of_the_database_holds_no_secret_and_no_plain_code_hash() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("mfa.db");
        let mut s = Store::open_with_key_file(&db, &dir.path().join("store.key")).unwrap();
        let secret = b"a-very-recognisable-totp-key";
        s.add_totp_device("u", "app", secret, params(), 1, 0)
            .unwrap();
        let (shown, stored) = bypass::generate(&crate::random::OsRandom);
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
        let (code, stored) = bypass::new_code(&crate::random::OsRandom, 8);
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
        let mut s = Store::open_with_key_file(&db, &dir.path().join("k")).unwrap();
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
