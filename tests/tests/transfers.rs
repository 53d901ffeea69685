//! scp, sftp, rsync and `ssh host cmd` on hosts that ask for a second factor, in both
//! setups: the PAM-only one (keyboard-interactive, password then pam_mfa `mode=auto`), and
//! publickey with the `mfa-login-prompt` ForceCommand helper. Each transfer uses the user's
//! default method, files arrive byte-identical, and exit statuses pass through; a user whose
//! default cannot work without a terminal is refused at once, never left hanging.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::env::{SftpSubsystem, SshSetup};
use mfa_e2e::fake_phone::{Answer, FakePhone, PUSH_TOKEN};
use mfa_e2e::mfad::APPROVAL_PORT;
use mfa_e2e::{LoginOutcome, SshClient, TestEnv, TestEnvBuilder};
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Big enough for many sftp/scp packets and several rsync blocks.
const BIG: u64 = 3 * 1024 * 1024 + 12_345;

/// A file of `size` random bytes under the test's directory.
fn random_file(env: &TestEnv, name: &str, size: u64) -> PathBuf {
    let path = env.dir.join(name);
    let mut bytes = Vec::new();
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(size)
        .read_to_end(&mut bytes)
        .unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Where `name` lands in the user's home.
fn in_home(env: &TestEnv, name: &str) -> PathBuf {
    Path::new(&env.user().unwrap().home).join(name)
}

fn assert_same_file(expected: &Path, got: &Path) {
    let a = std::fs::read(expected).unwrap();
    let b = std::fs::read(got).unwrap_or_else(|e| panic!("{} did not arrive: {e}", got.display()));
    assert!(
        a == b,
        "{} ({} bytes) differs from {} ({} bytes)",
        got.display(),
        b.len(),
        expected.display(),
        a.len()
    );
}

/// The PAM-only setup of a transfer host: pam_mfa with `mode=auto`, no menu.
fn pam_transfer_host() -> TestEnv {
    TestEnv::builder()
        .pam_module_args("mode=auto")
        .start()
        .unwrap()
}

/// The run saw the password, then one bare passcode prompt: no menu, no options.
fn assert_one_passcode_prompt_without_menu(run: &LoginOutcome) {
    assert_eq!(run.prompts.len(), 2, "{}", run.describe());
    assert!(run.prompts[0].ends_with("Password: "), "{}", run.describe());
    assert!(run.prompts[1].ends_with("Passcode: "), "{}", run.describe());
    for menu_word in ["option", "select", "Push to"] {
        assert!(
            !run.shown().contains(menu_word),
            "mode=auto showed a menu ({menu_word:?}): {}",
            run.describe()
        );
    }
}

/// How long a push waits for the phone (`approval.token_ttl`).
const PUSH_BOUND: u64 = 10;
const PUSH_WAITING: &str =
    "Pushed a login request to your device...\nPress Enter once you have answered it: ";

/// A host whose mfad pushes to a fake phone that approves. Fields drop in order: the host
/// first, then the phone.
struct PushHost {
    env: TestEnv,
    phone: FakePhone,
}

impl PushHost {
    fn start(builder: TestEnvBuilder, wait_prompt: bool) -> PushHost {
        let phone = FakePhone::start().unwrap();
        let port = APPROVAL_PORT;
        let toml = format!(
            "wait_prompt = {wait_prompt}\n\
             [approval]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
             token_ttl = {PUSH_BOUND}\n\
             [push]\nnotifier = \"ntfy\"\nurl = \"{ntfy}\"\ntoken = \"{PUSH_TOKEN}\"\ntimeout = 3\n",
            ntfy = phone.ntfy_url(),
        );
        let env = builder.module_timeout(30).mfad_toml(&toml).start().unwrap();
        PushHost { env, phone }
    }

    /// `mfa add push` as the user, answering `input` (a fresh second factor, when the user
    /// already has one, then Enter at the test push) and Enter once subscribed to the
    /// generated topic; the phone approves the test push.
    fn add_push(&self, input: &str) {
        let out = self
            .env
            .cli
            .as_user(
                self.env.user().unwrap(),
                &["add", "push", "--name", "Pixel 8"],
                // One more Enter: subscribed to the topic mfad generated.
                &format!("{input}\n"),
            )
            .unwrap();
        assert_eq!(out.status, Some(0), "{}", out.describe());
        assert!(
            out.stdout.contains("Added \"Pixel 8\""),
            "{}",
            out.describe()
        );
    }

    /// A user whose only device, and so the default, is the push.
    fn with_push_default(builder: TestEnvBuilder, wait_prompt: bool) -> PushHost {
        let host = PushHost::start(builder, wait_prompt);
        host.add_push("\n");
        host
    }
}

/// What every client run of [`every_client_carries_files_and_status`] must have shown.
type PromptCheck = dyn Fn(&str, &LoginOutcome);

/// `ssh host cmd` (output, environment, exit status), scp both ways (sftp and legacy
/// protocol), `sftp -b` both ways and rsync both ways, each a new connection that passes the
/// second factor with `answers`; files arrive byte-identical.
fn every_client_carries_files_and_status(
    env: &TestEnv,
    client: &SshClient,
    answers: &[&str],
    check: &PromptCheck,
) {
    let home = env.user().unwrap().home.clone();
    let run = |what: &str, out: LoginOutcome| {
        println!("== {what}\n{}", out.describe());
        check(what, &out);
        out
    };

    let out = run(
        "ssh host cmd",
        client
            .login(
                answers,
                "printf '%s %s\\n' \"$USER\" \"$HOME\"; echo err >&2",
            )
            .unwrap(),
    );
    assert_eq!(out.status, Some(0), "{}", out.describe());
    assert_eq!(
        out.stdout,
        format!("{} {home}\n", env.username()),
        "stdout must be exactly the command's output: {}",
        out.describe()
    );
    assert!(out.stderr.contains("err\n"), "{}", out.describe());
    let out = run("exit 7", client.login(answers, "exit 7").unwrap());
    assert_eq!(out.status, Some(7), "{}", out.describe());

    let local = random_file(env, "big.bin", BIG);
    for (what, extra) in [("scp", &[][..]), ("scp -O", &["-O"][..])] {
        let name = format!("{}.bin", what.replace(' ', ""));
        let up = run(
            what,
            client
                .scp(extra, &local, client.remote(&name), answers)
                .unwrap(),
        );
        assert_eq!(up.status, Some(0), "{what}: {}", up.describe());
        assert_same_file(&local, &in_home(env, &name));
        let back = env.dir.join(format!("back-{name}"));
        let down = run(
            what,
            client
                .scp(extra, client.remote(&name), &back, answers)
                .unwrap(),
        );
        assert_eq!(down.status, Some(0), "{what}: {}", down.describe());
        assert_same_file(&local, &back);
    }

    let back = env.dir.join("back-sftp.bin");
    let batch = env.dir.join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {} sftp.bin\nget sftp.bin {}\n",
            local.display(),
            back.display()
        ),
    )
    .unwrap();
    let out = run("sftp -b", client.sftp_batch(&batch, answers).unwrap());
    assert_eq!(out.status, Some(0), "{}", out.describe());
    assert_same_file(&local, &in_home(env, "sftp.bin"));
    assert_same_file(&local, &back);

    let remote = client.remote("rsync.bin");
    let up = run(
        "rsync up",
        client
            .rsync(
                &[OsStr::new("-a"), local.as_os_str(), OsStr::new(&remote)],
                answers,
            )
            .unwrap(),
    );
    assert_eq!(up.status, Some(0), "{}", up.describe());
    assert_same_file(&local, &in_home(env, "rsync.bin"));
    let back = env.dir.join("back-rsync.bin");
    let down = run(
        "rsync down",
        client
            .rsync(
                &[OsStr::new("-a"), OsStr::new(&remote), back.as_os_str()],
                answers,
            )
            .unwrap(),
    );
    assert_eq!(down.status, Some(0), "{}", down.describe());
    assert_same_file(&local, &back);
}

