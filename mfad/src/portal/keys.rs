//! The portal's WebAuthn security keys (see [`crate::webkey`]): adding one (a fresh second
//! factor first, as every change), and touching one as the second factor of a sign-in or
//! before a change. The challenge waits in the session (sealed, in the store) and is
//! dropped when the answer comes, right or wrong.

use super::{Adding, GONE, PortalDesk, Session, UNAVAILABLE, changed, new_device_name};
use crate::daemon::{Who, decision};
use crate::enrol_web::who;
use crate::store::{
    Device, DeviceKind, FailureEffect, NewDeviceRow, WebSessionRecord, WebSessionStep,
};
use crate::text;
use crate::webkey::{self, KeyError};
use mfa_proto::WebReply;
use mfa_proto::web::SignInRefusal;
use tracing::warn;
use webauthn_rs::prelude::Webauthn;

/// What a checked assertion proves once the store has had its say.
enum Proof {
    /// The session's second factor.
    Proved,
    /// The account was locked meanwhile.
    Locked,
    /// The signature count is not above the last one seen: a copy of the key.
    Copied,
    /// The session ended meanwhile.
    Gone,
}

/// The sentence for a site where keys cannot be used.
const NO_KEYS: &str = "Security keys cannot be used on this site: its address ([web] \
                       public_url) is not a host name. Use a code instead.";

impl PortalDesk {
    /// The relying party, when `[web] public_url` makes one.
    pub(super) fn relying_party(&self) -> Option<Webauthn> {
        webkey::relying_party(self.core.config.web.public_base(), &self.core.issuer)
    }

    /// "Add a security key": the registration challenge, held in the session.
    pub(super) async fn begin_key(
        &self,
        key: [u8; 32],
        w: &Who<'_>,
        name: &str,
        devices: &[Device],
        now: i64,
    ) -> WebReply {
        let Some(rp) = self.relying_party() else {
            return changed(NO_KEYS.to_string());
        };
        let Some(name) = new_device_name(name, "Security key") else {
            return super::bad_device_name();
        };
        if devices.iter().any(|d| d.name == name) {
            return changed(format!(
                "You already have a device called \"{name}\": choose another name. Nothing was \
                 added."
            ));
        }
        let (options, state) = match webkey::begin_registration(&rp, w.user, devices) {
            Ok(begun) => begun,
            Err(e) => {
                warn!(target: "mfad::web", "cannot start a security-key registration: {e}");
                return UNAVAILABLE;
            }
        };
        let held = Adding::Key { name, state };
        if let Err(reply) = self.hold(key, w.user, Some(&held), now).await {
            return reply;
        }
        WebReply::KeyCeremony {
            options,
            adding: true,
        }
    }

    /// The browser's answer to the registration: the key is added if it checks out; the
    /// challenge is dropped either way.
    pub(super) async fn finish_key(
        &self,
        key: [u8; 32],
        record: &WebSessionRecord,
        response: &str,
        w: &Who<'_>,
        devices: &[Device],
        now: i64,
    ) -> WebReply {
        let Some(rp) = self.relying_party() else {
            return changed(NO_KEYS.to_string());
        };
        let adding = match self.adding(record).await {
            Ok(adding) => adding,
            Err(reply) => return reply,
        };
        let Some(Adding::Key { name, state }) = &adding else {
            return changed("Start again: add the security key first.".to_string());
        };
        let credential = match webkey::finish_registration(&rp, state, response, devices) {
            Ok(credential) => credential,
            Err(e) => {
                let _ = self.hold(key, w.user, None, now).await;
                decision(w, "webauthn", "refused", &format!("portal; new key: {e}"));
                return changed(format!("The key was not added: {e}. Nothing was changed."));
            }
        };
        let row = NewDeviceRow {
            kind: DeviceKind::WebKey,
            name: name.clone(),
            otp: None,
            address: Some(credential),
        };
        match self.add_held(key, w.user, row, now).await {
            Ok(true) => {
                let what = format!("portal; device {}", text::clean(name));
                decision(w, "webauthn", "enrolled", &what);
                changed(format!(
                    "Added \"{name}\". Touch it to sign in to these pages; ssh logins keep \
                     asking for your other devices."
                ))
            }
            Ok(false) => GONE,
            Err(_) => UNAVAILABLE,
        }
    }

