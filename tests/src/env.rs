//! One test's world: a throwaway user, a private mfad, a private PAM service and sshd.
//!
//! Dropping a [`TestEnv`] stops sshd and mfad, removes the PAM service, the user and the
//! directory, in that order, also while a failing test unwinds. A failing test also gets the
//! daemon's and sshd's logs printed.

use crate::bail;
use crate::cli::{CliOutput, MfaCli, copy_for_users, parse_bypass_codes};
use crate::error::{Context, Result};
use crate::mfad::{Mfad, MfadConfig};
use crate::paths::{built, require_root};
use crate::scratch::{ScratchDir, unique_name};
use crate::ssh::{LoginOutcome, SshClient};
use crate::sshd::{PamService, PrivateSshd, pam_stack};
use crate::totp::TotpSecret;
use crate::user::TestUser;
use std::path::PathBuf;

/// pam_mfa's answer when mfad cannot be reached.
pub use mfa_proto::FailMode;

/// How sshd authenticates a login, and who asks for the second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshSetup {
    /// keyboard-interactive only: the password, then pam_mfa, in one PAM conversation.
    PasswordThenPam,
    /// A key first, then keyboard-interactive (password, then pam_mfa); sshd shows the key to
    /// PAM (`SSH_AUTH_INFO_0`).
    KeyThenPam,
    /// A key only; `ForceCommand mfa-login-prompt` asks for the second factor, then runs the
    /// shell or command. `DisableForwarding yes`, as the helper is the only gate.
    KeyThenLoginPrompt(SftpSubsystem),
}

/// What `Subsystem sftp` names in sshd's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SftpSubsystem {
    /// `/usr/lib/openssh/sftp-server`, a program the helper runs through the user's shell.
    Server,
    /// `internal-sftp`: the helper gets the word and runs its `--sftp-server` instead.
    Internal,
}

pub struct TestEnvBuilder {
    config: MfadConfig,
    failmode: FailMode,
    second_factor: bool,
    module_timeout: u64,
    pam_file: Option<String>,
    sshd_config_head: String,
    pam_args: String,
    setup: SshSetup,
    stock_mfa_conf: Option<String>,
}

impl TestEnvBuilder {
    /// Runs sshd on a copy of this machine's stock Debian `/etc/ssh/sshd_config` with
    /// `mfa_conf` as `sshd_config.d/mfa.conf` (see [`PrivateSshd::start_stock_debian`])
    /// instead of the harness's own config; [`Self::sshd_config_head`] and
    /// [`Self::setup`] are then not used. Keys for any account go through
    /// [`TestEnv::authorize_account_key`].
    pub fn stock_debian_sshd(mut self, mfa_conf: &str) -> Self {
        self.stock_mfa_conf = Some(mfa_conf.to_string());
        self
    }

    pub fn failmode(mut self, mode: FailMode) -> Self {
        self.failmode = mode;
        self
    }

    /// `unenrolled = "allow"` instead of the default "deny".
    pub fn allow_unenrolled(mut self) -> Self {
        self.config.unenrolled = "allow".into();
        self
    }

    /// `unenrolled = MODE`: "deny" (default), "allow" or "enroll".
    pub fn unenrolled(mut self, mode: &str) -> Self {
        self.config.unenrolled = mode.into();
        self
    }

    /// pam_mfa's `timeout=` argument: how long it waits for each message of mfad.
    pub fn module_timeout(mut self, secs: u64) -> Self {
        self.module_timeout = secs;
        self
    }

    /// Uses `text` as the PAM service file instead of the harness's minimal stack, with
    /// `pam_mfa.so` replaced by the built module and `/run/mfa/mfad.sock` by this test's socket
    /// (for checking the shipped conf/pam.d-sshd).
    pub fn pam_file(mut self, text: &str) -> Self {
        self.pam_file = Some(text.to_string());
        self
    }

    /// Lines put first in sshd's config, where they win over the harness's own.
    pub fn sshd_config_head(mut self, text: &str) -> Self {
        self.sshd_config_head = text.to_string();
        self
    }

    /// More arguments for the pam_mfa line, e.g. `mode=auto`.
    pub fn pam_module_args(mut self, args: &str) -> Self {
        self.pam_args = args.to_string();
        self
    }

