//! Cleans up after test processes that were killed before their `Drop` ran (SIGKILL, a CI
//! time limit): their users, PAM services, daemons and directories carry the dead process's
//! pid in their names, so they can be told apart from those of live runs.

use crate::process::run;
use crate::scratch::PREFIX;
use crate::user::{GECOS_MARK, remove_group, remove_user};
use std::path::Path;
use std::process::Command;

fn pid_alive(pid: &str) -> bool {
    !pid.is_empty() && Path::new("/proc").join(pid).exists()
}

/// The test pid in a harness name `mfat<pid>x<n>`, if `s` starts with one.
fn owner_pid(s: &str) -> Option<&str> {
    let rest = s.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('x')?;
    pid.bytes().all(|b| b.is_ascii_digit()).then_some(pid)
}

/// Runs once per test process, before its first user is made.
pub fn sweep() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        stop_orphan_processes();
        remove_orphan_users();
        remove_orphan_groups();
        remove_orphan_pam_services();
        remove_orphan_dirs();
    });
}

/// sshd and mfad started by a dead test process: their command line names its scratch dir.
fn stop_orphan_processes() {
    let scratch = std::env::temp_dir().join("mfa-e2e-");
    let marker = scratch.display().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let orphan = cmdline
            .split_once(&marker)
            .and_then(|(_, rest)| owner_pid(rest))
            .is_some_and(|owner| !pid_alive(owner));
        if orphan {
            let _ = run(Command::new("kill").arg("-TERM").arg(&pid));
        }
    }
}

fn remove_orphan_users() {
    let Ok(passwd) = std::fs::read_to_string("/etc/passwd") else {
        return;
    };
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        let (Some(name), Some(gecos)) = (fields.first(), fields.get(4)) else {
            continue;
        };
        let orphan = gecos
            .strip_prefix(GECOS_MARK)
            .is_some_and(|pid| owner_pid(name) == Some(pid) && !pid_alive(pid));
        if orphan {
            remove_user(name);
        }
    }
}

/// Groups a dead test process made (users' own groups went with `userdel`).
fn remove_orphan_groups() {
    let Ok(groups) = std::fs::read_to_string("/etc/group") else {
        return;
    };
    for line in groups.lines() {
        let Some(name) = line.split(':').next() else {
            continue;
        };
        if owner_pid(name).is_some_and(|pid| !pid_alive(pid)) {
            remove_group(name);
        }
    }
}

fn remove_orphan_pam_services() {
    let Ok(entries) = std::fs::read_dir("/etc/pam.d") else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let orphan = file
            .strip_prefix("sshd-")
            .and_then(owner_pid)
            .is_some_and(|pid| !pid_alive(pid));
        if orphan {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn remove_orphan_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let orphan = file
            .strip_prefix("mfa-e2e-")
            .and_then(owner_pid)
            .is_some_and(|pid| !pid_alive(pid));
        if orphan {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_owner_pid_of_harness_names() {
        assert_eq!(owner_pid("mfat123x4"), Some("123"));
        assert_eq!(owner_pid("mfat123x4/sshd/sshd_config"), Some("123"));
        assert_eq!(owner_pid("mfademo"), None);
        assert_eq!(owner_pid("mfatabcx1"), None);
    }
}
