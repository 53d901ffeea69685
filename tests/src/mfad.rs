//! A private mfad: its own config, socket and SQLite database in a test directory, run in the
//! foreground with its stderr (the decision log) captured to a file.

use crate::bail;
use crate::clock;
use crate::error::{Context, Result};
use crate::paths::built;
use crate::process::terminate;
use crate::scratch::write_file;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The keys of conf/mfad.toml a test may change; the rest keep the documented defaults.
#[derive(Debug, Clone)]
pub struct MfadConfig {
    pub unenrolled: String,
    pub max_attempts: u32,
    pub answer_timeout: u64,
    pub totp_digits: u32,
    pub totp_period: u64,
    pub totp_window: u64,
    pub lockout_max_failures: u32,
    pub lockout_duration: u64,
    /// `store = "…"` (e.g. a `postgresql://` URL), written instead of `database`; the
    /// `[postgres]` table then goes in [`MfadConfig::extra_toml`].
    pub store: Option<String>,
    /// The store key to use instead of a fresh one in mfad's directory: the nodes of a
    /// cluster share one (created by the first mfad that starts).
    pub store_key: Option<PathBuf>,
    /// More TOML for the generated mfad.toml: lines before the first `[table]` header join
    /// the top level (`wait_prompt = false`), the rest goes after the harness's own tables.
    pub extra_toml: String,
}

impl Default for MfadConfig {
    fn default() -> Self {
        MfadConfig {
            unenrolled: "deny".into(),
            max_attempts: 3,
            answer_timeout: 60,
            totp_digits: 6,
            totp_period: 30,
            totp_window: 1,
            lockout_max_failures: 10,
            lockout_duration: 3600,
            store: None,
            store_key: None,
            extra_toml: String::new(),
        }
    }
}

impl MfadConfig {
    fn render(&self, socket: &Path, database: &Path, store_key: &Path) -> String {
        let (top, tables) = split_top_level(&self.extra_toml);
        let store = match &self.store {
            Some(url) => format!("store = \"{url}\"\n"),
            None => format!("database = \"{}\"\n", database.display()),
        };
        format!(
            "# Written by the mfa-e2e harness.\n\
             socket = \"{socket}\"\n\
             {store}\
             store_key = \"{store_key}\"\n\
             issuer = \"mfa-e2e\"\n\
             unenrolled = \"{unenrolled}\"\n\
             max_attempts = {max_attempts}\n\
             answer_timeout = {answer_timeout}\n\
             {top}\
             \n[totp]\ndigits = {digits}\nperiod = {period}\nwindow = {window}\n\
             \n[lockout]\nmax_failures = {max_failures}\nduration = {duration}\n\
             \n[log]\nsyslog = false\nlevel = \"debug\"\n{tables}",
            socket = socket.display(),
            store_key = store_key.display(),
            unenrolled = self.unenrolled,
            max_attempts = self.max_attempts,
            answer_timeout = self.answer_timeout,
            digits = self.totp_digits,
            period = self.totp_period,
            window = self.totp_window,
            max_failures = self.lockout_max_failures,
            duration = self.lockout_duration,
        )
    }
}

/// `text` cut before its first table header: (top-level keys, tables), each ending in a
/// newline when not empty.
pub(crate) fn split_top_level(text: &str) -> (String, String) {
    let mut top = String::new();
    let mut tables = String::new();
    for line in text.lines() {
        if !tables.is_empty() || line.trim_start().starts_with('[') {
            tables.push_str(line);
            tables.push('\n');
        } else {
            top.push_str(line);
            top.push('\n');
        }
    }
    if !tables.is_empty() {
        tables.insert(0, '\n');
    }
    (top, tables)
}

/// The keys of an `[approval]` table that belong to mfa-web's config: a test writes them in
/// [`MfadConfig::extra_toml`] as before, and [`Mfad::start`] moves them to mfa-web.toml.
const WEB_KEYS: [&str; 4] = ["listen", "tls_cert", "tls_key", "connections_per_address"];

/// `text` without the [`WEB_KEYS`] lines of its `[approval]` table, and those lines.
fn split_web_keys(text: &str) -> (String, String) {
    let mut mfad = String::new();
    let mut web = String::new();
    let mut in_approval = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_approval = t == "[approval]";
        }
        let key = t.split('=').next().unwrap_or("").trim();
        if in_approval && t.contains('=') && WEB_KEYS.contains(&key) {
            web.push_str(line);
            web.push('\n');
        } else {
            mfad.push_str(line);
            mfad.push('\n');
        }
    }
    (mfad, web)
}

