//! The built module, loaded by real libpam: `pamtester` under pam_wrapper reads a private
//! service directory (no /etc/pam.d change), talks to the fake mfad, and answers the prompt
//! from its stdin. These tests check what a PAM application sees: exit status and text.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{FakeMfad, Step};
use mfa_proto::Outcome;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const SERVICE: &str = "pam_mfa-test";
const SECURE_TEXT: &str = "Two-factor authentication is unavailable right now; login refused. Please try again later or contact your administrator.";
const SAFE_TEXT: &str =
    "Two-factor authentication is unavailable right now; continuing without it.";

/// The cdylib as cargo builds it. Under `cargo test` it is (re)built first, so the test
/// never loads a stale module; run by hand, it must already exist.
fn module() -> &'static Path {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = target_dir();
        let (profile, flags): (&str, &[&str]) = if cfg!(debug_assertions) {
            ("debug", &[])
        } else {
            ("release", &["--release"])
        };
        if let Some(cargo) = std::env::var_os("CARGO") {
            let status = Command::new(cargo)
                .args(["build", "--quiet", "-p", "pam_mfa"])
                .args(flags)
                .current_dir(manifest)
                .status()
                .expect("running cargo build -p pam_mfa");
            assert!(status.success(), "cargo build -p pam_mfa failed: {status}");
        }
        let so = target.join(profile).join("libpam_mfa.so");
        assert!(
            so.is_file(),
            "{} is missing: run `cargo build -p pam_mfa` first",
            so.display()
        );
        so
    })
}

/// The target directory cargo builds into.
fn target_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_relative() {
                manifest.join("..").join(t)
            } else {
                t
            }
        })
        .unwrap_or_else(|| manifest.join("../target"))
}

/// A pam_wrapper service directory: our service, and `other` denying everything.
fn service_dir(module_args: &str) -> tempfile::TempDir {
    service_dir_for(module(), module_args)
}

