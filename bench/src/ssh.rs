//! ssh login time through one private sshd on 127.0.0.1, four PAM stacks interleaved:
//! the password alone, then the password plus pam_mfa, pam_google_authenticator or
//! pam_oath, all three with the same TOTP secret.
//!
//! sshd reads its PAM service file at every connection, so one sshd serves all four: the
//! harness swaps the file (by rename) between logins. Each module refuses a code it has
//! seen, and a run makes logins far faster than one per time step, so before each login
//! the harness puts that module's replay state back (mfad's last step, the
//! google-authenticator file, the pam_oath users file): every login is a real accept that
//! writes its replay record, and none of the resets is timed.
//!
//! The client is paramiko in one long-lived python process (`ssh_login.py`): OpenSSH's
//! client adds about 80 ms of loopback stalls, and an askpass program per prompt would
//! charge the two-prompt stacks one more process than the password-only one.

use crate::BenchError;
use crate::daemon::{params, unix_now};
use crate::stats::{ORDER_SEED, Samples};
use mfa_e2e::mfad::{Mfad, MfadConfig};
use mfa_e2e::scratch::{ScratchDir, unique_name};
use mfa_e2e::sshd::{PamService, PrivateSshd, pam_stack};
use mfa_e2e::user::TestUser;
use mfad::factor::totp;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

const SECRET: &[u8] = b"same-secret-for-all!";
const CLIENT: &str = include_str!("../ssh_login.py");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    Password,
    PamMfa,
    GoogleAuthenticator,
    Oath,
}

impl Stack {
    pub const ALL: [Stack; 4] = [
        Stack::Password,
        Stack::PamMfa,
        Stack::GoogleAuthenticator,
        Stack::Oath,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Stack::Password => "password only (pam_unix)",
            Stack::PamMfa => "password + pam_mfa (TOTP)",
            Stack::GoogleAuthenticator => "password + pam_google_authenticator",
            Stack::Oath => "password + pam_oath",
        }
    }
}

pub struct SshResult {
    pub rounds: usize,
    /// Per stack: every timed login.
    pub samples: Vec<(Stack, Samples)>,
    /// Per stack: login time minus the password-only login of the same round, in ms.
    pub deltas: Vec<(Stack, Vec<f64>)>,
    pub failures: Vec<(Stack, usize)>,
    pub versions: String,
}

/// Dropped in field order: sshd, mfad, the PAM file, the user, then the directory.
struct World {
    sshd: PrivateSshd,
    mfad: Mfad,
    pam: PamService,
    user: TestUser,
    dir: PathBuf,
    oath_file: PathBuf,
    module: PathBuf,
    // Removed last (it holds the directory the others live in).
    _scratch: ScratchDir,
}

fn require(path: &str, package: &str) -> Result<(), BenchError> {
    if Path::new(path).exists() {
        Ok(())
    } else {
        Err(BenchError(format!(
            "{path} is missing: apt-get install {package} (scripts/deps.sh installs it)"
        )))
    }
}

/// Checks that the PAM modules compared with pam_mfa (module, Debian package) are installed,
/// and that pam_mfa is built in `bin`; returns pam_mfa's path.
/// The modules every benchmark compares pam_mfa with, and their Debian packages.
const COMPARED: [(&str, &str); 2] = [
    ("pam_google_authenticator.so", "libpam-google-authenticator"),
    ("pam_oath.so", "libpam-oath"),
];

/// Checks that the compared modules (and `more`) are installed and pam_mfa is built; returns
/// pam_mfa's path.
pub(crate) fn require_modules(bin: &Path, more: &[(&str, &str)]) -> Result<PathBuf, BenchError> {
    for (module, package) in COMPARED.iter().chain(more) {
        if security_module(module).is_none() {
            return Err(BenchError(format!(
                "{module} is missing: apt-get install {package} (scripts/deps.sh installs it)"
            )));
        }
    }
    let module = bin.join("libpam_mfa.so");
    if !module.is_file() {
        return Err(BenchError(format!("{} is missing", module.display())));
    }
    Ok(module)
}

pub(crate) fn security_module(name: &str) -> Option<PathBuf> {
    [
        "/lib/x86_64-linux-gnu/security",
        "/usr/lib/x86_64-linux-gnu/security",
        "/lib/security",
        "/usr/lib/security",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|p| p.exists())
}

