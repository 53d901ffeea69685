//! A real PostgreSQL server for tests, from Debian's package: a fresh cluster in a temporary
//! directory, started as an unprivileged user (the `postgres` system user when the test runs
//! as root, else the test's own user), on 127.0.0.1 and a private Unix socket; stopped and
//! removed on drop. Never the system's own cluster.
//!
//! Two roles: the server's superuser, reachable only over the Unix socket (trust, in a 0700
//! directory), for the harness; and `mfa`, with a random password (scram-sha-256, TCP only),
//! owning the database `mfa`: what mfad connects as.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a start, a stop or a lock may take before the harness gives up.
const WAIT: Duration = Duration::from_secs(60);
/// Ports tried before a start fails on "address in use".
const PORT_ATTEMPTS: usize = 5;

/// A PostgreSQL cluster of its own: immediate stop and removal on drop.
pub struct TestPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The user the server runs as, when the test runs as root; `None`: the test's own user.
    server_user: Option<nix::unistd::User>,
    superuser: String,
    port: u16,
    password: zeroize::Zeroizing<String>,
    tls: bool,
    /// The CA's certificate, with TLS.
    ca: Option<PathBuf>,
}

impl TestPostgres {
    /// A server without TLS: `mfa` connects over TCP with its password.
    pub fn start() -> TestPostgres {
        TestPostgres::init(false)
    }

    /// A server that accepts TCP connections only over TLS (`hostssl`), with a certificate
    /// for `localhost` and 127.0.0.1 from a throwaway CA ([`TestPostgres::ca_file`]).
    pub fn start_tls() -> TestPostgres {
        TestPostgres::init(true)
    }

    fn init(tls: bool) -> TestPostgres {
        let bin = pg_bindir();
        let root = nix::unistd::geteuid().is_root();
        let server_user = root.then(|| {
            // The harness runs a real server as its system user, not a login: no Accounts.
            #[allow(clippy::disallowed_methods)]
            let user = nix::unistd::User::from_name("postgres");
            user.ok().flatten().unwrap_or_else(|| {
                panic!("no `postgres` system user: install Debian's postgresql package (scripts/deps.sh)")
            })
        });
        // Under /tmp when the server runs as another user: every parent must let it through
        // ($TMPDIR may be inside root's home). tempfile makes 0700 directories; open it up.
        let dir = if root {
            tempfile::Builder::new()
                .prefix("mfa-pg.")
                .tempdir_in("/tmp")
        } else {
            tempfile::Builder::new().prefix("mfa-pg.").tempdir()
        }
        .unwrap_or_else(|e| panic!("cannot make the PostgreSQL directory: {e}"));
        set_mode(dir.path(), 0o755);
        let superuser = match &server_user {
            Some(u) => u.name.clone(),
            None => current_user_name(),
        };
        let mut password = zeroize::Zeroizing::new([0u8; 24]);
        mfad::random::fill(password.as_mut_slice());
        let mut pg = TestPostgres {
            dir,
            bin,
            server_user,
            superuser,
            port: 0,
            password: zeroize::Zeroizing::new(data_encoding::HEXLOWER.encode(password.as_slice())),
            tls,
            ca: None,
        };
        pg.initdb();
        pg.start_on_a_free_port();
        pg.create_application_role();
        pg
    }

    fn initdb(&mut self) {
        for d in [self.data_dir(), self.socket_dir()] {
            std::fs::create_dir(&d).unwrap();
            set_mode(&d, 0o700);
            self.give_to_server(&d);
        }
        std::fs::write(self.log_file(), "").unwrap();
        set_mode(&self.log_file(), 0o600);
        self.give_to_server(&self.log_file());
        // -N: the cluster's first files need no fsync; the server itself keeps fsync on.
        let out = self
            .server_command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", &self.superuser, "-E", "UTF8", "--locale=C", "-N"])
            .args(["--auth-local=trust", "--auth-host=reject"])
            .output()
            .unwrap();
        check("initdb", &out);

        if self.tls {
            self.ca = Some(self.write_certificates());
        }
        let data = self.data_dir();
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        // The listening address and port go in an included file, rewritten per attempt.
        writeln!(conf, "\n# mfa test harness\ninclude 'mfa-test.conf'").unwrap();
        let hba = if self.tls {
            "local all {su} trust\n\
             hostssl mfa mfa 127.0.0.1/32 scram-sha-256\n\
             hostnossl all all all reject\n"
        } else {
            "local all {su} trust\n\
             host mfa mfa 127.0.0.1/32 scram-sha-256\n"
        };
        std::fs::write(
            data.join("pg_hba.conf"),
            hba.replace("{su}", &self.superuser),
        )
        .unwrap();
    }

    /// A throwaway CA (its certificate in `ca.pem`, readable by anyone) and a server
    /// certificate for `localhost` and 127.0.0.1 signed by it, with the key in the data
    /// directory owned by the server's user, 0600 (PostgreSQL refuses anything looser).
    fn write_certificates(&self) -> PathBuf {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mfa test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();

        let ca_file = self.dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        set_mode(&ca_file, 0o644);
        let data = self.data_dir();
        std::fs::write(data.join("server.crt"), cert.pem()).unwrap();
        let key_file = data.join("server.key");
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        set_mode(&key_file, 0o600);
        self.give_to_server(&key_file);
        ca_file
    }

