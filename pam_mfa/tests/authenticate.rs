//! The authenticate logic against a fake mfad, with a scripted PAM application that fails
//! the test on any message it did not expect and on any expected message left unshown.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{FakeMfad, Step};
use mfa_proto::Outcome;
use pam::constants::PamResultCode;
use pam_mfa::{LogLevel, PamEnv, PamItem, authenticate};
use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const SECURE_TEXT: &str = "Two-factor authentication is unavailable right now; login refused. Please try again later or contact your administrator.";

/// What the application is expected to show, in order.
#[derive(Debug)]
enum Expect {
    Info(&'static str),
    Error(&'static str),
    /// Prompt text, echo flag, and what the user does.
    Prompt(&'static str, bool, Reply),
}

#[derive(Debug)]
enum Reply {
    Types(&'static str),
    /// The conversation function fails (no terminal, client gone).
    ConvFails,
}

struct ScriptedApp {
    user: Result<String, ()>,
    service: Option<String>,
    rhost: Option<String>,
    tty: Option<String>,
    env: Vec<(&'static str, &'static str)>,
    expected: VecDeque<Expect>,
    logs: Vec<(LogLevel, String)>,
    user_asked: bool,
}

impl ScriptedApp {
    /// An sshd-like application logging in `user` from 192.0.2.7.
    fn sshd(user: &str, expected: Vec<Expect>) -> Self {
        ScriptedApp {
            user: Ok(user.to_string()),
            service: Some("sshd".into()),
            rhost: Some("192.0.2.7".into()),
            tty: Some("ssh".into()),
            env: vec![
                ("SSH_CONNECTION", "192.0.2.7 50022 192.0.2.1 22"),
                ("SSH_AUTH_INFO_0", "publickey ssh-ed25519 AAAAC3Nz"),
            ],
            expected: expected.into(),
            logs: Vec::new(),
            user_asked: false,
        }
    }

    fn next(&mut self, got: String) -> Expect {
        match self.expected.pop_front() {
            Some(e) => e,
            None => panic!("unexpected message shown: {got}"),
        }
    }

    /// Fails the test if an expected message was never shown.
    fn finish(&self) {
        assert!(
            self.expected.is_empty(),
            "expected but not shown: {:?}",
            self.expected
        );
    }

    fn logged(&self, level: LogLevel, needle: &str) -> bool {
        self.logs
            .iter()
            .any(|(l, m)| *l == level && m.contains(needle))
    }
}

impl PamEnv for ScriptedApp {
    fn user(&mut self) -> Result<String, PamResultCode> {
        self.user_asked = true;
        self.user.clone().map_err(|()| PamResultCode::PAM_CONV_ERR)
    }

    fn item(&mut self, item: PamItem) -> Option<String> {
        match item {
            PamItem::Service => self.service.clone(),
            PamItem::RHost => self.rhost.clone(),
            PamItem::Tty => self.tty.clone(),
        }
    }

    fn getenv(&mut self, name: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    fn info(&mut self, text: &str) -> Result<(), PamResultCode> {
        match self.next(format!("info {text:?}")) {
            Expect::Info(want) if want == text => Ok(()),
            other => panic!("shown info {text:?}, expected {other:?}"),
        }
    }

    fn error(&mut self, text: &str) -> Result<(), PamResultCode> {
        match self.next(format!("error {text:?}")) {
            Expect::Error(want) if want == text => Ok(()),
            other => panic!("shown error {text:?}, expected {other:?}"),
        }
    }

    fn prompt(
        &mut self,
        text: &str,
        echo: bool,
    ) -> Result<Option<Zeroizing<String>>, PamResultCode> {
        match self.next(format!("prompt {text:?} echo={echo}")) {
            Expect::Prompt(want, want_echo, reply) if want == text && want_echo == echo => {
                match reply {
                    Reply::Types(answer) => Ok(Some(Zeroizing::new(answer.to_string()))),
                    Reply::ConvFails => Err(PamResultCode::PAM_CONV_ERR),
                }
            }
            other => panic!("shown prompt {text:?} echo={echo}, expected {other:?}"),
        }
    }

    fn syslog(&mut self, level: LogLevel, message: &str) {
        self.logs.push((level, message.to_string()));
    }
}

fn args(socket: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![format!("socket={}", socket.display())];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn an_allowed_login_relays_info_and_prompt_and_succeeds() {
    let mfad = FakeMfad::start(vec![
        Step::Info("Two-factor login for alice"),
        Step::Prompt("Passcode or option (1-3): ", false),
        Step::Info("Success. Logging you in..."),
        Step::Done(Outcome::Allow),
    ]);
    let mut app = ScriptedApp::sshd(
        "alice",
        vec![
            Expect::Info("Two-factor login for alice"),
            Expect::Prompt("Passcode or option (1-3): ", false, Reply::Types("123456")),
            Expect::Info("Success. Logging you in..."),
        ],
    );
    let code = authenticate(&mut app, &args(mfad.socket(), &["debug"]));
    assert_eq!(code, PamResultCode::PAM_SUCCESS);
    app.finish();
    let seen = mfad.finish();
    assert_eq!(seen.connections, 1);
    assert_eq!(seen.answers, vec![Some("123456".to_string())]);
    let ctx = seen.context();
    assert_eq!(ctx.user, "alice");
    assert_eq!(ctx.service, "sshd");
    assert_eq!(ctx.rhost.as_deref(), Some("192.0.2.7"));
    assert_eq!(ctx.tty.as_deref(), Some("ssh"));
    assert_eq!(
        ctx.ssh_connection.as_deref(),
        Some("192.0.2.7 50022 192.0.2.1 22")
    );
    assert_eq!(
        ctx.ssh_auth_info.as_deref(),
        Some("publickey ssh-ed25519 AAAAC3Nz")
    );
    // debug logs the request and outcome, never the answer.
    assert!(app.logged(LogLevel::Debug, "authenticate user=alice"));
    assert!(app.logs.iter().all(|(_, m)| !m.contains("123456")));
}

#[test]
fn a_denied_login_shows_the_error_and_fails() {
    let mfad = FakeMfad::start(vec![
        Step::Prompt("Passcode: ", false),
        Step::Error("Incorrect passcode."),
        Step::Done(Outcome::Deny),
    ]);
    let mut app = ScriptedApp::sshd(
        "alice",
        vec![
            Expect::Prompt("Passcode: ", false, Reply::Types("000000")),
            Expect::Error("Incorrect passcode."),
        ],
    );
    let code = authenticate(&mut app, &args(mfad.socket(), &[]));
    assert_eq!(code, PamResultCode::PAM_AUTH_ERR);
    app.finish();
    assert_eq!(mfad.finish().answers, vec![Some("000000".to_string())]);
}

#[test]
fn an_ignore_outcome_is_pam_ignore() {
    let mfad = FakeMfad::start(vec![Step::Done(Outcome::Ignore)]);
    let mut app = ScriptedApp::sshd("bob", vec![]);
    let code = authenticate(&mut app, &args(mfad.socket(), &[]));
    assert_eq!(code, PamResultCode::PAM_IGNORE);
    app.finish();
    mfad.finish();
}

#[test]
fn a_prompt_with_echo_is_asked_with_echo_on() {
    let mfad = FakeMfad::start(vec![
        Step::Prompt("Phone number: ", true),
        Step::Prompt("SMS passcode: ", false),
        Step::Done(Outcome::Allow),
    ]);
    let mut app = ScriptedApp::sshd(
        "alice",
        vec![
            Expect::Prompt("Phone number: ", true, Reply::Types("555-0100")),
            Expect::Prompt("SMS passcode: ", false, Reply::Types("7788")),
        ],
    );
    let code = authenticate(&mut app, &args(mfad.socket(), &[]));
    assert_eq!(code, PamResultCode::PAM_SUCCESS);
    app.finish();
    assert_eq!(
        mfad.finish().answers,
        vec![Some("555-0100".to_string()), Some("7788".to_string())]
    );
}

#[test]
fn a_failed_conversation_answers_none() {
    let mfad = FakeMfad::start(vec![
        Step::Prompt("Passcode: ", false),
        Step::Done(Outcome::Deny),
    ]);
    let mut app = ScriptedApp::sshd(
        "alice",
        vec![Expect::Prompt("Passcode: ", false, Reply::ConvFails)],
    );
    let code = authenticate(&mut app, &args(mfad.socket(), &[]));
    assert_eq!(code, PamResultCode::PAM_AUTH_ERR);
    app.finish();
    assert_eq!(mfad.finish().answers, vec![None]);
}

#[test]
fn no_daemon_with_failmode_secure_refuses_with_a_message() {
    let (_dir, socket) = FakeMfad::absent_socket();
    let mut app = ScriptedApp::sshd("alice", vec![Expect::Error(SECURE_TEXT)]);
    let code = authenticate(&mut app, &args(&socket, &[]));
    assert_eq!(code, PamResultCode::PAM_AUTH_ERR);
    app.finish();
    assert!(app.logged(
        LogLevel::Err,
        "failmode=secure: refusing alice from 192.0.2.7"
    ));
}

#[test]
fn no_daemon_with_failmode_safe_allows_and_logs_an_alert() {
    let (_dir, socket) = FakeMfad::absent_socket();
    let mut app = ScriptedApp::sshd(
        "alice",
        vec![Expect::Info(
            "Two-factor authentication is unavailable right now; continuing without it.",
        )],
    );
    let code = authenticate(&mut app, &args(&socket, &["failmode=safe"]));
    assert_eq!(code, PamResultCode::PAM_SUCCESS);
    app.finish();
    assert!(
        app.logged(
            LogLevel::Alert,
            "failmode=safe: allowing alice from 192.0.2.7 without a second factor"
        ),
        "{:?}",
        app.logs
    );
    assert!(app.logged(LogLevel::Alert, "mfad unreachable (cannot connect"));
}

#[test]
fn a_stale_socket_file_is_unreachable_too() {
    let (dir, socket) = FakeMfad::absent_socket();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let mut app = ScriptedApp::sshd("alice", vec![Expect::Error(SECURE_TEXT)]);
    assert_eq!(
        authenticate(&mut app, &args(&socket, &[])),
        PamResultCode::PAM_AUTH_ERR
    );
    app.finish();
    drop(dir);
}

#[test]
fn a_daemon_that_never_answers_costs_one_timeout() {
    for (mode, want) in [
        ("failmode=secure", PamResultCode::PAM_AUTH_ERR),
        ("failmode=safe", PamResultCode::PAM_SUCCESS),
    ] {
        let mfad = FakeMfad::start(vec![Step::Hang]);
        let expected = if mode == "failmode=secure" {
            Expect::Error(SECURE_TEXT)
        } else {
            Expect::Info(
                "Two-factor authentication is unavailable right now; continuing without it.",
            )
        };
        let mut app = ScriptedApp::sshd("alice", vec![expected]);
        let started = Instant::now();
        let code = authenticate(&mut app, &args(mfad.socket(), &[mode, "timeout=1"]));
        let took = started.elapsed();
        assert_eq!(code, want, "{mode}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{mode}: took {took:?}"
        );
        app.finish();
        assert!(
            app.logs
                .iter()
                .any(|(_, m)| m.contains("did not answer in time"))
        );
        assert_eq!(mfad.finish().connections, 1);
    }
}

/// Daemons that answer, but whose first message the module cannot use: mfad never spoke.
fn broken_daemons() -> Vec<(&'static str, Vec<Step>)> {
    let mut oversize = (u32::MAX).to_be_bytes().to_vec();
    oversize.extend_from_slice(b"{}");
    let mut not_json = 5u32.to_be_bytes().to_vec();
    not_json.extend_from_slice(b"hello");
    vec![
        (
            "garbage bytes",
            vec![Step::Raw(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec())],
        ),
        ("oversize header", vec![Step::Raw(oversize)]),
        ("a frame that is not json", vec![Step::Raw(not_json)]),
        ("an empty frame", vec![Step::Raw(vec![0, 0, 0, 0])]),
        ("a close before any message", vec![]),
        (
            "unavailable",
            vec![Step::Unavailable("protocol version 1 is not supported")],
        ),
    ]
}

/// Daemons that spoke first, then broke off: each must be a refusal in either fail mode.
fn interrupted_daemons() -> Vec<(&'static str, Vec<Step>, Vec<Expect>)> {
    let mut not_json = 5u32.to_be_bytes().to_vec();
    not_json.extend_from_slice(b"hello");
    let login = "Two-factor login for alice";
    vec![
        (
            "a close before done",
            vec![Step::Info(login)],
            vec![Expect::Info(login)],
        ),
        (
            "a close after a prompt",
            vec![Step::PromptAndHangUp("Passcode: ")],
            vec![Expect::Prompt("Passcode: ", false, Reply::Types("123456"))],
        ),
        (
            "silence after a prompt",
            vec![Step::Prompt("Passcode: ", false), Step::Hang],
            vec![Expect::Prompt("Passcode: ", false, Reply::Types("123456"))],
        ),
        (
            "garbage after info",
            vec![Step::Info(login), Step::Raw(not_json)],
            vec![Expect::Info(login)],
        ),
        (
            "unavailable after info",
            vec![Step::Info(login), Step::Unavailable("database is locked")],
            vec![Expect::Info(login)],
        ),
    ]
}

#[test]
fn a_broken_daemon_with_failmode_secure_refuses() {
    for (what, script) in broken_daemons() {
        let mfad = FakeMfad::start(script.clone());
        let mut app = ScriptedApp::sshd("alice", vec![Expect::Error(SECURE_TEXT)]);
        let code = authenticate(&mut app, &args(mfad.socket(), &["timeout=5"]));
        assert_eq!(code, PamResultCode::PAM_AUTH_ERR, "{what}");
        app.finish();
        assert!(
            app.logged(LogLevel::Err, "mfad unreachable ("),
            "{what}: {:?}",
            app.logs
        );
        mfad.finish();
    }
}

#[test]
fn a_broken_daemon_with_failmode_safe_allows() {
    for (what, script) in broken_daemons() {
        let mfad = FakeMfad::start(script.clone());
        let mut app = ScriptedApp::sshd(
            "alice",
            vec![Expect::Info(
                "Two-factor authentication is unavailable right now; continuing without it.",
            )],
        );
        let code = authenticate(
            &mut app,
            &args(mfad.socket(), &["timeout=5", "failmode=safe"]),
        );
        assert_eq!(code, PamResultCode::PAM_SUCCESS, "{what}");
        app.finish();
        assert!(
            app.logged(LogLevel::Alert, "without a second factor"),
            "{what}: {:?}",
            app.logs
        );
        mfad.finish();
    }
}

#[test]
fn once_mfad_has_spoken_a_broken_conversation_is_refused_even_with_failmode_safe() {
    for mode in ["failmode=safe", "failmode=secure"] {
        for (what, script, mut expected) in interrupted_daemons() {
            let mfad = FakeMfad::start(script);
            expected.push(Expect::Error(pam_mfa::INTERRUPTED_TEXT));
            let mut app = ScriptedApp::sshd("alice", expected);
            let code = authenticate(&mut app, &args(mfad.socket(), &["timeout=2", mode]));
            assert_eq!(code, PamResultCode::PAM_AUTH_ERR, "{mode} {what}");
            app.finish();
            assert!(
                app.logged(LogLevel::Err, "broke off")
                    && app.logged(LogLevel::Err, "refusing alice from 192.0.2.7"),
                "{mode} {what}: {:?}",
                app.logs
            );
            assert!(
                !app.logs
                    .iter()
                    .any(|(_, m)| m.contains("without a second factor")),
                "{mode} {what}: {:?}",
                app.logs
            );
            drop(mfad);
        }
    }
}

#[test]
fn the_daemons_reason_for_unavailable_is_logged() {
    let mfad = FakeMfad::start(vec![Step::Unavailable("database is locked")]);
    let mut app = ScriptedApp::sshd("alice", vec![Expect::Error(SECURE_TEXT)]);
    authenticate(&mut app, &args(mfad.socket(), &[]));
    app.finish();
    assert!(
        app.logged(LogLevel::Err, "database is locked"),
        "{:?}",
        app.logs
    );
    mfad.finish();
}

#[test]
fn a_bad_user_name_is_refused_without_asking_the_daemon() {
    for name in ["", "alice\nroot", "../etc/passwd", "a b", "x\u{1b}[2J"] {
        let mfad = FakeMfad::start(vec![Step::Done(Outcome::Allow)]);
        let mut app = ScriptedApp::sshd(name, vec![]);
        let code = authenticate(&mut app, &args(mfad.socket(), &["failmode=safe"]));
        assert_eq!(code, PamResultCode::PAM_AUTH_ERR, "{name:?}");
        app.finish();
        assert!(
            app.logged(LogLevel::Err, "refusing user name"),
            "{:?}",
            app.logs
        );
        // The log line carries the name escaped, so it cannot forge a second line.
        assert!(app.logs.iter().all(|(_, m)| !m.contains('\n')));
        assert_eq!(mfad.finish().connections, 0, "{name:?}");
    }
}

#[test]
fn no_user_name_from_pam_returns_pams_error() {
    let mfad = FakeMfad::start(vec![Step::Done(Outcome::Allow)]);
    let mut app = ScriptedApp::sshd("alice", vec![]);
    app.user = Err(());
    let code = authenticate(&mut app, &args(mfad.socket(), &[]));
    assert_eq!(code, PamResultCode::PAM_CONV_ERR);
    assert!(app.user_asked);
    assert_eq!(mfad.finish().connections, 0);
}

#[test]
fn unknown_arguments_are_logged_and_a_bad_failmode_is_secure() {
    let (_dir, socket) = FakeMfad::absent_socket();
    let mut app = ScriptedApp::sshd("alice", vec![Expect::Error(SECURE_TEXT)]);
    let code = authenticate(
        &mut app,
        &args(
            &socket,
            &["failmode=safe", "use_first_pass", "failmode=off"],
        ),
    );
    assert_eq!(code, PamResultCode::PAM_AUTH_ERR);
    app.finish();
    assert!(app.logged(LogLevel::Err, "unknown module argument \"use_first_pass\""));
    assert!(app.logged(LogLevel::Err, "failmode=\"off\""));
}

#[test]
fn missing_context_is_sent_as_absent() {
    let mfad = FakeMfad::start(vec![Step::Done(Outcome::Allow)]);
    let mut app = ScriptedApp::sshd("alice", vec![]);
    app.rhost = Some(String::new());
    app.tty = None;
    app.env.clear();
    assert_eq!(
        authenticate(&mut app, &args(mfad.socket(), &[])),
        PamResultCode::PAM_SUCCESS
    );
    let ctx = mfad.finish().context();
    assert_eq!(ctx.rhost, None);
    assert_eq!(ctx.tty, None);
    assert_eq!(ctx.ssh_connection, None);
    assert_eq!(ctx.ssh_auth_info, None);
}

/// A fake mfad run by `nobody`: accepts one connection, says "allow" at once, and writes to
/// `heard` how many bytes the client sent it.
const IMPOSTOR: &str = r#"
import socket, sys, os, time
path, heard = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(1)
open(heard + ".ready", "w").close()
c, _ = s.accept()
body = b'{"type":"done","outcome":"allow"}'
try:
    c.sendall(len(body).to_bytes(4, "big") + body)
except OSError:
    pass
c.settimeout(2)
got = b""
try:
    while True:
        chunk = c.recv(65536)
        if not chunk:
            break
        got += chunk
except (socket.timeout, OSError):
    pass
with open(heard, "w") as f:
    f.write(str(len(got)))
"#;

#[test]
fn a_socket_served_by_a_non_root_process_is_not_mfad() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    for (mode, want) in [
        ("failmode=secure", PamResultCode::PAM_AUTH_ERR),
        ("failmode=safe", PamResultCode::PAM_SUCCESS),
    ] {
        let (dir, socket) = FakeMfad::absent_socket();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let heard = dir.path().join("heard");
        let mut impostor = std::process::Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(IMPOSTOR)
            .arg(&socket)
            .arg(&heard)
            .uid(65534)
            .gid(65534)
            .spawn()
            .unwrap();
        let ready = heard.with_extension("ready");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "the impostor never listened");
            std::thread::sleep(Duration::from_millis(10));
        }
        let expected = if mode == "failmode=secure" {
            Expect::Error(SECURE_TEXT)
        } else {
            Expect::Info(
                "Two-factor authentication is unavailable right now; continuing without it.",
            )
        };
        let mut app = ScriptedApp::sshd("alice", vec![expected]);
        let code = authenticate(&mut app, &args(&socket, &[mode]));
        assert!(impostor.wait().unwrap().success());
        assert_eq!(code, want, "{mode}: {:?}", app.logs);
        app.finish();
        // Treated as an unreachable mfad, loudly, and told nothing: not even the user name.
        assert!(
            app.logged(
                LogLevel::Alert,
                "runs as uid 65534, not root; it is not mfad"
            ),
            "{mode}: {:?}",
            app.logs
        );
        assert_eq!(std::fs::read_to_string(&heard).unwrap(), "0", "{mode}");
    }
}