/// Written in [`MfadConfig::extra_toml`] where the approval pages' port goes (`listen`
/// and `public_url` alike): [`Mfad::start`] puts a free port there, and another one when
/// mfa-web finds that port taken by the time it binds (another test got it first).
pub const APPROVAL_PORT: &str = "@APPROVAL_PORT@";

pub struct Mfad {
    child: Option<Child>,
    /// mfa-web, started beside mfad when the config has `[approval]` (as root: the test of
    /// mfa-web as its own user starts it itself, with [`WebFront::start_as`]).
    web: Option<WebFront>,
    /// The port put in place of [`APPROVAL_PORT`], if the config had it.
    pub approval_port: Option<u16>,
    pub config_path: PathBuf,
    pub socket: PathBuf,
    /// The SQLite file (unused when [`MfadConfig::store`] names another store).
    pub database: PathBuf,
    /// The key that seals the database's secrets (a test opening the store needs it).
    pub store_key: PathBuf,
    pub log_path: PathBuf,
}

impl Mfad {
    /// mfad's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process id of the mfa-web started beside it, if any.
    pub fn web_pid(&self) -> Option<u32> {
        self.web.as_ref()?.child.as_ref().map(Child::id)
    }

    /// Writes the config into `dir` and starts mfad; returns once its socket exists (and,
    /// when the config has `[approval]` with a `listen` key, mfa-web beside it listens: the
    /// [`WEB_KEYS`] go to its mfa-web.toml). Without `listen`, no mfa-web is started (a test
    /// starts its own with [`WebFront::start_as`]).
    pub fn start(dir: &Path, config: &MfadConfig) -> Result<Self> {
        if !config.extra_toml.contains(APPROVAL_PORT) {
            return Self::start_once(dir, config);
        }
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = crate::sshd::free_port()?;
            let mut with_port = config.clone();
            with_port.extra_toml = config.extra_toml.replace(APPROVAL_PORT, &port.to_string());
            match Self::start_once(dir, &with_port) {
                Ok(mut mfad) => {
                    mfad.approval_port = Some(port);
                    return Ok(mfad);
                }
                // Taken between finding it free and mfad binding it: try another.
                Err(e) if e.to_string().contains("in use") => last_error = e.to_string(),
                Err(e) => return Err(e),
            }
        }
        bail!("no free port for mfa-web (the approval pages): {last_error}")
    }

    fn start_once(dir: &Path, config: &MfadConfig) -> Result<Self> {
        let program = built("mfad")?;
        let socket = dir.join("run").join("mfad.sock");
        let database = dir.join("lib").join("mfa.db");
        let config_path = dir.join("mfad.toml");
        let store_key = config
            .store_key
            .clone()
            .unwrap_or_else(|| dir.join("store.key"));
        // 0600, as installed: it may hold provider tokens, and mfad refuses those world-readable.
        let (text, web_keys) = split_web_keys(&config.render(&socket, &database, &store_key));
        write_file(&config_path, &text, 0o600)?;
        let log_path = dir.join("mfad.stderr");
        let log = File::create(&log_path).context("creating mfad log")?;
        let child = Command::new(&program)
            .arg("--config")
            .arg(&config_path)
            .arg("--foreground")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("mfad log")?)
            .stderr(log)
            .spawn()
            .context(format!("starting {}", program.display()))?;
        let mut mfad = Mfad {
            child: Some(child),
            web: None,
            approval_port: None,
            config_path,
            socket,
            database,
            store_key,
            log_path,
        };
        mfad.wait_ready()?;
        if text.lines().any(|l| l.trim() == "[approval]") {
            mfad.web = Some(WebFront::start_as(dir, &web_keys, &mfad.socket, None)?);
        }
        Ok(mfad)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let socket = self.socket.clone();
        let ready = clock::wait_for(Duration::from_secs(15), || {
            if socket.exists() {
                return Some(Ok(()));
            }
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(Err(status.to_string())),
                _ => None,
            }
        });
        match ready {
            Some(Ok(())) => Ok(()),
            Some(Err(status)) => bail!(
                "mfad exited ({status}) before creating {}:\n{}",
                self.socket.display(),
                self.log()
            ),
            None => bail!(
                "mfad did not create {} within 15 s:\n{}",
                self.socket.display(),
                self.log()
            ),
        }
    }

    /// Everything mfad wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills mfad at once (SIGKILL), as a crash or the OOM killer would: no clean shutdown,
    /// the socket file and the database's WAL stay behind.
    pub fn kill(&mut self) {
        self.web = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops mfad (SIGTERM, then SIGKILL after 5 s). The socket file may stay behind, as
    /// after a crash.
    pub fn stop(&mut self) {
        self.web = None;
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5));
        }
    }
}

