//! The examples an admin copies (conf/pam.d-sshd, conf/sshd_config.snippet) work as shipped:
//! the full Debian sshd PAM stack with the one pam_mfa line asks for the password, then the
//! second factor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfa_e2e::TestEnv;
use mfa_e2e::paths::workspace_root;
use mfa_e2e::scratch::{ScratchDir, unique_name};

fn shipped(name: &str) -> String {
    std::fs::read_to_string(workspace_root().join("conf").join(name)).unwrap()
}

#[test]
fn shipped_pam_and_sshd_examples_ask_for_password_then_passcode() {
    let env = TestEnv::builder()
        .pam_file(&shipped("pam.d-sshd"))
        .sshd_config_head(&shipped("sshd_config.snippet"))
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();

    let code = device.totp.fresh_code();
    let login = env
        .login(&[&code], "echo through the shipped stack")
        .unwrap();
    assert!(login.logged_in(), "{}", login.describe());
    assert_eq!(login.stdout.trim(), "through the shipped stack");
    assert_eq!(login.prompts.len(), 2, "{}", login.describe());
    assert!(
        login.prompts[1].ends_with("Passcode: "),
        "{}",
        login.describe()
    );

    let wrong = device.totp.wrong_code();
    let refused = env.login(&[&wrong, &wrong, &wrong], "echo no").unwrap();
    assert!(refused.refused(), "{}", refused.describe());
}

#[test]
fn shipped_pam_stack_refuses_a_wrong_password_before_the_second_factor() {
    let env = TestEnv::builder()
        .pam_file(&shipped("pam.d-sshd"))
        .sshd_config_head(&shipped("sshd_config.snippet"))
        .start()
        .unwrap();
    let _device = env.enroll_totp().unwrap();

    let login = env
        .client
        .login(&["wrong password", "123456"], "echo no")
        .unwrap();
    assert!(login.refused(), "{}", login.describe());
    assert_eq!(
        login.prompts_containing("Passcode: "),
        0,
        "{}",
        login.describe()
    );
}

/// The `mfa.conf` blocks of docs/transfer-hosts.md and conf/sshd_config.snippet, each put in
/// `sshd_config.d` beside a copy of this machine's stock Debian `/etc/ssh/sshd_config`:
/// `sshd -t` accepts them (a second `Subsystem sftp` line would fail: "already defined").
#[test]
fn documented_sshd_snippets_pass_sshd_t_beside_debians_stock_sshd_config() {
    mfa_e2e::paths::require_root().unwrap();
    let doc = std::fs::read_to_string(workspace_root().join("docs/transfer-hosts.md")).unwrap();
    let mut blocks = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("`/etc/ssh/sshd_config.d/mfa.conf`") {
            let _fence = lines.find(|l| l.starts_with("```")).unwrap();
            let block: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            blocks.push(block.join("\n"));
        }
    }
    assert_eq!(blocks.len(), 2, "the two mfa.conf blocks of the doc");
    blocks.push(shipped("sshd_config.snippet"));
    let stock = std::fs::read_to_string("/etc/ssh/sshd_config").unwrap();
    assert!(
        stock.contains("Subsystem"),
        "a stock sshd_config with its sftp line"
    );
    for (i, block) in blocks.iter().enumerate() {
        let scratch = ScratchDir::new(&unique_name()).unwrap();
        let confd = scratch.subdir("sshd_config.d", 0o755).unwrap();
        std::fs::write(confd.join("mfa.conf"), format!("{block}\n")).unwrap();
        let main = scratch.join("sshd_config");
        std::fs::write(
            &main,
            stock.replace(
                "Include /etc/ssh/sshd_config.d/*.conf",
                &format!("Include {}/*.conf", confd.display()),
            ),
        )
        .unwrap();
        let out = std::process::Command::new("/usr/sbin/sshd")
            .arg("-t")
            .arg("-f")
            .arg(&main)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "block {i} fails sshd -t: {}\n{block}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
