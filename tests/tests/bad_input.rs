//! Bad input, table-driven, through the real PAM module (pamtester, under pam_wrapper so
//! pam_mfa's log lines show) and straight to mfad's socket from a non-root user: oversized,
//! empty, NUL, non-UTF-8, terminal escapes, odd and unknown user names, malformed frames.
//! Every case must end in a clear refusal, crash nothing, and change nothing in the store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::TestEnv;
use mfa_e2e::pam_login::{PamTester, sqlite};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// pam_mfa alone, so that every byte reaches it (pam_unix would stop most names first).
const STACK: &str = "auth required pam_mfa.so socket=/run/mfa/mfad.sock failmode=secure \
                     timeout=15 connect_timeout=2\naccount required pam_permit.so\n";

/// No case may take longer, whatever the machine's load.
const BOUND: Duration = Duration::from_secs(40);

/// Everything the store holds, as text: compared before and after each case.
fn snapshot(db: &Path) -> String {
    sqlite(
        db,
        "SELECT 'd', id, user, kind, name, hex(secret), counter, address, is_default FROM devices \
         ORDER BY id; SELECT 'u', * FROM users ORDER BY name; \
         SELECT 'b', id, user, hex(hash), used_at FROM bypass_codes ORDER BY id; \
         SELECT 's', count(*) FROM sms_codes; SELECT 'r', count(*) FROM remembered;",
    )
    .unwrap()
}

struct World {
    env: TestEnv,
    db: std::path::PathBuf,
    device: mfa_e2e::Enrolment,
}

fn world() -> World {
    let env = TestEnv::builder()
        .pam_file(STACK)
        .max_attempts(1)
        .start()
        .unwrap();
    let device = env.enroll_totp().unwrap();
    let _codes = env.admin_bypass_codes().unwrap();
    let db = env.dir.join("mfad/lib/mfa.db");
    World { env, db, device }
}

/// One PAM case: a user name and what is typed; the refusal must show one of `want`
/// (in pamtester's output, pam_mfa's log lines, or what mfad logged meanwhile).
struct PamCase {
    name: &'static str,
    user: Vec<u8>,
    typed: Vec<u8>,
    want: &'static [&'static str],
}

fn user_case(
    name: &'static str,
    user: impl Into<Vec<u8>>,
    want: &'static [&'static str],
) -> PamCase {
    PamCase {
        name,
        user: user.into(),
        typed: b"123456\n".to_vec(),
        want,
    }
}

const BAD_NAME: &[&str] = &["refusing user name"];
const UNKNOWN: &[&str] = &["not available for this account"];
const NOT_A_PASSCODE: &[&str] = &["That is not a passcode", "No passcode entered"];

