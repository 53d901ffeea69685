//! mfad killed (SIGKILL) in the middle of a batch of concurrent TOTP logins, whose commits
//! share fsyncs (the SQLite store's group commit). Every login mfad answered "success"
//! before it died must find its code spent after the restart: the same code is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::{AuthContext, Client, Conversation, Operation, Outcome};
use mfa_test_support::binary::{BinaryHost, now, params};
use mfad::factor::totp;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Concurrent logins, each with a TOTP device of its own (all root's: sshd's uid, which
/// may hold many connections).
const LOGINS: usize = 32;

fn secret(i: usize) -> Vec<u8> {
    format!("group-commit-secret-{i:04}").into_bytes()
}

struct Answer(String);
impl Conversation for Answer {
    fn info(&mut self, _: &str) {}
    fn error(&mut self, _: &str) {}
    fn prompt(&mut self, _: &str, _: bool) -> Option<Zeroizing<String>> {
        Some(Zeroizing::new(self.0.clone()))
    }
}

/// One login of root with `code`: mfad's verdict, or None when mfad gave none (it died).
fn login(socket: &Path, code: &str) -> Option<Outcome> {
    let mut c = Client::connect(socket, Duration::from_secs(2), Duration::from_secs(20)).ok()?;
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
    .ok()
}

#[test]
fn mfad_killed_during_a_batch_of_concurrent_logins_keeps_every_code_it_accepted_spent() {
    let host = BinaryHost::new(
        env!("CARGO_BIN_EXE_mfad"),
        "max_attempts = 1\n\n[lockout]\nmax_failures = 0\n",
    );
    let step = totp::step_of(now(), params());
    {
        let mut store = host.store();
        for i in 0..LOGINS {
            store
                .add_totp_device(
                    "root",
                    &format!("app {i}"),
                    &secret(i),
                    params(),
                    step - 10,
                    now(),
                )
                .unwrap();
        }
    }
    let _ = std::fs::remove_file(host.socket());
    let mut mfad = host
        .command(&["--foreground"])
        .stderr(std::fs::File::create(host.path("stderr")).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !host.socket().exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Each client spends its device's steps now-1, now, now+1 in turn (the window), as fast
    // as mfad answers; mfad is killed once a third of the batch has been answered.
    let accepted = Arc::new(Mutex::new(Vec::<(usize, u64)>::new()));
    let answered = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(Barrier::new(LOGINS + 1));
    let clients: Vec<_> = (0..LOGINS)
        .map(|i| {
            let (socket, accepted, answered, go) = (
                host.socket(),
                Arc::clone(&accepted),
                Arc::clone(&answered),
                Arc::clone(&go),
            );
            std::thread::spawn(move || {
                go.wait();
                let now_step = totp::step_of(now(), params());
                for s in now_step - 1..=now_step + 1 {
                    let code = totp::code_at_step(&secret(i), params(), s).to_string();
                    match login(&socket, &code) {
                        Some(Outcome::Allow) => {
                            accepted.lock().unwrap().push((i, s));
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(_) => {
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        None => return,
                    }
                }
            })
        })
        .collect();
    go.wait();
    let batch = LOGINS * 3;
    while answered.load(Ordering::SeqCst) < batch / 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            host.log()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    mfad.kill().unwrap();
    mfad.wait().unwrap();
    for c in clients {
        c.join().unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    let answered = answered.load(Ordering::SeqCst);
    assert!(
        !accepted.is_empty() && answered < batch,
        "the kill fell inside the batch: {} accepted, {answered} of {batch} answered",
        accepted.len()
    );

    // After the restart, every accepted code is spent: offered again, it is refused, and the
    // store's record of the device has reached its step.
    let _running = host.start();
    let spent: Vec<(String, i64)> = {
        let conn = rusqlite::Connection::open(host.db()).unwrap();
        let mut stmt = conn
            .prepare("SELECT name, counter FROM devices WHERE user = 'root'")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    for &(i, s) in &accepted {
        let counter = spent
            .iter()
            .find(|(name, _)| *name == format!("app {i}"))
            .map(|(_, c)| *c)
            .unwrap();
        assert!(
            counter >= s as i64,
            "device {i}: step {s} was accepted before the crash, the store says {counter}"
        );
    }
    // The latest accepted step of each device (mfad accepts steps in increasing order, so
    // earlier ones are refused anyway): a replay must be refused.
    let mut latest: Vec<(usize, u64)> = Vec::new();
    for &(i, s) in &accepted {
        match latest.iter_mut().find(|(d, _)| *d == i) {
            Some(l) => l.1 = l.1.max(s),
            None => latest.push((i, s)),
        }
    }
    for (i, s) in latest {
        let code = totp::code_at_step(&secret(i), params(), s).to_string();
        assert_eq!(
            login(&host.socket(), &code),
            Some(Outcome::Deny),
            "device {i}'s step {s}, accepted before the crash, opened a second login"
        );
    }
}
