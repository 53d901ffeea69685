//! Push, phone call, SMS passcodes and hardware tokens through the private sshd, with the
//! real OpenSSH client, and a fake phone (local ntfy and Twilio) that approves, denies or
//! ignores. Devices are added the way users add them: `mfa add ...` run as the user.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::clock;
use mfa_e2e::fake_phone::{ACCOUNT_SID, AUTH_TOKEN, Answer, FROM, FakePhone, PUSH_TOKEN, Step};
use mfa_e2e::mfad::APPROVAL_PORT;
use mfa_e2e::ssh::answer_from_file;
use mfa_e2e::{LoginOutcome, TestEnv};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const NUMBER: &str = "+15555551234";
/// `approval.token_ttl`: how long a push or call waits for the phone.
const BOUND: Duration = Duration::from_secs(10);
const MENU_PROMPT: &str = "Passcode or option (1-3): ";
const PUSH_WAITING: &str =
    "Pushed a login request to your device...\nPress Enter once you have answered it: ";

/// A fake phone and a world whose mfad uses it for push, SMS and calls. The world is
/// dropped first (its fields drop in order), then the phone.
struct World {
    env: TestEnv,
    phone: FakePhone,
}

impl World {
    fn new(wait_prompt: bool) -> World {
        let phone = FakePhone::start().unwrap();
        let port = APPROVAL_PORT;
        let toml = format!(
            "wait_prompt = {wait_prompt}\n\
             [approval]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
             token_ttl = {ttl}\n\
             [push]\nnotifier = \"ntfy\"\nurl = \"{ntfy}\"\ntoken = \"{PUSH_TOKEN}\"\ntimeout = 3\n\
             [twilio]\napi_base = \"{twilio}\"\naccount_sid = \"{ACCOUNT_SID}\"\n\
             auth_token = \"{AUTH_TOKEN}\"\nfrom = \"{FROM}\"\ntimeout = 3\n",
            ttl = BOUND.as_secs(),
            ntfy = phone.ntfy_url(),
            twilio = phone.twilio_url(),
        );
        // pam_mfa waits for each message of mfad longer than a push may wait.
        let env = TestEnv::builder()
            .module_timeout(30)
            .mfad_toml(&toml)
            .start()
            .unwrap();
        World { env, phone }
    }

    /// `mfa add push` as the user: mfad shows the topic it made, the user presses Enter
    /// once subscribed, and the phone approves the test push sent to that topic.
    fn add_push(&self) {
        let out = self
            .env
            .cli
            .as_user(
                self.env.user().unwrap(),
                &["add", "push", "--name", "Pixel 8"],
                "\n\n",
            )
            .unwrap();
        assert_eq!(out.status, Some(0), "{}", out.describe());
        assert!(
            out.stdout.contains("Added \"Pixel 8\""),
            "{}",
            out.describe()
        );
        let topic = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("Your private push topic is "))
            .unwrap_or_else(|| panic!("no topic shown: {}", out.describe()))
            .trim()
            .to_string();
        assert!(topic.starts_with("mfa-") && topic.len() == 26, "{topic}");
        assert_eq!(self.phone.notifications()[0]["topic"], topic.as_str());
    }

    /// `mfa add phone NUMBER` as the user: `first` answers the fresh-factor questions, then
    /// the code of SMS number `sms` is typed back.
    fn add_phone(&self, first: &str, sms: usize) {
        let user = self.env.user().unwrap();
        let mut child = self
            .env
            .cli
            .spawn_as_user(user, &["add", "phone", NUMBER, "--name", "Work phone"])
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(first.as_bytes()).unwrap();
        let code = self.phone.wait_sms_code(sms, Duration::from_secs(30));
        if let Some(code) = &code {
            stdin.write_all(format!("{code}\n").as_bytes()).unwrap();
        }
        drop(stdin);
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(code.is_some(), "no SMS reached the phone:\n{out}\n{err}");
        assert!(status.success(), "mfa add phone: {status}\n{out}\n{err}");
        assert!(out.contains("Added \"Work phone\""), "{out}\n{err}");
    }

    /// Push (the default) and a phone: the seed's three-option menu.
    fn with_push_and_phone(wait_prompt: bool) -> World {
        let w = World::new(wait_prompt);
        w.add_push();
        // Adding the phone needs a fresh second factor: option 1, the push, approved.
        w.add_phone("1\n\n", 1);
        assert_eq!(w.phone.notifications().len(), 2);
        // The phone records its tap once mfa-web has answered it, which may be after the
        // CLI has its own answer: wait for both pushes' steps (open, approve), so that a
        // test's `before` counts them all.
        assert!(
            w.phone.wait_steps(4, Duration::from_secs(5)).is_some(),
            "{:?}",
            w.phone.steps()
        );
        w
    }

    /// What the phone did after its first `before` steps, once it has done `n` more.
    fn steps_after(&self, before: usize, n: usize) -> Vec<Step> {
        let steps = self.phone.wait_steps(before + n, Duration::from_secs(5));
        steps.map(|s| s[before..].to_vec()).unwrap_or_default()
    }

    fn login(&self, answers: &[&str], command: &str) -> LoginOutcome {
        let login = self.env.login(answers, command).unwrap();
        println!("{}", login.describe());
        login
    }

    /// The mfad log never holds a provider credential.
    fn assert_log_clean(&self) {
        let log = self.env.mfad_log();
        for secret in [AUTH_TOKEN, PUSH_TOKEN] {
            assert!(
                !log.contains(secret),
                "{secret} leaked into the log:\n{log}"
            );
        }
    }
}