/// Connections [`every_client_carries_files_and_status`] opens.
const CONNECTIONS: usize = 9;

// ---- PAM only, default = authenticator app ------------------------------------------------

#[test]
fn pam_auto_ssh_command_asks_one_passcode_and_passes_the_exit_status() {
    let env = pam_transfer_host();
    let mut device = env.enroll_totp().unwrap();

    let code = device.totp.fresh_code();
    let run = env.login(&[&code], "echo out; echo err >&2").unwrap();
    assert_eq!(run.status, Some(0), "{}", run.describe());
    assert_eq!(run.stdout, "out\n", "{}", run.describe());
    assert!(run.stderr.contains("err"), "{}", run.describe());
    assert_one_passcode_prompt_without_menu(&run);

    let code = device.totp.fresh_code();
    let run = env.login(&[&code], "exit 7").unwrap();
    assert_eq!(run.status, Some(7), "{}", run.describe());
    assert_one_passcode_prompt_without_menu(&run);

    let log = env.mfad_log();
    assert!(
        log.lines()
            .filter(|l| l.contains("method=totp") && l.contains("outcome=allow"))
            .count()
            >= 2,
        "{log}"
    );
}

#[test]
fn pam_auto_scp_copies_both_ways_byte_identical_after_one_passcode() {
    let env = pam_transfer_host();
    let mut device = env.enroll_totp().unwrap();
    let local = random_file(&env, "big.bin", BIG);

    let code = device.totp.fresh_code();
    let up = env
        .client
        .scp(
            &[],
            &local,
            env.client.remote("up.bin"),
            &[env.password(), &code],
        )
        .unwrap();
    assert_eq!(up.status, Some(0), "{}", up.describe());
    assert_one_passcode_prompt_without_menu(&up);
    assert_same_file(&local, &in_home(&env, "up.bin"));

    let back = env.dir.join("back.bin");
    let code = device.totp.fresh_code();
    let down = env
        .client
        .scp(
            &[],
            env.client.remote("up.bin"),
            &back,
            &[env.password(), &code],
        )
        .unwrap();
    assert_eq!(down.status, Some(0), "{}", down.describe());
    assert_one_passcode_prompt_without_menu(&down);
    assert_same_file(&local, &back);
}