/// [`service_dir`] for the module at `so`.
fn service_dir_for(so: &Path, module_args: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pam_mfa-pamd-")
        .tempdir()
        .unwrap();
    std::fs::write(
        dir.path().join(SERVICE),
        format!("auth required {} {module_args}\n", so.display()),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("other"),
        "auth required pam_deny.so\naccount required pam_deny.so\n",
    )
    .unwrap();
    dir
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `pamtester [extra] SERVICE root authenticate` with `stdin` as the user's typing.
fn pamtester(service_dir: &Path, extra: &[&str], stdin: &str) -> Run {
    pamtester_typing_after(service_dir, extra, stdin, || {})
}

/// Like [`pamtester`], but types only once `before_typing` returns.
fn pamtester_typing_after(
    service_dir: &Path,
    extra: &[&str],
    stdin: &str,
    before_typing: impl FnOnce(),
) -> Run {
    // pam_wrapper names its copy of the service directory /tmp/pam.X; two processes that
    // start together can pick the same X and read each other's services. One at a time.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let mut child = Command::new("pamtester")
        .args(extra)
        .args([SERVICE, "root", "authenticate"])
        .env("LD_PRELOAD", "libpam_wrapper.so")
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", service_dir)
        // pam_wrapper prints pam_syslog lines on stderr at debug level.
        .env("PAM_WRAPPER_DEBUGLEVEL", "2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pamtester (apt-get install pamtester libpam-wrapper)");
    let pid = child.id();
    let mut input = child.stdin.take().unwrap();
    before_typing();
    // The prompt may never come (fail mode), so a failed write is not an error here.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);

    // Bounded wait: a hang is a failure, not a stuck test run.
    let deadline = started + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    remove_pam_wrapper_dir(pid);
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// pam_wrapper copies the service directory to /tmp/pam.X and removes it at exit, unless
/// the process died first. Removes the one that `pid` left, if any.
fn remove_pam_wrapper_dir(pid: u32) {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.len() != "pam.X".len() || !name.starts_with("pam.") {
            continue;
        }
        let owner = std::fs::read_to_string(entry.path().join("pid")).unwrap_or_default();
        if owner.trim() == pid.to_string() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn module_args(socket: &Path, extra: &str) -> String {
    format!("socket={} {extra}", socket.display())
}

/// sshd does not load libgcc_s; the module carries its own unwinder (build.rs), so that
/// each login does not load and unload a second library.
#[test]
fn the_module_needs_no_libgcc_s() {
    let out = Command::new("readelf")
        .arg("--dynamic")
        .arg(module())
        .output()
        .expect("readelf (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("(NEEDED)") && text.contains("libpam.so"),
        "{text}"
    );
    assert!(!text.contains("libgcc_s"), "{text}");
}

/// A panic inside the module (a test-only build whose `unwind-probe` argument panics in
/// pam_sm_authenticate) unwinds with the module's own unwinder, inside pamtester, a C
/// program without libgcc_s, back to `pam_hooks!`'s catch: the application gets a PAM
/// error (PAM_ABORT) and goes on; it is not aborted.
#[test]
fn a_panic_in_the_module_is_a_pam_error_for_an_application_without_libgcc_s() {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return; // run by hand, outside cargo: the probe build needs cargo
    };
    // Its own target directory: the probe module must never be the one other tests load.
    let probe_target = target_dir().join("unwind-probe");
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "pam_mfa",
            "--features",
            "unwind-probe",
        ])
        .arg("--target-dir")
        .arg(&probe_target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("running cargo build -p pam_mfa --features unwind-probe");
    assert!(status.success(), "the probe build failed: {status}");
    let so = probe_target.join("debug").join("libpam_mfa.so");
    let pamtester_bin = Command::new("sh")
        .args(["-c", "command -v pamtester"])
        .output()
        .unwrap();
    let ldd = Command::new("ldd")
        .arg(String::from_utf8_lossy(&pamtester_bin.stdout).trim())
        .output()
        .unwrap();
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    assert!(
        !ldd.contains("libgcc_s"),
        "pamtester itself loads libgcc_s:\n{ldd}"
    );

    let pamd = service_dir_for(&so, "socket=/nonexistent/mfad.sock unwind-probe");
    let run = pamtester(pamd.path(), &[], "");
    assert!(
        run.stderr.contains("unwind probe"),
        "the probe did not panic: {}",
        run.stderr
    );
    // A process killed by SIGABRT has no exit code.
    assert_eq!(
        run.status.code(),
        Some(1),
        "pamtester did not end by itself: {}",
        run.stderr
    );
    assert!(
        !run.stdout.contains("successfully authenticated"),
        "{}",
        run.stdout
    );
}

#[test]
fn pamtester_succeeds_after_the_prompt_is_answered() {
    let mfad = FakeMfad::start(vec![
        Step::Info("Two-factor login for root"),
        Step::Prompt("Passcode or option (1-3): ", false),
        Step::Done(Outcome::Allow),
    ]);
    let pamd = service_dir(&module_args(mfad.socket(), "debug"));
    let run = pamtester(
        pamd.path(),
        &[
            "-I",
            "rhost=192.0.2.9",
            "-I",
            "tty=pts/9",
            "-E",
            "SSH_CONNECTION=192.0.2.9 40000 192.0.2.1 22",
        ],
        "123456\n",
    );
    assert!(
        run.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        run.status,
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr.contains("Passcode or option (1-3): "),
        "{}",
        run.stderr
    );
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("Two-factor login for root"),
        "stdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    assert!(!run.stderr.contains("123456"), "{}", run.stderr);

    let seen = mfad.finish();
    assert_eq!(seen.answers, vec![Some("123456".to_string())]);
    let ctx = seen.context();
    assert_eq!(ctx.user, "root");
    assert_eq!(ctx.service, SERVICE);
    assert_eq!(ctx.rhost.as_deref(), Some("192.0.2.9"));
    assert_eq!(ctx.tty.as_deref(), Some("pts/9"));
    assert_eq!(
        ctx.ssh_connection.as_deref(),
        Some("192.0.2.9 40000 192.0.2.1 22")
    );
    assert_eq!(ctx.ssh_auth_info, None);
}

#[test]
fn pamtester_fails_when_the_daemon_denies() {
    let mfad = FakeMfad::start(vec![
        Step::Prompt("Passcode: ", false),
        Step::Error("Incorrect passcode."),
        Step::Done(Outcome::Deny),
    ]);
    let pamd = service_dir(&module_args(mfad.socket(), ""));
    let run = pamtester(pamd.path(), &[], "000000\n");
    assert_eq!(
        run.status.code(),
        Some(1),
        "{:?} {}",
        run.status,
        run.stderr
    );
    assert!(run.stderr.contains("Passcode: "), "{}", run.stderr);
    assert!(run.stderr.contains("Incorrect passcode."), "{}", run.stderr);
    assert!(
        run.stderr.contains("Authentication failure"),
        "{}",
        run.stderr
    );
    assert_eq!(mfad.finish().answers, vec![Some("000000".to_string())]);
}

#[test]
fn pamtester_without_a_daemon_is_refused_by_failmode_secure() {
    let (_dir, socket) = FakeMfad::absent_socket();
    let pamd = service_dir(&module_args(&socket, "connect_timeout=1"));
    let run = pamtester(pamd.path(), &[], "");
    assert_eq!(
        run.status.code(),
        Some(1),
        "{:?} {}",
        run.status,
        run.stderr
    );
    assert!(run.stderr.contains(SECURE_TEXT), "{}", run.stderr);
}

#[test]
fn pamtester_without_a_daemon_is_let_in_by_failmode_safe_and_it_is_logged() {
    let (_dir, socket) = FakeMfad::absent_socket();
    let pamd = service_dir(&module_args(&socket, "failmode=safe"));
    let run = pamtester(pamd.path(), &["-I", "rhost=192.0.2.9"], "");
    assert!(run.status.success(), "{:?} {}", run.status, run.stderr);
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains(SAFE_TEXT),
        "stdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    // pam_wrapper shows pam_syslog's line on stderr: proof the real pam_syslog is called.
    assert!(
        run.stderr
            .contains("failmode=safe: allowing root from 192.0.2.9 without a second factor"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_daemon_hanging_up_after_the_prompt_does_not_kill_the_application() {
    // The answer is written to a closed socket: a plain write(2) would raise SIGPIPE, and
    // pamtester (like sshd's child, which does not ignore it) would die without a PAM result.
    // mfad had spoken (the prompt), so the hang-up is a refusal in both fail modes.
    for (mode, want) in [("failmode=secure", 1), ("failmode=safe", 1)] {
        let mfad = FakeMfad::start(vec![Step::PromptAndHangUp("Passcode: ")]);
        let pamd = service_dir(&module_args(mfad.socket(), mode));
        // Type only once the daemon has hung up, so the answer surely meets a closed socket.
        let run =
            pamtester_typing_after(pamd.path(), &[], "123456\n", || mfad.wait_until_hung_up());
        assert_eq!(
            run.status.code(),
            Some(want),
            "{mode}: {:?}\n{}",
            run.status,
            run.stderr
        );
        assert!(run.stderr.contains("Passcode: "), "{}", run.stderr);
        mfad.finish();
    }
}

#[test]
fn pamtester_gives_up_on_a_silent_daemon_after_the_timeout() {
    let mfad = FakeMfad::start(vec![Step::Hang]);
    let pamd = service_dir(&module_args(mfad.socket(), "timeout=1"));
    let run = pamtester(pamd.path(), &[], "");
    assert_eq!(
        run.status.code(),
        Some(1),
        "{:?} {}",
        run.status,
        run.stderr
    );
    assert!(run.stderr.contains(SECURE_TEXT), "{}", run.stderr);
    assert!(run.took < Duration::from_secs(5), "took {:?}", run.took);
    mfad.finish();
}

#[test]
fn bad_arguments_are_logged_verbatim_and_the_module_still_works() {
    let mfad = FakeMfad::start(vec![Step::Done(Outcome::Allow)]);
    // "%n" would be a format directive if the text reached pam_syslog as its format.
    let pamd = service_dir(&module_args(mfad.socket(), "failmode=maybe nullok 100%s%n"));
    let run = pamtester(pamd.path(), &[], "");
    assert!(run.status.success(), "{:?} {}", run.status, run.stderr);
    assert!(
        run.stderr
            .contains("failmode=\"maybe\" is neither secure nor safe; using failmode=secure"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("unknown module argument \"nullok\" ignored"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("unknown module argument \"100%s%n\" ignored"),
        "{}",
        run.stderr
    );
    mfad.finish();
}
