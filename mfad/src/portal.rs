//! The self-service portal's requests (mfa-web's `/portal` pages, `[web] portal = true`):
//! sign in with the password (checked through mfad's PAM service, a wrong one counted
//! toward the lockout shared with ssh) and then a code from one of the user's devices (or a
//! bypass code), checked and spent exactly as at an ssh prompt; then the user's devices,
//! the default method, removal, and new bypass codes. Every change needs a second factor
//! proved in the last [`FRESH_SECS`].
//!
//! Sessions live in the store (only the SHA-256 of the cookie), so in a cluster any node's
//! mfa-web and mfad serve them; each has an idle and an absolute limit, and a CSRF token
//! every form must carry.

use crate::core::Core;
use crate::daemon::{Who, decision};
use crate::devices::describe_detail;
use crate::devices::{CheckedDevice, check_new_device, new_topic};
use crate::enrol_link;
use crate::enrol_web::{GONE, UNAVAILABLE, who};
use crate::factor::bypass;
use crate::factor::totp;
use crate::oob::approvals::{ApprovalDecision, ApprovalMethod, ApprovalRequest};
use crate::oob::limits::Channel;
use crate::oob::notify::PushMessage;
use crate::oob::phone::mask_phone;
use crate::password::{self, PasswordCheck, PasswordVerdict};
use crate::providers::enrol::confirming_counter;
use crate::providers::local::{CodeVerdict, LocalFactors};
use crate::store::{Device, FailureEffect, WebSessionRecord, WebSessionStep};
use crate::store::{DeviceKind, NewDeviceRow, OtpKey};
use crate::text;
use data_encoding::HEXLOWER;
use mfa_proto::WebReply;
use mfa_proto::web::PortalVia;
use mfa_proto::web::{
    AdminAction, LockedUser, NewApp, Password, PortalChange, PortalDevice, PortalLogin, PortalPage,
    ShownCodes, SignInRefusal,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tracing::{error, warn};
use zeroize::Zeroizing;

mod keys;

/// A session unused this long ends.
pub const IDLE_SECS: i64 = 600;
/// A session ends this long after its sign-in, used or not.
pub const ABSOLUTE_SECS: i64 = 3600;
/// A change needs a second factor proved this recently.
pub const FRESH_SECS: i64 = 300;
/// The name of an app added on the portal.
const APP_NAME: &str = "Authenticator app";
/// Locked accounts the admin part lists at most.
const MAX_LOCKED_SHOWN: u32 = 200;
/// Codes one session may get wrong before it ends (each also counts toward the lockout).
pub const MAX_CODE_TRIES: u32 = 5;

/// Answers the portal's requests.
pub(crate) struct PortalDesk {
    pub(crate) core: Arc<Core>,
    pub(crate) local: Arc<LocalFactors>,
    pub(crate) passwords: Arc<dyn PasswordCheck>,
}

/// A user name as the sign-in form may carry one: what `useradd` accepts, at most 64
/// bytes. Anything else is refused before PAM or the store sees it.
fn plausible_user(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A live session, by the key of its cookie.
struct Session {
    key: [u8; 32],
    record: WebSessionRecord,
}

impl PortalDesk {
    fn enabled(&self) -> bool {
        self.core.config.web.portal
    }

    /// The session `token` if it is live at `now`; one past its limits is removed.
    async fn session(&self, token: &str, now: i64) -> Result<Option<Session>, WebReply> {
        if !mfa_proto::web::looks_like_token(token) {
            return Ok(None);
        }
        let key = enrol_link::key_of(token);
        let read = self.core.db(move |s| s.web_session(&key)).await;
        let record = match read {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(None),
            Err(e) => {
                warn!(target: "mfad::web", "cannot read portal sessions: {e}");
                return Err(UNAVAILABLE);
            }
        };
        let expired = now.saturating_sub(record.created) >= ABSOLUTE_SECS
            || now.saturating_sub(record.last_seen) >= IDLE_SECS;
        if expired {
            self.step(key, WebSessionStep::End).await?;
            return Ok(None);
        }
        Ok(Some(Session { key, record }))
    }

    async fn step(
        &self,
        key: [u8; 32],
        step: WebSessionStep<'static>,
    ) -> Result<Option<u32>, WebReply> {
        let now = self.core.clock.now();
        self.core
            .db(move |s| s.web_session_step(&key, step, now))
            .await
            .map_err(|e| {
                warn!(target: "mfad::web", "cannot change a portal session: {e}");
                UNAVAILABLE
            })
    }

    /// The live session `token` whose CSRF token is `csrf`: `Err` with the reply otherwise.
    async fn posted(&self, token: &str, csrf: &str, now: i64) -> Result<Session, WebReply> {
        if !self.enabled() {
            return Err(GONE);
        }
        let Some(session) = self.session(token, now).await? else {
            return Err(GONE);
        };
        let expected = session.record.csrf.as_bytes();
        if csrf.is_empty() || !bool::from(expected.ct_eq(csrf.as_bytes())) {
            return Err(WebReply::BadForm);
        }
        Ok(session)
    }

    /// A page of the session is served: the session ends (the reply says so) if the
    /// account is locked, and its idle clock starts again otherwise.
    async fn still_open(&self, key: [u8; 32], user: &str, now: i64) -> Result<(), WebReply> {
        if self.locked(user, now).await? {
            let _ = self.step(key, WebSessionStep::End).await;
            return Err(WebReply::SignInRefused {
                why: SignInRefusal::Locked,
            });
        }
        self.step(key, WebSessionStep::Touch).await.map(|_| ())
    }

    async fn locked(&self, user: &str, now: i64) -> Result<bool, WebReply> {
        let u = user.to_string();
        match self.core.db(move |s| s.lock_state(&u)).await {
            Ok(lock) => Ok(lock.locked_until.is_some_and(|until| until > now)),
            Err(_) => Err(UNAVAILABLE),
        }
    }

    async fn devices(&self, user: &str) -> Result<Vec<Device>, WebReply> {
        let u = user.to_string();
        self.core
            .db(move |s| s.devices(&u))
            .await
            .map_err(|_| UNAVAILABLE)
    }

    pub(crate) async fn sign_in(&self, user: &str, password: Password, rhost: &str) -> WebReply {
        if !self.enabled() {
            return GONE;
        }
        let wrong = WebReply::SignInRefused {
            why: SignInRefusal::Wrong,
        };
        if !plausible_user(user) {
            return wrong;
        }
        // The directory's spelling of the name from here on: one account, one set of
        // devices, counters and locks. A name with no account still goes through PAM (so
        // the time taken does not tell whether it exists), is refused like a wrong
        // password, and leaves no state.
        let account = match self.core.web_account(user).await {
            Ok(account) => account,
            Err(_) => return UNAVAILABLE,
        };
        let name = account.map(|a| a.name);
        let user = name.as_deref().unwrap_or(user);
        let now = self.core.clock.now();
        if name.is_some() {
            match self.locked(user, now).await {
                Ok(false) => {}
                Ok(true) => {
                    decision(
                        &who(user, rhost),
                        "password",
                        "deny",
                        "portal; account locked",
                    );
                    return WebReply::SignInRefused {
                        why: SignInRefusal::Locked,
                    };
                }
                Err(reply) => return reply,
            }
        }
        match password::check_off_thread(&self.passwords, user, password, rhost).await {
            PasswordVerdict::Right if name.is_some() => {}
            PasswordVerdict::Right | PasswordVerdict::Wrong if name.is_none() => {
                decision(
                    &who(user, rhost),
                    "password",
                    "deny",
                    "portal; no such user",
                );
                return wrong;
            }
            PasswordVerdict::Right | PasswordVerdict::Wrong => {
                decision(
                    &who(user, rhost),
                    "password",
                    "deny",
                    "portal; wrong password",
                );
                return match self.core.record_failure(user, now).await {
                    Ok(FailureEffect::Locked { .. }) => {
                        decision(
                            &who(user, rhost),
                            "password",
                            "locked",
                            "failed portal passwords; account now locked",
                        );
                        WebReply::SignInRefused {
                            why: SignInRefusal::Locked,
                        }
                    }
                    Ok(_) => wrong,
                    Err(_) => UNAVAILABLE,
                };
            }
            PasswordVerdict::Unavailable(why) => {
                warn!(target: "mfad::web", "cannot check a password through PAM: {why}");
                return UNAVAILABLE;
            }
        }
        let u = user.to_string();
        let codes = self
            .core
            .db(move |s| Ok((s.devices(&u)?, s.unused_bypass_codes(&u)?.len())))
            .await;
        match codes {
            Ok((devices, bypass))
                if bypass > 0
                    || devices
                        .iter()
                        .any(|d| d.otp.is_some() || d.kind == DeviceKind::WebKey) => {}
            Ok(_) => {
                decision(
                    &who(user, rhost),
                    "password",
                    "deny",
                    "portal; no device that gives codes",
                );
                return WebReply::SignInRefused {
                    why: SignInRefusal::NotEnrolled,
                };
            }
            Err(_) => return UNAVAILABLE,
        }
        let token = enrol_link::new_token(self.core.random.as_ref());
        let csrf = enrol_link::new_token(self.core.random.as_ref());
        let key = enrol_link::key_of(&token);
        let (u, c) = (user.to_string(), csrf.to_string());
        let limits = (now - ABSOLUTE_SECS, now - IDLE_SECS);
        match self
            .core
            .db(move |s| s.add_web_session(&key, &u, &c, now, limits))
            .await
        {
            Ok(()) => {
                decision(
                    &who(user, rhost),
                    "password",
                    "accepted",
                    "portal; a code comes next",
                );
                WebReply::PortalStarted {
                    session: token.to_string(),
                    csrf: csrf.to_string(),
                }
            }
            Err(e) => {
                warn!(target: "mfad::web", "cannot record a portal session: {e}");
                UNAVAILABLE
            }
        }
    }

    pub(crate) async fn code(&self, token: &str, csrf: &str, code: &str, rhost: &str) -> WebReply {
        let now = self.core.clock.now();
        let Session { key, record } = match self.posted(token, csrf, now).await {
            Ok(session) => session,
            Err(reply) => return reply,
        };
        let user = record.user.as_str();
        let devices = match self.devices(user).await {
            Ok(devices) => Arc::new(devices),
            Err(reply) => return reply,
        };
        let verdict = match self.local.check_passcode(user, code, &devices, None).await {
            Ok(verdict) => verdict,
            Err(e) => {
                warn!(target: "mfad::web", "cannot check a portal code: {e}");
                return UNAVAILABLE;
            }
        };
        let method = match &verdict {
            CodeVerdict::Code { method, device } => {
                let what = format!("portal; device {}", text::clean(device));
                decision(&who(user, rhost), method, "allow", &what);
                Some(*method)
            }
            CodeVerdict::Bypass { left } => {
                let what = format!("portal; {left} bypass codes left");
                decision(&who(user, rhost), "bypass", "allow", &what);
                Some("bypass")
            }
            CodeVerdict::Sms => {
                decision(&who(user, rhost), "sms", "allow", "portal");
                Some("sms")
            }
            _ => None,
        };
        if method.is_some() {
            return match self.step(key, WebSessionStep::Factor).await {
                Ok(Some(_)) => self.view(token).await,
                Ok(None) => GONE,
                Err(reply) => reply,
            };
        }
        let locked = match verdict {
            CodeVerdict::Locked { .. } => true,
            CodeVerdict::Wrong(effect) | CodeVerdict::Replayed(effect, _) => {
                decision(&who(user, rhost), "code", "deny", "portal; wrong code");
                matches!(effect, FailureEffect::Locked { .. })
            }
            _ => false,
        };
        if locked {
            decision(
                &who(user, rhost),
                "code",
                "locked",
                "portal; account locked",
            );
            let _ = self.step(key, WebSessionStep::End).await;
            return WebReply::SignInRefused {
                why: SignInRefusal::Locked,
            };
        }
        self.code_missed(key).await
    }

    /// A wrong code in the session: how many tries are left, or the session ends at
    /// [`MAX_CODE_TRIES`].
    async fn code_missed(&self, key: [u8; 32]) -> WebReply {
        let max = MAX_CODE_TRIES;
        match self.step(key, WebSessionStep::CodeMiss { max }).await {
            Ok(Some(tries)) if tries < max => WebReply::WrongCode {
                tries_left: max - tries,
            },
            Ok(_) => {
                let _ = self.step(key, WebSessionStep::End).await;
                GONE
            }
            Err(reply) => reply,
        }
    }

    pub(crate) async fn view(&self, token: &str) -> WebReply {
        if !self.enabled() {
            return GONE;
        }
        let now = self.core.clock.now();
        let Session { key, record } = match self.session(token, now).await {
            Ok(Some(session)) => session,
            Ok(None) => return GONE,
            Err(reply) => return reply,
        };
        if let Err(reply) = self.still_open(key, &record.user, now).await {
            return reply;
        }
        if let Some(ask) = self.ask_for_code(&record, now, false).await {
            return ask;
        }
        let factor_at = record.factor_at.unwrap_or(now);
        let u = record.user.clone();
        let read = self
            .core
            .db(move |s| Ok((s.devices(&u)?, s.unused_bypass_codes(&u)?.len())))
            .await;
        let (devices, bypass_left) = match read {
            Ok(read) => read,
            Err(_) => return UNAVAILABLE,
        };
        // The history apart: a history that cannot be read (its own file, on SQLite) still
        // leaves the devices to manage, and the page says the list is missing.
        let (logins, logins_unreadable) = if self.core.history.enabled() {
            let u = record.user.clone();
            match self
                .core
                .db(move |s| s.recent_logins(&u, crate::history::SHOWN))
                .await
            {
                Ok(logins) => (logins, false),
                Err(e) => {
                    warn!(
                        target: "mfad::web",
                        "portal: cannot read the login history of {}: {e}",
                        crate::text::clean(&record.user)
                    );
                    (Vec::new(), true)
                }
            }
        } else {
            (Vec::new(), false)
        };
        let fresh_for = (factor_at + FRESH_SECS).saturating_sub(now).max(0) as u64;
        let admin = match self.is_admin(&record.user).await {
            Ok(admin) => admin,
            Err(reply) => return reply,
        };
        let locked = if admin {
            match self
                .core
                .db(move |s| s.locked_accounts(now, MAX_LOCKED_SHOWN))
                .await
            {
                Ok(users) => users
                    .into_iter()
                    .map(|(user, failures, until)| LockedUser {
                        user,
                        failures,
                        until: crate::calendar::utc(until),
                    })
                    .collect(),
                Err(_) => return UNAVAILABLE,
            }
        } else {
            Vec::new()
        };
        WebReply::Portal {
            page: PortalPage {
                user: record.user,
                csrf: record.csrf,
                devices: devices
                    .iter()
                    .map(|d| PortalDevice {
                        id: d.id,
                        kind: d.kind.as_str().to_string(),
                        name: d.name.clone(),
                        detail: describe_detail(d),
                        default: d.is_default,
                    })
                    .collect(),
                bypass_left: u32::try_from(bypass_left).unwrap_or(u32::MAX),
                fresh_for,
                admin,
                locked,
                can_add_phone: self.local.can_sms(),
                can_add_key: self.relying_party().is_some(),
                can_add_push: self.local.can_push()
                    && self
                        .core
                        .config
                        .push
                        .as_ref()
                        .is_some_and(|p| p.notifier == crate::oob::config::NotifierKind::Ntfy),
                logins: logins
                    .into_iter()
                    .map(|l| PortalLogin {
                        id: l.id,
                        at: crate::calendar::utc(l.at),
                        host: l.host,
                        service: l.service,
                        address: l.rhost,
                        method: l.method,
                        outcome: l.outcome,
                        detail: l.detail,
                    })
                    .collect(),
                logins_unreadable,
            },
        }
    }

    pub(crate) async fn change(
        &self,
        token: &str,
        csrf: &str,
        change: PortalChange,
        rhost: &str,
    ) -> WebReply {
        let now = self.core.clock.now();
        let Session { key, record } = match self.posted(token, csrf, now).await {
            Ok(session) => session,
            Err(reply) => return reply,
        };
        let user = record.user.as_str();
        if let PortalChange::NotMe { login } = change {
            // Taking access away needs no fresh code.
            return self.not_me(key, user, login, rhost, now).await;
        }
        if let Some(ask) = self.ask_for_code(&record, now, true).await {
            return ask;
        }
        if let Err(reply) = self.still_open(key, user, now).await {
            return reply;
        }
        let devices = match self.devices(user).await {
            Ok(devices) => devices,
            Err(reply) => return reply,
        };
        let mine = |id: i64| devices.iter().find(|d| d.id == id);
        let w = who(user, rhost);
        let u = user.to_string();
        match change {
            PortalChange::SetDefault { device } => {
                let Some(d) = mine(device) else {
                    return GONE;
                };
                if d.kind == DeviceKind::WebKey {
                    return changed(
                        "A security key for these pages cannot be the default: scp, sftp and \
                         rsync run over ssh, which cannot use it. Nothing was changed."
                            .to_string(),
                    );
                }
                if let Err(e) = self.core.db(move |s| s.set_default(&u, device)).await {
                    warn!(target: "mfad::web", "cannot set a default device: {e}");
                    return UNAVAILABLE;
                }
                let what = format!("portal; device {}", text::clean(&d.name));
                decision(&w, d.kind.as_str(), "default set", &what);
                changed(format!(
                    "\"{}\" is now your default method: scp, sftp, rsync and file transfer \
                     apps use it.",
                    d.name
                ))
            }
            PortalChange::Remove { device } => {
                let Some(d) = mine(device) else {
                    return GONE;
                };
                let web_only = devices
                    .iter()
                    .filter(|other| other.id != device)
                    .all(|other| other.kind == DeviceKind::WebKey);
                if devices.len() > 1 && web_only {
                    return changed(
                        "Your other devices are security keys for these pages, which ssh logins \
                         cannot use: add an app, a phone or a token before removing this one."
                            .to_string(),
                    );
                }
                if devices.len() == 1 {
                    return changed(
                        "That is your only device: add another before removing it (or ask \
                         your administrator to reset your enrolment)."
                            .to_string(),
                    );
                }
                if let Err(e) = self.core.db(move |s| s.remove_device(&u, device)).await {
                    warn!(target: "mfad::web", "cannot remove a device: {e}");
                    return UNAVAILABLE;
                }
                let what = format!("portal; device {}", text::clean(&d.name));
                decision(&w, d.kind.as_str(), "removed", &what);
                changed(format!("Removed \"{}\".", d.name))
            }
            PortalChange::Rename { device, name } => {
                let Some(d) = mine(device) else {
                    return GONE;
                };
                let name = name.trim().to_string();
                let fits = !name.is_empty()
                    && name.chars().count() <= 64
                    && !name.chars().any(char::is_control);
                if !fits {
                    return changed(
                        "A device name has 1 to 64 characters, none of them control \
                         characters. Nothing was changed."
                            .to_string(),
                    );
                }
                let n = name.clone();
                match self.core.db(move |s| s.rename_device(&u, device, &n)).await {
                    Ok(true) => {}
                    Ok(false) => return GONE,
                    Err(_) => return UNAVAILABLE,
                }
                let what = format!(
                    "portal; device {} renamed {}",
                    text::clean(&d.name),
                    text::clean(&name)
                );
                decision(&w, d.kind.as_str(), "renamed", &what);
                changed(format!("\"{}\" is now called \"{name}\".", d.name))
            }
            PortalChange::BeginApp => {
                let params = self.core.totp_params();
                let secret = totp::new_secret(self.core.random.as_ref());
                let held = Adding::App {
                    secret: totp::secret_base32(&secret).as_str().to_owned(),
                };
                if let Err(reply) = self.hold(key, &u, Some(&held), now).await {
                    return reply;
                }
                let uri = totp::otpauth_uri(&secret, params, &self.core.issuer, user);
                let b32 = totp::secret_base32(&secret);
                WebReply::NewApp {
                    app: NewApp {
                        user: user.to_string(),
                        uri: uri.as_str().to_owned(),
                        secret: b32.as_str().to_owned(),
                        digits: params.digits,
                        period: params.period,
                    },
                }
            }
            PortalChange::ConfirmApp { code } => {
                self.confirm_app(key, &record, &devices, &code, &w, now)
                    .await
            }
            PortalChange::NotMe { .. } => GONE,
            PortalChange::BeginPhone { name, number } => {
                self.begin_phone(key, &w, &name, &number, now).await
            }
            PortalChange::ConfirmPhone { code } => {
                self.confirm_phone(key, &record, &code, &w, now).await
            }
            PortalChange::BeginPush { name } => self.begin_push(key, user, &name, now).await,
            PortalChange::TestPush => self.test_push(key, &record, rhost, now).await,
            PortalChange::CheckPush => self.check_push(key, &record, now).await,
            PortalChange::AddToken {
                kind,
                name,
                secret,
                code,
            } => {
                self.add_token((&kind, &name, &secret, &code), &w, now)
                    .await
            }
            PortalChange::BeginKey { name } => self.begin_key(key, &w, &name, &devices, now).await,
            PortalChange::FinishKey { response } => {
                self.finish_key(key, &record, &response, &w, &devices, now)
                    .await
            }
            PortalChange::NewBypassCodes => {
                let (shown, stored) = bypass::generate(self.core.random.as_ref());
                if let Err(e) = self
                    .core
                    .db(move |s| s.replace_bypass_codes(&u, &stored, now))
                    .await
                {
                    warn!(target: "mfad::web", "cannot replace bypass codes: {e}");
                    return UNAVAILABLE;
                }
                let what = format!("portal; {} new codes", shown.len());
                decision(&w, "bypass", "issued", &what);
                WebReply::PortalChanged {
                    note: "New bypass codes: each works once, and the earlier ones no longer \
                           work. Keep them somewhere safe, away from your phone. They are \
                           shown only now."
                        .to_string(),
                    codes: ShownCodes(shown.iter().map(|c| c.as_str().to_owned()).collect()),
                }
            }
        }
    }

    /// A code from the session's new app: adds it (named "Authenticator app", numbered
    /// when the user has one by that name) with the code's step spent.
    async fn confirm_app(
        &self,
        key: [u8; 32],
        record: &WebSessionRecord,
        devices: &[Device],
        code: &str,
        w: &Who<'_>,
        now: i64,
    ) -> WebReply {
        let adding = match self.adding(record).await {
            Ok(adding) => adding,
            Err(reply) => return reply,
        };
        let secret = match &adding {
            Some(Adding::App { secret }) => {
                match data_encoding::BASE32_NOPAD.decode(secret.as_bytes()) {
                    Ok(secret) => Zeroizing::new(secret),
                    Err(_) => return GONE,
                }
            }
            _ => return changed("Start again: add the app first.".to_string()),
        };
        let params = self.core.totp_params();
        let window = self.core.config.totp.window;
        let Some(step) = totp::matching_step(&secret, params, code.trim(), now, window) else {
            return self.code_missed(key).await;
        };
        let taken = |name: &str| devices.iter().any(|d| d.name == name);
        let name = (1..)
            .map(|n| match n {
                1 => APP_NAME.to_string(),
                n => format!("{APP_NAME} {n}"),
            })
            .find(|name| !taken(name))
            .unwrap_or_else(|| APP_NAME.to_string());
        let (u, n) = (record.user.clone(), name.clone());
        let added = self
            .core
            .db(move |s| {
                s.in_transaction(|s| {
                    if !s.web_session_pending(&key, &u, None, now)? {
                        return Ok(false);
                    }
                    s.add_totp_device(&u, &n, &secret, params, step, now)?;
                    Ok(true)
                })
            })
            .await;
        match added {
            Ok(true) => {
                decision(w, "totp", "enrolled", &format!("portal; device {name}"));
                changed(format!(
                    "Added \"{name}\". Your logins can use its codes from now on."
                ))
            }
            Ok(false) => GONE,
            Err(_) => UNAVAILABLE,
        }
    }

    /// "This wasn't me" on the user's login `login`: as "Deny and report" on a push, the
    /// account is locked (the lockout duration, at least an hour), its remembered logins
    /// forgotten, an ALERT logged for the administrators, and the session ended.
    async fn not_me(
        &self,
        key: [u8; 32],
        user: &str,
        login: i64,
        rhost: &str,
        now: i64,
    ) -> WebReply {
        let u = user.to_string();
        let rows = match self
            .core
            .db(move |s| s.recent_logins(&u, crate::history::SHOWN))
            .await
        {
            Ok(rows) => rows,
            Err(_) => return UNAVAILABLE,
        };
        let Some(row) = rows.into_iter().find(|r| r.id == login) else {
            return GONE;
        };
        let until = now.saturating_add(self.core.report_lock_secs());
        let u = user.to_string();
        let locked = self
            .core
            .db(move |s| {
                s.in_transaction(|s| {
                    s.lock_until(&u, until)?;
                    s.forget_remembered(&u)
                })
            })
            .await;
        if locked.is_err() {
            return UNAVAILABLE;
        }
        error!(
            target: "mfad::decision",
            "ALERT user={} rhost={} method={} outcome=reported reason=\"the user says they did \
             not make this login ({}, on {}, {})\"; account locked until {} (portal, from {})",
            text::clean(user),
            text::clean(&row.rhost),
            text::clean(&row.method),
            crate::calendar::utc(row.at),
            text::clean(&row.host),
            text::clean(&row.outcome),
            text::utc(until),
            text::clean(rhost)
        );
        let w = who(user, rhost);
        decision(
            &w,
            "-",
            "reported",
            "portal: this wasn't me; account locked",
        );
        let _ = self.step(key, WebSessionStep::End).await;
        changed(format!(
            "Thank you. Your account is locked until {} and your administrator has been \
             alerted: nobody can log in as you, you included, until they have looked into it. \
             Change your password, and ask them to unlock the account.",
            text::utc(until)
        ))
    }

    /// Whether `user` is in `[web] admin_group` now (asked of the directory each time).
    async fn is_admin(&self, user: &str) -> Result<bool, WebReply> {
        let Some(group) = self.core.config.web.admin_group.as_deref() else {
            return Ok(false);
        };
        let account = match self.core.web_account(user).await {
            Ok(Some(account)) => account,
            Ok(None) => return Ok(false),
            Err(_) => return Err(UNAVAILABLE),
        };
        match self.core.web_groups(&account).await {
            Ok(groups) => Ok(groups.iter().any(|g| g == group)),
            Err(_) => Err(UNAVAILABLE),
        }
    }

    pub(crate) async fn admin(
        &self,
        token: &str,
        csrf: &str,
        target: &str,
        action: AdminAction,
        rhost: &str,
    ) -> WebReply {
        let now = self.core.clock.now();
        let Session { key, record } = match self.posted(token, csrf, now).await {
            Ok(session) => session,
            Err(reply) => return reply,
        };
        let by = record.user.as_str();
        let uid = match self.core.web_account(by).await {
            Ok(Some(account)) => account.uid,
            Ok(None) => return WebReply::NotAdmin,
            Err(_) => return UNAVAILABLE,
        };
        let logged = |target: &str, result: &str| {
            crate::logging::admin_action(
                by,
                uid,
                &format!("web-{}", action.as_str()),
                target,
                &format!("{result} (portal, from {rhost})"),
            );
        };
        match self.is_admin(by).await {
            Ok(true) => {}
            Ok(false) => {
                logged(target, "refused: not in the admin group");
                return WebReply::NotAdmin;
            }
            Err(reply) => return reply,
        }
        // Looking is allowed while signed in; changing needs a recent code.
        if let Some(ask) = self
            .ask_for_code(&record, now, action != AdminAction::Status)
            .await
        {
            return ask;
        }
        if let Err(reply) = self.still_open(key, by, now).await {
            return reply;
        }
        if mfa_proto::check_user_name(target).is_err() {
            logged(target, "refused: bad user name");
            return changed(format!("\"{}\" is not a user name.", text::clean(target)));
        }
        // State is keyed by the name the directory gives (as `mfa admin` does).
        let account = match self.core.web_account(target).await {
            Ok(account) => account,
            Err(_) => return UNAVAILABLE,
        };
        let exists = account.is_some();
        let user = account.map_or_else(|| target.to_string(), |a| a.name);
        let u = user.clone();
        match action {
            AdminAction::Status => {
                let read = self
                    .core
                    .db(move |s| {
                        Ok((
                            s.devices(&u)?,
                            s.unused_bypass_codes(&u)?.len(),
                            s.lock_state(&u)?,
                        ))
                    })
                    .await;
                let Ok((devices, codes, lock)) = read else {
                    return UNAVAILABLE;
                };
                let devices: Vec<String> = devices.iter().map(crate::devices::describe).collect();
                logged(&user, "shown");
                WebReply::AdminStatus {
                    report: text::status_report(&user, exists, &devices, codes, &lock, now),
                    user,
                }
            }
            AdminAction::Unlock => match self.core.db(move |s| s.unlock(&u)).await {
                Ok(true) => {
                    logged(&user, "unlocked; failures cleared");
                    changed(format!(
                        "{user} is unlocked and its failure count is cleared."
                    ))
                }
                Ok(false) => {
                    logged(&user, "was not locked");
                    changed(format!("{user} was not locked and had no failures."))
                }
                Err(_) => UNAVAILABLE,
            },
            AdminAction::Reset => match self.core.db(move |s| s.reset_user(&u)).await {
                Ok(()) => {
                    logged(&user, "all devices and codes removed");
                    changed(format!(
                        "{user} has no devices, bypass codes or failures any more. They can \
                         enrol again."
                    ))
                }
                Err(_) => UNAVAILABLE,
            },
            AdminAction::BypassCodes => {
                if !exists {
                    logged(&user, "refused: no such user");
                    return changed(format!("There is no user {user}."));
                }
                let (shown, stored) = bypass::generate(self.core.random.as_ref());
                if self
                    .core
                    .db(move |s| s.replace_bypass_codes(&u, &stored, now))
                    .await
                    .is_err()
                {
                    return UNAVAILABLE;
                }
                logged(&user, "new codes issued");
                WebReply::PortalChanged {
                    note: format!(
                        "New bypass codes for {user} (each works once; their earlier codes no \
                         longer work). Hand them over safely."
                    ),
                    codes: ShownCodes(shown.iter().map(|c| c.as_str().to_owned()).collect()),
                }
            }
        }
    }

    pub(crate) async fn sign_out(&self, token: &str, csrf: &str) -> WebReply {
        let now = self.core.clock.now();
        let Session { key, .. } = match self.posted(token, csrf, now).await {
            Ok(session) => session,
            Err(reply) => return reply,
        };
        match self.step(key, WebSessionStep::End).await {
            Ok(_) => GONE,
            Err(reply) => reply,
        }
    }
}

fn changed(note: String) -> WebReply {
    WebReply::PortalChanged {
        note,
        codes: ShownCodes::default(),
    }
}

/// What a portal session is in the middle of adding, sealed in the session (so any node
/// serves the next step) until it is added or dropped.
#[derive(Serialize, Deserialize)]
#[serde(tag = "adding", rename_all = "snake_case")]
enum Adding {
    /// An authenticator app: its secret (base32), waiting for a code from it.
    App { secret: String },
    /// A phone: the code texted to it (salt and hash, hex), waiting for it to come back.
    Phone {
        name: String,
        number: String,
        salt: String,
        hash: String,
    },
    /// A push device: its private ntfy topic, and where its test notification stands.
    Push {
        name: String,
        topic: String,
        test: PushTest,
    },
    /// A WebAuthn security key: the registration's challenge, waiting for the browser.
    Key {
        name: String,
        state: webauthn_rs::prelude::SecurityKeyRegistration,
    },
    /// "Use my security key": the assertion's challenge, waiting for the browser (not an
    /// addition, but held in the same place, and used once).
    KeyCheck {
        state: webauthn_rs::prelude::SecurityKeyAuthentication,
    },
}

impl Drop for Adding {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        match self {
            Adding::App { secret } => secret.zeroize(),
            Adding::Phone { salt, hash, .. } => {
                salt.zeroize();
                hash.zeroize();
            }
            Adding::Push { topic, .. } => topic.zeroize(),
            // Challenges and public keys: nothing secret.
            Adding::Key { .. } | Adding::KeyCheck { .. } => {}
        }
    }
}

/// The new push device's test notification.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum PushTest {
    /// Not sent yet (the user subscribes first).
    NotSent,
    /// Sent; the answer is awaited until `until`.
    Sent { until: i64 },
    /// Approved: the device was added.
    Approved,
    /// Denied, reported or unanswered: nothing was added (it may be sent again).
    NotApproved,
}

