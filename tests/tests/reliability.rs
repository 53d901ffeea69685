//! Reliability: races on one code, and faults (mfad killed or restarted, a read-only store,
//! a full disk, a push provider that hangs or talks nonsense). Each fault must end every
//! login within its bound, honour the fail mode, say so in a log line, and leave the store
//! whole: `PRAGMA integrity_check` passes and the enrolment still logs in.
//!
//! Logins go through the real PAM stack (pam_unix, then pam_mfa) with pamtester, which runs
//! the same modules sshd would, so a hundred can start at once. (A clock stepping backwards
//! is checked at the daemon level, with a fake clock: mfad/tests/clock_step.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::mfad::{APPROVAL_PORT, Mfad};
use mfa_e2e::pam_login::{PamLogin, PamTester, finish, sqlite};
use mfa_e2e::process::{run, text, timed};
use mfa_e2e::{Enrolment, TestEnv};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What pam_mfa shows when mfad gives no answer and failmode=secure.
const UNAVAILABLE: &str = "Two-factor authentication is unavailable right now";

/// No login here may take longer: a hang is a failure, whatever the machine's load.
const BOUND: Duration = Duration::from_secs(45);

fn database(env: &TestEnv) -> PathBuf {
    env.dir.join("mfad/lib/mfa.db")
}

/// The login history's file, beside the store.
fn history(env: &TestEnv) -> PathBuf {
    env.dir.join("mfad/lib/mfa-history.db")
}

/// Replaces the world's mfad by one this test controls (same config, socket and store).
fn own_mfad(env: &mut TestEnv) -> Mfad {
    env.stop_mfad();
    Mfad::start(&env.dir.join("mfad"), &env.config).unwrap()
}

fn typed(env: &TestEnv, answers: &[&str]) -> Vec<u8> {
    let mut s = format!("{}\n", env.password());
    for a in answers {
        s.push_str(a);
        s.push('\n');
    }
    s.into_bytes()
}

fn login(env: &TestEnv, answers: &[&str]) -> PamLogin {
    PamTester::new(&env.pam_service())
        .login(env.username().as_bytes(), &typed(env, answers))
        .unwrap()
}

/// The store is whole and still holds the user's authenticator.
fn assert_store_whole(env: &TestEnv) {
    let db = database(env);
    assert_eq!(sqlite(&db, "PRAGMA integrity_check").unwrap(), "ok");
    let devices = sqlite(
        &db,
        &format!(
            "SELECT count(*) FROM devices WHERE user = '{}' AND kind = 'totp'",
            env.username()
        ),
    )
    .unwrap();
    assert_eq!(devices, "1", "the enrolment was lost");
}

/// A code of the next time step: valid for at least 30 s, long enough for any race here.
fn next_step_code(device: &Enrolment) -> String {
    let now = mfa_e2e::clock::unix_now() as u64;
    device.totp.code_at_step(now / 30 + 1)
}

/// Starts `n` logins, waits until every one shows its password prompt, then releases them
/// together (a barrier): each types `answers` at the same moment, and they overlap.
/// Returns them all, and how many others were still running when the first success ended.
fn race(env: &TestEnv, n: usize, answers: &[&str]) -> (Vec<PamLogin>, usize) {
    let tester = PamTester::new(&env.pam_service());
    let input = Arc::new(typed(env, answers));
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let mut child = tester.spawn(env.username().as_bytes()).unwrap();
            let (input, barrier) = (Arc::clone(&input), Arc::clone(&barrier));
            std::thread::spawn(move || {
                // pamtester prompts on stderr; read up to the password prompt.
                let mut stderr = child.stderr.take().unwrap();
                let mut seen = Vec::new();
                let mut byte = [0u8; 1];
                while !seen.ends_with(b"Password: ") {
                    match stderr.read(&mut byte) {
                        Ok(1) => seen.push(byte[0]),
                        _ => break,
                    }
                }
                barrier.wait();
                let started = Instant::now();
                let _ = child.stdin.take().unwrap().write_all(&input);
                let mut rest = Vec::new();
                let _ = stderr.read_to_end(&mut rest);
                let mut login = finish(child, started).unwrap();
                seen.extend(rest);
                login.stderr = format!("{}{}", String::from_utf8_lossy(&seen), login.stderr);
                (login, Instant::now())
            })
        })
        .collect();
    let ended: Vec<(PamLogin, Instant)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let first_success = ended
        .iter()
        .filter(|(l, _)| l.succeeded())
        .map(|(_, end)| *end)
        .min();
    let in_flight = first_success.map_or(0, |first| {
        ended.iter().filter(|(_, end)| *end > first).count()
    });
    println!("{in_flight} of {n} logins were in flight when the first one succeeded");
    (ended.into_iter().map(|(l, _)| l).collect(), in_flight)
}