impl Drop for Mfad {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The mfa-web binary beside an mfad: its config (`listen`, `tls_*`, ... and mfad's socket)
/// in the test directory, its stderr captured; stopped on drop.
pub struct WebFront {
    child: Option<Child>,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl WebFront {
    /// Writes `keys` (lines of mfa-web.toml) and `socket = SOCKET` into `dir/mfa-web.toml`
    /// and starts mfa-web, as `user` when given (through `setpriv`, with no supplementary
    /// groups) or else as this process; returns once it listens.
    pub fn start_as(dir: &Path, keys: &str, socket: &Path, user: Option<&str>) -> Result<Self> {
        let config_path = dir.join("mfa-web.toml");
        let text = format!(
            "# Written by the mfa-e2e harness.\nsocket = \"{}\"\n{keys}",
            socket.display()
        );
        // Readable by mfa-web's own user: it holds no secret.
        write_file(&config_path, &text, 0o644)?;
        let log_path = dir.join("mfa-web.stderr");
        let log = File::create(&log_path).context("creating mfa-web log")?;
        let program = built("mfa-web")?;
        let mut command = match user {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={user}"))
                    .arg(format!("--regid={user}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let child = command
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("mfa-web log")?)
            .stderr(log)
            .spawn()
            .context(format!("starting {}", program.display()))?;
        let mut web = WebFront {
            child: Some(child),
            config_path,
            log_path,
        };
        let log_path = web.log_path.clone();
        let listening = clock::wait_for(Duration::from_secs(15), || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("mfa-web listening on ") {
                return Some(Ok(()));
            }
            match web.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(Err(status.to_string())),
                _ => None,
            }
        });
        match listening {
            Some(Ok(())) => Ok(web),
            Some(Err(status)) => bail!(
                "mfa-web exited ({status}) before it listened:\n{}",
                web.log()
            ),
            None => bail!("mfa-web did not listen within 15 s:\n{}", web.log()),
        }
    }

    /// mfa-web's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything mfa-web wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for WebFront {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5));
        }
    }
}

/// Plays systemd for `mfad.socket` + `mfad.service` (`Restart=always`):
/// `systemd-socket-activate` execs it with the listening socket as fd 3 and `LISTEN_FDS=1`.
/// It keeps the socket open across mfad's restarts, as systemd does, and starts mfad again
/// each time it exits, each with `LISTEN_PID` set to that mfad's own pid; not while the file
/// `$2` exists (a test holding the restart back), and never again once `$1` exists.
const SOCKET_HOLDER: &str = r#"#!/bin/sh
stop=$1; hold=$2; shift 2
while [ ! -e "$stop" ]; do
    while [ -e "$hold" ] && [ ! -e "$stop" ]; do sleep 0.05; done
    [ -e "$stop" ] && break
    echo "mfa-e2e: starting mfad" >&2
    sh -c 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"' "$@"
done
"#;

/// The line the holder logs before each start of mfad.
pub const MFAD_START_MARK: &str = "mfa-e2e: starting mfad";

/// A socket-activated mfad: `systemd-socket-activate` owns the listening socket and starts
/// mfad at the first connection (see [`SOCKET_HOLDER`]); the test stops and restarts mfad
/// under it, as `systemctl restart mfad` would.
pub struct ActivatedMfad {
    holder: Option<Child>,
    pub socket: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    stop_file: PathBuf,
    hold_file: PathBuf,
}

impl ActivatedMfad {
    /// Writes the config into `dir`, starts the socket's holder and waits for the socket
    /// (mode 0666, as `SocketMode=` in mfad.socket). mfad itself starts at the first
    /// connection.
    pub fn start(dir: &Path, config: &MfadConfig) -> Result<Self> {
        let run = dir.join("run");
        std::fs::create_dir_all(&run).context("creating the socket's directory")?;
        crate::process::run_ok(Command::new("chmod").arg("0755").arg(&run))?;
        let socket = run.join("mfad.sock");
        let database = dir.join("lib").join("mfa.db");
        let config_path = dir.join("mfad.toml");
        let store_key = config
            .store_key
            .clone()
            .unwrap_or_else(|| dir.join("store.key"));
        write_file(
            &config_path,
            &config.render(&socket, &database, &store_key),
            0o600,
        )?;
        let holder_script = dir.join("socket-holder.sh");
        write_file(&holder_script, SOCKET_HOLDER, 0o700)?;
        let log_path = dir.join("mfad.stderr");
        let log = File::create(&log_path).context("creating mfad log")?;
        let stop_file = dir.join("holder.stop");
        let hold_file = dir.join("holder.hold");
        let child = Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(&socket)
            .arg("--")
            .arg("/bin/sh")
            .arg(&holder_script)
            .arg(&stop_file)
            .arg(&hold_file)
            .arg(built("mfad")?)
            .arg("--config")
            .arg(&config_path)
            .arg("--foreground")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("mfad log")?)
            .stderr(log)
            .spawn()
            .context("starting systemd-socket-activate (Debian's systemd package)")?;
        let activated = ActivatedMfad {
            holder: Some(child),
            socket,
            config_path,
            log_path,
            stop_file,
            hold_file,
        };
        let socket = activated.socket.clone();
        let ready = clock::wait_for(Duration::from_secs(10), || socket.exists().then_some(()));
        if ready.is_none() {
            bail!(
                "systemd-socket-activate did not create {} within 10 s:\n{}",
                activated.socket.display(),
                activated.log()
            );
        }
        crate::process::run_ok(Command::new("chmod").arg("0666").arg(&activated.socket))?;
        Ok(activated)
    }

