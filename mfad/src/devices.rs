//! A user's own second-factor settings: enrol an app, add a hardware token, list, pick the
//! default, remove, and make bypass codes. Once anything is enrolled, every change takes a
//! fresh second factor, so a stolen password alone cannot add the thief's phone.

use crate::conn::Conn;
use crate::core::Core;
use crate::daemon::{Result, Who, decision};
use crate::factor::security_key::{SecurityKey, SecurityKeyError};
use crate::factor::{self, bypass, totp};
use crate::oob::approvals::{ApprovalDecision, ApprovalMethod};
use crate::oob::limits::Channel;
use crate::oob::notify::is_ntfy_topic;
use crate::oob::phone::{check_phone, mask_phone};
use crate::providers::local::{LocalFactors, Menu};
use crate::providers::out_of_band::{OobResult, menu_text};
use crate::store::{Device, DeviceKind, NewDeviceRow};
use crate::text::{self, clean};
use mfa_proto::{NewDevice, Outcome};
use std::sync::Arc;
use zeroize::Zeroizing;

/// One line describing a device, as `mfa devices` and `mfa admin status` show it.
pub(crate) fn describe(d: &Device) -> String {
    format!(
        "{} ({}), added {}{}",
        d.name,
        describe_detail(d),
        text::utc(d.created),
        if d.is_default { " [default]" } else { "" }
    )
}

/// What a device is, beyond its name: a code device's digits and period, a phone's masked
/// number, a security key's fingerprint.
pub(crate) fn describe_detail(d: &Device) -> String {
    match (d.kind, &d.otp) {
        (DeviceKind::Totp, Some(k)) => format!(
            "time-based codes, {} digits every {} s",
            k.params.digits, k.params.period
        ),
        (DeviceKind::Hotp, Some(k)) => format!("counter-based token, {} digits", k.params.digits),
        (DeviceKind::Phone, _) => {
            format!("phone {}", mask_phone(d.address.as_deref().unwrap_or("")))
        }
        (DeviceKind::Push, _) => "push notifications".to_string(),
        (DeviceKind::SecurityKey, _) => match d.security_key() {
            Some(k) => format!("security key {}", k.describe()),
            None => "security key, unreadable".to_string(),
        },
        (DeviceKind::WebKey, _) => crate::webkey::describe(d),
        _ => d.kind.as_str().to_string(),
    }
}

/// The log context of a user changing their own settings with the `mfa` command.
fn own(user: &str) -> Who<'_> {
    Who {
        user,
        rhost: "local",
        service: "mfa",
        can_prompt: true,
        vouched: "-",
    }
}

/// A fresh ntfy topic: `mfa-` and 128 random bits in URL-safe base64 (26 characters).
pub(crate) fn new_topic(rng: &dyn crate::random::Random) -> String {
    let mut raw = [0u8; 16];
    rng.fill(&mut raw);
    format!("mfa-{}", data_encoding::BASE64URL_NOPAD.encode(&raw))
}

/// A device name a user typed: 1 to 64 printable characters.
/// A device request, checked: what `add_device` adds once the user proved a fresh factor.
pub(crate) enum CheckedDevice {
    App {
        name: String,
    },
    Token {
        kind: DeviceKind,
        name: String,
        secret: Zeroizing<Vec<u8>>,
        params: totp::TotpParams,
    },
    Phone {
        name: String,
        number: String,
    },
    /// `target: None`: mfad makes an ntfy topic.
    Push {
        name: String,
        target: Option<String>,
    },
    SecurityKey {
        name: String,
        key: SecurityKey,
    },
}

/// Why a device cannot be added; each Display is the sentence the user sees, as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DeviceRequestError {
    #[error("A device name has 1 to 64 characters and no control characters.")]
    BadName,
    #[error(transparent)]
    Token(#[from] factor::TokenError),
    #[error(
        "Phone numbers need SMS, which is not configured on this host ([twilio] in mfad.toml)."
    )]
    NoSms,
    #[error(transparent)]
    Phone(#[from] crate::oob::phone::PhoneError),
    #[error(
        "This host sends texts and calls only to numbers starting with {allowed}; {masked} is \
         not one. Nothing was sent."
    )]
    Country {
        /// The allowed prefixes, comma-separated.
        allowed: String,
        /// The refused number, masked.
        masked: String,
    },
    #[error(
        "Push notifications are not configured on this host ([push] and [approval] in mfad.toml)."
    )]
    NoPush,
    #[error(
        "On this host mfad picks the push topic itself (a topic someone could guess would let \
         them approve your logins): run `mfa add push` without a topic, and subscribe to the \
         topic it shows."
    )]
    ChosenTopic,
    #[error("An ntfy topic has 1 to 64 letters, digits, - and _.")]
    BadTopic,
    #[error("A push target has 1 to 256 printable characters.")]
    BadPushTarget,
    #[error(transparent)]
    SecurityKey(#[from] SecurityKeyError),
}