#[test]
fn push_approved_logs_in_and_the_command_runs() {
    let w = World::with_push_and_phone(true);
    let before = w.phone.steps().len();
    let login = w.login(&["1", ""], "echo in by push as $(id -un)");
    assert!(
        login.logged_in(),
        "{}\n{}",
        login.describe(),
        w.env.diagnostics()
    );
    assert_eq!(
        login.stdout.trim(),
        format!("in by push as {}", w.env.username())
    );
    // The menu in the seed's shape, with the number masked, then the push's waiting text
    // inside a prompt: OpenSSH 9.2 shows PAM text only together with a prompt.
    assert_eq!(login.prompts.len(), 3, "{}", login.describe());
    let menu = &login.prompts[1];
    for line in [
        " 1. Push to Pixel 8\n",
        " 2. Phone call to XXX-XXX-1234\n",
        " 3. SMS passcodes to XXX-XXX-1234\n",
    ] {
        assert!(menu.contains(line), "{menu:?}");
    }
    assert!(menu.ends_with(MENU_PROMPT), "{menu:?}");
    // Exactly what the real client put in front of the user while the push was pending:
    // OpenSSH prefixes keyboard-interactive prompts with "(user@host) ".
    assert_eq!(
        login.prompts[2],
        format!("({}@127.0.0.1) {PUSH_WAITING}", w.env.username()),
        "{}",
        login.describe()
    );
    // The outcome comes after the last prompt, on the client's stderr.
    assert!(
        login.stderr.contains("Success. Logging you in..."),
        "{}",
        login.describe()
    );
    // The phone opened the page, which named the user and the client's address, then
    // tapped Approve.
    let steps = w.steps_after(before, 2);
    assert_eq!(steps.len(), 2, "{steps:?}");
    let page = &steps[0].body;
    assert!(page.contains("<dt>From</dt><dd>127.0.0.1</dd>"), "{page}");
    assert!(page.contains(w.env.username()), "{page}");
    assert_eq!(steps[1].what, "tap approve");
    w.assert_log_clean();
}

#[test]
fn push_denied_is_refused() {
    let w = World::with_push_and_phone(true);
    w.phone.on_push(Answer::Deny);
    let login = w.login(&["1", ""], "echo should not run");
    assert!(login.refused(), "{}", login.describe());
    assert!(login.stdout.is_empty());
    assert!(
        login.shown().contains("Login request denied."),
        "{}",
        login.describe()
    );
}

