//! The enrolment page's requests (mfa-web, `unenrolled = "link"`): open a link, check the
//! user's password, make a new authenticator app's secret, confirm a code from it. The link
//! (only its hash is stored) names the user; mfa-web never does. The secret waits here, in
//! memory, bound to the link, until a code from it enrols it and spends the link in one
//! transaction.

use crate::core::Core;
use crate::daemon::{Who, decision};
use crate::enrol_link;
use crate::factor::totp;
use crate::password::{PasswordCheck, PasswordVerdict};
use crate::store::{FailureEffect, StoreError};
use mfa_proto::web::{NewApp, Password};
use mfa_proto::{Closed, WebReply};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tracing::warn;
use zeroize::Zeroizing;

/// Passwords tried on one link before it refuses more (the lockout counts them too).
pub const MAX_PASSWORD_TRIES: u32 = 5;
/// Codes tried against one new app before the page must make another.
pub const MAX_CODE_TRIES: u32 = 5;
/// PAM must answer within this.
const PASSWORD_TIMEOUT: Duration = Duration::from_secs(15);
/// The device name an app enrolled through a link gets.
pub const DEVICE_NAME: &str = "Authenticator app";

/// A page left this long between steps must be given the password again.
pub const IDLE_SECS: i64 = 300;

/// A link's progress on the page.
#[derive(Default)]
struct Progress {
    password_tries: u32,
    password_ok: bool,
    secret: Option<Zeroizing<Vec<u8>>>,
    code_tries: u32,
    /// When the page last did a step.
    last: i64,
}

impl Progress {
    /// A step at `now`: after [`IDLE_SECS`] without one, the password and the pending app
    /// are forgotten (the count of passwords tried is kept).
    fn touch(&mut self, now: i64) {
        if self.last != 0 && now.saturating_sub(self.last) > IDLE_SECS {
            self.password_ok = false;
            self.secret = None;
            self.code_tries = 0;
        }
        self.last = now;
    }
}

/// Progress of the links being used, by the SHA-256 of their token; kept across reloads.
#[derive(Default)]
pub struct PendingEnrolments {
    map: Mutex<HashMap<[u8; 32], Progress>>,
}

impl PendingEnrolments {
    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], Progress>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Answers the enrolment page's requests.
pub(crate) struct EnrolmentDesk {
    pub(crate) core: Arc<Core>,
    pub(crate) pending: Arc<PendingEnrolments>,
    pub(crate) passwords: Arc<dyn PasswordCheck>,
}

fn who(user: &str) -> Who<'_> {
    Who {
        user,
        rhost: "-",
        service: "mfa-web",
        can_prompt: false,
        vouched: "-",
    }
}

const UNAVAILABLE: WebReply = WebReply::Closed {
    why: Closed::Unavailable,
};
const GONE: WebReply = WebReply::Closed {
    why: Closed::Unknown,
};

impl EnrolmentDesk {
    /// The user of the live link `token`, with the link's key; None when the token is not
    /// one, or is spent, expired or unknown.
    async fn live(&self, token: &str) -> Result<Option<(String, [u8; 32])>, WebReply> {
        if !mfa_proto::web::looks_like_token(token) {
            return Ok(None);
        }
        let key = enrol_link::key_of(token);
        let now = self.core.clock.now();
        match self.core.db(move |s| s.enrol_link_user(&key, now)).await {
            Ok(Some(user)) => Ok(Some((user, key))),
            Ok(None) => {
                self.pending.lock().remove(&key);
                Ok(None)
            }
            Err(e) => {
                warn!(target: "mfad::web", "cannot read enrolment links: {e}");
                Err(UNAVAILABLE)
            }
        }
    }

    pub(crate) async fn open(&self, token: &str) -> WebReply {
        match self.live(token).await {
            Ok(Some((user, _))) => WebReply::Enrolment { user },
            Ok(None) => GONE,
            Err(reply) => reply,
        }
    }

