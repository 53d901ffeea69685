//! One local user floods mfad's socket with connections (issue 9, item 2: 2,200 idle
//! connections once blocked every login, or with failmode=safe let a wrong code through).
//! mfad closes a user's connections beyond its limit at once and keeps capacity for root,
//! so logins stay fast and correct in both fail modes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfa_e2e::pam_login::PamTester;
use mfa_e2e::{FailMode, TestEnv};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How many connections the flooding user tries to hold (the audit's figure).
const FLOOD: usize = 2200;

/// pam_mfa alone, with a module timeout well under the audit's waits.
fn stack(failmode: &str) -> String {
    format!(
        "auth required pam_mfa.so socket=/run/mfa/mfad.sock failmode={failmode} timeout=10 \
         connect_timeout=2\naccount required pam_permit.so\n"
    )
}

/// Opens FLOOD connections and keeps them open, reopening any mfad closes (twice a
/// second), until killed. Writes "opened failed" to the ready file after the first round.
const FLOODER: &str = r#"
import os, resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
path, want, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
held, opened, failed = [], 0, 0
def fill():
    global opened, failed
    while len(held) < want:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
        except OSError:
            s.close()
            failed += 1
            return
        held.append(s)
        opened += 1
fill()
with open(ready + ".tmp", "w") as f:
    f.write(f"{opened} {failed}")
os.rename(ready + ".tmp", ready)
while True:
    alive = []
    for s in held:
        try:
            if s.recv(65536) == b"":
                s.close()
                continue
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            continue
        alive.append(s)
    held[:] = alive
    fill()
    time.sleep(0.5)
"#;

struct Flood {
    child: Child,
    opened: usize,
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn flood(env: &TestEnv, user: &mfa_e2e::user::TestUser) -> Flood {
    let ready = std::path::Path::new(&user.home).join("flood-ready");
    let child = Command::new("/usr/bin/python3")
        .args(["-c", FLOODER])
        .arg(env.socket())
        .arg(FLOOD.to_string())
        .arg(&ready)
        .uid(user.uid)
        .gid(user.gid)
        .current_dir(&user.home)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut flood = Flood { child, opened: 0 };
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            break text;
        }
        assert!(Instant::now() < deadline, "the flood never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    flood.opened = text.split_whitespace().next().unwrap().parse().unwrap();
    // Let mfad meet the whole first wave before anyone logs in.
    std::thread::sleep(Duration::from_secs(1));
    flood
}

fn flood_leaves_logins_fast_and_correct(mode: FailMode, failmode: &str) {
    let env = TestEnv::builder()
        .failmode(mode)
        .pam_file(&stack(failmode))
        .max_attempts(1)
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();
    let user = env.user().unwrap();
    let flood = flood(&env, user);
    assert!(
        flood.opened >= FLOOD,
        "the flooding user connected only {} times",
        flood.opened
    );

    let tester = PamTester::new(&env.pam_service());
    let wrong = device.totp.wrong_code();
    let refused = tester
        .login(env.username().as_bytes(), format!("{wrong}\n").as_bytes())
        .unwrap();
    let code = device.totp.fresh_code();
    let allowed = tester
        .login(env.username().as_bytes(), format!("{code}\n").as_bytes())
        .unwrap();
    let log = env.mfad_log();
    drop(flood);

    // mfad asked for the code and judged it, in both fail modes: no "unavailable".
    assert!(
        refused.refused() && refused.shown().contains("Incorrect passcode"),
        "{failmode}: a wrong code during the flood:\n{}\n{}",
        refused.describe(),
        env.diagnostics()
    );
    assert!(
        allowed.succeeded(),
        "{failmode}: the right code during the flood:\n{}\n{}",
        allowed.describe(),
        env.diagnostics()
    );
    for l in [&refused, &allowed] {
        assert!(!l.shown().contains("unavailable"), "{}", l.describe());
        assert!(
            l.took < Duration::from_secs(5),
            "{failmode}: a login took {:?} during the flood",
            l.took
        );
    }
    // The flood is logged, once for the burst, not once per connection.
    let reports = log
        .lines()
        .filter(|l| l.contains(&format!("closing new connections from uid {}", user.uid)))
        .count();
    assert_eq!(reports, 1, "{log}");
}

#[test]
fn a_flood_by_one_user_leaves_logins_fast_and_correct_with_failmode_secure() {
    flood_leaves_logins_fast_and_correct(FailMode::Secure, "secure");
}

#[test]
fn a_flood_by_one_user_leaves_logins_fast_and_correct_with_failmode_safe() {
    flood_leaves_logins_fast_and_correct(FailMode::Safe, "safe");
}