#[test]
fn push_unanswered_is_refused_after_the_bound() {
    let w = World::with_push_and_phone(true);
    w.phone.on_push(Answer::Ignore);
    let started = Instant::now();
    let login = w.login(&["1", ""], "echo should not run");
    let took = started.elapsed();
    assert!(login.refused(), "{}", login.describe());
    assert!(
        took >= BOUND && took < BOUND + Duration::from_secs(10),
        "took {took:?}"
    );
    assert!(
        login
            .shown()
            .contains("No answer to the login request in time"),
        "{}",
        login.describe()
    );
}

#[test]
fn sms_passcode_logs_in_once() {
    let w = World::with_push_and_phone(true);
    let code_file = w.env.dir.join("sms-code");
    // The code arrives during the login: a thread plays the user reading the SMS.
    let login = std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(code) = w.phone.wait_sms_code(2, Duration::from_secs(30)) {
                std::fs::write(&code_file, code).unwrap();
            }
        });
        w.login(&["3", &answer_from_file(&code_file)], "echo in by SMS")
    });
    assert!(
        login.logged_in(),
        "{}\n{}",
        login.describe(),
        w.env.diagnostics()
    );
    assert_eq!(login.stdout.trim(), "in by SMS");
    assert!(
        login.prompts[2].contains("SMS passcode sent to XXX-XXX-1234. Enter it below."),
        "{}",
        login.describe()
    );
    let code = std::fs::read_to_string(&code_file).unwrap();
    assert_eq!(w.phone.sms()[1].param("To").as_deref(), Some(NUMBER));

    let again = w.login(&[&code, &code, &code], "echo should not run");
    assert!(again.refused(), "{}", again.describe());
    assert!(
        again.shown().contains("already used"),
        "{}",
        again.describe()
    );
    let log = w.env.mfad_log();
    assert!(!log.contains(&code), "the SMS code leaked into the log");
    w.assert_log_clean();
}

#[test]
fn phone_call_approved_logs_in() {
    let w = World::with_push_and_phone(true);
    let before = w.phone.steps().len();
    let login = w.login(&["2", ""], "echo in by phone call");
    assert!(
        login.logged_in(),
        "{}\n{}",
        login.describe(),
        w.env.diagnostics()
    );
    assert_eq!(login.stdout.trim(), "in by phone call");
    assert!(
        login.prompts[2].ends_with(
            "Calling XXX-XXX-1234... Answer it and press 1 to approve.\nPress Enter once you \
             have answered it: "
        ),
        "{}",
        login.describe()
    );
    let steps = w.steps_after(before, 2);
    assert_eq!(
        steps
            .iter()
            .map(|s| (s.what.as_str(), s.status))
            .collect::<Vec<_>>(),
        [("answer call", 200), ("press 1", 200)]
    );
    assert_eq!(w.phone.calls().len(), 1);
}

const HOTP_SEED_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"; // "12345678901234567890"
/// RFC 4226 Appendix D: the codes of that seed for counters 0 to 3.
const HOTP_CODES: [&str; 4] = ["755224", "287082", "359152", "969429"];

#[test]
fn hotp_token_code_logs_in_once() {
    let w = World::new(true);
    let user = w.env.user().unwrap();
    // The secret on stdin, then the token's first code to confirm it.
    let out = w
        .env
        .cli
        .as_user(
            user,
            &["add", "hotp", "--name", "YubiKey"],
            &format!("{HOTP_SEED_B32}\n{}\n", HOTP_CODES[0]),
        )
        .unwrap();
    assert_eq!(out.status, Some(0), "{}", out.describe());
    assert!(!out.stdout.contains(HOTP_SEED_B32), "{}", out.describe());

    // The button pressed once without a login: look-ahead finds counter 2.
    let login = w.login(&[HOTP_CODES[2]], "echo in by token");
    assert!(
        login.logged_in(),
        "{}\n{}",
        login.describe(),
        w.env.diagnostics()
    );
    assert_eq!(login.stdout.trim(), "in by token");
    assert!(
        login.prompts[1].ends_with("Passcode: "),
        "{}",
        login.describe()
    );

    let again = w.login(
        &[HOTP_CODES[2], HOTP_CODES[2], HOTP_CODES[2]],
        "echo should not run",
    );
    assert!(again.refused(), "{}", again.describe());
    assert!(again.stdout.is_empty());
    assert!(
        again
            .shown()
            .contains("That passcode was already used; press your token's button for a new one."),
        "{}",
        again.describe()
    );
    let next = w.login(&[HOTP_CODES[3]], "echo next press");
    assert!(next.logged_in(), "{}", next.describe());
}