fn device_name(
    name: Option<String>,
    fallback: &str,
) -> std::result::Result<String, DeviceRequestError> {
    let name = name.unwrap_or_else(|| fallback.to_string());
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(DeviceRequestError::BadName);
    }
    Ok(name)
}

/// A user's own settings: the shared core, and mfad's own factors (a fresh second factor
/// before a change; the phone for adding a phone or a push device).
pub(crate) struct AccountService {
    pub(crate) core: Arc<Core>,
    pub(crate) local: Arc<LocalFactors>,
}

impl AccountService {
    /// The caller's own user name, from its uid; refuses the conversation if it has none.
    async fn caller(&self, conn: &mut Conn, uid: u32) -> Result<Option<String>> {
        let name = self.core.name_of(uid).await?;
        if name.is_none() {
            self.core
                .deny(
                    conn,
                    format!("Your uid {uid} has no user name on this host."),
                )
                .await?;
        }
        Ok(name)
    }

    /// Once anything is enrolled, changing it takes a fresh second factor.
    async fn require_fresh_factor(&self, conn: &mut Conn, who: &Who<'_>) -> Result<bool> {
        if !self.core.is_enrolled(who.user).await? {
            return Ok(true);
        }
        if !self.core.check_not_locked(conn, who).await? {
            return Ok(false);
        }
        conn.info(
            "This changes your two-factor settings, so it needs a current second factor first.",
        )
        .await?;
        let user = who.user.to_string();
        let devices = std::sync::Arc::new(self.core.db(move |s| s.devices(&user)).await?);
        let (options, default) = self.local.menu_options(&devices);
        let (menu, prompt) = menu_text(who.user, &options);
        conn.info(menu).await?;
        let menu = Menu {
            options: &options,
            default,
        };
        if self
            .local
            .prove_second_factor(conn, who, &prompt, menu, &devices, None)
            .await?
        {
            Ok(true)
        } else {
            conn.done(Outcome::Deny).await?;
            Ok(false)
        }
    }

    pub(crate) async fn enroll_totp(
        &self,
        conn: &mut Conn,
        uid: u32,
        name: Option<String>,
    ) -> Result<()> {
        self.add_device(conn, uid, NewDevice::Totp { name }).await
    }

    pub(crate) async fn add_device(&self, conn: &mut Conn, uid: u32, new: NewDevice) -> Result<()> {
        let Some(user) = self.caller(conn, uid).await? else {
            return Ok(());
        };
        let who = own(&user);
        // Check the request before asking for anything, once, into what is added below.
        let checked = match self.check_new_device(new) {
            Ok(c) => c,
            Err(why) => return self.core.deny(conn, why.to_string()).await,
        };
        if !self.require_fresh_factor(conn, &who).await? {
            return Ok(());
        }
        match checked {
            CheckedDevice::App { name } => self.local.enroll_app(conn, &who, name).await,
            CheckedDevice::Token {
                kind,
                name,
                secret,
                params,
            } => {
                self.local
                    .confirm_token(conn, &who, kind, name, secret, params)
                    .await
            }
            CheckedDevice::Phone { name, number } => {
                self.confirm_phone(conn, &who, name, number).await
            }
            CheckedDevice::Push { name, target: None } => {
                self.confirm_new_topic(conn, &who, name).await
            }
            CheckedDevice::Push {
                name,
                target: Some(target),
            } => self.confirm_push(conn, &who, name, target).await,
            CheckedDevice::SecurityKey { name, key } => {
                self.add_security_key(conn, &who, name, key).await
            }
        }
    }

    /// Adds a security key's public key, unless the user has registered it already.
    async fn add_security_key(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        name: String,
        key: SecurityKey,
    ) -> Result<()> {
        let user = who.user.to_string();
        let devices = self.core.db(move |s| s.devices(&user)).await?;
        if let Some(d) = devices
            .iter()
            .find(|d| d.security_key().as_ref() == Some(&key))
        {
            return self
                .core
                .deny(
                    conn,
                    format!(
                        "That key ({}) is registered already, as \"{}\"; nothing was added.",
                        key.fingerprint(),
                        d.name
                    ),
                )
                .await;
        }
        let row = NewDeviceRow {
            kind: DeviceKind::SecurityKey,
            name: name.clone(),
            otp: None,
            address: Some(key.to_openssh()),
        };
        self.core.add_device(who, row).await?;
        let mut msg = format!("Added \"{name}\" (security key {}).", key.describe());
        if !self.core.config.policy.security_key {
            msg.push_str(
                "\nThis host does not count security keys as a second factor yet \
                 ([policy] security_key = false in mfad.toml): logins still ask for a code.",
            );
        }
        conn.info(msg).await?;
        conn.done(Outcome::Allow).await?;
        Ok(())
    }