#[test]
fn pam_auto_sftp_batch_puts_and_gets_after_one_passcode() {
    let env = pam_transfer_host();
    let mut device = env.enroll_totp().unwrap();
    let local = random_file(&env, "big.bin", BIG);
    let back = env.dir.join("back.bin");
    let batch = env.dir.join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {} sftp.bin\nget sftp.bin {}\n",
            local.display(),
            back.display()
        ),
    )
    .unwrap();

    let code = device.totp.fresh_code();
    let run = env
        .client
        .sftp_batch(&batch, &[env.password(), &code])
        .unwrap();
    assert_eq!(run.status, Some(0), "{}", run.describe());
    assert_one_passcode_prompt_without_menu(&run);
    assert_same_file(&local, &in_home(&env, "sftp.bin"));
    assert_same_file(&local, &back);
}

#[test]
fn pam_auto_rsync_copies_both_ways_byte_identical_after_one_passcode() {
    let env = pam_transfer_host();
    let mut device = env.enroll_totp().unwrap();
    let local = random_file(&env, "big.bin", BIG);

    let code = device.totp.fresh_code();
    let remote = env.client.remote("rsync.bin");
    let up = env
        .client
        .rsync(
            &[OsStr::new("-a"), local.as_os_str(), OsStr::new(&remote)],
            &[env.password(), &code],
        )
        .unwrap();
    assert_eq!(up.status, Some(0), "{}", up.describe());
    assert_one_passcode_prompt_without_menu(&up);
    assert_same_file(&local, &in_home(&env, "rsync.bin"));

    let back = env.dir.join("back.bin");
    let code = device.totp.fresh_code();
    let down = env
        .client
        .rsync(
            &[OsStr::new("-a"), OsStr::new(&remote), back.as_os_str()],
            &[env.password(), &code],
        )
        .unwrap();
    assert_eq!(down.status, Some(0), "{}", down.describe());
    assert_one_passcode_prompt_without_menu(&down);
    assert_same_file(&local, &back);
}

