//! Enrolling an authenticator app: a new secret, its QR code, and a confirming code before
//! it is stored. Used by `mfa enroll totp` and by in-login enrolment (`unenrolled =
//! "enroll"`).

use super::local::LocalFactors;
use crate::conn::Conn;
use crate::daemon::{Result, Who, decision};
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
            let counter = factor::as_passcode(&answer).and_then(|code| match kind {
                DeviceKind::Hotp => {
                    // A fresh token starts at 0; a used one may be far along.
                    hotp::matching_counter(&secret, params, code, 0, 1000).map(|c| c as i64 + 1)
                }
                _ => totp::matching_step(&secret, params, code, now, self.core.config.totp.window)
                    .map(|s| s as i64),
            });
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
