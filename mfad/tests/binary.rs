//! The real mfad binary: its config errors, file modes, decision log, and a race on one code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::{AuthContext, Client, Conversation, Operation, Outcome};
use mfa_test_support::binary::{BinaryMfad, now, params};
use mfa_test_support::memory::found_in_memory;
use mfad::Store;
use mfad::factor::totp;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const SECRET: &[u8] = b"binary-test-secret!!";

/// The mfad binary under test, running with `extra` in its config.
fn start(extra: &str) -> BinaryMfad {
    BinaryMfad::start(env!("CARGO_BIN_EXE_mfad"), extra)
}

struct Answer(String);
impl Conversation for Answer {
    fn info(&mut self, _: &str) {}
    fn error(&mut self, _: &str) {}
    fn prompt(&mut self, _: &str, _: bool) -> Option<Zeroizing<String>> {
        Some(Zeroizing::new(self.0.clone()))
    }
}

fn login(socket: &Path, code: &str) -> Outcome {
    let mut c = Client::connect(socket, Duration::from_secs(2), Duration::from_secs(20)).unwrap();
    mfa_proto::run_conversation(
        &mut c,
        Operation::Authenticate(AuthContext {
            user: "root".into(),
            service: "sshd".into(),
            rhost: Some("203.0.113.9".into()),
            ..Default::default()
        }),
        &mut Answer(code.into()),
    )
    .unwrap()
}

/// Seeds an authenticator for root whose last spent step is well in the past.
fn seed(db: &Path) {
    let step = totp::step_of(now(), params());
    Store::open_with_key_file(db, &db.with_file_name("store.key"))
        .unwrap()
        .add_totp_device("root", "phone", SECRET, params(), step - 10, now())
        .unwrap();
}

/// A code that stays valid for the next few seconds (window 1 covers a step change).
fn current_code() -> String {
    totp::code_at_step(SECRET, params(), totp::step_of(now(), params())).to_string()
}

#[test]
fn a_bad_config_is_refused_naming_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mfad.toml");
    std::fs::write(
        &config,
        "max_attempts = 3\n[lockout]\nmax_failures = 10\nduratoin = 60\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mfad"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4") && err.contains("duratoin"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_mfad"))
        .args(["--config", "/nonexistent/mfad.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/mfad.toml"));
}

#[test]
fn files_get_tight_modes_and_decisions_are_logged_without_codes() {
    let m = start("");
    let sock_mode = std::fs::metadata(m.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        sock_mode, 0o666,
        "socket is for every user; uids are checked per call"
    );
    let db_mode = std::fs::metadata(m.db()).unwrap().permissions().mode() & 0o777;
    assert_eq!(db_mode, 0o600);
    let dir_mode = std::fs::metadata(m.db().parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);

    seed(&m.db());
    let code = current_code();
    assert_eq!(login(&m.socket(), &code), Outcome::Allow);
    assert_eq!(login(&m.socket(), "13579"), Outcome::Deny);
    std::thread::sleep(Duration::from_millis(200));
    let log = m.log();
    assert!(
        log.contains("user=root rhost=203.0.113.9 service=sshd method=totp outcome=allow"),
        "{log}"
    );
    assert!(
        log.contains("outcome=deny") || log.contains("outcome=retry"),
        "{log}"
    );
    assert!(!log.contains(&code), "a code reached the log:\n{log}");
    assert!(!log.contains("13579"), "an answer reached the log:\n{log}");
}

