//! Root's operations: status, list, unlock, reset, bypass codes for a user, and importing a
//! batch of hardware tokens. Every one is refused to any other uid, and every one, refused
//! or done, is logged with who asked (see docs/LOGS.md, "admin lines").

pub mod backup;
pub mod import;
pub mod report;

use crate::conn::Conn;
use crate::core::Core;
use crate::daemon::{Result, Who};
use crate::devices::describe;
use crate::factor;
use crate::logging::admin_action;
use crate::store::{DeviceKind, NewDeviceRow};
use crate::text;
use mfa_proto::{AdminOp, ImportFile, ImportFormat, Outcome};
use std::sync::Arc;

/// The action's name in admin log lines.
fn action_name(op: &AdminOp) -> &'static str {
    match op {
        AdminOp::Status { .. } => "status",
        AdminOp::StatusJson { .. } => "status",
        AdminOp::List { .. } => "list",
        AdminOp::Unlock { .. } => "unlock",
        AdminOp::Reset { .. } => "reset",
        AdminOp::BypassCodes { .. } => "bypass-codes",
        AdminOp::Forget { .. } => "forget",
        AdminOp::ImportTokens { .. } => "import-tokens",
        AdminOp::Backup { .. } => "backup",
        AdminOp::Import {
            format: ImportFormat::GoogleAuthenticator,
            ..
        } => "import-google-authenticator",
        AdminOp::Import {
            format: ImportFormat::Oath,
            ..
        } => "import-oath",
    }
}

/// Parses a token file: `user,kind,name,secret,digits[,period_or_counter]` per line, with
/// `kind` hotp or totp; blank lines and `#` comments skipped. Every error is collected with
/// its line number, so the administrator fixes the file in one pass.
fn parse_tokens(csv: &str) -> std::result::Result<Vec<(String, NewDeviceRow)>, Vec<String>> {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in csv.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let row = (|| -> std::result::Result<(String, NewDeviceRow), String> {
            let [user, kind, name, secret, digits, rest @ ..] = fields.as_slice() else {
                return Err("expected user,kind,name,secret,digits[,period or counter]".into());
            };
            mfa_proto::check_user_name(user).map_err(|e| e.to_string())?;
            if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
                return Err("the name must have 1 to 64 printable characters".into());
            }
            let digits: u32 = digits.parse().map_err(|_| "digits is not a number")?;
            factor::check_digits(digits)?;
            let secret = factor::parse_secret(secret)?;
            let extra: Option<u64> = match rest {
                [] => None,
                [x] => Some(x.parse().map_err(|_| "the last field is not a number")?),
                _ => return Err("too many fields".into()),
            };
            let (kind, period, counter) = match *kind {
                "hotp" => (DeviceKind::Hotp, 0, extra.unwrap_or(0) as i64),
                "totp" => {
                    let period = extra.unwrap_or(30);
                    factor::check_period(period)?;
                    (DeviceKind::Totp, period, 0)
                }
                other => return Err(format!("kind {other:?} is neither hotp nor totp")),
            };
            Ok((
                user.to_string(),
                NewDeviceRow {
                    kind,
                    name: name.to_string(),
                    otp: Some(import::otp(secret, digits, period, counter)),
                    address: None,
                },
            ))
        })();
        match row {
            Ok(r) => rows.push(r),
            Err(e) => errors.push(format!("line {}: {e}", n + 1)),
        }
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

/// A device about to be added, for the import report.
fn describe_new(d: &NewDeviceRow) -> String {
    match (d.kind, &d.otp) {
        (DeviceKind::Totp, Some(k)) => format!(
            "time-based codes, {} digits every {} s",
            k.params.digits, k.params.period
        ),
        (DeviceKind::Hotp, Some(k)) => format!(
            "counter-based codes, {} digits, next counter {}",
            k.params.digits, k.counter
        ),
        _ => d.kind.as_str().to_string(),
    }
}

