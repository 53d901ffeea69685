//! `mfad --check-config` on the real binary: a typo that would fail open (a group nobody
//! is in) or fail at start (a TLS file that is not there) is an error; a network written
//! with host bits is a warning; and a closed pipe (`| head -1`) ends the check quietly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("mfad.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn check(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mfad"))
        .arg("--config")
        .arg(config)
        .arg("--check-config")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_group_that_does_not_exist_fails_the_check_and_a_real_one_passes() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "[policy]\nrequire_groups = [\"no-such-group-mfa-check\"]\n",
    );
    let out = check(&bad);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("there is no group \"no-such-group-mfa-check\""),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty(), "no OK on a failed check");
    // Debian's root group exists everywhere.
    let good = write(dir.path(), "[policy]\nexempt_groups = [\"root\"]\n");
    let out = check(&good);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": OK"));
}

#[test]
fn an_old_approval_listener_fails_the_check_naming_mfa_webs_config() {
    // Before mfa-web, mfad itself listened for the approval pages: a config still saying
    // where is refused with the file those keys belong in now, not silently ignored.
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "[approval]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://mfa.example.org\"\n\
         tls_cert = \"/etc/mfa/cert.pem\"\ntls_key = \"/etc/mfa/key.pem\"\n",
    );
    let out = check(&config);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("approval.listen"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/etc/mfa/mfa-web.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn host_bits_in_a_trusted_network_are_a_warning_and_the_check_passes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "[policy]\ntrusted_networks = [\"10.0.0.1/8\"]\n",
    );
    let out = check(&config);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "warning: policy.trusted_networks: 10.0.0.1/8 has host bits set; it means 10.0.0.0/8"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_check_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "");
    // `mfad --check-config | head -c 1`: the reader takes one byte and closes the pipe.
    let mut child = Command::new(env!("CARGO_BIN_EXE_mfad"))
        .arg("--config")
        .arg(&config)
        .arg("--check-config")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The settings in force print as TOML: every default filled in, a secret shown as
/// `(hidden)`, and text mfad reads back as a config of its own.
#[test]
fn the_effective_settings_print_as_toml_mfad_reads_back_with_secrets_hidden() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "max_attempts = 5\n[lockout]\nmax_failures = 4\n[twilio]\napi_base = \
         \"https://api.twilio.com\"\naccount_sid = \"AC0123\"\nauth_token = \
         \"twilio-token-0123456789\"\nfrom = \"+15555550100\"\n",
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = check(&path);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("twilio-token"), "{text}");
    let settings = text.split_once('\n').unwrap().1;
    let parsed: toml::Table = toml::from_str(settings).unwrap();
    assert_eq!(parsed["max_attempts"].as_integer(), Some(5));
    assert_eq!(parsed["lockout"]["max_failures"].as_integer(), Some(4));
    // A default nobody wrote is there too.
    assert_eq!(parsed["totp"]["digits"].as_integer(), Some(6));
    assert_eq!(parsed["twilio"]["auth_token"].as_str(), Some("(hidden)"));
    let again = mfad::Config::parse(settings, Path::new("printed.toml")).unwrap();
    assert_eq!(again.max_attempts, 5);
    assert_eq!(again.lockout.max_failures, 4);
}
