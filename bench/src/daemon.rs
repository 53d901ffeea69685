//! A private mfad for the socket benchmarks: the release binary, its own config, socket and
//! database, and its own user database through nss_wrapper, so thousands of bench users exist
//! for mfad (its `getpwnam`) without touching /etc/passwd.

use crate::BenchError;
use mfad::factor::totp::{self, HashAlgorithm, TotpParams};
use mfad::store::{DeviceKind, NewDeviceRow, OtpKey, Store};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

pub const NSS_WRAPPER: &str = "libnss_wrapper.so";

/// The TOTP parameters of every bench device (mfad's defaults).
pub fn params() -> TotpParams {
    TotpParams {
        algorithm: HashAlgorithm::Sha1,
        digits: 6,
        period: 30,
    }
}

/// The TOTP parameters of the devices a [`BenchDaemon`] is seeded with: mfad's defaults
/// but for 8 digits. Those daemons accept 10 steps either side of now, and when two steps of
/// those 21 share a code, mfad spends the later (the digits are accepted once): with 6
/// digits that happens about once in 50,000 checks, and the steps the later one spent are
/// then refused to the clients that claim them ("not as expected" with nothing wrong);
/// with 8, about once in 5 million. The HMAC is the same either way.
pub fn seeded_params() -> TotpParams {
    TotpParams {
        digits: 8,
        ..params()
    }
}

/// Bench user `i`: its name and its own 20-byte secret.
pub fn user_name(i: usize) -> String {
    format!("b{i:06}")
}

pub fn secret_of(i: usize) -> Vec<u8> {
    format!("bench-secret-{i:07}!").into_bytes()
}

