//! A login's second factor: the checks before any code (caller, name, account, lock,
//! enrolment), then the prompt, then each answer checked against the user's code devices
//! and bypass codes, every spend atomic.

use crate::config::Unenrolled;
use crate::conn::Conn;
use crate::daemon::{Daemon, Result, SessionError, Who, decision};
use crate::factor::{self, bypass, hotp, totp};
use crate::methods::{MenuOption, OobResult, menu_text};
use crate::oob::approvals::ApprovalDecision;
use crate::policy::{self, GroupRule};
use crate::store::{Device, LoginSnapshot, Store, StoreError};
use crate::store::{DeviceKind, FailureEffect, RememberScope};
use crate::text::{self, clean};
use mfa_proto::{AuthContext, AuthMode, Outcome};
use std::sync::Arc;
use zeroize::Zeroizing;

/// What a typed answer turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Code {
        method: &'static str,
        device: String,
    },
    Bypass {
        left: usize,
    },
    Sms,
    /// Nothing typed.
    Empty,
    /// Not in the form of any passcode; not counted as a failure.
    NotAPasscode,
    /// A real code that was already spent (of what kind); the failure it counted.
    Replayed(FailureEffect, Spent),
    Wrong(FailureEffect),
    /// The account is locked: no code was checked (the attempt still counts).
    Locked {
        until: i64,
    },
}