/// Without `wait_prompt`, the waiting text goes out as a PAM info message during the wait,
/// and OpenSSH 9.2 holds it back (bug 2876): while the push is pending the user sees nothing
/// new; the waiting text and the outcome appear together once the phone has answered.
#[test]
fn without_wait_prompt_openssh_9_2_shows_nothing_while_the_push_is_pending() {
    let w = World::with_push_and_phone(false);
    w.phone.on_push(Answer::Ignore);
    let ssh = BackgroundSsh::start(&w.env, &[w.env.password(), "1"], "echo in by push");
    // Two pushes went out while adding the phone; this login's is the third.
    let note = w.phone.wait_notification(3, Duration::from_secs(20));
    let note = note.unwrap_or_else(|| panic!("no push for the login:\n{}", ssh.seen()));
    clock::pause(Duration::from_secs(2));
    let pending = ssh.seen();
    println!("while pending:\n{pending}");
    assert!(!pending.contains("Pushed"), "{pending}");
    assert_eq!(
        ssh.prompts(),
        2,
        "nothing was asked while waiting:\n{pending}"
    );

    w.phone.open_notification(&note, Answer::Approve);
    let (status, stdout, stderr) = ssh.finish();
    println!("after the approval:\n{stderr}");
    assert_eq!(
        status,
        Some(0),
        "{stdout}\n{stderr}\n{}",
        w.env.diagnostics()
    );
    assert_eq!(stdout.trim(), "in by push");
    assert!(
        stderr.ends_with("Pushed a login request to your device...\nSuccess. Logging you in...\n"),
        "{stderr:?}"
    );
}

