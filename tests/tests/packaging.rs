//! What README.md tells an admin to install: the systemd unit and the example config.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mfa_e2e::paths::{built, workspace_root};
use mfa_e2e::process::{run, text};
use mfa_e2e::scratch::{ScratchDir, unique_name};
use std::process::Command;

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(workspace_root().join("packaging/mfad.service")).unwrap();
    let mfad = built("mfad").unwrap();
    let dir = ScratchDir::new(&unique_name()).unwrap();
    // verify needs the program to exist: point the unit at the built one.
    let path = dir.join("mfad.service");
    std::fs::write(
        &path,
        unit.replace("/usr/sbin/mfad", &mfad.display().to_string()),
    )
    .unwrap();
    // The service Requires= its socket unit: verify finds it beside the service.
    std::fs::copy(
        workspace_root().join("packaging/mfad.socket"),
        dir.join("mfad.socket"),
    )
    .unwrap();

    let out = run(Command::new("systemd-analyze").arg("verify").arg(&path)).unwrap();

    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn example_mfad_toml_is_accepted_by_mfad() {
    let mfad = built("mfad").unwrap();
    let conf = workspace_root().join("conf/mfad.toml");

    let out = run(Command::new(mfad)
        .arg("--config")
        .arg(&conf)
        .arg("--check-config"))
    .unwrap();

    assert!(
        out.status.success(),
        "{}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// The Debian package (scripts/package.sh), installed as README.md's "Install on a host"
// says into a fresh Debian 12 root, and checked by lintian.

use mfa_e2e::TotpSecret;
use mfa_e2e::cli::secret_in_line;
use mfa_e2e::process::{run_ok, terminate, timed};
use mfa_e2e::ssh::SshClient;
use mfa_e2e::sshd::free_port;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

/// The Debian 12 root, made once per machine by mmdebstrap (about a minute) and reused.
const ROOT_TARBALL: &str = "/var/cache/mfa-tests/debian12-root.tar";

/// The package scripts/package.sh built (scripts/test.sh builds it before the tests); built
/// here when there is none (once: the tests of this file share it, and two builds racing
/// would hand one of them a half-written file).
fn package() -> PathBuf {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let newest = || {
        std::fs::read_dir(target.join("debian"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with("mfa_") && name.ends_with(".deb")
            })
            .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    };
    if let Some(deb) = newest() {
        return deb;
    }
    run_ok(&mut timed(
        Duration::from_secs(3600),
        workspace_root().join("scripts/package.sh"),
    ))
    .unwrap();
    newest().expect("scripts/package.sh made no target/debian/mfa_*.deb")
}

/// The Debian sources this machine's apt uses: the root is built from the same mirror.
fn debian_sources() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.flatten().map(|e| e.path()));
    }
    files
        .into_iter()
        .filter(|p| {
            let ext = p.extension().unwrap_or_default();
            (ext == "list" || ext == "sources" || p.ends_with("sources.list"))
                && std::fs::read_to_string(p)
                    .map(|t| {
                        t.lines()
                            .any(|l| !l.trim_start().starts_with('#') && l.contains("/debian"))
                    })
                    .unwrap_or(false)
        })
        .collect()
}

/// The cached root tarball, made first when it is missing.
fn debian12_tarball() -> PathBuf {
    let tarball = PathBuf::from(ROOT_TARBALL);
    if tarball.is_file() {
        return tarball;
    }
    std::fs::create_dir_all(tarball.parent().unwrap()).unwrap();
    // mmdebstrap picks the output's format from its name: it must end in .tar (without it,
    // a directory is made). A directory left at the tarball's path by that mistake goes.
    if tarball.is_dir() {
        std::fs::remove_dir_all(&tarball).unwrap();
    }
    let partial =
        tarball.with_file_name(format!("debian12-root.partial-{}.tar", std::process::id()));
    let sources = debian_sources();
    assert!(!sources.is_empty(), "no Debian apt sources on this machine");
    let out = run(timed(Duration::from_secs(1200), "mmdebstrap")
        .args(["--variant=minbase", "--include=openssh-server", "bookworm"])
        .arg(&partial)
        .args(&sources))
    .unwrap();
    assert!(
        out.status.success(),
        "mmdebstrap: {}\n{}",
        out.status,
        text(&out.stderr)
    );
    std::fs::rename(&partial, &tarball).unwrap();
    tarball
}

/// A fresh Debian 12 root in a temp dir, /proc mounted. Dropping it stops what was started
/// in it, unmounts /proc and removes the tree (left in place if /proc will not unmount).
struct DebianRoot {
    dir: PathBuf,
    children: Vec<Child>,
}