    /// "Use my security key" for the session's second factor: the challenge over the
    /// user's keys, held in the session.
    pub(super) async fn begin_key_check(
        &self,
        key: [u8; 32],
        user: &str,
        devices: &[Device],
        now: i64,
    ) -> WebReply {
        let Some(rp) = self.relying_party() else {
            return changed(NO_KEYS.to_string());
        };
        let (options, state) = match webkey::begin_assertion(&rp, devices) {
            Ok(Some(begun)) => begun,
            Ok(None) => {
                return super::sent(
                    mfa_proto::web::PortalVia::Key,
                    "You have no security key for these pages. Type a code instead.",
                );
            }
            Err(e) => {
                warn!(target: "mfad::web", "cannot start a security-key check: {e}");
                return UNAVAILABLE;
            }
        };
        if let Err(reply) = self
            .hold(key, user, Some(&Adding::KeyCheck { state }), now)
            .await
        {
            return reply;
        }
        WebReply::KeyCeremony {
            options,
            adding: false,
        }
    }

    /// The browser's answer to "Use my security key": the session's second factor when it
    /// checks out; a failure otherwise, counted as a wrong code is (toward the lockout
    /// shared with ssh, and the session's own tries).
    pub(crate) async fn key_answer(
        &self,
        token: &str,
        csrf: &str,
        response: &str,
        rhost: &str,
    ) -> WebReply {
        let now = self.core.clock.now();
        let Session { key, record } = match self.posted(token, csrf, now).await {
            Ok(session) => session,
            Err(reply) => return reply,
        };
        let user = record.user.clone();
        let w = who(&user, rhost);
        if let Err(reply) = self.still_open(key, &user, now).await {
            return reply;
        }
        let Some(rp) = self.relying_party() else {
            return changed(NO_KEYS.to_string());
        };
        let adding = match self.adding(&record).await {
            Ok(adding) => adding,
            Err(reply) => return reply,
        };
        let Some(Adding::KeyCheck { state }) = &adding else {
            return GONE;
        };
        // The challenge is used once, whatever the answer.
        if let Err(reply) = self.hold(key, &user, None, now).await {
            return reply;
        }
        let devices = match self.devices(&user).await {
            Ok(devices) => devices,
            Err(reply) => return reply,
        };
        let asserted = match webkey::finish_assertion(&rp, state, response, &devices) {
            Ok(asserted) => asserted,
            Err(e) => return self.key_failed(key, &w, &e, now).await,
        };
        let name = devices
            .iter()
            .find(|d| d.id == asserted.device)
            .map(|d| d.name.clone())
            .unwrap_or_default();
        // In one write transaction, as a code is spent: the lock read again, the counter
        // (a key that counts its signatures must show a higher count each time: the same
        // or a lower one means another copy of the key signed in between; a key that keeps
        // no counter always shows 0 and is not checked), the session's factor, the
        // failures cleared.
        let (u, device, counter) = (user.clone(), asserted.device, u64::from(asserted.counter));
        let proved = self
            .core
            .db(move |s| {
                s.in_transaction(|s| {
                    if s.lock_state(&u)?.locked_until.is_some_and(|t| t > now) {
                        return Ok(Proof::Locked);
                    }
                    if counter > 0 && !s.spend_hotp_counter(device, counter)? {
                        return Ok(Proof::Copied);
                    }
                    if s.web_session_step(&key, WebSessionStep::Factor, now)?
                        .is_none()
                    {
                        return Ok(Proof::Gone);
                    }
                    s.clear_failures(&u)?;
                    Ok(Proof::Proved)
                })
            })
            .await;
        match proved {
            Ok(Proof::Proved) => {
                let what = format!("portal; device {}", text::clean(&name));
                decision(&w, "webauthn", "allow", &what);
                self.view(token).await
            }
            Ok(Proof::Copied) => {
                self.key_failed(key, &w, &KeyError::CounterBackwards, now)
                    .await
            }
            Ok(Proof::Locked) => {
                decision(&w, "webauthn", "deny", "portal; account locked");
                let _ = self.step(key, WebSessionStep::End).await;
                WebReply::SignInRefused {
                    why: SignInRefusal::Locked,
                }
            }
            Ok(Proof::Gone) => GONE,
            Err(_) => UNAVAILABLE,
        }
    }

    /// A security key's answer that did not check out: logged, counted as a wrong code.
    async fn key_failed(&self, key: [u8; 32], w: &Who<'_>, e: &KeyError, now: i64) -> WebReply {
        decision(w, "webauthn", "deny", &format!("portal; {e}"));
        if matches!(e, KeyError::CounterBackwards) {
            warn!(
                target: "mfad::web",
                "ALERT user={} the signature counter of a security key went backwards: \
                 the key may have been copied",
                text::clean(w.user)
            );
        }
        match self.core.record_failure(w.user, now).await {
            Ok(FailureEffect::Locked { .. }) => {
                decision(w, "webauthn", "locked", "portal; account locked");
                let _ = self.step(key, WebSessionStep::End).await;
                WebReply::SignInRefused {
                    why: SignInRefusal::Locked,
                }
            }
            Ok(_) => self.code_missed(key).await,
            Err(_) => UNAVAILABLE,
        }
    }
}