impl Adding {
    fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// The name of a new device: the one typed, else `fallback`; the sentence to show when it
/// cannot be one.
fn new_device_name(typed: &str, fallback: &str) -> Option<String> {
    let typed = typed.trim();
    let name = if typed.is_empty() { fallback } else { typed };
    (name.chars().count() <= 64 && !name.chars().any(char::is_control)).then(|| name.to_string())
}

fn bad_device_name() -> WebReply {
    changed(
        "A device name has 1 to 64 characters, none of them control characters. Nothing was \
         added."
            .to_string(),
    )
}

impl PortalDesk {
    /// Holds `adding` in the session (or nothing); `GONE` when the session is gone.
    async fn hold(
        &self,
        key: [u8; 32],
        user: &str,
        adding: Option<&Adding>,
        now: i64,
    ) -> Result<(), WebReply> {
        let (u, bytes) = (user.to_string(), adding.map(Adding::to_bytes));
        match self
            .core
            .db(move |s| s.web_session_pending(&key, &u, bytes.as_deref().map(|b| &b[..]), now))
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(GONE),
            Err(_) => Err(UNAVAILABLE),
        }
    }

    /// Adds `row` for `user` and drops what the session held, in one transaction; `false`
    /// when the session is gone (nothing added).
    async fn add_held(
        &self,
        key: [u8; 32],
        user: &str,
        row: NewDeviceRow,
        now: i64,
    ) -> crate::daemon::Result<bool> {
        let u = user.to_string();
        self.core
            .db(move |s| {
                s.in_transaction(|s| {
                    if !s.web_session_pending(&key, &u, None, now)? {
                        return Ok(false);
                    }
                    s.add_device(&u, &row, now)?;
                    Ok(true)
                })
            })
            .await
    }

