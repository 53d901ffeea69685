//! A cluster of two login nodes sharing one PostgreSQL: each node has its own sshd, PAM
//! service and mfad, and both mfads use the same database and the same store key. Every
//! rule of one host holds across the nodes: an enrolment made on one is used on the other,
//! a code spent on one is spent on both, failures from both count towards one lock, a push
//! waiting on one node is answered through the other's mfa-web, and a database
//! outage ends logins by the fail mode instead of hanging them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::cli::{MfaCli, copy_for_users};
use mfa_e2e::fake_phone::{Answer, FakePhone, PUSH_TOKEN};
use mfa_e2e::mfad::{APPROVAL_PORT, Mfad};
use mfa_e2e::pam_login::{PamLogin, PamTester, finish};
use mfa_e2e::paths::{built, require_root};
use mfa_e2e::scratch::{ScratchDir, unique_name};
use mfa_e2e::sshd::{PamService, PrivateSshd, pam_stack};
use mfa_e2e::user::TestUser;
use mfa_e2e::{CliOutput, LoginOutcome, MfadConfig, SshClient, TotpSecret};
use mfa_test_support::postgres::TestPostgres;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `[postgres] statement_timeout` and `connect_timeout` of every node (seconds).
const DB_TIMEOUT: u64 = 2;
/// pam_mfa's `timeout=`: how long it waits for each message of mfad.
const MODULE_TIMEOUT: u64 = 10;
/// The longest a login may take while the database is down or stuck: generous against the
/// configured timeouts (2 s per statement or connect, 10 s per message of mfad), far below a
/// hang (the client's own limit is 60 s).
const OUTAGE_BOUND: Duration = Duration::from_secs(15);

/// How one node is set up.
#[derive(Clone)]
struct NodeSpec {
    failmode: &'static str,
    /// The password (pam_unix) before pam_mfa, as sshd logins do; without it, the stack is
    /// pam_mfa alone, for pamtester runs by the hundred.
    password_first: bool,
    /// `[lockout] max_failures`.
    max_failures: u32,
    /// `[postgres] connect_timeout` and `statement_timeout` (seconds).
    db_timeout: u64,
    /// More mfad.toml (see `MfadConfig::extra_toml`).
    extra_toml: String,
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            failmode: "secure",
            password_first: true,
            max_failures: 10,
            db_timeout: DB_TIMEOUT,
            extra_toml: String::new(),
        }
    }
}

/// One login node: sshd, its PAM service and its own mfad.
struct Node {
    // Dropped in this order: sshd, mfad, then the PAM service.
    sshd: PrivateSshd,
    mfad: Mfad,
    _pam: PamService,
    service: String,
    cli: MfaCli,
    dir: PathBuf,
}

struct Cluster {
    // Dropped in this order: the nodes, the users, the database, the directory.
    nodes: Vec<Node>,
    users: Vec<TestUser>,
    pg: TestPostgres,
    scratch: ScratchDir,
}

