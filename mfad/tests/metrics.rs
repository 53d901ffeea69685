//! The Prometheus endpoint of the real mfad binary, scraped before and after real logins.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::{AuthContext, Client, Conversation, Operation, Outcome};
use mfa_test_support::binary::{BinaryMfad, now, params};
use mfad::factor::totp;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;
use zeroize::Zeroizing;

const SECRET: &[u8] = b"metrics-test-secret!";

struct Answers(Vec<String>);
impl Conversation for Answers {
    fn info(&mut self, _: &str) {}
    fn error(&mut self, _: &str) {}
    fn prompt(&mut self, _: &str, _: bool) -> Option<Zeroizing<String>> {
        Some(Zeroizing::new(self.0.remove(0)))
    }
}

fn login(socket: &Path, answers: &[&str]) -> Outcome {
    let mut c = Client::connect(socket, Duration::from_secs(2), Duration::from_secs(20)).unwrap();
    mfa_proto::run_conversation(
        &mut c,
        Operation::Authenticate(AuthContext {
            user: "root".into(),
            service: "sshd".into(),
            rhost: Some("203.0.113.9".into()),
            ..Default::default()
        }),
        &mut Answers(answers.iter().map(|s| s.to_string()).collect()),
    )
    .unwrap()
}

/// `GET /metrics`, as `name{labels}` → value.
fn scrape(port: u16) -> HashMap<String, f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[test]
fn the_metrics_endpoint_counts_real_logins_by_outcome_and_the_lockout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m = BinaryMfad::start(
        env!("CARGO_BIN_EXE_mfad"),
        &format!("[lockout]\nmax_failures = 3\n[metrics]\nlisten = \"127.0.0.1:{port}\""),
    );
    let socket = m.socket();
    let step = totp::step_of(now(), params());
    m.store()
        .add_totp_device("root", "phone", SECRET, params(), step - 10, now())
        .unwrap();

    let allow = r#"mfa_decisions_total{method="totp",outcome="allow"}"#;
    let deny = r#"mfa_decisions_total{method="-",outcome="deny"}"#;
    let before = scrape(port);
    assert_eq!(get(&before, "mfa_locked_users"), 0.0, "{before:?}");
    assert_eq!(get(&before, "mfa_pending_approvals"), 0.0, "{before:?}");

    let code = totp::code_at_step(SECRET, params(), totp::step_of(now(), params())).to_string();
    assert_eq!(login(&socket, &[&code]), Outcome::Allow);
    // Three wrong codes: refused, and the third failure locks the account.
    assert_eq!(
        login(&socket, &["000000", "000000", "000000"]),
        Outcome::Deny
    );

    let after = scrape(port);
    assert_eq!(get(&after, allow) - get(&before, allow), 1.0, "{after:?}");
    assert_eq!(get(&after, deny) - get(&before, deny), 1.0, "{after:?}");
    assert_eq!(
        get(&after, r#"mfa_decisions_total{method="-",outcome="retry"}"#),
        2.0,
        "{after:?}"
    );
    assert_eq!(get(&after, "mfa_locked_users"), 1.0, "{after:?}");
    // Every store operation of those logins was timed; none failed.
    let ops = r#"mfa_store_seconds_count{backend="sqlite"}"#;
    assert!(get(&after, ops) - get(&before, ops) >= 5.0, "{after:?}");
    assert_eq!(
        get(
            &after,
            r#"mfa_store_errors_total{backend="sqlite",kind="error"}"#
        ),
        0.0
    );
}
