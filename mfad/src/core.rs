//! What every service of the daemon shares: the settings, the store, the clock and the
//! user directory, and the few rules every conversation applies the same way (a lock
//! refuses, a failure counts, an accepted factor clears the count).

use crate::accounts::{Account, Accounts};
use crate::clock::Clock;
use crate::config::Config;
use crate::conn::Conn;
use crate::daemon::{Result, SessionError, Who, decision};
use crate::factor::{bypass, totp};
use crate::providers::Remember;
use crate::random::Random;
use crate::store::pool::StorePool;
use crate::store::{FailureEffect, NewDeviceRow, Store, StoreError};
use crate::text;
use mfa_proto::Outcome;
use std::sync::Arc;
use zeroize::{Zeroize, Zeroizing};

/// How long [`Core::db_login`] waits for the connection on its own task, and how many times
/// it tries again at most, before it sends the work to a blocking thread.
const INLINE_PATIENCE: std::time::Duration = std::time::Duration::from_millis(50);
const INLINE_TRIES: u32 = 64;

/// The most lookups in the directory (an account by name or uid, its groups) mfad runs at
/// once for root's conversations (sshd's logins, root's commands); the others wait their
/// turn, first come first served. Unbounded, a burst of logins of users the cache does not
/// hold ran as many lookups as logins, each on its own blocking thread, and the threads
/// shared two cores by turns: with 200 clients and nss_wrapper's 8,000 entries, the same
/// throughput but a p99 of 100-149 ms against 81-122 ms with 8 in six interleaved pairs
/// (docs/BENCHMARKS.md). Eight, not fewer, so that a few slow lookups (an account in a slow
/// trusted domain) hold up no one else.
pub const DIRECTORY_LOOKUPS: usize = 8;

/// The most lookups all other local callers together run at once (a user's own process, which
/// may ask only about that user: see `LoginService::authenticate`), in places of their own.
pub const USER_DIRECTORY_LOOKUPS: usize = 4;

/// The most lookups the web front's requests run at once, in places of their own: its
/// sign-in page takes any name from anyone who reaches it.
pub const WEB_DIRECTORY_LOOKUPS: usize = 2;

/// The places directory lookups wait for, one set for each kind of caller, so that however
/// many lookups users' processes or the web front's visitors cause, none of sshd's logins
/// waits behind them. Kept across reloads, with the accounts they guard.
pub(crate) struct DirectoryPlaces {
    root: Arc<tokio::sync::Semaphore>,
    users: Arc<tokio::sync::Semaphore>,
    web: Arc<tokio::sync::Semaphore>,
}

impl DirectoryPlaces {
    pub(crate) fn new() -> DirectoryPlaces {
        let places = |n| Arc::new(tokio::sync::Semaphore::new(n));
        DirectoryPlaces {
            root: places(DIRECTORY_LOOKUPS),
            users: places(USER_DIRECTORY_LOOKUPS),
            web: places(WEB_DIRECTORY_LOOKUPS),
        }
    }

    /// The places of a conversation whose caller is `uid`.
    fn of_caller(&self, uid: u32) -> &Arc<tokio::sync::Semaphore> {
        if uid == 0 { &self.root } else { &self.users }
    }
}

/// What `kept` has (a cache, read on the task), else the answer of `ask` (a directory
/// lookup, blocking), run once one of `places` is free. `kept` is read again once the place
/// is taken: logins of one user that waited together ask the directory once, not each. The
/// place goes with the lookup and is given back when it ends, not when the login does: a
/// login dropped meanwhile (its client gone) leaves no more lookups running than the bound.
///
/// With `beside`, the lookup always runs on a blocking thread, never on the caller's, so
/// that the caller's task can do other work while it runs ([`Core::account_beside`]).
async fn ask_directory<T, K, A>(
    places: &Arc<tokio::sync::Semaphore>,
    beside: bool,
    kept: K,
    ask: A,
) -> Result<T>
where
    T: Send + 'static,
    K: Fn() -> Option<T>,
    A: FnOnce() -> std::result::Result<T, crate::accounts::AccountsError> + Send + 'static,
{
    // A kept answer is taken here, without a hop to a blocking thread and back.
    if let Some(found) = kept() {
        return Ok(found);
    }
    // An error only once the semaphore is closed, which mfad's never are: the lookup then
    // runs without a place rather than not at all.
    let place = Arc::clone(places).acquire_owned().await.ok();
    if let Some(found) = kept() {
        return Ok(found);
    }
    let work = move || {
        let _place = place;
        ask()
    };
    Ok(if beside {
        crate::blocking::run(work).await
    } else {
        crate::blocking::run_here_if_alone(work).await
    }??)
}

