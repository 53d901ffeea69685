//! The blocking client used by pam_mfa, mfa and mfa-login-prompt.
//!
//! Every connect, read and write carries a timeout, so a stuck or dead daemon costs the
//! caller at most that long. [`run_conversation`] is the whole relay loop: the daemon
//! drives, the [`Conversation`] shows text and asks the user.
//!
//! The errors say which side of one line they fall on: before mfad has spoken (nothing
//! listens, the listener is not root, the first message never came or is unreadable or
//! says "unavailable"), a caller may apply its fail mode; once mfad has spoken
//! ([`ClientError::Interrupted`]), a broken conversation is always a refusal, or waiting
//! at a prompt would be a way round the second factor.

use crate::frame::{self, FrameError, Inbox};
use crate::{ClientMsg, MAX_ANSWER, Operation, Outcome, PROTOCOL_VERSION, ServerMsg};
use socket2::{Domain, SockAddr, Socket, Type};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// However many keep-alives come, a client waits at most this long for a real message: the
/// longest wait mfad can configure (a push's `token_ttl`, 600 s) with room to spare.
pub const MAX_WAIT: Duration = Duration::from_secs(900);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to mfad at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mfad did not answer in time")]
    TimedOut,
    #[error("mfad closed the connection")]
    Closed,
    #[error("mfad sent a message this client cannot read: {0}")]
    Protocol(String),
    #[error("mfad cannot serve this request: {0}")]
    Unavailable(String),
    #[error("i/o error talking to mfad: {0}")]
    Io(std::io::Error),
    /// Whatever listens on the socket is not root, so it is not mfad: nothing was sent to it.
    #[error("the process serving {path} runs as uid {uid}, not root; it is not mfad")]
    NotRoot { path: PathBuf, uid: u32 },
    /// mfad had started the conversation when it broke. Never a reason for a fail mode.
    #[error("the conversation with mfad broke off: {0}")]
    Interrupted(Box<ClientError>),
}

impl ClientError {
    /// Whether the conversation had started (mfad had sent a message) when this happened.
    /// Only errors before that may be answered by a fail mode.
    pub fn mfad_had_spoken(&self) -> bool {
        matches!(self, ClientError::Interrupted(_))
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Closed => ClientError::Closed,
            FrameError::TimedOut => ClientError::TimedOut,
            FrameError::Io(e) => ClientError::Io(e),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

/// What a caller does when mfad cannot give an answer (before mfad has spoken).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Refuse the login (the default).
    #[default]
    Secure,
    /// Allow the login without a second factor, and say so.
    Safe,
}

impl FailMode {
    /// The spellings a sysadmin writes (`failmode=secure|safe`).
    pub const NAMES: [&'static str; 2] = ["secure", "safe"];

    /// As a sysadmin writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Secure => "secure",
            FailMode::Safe => "safe",
        }
    }
}

/// A fail mode other than `secure` or `safe` (exact, lower-case).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failmode={0:?} is neither secure nor safe")]
pub struct BadFailMode(pub String);

impl std::str::FromStr for FailMode {
    type Err = BadFailMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "secure" => Ok(FailMode::Secure),
            "safe" => Ok(FailMode::Safe),
            other => Err(BadFailMode(other.to_string())),
        }
    }
}

/// Shown when mfad cannot answer and the fail mode is `secure`.
pub const UNAVAILABLE_SECURE_TEXT: &str = "Two-factor authentication is unavailable right now; login refused. Please try again later or contact your administrator.";

/// Shown when mfad cannot answer and the fail mode is `safe`.
pub const UNAVAILABLE_SAFE_TEXT: &str =
    "Two-factor authentication is unavailable right now; continuing without it.";

/// Shown when the conversation broke after mfad had spoken: a refusal in either fail mode.
pub const INTERRUPTED_TEXT: &str = "Two-factor authentication is unavailable right now: the login was interrupted and is refused. Please try again.";

