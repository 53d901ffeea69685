//! An OpenSSH security key (FIDO, `ed25519-sk`) as the second factor, end to end: the key is
//! made by the real `ssh-keygen` through a software authenticator (the `sk-soft` crate, an
//! OpenSSH SecurityKeyProvider), registered with the real `mfa enroll security-key`, and used
//! by the real `ssh` against the test's private sshd (`AuthenticationMethods
//! publickey,keyboard-interactive`, `ExposeAuthInfo yes`, password then pam_mfa).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::env::SshSetup;
use mfa_e2e::paths::built;
use mfa_e2e::{LoginOutcome, SshClient, TestEnv};
use std::path::PathBuf;
use std::process::Command;

const POLICY_ON: &str = "[policy]\nsecurity_key = true\n";

/// The software authenticator OpenSSH loads (built with the workspace).
fn provider() -> PathBuf {
    built("libsk_soft.so").unwrap()
}

/// A new ed25519-sk key made by `ssh-keygen -w` through the software authenticator, allowed
/// in the user's authorized_keys; returns the private key file and the public key line.
fn security_key(env: &TestEnv, name: &str) -> (PathBuf, String) {
    security_key_of_type(env, name, "ed25519-sk")
}

/// The same with `ssh-keygen -t kind` (`ed25519-sk` or `ecdsa-sk`).
fn security_key_of_type(env: &TestEnv, name: &str, kind: &str) -> (PathBuf, String) {
    let keys = env.dir.join("sk-keys");
    std::fs::create_dir_all(&keys).unwrap();
    let private = keys.join(format!("id_{name}_sk"));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C"])
        .arg(format!("mfa-e2e-{name}"))
        .arg("-w")
        .arg(provider())
        .arg("-f")
        .arg(&private)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen -t {kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(private.with_extension("pub")).unwrap();
    let expected = match kind {
        "ecdsa-sk" => "sk-ecdsa-sha2-nistp256@openssh.com ",
        _ => "sk-ssh-ed25519@openssh.com ",
    };
    assert!(public.starts_with(expected), "{public}");
    env.user().unwrap().authorize_key(&public).unwrap();
    (private, public.trim().to_string())
}

/// The client logging in with `key` through the software authenticator.
fn with_security_key(env: &TestEnv, key: &std::path::Path) -> SshClient {
    env.client
        .with_key(key)
        .with_option(&format!("SecurityKeyProvider={}", provider().display()))
}

/// `mfa enroll security-key -` as the user: the .pub line, then a current code, on stdin.
fn register(env: &TestEnv, public: &str, code: &str) -> mfa_e2e::cli::CliOutput {
    env.cli
        .as_user(
            env.user().unwrap(),
            &["enroll", "security-key", "-", "--name", "soft key"],
            &format!("{public}\n{code}\n"),
        )
        .unwrap()
}

fn assert_password_only(run: &LoginOutcome) {
    assert_eq!(run.status, Some(0), "{}", run.describe());
    assert_eq!(run.prompts.len(), 1, "{}", run.describe());
    assert!(run.prompts[0].ends_with("Password: "), "{}", run.describe());
}

fn assert_passcode_asked(run: &LoginOutcome) {
    assert_eq!(run.status, Some(0), "{}", run.describe());
    assert_eq!(run.prompts.len(), 2, "{}", run.describe());
    assert!(run.prompts[1].ends_with("Passcode: "), "{}", run.describe());
}

/// ssh-keygen -l's fingerprint of a public key line.
fn fingerprint(env: &TestEnv, public: &str) -> String {
    let file = env.dir.join("fingerprint.pub");
    std::fs::write(&file, format!("{public}\n")).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn a_registered_security_key_logs_in_without_a_passcode_and_a_plain_key_is_asked() {
    let env = TestEnv::builder()
        .setup(SshSetup::KeyThenPam)
        .mfad_toml(POLICY_ON)
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();
    let (sk, public) = security_key(&env, "touch");

    // Before it is registered, the security key is an ordinary key: the passcode is asked.
    let code = device.totp.fresh_code();
    let run = with_security_key(&env, &sk)
        .login(&[env.password(), &code], "echo unregistered")
        .unwrap();
    assert_passcode_asked(&run);

    let code = device.totp.fresh_code();
    let out = register(&env, &public, &code);
    assert_eq!(out.status, Some(0), "{}", out.describe());
    let shown = fingerprint(&env, &public);
    assert!(shown.starts_with("SHA256:"), "{shown}");
    let devices = env
        .cli
        .as_user(env.user().unwrap(), &["devices"], "")
        .unwrap();
    assert!(
        devices
            .stdout
            .contains(&format!("soft key (security key ED25519-SK {shown})")),
        "{}",
        devices.describe()
    );

    let run = with_security_key(&env, &sk)
        .login(&[env.password()], "echo in with the security key")
        .unwrap();
    assert_password_only(&run);
    assert_eq!(run.stdout, "in with the security key\n");
    let log = env.mfad_log();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("user={} ", env.username()))
                && l.contains("method=security-key")
                && l.contains("outcome=allow")
                && l.contains(&shown)),
        "{log}"
    );

    // The ordinary ed25519 key of the same user still needs the passcode.
    let code = device.totp.fresh_code();
    let run = env.login(&[&code], "echo with the plain key").unwrap();
    assert_passcode_asked(&run);
    assert_eq!(run.stdout, "with the plain key\n");
}