    pub(crate) async fn password(&self, token: &str, password: Password) -> WebReply {
        let (user, key) = match self.live(token).await {
            Ok(Some(live)) => live,
            Ok(None) => return GONE,
            Err(reply) => return reply,
        };
        let now = self.core.clock.now();
        let u = user.clone();
        let lock = match self.core.db(move |s| s.lock_state(&u)).await {
            Ok(lock) => lock,
            Err(_) => return UNAVAILABLE,
        };
        if lock.locked_until.is_some_and(|until| until > now) {
            decision(
                &who(&user),
                "password",
                "deny",
                "enrolment page; account locked",
            );
            return WebReply::PasswordRefused { locked: true };
        }
        {
            let mut map = self.pending.lock();
            // Links left unused never come back to be removed: drop those idle past the
            // longest a link can live, so the map stays small.
            if map.len() > 1024 {
                map.retain(|_, p| now.saturating_sub(p.last) <= 86_400);
            }
            let progress = map.entry(key).or_default();
            progress.touch(now);
            if progress.password_tries >= MAX_PASSWORD_TRIES {
                decision(
                    &who(&user),
                    "password",
                    "deny",
                    "enrolment page; too many passwords",
                );
                return WebReply::PasswordRefused { locked: false };
            }
            progress.password_tries += 1;
        }
        let checker = Arc::clone(&self.passwords);
        let u = user.clone();
        let check = tokio::task::spawn_blocking(move || checker.check(&u, password.expose()));
        let verdict = match tokio::time::timeout(PASSWORD_TIMEOUT, check).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(e)) => PasswordVerdict::Unavailable(e.to_string()),
            Err(_) => PasswordVerdict::Unavailable("PAM did not answer in time".into()),
        };
        match verdict {
            PasswordVerdict::Right => {
                if let Some(p) = self.pending.lock().get_mut(&key) {
                    p.password_ok = true;
                }
                decision(&who(&user), "password", "accepted", "enrolment page");
                WebReply::PasswordAccepted
            }
            PasswordVerdict::Wrong => {
                decision(
                    &who(&user),
                    "password",
                    "deny",
                    "enrolment page; wrong password",
                );
                match self.core.record_failure(&user, now).await {
                    Ok(FailureEffect::Locked { .. }) => {
                        decision(
                            &who(&user),
                            "password",
                            "locked",
                            "failed passwords on the enrolment page; account now locked",
                        );
                        WebReply::PasswordRefused { locked: true }
                    }
                    Ok(_) => WebReply::PasswordRefused { locked: false },
                    Err(_) => UNAVAILABLE,
                }
            }
            PasswordVerdict::Unavailable(why) => {
                warn!(target: "mfad::web", "cannot check a password through PAM: {why}");
                UNAVAILABLE
            }
        }
    }

    pub(crate) async fn begin(&self, token: &str) -> WebReply {
        let (user, key) = match self.live(token).await {
            Ok(Some(live)) => live,
            Ok(None) => return GONE,
            Err(reply) => return reply,
        };
        let params = self.core.totp_params();
        let secret = totp::new_secret(self.core.random.as_ref());
        let now = self.core.clock.now();
        {
            let mut map = self.pending.lock();
            let Some(p) = map.get_mut(&key) else {
                return WebReply::OutOfOrder;
            };
            p.touch(now);
            if !p.password_ok {
                return WebReply::OutOfOrder;
            }
            p.secret = Some(secret.clone());
            p.code_tries = 0;
        }
        let uri = totp::otpauth_uri(&secret, params, &self.core.issuer, &user);
        let b32 = totp::secret_base32(&secret);
        WebReply::NewApp {
            app: NewApp {
                user,
                uri: uri.as_str().to_owned(),
                secret: b32.as_str().to_owned(),
                digits: params.digits,
                period: params.period,
            },
        }
    }

    pub(crate) async fn confirm(&self, token: &str, code: &str) -> WebReply {
        let (user, key) = match self.live(token).await {
            Ok(Some(live)) => live,
            Ok(None) => return GONE,
            Err(reply) => return reply,
        };
        let params = self.core.totp_params();
        let now = self.core.clock.now();
        let (secret, step) = {
            let mut map = self.pending.lock();
            let Some(p) = map.get_mut(&key) else {
                return WebReply::OutOfOrder;
            };
            p.touch(now);
            let Some(secret) = p.secret.clone().filter(|_| p.password_ok) else {
                return WebReply::OutOfOrder;
            };
            let code = code.trim();
            match totp::matching_step(&secret, params, code, now, self.core.config.totp.window) {
                Some(step) => (secret, step),
                None => {
                    p.code_tries += 1;
                    if p.code_tries >= MAX_CODE_TRIES {
                        p.secret = None;
                    }
                    return WebReply::WrongCode {
                        tries_left: MAX_CODE_TRIES.saturating_sub(p.code_tries),
                    };
                }
            }
        };
        let u = user.clone();
        let written = self
            .core
            .db(move |s| {
                s.in_transaction(|s| {
                    let lock = s.lock_state(&u)?;
                    if lock.locked_until.is_some_and(|until| until > now) {
                        return Ok(Spent::Locked);
                    }
                    if !s.spend_enrol_link(&key, &u, now)? {
                        return Ok(Spent::Gone);
                    }
                    s.add_totp_device(&u, DEVICE_NAME, &secret, params, step, now)?;
                    Ok::<_, StoreError>(Spent::Enrolled)
                })
            })
            .await;
        self.pending.lock().remove(&key);
        match written {
            Ok(Spent::Enrolled) => {
                decision(
                    &who(&user),
                    "totp",
                    "enrolled",
                    &format!("device {DEVICE_NAME}; through an enrolment link"),
                );
                WebReply::Enrolled { user }
            }
            Ok(Spent::Locked) => {
                decision(
                    &who(&user),
                    "totp",
                    "deny",
                    "enrolment page; account locked",
                );
                WebReply::PasswordRefused { locked: true }
            }
            Ok(Spent::Gone) => GONE,
            Err(e) => {
                warn!(target: "mfad::web", "cannot enrol through a link: {e}");
                UNAVAILABLE
            }
        }
    }
}

enum Spent {
    Enrolled,
    Locked,
    Gone,
}
