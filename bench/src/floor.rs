//! The socket floor: the least any daemon must do to answer the socket benchmark's clients.
//!
//! `mfa-bench --socket-floor SOCKET` serves the same conversations as mfad, frame for frame,
//! and nothing else: accept, read the caller's uid (SO_PEERCRED), read and parse the hello,
//! answer with the frames mfad sends (a login from 10.0.0.0/8: `done allow`; any other:
//! the passcode prompt, then, after the answer is parsed, `success` and `done allow`, each
//! pair in one write as mfad writes them), and close. No store, no user lookup, no code
//! check, no fsync, no log line. It runs on the same tokio runtime as mfad (multi-thread,
//! one worker per core) in a process of its own, so it shares the machine with the clients
//! as mfad does, and uses mfad's own code for the socket: its accept, and its
//! [`SocketDialogue`] for each conversation's reads and writes.
//!
//! The concurrency table runs it beside mfad, interleaved, and divides mfad's rate by its
//! rate: how much of what this machine's cores and the clients leave is left for mfad's own
//! work. A TOTP row's floor has no disk write at all, so mfad's ratio there also pays for
//! its durable replay record.

use mfa_proto::{ClientMsg, Operation, Outcome, ServerMsg};
use mfad::conn::{Dialogue, IO_TIMEOUT, SocketDialogue, watch_reading};
use mfad::server::{accept, peer_uid};
use std::path::Path;
use std::time::Duration;

/// As mfad bounds a read from pam_mfa.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `socket` until the process is killed. Returns only if it cannot start.
pub fn serve(socket: &Path) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let _ = std::fs::remove_file(socket);
    let listener = runtime
        .block_on(async {
            std::os::unix::net::UnixListener::bind(socket).and_then(|l| {
                l.set_nonblocking(true)?;
                watch_reading(l)
            })
        })
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    // As mfad: the accept loop on a worker, each conversation a task of its own.
    let looped = runtime.spawn(async move {
        loop {
            let stream = match accept(&listener).await {
                Ok(stream) => stream,
                Err(_) => {
                    // A pause after a failed accept (as mfad).
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if peer_uid(&stream).is_err() {
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut wire) = SocketDialogue::new(stream) {
                    let _ = converse(&mut wire).await;
                }
            });
        }
    });
    runtime
        .block_on(looped)
        .map_err(|e| format!("the accept loop stopped: {e}"))
}

async fn converse(wire: &mut SocketDialogue) -> Result<(), String> {
    let hello = read(wire).await?;
    let (user, rhost) = match hello {
        ClientMsg::Hello {
            op: Operation::Authenticate(ctx),
            ..
        } => (ctx.user, ctx.rhost.unwrap_or_default()),
        _ => return Err("not an authentication".into()),
    };
    let done = ServerMsg::Done {
        outcome: Outcome::Allow,
    };
    if rhost.starts_with("10.") {
        write(wire, vec![done]).await?;
    } else {
        // mfad's words, so the frames are the same size.
        let banner = ServerMsg::Info {
            text: format!(
                "Two-factor login for {user}\n\nEnter a passcode from your authenticator app \
                 or token, or a bypass code.\n"
            ),
        };
        let prompt = ServerMsg::Prompt {
            text: "Passcode: ".into(),
            echo: true,
        };
        write(wire, vec![banner, prompt]).await?;
        match read(wire).await? {
            ClientMsg::Answer { .. } => {}
            _ => return Err("not an answer".into()),
        }
        let success = ServerMsg::Info {
            text: "Success. Logging you in...".into(),
        };
        write(wire, vec![success, done]).await?;
    }
    Ok(())
}

async fn read(wire: &mut SocketDialogue) -> Result<ClientMsg, String> {
    wire.read(READ_TIMEOUT).await.map_err(|e| e.to_string())
}

/// `msgs` as frames, in one write.
async fn write(wire: &mut SocketDialogue, msgs: Vec<ServerMsg>) -> Result<(), String> {
    wire.write(&msgs, IO_TIMEOUT)
        .await
        .map_err(|e| e.to_string())
}
