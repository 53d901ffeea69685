//! The enrolment page's requests (mfa-web, `unenrolled = "link"`): open a link, check the
//! user's password, make a new authenticator app's secret, confirm a code from it. The link
//! (only its hash is stored) names the user; mfa-web never does. The page's progress (the
//! passwords tried, the password accepted, the new app's secret sealed, the codes tried)
//! lives in the store with the link, so that in a cluster any node serves the next step,
//! and each limit is one conditional write that two nodes cannot both get past. A code from
//! the new app enrols it and spends the link in one transaction.

use crate::core::Core;
use crate::daemon::{Who, decision};
use crate::enrol_link;
use crate::factor::totp;
use crate::password::{PasswordCheck, PasswordVerdict};
use crate::store::{EnrolLink, EnrolLinkStep, FailureEffect, StoreError};
use mfa_proto::web::{NewApp, Password};
use mfa_proto::{Closed, WebReply};
use std::sync::Arc;
use tracing::warn;

/// Passwords tried on one link before it refuses more (the lockout counts them too).
pub const MAX_PASSWORD_TRIES: u32 = 5;
/// Codes tried against one new app before the page must make another.
pub const MAX_CODE_TRIES: u32 = 5;
/// The device name an app enrolled through a link gets.
pub const DEVICE_NAME: &str = "Authenticator app";

/// A page left this long between steps must be given the password again.
pub const IDLE_SECS: i64 = 300;

/// Answers the enrolment page's requests.
pub(crate) struct EnrolmentDesk {
    pub(crate) core: Arc<Core>,
    pub(crate) passwords: Arc<dyn PasswordCheck>,
}

/// The log context of a request from mfa-web's pages (the browser's address as `rhost`).
pub(crate) fn who<'a>(user: &'a str, rhost: &'a str) -> Who<'a> {
    Who {
        user,
        rhost,
        service: "mfa-web",
        can_prompt: false,
        vouched: "-",
    }
}

pub(crate) const UNAVAILABLE: WebReply = WebReply::Closed {
    why: Closed::Unavailable,
};
pub(crate) const GONE: WebReply = WebReply::Closed {
    why: Closed::Unknown,
};

/// A live link: its user, its key and the page's progress.
struct Live {
    user: String,
    key: [u8; 32],
    link: EnrolLink,
}

impl EnrolmentDesk {
    /// The live link `token`; None when the token is not one, or is spent, expired or
    /// unknown. A page idle past [`IDLE_SECS`] has its password and pending app forgotten
    /// (the count of passwords tried is kept).
    async fn live(&self, token: &str) -> Result<Option<Live>, WebReply> {
        if !mfa_proto::web::looks_like_token(token) {
            return Ok(None);
        }
        let key = enrol_link::key_of(token);
        let now = self.core.clock.now();
        let read = self
            .core
            .db(move |s| {
                let Some(mut link) = s.enrol_link(&key, now)? else {
                    return Ok(None);
                };
                let idle = link.last_step != 0 && now.saturating_sub(link.last_step) > IDLE_SECS;
                if idle && (link.password_ok || link.secret.is_some()) {
                    s.enrol_link_step(&key, EnrolLinkStep::Idle, now)?;
                    link.password_ok = false;
                    link.secret = None;
                    link.code_tries = 0;
                }
                Ok::<_, StoreError>(Some(link))
            })
            .await;
        match read {
            Ok(Some(link)) => Ok(Some(Live {
                user: link.user.clone(),
                key,
                link,
            })),
            Ok(None) => Ok(None),
            Err(e) => {
                warn!(target: "mfad::web", "cannot read enrolment links: {e}");
                Err(UNAVAILABLE)
            }
        }
    }

    /// Records a step on the link; None when the link is no longer live or a limit
    /// refused the step.
    async fn step(
        &self,
        key: [u8; 32],
        step: EnrolLinkStep<'static>,
    ) -> Result<Option<u32>, WebReply> {
        let now = self.core.clock.now();
        self.core
            .db(move |s| s.enrol_link_step(&key, step, now))
            .await
            .map_err(|e| {
                warn!(target: "mfad::web", "cannot record an enrolment page's step: {e}");
                UNAVAILABLE
            })
    }