/// One connection to mfad.
pub struct Client {
    stream: UnixStream,
    /// The bound on each read and write.
    io_timeout: Duration,
    /// What has been read from mfad and not yet handed out as a message (zeroized as it is
    /// taken and when the client is dropped: answers pass only the other way, but it is kept
    /// to one rule). mfad writes a conversation's messages in pairs (a banner and its
    /// prompt, a result and the verdict), and one read takes in all that has come.
    inbox: Inbox,
}

/// The inbox's first room: a pair of mfad's messages, an enrolment's QR code and its
/// prompt included, comes in one read.
const FIRST_ROOM: usize = 4096;

impl Client {
    /// Connects with `connect_timeout`; every later read and write is bounded by `io_timeout`.
    pub fn connect(
        path: &Path,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> Result<Self, ClientError> {
        let connect_err = |source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        };
        let addr = SockAddr::unix(path).map_err(connect_err)?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(connect_err)?;
        // A Unix socket's connect(2) waits only while the listener's queue is full, and at
        // most the send timeout; then it fails with EAGAIN. So the send timeout bounds the
        // connect, and then becomes the bound on each write.
        socket
            .set_write_timeout(Some(connect_timeout))
            .map_err(connect_err)?;
        loop {
            match socket.connect(&addr) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(connect_err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "mfad's queue of new connections stayed full for {} s",
                            connect_timeout.as_secs_f64()
                        ),
                    )));
                }
                Err(e) => return Err(connect_err(e)),
            }
        }
        let stream: UnixStream = socket.into();
        // Only root may serve mfad's socket: a user's process there (left free by a dead
        // mfad) must not see a login's context or answers, nor give a verdict.
        let uid = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
            .map_err(|e| connect_err(std::io::Error::from(e)))?
            .uid();
        if uid != 0 {
            return Err(ClientError::NotRoot {
                path: path.to_path_buf(),
                uid,
            });
        }
        // Reads need no timeout of the socket's own: each waits in poll(2) first.
        stream
            .set_write_timeout(Some(io_timeout))
            .map_err(ClientError::Io)?;
        Ok(Client::over(stream, io_timeout))
    }

    /// A client on a connected stream (`io_timeout` bounds each message read; writes are
    /// bounded by the stream's own write timeout).
    fn over(stream: UnixStream, io_timeout: Duration) -> Client {
        Client {
            stream,
            io_timeout,
            inbox: Inbox::new(FIRST_ROOM),
        }
    }

    pub fn send(&mut self, msg: &ClientMsg) -> Result<(), ClientError> {
        Ok(frame::write_frame(&mut self.stream, msg)?)
    }

    /// mfad's next message, within the I/O timeout from now, however it comes in pieces.
    pub fn recv(&mut self) -> Result<ServerMsg, ClientError> {
        let deadline = Instant::now() + self.io_timeout;
        loop {
            if let Some(msg) = self.take_message()? {
                return Ok(msg);
            }
            self.wait_readable(deadline)?;
            self.read_more()?;
        }
    }

    /// The first whole message in the inbox, if one is there.
    fn take_message(&mut self) -> Result<Option<ServerMsg>, ClientError> {
        Ok(self.inbox.take()?)
    }

    /// One read(2) of what has come into the inbox's room. The inbox never holds more than
    /// one message or its first room, whichever is larger: [`Client::take_message`] takes
    /// whole messages out before each read, and the room refuses a header over the limit.
    fn read_more(&mut self) -> Result<(), ClientError> {
        use std::io::Read;
        let room = self.inbox.room()?;
        match self.stream.read(room) {
            // A hang-up, mid-message or between messages.
            Ok(0) => Err(ClientError::Closed),
            Ok(n) => {
                self.inbox.filled(n);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(FrameError::from(e).into()),
        }
    }

    /// Waits in poll(2) until more of mfad's messages (or its hang-up) is there, at the
    /// latest until `deadline`. A thread blocked in read(2) instead would also be woken
    /// each time mfad reads what this client sent (the kernel wakes a stream socket's
    /// sleepers when its send buffer drains, whatever they wait for), to find nothing and
    /// sleep again: a wake-up of this process, and the cost of sending it on mfad's side,
    /// per message. poll's waits are woken only for what they asked.
    fn wait_readable(&self, deadline: Instant) -> Result<(), ClientError> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = PollTimeout::try_from(left.as_millis().saturating_add(1))
                .unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                // Readable, hung up or in error: the read says which.
                Ok(n) if n > 0 => return Ok(()),
                Ok(_) => return Err(ClientError::TimedOut),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(ClientError::Io(e.into())),
            }
        }
    }
}

