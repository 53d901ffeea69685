//! mfad's own second factors, the local provider: TOTP and HOTP codes, bypass codes, SMS
//! passcodes, push approvals and phone calls. Enrolment first (`unenrolled`), then the menu
//! (or the default method without a terminal), each typed code checked and spent in one
//! write transaction with the lock and the failure count.

use super::menu::{self, Answer};
use super::out_of_band::{MenuOption, OobResult, menu_text};
use super::{LoginContext, Remember, SecondFactor, Verdict};
use crate::config::Unenrolled;
use crate::conn::Conn;
use crate::core::Core;
use crate::daemon::{Result, Who, decision};
use crate::factor::{self, bypass, hotp, totp};
use crate::oob::approvals::ApprovalDecision;
use crate::oob::approvals::ApprovalStore;
use crate::oob::limits::OobLimits;
use crate::oob::notify::Notifier;
use crate::oob::twilio::Twilio;
use crate::store::{Device, DeviceKind, FailureEffect, Store, StoreError};
use crate::text::{self, clean};
use mfa_proto::Outcome;
use std::sync::Arc;
use zeroize::Zeroizing;

/// What a typed answer turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CodeVerdict {
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

/// The local provider: the shared core, and the phone's channels (pending approvals,
/// the push notifier, Twilio, their rate limits).
pub(crate) struct LocalFactors {
    pub(crate) core: Arc<Core>,
    /// Pushes and calls waiting for the phone's answer; shared with the approval endpoint.
    pub(crate) approvals: Arc<ApprovalStore>,
    pub(crate) notifier: Option<Notifier>,
    pub(crate) twilio: Option<Twilio>,
    /// Rate limits on texts, calls and pushes (`[limits]`).
    pub(crate) limits: Arc<OobLimits>,
}

/// The options of a menu and which one is the default (`Menu::NONE`: a passcode prompt).
#[derive(Clone, Copy)]
pub(crate) struct Menu<'a> {
    pub options: &'a [MenuOption],
    pub default: Option<usize>,
}

impl Menu<'_> {
    pub(crate) const NONE: Menu<'static> = Menu {
        options: &[],
        default: None,
    };
}

impl SecondFactor for LocalFactors {
    async fn unenrolled(
        &self,
        conn: &mut Conn,
        login: &LoginContext<'_>,
    ) -> Result<Option<Verdict>> {
        if !login.devices.is_empty() || login.bypass_left > 0 {
            return Ok(None);
        }
        self.refuse_or_enrol(conn, &login.who, login.trusted)
            .await?;
        Ok(Some(Verdict::Answered))
    }

    async fn authenticate(&self, conn: &mut Conn, login: &LoginContext<'_>) -> Result<Verdict> {
        let who = &login.who;
        let (options, default) = self.menu_options(&login.devices);
        let menu = Menu {
            options: &options,
            default,
        };
        let remember = login.remember.as_ref();
        let passed = if menu::shows_menu(login.ctx) {
            let (text, prompt) = menu_text(who.user, &options);
            // Goes out with the prompt that follows at once.
            conn.info_with_next(text);
            self.prove_second_factor(conn, who, &prompt, menu, &login.devices, remember)
                .await?
        } else {
            self.default_method(conn, who, &login.devices, menu, remember)
                .await?
        };
        // Failures were counted, the lock checked and the success remembered in the
        // transactions that checked each answer.
        Ok(if passed {
            Verdict::Passed {
                method: "-",
                accepted: true,
                say_success: true,
            }
        } else {
            Verdict::Refused {
                failures: 0,
                reported: false,
            }
        })
    }
}