/// The daemon's shared state; each service holds it, and only what else it needs.
pub(crate) struct Core {
    pub(crate) config: Config,
    /// The name this host shows in authenticator apps and messages.
    pub(crate) issuer: String,
    pub(crate) store: Arc<StorePool>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Who the system says users are (NSS in production).
    pub(crate) accounts: Arc<dyn Accounts>,
    /// Where secrets, codes and tokens come from (the system's CSPRNG in production).
    pub(crate) random: Arc<dyn Random>,
    /// The login history's queue (kept across reloads).
    pub(crate) history: Arc<crate::history::History>,
    /// The places directory lookups wait for (kept across reloads).
    pub(crate) directory: Arc<DirectoryPlaces>,
}

impl Core {
    /// Runs `f` on a connection of the store, off the async threads (SQLite blocks on
    /// fsync; the PostgreSQL backend waits for the server).
    pub(crate) async fn db<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> std::result::Result<T, StoreError> + Send + 'static,
    {
        let started = tokio::time::Instant::now();
        let (backend, result) = match self.store.get().await {
            Ok(mut store) => {
                let backend = store.backend_kind();
                (backend, crate::blocking::run(move || f(&mut store)).await?)
            }
            Err(e) => ("unavailable", Err(e)),
        };
        self.store_answered(backend, started, result)
    }