/// The race overlapped: when the winner got in, others were still being decided.
fn assert_overlapped(in_flight: usize) {
    assert!(
        in_flight >= 10,
        "only {in_flight} logins were in flight when the first succeeded"
    );
}

fn assert_exactly_one_in(env: &TestEnv, logins: &[PamLogin]) {
    let won = logins.iter().filter(|l| l.succeeded()).count();
    let crashed: Vec<_> = logins.iter().filter(|l| l.signal.is_some()).collect();
    assert!(crashed.is_empty(), "{}", crashed[0].describe());
    assert_eq!(
        won,
        1,
        "exactly one of {} logins should get in; first refusal:\n{}\n{}",
        logins.len(),
        logins
            .iter()
            .find(|l| !l.succeeded())
            .map(PamLogin::describe)
            .unwrap_or_default(),
        env.diagnostics()
    );
    assert!(logins.iter().all(|l| l.succeeded() || l.refused()));
}

#[test]
fn a_clean_stop_writes_the_login_history_rows_still_gathering() {
    let mut env = TestEnv::new().unwrap();
    let mut device = env.enroll_totp().unwrap();
    let mut mfad = own_mfad(&mut env);
    let code = device.totp.fresh_code();
    let ok = login(&env, &[&code]);
    assert!(ok.succeeded(), "{}\n{}", ok.describe(), mfad.log());
    // The history gathers rows for a moment before it writes them; SIGTERM comes sooner.
    mfad.stop();
    let rows = sqlite(&history(&env), "SELECT user, method, outcome FROM logins").unwrap();
    assert_eq!(
        rows,
        format!("{}|totp|allowed", env.username()),
        "{}",
        mfad.log()
    );
    assert_store_whole(&env);
}

#[test]
fn a_hundred_logins_racing_on_one_totp_code_let_exactly_one_in() {
    let env = TestEnv::builder()
        .max_attempts(1)
        .lockout(0, 3600)
        .start()
        .unwrap();
    let device = env.enroll_totp().unwrap();
    let code = next_step_code(&device);

    let (logins, in_flight) = race(&env, 100, &[&code]);
    assert_overlapped(in_flight);

    assert_exactly_one_in(&env, &logins);
    let replays = logins
        .iter()
        .filter(|l| l.shown().contains("already used"))
        .count();
    assert!(
        replays >= 90,
        "losers are told the code was used: {replays}"
    );
    assert!(env.mfad_log().contains("reason=\"code already used"));
    assert_store_whole(&env);
}

#[test]
fn a_hundred_logins_racing_on_one_bypass_code_let_exactly_one_in() {
    let env = TestEnv::builder()
        .max_attempts(1)
        .lockout(0, 3600)
        .start()
        .unwrap();
    let _device = env.enroll_totp().unwrap();
    let codes = env.admin_bypass_codes().unwrap();

    let (logins, in_flight) = race(&env, 100, &[&codes[0]]);
    assert_overlapped(in_flight);

    assert_exactly_one_in(&env, &logins);
    let unused = sqlite(
        &database(&env),
        &format!(
            "SELECT count(*) FROM bypass_codes WHERE user = '{}' AND used_at IS NULL",
            env.username()
        ),
    )
    .unwrap();
    assert_eq!(unused, "9", "one code spent, nine left");
    // The other nine still work.
    assert!(login(&env, &[&codes[1]]).succeeded());
    assert_store_whole(&env);
}

