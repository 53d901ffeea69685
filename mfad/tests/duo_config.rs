//! `[duo]` and `duo_conf` in mfad.toml: the shipped example, an existing pam_duo.conf read
//! as it is, and every refusal naming the key, the file and the line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfad::Config;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const PAM_DUO_CONF: &str = "[duo]\n\
    ; Duo integration key\n\
    ikey = DIWJ8X6AEYOR5OMC8TQZ\n\
    ; Duo secret key\n\
    skey = Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep\n\
    ; Duo API host\n\
    host = api-deadbeef.duosecurity.com\n\
    failmode = secure\n\
    pushinfo = yes\n\
    autopush = yes\n\
    prompts = 1\n\
    groups = *,!wheel\n";

fn write_private(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn the_shipped_example_with_duo_enabled_parses() {
    // Uncomment the [duo] block of conf/mfad.toml, as an administrator would.
    let shipped = include_str!("../../conf/mfad.toml");
    let mut text = String::new();
    let mut in_duo = false;
    for line in shipped.lines() {
        if line == "# [duo]" {
            in_duo = true;
        }
        match line.strip_prefix("# ") {
            // The example's CA file does not exist here.
            Some(rest) if in_duo && rest.starts_with("cafile") => {}
            Some(rest) if in_duo => text.push_str(rest),
            _ => text.push_str(line),
        }
        text.push('\n');
    }
    let text = text.replace("skey = \"...\"", "skey = \"s3cret\"");
    let c = Config::parse(&text, Path::new("/etc/mfa/mfad.toml")).unwrap();
    let duo = c.duo.unwrap();
    assert_eq!(duo.host.as_deref(), Some("api-XXXXXXXX.duosecurity.com"));
    assert_eq!(duo.https_timeout, Some(15));
    assert_eq!(duo.prompts, Some(3));
}

#[test]
fn an_existing_pam_duo_conf_is_used_and_duo_keys_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let ini = write_private(dir.path(), "pam_duo.conf", PAM_DUO_CONF);
    let text = format!(
        "duo_conf = \"{}\"\n\n[duo]\nhttps_timeout = 5\nprompts = 2\n",
        ini.display()
    );
    let c = Config::parse(&text, Path::new("/etc/mfa/mfad.toml")).unwrap();
    let duo = c.duo.unwrap();
    assert_eq!(duo.ikey.as_deref(), Some("DIWJ8X6AEYOR5OMC8TQZ"));
    assert_eq!(duo.host.as_deref(), Some("api-deadbeef.duosecurity.com"));
    assert_eq!(duo.autopush, Some(true));
    assert_eq!(duo.pushinfo, Some(true));
    assert_eq!(duo.groups.as_deref(), Some("*,!wheel"));
    assert_eq!(duo.https_timeout, Some(5));
    assert_eq!(duo.prompts, Some(2));
    assert!(
        duo.notes.iter().any(|n| n.contains("failmode = secure")),
        "{:?}",
        duo.notes
    );
}

#[test]
fn refusals_name_the_key_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let toml = Path::new("/etc/mfa/mfad.toml");
    let err = Config::parse("[duo]\nhost = \"api-x.duosecurity.com\"\nhots = 1\n", toml)
        .unwrap_err()
        .to_string();
    assert!(err.contains("hots") && err.contains("line 3"), "{err}");

    let ini = write_private(
        dir.path(),
        "bad.conf",
        &format!("{PAM_DUO_CONF}noverify = yes\n"),
    );
    let err = Config::parse(&format!("duo_conf = \"{}\"\n", ini.display()), toml)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.conf line 13") && err.contains("noverify"),
        "{err}"
    );

    let err = Config::parse("[duo]\nhost = \"api-x.duosecurity.com\"\n", toml)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ikey is missing"), "{err}");

    let open = dir.path().join("open.conf");
    std::fs::write(&open, PAM_DUO_CONF).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Config::parse(&format!("duo_conf = \"{}\"\n", open.display()), toml)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("read or written by its group or others"),
        "{err}"
    );
}

#[test]
fn check_config_shows_the_duo_settings_without_the_secret_key() {
    let dir = tempfile::tempdir().unwrap();
    let ini = write_private(dir.path(), "pam_duo.conf", PAM_DUO_CONF);
    let conf = dir.path().join("mfad.toml");
    std::fs::write(&conf, format!("duo_conf = \"{}\"\n", ini.display())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mfad"))
        .arg("--config")
        .arg(&conf)
        .arg("--check-config")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("api-deadbeef.duosecurity.com"), "{stdout}");
    assert!(stdout.contains("(hidden)"), "{stdout}");
    assert!(!stdout.contains("Zh5eGmUq9zpfQnyU"), "{stdout}");
}

#[test]
fn the_secret_key_can_live_in_a_private_file_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let toml = Path::new("/etc/mfa/mfad.toml");
    let key = write_private(
        dir.path(),
        "duo-skey",
        "Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep\n",
    );
    let duo_keys = "host = \"api-x.duosecurity.com\"\nikey = \"DIWJ8X6AEYOR5OMC8TQZ\"\n";
    let text = format!("[duo]\n{duo_keys}skey_file = \"{}\"\n", key.display());
    let duo = Config::parse(&text, toml).unwrap().duo.unwrap();
    assert_eq!(
        duo.skey.as_ref().map(|s| s.expose()),
        Some("Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep")
    );
    assert!(!format!("{duo:?}").contains("Zh5eGmUq9zpfQnyU"));

    // With a pam_duo.conf, the key file named in [duo] wins over the file's skey.
    let ini = write_private(dir.path(), "pam_duo.conf", PAM_DUO_CONF);
    let other = write_private(dir.path(), "other-skey", "another-secret-key");
    let text = format!(
        "duo_conf = \"{}\"\n[duo]\nskey_file = \"{}\"\n",
        ini.display(),
        other.display()
    );
    let duo = Config::parse(&text, toml).unwrap().duo.unwrap();
    assert_eq!(
        duo.skey.as_ref().map(|s| s.expose()),
        Some("another-secret-key")
    );

    // A key file its group or others may read is refused, naming the key and the file.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let text = format!("[duo]\n{duo_keys}skey_file = \"{}\"\n", key.display());
    let err = Config::parse(&text, toml).unwrap_err().to_string();
    assert!(
        err.contains("skey_file") && err.contains("duo-skey") && err.contains("chmod 600"),
        "{err}"
    );

    // Both at once is a mistake, not a silent choice.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "[duo]\n{duo_keys}skey = \"s\"\nskey_file = \"{}\"\n",
        key.display()
    );
    let err = Config::parse(&text, toml).unwrap_err().to_string();
    assert!(err.contains("skey or skey_file, not both"), "{err}");
}