impl Daemon {
    pub(crate) async fn authenticate(
        &self,
        conn: &mut Conn,
        uid: u32,
        mut ctx: AuthContext,
    ) -> Result<()> {
        let rhost = ctx.rhost.clone().unwrap_or_else(|| "-".into());
        if let Err(e) = mfa_proto::check_user_name(&ctx.user) {
            let who = Who::new(&ctx.user, &rhost, &ctx, uid);
            decision(&who, "-", "deny", &format!("bad user name: {e}"));
            return self.deny(conn, format!("Login refused: {e}.")).await;
        }
        let account = match self.account(&ctx.user).await {
            Ok(a) => a,
            Err(e) => {
                let who = Who::new(&ctx.user, &rhost, &ctx, uid);
                return self.directory_down(conn, &who, &e).await;
            }
        };
        // Root (sshd's PAM stack) may ask about anyone; anyone else (the ForceCommand
        // helper, running as the user) only about itself.
        if uid != 0 && account.as_ref().is_none_or(|a| a.uid != uid) {
            let who = Who::new(&ctx.user, &rhost, &ctx, uid);
            decision(&who, "-", "deny", &format!("caller uid {uid} is not root"));
            return self
                .deny(conn, "Only root may ask mfad to authenticate another user.")
                .await;
        }
        let Some(account) = account else {
            let who = Who::new(&ctx.user, &rhost, &ctx, uid);
            decision(&who, "-", "deny", "unknown user");
            return self
                .deny(conn, "Two-factor login is not available for this account.")
                .await;
        };
        // From here on the user is the directory's spelling of the name: `ALICE` and `alice`
        // are one account with one set of devices, counters and locks.
        ctx.user = account.name.clone();
        let who = Who::new(&ctx.user, &rhost, &ctx, uid);
        // One pipeline for every provider: groups, lock, trusted networks and remembered
        // logins, then the provider, then counting, locking and remembering. With Duo,
        // `[duo] local_policy = false` leaves every decision to Duo.
        let local_policy = self.duo.as_ref().is_none_or(|d| d.local_policy);
        let policy = &self.config.policy;
        if local_policy && (!policy.exempt_groups.is_empty() || !policy.require_groups.is_empty()) {
            let groups = match self.groups(&account).await {
                Ok(g) => g,
                Err(e) => return self.directory_down(conn, &who, &e).await,
            };
            match policy::group_rule(policy, &groups) {
                GroupRule::Exempt(g) => {
                    decision(&who, "-", "allow", &format!("member of exempt group {g}"));
                    conn.done(Outcome::Allow).await?;
                    return Ok(());
                }
                GroupRule::NotRequired => {
                    decision(&who, "-", "allow", "in none of require_groups");
                    conn.done(Outcome::Allow).await?;
                    return Ok(());
                }
                GroupRule::Required => {}
            }
        }
        let addr = policy::client_addr(ctx.rhost.as_deref(), ctx.ssh_connection.as_deref());
        let trusted = policy.is_trusted(addr);
        // sshd (root) vouches for the client address; the user's own helper only says what
        // the user's process says. A helper's entry never opens an sshd login.
        let remembered = Remembered {
            user: ctx.user.clone(),
            scope: if uid == 0 {
                RememberScope::Sshd
            } else {
                RememberScope::OwnHelper
            },
            addr: addr
                .filter(|_| policy.remember_for > 0)
                .map(|a| a.to_string()),
            key: policy::key_fingerprint(ctx.ssh_auth_info.as_deref()),
        };
        if let Some(duo) = &self.duo
            && !local_policy
        {
            // Every decision is Duo's: the store is not read at all.
            if let Some(run) = self.duo_login(conn, &who, &ctx, &account, duo).await? {
                conn.done(run.outcome.unwrap_or(Outcome::Deny)).await?;
            }
            return Ok(());
        }
        // The one read of the store before the first prompt.
        let snapshot = self.login_snapshot(&remembered).await?;
        if !self.not_locked(conn, &who, &snapshot.lock).await? {
            return Ok(());
        }
        if let Some(duo) = &self.duo {
            if self
                .let_in_without_asking(conn, &who, trusted, snapshot.remembered)
                .await?
            {
                return Ok(());
            }
            let Some(run) = self.duo_login(conn, &who, &ctx, &account, duo).await? else {
                return Ok(());
            };
            let passed = match run.outcome {
                Some(Outcome::Allow) => self.accept_unless_locked(conn, &who, "duo").await?,
                _ => {
                    self.count_provider_failures(conn, &who, run.failures, run.reported)
                        .await?;
                    false
                }
            };
            return self.conclude_login(conn, passed, &remembered, false).await;
        }
        if snapshot.devices.is_empty() && snapshot.bypass_left == 0 {
            return self.unenrolled(conn, &who, trusted).await;
        }
        if self
            .let_in_without_asking(conn, &who, trusted, snapshot.remembered)
            .await?
        {
            return Ok(());
        }
        let devices = std::sync::Arc::new(snapshot.devices);
        let (options, default) = self.menu_options(&devices);
        let passed = match ctx.mode {
            AuthMode::Menu if ctx.can_prompt => {
                let (menu, prompt) = menu_text(&ctx.user, &options);
                conn.info(menu).await?;
                self.prove_second_factor(conn, &who, &prompt, &options, default, &devices)
                    .await?
            }
            _ => {
                self.default_method(conn, &who, &devices, &options, default)
                    .await?
            }
        };
        self.conclude_login(conn, passed, &remembered, true).await
    }

    /// A login from a trusted network, or remembered from this address and key, is let in
    /// without a second factor (and answered); returns whether it was.
    async fn let_in_without_asking(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        trusted: bool,
        remembered: bool,
    ) -> Result<bool> {
        let reason = if trusted {
            "trusted network"
        } else if remembered {
            "remembered from this address and key"
        } else {
            return Ok(false);
        };
        decision(who, "-", "allow", reason);
        conn.done(Outcome::Allow).await?;
        Ok(true)
    }

    /// The one read before a login's first prompt (see [`Store::login_snapshot`]).
    async fn login_snapshot(&self, r: &Remembered) -> Result<LoginSnapshot> {
        let (user, scope, addr, key, now) = (
            r.user.clone(),
            r.scope,
            r.addr.clone(),
            r.key.clone(),
            self.clock.now(),
        );
        self.db(move |s| {
            let remembered = addr.as_deref().map(|a| (scope, a, key.as_str()));
            s.login_snapshot(&user, remembered, now)
        })
        .await
    }