    /// Everything the holder and each mfad wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// How many times mfad was started.
    pub fn starts(&self) -> usize {
        self.log().matches(MFAD_START_MARK).count()
    }

    /// The pid of the mfad running now, if one is.
    pub fn mfad_pid(&self) -> Option<u32> {
        let holder = self.holder.as_ref()?.id();
        let children =
            std::fs::read_to_string(format!("/proc/{holder}/task/{holder}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Waits up to `limit` for an mfad whose pid is not `old`.
    pub fn wait_for_mfad(&self, old: Option<u32>, limit: Duration) -> Result<u32> {
        match clock::wait_for(limit, || self.mfad_pid().filter(|p| Some(*p) != old)) {
            Some(pid) => Ok(pid),
            None => bail!("no new mfad within {limit:?}:\n{}", self.log()),
        }
    }

    /// Sends `signal` (`TERM`, `KILL`) to the mfad running now; returns its pid.
    pub fn signal_mfad(&self, signal: &str) -> Result<u32> {
        let Some(pid) = self.mfad_pid() else {
            bail!("no mfad is running:\n{}", self.log());
        };
        crate::process::run_ok(
            Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string()),
        )?;
        Ok(pid)
    }

    /// Waits up to `limit` for the mfad `pid` to exit.
    pub fn wait_exited(&self, pid: u32, limit: Duration) -> Result<()> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let gone = clock::wait_for(limit, || {
            let zombie_or_gone = std::fs::read_to_string(proc.join("stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true);
            (zombie_or_gone || self.mfad_pid() != Some(pid)).then_some(())
        });
        match gone {
            Some(()) => Ok(()),
            None => bail!("mfad {pid} still runs after {limit:?}"),
        }
    }

    /// Holds the next start of mfad back until [`Self::release`] (as a slow restart would).
    pub fn hold_restarts(&self) -> Result<()> {
        write_file(&self.hold_file, "", 0o600)
    }

    pub fn release(&self) {
        let _ = std::fs::remove_file(&self.hold_file);
    }
}

impl Drop for ActivatedMfad {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.stop_file, "");
        self.release();
        if let Ok(pid) = self.signal_mfad("TERM") {
            let _ = self.wait_exited(pid, Duration::from_secs(15));
        }
        let leftover = self.mfad_pid();
        if let Some(mut holder) = self.holder.take() {
            let exited = clock::wait_for(Duration::from_secs(5), || {
                matches!(holder.try_wait(), Ok(Some(_)) | Err(_)).then_some(())
            });
            if exited.is_none() {
                if let Some(pid) = leftover {
                    let _ = Command::new("kill")
                        .arg("-KILL")
                        .arg(pid.to_string())
                        .status();
                }
                let _ = holder.kill();
                let _ = holder.wait();
            }
        }
    }
}