/// Root's operations: the shared core only.
pub(crate) struct AdminService {
    pub(crate) core: Arc<Core>,
}

impl AdminService {
    pub(crate) async fn admin(&self, conn: &mut Conn, uid: u32, op: AdminOp) -> Result<()> {
        // Who asked, for the record: the name of the caller's uid (its number if it has none).
        // A directory outage must not stop root's commands: the uid alone is then logged.
        let by = match self.core.name_of(uid).await {
            Ok(Some(name)) => name,
            _ => format!("uid{uid}"),
        };
        let action = action_name(&op);
        if uid != 0 {
            let target = match &op {
                AdminOp::Status { user }
                | AdminOp::StatusJson { user }
                | AdminOp::Unlock { user }
                | AdminOp::Reset { user }
                | AdminOp::BypassCodes { user }
                | AdminOp::Forget { user } => user.as_str(),
                AdminOp::List { .. }
                | AdminOp::ImportTokens { .. }
                | AdminOp::Backup { .. }
                | AdminOp::Import { .. } => "-",
            };
            admin_action(&by, uid, action, target, "refused: not root");
            return self
                .core
                .deny(conn, "Only root may run admin commands.")
                .await;
        }
        let user = match &op {
            AdminOp::Status { user }
            | AdminOp::StatusJson { user }
            | AdminOp::Unlock { user }
            | AdminOp::Reset { user }
            | AdminOp::BypassCodes { user }
            | AdminOp::Forget { user } => user.clone(),
            AdminOp::ImportTokens { csv } => return self.import_tokens(conn, &by, uid, csv).await,
            AdminOp::Backup { path } => return self.backup(conn, &by, uid, path).await,
            AdminOp::Import {
                format,
                files,
                dry_run,
            } => {
                return self
                    .import(conn, &by, uid, action, *format, files, *dry_run)
                    .await;
            }
            AdminOp::List {
                filter,
                low_bypass_below,
                json,
            } => {
                return self
                    .list_users(conn, &by, uid, *filter, *low_bypass_below, *json)
                    .await;
            }
        };
        if let Err(e) = mfa_proto::check_user_name(&user) {
            admin_action(&by, uid, action, &user, "refused: bad user name");
            return self.core.deny(conn, format!("Refused: {e}.")).await;
        }
        // State is keyed by the name the directory gives: `mfa admin unlock ALICE` unlocks
        // the account that logs in as alice (or ALICE) under a case-insensitive directory.
        let account = self.core.account(&user).await?;
        let exists = account.is_some();
        let user = account.map_or(user, |a| a.name);
        let who = Who {
            user: &user,
            rhost: "local",
            service: "mfa-admin",
            can_prompt: true,
            vouched: "-",
        };
        match op {
            AdminOp::Status { .. } | AdminOp::StatusJson { .. } => {
                let json = matches!(op, AdminOp::StatusJson { .. });
                let u = user.clone();
                let (devices, codes, lock) = self
                    .core
                    .db(move |s| {
                        let devices = s.devices(&u)?;
                        Ok((devices, s.unused_bypass_codes(&u)?.len(), s.lock_state(&u)?))
                    })
                    .await?;
                let now = self.core.clock.now();
                let out = if json {
                    let r = report::status(user.clone(), exists, &devices, codes, &lock, now);
                    serde_json::to_string_pretty(&r).unwrap_or_default()
                } else {
                    let devices: Vec<String> = devices.iter().map(describe).collect();
                    text::status_report(&user, exists, &devices, codes, &lock, now)
                };
                admin_action(&by, uid, action, &user, "shown");
                for piece in report::chunks(&out) {
                    conn.info(piece).await?;
                }
            }
            AdminOp::Unlock { .. } => {
                let u = user.clone();
                let changed = self.core.db(move |s| s.unlock(&u)).await?;
                admin_action(
                    &by,
                    uid,
                    action,
                    &user,
                    if changed {
                        "unlocked; failures cleared"
                    } else {
                        "was not locked"
                    },
                );
                conn.info(if changed {
                    format!("{user} is unlocked and its failure count is cleared.")
                } else {
                    format!("{user} was not locked and had no failures.")
                })
                .await?;
            }
            AdminOp::Reset { .. } => {
                let u = user.clone();
                self.core.db(move |s| s.reset_user(&u)).await?;
                admin_action(&by, uid, action, &user, "all devices and codes removed");
                conn.info(format!(
                    "{user} has no devices, bypass codes or failures any more. They can enrol \
                     again with `mfa enroll totp`."
                ))
                .await?;
            }
            AdminOp::Forget { .. } => {
                let u = user.clone();
                let n = self.core.db(move |s| s.forget_remembered(&u)).await?;
                admin_action(
                    &by,
                    uid,
                    action,
                    &user,
                    &format!("{n} remembered logins forgotten"),
                );
                conn.info(format!(
                    "{user}: {n} remembered logins forgotten; the next login asks for a second \
                     factor."
                ))
                .await?;
            }
            AdminOp::BypassCodes { .. } => {
                if !exists {
                    admin_action(&by, uid, action, &user, "refused: no such user");
                    return self
                        .core
                        .deny(conn, format!("There is no user {user} on this host."))
                        .await;
                }
                admin_action(&by, uid, action, &user, "new codes issued");
                return self.core.issue_bypass_codes(conn, &who).await;
            }
            AdminOp::ImportTokens { .. }
            | AdminOp::List { .. }
            | AdminOp::Backup { .. }
            | AdminOp::Import { .. } => {}
        }
        conn.done(Outcome::Allow).await?;
        Ok(())
    }