impl World {
    fn start(bin: &Path) -> Result<World, BenchError> {
        mfa_e2e::paths::require_root()?;
        require("/usr/bin/python3", "python3-paramiko")?;
        let module = require_modules(bin, &[])?;
        let name = unique_name();
        let scratch = ScratchDir::new(&name)?;
        let dir = scratch.path().to_path_buf();
        let user = TestUser::create(&name)?;
        let mfad_dir = dir.join("mfad");
        std::fs::create_dir_all(&mfad_dir)?;
        set_mode(&mfad_dir, 0o755)?;
        let mfad = Mfad::start(&mfad_dir, &MfadConfig::default())?;
        let step = totp::step_of(unix_now() as i64, params());
        mfad::Store::open_with_key_file(&mfad.database, &mfad.store_key)
            .and_then(|mut s| {
                s.add_totp_device(
                    &user.name,
                    "app",
                    SECRET,
                    params(),
                    step - 10,
                    unix_now() as i64,
                )
            })
            .map_err(|e| BenchError(format!("enrolling the bench user: {e}")))?;
        let service = format!("sshd-{name}");
        let pam = PamService::install(&service, &pam_stack(None))?;
        let sshd_dir = dir.join("sshd");
        std::fs::create_dir_all(&sshd_dir)?;
        let sshd = PrivateSshd::start(&sshd_dir, &service, "")?;
        let oath_file = dir.join("users.oath");
        Ok(World {
            sshd,
            mfad,
            pam,
            user,
            dir,
            oath_file,
            module,
            _scratch: scratch,
        })
    }

    fn pam_text(&self, stack: Stack) -> String {
        match stack {
            Stack::Password => pam_stack(None),
            Stack::PamMfa => pam_stack(Some(&format!(
                "auth required {} socket={} failmode=secure timeout=10 connect_timeout=2",
                self.module.display(),
                self.mfad.socket.display()
            ))),
            Stack::GoogleAuthenticator => {
                pam_stack(Some("auth required pam_google_authenticator.so"))
            }
            Stack::Oath => pam_stack(Some(&format!(
                "auth required pam_oath.so usersfile={} window=1 digits=6",
                self.oath_file.display()
            ))),
        }
    }

    /// Puts `stack` in /etc/pam.d (by rename: an sshd child may be reading the old one) and
    /// its module's replay state back to "nothing used yet".
    fn prepare(&self, stack: Stack) -> Result<(), BenchError> {
        let tmp = self.pam.path.with_extension("bench-tmp");
        std::fs::write(&tmp, self.pam_text(stack))?;
        std::fs::rename(&tmp, &self.pam.path)?;
        let step = totp::step_of(unix_now() as i64, params()) as i64;
        match stack {
            Stack::Password => {}
            Stack::PamMfa => {
                let conn = rusqlite::Connection::open(&self.mfad.database)?;
                conn.busy_timeout(Duration::from_secs(5))?;
                conn.execute(
                    "UPDATE devices SET counter = ?1 WHERE user = ?2",
                    rusqlite::params![step - 10, self.user.name],
                )?;
            }
            Stack::GoogleAuthenticator => {
                let path = Path::new(&self.user.home).join(".google_authenticator");
                let text = format!(
                    "{}\n\" WINDOW_SIZE 3\n\" DISALLOW_REUSE\n\" TOTP_AUTH\n",
                    data_encoding::BASE32_NOPAD.encode(SECRET)
                );
                let tmp = path.with_extension("bench-tmp");
                std::fs::write(&tmp, text)?;
                std::os::unix::fs::chown(&tmp, Some(self.user.uid), Some(self.user.gid))?;
                set_mode(&tmp, 0o400)?;
                std::fs::rename(&tmp, &path)?;
            }
            Stack::Oath => {
                let text = format!(
                    "HOTP/T30/6\t{}\t-\t{}\n",
                    self.user.name,
                    data_encoding::HEXLOWER.encode(SECRET)
                );
                std::fs::write(&self.oath_file, text)?;
                set_mode(&self.oath_file, 0o600)?;
            }
        }
        Ok(())
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- mfad ---\n{}\n--- sshd ---\n{}",
            tail(&self.mfad.log(), 30),
            tail(&self.sshd.log(), 30)
        )
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn set_mode(path: &Path, mode: u32) -> Result<(), BenchError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The long-lived paramiko client.
struct Paramiko {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Paramiko {
    fn start(dir: &Path) -> Result<Paramiko, BenchError> {
        let script = dir.join("ssh_login.py");
        std::fs::write(&script, CLIENT)?;
        let mut child = Command::new("/usr/bin/python3")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| BenchError("no stdin for the client".into()))?;
        let stdout = child
            .stdout
            .take()
            .map(BufReader::new)
            .ok_or_else(|| BenchError("no stdout for the client".into()))?;
        Ok(Paramiko {
            child,
            stdin,
            stdout,
        })
    }