// ---- PAM only, default = push -----------------------------------------------------------

#[test]
fn pam_auto_push_default_carries_every_client_with_no_passcode_typed() {
    let host = PushHost::with_push_default(TestEnv::builder().pam_module_args("mode=auto"), true);
    let env = &host.env;
    let pushes_before = host.phone.notifications().len();
    let user = env.username().to_string();
    // The password, then the waiting text in a prompt confirmed with Enter (OpenSSH 9.2
    // shows PAM text only with a prompt); no menu, no passcode.
    let check = move |what: &str, run: &LoginOutcome| {
        assert_eq!(run.prompts.len(), 2, "{what}: {}", run.describe());
        assert!(
            run.prompts[0].ends_with("Password: "),
            "{what}: {}",
            run.describe()
        );
        assert_eq!(
            run.prompts[1],
            format!("({user}@127.0.0.1) {PUSH_WAITING}"),
            "{what}: {}",
            run.describe()
        );
        assert!(
            !run.shown().contains("option"),
            "{what}: {}",
            run.describe()
        );
    };
    every_client_carries_files_and_status(env, &env.client, &[env.password(), ""], &check);
    assert_eq!(
        host.phone.notifications().len() - pushes_before,
        CONNECTIONS,
        "one push per connection"
    );
    let log = env.mfad_log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("method=push") && l.contains("outcome=allow"))
            .count(),
        CONNECTIONS,
        "{log}"
    );
}

#[test]
fn pam_auto_push_default_without_wait_prompt_asks_only_the_password() {
    let host = PushHost::with_push_default(TestEnv::builder().pam_module_args("mode=auto"), false);
    let env = &host.env;
    let local = random_file(env, "big.bin", BIG);

    let up = env
        .client
        .scp(&[], &local, env.client.remote("up.bin"), &[env.password()])
        .unwrap();
    println!("{}", up.describe());
    assert_eq!(up.status, Some(0), "{}", up.describe());
    assert_eq!(up.prompts.len(), 1, "{}", up.describe());
    assert_same_file(&local, &in_home(env, "up.bin"));

    let run = env.login(&[], "exit 3").unwrap();
    assert_eq!(run.status, Some(3), "{}", run.describe());
    assert_eq!(run.prompts.len(), 1, "{}", run.describe());

    // The second factor was not skipped: each connection pushed once and the phone's
    // approval decided it.
    assert_eq!(
        host.phone.notifications().len(),
        1 + 2,
        "the test push of `mfa add push`, then one push per connection"
    );
    let log = env.mfad_log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains(&format!("user={}", env.username()))
                && l.contains("method=push outcome=allow"))
            .count(),
        2,
        "{log}"
    );
}

/// The same host when the phone denies: the password alone opens nothing, and mfad logs
/// the denial.
#[test]
fn pam_auto_push_default_without_wait_prompt_refuses_when_the_phone_denies() {
    let host = PushHost::with_push_default(TestEnv::builder().pam_module_args("mode=auto"), false);
    let env = &host.env;
    host.phone.on_push(Answer::Deny);
    let local = random_file(env, "small.bin", 1000);

    let up = env
        .client
        .scp(&[], &local, env.client.remote("up.bin"), &[env.password()])
        .unwrap();
    println!("{}", up.describe());
    assert_ne!(up.status, Some(0), "{}", up.describe());
    assert!(!in_home(env, "up.bin").exists(), "{}", up.describe());

    let run = env.login(&[], "echo should not run").unwrap();
    println!("{}", run.describe());
    assert!(run.refused(), "{}", run.describe());
    assert!(run.stdout.is_empty(), "{}", run.describe());

    assert_eq!(host.phone.notifications().len(), 1 + 2);
    let log = env.mfad_log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("method=push outcome=deny"))
            .count(),
        2,
        "{log}"
    );
    assert!(!log.contains("method=push outcome=allow"), "{log}");
}