    /// A device request from a client, checked into what can be added, or the reason it
    /// cannot (said to the user as it is).
    fn check_new_device(
        &self,
        new: NewDevice,
    ) -> std::result::Result<CheckedDevice, DeviceRequestError> {
        check_new_device(&self.core, &self.local, new)
    }

    /// Sends a code to the number and adds it only when the user types that code back.
    async fn confirm_phone(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        name: String,
        number: String,
    ) -> Result<()> {
        let Some(twilio) = &self.local.twilio else {
            return self
                .core
                .deny(conn, "SMS is not configured on this host.")
                .await;
        };
        // Toll fraud adds many numbers; a real user confirms the one they typed.
        if let Err(refusal) = self.local.limits.start_phone_addition(who.user, &number) {
            self.local
                .refuse_limited(conn, who, "phone", &refusal)
                .await?;
            return self.core.deny(conn, "Nothing was added.").await;
        }
        if !self.local.within_limits(conn, who, Channel::Sms).await? {
            return self.core.deny(conn, "Nothing was added.").await;
        }
        let (code, stored) =
            bypass::new_code(self.core.random.as_ref(), self.core.config.sms.digits);
        let body = Zeroizing::new(format!(
            "{} is your code to add this phone to {} on {}.",
            code.as_str(),
            who.user,
            self.core.issuer
        ));
        if let Err(e) = twilio.send_sms(&number, &body).await {
            decision(who, "phone", "provider-error", &e.to_string());
            return self
                .core
                .deny(
                    conn,
                    format!("Could not send an SMS to {}: {e}.", mask_phone(&number)),
                )
                .await;
        }
        drop(code);
        for attempt in 1..=3 {
            let Some(answer) = conn
                .prompt(
                    format!("Enter the code sent to {}: ", mask_phone(&number)),
                    true,
                )
                .await?
            else {
                return self
                    .core
                    .deny(conn, "No code entered; nothing was added.")
                    .await;
            };
            if bypass::matches(&stored, answer.trim()) {
                self.local.limits.phone_confirmed(who.user, &number);
                return self
                    .store_contact_device(conn, who, DeviceKind::Phone, name, number)
                    .await;
            }
            if attempt < 3 {
                conn.error("That code does not match. Try again.").await?;
            }
        }
        decision(
            who,
            "phone",
            "not enrolled",
            "no matching confirmation code",
        );
        self.core
            .deny(conn, "That code does not match; nothing was added.")
            .await
    }

    /// ntfy with a topic mfad makes: 128 random bits, so nobody can guess it and subscribe.
    /// The user subscribes to it, then approves the test push.
    async fn confirm_new_topic(&self, conn: &mut Conn, who: &Who<'_>, name: String) -> Result<()> {
        let server = self
            .core
            .config
            .push
            .as_ref()
            .map(|p| p.url.trim_end_matches('/').to_string())
            .unwrap_or_default();
        let topic = new_topic(self.core.random.as_ref());
        conn.secret_info(Zeroizing::new(format!(
            "Your private push topic is {topic}\n\nIn the ntfy app, subscribe to it on the \
             server {server}\n(or open {server}/{topic}). Keep it to yourself: whoever \
             subscribes to it can answer your login requests."
        )))
        .await?;
        if conn
            .prompt(
                "Press Enter once you have subscribed, to send a test notification: ",
                true,
            )
            .await?
            .is_none()
        {
            return self.core.deny(conn, "Nothing was added.").await;
        }
        self.confirm_push(conn, who, name, topic).await
    }

    /// Sends a test push and adds the target only when it is approved from the phone.
    async fn confirm_push(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        name: String,
        target: String,
    ) -> Result<()> {
        conn.info("Sending a test notification; approve it on your phone to finish.")
            .await?;
        let result = self
            .local
            .approve(conn, who, ApprovalMethod::Push, &target, true)
            .await?;
        match result {
            OobResult::Decided(ApprovalDecision::Approved) => {
                self.store_contact_device(conn, who, DeviceKind::Push, name, target)
                    .await
            }
            OobResult::Decided(d) => {
                decision(
                    who,
                    "push",
                    "not enrolled",
                    &format!("test push {}", d.as_str()),
                );
                self.core
                    .deny(
                        conn,
                        "The test notification was not approved; nothing was added.",
                    )
                    .await
            }
            OobResult::SmsSent | OobResult::Failed => {
                self.core.deny(conn, "Nothing was added.").await
            }
        }
    }

