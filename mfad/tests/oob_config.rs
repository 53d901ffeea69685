//! Provider secrets in the config, through the real `mfad` binary: a config holding a token
//! must be private, a `*_file` secret must be private, and `--check-config` (which runs at
//! every start, into the journal) never prints a secret or a URL's password.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const TWILIO_TOKEN: &str = "sekrit-twilio-token-31d7";
const PUSH_TOKEN: &str = "tk_sekrit_push_token_99";

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory mfad may write its socket and database into.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn base(dir: &Path) -> String {
    format!(
        "socket = \"{}\"\ndatabase = \"{}\"\n[log]\nsyslog = false\n",
        dir.join("mfad.sock").display(),
        dir.join("mfa.db").display()
    )
}

fn twilio(token_line: &str) -> String {
    format!(
        "[twilio]\naccount_sid = \"AC123\"\n{token_line}\nfrom = \"+15550001111\"\ntimeout = 2\n"
    )
}

fn check(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mfad"))
        .arg("--config")
        .arg(config)
        .arg("--check-config")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Starts the daemon itself (not just the check) and returns how it ended, killing it if it
/// is still running after a second (it started).
fn start(config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mfad"))
        .arg("--config")
        .arg(config)
        .arg("--foreground")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    (None, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_world_readable_config_holding_a_token_is_refused_naming_the_file_and_the_fix() {
    let dir = scratch();
    let config = dir.path().join("mfad.toml");
    let body = format!(
        "{}{}",
        base(dir.path()),
        twilio(&format!("auth_token = \"{TWILIO_TOKEN}\""))
    );
    write(&config, &body, 0o644);
    let out = check(&config);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    for part in [
        "twilio.auth_token is set inline",
        config.to_str().unwrap(),
        "mode 644",
        "chmod 600",
        "twilio.auth_token_file",
    ] {
        assert!(all.contains(part), "lacks {part:?}: {all}");
    }
    assert!(!all.contains(TWILIO_TOKEN), "{all}");
    // The daemon itself refuses to start, with the same message.
    let (code, stderr) = start(&config);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(!dir.path().join("mfad.sock").exists());

    // The same file, private: accepted, and the token is not printed.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = check(&config);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("auth_token = \"(hidden)\""), "{all}");
    assert!(!all.contains(TWILIO_TOKEN), "{all}");
}

#[test]
fn a_push_token_inline_also_needs_a_private_config() {
    let dir = scratch();
    let config = dir.path().join("mfad.toml");
    let body = format!(
        "{}[approval]\npublic_url = \"https://mfa.example.org\"\n\
         [push]\nurl = \"https://ntfy.example.org\"\ntoken = \"{PUSH_TOKEN}\"\n",
        base(dir.path())
    );
    write(&config, &body, 0o640);
    let out = check(&config);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("push.token is set inline"), "{all}");
    assert!(!all.contains(PUSH_TOKEN), "{all}");
}

#[test]
fn a_world_readable_config_may_name_private_secret_files_but_not_readable_ones() {
    let dir = scratch();
    let token_file: PathBuf = dir.path().join("twilio-token");
    let push_file: PathBuf = dir.path().join("push-token");
    write(&token_file, &format!("{TWILIO_TOKEN}\n"), 0o600);
    write(&push_file, PUSH_TOKEN, 0o600);
    let config = dir.path().join("mfad.toml");
    let body = format!(
        "{}[approval]\npublic_url = \"https://mfa.example.org\"\n\
         [push]\nurl = \"https://ntfy.example.org\"\ntoken_file = \"{}\"\n{}",
        base(dir.path()),
        push_file.display(),
        twilio(&format!("auth_token_file = \"{}\"", token_file.display()))
    );
    write(&config, &body, 0o644);
    let out = check(&config);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        !all.contains(TWILIO_TOKEN) && !all.contains(PUSH_TOKEN),
        "{all}"
    );
    // The file's token is the one in force (shown only as set).
    assert!(all.contains("auth_token = \"(hidden)\""), "{all}");
    assert!(all.contains("\ntoken = \"(hidden)\""), "{all}");
    // And the daemon starts on it.
    let (code, stderr) = start(&config);
    assert_eq!(code, None, "mfad exited: {stderr}");

    // A secret file others can read is refused, naming it and the fix.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check(&config);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    for part in [
        "twilio.auth_token_file",
        token_file.to_str().unwrap(),
        "chmod 600",
    ] {
        assert!(all.contains(part), "lacks {part:?}: {all}");
    }
    assert!(!all.contains(TWILIO_TOKEN), "{all}");

    // Both the inline token and the file: refused as ambiguous.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let both = body.replace(
        "auth_token_file",
        &format!("auth_token = \"{TWILIO_TOKEN}\"\nauth_token_file"),
    );
    write(&config, &both, 0o600);
    let out = check(&config);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("not both"), "{all}");
}

#[test]
fn check_config_never_prints_a_proxy_password() {
    let dir = scratch();
    let config = dir.path().join("mfad.toml");
    let body = format!(
        "{}[duo]\nhost = \"api-test.duosecurity.com\"\nikey = \"DIXXXXXXXXXXXXXXXXXX\"\n\
         skey = \"duo-secret-key-0123456789\"\nhttp_proxy = \"http://squid:pr0xy-pa55@proxy.example.org:3128\"\n",
        base(dir.path())
    );
    write(&config, &body, 0o600);
    let out = check(&config);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!all.contains("pr0xy-pa55"), "{all}");
    assert!(
        all.contains("http://squid:(hidden)@proxy.example.org:3128"),
        "{all}"
    );
    assert!(!all.contains("duo-secret-key"), "{all}");
}
