//! Socket activation (packaging/mfad.socket): systemd holds mfad's listening socket, so a
//! restart of mfad refuses no login. Played here by `systemd-socket-activate` (PID 1 is not
//! systemd on these machines), which passes the socket as systemd does (LISTEN_FDS), with a
//! small holder that keeps it open and starts mfad again when it exits (Restart=).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfa_e2e::cli::{MfaCli, copy_for_users};
use mfa_e2e::mfad::ActivatedMfad;
use mfa_e2e::pam_login::{PamLogin, PamTester, finish};
use mfa_e2e::paths::{built, workspace_root};
use mfa_e2e::process::{run, text};
use mfa_e2e::scratch::{ScratchDir, unique_name};
use mfa_e2e::sshd::PamService;
use mfa_e2e::user::TestUser;
use mfa_e2e::{MfadConfig, TotpSecret};
use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[test]
fn mfad_socket_and_service_pass_systemd_analyze_verify() {
    let scratch = ScratchDir::new(&unique_name()).unwrap();
    let mfad = built("mfad").unwrap();
    for unit in ["mfad.socket", "mfad.service"] {
        let text = std::fs::read_to_string(workspace_root().join("packaging").join(unit)).unwrap();
        std::fs::write(
            scratch.join(unit),
            text.replace("/usr/sbin/mfad", &mfad.display().to_string()),
        )
        .unwrap();
    }
    let service = std::fs::read_to_string(scratch.join("mfad.service")).unwrap();
    assert!(service.contains("Requires=mfad.socket"), "{service}");
    assert!(service.contains("Also=mfad.socket"), "{service}");
    let socket = std::fs::read_to_string(scratch.join("mfad.socket")).unwrap();
    assert!(
        socket.contains("ListenStream=/run/mfa/mfad.sock") && socket.contains("SocketMode=0666"),
        "{socket}"
    );

    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(scratch.join("mfad.socket"))
        .arg(scratch.join("mfad.service")))
    .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A user, a PAM service whose auth is pam_mfa alone, and a socket-activated mfad.
struct World {
    mfad: ActivatedMfad,
    pam: PamTester,
    user: TestUser,
    cli: MfaCli,
    config: MfadConfig,
    _service: PamService,
    _scratch: ScratchDir,
}

impl World {
    fn start(config: MfadConfig) -> World {
        mfa_e2e::paths::require_root().unwrap();
        let name = unique_name();
        let scratch = ScratchDir::new(&name).unwrap();
        let bin = scratch.subdir("bin", 0o755).unwrap();
        let mfad = ActivatedMfad::start(scratch.path(), &config).unwrap();
        let user = TestUser::create(&name).unwrap();
        let service_name = format!("sshd-{name}");
        let service = PamService::install(
            &service_name,
            &format!(
                "auth required {} socket={} failmode=secure timeout=30 connect_timeout=2\n\
                 account required pam_permit.so\n",
                built("libpam_mfa.so").unwrap().display(),
                mfad.socket.display()
            ),
        )
        .unwrap();
        let cli = MfaCli {
            program: copy_for_users(&built("mfa").unwrap(), &bin).unwrap(),
            socket: mfad.socket.clone(),
        };
        World {
            mfad,
            pam: PamTester::new(&service_name),
            user,
            cli,
            config,
            _service: service,
            _scratch: scratch,
        }
    }

    fn login(&self, input: &str) -> PamLogin {
        self.pam
            .login(self.user.name.as_bytes(), input.as_bytes())
            .unwrap()
    }

    fn enroll(&self) -> TotpSecret {
        let (totp, _) = self
            .cli
            .enroll_totp(
                &self.user,
                self.config.totp_digits,
                self.config.totp_period,
                self.config.totp_window,
            )
            .unwrap();
        totp
    }
}

