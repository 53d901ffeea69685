//! Enrolling an authenticator app: a new secret, its QR code, and a confirming code before
//! it is stored. Used by `mfa enroll totp` and by in-login enrolment (`unenrolled =
//! "enroll"`); and the enrolment link a login is refused with (`unenrolled = "link"`).

use super::local::LocalFactors;
use crate::conn::Conn;
use crate::daemon::{Result, Who, decision};
use crate::enrol_link;
use crate::factor::{self, hotp, totp};
use crate::store::{DeviceKind, NewDeviceRow, OtpKey};
use crate::text;
use mfa_proto::Outcome;
use zeroize::Zeroizing;

impl LocalFactors {
    /// An authenticator app: the daemon makes the secret, shows it, and waits for one code.
    pub(crate) async fn enroll_app(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        name: String,
    ) -> Result<()> {
        let params = self.core.totp_params();
        let secret = totp::new_secret(self.core.random.as_ref());
        let uri = totp::otpauth_uri(&secret, params, &self.core.issuer, who.user);
        let b32 = totp::secret_base32(&secret);
        conn.secret_info(Zeroizing::new(format!(
            "Scan this QR code with your authenticator app:\n\n{}\nOr add the account by hand \
             ({} digits, {} s, SHA1):\nSecret: {}\n{}\n",
            text::qr_code(&uri),
            params.digits,
            params.period,
            b32.as_str(),
            uri.as_str()
        )))
        .await?;
        self.confirm_token(conn, who, DeviceKind::Totp, name, secret, params)
            .await
    }

    /// `unenrolled = "link"`: records a one-time enrolment link bound to the user, shows it
    /// (and its QR code on a terminal), and refuses the login.
    pub(crate) async fn send_enrol_link(&self, conn: &mut Conn, who: &Who<'_>) -> Result<()> {
        let Some(base) = self.core.config.web.public_base() else {
            // The config check refuses `link` without it; a hand-made Config may not.
            decision(
                who,
                "-",
                "deny",
                "not enrolled; no [web] public_url for a link",
            );
            return self
                .core
                .deny(
                    conn,
                    format!(
                        "Two-factor authentication is required for {}, but no device is \
                         enrolled. Ask your administrator.",
                        who.user
                    ),
                )
                .await;
        };
        let token = enrol_link::new_token(self.core.random.as_ref());
        let key = enrol_link::key_of(&token);
        let ttl = self.core.config.web.enroll_link_ttl;
        let now = self.core.clock.now();
        let expires = now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
        let user = who.user.to_string();
        self.core
            .db(move |s| s.add_enrol_link(&key, &user, now, expires))
            .await?;
        decision(who, "-", "deny", "not enrolled; enrolment link issued");
        let link = enrol_link::url(base, &token);
        let mut text = Zeroizing::new(format!(
            "Two-factor authentication is required for {}, but no device is enrolled.\n\
             Please enroll at {}\n",
            who.user,
            link.as_str()
        ));
        if who.can_prompt {
            text.push('\n');
            text.push_str(&text::qr_code(&link));
        }
        text.push_str(&format!(
            "The link works once, for {} minutes, and asks for your password. Then log in \
             again with a code from the new app.\n",
            ttl.div_ceil(60)
        ));
        conn.secret_info(text).await?;
        self.core
            .deny(conn, "Login refused until a device is enrolled.")
            .await
    }

    /// Asks for a code from the new device; stores it only when one matches, with that
    /// code counted as spent.
    pub(crate) async fn confirm_token(
        &self,
        conn: &mut Conn,
        who: &Who<'_>,
        kind: DeviceKind,
        name: String,
        secret: Zeroizing<Vec<u8>>,
        params: totp::TotpParams,
    ) -> Result<()> {
        for attempt in 1..=3 {
            let Some(answer) = conn
                .prompt("Enter the code your device shows to finish: ", true)
                .await?
            else {
                decision(
                    who,
                    kind.as_str(),
                    "not enrolled",
                    "no confirmation code entered",
                );
                return self
                    .core
                    .deny(conn, "No code entered; nothing was enrolled.")
                    .await;
            };
            let now = self.core.clock.now();
            let window = self.core.config.totp.window;
            let counter = factor::as_passcode(&answer)
                .and_then(|code| confirming_counter(kind, &secret, params, code, now, window));
            if let Some(counter) = counter {
                let row = NewDeviceRow {
                    kind,
                    name: name.clone(),
                    otp: Some(OtpKey {
                        secret: secret.clone(),
                        params,
                        counter,
                    }),
                    address: None,
                };
                self.core.add_device(who, row).await?;
                conn.info(format!(
                    "Enrolled \"{name}\". From now on, logins as {} accept its codes.",
                    who.user
                ))
                .await?;
                conn.done(Outcome::Allow).await?;
                return Ok(());
            }
            let hint = if attempt < 3 { " Try again." } else { "" };
            conn.error(format!(
                "That code does not match. Check the device (and, for an app, that the phone's \
                 clock is right).{hint}"
            ))
            .await?;
        }
        decision(
            who,
            kind.as_str(),
            "not enrolled",
            "no matching confirmation code",
        );
        self.core.deny(conn, "Nothing was enrolled.").await
    }
}

/// The counter a new token's confirming `code` leaves it at: for HOTP the next counter
/// (a fresh token starts at 0, a used one may be far along: 1,000 are looked at), for TOTP
/// the step the code spends. None when the code does not match.
pub(crate) fn confirming_counter(
    kind: DeviceKind,
    secret: &[u8],
    params: totp::TotpParams,
    code: &str,
    now: i64,
    window: u64,
) -> Option<i64> {
    match kind {
        DeviceKind::Hotp => {
            hotp::matching_counter(secret, params, code, 0, 1000).map(|c| c as i64 + 1)
        }
        _ => totp::matching_step(secret, params, code, now, window).map(|s| s as i64),
    }
}
