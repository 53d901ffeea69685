//! The seam between the store's rules and a database: [`Backend`] holds rows as they are
//! stored (secrets sealed, one-time codes keyed), and [`super::Store`] seals, opens and
//! checks them with the store key. SQLite ([`super::sqlite`]) is the embedded default;
//! PostgreSQL ([`super::postgres`]) holds one state for a cluster of nodes.
//!
//! Every method is one atomic change: methods that write several rows run in a transaction
//! of their own, or inside the caller's when [`Backend::begin`] opened one. Spending a code
//! is a conditional UPDATE whose row count says whether this caller won, so two logins
//! racing on one code cannot both succeed, whichever node they run on.

use super::{FailureEffect, LockState, StoreError, UserSummary};

/// A device row as stored: the secret sealed with the store key for its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: i64,
    /// `totp`, `hotp`, `phone` or `push`.
    pub kind: String,
    pub name: String,
    pub sealed_secret: Option<Vec<u8>>,
    pub algorithm: Option<String>,
    pub digits: Option<u32>,
    pub period: Option<u64>,
    /// TOTP: the last time step spent. HOTP: the next counter expected.
    pub counter: i64,
    /// phone: an E.164 number; push: the notifier's target.
    pub address: Option<String>,
    pub is_default: bool,
    pub created: i64,
}

/// A device to insert. The user's first device becomes the default method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeviceRecord {
    pub user: String,
    pub kind: String,
    pub name: String,
    pub sealed_secret: Option<Vec<u8>>,
    pub algorithm: Option<String>,
    pub digits: Option<u32>,
    pub period: Option<u64>,
    pub counter: i64,
    pub address: Option<String>,
}

/// A failure to count, under the lockout rule: at `max_failures` (0: never) the account
/// locks until `now + duration`.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    pub user: &'a str,
    pub now: i64,
    pub max_failures: u32,
    pub duration: u64,
}

/// A login to remember or look up: the user, who vouched for the address (`sshd` or
/// `self`), the address and the fingerprint of the key the publickey step used ("" if none).
#[derive(Debug, Clone, Copy)]
pub struct Remembered<'a> {
    pub user: &'a str,
    pub scope: &'a str,
    pub addr: &'a str,
    pub key: &'a str,
}

/// What a login reads before its first prompt, as stored ([`Backend::login_reads`]).
#[derive(Debug, Clone, Default)]
pub struct LoginReads {
    pub lock: LockState,
    pub devices: Vec<DeviceRecord>,
    pub bypass_codes: Vec<CodeRecord>,
    /// Whether the login asked about (`remembered`) is remembered; false when not asked.
    pub remembered: bool,
}

/// A backend's call made on the caller's task, without a blocking thread (see
/// [`Backend::login_reads_async`]).
pub type CallFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// [`Backend::lock_state_and_spend_totp`] as one call after the other.
pub fn lock_state_then_spend_totp<B: Backend + ?Sized>(
    b: &mut B,
    user: &str,
    device: i64,
    step: u64,
    now: i64,
) -> Result<(LockState, Option<bool>), StoreError> {
    let lock = b.lock_state(user)?;
    if lock.locked_until.is_some_and(|until| until > now) {
        return Ok((lock, None));
    }
    let spent = b.spend_totp_step(device, step)?;
    Ok((lock, Some(spent)))
}

/// [`Backend::login_reads`] as one call after the other.
pub fn login_reads_one_by_one<B: Backend + ?Sized>(
    b: &mut B,
    user: &str,
    remembered: Option<&Remembered<'_>>,
    now: i64,
) -> Result<LoginReads, StoreError> {
    Ok(LoginReads {
        lock: b.lock_state(user)?,
        devices: b.devices(user)?,
        bypass_codes: b.bypass_codes(user)?,
        remembered: match remembered {
            Some(l) => b.is_remembered(l, now)?,
            None => false,
        },
    })
}

/// An SMS code (salt and keyed hash) to make the user's only live one until `expires`.
#[derive(Debug, Clone, Copy)]
pub struct NewSmsCode<'a> {
    pub user: &'a str,
    pub salt: &'a [u8],
    pub tag: &'a [u8],
    pub now: i64,
    pub expires: i64,
}

/// A user's new set of bypass codes (salt, keyed hash), replacing every earlier one.
#[derive(Debug, Clone, Copy)]
pub struct NewBypassCodes<'a> {
    pub user: &'a str,
    pub codes: &'a [(Vec<u8>, Vec<u8>)],
    pub now: i64,
}