    /// [`Core::db`] for the work of every login (its snapshot read, its code's write).
    /// First `call`, on the conversation's own task, where the store makes it with no
    /// blocking thread at all (PostgreSQL outside a transaction; `call` gives `None` where
    /// the store cannot, or to leave it to `f`). Else `f`, run first on the conversation's
    /// own thread when that waits for nothing: the connection free, no other transaction
    /// open (SQLite, [`Store::set_inline`]); its commit is then awaited without holding a
    /// thread. When `f` would have had to wait, it is run again as [`Core::db`] runs it, so
    /// `f` must change nothing unless it succeeds: a read, or one transaction
    /// ([`Store::in_transaction`]).
    pub(crate) async fn db_login<T, C, F>(&self, call: C, f: F) -> Result<T>
    where
        T: Send + 'static,
        C: AsyncFnOnce(&mut Store) -> Option<std::result::Result<T, StoreError>>,
        F: Fn(&mut Store) -> std::result::Result<T, StoreError> + Send + 'static,
    {
        let started = tokio::time::Instant::now();
        let mut store = match self.store.get().await {
            Ok(store) => store,
            Err(e) => return self.store_answered("unavailable", started, Err(e)),
        };
        if let Some(result) = crate::blocking::caught(call(&mut store)).await? {
            return self.store_answered(store.backend_kind(), started, result);
        }
        let backend = store.backend_kind();
        let mut tries = 0;
        let mut until = None;
        while store.set_inline(true) {
            // Taken before the attempt, so that a release between a failed attempt and the
            // wait below still ends the wait.
            let released = store.released();
            let release = released.as_deref().map(tokio::sync::Notify::notified);
            let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut store)));
            store.set_inline(false);
            let unsynced = store.take_unsynced();
            let first = first.map_err(|_| crate::blocking::Failed::Panicked)?;
            if !first.as_ref().is_err_and(StoreError::is_contention) {
                // Answered only once its writes are on disk.
                let result = match unsynced {
                    Some(durable) => durable.await.and(first),
                    None => first,
                };
                return self.store_answered(backend, started, result);
            }
            // Another conversation has the connection, most often for the few microseconds
            // of its own statement on the other worker: wait on this task until it lets go
            // and try again here, instead of a round trip through a blocking thread (under
            // load, most of mfad's futex calls and context switches). The wait holds no
            // thread, so it may be long (a checkpoint holds the connection for
            // milliseconds; 5 ms sent a thousand logins in 24,000 to a blocking thread
            // anyway). A checkpoint due (which only a blocking use runs), or a holder
            // that stays (another process's write lock), sends the work to a blocking
            // thread as before.
            let until = *until.get_or_insert_with(|| tokio::time::Instant::now() + INLINE_PATIENCE);
            tries += 1;
            match release {
                Some(release)
                    if tries < INLINE_TRIES
                        && tokio::time::Instant::now() < until
                        && store.released().is_some() =>
                {
                    let _ = tokio::time::timeout_at(until, release).await;
                }
                _ => break,
            }
        }
        let result = crate::blocking::run(move || f(&mut store)).await?;
        self.store_answered(backend, started, result)
    }

    /// Notes how a use of the store went (outage log, metrics) and passes its result on.
    fn store_answered<T>(
        &self,
        backend: &'static str,
        started: tokio::time::Instant,
        result: std::result::Result<T, StoreError>,
    ) -> Result<T> {
        match &result {
            Ok(_) => {
                self.store.answered();
                crate::metrics::store_operation(backend, started.elapsed(), None);
            }
            Err(e) => {
                self.store.failed(e);
                crate::metrics::store_operation(backend, started.elapsed(), Some(e.is_outage()));
            }
        }
        Ok(result?)
    }

    /// The account `name` refers to, as the directory spells it, for root's conversations
    /// (only root may ask about any name).
    pub(crate) async fn account(&self, name: &str) -> Result<Option<Account>> {
        self.account_in(&self.directory.root, false, name).await
    }

    /// [`Core::account`] (asked by root), the directory asked on a blocking thread even for
    /// a conversation alone at work: the caller's task goes on meanwhile (a login's read of
    /// the store, [`crate::login`]) and waits for the answer after.
    pub(crate) async fn account_beside(&self, name: &str) -> Result<Option<Account>> {
        self.account_in(&self.directory.root, true, name).await
    }

    /// The account `name` refers to if it is kept ([`Core::account`] without the
    /// directory), `None` if the directory would have to be asked.
    pub(crate) fn kept_account(&self, name: &str) -> Option<Account> {
        self.accounts.kept_by_name(name)
    }

    /// [`Core::account`] for the web front, in its own places ([`WEB_DIRECTORY_LOOKUPS`]).
    pub(crate) async fn web_account(&self, name: &str) -> Result<Option<Account>> {
        self.account_in(&self.directory.web, false, name).await
    }

    async fn account_in(
        &self,
        places: &Arc<tokio::sync::Semaphore>,
        beside: bool,
        name: &str,
    ) -> Result<Option<Account>> {
        let (accounts, owned) = (Arc::clone(&self.accounts), name.to_string());
        ask_directory(
            places,
            beside,
            || self.accounts.kept_by_name(name).map(Some),
            move || accounts.by_name(&owned),
        )
        .await
    }

    /// The account of the caller `uid`.
    pub(crate) async fn account_of(&self, uid: u32) -> Result<Option<Account>> {
        let accounts = Arc::clone(&self.accounts);
        ask_directory(
            self.directory.of_caller(uid),
            false,
            || self.accounts.kept_by_uid(uid).map(Some),
            move || accounts.by_uid(uid),
        )
        .await
    }

    /// The user name of the caller `uid`.
    pub(crate) async fn name_of(&self, uid: u32) -> Result<Option<String>> {
        Ok(self.account_of(uid).await?.map(|a| a.name))
    }

    /// The names of `account`'s groups, asked in a conversation with the caller `caller`;
    /// an error when the directory cannot say.
    pub(crate) async fn groups(&self, account: &Account, caller: u32) -> Result<Vec<String>> {
        self.groups_in(self.directory.of_caller(caller), account)
            .await
    }

    /// [`Core::groups`] for the web front, in its own places ([`WEB_DIRECTORY_LOOKUPS`]).
    pub(crate) async fn web_groups(&self, account: &Account) -> Result<Vec<String>> {
        self.groups_in(&self.directory.web, account).await
    }

    async fn groups_in(
        &self,
        places: &Arc<tokio::sync::Semaphore>,
        account: &Account,
    ) -> Result<Vec<String>> {
        let (accounts, owned) = (Arc::clone(&self.accounts), account.clone());
        ask_directory(
            places,
            false,
            || self.accounts.kept_groups(account),
            move || accounts.groups(&owned),
        )
        .await
    }

    /// How long a reported login locks the account: the lockout duration, at least an hour.
    pub(crate) fn report_lock_secs(&self) -> i64 {
        self.config.lockout.duration.max(3600) as i64
    }

    pub(crate) fn totp_params(&self) -> totp::TotpParams {
        totp::TotpParams {
            algorithm: totp::HashAlgorithm::Sha1,
            digits: self.config.totp.digits,
            period: self.config.totp.period,
        }
    }

    pub(crate) async fn deny(&self, conn: &mut Conn, message: impl Into<String>) -> Result<()> {
        conn.error(message).await?;
        conn.done(Outcome::Deny).await?;
        Ok(())
    }

    /// Refuses (and says so) when the account is locked. Returns whether it may go on.
    pub(crate) async fn check_not_locked(&self, conn: &mut Conn, who: &Who<'_>) -> Result<bool> {
        let user = who.user.to_string();
        let state = self.db(move |s| s.lock_state(&user)).await?;
        self.not_locked(conn, who, &state).await
    }

    /// Refuses (and says so) when `state` is a lock still in force. Returns whether it may
    /// go on.
    pub(crate) async fn not_locked(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        state: &crate::store::LockState,
    ) -> Result<bool> {
        let now = self.clock.now();
        match state.locked_until {
            Some(until) if until > now => {
                decision(who, "-", "deny", "account locked");
                self.deny(conn, text::locked_message(who.user, until, now))
                    .await?;
                Ok(false)
            }
            _ => Ok(true),
        }
    }
    /// The directory (NSS) could not say who the user is or which groups they are in:
    /// nothing is decided on a guess. Unavailable, before any prompt, so the module's fail
    /// mode decides, as pam_duo does on a failed group lookup.
    pub(crate) async fn directory_down(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        e: &SessionError,
    ) -> Result<()> {
        decision(who, "-", "unavailable", &format!("user lookup failed: {e}"));
        conn.unavailable("mfad could not look the user up in the system's user database")
            .await?;
        Ok(())
    }

    /// A provider said yes: accepted unless the account was locked meanwhile (by failures
    /// in other sessions, a report, an admin), in the same transaction that clears the
    /// failure count and remembers the login (`remember`).
    pub(crate) async fn accept_unless_locked(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        method: &'static str,
        remember: Option<&Remember>,
    ) -> Result<bool> {
        let (user, now, remember) = (who.user.to_string(), self.clock.now(), remember.cloned());
        let locked = self
            .db(move |s| {
                s.in_transaction(|s| {
                    let lock = s.lock_state(&user)?;
                    match lock.locked_until {
                        Some(until) if until > now => return Ok(Some(until)),
                        _ => {}
                    }
                    // Read in this transaction, under its lock: no other can have
                    // counted one since.
                    if lock.failures > 0 {
                        s.clear_failures(&user)?;
                    }
                    if let Some(r) = &remember {
                        r.write(s, now)?;
                    }
                    Ok(None)
                })
            })
            .await?;
        if let Some(until) = locked {
            decision(
                who,
                method,
                "deny",
                "second factor passed, but the account is locked",
            );
            conn.error(text::locked_message(who.user, until, now))
                .await?;
            return Ok(false);
        }
        Ok(true)
    }

    pub(crate) async fn record_failure(&self, user: &str, now: i64) -> Result<FailureEffect> {
        let user = user.to_string();
        let (max, dur) = (
            self.config.lockout.max_failures,
            self.config.lockout.duration,
        );
        self.db(move |s| s.record_failure(&user, now, max, dur))
            .await
    }
    /// Whether the user has anything that can prove a second factor.
    pub(crate) async fn is_enrolled(&self, user: &str) -> Result<bool> {
        let user = user.to_string();
        self.db(move |s| {
            Ok(!s.devices(&user)?.is_empty() || !s.unused_bypass_codes(&user)?.is_empty())
        })
        .await
    }

    pub(crate) async fn issue_bypass_codes(&self, conn: &mut Conn, who: &Who<'_>) -> Result<()> {
        let (shown, stored) = bypass::generate(self.random.as_ref());
        let user = who.user.to_string();
        let now = self.clock.now();
        self.db(move |s| s.replace_bypass_codes(&user, &stored, now))
            .await?;
        decision(
            who,
            "bypass",
            "issued",
            &format!("{} new codes", shown.len()),
        );
        let mut list = String::new();
        for code in &shown {
            list.push_str("  ");
            list.push_str(code);
            list.push('\n');
        }
        let text = Zeroizing::new(format!(
            "New bypass codes for {} (each works once; earlier codes no longer work):\n\n{list}\n\
             Keep them somewhere safe, away from your phone.",
            who.user
        ));
        // `list` held the codes in clear; wipe it before it is freed.
        list.zeroize();
        conn.secret_info(text).await?;
        conn.done(Outcome::Allow).await?;
        Ok(())
    }

    /// Adds a device the user has proved (a confirming code, the texted code, an approved
    /// test push), and logs it.
    pub(crate) async fn add_device(&self, who: &Who<'_>, row: NewDeviceRow) -> Result<()> {
        let (user, now) = (who.user.to_string(), self.clock.now());
        let (kind, name) = (row.kind, text::clean(&row.name).into_owned());
        self.db(move |s| s.add_device(&user, &row, now)).await?;
        decision(who, kind.as_str(), "enrolled", &format!("device {name}"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A semaphore of `n` places for one test.
    fn places(n: usize) -> Arc<tokio::sync::Semaphore> {
        Arc::new(tokio::sync::Semaphore::new(n))
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn no_more_than_the_bound_of_directory_lookups_run_at_once_and_all_are_answered() {
        // Other conversations at work, as under load: the lookups go to blocking threads
        // (alone, a conversation's lookup runs on its worker, two at most on this runtime).
        let _others: Vec<_> = (0..3).map(|_| crate::blocking::Open::new()).collect();
        let places = places(DIRECTORY_LOOKUPS);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let answers = runtime().block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..5 * DIRECTORY_LOOKUPS {
                let (running, most, places) = (running.clone(), most.clone(), places.clone());
                tasks.spawn(async move {
                    ask_directory(
                        &places,
                        false,
                        || None,
                        move || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                            running.fetch_sub(1, Ordering::SeqCst);
                            Ok(i)
                        },
                    )
                    .await
                    .ok()
                });
            }
            let mut answers: Vec<usize> = tasks.join_all().await.into_iter().flatten().collect();
            answers.sort_unstable();
            answers
        });
        assert_eq!(answers, (0..5 * DIRECTORY_LOOKUPS).collect::<Vec<_>>());
        let most = most.load(Ordering::SeqCst);
        assert!(most <= DIRECTORY_LOOKUPS, "{most} lookups ran at once");
        assert!(
            most > 2,
            "the lookups ran {most} at a time: not on blocking threads"
        );
    }

    #[test]
    fn logins_of_one_user_that_waited_together_ask_the_directory_once_per_place() {
        // One place: the first lookup fills the cache, and every login that waited behind
        // it finds the answer there.
        let places = places(1);
        let cache: Arc<Mutex<Option<u32>>> = Arc::new(Mutex::new(None));
        let asked = Arc::new(AtomicUsize::new(0));
        let answers = runtime().block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..20 {
                let (cache, asked, places) = (cache.clone(), asked.clone(), places.clone());
                tasks.spawn(async move {
                    let filled = cache.clone();
                    ask_directory(
                        &places,
                        false,
                        || *cache.lock().unwrap(),
                        move || {
                            asked.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(10));
                            *filled.lock().unwrap() = Some(1000);
                            Ok(1000)
                        },
                    )
                    .await
                    .ok()
                });
            }
            tasks.join_all().await
        });
        assert_eq!(answers, vec![Some(1000); 20]);
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_directory_that_fails_is_an_error_never_an_answer() {
        let places = places(1);
        let got: Result<Option<u32>> = runtime().block_on(ask_directory(
            &places,
            false,
            || None,
            || Err(crate::accounts::AccountsError::Lookup("down".into())),
        ));
        assert!(matches!(got, Err(SessionError::Accounts(_))));
        // Its place was given back.
        assert_eq!(places.available_permits(), 1);
    }

    #[test]
    fn a_login_dropped_during_its_lookup_leaves_the_place_taken_until_the_lookup_ends() {
        let _others: Vec<_> = (0..3).map(|_| crate::blocking::Open::new()).collect();
        let places = places(1);
        let (go_on, wait) = std::sync::mpsc::channel::<()>();
        let (started, has_started) = std::sync::mpsc::channel::<()>();
        let rt = runtime();
        let taken = places.clone();
        let login = rt.spawn(async move {
            ask_directory(
                &taken,
                false,
                || None,
                move || {
                    let _ = started.send(());
                    let _ = wait.recv();
                    Ok(1000u32)
                },
            )
            .await
        });
        has_started.recv().unwrap();
        login.abort();
        rt.block_on(async {
            let _ = login.await;
        });
        // The login is gone, its lookup still runs: no other lookup may start.
        assert_eq!(places.available_permits(), 0);
        go_on.send(()).unwrap();
        rt.block_on(async {
            let free = places.acquire().await.unwrap();
            drop(free);
        });
        assert_eq!(places.available_permits(), 1);
    }
}