    /// One login; Ok(seconds) or Err(reason).
    fn login(
        &mut self,
        port: u16,
        user: &str,
        password: &str,
        code: &str,
    ) -> Result<Result<f64, String>, BenchError> {
        writeln!(self.stdin, "{port} {user} {password} {code}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(BenchError("the paramiko client exited".into()));
        }
        let mut parts = line.trim().splitn(3, ' ');
        let status = parts.next().unwrap_or_default();
        let secs: f64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
        Ok(if status == "OK" {
            Ok(secs)
        } else {
            Err(parts.next().unwrap_or("unknown").to_string())
        })
    }
}

impl Drop for Paramiko {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn versions() -> String {
    package_versions(&[
        "openssh-server",
        "libpam-google-authenticator",
        "libpam-oath",
        "python3-paramiko",
    ])
}

/// "package version, …" as dpkg knows them ("?" for one it does not).
pub fn package_versions(packages: &[&str]) -> String {
    packages
        .iter()
        .map(|p| {
            let version = Command::new("dpkg-query")
                .args(["-W", "-f=${Version}", p])
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "?".into());
            format!("{p} {version}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn bench(bin: &Path, rounds: usize) -> Result<SshResult, BenchError> {
    let world = World::start(bin)?;
    let mut client = Paramiko::start(&world.dir)?;
    let mut samples: Vec<(Stack, Samples)> = Stack::ALL
        .iter()
        .map(|&s| (s, Samples::default()))
        .collect();
    let mut deltas: Vec<(Stack, Vec<f64>)> = Stack::ALL.iter().map(|&s| (s, Vec::new())).collect();
    let mut failures: Vec<(Stack, usize)> = Stack::ALL.iter().map(|&s| (s, 0)).collect();
    const WARM_UP: usize = 2;
    let mut rng = StdRng::seed_from_u64(ORDER_SEED);
    let mut order: Vec<usize> = (0..Stack::ALL.len()).collect();
    for round in 0..rounds + WARM_UP {
        if round % 10 == 0 {
            eprintln!("mfa-bench: ssh round {round}/{}", rounds + WARM_UP);
        }
        let mut times = [None; 4];
        // A new order each round, so that no stack always follows the same one (a login
        // pays for what the one before it left behind).
        order.shuffle(&mut rng);
        for &i in &order {
            let stack = Stack::ALL[i];
            world.prepare(stack)?;
            let step = totp::step_of(unix_now() as i64, params());
            let code = totp::code_at_step(SECRET, params(), step).to_string();
            let result = client.login(
                world.sshd.port,
                &world.user.name,
                &world.user.password,
                &code,
            )?;
            match result {
                Ok(secs) => times[i] = Some(secs),
                Err(reason) => {
                    failures[i].1 += 1;
                    eprintln!("mfa-bench: {} login failed: {reason}", stack.label());
                    if failures[i].1 >= 3 {
                        return Err(BenchError(format!(
                            "{} logins keep failing ({reason}):\n{}",
                            stack.label(),
                            world.diagnostics()
                        )));
                    }
                }
            }
        }
        if round < WARM_UP {
            continue;
        }
        for i in 0..Stack::ALL.len() {
            if let Some(t) = times[i] {
                samples[i].1.push(Duration::from_secs_f64(t));
                if let Some(base) = times[0] {
                    deltas[i].1.push((t - base) * 1000.0);
                }
            }
        }
    }
    Ok(SshResult {
        rounds,
        samples,
        deltas,
        failures,
        versions: versions(),
    })
}
