//! The socket floor: the least any daemon must do to answer the socket benchmark's clients.
//!
//! `mfa-bench --socket-floor SOCKET` serves the same conversations as mfad, frame for frame,
//! and nothing else: accept, read the caller's uid (SO_PEERCRED), read and parse the hello,
//! answer with the frames mfad sends (a login from 10.0.0.0/8: `done allow`; any other:
//! the passcode prompt, then, after the answer is parsed, `success` and `done allow`, each
//! pair in one write as mfad writes them), and close. No store, no user lookup, no code
//! check, no fsync, no log line. It runs on the same tokio runtime as mfad (multi-thread,
//! one worker per core) in a process of its own, so it shares the machine with the clients
//! as mfad does.
//!
//! The concurrency table runs it beside mfad, interleaved, and divides mfad's rate by its
//! rate: how much of what this machine's cores and the clients leave is left for mfad's own
//! work. A TOTP row's floor has no disk write at all, so mfad's ratio there also pays for
//! its durable replay record.

use mfa_proto::{ClientMsg, Operation, Outcome, ServerMsg, frame};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

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
        .block_on(async { UnixListener::bind(socket) })
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    // As mfad: the accept loop on a worker, each conversation a task of its own.
    let looped = runtime.spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // A pause after a failed accept (as mfad).
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if stream.peer_cred().is_err() {
                continue;
            }
            tokio::spawn(async move {
                let _ = converse(stream).await;
            });
        }
    });
    runtime
        .block_on(looped)
        .map_err(|e| format!("the accept loop stopped: {e}"))
}

async fn converse(mut stream: UnixStream) -> Result<(), String> {
    let hello = read(&mut stream).await?;
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
        write(&mut stream, &[&done]).await?;
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
        write(&mut stream, &[&banner, &prompt]).await?;
        match read(&mut stream).await? {
            ClientMsg::Answer { .. } => {}
            _ => return Err("not an answer".into()),
        }
        let success = ServerMsg::Info {
            text: "Success. Logging you in...".into(),
        };
        write(&mut stream, &[&success, &done]).await?;
    }
    let _ = stream.shutdown().await;
    Ok(())
}

async fn read(stream: &mut UnixStream) -> Result<ClientMsg, String> {
    tokio::time::timeout(READ_TIMEOUT, async {
        let mut header = [0u8; 4];
        stream
            .read_exact(&mut header)
            .await
            .map_err(|e| e.to_string())?;
        let len = frame::body_len(header).map_err(|e| e.to_string())?;
        let mut body = zeroize::Zeroizing::new(vec![0u8; len]);
        stream
            .read_exact(&mut body)
            .await
            .map_err(|e| e.to_string())?;
        frame::decode(&body).map_err(|e| e.to_string())
    })
    .await
    .map_err(|_| "timed out".to_string())?
}

/// `msgs` as frames, in one write.
async fn write(stream: &mut UnixStream, msgs: &[&ServerMsg]) -> Result<(), String> {
    let mut out = Vec::new();
    for msg in msgs {
        out.extend_from_slice(&frame::encode(msg).map_err(|e| e.to_string())?);
    }
    stream.write_all(&out).await.map_err(|e| e.to_string())
}
