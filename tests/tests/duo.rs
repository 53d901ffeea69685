//! The Duo provider end to end: a private sshd, pam_mfa or the ForceCommand helper, mfad with
//! `[duo]`, and the fake Duo API (the `fake-duo` program) over TLS on 127.0.0.1. Duo's own
//! menu over ssh, scp with Duo's default factor, and the fail modes with Duo down or hanging.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::env::{SftpSubsystem, SshSetup};
use mfa_e2e::paths::built;
use mfa_e2e::{FailMode, TestEnv, TestEnvBuilder};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The fake Duo API as a process; killed on drop.
struct FakeDuoProcess {
    child: Child,
    dir: PathBuf,
    host: String,
    ikey: String,
    skey: String,
}

impl FakeDuoProcess {
    fn start(default_scenario: &str) -> FakeDuoProcess {
        let dir = std::env::temp_dir().join(format!(
            "mfa-e2e-duo-{}-{}",
            std::process::id(),
            (mfa_e2e::clock::unix_now() * 1e9) as u128
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new(built("fake-duo").unwrap())
            .arg("--ca")
            .arg(dir.join("ca.pem"))
            .arg("--log")
            .arg(dir.join("requests.log"))
            .args(["--default", default_scenario, "--push-delay-ms", "300"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut words = line.split_whitespace().map(str::to_string);
        let (host, ikey, skey) = (
            words.next().unwrap(),
            words.next().unwrap(),
            words.next().unwrap(),
        );
        FakeDuoProcess {
            child,
            dir,
            host,
            ikey,
            skey,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// What the fake was asked, one request a line, once a line holds `needle` (the fake
    /// writes its log as it answers; at most 5 s): all of it either way.
    fn requests(&self, needle: &str) -> String {
        let read = || std::fs::read_to_string(self.dir.join("requests.log")).unwrap_or_default();
        mfa_e2e::clock::wait_for(Duration::from_secs(5), || {
            let text = read();
            text.contains(needle).then_some(text)
        })
        .unwrap_or_else(read)
    }

    /// `[duo]` for mfad.toml.
    fn toml(&self) -> String {
        duo_toml(&self.host, &self.ikey, &self.skey, &self.ca())
    }
}

impl Drop for FakeDuoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn duo_toml(host: &str, ikey: &str, skey: &str, ca: &Path) -> String {
    format!(
        "[duo]\nhost = \"{host}\"\nikey = \"{ikey}\"\nskey = \"{skey}\"\ncafile = \"{}\"\n\
         https_timeout = 2\nstatus_timeout = 20\npushinfo = true\n",
        ca.display()
    )
}

fn with_duo(builder: TestEnvBuilder, duo: &FakeDuoProcess) -> TestEnv {
    builder.mfad_toml(&duo.toml()).start().unwrap()
}

#[test]
fn ssh_shows_duos_menu_and_an_approved_push_logs_in() {
    let duo = FakeDuoProcess::start("push");
    let env = with_duo(TestEnv::builder(), &duo);
    let user = env.username().to_string();

    let login = env.login(&["1", ""], "echo in with duo").unwrap();
    println!("{}", login.describe());

    assert!(login.logged_in(), "{}", login.describe());
    assert_eq!(login.stdout.trim(), "in with duo");
    assert_eq!(login.prompts.len(), 3, "{}", login.describe());
    let menu = &login.prompts[1];
    assert!(
        menu.contains(&format!("Duo two-factor login for {user}")),
        "{menu}"
    );
    assert!(menu.contains(" 1. Duo Push to XXX-XXX-1234\n"), "{menu}");
    assert!(menu.ends_with("Passcode or option (1-3): "), "{menu}");
    assert!(
        login.prompts[2].contains("Pushed a login request to your device..."),
        "{}",
        login.describe()
    );
    let log = env.mfad_log();
    assert!(
        log.lines().any(|l| l.contains(&format!("user={user}"))
            && l.contains("method=duo-push")
            && l.contains("outcome=allow")),
        "{log}"
    );
    let seen = duo.requests("/auth/v2/auth ");
    assert!(seen.contains("/auth/v2/preauth"), "{seen}");
    assert!(
        seen.contains("factor=prompt") && seen.contains("prompt=push1"),
        "{seen}"
    );
    assert!(seen.contains("ipaddr=127.0.0.1"), "{seen}");
    assert!(!seen.contains("REJECTED"), "{seen}");
}

#[test]
fn scp_through_the_forcecommand_helper_uses_duos_default_factor() {
    let duo = FakeDuoProcess::start("push");
    let env = with_duo(
        TestEnv::builder().setup(SshSetup::KeyThenLoginPrompt(SftpSubsystem::Server)),
        &duo,
    );
    let local = env.dir.join("payload.bin");
    std::fs::write(&local, b"carried by scp after a Duo push\n").unwrap();

    let started = Instant::now();
    let copy = env
        .client
        .scp(&[], &local, env.client.remote("payload.bin"), &[])
        .unwrap();
    println!("{}", copy.describe());

    assert_eq!(
        copy.status,
        Some(0),
        "{}\n{}",
        copy.describe(),
        env.diagnostics()
    );
    assert!(copy.prompts.is_empty(), "{}", copy.describe());
    assert!(started.elapsed() < Duration::from_secs(20));
    let landed = Path::new(&env.user().unwrap().home).join("payload.bin");
    assert_eq!(
        std::fs::read(&landed).unwrap(),
        b"carried by scp after a Duo push\n"
    );
    let seen = duo.requests("/auth/v2/auth ");
    let auth = seen
        .lines()
        .find(|l| l.contains("/auth/v2/auth ") && l.contains("prompt=push1"))
        .unwrap_or_else(|| panic!("no push:\n{seen}"));
    // pushinfo: this host, the client's address, and the command scp ran.
    assert!(auth.contains("pushinfo=Server="), "{auth}");
    assert!(auth.contains("From=127.0.0.1"), "{auth}");
    assert!(
        auth.contains("Command=%2Fusr%2Flib%2Fopenssh%2Fsftp-server"),
        "{auth}"
    );
}

#[test]
fn scp_through_pam_mode_auto_uses_duos_default_factor() {
    let duo = FakeDuoProcess::start("push");
    let env = with_duo(TestEnv::builder().pam_module_args("mode=auto"), &duo);
    let local = env.dir.join("payload.txt");
    std::fs::write(&local, "carried by scp\n").unwrap();

    let copy = env
        .client
        .scp_upload(&local, "payload.txt", &[env.password(), ""])
        .unwrap();
    println!("{}", copy.describe());

    assert_eq!(copy.status, Some(0), "{}", copy.describe());
    assert_eq!(copy.prompts_containing("Passcode or option"), 0, "no menu");
    assert_eq!(
        copy.prompts_containing("Pushed a login request to your device..."),
        1,
        "{}",
        copy.describe()
    );
    let landed = Path::new(&env.user().unwrap().home).join("payload.txt");
    assert_eq!(
        std::fs::read_to_string(&landed).unwrap(),
        "carried by scp\n"
    );
}

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Duo that accepts connections and never says a word (not even TLS).
fn hanging_duo() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = l.local_addr().unwrap().to_string();
    (l, host)
}

fn env_with_duo_at(host: &str, failmode: FailMode) -> (TestEnv, FakeDuoProcess) {
    // A real fake only for its certificate file and keys: mfad is pointed elsewhere.
    let certs = FakeDuoProcess::start("push");
    let env = TestEnv::builder()
        .failmode(failmode)
        .mfad_toml(&duo_toml(host, &certs.ikey, &certs.skey, &certs.ca()))
        .start()
        .unwrap();
    (env, certs)
}

#[test]
fn duo_down_with_failmode_secure_refuses_at_once() {
    let (env, _certs) = env_with_duo_at(&format!("127.0.0.1:{}", closed_port()), FailMode::Secure);
    let started = Instant::now();
    let login = env.login(&[], "echo should not run").unwrap();
    assert!(login.refused(), "{}", login.describe());
    assert!(login.stdout.is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        env.mfad_log().contains("outcome=unavailable"),
        "{}",
        env.mfad_log()
    );
}

#[test]
fn duo_down_with_failmode_safe_lets_the_password_login_through() {
    let (env, _certs) = env_with_duo_at(&format!("127.0.0.1:{}", closed_port()), FailMode::Safe);
    let login = env.login(&[], "echo in without duo").unwrap();
    assert!(login.logged_in(), "{}", login.describe());
    assert_eq!(login.stdout.trim(), "in without duo");
    assert_eq!(
        login.prompts.len(),
        1,
        "only the password: {}",
        login.describe()
    );
}

#[test]
fn duo_hanging_with_failmode_secure_refuses_within_https_timeout() {
    let (_listener, host) = hanging_duo();
    let (env, _certs) = env_with_duo_at(&host, FailMode::Secure);
    let started = Instant::now();
    let login = env.login(&[], "echo should not run").unwrap();
    let took = started.elapsed();
    assert!(login.refused(), "{}", login.describe());
    // https_timeout = 2 s bounds the connection's TLS handshake.
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn duo_hanging_with_failmode_safe_lets_the_login_through_within_https_timeout() {
    let (_listener, host) = hanging_duo();
    let (env, _certs) = env_with_duo_at(&host, FailMode::Safe);
    let started = Instant::now();
    let login = env.login(&[], "echo in despite a hanging duo").unwrap();
    let took = started.elapsed();
    assert!(login.logged_in(), "{}", login.describe());
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn a_duo_error_after_the_challenge_refuses_even_with_failmode_safe() {
    // Duo shows its menu (the user is challenged), then /auth fails with HTTP 500. pam_duo
    // refuses here; so does mfad, whatever pam_mfa's failmode.
    let duo = FakeDuoProcess::start("auth-error");
    let env = with_duo(TestEnv::builder().failmode(FailMode::Safe), &duo);
    let login = env.login(&["1"], "echo should not run").unwrap();
    println!("{}", login.describe());
    assert!(login.refused(), "{}", login.describe());
    assert!(login.stdout.is_empty());
    assert!(
        login
            .prompts
            .iter()
            .any(|p| p.contains("Passcode or option")),
        "{}",
        login.describe()
    );
    let log = env.mfad_log();
    assert!(
        log.lines().any(|l| l.contains("outcome=deny")
            && l.contains("Duo failed after asking for a second factor")),
        "{log}"
    );
    assert!(!log.contains("outcome=unavailable"), "{log}");
}