impl Cluster {
    fn start(a: NodeSpec, b: NodeSpec) -> Cluster {
        require_root().unwrap();
        let pg = TestPostgres::start();
        let name = unique_name();
        let scratch = ScratchDir::new(&name).unwrap();
        let user = TestUser::create(&name).unwrap();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            users: vec![user],
            pg,
            scratch,
        };
        for (label, spec) in [("a", a), ("b", b)] {
            let node = cluster.start_node(label, &spec);
            cluster.nodes.push(node);
        }
        cluster
    }

    fn start_node(&self, label: &str, spec: &NodeSpec) -> Node {
        let dir = self.scratch.subdir(label, 0o755).unwrap();
        let bin = self.scratch.subdir(&format!("{label}/bin"), 0o755).unwrap();
        let mfad_dir = self
            .scratch
            .subdir(&format!("{label}/mfad"), 0o755)
            .unwrap();
        let sshd_dir = self
            .scratch
            .subdir(&format!("{label}/sshd"), 0o755)
            .unwrap();
        let config = MfadConfig {
            store: Some(self.pg.url()),
            // Both nodes seal secrets with one key: node A creates it, node B reads it.
            store_key: Some(self.scratch.join("store.key")),
            lockout_max_failures: spec.max_failures,
            extra_toml: format!(
                "{}\n[postgres]\npassword_file = \"{}\"\nconnect_timeout = {t}\n\
                 statement_timeout = {t}\n",
                spec.extra_toml,
                self.pg.password_file().display(),
                t = spec.db_timeout,
            ),
            ..MfadConfig::default()
        };
        let mfad = Mfad::start(&mfad_dir, &config).unwrap();
        let service = format!("sshd-{}", unique_name());
        let line = format!(
            "auth required {} socket={} failmode={} timeout={MODULE_TIMEOUT} connect_timeout=2",
            built("libpam_mfa.so").unwrap().display(),
            mfad.socket.display(),
            spec.failmode,
        );
        let stack = if spec.password_first {
            pam_stack(Some(&line))
        } else {
            format!("{line}\naccount required pam_permit.so\n")
        };
        let pam = PamService::install(&service, &stack).unwrap();
        let sshd = PrivateSshd::start(&sshd_dir, &service, "").unwrap();
        let cli = MfaCli {
            program: copy_for_users(&built("mfa").unwrap(), &bin).unwrap(),
            socket: mfad.socket.clone(),
        };
        Node {
            sshd,
            mfad,
            _pam: pam,
            service,
            cli,
            dir,
        }
    }

    fn user(&self) -> &TestUser {
        &self.users[0]
    }

    /// `mfa enroll totp` as `user`, through `node`'s mfad.
    fn enroll(&self, node: usize, user: &TestUser) -> TotpSecret {
        let (totp, out) = self.nodes[node].cli.enroll_totp(user, 6, 30, 1).unwrap();
        assert_eq!(out.status, Some(0), "{}", out.describe());
        totp
    }

    fn client(&self, node: usize) -> SshClient {
        SshClient::new(
            &self.nodes[node].dir,
            self.nodes[node].sshd.port,
            &self.user().name,
        )
    }

    /// `ssh user@node -- command`, answering the password, then each of `codes`.
    fn login(&self, node: usize, codes: &[&str], command: &str) -> LoginOutcome {
        let mut answers = vec![self.user().password.as_str()];
        answers.extend_from_slice(codes);
        let login = self.client(node).login(&answers, command).unwrap();
        println!("node {}: {}", label(node), login.describe());
        login
    }

    /// `mfa admin ACTION USER` as root, through `node`'s mfad.
    fn admin(&self, node: usize, action: &str) -> CliOutput {
        let out = self.nodes[node]
            .cli
            .as_root(&["admin", action, &self.user().name], "")
            .unwrap();
        assert_eq!(out.status, Some(0), "{}", out.describe());
        out
    }

    fn mfad_log(&self, node: usize) -> String {
        self.nodes[node].mfad.log()
    }

    fn diagnostics(&self) -> String {
        let mut s = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            s.push_str(&format!(
                "=== node {} mfad ===\n{}\n=== node {} sshd ===\n{}\n",
                label(i),
                n.mfad.log(),
                label(i),
                n.sshd.log()
            ));
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- cluster ----\n{}", self.diagnostics());
        }
    }
}

fn label(node: usize) -> &'static str {
    ["A", "B"][node]
}