    async fn store_contact_device(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        kind: DeviceKind,
        name: String,
        address: String,
    ) -> Result<()> {
        let row = NewDeviceRow {
            kind,
            name: name.clone(),
            otp: None,
            address: Some(address),
        };
        self.core.add_device(who, row).await?;
        conn.info(format!("Added \"{name}\".")).await?;
        conn.done(Outcome::Allow).await?;
        Ok(())
    }

    pub(crate) async fn list_devices(&self, conn: &mut Conn, uid: u32) -> Result<()> {
        let Some(user) = self.caller(conn, uid).await? else {
            return Ok(());
        };
        let u = user.clone();
        let (devices, codes) = self
            .core
            .db(move |s| Ok((s.devices(&u)?, s.unused_bypass_codes(&u)?.len())))
            .await?;
        let mut out = format!("Devices of {user}:\n");
        if devices.is_empty() {
            out.push_str("  (none: add one with `mfa enroll totp`)\n");
        }
        for (i, d) in devices.iter().enumerate() {
            out.push_str(&format!("  {}. {}\n", i + 1, describe(d)));
        }
        out.push_str(&format!("Bypass codes: {codes} unused"));
        conn.info(out).await?;
        conn.done(Outcome::Allow).await?;
        Ok(())
    }

    /// The caller and its device number `index` as listed, after a fresh second factor;
    /// `None` once the conversation has been refused.
    async fn pick_device(
        &self,
        conn: &mut Conn,
        uid: u32,
        index: u32,
    ) -> Result<Option<(String, Device)>> {
        let Some(user) = self.caller(conn, uid).await? else {
            return Ok(None);
        };
        let u = user.clone();
        let devices = self.core.db(move |s| s.devices(&u)).await?;
        let Some(device) = (index as usize)
            .checked_sub(1)
            .and_then(|i| devices.into_iter().nth(i))
        else {
            self.core
                .deny(
                    conn,
                    format!("You have no device number {index}; `mfa devices` lists them."),
                )
                .await?;
            return Ok(None);
        };
        if !self.require_fresh_factor(conn, &own(&user)).await? {
            return Ok(None);
        }
        Ok(Some((user, device)))
    }

    pub(crate) async fn set_default(&self, conn: &mut Conn, uid: u32, index: u32) -> Result<()> {
        let Some((user, device)) = self.pick_device(conn, uid, index).await? else {
            return Ok(());
        };
        let (u, id) = (user.clone(), device.id);
        self.core.db(move |s| s.set_default(&u, id)).await?;
        let what = format!("device {}", clean(&device.name));
        decision(&own(&user), device.kind.as_str(), "default set", &what);
        conn.info(format!("\"{}\" is now your default method.", device.name))
            .await?;
        conn.done(Outcome::Allow).await?;
        Ok(())
    }

    pub(crate) async fn remove_device(&self, conn: &mut Conn, uid: u32, index: u32) -> Result<()> {
        let Some((user, device)) = self.pick_device(conn, uid, index).await? else {
            return Ok(());
        };
        let (u, id) = (user.clone(), device.id);
        self.core.db(move |s| s.remove_device(&u, id)).await?;
        let what = format!("device {}", clean(&device.name));
        decision(&own(&user), device.kind.as_str(), "removed", &what);
        let mut msg = format!("Removed \"{}\".", device.name);
        if !self.core.is_enrolled(&user).await? {
            msg.push_str(
                "\nYou have no second factor left: logins will refuse you until you enrol one.",
            );
        }
        conn.info(msg).await?;
        conn.done(Outcome::Allow).await?;
        Ok(())
    }

    pub(crate) async fn own_bypass_codes(&self, conn: &mut Conn, uid: u32) -> Result<()> {
        let Some(user) = self.caller(conn, uid).await? else {
            return Ok(());
        };
        let who = own(&user);
        if !self.require_fresh_factor(conn, &who).await? {
            return Ok(());
        }
        self.core.issue_bypass_codes(conn, &who).await
    }
}