fn pam_cases(me: &str) -> Vec<PamCase> {
    let answer = |name: &'static str, typed: Vec<u8>, want: &'static [&'static str]| PamCase {
        name,
        user: me.as_bytes().to_vec(),
        typed,
        want,
    };
    let typed = |s: &[u8]| {
        let mut v = s.to_vec();
        v.push(b'\n');
        v
    };
    vec![
        user_case("user name 300 bytes long", "a".repeat(300), BAD_NAME),
        user_case("user name 20,000 bytes long", "b".repeat(20_000), BAD_NAME),
        user_case("user name with a newline", "root\nroot", BAD_NAME),
        user_case(
            "user name with terminal escapes",
            "\x1b[2J\x1b[31mroot",
            BAD_NAME,
        ),
        user_case("user name with a bell", "root\x07", BAD_NAME),
        user_case("user name with a tab", "ro\tot", BAD_NAME),
        user_case("user name with a slash", "../../etc/passwd", BAD_NAME),
        user_case("user name with a colon", "root:0", BAD_NAME),
        user_case("user name with a space", "user name", BAD_NAME),
        user_case("user name with DEL", "root\x7f", BAD_NAME),
        user_case(
            "non-UTF-8 user name",
            b"\xff\xfeuser".to_vec(),
            &[
                "cannot get the user name",
                "refusing user name",
                "not available",
            ],
        ),
        user_case("unknown user", "nosuchuser-zz9", UNKNOWN),
        user_case("user name like an option", "-rf", UNKNOWN),
        user_case("user name with format specifiers", "%s%n%x%p", UNKNOWN),
        user_case("user name with SQL", "'OR'1'='1", UNKNOWN),
        user_case(
            "user name of 256 bytes (the limit)",
            "c".repeat(256),
            UNKNOWN,
        ),
        user_case(
            "user name with right-to-left override",
            "root\u{202e}",
            UNKNOWN,
        ),
        user_case("user name with a zero-width space", "ro\u{200b}ot", UNKNOWN),
        user_case("non-ASCII user name", "ünïcødé", UNKNOWN),
        answer("empty answer", typed(b""), NOT_A_PASSCODE),
        answer("blank answer", typed(b"      \t "), NOT_A_PASSCODE),
        // PAM carries C strings: what follows a NUL never reaches pam_mfa.
        answer("NUL first", typed(b"\x00123456"), NOT_A_PASSCODE),
        answer("NUL after a letter", typed(b"x\x00123456"), NOT_A_PASSCODE),
        answer(
            "non-UTF-8 answer",
            typed(b"\xff\xfe\xfd123456"),
            NOT_A_PASSCODE,
        ),
        answer(
            "terminal escapes",
            typed(b"\x1b[2J\x1b[H123456"),
            NOT_A_PASSCODE,
        ),
        answer(
            "100,000 digits",
            typed("1".repeat(100_000).as_bytes()),
            NOT_A_PASSCODE,
        ),
        answer(
            "100,000 letters",
            typed("A".repeat(100_000).as_bytes()),
            NOT_A_PASSCODE,
        ),
        answer("17 digits", typed(b"12345678901234567"), NOT_A_PASSCODE),
        answer(
            "fullwidth digits",
            typed("１２３４５６".as_bytes()),
            NOT_A_PASSCODE,
        ),
        answer(
            "Arabic-Indic digits",
            typed("٠١٢٣٤٥".as_bytes()),
            NOT_A_PASSCODE,
        ),
        answer(
            "digits with a space inside",
            typed(b"123 456"),
            NOT_A_PASSCODE,
        ),
        answer("negative number", typed(b"-123456"), NOT_A_PASSCODE),
        answer(
            "shell injection",
            typed(b"123456; rm -rf /"),
            NOT_A_PASSCODE,
        ),
        answer("format specifiers", typed(b"%n%n%n%s%s"), NOT_A_PASSCODE),
        answer("SQL injection", typed(b"' OR '1'='1"), NOT_A_PASSCODE),
        answer(
            "JSON injection",
            typed(br#""},{"type":"answer","text":"1"}"#),
            NOT_A_PASSCODE,
        ),
        answer("carriage return", typed(b"123456\r"), NOT_A_PASSCODE),
        answer(
            "a menu number with no menu",
            typed(b"99"),
            &["That is not a passcode"],
        ),
        answer(
            "no answer at all (end of input)",
            Vec::new(),
            &["No passcode was entered"],
        ),
    ]
}

#[test]
fn bad_input_through_the_pam_module_is_refused_clearly_and_changes_nothing() {
    let mut w = world();
    let tester = PamTester::wrapped(&w.env.pam_service(), &w.env.dir).unwrap();
    let cases = pam_cases(w.env.username());
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for case in &cases {
        let before = snapshot(&w.db);
        let log_before = w.env.mfad_log().len();
        let l = tester.login(&case.user, &case.typed).unwrap();
        let logged = w.env.mfad_log()[log_before..].to_string();
        let seen = format!("{}\n{logged}", l.shown());
        let problem = if l.signal.is_some() {
            Some("pamtester was killed by a signal".to_string())
        } else if !l.refused() {
            Some("not refused".to_string())
        } else if l.took > BOUND {
            Some(format!("took {:?}", l.took))
        } else if !case.want.iter().any(|w| seen.contains(w)) {
            Some(format!("none of {:?} was shown or logged", case.want))
        } else if snapshot(&w.db) != before {
            Some("the store changed".to_string())
        } else {
            None
        };
        if let Some(p) = problem {
            failures.push(format!(
                "{}: {p}\n{}\n--- mfad ---\n{logged}",
                case.name,
                l.describe()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n=====\n")
    );
    assert_still_serves(&mut w);
}

/// One frame case, sent by the user (not root) straight to the socket.
struct FrameCase {
    name: &'static str,
    bytes: Vec<u8>,
    /// What mfad answers (in its frame), or logs, or "" for a plain close.
    want: &'static str,
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn frame_cases() -> Vec<FrameCase> {
    let hello_for = |user: &str| {
        frame(
            format!(
                r#"{{"type":"hello","version":1,"op":{{"op":"authenticate","user":"{user}","service":"sshd"}}}}"#
            )
            .as_bytes(),
        )
    };
    let mut nested = "[".repeat(10_000);
    nested.push_str(&"]".repeat(10_000));
    let mut two_hellos = hello_for("root");
    two_hellos.extend(hello_for("root"));
    vec![
        FrameCase {
            name: "zero-length frame",
            bytes: vec![0, 0, 0, 0],
            want: "empty frame",
        },
        FrameCase {
            name: "4 GiB length",
            bytes: vec![0xff, 0xff, 0xff, 0xff],
            want: "larger than the limit",
        },
        FrameCase {
            name: "one byte over the limit",
            bytes: ((64 * 1024 + 1) as u32).to_be_bytes().to_vec(),
            want: "larger than the limit",
        },
        FrameCase {
            name: "half a header",
            bytes: vec![0, 0],
            want: "connection closed",
        },
        FrameCase {
            name: "body shorter than announced",
            bytes: {
                let mut b = 100u32.to_be_bytes().to_vec();
                b.extend_from_slice(b"{\"type\"");
                b
            },
            want: "connection closed",
        },
        FrameCase {
            name: "not JSON",
            bytes: frame(b"not json at all"),
            want: "malformed message",
        },
        FrameCase {
            name: "non-UTF-8 body",
            bytes: frame(b"\xff\xfe{\"type\":\"hello\"}"),
            want: "malformed message",
        },
        FrameCase {
            name: "NUL bytes",
            bytes: frame(b"\0\0\0\0\0\0"),
            want: "malformed message",
        },
        FrameCase {
            name: "unknown message type",
            bytes: frame(br#"{"type":"nonsense"}"#),
            want: "malformed message",
        },
        FrameCase {
            name: "JSON nested 10,000 deep",
            bytes: frame(nested.as_bytes()),
            want: "malformed message",
        },
        FrameCase {
            name: "answer before hello",
            bytes: frame(br#"{"type":"answer","text":"123456"}"#),
            want: "answer before hello",
        },
        FrameCase {
            name: "unknown protocol version",
            bytes: frame(br#"{"type":"hello","version":99,"op":{"op":"list_devices"}}"#),
            want: "protocol version 99 is not supported",
        },
        FrameCase {
            name: "authenticate root as a user",
            bytes: hello_for("root"),
            want: "Only root may ask mfad to authenticate another user",
        },
        FrameCase {
            name: "authenticate with a terminal escape in the name",
            bytes: hello_for("\\u001b[2Jroot"),
            want: "Login refused",
        },
        FrameCase {
            name: "admin unlock as a user",
            bytes: frame(
                br#"{"type":"hello","version":1,"op":{"op":"admin","action":"unlock","user":"root"}}"#,
            ),
            want: "Only root",
        },
        FrameCase {
            name: "two hellos back to back",
            bytes: two_hellos,
            want: "Only root may ask mfad to authenticate another user",
        },
    ]
}

/// Sends `bytes` as `uid`, then reads until mfad closes (at most 15 s); returns what came.
const SENDER: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(15)
s.connect(sys.argv[1])
data = bytes.fromhex(sys.stdin.read().strip())
try:
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
except OSError as e:
    print("send-error", e)
got = b""
try:
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
except socket.timeout:
    print("TIMEOUT")
except ConnectionResetError:
    pass  # mfad closed with our second frame unread
sys.stdout.write(got.decode("utf-8", "replace"))
"#;

#[test]
fn malformed_frames_from_a_user_are_refused_and_change_nothing() {
    let mut w = world();
    let user = w.env.user().unwrap();
    let mut failures = Vec::new();
    let cases = frame_cases();
    for case in &cases {
        let before = snapshot(&w.db);
        let log_before = w.env.mfad_log().len();
        let started = Instant::now();
        let hex: String = case.bytes.iter().map(|b| format!("{b:02x}")).collect();
        let out = mfa_e2e::process::run_with_input(
            Command::new("/usr/bin/python3")
                .args(["-c", SENDER])
                .arg(w.env.socket())
                .uid(user.uid)
                .gid(user.gid),
            &hex,
        )
        .unwrap();
        let took = started.elapsed();
        let reply = String::from_utf8_lossy(&out.stdout).to_string();
        // mfad may log after it closes: wait (bounded) for the line when the reply lacks it.
        let logged = if reply.contains(case.want) {
            w.env.mfad_log()[log_before..].to_string()
        } else {
            mfa_e2e::clock::wait_for(Duration::from_secs(5), || {
                let log = w.env.mfad_log();
                log[log_before..]
                    .contains(case.want)
                    .then(|| log[log_before..].to_string())
            })
            .unwrap_or_else(|| w.env.mfad_log()[log_before..].to_string())
        };
        let seen = format!("{reply}\n{logged}");
        let problem = if !out.status.success() {
            Some(format!(
                "sender failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        } else if reply.contains("TIMEOUT") || took > BOUND {
            Some(format!("mfad kept the connection open ({took:?})"))
        } else if reply.contains("\"outcome\":\"allow\"") {
            Some("allowed!".to_string())
        } else if !seen.contains(case.want) {
            Some(format!("{:?} was neither answered nor logged", case.want))
        } else if snapshot(&w.db) != before {
            Some("the store changed".to_string())
        } else {
            None
        };
        if let Some(p) = problem {
            failures.push(format!(
                "{}: {p}\nreply: {reply}\nmfad: {logged}",
                case.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n=====\n")
    );
    assert_still_serves(&mut w);
}

/// After all that, mfad still runs and a real login works.
fn assert_still_serves(w: &mut World) {
    let code = w.device.totp.fresh_code();
    let l = PamTester::new(&w.env.pam_service())
        .login(w.env.username().as_bytes(), format!("{code}\n").as_bytes())
        .unwrap();
    assert!(l.succeeded(), "{}\n{}", l.describe(), w.env.diagnostics());
    assert_eq!(sqlite(&w.db, "PRAGMA integrity_check").unwrap(), "ok");
}
