//! A private PostgreSQL 15 server for one test, with the API of
//! `mfa_test_support::postgres::TestPostgres` (branch pg-harness). Stand-in until that
//! harness is merged; then this module goes and the tests use the shared one.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const BIN: &str = "/usr/lib/postgresql/15/bin";
const PASSWORD: &str = "pg-test-password";

pub struct TestPostgres {
    dir: tempfile::TempDir,
    port: u16,
    tls: bool,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn as_postgres(cmd: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--", cmd])
        .args(args)
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn chown_postgres(path: &Path) {
    let st = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

impl TestPostgres {
    pub fn start() -> TestPostgres {
        TestPostgres::make(false)
    }

    /// Listens with TLS too, with a certificate for localhost and 127.0.0.1 signed by a CA
    /// of its own ([`TestPostgres::ca_file`]).
    pub fn start_tls() -> TestPostgres {
        TestPostgres::make(true)
    }

    fn make(tls: bool) -> TestPostgres {
        let dir = tempfile::Builder::new()
            .prefix("mfa-pg-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pw = dir.path().join("initpw");
        std::fs::write(&pw, PASSWORD).unwrap();
        let secret = dir.path().join("password");
        std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        chown_postgres(dir.path());
        // The password file is the test's (root's), mode 0600.
        let st = Command::new("chown")
            .arg("root:root")
            .arg(&secret)
            .status()
            .unwrap();
        assert!(st.success());
        let data = dir.path().join("data");
        as_postgres(
            &format!("{BIN}/initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "mfa",
                "-A",
                "scram-sha-256",
                "--pwfile",
                pw.to_str().unwrap(),
                "--no-sync",
            ],
        );
        if tls {
            let certified = rcgen::generate_simple_self_signed(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])
            .unwrap();
            std::fs::write(dir.path().join("ca.pem"), certified.cert.pem()).unwrap();
            std::fs::write(data.join("server.crt"), certified.cert.pem()).unwrap();
            let key = data.join("server.key");
            std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            chown_postgres(&data);
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .unwrap();
            writeln!(conf, "ssl = on").unwrap();
        }
        let pg = TestPostgres {
            dir,
            port: free_port(),
            tls,
        };
        pg.start_again();
        pg.psql_db("postgres", "CREATE DATABASE mfa");
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again, after [`TestPostgres::stop`] or [`TestPostgres::kill`]).
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        as_postgres(
            &format!("{BIN}/pg_ctl"),
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                self.dir.path().join("pg.log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    pub fn stop(&self) {
        self.pg_ctl_stop("fast");
    }

    /// A crash: the server stops at once, without closing its sessions cleanly.
    pub fn kill(&mut self) {
        self.pg_ctl_stop("immediate");
    }

    fn pg_ctl_stop(&self, mode: &str) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{BIN}/pg_ctl"))
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                mode,
                "-w",
                "stop",
            ])
            .current_dir("/")
            .output();
    }

    /// Over TCP to 127.0.0.1, without TLS.
    pub fn url(&self) -> String {
        format!(
            "postgresql://mfa@127.0.0.1:{}/mfa?sslmode=disable",
            self.port
        )
    }

    /// Over TCP to localhost, TLS with the certificate and host name verified.
    pub fn url_tls(&self) -> String {
        assert!(self.tls, "started without TLS");
        format!(
            "postgresql://mfa@localhost:{}/mfa?sslmode=verify-full",
            self.port
        )
    }

    /// The password alone, in a file of mode 0600.
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn psql_cmd(&self, db: &str) -> Command {
        let mut cmd = Command::new(format!("{BIN}/psql"));
        cmd.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "mfa", "-d", db])
            .env("PGPASSWORD", PASSWORD);
        cmd
    }

    fn psql_db(&self, db: &str, sql: &str) -> String {
        let out = self.psql_cmd(db).args(["-c", sql]).output().unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `sql` in the test database; its output, unaligned.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_db("mfa", sql)
    }

    /// Opens a session that runs `sql` in a transaction and holds it (its locks) until the
    /// guard is dropped.
    pub fn hold_lock(&self, sql: &str) -> HeldLock {
        let mut child = self
            .psql_cmd("mfa")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "BEGIN;\n{sql};\n\\echo held").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "held", "the lock was not taken");
        HeldLock {
            child,
            stdin: Some(stdin),
        }
    }
}

pub struct HeldLock {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.pg_ctl_stop("immediate");
    }
}