#[test]
fn mfad_killed_in_the_middle_of_a_login_refuses_it_and_loses_nothing() {
    let mut env = TestEnv::new().unwrap();
    let mut device = env.enroll_totp().unwrap();
    let mut mfad = own_mfad(&mut env);
    let tester = PamTester::wrapped(&env.pam_service(), &env.dir).unwrap();
    let turn = WRAPPED_TURN.lock().unwrap_or_else(|e| e.into_inner());

    let started = Instant::now();
    let mut child = tester.spawn(env.username().as_bytes()).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let reader = {
        let mut pipe = child.stderr.take().unwrap();
        let stderr = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                stderr
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    stdin
        .write_all(format!("{}\n", env.password()).as_bytes())
        .unwrap();
    // Wait until pam_mfa relays mfad's passcode prompt: the conversation is under way.
    let asked = mfa_e2e::clock::wait_for(Duration::from_secs(30), || {
        stderr.lock().unwrap().contains("Passcode").then_some(())
    });
    assert!(asked.is_some(), "{}", stderr.lock().unwrap());
    mfad.kill();
    let code = device.totp.fresh_code();
    let _ = stdin.write_all(format!("{code}\n").as_bytes());
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    drop(turn);
    let took = started.elapsed();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr.lock().unwrap()
    );

    assert_eq!(out.status.code(), Some(1), "refused, not crashed:\n{shown}");
    assert!(took < BOUND, "took {took:?}");
    assert!(shown.contains(UNAVAILABLE), "{shown}");
    // mfad had asked: a refusal whatever the fail mode, logged as a broken conversation.
    assert!(
        shown.contains("the conversation with mfad broke off") && shown.contains("refusing"),
        "pam_mfa's log line:\n{shown}"
    );

    // A new mfad replaces the stale socket and has everything.
    let _mfad = Mfad::start(&env.dir.join("mfad"), &env.config).unwrap();
    let code = device.totp.fresh_code();
    let again = login(&env, &[&code]);
    assert!(again.succeeded(), "{}", again.describe());
    assert_store_whole(&env);
}

/// Wrapped pamtester runs (pam_wrapper) of this file take turns.
static WRAPPED_TURN: Mutex<()> = Mutex::new(());