/// A device request from a client, checked into what can be added, or the reason it
/// cannot (said to the user as it is).
pub(crate) fn check_new_device(
    core: &Core,
    local: &LocalFactors,
    new: NewDevice,
) -> std::result::Result<CheckedDevice, DeviceRequestError> {
    let token = |kind, name, secret: &str, digits, period| {
        factor::check_digits(digits)?;
        if kind == DeviceKind::Totp {
            factor::check_period(period)?;
        }
        Ok(CheckedDevice::Token {
            kind,
            name: device_name(name, "Hardware token")?,
            secret: factor::parse_secret(secret)?,
            params: totp::TotpParams {
                algorithm: totp::HashAlgorithm::Sha1,
                digits,
                period,
            },
        })
    };
    match new {
        NewDevice::Totp { name } => Ok(CheckedDevice::App {
            name: device_name(name, "Authenticator app")?,
        }),
        NewDevice::Hotp {
            name,
            secret,
            digits,
        } => token(DeviceKind::Hotp, name, &secret, digits, 0),
        NewDevice::TotpToken {
            name,
            secret,
            digits,
            period,
        } => token(DeviceKind::Totp, name, &secret, digits, period),
        NewDevice::Phone { name, number } => {
            if !local.can_sms() {
                return Err(DeviceRequestError::NoSms);
            }
            let name = device_name(name, "Phone")?;
            let number = check_phone(&number)?;
            country_allowed(core, &number)?;
            Ok(CheckedDevice::Phone { name, number })
        }
        NewDevice::Push { name, target } => {
            if !local.can_push() {
                return Err(DeviceRequestError::NoPush);
            }
            let ntfy = core
                .config
                .push
                .as_ref()
                .filter(|p| p.notifier == crate::oob::config::NotifierKind::Ntfy);
            let target = match ntfy {
                // mfad generates the topic.
                Some(_) if target.is_empty() => None,
                Some(ntfy) if !ntfy.allow_chosen_topics => {
                    return Err(DeviceRequestError::ChosenTopic);
                }
                Some(_) if !is_ntfy_topic(&target) => {
                    return Err(DeviceRequestError::BadTopic);
                }
                Some(_) => Some(target),
                None if target.is_empty()
                    || target.len() > 256
                    || target.chars().any(char::is_control) =>
                {
                    return Err(DeviceRequestError::BadPushTarget);
                }
                None => Some(target),
            };
            Ok(CheckedDevice::Push {
                name: device_name(name, "Phone app")?,
                target,
            })
        }
        NewDevice::SecurityKey { name, public_key } => Ok(CheckedDevice::SecurityKey {
            key: SecurityKey::parse(&public_key)?,
            name: device_name(name, "Security key")?,
        }),
    }
}

/// `allowed_country_codes` refuses the number before anything is sent.
fn country_allowed(core: &Core, number: &str) -> std::result::Result<(), DeviceRequestError> {
    match &core.config.twilio {
        Some(t) if !t.number_allowed(number) => Err(DeviceRequestError::Country {
            allowed: t.allowed_country_codes.join(", "),
            masked: mask_phone(number),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{DeviceRequestError, device_name};

    #[test]
    fn device_refusals_keep_the_sentences_users_see() {
        assert_eq!(
            device_name(Some(" ".into()), "Phone"),
            Err(DeviceRequestError::BadName)
        );
        assert_eq!(
            device_name(Some("a\u{1b}b".into()), "Phone"),
            Err(DeviceRequestError::BadName)
        );
        assert_eq!(device_name(None, "Phone").as_deref(), Ok("Phone"));
        for (error, text) in [
            (
                DeviceRequestError::BadName,
                "A device name has 1 to 64 characters and no control characters.",
            ),
            (
                DeviceRequestError::Country {
                    allowed: "+1, +44".into(),
                    masked: "XXX-XXX-1234".into(),
                },
                "This host sends texts and calls only to numbers starting with +1, +44; \
                 XXX-XXX-1234 is not one. Nothing was sent.",
            ),
            (
                DeviceRequestError::NoSms,
                "Phone numbers need SMS, which is not configured on this host ([twilio] in \
                 mfad.toml).",
            ),
            (
                DeviceRequestError::NoPush,
                "Push notifications are not configured on this host ([push] and [approval] in \
                 mfad.toml).",
            ),
            (
                DeviceRequestError::ChosenTopic,
                "On this host mfad picks the push topic itself (a topic someone could guess \
                 would let them approve your logins): run `mfa add push` without a topic, and \
                 subscribe to the topic it shows.",
            ),
            (
                DeviceRequestError::Phone(crate::oob::phone::PhoneError::NoCountryCode),
                "a phone number must start with + and the country code, e.g. +15551234567",
            ),
            (
                DeviceRequestError::Token(crate::factor::TokenError::Digits(7)),
                "Tokens show 6 or 8 digits, not 7.",
            ),
        ] {
            assert_eq!(error.to_string(), text);
        }
    }
}