/// An enrolment link to make the user's only live one until `expires` (`key`: the SHA-256
/// of its token).
#[derive(Debug, Clone, Copy)]
pub struct NewEnrolLink<'a> {
    pub key: &'a [u8; 32],
    pub user: &'a str,
    pub now: i64,
    pub expires: i64,
}

/// An enrolment link as stored, with the page's progress on it (kept in the store, so that
/// any node's mfa-web can serve the next step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolLinkRecord {
    pub user: String,
    pub password_tries: u32,
    /// When the password was last accepted on the page (None: not yet, or forgotten).
    pub password_ok_at: Option<i64>,
    /// The new app's secret waiting for a code, sealed for this link's user.
    pub sealed_secret: Option<Vec<u8>>,
    pub code_tries: u32,
    /// When the page last did a step (0: never).
    pub last_step: i64,
}

/// One step of the enrolment page on a live link, each a single conditional statement so
/// that two nodes serving the same link cannot both get past a limit.
#[derive(Debug, Clone, Copy)]
pub enum EnrolLinkStep<'a> {
    /// One more password tried: the count, or None when `max` were tried already.
    Password { max: u32 },
    /// The password was right.
    PasswordOk,
    /// A new pending app (sealed), or none; its code tries start again at 0.
    Pending(Option<&'a [u8]>),
    /// A code that did not match: the count; at `max` the pending app is dropped.
    CodeMiss { max: u32 },
    /// The page sat idle too long: the password and the pending app are forgotten.
    Idle,
}

/// A portal session (mfa-web's self-service pages) as stored: only the SHA-256 of its
/// cookie is the key, so the table holds no usable session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSessionRecord {
    pub user: String,
    pub created: i64,
    pub last_seen: i64,
    /// When the second factor was last proved in this session (None: password only).
    pub factor_at: Option<i64>,
    pub code_tries: u32,
    /// The token every form of the session must carry.
    pub csrf: String,
    /// A new authenticator app waiting for a code from it, sealed for the session's user.
    pub pending_secret: Option<Vec<u8>>,
}

/// A new portal session, after the password.
pub struct NewWebSession<'a> {
    pub key: &'a [u8; 32],
    pub user: &'a str,
    pub csrf: &'a str,
    pub now: i64,
    /// Sessions created before this, or idle since before `idle_before`, are dropped.
    pub created_before: i64,
    pub idle_before: i64,
}

/// One change to a live portal session.
#[derive(Debug, Clone, Copy)]
pub enum WebSessionStep<'a> {
    /// A page was served.
    Touch,
    /// The second factor was proved now.
    Factor,
    /// A wrong code: the count, or None when `max` were tried already.
    CodeMiss { max: u32 },
    /// Signed out, or ended by a limit.
    End,
    /// A new app (sealed) waiting for a code from it, or none.
    Pending(Option<&'a [u8]>),
}

/// One login as the login history keeps it (written off the login's path, in batches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRecord {
    /// The row's number (ignored when recording).
    pub id: i64,
    pub user: String,
    /// When the login ended (Unix seconds).
    pub at: i64,
    /// The node that served it (mfad's host name).
    pub host: String,
    /// The PAM service (`sshd`, ...).
    pub service: String,
    /// The client's address, as the caller reported it (`-` when none).
    pub rhost: String,
    /// The second factor used or asked for (`totp`, `push`, ... or `-`).
    pub method: String,
    /// `allowed`, `refused`, `locked`, `reported`, `unavailable` or `abandoned`.
    pub outcome: String,
    /// Why, in a few words (the decision log's reason).
    pub detail: String,
}

/// A bypass or SMS code as stored: its salt and its keyed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRecord {
    pub id: i64,
    pub salt: Vec<u8>,
    pub tag: Vec<u8>,
    pub used: bool,
}