/// Logins keep coming (four at a time, each answered by mfad: `unenrolled = "allow"` is
/// still mfad's verdict) while mfad is restarted twice, as `systemctl restart mfad` does
/// (SIGTERM, then a new mfad on the same socket). Then a restart held back for a second:
/// the logins made meanwhile wait in the socket's backlog and are answered by the next mfad.
/// With failmode=secure, none is refused.
#[test]
fn a_restart_of_mfad_in_the_middle_of_a_burst_of_logins_refuses_none() {
    let world = Arc::new(World::start(MfadConfig {
        unenrolled: "allow".into(),
        ..MfadConfig::default()
    }));
    let first = world.login("");
    assert!(
        first.succeeded(),
        "{}\n{}",
        first.describe(),
        world.mfad.log()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let world = Arc::clone(&world);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut logins = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    logins.push(world.login(""));
                }
                logins
            })
        })
        .collect();

    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1500));
        let old = world.mfad.signal_mfad("TERM").unwrap();
        world
            .mfad
            .wait_exited(old, Duration::from_secs(15))
            .unwrap();
        world
            .mfad
            .wait_for_mfad(Some(old), Duration::from_secs(10))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));

    // A slow restart: no mfad at all for a second, while logins keep coming.
    world.mfad.hold_restarts().unwrap();
    let old = world.mfad.signal_mfad("TERM").unwrap();
    world
        .mfad
        .wait_exited(old, Duration::from_secs(15))
        .unwrap();
    let waiting: Vec<_> = (0..8)
        .map(|_| {
            let world = Arc::clone(&world);
            std::thread::spawn(move || world.login(""))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "a login ended while no mfad ran:\n{}",
        world.mfad.log()
    );
    world.mfad.release();
    world
        .mfad
        .wait_for_mfad(Some(old), Duration::from_secs(10))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);

    let mut logins: Vec<PamLogin> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    logins.extend(waiting.into_iter().map(|w| w.join().unwrap()));
    let refused: Vec<_> = logins.iter().filter(|l| !l.succeeded()).collect();
    assert!(
        refused.is_empty(),
        "{} of {} logins refused; first: {}\n{}",
        refused.len(),
        logins.len(),
        refused[0].describe(),
        world.mfad.log()
    );
    assert!(logins.len() >= 40, "only {} logins", logins.len());
    assert_eq!(world.mfad.starts(), 4, "{}", world.mfad.log());
    assert!(
        world.mfad.log().contains("(socket from systemd)"),
        "{}",
        world.mfad.log()
    );
    println!(
        "{} logins across 3 restarts of mfad, none refused",
        logins.len()
    );
}