    /// How logins authenticate (default: [`SshSetup::PasswordThenPam`]).
    pub fn setup(mut self, setup: SshSetup) -> Self {
        self.setup = setup;
        self
    }

    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.max_attempts = n;
        self
    }

    pub fn lockout(mut self, max_failures: u32, duration_secs: u64) -> Self {
        self.config.lockout_max_failures = max_failures;
        self.config.lockout_duration = duration_secs;
        self
    }

    /// Adds `text` to the generated mfad.toml (see [`MfadConfig::extra_toml`]): the
    /// out-of-band sections, `wait_prompt`, and the like. Each call's top-level keys stay
    /// top-level, also after an earlier call's tables.
    pub fn mfad_toml(mut self, text: &str) -> Self {
        let (top, tables) = crate::mfad::split_top_level(text);
        self.config.extra_toml = format!("{top}{}{tables}", self.config.extra_toml);
        self
    }

    /// A PAM stack with the password only, no pam_mfa and no mfad: checks the harness itself.
    pub fn without_second_factor(mut self) -> Self {
        self.second_factor = false;
        self
    }

    pub fn start(self) -> Result<TestEnv> {
        TestEnv::start(self)
    }
}

/// A user's enrolled authenticator: its secret and the codes the test has spent.
pub struct Enrolment {
    pub totp: TotpSecret,
    pub output: CliOutput,
}

pub struct TestEnv {
    // Dropped in this order by `Drop for TestEnv`; the Options let it take them one by one.
    sshd: Option<PrivateSshd>,
    mfad: Option<Mfad>,
    pam: Option<PamService>,
    pub user: Option<TestUser>,
    scratch: Option<ScratchDir>,
    pub name: String,
    pub config: MfadConfig,
    pub failmode: FailMode,
    pub client: SshClient,
    pub cli: MfaCli,
    pub dir: PathBuf,
    /// The user's first key pair (private key path), in the setups that use keys.
    pub key: Option<PathBuf>,
}