/// The real time: the bench drives a real mfad, which reads the wall clock.
#[allow(clippy::disallowed_methods)]
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub struct BenchDaemon {
    child: Option<Child>,
    /// Started under MFA_BENCH_WRAPPER, in a process group of its own: the stop signal
    /// goes to the whole group, so mfad gets it even from a wrapper that does not pass it
    /// on (`perf stat`).
    wrapped: bool,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

/// Where a bench mfad keeps its state.
pub enum StoreSpec<'a> {
    /// An SQLite file of its own, in its directory (seeded by [`BenchDaemon::start`]).
    Sqlite(&'a Path),
    /// A PostgreSQL database shared with other nodes, and the store key they share.
    Postgres {
        url: &'a str,
        password_file: &'a Path,
        store_key: &'a Path,
    },
}

impl BenchDaemon {
    /// Seeds a store in `dir` with `enrolled` users (a TOTP device each; the first
    /// `in_nss` of them also exist for NSS), then starts `mfad` on it.
    pub fn start(
        mfad: &Path,
        dir: &Path,
        enrolled: usize,
        in_nss: usize,
        extra_toml: &str,
        push_users: usize,
    ) -> Result<BenchDaemon, BenchError> {
        std::fs::create_dir_all(dir)?;
        let database = dir.join("lib/mfa.db");
        seed(&database, enrolled)?;
        if push_users > 0 {
            add_push_devices(&database, push_users)?;
        }
        let config = write_config(
            dir,
            in_nss.min(enrolled),
            &StoreSpec::Sqlite(&database),
            extra_toml,
        )?;
        BenchDaemon::spawn(mfad, dir, &config)
    }

    /// Starts `mfad` on the configuration `config` (from [`write_config`]) in `dir`, its
    /// users from `dir`'s nss_wrapper files.
    pub fn spawn(mfad: &Path, dir: &Path, config: &Path) -> Result<BenchDaemon, BenchError> {
        BenchDaemon::spawn_with(mfad, dir, config, true)
    }

    /// As [`BenchDaemon::spawn`], with the system's own NSS (for real users).
    pub fn spawn_system_nss(
        mfad: &Path,
        dir: &Path,
        config: &Path,
    ) -> Result<BenchDaemon, BenchError> {
        BenchDaemon::spawn_with(mfad, dir, config, false)
    }

    fn spawn_with(
        mfad: &Path,
        dir: &Path,
        config: &Path,
        nss_wrapper: bool,
    ) -> Result<BenchDaemon, BenchError> {
        let log = File::create(dir.join("mfad.stderr"))?;
        // MFA_BENCH_WRAPPER runs mfad under a profiler, e.g. "valgrind --tool=callgrind".
        let wrapper = std::env::var("MFA_BENCH_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let (mut command, wrapped) = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(mfad);
                std::os::unix::process::CommandExt::process_group(&mut c, 0);
                (c, true)
            }
            None => (Command::new(mfad), false),
        };
        command.arg("--foreground").arg("--config").arg(config);
        if nss_wrapper {
            command
                .env("LD_PRELOAD", NSS_WRAPPER)
                .env("NSS_WRAPPER_PASSWD", dir.join("passwd"))
                .env("NSS_WRAPPER_GROUP", dir.join("group"));
        }
        BenchDaemon::run(command, wrapped, dir, log, mfad)
    }

    /// Starts the socket floor ([`crate::floor`]: this binary, `--socket-floor`) in `dir`,
    /// its socket where mfad's would be.
    pub fn spawn_floor(dir: &Path) -> Result<BenchDaemon, BenchError> {
        std::fs::create_dir_all(dir.join("run"))?;
        let me = std::env::current_exe()?;
        let log = File::create(dir.join("mfad.stderr"))?;
        let mut command = Command::new(&me);
        command.arg("--socket-floor").arg(dir.join("run/mfad.sock"));
        BenchDaemon::run(command, false, dir, log, &me)
    }

    /// Runs `command` (a daemon that listens on `dir/run/mfad.sock`, its stderr to `log`)
    /// and waits for its socket.
    fn run(
        mut command: Command,
        wrapped: bool,
        dir: &Path,
        log: File,
        program: &Path,
    ) -> Result<BenchDaemon, BenchError> {
        let socket = dir.join("run/mfad.sock");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| BenchError(format!("starting {}: {e}", program.display())))?;
        let mut d = BenchDaemon {
            child: Some(child),
            wrapped,
            dir: dir.to_path_buf(),
            socket,
        };
        let started = Instant::now();
        while !d.socket.exists() {
            if let Some(Ok(Some(status))) = d.child.as_mut().map(|c| c.try_wait()) {
                return Err(BenchError(format!(
                    "{} exited ({status}):\n{}",
                    program.display(),
                    d.log()
                )));
            }
            if started.elapsed() > Duration::from_secs(120) {
                return Err(BenchError(format!(
                    "{} did not start:\n{}",
                    program.display(),
                    d.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mfad.stderr")).unwrap_or_default()
    }

    /// Resident memory of the daemon now, and its peak, in KiB (from /proc).
    pub fn rss_kib(&self) -> Result<(u64, u64), BenchError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: mfad removes its socket; SIGKILL if it does not go. Under a wrapper,
            // SIGINT (mfad stops alike; `perf stat` prints its counts, where SIGTERM kills
            // it) to its process group (the wrapper's pid is its id): mfad and the wrapper.
            match i32::try_from(child.id()) {
                Ok(pid) if self.wrapped => unsafe_kill_group(pid, libc::SIGINT),
                _ => unsafe_kill(child.id(), libc::SIGTERM),
            }
            let started = Instant::now();
            // A profiler writes its data at exit: give it time.
            let grace = if self.wrapped {
                Duration::from_secs(120)
            } else {
                Duration::from_secs(5)
            };
            while started.elapsed() < grace {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(pid) = i32::try_from(child.id())
                && self.wrapped
            {
                unsafe_kill_group(pid, libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes `dir/mfad.toml` for a node on `store`, with bench users `0..in_nss` in its
/// nss_wrapper files (`dir/passwd`, `dir/group`); returns the config's path.
pub fn write_config(
    dir: &Path,
    in_nss: usize,
    store: &StoreSpec<'_>,
    extra_toml: &str,
) -> Result<PathBuf, BenchError> {
    std::fs::create_dir_all(dir)?;
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    for i in 0..in_nss {
        passwd.push_str(&format!(
            "{}:x:{}:{}:bench:/nonexistent:/bin/false\n",
            user_name(i),
            100_000 + i,
            100_000
        ));
    }
    std::fs::write(dir.join("passwd"), passwd)?;
    std::fs::write(dir.join("group"), "root:x:0:\nbench:x:100000:\n")?;
    let (location, key, postgres) = match store {
        StoreSpec::Sqlite(database) => (
            format!("database = \"{}\"", database.display()),
            store_key_of(database),
            String::new(),
        ),
        // The server's defaults for the pool (8 connections) and its timeouts.
        StoreSpec::Postgres {
            url,
            password_file,
            store_key,
        } => (
            format!("store = \"{url}\""),
            store_key.to_path_buf(),
            format!(
                "\n[postgres]\npassword_file = \"{}\"\n",
                password_file.display()
            ),
        ),
    };
    let config = dir.join("mfad.toml");
    std::fs::write(
        &config,
        format!(
            "socket = \"{}\"\n{location}\nstore_key = \"{}\"\nissuer = \"bench\"\nmax_attempts = 1\n\
             answer_timeout = 120\nwait_prompt = false\n\n[lockout]\nmax_failures = 0\n\n\
             [log]\nsyslog = false\nlevel = \"info\"\n\n[policy]\n\
             trusted_networks = [\"10.0.0.0/8\"]\n{postgres}{extra_toml}",
            dir.join("run/mfad.sock").display(),
            key.display()
        ),
    )?;
    Ok(config)
}

/// Seeds the PostgreSQL store `config` names the way a site moves a node onto it: an SQLite
/// file seeded like the SQLite bench's (in `dir`), then `mfad --migrate-store`. Returns the
/// store key the nodes share (beside that file).
pub fn seed_postgres(
    mfad: &Path,
    dir: &Path,
    enrolled: usize,
    url: &str,
    password_file: &Path,
) -> Result<PathBuf, BenchError> {
    let database = dir.join("lib/mfa.db");
    seed(&database, enrolled)?;
    migrate_into_postgres(mfad, dir, &database, url, password_file)
}

/// Copies the SQLite store `database` into the PostgreSQL database at `url` with
/// `mfad --migrate-store` (a config written in `dir`). Returns the store key both share.
pub fn migrate_into_postgres(
    mfad: &Path,
    dir: &Path,
    database: &Path,
    url: &str,
    password_file: &Path,
) -> Result<PathBuf, BenchError> {
    let store_key = store_key_of(database);
    let config = write_config(
        dir,
        0,
        &StoreSpec::Postgres {
            url,
            password_file,
            store_key: &store_key,
        },
        "",
    )?;
    let out = Command::new(mfad)
        .arg("--config")
        .arg(&config)
        .arg("--migrate-store")
        .arg(database)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BenchError(format!("starting {}: {e}", mfad.display())))?;
    if !out.status.success() {
        return Err(BenchError(format!(
            "mfad --migrate-store into {url} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(store_key)
}

fn unsafe_kill(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a pid this process started and still owns (not yet reaped).
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

fn unsafe_kill_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) of the process group this process made for a child it has not yet
    // reaped (the child leads it, so the group cannot be another's).
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// The store key of the bench's database: beside it, in the bench's own directory.
pub fn store_key_of(database: &Path) -> std::path::PathBuf {
    database.with_file_name("store.key")
}

/// `enrolled` users with one TOTP device each, whose last spent step lies in the past, in
/// one transaction.
fn seed(database: &Path, enrolled: usize) -> Result<(), BenchError> {
    seed_totp(
        database,
        (0..enrolled).map(|i| (user_name(i), secret_of(i))),
        "bench app",
        seeded_params(),
    )
}

/// One TOTP device named `device` with `params` for each (user, secret) of `users`, its last
/// spent step ten steps ago, all in one transaction.
pub fn seed_totp(
    database: &Path,
    users: impl Iterator<Item = (String, Vec<u8>)>,
    device: &str,
    params: TotpParams,
) -> Result<(), BenchError> {
    let mut store = Store::open_with_key_file(database, &store_key_of(database))
        .map_err(|e| BenchError(e.to_string()))?;
    let now = unix_now() as i64;
    let step = totp::step_of(now, params) as i64;
    let rows: Vec<(String, NewDeviceRow)> = users
        .map(|(user, secret)| {
            let row = NewDeviceRow {
                kind: DeviceKind::Totp,
                name: device.into(),
                otp: Some(OtpKey {
                    secret: Zeroizing::new(secret),
                    params,
                    counter: step - 10,
                }),
                address: None,
            };
            (user, row)
        })
        .collect();
    store
        .add_devices(&rows, now)
        .map_err(|e| BenchError(e.to_string()))?;
    Ok(())
}

/// Adds a push device (an ntfy topic) as the default method of users `0..n`.
pub fn add_push_devices(database: &Path, n: usize) -> Result<(), BenchError> {
    let conn = rusqlite::Connection::open(database)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch("BEGIN IMMEDIATE; UPDATE devices SET is_default = 0;")?;
    {
        let mut stmt = conn.prepare(
            "INSERT INTO devices(user, kind, name, address, is_default, created)
             VALUES (?1, 'push', 'bench phone', ?2, 1, 0)",
        )?;
        for i in 0..n {
            stmt.execute(rusqlite::params![user_name(i), format!("bench_topic_{i}")])?;
        }
    }
    conn.execute_batch("COMMIT;")?;
    Ok(())
}