/// Everything a store holds, as stored (secrets stay sealed): what `mfad --migrate-store`
/// copies from one backend into another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// name, consecutive failures, locked until.
    pub users: Vec<(String, u32, Option<i64>)>,
    /// The owner and the row (ids are the source's; a load assigns its own).
    pub devices: Vec<(String, DeviceRecord)>,
    /// owner, salt, keyed hash, created, used at.
    pub bypass_codes: Vec<DumpedCode>,
    /// owner, salt, keyed hash, expires (in `created`), used at.
    pub sms_codes: Vec<DumpedCode>,
    pub remembered: Vec<DumpedRemembered>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedCode {
    pub user: String,
    pub salt: Vec<u8>,
    pub tag: Vec<u8>,
    /// Bypass codes: when they were made. SMS codes: when they expire.
    pub time: i64,
    pub used_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedRemembered {
    pub user: String,
    /// `sshd` or `self`.
    pub scope: String,
    pub addr: String,
    pub key: String,
    pub until: i64,
}

/// A wait until some commits are on disk.
pub type DurableFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send>>;

/// One connection to a database that holds the store.
pub trait Backend: Send {
    /// `sqlite` or `postgresql`, for logs and errors.
    fn kind(&self) -> &'static str;

    /// Whether the connection is beyond use (lost, timed out mid-statement): a pool drops it
    /// instead of handing it out again.
    fn is_broken(&self) -> bool {
        false
    }

    /// Another handle on the same connection, for another conversation at the same time
    /// (SQLite's group commit); None when each connection serves one conversation.
    fn handle(&self) -> Option<Box<dyn Backend>> {
        None
    }

    /// Inline use ([`crate::core::Core::db_login`]): while on, nothing waits (for the
    /// connection, another transaction, the disk); what would wait fails with
    /// [`StoreError::WouldBlock`] and commits are not waited for (see
    /// [`Backend::take_unsynced`]). False when the backend cannot (PostgreSQL waits for its
    /// server): the caller runs its work on a blocking thread.
    fn set_inline(&mut self, _on: bool) -> bool {
        false
    }

    /// After inline use: the wait until this handle's commits are on disk, if any.
    fn take_unsynced(&mut self) -> Option<DurableFuture> {
        None
    }

    /// For inline use that met contention ([`StoreError::is_contention`]): a signal raised
    /// each time another handle lets go of the connection, so the caller may wait for it on
    /// its own task and try inline again instead of moving to a blocking thread. Take it
    /// before the attempt (a [`tokio::sync::Notify::notified`] made then also sees a
    /// release that comes between the attempt and the wait). None when the backend raises
    /// none, or when only a blocking use can go on (a checkpoint is due, which only a
    /// blocking use runs).
    fn released(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    /// Opens a write transaction. Until [`Backend::commit`], whatever a method read is still
    /// true when a later one writes: SQLite takes the write lock at once (`BEGIN
    /// IMMEDIATE`); PostgreSQL locks the user's row when [`Backend::lock_state`] reads it.
    fn begin(&mut self) -> Result<(), StoreError>;
    fn commit(&mut self) -> Result<(), StoreError>;
    /// Undoes the open transaction; never fails (a lost connection undoes it anyway).
    fn rollback(&mut self);

    /// How many of this backend's migrations have run.
    fn schema_version(&mut self) -> Result<i64, StoreError>;

    /// Records `check` (derived from the store key) in a new database; in one that has a
    /// check value, compares it in constant time and fails with [`StoreError::WrongKey`]
    /// when it differs.
    fn check_key(&mut self, check: &[u8; 32]) -> Result<(), StoreError>;

    /// A user's failure count and lock; the defaults for a user the store does not know.
    /// Inside a transaction, on PostgreSQL, the user's row stays locked until it ends.
    fn lock_state(&mut self, user: &str) -> Result<LockState, StoreError>;
    /// Everything a login reads before its first prompt: the lock, the devices, the bypass
    /// codes and, when `remembered` names a login, whether it is remembered at `now`. The
    /// backends read it in one snapshot (SQLite: one read transaction; PostgreSQL: one
    /// round trip); this default asks one call after the other.
    fn login_reads(
        &mut self,
        user: &str,
        remembered: Option<&Remembered<'_>>,
        now: i64,
    ) -> Result<LoginReads, StoreError> {
        login_reads_one_by_one(self, user, remembered, now)
    }
    /// [`Backend::login_reads`] as a future the caller's task drives itself, where the
    /// backend can make it without blocking a thread (PostgreSQL, outside a transaction):
    /// no hand-over to a blocking thread and back. `None` where it cannot (the caller makes
    /// the blocking call).
    fn login_reads_async<'a>(
        &'a mut self,
        _user: &'a str,
        _remembered: Option<&'a Remembered<'a>>,
        _now: i64,
    ) -> Option<CallFuture<'a, LoginReads>> {
        None
    }
    /// Counts one failure; at `max_failures` (0: never) locks until `now + duration`, never
    /// shortening a longer lock, clears the count and forgets remembered logins.
    fn record_failure(&mut self, f: &Failure<'_>) -> Result<FailureEffect, StoreError>;
    /// After a success: the count of consecutive failures starts again.
    fn clear_failures(&mut self, user: &str) -> Result<(), StoreError>;
    /// Lifts a lock, clears the count and forgets remembered logins. Returns whether there
    /// was a count or a lock to clear.
    fn unlock(&mut self, user: &str) -> Result<bool, StoreError>;
    /// Locks until `until` (never shortening a longer lock) and forgets remembered logins.
    fn lock_until(&mut self, user: &str, until: i64) -> Result<(), StoreError>;
    /// Forgets the user's remembered logins; returns how many there were.
    fn forget_remembered(&mut self, user: &str) -> Result<usize, StoreError>;
    /// How many accounts are locked at `now`.
    fn locked_users(&mut self, now: i64) -> Result<i64, StoreError>;
    /// The accounts locked at `now` (name, failures, locked until), by name, at most
    /// `limit`.
    fn locked_accounts(
        &mut self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<(String, u32, i64)>, StoreError>;

    /// Makes (salt, tag) the user's only live SMS code until `expires`: every earlier code
    /// that is unspent or expired at `now` is dropped.
    fn replace_sms_code(&mut self, code: &NewSmsCode<'_>) -> Result<(), StoreError>;
    /// The user's SMS codes that have not expired at `now`, spent or not, oldest first.
    fn sms_codes(&mut self, user: &str, now: i64) -> Result<Vec<CodeRecord>, StoreError>;
    /// Spends SMS code `id`: true only for the first caller, before it expires.
    fn spend_sms_code(&mut self, id: i64, now: i64) -> Result<bool, StoreError>;

    /// Records an enrolment link; it becomes the user's only live one (earlier unspent
    /// links of the user, and every expired link, are dropped).
    fn add_enrol_link(&mut self, link: &NewEnrolLink<'_>) -> Result<(), StoreError>;
    /// An unspent enrolment link that has not expired at `now`, with the page's progress.
    fn enrol_link(
        &mut self,
        key: &[u8; 32],
        now: i64,
    ) -> Result<Option<EnrolLinkRecord>, StoreError>;
    /// Records a step of the page on the live link `key` (see [`EnrolLinkStep`]): the count
    /// the step returns (0 for steps without one), or None when the link is not live or a
    /// limit refused the step.
    fn enrol_link_step(
        &mut self,
        key: &[u8; 32],
        step: EnrolLinkStep<'_>,
        now: i64,
    ) -> Result<Option<u32>, StoreError>;
    /// Spends the enrolment link `key` of `user`: true only for the first caller, before it
    /// expires.
    fn spend_enrol_link(
        &mut self,
        key: &[u8; 32],
        user: &str,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Records a portal session; drops every session past its absolute or idle limit.
    fn add_web_session(&mut self, session: &NewWebSession<'_>) -> Result<(), StoreError>;
    /// The portal session `key`, if it exists.
    fn web_session(&mut self, key: &[u8; 32]) -> Result<Option<WebSessionRecord>, StoreError>;
    /// Changes the session `key` at `now`: the count for [`WebSessionStep::CodeMiss`] (0 for
    /// the others), or None when there is no such session or the limit refused the step.
    fn web_session_step(
        &mut self,
        key: &[u8; 32],
        step: WebSessionStep<'_>,
        now: i64,
    ) -> Result<Option<u32>, StoreError>;

    /// Remembers a login from `addr` with key fingerprint `key`, vouched for by `scope`,
    /// until `until`; drops every remembered login that ended by `now`.
    fn remember(&mut self, l: &Remembered<'_>, now: i64, until: i64) -> Result<(), StoreError>;
    fn is_remembered(&mut self, l: &Remembered<'_>, now: i64) -> Result<bool, StoreError>;

    /// Forgets everything about `user`: devices, codes, counters, lock, remembered logins.
    fn reset_user(&mut self, user: &str) -> Result<(), StoreError>;

    /// A user's devices, oldest first (the order `mfa devices` numbers them in).
    fn devices(&mut self, user: &str) -> Result<Vec<DeviceRecord>, StoreError>;
    /// Inserts devices, all or none; returns their ids in order. A device becomes its
    /// user's default when the user had none.
    fn add_devices(&mut self, rows: &[NewDeviceRecord], now: i64) -> Result<Vec<i64>, StoreError>;
    fn set_default(&mut self, user: &str, device: i64) -> Result<(), StoreError>;
    /// Renames device `device` of `user`: false when the user has no such device.
    fn rename_device(&mut self, user: &str, device: i64, name: &str) -> Result<bool, StoreError>;
    /// Appends `rows` to the login history and drops every row older than `before`, in one
    /// transaction.
    fn record_logins(&mut self, rows: &[LoginRecord], before: i64) -> Result<(), StoreError>;
    /// The newest `limit` logins of `user`, newest first.
    fn recent_logins(&mut self, user: &str, limit: u32) -> Result<Vec<LoginRecord>, StoreError>;
    /// Removes a device of `user`; if it was the default, the oldest remaining device takes
    /// its place. Remembered logins are forgotten.
    fn remove_device(&mut self, user: &str, device: i64) -> Result<(), StoreError>;
    /// Spends TOTP step `step` of device `device`: true only if no step as late was spent.
    fn spend_totp_step(&mut self, device: i64, step: u64) -> Result<bool, StoreError>;
    /// [`Backend::lock_state`] of `user`, then, unless the user is locked at `now`
    /// (`locked_until` later than `now`), [`Backend::spend_totp_step`]: the lock, and `None`
    /// when it held (nothing was spent), else whether the step was spent. For a login's
    /// transaction, which reads the lock before it spends a code; PostgreSQL sends the two
    /// in one round trip.
    fn lock_state_and_spend_totp(
        &mut self,
        user: &str,
        device: i64,
        step: u64,
        now: i64,
    ) -> Result<(LockState, Option<bool>), StoreError> {
        lock_state_then_spend_totp(self, user, device, step, now)
    }
    /// A TOTP login's whole write when the code is good, as one change of its own (outside
    /// any transaction), as a future the caller's task drives itself: unless `user` is
    /// locked at `now`, spends `step` of `device` and, when it did, clears the user's count
    /// of failures and, with `remember`, remembers that login until the time given (as
    /// [`Backend::remember`]). `true`: done. `false`: nothing changed (the user locked, the
    /// step or a later one spent, the device gone): the caller runs its whole transaction,
    /// which tells which. `None` where the backend has no such change (PostgreSQL has: one
    /// round trip where the transaction takes two, and no blocking thread), or a
    /// transaction is open.
    fn spend_totp_at_once_async<'a>(
        &'a mut self,
        _user: &'a str,
        _device: i64,
        _step: u64,
        _now: i64,
        _remember: Option<(&'a Remembered<'a>, i64)>,
    ) -> Option<CallFuture<'a, bool>> {
        None
    }
    /// Spends HOTP counter `counter`: the next expected becomes `counter + 1`; true only if
    /// no caller got there first.
    fn spend_hotp_counter(&mut self, device: i64, counter: u64) -> Result<bool, StoreError>;

    /// All of a user's current bypass codes, spent or not, oldest first.
    fn bypass_codes(&mut self, user: &str) -> Result<Vec<CodeRecord>, StoreError>;
    /// Replaces all of a user's bypass codes with `codes` (salt, tag).
    fn replace_bypass_codes(&mut self, new: &NewBypassCodes<'_>) -> Result<(), StoreError>;
    /// Spends bypass code `id`: true only for the first caller.
    fn spend_bypass_code(&mut self, id: i64, now: i64) -> Result<bool, StoreError>;

    /// Every user the store holds anything for, sorted by name; read in one snapshot.
    fn user_summaries(&mut self) -> Result<Vec<UserSummary>, StoreError>;

    /// Everything, in one consistent read.
    fn dump(&mut self) -> Result<Dump, StoreError>;
    /// Whether the store holds no user, device, code or remembered login.
    fn is_empty(&mut self) -> Result<bool, StoreError>;
    /// Writes `dump` in one transaction, all or none, keeping the ids it does not need to
    /// change; with `replace`, everything stored before is deleted first (the merge rules of
    /// `mfad --migrate-store` are applied above the backend, where the store key is).
    fn load(&mut self, dump: &Dump, replace: bool) -> Result<(), StoreError>;
}