    pub(crate) async fn open(&self, token: &str) -> WebReply {
        match self.live(token).await {
            Ok(Some(live)) => WebReply::Enrolment { user: live.user },
            Ok(None) => GONE,
            Err(reply) => reply,
        }
    }

    pub(crate) async fn password(&self, token: &str, password: Password, rhost: &str) -> WebReply {
        let Live { user, key, .. } = match self.live(token).await {
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
                &who(&user, rhost),
                "password",
                "deny",
                "enrolment page; account locked",
            );
            return WebReply::PasswordRefused { locked: true };
        }
        match self
            .step(
                key,
                EnrolLinkStep::Password {
                    max: MAX_PASSWORD_TRIES,
                },
            )
            .await
        {
            Ok(Some(_)) => {}
            Ok(None) => {
                decision(
                    &who(&user, rhost),
                    "password",
                    "deny",
                    "enrolment page; too many passwords",
                );
                return WebReply::PasswordRefused { locked: false };
            }
            Err(reply) => return reply,
        }
        match crate::password::check_off_thread(&self.passwords, &user, password, rhost).await {
            PasswordVerdict::Right => match self.step(key, EnrolLinkStep::PasswordOk).await {
                Ok(Some(_)) => {
                    decision(&who(&user, rhost), "password", "accepted", "enrolment page");
                    WebReply::PasswordAccepted
                }
                Ok(None) => GONE,
                Err(reply) => reply,
            },
            PasswordVerdict::Wrong => {
                decision(
                    &who(&user, rhost),
                    "password",
                    "deny",
                    "enrolment page; wrong password",
                );
                match self.core.record_failure(&user, now).await {
                    Ok(FailureEffect::Locked { .. }) => {
                        decision(
                            &who(&user, rhost),
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
        let Live { user, key, link } = match self.live(token).await {
            Ok(Some(live)) => live,
            Ok(None) => return GONE,
            Err(reply) => return reply,
        };
        if !link.password_ok {
            return WebReply::OutOfOrder;
        }
        let params = self.core.totp_params();
        let secret = totp::new_secret(self.core.random.as_ref());
        let now = self.core.clock.now();
        let (u, held) = (user.clone(), secret.clone());
        match self
            .core
            .db(move |s| s.enrol_link_pending(&key, &u, &held, now))
            .await
        {
            Ok(true) => {}
            Ok(false) => return GONE,
            Err(e) => {
                warn!(target: "mfad::web", "cannot hold a new app for an enrolment link: {e}");
                return UNAVAILABLE;
            }
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

    pub(crate) async fn confirm(&self, token: &str, code: &str, rhost: &str) -> WebReply {
        let Live { user, key, link } = match self.live(token).await {
            Ok(Some(live)) => live,
            Ok(None) => return GONE,
            Err(reply) => return reply,
        };
        let Some(secret) = link.secret.filter(|_| link.password_ok) else {
            return WebReply::OutOfOrder;
        };
        let params = self.core.totp_params();
        let now = self.core.clock.now();
        let Some(step) = totp::matching_step(
            &secret,
            params,
            code.trim(),
            now,
            self.core.config.totp.window,
        ) else {
            return match self
                .step(
                    key,
                    EnrolLinkStep::CodeMiss {
                        max: MAX_CODE_TRIES,
                    },
                )
                .await
            {
                Ok(Some(tries)) => WebReply::WrongCode {
                    tries_left: MAX_CODE_TRIES.saturating_sub(tries),
                },
                Ok(None) => GONE,
                Err(reply) => reply,
            };
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
        match written {
            Ok(Spent::Enrolled) => {
                decision(
                    &who(&user, rhost),
                    "totp",
                    "enrolled",
                    &format!("device {DEVICE_NAME}; through an enrolment link"),
                );
                WebReply::Enrolled { user }
            }
            Ok(Spent::Locked) => {
                decision(
                    &who(&user, rhost),
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