// ---- publickey, then pam_mfa alone -------------------------------------------------------

/// `AuthenticationMethods publickey,keyboard-interactive` with an auth stack of pam_mfa only:
/// the key replaces the password, and the one question is the passcode.
#[test]
fn key_then_pam_mfa_alone_asks_only_the_passcode() {
    let env = TestEnv::builder()
        .setup(SshSetup::KeyThenPam)
        .pam_file(
            "auth required pam_mfa.so socket=/run/mfa/mfad.sock mode=auto\n\
             account required pam_unix.so\n\
             session required pam_unix.so\n",
        )
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();
    let local = random_file(&env, "big.bin", BIG);

    let code = device.totp.fresh_code();
    let up = env
        .client
        .scp(&[], &local, env.client.remote("up.bin"), &[&code])
        .unwrap();
    println!("{}", up.describe());
    assert_eq!(up.status, Some(0), "{}", up.describe());
    assert_eq!(up.prompts.len(), 1, "{}", up.describe());
    assert!(up.prompts[0].ends_with("Passcode: "), "{}", up.describe());
    assert_same_file(&local, &in_home(&env, "up.bin"));

    let code = device.totp.fresh_code();
    let run = env.client.login(&[&code], "exit 9").unwrap();
    assert_eq!(run.status, Some(9), "{}", run.describe());
    assert_eq!(run.prompts.len(), 1, "{}", run.describe());
}

// ---- publickey + ForceCommand mfa-login-prompt ---------------------------------------------

fn helper_host(subsystem: SftpSubsystem) -> TestEnv {
    TestEnv::builder()
        .setup(SshSetup::KeyThenLoginPrompt(subsystem))
        .start()
        .unwrap()
}

/// Every way of running something without a terminal is refused within seconds when the
/// only device is an authenticator app. Where the client shows the remote side's stderr
/// (`ssh host cmd`, `scp -O`, rsync) the refusal names the fix; sshd throws away the stderr
/// of a subsystem (sftp, and scp in its default sftp mode), so those clients only see the
/// connection close, and the reason is in mfad's log.
#[test]
fn helper_refuses_at_once_without_a_usable_default_saying_what_the_host_offers() {
    let env = helper_host(SftpSubsystem::Server);
    let _device = env.enroll_totp().unwrap();
    let local = random_file(&env, "small.bin", 1000);
    let batch = env.dir.join("batch");
    std::fs::write(&batch, "ls\n").unwrap();
    let remote = env.client.remote("x.bin");

    type Run<'a> = Box<dyn Fn() -> LoginOutcome + 'a>;
    let runs: Vec<(&str, bool, Run)> = vec![
        (
            "ssh host cmd",
            true,
            Box::new(|| env.client.login(&[], "echo should not run").unwrap()),
        ),
        (
            "scp -O",
            true,
            Box::new(|| env.client.scp(&["-O"], &local, &remote, &[]).unwrap()),
        ),
        (
            "rsync",
            true,
            Box::new(|| {
                env.client
                    .rsync(&[local.as_os_str(), OsStr::new(&remote)], &[])
                    .unwrap()
            }),
        ),
        (
            "scp (sftp mode)",
            false,
            Box::new(|| env.client.scp(&[], &local, &remote, &[]).unwrap()),
        ),
        (
            "sftp -b",
            false,
            Box::new(|| env.client.sftp_batch(&batch, &[]).unwrap()),
        ),
    ];
    let count = runs.len();
    for (what, shows_stderr, run) in runs {
        let started = Instant::now();
        let out = run();
        let took = started.elapsed();
        println!("{what} took {took:?}\n{}", out.describe());
        assert!(
            took < Duration::from_secs(5),
            "{what} took {took:?}: {}",
            out.describe()
        );
        assert_ne!(out.status, Some(0), "{what}: {}", out.describe());
        assert!(out.prompts.is_empty(), "{what}: {}", out.describe());
        assert!(out.stdout.is_empty(), "{what}: {}", out.describe());
        if shows_stderr {
            assert!(
                out.stderr.contains("push or phone call")
                    && out.stderr.contains("This host offers neither"),
                "{what}: the refusal should name the fix: {}",
                out.describe()
            );
        }
    }
    assert!(!in_home(&env, "x.bin").exists());
    let log = env.mfad_log();
    assert_eq!(
        log.matches("no usable default method for a session without a terminal")
            .count(),
        count,
        "{log}"
    );
}

