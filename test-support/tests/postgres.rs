//! The PostgreSQL harness against the real server: who may connect and how, TLS, restarts,
//! a held lock, and that nothing is left running. As root, the whole file also runs again as
//! `nobody`, so the non-root path is checked too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_test_support::postgres::{TestPostgres, process_alive};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// psql over TCP as a client would run it: `conninfo`, the password if any (never from a
/// ~/.pgpass), no prompt. Ok(stdout) or Err(stderr).
fn client_psql(
    pg: &TestPostgres,
    conninfo: &str,
    password: Option<&str>,
    sql: &str,
) -> Result<String, String> {
    let mut c = Command::new(pg.bin_dir().join("psql"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            c.env_remove(name);
        }
    }
    c.env("PGPASSFILE", "/dev/null")
        .env("PGCONNECT_TIMEOUT", "10")
        .args(["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(conninfo)
        .args(["-c", sql])
        .stdin(Stdio::null());
    if let Some(p) = password {
        c.env("PGPASSWORD", p);
    }
    let out = c.output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn tcp(pg: &TestPostgres) -> String {
    format!("host=127.0.0.1 port={} dbname=mfa user=mfa", pg.port())
}

#[test]
fn mfa_connects_over_tcp_with_its_password_and_not_without() {
    let pg = TestPostgres::start();
    assert_eq!(
        pg.url(),
        format!("postgresql://mfa@127.0.0.1:{}/mfa", pg.port())
    );
    assert_eq!(pg.url_tls(), pg.url());
    assert!(pg.ca_file().is_none());

    let me = client_psql(&pg, &pg.url(), Some(pg.password()), "SELECT current_user").unwrap();
    assert_eq!(me.trim(), "mfa");
    // The role owns its database: it can make tables in it.
    client_psql(
        &pg,
        &tcp(&pg),
        Some(pg.password()),
        "CREATE TABLE t (x int)",
    )
    .unwrap();

    let none = client_psql(&pg, &tcp(&pg), None, "SELECT 1").unwrap_err();
    assert!(none.contains("no password supplied"), "{none}");
    let wrong = client_psql(&pg, &tcp(&pg), Some("not-the-password"), "SELECT 1").unwrap_err();
    assert!(
        wrong.contains("password authentication failed for user \"mfa\""),
        "{wrong}"
    );
    // The superuser has no way in over TCP, even with mfa's password.
    let su = format!(
        "host=127.0.0.1 port={} dbname=mfa user={}",
        pg.port(),
        pg.superuser()
    );
    let refused = client_psql(&pg, &su, Some(pg.password()), "SELECT 1").unwrap_err();
    assert!(refused.contains("no pg_hba.conf entry"), "{refused}");

    // The password file: the password alone, 0600, owned by the test's user.
    let meta = std::fs::metadata(pg.password_file()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(
        std::fs::read_to_string(pg.password_file()).unwrap(),
        pg.password()
    );
    assert!(pg.password().len() >= 32);

    // The harness's superuser session over the Unix socket; durability is real.
    assert_eq!(pg.psql("SHOW fsync").trim(), "on");
    assert_eq!(pg.psql("SELECT current_database()").trim(), "mfa");
    let listen = pg.psql("SHOW listen_addresses");
    assert_eq!(listen.trim(), "127.0.0.1");
    // A failing statement stops the script and the panic carries psql's error.
    let failed = std::panic::catch_unwind(|| {
        pg.psql("CREATE TABLE before (x int); SELECT x FROM nowhere; CREATE TABLE after (x int)")
    })
    .expect_err("a failing statement did not panic");
    let message = failed.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("relation \"nowhere\" does not exist"),
        "{message}"
    );
    let tables = pg
        .psql("SELECT string_agg(relname, ',') FROM pg_class WHERE relname IN ('before', 'after')");
    assert_eq!(tables.trim(), "before");
}

#[test]
fn tls_server_verifies_and_refuses_plain_tcp() {
    let pg = TestPostgres::start_tls();
    let ca = pg.ca_file().expect("a TLS server has a CA").to_path_buf();
    assert_eq!(
        pg.url_tls(),
        format!(
            "postgresql://mfa@127.0.0.1:{}/mfa?sslmode=verify-full",
            pg.port()
        )
    );
    let ssl_in_use = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    for host in ["localhost", "127.0.0.1"] {
        let conninfo = format!(
            "sslmode=verify-full sslrootcert={} host={host} port={} dbname=mfa user=mfa",
            ca.display(),
            pg.port()
        );
        let ssl = client_psql(&pg, &conninfo, Some(pg.password()), ssl_in_use).unwrap();
        assert_eq!(ssl.trim(), "t", "over {host}");
    }
    // The URL as mfad would take it, with the CA beside it.
    let url = format!("{}&sslrootcert={}", pg.url_tls(), ca.display());
    let ssl = client_psql(&pg, &url, Some(pg.password()), ssl_in_use).unwrap();
    assert_eq!(ssl.trim(), "t");

    // Without TLS, the right password is not enough.
    let plain = format!("sslmode=disable {}", tcp(&pg));
    let refused = client_psql(&pg, &plain, Some(pg.password()), "SELECT 1").unwrap_err();
    assert!(
        refused.contains("no encryption") || refused.contains("pg_hba.conf rejects"),
        "{refused}"
    );
    // And a CA that did not sign the server's certificate is not trusted.
    let other = std::env::temp_dir().join(format!("mfa-pg-other-ca.{}.pem", std::process::id()));
    let stranger = rcgen_free_ca_pem();
    std::fs::write(&other, stranger).unwrap();
    let unverified = format!(
        "sslmode=verify-full sslrootcert={} {}",
        other.display(),
        tcp(&pg)
    );
    let err = client_psql(&pg, &unverified, Some(pg.password()), "SELECT 1").unwrap_err();
    std::fs::remove_file(&other).unwrap();
    assert!(err.contains("certificate verify failed"), "{err}");
}

/// A CA that signed nothing of the server's.
fn rcgen_free_ca_pem() -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

#[test]
fn rows_survive_a_stop_and_a_crash() {
    let pg = TestPostgres::start();
    let pid = pg.postmaster_pid().unwrap();
    pg.psql("CREATE TABLE kept (x int); INSERT INTO kept VALUES (1), (2)");

    pg.stop();
    assert!(!pg.is_running());
    assert!(!process_alive(pid), "the postmaster {pid} outlived stop()");
    let down = client_psql(&pg, &tcp(&pg), Some(pg.password()), "SELECT 1").unwrap_err();
    assert!(down.contains("Connection refused"), "{down}");

    pg.start_again();
    assert!(pg.is_running());
    assert_eq!(pg.psql("SELECT sum(x) FROM kept").trim(), "3");
    // Same port: the URL a daemon holds still works.
    client_psql(&pg, &pg.url(), Some(pg.password()), "SELECT 1").unwrap();

    // A committed row survives an immediate stop (no checkpoint): recovered from the WAL.
    pg.psql("INSERT INTO kept VALUES (4)");
    pg.kill();
    assert!(!pg.is_running());
    pg.start_again();
    assert_eq!(pg.psql("SELECT sum(x) FROM kept").trim(), "7");
    assert!(
        pg.log().contains("database system was interrupted"),
        "{}",
        pg.log()
    );
}

#[test]
fn a_held_lock_blocks_other_writers_until_dropped() {
    let pg = TestPostgres::start();
    let pw = Some(pg.password());
    client_psql(&pg, &tcp(&pg), pw, "CREATE TABLE users (name text)").unwrap();
    let insert = "SET statement_timeout = '300ms'; INSERT INTO users VALUES ('abc123')";

    let holder = pg.hold_lock("LOCK TABLE users IN ACCESS EXCLUSIVE MODE;");
    // Held as soon as hold_lock returns: granted, in a transaction still open.
    let held = pg.psql(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         WHERE c.relname = 'users' AND l.mode = 'AccessExclusiveLock' AND l.granted",
    );
    assert_eq!(held.trim(), "1");
    let waited = client_psql(&pg, &tcp(&pg), pw, insert).unwrap_err();
    assert!(
        waited.contains("canceling statement due to statement timeout"),
        "{waited}"
    );

    drop(holder);
    client_psql(&pg, &tcp(&pg), pw, insert).unwrap();
    assert_eq!(pg.psql("SELECT count(*) FROM users").trim(), "1");
}

#[test]
fn drop_leaves_no_server_and_no_files() {
    let pg = TestPostgres::start();
    let pid = pg.postmaster_pid().unwrap();
    let data = pg.data_dir();
    let holder = pg.hold_lock("SELECT 1");
    assert!(process_alive(pid));
    drop(holder);
    drop(pg);
    if process_alive(pid) {
        // Stop it anyway (SIGQUIT: immediate shutdown), so a failure leaves nothing behind.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGQUIT,
        );
        panic!("postmaster {pid} is still running after drop");
    }
    assert!(!data.exists(), "{} is still there", data.display());
    // Nor any backend or helper: each works in the data directory (its cwd).
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        assert!(
            !cwd.starts_with(&data),
            "{} is left, working in {}",
            entry.path().display(),
            cwd.display()
        );
    }
}

#[test]
fn server_runs_as_an_unprivileged_user() {
    let pg = TestPostgres::start();
    let pid = pg.postmaster_pid().unwrap();
    let uid = std::fs::metadata(format!("/proc/{pid}")).unwrap().uid();
    let me = nix::unistd::geteuid();
    if me.is_root() {
        let postgres = std::fs::metadata(pg.data_dir()).unwrap().uid();
        assert_ne!(postgres, 0, "the data directory belongs to root");
        assert_eq!(
            uid, postgres,
            "the server does not run as the data directory's owner"
        );
    } else {
        assert_eq!(
            uid,
            me.as_raw(),
            "the server does not run as the test's user"
        );
    }
    assert_ne!(uid, 0);
    drop(pg);

    // As root, every test of this file once more as `nobody`: the non-root path.
    if me.is_root() && std::env::var_os("MFA_PG_NESTED").is_none() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--test-threads=2",
                "--skip",
                "server_runs_as_an_unprivileged_user",
            ])
            .env("MFA_PG_NESTED", "1")
            .env("HOME", "/nonexistent")
            .env("TMPDIR", "/tmp")
            .current_dir("/")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "as nobody:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Every other test of the file ran (none filtered out, none ignored).
        let others = stdout.matches("\ntest ").count();
        assert!(others >= 6, "{stdout}");
        assert!(stdout.contains("test result: ok."), "{stdout}");
    }
}

#[test]
fn a_failed_start_shows_the_server_log() {
    let pg = TestPostgres::start();
    pg.stop();
    let conf = pg.data_dir().join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nshared_buffers = 'plenty'\n");
    std::fs::write(&conf, text).unwrap();

    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pg.start_again()))
        .expect_err("a server with a broken config started");
    let message = failed.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("did not start again"), "{message}");
    // The server's own words, from its log.
    assert!(
        message.contains("invalid value for parameter \"shared_buffers\": \"plenty\""),
        "{message}"
    );
    assert!(!pg.is_running());
}