/// A login at its passcode prompt when mfad is told to stop: the user's code, typed while
/// mfad shuts down, still logs them in (conversations in progress get up to 10 s). One
/// still unanswered when that grace is over is refused as soon as its user answers, with a
/// message they can act on.
#[test]
fn a_login_in_progress_when_mfad_stops_finishes_and_one_past_the_grace_is_told_to_retry() {
    let world = World::start(MfadConfig::default());
    let mut totp = world.enroll();

    // Answered during the shutdown.
    let started = Instant::now();
    let mut typing = world.pam.spawn(world.user.name.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let old = world.mfad.signal_mfad("TERM").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let code = totp.fresh_code();
    typing
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{code}\n").as_bytes())
        .unwrap();
    let login = finish(typing, started).unwrap();
    assert!(
        login.succeeded(),
        "{}\n{}",
        login.describe(),
        world.mfad.log()
    );
    world
        .mfad
        .wait_exited(old, Duration::from_secs(15))
        .unwrap();
    let new = world
        .mfad
        .wait_for_mfad(Some(old), Duration::from_secs(10))
        .unwrap();
    assert!(
        world
            .mfad
            .log()
            .contains("waiting up to 10 s for 1 conversations in progress"),
        "{}",
        world.mfad.log()
    );

    // Still at the prompt when the grace is over: the conversation is ended. The client is
    // waiting for its user, not for mfad; the moment the user answers, the login is refused
    // and told to try again (never let in, never left hanging).
    let started = Instant::now();
    let mut waiting = world.pam.spawn(world.user.name.as_bytes()).unwrap();
    let mut late_user = waiting.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(world.mfad.signal_mfad("TERM").unwrap(), new);
    let ended = mfa_e2e::clock::wait_for(Duration::from_secs(20), || {
        world
            .mfad
            .log()
            .contains("conversations still in progress after 10 s are ended")
            .then_some(())
    });
    assert!(ended.is_some(), "{}", world.mfad.log());
    let code = totp.fresh_code();
    let answered = Instant::now();
    late_user.write_all(format!("{code}\n").as_bytes()).unwrap();
    drop(late_user);
    let refused = finish(waiting, started).unwrap();
    assert!(
        refused.refused(),
        "{}\n{}",
        refused.describe(),
        world.mfad.log()
    );
    assert!(
        refused
            .shown()
            .contains("the login was interrupted and is refused. Please try again."),
        "{}",
        refused.describe()
    );
    assert!(
        answered.elapsed() < Duration::from_secs(5),
        "{}",
        refused.describe()
    );
}

/// `systemctl reload mfad` (SIGHUP): the next login gets the new `max_attempts`, while a
/// login already at its prompt finishes under the settings it started with; a broken file
/// is refused with an error logged and the running settings kept; a key that needs a
/// restart (`socket`) is named and kept. mfad keeps running throughout.
#[test]
fn sighup_reloads_the_config_for_new_logins_and_keeps_it_when_the_new_file_is_broken() {
    let world = World::start(MfadConfig::default());
    let mut totp = world.enroll();
    let pid = world
        .mfad
        .mfad_pid()
        .expect("mfad started by the enrolment");
    let original = std::fs::read_to_string(&world.mfad.config_path).unwrap();
    assert!(original.contains("max_attempts = 3\n"), "{original}");
    let wrong = totp.wrong_code();

    // In progress before the reload: 3 attempts, so a wrong code then the right one logs in.
    let started = Instant::now();
    let mut in_progress = world.pam.spawn(world.user.name.as_bytes()).unwrap();
    let mut typing = in_progress.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(1500));

    std::fs::write(
        &world.mfad.config_path,
        original.replace("max_attempts = 3\n", "max_attempts = 1\n"),
    )
    .unwrap();
    let reloads = |n: usize| {
        mfa_e2e::clock::wait_for(Duration::from_secs(10), || {
            (world.mfad.log().matches("configuration reloaded").count() >= n).then_some(())
        })
        .is_some()
    };
    world.mfad.signal_mfad("HUP").unwrap();
    assert!(reloads(1), "{}", world.mfad.log());

    let code = totp.fresh_code();
    typing
        .write_all(format!("{wrong}\n{code}\n").as_bytes())
        .unwrap();
    drop(typing);
    let old_rules = finish(in_progress, started).unwrap();
    assert!(
        old_rules.succeeded(),
        "the login in progress lost its settings: {}\n{}",
        old_rules.describe(),
        world.mfad.log()
    );

    // After the reload: one attempt, so the wrong code ends the login.
    let code = totp.fresh_code();
    let new_rules = world.login(&format!("{wrong}\n{code}\n"));
    assert!(new_rules.refused(), "{}", new_rules.describe());
    // The login ended at the wrong code: the right one was never checked.
    totp.unused(&code);

    // A broken file and a changed socket path: refused / kept, and said so.
    std::fs::write(
        &world.mfad.config_path,
        original.replace("max_attempts = 3\n", "max_attempts = \"three\"\n"),
    )
    .unwrap();
    world.mfad.signal_mfad("HUP").unwrap();
    let refused = mfa_e2e::clock::wait_for(Duration::from_secs(10), || {
        world
            .mfad
            .log()
            .contains("reload refused, the running configuration is kept")
            .then_some(())
    });
    assert!(refused.is_some(), "{}", world.mfad.log());
    assert!(
        world.mfad.log().contains("max_attempts"),
        "{}",
        world.mfad.log()
    );
    let code = totp.fresh_code();
    let still_new = world.login(&format!("{wrong}\n{code}\n"));
    assert!(still_new.refused(), "{}", still_new.describe());
    totp.unused(&code);

    let socket = world.mfad.socket.display().to_string();
    std::fs::write(
        &world.mfad.config_path,
        original
            .replace(&socket, &format!("{socket}.elsewhere"))
            .replace("max_attempts = 3\n", "max_attempts = 2\n"),
    )
    .unwrap();
    world.mfad.signal_mfad("HUP").unwrap();
    assert!(reloads(2), "{}", world.mfad.log());
    assert!(
        world.mfad.log().contains("reload: socket changed in"),
        "{}",
        world.mfad.log()
    );
    let code = totp.fresh_code();
    let two_attempts = world.login(&format!("{wrong}\n{code}\n"));
    assert!(
        two_attempts.succeeded(),
        "{}\n{}",
        two_attempts.describe(),
        world.mfad.log()
    );
    assert_eq!(world.mfad.mfad_pid(), Some(pid), "{}", world.mfad.log());
    assert_eq!(world.mfad.starts(), 1, "{}", world.mfad.log());
}