    fn write_listen_conf(&self) {
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = on\nlogging_collector = off\n",
            self.port,
            self.socket_dir().display()
        );
        if self.tls {
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        std::fs::write(self.data_dir().join("mfa-test.conf"), conf).unwrap();
    }

    /// Picks a free port; another process may take it between the pick and the server's
    /// bind, so "address in use" means another pick, a few times.
    fn start_on_a_free_port(&mut self) {
        for attempt in 1..=PORT_ATTEMPTS {
            self.port = free_port();
            self.write_listen_conf();
            let log_start = self.log().len();
            match self.pg_ctl_start() {
                Ok(()) => return,
                Err(why) => {
                    let log = self.log()[log_start..].to_string();
                    if log.contains("Address already in use") && attempt < PORT_ATTEMPTS {
                        continue;
                    }
                    panic!(
                        "PostgreSQL did not start on port {}: {why}\nlast lines of {}:\n{}",
                        self.port,
                        self.log_file().display(),
                        last_lines(&log, 30)
                    );
                }
            }
        }
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", &WAIT.as_secs().to_string(), "start"])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn create_application_role(&self) {
        // The password is hex: nothing to quote. scram-sha-256 is PostgreSQL 15's default.
        let sql = zeroize::Zeroizing::new(format!(
            "SET password_encryption = 'scram-sha-256';\n\
             CREATE ROLE mfa LOGIN PASSWORD '{}';\n\
             CREATE DATABASE mfa OWNER mfa;",
            self.password.as_str()
        ));
        self.psql_in("postgres", &sql, "creating the role and database mfa");
        let file = self.password_file();
        std::fs::write(&file, "").unwrap();
        set_mode(&file, 0o600);
        std::fs::write(&file, self.password.as_bytes()).unwrap();
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgresql://mfa@127.0.0.1:PORT/mfa`: no password (see [`TestPostgres::password_file`]).
    pub fn url(&self) -> String {
        format!("postgresql://mfa@127.0.0.1:{}/mfa", self.port)
    }

    /// [`TestPostgres::url`] with `?sslmode=verify-full` when the server has TLS.
    pub fn url_tls(&self) -> String {
        if self.tls {
            format!("{}?sslmode=verify-full", self.url())
        } else {
            self.url()
        }
    }

    /// The throwaway CA's certificate (PEM), when the server has TLS.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// The role `mfa`'s password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A 0600 file, owned by the test's user, holding `mfa`'s password (no newline).
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("mfa.password")
    }

    /// The directory of the server's Unix socket (0700: the superuser's way in).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// The data directory (owned by the server's user).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// The directory of the server's programs (psql, pg_ctl, ...), of the version in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The superuser's name (the server's OS user).
    pub fn superuser(&self) -> &str {
        &self.superuser
    }

