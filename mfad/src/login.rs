//! A login's second factor: the checks before any code (caller, name, account, lock,
//! enrolment), then the prompt, then each answer checked against the user's code devices
//! and bypass codes, every spend atomic.

use crate::config::Unenrolled;
use crate::conn::Conn;
use crate::daemon::{Daemon, Result, Who, decision, user_exists};
use crate::factor::{self, bypass, hotp, totp};
use crate::methods::{MenuOption, OobResult, menu_text};
use crate::oob::approvals::ApprovalDecision;
use crate::policy::{self, GroupRule};
use crate::store::Device;
use crate::store::{DeviceKind, FailureEffect};
use crate::text::{self, clean};
use mfa_proto::{AuthContext, AuthMode, Outcome};
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
    /// A real code that was already spent.
    Replayed,
    Wrong,
}

impl Daemon {
    pub(crate) async fn authenticate(
        &self,
        conn: &mut Conn,
        uid: u32,
        ctx: AuthContext,
    ) -> Result<()> {
        let rhost = ctx.rhost.clone().unwrap_or_else(|| "-".into());
        let who = Who {
            user: &ctx.user,
            rhost: &rhost,
            service: &ctx.service,
            can_prompt: ctx.can_prompt,
        };
        if let Err(e) = mfa_proto::check_user_name(&ctx.user) {
            decision(&who, "-", "deny", &format!("bad user name: {e}"));
            return self.deny(conn, format!("Login refused: {e}.")).await;
        }
        // Root (sshd's PAM stack) may ask about anyone; anyone else (the ForceCommand
        // helper, running as the user) only about itself.
        if uid != 0 && self.name_of(uid).await?.as_deref() != Some(ctx.user.as_str()) {
            decision(&who, "-", "deny", &format!("caller uid {uid} is not root"));
            return self
                .deny(conn, "Only root may ask mfad to authenticate another user.")
                .await;
        }
        if !user_exists(&ctx.user).await? {
            decision(&who, "-", "deny", "unknown user");
            return self
                .deny(conn, "Two-factor login is not available for this account.")
                .await;
        }
        if let Some(duo) = &self.duo {
            return self.duo_login(conn, &who, &ctx, duo).await;
        }
        let policy = &self.config.policy;
        if !policy.exempt_groups.is_empty() || !policy.require_groups.is_empty() {
            let user = ctx.user.clone();
            let groups = tokio::task::spawn_blocking(move || policy::groups_of(&user)).await?;
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
        if !self.check_not_locked(conn, &who).await? {
            return Ok(());
        }
        let addr = policy::client_addr(ctx.rhost.as_deref(), ctx.ssh_connection.as_deref());
        let trusted = policy.is_trusted(addr);
        if !self.is_enrolled(&ctx.user).await? {
            return self.unenrolled(conn, &who, trusted).await;
        }
        if trusted {
            decision(&who, "-", "allow", "trusted network");
            conn.done(Outcome::Allow).await?;
            return Ok(());
        }
        let key = policy::key_fingerprint(ctx.ssh_auth_info.as_deref());
        if policy.remember_for > 0
            && let Some(addr) = addr
        {
            let (user, addr, key, now) = (
                ctx.user.clone(),
                addr.to_string(),
                key.clone(),
                self.clock.now(),
            );
            if self
                .db(move |s| s.is_remembered(&user, &addr, &key, now))
                .await?
            {
                decision(&who, "-", "allow", "remembered from this address and key");
                conn.done(Outcome::Allow).await?;
                return Ok(());
            }
        }
        let user = ctx.user.clone();
        let devices = self.db(move |s| s.devices(&user)).await?;
        let (options, default) = self.menu_options(&devices);
        let passed = match ctx.mode {
            AuthMode::Menu if ctx.can_prompt => {
                let (menu, prompt) = menu_text(&ctx.user, &options);
                conn.info(menu).await?;
                self.prove_second_factor(conn, &who, &prompt, &options, default)
                    .await?
            }
            _ => {
                self.default_method(conn, &who, &devices, &options, default)
                    .await?
            }
        };
        if passed {
            if policy.remember_for > 0
                && let Some(addr) = addr
            {
                let now = self.clock.now();
                let until = now.saturating_add(policy.remember_for as i64);
                let (user, addr) = (ctx.user.clone(), addr.to_string());
                self.db(move |s| s.remember(&user, &addr, &key, now, until))
                    .await?;
            }
            conn.info("Success. Logging you in...").await?;
            conn.done(Outcome::Allow).await?;
        } else {
            conn.done(Outcome::Deny).await?;
        }
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
        devices: &[Device],
        options: &[MenuOption],
        default: Option<usize>,
    ) -> Result<bool> {
        let fix = "Set a push or phone default with `mfa devices` and `mfa default N` in an \
                   interactive ssh session.";
        if let Some(i) = default {
            let option = &options[i];
            // An SMS passcode needs typing; without a terminal it cannot be the method.
            let usable = who.can_prompt || !matches!(option, MenuOption::Sms { .. });
            if usable {
                match self.run_option(conn, who, option).await? {
                    OobResult::Decided(d) => return self.conclude(conn, who, option, d).await,
                    OobResult::SmsSent if who.can_prompt => {
                        return self
                            .prove_second_factor(conn, who, "SMS passcode: ", &[], None)
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
                .prove_second_factor(conn, who, "Passcode: ", &[], None)
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
             (push or phone call), and there is none.\n{fix}",
            who.user
        ))
        .await?;
        Ok(false)
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
            let verdict = self.check_passcode(who.user, &answer).await?;
            let again = if last { "" } else { " Try again." };
            match verdict {
                Verdict::Code { method, device } => {
                    self.clear_failures(who.user).await?;
                    decision(
                        who,
                        method,
                        "allow",
                        &format!("code from {}", clean(&device)),
                    );
                    return Ok(true);
                }
                Verdict::Sms => {
                    self.clear_failures(who.user).await?;
                    decision(who, "sms", "allow", "SMS passcode");
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
                        "That is not a passcode: passcodes are {} digits (SMS passcodes {}, \
                         bypass codes {}).{again}",
                        self.config.totp.digits,
                        self.config.sms.digits,
                        bypass::DIGITS
                    ))
                    .await?;
                }
                Verdict::Replayed | Verdict::Wrong => {
                    let replayed = verdict == Verdict::Replayed;
                    let reason = if replayed {
                        "code already used"
                    } else {
                        "wrong code"
                    };
                    let now = self.clock.now();
                    match self.record_failure(who.user, now).await? {
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
                self.clear_failures(who.user).await?;
                decision(who, method, "allow", "approved on the phone");
                Ok(true)
            }
            ApprovalDecision::Denied => {
                decision(who, method, "deny", "denied on the phone");
                conn.error("Login request denied.").await?;
                Ok(false)
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
                decision(who, method, "deny", "no answer from the phone in time");
                conn.error("No answer to the login request in time; login refused.")
                    .await?;
                Ok(false)
            }
        }
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

    async fn clear_failures(&self, user: &str) -> Result<()> {
        let user = user.to_string();
        self.db(move |s| s.clear_failures(&user)).await
    }

    /// Checks `answer` against the user's code devices and bypass codes, spending what
    /// matches. The store stays locked throughout, and each spend is a conditional update,
    /// so a code opens one login even when several hosts race on it.
    pub(crate) async fn check_passcode(&self, user: &str, answer: &str) -> Result<Verdict> {
        let Some(code) = factor::as_passcode(answer) else {
            return Ok(if answer.trim().is_empty() {
                Verdict::Empty
            } else {
                Verdict::NotAPasscode
            });
        };
        let code = Zeroizing::new(code.to_string());
        let user = user.to_string();
        let now = self.clock.now();
        let window = self.config.totp.window;
        let look_ahead = self.config.hotp.look_ahead;
        let sms_digits = self.config.sms.digits as usize;
        self.db(move |s| {
            let mut replayed = false;
            for device in s.devices(&user)? {
                let Some(key) = &device.otp else { continue };
                match device.kind {
                    DeviceKind::Totp => {
                        let Some(step) =
                            totp::matching_step(&key.secret, key.params, &code, now, window)
                        else {
                            continue;
                        };
                        if s.spend_totp_step(device.id, step)? {
                            return Ok(Verdict::Code {
                                method: "totp",
                                device: device.name,
                            });
                        }
                        replayed = true;
                    }
                    DeviceKind::Hotp => {
                        let next = key.counter.max(0) as u64;
                        if let Some(counter) =
                            hotp::matching_counter(&key.secret, key.params, &code, next, look_ahead)
                            && s.spend_hotp_counter(device.id, counter)?
                        {
                            return Ok(Verdict::Code {
                                method: "hotp",
                                device: device.name,
                            });
                        }
                        // A used HOTP code lies behind the counter: it is simply wrong now.
                    }
                    DeviceKind::Phone | DeviceKind::Push => {}
                }
            }
            if code.len() == sms_digits {
                for row in s.sms_codes(&user, now)? {
                    if bypass::matches(&row.code, &code) {
                        if !row.used && s.spend_sms_code(row.id, now)? {
                            return Ok(Verdict::Sms);
                        }
                        replayed = true;
                    }
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
}