    /// The end of every login: remembers a success (with `remember_for`), and answers.
    async fn conclude_login(
        &self,
        conn: &mut Conn,
        passed: bool,
        r: &Remembered,
        say_success: bool,
    ) -> Result<()> {
        if !passed {
            conn.done(Outcome::Deny).await?;
            return Ok(());
        }
        if let Some(addr) = r.addr.clone() {
            let now = self.clock.now();
            let until = now.saturating_add(self.config.policy.remember_for as i64);
            let (user, scope, key) = (r.user.clone(), r.scope, r.key.clone());
            self.db(move |s| s.remember(&user, scope, &addr, &key, now, until))
                .await?;
        }
        if say_success {
            conn.info("Success. Logging you in...").await?;
        }
        conn.done(Outcome::Allow).await?;
        Ok(())
    }

    /// A provider said yes: accepted unless the account was locked meanwhile (by failures
    /// in other sessions, a report, an admin), in the same transaction that clears the
    /// failure count.
    pub(crate) async fn accept_unless_locked(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        method: &str,
    ) -> Result<bool> {
        let (user, now) = (who.user.to_string(), self.clock.now());
        let locked = self
            .db(move |s| {
                s.in_transaction(|s| {
                    match s.lock_state(&user)?.locked_until {
                        Some(until) if until > now => return Ok(Some(until)),
                        _ => {}
                    }
                    s.clear_failures(&user)?;
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

    /// A provider said no after `failures` failed attempts (each counts toward the
    /// lockout), or after the user reported the request (locks at once).
    async fn count_provider_failures(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        failures: u32,
        reported: bool,
    ) -> Result<()> {
        let now = self.clock.now();
        if reported {
            let until = now.saturating_add(self.report_lock_secs());
            let user = who.user.to_string();
            self.db(move |s| s.lock_until(&user, until)).await?;
            decision(who, "-", "locked", "reported as fraud; account locked");
            return Ok(());
        }
        for _ in 0..failures {
            if let FailureEffect::Locked { until } = self.record_failure(who.user, now).await? {
                decision(
                    who,
                    "-",
                    "locked",
                    "failed second factors; account now locked",
                );
                conn.error(text::locked_message(who.user, until, now))
                    .await?;
                break;
            }
        }
        Ok(())
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

    /// A user with nothing enrolled: refuse, allow, or enrol during this login.
    async fn unenrolled(&self, conn: &mut Conn, who: &Who<'_>, trusted: bool) -> Result<()> {
        let how = "Enrol one with `mfa enroll totp` in a session on this host, or ask your \
                   administrator.";
        match self.config.unenrolled {
            Unenrolled::Allow => {
                decision(who, "-", "allow", "not enrolled; unenrolled=allow");
                conn.done(Outcome::Allow).await?;
                Ok(())
            }
            Unenrolled::Enroll if !who.can_prompt => {
                decision(who, "-", "deny", "not enrolled; no terminal to enrol on");
                self.deny(
                    conn,
                    format!(
                        "Two-factor authentication is required for {}, but no device is \
                         enrolled, and this session has no terminal to enrol on. Log in with \
                         `ssh` in a terminal to enrol.",
                        who.user
                    ),
                )
                .await
            }
            Unenrolled::Enroll if trusted || self.config.policy.enroll_from_anywhere => {
                decision(who, "totp", "enrolling", "not enrolled; in-login enrolment");
                conn.info(format!(
                    "Two-factor authentication is required for {}, and you have no device yet. \
                     Set one up now.\n",
                    who.user
                ))
                .await?;
                self.enroll_app(conn, who, "Authenticator app".to_string())
                    .await
            }
            Unenrolled::Enroll => {
                decision(
                    who,
                    "-",
                    "deny",
                    "not enrolled; enrolment refused outside trusted networks",
                );
                self.deny(
                    conn,
                    format!(
                        "Two-factor authentication is required for {}, but no device is \
                         enrolled. Enrolment during login is only offered from the site's own \
                         networks. {how}",
                        who.user
                    ),
                )
                .await
            }
            Unenrolled::Deny if trusted => {
                decision(who, "-", "allow", "not enrolled; trusted network");
                conn.done(Outcome::Allow).await?;
                Ok(())
            }
            Unenrolled::Deny => {
                decision(who, "-", "deny", "not enrolled; unenrolled=deny");
                self.deny(
                    conn,
                    format!(
                        "Two-factor authentication is required for {}, but no device is \
                         enrolled.\n{how}",
                        who.user
                    ),
                )
                .await
            }
        }
    }

    /// No menu: the default method at once (transfer hosts, sessions without a terminal).
    /// Never waits without a bound, and refuses at once when nothing usable is the default.
    async fn default_method(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        devices: &Arc<Vec<Device>>,
        options: &[MenuOption],
        default: Option<usize>,
    ) -> Result<bool> {
        if let Some(i) = default {
            let option = &options[i];
            // An SMS passcode needs typing; without a terminal it cannot be the method.
            let usable = who.can_prompt || !matches!(option, MenuOption::Sms { .. });
            if usable {
                match self.run_option(conn, who, option).await? {
                    OobResult::Decided(d) => return self.conclude(conn, who, option, d).await,
                    OobResult::SmsSent if who.can_prompt => {
                        return self
                            .prove_second_factor(conn, who, "SMS passcode: ", &[], None, devices)
                            .await;
                    }
                    OobResult::SmsSent | OobResult::Failed => {}
                }
            }
        }
        let default_is_code = devices.iter().any(|d| d.is_default && d.otp.is_some());
        if who.can_prompt && (default_is_code || default.is_some()) {
            // The default makes codes, or its provider failed: one prompt for a passcode.
            return self
                .prove_second_factor(conn, who, "Passcode: ", &[], None, devices)
                .await;
        }
        decision(
            who,
            "-",
            "deny",
            "no usable default method for a session without a terminal",
        );
        conn.error(format!(
            "Two-factor login for {} needs a default method that works without a terminal \
             (push or phone call), and there is none.\n{}",
            who.user,
            self.headless_fix()
        ))
        .await?;
        Ok(false)
    }

    /// What a user without a terminal-free default can do about it, on this host: advice
    /// that names only what the host offers.
    fn headless_fix(&self) -> String {
        let approvals = self.config.approval.is_some();
        let mut offers = Vec::new();
        if approvals && self.notifier.is_some() {
            offers.push("a push device (`mfa add push`)");
        }
        if approvals && self.twilio.is_some() {
            offers.push("a phone for calls (`mfa add phone`)");
        }
        if offers.is_empty() {
            "This host offers neither (no push or phone calls are configured): ask your \
             administrator. Logins with a terminal still work with a passcode."
                .to_string()
        } else {
            format!(
                "Add {} in an interactive ssh session, then make it the default with `mfa \
                 devices` and `mfa default N`.",
                offers.join(" or ")
            )
        }
    }

    /// Whether the user has anything that can prove a second factor.
    pub(crate) async fn is_enrolled(&self, user: &str) -> Result<bool> {
        let user = user.to_string();
        self.db(move |s| {
            Ok(!s.devices(&user)?.is_empty() || !s.unused_bypass_codes(&user)?.is_empty())
        })
        .await
    }

    /// Asks for a passcode or a menu option. Passcodes: up to `max_attempts`, every wrong
    /// one counted toward the lockout; answers that are not passcodes at all use an attempt
    /// but count nothing. Options: at most three out-of-band requests per login. An empty
    /// answer runs the default method when it has an option.
    pub(crate) async fn prove_second_factor(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        prompt: &str,
        options: &[MenuOption],
        default: Option<usize>,
        devices: &Arc<Vec<Device>>,
    ) -> Result<bool> {
        const MAX_REQUESTS: u32 = 3;
        let attempts = self.config.max_attempts;
        let (mut attempt, mut requests) = (0, 0);
        loop {
            if attempt >= attempts {
                conn.error("Too many attempts; login refused.").await?;
                return Ok(false);
            }
            let Some(answer) = conn.prompt(prompt, true).await? else {
                decision(who, "-", "deny", "the client could not ask for a passcode");
                conn.error("No passcode was entered; login refused.")
                    .await?;
                return Ok(false);
            };
            let short = answer.trim();
            let choice = if short.is_empty() {
                default
            } else if short.len() <= 2 && short.bytes().all(|b| b.is_ascii_digit()) {
                match short.parse::<usize>() {
                    Ok(n) if (1..=options.len()).contains(&n) => Some(n - 1),
                    _ => {
                        attempt += 1;
                        conn.error(if options.is_empty() {
                            "That is not a passcode.".to_string()
                        } else {
                            format!("There is no option {short}; choose 1 to {}.", options.len())
                        })
                        .await?;
                        continue;
                    }
                }
            } else {
                None
            };
            if let Some(i) = choice {
                requests += 1;
                if requests > MAX_REQUESTS {
                    decision(who, "-", "deny", "too many out-of-band requests");
                    conn.error("Too many requests in one login; login refused.")
                        .await?;
                    return Ok(false);
                }
                let option = &options[i];
                match self.run_option(conn, who, option).await? {
                    OobResult::SmsSent | OobResult::Failed => continue,
                    OobResult::Decided(d) => return self.conclude(conn, who, option, d).await,
                }
            }
            attempt += 1;
            let last = attempt == attempts;
            let verdict = self.check_passcode(who.user, &answer, devices).await?;
            let again = if last { "" } else { " Try again." };
            match verdict {
                Verdict::Code { method, device } => {
                    decision(
                        who,
                        method,
                        "allow",
                        &format!("code from {}", clean(&device)),
                    );
                    return Ok(true);
                }
                Verdict::Sms => {
                    decision(who, "sms", "allow", "SMS passcode");
                    return Ok(true);
                }
                Verdict::Bypass { left } => {
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
                        "That is not a passcode: passcodes are {} digits (SMS passcodes {}, \
                         bypass codes {}).{again}",
                        self.config.totp.digits,
                        self.config.sms.digits,
                        bypass::DIGITS
                    ))
                    .await?;
                }
                Verdict::Locked { until } => {
                    // Locked while this login was at its prompt (by failures in other
                    // sessions, a report, an admin): nothing more is accepted here.
                    decision(who, "-", "deny", "account locked; no code checked");
                    let now = self.clock.now();
                    conn.error(text::locked_message(who.user, until, now))
                        .await?;
                    return Ok(false);
                }
                Verdict::Replayed(effect, _) | Verdict::Wrong(effect) => {
                    let spent = match verdict {
                        Verdict::Replayed(_, kind) => Some(kind),
                        _ => None,
                    };
                    let reason = if spent.is_some() {
                        "code already used"
                    } else {
                        "wrong code"
                    };
                    match effect {
                        FailureEffect::Locked { until } => {
                            decision(who, "-", "deny", &format!("{reason}; account now locked"));
                            let now = self.clock.now();
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
                            let msg = match spent {
                                Some(kind) => kind.message(),
                                None => "Incorrect passcode.",
                            };
                            conn.error(format!("{msg}{again}")).await?;
                        }
                    }
                }
            }
        }
    }

    /// The end of a push or call: what the phone said decides the login.
    async fn conclude(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        option: &MenuOption,
        outcome: ApprovalDecision,
    ) -> Result<bool> {
        let method = match option {
            MenuOption::Push { .. } => "push",
            MenuOption::Call { .. } => "phone",
            MenuOption::Sms { .. } => "sms",
        };
        match outcome {
            ApprovalDecision::Approved => {
                // Even the right answer is refused when the account locked meanwhile.
                if !self.accept_unless_locked(conn, who, method).await? {
                    return Ok(false);
                }
                decision(who, method, "allow", "approved on the phone");
                Ok(true)
            }
            ApprovalDecision::Denied => {
                self.out_of_band_failure(
                    conn,
                    who,
                    method,
                    "denied on the phone",
                    "Login request denied.",
                )
                .await
            }
            ApprovalDecision::Reported => {
                decision(who, method, "deny", "denied and reported on the phone");
                // The endpoint's hook locks too, but in the background; the lock must be in
                // place before this login answers, so no next login slips in before it.
                let until = self.clock.now().saturating_add(self.report_lock_secs());
                let user = who.user.to_string();
                self.db(move |s| s.lock_until(&user, until)).await?;
                conn.error(
                    "Login request denied and reported. The account is locked; contact your \
                     administrator.",
                )
                .await?;
                Ok(false)
            }
            ApprovalDecision::TimedOut => {
                self.out_of_band_failure(
                    conn,
                    who,
                    method,
                    "no answer from the phone in time",
                    "No answer to the login request in time; login refused.",
                )
                .await
            }
        }
    }

    /// A push or call denied or left unanswered counts toward the lockout like a wrong
    /// code: a flood of requests ("push fatigue") locks the account instead of going on
    /// until the user taps Approve by mistake.
    async fn out_of_band_failure(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        method: &str,
        reason: &str,
        message: &str,
    ) -> Result<bool> {
        let now = self.clock.now();
        match self.record_failure(who.user, now).await? {
            FailureEffect::Locked { until } => {
                decision(
                    who,
                    method,
                    "deny",
                    &format!("{reason}; account now locked"),
                );
                conn.error(text::locked_message(who.user, until, now))
                    .await?;
            }
            FailureEffect::Counted { failures } => {
                decision(
                    who,
                    method,
                    "deny",
                    &format!("{reason}; {failures} consecutive failures"),
                );
                conn.error(message).await?;
            }
        }
        Ok(false)
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

    /// Checks `answer` against the user's code devices (as read before the prompt) and
    /// bypass codes, spending what matches. The store stays locked throughout, and each
    /// spend is a conditional update by device id, so a code opens one login even when
    /// several hosts race on it, and a device removed meanwhile opens none.
    pub(crate) async fn check_passcode(
        &self,
        user: &str,
        answer: &str,
        devices: &Arc<Vec<Device>>,
    ) -> Result<Verdict> {
        let Some(code) = factor::as_passcode(answer) else {
            return Ok(if answer.trim().is_empty() {
                Verdict::Empty
            } else {
                Verdict::NotAPasscode
            });
        };
        let code = Zeroizing::new(code.to_string());
        let user = user.to_string();
        let devices = Arc::clone(devices);
        let now = self.clock.now();
        let limits = CodeLimits {
            window: self.config.totp.window,
            look_ahead: self.config.hotp.look_ahead,
            sms_digits: self.config.sms.digits as usize,
        };
        let (max_failures, lock_for) = (
            self.config.lockout.max_failures,
            self.config.lockout.duration,
        );
        // One write transaction: the lock is read, the code checked and spent, and the
        // failure counted (or the count cleared) together, so a lock set by another session
        // a moment ago is seen, and no code is checked while it holds.
        self.db(move |s| {
            s.in_transaction(|s| {
                if let Some(until) = s.lock_state(&user)?.locked_until.filter(|u| *u > now) {
                    let until = match s.record_failure(&user, now, max_failures, lock_for)? {
                        FailureEffect::Locked { until: later } => later.max(until),
                        FailureEffect::Counted { .. } => until,
                    };
                    return Ok(Verdict::Locked { until });
                }
                let found = match_passcode(s, &user, &devices, &code, now, &limits)?;
                Ok(match found {
                    Match::Accepted(verdict) => {
                        s.clear_failures(&user)?;
                        verdict
                    }
                    Match::Replayed(kind) => Verdict::Replayed(
                        s.record_failure(&user, now, max_failures, lock_for)?,
                        kind,
                    ),
                    Match::Wrong => {
                        Verdict::Wrong(s.record_failure(&user, now, max_failures, lock_for)?)
                    }
                })
            })
        })
        .await
    }
}

/// Where a login may be remembered: the user, who vouches for the address, the address
/// (`None` when remembering is off or the address is unknown) and the key's fingerprint.
struct Remembered {
    user: String,
    scope: RememberScope,
    addr: Option<String>,
    key: String,
}

/// How far a code may be from the expected one, and the length of SMS passcodes.
struct CodeLimits {
    window: u64,
    look_ahead: u64,
    sms_digits: usize,
}

/// What a passcode matched.
enum Match {
    Accepted(Verdict),
    /// A real code that was already spent.
    Replayed(Spent),
    Wrong,
}

/// The kind of a code that was already used, for advice that fits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spent {
    Totp,
    Hotp,
    Sms,
    Bypass,
}

impl Spent {
    fn message(self) -> &'static str {
        match self {
            Spent::Totp => "That passcode was already used; wait for the next one.",
            Spent::Hotp => {
                "That passcode was already used; press your token's button for a new one."
            }
            Spent::Sms => "That SMS passcode was already used; ask for a new one.",
            Spent::Bypass => "That bypass code was already used; each one works once.",
        }
    }
}

/// How many HOTP counters behind the expected one still count as "already used" rather
/// than "wrong" (a code typed twice, or the previous press).
const HOTP_RECENT: u64 = 5;

/// Checks `code` against the user's code devices, SMS passcodes and bypass codes, spending
/// what matches; each spend is a conditional update whose row count decides a race.
fn match_passcode(
    s: &mut Store,
    user: &str,
    devices: &[Device],
    code: &str,
    now: i64,
    limits: &CodeLimits,
) -> std::result::Result<Match, StoreError> {
    let mut replayed = None;
    for device in devices {
        let Some(key) = &device.otp else { continue };
        match device.kind {
            DeviceKind::Totp => {
                let Some(step) =
                    totp::matching_step(&key.secret, key.params, code, now, limits.window)
                else {
                    continue;
                };
                if s.spend_totp_step(device.id, step)? {
                    return Ok(Match::Accepted(Verdict::Code {
                        method: "totp",
                        device: device.name.clone(),
                    }));
                }
                replayed = Some(Spent::Totp);
            }
            DeviceKind::Hotp => {
                let next = key.counter.max(0) as u64;
                if let Some(counter) =
                    hotp::matching_counter(&key.secret, key.params, code, next, limits.look_ahead)
                    && s.spend_hotp_counter(device.id, counter)?
                {
                    return Ok(Match::Accepted(Verdict::Code {
                        method: "hotp",
                        device: device.name.clone(),
                    }));
                }
                // A used HOTP code lies just behind the counter.
                let recent = next.min(HOTP_RECENT);
                if hotp::matching_counter(&key.secret, key.params, code, next - recent, recent)
                    .is_some()
                {
                    replayed = Some(Spent::Hotp);
                }
            }
            DeviceKind::Phone | DeviceKind::Push => {}
        }
    }
    if code.len() == limits.sms_digits {
        for row in s.sms_codes(user, now)? {
            if s.code_matches(&row.code, code) {
                if !row.used && s.spend_sms_code(row.id, now)? {
                    return Ok(Match::Accepted(Verdict::Sms));
                }
                replayed = Some(Spent::Sms);
            }
        }
    }
    if code.len() == bypass::DIGITS {
        let rows = s.bypass_codes(user)?;
        let left = rows.iter().filter(|r| !r.used).count().saturating_sub(1);
        for row in rows {
            if s.code_matches(&row.code, code) {
                if !row.used && s.spend_bypass_code(row.id, now)? {
                    return Ok(Match::Accepted(Verdict::Bypass { left }));
                }
                replayed = Some(Spent::Bypass);
            }
        }
    }
    Ok(replayed.map_or(Match::Wrong, Match::Replayed))
}