    /// What the session is adding, if anything.
    async fn adding(&self, record: &WebSessionRecord) -> Result<Option<Adding>, WebReply> {
        let r = record.clone();
        match self.core.db(move |s| s.web_session_secret(&r)).await {
            Ok(Some(bytes)) => Ok(serde_json::from_slice(&bytes).ok()),
            Ok(None) => Ok(None),
            Err(_) => Err(UNAVAILABLE),
        }
    }

    /// A phone: checked as `mfa add phone` checks it (SMS configured, the number's form and
    /// country, the limit on unconfirmed numbers and on texts), then a code texted to it.
    async fn begin_phone(
        &self,
        key: [u8; 32],
        w: &Who<'_>,
        name: &str,
        number: &str,
        now: i64,
    ) -> WebReply {
        let Some(name) = new_device_name(name, "Phone") else {
            return bad_device_name();
        };
        let new = mfa_proto::NewDevice::Phone {
            name: Some(name),
            number: number.trim().to_string(),
        };
        let (name, number) = match check_new_device(&self.core, &self.local, new) {
            Ok(CheckedDevice::Phone { name, number }) => (name, number),
            Ok(_) => return GONE,
            Err(why) => return changed(format!("{why} Nothing was added.")),
        };
        let Some(twilio) = &self.local.twilio else {
            return changed("SMS is not configured on this host.".to_string());
        };
        let limits = &self.local.limits;
        let allowed = limits
            .start_phone_addition(w.user, &number)
            .and_then(|()| limits.take(Channel::Sms, w.user));
        if let Err(refusal) = allowed {
            decision(w, "phone", "rate-limited", &refusal.log_reason());
            return changed(format!("{} Nothing was added.", refusal.user_message()));
        }
        let (code, stored) =
            bypass::new_code(self.core.random.as_ref(), self.core.config.sms.digits);
        let adding = Adding::Phone {
            name,
            number: number.clone(),
            salt: HEXLOWER.encode(&stored.salt),
            hash: HEXLOWER.encode(&stored.hash),
        };
        if let Err(reply) = self.hold(key, w.user, Some(&adding), now).await {
            return reply;
        }
        let body = Zeroizing::new(format!(
            "{} is your code to add this phone to {} on {}.",
            code.as_str(),
            w.user,
            self.core.issuer
        ));
        if let Err(e) = twilio.send_sms(&number, &body).await {
            decision(w, "phone", "provider-error", &e.to_string());
            let _ = self.hold(key, w.user, None, now).await;
            return changed(format!(
                "Could not send an SMS to {}: {e}. Nothing was added.",
                mask_phone(&number)
            ));
        }
        decision(
            w,
            "phone",
            "sent",
            "portal; confirmation code for a new phone",
        );
        WebReply::PhoneCodeSent {
            masked: mask_phone(&number),
        }
    }

