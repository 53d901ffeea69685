//! Day two for a sysadmin: the fail2ban filter against the lines real logins produce, and
//! `mfa admin list --json` through the real CLI, with who ran it in the log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::TestEnv;
use mfa_e2e::paths::workspace_root;
use std::os::unix::process::CommandExt;
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

    // The same user's own process (as the ForceCommand helper would) asks mfad with an
    // address of its choosing and types wrong codes: refused, logged with vouched=user,
    // and never banned: a local user must not get someone else's address banned.
    let user = env.user().unwrap();
    let spoofed = "198.51.100.77";
    let script = r#"
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(20); s.connect(sys.argv[1])
def send(m):
    b = json.dumps(m).encode(); s.sendall(struct.pack('>I', len(b)) + b)
send({"type": "hello", "version": 1, "op": {"op": "authenticate", "user": sys.argv[2],
      "service": "sshd", "rhost": sys.argv[3], "tty": "ssh", "ssh_connection": None,
      "ssh_auth_info": None}})
while True:
    hdr = s.recv(4, socket.MSG_WAITALL)
    if len(hdr) < 4: break
    msg = json.loads(s.recv(struct.unpack('>I', hdr)[0], socket.MSG_WAITALL))
    if msg["type"] == "prompt": send({"type": "answer", "text": sys.argv[4]})
    if msg["type"] in ("done", "unavailable"):
        print(msg.get("outcome", msg["type"])); break
"#;
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(env.socket())
        .args([&user.name, spoofed, &wrong])
        .uid(user.uid)
        .gid(user.gid)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "deny",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let log = env.mfad_log();
    let from_user: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("rhost={spoofed}")) && l.contains("outcome=deny"))
        .collect();
    assert_eq!(from_user.len(), 1, "{log}");
    assert!(from_user[0].ends_with("vouched=user"), "{}", from_user[0]);
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
    assert!(
        refusals.iter().all(|l| l.ends_with("vouched=root")),
        "{refusals:?}"
    );

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

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn devices_of(env: &TestEnv) -> usize {
    let out = env
        .cli
        .as_root(&["admin", "status", env.username(), "--json"], "")
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    status["devices"].as_array().unwrap().len()
}

#[test]
fn a_google_authenticator_file_is_imported_and_its_codes_and_scratch_codes_log_in() {
    let env = TestEnv::new().unwrap();
    let user = env.username().to_string();
    let file = format!("/home/{user}/.google_authenticator");
    // The real google-authenticator CLI: time-based, no reuse, rate limit, 5 scratch codes.
    tool(
        "google-authenticator",
        &[
            "-t", "-d", "-f", "-q", "-C", "-r", "3", "-R", "30", "-w", "3", "-e", "5", "-s", &file,
        ],
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let secret = text.lines().next().unwrap().to_string();
    let scratch: Vec<String> = text
        .lines()
        .filter(|l| l.len() == 8 && l.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .collect();
    assert_eq!(scratch.len(), 5, "{text}");

    let dry = env
        .cli
        .as_root(
            &[
                "admin",
                "import",
                "google-authenticator",
                "--dry-run",
                &user,
            ],
            "",
        )
        .unwrap();
    assert_eq!(dry.status, Some(0), "{}", dry.describe());
    assert!(
        dry.stdout.contains("Dry run, nothing changed"),
        "{}",
        dry.describe()
    );
    assert!(dry.stdout.contains(&file), "{}", dry.describe());
    assert_eq!(devices_of(&env), 0, "a dry run changes nothing");

    let done = env
        .cli
        .as_root(&["admin", "import", "google-authenticator", &user], "")
        .unwrap();
    assert_eq!(done.status, Some(0), "{}", done.describe());
    assert!(
        done.stdout.contains("5 bypass codes"),
        "{}",
        done.describe()
    );
    assert!(
        done.stdout.contains("rate limit 3 per 30 s"),
        "{}",
        done.describe()
    );

    // The code the user's app shows (oathtool computes it from the same secret) logs in
    // through sshd and pam_mfa; a scratch code works once, as a bypass code.
    let code = tool("oathtool", &["--totp", "-b", &secret]);
    let login = env.login(&[&code], "true").unwrap();
    assert!(login.logged_in(), "{}", login.describe());
    let login = env.login(&[&scratch[0]], "true").unwrap();
    assert!(login.logged_in(), "{}", login.describe());
    let again = env.login(&[&scratch[0]], "true").unwrap();
    assert!(again.refused(), "{}", again.describe());
    assert!(
        env.mfad_log().contains(&format!(
            "admin action=import-google-authenticator user={user} by=root uid=0"
        )),
        "{}",
        env.mfad_log()
    );
}

#[test]
fn a_pam_oath_users_file_is_imported_and_a_broken_one_is_refused_by_line() {
    let env = TestEnv::new().unwrap();
    let user = env.username().to_string();
    let hex = "3132333435363738393031323334353637383930";
    let users = env.dir.join("users.oath");
    // A broken line 3: nothing at all is imported, and the error names file and line.
    std::fs::write(
        &users,
        format!("# pam_oath users\nHOTP {user} - {hex}\nHOTP/T30 {user} 1234 {hex}\n"),
    )
    .unwrap();
    let refused = env
        .cli
        .as_root(&["admin", "import", "oath", users.to_str().unwrap()], "")
        .unwrap();
    assert_eq!(refused.status, Some(1), "{}", refused.describe());
    assert!(
        refused.stderr.contains(&format!("{}:3:", users.display()))
            && refused.stderr.contains("Nothing was imported"),
        "{}",
        refused.describe()
    );
    assert_eq!(devices_of(&env), 0);

    // pam_oath had used counter 4 (code 338314 at counter 4, per the usersfile format).
    std::fs::write(
        &users,
        format!("HOTP {user} - {hex} 4 338314 2026-01-01T00:00:00L\n"),
    )
    .unwrap();
    let done = env
        .cli
        .as_root(&["admin", "import", "oath", users.to_str().unwrap()], "")
        .unwrap();
    assert_eq!(done.status, Some(0), "{}", done.describe());
    assert!(
        done.stdout.contains("next counter 5"),
        "{}",
        done.describe()
    );
    let used = tool("oathtool", &["--hotp", "-c", "4", hex]);
    let next = tool("oathtool", &["--hotp", "-c", "5", hex]);
    let login = env.login(&[&used, &next], "true").unwrap();
    assert!(login.logged_in(), "{}", login.describe());
    assert_eq!(
        login.prompts_containing("Passcode: "),
        2,
        "{}",
        login.describe()
    );
}