    /// The postmaster's pid, from `postmaster.pid`, while that file exists.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Whether the postmaster is alive.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some_and(process_alive)
    }

    /// Runs `sql` as the superuser over the Unix socket in the database `mfa`, as a script
    /// (statements one by one, stopping at the first error); its output (unaligned, tuples
    /// only). Panics with psql's stderr when a statement fails.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("mfa", sql, sql)
    }

    /// The SQL goes through stdin, as a script (each statement in its own transaction
    /// unless it says BEGIN), never on a command line other users can read (passwords).
    fn psql_in(&self, database: &str, sql: &str, what: &str) -> String {
        let mut child = self
            .superuser_psql(database)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let script = zeroize::Zeroizing::new(format!("{sql}\n"));
        // Written from another thread: a long output must not block psql while we write.
        let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
        let out = child.wait_with_output().unwrap();
        let _ = writer.join();
        if !out.status.success() {
            panic!(
                "psql failed on {what:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8(out.stdout).unwrap()
    }

    fn superuser_psql(&self, database: &str) -> Command {
        let mut c = clean_command(self.bin.join("psql"));
        c.current_dir(self.dir.path())
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                &self.superuser,
                "-d",
                database,
            ]);
        c
    }

    /// A clean stop (`pg_ctl stop -m fast`); returns once the server is down.
    pub fn stop(&self) {
        self.pg_ctl_stop("fast");
    }

    /// An immediate stop (`pg_ctl stop -m immediate`): no checkpoint, as after a crash;
    /// the next start recovers from the WAL.
    pub fn kill(&self) {
        self.pg_ctl_stop("immediate");
    }

    /// pg_ctl returns once `postmaster.pid` is gone, a moment before the process itself:
    /// waits for the process too, so "stopped" means no postmaster.
    fn pg_ctl_stop(&self, mode: &str) {
        let pid = self.postmaster_pid();
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", &WAIT.as_secs().to_string(), "stop"])
            .output()
            .unwrap();
        check(&format!("pg_ctl stop -m {mode}"), &out);
        if let Some(pid) = pid {
            assert!(
                wait_gone(pid),
                "the postmaster {pid} outlived pg_ctl stop -m {mode}"
            );
        }
    }

    /// Starts the server again on the same data directory and port; returns once it
    /// accepts connections.
    pub fn start_again(&self) {
        let log_start = self.log().len();
        if let Err(why) = self.pg_ctl_start() {
            panic!(
                "PostgreSQL did not start again on port {}: {why}\nlast lines of {}:\n{}",
                self.port,
                self.log_file().display(),
                last_lines(&self.log()[log_start..], 30)
            );
        }
    }

    /// A superuser session in the database `mfa` that runs `BEGIN; <sql>;` and keeps the
    /// transaction open until the holder is dropped: a database that is slow for everyone
    /// else (e.g. `LOCK TABLE users IN ACCESS EXCLUSIVE MODE`). Returns once `sql` has run.
    pub fn hold_lock(&self, sql: &str) -> LockHolder<'_> {
        let mut child = self
            .superuser_psql("mfa")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let sql = sql.trim().trim_end_matches(';');
        write!(stdin, "BEGIN;\n{sql};\n\\echo {HELD}\n").unwrap();
        stdin.flush().unwrap();
        let mut holder = LockHolder {
            _pg: self,
            child,
            stdin: Some(stdin),
            lines,
        };
        if let Err(why) = holder.wait_for(HELD) {
            let stderr = holder.end_now();
            panic!("hold_lock({sql:?}): {why}\npsql said: {stderr}");
        }
        holder
    }

    /// A command run as the server's user (initdb and pg_ctl refuse root), in the test's
    /// directory (the caller's working directory may be closed to that user).
    fn server_command(&self, program: &str) -> Command {
        let mut c = clean_command(self.bin.join(program));
        c.current_dir(self.dir.path());
        if let Some(u) = &self.server_user {
            c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
            c.env("HOME", &u.dir)
                .env("USER", &u.name)
                .env("LOGNAME", &u.name);
        }
        c
    }

    fn give_to_server(&self, path: &Path) {
        if let Some(u) = &self.server_user {
            nix::unistd::chown(path, Some(u.uid), Some(u.gid)).unwrap();
        }
    }
}

/// What the holder's psql prints once the lock statement has run.
const HELD: &str = "mfa-test-lock-held";
/// What it prints once the transaction is rolled back.
const RELEASED: &str = "mfa-test-lock-released";

/// A psql session holding a transaction open (see [`TestPostgres::hold_lock`]); dropping it
/// rolls the transaction back and returns once the locks are released.
pub struct LockHolder<'a> {
    _pg: &'a TestPostgres,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl LockHolder<'_> {
    fn wait_for(&self, marker: &str) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == marker => return Ok(()),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("no {marker:?} within {WAIT:?}"));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err("psql ended".into());
                }
            }
        }
    }

    /// Ends psql (the server rolls back what it held); its stderr.
    fn end_now(&mut self) -> String {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        err
    }
}

impl Drop for LockHolder<'_> {
    fn drop(&mut self) {
        // An explicit rollback, answered, so the locks are gone when drop returns (a bare
        // disconnect is processed by the server a moment after psql exits).
        let released = self.stdin.as_mut().is_some_and(|stdin| {
            write!(stdin, "ROLLBACK;\n\\echo {RELEASED}\n").is_ok() && stdin.flush().is_ok()
        }) && self.wait_for(RELEASED).is_ok();
        self.stdin.take();
        if released {
            let _ = self.child.wait();
        } else {
            self.end_now();
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let pid = self.postmaster_pid();
        if self.is_running() {
            let _ = self
                .server_command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "-t", "60", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // Should pg_ctl have failed: what it would have done (SIGQUIT is the immediate stop).
        if let Some(pid) = pid.filter(|&p| !wait_gone(p)) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
            wait_gone(pid.as_raw());
        }
        // The TempDir removes the directory after this.
    }
}

/// Debian's server binaries: /usr/lib/postgresql/<version>/bin, the newest version there.
fn pg_bindir() -> PathBuf {
    let base = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            e.path().join("bin/initdb").exists().then_some(version)
        })
        .max()
        .unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server under {}: install Debian's postgresql package \
                 (scripts/deps.sh)",
                base.display()
            )
        });
    base.join(newest.to_string()).join("bin")
}

/// A command without the caller's PG* variables, which would redirect psql or pg_ctl.
fn clean_command(program: PathBuf) -> Command {
    let mut c = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            c.env_remove(name);
        }
    }
    c.stdin(Stdio::null());
    c
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn current_user_name() -> String {
    let uid = nix::unistd::geteuid();
    // The harness's own user, for the server it starts: not a login, no Accounts.
    #[allow(clippy::disallowed_methods)]
    let user = nix::unistd::User::from_uid(uid);
    user.ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| panic!("uid {uid} has no passwd entry; initdb needs one"))
}

/// Whether `pid` is alive: a zombie (exited, not yet reaped by its parent) is not.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) STATE ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Waits (bounded) until `pid` has exited; whether it has.
fn wait_gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn check(what: &str, out: &Output) {
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