impl LocalFactors {
    /// A user with nothing enrolled: refuse, allow, or enrol during this login.
    async fn refuse_or_enrol(&self, conn: &mut Conn, who: &Who<'_>, trusted: bool) -> Result<()> {
        let how = "Enrol one with `mfa enroll totp` in a session on this host, or ask your \
                   administrator.";
        match self.core.config.unenrolled {
            Unenrolled::Allow => {
                decision(who, "-", "allow", "not enrolled; unenrolled=allow");
                conn.done(Outcome::Allow).await?;
                Ok(())
            }
            Unenrolled::Enroll if !who.can_prompt => {
                decision(who, "-", "deny", "not enrolled; no terminal to enrol on");
                self.core
                    .deny(
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
            Unenrolled::Enroll if trusted || self.core.config.policy.enroll_from_anywhere => {
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
            Unenrolled::Link if trusted || self.core.config.policy.enroll_from_anywhere => {
                self.send_enrol_link(conn, who).await
            }
            Unenrolled::Link => {
                decision(
                    who,
                    "-",
                    "deny",
                    "not enrolled; enrolment link refused outside trusted networks",
                );
                self.core
                    .deny(
                        conn,
                        format!(
                            "Two-factor authentication is required for {}, but no device is \
                         enrolled. Enrolment links are only offered from the site's own \
                         networks. {how}",
                            who.user
                        ),
                    )
                    .await
            }
            Unenrolled::Enroll => {
                decision(
                    who,
                    "-",
                    "deny",
                    "not enrolled; enrolment refused outside trusted networks",
                );
                self.core
                    .deny(
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
                self.core
                    .deny(
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
        menu: Menu<'_>,
        remember: Option<&Remember>,
    ) -> Result<bool> {
        if let Some(option) = menu.default.and_then(|i| menu.options.get(i)) {
            // An SMS passcode needs typing; without a terminal it cannot be the method.
            let usable = who.can_prompt || !matches!(option, MenuOption::Sms { .. });
            if usable {
                match self.run_option(conn, who, option).await? {
                    OobResult::Decided(d) => {
                        return self.conclude(conn, who, option, d, remember).await;
                    }
                    OobResult::SmsSent if who.can_prompt => {
                        return self
                            .prove_second_factor(
                                conn,
                                who,
                                "SMS passcode: ",
                                Menu::NONE,
                                devices,
                                remember,
                            )
                            .await;
                    }
                    OobResult::SmsSent | OobResult::Failed => {}
                }
            }
        }
        let default_is_code = devices.iter().any(|d| d.is_default && d.otp.is_some());
        if who.can_prompt && (default_is_code || menu.default.is_some()) {
            // The default makes codes, or its provider failed: one prompt for a passcode.
            return self
                .prove_second_factor(conn, who, "Passcode: ", Menu::NONE, devices, remember)
                .await;
        }
        decision(
            who,
            "-",
            "deny",
            "no usable default method for a session without a terminal",
        );
        conn.error(menu::no_headless_default(
            who.user,
            None,
            &self.headless_fix(),
        ))
        .await?;
        Ok(false)
    }

    /// What a user without a terminal-free default can do about it, on this host: advice
    /// that names only what the host offers.
    fn headless_fix(&self) -> String {
        let approvals = self.core.config.approval.is_some();
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

    /// Asks for a passcode or a menu option. Passcodes: up to `max_attempts`, every wrong
    /// one counted toward the lockout; answers that are not passcodes at all use an attempt
    /// but count nothing. Options: at most three out-of-band requests per login. An empty
    /// answer runs the default method when it has an option.
    pub(crate) async fn prove_second_factor(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        prompt: &str,
        menu: Menu<'_>,
        devices: &Arc<Vec<Device>>,
        remember: Option<&Remember>,
    ) -> Result<bool> {
        const MAX_REQUESTS: u32 = 3;
        let attempts = self.core.config.max_attempts;
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
            let choice = match menu::read_answer(&answer, menu.options.len()) {
                Answer::Default => menu.default,
                Answer::Option(i) => Some(i),
                Answer::NoSuchOption(message) => {
                    attempt += 1;
                    conn.error(message).await?;
                    continue;
                }
                Answer::Other(_) => None,
            };
            if let Some(i) = choice {
                requests += 1;
                if requests > MAX_REQUESTS {
                    decision(who, "-", "deny", "too many out-of-band requests");
                    conn.error("Too many requests in one login; login refused.")
                        .await?;
                    return Ok(false);
                }
                let Some(option) = menu.options.get(i) else {
                    continue;
                };
                match self.run_option(conn, who, option).await? {
                    OobResult::SmsSent | OobResult::Failed => continue,
                    OobResult::Decided(d) => {
                        return self.conclude(conn, who, option, d, remember).await;
                    }
                }
            }
            attempt += 1;
            let last = attempt == attempts;
            let verdict = self
                .check_passcode(who.user, &answer, devices, remember)
                .await?;
            let again = if last { "" } else { " Try again." };
            match verdict {
                CodeVerdict::Code { method, device } => {
                    decision(
                        who,
                        method,
                        "allow",
                        &format!("code from {}", clean(&device)),
                    );
                    return Ok(true);
                }
                CodeVerdict::Sms => {
                    decision(who, "sms", "allow", "SMS passcode");
                    return Ok(true);
                }
                CodeVerdict::Bypass { left } => {
                    decision(who, "bypass", "allow", &format!("{left} bypass codes left"));
                    conn.info(format!(
                        "Bypass code accepted. You have {left} left; make new ones with `mfa bypass-codes`."
                    ))
                    .await?;
                    return Ok(true);
                }
                CodeVerdict::Empty => {
                    conn.error(format!("No passcode entered.{again}")).await?;
                }
                CodeVerdict::NotAPasscode => {
                    decision(who, "-", "retry", "answer is not a passcode");
                    conn.error(format!(
                        "That is not a passcode: passcodes are {} digits (SMS passcodes {}, \
                         bypass codes {}).{again}",
                        self.core.config.totp.digits,
                        self.core.config.sms.digits,
                        bypass::DIGITS
                    ))
                    .await?;
                }
                CodeVerdict::Locked { until } => {
                    // Locked while this login was at its prompt (by failures in other
                    // sessions, a report, an admin): nothing more is accepted here.
                    decision(who, "-", "deny", "account locked; no code checked");
                    let now = self.core.clock.now();
                    conn.error(text::locked_message(who.user, until, now))
                        .await?;
                    return Ok(false);
                }
                CodeVerdict::Replayed(effect, _) | CodeVerdict::Wrong(effect) => {
                    let spent = match verdict {
                        CodeVerdict::Replayed(_, kind) => Some(kind),
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
                            let now = self.core.clock.now();
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
        remember: Option<&Remember>,
    ) -> Result<bool> {
        let method = match option {
            MenuOption::Push { .. } => "push",
            MenuOption::Call { .. } => "phone",
            MenuOption::Sms { .. } => "sms",
        };
        match outcome {
            ApprovalDecision::Approved => {
                // Even the right answer is refused when the account locked meanwhile.
                if !self
                    .core
                    .accept_unless_locked(conn, who, method, remember)
                    .await?
                {
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
                let until = self
                    .core
                    .clock
                    .now()
                    .saturating_add(self.core.report_lock_secs());
                let user = who.user.to_string();
                self.core.db(move |s| s.lock_until(&user, until)).await?;
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
        method: &'static str,
        reason: &str,
        message: &str,
    ) -> Result<bool> {
        let now = self.core.clock.now();
        match self.core.record_failure(who.user, now).await? {
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

    /// Checks `answer` against the user's code devices (as read before the prompt) and
    /// bypass codes, spending what matches, and remembers a success (`remember`). The
    /// store stays locked throughout, and each spend is a conditional update by device id,
    /// so a code opens one login even when several hosts race on it, and a device removed
    /// meanwhile opens none.
    pub(crate) async fn check_passcode(
        &self,
        user: &str,
        answer: &str,
        devices: &Arc<Vec<Device>>,
        remember: Option<&Remember>,
    ) -> Result<CodeVerdict> {
        let Some(code) = factor::as_passcode(answer) else {
            return Ok(if answer.trim().is_empty() {
                CodeVerdict::Empty
            } else {
                CodeVerdict::NotAPasscode
            });
        };
        let code = Zeroizing::new(code.to_string());
        let user = user.to_string();
        let devices = Arc::clone(devices);
        let remember = remember.cloned();
        let now = self.core.clock.now();
        let limits = CodeLimits {
            window: self.core.config.totp.window,
            look_ahead: self.core.config.hotp.look_ahead,
            sms_digits: self.core.config.sms.digits as usize,
        };
        let (max_failures, lock_for) = (
            self.core.config.lockout.max_failures,
            self.core.config.lockout.duration,
        );
        // The device the code is spent on first, when it is a TOTP one: its spend goes with
        // the lock's read, unless the lock holds (one round trip on PostgreSQL).
        let first_totp = first_totp_match(&devices, &code, now, limits.window);
        // A good TOTP code: all of its write in one statement, on this task, where the store
        // has one (PostgreSQL: one round trip instead of two, no blocking thread), with the
        // same guarantees as the transaction below. When it changes nothing (locked,
        // already spent, device gone), that transaction finds out which, as if it had not
        // been tried.
        // Otherwise one write transaction: the lock is read, the code checked and spent,
        // and the failure counted (or the count cleared and the login remembered) together,
        // so a lock set by another session a moment ago is seen, and no code is checked
        // while it holds.
        let at_once = first_totp.map(|(at, device, step)| (devices[at].name.clone(), device, step));
        let kept = remember
            .as_ref()
            .map(|r| (r.scope, r.addr.clone(), r.key.clone(), r.until(now)));
        let who = user.clone();
        self.core
            .db_login(
                async move |s: &mut crate::store::Store| {
                    let (name, device, step) = at_once?;
                    let kept = kept
                        .as_ref()
                        .map(|(s, a, k, u)| (*s, a.as_str(), k.as_str(), *u));
                    match s
                        .spend_totp_at_once_async(&who, device, step, now, kept)
                        .await?
                    {
                        Ok(true) => Some(Ok(CodeVerdict::Code {
                            method: "totp",
                            device: name,
                        })),
                        Ok(false) => None,
                        Err(e) => Some(Err(e)),
                    }
                },
                move |s| {
                    s.in_transaction(|s| {
                        let (lock, first) = match first_totp {
                            Some((at, device, step)) => {
                                let (lock, spent) =
                                    s.lock_state_and_spend_totp(&user, device, step, now)?;
                                (lock, spent.map(|spent| (at, spent)))
                            }
                            None => (s.lock_state(&user)?, None),
                        };
                        if let Some(until) = lock.locked_until.filter(|u| *u > now) {
                            let until =
                                match s.record_failure(&user, now, max_failures, lock_for)? {
                                    FailureEffect::Locked { until: later } => later.max(until),
                                    FailureEffect::Counted { .. } => until,
                                };
                            return Ok(CodeVerdict::Locked { until });
                        }
                        let found = match_passcode(s, &user, &devices, &code, now, &limits, first)?;
                        Ok(match found {
                            Match::Accepted(verdict) => {
                                // Read in this transaction, under its lock: no other can
                                // have counted one since.
                                if lock.failures > 0 {
                                    s.clear_failures(&user)?;
                                }
                                if let Some(r) = &remember {
                                    r.write(s, now)?;
                                }
                                verdict
                            }
                            Match::Replayed(kind) => CodeVerdict::Replayed(
                                s.record_failure(&user, now, max_failures, lock_for)?,
                                kind,
                            ),
                            Match::Wrong => CodeVerdict::Wrong(s.record_failure(
                                &user,
                                now,
                                max_failures,
                                lock_for,
                            )?),
                        })
                    })
                },
            )
            .await
    }
}

/// How far a code may be from the expected one, and the length of SMS passcodes.
struct CodeLimits {
    window: u64,
    look_ahead: u64,
    sms_digits: usize,
}

/// What a passcode matched.
enum Match {
    Accepted(CodeVerdict),
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

/// The first of `devices` that [`match_passcode`] would spend `code` on, when it is a TOTP
/// device: its index, its id and the time step. `None` when an HOTP device comes before it
/// (that one is tried first) or none matches.
fn first_totp_match(
    devices: &[Device],
    code: &str,
    now: i64,
    window: u64,
) -> Option<(usize, i64, u64)> {
    for (at, device) in devices.iter().enumerate() {
        let Some(key) = &device.otp else { continue };
        match device.kind {
            DeviceKind::Totp => {
                if let Some(step) = totp::matching_step(&key.secret, key.params, code, now, window)
                {
                    return Some((at, device.id, step));
                }
            }
            DeviceKind::Hotp => return None,
            DeviceKind::Phone | DeviceKind::Push | DeviceKind::SecurityKey | DeviceKind::WebKey => {
            }
        }
    }
    None
}

/// Checks `code` against the user's code devices, SMS passcodes and bypass codes, spending
/// what matches; each spend is a conditional update whose row count decides a race.
/// `first`: the device at that index was already tried (with the lock's read) and the
/// spend's outcome.
fn match_passcode(
    s: &mut Store,
    user: &str,
    devices: &[Device],
    code: &str,
    now: i64,
    limits: &CodeLimits,
    first: Option<(usize, bool)>,
) -> std::result::Result<Match, StoreError> {
    let mut replayed = None;
    for (at, device) in devices.iter().enumerate() {
        let Some(key) = &device.otp else { continue };
        match device.kind {
            DeviceKind::Totp => {
                let spent = match first {
                    Some((tried, spent)) if tried == at => spent,
                    _ => {
                        let Some(step) =
                            totp::matching_step(&key.secret, key.params, code, now, limits.window)
                        else {
                            continue;
                        };
                        s.spend_totp_step(device.id, step)?
                    }
                };
                if spent {
                    return Ok(Match::Accepted(CodeVerdict::Code {
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
                    return Ok(Match::Accepted(CodeVerdict::Code {
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
            DeviceKind::Phone | DeviceKind::Push | DeviceKind::SecurityKey | DeviceKind::WebKey => {
            }
        }
    }
    if code.len() == limits.sms_digits {
        for row in s.sms_codes(user, now)? {
            if s.code_matches(&row.code, code) {
                if !row.used && s.spend_sms_code(row.id, now)? {
                    return Ok(Match::Accepted(CodeVerdict::Sms));
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
                    return Ok(Match::Accepted(CodeVerdict::Bypass { left }));
                }
                replayed = Some(Spent::Bypass);
            }
        }
    }
    Ok(replayed.map_or(Match::Wrong, Match::Replayed))
}
