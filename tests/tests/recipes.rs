//! The sshd recipes of docs/SSHD-RECIPES.md, word for word, as
//! `/etc/ssh/sshd_config.d/mfa.conf` beside this machine's stock Debian 12 sshd_config (so
//! `PermitRootLogin prohibit-password` is Debian's default, not ours), with the shipped PAM
//! files and the real sshd and ssh: nobody who logged in before is locked out, and normal
//! users need the second factor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfa_e2e::paths::workspace_root;
use mfa_e2e::scratch::unique_name;
use mfa_e2e::user::{TestGroup, TestUser};
use mfa_e2e::{SshClient, TestEnv};
use std::path::PathBuf;

fn shipped(name: &str) -> String {
    std::fs::read_to_string(workspace_root().join("conf").join(name)).unwrap()
}

/// The fenced block that follows the line `<!-- tested: NAME -->` in docs/SSHD-RECIPES.md.
fn documented(name: &str) -> String {
    let doc = std::fs::read_to_string(workspace_root().join("docs/SSHD-RECIPES.md")).unwrap();
    let marker = format!("<!-- tested: {name} -->");
    let mut lines = doc.lines().skip_while(|l| l.trim() != marker);
    assert!(
        lines.next().is_some(),
        "no {marker} in docs/SSHD-RECIPES.md"
    );
    let _fence = lines.find(|l| l.starts_with("```")).unwrap();
    let block: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
    block.join("\n")
}