/// Whether `mfa admin status` says the account is locked (its `Locked:` line).
fn locked(status: &CliOutput) -> bool {
    let line = status
        .stdout
        .lines()
        .find(|l| l.trim_start().to_lowercase().starts_with("locked"))
        .unwrap_or_else(|| panic!("no Locked line: {}", status.describe()))
        .to_lowercase();
    line.contains("yes")
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn enrolled_on_one_node_logs_in_on_the_other_and_a_code_spent_on_one_is_refused_on_both() {
    let c = Cluster::start(NodeSpec::default(), NodeSpec::default());
    let mut totp = c.enroll(0, c.user());

    // Enrolled through A, logged in through B.
    let code = totp.fresh_code();
    let on_b = c.login(1, &[&code], "echo in on B as $(id -un)");
    assert!(on_b.logged_in(), "{}\n{}", on_b.describe(), c.diagnostics());
    assert_eq!(on_b.stdout.trim(), format!("in on B as {}", c.user().name));

    // The same code replayed on A: already spent.
    let on_a = c.login(0, &[&code], "echo should not run");
    assert!(on_a.refused(), "{}", on_a.describe());
    assert!(on_a.stdout.is_empty(), "{}", on_a.describe());
    assert!(
        on_a.shown().contains("That passcode was already used"),
        "{}",
        on_a.describe()
    );

    // And the other way round: spent on A, refused on B.
    let code = totp.fresh_code();
    let on_a = c.login(0, &[&code], "echo in on A");
    assert!(on_a.logged_in(), "{}", on_a.describe());
    assert_eq!(on_a.stdout.trim(), "in on A");
    let on_b = c.login(1, &[&code], "echo should not run");
    assert!(on_b.refused(), "{}", on_b.describe());
    assert!(
        on_b.shown().contains("That passcode was already used"),
        "{}",
        on_b.describe()
    );
    assert_eq!(count(&c.mfad_log(1), "code already used"), 1);
}

#[test]
fn ten_wrong_codes_split_across_both_nodes_lock_the_user_on_both_until_unlocked_on_one() {
    let c = Cluster::start(NodeSpec::default(), NodeSpec::default());
    let mut totp = c.enroll(0, c.user());
    let wrong = totp.wrong_code();
    let three = [wrong.as_str(), wrong.as_str(), wrong.as_str()];

    // Nine failures: three on A, three on B, three on A. Not locked yet, on either node.
    for node in [0, 1, 0] {
        let login = c.login(node, &three, "true");
        assert!(login.refused(), "{}", login.describe());
        assert_eq!(login.prompts_containing("Passcode: "), 3);
    }
    assert!(!locked(&c.admin(0, "status")));
    assert!(!locked(&c.admin(1, "status")));

    // The tenth, on B, locks: B counted A's failures.
    let tenth = c.login(1, &[&wrong], "true");
    assert!(tenth.refused(), "{}", tenth.describe());
    assert!(tenth.shown().contains("locked"), "{}", tenth.describe());
    assert!(locked(&c.admin(0, "status")));
    assert!(locked(&c.admin(1, "status")));

    // The right code is refused on both nodes, and not even asked for.
    let code = totp.fresh_code();
    for node in [0, 1] {
        let login = c.login(node, &[&code], "echo should not run");
        assert!(login.refused(), "{}", login.describe());
        assert!(login.stdout.is_empty(), "{}", login.describe());
        assert!(login.shown().contains("locked"), "{}", login.describe());
        assert_eq!(
            login.prompts_containing("Passcode: "),
            0,
            "{}",
            login.describe()
        );
    }

    // Unlocked through B's mfad: the user gets in on A.
    c.admin(1, "unlock");
    assert!(!locked(&c.admin(0, "status")));
    let login = c.login(0, &[&code], "echo unlocked");
    assert!(
        login.logged_in(),
        "{}\n{}",
        login.describe(),
        c.diagnostics()
    );
    assert_eq!(login.stdout.trim(), "unlocked");
}

/// `link` with its `127.0.0.1:FROM` authority replaced by `127.0.0.1:TO`.
fn moved(notification: &serde_json::Value, from: u16, to: u16) -> serde_json::Value {
    let text = notification.to_string();
    let (old, new) = (format!("127.0.0.1:{from}"), format!("127.0.0.1:{to}"));
    assert!(text.contains(&old), "{text}");
    serde_json::from_str(&text.replace(&old, &new)).unwrap()
}

#[test]
fn a_push_waiting_on_one_node_is_answered_through_the_other_nodes_mfa_web() {
    let phone = FakePhone::start().unwrap();
    let port = APPROVAL_PORT;
    let oob = format!(
        "[approval]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         token_ttl = 20\n\
         [push]\nnotifier = \"ntfy\"\nurl = \"{ntfy}\"\ntoken = \"{PUSH_TOKEN}\"\ntimeout = 3\n",
        ntfy = phone.ntfy_url(),
    );
    let spec = NodeSpec {
        extra_toml: oob,
        ..NodeSpec::default()
    };
    let c = Cluster::start(spec.clone(), spec);
    let (port_a, port_b) = (
        c.nodes[0].mfad.approval_port.unwrap(),
        c.nodes[1].mfad.approval_port.unwrap(),
    );

    // The user adds a push device through A (the phone approves the test push).
    let out = c.nodes[0]
        .cli
        .as_user(c.user(), &["add", "push", "--name", "Pixel 8"], "\n\n")
        .unwrap();
    assert_eq!(out.status, Some(0), "{}", out.describe());
    assert_eq!(phone.notifications().len(), 1);

    // From now on the owner opens each push by hand, on B's endpoint.
    phone.on_push(Answer::Ignore);
    let client = c.client(0);
    let password = c.user().password.clone();
    let login = std::thread::spawn(move || {
        client
            .login(&[&password, "", ""], "echo in by push through B")
            .unwrap()
    });
    let note = phone
        .wait_notification(2, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no push for the login on A\n{}", c.diagnostics()));
    phone.open_notification(&moved(&note, port_a, port_b), Answer::Approve);
    let login = login.join().unwrap();
    println!("{}", login.describe());
    assert!(
        login.logged_in(),
        "{}\n{}",
        login.describe(),
        c.diagnostics()
    );
    assert_eq!(login.stdout.trim(), "in by push through B");
    let steps = phone.steps();
    let tap = steps.last().unwrap();
    assert_eq!(tap.what, "tap approve", "{steps:?}");
    assert_eq!(tap.status, 200, "{steps:?}");
    assert!(
        tap.url.starts_with(&format!("http://127.0.0.1:{port_b}/")),
        "{steps:?}"
    );

    // "Deny and report" through B: the login on A is refused and the account locked on
    // both nodes.
    let client = c.client(0);
    let password = c.user().password.clone();
    let login = std::thread::spawn(move || {
        client
            .login(&[&password, "", ""], "echo should not run")
            .unwrap()
    });
    let note = phone
        .wait_notification(3, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no push for the second login on A\n{}", c.diagnostics()));
    phone.open_notification(&moved(&note, port_a, port_b), Answer::Report);
    let login = login.join().unwrap();
    println!("{}", login.describe());
    assert!(login.refused(), "{}", login.describe());
    assert!(login.stdout.is_empty(), "{}", login.describe());
    assert!(
        login.shown().contains("Login request denied and reported"),
        "{}",
        login.describe()
    );
    assert!(locked(&c.admin(0, "status")));
    assert!(locked(&c.admin(1, "status")));
    // Locked on B too: refused at once, no push sent.
    let on_b = c.login(1, &["", ""], "echo should not run");
    assert!(on_b.refused(), "{}", on_b.describe());
    assert!(on_b.shown().contains("locked"), "{}", on_b.describe());
    assert_eq!(phone.notifications().len(), 3);
}

/// Starts one pamtester login per (node, user, code) at once, then collects them all.
fn pam_logins_at_once(c: &Cluster, logins: &[(usize, &str, String)]) -> Vec<PamLogin> {
    let testers: Vec<PamTester> = c.nodes.iter().map(|n| PamTester::new(&n.service)).collect();
    let started = Instant::now();
    let mut children = Vec::new();
    for (node, user, _) in logins {
        children.push(testers[*node].spawn(user.as_bytes()).unwrap());
    }
    // Every process is up before any code is typed: they reach the two mfads together.
    for (child, (_, _, code)) in children.iter_mut().zip(logins) {
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(format!("{code}\n").as_bytes());
    }
    children
        .into_iter()
        .map(|child| finish(child, started).unwrap())
        .collect()
}

/// pam_mfa alone; the documented database timeouts (5 s): a hundred logins at once make
/// each node open its whole pool on a busy machine.
fn pam_only() -> NodeSpec {
    NodeSpec {
        password_first: false,
        db_timeout: 5,
        ..NodeSpec::default()
    }
}

#[test]
fn one_code_raced_by_a_hundred_logins_over_both_nodes_opens_exactly_one() {
    // Every lost race counts as a failure: no lock after ten here, so each loser meets the
    // spent code itself rather than the lock.
    let spec = NodeSpec {
        max_failures: 1000,
        ..pam_only()
    };
    let c = Cluster::start(spec.clone(), spec);
    let mut totp = c.enroll(0, c.user());
    let code = totp.fresh_code();
    let name = c.user().name.clone();
    let logins: Vec<(usize, &str, String)> = (0..100)
        .map(|i| (i % 2, name.as_str(), code.clone()))
        .collect();
    let results = pam_logins_at_once(&c, &logins);
    let won: Vec<&PamLogin> = results.iter().filter(|r| r.succeeded()).collect();
    let lost = results.iter().filter(|r| r.refused()).count();
    assert_eq!(
        won.len(),
        1,
        "{}\n{}",
        won.iter()
            .map(|r| r.describe())
            .collect::<Vec<_>>()
            .join("\n"),
        c.diagnostics()
    );
    assert_eq!(
        lost,
        99,
        "every other login is refused, none crashed: {:?}",
        results
            .iter()
            .map(|r| (r.status, r.signal))
            .collect::<Vec<_>>()
    );
    // The losers were told why: the code was spent (not an outage, not a wrong code).
    let spent = results
        .iter()
        .filter(|r| r.shown().contains("That passcode was already used"))
        .count();
    assert_eq!(spent, 99, "{}", c.diagnostics());
    // Both nodes took part.
    for node in [0, 1] {
        assert!(
            count(&c.mfad_log(node), "code already used") >= 1,
            "{}",
            c.diagnostics()
        );
    }
}

#[test]
fn a_hundred_users_logging_in_at_once_over_both_nodes_all_get_in() {
    let mut c = Cluster::start(pam_only(), pam_only());
    for _ in 1..100 {
        let user = TestUser::create(&unique_name()).unwrap();
        c.users.push(user);
    }
    // Enrolled half through A, half through B; the codes are taken once all are enrolled,
    // so none has left its window by the time the logins start.
    let mut secrets: Vec<TotpSecret> = c
        .users
        .iter()
        .enumerate()
        .map(|(i, u)| c.enroll(i % 2, u))
        .collect();
    let codes: Vec<String> = secrets.iter_mut().map(TotpSecret::fresh_code).collect();
    // Each user logs in on the node that did not enrol them.
    let logins: Vec<(usize, &str, String)> = c
        .users
        .iter()
        .zip(&codes)
        .enumerate()
        .map(|(i, (u, code))| ((i + 1) % 2, u.name.as_str(), code.clone()))
        .collect();
    let results = pam_logins_at_once(&c, &logins);
    let failed: Vec<String> = results
        .iter()
        .zip(&logins)
        .filter(|(r, _)| !r.succeeded())
        .map(|(r, (node, user, _))| format!("{user} on {}: {}", label(*node), r.describe()))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 100 failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn a_database_outage_ends_logins_by_the_fail_mode_and_they_work_again_once_it_is_back() {
    // A refuses when mfad cannot answer; B lets the user in.
    let safe = NodeSpec {
        failmode: "safe",
        ..NodeSpec::default()
    };
    let c = Cluster::start(NodeSpec::default(), safe);
    let mut totp = c.enroll(0, c.user());
    let spent = totp.fresh_code();
    let login = c.login(1, &[&spent], "true");
    assert!(login.logged_in(), "{}", login.describe());

    c.pg.stop();
    let wrong = totp.wrong_code();
    for n in 1..=3 {
        let started = Instant::now();
        let login = c.login(0, &[&wrong], "echo should not run");
        let took = started.elapsed();
        println!("took {took:?}");
        assert!(
            login.refused(),
            "A, login {n}: {}\n{}",
            login.describe(),
            c.diagnostics()
        );
        assert!(login.stdout.is_empty());
        assert!(
            login.shown().contains("unavailable"),
            "{}",
            login.describe()
        );
        assert!(took < OUTAGE_BOUND, "A, login {n} took {took:?}");
    }
    // failmode=safe: B lets the user in without the second factor (mfad asked nothing).
    let started = Instant::now();
    let login = c.login(1, &[&wrong], "echo in without the second factor");
    let took = started.elapsed();
    println!("took {took:?}");
    assert!(
        login.logged_in(),
        "{}\n{}",
        login.describe(),
        c.diagnostics()
    );
    assert!(
        login
            .shown()
            .contains("unavailable right now; continuing without it"),
        "{}",
        login.describe()
    );
    assert!(took < OUTAGE_BOUND, "B took {took:?}");
    // Logged once for the outage, not once per login.
    assert_eq!(
        count(&c.mfad_log(0), "is unavailable"),
        1,
        "{}",
        c.mfad_log(0)
    );
    assert_eq!(count(&c.mfad_log(0), "answers again"), 0);

    // Back: no mfad restart. The code spent before the outage stays spent, the enrolment
    // is still there, and the end of the outage is logged once.
    c.pg.start_again();
    let login = c.login(0, &[&spent], "echo should not run");
    assert!(login.refused(), "{}", login.describe());
    assert!(
        login.shown().contains("That passcode was already used"),
        "{}\n{}",
        login.describe(),
        c.diagnostics()
    );
    let code = totp.fresh_code();
    let login = c.login(0, &[&code], "echo back on A");
    assert!(
        login.logged_in(),
        "{}\n{}",
        login.describe(),
        c.diagnostics()
    );
    assert_eq!(login.stdout.trim(), "back on A");
    assert_eq!(count(&c.mfad_log(0), "is unavailable"), 1);
    assert_eq!(
        count(&c.mfad_log(0), "answers again"),
        1,
        "{}",
        c.mfad_log(0)
    );
}

#[test]
fn a_stuck_database_ends_logins_within_the_statement_timeout_and_changes_nothing() {
    let safe = NodeSpec {
        failmode: "safe",
        ..NodeSpec::default()
    };
    let c = Cluster::start(NodeSpec::default(), safe);
    let mut totp = c.enroll(0, c.user());
    let code = totp.fresh_code();

    let held = c.pg.hold_lock("LOCK TABLE users IN ACCESS EXCLUSIVE MODE");
    for node in [0, 1] {
        let started = Instant::now();
        let login = c.login(node, &[&code], "echo in on the stuck database");
        let took = started.elapsed();
        println!("took {took:?}");
        assert!(
            took < OUTAGE_BOUND,
            "node {}: took {took:?}\n{}",
            label(node),
            login.describe()
        );
        // A login ends by a verdict: A (secure) refuses; B (safe) either refuses or, when
        // mfad had asked nothing yet, lets the user in by its fail mode, saying so.
        if login.logged_in() {
            assert_eq!(node, 1, "A let a login in: {}", login.describe());
            assert!(
                login.shown().contains("continuing without it"),
                "{}",
                login.describe()
            );
        } else {
            assert!(login.refused(), "{}", login.describe());
            assert!(
                login.shown().contains("unavailable"),
                "{}",
                login.describe()
            );
        }
    }
    drop(held);

    // Nothing was spent while the database was stuck: the same code opens one login now.
    let login = c.login(0, &[&code], "echo after the lock");
    assert!(
        login.logged_in(),
        "{}\n{}",
        login.describe(),
        c.diagnostics()
    );
    assert_eq!(login.stdout.trim(), "after the lock");
    let login = c.login(1, &[&code], "echo should not run");
    assert!(login.refused(), "{}", login.describe());
    assert!(
        login.shown().contains("That passcode was already used"),
        "{}",
        login.describe()
    );
    for node in [0, 1] {
        let log = c.mfad_log(node);
        assert_eq!(count(&log, "is unavailable"), 1, "{log}");
        assert_eq!(count(&log, "answers again"), 1, "{log}");
    }
}

/// A conversation with node `node`'s mfad as sshd's PAM stack would have (root): `answer`
/// runs at the first prompt and gives the text to send.
fn converse(
    c: &Cluster,
    node: usize,
    answer: &mut dyn FnMut() -> String,
) -> (Result<mfa_proto::Outcome, mfa_proto::ClientError>, String) {
    struct Conv<'a> {
        answer: &'a mut dyn FnMut() -> String,
        shown: String,
    }
    impl mfa_proto::Conversation for Conv<'_> {
        fn info(&mut self, text: &str) {
            self.shown.push_str(text);
            self.shown.push('\n');
        }
        fn error(&mut self, text: &str) {
            self.shown.push_str(text);
            self.shown.push('\n');
        }
        fn prompt(&mut self, text: &str, _: bool) -> Option<zeroize::Zeroizing<String>> {
            self.shown.push_str(text);
            self.shown.push('\n');
            Some(zeroize::Zeroizing::new((self.answer)()))
        }
    }
    let mut client = mfa_proto::Client::connect(
        &c.nodes[node].mfad.socket,
        Duration::from_secs(2),
        Duration::from_secs(MODULE_TIMEOUT),
    )
    .unwrap();
    let mut conv = Conv {
        answer,
        shown: String::new(),
    };
    let op = mfa_proto::Operation::Authenticate(mfa_proto::AuthContext {
        user: c.user().name.clone(),
        service: "sshd".into(),
        rhost: Some("192.0.2.44".into()),
        tty: Some("ssh".into()),
        mode: mfa_proto::AuthMode::Menu,
        can_prompt: true,
        ..Default::default()
    });
    let outcome = mfa_proto::run_conversation(&mut client, op, &mut conv);
    (outcome, conv.shown)
}

#[test]
fn the_database_stopped_mid_conversation_refuses_the_login_and_spends_nothing() {
    let c = Cluster::start(NodeSpec::default(), NodeSpec::default());
    let mut totp = c.enroll(0, c.user());
    let code = totp.fresh_code();
    // The user is at the passcode prompt when the database goes away.
    let started = Instant::now();
    let (outcome, shown) = converse(&c, 0, &mut || {
        c.pg.stop();
        code.clone()
    });
    let took = started.elapsed();
    println!("took {took:?}: {outcome:?}\n{shown}");
    assert!(took < OUTAGE_BOUND, "took {took:?}");
    // mfad had spoken: whatever the fail mode, the login is refused, never let in.
    match outcome {
        Ok(o) => assert_eq!(o, mfa_proto::Outcome::Deny, "{shown}"),
        Err(mfa_proto::ClientError::Interrupted(_)) => {}
        Err(e) => panic!("not a refusal: {e}\n{shown}"),
    }
    assert!(shown.contains("Passcode"), "{shown}");
    // Back, with no mfad restart: the code was never spent, so it opens one login now,
    // through the other node, and then no more.
    c.pg.start_again();
    let login = c.login(1, &[&code], "echo after the restart");
    assert!(
        login.logged_in(),
        "{}\n{}",
        login.describe(),
        c.diagnostics()
    );
    let login = c.login(0, &[&code], "echo should not run");
    assert!(login.refused(), "{}", login.describe());
}

#[test]
fn the_database_restarted_under_load_ends_every_login_in_bound_and_comes_back() {
    // No lockout: the load is wrong codes, each a durable failure count.
    let spec = NodeSpec {
        max_failures: 0,
        ..NodeSpec::default()
    };
    let c = Cluster::start(spec.clone(), spec);
    let mut totp = c.enroll(0, c.user());
    let wrong = totp.wrong_code();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ended, slowest) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..6)
            .map(|i| {
                let (c, stop, wrong) = (&c, &stop, wrong.clone());
                s.spawn(move || {
                    let mut ended = 0;
                    let mut slowest = Duration::ZERO;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let started = Instant::now();
                        let (outcome, shown) = converse(c, i % 2, &mut || wrong.clone());
                        slowest = slowest.max(started.elapsed());
                        // A wrong code is never let in; an outage ends by "unavailable"
                        // (before mfad spoke) or a refusal.
                        if let Ok(o) = outcome {
                            assert_eq!(o, mfa_proto::Outcome::Deny, "{shown}");
                        }
                        ended += 1;
                    }
                    (ended, slowest)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        c.pg.stop();
        std::thread::sleep(Duration::from_secs(2));
        c.pg.start_again();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .fold((0, Duration::ZERO), |(n, m), (e, s)| (n + e, m.max(s)))
    });
    println!("{ended} logins ended; the slowest took {slowest:?}");
    assert!(slowest < OUTAGE_BOUND, "a login took {slowest:?}");
    assert!(ended >= 12, "only {ended} logins ended");
    // After the restart, with no mfad restart, both nodes log in.
    for node in [0, 1] {
        let code = totp.fresh_code();
        let login = c.login(node, &[&code], "echo back");
        assert!(
            login.logged_in(),
            "node {}: {}\n{}",
            label(node),
            login.describe(),
            c.diagnostics()
        );
    }
}