    /// The code texted to the new phone: adds it (a wrong one counts as on the app's form).
    async fn confirm_phone(
        &self,
        key: [u8; 32],
        record: &WebSessionRecord,
        code: &str,
        w: &Who<'_>,
        now: i64,
    ) -> WebReply {
        let adding = match self.adding(record).await {
            Ok(adding) => adding,
            Err(reply) => return reply,
        };
        let (name, number, stored) = match &adding {
            Some(Adding::Phone {
                name,
                number,
                salt,
                hash,
            }) => {
                let (Ok(salt), Ok(hash)) = (
                    HEXLOWER.decode(salt.as_bytes()),
                    HEXLOWER.decode(hash.as_bytes()),
                ) else {
                    return GONE;
                };
                let (Ok(salt), Ok(hash)) = (salt.try_into(), hash.try_into()) else {
                    return GONE;
                };
                (
                    name.clone(),
                    number.clone(),
                    bypass::StoredCode { salt, hash },
                )
            }
            _ => return changed("Start again: add the phone first.".to_string()),
        };
        if !bypass::matches(&stored, code.trim()) {
            return self.code_missed(key).await;
        }
        self.local.limits.phone_confirmed(w.user, &number);
        let row = NewDeviceRow {
            kind: DeviceKind::Phone,
            name: name.clone(),
            otp: None,
            address: Some(number),
        };
        let added = self.add_held(key, w.user, row, now).await;
        match added {
            Ok(true) => {
                decision(
                    w,
                    "phone",
                    "enrolled",
                    &format!("portal; device {}", text::clean(&name)),
                );
                changed(format!(
                    "Added \"{name}\". Logins can text a code to it or call it."
                ))
            }
            Ok(false) => GONE,
            Err(_) => UNAVAILABLE,
        }
    }

