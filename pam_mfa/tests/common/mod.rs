//! A fake mfad: a thread on a Unix socket in a temporary directory that plays a script
//! of mfa-proto frames to the first client and records what the client said.

#![allow(dead_code)]

use mfa_proto::frame::{read_frame, write_frame};
use mfa_proto::{AuthContext, ClientMsg, Operation, Outcome, ServerMsg};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the fake daemon does after reading the client's Hello.
#[derive(Debug, Clone)]
pub enum Step {
    Info(&'static str),
    Error(&'static str),
    /// Sends a prompt and reads one Answer.
    Prompt(&'static str, bool),
    Done(Outcome),
    Unavailable(&'static str),
    /// Writes these bytes as they are.
    Raw(Vec<u8>),
    /// Sends a prompt and closes the connection without reading the answer.
    PromptAndHangUp(&'static str),
    /// Reads and discards until the client goes away (or the test ends).
    Hang,
}

/// What the client did, as the daemon saw it.
#[derive(Debug, Default)]
pub struct Transcript {
    pub connections: usize,
    pub hello: Option<ClientMsg>,
    /// One entry per answered prompt; `None` inside when the client sent "could not ask".
    pub answers: Vec<Option<String>>,
    pub errors: Vec<String>,
}

impl Transcript {
    /// The AuthContext the client sent in its Hello.
    pub fn context(&self) -> AuthContext {
        match &self.hello {
            Some(ClientMsg::Hello {
                op: Operation::Authenticate(ctx),
                ..
            }) => ctx.clone(),
            other => panic!("expected an authenticate hello, got {other:?}"),
        }
    }
}

pub struct FakeMfad {
    dir: tempfile::TempDir,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// Set once the scripted connection has been closed.
    played: Arc<AtomicBool>,
    thread: Option<JoinHandle<Transcript>>,
}

/// No test conversation is longer than this; the thread gives up after it.
const LIFETIME: Duration = Duration::from_secs(30);

impl FakeMfad {
    pub fn start(script: Vec<Step>) -> FakeMfad {
        let dir = tempfile::Builder::new()
            .prefix("pam_mfa-test-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("mfad.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let played = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, played) = (stop.clone(), played.clone());
            std::thread::spawn(move || serve(listener, script, &stop, &played))
        };
        FakeMfad {
            dir,
            path,
            stop,
            played,
            thread: Some(thread),
        }
    }

    /// A socket path in a fresh directory where nothing listens.
    pub fn absent_socket() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("pam_mfa-test-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("mfad.sock");
        (dir, path)
    }

    pub fn socket(&self) -> &Path {
        &self.path
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until the script has been played and its connection closed.
    pub fn wait_until_hung_up(&self) {
        let deadline = Instant::now() + LIFETIME;
        while !self.played.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the fake mfad was never called");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the thread and returns what it saw.
    pub fn finish(mut self) -> Transcript {
        self.stop.store(true, Ordering::SeqCst);
        let transcript = self.thread.take().unwrap().join().unwrap();
        assert!(
            transcript.errors.is_empty(),
            "fake mfad: {:?}",
            transcript.errors
        );
        transcript
    }
}

impl Drop for FakeMfad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    listener: UnixListener,
    script: Vec<Step>,
    stop: &AtomicBool,
    played: &AtomicBool,
) -> Transcript {
    let mut transcript = Transcript::default();
    let deadline = Instant::now() + LIFETIME;
    let mut script = Some(script);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                transcript.connections += 1;
                // Only the first connection gets the script; later ones are counted and closed.
                if let Some(script) = script.take() {
                    if let Err(e) = play(stream, script, stop, &mut transcript) {
                        transcript.errors.push(e);
                    }
                    played.store(true, Ordering::SeqCst);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                transcript.errors.push(format!("accept: {e}"));
                break;
            }
        }
    }
    transcript
}

fn play(
    mut stream: UnixStream,
    script: Vec<Step>,
    stop: &AtomicBool,
    transcript: &mut Transcript,
) -> Result<(), String> {
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let hello: ClientMsg = read_frame(&mut stream).map_err(|e| format!("reading hello: {e}"))?;
    transcript.hello = Some(hello);
    for step in script {
        let send = |stream: &mut UnixStream, msg: ServerMsg| {
            write_frame(stream, &msg).map_err(|e| format!("sending {msg:?}: {e}"))
        };
        match step {
            Step::Info(text) => send(&mut stream, ServerMsg::Info { text: text.into() })?,
            Step::Error(text) => send(&mut stream, ServerMsg::Error { text: text.into() })?,
            Step::Done(outcome) => send(&mut stream, ServerMsg::Done { outcome })?,
            Step::Unavailable(reason) => send(
                &mut stream,
                ServerMsg::Unavailable {
                    reason: reason.into(),
                },
            )?,
            Step::Prompt(text, echo) => {
                send(
                    &mut stream,
                    ServerMsg::Prompt {
                        text: text.into(),
                        echo,
                    },
                )?;
                match read_frame::<_, ClientMsg>(&mut stream) {
                    Ok(ClientMsg::Answer { text }) => {
                        transcript.answers.push(text.map(|t| t.to_string()))
                    }
                    Ok(other) => return Err(format!("expected an answer, got {other:?}")),
                    Err(e) => return Err(format!("reading answer: {e}")),
                }
            }
            Step::PromptAndHangUp(text) => {
                send(
                    &mut stream,
                    ServerMsg::Prompt {
                        text: text.into(),
                        echo: false,
                    },
                )?;
                return Ok(());
            }
            Step::Raw(bytes) => {
                // The client may already have given up; that is what these scripts test.
                let _ = stream.write_all(&bytes);
            }
            Step::Hang => {
                stream
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .map_err(|e| e.to_string())?;
                let mut buf = [0u8; 256];
                while !stop.load(Ordering::SeqCst) {
                    match stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => break,
                    }
                }
            }
        }
    }
    Ok(())
}