    /// Writes a backup while logins go on: the copy reads the database through its own
    /// connection, so the store's writer is not held up.
    async fn backup(&self, conn: &mut Conn, by: &str, uid: u32, path: &str) -> Result<()> {
        if let crate::config::StoreLocation::Postgres(_) = self.core.config.location {
            conn.error(
                "This store is PostgreSQL: back it up with the database's own tools \
                 (pg_dump, or the replication the site runs), not mfa admin backup.",
            )
            .await?;
            conn.done(Outcome::Deny).await?;
            return Ok(());
        }
        let database = self.core.config.database.clone();
        let dest = std::path::PathBuf::from(path);
        let now = self.core.clock.now();
        let result =
            tokio::task::spawn_blocking(move || backup::backup(&database, &dest, now)).await?;
        match result {
            Ok(summary) => {
                admin_action(
                    by,
                    uid,
                    "backup",
                    "-",
                    &format!(
                        "written to {path}: {} users, {} devices",
                        summary.users, summary.devices
                    ),
                );
                conn.info(format!(
                    "Backup written to {path} (mode 0600): {} users, {} devices.\n\
                     It can be restored only with this host's store key ({}): keep a copy \
                     of the key, apart from the backups.",
                    summary.users,
                    summary.devices,
                    self.core.config.store_key.display()
                ))
                .await?;
                conn.done(Outcome::Allow).await?;
                Ok(())
            }
            Err(e) => {
                admin_action(by, uid, "backup", "-", &format!("failed: {e}"));
                self.core
                    .deny(conn, format!("No backup was written: {e}."))
                    .await
            }
        }
    }