    /// A push device: with ntfy, mfad makes the private topic the phone subscribes to.
    async fn begin_push(&self, key: [u8; 32], user: &str, name: &str, now: i64) -> WebReply {
        let Some(name) = new_device_name(name, "Phone app") else {
            return bad_device_name();
        };
        let new = mfa_proto::NewDevice::Push {
            name: Some(name),
            target: String::new(),
        };
        let name = match check_new_device(&self.core, &self.local, new) {
            Ok(CheckedDevice::Push { name, target: None }) => name,
            Ok(_) => {
                return changed(
                    "This host's push service takes the phone's own address: add it with \
                     `mfa add push` on a login node."
                        .to_string(),
                );
            }
            Err(why) => return changed(format!("{why} Nothing was added.")),
        };
        let topic = new_topic(self.core.random.as_ref());
        let adding = Adding::Push {
            name,
            topic: topic.clone(),
            test: PushTest::NotSent,
        };
        if let Err(reply) = self.hold(key, user, Some(&adding), now).await {
            return reply;
        }
        WebReply::NewPushTopic {
            topic,
            server: self.push_server(),
        }
    }

    fn push_server(&self) -> String {
        self.core
            .config
            .push
            .as_ref()
            .map(|p| p.url.trim_end_matches('/').to_string())
            .unwrap_or_default()
    }

