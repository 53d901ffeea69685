//! Day two for a sysadmin: the fail2ban filter against the lines real logins produce, and
//! `mfa admin list --json` through the real CLI, with who ran it in the log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::TestEnv;
use mfa_e2e::paths::workspace_root;
use std::path::Path;
use std::process::Command;

/// The IPs `fail2ban-regex` would ban for `log`, with the shipped filter, run against a
/// private copy of /etc/fail2ban (nothing of the system's configuration is changed).
fn banned_ips(dir: &Path, log: &str) -> Vec<String> {
    let config = dir.join("fail2ban");
    let copied = Command::new("cp")
        .args(["-a", "/etc/fail2ban"])
        .arg(&config)
        .status()
        .expect("cp");
    assert!(copied.success(), "is fail2ban installed? (scripts/deps.sh)");
    std::fs::copy(
        workspace_root().join("conf/fail2ban/filter.d/mfad.conf"),
        config.join("filter.d/mfad.conf"),
    )
    .unwrap();
    let log_file = dir.join("mfad-for-fail2ban.log");
    std::fs::write(&log_file, log).unwrap();
    let out = Command::new("fail2ban-regex")
        .arg("--config")
        .arg(&config)
        .arg(&log_file)
        .arg("mfad")
        .args(["--out", "ip"])
        .output()
        .expect("fail2ban-regex (package fail2ban) runs");
    let _ = std::fs::remove_dir_all(&config);
    assert!(
        out.status.success(),
        "fail2ban-regex failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn fail2ban_filter_matches_every_second_factor_refusal_and_no_success() {
    let env = TestEnv::builder().lockout(4, 600).start().unwrap();
    let mut device = env.enroll_totp().unwrap();
    let code = device.totp.fresh_code();
    let ok = env.login(&[&code], "true").unwrap();
    assert!(ok.logged_in(), "{}", ok.describe());
    let wrong = device.totp.wrong_code();
    // Three wrong codes: refused. Three more: the fourth failure locks the account.
    for _ in 0..2 {
        let refused = env.login(&[&wrong, &wrong, &wrong], "true").unwrap();
        assert!(refused.refused(), "{}", refused.describe());
    }

    let log = env.mfad_log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("rhost=127.0.0.1"))
        .filter(|l| l.contains("outcome=deny") || l.contains("outcome=locked"))
        .collect();
    assert!(
        refusals.iter().any(|l| l.contains("account now locked")),
        "no lock line:\n{log}"
    );
    assert_eq!(refusals.len(), 2, "one refusal per refused login:\n{log}");
    let banned = banned_ips(&env.dir, &log);
    assert_eq!(banned.len(), refusals.len(), "{banned:?}\n{log}");
    assert!(banned.iter().all(|ip| ip == "127.0.0.1"), "{banned:?}");

    // The successes (and the retries within a login) alone ban nobody.
    let successes: String = log
        .lines()
        .filter(|l| l.contains("outcome=allow") || l.contains("outcome=retry"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(successes.contains("outcome=allow"), "{log}");
    assert_eq!(banned_ips(&env.dir, &successes), Vec::<String>::new());
}

#[test]
fn admin_list_json_through_the_real_cli_and_who_ran_it_is_logged() {
    let env = TestEnv::new().unwrap();
    let device = env.enroll_totp().unwrap();
    let wrong = device.totp.wrong_code();
    let refused = env.login(&[&wrong, &wrong, &wrong], "true").unwrap();
    assert!(refused.refused(), "{}", refused.describe());
    let user = env.username().to_string();

    let out = env
        .cli
        .as_root(&["admin", "list", "--enrolled", "--json"], "")
        .unwrap();
    assert_eq!(out.status, Some(0), "{}", out.describe());
    let list: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.describe()));
    assert_eq!(list["format"], 1);
    assert_eq!(list["filter"], "enrolled");
    let users = list["users"].as_array().unwrap();
    let me = users
        .iter()
        .find(|u| u["user"] == user.as_str())
        .unwrap_or_else(|| panic!("{user} not listed: {}", out.stdout));
    assert_eq!(me["enrolled"], true);
    assert_eq!(me["methods"], serde_json::json!(["totp"]));
    assert_eq!(me["locked"], false);
    assert!(me["failures"].as_u64().unwrap() >= 1, "{me}");

    let status = env
        .cli
        .as_root(&["admin", "status", &user, "--json"], "")
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&status.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", status.describe()));
    assert_eq!(status["known_to_host"], true);
    assert_eq!(status["devices"][0]["kind"], "totp");

    // The user tries the admin command: refused, and the log says who tried.
    let tried = env
        .cli
        .as_user(env.user().unwrap(), &["admin", "list"], "")
        .unwrap();
    assert_eq!(tried.status, Some(1), "{}", tried.describe());
    let uid = env.user().unwrap().uid;
    let log = env.mfad_log();
    assert!(
        log.contains(&format!(
            "admin action=list user=- by={user} uid={uid} result=\"refused: not root\""
        )),
        "{log}"
    );
    assert!(
        log.contains("admin action=list user=- by=root uid=0 result="),
        "{log}"
    );
}
