//! What `mfa admin list` and `mfa admin status --json` print: the fleet's enrolment and lock
//! state as a table or as JSON whose fields are documented in docs/admin-json.md (format 1:
//! fields may be added, never renamed or removed). No secret, phone number or code appears.

use crate::store::{Device, DeviceKind, LockState, UserSummary};
use mfa_proto::ListFilter;
use serde::Serialize;

/// The version of the JSON documents below.
pub const FORMAT: u32 = 1;

#[derive(Debug, Serialize)]
pub struct UserEntry {
    pub user: String,
    pub enrolled: bool,
    /// Distinct device kinds, in the order the devices were added (`totp`, `hotp`, `phone`,
    /// `push`).
    pub methods: Vec<&'static str>,
    pub devices: usize,
    pub bypass_codes_left: u32,
    pub low_bypass: bool,
    pub failures: u32,
    pub locked: bool,
    /// Unix seconds; null when not locked now.
    pub locked_until: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct ListReport {
    pub format: u32,
    pub generated_at: i64,
    pub filter: &'static str,
    pub low_bypass_below: u32,
    pub users: Vec<UserEntry>,
}

#[derive(Debug, Serialize)]
pub struct DeviceEntry {
    /// As `mfa devices` numbers them (1-based).
    pub index: usize,
    pub kind: &'static str,
    pub name: String,
    pub default: bool,
    /// Unix seconds.
    pub added: i64,
    /// Code devices only.
    pub digits: Option<u32>,
    /// TOTP devices only.
    pub period: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub format: u32,
    pub generated_at: i64,
    pub user: String,
    pub known_to_host: bool,
    pub enrolled: bool,
    pub devices: Vec<DeviceEntry>,
    pub bypass_codes_left: usize,
    pub failures: u32,
    pub locked: bool,
    pub locked_until: Option<i64>,
}

fn locked_now(locked_until: Option<i64>, now: i64) -> Option<i64> {
    locked_until.filter(|&until| until > now)
}

/// The users `filter` selects, as entries. "Enrolled" is what a login checks: a device or
/// an unused bypass code. "Low on bypass codes" applies to enrolled users only.
pub fn list(
    summaries: Vec<UserSummary>,
    filter: ListFilter,
    low_bypass_below: u32,
    now: i64,
) -> ListReport {
    let users = summaries
        .into_iter()
        .map(|s| {
            let enrolled = !s.device_kinds.is_empty() || s.bypass_left > 0;
            let mut methods: Vec<&'static str> = Vec::new();
            for kind in &s.device_kinds {
                if !methods.contains(&kind.as_str()) {
                    methods.push(kind.as_str());
                }
            }
            let locked_until = locked_now(s.locked_until, now);
            UserEntry {
                enrolled,
                methods,
                devices: s.device_kinds.len(),
                bypass_codes_left: s.bypass_left,
                low_bypass: enrolled && s.bypass_left < low_bypass_below,
                failures: s.failures,
                locked: locked_until.is_some(),
                locked_until,
                user: s.name,
            }
        })
        .filter(|u| match filter {
            ListFilter::All => true,
            ListFilter::Enrolled => u.enrolled,
            ListFilter::Unenrolled => !u.enrolled,
            ListFilter::Locked => u.locked,
            ListFilter::LowBypass => u.low_bypass,
        })
        .collect();
    ListReport {
        format: FORMAT,
        generated_at: now,
        filter: filter.as_str(),
        low_bypass_below,
        users,
    }
}

/// The list as an aligned table, one user a line.
pub fn table(report: &ListReport) -> String {
    if report.users.is_empty() {
        return format!("No users match ({}).", report.filter);
    }
    let width = report
        .users
        .iter()
        .map(|u| u.user.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!(
        "{:width$}  {:<16} {:>6} {:>8}  LOCKED UNTIL",
        "USER", "METHODS", "BYPASS", "FAILURES"
    );
    for u in &report.users {
        let methods = if u.methods.is_empty() {
            "-".to_string()
        } else {
            u.methods.join(",")
        };
        let locked = u
            .locked_until
            .map_or_else(|| "-".to_string(), crate::text::utc);
        out.push_str(&format!(
            "\n{:width$}  {:<16} {:>6} {:>8}  {locked}",
            u.user, methods, u.bypass_codes_left, u.failures
        ));
    }
    out
}

pub fn status(
    user: String,
    known_to_host: bool,
    devices: &[Device],
    bypass_left: usize,
    lock: &LockState,
    now: i64,
) -> StatusReport {
    let locked_until = locked_now(lock.locked_until, now);
    StatusReport {
        format: FORMAT,
        generated_at: now,
        user,
        known_to_host,
        enrolled: !devices.is_empty() || bypass_left > 0,
        devices: devices
            .iter()
            .enumerate()
            .map(|(i, d)| DeviceEntry {
                index: i + 1,
                kind: d.kind.as_str(),
                name: d.name.clone(),
                default: d.is_default,
                added: d.created,
                digits: d.otp.as_ref().map(|k| k.params.digits),
                period: d
                    .otp
                    .as_ref()
                    .filter(|_| d.kind == DeviceKind::Totp)
                    .map(|k| k.params.period),
            })
            .collect(),
        bypass_codes_left: bypass_left,
        failures: lock.failures,
        locked: locked_until.is_some(),
        locked_until,
    }
}

/// `text` cut at line ends into pieces that each fit one frame (a JSON string may grow by
/// escaping), so a list of thousands of users still reaches the client.
pub fn chunks(text: &str) -> Vec<String> {
    const MAX: usize = 16 * 1024;
    let mut out = Vec::new();
    let mut piece = String::new();
    for line in text.lines() {
        if !piece.is_empty() && piece.len() + line.len() + 1 > MAX {
            out.push(std::mem::take(&mut piece));
        }
        if !piece.is_empty() {
            piece.push('\n');
        }
        piece.push_str(line);
    }
    if !piece.is_empty() || out.is_empty() {
        out.push(piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_join_back_to_the_text_and_each_fits_a_frame() {
        let text: String = (0..5000)
            .map(|i| format!("    {{\"user\": \"user{i}\"}},\n"))
            .collect();
        let pieces = chunks(text.trim_end());
        assert!(pieces.len() > 1);
        assert!(pieces.iter().all(|p| p.len() <= 16 * 1024));
        assert_eq!(pieces.join("\n"), text.trim_end());
    }
}
