//! The daemon's conversations: a login's second factor, enrolment, bypass codes, and the
//! administrator's operations. All policy lives here; clients only relay.

use crate::clock::Clock;
use crate::config::{Config, Unenrolled};
use crate::conn::{Conn, ConnError};
use crate::factor::{self, bypass, totp};
use crate::store::{FailureEffect, Store, StoreError};
use crate::text::{self, clean};
use mfa_proto::{AdminOp, AuthContext, ClientMsg, Operation, Outcome, PROTOCOL_VERSION};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the database lock was poisoned by an earlier crash")]
    Poisoned,
    #[error("a background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

type Result<T> = std::result::Result<T, SessionError>;

/// What a typed answer turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Totp {
        device: String,
    },
    Bypass {
        left: usize,
    },
    /// Nothing typed.
    Empty,
    /// Not in the form of any passcode; not counted as a failure.
    NotAPasscode,
    /// A real code that was already spent.
    Replayed,
    Wrong,
}

pub struct Daemon {
    config: Config,
    issuer: String,
    store: Arc<Mutex<Store>>,
    clock: Arc<dyn Clock>,
}

/// The fields every decision is logged with.
struct Who<'a> {
    user: &'a str,
    rhost: &'a str,
    service: &'a str,
}

fn decision(who: &Who<'_>, method: &str, outcome: &str, reason: &str) {
    info!(
        target: "mfad::decision",
        "user={} rhost={} service={} method={} outcome={} reason=\"{}\"",
        clean(who.user),
        clean(who.rhost),
        clean(who.service),
        method,
        outcome,
        reason
    );
}

impl Daemon {
    pub fn new(config: Config, store: Store, clock: Arc<dyn Clock>) -> Self {
        let issuer = config.issuer();
        Daemon {
            config,
            issuer,
            store: Arc::new(Mutex::new(store)),
            clock,
        }
    }

    pub fn answer_timeout(&self) -> Duration {
        Duration::from_secs(self.config.answer_timeout)
    }