#[test]
fn mfad_restarted_under_load_never_hangs_a_login_and_keeps_every_record() {
    let mut env = TestEnv::builder()
        .max_attempts(1)
        .lockout(0, 3600)
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();
    let mut mfad = own_mfad(&mut env);
    let spent = device.totp.fresh_code();
    assert!(login(&env, &[&spent]).succeeded());
    let wrong = device.totp.wrong_code();
    // Every row of every table, raw (sealed secrets as hex), except `users`: the failure
    // count the wrong codes of the load are meant to change, checked on its own below.
    let before = every_row(&database(&env));
    assert!(before.contains("\ndevices|"), "{before}");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (service, user, input, stop) = (
                env.pam_service(),
                env.username().to_string(),
                typed(&env, &[&wrong]),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    seen.push(
                        PamTester::new(&service)
                            .login(user.as_bytes(), &input)
                            .unwrap(),
                    );
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    mfad.kill();
    std::thread::sleep(Duration::from_secs(3));
    let _mfad = Mfad::start(&env.dir.join("mfad"), &env.config).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let logins: Vec<PamLogin> = load.into_iter().flat_map(|t| t.join().unwrap()).collect();

    let unavailable = logins
        .iter()
        .filter(|l| l.shown().contains(UNAVAILABLE))
        .count();
    let wrong_code = logins
        .iter()
        .filter(|l| l.shown().contains("Incorrect passcode"))
        .count();
    for l in &logins {
        assert!(
            l.refused(),
            "every load login is refused:\n{}",
            l.describe()
        );
        assert!(l.took < BOUND, "a login hung:\n{}", l.describe());
    }
    assert!(
        unavailable >= 1 && wrong_code >= 1,
        "logins met mfad both down ({unavailable}) and up ({wrong_code})"
    );
    assert_eq!(unavailable + wrong_code, logins.len());
    // Every record made before the crash survived it, unchanged.
    let db = database(&env);
    // (The login history only grows: the load's logins add rows, the earlier ones stay.)
    let after = every_row(&db);
    let kept = |rows: &str, history: bool| -> Vec<String> {
        rows.lines()
            .filter(|l| l.starts_with("logins|") == history)
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        kept(&after, false),
        kept(&before, false),
        "the store changed across the crash"
    );
    for row in kept(&before, true) {
        assert!(
            after.contains(&row),
            "a history row was lost: {row}\n{after}"
        );
    }
    // Each wrong code mfad answered was counted; one it counted as it was killed may have
    // reached the user as "unavailable".
    let (failures, lock) = sqlite(
        &db,
        &format!(
            "SELECT failures, quote(locked_until) FROM users WHERE name = '{}'",
            env.username()
        ),
    )
    .unwrap()
    .split_once('|')
    .map(|(f, l)| (f.parse::<usize>().unwrap(), l.to_string()))
    .unwrap();
    assert_eq!(lock, "NULL", "lockout is off here");
    assert!(
        (wrong_code..=logins.len()).contains(&failures),
        "{failures} failures counted for {wrong_code} wrong codes answered of {} logins",
        logins.len()
    );
    // The replay record is among them: the spent code is refused as spent.
    let replay = login(&env, &[&spent]);
    assert!(!replay.succeeded(), "{}", replay.describe());
    assert!(
        replay.shown().contains("That passcode was already used"),
        "{}",
        replay.describe()
    );
    let fresh = device.totp.fresh_code();
    assert!(login(&env, &[&fresh]).succeeded());
    assert_store_whole(&env);
}

/// Every row of every table of `db` as raw values (BLOBs in hex), in a stable order, but
/// `users` (failure counts and locks).
fn every_row(db: &Path) -> String {
    let tables = sqlite(
        db,
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
    )
    .unwrap();
    let mut all = String::new();
    for table in tables.lines() {
        if table == "users" {
            continue;
        }
        let sql = format!("SELECT * FROM \"{table}\" ORDER BY 1, 2");
        let out = run(timed(Duration::from_secs(30), "sqlite3")
            .arg("-quote")
            .arg(db)
            .arg(&sql))
        .unwrap();
        assert!(out.status.success(), "{sql}: {}", text(&out.stderr));
        let rows = text(&out.stdout);
        for row in rows.lines() {
            all.push_str(&format!("\n{table}|{row}"));
        }
    }
    all
}

/// A tmpfs mounted over mfad's database directory, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Moves the files of `dir` onto a new tmpfs of `size` mounted on `dir`.
    fn over(dir: &Path, size: &str) -> Tmpfs {
        let aside = dir.with_extension("aside");
        std::fs::rename(dir, &aside).unwrap();
        std::fs::create_dir(dir).unwrap();
        mount(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
            dir.to_str().unwrap(),
        ]);
        let fs = Tmpfs {
            path: dir.to_path_buf(),
        };
        for entry in std::fs::read_dir(&aside).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        fs
    }

    fn remount(&self, how: &str) {
        mount(&["-o", &format!("remount,{how}"), self.path.to_str().unwrap()]);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let path = self.path.to_str().unwrap_or_default();
        let out = run(Command::new("umount").arg(path));
        if !out.is_ok_and(|o| o.status.success()) {
            let _ = run(Command::new("umount").args(["-l", path]));
        }
    }
}