    /// Sends the new push device its test notification; a task waits for the answer and
    /// adds the device once it is approved (the page asks with [`PortalChange::CheckPush`]).
    async fn test_push(
        &self,
        key: [u8; 32],
        record: &WebSessionRecord,
        rhost: &str,
        now: i64,
    ) -> WebReply {
        let user = record.user.as_str();
        let adding = match self.adding(record).await {
            Ok(adding) => adding,
            Err(reply) => return reply,
        };
        let (name, topic) = match &adding {
            Some(Adding::Push { name, topic, test }) if *test != PushTest::Approved => {
                if let PushTest::Sent { until } = test
                    && *until > now
                {
                    return push_waiting();
                }
                (name.clone(), topic.clone())
            }
            _ => return changed("Start again: add the push device first.".to_string()),
        };
        let (Some(approval), Some(notifier)) = (&self.core.config.approval, &self.local.notifier)
        else {
            return changed("Push notifications are not configured on this host.".to_string());
        };
        let w = who(user, rhost);
        if let Err(refusal) = self.local.limits.take(Channel::Push, user) {
            decision(&w, "push", "rate-limited", &refusal.log_reason());
            return changed(refusal.user_message());
        }
        let ttl = std::time::Duration::from_secs(approval.token_ttl);
        let request = ApprovalRequest {
            user: user.to_string(),
            host: self.core.issuer.clone(),
            rhost: rhost.to_string(),
            method: ApprovalMethod::Push,
            created: now,
            adding_device: true,
        };
        let pending = match self.local.approvals.create(request, ttl).await {
            Ok(pending) => pending,
            Err(e) => return changed(format!("{e}. Nothing was added; try again later.")),
        };
        let message = PushMessage {
            user: user.to_string(),
            host: self.core.issuer.clone(),
            rhost: rhost.to_string(),
            time_text: text::utc(now),
            approve_url: approval.approval_url(&pending.token),
            number_required: pending.verify_number.is_some(),
            adding_device: true,
        };
        if let Err(e) = notifier.push(&topic, &message).await {
            self.local.approvals.cancel(&pending).await;
            decision(&w, "push", "provider-error", &e.to_string());
            return changed(format!("Could not send the test notification: {e}."));
        }
        let until = now.saturating_add(i64::try_from(approval.token_ttl).unwrap_or(i64::MAX));
        let sent = Adding::Push {
            name: name.clone(),
            topic: topic.clone(),
            test: PushTest::Sent { until },
        };
        if let Err(reply) = self.hold(key, user, Some(&sent), now).await {
            self.local.approvals.cancel(&pending).await;
            return reply;
        }
        let (core, approvals) = (Arc::clone(&self.core), Arc::clone(&self.local.approvals));
        let (user, rhost) = (user.to_string(), rhost.to_string());
        tokio::spawn(async move {
            let answer = approvals.wait(pending, ttl).await;
            let approved = answer == ApprovalDecision::Approved;
            let test = if approved {
                PushTest::Approved
            } else {
                PushTest::NotApproved
            };
            let done = Adding::Push {
                name: name.clone(),
                topic: topic.clone(),
                test,
            };
            let row = NewDeviceRow {
                kind: DeviceKind::Push,
                name: name.clone(),
                otp: None,
                address: Some(topic.clone()),
            };
            let (u, bytes, now) = (user.clone(), done.to_bytes(), core.clock.now());
            // Added only while the session still waits for this very test.
            let added = core
                .db(move |s| {
                    s.in_transaction(|s| {
                        let Some(record) = s.web_session(&key)? else {
                            return Ok(false);
                        };
                        let waiting = s
                            .web_session_secret(&record)?
                            .and_then(|b| serde_json::from_slice::<Adding>(&b).ok())
                            .is_some_and(|a| {
                                matches!(&a, Adding::Push { topic: t, test: PushTest::Sent { .. }, .. } if *t == *topic)
                            });
                        if !waiting || !s.web_session_pending(&key, &u, Some(&bytes), now)? {
                            return Ok(false);
                        }
                        if approved {
                            s.add_device(&u, &row, now)?;
                        }
                        Ok(true)
                    })
                })
                .await;
            let w = who(&user, &rhost);
            match added {
                Ok(true) if approved => decision(
                    &w,
                    "push",
                    "enrolled",
                    &format!("portal; device {}", text::clean(&name)),
                ),
                Ok(true) => decision(
                    &w,
                    "push",
                    "not enrolled",
                    &format!("portal; test push {}", answer.as_str()),
                ),
                Ok(false) => {}
                Err(e) => warn!(target: "mfad::web", "cannot record a test push's answer: {e}"),
            }
        });
        push_waiting()
    }