/// Where a conversation's frames go: mfad's socket ([`Client`]) or, in tests, a daemon
/// running in the same process.
pub trait Transport {
    fn send(&mut self, msg: &ClientMsg) -> Result<(), ClientError>;
    fn recv(&mut self) -> Result<ServerMsg, ClientError>;
}

impl Transport for Client {
    fn send(&mut self, msg: &ClientMsg) -> Result<(), ClientError> {
        Client::send(self, msg)
    }
    fn recv(&mut self) -> Result<ServerMsg, ClientError> {
        Client::recv(self)
    }
}

/// How a client shows the daemon's messages and asks its user.
pub trait Conversation {
    fn info(&mut self, text: &str);
    fn error(&mut self, text: &str);
    /// Returns `None` when the user cannot be asked (no terminal, conversation failed).
    fn prompt(&mut self, text: &str, echo: bool) -> Option<Zeroizing<String>>;
}

/// Cuts an answer that no passcode could be to just over [`MAX_ANSWER`] bytes, so that the
/// daemon sees it, refuses it as too long, and the frame limit is never the reason to fail.
fn bound_answer(answer: Zeroizing<String>) -> Zeroizing<String> {
    if answer.len() <= MAX_ANSWER {
        return answer;
    }
    let mut end = MAX_ANSWER + 1;
    while !answer.is_char_boundary(end) {
        end += 1;
    }
    Zeroizing::new(answer[..end].to_string())
}

/// Runs one whole conversation: says hello with `op`, then relays until the daemon is done.
///
/// Any error after mfad's first real message (not a keep-alive) comes back as
/// [`ClientError::Interrupted`].
pub fn run_conversation(
    client: &mut dyn Transport,
    op: Operation,
    conv: &mut dyn Conversation,
) -> Result<Outcome, ClientError> {
    let mut spoken = false;
    relay(client, op, conv, &mut spoken).map_err(|e| {
        if spoken {
            ClientError::Interrupted(Box::new(e))
        } else {
            e
        }
    })
}

fn relay(
    client: &mut dyn Transport,
    op: Operation,
    conv: &mut dyn Conversation,
    spoken: &mut bool,
) -> Result<Outcome, ClientError> {
    client.send(&ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        op,
    })?;
    let mut waiting_since = Instant::now();
    // An answer mfad could no longer take (it gave up on the prompt and closed): its last
    // words may still wait in the socket, so read them before reporting the failed write.
    let mut unsent: Option<ClientError> = None;
    loop {
        let msg = match (client.recv(), unsent.take()) {
            (Ok(msg), unsent_error) => {
                unsent = unsent_error;
                msg
            }
            (Err(_), Some(unsent_error)) => return Err(unsent_error),
            (Err(e), None) => return Err(e),
        };
        if matches!(msg, ServerMsg::KeepAlive) {
            // Resets the read timeout (each read has its own), but not the overall bound.
            if waiting_since.elapsed() > MAX_WAIT {
                return Err(ClientError::TimedOut);
            }
            continue;
        }
        let first = !*spoken;
        *spoken = true;
        waiting_since = Instant::now();
        match msg {
            ServerMsg::Info { text } => conv.info(&text),
            ServerMsg::Error { text } => conv.error(&text),
            ServerMsg::Prompt { text, echo } => {
                let answer = conv.prompt(&text, echo).map(bound_answer);
                if let Err(e) = client.send(&ClientMsg::Answer { text: answer }) {
                    unsent = Some(e);
                }
                waiting_since = Instant::now();
            }
            ServerMsg::Done { outcome } => return Ok(outcome),
            ServerMsg::Unavailable { reason } => {
                // Only a first message "unavailable" means mfad could not serve at all.
                *spoken = !first;
                return Err(ClientError::Unavailable(reason));
            }
            ServerMsg::KeepAlive => {}
            ServerMsg::Web { .. } => {
                return Err(ClientError::Protocol(
                    "a web reply in a login conversation".into(),
                ));
            }
        }
    }
}