fn mount(args: &[&str]) {
    let out = run(Command::new("mount").args(args)).unwrap();
    assert!(
        out.status.success(),
        "mount {args:?}: {}",
        text(&out.stderr)
    );
}

/// Stops mfad, moves its store onto a tmpfs and starts it again there.
fn store_on_tmpfs(env: &mut TestEnv, size: &str) -> (Tmpfs, Mfad) {
    env.stop_mfad();
    let fs = Tmpfs::over(&env.dir.join("mfad/lib"), size);
    let mfad = Mfad::start(&env.dir.join("mfad"), &env.config).unwrap();
    (fs, mfad)
}

/// A file system cannot turn read-only under a process writing to it (the kernel refuses
/// while writers are open), so the store is read-only when mfad starts, as after an fsck
/// that remounted it so, or a full-disk policy of the host.
#[test]
fn a_read_only_store_stops_mfad_with_a_clear_error_and_logins_fail_secure_until_fixed() {
    let mut env = TestEnv::new().unwrap();
    let mut device = env.enroll_totp().unwrap();
    let (fs, mut mfad) = store_on_tmpfs(&mut env, "8m");
    let code = device.totp.fresh_code();
    assert!(login(&env, &[&code]).succeeded(), "{}", env.diagnostics());
    mfad.stop();

    fs.remount("ro");
    let started = Mfad::start(&env.dir.join("mfad"), &env.config);
    let code = device.totp.fresh_code();
    let refused = login(&env, &[&code]);
    fs.remount("rw");

    let err = started
        .err()
        .expect("mfad must not serve a store it cannot write")
        .to_string();
    assert!(
        err.contains("cannot open the database") && err.contains("Read-only file system"),
        "mfad names the cause:\n{err}"
    );
    assert!(refused.refused(), "{}", refused.describe());
    assert!(refused.took < BOUND);
    assert!(
        refused.shown().contains(UNAVAILABLE),
        "{}",
        refused.describe()
    );

    let mut mfad = Mfad::start(&env.dir.join("mfad"), &env.config).unwrap();
    let code = device.totp.fresh_code();
    let after = login(&env, &[&code]);
    assert!(after.succeeded(), "{}\n{}", after.describe(), mfad.log());
    mfad.stop();
    assert_store_whole(&env);
    drop(fs);
}

#[test]
fn a_full_disk_refuses_logins_with_failmode_secure_and_recovers() {
    let mut env = TestEnv::new().unwrap();
    let mut device = env.enroll_totp().unwrap();
    let (fs, mut mfad) = store_on_tmpfs(&mut env, "1m");
    let code = device.totp.fresh_code();
    assert!(login(&env, &[&code]).succeeded(), "{}", env.diagnostics());
    // The login history writes that login's row a moment later, into its own file beside
    // the store: waited for, so that the login below is the first write to find the disk
    // full (a history write that met it would only be logged).
    let written = mfa_e2e::clock::wait_for(Duration::from_secs(10), || {
        let rows = sqlite(&history(&env), "SELECT count(*) FROM logins").ok()?;
        (rows.trim() != "0").then_some(())
    });
    assert!(written.is_some(), "the login history was not written");

    // Fill the tmpfs to the last byte.
    let filler = fs.path.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&block[..1]).is_ok() {}
    }
    let code = device.totp.fresh_code();
    let refused = login(&env, &[&code]);
    std::fs::remove_file(&filler).unwrap();

    assert!(refused.refused(), "{}", refused.describe());
    assert!(refused.took < BOUND);
    assert!(
        refused.shown().contains(UNAVAILABLE),
        "{}",
        refused.describe()
    );
    let log = mfad.log();
    assert!(
        log.contains("database or disk is full"),
        "mfad names the cause:\n{log}"
    );
    let code = device.totp.fresh_code();
    let after = login(&env, &[&code]);
    assert!(after.succeeded(), "{}\n{}", after.describe(), mfad.log());
    mfad.stop();
    assert_store_whole(&env);
    drop(fs);
}

