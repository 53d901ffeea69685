//! The system clock stepping backwards (an NTP correction, a VM restored from a snapshot)
//! and forwards again, with a clock the test controls. Fail closed: no spent code opens a
//! login again, the refusal says why and is logged, bypass codes still get the user in,
//! and nothing in the store is lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::{AuthContext, Client, Conversation, Operation, Outcome};
use mfad::factor::bypass;
use mfad::factor::totp::{self, HashAlgorithm, TotpParams};
use mfad::{Config, Daemon, FakeClock, Store};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const T0: i64 = 1_800_000_000;
const SECRET: &[u8] = b"clock-step-test-key!";

fn params() -> TotpParams {
    TotpParams {
        algorithm: HashAlgorithm::Sha1,
        digits: 6,
        period: 30,
    }
}

fn code_at(t: i64) -> String {
    totp::code_at_step(SECRET, params(), totp::step_of(t, params())).to_string()
}

/// mfad's log lines, captured from the tracing subscriber.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct Answers(Vec<String>, String);

impl Conversation for Answers {
    fn info(&mut self, text: &str) {
        self.1.push_str(text);
        self.1.push('\n');
    }
    fn error(&mut self, text: &str) {
        self.1.push_str(text);
        self.1.push('\n');
    }
    fn prompt(&mut self, text: &str, _: bool) -> Option<Zeroizing<String>> {
        self.1.push_str(text);
        self.1.push('\n');
        (!self.0.is_empty()).then(|| Zeroizing::new(self.0.remove(0)))
    }
}

fn login(socket: &std::path::Path, answer: &str) -> (Outcome, String, Duration) {
    let started = Instant::now();
    let mut client =
        Client::connect(socket, Duration::from_secs(2), Duration::from_secs(10)).unwrap();
    let mut conv = Answers(vec![answer.to_string()], String::new());
    let outcome = mfa_proto::run_conversation(
        &mut client,
        Operation::Authenticate(AuthContext {
            user: "root".into(),
            service: "sshd".into(),
            rhost: Some("192.0.2.9".into()),
            ..Default::default()
        }),
        &mut conv,
    )
    .unwrap();
    (outcome, conv.1, started.elapsed())
}

#[test]
fn a_clock_stepping_back_an_hour_never_reopens_a_spent_code_and_loses_nothing() {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut config = Config {
        socket: dir.path().join("mfad.sock"),
        database: dir.path().join("db/mfa.db"),
        issuer: Some("testhost".into()),
        max_attempts: 1,
        ..Config::default()
    };
    config.log.syslog = false;
    let clock = FakeClock::new(T0);
    let mut store = Store::open_with_key_file(
        &config.database,
        &config.database.with_file_name("store.key"),
    )
    .unwrap();
    store
        .add_totp_device(
            "root",
            "phone",
            SECRET,
            params(),
            totp::step_of(T0, params()) - 5,
            T0,
        )
        .unwrap();
    let (shown_codes, stored) = bypass::generate();
    store.replace_bypass_codes("root", &stored, T0).unwrap();
    drop(store);
    let daemon = Arc::new(
        Daemon::new(
            config.clone(),
            Store::open_with_key_file(
                &config.database,
                &config.database.with_file_name("store.key"),
            )
            .unwrap(),
            Arc::new(clock.clone()),
        )
        .unwrap(),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let socket = config.socket.clone();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = mfad::server::bind(&socket).unwrap();
            ready_tx.send(()).unwrap();
            mfad::server::serve(daemon, listener, async {
                let _ = stop_rx.await;
            })
            .await;
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let socket = config.socket.clone();

    // A login at T0 spends T0's step.
    let (outcome, shown, _) = login(&socket, &code_at(T0));
    assert_eq!(outcome, Outcome::Allow, "{shown}");

    // The clock steps back an hour. The code the app now shows belongs to a step before
    // the one spent: refused, and the user is told to wait rather than that it is wrong.
    clock.set(T0 - 3600);
    let (outcome, shown, took) = login(&socket, &code_at(T0 - 3600));
    assert_eq!(outcome, Outcome::Deny, "{shown}");
    assert!(shown.contains("already used"), "{shown}");
    assert!(took < Duration::from_secs(10));
    // T0's own code, far outside the window now, is simply wrong.
    let (outcome, shown, _) = login(&socket, &code_at(T0));
    assert_eq!(outcome, Outcome::Deny, "{shown}");
    assert!(shown.contains("Incorrect passcode"), "{shown}");
    // A bypass code does not depend on the clock: the user still has a way in.
    let (outcome, shown, _) = login(&socket, &shown_codes[0]);
    assert_eq!(outcome, Outcome::Allow, "{shown}");

    // The clock is corrected: the next step's code works at once.
    clock.set(T0 + 30);
    let (outcome, shown, _) = login(&socket, &code_at(T0 + 30));
    assert_eq!(outcome, Outcome::Allow, "{shown}");
    // And T0's step, spent before the step back, stays spent.
    let (outcome, _, _) = login(&socket, &code_at(T0));
    assert_eq!(outcome, Outcome::Deny);

    let _ = stop_tx.send(());
    server.join().unwrap();
    let text = log.text();
    assert!(
        text.contains("outcome=deny reason=\"code already used; 1 consecutive failures\""),
        "the refusal is logged with its reason:\n{text}"
    );
    assert!(
        !text.contains(&code_at(T0 - 3600)),
        "a code reached the log"
    );

    let store = Store::open_with_key_file(
        &config.database,
        &config.database.with_file_name("store.key"),
    )
    .unwrap();
    let devices = store.devices("root").unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(
        devices[0].otp.as_ref().unwrap().counter,
        totp::step_of(T0 + 30, params()) as i64,
        "the last step spent is the corrected clock's"
    );
    assert_eq!(store.unused_bypass_codes("root").unwrap().len(), 9);
    let conn = rusqlite::Connection::open(&config.database).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