/// The lines sshd reads (no comments, no blank lines, trimmed).
fn directives(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// The group name of the recipes, replaced by a throwaway group of this test.
const EXEMPT_GROUP: &str = "mfa-exempt";

/// One host set up by a recipe, with an automation account in the exempt group.
struct RecipeHost {
    env: TestEnv,
    automation: TestUser,
    automation_key: PathBuf,
    root_key: PathBuf,
    _group: TestGroup,
}

impl RecipeHost {
    fn start(pam: &str, mfa_conf: &str) -> RecipeHost {
        assert!(
            mfa_conf.contains(&format!("Match Group {EXEMPT_GROUP}")),
            "{mfa_conf}"
        );
        let group = TestGroup::create().unwrap();
        let conf = mfa_conf.replace(EXEMPT_GROUP, &group.name);
        let env = TestEnv::builder()
            .pam_file(pam)
            .stock_debian_sshd(&conf)
            .start()
            .unwrap();
        env.sshd_config_check().unwrap();
        let automation = TestUser::create(&unique_name()).unwrap();
        automation.join_group(&group.name).unwrap();
        let automation_key = env.authorize_account_key(&automation.name).unwrap();
        let root_key = env.authorize_account_key("root").unwrap();
        RecipeHost {
            env,
            automation,
            automation_key,
            root_key,
            _group: group,
        }
    }

    fn client(&self, account: &str) -> SshClient {
        SshClient::new(&self.env.dir, self.env.client.port, account)
    }

    /// The automation account logs in with its key alone: no prompt at all.
    fn automation_logs_in_with_its_key_alone(&self) {
        let login = self
            .client(&self.automation.name)
            .with_key(&self.automation_key)
            .login(&[], "echo cron job ran")
            .unwrap();
        assert!(login.logged_in(), "{}", self.describe(&login));
        assert_eq!(login.stdout.trim(), "cron job ran");
        assert!(login.prompts.is_empty(), "{}", self.describe(&login));
    }

    /// Root logs in with its key alone; its password is never asked for (Debian's
    /// `PermitRootLogin prohibit-password`, respected).
    fn root_logs_in_with_its_key_and_never_by_password(&self) {
        let login = self
            .client("root")
            .with_key(&self.root_key)
            .login(&[], "id -u")
            .unwrap();
        assert!(login.logged_in(), "{}", self.describe(&login));
        assert_eq!(login.stdout.trim(), "0");
        assert!(login.prompts.is_empty(), "{}", self.describe(&login));

        let by_password = self
            .client("root")
            .login(&["any password"], "id -u")
            .unwrap();
        assert!(by_password.refused(), "{}", self.describe(&by_password));
        assert!(
            by_password.prompts.is_empty(),
            "root was asked for a password: {}",
            self.describe(&by_password)
        );
        assert!(
            by_password.stderr.contains("Permission denied (publickey)"),
            "{}",
            self.describe(&by_password)
        );
    }

    fn describe(&self, login: &mfa_e2e::LoginOutcome) -> String {
        format!("{}\n{}", login.describe(), self.env.diagnostics())
    }
}

/// Recipe A (conf/sshd_config.snippet and conf/pam.d-sshd as shipped; the doc shows the
/// same lines): a normal user gives the password and a passcode, a key alone does not do;
/// the automation account and root log in with their keys, also once mfad is stopped,
/// when normal users are refused (failmode=secure).
#[test]
fn recipe_a_password_then_second_factor_keeps_automation_and_break_glass_root() {
    let snippet = shipped("sshd_config.snippet");
    assert_eq!(
        directives(&snippet),
        directives(&documented("recipe A mfa.conf")),
        "docs/SSHD-RECIPES.md recipe A and conf/sshd_config.snippet differ"
    );
    let mut host = RecipeHost::start(&shipped("pam.d-sshd"), &snippet);
    let mut device = host.env.enroll_totp().unwrap();

    let code = device.totp.fresh_code();
    let login = host.env.login(&[&code], "echo normal user").unwrap();
    assert!(login.logged_in(), "{}", host.describe(&login));
    assert_eq!(login.stdout.trim(), "normal user");
    assert_eq!(login.prompts.len(), 2, "{}", host.describe(&login));
    assert!(
        login.prompts[0].ends_with("Password: "),
        "{}",
        login.describe()
    );
    assert!(
        login.prompts[1].ends_with("Passcode: "),
        "{}",
        login.describe()
    );

    // A key is not enough for a normal user: sshd still asks keyboard-interactive.
    let key = host.env.authorize_account_key(host.env.username()).unwrap();
    let key_only = host
        .env
        .client
        .with_key(&key)
        .login(&[], "echo key alone")
        .unwrap();
    assert!(!key_only.logged_in(), "{}", host.describe(&key_only));
    assert_eq!(
        key_only.prompts_containing("Password: "),
        1,
        "{}",
        key_only.describe()
    );

    host.automation_logs_in_with_its_key_alone();
    host.root_logs_in_with_its_key_and_never_by_password();

    host.env.stop_mfad();
    let code = device.totp.fresh_code();
    let refused = host.env.login(&[&code], "echo mfad is down").unwrap();
    assert!(refused.refused(), "{}", host.describe(&refused));
    host.root_logs_in_with_its_key_and_never_by_password();
    host.automation_logs_in_with_its_key_alone();
}

/// Recipe B (the doc's mfa.conf, conf/pam.d-sshd-key): a normal user gives the key and a
/// passcode only; without the key nothing is asked; the automation account and root log in
/// with their keys, also once mfad is stopped.
#[test]
fn recipe_b_key_then_second_factor_keeps_automation_and_break_glass_root() {
    let mut host = RecipeHost::start(&shipped("pam.d-sshd-key"), &documented("recipe B mfa.conf"));
    let mut device = host.env.enroll_totp().unwrap();
    let key = host.env.authorize_account_key(host.env.username()).unwrap();
    let with_key = host.env.client.with_key(&key);

    let code = device.totp.fresh_code();
    let login = with_key.login(&[&code], "echo key and code").unwrap();
    assert!(login.logged_in(), "{}", host.describe(&login));
    assert_eq!(login.stdout.trim(), "key and code");
    assert_eq!(login.prompts.len(), 1, "{}", host.describe(&login));
    assert!(
        login.prompts[0].ends_with("Passcode: "),
        "{}",
        login.describe()
    );

    let wrong = device.totp.wrong_code();
    let refused = with_key
        .login(&[&wrong, &wrong, &wrong], "echo no")
        .unwrap();
    assert!(refused.refused(), "{}", host.describe(&refused));

    // Without the key, neither the password nor a code is even asked for.
    let code = device.totp.fresh_code();
    let no_key = host.env.login(&[&code], "echo no key").unwrap();
    assert!(no_key.refused(), "{}", host.describe(&no_key));
    assert!(no_key.prompts.is_empty(), "{}", no_key.describe());

    host.automation_logs_in_with_its_key_alone();
    host.root_logs_in_with_its_key_and_never_by_password();

    host.env.stop_mfad();
    let code = device.totp.fresh_code();
    let down = with_key.login(&[&code], "echo mfad is down").unwrap();
    assert!(down.refused(), "{}", host.describe(&down));
    host.root_logs_in_with_its_key_and_never_by_password();
    host.automation_logs_in_with_its_key_alone();
}

/// "Turning it off" in the documented order: once the pam_mfa line is gone, with mfa.conf
/// still in place, the password alone logs in, and the automation account and root still do.
#[test]
fn turning_it_off_pam_line_first_leaves_password_logins_working() {
    let snippet = shipped("sshd_config.snippet");
    let host = RecipeHost::start(&shipped("pam.d-sshd"), &snippet);
    let _device = host.env.enroll_totp().unwrap();
    let service = std::path::Path::new("/etc/pam.d").join(host.env.pam_service());
    let pam = std::fs::read_to_string(&service).unwrap();
    let without: String = pam
        .lines()
        .filter(|l| !l.contains("pam_mfa"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without, pam);
    std::fs::write(&service, without).unwrap();

    let login = host.env.login(&[], "echo password alone").unwrap();
    assert!(login.logged_in(), "{}", host.describe(&login));
    assert_eq!(login.prompts.len(), 1, "{}", host.describe(&login));
    assert!(
        login.prompts[0].ends_with("Password: "),
        "{}",
        login.describe()
    );
    host.automation_logs_in_with_its_key_alone();
    host.root_logs_in_with_its_key_and_never_by_password();
}

/// What docs/LOGS.md tells auditors about the ForceCommand setup: for a session the helper
/// refuses, sshd logs the accepted key and starts the session; only mfad's decision line
/// says the second factor failed (and the command never ran).
#[test]
fn forcecommand_refusal_is_an_accepted_key_and_a_session_to_sshd_and_a_deny_to_mfad() {
    use mfa_e2e::env::{SftpSubsystem, SshSetup};
    let env = TestEnv::builder()
        .setup(SshSetup::KeyThenLoginPrompt(SftpSubsystem::Server))
        .start()
        .unwrap();
    let _device = env.enroll_totp().unwrap();
    let marker = env.dir.join("ran");
    let run = env
        .client
        .login(&[], &format!("touch {}", marker.display()))
        .unwrap();
    assert!(!run.logged_in(), "{}", run.describe());
    assert!(!marker.exists(), "the command ran");

    let user = env.username();
    let sshd = env.sshd_log();
    assert!(
        sshd.contains(&format!("Accepted publickey for {user} from 127.0.0.1")),
        "{}",
        env.diagnostics()
    );
    assert!(
        sshd.lines().any(
            |l| l.starts_with("Starting session: forced-command (config)")
                && l.contains(&format!(" for {user} from 127.0.0.1"))
        ),
        "{}",
        env.diagnostics()
    );
    assert!(
        !sshd.contains("Failed "),
        "sshd logged a failure: {}",
        env.diagnostics()
    );
    let mfad = env.mfad_log();
    assert!(
        mfad.contains(&format!(
            "decision user={user} rhost=127.0.0.1 service=mfa-login-prompt"
        )) && mfad.contains("outcome=deny"),
        "{}",
        env.diagnostics()
    );
}