impl TestEnv {
    /// A default world: failmode=secure, unenrolled=deny, 3 attempts, lock after 10.
    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder {
            config: MfadConfig::default(),
            failmode: FailMode::Secure,
            second_factor: true,
            module_timeout: 10,
            pam_file: None,
            sshd_config_head: String::new(),
            pam_args: String::new(),
            setup: SshSetup::PasswordThenPam,
            stock_mfa_conf: None,
        }
    }

    pub fn new() -> Result<TestEnv> {
        Self::builder().start()
    }

    fn start(b: TestEnvBuilder) -> Result<TestEnv> {
        require_root()?;
        let name = unique_name();
        let scratch = ScratchDir::new(&name)?;
        let dir = scratch.path().to_path_buf();
        let bin = scratch.subdir("bin", 0o755)?;
        let (cli, module) = if b.second_factor {
            let cli = MfaCli {
                program: copy_for_users(&built("mfa")?, &bin)?,
                socket: PathBuf::new(),
            };
            (cli, built("libpam_mfa.so")?)
        } else {
            let cli = MfaCli {
                program: PathBuf::new(),
                socket: PathBuf::new(),
            };
            (cli, PathBuf::new())
        };
        let user = TestUser::create(&name)?;
        let mut env = TestEnv {
            sshd: None,
            mfad: None,
            pam: None,
            client: SshClient::new(&dir, 0, &user.name),
            user: Some(user),
            scratch: Some(scratch),
            name: name.clone(),
            config: b.config.clone(),
            failmode: b.failmode,
            cli,
            dir: dir.clone(),
            key: None,
        };
        let service = env.pam_service();
        let mfa_line = if b.second_factor {
            let mfad_dir = dir.join("mfad");
            std::fs::create_dir_all(&mfad_dir).context("creating mfad dir")?;
            set_mode(&mfad_dir, 0o755)?;
            let mfad = Mfad::start(&mfad_dir, &b.config)?;
            env.cli.socket = mfad.socket.clone();
            let line = format!(
                "auth required {} socket={} failmode={} timeout={} connect_timeout=2 {}",
                module.display(),
                mfad.socket.display(),
                b.failmode.as_str(),
                b.module_timeout,
                b.pam_args
            );
            env.mfad = Some(mfad);
            Some(line)
        } else {
            None
        };
        let pam_text = match &b.pam_file {
            Some(text) => text
                .replace("pam_mfa.so", &module.display().to_string())
                .replace(
                    mfa_proto_default_socket(),
                    &env.cli.socket.display().to_string(),
                ),
            None => pam_stack(mfa_line.as_deref()),
        };
        env.pam = Some(PamService::install(&service, &pam_text)?);
        let mut head = b.sshd_config_head.clone();
        if b.setup != SshSetup::PasswordThenPam {
            env.key = Some(env.add_user_key("first")?);
            head.push_str(&setup_config(b.setup, &env.cli.socket, b.failmode, &bin)?);
        }
        let sshd_dir = dir.join("sshd");
        std::fs::create_dir_all(&sshd_dir).context("creating sshd dir")?;
        let sshd = match &b.stock_mfa_conf {
            Some(mfa_conf) => {
                let keys = dir.join(AUTHORIZED_KEYS_DIR);
                std::fs::create_dir_all(&keys).context("creating the authorized keys dir")?;
                set_mode(&keys, 0o755)?;
                PrivateSshd::start_stock_debian(&sshd_dir, &service, mfa_conf, &keys)?
            }
            None => PrivateSshd::start(&sshd_dir, &service, &head)?,
        };
        env.client = SshClient::new(&dir, sshd.port, &env.user()?.name);
        if let Some(key) = &env.key {
            env.client = env.client.with_key(key);
        }
        env.sshd = Some(sshd);
        Ok(env)
    }

    /// A new key pair (no passphrase) the user may log in with; returns the private key.
    pub fn add_user_key(&self, name: &str) -> Result<PathBuf> {
        let keys = self.dir.join("keys");
        std::fs::create_dir_all(&keys).context("creating keys dir")?;
        set_mode(&keys, 0o700)?;
        let private = keys.join(format!("id_{name}"));
        crate::process::run_ok(
            std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("mfa-e2e-{name}"))
                .arg("-f")
                .arg(&private),
        )?;
        let public = std::fs::read_to_string(private.with_extension("pub"))
            .context("reading the new public key")?;
        self.user()?.authorize_key(&public)?;
        Ok(private)
    }

    /// With [`TestEnvBuilder::stock_debian_sshd`]: a new key pair (no passphrase) that
    /// `account` (any account, `root` too) may log in with, listed in this test's own
    /// authorized keys file for it (no home directory is touched); returns the private key.
    pub fn authorize_account_key(&self, account: &str) -> Result<PathBuf> {
        let keys = self.dir.join("keys");
        std::fs::create_dir_all(&keys).context("creating keys dir")?;
        set_mode(&keys, 0o700)?;
        let private = keys.join(format!("id_account_{account}"));
        crate::process::run_ok(
            std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("mfa-e2e-{account}"))
                .arg("-f")
                .arg(&private),
        )?;
        let public = std::fs::read_to_string(private.with_extension("pub"))
            .context("reading the new public key")?;
        let list = self.dir.join(AUTHORIZED_KEYS_DIR).join(account);
        let mut text = std::fs::read_to_string(&list).unwrap_or_default();
        text.push_str(public.trim());
        text.push('\n');
        crate::scratch::write_file(&list, &text, 0o644)?;
        Ok(private)
    }

    /// `sshd -t` on the running sshd's config (the stock one with the dropped-in files).
    pub fn sshd_config_check(&self) -> Result<()> {
        match &self.sshd {
            Some(sshd) => sshd.check_config(),
            None => crate::bail!("sshd is not running"),
        }
    }

    pub fn user(&self) -> Result<&TestUser> {
        self.user
            .as_ref()
            .ok_or_else(|| crate::HarnessError::new("user already removed"))
    }

    pub fn username(&self) -> &str {
        self.user.as_ref().map(|u| u.name.as_str()).unwrap_or("")
    }

    pub fn password(&self) -> &str {
        self.user
            .as_ref()
            .map(|u| u.password.as_str())
            .unwrap_or("")
    }

    /// Enrols the user's authenticator app through `mfa enroll totp`, run as the user.
    pub fn enroll_totp(&self) -> Result<Enrolment> {
        let (totp, output) = self.cli.enroll_totp(
            self.user()?,
            self.config.totp_digits,
            self.config.totp_period,
            self.config.totp_window,
        )?;
        Ok(Enrolment { totp, output })
    }

    /// `mfa bypass-codes` as the user, confirming with a fresh code; returns the ten codes.
    pub fn user_bypass_codes(&self, enrolment: &mut Enrolment) -> Result<Vec<String>> {
        let code = enrolment.totp.fresh_code();
        let out = self
            .cli
            .as_user(self.user()?, &["bypass-codes"], &format!("{code}\n"))?;
        codes_from(out)
    }

    /// `mfa admin bypass-codes USER` as root; returns the ten codes.
    pub fn admin_bypass_codes(&self) -> Result<Vec<String>> {
        let out = self
            .cli
            .as_root(&["admin", "bypass-codes", self.username()], "")?;
        codes_from(out)
    }

    /// `mfa admin ACTION USER` as root.
    pub fn admin(&self, action: &str) -> Result<CliOutput> {
        self.cli.as_root(&["admin", action, self.username()], "")
    }

    /// An ssh login answering the password, then each of `codes`, running `command`.
    pub fn login(&self, codes: &[&str], command: &str) -> Result<LoginOutcome> {
        let mut answers = vec![self.password()];
        answers.extend_from_slice(codes);
        self.client.login(&answers, command)
    }

    /// An interactive login through a pty (expect), typing the password and `code`.
    pub fn terminal_login(&self, code: &str) -> Result<crate::interactive::Transcript> {
        crate::interactive::terminal_login(
            &self.dir,
            self.client.port,
            self.username(),
            self.password(),
            code,
        )
    }

    pub fn mfad_log(&self) -> String {
        self.mfad.as_ref().map(Mfad::log).unwrap_or_default()
    }

    pub fn sshd_log(&self) -> String {
        self.sshd.as_ref().map(PrivateSshd::log).unwrap_or_default()
    }

    /// Stops mfad, as a crash or an admin would.
    pub fn stop_mfad(&mut self) {
        if let Some(m) = self.mfad.as_mut() {
            m.stop();
        }
    }

    /// The socket pam_mfa and the CLI use.
    pub fn socket(&self) -> &std::path::Path {
        &self.cli.socket
    }

    /// The PAM service (and sshd program) name of this world.
    pub fn pam_service(&self) -> String {
        format!("sshd-{}", self.name)
    }

    /// The port mfa-web listens on, when the config put [`crate::mfad::APPROVAL_PORT`] in
    /// `[approval] listen`.
    pub fn web_port(&self) -> Option<u16> {
        self.mfad.as_ref().and_then(|m| m.approval_port)
    }

    /// The process ids of mfad and of the mfa-web beside it, while they run.
    pub fn process_ids(&self) -> (Option<u32>, Option<u32>) {
        let mfad = self.mfad.as_ref();
        (mfad.and_then(Mfad::pid), mfad.and_then(Mfad::web_pid))
    }

    pub fn mfad_running(&mut self) -> bool {
        self.mfad.as_mut().is_some_and(Mfad::is_running)
    }

    /// The logs of this world, for assertion messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "=== mfad stderr ===\n{}\n=== sshd log ===\n{}",
            self.mfad_log(),
            self.sshd_log()
        )
    }
}