    /// Imports enrolments from google-authenticator or pam_oath files: every file read,
    /// every user known to this host and not enrolled in mfad yet, or nothing changes.
    #[allow(clippy::too_many_arguments)]
    async fn import(
        &self,
        conn: &mut Conn,
        by: &str,
        uid: u32,
        action: &str,
        format: ImportFormat,
        files: &[ImportFile],
        dry_run: bool,
    ) -> Result<()> {
        let mut imported = Vec::new();
        let mut errors = Vec::new();
        for f in files {
            let parsed = match (format, &f.user) {
                (ImportFormat::GoogleAuthenticator, Some(user)) => {
                    import::google_authenticator(&f.path, user, &f.text).map(|i| vec![i])
                }
                (ImportFormat::GoogleAuthenticator, None) => Err(vec![format!(
                    "{}: whose file is it? (no user given)",
                    f.path
                )]),
                (ImportFormat::Oath, _) => import::oath_users(&f.path, &f.text),
            };
            match parsed {
                Ok(mut i) => imported.append(&mut i),
                Err(mut e) => errors.append(&mut e),
            }
        }
        if imported.is_empty() && errors.is_empty() {
            errors.push("no enrolment found in the files given".into());
        }
        // Users: known to this host (the directory's spelling), not enrolled in mfad yet.
        for i in &mut imported {
            match self.core.account(&i.user).await? {
                Some(a) => i.user = a.name,
                None => errors.push(format!("{}: no user {} on this host", i.origin, i.user)),
            }
        }
        let users: Vec<String> = imported.iter().map(|i| i.user.clone()).collect();
        let enrolled = self
            .core
            .db(move |s| {
                let mut enrolled = Vec::new();
                for u in users {
                    if !s.devices(&u)?.is_empty() || !s.bypass_codes(&u)?.is_empty() {
                        enrolled.push(u);
                    }
                }
                Ok(enrolled)
            })
            .await?;
        for i in &imported {
            if enrolled.contains(&i.user) {
                errors.push(format!(
                    "{}: {} is already enrolled in mfa (`mfa admin reset {}` first, or leave \
                     them out)",
                    i.origin, i.user, i.user
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for i in &imported {
            if !i.bypass.is_empty() && !seen.insert(i.user.clone()) {
                errors.push(format!(
                    "{}: {} has scratch codes in two files",
                    i.origin, i.user
                ));
            }
        }
        if !errors.is_empty() {
            admin_action(
                by,
                uid,
                action,
                "-",
                &format!("refused: {} errors; nothing imported", errors.len()),
            );
            return self
                .core
                .deny(
                    conn,
                    format!(
                        "Nothing was imported; fix these first:\n{}{}",
                        errors
                            .iter()
                            .take(50)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("\n"),
                        if errors.len() > 50 {
                            format!("\n... and {} more", errors.len() - 50)
                        } else {
                            String::new()
                        }
                    ),
                )
                .await;
        }
        let mut report = Vec::new();
        for i in &imported {
            let mut line = format!(
                "{}: {} ({}), {} bypass codes from scratch codes",
                i.user,
                describe_new(&i.device),
                i.origin,
                i.bypass.len()
            );
            for note in &i.notes {
                line.push_str("; ");
                line.push_str(note);
            }
            report.push(line);
        }
        let users: Vec<String> = {
            let mut u: Vec<String> = imported.iter().map(|i| i.user.clone()).collect();
            u.sort();
            u.dedup();
            u
        };
        if dry_run {
            admin_action(
                by,
                uid,
                action,
                &users.join(","),
                &format!("dry run: {} devices would be imported", imported.len()),
            );
            let text = format!(
                "Dry run, nothing changed. Would import:\n{}",
                report.join("\n")
            );
            for piece in report::chunks(&text) {
                conn.info(piece).await?;
            }
            conn.done(Outcome::Allow).await?;
            return Ok(());
        }
        let count = imported.len();
        let now = self.core.clock.now();
        self.core
            .db(move |s| {
                s.in_transaction(|s| {
                    let mut rows = Vec::new();
                    let mut codes = Vec::new();
                    for i in imported {
                        if !i.bypass.is_empty() {
                            codes.push((i.user.clone(), i.bypass));
                        }
                        rows.push((i.user, i.device));
                    }
                    s.add_devices(&rows, now)?;
                    for (user, c) in codes {
                        s.replace_bypass_codes(&user, &c, now)?;
                    }
                    Ok(())
                })
            })
            .await?;
        admin_action(
            by,
            uid,
            action,
            &users.join(","),
            &format!("{count} devices imported"),
        );
        for piece in report::chunks(&format!("Imported:\n{}", report.join("\n"))) {
            conn.info(piece).await?;
        }
        conn.done(Outcome::Allow).await?;
        Ok(())
    }

    async fn list_users(
        &self,
        conn: &mut Conn,
        by: &str,
        uid: u32,
        filter: mfa_proto::ListFilter,
        low_bypass_below: u32,
        json: bool,
    ) -> Result<()> {
        let summaries = self.core.db(|s| s.user_summaries()).await?;
        let report = report::list(summaries, filter, low_bypass_below, self.core.clock.now());
        let out = if json {
            serde_json::to_string_pretty(&report).unwrap_or_default()
        } else {
            report::table(&report)
        };
        admin_action(
            by,
            uid,
            "list",
            "-",
            &format!("{} users ({})", report.users.len(), filter.as_str()),
        );
        for piece in report::chunks(&out) {
            conn.info(piece).await?;
        }
        conn.done(Outcome::Allow).await?;
        Ok(())
    }

    async fn import_tokens(&self, conn: &mut Conn, by: &str, uid: u32, csv: &str) -> Result<()> {
        let rows = match parse_tokens(csv) {
            Ok(rows) => rows,
            Err(errors) => {
                admin_action(
                    by,
                    uid,
                    "import-tokens",
                    "-",
                    &format!("refused: {} bad lines; nothing imported", errors.len()),
                );
                return self
                    .core
                    .deny(
                        conn,
                        format!(
                            "Nothing was imported; fix these lines first:\n{}",
                            errors.join("\n")
                        ),
                    )
                    .await;
            }
        };
        let mut rows = rows;
        let mut unknown = Vec::new();
        for (user, _) in &mut rows {
            match self.core.account(user).await? {
                Some(a) => *user = a.name,
                None => unknown.push(user.clone()),
            }
        }
        if !unknown.is_empty() {
            unknown.dedup();
            admin_action(
                by,
                uid,
                "import-tokens",
                "-",
                &format!("refused: {} unknown users; nothing imported", unknown.len()),
            );
            return self
                .core
                .deny(
                    conn,
                    format!(
                        "Nothing was imported; these users are unknown to this host: {}",
                        unknown.join(", ")
                    ),
                )
                .await;
        }
        let count = rows.len();
        let mut users: Vec<String> = rows.iter().map(|(u, _)| u.clone()).collect();
        users.sort();
        users.dedup();
        let now = self.core.clock.now();
        self.core.db(move |s| s.add_devices(&rows, now)).await?;
        admin_action(
            by,
            uid,
            "import-tokens",
            &users.join(","),
            &format!("{count} hardware tokens imported"),
        );
        conn.info(format!("Imported {count} tokens.")).await?;
        conn.done(Outcome::Allow).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_tokens;

    #[test]
    fn a_token_file_is_parsed_or_every_bad_line_is_named() {
        let ok = "# user,kind,name,secret,digits,extra\n\
                  alice,hotp,YubiKey 1,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,6\n\
                  bob,totp,Token 7,hex:3132333435363738393031323334353637383930,8,60\n";
        let Ok(rows) = parse_tokens(ok) else {
            panic!("a good file was refused")
        };
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].1.otp.as_ref().unwrap().params.period, 60);

        let bad = "alice,hotp,x,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,7\n\
                   \n\
                   bob,sms,x,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,6\n\
                   carol,totp,x,SHORT,6\n\
                   dave,totp\n";
        let Err(errors) = parse_tokens(bad) else {
            panic!("bad lines were accepted")
        };
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("line 1:"));
        assert!(errors[1].starts_with("line 3:") && errors[1].contains("sms"));
        assert!(errors[3].starts_with("line 5:"));
    }
}