/// One request of the web role ([`Operation::Web`]): says hello with it and returns mfad's
/// one reply. Keep-alives are skipped; each read is bounded by the client's I/O timeout and
/// the whole by [`MAX_WAIT`].
pub fn web_request(
    client: &mut Client,
    request: crate::WebRequest,
) -> Result<crate::WebReply, ClientError> {
    client.send(&ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        op: Operation::Web(request),
    })?;
    let since = Instant::now();
    loop {
        match client.recv()? {
            ServerMsg::KeepAlive if since.elapsed() <= MAX_WAIT => {}
            ServerMsg::KeepAlive => return Err(ClientError::TimedOut),
            ServerMsg::Web { reply } => return Ok(reply),
            ServerMsg::Unavailable { reason } => return Err(ClientError::Unavailable(reason)),
            ServerMsg::Error { text } => return Err(ClientError::Unavailable(text)),
            other => {
                return Err(ClientError::Protocol(format!(
                    "unexpected reply to a web request: {}",
                    match other {
                        ServerMsg::Info { .. } => "info",
                        ServerMsg::Prompt { .. } => "prompt",
                        ServerMsg::Done { .. } => "done",
                        _ => "other",
                    }
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_fail_mode_is_secure_or_safe_exactly() {
        assert_eq!("secure".parse(), Ok(FailMode::Secure));
        assert_eq!("safe".parse(), Ok(FailMode::Safe));
        for bad in ["SAFE", "", "open", "safe "] {
            assert_eq!(
                bad.parse::<FailMode>(),
                Err(BadFailMode(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(FailMode::default(), FailMode::Secure);
    }

    use super::*;
    use crate::frame::write_frame;
    use std::io::Write;

    /// Shows nothing, answers every prompt with "123456".
    struct Quiet;
    impl Conversation for Quiet {
        fn info(&mut self, _: &str) {}
        fn error(&mut self, _: &str) {}
        fn prompt(&mut self, _: &str, _: bool) -> Option<Zeroizing<String>> {
            Some(Zeroizing::new("123456".into()))
        }
    }

    /// Runs a conversation against a peer that reads the hello, then plays `script`.
    fn converse(
        read_timeout: Duration,
        script: impl FnOnce(&mut UnixStream) + Send + 'static,
    ) -> Result<Outcome, ClientError> {
        let (mine, mut theirs) = UnixStream::pair().unwrap();
        mine.set_read_timeout(Some(read_timeout)).unwrap();
        let peer = std::thread::spawn(move || {
            let _: ClientMsg = frame::read_frame(&mut theirs).unwrap();
            script(&mut theirs);
            // Held until the client is done with it.
            let _ = frame::read_frame::<_, ClientMsg>(&mut theirs);
        });
        let mut client = Client::over(mine, read_timeout);
        let result = run_conversation(&mut client, Operation::ListDevices, &mut Quiet);
        drop(client);
        peer.join().unwrap();
        result
    }

    fn send(s: &mut UnixStream, msg: ServerMsg) {
        write_frame(s, &msg).unwrap();
    }

    fn info() -> ServerMsg {
        ServerMsg::Info {
            text: "Two-factor login for alice".into(),
        }
    }

    fn close(s: &mut UnixStream) {
        s.shutdown(std::net::Shutdown::Both).unwrap();
    }

    #[test]
    fn before_mfads_first_message_a_break_leaves_the_fail_mode_to_the_caller() {
        let short = Duration::from_millis(300);
        let cases: Vec<(&str, Result<Outcome, ClientError>)> = vec![
            ("close at once", converse(short, close)),
            (
                "garbage",
                converse(short, |s| s.write_all(b"HTTP/1.1 400").unwrap()),
            ),
            (
                "silence",
                converse(short, |_| std::thread::sleep(Duration::from_millis(600))),
            ),
            (
                "unavailable first",
                converse(short, |s| {
                    send(
                        s,
                        ServerMsg::Unavailable {
                            reason: "db".into(),
                        },
                    )
                }),
            ),
            (
                "keep-alives, then a close",
                converse(short, |s| {
                    send(s, ServerMsg::KeepAlive);
                    close(s)
                }),
            ),
        ];
        for (what, result) in cases {
            let e = result.expect_err(what);
            assert!(!e.mfad_had_spoken(), "{what}: {e}");
        }
    }

    #[test]
    fn after_mfads_first_message_any_break_is_an_interruption() {
        let short = Duration::from_millis(300);
        let cases: Vec<(&str, Result<Outcome, ClientError>)> = vec![
            (
                "close after info",
                converse(short, |s| {
                    send(s, info());
                    close(s)
                }),
            ),
            (
                "close after a prompt",
                converse(short, |s| {
                    send(
                        s,
                        ServerMsg::Prompt {
                            text: "Passcode: ".into(),
                            echo: false,
                        },
                    );
                    let _ = frame::read_frame::<_, ClientMsg>(s);
                    close(s)
                }),
            ),
            (
                "silence after info",
                converse(short, |s| {
                    send(s, info());
                    std::thread::sleep(Duration::from_millis(600))
                }),
            ),
            (
                "garbage after info",
                converse(short, |s| {
                    send(s, info());
                    s.write_all(&[0, 0, 0, 3, b'x', b'y', b'z']).unwrap()
                }),
            ),
            (
                "unavailable after info",
                converse(short, |s| {
                    send(s, info());
                    send(
                        s,
                        ServerMsg::Unavailable {
                            reason: "db".into(),
                        },
                    )
                }),
            ),
        ];
        for (what, result) in cases {
            let e = result.expect_err(what);
            assert!(e.mfad_had_spoken(), "{what}: {e}");
            assert!(matches!(e, ClientError::Interrupted(_)), "{what}: {e:?}");
        }
    }

    /// Answers after mfad has given up on the prompt and closed.
    struct Late(Vec<String>);
    impl Conversation for Late {
        fn info(&mut self, _: &str) {}
        fn error(&mut self, text: &str) {
            self.0.push(text.to_string());
        }
        fn prompt(&mut self, _: &str, _: bool) -> Option<Zeroizing<String>> {
            std::thread::sleep(Duration::from_millis(300));
            Some(Zeroizing::new("123456".into()))
        }
    }

    #[test]
    fn a_late_answer_still_gets_mfads_refusal() {
        let (mine, mut theirs) = UnixStream::pair().unwrap();
        mine.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let peer = std::thread::spawn(move || {
            let _: ClientMsg = frame::read_frame(&mut theirs).unwrap();
            send(
                &mut theirs,
                ServerMsg::Prompt {
                    text: "Passcode: ".into(),
                    echo: false,
                },
            );
            send(
                &mut theirs,
                ServerMsg::Error {
                    text: "No answer within 5 seconds; login refused.".into(),
                },
            );
            send(
                &mut theirs,
                ServerMsg::Done {
                    outcome: Outcome::Deny,
                },
            );
            drop(theirs);
        });
        let mut client = Client::over(mine, Duration::from_secs(2));
        let mut late = Late(Vec::new());
        let result = run_conversation(&mut client, Operation::ListDevices, &mut late);
        peer.join().unwrap();
        assert_eq!(result.unwrap(), Outcome::Deny);
        assert_eq!(late.0, vec!["No answer within 5 seconds; login refused."]);
    }

    #[test]
    fn keep_alives_keep_a_slow_conversation_within_the_read_timeout() {
        let result = converse(Duration::from_millis(400), |s| {
            send(s, info());
            for _ in 0..6 {
                std::thread::sleep(Duration::from_millis(200));
                send(s, ServerMsg::KeepAlive);
            }
            send(
                s,
                ServerMsg::Done {
                    outcome: Outcome::Allow,
                },
            );
        });
        assert_eq!(result.unwrap(), Outcome::Allow);
    }

    /// Writes `bytes` a few at a time, `pause` apart, until they are all sent or the
    /// client has hung up.
    fn trickle(s: &mut UnixStream, bytes: &[u8], pause: Duration) {
        for piece in bytes.chunks(3) {
            if s.write_all(piece).is_err() {
                return;
            }
            std::thread::sleep(pause);
        }
    }

    #[test]
    fn messages_sharing_a_read_or_split_across_reads_are_each_read_whole() {
        let result = converse(Duration::from_secs(2), |s| {
            // An info and a prompt in one write, as mfad writes them.
            let mut pair = frame::encode(&info()).unwrap();
            frame::encode_into(
                &ServerMsg::Prompt {
                    text: "Passcode: ".into(),
                    echo: false,
                },
                &mut pair,
            )
            .unwrap();
            s.write_all(&pair).unwrap();
            let answer: ClientMsg = frame::read_frame(s).unwrap();
            assert!(matches!(answer, ClientMsg::Answer { text: Some(t) } if *t == "123456"));
            // The verdict in pieces, the header itself split.
            let done = frame::encode(&ServerMsg::Done {
                outcome: Outcome::Allow,
            })
            .unwrap();
            trickle(s, &done, Duration::from_millis(5));
        });
        assert_eq!(result.unwrap(), Outcome::Allow);
    }

    #[test]
    fn a_message_trickling_in_must_all_come_within_the_read_timeout() {
        // Each piece comes well within the timeout, the whole message does not: a reader
        // whose timeout starts again at each piece would wait as long as mfad trickles.
        let started = Instant::now();
        let result = converse(Duration::from_millis(300), |s| {
            send(s, info());
            let done = frame::encode(&ServerMsg::Done {
                outcome: Outcome::Allow,
            })
            .unwrap();
            trickle(s, &done, Duration::from_millis(100));
        });
        let e = result.expect_err("a verdict that took longer than the read timeout");
        assert!(
            matches!(&e, ClientError::Interrupted(inner) if matches!(**inner, ClientError::TimedOut)),
            "{e:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    /// A listener whose queue of new connections is full (it never accepts), and the
    /// connections that fill it.
    fn full_listener(path: &Path) -> (Socket, Vec<Socket>) {
        let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        listener.bind(&SockAddr::unix(path).unwrap()).unwrap();
        listener.listen(0).unwrap();
        let mut queued = Vec::new();
        loop {
            let s = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            match s.connect(&SockAddr::unix(path).unwrap()) {
                Ok(()) => queued.push(s),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(queued.len() < 64, "the queue never filled");
        }
        (listener, queued)
    }

    #[test]
    fn a_connect_waits_for_room_in_mfads_queue_at_most_the_connect_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mfad.sock");
        let (listener, _queued) = full_listener(&path);
        let started = Instant::now();
        let e = Client::connect(&path, Duration::from_millis(300), Duration::from_secs(5))
            .err()
            .expect("a connect to a full queue");
        let waited = started.elapsed();
        assert!(
            matches!(&e, ClientError::Connect { source, .. } if source.kind() == std::io::ErrorKind::TimedOut),
            "{e:?}"
        );
        assert!(e.to_string().contains("stayed full for 0.3 s"), "{e}");
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(!e.mfad_had_spoken());

        // Room made within the timeout: the connect goes through.
        let accepter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let _first = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(500));
        });
        let client = Client::connect(&path, Duration::from_secs(3), Duration::from_secs(5));
        // Whoever serves the socket here is this test, run as root in CI; as another user
        // the connection is made and then refused as not mfad's.
        match client {
            Ok(_) => {}
            Err(ClientError::NotRoot { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
        accepter.join().unwrap();
    }

    #[test]
    fn long_answers_are_cut_just_past_the_limit() {
        let a = bound_answer(Zeroizing::new("7".repeat(100_000)));
        assert_eq!(a.len(), MAX_ANSWER + 1);
        let b = bound_answer(Zeroizing::new("é".repeat(MAX_ANSWER)));
        assert!(b.len() > MAX_ANSWER && b.len() <= MAX_ANSWER + 2);
        let c = bound_answer(Zeroizing::new("123456".into()));
        assert_eq!(c.as_str(), "123456");
    }
}
