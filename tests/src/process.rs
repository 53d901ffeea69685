//! Running programs with a time limit, and stopping the ones the harness started.

use crate::clock;
use crate::error::{Context, Result};
use std::ffi::OsStr;
use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A command wrapped in coreutils `timeout`, so no test can hang on a stuck program.
pub fn timed(limit: Duration, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("timeout");
    c.arg("-k")
        .arg("5")
        .arg(limit.as_secs().max(1).to_string())
        .arg(program);
    c
}

/// Runs `cmd` to the end, feeding it `input` on stdin, and collects its output.
pub fn run_with_input(cmd: &mut Command, input: &str) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context(format!("starting {cmd:?}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A program that exits without reading closes the pipe; its output tells why.
        let _ = stdin.write_all(input.as_bytes());
    }
    child
        .wait_with_output()
        .context(format!("waiting for {cmd:?}"))
}

/// Runs `cmd` with stdin closed and collects its output.
pub fn run(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .context(format!("running {cmd:?}"))
}

/// Runs `cmd` and fails unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Result<Output> {
    let out = run(cmd)?;
    if !out.status.success() {
        crate::bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Asks a child the harness started to stop (SIGTERM), then kills it after `grace`.
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let exited = clock::wait_for(grace, || match child.try_wait() {
        Ok(Some(_)) | Err(_) => Some(()),
        Ok(None) => None,
    });
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Lossy text of a program's stdout and stderr, for messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