impl DebianRoot {
    fn new(name: &str) -> DebianRoot {
        let tarball = debian12_tarball();
        let dir = std::env::temp_dir().join(format!("mfa-e2e-{name}-root"));
        let root = DebianRoot {
            dir,
            children: Vec::new(),
        };
        std::fs::create_dir_all(&root.dir).unwrap();
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&root.dir)
                .arg("-xf")
                .arg(&tarball),
        )
        .unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "proc", "proc"])
                .arg(root.dir.join("proc")),
        )
        .unwrap();
        root
    }

    fn path(&self, inside: &str) -> PathBuf {
        self.dir.join(inside.trim_start_matches('/'))
    }

    /// `chroot ROOT program args...`, with a clean environment.
    fn command(&self, limit: Duration, argv: &[&str]) -> Command {
        self.command_as(limit, &[], argv)
    }

    /// `chroot OPTIONS ROOT program args...` (`--userspec=UID:GID`).
    fn command_as(&self, limit: Duration, options: &[&str], argv: &[&str]) -> Command {
        let mut cmd = timed(limit, "chroot");
        cmd.args(options)
            .arg(&self.dir)
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// Runs a command inside; its output, stdout then stderr. Fails unless it exits 0.
    fn run(&self, argv: &[&str]) -> String {
        let out = run(&mut self.command(Duration::from_secs(300), argv)).unwrap();
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{argv:?}: {}\n{all}", out.status);
        all
    }

    /// Starts a long-running program inside (not through `timeout`: it is stopped on drop).
    fn spawn(&mut self, argv: &[&str], log: &Path) -> usize {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("chroot")
            .arg(&self.dir)
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    fn stop(&mut self, which: usize) {
        terminate(&mut self.children[which], Duration::from_secs(5));
    }

    /// uid and gid of a user of the root's /etc/passwd.
    fn ids(&self, user: &str) -> (String, String) {
        let passwd = std::fs::read_to_string(self.path("/etc/passwd")).unwrap();
        let line = passwd
            .lines()
            .find(|l| l.split(':').next() == Some(user))
            .unwrap();
        let f: Vec<&str> = line.split(':').collect();
        (f[2].to_string(), f[3].to_string())
    }
}

impl Drop for DebianRoot {
    fn drop(&mut self) {
        for child in &mut self.children {
            terminate(child, Duration::from_secs(5));
        }
        let proc_dir = self.dir.join("proc");
        let _ = Command::new("umount").arg(&proc_dir).status();
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .map(|m| m.contains(&format!(" {} ", proc_dir.display())))
            .unwrap_or(true);
        if mounted || std::env::var_os("MFA_E2E_KEEP").is_some() {
            eprintln!("leaving {}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `mfa enroll totp` run as `user` inside the root: answers with the code of the secret
/// it prints.
fn enroll_totp_in(root: &DebianRoot, user: &str) -> TotpSecret {
    let (uid, gid) = root.ids(user);
    let mut child = root
        .command_as(
            Duration::from_secs(60),
            &[&format!("--userspec={uid}:{gid}")],
            &["/usr/bin/mfa", "enroll", "totp"],
        )
        .env("HOME", format!("/home/{user}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take();
    let mut seen = String::new();
    let mut secret = None;
    // Read to the end (a closed pipe would kill mfa), answering once the secret shows.
    for line in stdout.lines().map_while(|l| l.ok()) {
        seen.push_str(&line);
        seen.push('\n');
        if let (None, Some(s)) = (&secret, secret_in_line(&line)) {
            let mut totp = TotpSecret::from_base32(&s, 6, 30, 1).unwrap();
            if let Some(mut input) = stdin.take() {
                writeln!(input, "{}", totp.current_code()).unwrap();
            }
            secret = Some(totp);
        }
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mfa enroll totp: {}\n{seen}{}",
        out.status,
        text(&out.stderr)
    );
    secret.expect("mfa enroll totp printed no Secret: line")
}

/// The PAM line README.md's "Install on a host" gives, read from README.md itself.
fn documented_pam_line() -> String {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let section = &readme[readme.find("## Install on a host").unwrap()..];
    section
        .lines()
        .find(|l| l.starts_with("auth") && l.contains("pam_mfa.so"))
        .expect("no pam_mfa.so line in README.md's Install on a host")
        .to_string()
}

#[test]
fn package_installs_in_debian_12_logs_in_with_totp_and_removes_and_purges_cleanly() {
    mfa_e2e::paths::require_root().unwrap();
    let deb = package();
    let name = unique_name();
    let scratch = ScratchDir::new(&name).unwrap();
    let mut root = DebianRoot::new(&name);
    let stock_pam = std::fs::read(root.path("/etc/pam.d/sshd")).unwrap();
    let stock_sshd = std::fs::read(root.path("/etc/ssh/sshd_config")).unwrap();

    // apt install ./mfa_*.deb (no network: its dependencies are in every Debian root).
    std::fs::copy(&deb, root.path("/tmp/mfa.deb")).unwrap();
    let installed = root.run(&["apt-get", "install", "-y", "/tmp/mfa.deb"]);
    assert!(
        installed.contains("systemd is not running here"),
        "{installed}"
    );
    let arch = text(
        &run_ok(Command::new("dpkg-architecture").arg("-qDEB_HOST_MULTIARCH"))
            .unwrap()
            .stdout,
    );
    for file in [
        "/usr/sbin/mfad".to_string(),
        "/usr/bin/mfa".to_string(),
        "/usr/sbin/mfa-login-prompt".to_string(),
        format!("/usr/lib/{}/security/pam_mfa.so", arch.trim()),
        "/lib/systemd/system/mfad.service".to_string(),
        "/usr/share/doc/mfa/README.md".to_string(),
        "/usr/share/doc/mfa/copyright".to_string(),
        "/usr/share/man/man1/mfa.1.gz".to_string(),
        "/usr/share/man/man8/mfad.8.gz".to_string(),
        "/usr/share/man/man8/pam_mfa.8.gz".to_string(),
        "/usr/share/man/man8/mfa-login-prompt.8.gz".to_string(),
        "/usr/share/man/man5/mfad.toml.5.gz".to_string(),
        "/usr/share/bash-completion/completions/mfa".to_string(),
        "/usr/share/zsh/vendor-completions/_mfa".to_string(),
        "/usr/share/fish/vendor_completions.d/mfa.fish".to_string(),
    ] {
        assert!(root.path(&file).is_file(), "{file} is not installed");
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for (file, mode) in [("/etc/mfa/mfad.toml", 0o600), ("/etc/mfa/store.key", 0o600)] {
        let meta = std::fs::metadata(root.path(file)).unwrap();
        assert_eq!(
            (meta.permissions().mode() & 0o7777, meta.uid()),
            (mode, 0),
            "{file}"
        );
    }
    let conffiles = root.run(&["dpkg-query", "-W", "-f=${Conffiles}", "mfa"]);
    assert!(conffiles.contains("/etc/mfa/mfad.toml"), "{conffiles}");
    assert!(conffiles.contains("/etc/mfa/mfa-web.toml"), "{conffiles}");
    // mfa-web's own system user: no login shell, no home of its own.
    let web_user = root.run(&["getent", "passwd", "mfa-web"]);
    let fields: Vec<&str> = web_user.trim().split(':').collect();
    assert_eq!(fields.len(), 7, "{web_user}");
    assert!(
        fields[2].parse::<u32>().unwrap() < 1000,
        "not a system user: {web_user}"
    );
    assert_eq!(fields[6], "/usr/sbin/nologin", "{web_user}");
    // Installing turns nothing on: sshd's PAM stack and config are Debian's.
    assert_eq!(
        std::fs::read(root.path("/etc/pam.d/sshd")).unwrap(),
        stock_pam
    );
    assert_eq!(
        std::fs::read(root.path("/etc/ssh/sshd_config")).unwrap(),
        stock_sshd
    );
    assert!(!root.path("/etc/ssh/sshd_config.d/mfa.conf").exists());

    // No systemd in a chroot: mfad runs by hand, with the unit's own ExecStart.
    let unit = std::fs::read_to_string(root.path("/lib/systemd/system/mfad.service")).unwrap();
    let exec_start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .trim_start_matches(['-', '+', '@', '!', ':']);
    let mut argv: Vec<&str> = exec_start.split_whitespace().collect();
    argv.push("--foreground");
    let mfad_log = scratch.join("mfad.log");
    let mfad = root.spawn(&argv, &mfad_log);
    let socket = root.path("/run/mfa/mfad.sock");
    assert!(
        mfa_e2e::clock::wait_for(Duration::from_secs(20), || socket.exists().then_some(()))
            .is_some(),
        "mfad made no socket: {}",
        std::fs::read_to_string(&mfad_log).unwrap_or_default()
    );

    // The documented lines: the PAM line after common-auth, the shipped sshd snippet.
    let pam_line = documented_pam_line();
    let pam = String::from_utf8(stock_pam.clone()).unwrap().replacen(
        "@include common-auth\n",
        &format!("@include common-auth\n{pam_line}\n"),
        1,
    );
    std::fs::write(root.path("/etc/pam.d/sshd"), pam).unwrap();
    std::fs::copy(
        root.path("/usr/share/doc/mfa/examples/sshd_config.snippet"),
        root.path("/etc/ssh/sshd_config.d/mfa.conf"),
    )
    .unwrap();
    // sshd's privilege separation directory (made by its unit under systemd).
    std::fs::create_dir_all(root.path("/run/sshd")).unwrap();
    std::fs::set_permissions(
        root.path("/run/sshd"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    root.run(&["sshd", "-t"]);

    let user = format!("{name}u");
    let password = format!("Pkg-{}-pw", std::process::id());
    root.run(&["useradd", "-m", "-s", "/bin/bash", &user]);
    let mut chpasswd = root.command(Duration::from_secs(30), &["chpasswd"]);
    let out =
        mfa_e2e::process::run_with_input(&mut chpasswd, &format!("{user}:{password}\n")).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut totp = enroll_totp_in(&root, &user);

    // A private sshd inside the root, its config Debian's plus the lines above.
    let port = free_port().unwrap();
    let sshd_log = scratch.join("sshd.log");
    let port_opt = format!("Port={port}");
    root.spawn(
        &[
            "/usr/sbin/sshd",
            "-D",
            "-e",
            "-o",
            &port_opt,
            "-o",
            "ListenAddress=127.0.0.1",
            "-o",
            "PidFile=/run/sshd-mfa-test.pid",
        ],
        &sshd_log,
    );
    assert!(
        mfa_e2e::clock::wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .is_some(),
        "sshd did not listen: {}",
        std::fs::read_to_string(&sshd_log).unwrap_or_default()
    );
    let client = SshClient::new(scratch.path(), port, &user);
    let diagnostics = || {
        format!(
            "--- mfad ---\n{}\n--- sshd ---\n{}",
            std::fs::read_to_string(&mfad_log).unwrap_or_default(),
            std::fs::read_to_string(&sshd_log).unwrap_or_default()
        )
    };

    // Password alone is not enough; password + TOTP logs in.
    let refused = client
        .login(
            &[
                &password,
                &totp.wrong_code(),
                &totp.wrong_code(),
                &totp.wrong_code(),
            ],
            "echo in",
        )
        .unwrap();
    assert!(
        refused.refused(),
        "{}\n{}",
        refused.describe(),
        diagnostics()
    );
    let code = totp.fresh_code();
    let login = client
        .login(&[&password, &code], "echo logged-in-through-the-package")
        .unwrap();
    assert!(
        login.logged_in() && login.stdout.contains("logged-in-through-the-package"),
        "{}\n{}",
        login.describe(),
        diagnostics()
    );
    assert_eq!(
        login.prompts_containing("Passcode"),
        1,
        "{}",
        login.describe()
    );

    // apt remove (prerm would stop mfad under systemd; here it was started by hand).
    root.stop(mfad);
    let removed = root.run(&["apt-get", "remove", "-y", "mfa"]);
    assert!(
        removed.contains("/etc/pam.d/sshd still names pam_mfa.so"),
        "{removed}"
    );
    assert!(
        !root
            .path(&format!("/usr/lib/{}/security/pam_mfa.so", arch.trim()))
            .exists()
    );
    // The documented line is skipped once the module is gone: the password alone logs in.
    let after_remove = client.login(&[&password], "echo password-alone").unwrap();
    assert!(
        after_remove.logged_in() && after_remove.stdout.contains("password-alone"),
        "{}\n{}",
        after_remove.describe(),
        diagnostics()
    );
    assert_eq!(after_remove.prompts_containing("Passcode"), 0);
    // The state stays until purge.
    assert!(root.path("/var/lib/mfa").is_dir());
    assert!(root.path("/etc/mfa/store.key").is_file());

    // apt purge: the state goes, and it says so.
    let purged = root.run(&["apt-get", "purge", "-y", "mfa"]);
    assert!(purged.contains("purged: removed /var/lib/mfa"), "{purged}");
    assert!(
        purged.contains("purged: removed /etc/mfa/store.key"),
        "{purged}"
    );
    assert!(!root.path("/var/lib/mfa").exists());
    assert!(!root.path("/etc/mfa").exists());
}

#[test]
fn lintian_finds_no_errors_and_every_warning_left_is_explained_in_the_docs() {
    let deb = package();
    let out = run(timed(Duration::from_secs(600), "lintian")
        .args(["--fail-on", "error", "--no-cfg"])
        .arg(&deb))
    .unwrap();
    let report = text(&out.stdout);
    assert!(
        out.status.success(),
        "lintian: {}\n{report}{}",
        out.status,
        text(&out.stderr)
    );
    let docs = std::fs::read_to_string(workspace_root().join("docs/PACKAGING.md")).unwrap();
    for line in report.lines().filter(|l| l.starts_with("W: ")) {
        let tag = line.split_whitespace().nth(2).unwrap_or_default();
        assert!(
            docs.contains(&format!("`{tag}`")),
            "lintian warning not explained in docs/PACKAGING.md: {line}"
        );
    }
}