/// sshd_config lines of a setup that uses keys (put first: they win over the harness's).
fn setup_config(
    setup: SshSetup,
    socket: &std::path::Path,
    failmode: FailMode,
    bin: &std::path::Path,
) -> Result<String> {
    let mut c = String::from("# The login setup of this test.\nPubkeyAuthentication yes\n");
    match setup {
        SshSetup::PasswordThenPam => {}
        SshSetup::KeyThenPam => {
            c.push_str("AuthenticationMethods publickey,keyboard-interactive\n");
        }
        SshSetup::KeyThenLoginPrompt(subsystem) => {
            let helper = copy_for_users(&built("mfa-login-prompt")?, bin)?;
            c.push_str(&format!(
                "AuthenticationMethods publickey\n\
                 ForceCommand {} --socket {} --failmode {}\n\
                 DisableForwarding yes\n",
                helper.display(),
                socket.display(),
                failmode.as_str()
            ));
            c.push_str(match subsystem {
                SftpSubsystem::Server => "Subsystem sftp /usr/lib/openssh/sftp-server\n",
                SftpSubsystem::Internal => "Subsystem sftp internal-sftp\n",
            });
        }
    }
    Ok(c)
}

/// Where [`TestEnv::authorize_account_key`] keeps one authorized keys file per account.
const AUTHORIZED_KEYS_DIR: &str = "authorized_keys";

/// The socket path the shipped examples use.
fn mfa_proto_default_socket() -> &'static str {
    "/run/mfa/mfad.sock"
}

fn codes_from(out: CliOutput) -> Result<Vec<String>> {
    let codes = parse_bypass_codes(&out.stdout);
    if out.status != Some(0) || codes.len() != 10 {
        bail!("expected ten bypass codes:\n{}", out.describe());
    }
    Ok(codes)
}

fn set_mode(path: &std::path::Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .context(format!("chmod {}", path.display()))
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- mfa-e2e {} ----\n{}", self.name, self.diagnostics());
        }
        drop(self.sshd.take());
        drop(self.mfad.take());
        drop(self.pam.take());
        drop(self.user.take());
        drop(self.scratch.take());
    }
}