/// A stand-in push provider on 127.0.0.1 that accepts connections and then does `what`.
fn bad_provider(what: fn(std::net::TcpStream)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || what(stream));
        }
    });
    port
}

/// `[push] timeout` of [`push_world`].
const PUSH_TIMEOUT_SECS: u64 = 2;

/// A world whose push provider is `provider_port`, with a TOTP app (the default) and a push
/// device: the menu is "1. Push to phone".
fn push_world(provider_port: u16) -> (TestEnv, Enrolment) {
    let approval = APPROVAL_PORT;
    let env = TestEnv::builder()
        .mfad_toml(&format!(
            "wait_prompt = false\n[approval]\nlisten = \"127.0.0.1:{approval}\"\n\
             public_url = \"http://127.0.0.1:{approval}\"\n\n[push]\nnotifier = \"ntfy\"\n\
             url = \"http://127.0.0.1:{provider_port}/\"\ntimeout = {PUSH_TIMEOUT_SECS}\n"
        ))
        .start()
        .unwrap();
    let device = env.enroll_totp().unwrap();
    sqlite(
        &database(&env),
        &format!(
            "INSERT INTO devices(user, kind, name, address, is_default, created) \
             VALUES ('{}', 'push', 'phone', 'mfa_e2e_reliability', 0, 0)",
            env.username()
        ),
    )
    .unwrap();
    (env, device)
}

/// Choosing the push fails within the provider's timeout, says so, and the same login goes
/// on with a passcode. Returns how long the login took.
fn provider_failure_then_passcode(provider_port: u16) -> Duration {
    let (env, mut device) = push_world(provider_port);
    let code = device.totp.fresh_code();

    let l = login(&env, &["1", &code]);

    assert!(l.succeeded(), "{}\n{}", l.describe(), env.diagnostics());
    assert!(l.took < BOUND, "took {:?}", l.took);
    assert!(
        l.shown().contains("Could not send the push"),
        "{}",
        l.describe()
    );
    assert!(
        env.mfad_log()
            .contains("method=push outcome=provider-error"),
        "{}",
        env.diagnostics()
    );
    assert_store_whole(&env);
    l.took
}

#[test]
fn a_push_provider_that_hangs_costs_its_timeout_and_the_login_goes_on() {
    let port = bad_provider(|stream| {
        // Read the request, never answer; hold the connection open for a minute.
        let _keep = stream;
        std::thread::sleep(Duration::from_secs(60));
    });
    let took = provider_failure_then_passcode(port);
    // The push waited out `[push] timeout = 2`, and not the 10 s default (the upper bound
    // is that default, not a tight wall-clock limit: this machine is shared and noisy).
    assert!(
        took >= Duration::from_secs(PUSH_TIMEOUT_SECS),
        "took {took:?}: the push gave up before its timeout"
    );
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}: the push did not give up after its {PUSH_TIMEOUT_SECS} s timeout"
    );
}

#[test]
fn a_push_provider_answering_garbage_is_a_provider_error_and_the_login_goes_on() {
    let port = bad_provider(|mut stream| {
        let mut buf = [0u8; 8192];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n\xff\xfe{not json!",
        );
    });
    let _ = provider_failure_then_passcode(port);
}

#[test]
fn a_push_provider_speaking_no_http_is_a_provider_error_and_the_login_goes_on() {
    let port = bad_provider(|mut stream| {
        let mut buf = [0u8; 8192];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"\x00\x01\x02 SSH-2.0-garbage\r\n\r\n\x1b[2J");
    });
    let _ = provider_failure_then_passcode(port);
}