/// The real ssh in the background, its stderr in a file, so a test can read what the user
/// has been shown so far. Answers come from a queue, one per askpass call.
struct BackgroundSsh {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl BackgroundSsh {
    fn start(env: &TestEnv, answers: &[&str], command: &str) -> BackgroundSsh {
        let dir = env.dir.join("background-ssh");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("answers"), answers.join("\n") + "\n").unwrap();
        let askpass = dir.join("askpass");
        std::fs::write(
            &askpass,
            format!(
                "#!/bin/sh\nd='{}'\necho x >> \"$d/asked\"\nsed -n \"$(wc -l < \"$d/asked\")p\" \
                 \"$d/answers\"\n",
                dir.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &askpass,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let child = std::process::Command::new("setsid")
            .args(["-w", "timeout", "-k", "5", "60", "ssh"])
            .args(mfa_e2e::SshClient::common_options(10))
            .args(["-p", &env.client.port.to_string()])
            .arg(format!("{}@127.0.0.1", env.username()))
            .args(["--", command])
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        BackgroundSsh { child, dir }
    }

    /// The client's stderr so far.
    fn seen(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// Prompts asked so far.
    fn prompts(&self) -> usize {
        std::fs::read_to_string(self.dir.join("asked"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// Waits for the client (bounded by its `timeout`): exit status, stdout, stderr.
    fn finish(mut self) -> (Option<i32>, String, String) {
        let status = self.child.wait().unwrap();
        let stdout = std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default();
        (status.code(), stdout, self.seen())
    }
}

impl Drop for BackgroundSsh {
    fn drop(&mut self) {
        // A failed test must not leave the client behind. `timeout` leads the client's
        // process group and passes SIGTERM on to ssh.
        if let Ok(None) = self.child.try_wait() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// The approval pages come from the real mfa-web binary running as its own unprivileged
/// user (here a throwaway account, named in mfad's `[web] user`): it cannot read mfad's
/// config (which holds the provider tokens) nor the store, and still serves the push that
/// lets a real login in, by asking mfad over the socket.
#[test]
fn mfa_web_as_its_own_unprivileged_user_serves_the_push_that_lets_a_login_in() {
    use mfa_e2e::mfad::WebFront;
    use mfa_e2e::user::TestUser;
    let phone = FakePhone::start().unwrap();
    let web_user = TestUser::create(&format!("mfaweb{}", std::process::id() % 100_000)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // No `listen` in [approval]: the harness starts no mfa-web of its own; this test starts
    // it, as the web user.
    let toml = format!(
        "[approval]\npublic_url = \"http://127.0.0.1:{port}\"\ntoken_ttl = {ttl}\n\
         [web]\nuser = \"{web}\"\n\
         [push]\nnotifier = \"ntfy\"\nurl = \"{ntfy}\"\ntoken = \"{PUSH_TOKEN}\"\ntimeout = 3\n",
        ttl = BOUND.as_secs(),
        web = web_user.name,
        ntfy = phone.ntfy_url(),
    );
    let env = TestEnv::builder()
        .module_timeout(30)
        .mfad_toml(&toml)
        .start()
        .unwrap();
    let mfad_dir = env.dir.join("mfad");
    let web_dir = env.dir.join("web");
    std::fs::create_dir_all(&web_dir).unwrap();
    let web = WebFront::start_as(
        &web_dir,
        &format!("listen = \"127.0.0.1:{port}\"\n"),
        &env.cli.socket,
        Some(&web_user.name),
    )
    .unwrap();
    // What the web user can reach: not mfad's config, not the store, not its key. Nor
    // mfa-web's own memory: another process of the web user (a helper it started, a hole in
    // it) cannot read its /proc files (its environment here; its memory and a debugger's
    // attach are refused by the same check).
    let pid = web.pid().unwrap();
    for secret in [
        mfad_dir.join("mfad.toml"),
        mfad_dir.join("lib").join("mfa.db"),
        mfad_dir.join("store.key"),
        std::path::PathBuf::from(format!("/proc/{pid}/environ")),
    ] {
        let read = std::process::Command::new("setpriv")
            .arg(format!("--reuid={}", web_user.name))
            .arg(format!("--regid={}", web_user.name))
            .arg("--clear-groups")
            .arg("--")
            .arg("cat")
            .arg(&secret)
            .output()
            .unwrap();
        assert!(
            !read.status.success() && read.stdout.is_empty(),
            "the web user could read {}",
            secret.display()
        );
    }
    // A crash of it would leave no core file.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits.lines().any(|l| l.starts_with("Max core file size")
            && l.split_whitespace().skip(4).take(2).eq(["0", "0"])),
        "{limits}"
    );
    // The push device, added as the user (its test push approved through mfa-web), then a
    // login by push, approved on the page mfa-web serves.
    let out = env
        .cli
        .as_user(
            env.user().unwrap(),
            &["add", "push", "--name", "Pixel 8"],
            "\n\n",
        )
        .unwrap();
    assert_eq!(out.status, Some(0), "{}\n{}", out.describe(), web.log());
    // The phone records its tap once mfa-web has answered it, which may be after the CLI
    // has its own answer: wait for the test push's two steps (open, approve) first.
    let before = phone
        .wait_steps(2, Duration::from_secs(5))
        .expect("the test push's page opened and approved")
        .len();
    let login = env.login(&["1", ""], "echo in through mfa-web").unwrap();
    assert!(
        login.logged_in(),
        "{}\n{}\n{}",
        login.describe(),
        env.diagnostics(),
        web.log()
    );
    assert_eq!(login.stdout.trim(), "in through mfa-web");
    let steps = phone
        .wait_steps(before + 2, Duration::from_secs(5))
        .unwrap();
    assert!(steps[before].body.contains(env.username()), "{steps:?}");
    assert_eq!(steps[before + 1].what, "tap approve");
    // mfad took the answer from the web user's connection, and logged it.
    let log = env.mfad_log();
    assert!(
        log.contains(&format!("user={} ", env.username())) && log.contains("via=web"),
        "{log}"
    );
    assert!(!log.contains("asked for the web role"), "{log}");
}