#[test]
fn with_the_policy_off_a_registered_security_key_still_gets_the_passcode_prompt() {
    let env = TestEnv::builder()
        .setup(SshSetup::KeyThenPam)
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();
    let (sk, public) = security_key(&env, "off");
    let code = device.totp.fresh_code();
    let out = register(&env, &public, &code);
    assert_eq!(out.status, Some(0), "{}", out.describe());
    assert!(
        out.stdout.contains("security_key = false"),
        "{}",
        out.describe()
    );

    let code = device.totp.fresh_code();
    let run = with_security_key(&env, &sk)
        .login(&[env.password(), &code], "echo asked anyway")
        .unwrap();
    assert_passcode_asked(&run);
    assert_eq!(run.stdout, "asked anyway\n");
    assert!(!env.mfad_log().contains("method=security-key outcome=allow"));
}

#[test]
fn registering_a_plain_ssh_key_is_refused_saying_it_is_not_a_second_factor() {
    let env = TestEnv::builder()
        .setup(SshSetup::KeyThenPam)
        .mfad_toml(POLICY_ON)
        .start()
        .unwrap();
    env.enroll_totp().unwrap();
    let plain = env.add_user_key("plain").unwrap();
    let public = std::fs::read_to_string(plain.with_extension("pub")).unwrap();
    let out = register(&env, public.trim(), "");
    assert_eq!(out.status, Some(1), "{}", out.describe());
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("not a second factor"), "{}", out.describe());
    let devices = env
        .cli
        .as_user(env.user().unwrap(), &["devices"], "")
        .unwrap();
    assert!(
        !devices.stdout.contains("security key"),
        "{}",
        devices.describe()
    );
}

#[test]
fn an_ecdsa_security_key_logs_in_without_a_passcode_too() {
    let env = TestEnv::builder()
        .setup(SshSetup::KeyThenPam)
        .mfad_toml(POLICY_ON)
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();
    let (sk, public) = security_key_of_type(&env, "p256", "ecdsa-sk");
    assert!(
        public.starts_with("sk-ecdsa-sha2-nistp256@openssh.com "),
        "{public}"
    );
    let code = device.totp.fresh_code();
    let out = register(&env, &public, &code);
    assert_eq!(out.status, Some(0), "{}", out.describe());
    assert!(
        out.stdout
            .contains(&format!("ECDSA-SK {}", fingerprint(&env, &public))),
        "{}",
        out.describe()
    );
    let run = with_security_key(&env, &sk)
        .login(&[env.password()], "echo in with the P-256 key")
        .unwrap();
    assert_password_only(&run);
    assert_eq!(run.stdout, "in with the P-256 key\n");
}