#[test]
fn a_second_mfad_on_a_live_socket_refuses_to_start() {
    let m = start("");
    let config = m.path("mfad.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_mfad"))
        .args(["--foreground", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listening"));
    // The first one still answers.
    assert!(Client::connect(&m.socket(), Duration::from_secs(1), Duration::from_secs(1)).is_ok());
}

#[test]
fn concurrent_logins_racing_on_one_code_let_exactly_one_in() {
    let m = start("max_attempts = 1");
    seed(&m.db());
    // Stay clear of a step boundary so every racer sends a code of the same step.
    while now() % 30 > 25 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let code = current_code();
    let socket = m.socket();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(24));
    let racers: Vec<_> = (0..24)
        .map(|_| {
            let (socket, code, barrier) = (socket.clone(), code.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                login(&socket, &code)
            })
        })
        .collect();
    let outcomes: Vec<Outcome> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let allowed = outcomes.iter().filter(|o| **o == Outcome::Allow).count();
    assert_eq!(allowed, 1, "{outcomes:?}");
}

/// A raw connection as root, speaking frames by hand.
fn raw(socket: &Path) -> std::os::unix::net::UnixStream {
    let s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn send_body(s: &mut std::os::unix::net::UnixStream, body: &[u8]) {
    use std::io::Write;
    s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    s.write_all(body).unwrap();
}

#[test]
fn a_prompt_left_unanswered_ends_in_an_explicit_refusal_not_a_silent_close() {
    use mfa_proto::ServerMsg;
    use mfa_proto::frame::read_frame;
    let m = start("answer_timeout = 5");
    seed(&m.db());
    let mut s = raw(&m.socket());
    let hello = mfa_proto::ClientMsg::Hello {
        version: mfa_proto::PROTOCOL_VERSION,
        op: Operation::Authenticate(AuthContext {
            user: "root".into(),
            service: "sshd".into(),
            rhost: Some("203.0.113.9".into()),
            ..Default::default()
        }),
    };
    mfa_proto::frame::write_frame(&mut s, &hello).unwrap();
    loop {
        match read_frame::<_, ServerMsg>(&mut s).unwrap() {
            ServerMsg::Prompt { .. } => break,
            ServerMsg::Info { .. } => {}
            other => panic!("expected the passcode prompt, got {other:?}"),
        }
    }
    // The user types nothing; mfad's answer_timeout (5 s) runs out.
    let asked = Instant::now();
    let mut after = Vec::new();
    loop {
        match read_frame::<_, ServerMsg>(&mut s) {
            Ok(ServerMsg::KeepAlive) => {}
            Ok(msg) => {
                let done = matches!(msg, ServerMsg::Done { .. });
                after.push(msg);
                if done {
                    break;
                }
            }
            Err(e) => panic!("mfad broke off without a verdict ({e}); it sent {after:?}"),
        }
    }
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert_eq!(
        after,
        vec![
            ServerMsg::Error {
                text: "No answer within 5 seconds; login refused.".into()
            },
            ServerMsg::Done {
                outcome: Outcome::Deny
            }
        ]
    );
    std::thread::sleep(Duration::from_millis(200));
    let log = m.log();
    assert!(
        log.contains("user=root rhost=203.0.113.9 service=sshd method=- outcome=deny reason=\"no answer within 5 s\""),
        "{log}"
    );
}

#[test]
fn a_malformed_frame_cannot_forge_a_log_line() {
    let m = start("");
    let mut s = raw(&m.socket());
    // serde_json's own error would quote this type name, newline and all.
    send_body(
        &mut s,
        br#"{"type":"hello\nFORGED mfad: user=root outcome=allow\u001b[2J","version":2}"#,
    );
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut rest);
    std::thread::sleep(Duration::from_millis(200));
    let log = m.log();
    assert!(log.contains("malformed message"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a client forged a log line:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "a terminal escape reached the log:\n{log}"
    );
}

/// A user who types their password at the passcode prompt by mistake. Once the login is
/// over, no byte of it is left in mfad's memory, freed or not: not when it is plain, and not
/// when it has a `"` or a `\`, which the wire carries escaped and serde_json unescapes into
/// a scratch buffer of its own (mfad frees through mfa_proto::alloc::ZeroizingAlloc).
#[test]
fn a_password_typed_at_the_passcode_prompt_is_not_left_in_mfads_memory() {
    let m = start("");
    seed(&m.db());
    // The scan reads mfad's memory: its config's path is there.
    let config = m.path("mfad.toml");
    assert!(!found_in_memory(m.pid(), config.to_str().unwrap().as_bytes()).is_empty());

    for (n, form) in [
        "my-unix-password\"{}\\and-more",
        "my-unix-password-{}-and-more",
    ]
    .iter()
    .enumerate()
    {
        let marker = format!("{:08x}{n:08x}{:016x}", std::process::id(), now() as u64);
        let password = form.replace("{}", &marker);
        assert_eq!(login(&m.socket(), &password), Outcome::Deny);
        std::thread::sleep(Duration::from_millis(300));
        let found = found_in_memory(m.pid(), marker.as_bytes());
        assert!(
            found.is_empty(),
            "the password {password:?} is still in mfad's memory, in:\n{}",
            found.join("\n")
        );
    }
}

/// A crash of mfad writes no core file, where this machine writes one for any other program
/// that crashes with the same limits: the store key, the providers' tokens and what users
/// typed stay off the disk. (mfad sets its own core limit to 0 and makes itself not
/// dumpable, first thing; mfa_proto::alloc::keep_memory_private.)
#[test]
fn a_crashing_mfad_leaves_no_core_file() {
    use mfa_test_support::binary::BinaryHost;
    use nix::sys::signal::{Signal, kill};
    use std::os::unix::process::{CommandExt, ExitStatusExt};

    /// Starts `c` in `dir` with no limit on core files, as a site that keeps cores would.
    fn start_with_cores(mut c: Command, dir: &Path) -> std::process::Child {
        c.current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only setrlimit, which is async-signal-safe, between fork and exec.
        unsafe {
            c.pre_exec(|| {
                let unlimited = libc::rlimit {
                    rlim_cur: libc::RLIM_INFINITY,
                    rlim_max: libc::RLIM_INFINITY,
                };
                if libc::setrlimit(libc::RLIMIT_CORE, &unlimited) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        c.spawn().unwrap()
    }
    /// SIGABRT, as a failed assertion in C code or an abort sends (a SIGSEGV sent by
    /// kill(2) is caught by Rust's stack-overflow handler, which lets it pass).
    fn crash(mut child: std::process::Child) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        kill(pid, Signal::SIGABRT).unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("pid {pid} did not die of SIGABRT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    fn cores_in(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("core"))
            .collect()
    }
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();

    // The control: another program, crashing the same way with the same limits, dumps.
    let control = tempfile::tempdir().unwrap();
    let mut sleep = Command::new("sleep");
    sleep.arg("30");
    let child = start_with_cores(sleep, control.path());
    std::thread::sleep(Duration::from_millis(100));
    let status = crash(child);
    assert_eq!(status.signal(), Some(libc::SIGABRT));
    assert!(
        status.core_dumped(),
        "this machine dumped no core of a crashing `sleep` (core_pattern {pattern:?}), so \
         this test cannot tell whether mfad would dump one"
    );

    let host = BinaryHost::new(env!("CARGO_BIN_EXE_mfad"), "");
    let child = start_with_cores(host.command(&["--foreground"]), &host.path(""));
    // Killed if an assertion fails before the crash.
    struct Reaped(Option<std::process::Child>);
    impl Drop for Reaped {
        fn drop(&mut self) {
            if let Some(mut child) = self.0.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    let mut child = Reaped(Some(child));
    let pid = child.0.as_ref().unwrap().id();
    host.wait_for_socket();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().skip(4).take(2).collect::<Vec<_>>(),
        ["0", "0"],
        "{core}"
    );
    let status = crash(child.0.take().unwrap());
    assert_eq!(status.signal(), Some(libc::SIGABRT));
    assert!(!status.core_dumped(), "mfad dumped a core: {pattern:?}");
    assert_eq!(cores_in(&host.path("")), Vec::<String>::new());
}