#[test]
fn helper_on_a_terminal_asks_for_a_passcode_then_runs_the_shell() {
    let env = helper_host(SftpSubsystem::Server);
    let mut device = env.enroll_totp().unwrap();
    let code = device.totp.fresh_code();

    let session = mfa_e2e::interactive::terminal_key_login(&env.dir, &env.client, &code).unwrap();
    println!("{}", session.describe());

    assert_eq!(session.status, Some(0), "{}", session.describe());
    let screen = &session.screen;
    assert!(
        screen.contains(&format!("Two-factor login for {}", env.username())),
        "{screen}"
    );
    assert!(!screen.contains("Password: "), "{screen}");
    assert!(screen.contains("E2E-42"), "{screen}");
}

fn assert_no_prompt(what: &str, run: &LoginOutcome) {
    assert!(run.prompts.is_empty(), "{what}: {}", run.describe());
}

#[test]
fn helper_with_sftp_server_carries_every_client_on_an_approved_push() {
    let host = PushHost::with_push_default(
        TestEnv::builder().setup(SshSetup::KeyThenLoginPrompt(SftpSubsystem::Server)),
        true,
    );
    let env = &host.env;
    every_client_carries_files_and_status(env, &env.client, &[], &assert_no_prompt);
    assert_eq!(host.phone.notifications().len(), 1 + CONNECTIONS);
    let log = env.mfad_log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("service=mfa-login-prompt")
                && l.contains("method=push")
                && l.contains("outcome=allow"))
            .count(),
        CONNECTIONS,
        "{log}"
    );
}

#[test]
fn helper_with_internal_sftp_runs_its_sftp_server_on_an_approved_push() {
    let host = PushHost::with_push_default(
        TestEnv::builder().setup(SshSetup::KeyThenLoginPrompt(SftpSubsystem::Internal)),
        true,
    );
    let env = &host.env;
    every_client_carries_files_and_status(env, &env.client, &[], &assert_no_prompt);
    assert_eq!(host.phone.notifications().len(), 1 + CONNECTIONS);
}

#[test]
fn helper_replaces_itself_with_the_users_shell() {
    let host = PushHost::with_push_default(
        TestEnv::builder().setup(SshSetup::KeyThenLoginPrompt(SftpSubsystem::Server)),
        true,
    );
    let env = &host.env;
    // The command's shell is sshd's child: the helper exec'd it rather than waiting.
    let command = "ps -o comm= -p $PPID; echo \"$SSH_ORIGINAL_COMMAND\" | wc -c";
    let run = env.client.login(&[], command).unwrap();
    println!("{}", run.describe());
    assert_eq!(run.status, Some(0), "{}", run.describe());
    let mut lines = run.stdout.lines();
    let parent = lines.next().unwrap_or_default();
    assert!(
        parent.starts_with("sshd"),
        "parent {parent:?}: {}",
        run.describe()
    );
    // `wc -c` counts the command sshd passed on, plus echo's newline: the helper handed
    // the command through unchanged.
    assert_eq!(
        lines.next().map(str::trim),
        Some((command.len() + 1).to_string().as_str()),
        "{}",
        run.describe()
    );
    // A signal ends the command as it would without the helper.
    let killed = env.client.login(&[], "kill -TERM $$").unwrap();
    assert_eq!(killed.status, Some(255), "{}", killed.describe());
}