    /// Where the new push device's test stands: added, not approved, or still waiting.
    async fn check_push(&self, key: [u8; 32], record: &WebSessionRecord, now: i64) -> WebReply {
        let adding = match self.adding(record).await {
            Ok(adding) => adding,
            Err(reply) => return reply,
        };
        let (name, test) = match &adding {
            Some(Adding::Push { name, test, .. }) => (name.clone(), *test),
            _ => return changed("Start again: add the push device first.".to_string()),
        };
        match test {
            PushTest::Approved => {
                if let Err(reply) = self.hold(key, &record.user, None, now).await {
                    return reply;
                }
                changed(format!(
                    "Added \"{name}\". Logins can push a request to it."
                ))
            }
            PushTest::Sent { until } if until > now => push_waiting(),
            PushTest::NotSent => WebReply::PushWaiting {
                note: "Subscribe to the topic first, then send the test notification.".to_string(),
            },
            PushTest::Sent { .. } | PushTest::NotApproved => WebReply::PushWaiting {
                note: "The test notification was not approved, so nothing was added. Check \
                       the subscription and send it again."
                    .to_string(),
            },
        }
    }

    /// A hardware token from its secret, added once a code it shows now matches.
    async fn add_token(
        &self,
        (kind, name, secret, code): (&str, &str, &str, &str),
        w: &Who<'_>,
        now: i64,
    ) -> WebReply {
        let Some(name) = new_device_name(name, "Hardware token") else {
            return bad_device_name();
        };
        let digits = u32::try_from(code.trim().len()).unwrap_or(0);
        let new = match kind {
            "hotp" => mfa_proto::NewDevice::Hotp {
                name: Some(name),
                secret: Zeroizing::new(secret.to_string()),
                digits,
            },
            "totp" => mfa_proto::NewDevice::TotpToken {
                name: Some(name),
                secret: Zeroizing::new(secret.to_string()),
                digits,
                period: 30,
            },
            _ => return WebReply::BadForm,
        };
        let (kind, name, secret, params) = match check_new_device(&self.core, &self.local, new) {
            Ok(CheckedDevice::Token {
                kind,
                name,
                secret,
                params,
            }) => (kind, name, secret, params),
            Ok(_) => return GONE,
            Err(why) => return changed(format!("{why} Nothing was added.")),
        };
        let window = self.core.config.totp.window;
        let Some(counter) = confirming_counter(kind, &secret, params, code.trim(), now, window)
        else {
            return changed(
                "That code does not match the token's secret. Check the secret and the \
                 token's number of digits; nothing was added."
                    .to_string(),
            );
        };
        let row = NewDeviceRow {
            kind,
            name: name.clone(),
            otp: Some(OtpKey {
                secret,
                params,
                counter,
            }),
            address: None,
        };
        let u = w.user.to_string();
        match self.core.db(move |s| s.add_device(&u, &row, now)).await {
            Ok(_) => {
                decision(
                    w,
                    kind.as_str(),
                    "enrolled",
                    &format!("portal; device {}", text::clean(&name)),
                );
                changed(format!(
                    "Added \"{name}\". Your logins can use its codes from now on."
                ))
            }
            Err(_) => UNAVAILABLE,
        }
    }
}

impl PortalDesk {
    /// The code form to show first, unless the session proved a second factor (within
    /// [`FRESH_SECS`] when it is for a change), with the phone options the user has.
    async fn ask_for_code(
        &self,
        record: &WebSessionRecord,
        now: i64,
        for_change: bool,
    ) -> Option<WebReply> {
        let ok = match record.factor_at {
            None => false,
            Some(at) => !for_change || now.saturating_sub(at) < FRESH_SECS,
        };
        if ok {
            return None;
        }
        let devices = self.devices(&record.user).await.unwrap_or_default();
        let offers = [
            PortalVia::Key,
            PortalVia::Sms,
            PortalVia::Push,
            PortalVia::Call,
        ]
        .into_iter()
        .filter(|via| self.phone_device(&devices, *via).is_some())
        .collect();
        Some(WebReply::PortalNeedsCode {
            user: record.user.clone(),
            csrf: record.csrf.clone(),
            for_change: record.factor_at.is_some(),
            offers,
        })
    }