    /// Runs `f` on the store off the async threads (SQLite blocks on fsync).
    async fn db<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> std::result::Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let mut guard = store.lock().map_err(|_| SessionError::Poisoned)?;
            Ok(f(&mut guard)?)
        })
        .await?
    }

    fn totp_params(&self) -> totp::TotpParams {
        totp::TotpParams {
            algorithm: totp::HashAlgorithm::Sha1,
            digits: self.config.totp.digits,
            period: self.config.totp.period,
        }
    }

    /// Serves one connection from hello to done.
    pub async fn serve(&self, mut conn: Conn) {
        let uid = match conn.peer_uid() {
            Ok(uid) => uid,
            Err(e) => {
                warn!("cannot read the peer credentials of a connection: {e}");
                return;
            }
        };
        let op = match conn.read_hello().await {
            Ok(ClientMsg::Hello { version, op }) if version == PROTOCOL_VERSION => op,
            Ok(ClientMsg::Hello { version, .. }) => {
                warn!("uid {uid} speaks protocol version {version}; refused");
                let _ = conn
                    .unavailable(format!(
                        "protocol version {version} is not supported (mfad speaks {PROTOCOL_VERSION})"
                    ))
                    .await;
                return;
            }
            Ok(ClientMsg::Answer { .. }) => {
                warn!("uid {uid} sent an answer before hello; connection closed");
                return;
            }
            Err(e) => {
                warn!("uid {uid}: {e}; connection closed");
                return;
            }
        };
        let what = op.safe_string();
        let result = match op {
            Operation::Authenticate(ctx) => self.authenticate(&mut conn, uid, ctx).await,
            Operation::EnrollTotp { name } => self.enroll_totp(&mut conn, uid, name).await,
            Operation::BypassCodes => self.own_bypass_codes(&mut conn, uid).await,
            Operation::Admin(op) => self.admin(&mut conn, uid, op).await,
        };
        match result {
            Ok(()) => {}
            Err(SessionError::Conn(e)) => warn!("uid {uid} {}: {e}", clean(&what)),
            Err(e) => {
                error!("uid {uid} {}: {e}", clean(&what));
                let _ = conn
                    .unavailable("mfad could not read or write its database")
                    .await;
            }
        }
    }

    async fn deny(&self, conn: &mut Conn, message: impl Into<String>) -> Result<()> {
        conn.error(message).await?;
        conn.done(Outcome::Deny).await?;
        Ok(())
    }

    /// The second factor of a login.
    async fn authenticate(&self, conn: &mut Conn, uid: u32, ctx: AuthContext) -> Result<()> {
        let rhost = ctx.rhost.clone().unwrap_or_else(|| "-".into());
        let who = Who {
            user: &ctx.user,
            rhost: &rhost,
            service: &ctx.service,
        };
        if uid != 0 {
            decision(&who, "-", "deny", &format!("caller uid {uid} is not root"));
            return self
                .deny(conn, "Only root may ask mfad to authenticate a user.")
                .await;
        }
        if let Err(e) = mfa_proto::check_user_name(&ctx.user) {
            decision(&who, "-", "deny", &format!("bad user name: {e}"));
            return self.deny(conn, format!("Login refused: {e}.")).await;
        }
        if !user_exists(&ctx.user).await? {
            decision(&who, "-", "deny", "unknown user");
            return self
                .deny(conn, "Two-factor login is not available for this account.")
                .await;
        }
        if !self.check_not_locked(conn, &who).await? {
            return Ok(());
        }
        let user = ctx.user.clone();
        let (devices, codes) = self
            .db(move |s| {
                Ok((
                    s.totp_devices(&user)?.len(),
                    s.unused_bypass_codes(&user)?.len(),
                ))
            })
            .await?;
        if devices == 0 && codes == 0 {
            return match self.config.unenrolled {
                Unenrolled::Allow => {
                    decision(&who, "-", "allow", "not enrolled; unenrolled=allow");
                    conn.done(Outcome::Allow).await?;
                    Ok(())
                }
                Unenrolled::Deny => {
                    decision(&who, "-", "deny", "not enrolled; unenrolled=deny");
                    self.deny(
                        conn,
                        format!(
                            "Two-factor authentication is required for {}, but no device is \
                             enrolled.\nEnrol one with `mfa enroll totp` in a session on this \
                             host, or ask your administrator.",
                            ctx.user
                        ),
                    )
                    .await
                }
            };
        }
        conn.info(format!(
            "Two-factor login for {}\n\nEnter a passcode from your authenticator app, or a bypass code.\n",
            ctx.user
        ))
        .await?;
        if self.prove_second_factor(conn, &who, "Passcode: ").await? {
            conn.info("Success. Logging you in...").await?;
            conn.done(Outcome::Allow).await?;
        } else {
            conn.done(Outcome::Deny).await?;
        }
        Ok(())
    }

    /// Refuses (and says so) when the account is locked. Returns whether it may go on.
    async fn check_not_locked(&self, conn: &mut Conn, who: &Who<'_>) -> Result<bool> {
        let user = who.user.to_string();
        let state = self.db(move |s| s.lock_state(&user)).await?;
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

    /// Asks for a passcode up to `max_attempts` times. Every wrong code counts toward the
    /// lockout; answers that are not passcodes at all use an attempt but count nothing.
    async fn prove_second_factor(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        prompt: &str,
    ) -> Result<bool> {
        let attempts = self.config.max_attempts;
        for attempt in 1..=attempts {
            let Some(answer) = conn.prompt(prompt, true).await? else {
                decision(who, "-", "deny", "the client could not ask for a passcode");
                conn.error("No passcode was entered; login refused.")
                    .await?;
                return Ok(false);
            };
            let verdict = self.check_passcode(who.user, &answer).await?;
            let last = attempt == attempts;
            let again = if last { "" } else { " Try again." };
            match verdict {
                Verdict::Totp { device } => {
                    self.clear_failures(who.user).await?;
                    decision(
                        who,
                        "totp",
                        "allow",
                        &format!("code from {}", clean(&device)),
                    );
                    return Ok(true);
                }
                Verdict::Bypass { left } => {
                    self.clear_failures(who.user).await?;
                    decision(who, "bypass", "allow", &format!("{left} bypass codes left"));
                    conn.info(format!(
                        "Bypass code accepted. You have {left} left; make new ones with `mfa bypass-codes`."
                    ))
                    .await?;
                    return Ok(true);
                }
                Verdict::Empty => {
                    conn.error(format!("No passcode entered.{again}")).await?;
                }
                Verdict::NotAPasscode => {
                    decision(who, "-", "retry", "answer is not a passcode");
                    conn.error(format!(
                        "That is not a passcode: passcodes are {} digits (bypass codes {}).{again}",
                        self.config.totp.digits,
                        bypass::DIGITS
                    ))
                    .await?;
                }
                Verdict::Replayed | Verdict::Wrong => {
                    let replayed = verdict == Verdict::Replayed;
                    let user = who.user.to_string();
                    let now = self.clock.now();
                    let (max, dur) = (
                        self.config.lockout.max_failures,
                        self.config.lockout.duration,
                    );
                    let effect = self
                        .db(move |s| s.record_failure(&user, now, max, dur))
                        .await?;
                    let reason = if replayed {
                        "code already used"
                    } else {
                        "wrong code"
                    };
                    match effect {
                        FailureEffect::Locked { until } => {
                            decision(who, "-", "deny", &format!("{reason}; account now locked"));
                            conn.error(text::locked_message(who.user, until, now))
                                .await?;
                            return Ok(false);
                        }
                        FailureEffect::Counted { failures } => {
                            decision(
                                who,
                                "-",
                                if last { "deny" } else { "retry" },
                                &format!("{reason}; {failures} consecutive failures"),
                            );
                            let msg = if replayed {
                                "That passcode was already used; wait for the next one."
                            } else {
                                "Incorrect passcode."
                            };
                            conn.error(format!("{msg}{again}")).await?;
                        }
                    }
                }
            }
        }
        conn.error("Too many attempts; login refused.").await?;
        Ok(false)
    }

    async fn clear_failures(&self, user: &str) -> Result<()> {
        let user = user.to_string();
        self.db(move |s| s.clear_failures(&user)).await
    }

    /// Checks `answer` against the user's authenticators and bypass codes, spending what
    /// matches. The store stays locked throughout, and each spend is a conditional update.
    async fn check_passcode(&self, user: &str, answer: &str) -> Result<Verdict> {
        let Some(code) = factor::as_passcode(answer) else {
            return Ok(if answer.trim().is_empty() {
                Verdict::Empty
            } else {
                Verdict::NotAPasscode
            });
        };
        let code = zeroize::Zeroizing::new(code.to_string());
        let user = user.to_string();
        let now = self.clock.now();
        let window = self.config.totp.window;
        self.db(move |s| {
            let mut replayed = false;
            for device in s.totp_devices(&user)? {
                if let Some(step) =
                    totp::matching_step(&device.secret, device.params, &code, now, window)
                {
                    if s.spend_totp_step(device.id, step)? {
                        return Ok(Verdict::Totp {
                            device: device.name,
                        });
                    }
                    replayed = true;
                }
            }
            if code.len() == bypass::DIGITS {
                let rows = s.bypass_codes(&user)?;
                let left = rows.iter().filter(|r| !r.used).count().saturating_sub(1);
                for row in rows {
                    if bypass::matches(&row.code, &code) {
                        if !row.used && s.spend_bypass_code(row.id, now)? {
                            return Ok(Verdict::Bypass { left });
                        }
                        replayed = true;
                    }
                }
            }
            Ok(if replayed {
                Verdict::Replayed
            } else {
                Verdict::Wrong
            })
        })
        .await
    }

    /// The caller's own user name, from its uid.
    async fn caller_name(&self, conn: &mut Conn, uid: u32) -> Result<Option<String>> {
        let name = tokio::task::spawn_blocking(move || {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .await?;
        if name.is_none() {
            self.deny(
                conn,
                format!("Your uid {uid} has no user name on this host."),
            )
            .await?;
        }
        Ok(name)
    }

    async fn is_enrolled(&self, user: &str) -> Result<bool> {
        let user = user.to_string();
        self.db(move |s| {
            Ok(!s.totp_devices(&user)?.is_empty() || !s.unused_bypass_codes(&user)?.is_empty())
        })
        .await
    }

    /// Once anything is enrolled, changing it takes a fresh second factor.
    async fn require_fresh_factor(&self, conn: &mut Conn, who: &Who<'_>) -> Result<bool> {
        if !self.is_enrolled(who.user).await? {
            return Ok(true);
        }
        if !self.check_not_locked(conn, who).await? {
            return Ok(false);
        }
        conn.info("This changes your two-factor settings, so it needs a current passcode first.")
            .await?;
        if self
            .prove_second_factor(
                conn,
                who,
                "Passcode (from an enrolled device, or a bypass code): ",
            )
            .await?
        {
            Ok(true)
        } else {
            conn.done(Outcome::Deny).await?;
            Ok(false)
        }
    }

    async fn enroll_totp(&self, conn: &mut Conn, uid: u32, name: Option<String>) -> Result<()> {
        let Some(user) = self.caller_name(conn, uid).await? else {
            return Ok(());
        };
        let who = Who {
            user: &user,
            rhost: "local",
            service: "mfa-enroll",
        };
        let name = name.unwrap_or_else(|| "Authenticator app".to_string());
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return self
                .deny(
                    conn,
                    "A device name has 1 to 64 characters and no control characters.",
                )
                .await;
        }
        if !self.require_fresh_factor(conn, &who).await? {
            return Ok(());
        }
        let params = self.totp_params();
        let secret = totp::new_secret();
        let uri = totp::otpauth_uri(&secret, params, &self.issuer, &user);
        let b32 = totp::secret_base32(&secret);
        conn.info(format!(
            "Scan this QR code with your authenticator app:\n\n{}\nOr add the account by hand \
             ({} digits, {} s, SHA1):\nSecret: {}\n{}\n",
            text::qr_code(&uri),
            params.digits,
            params.period,
            b32.as_str(),
            uri.as_str()
        ))
        .await?;
        for attempt in 1..=3 {
            let Some(answer) = conn
                .prompt("Enter the code your app shows to finish: ", true)
                .await?
            else {
                return self
                    .deny(conn, "No code entered; nothing was enrolled.")
                    .await;
            };
            let now = self.clock.now();
            let step = factor::as_passcode(&answer).and_then(|code| {
                totp::matching_step(&secret, params, code, now, self.config.totp.window)
            });
            if let Some(step) = step {
                let (u, n, s) = (user.clone(), name.clone(), secret.clone());
                self.db(move |st| st.add_totp_device(&u, &n, &s, params, step, now))
                    .await?;
                decision(
                    &who,
                    "totp",
                    "enrolled",
                    &format!("device {}", clean(&name)),
                );
                conn.info(format!(
                    "Enrolled \"{name}\". From now on, logins as {user} ask for its code."
                ))
                .await?;
                conn.done(Outcome::Allow).await?;
                return Ok(());
            }
            let hint = if attempt < 3 { " Try again." } else { "" };
            conn.error(format!(
                "That code does not match. Check that your phone's clock is right.{hint}"
            ))
            .await?;
        }
        decision(
            &who,
            "totp",
            "not enrolled",
            "no matching confirmation code",
        );
        self.deny(conn, "Nothing was enrolled.").await
    }

    async fn own_bypass_codes(&self, conn: &mut Conn, uid: u32) -> Result<()> {
        let Some(user) = self.caller_name(conn, uid).await? else {
            return Ok(());
        };
        let who = Who {
            user: &user,
            rhost: "local",
            service: "mfa-bypass-codes",
        };
        if !self.require_fresh_factor(conn, &who).await? {
            return Ok(());
        }
        self.issue_bypass_codes(conn, &who).await
    }

    async fn issue_bypass_codes(&self, conn: &mut Conn, who: &Who<'_>) -> Result<()> {
        let (shown, stored) = bypass::generate();
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
        conn.info(format!(
            "New bypass codes for {} (each works once; earlier codes no longer work):\n\n{list}\n\
             Keep them somewhere safe, away from your phone.",
            who.user
        ))
        .await?;
        // `list` held the codes in clear; wipe it before it is freed.
        zeroize::Zeroize::zeroize(&mut list);
        conn.done(Outcome::Allow).await?;
        Ok(())
    }

    async fn admin(&self, conn: &mut Conn, uid: u32, op: AdminOp) -> Result<()> {
        let user = match &op {
            AdminOp::Status { user }
            | AdminOp::Unlock { user }
            | AdminOp::Reset { user }
            | AdminOp::BypassCodes { user } => user.clone(),
        };
        let who = Who {
            user: &user,
            rhost: "local",
            service: "mfa-admin",
        };
        if uid != 0 {
            warn!(
                "uid {uid} asked for an admin operation on {}; refused",
                clean(&user)
            );
            return self.deny(conn, "Only root may run admin commands.").await;
        }
        if let Err(e) = mfa_proto::check_user_name(&user) {
            return self.deny(conn, format!("Refused: {e}.")).await;
        }
        match op {
            AdminOp::Status { .. } => {
                let u = user.clone();
                let (devices, codes, lock) = self
                    .db(move |s| {
                        let devices: Vec<(String, String, i64)> = s
                            .totp_devices(&u)?
                            .into_iter()
                            .map(|d| {
                                (
                                    d.name,
                                    format!(
                                        "TOTP, {}, {} digits, {} s",
                                        d.params.algorithm.as_str(),
                                        d.params.digits,
                                        d.params.period
                                    ),
                                    d.created,
                                )
                            })
                            .collect();
                        Ok((devices, s.unused_bypass_codes(&u)?.len(), s.lock_state(&u)?))
                    })
                    .await?;
                let now = self.clock.now();
                let exists = user_exists(&user).await?;
                conn.info(text::status_report(
                    &user, exists, &devices, codes, &lock, now,
                ))
                .await?;
                conn.done(Outcome::Allow).await?;
            }
            AdminOp::Unlock { .. } => {
                let u = user.clone();
                let changed = self.db(move |s| s.unlock(&u)).await?;
                decision(&who, "-", "unlocked", "by root");
                conn.info(if changed {
                    format!("{user} is unlocked and its failure count is cleared.")
                } else {
                    format!("{user} was not locked and had no failures.")
                })
                .await?;
                conn.done(Outcome::Allow).await?;
            }
            AdminOp::Reset { .. } => {
                let u = user.clone();
                self.db(move |s| s.reset_user(&u)).await?;
                decision(&who, "-", "reset", "by root: all devices and codes removed");
                conn.info(format!(
                    "{user} has no devices, bypass codes or failures any more. They can enrol again \
                     with `mfa enroll totp`."
                ))
                .await?;
                conn.done(Outcome::Allow).await?;
            }
            AdminOp::BypassCodes { .. } => {
                if !user_exists(&user).await? {
                    return self
                        .deny(conn, format!("There is no user {user} on this host."))
                        .await;
                }
                self.issue_bypass_codes(conn, &who).await?;
            }
        }
        Ok(())
    }
}

/// Whether the system (NSS: files, LDAP, sssd...) knows `user`. Runs off the async threads.
async fn user_exists(user: &str) -> Result<bool> {
    let user = user.to_string();
    Ok(tokio::task::spawn_blocking(move || {
        matches!(nix::unistd::User::from_name(&user), Ok(Some(_)))
    })
    .await?)
}