#[test]
fn helper_on_a_terminal_shows_the_menu_and_accepts_an_app_code() {
    let host = PushHost::start(
        TestEnv::builder().setup(SshSetup::KeyThenLoginPrompt(SftpSubsystem::Server)),
        true,
    );
    let env = &host.env;
    let mut device = env.enroll_totp().unwrap();
    // Adding the push takes a fresh second factor: a code from the app.
    let code = device.totp.fresh_code();
    host.add_push(&format!("{code}\n\n"));

    let code = device.totp.fresh_code();
    let pushes = host.phone.notifications().len();
    let session = mfa_e2e::interactive::terminal_key_login(&env.dir, &env.client, &code).unwrap();
    println!("{}", session.describe());
    assert_eq!(session.status, Some(0), "{}", session.describe());
    let screen = &session.screen;
    for shown in [
        format!("Two-factor login for {}", env.username()),
        " 1. Push to Pixel 8".to_string(),
        "Passcode or option (1-1): ".to_string(),
        "E2E-42".to_string(),
    ] {
        assert!(screen.contains(&shown), "{shown:?} not shown:\n{screen}");
    }
    assert_eq!(
        host.phone.notifications().len(),
        pushes,
        "a code needs no push"
    );
    assert!(
        env.mfad_log()
            .lines()
            .any(|l| l.contains("service=mfa-login-prompt") && l.contains("method=totp")),
        "{}",
        env.mfad_log()
    );
}

#[test]
fn helper_push_unanswered_ends_the_transfer_after_the_bound() {
    let host = PushHost::with_push_default(
        TestEnv::builder().setup(SshSetup::KeyThenLoginPrompt(SftpSubsystem::Server)),
        true,
    );
    host.phone.on_push(Answer::Ignore);
    let env = &host.env;
    let local = random_file(env, "small.bin", 1000);

    let started = Instant::now();
    let run = env
        .client
        .scp(&["-O"], &local, env.client.remote("x.bin"), &[])
        .unwrap();
    let took = started.elapsed();
    println!("took {took:?}\n{}", run.describe());
    assert_ne!(run.status, Some(0), "{}", run.describe());
    let bound = Duration::from_secs(PUSH_BOUND);
    assert!(
        took >= bound && took < bound + Duration::from_secs(10),
        "took {took:?}: {}",
        run.describe()
    );
    assert!(
        run.stderr
            .contains("No answer to the login request in time"),
        "{}",
        run.describe()
    );
    assert!(!in_home(env, "x.bin").exists());
}

#[test]
fn helper_remembers_an_approved_push_for_the_same_address_and_key() {
    let host = PushHost::with_push_default(
        TestEnv::builder()
            .setup(SshSetup::KeyThenLoginPrompt(SftpSubsystem::Server))
            .mfad_toml("[policy]\nremember_for = 300\n"),
        true,
    );
    let env = &host.env;
    let local = random_file(env, "small.bin", 1000);
    let pushes = || host.phone.notifications().len();
    let copy = |client: &SshClient, name: &str| {
        let run = client.scp(&[], &local, client.remote(name), &[]).unwrap();
        assert_eq!(run.status, Some(0), "{name}: {}", run.describe());
        assert_same_file(&local, &in_home(env, name));
    };

    let before = pushes();
    copy(&env.client, "first.bin");
    assert_eq!(pushes(), before + 1);
    // The next connection of the same client: no push.
    copy(&env.client, "second.bin");
    assert_eq!(pushes(), before + 1);
    // Another key, or another address: pushed again.
    let other_key = env.add_user_key("second").unwrap();
    copy(&env.client.with_key(&other_key), "other-key.bin");
    assert_eq!(pushes(), before + 2);
    copy(&env.client.from_address("127.0.0.2"), "other-address.bin");
    assert_eq!(pushes(), before + 3);
    assert_eq!(
        env.mfad_log()
            .matches("reason=\"remembered from this address and key\"")
            .count(),
        1,
        "{}",
        env.mfad_log()
    );
}