    /// The device `via` reaches (the default if it fits, else the first that does), when
    /// this host can use it.
    fn phone_device<'d>(&self, devices: &'d [Device], via: PortalVia) -> Option<&'d Device> {
        let (kind, usable) = match via {
            PortalVia::Sms => (DeviceKind::Phone, self.local.can_sms()),
            PortalVia::Call => (DeviceKind::Phone, self.local.can_call()),
            PortalVia::Push => (DeviceKind::Push, self.local.can_push()),
            PortalVia::Key => (DeviceKind::WebKey, self.relying_party().is_some()),
        };
        if !usable {
            return None;
        }
        let fits = |d: &&Device| d.kind == kind && d.address.is_some();
        devices
            .iter()
            .filter(fits)
            .find(|d| d.is_default)
            .or_else(|| devices.iter().find(fits))
    }

    /// The second factor by phone: a code texted (typed on the code form next), or a push
    /// or call whose approval proves the factor for this session (a task waits for it).
    /// Each is limited as at an ssh prompt (`[limits]`, the countries texted or called).
    pub(crate) async fn send(
        &self,
        token: &str,
        csrf: &str,
        via: PortalVia,
        rhost: &str,
    ) -> WebReply {
        let now = self.core.clock.now();
        let Session { key, record } = match self.posted(token, csrf, now).await {
            Ok(session) => session,
            Err(reply) => return reply,
        };
        let user = record.user.as_str();
        if let Err(reply) = self.still_open(key, user, now).await {
            return reply;
        }
        let devices = match self.devices(user).await {
            Ok(devices) => devices,
            Err(reply) => return reply,
        };
        if via == PortalVia::Key {
            return self.begin_key_check(key, user, &devices, now).await;
        }
        let Some(device) = self.phone_device(&devices, via) else {
            return sent(
                via,
                "You have no device for that here. Type a code instead.",
            );
        };
        let target = device.address.clone().unwrap_or_default();
        let w = who(user, rhost);
        let channel = match via {
            PortalVia::Sms => Channel::Sms,
            PortalVia::Push => Channel::Push,
            PortalVia::Call => Channel::Call,
            PortalVia::Key => return GONE,
        };
        let allowed = via == PortalVia::Push
            || self
                .core
                .config
                .twilio
                .as_ref()
                .is_some_and(|t| t.number_allowed(&target));
        if !allowed {
            decision(
                &w,
                via.as_str(),
                "deny",
                "portal; number outside twilio.allowed_country_codes",
            );
            return sent(
                via,
                "This host does not send to that number. Type a code instead.",
            );
        }
        if let Err(refusal) = self.local.limits.take(channel, user) {
            decision(&w, via.as_str(), "rate-limited", &refusal.log_reason());
            return sent(via, &refusal.user_message());
        }
        if via == PortalVia::Sms {
            return self.text_code(&w, &target, now).await;
        }
        self.ask_phone(key, &w, via, device, now).await
    }

    /// A login code texted to `number`, as the ssh menu's SMS option sends it.
    async fn text_code(&self, w: &Who<'_>, number: &str, now: i64) -> WebReply {
        let Some(twilio) = &self.local.twilio else {
            return UNAVAILABLE;
        };
        let (code, stored) =
            bypass::new_code(self.core.random.as_ref(), self.core.config.sms.digits);
        let ttl = self.core.config.sms.code_ttl as i64;
        let u = w.user.to_string();
        if self
            .core
            .db(move |s| s.add_sms_code(&u, &stored, now, now + ttl))
            .await
            .is_err()
        {
            return UNAVAILABLE;
        }
        let body =
            crate::providers::out_of_band::sms_login_text(&code, &self.core.issuer, w.user, ttl);
        match twilio.send_sms(number, &body).await {
            Ok(_) => {
                decision(w, "sms", "sent", "portal; SMS passcode sent");
                sent(
                    PortalVia::Sms,
                    &format!(
                        "A code was texted to {}. Type it below.",
                        mask_phone(number)
                    ),
                )
            }
            Err(e) => {
                decision(w, "sms", "provider-error", &e.to_string());
                sent(
                    PortalVia::Sms,
                    &format!("Could not send the text ({e}). Type a code instead."),
                )
            }
        }
    }

    /// A push or call for this session: a task waits for the answer and, on an approval
    /// while the account is not locked, marks the session's second factor proved.
    async fn ask_phone(
        &self,
        key: [u8; 32],
        w: &Who<'_>,
        via: PortalVia,
        device: &Device,
        now: i64,
    ) -> WebReply {
        let Some(approval) = &self.core.config.approval else {
            return UNAVAILABLE;
        };
        let target = device.address.clone().unwrap_or_default();
        let method = match via {
            PortalVia::Call => ApprovalMethod::Call,
            _ => ApprovalMethod::Push,
        };
        let ttl = std::time::Duration::from_secs(approval.token_ttl);
        let request = ApprovalRequest {
            user: w.user.to_string(),
            host: self.core.issuer.clone(),
            rhost: w.rhost.to_string(),
            method,
            created: now,
            adding_device: false,
        };
        let pending = match self.local.approvals.create(request, ttl).await {
            Ok(pending) => pending,
            Err(e) => return sent(via, &format!("{e}. Type a code instead.")),
        };
        let delivered = match (method, &self.local.notifier, &self.local.twilio) {
            (ApprovalMethod::Push, Some(notifier), _) => {
                let message = PushMessage {
                    user: w.user.to_string(),
                    host: self.core.issuer.clone(),
                    rhost: w.rhost.to_string(),
                    time_text: text::utc(now),
                    approve_url: approval.approval_url(&pending.token),
                    number_required: pending.verify_number.is_some(),
                    adding_device: false,
                };
                notifier.push(&target, &message).await
            }
            (ApprovalMethod::Call, _, Some(twilio)) => twilio
                .place_call(&target, &approval.voice_url(&pending.token))
                .await
                .map(drop),
            _ => {
                self.local.approvals.cancel(&pending).await;
                return UNAVAILABLE;
            }
        };
        if let Err(e) = delivered {
            self.local.approvals.cancel(&pending).await;
            decision(w, via.as_str(), "provider-error", &e.to_string());
            return sent(
                via,
                &format!("Could not reach your phone ({e}). Type a code instead."),
            );
        }
        let mut note = match via {
            PortalVia::Call => format!(
                "Calling {}: answer it and press 1 to approve, then press Continue.",
                mask_phone(&target)
            ),
            _ => format!(
                "A login request was pushed to \"{}\": approve it there, then press Continue.",
                device.name
            ),
        };
        if let Some(n) = pending.verify_number {
            note.push_str(&format!(" On the approval page, enter the number {n}."));
        }
        let (core, approvals) = (Arc::clone(&self.core), Arc::clone(&self.local.approvals));
        let (user, rhost) = (w.user.to_string(), w.rhost.to_string());
        tokio::spawn(async move {
            let answer = approvals.wait(pending, ttl).await;
            let w = who(&user, &rhost);
            if answer != ApprovalDecision::Approved {
                decision(
                    &w,
                    via.as_str(),
                    "deny",
                    &format!("portal; {}", answer.as_str()),
                );
                return;
            }
            let (u, now) = (user.clone(), core.clock.now());
            let proved = core
                .db(move |s| {
                    s.in_transaction(|s| {
                        if s.lock_state(&u)?.locked_until.is_some_and(|t| t > now) {
                            return Ok(false);
                        }
                        if s.web_session_step(&key, WebSessionStep::Factor, now)?
                            .is_none()
                        {
                            return Ok(false);
                        }
                        s.clear_failures(&u)?;
                        Ok(true)
                    })
                })
                .await;
            match proved {
                Ok(true) => decision(&w, via.as_str(), "allow", "portal; approved on the phone"),
                Ok(false) => decision(
                    &w,
                    via.as_str(),
                    "deny",
                    "portal; approved, but the session had ended or the account is locked",
                ),
                Err(e) => warn!(target: "mfad::web", "cannot record a portal approval: {e}"),
            }
        });
        sent(via, &note)
    }
}

fn sent(via: PortalVia, note: &str) -> WebReply {
    WebReply::PortalSent {
        via,
        note: note.to_string(),
    }
}

fn push_waiting() -> WebReply {
    WebReply::PushWaiting {
        note: "A test notification is on its way to your phone. Approve it there, then press \
               Continue."
            .to_string(),
    }
}
