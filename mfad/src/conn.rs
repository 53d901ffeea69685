//! One client connection: framed messages with a timeout on every read and write, and the
//! caller's uid as the kernel reports it (SO_PEERCRED, read once at accept).
//!
//! Two promises to clients live here. While mfad itself is slow (a push pending, a provider,
//! the database), a keep-alive goes out every [`KEEPALIVE_INTERVAL`], so the client's read
//! timeout never expires under a live mfad. And once anything has been said, the
//! conversation ends with a verdict: [`Conn::unavailable`] and [`Conn::refuse_after_break`]
//! turn into an explicit refusal, never a silent close a client could read as "mfad down".

use mfa_proto::frame::{self, FrameError, Inbox};
use mfa_proto::{ClientMsg, KEEPALIVE_INTERVAL_SECS, Outcome, ServerMsg};
use nix::sys::socket::{MsgFlags, send};
use std::future::Future;
use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::{Instant, timeout};
use zeroize::Zeroizing;

/// How long root may take to say hello, and any write may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the last words of a broken conversation (a refusal) may take to write.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

/// How often mfad tells a waiting client it is alive (see [`KEEPALIVE_INTERVAL_SECS`]).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(KEEPALIVE_INTERVAL_SECS);

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("client did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("client sent a bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("client broke the protocol: {0}")]
    Protocol(&'static str),
}

/// The timeouts of one connection, which depend on who is calling.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For the first message.
    pub hello: Duration,
    /// For each answer to a prompt.
    pub answer: Duration,
    /// How often to send a keep-alive while mfad is the one who is slow
    /// ([`KEEPALIVE_INTERVAL`] but in tests).
    pub keepalive: Duration,
}

/// What the keep-alives need to know about the conversation.
struct Activity {
    /// mfad is waiting for the client (an answer): the client is busy with its user.
    reading: AtomicBool,
    /// When mfad last wrote anything.
    last_write: Mutex<Instant>,
}

impl Activity {
    fn touch(&self) {
        if let Ok(mut t) = self.last_write.lock() {
            *t = Instant::now();
        }
    }

    fn quiet_for(&self) -> Duration {
        self.last_write
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }
}

/// A future a [`Dialogue`] returns (boxed: conversations hold the dialogue as a trait
/// object, so the same code runs over a socket and over a script).
pub type DialogueFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ConnError>> + Send + 'a>>;

/// A conversation's keep-alives ([`Dialogue::keepalive`]): a future that never ends, polled
/// beside the conversation in its own task and dropped with it.
pub type KeepAlive = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The channel a conversation runs over: whatever carries mfad's messages to the user and
/// the user's answers back. The client's socket in production ([`SocketDialogue`]); an
/// in-memory script in tests ([`ScriptDialogue`]), so that login, device and admin
/// conversations run in-process, without root, a socket or real waits.
pub trait Dialogue: Send {
    /// Writes these messages, in order, within `limit` (a socket: in one write, so the
    /// last words and the verdict reach the client together).
    fn write<'a>(&'a mut self, msgs: &'a [ServerMsg], limit: Duration) -> DialogueFuture<'a, ()>;
    /// Reads the client's next message, within `limit`.
    fn read(&mut self, limit: Duration) -> DialogueFuture<'_, ClientMsg>;
    /// While mfad itself is slow, tells the client every `every` that it is alive, for as
    /// long as the future is polled (None: this dialogue has no use for keep-alives).
    fn keepalive(&self, _every: Duration) -> Option<KeepAlive> {
        None
    }
}

/// The client's socket: framed messages with a timeout on every read and write, and
/// keep-alives while mfad waits.
///
/// The runtime watches the socket for reading only. Watched for writing too (as a tokio
/// `UnixStream` is), it would wake mfad each time the client reads what mfad sent (the
/// kernel reports the socket writable again): at one login at a time, about a third of
/// mfad's wake-ups, none of them with anything to do. A write goes straight to the socket;
/// in the rare case that the client's buffer is full (a client that stopped reading) it is
/// tried again every [`WRITE_RETRY`] until its time is up.
///
/// Nor is the socket watched before a read finds nothing to read: a conversation that
/// never waits for its client (the hello and request there at accept, the verdict straight
/// back: a policy decision) never enters the runtime's watch list, which saves adding it and
/// taking it out again (two `epoll_ctl`) and the runtime's record of it.
pub struct SocketDialogue {
    socket: Arc<UnixStream>,
    /// The socket watched for reading, from the first read that had to wait.
    watched: Option<AsyncFd<Arc<UnixStream>>>,
    /// One writer at a time: the conversation and its keep-alives.
    writing: Arc<tokio::sync::Mutex<()>>,
    activity: Arc<Activity>,
    /// What the client sent beyond the frames read so far.
    received: Inbox,
}

/// How often a write to a full socket is tried again.
const WRITE_RETRY: Duration = Duration::from_millis(10);

impl SocketDialogue {
    /// The conversation over `stream` (non-blocking), watched for reading on the current
    /// runtime once a read must wait.
    pub fn new(stream: UnixStream) -> std::io::Result<Self> {
        Ok(SocketDialogue {
            socket: Arc::new(stream),
            watched: None,
            writing: Arc::new(tokio::sync::Mutex::new(())),
            activity: Arc::new(Activity {
                reading: AtomicBool::new(false),
                last_write: Mutex::new(Instant::now()),
            }),
            received: Inbox::new(RECEIVE_ROOM),
        })
    }
}

/// `io` watched for reading (only) on the current runtime.
pub fn watch_reading<T>(io: T) -> std::io::Result<AsyncFd<T>>
where
    T: std::os::fd::AsFd + std::os::fd::AsRawFd,
{
    // SAFETY: `T: AsFd` holds its descriptor open for as long as it lives (an owned socket,
    // or a borrow that cannot outlive the owner), and the `AsyncFd` owns `io` until it is
    // dropped and never replaces it: the descriptor stays open and the same throughout.
    Ok(unsafe { AsyncFd::register_with_interest(io, Interest::READABLE) }?)
}

/// Reads what the socket has into `buf` (at least one byte). Reads first and waits only
/// when nothing is there: what the client sent is often there already (its hello, when
/// mfad accepts). The socket is watched (`watched`) from the first time it must wait.
async fn read_some(
    socket: &Arc<UnixStream>,
    watched: &mut Option<AsyncFd<Arc<UnixStream>>>,
    buf: &mut [u8],
) -> Result<usize, FrameError> {
    let mut ready: Option<tokio::io::unix::AsyncFdReadyGuard<'_, Arc<UnixStream>>> = None;
    loop {
        let read = match ready.take() {
            None => socket.as_ref().read(buf),
            Some(mut guard) => match guard.try_io(|s| s.get_ref().as_ref().read(buf)) {
                Ok(read) => read,
                Err(_would_block) => Err(ErrorKind::WouldBlock.into()),
            },
        };
        match read {
            Ok(0) => return Err(FrameError::Closed),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // Watched from now on. Added to the watch list with data already there,
                // the socket is reported readable at once: nothing arriving meanwhile is
                // missed.
                let watch = match watched {
                    Some(w) => &*w,
                    None => &*watched.insert(watch_reading(Arc::clone(socket))?),
                };
                ready = Some(watch.readable().await?);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Room a conversation's receive buffer starts with: a hello or an answer fits whole, so
/// one read takes a frame's header and body together (two system calls a frame otherwise).
const RECEIVE_ROOM: usize = 1024;

/// Sends what of `bytes` the socket takes now: never waits, never raises SIGPIPE.
pub(crate) fn send_now(stream: &UnixStream, bytes: &[u8]) -> nix::Result<usize> {
    send(
        std::os::fd::AsRawFd::as_raw_fd(stream),
        bytes,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    )
}

/// Writes all of `bytes` within `limit` (see [`SocketDialogue`]).
async fn write_all(
    socket: &UnixStream,
    writing: &tokio::sync::Mutex<()>,
    bytes: &[u8],
    limit: Duration,
) -> Result<(), ConnError> {
    let deadline = Instant::now() + limit;
    let _turn = timeout(limit, writing.lock())
        .await
        .map_err(|_| ConnError::TimedOut(limit))?;
    let mut sent = 0;
    while sent < bytes.len() {
        match send_now(socket, &bytes[sent..]) {
            Ok(0) => return Err(FrameError::Closed.into()),
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                if Instant::now() >= deadline {
                    return Err(ConnError::TimedOut(limit));
                }
                #[allow(clippy::disallowed_methods)] // a full socket's retry: I/O timing
                tokio::time::sleep(WRITE_RETRY).await;
            }
            Err(e) => return Err(FrameError::from(std::io::Error::from(e)).into()),
        }
    }
    Ok(())
}

impl Dialogue for SocketDialogue {
    fn write<'a>(&'a mut self, msgs: &'a [ServerMsg], limit: Duration) -> DialogueFuture<'a, ()> {
        Box::pin(async move {
            let mut bytes = Zeroizing::new(Vec::with_capacity(frame::FIRST_ROOM));
            for msg in msgs {
                frame::encode_into(msg, &mut bytes)?;
            }
            write_all(&self.socket, &self.writing, &bytes, limit).await?;
            self.activity.touch();
            Ok(())
        })
    }

    fn read(&mut self, limit: Duration) -> DialogueFuture<'_, ClientMsg> {
        Box::pin(async move {
            let (socket, watched, received) = (&self.socket, &mut self.watched, &mut self.received);
            let read = async {
                loop {
                    if let Some(msg) = received.take()? {
                        return Ok::<_, ConnError>(msg);
                    }
                    let n = read_some(socket, watched, received.room()?).await?;
                    received.filled(n);
                }
            };
            self.activity.reading.store(true, Ordering::SeqCst);
            let result = timeout(limit, read).await;
            self.activity.reading.store(false, Ordering::SeqCst);
            self.activity.touch();
            result.map_err(|_| ConnError::TimedOut(limit))?
        })
    }

    /// Polled in the conversation's own task (not a task of its own, which each login
    /// would spawn, cancel, and wake the runtime's other worker for twice: once to start
    /// it, once to drop it and close the socket there). Its waits are the runtime's timers,
    /// so it runs whenever the conversation awaits (a push, a provider, the client); a
    /// conversation that finishes at once never starts its timer.
    fn keepalive(&self, every: Duration) -> Option<KeepAlive> {
        let socket = Arc::clone(&self.socket);
        let writing = Arc::clone(&self.writing);
        let activity = Arc::clone(&self.activity);
        Some(Box::pin(async move {
            if let Ok(bytes) = frame::encode(&ServerMsg::KeepAlive) {
                let tick = every / 5;
                loop {
                    #[allow(clippy::disallowed_methods)] // the keep-alive tick: I/O timing
                    tokio::time::sleep(tick).await;
                    if activity.reading.load(Ordering::SeqCst) || activity.quiet_for() < every {
                        continue;
                    }
                    match write_all(&socket, &writing, &bytes, IO_TIMEOUT).await {
                        Ok(()) => activity.touch(),
                        // The client is gone or stuck: the conversation finds out itself.
                        Err(_) => break,
                    }
                }
            }
            std::future::pending::<()>().await
        }))
    }
}

/// A scripted user, for tests: answers prompts from a list and keeps everything mfad said.
/// A prompt with no answer left breaks the conversation as a client that hung up would.
#[derive(Clone, Default)]
pub struct ScriptDialogue {
    inner: Arc<Mutex<Script>>,
}

#[derive(Default)]
struct Script {
    answers: std::collections::VecDeque<Option<String>>,
    said: Vec<ServerMsg>,
}

impl ScriptDialogue {
    /// A user who gives these answers, in order.
    pub fn answering(answers: &[&str]) -> Self {
        let d = ScriptDialogue::default();
        if let Ok(mut s) = d.inner.lock() {
            s.answers = answers.iter().map(|a| Some(a.to_string())).collect();
        }
        d
    }

    /// Everything mfad has said so far, keep-alives aside.
    pub fn said(&self) -> Vec<ServerMsg> {
        self.inner
            .lock()
            .map(|s| s.said.clone())
            .unwrap_or_default()
    }

    /// How many answers are left unused.
    pub fn unanswered(&self) -> usize {
        self.inner
            .lock()
            .map(|s| s.answers.len())
            .unwrap_or_default()
    }
}

impl Dialogue for ScriptDialogue {
    fn write<'a>(&'a mut self, msgs: &'a [ServerMsg], _limit: Duration) -> DialogueFuture<'a, ()> {
        if let Ok(mut s) = self.inner.lock() {
            s.said.extend(
                msgs.iter()
                    .filter(|m| !matches!(m, ServerMsg::KeepAlive))
                    .cloned(),
            );
        }
        Box::pin(async { Ok(()) })
    }

    fn read(&mut self, _limit: Duration) -> DialogueFuture<'_, ClientMsg> {
        let next = self
            .inner
            .lock()
            .ok()
            .and_then(|mut s| s.answers.pop_front());
        Box::pin(async move {
            match next {
                Some(text) => Ok(ClientMsg::Answer {
                    text: text.map(Zeroizing::new),
                }),
                None => Err(ConnError::Frame(FrameError::Closed)),
            }
        })
    }
}

/// One conversation with a client: the caller's uid, the timeouts that apply to it, and
/// the promise that once anything was said, it ends with a verdict.
pub struct Conn {
    wire: Box<dyn Dialogue>,
    uid: u32,
    timeouts: Timeouts,
    /// A message other than a keep-alive has been sent: from now on the client counts on a
    /// verdict, and a break must be a refusal.
    spoken: bool,
    /// The verdict given (`allowed`, `refused`, `unavailable`), for the login history.
    verdict: Option<&'static str>,
    /// Said, to go out with the next message in the same write ([`Conn::info_with_next`]).
    held: Vec<ServerMsg>,
    /// Counts this conversation as at work (see [`crate::blocking::Open`]): from its
    /// start to its verdict, except while it waits for the user (an answer, a phone).
    open: Option<crate::blocking::Open>,
}

impl Conn {
    /// A conversation over the client's socket; `uid` is the caller's, from SO_PEERCRED at
    /// accept.
    /// `stream` must be non-blocking; an error when the runtime cannot watch it.
    pub fn new(stream: UnixStream, uid: u32, timeouts: Timeouts) -> std::io::Result<Self> {
        Ok(Conn::over(
            Box::new(SocketDialogue::new(stream)?),
            uid,
            timeouts,
        ))
    }

    /// A conversation over any dialogue (tests: a [`ScriptDialogue`]) with caller `uid`.
    pub fn over(wire: Box<dyn Dialogue>, uid: u32, timeouts: Timeouts) -> Self {
        Conn {
            wire,
            uid,
            timeouts,
            spoken: false,
            verdict: None,
            held: Vec::new(),
            open: Some(crate::blocking::Open::new()),
        }
    }

    /// From now on this conversation waits for the user (who may take seconds): it no
    /// longer counts as at work, so another conversation's blocking work may run on its
    /// own worker meanwhile ([`crate::blocking`]).
    pub fn waiting_for_user(&mut self) {
        self.open = None;
    }

    /// The user's answer is in: at work again, until the verdict.
    pub fn at_work(&mut self) {
        if self.verdict.is_none() && self.open.is_none() {
            self.open = Some(crate::blocking::Open::new());
        }
    }

    /// Whether this conversation counts as at work now.
    pub fn counts_as_at_work(&self) -> bool {
        self.open.is_some()
    }

    /// The uid of the process at the other end, from the kernel.
    pub fn peer_uid(&self) -> std::io::Result<u32> {
        Ok(self.uid)
    }

    /// The caller's uid (as [`Conn::peer_uid`], which cannot fail once connected).
    pub(crate) fn uid(&self) -> u32 {
        self.uid
    }

    /// The verdict the client was given, if any.
    pub fn verdict(&self) -> Option<&'static str> {
        self.verdict
    }

    /// Whether the client has been sent anything but keep-alives.
    pub fn has_spoken(&self) -> bool {
        self.spoken
    }

    /// While polled, and while mfad is the one who is slow, sends a keep-alive every
    /// [`KEEPALIVE_INTERVAL`]: to be polled beside the conversation, which it never ends.
    /// Only for clients of protocol version 2 or later.
    pub fn keepalive(&self) -> Option<KeepAlive> {
        self.wire.keepalive(self.timeouts.keepalive)
    }

    pub async fn read_hello(&mut self) -> Result<ClientMsg, ConnError> {
        self.wire.read(self.timeouts.hello).await
    }

    pub async fn send(&mut self, msg: &ServerMsg) -> Result<(), ConnError> {
        self.send_all(std::slice::from_ref(msg)).await
    }

    /// Sends these messages together (one write on a socket), after what was held.
    async fn send_all(&mut self, msgs: &[ServerMsg]) -> Result<(), ConnError> {
        if msgs.iter().any(|m| !matches!(m, ServerMsg::KeepAlive)) {
            self.spoken = true;
        }
        if self.held.is_empty() {
            return self.wire.write(msgs, IO_TIMEOUT).await;
        }
        let mut all = std::mem::take(&mut self.held);
        all.extend_from_slice(msgs);
        self.wire.write(&all, IO_TIMEOUT).await
    }

    /// Says `text` together with the next message (a prompt that follows at once, the
    /// verdict): one write, one wake-up of the client. Sent before any read, so it is never
    /// held while mfad waits for the user.
    pub fn info_with_next(&mut self, text: impl Into<String>) {
        self.spoken = true;
        self.held.push(ServerMsg::Info { text: text.into() });
    }

    pub async fn info(&mut self, text: impl Into<String>) -> Result<(), ConnError> {
        self.send(&ServerMsg::Info { text: text.into() }).await
    }

    /// Shows text that holds a secret (a new TOTP secret, bypass codes), then wipes it.
    pub async fn secret_info(&mut self, text: Zeroizing<String>) -> Result<(), ConnError> {
        let mut msg = ServerMsg::Info {
            text: text.as_str().to_owned(),
        };
        let sent = self.send(&msg).await;
        if let ServerMsg::Info { text } = &mut msg {
            zeroize::Zeroize::zeroize(text);
        }
        sent
    }

    pub async fn error(&mut self, text: impl Into<String>) -> Result<(), ConnError> {
        self.send(&ServerMsg::Error { text: text.into() }).await
    }

    /// The verdict (after anything held: one write).
    pub async fn done(&mut self, outcome: Outcome) -> Result<(), ConnError> {
        self.verdict = Some(match outcome {
            Outcome::Allow => "allowed",
            Outcome::Deny => "refused",
            Outcome::Ignore => "ignored",
        });
        // Decided: what is left (the write, the history's row) waits for no store. A client
        // that connects again at once finds this conversation no longer counted.
        self.open = None;
        self.send(&ServerMsg::Done { outcome }).await
    }

    /// mfad cannot serve this conversation. Before anything was said, the client is told
    /// "unavailable" and its fail mode decides; after, the conversation is refused, as a
    /// client that has shown a prompt must get a verdict.
    pub async fn unavailable(&mut self, reason: impl Into<String>) -> Result<(), ConnError> {
        let reason = reason.into();
        if self.spoken {
            let text = format!(
                "Two-factor authentication is unavailable right now ({reason}); login refused."
            );
            self.held.push(ServerMsg::Error { text });
            return self.done(Outcome::Deny).await;
        }
        self.verdict = Some("unavailable");
        self.send(&ServerMsg::Unavailable { reason }).await
    }

    /// The last words after a conversation broke on `cause` (no answer in time, a bad
    /// frame): an explicit refusal, written within a short bound, when anything was said.
    pub async fn refuse_after_break(&mut self, cause: &ConnError) {
        if !self.spoken {
            return;
        }
        self.verdict = Some("refused");
        let text = match cause {
            ConnError::TimedOut(limit) => format!(
                "No answer within {} seconds; login refused.",
                limit.as_secs()
            ),
            ConnError::Frame(_) | ConnError::Protocol(_) => {
                "The client broke the conversation; login refused.".to_string()
            }
        };
        let mut farewell = std::mem::take(&mut self.held);
        farewell.extend([
            ServerMsg::Error { text },
            ServerMsg::Done {
                outcome: Outcome::Deny,
            },
        ]);
        let _ = self.wire.write(&farewell, FAREWELL_TIMEOUT).await;
    }

    /// Asks the user; `None` when the client could not ask.
    pub async fn prompt(
        &mut self,
        text: impl Into<String>,
        echo: bool,
    ) -> Result<Option<Zeroizing<String>>, ConnError> {
        self.send(&ServerMsg::Prompt {
            text: text.into(),
            echo,
        })
        .await?;
        self.answer().await
    }

    /// Reads the answer to a prompt already sent, waiting at most the answer timeout.
    pub async fn answer(&mut self) -> Result<Option<Zeroizing<String>>, ConnError> {
        if !self.held.is_empty() {
            self.send_all(&[]).await?;
        }
        self.waiting_for_user();
        let read = self.wire.read(self.timeouts.answer).await;
        self.at_work();
        match read? {
            ClientMsg::Answer { text } => Ok(text),
            ClientMsg::Hello { .. } => {
                Err(ConnError::Protocol("a second hello instead of an answer"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mfa_proto::frame::{read_frame, write_frame};

    const EVERY: Duration = Duration::from_millis(200);

    fn pair() -> (Conn, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let timeouts = Timeouts {
            hello: IO_TIMEOUT,
            answer: Duration::from_secs(5),
            keepalive: EVERY,
        };
        let conn = Conn::new(ours, 0, timeouts).unwrap();
        (conn, theirs)
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_costs_a_write_its_time_limit_then_an_error() {
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut wire = SocketDialogue::new(ours).unwrap();
        let big = [ServerMsg::Info {
            text: "x".repeat(60_000),
        }];
        let limit = Duration::from_millis(300);
        let mut written = 0;
        let error = loop {
            match wire.write(&big, limit).await {
                Ok(()) => written += 1,
                Err(e) => break e,
            }
            assert!(written < 1000, "the socket never filled");
        };
        assert!(
            matches!(error, ConnError::TimedOut(l) if l == limit),
            "{error}"
        );
        // What was written arrived whole, in order.
        theirs.set_nonblocking(true).unwrap();
        for _ in 0..written {
            let msg: ServerMsg = read_frame(&mut theirs).unwrap();
            assert_eq!(msg, big[0]);
        }
    }

    #[tokio::test]
    async fn a_frame_that_arrives_in_pieces_is_read_whole() {
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut wire = SocketDialogue::new(ours).unwrap();
        let bytes = frame::encode(&ClientMsg::Answer {
            text: Some(Zeroizing::new("123456".into())),
        })
        .unwrap();
        let sender = std::thread::spawn(move || {
            for piece in bytes.chunks(3) {
                std::io::Write::write_all(&mut theirs, piece).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            theirs
        });
        let got = wire.read(Duration::from_secs(5)).await.unwrap();
        assert!(
            matches!(got, ClientMsg::Answer { text: Some(ref t) } if t.as_str() == "123456"),
            "{got:?}"
        );
        drop(sender.join().unwrap());
        // Then the client hangs up: the next read says so.
        let closed = wire.read(Duration::from_secs(5)).await.unwrap_err();
        assert!(
            matches!(closed, ConnError::Frame(FrameError::Closed)),
            "{closed}"
        );
    }

    #[tokio::test]
    async fn frames_sent_together_are_read_one_by_one_and_a_large_one_whole() {
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut wire = SocketDialogue::new(ours).unwrap();
        let answer = |code: String| ClientMsg::Answer {
            text: Some(Zeroizing::new(code)),
        };
        // Three frames in one write (a large one in the middle, many times the buffer's
        // first room), then one more after mfad has read them.
        let large = "7".repeat(20 * RECEIVE_ROOM);
        let mut bytes = Zeroizing::new(Vec::new());
        for code in ["111111".to_string(), large.clone(), "222222".to_string()] {
            frame::encode_into(&answer(code), &mut bytes).unwrap();
        }
        std::io::Write::write_all(&mut theirs, &bytes).unwrap();
        for want in ["111111", large.as_str(), "222222"] {
            let got = wire.read(Duration::from_secs(5)).await.unwrap();
            assert!(
                matches!(&got, ClientMsg::Answer { text: Some(t) } if t.as_str() == want),
                "{got:?}"
            );
        }
        assert_eq!(wire.received.buffer_len(), 0, "nothing left, nothing kept");
        write_frame(&mut theirs, &answer("333333".into())).unwrap();
        let got = wire.read(Duration::from_secs(5)).await.unwrap();
        assert!(
            matches!(&got, ClientMsg::Answer { text: Some(t) } if t.as_str() == "333333"),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_header_over_the_limit_or_of_nothing_is_refused_before_its_body() {
        for header in [((mfa_proto::MAX_FRAME + 1) as u32).to_be_bytes(), [0; 4]] {
            let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            ours.set_nonblocking(true).unwrap();
            let mut wire = SocketDialogue::new(ours).unwrap();
            std::io::Write::write_all(&mut theirs, &header).unwrap();
            let e = wire.read(Duration::from_secs(5)).await.unwrap_err();
            assert!(
                matches!(
                    e,
                    ConnError::Frame(FrameError::TooLarge(_) | FrameError::Empty)
                ),
                "{e}"
            );
            assert!(
                matches!(wire.received.buffer_len(), 0 | RECEIVE_ROOM),
                "no room made for the announced body"
            );
        }
    }

    #[tokio::test]
    async fn the_socket_is_watched_only_once_a_read_must_wait() {
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut wire = SocketDialogue::new(ours).unwrap();
        let answer = |code: &str| ClientMsg::Answer {
            text: Some(Zeroizing::new(code.into())),
        };
        // What the client sent before mfad read is read without watching the socket (a
        // policy decision's whole conversation), and the reply goes out as ever.
        write_frame(&mut theirs, &answer("111111")).unwrap();
        let got = wire.read(Duration::from_secs(5)).await.unwrap();
        assert!(matches!(got, ClientMsg::Answer { text: Some(ref t) } if t.as_str() == "111111"));
        assert!(wire.watched.is_none());
        wire.write(
            &[ServerMsg::Done {
                outcome: Outcome::Allow,
            }],
            IO_TIMEOUT,
        )
        .await
        .unwrap();
        // A read that finds nothing waits, watched, for what comes later.
        let typist = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            write_frame(&mut theirs, &answer("222222")).unwrap();
            theirs
        });
        let got = wire.read(Duration::from_secs(5)).await.unwrap();
        assert!(matches!(got, ClientMsg::Answer { text: Some(ref t) } if t.as_str() == "222222"));
        assert!(wire.watched.is_some());
        let mut theirs = typist.join().unwrap();
        assert_eq!(
            read_frame::<_, ServerMsg>(&mut theirs).unwrap(),
            ServerMsg::Done {
                outcome: Outcome::Allow
            }
        );
    }

    /// Every frame the client has been sent so far.
    fn received(client: &mut std::os::unix::net::UnixStream) -> Vec<ServerMsg> {
        client.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        while let Ok(msg) = read_frame::<_, ServerMsg>(client) {
            got.push(msg);
        }
        client.set_nonblocking(false).unwrap();
        got
    }

    #[tokio::test]
    async fn a_conversation_counts_as_at_work_except_while_the_user_is_asked_and_after_its_verdict()
    {
        let (mut conn, mut client) = pair();
        assert!(conn.counts_as_at_work());
        let asking = tokio::spawn(async move {
            let answer = conn.prompt("Passcode: ", false).await;
            (conn, answer)
        });
        let mut client = tokio::task::spawn_blocking(move || {
            let _prompt: ServerMsg = read_frame(&mut client).unwrap();
            client
        })
        .await
        .unwrap();
        write_frame(
            &mut client,
            &mfa_proto::ClientMsg::Answer {
                text: Some(String::from("123456").into()),
            },
        )
        .unwrap();
        let (mut conn, answer) = asking.await.unwrap();
        assert_eq!(answer.unwrap().unwrap().as_str(), "123456");
        assert!(
            conn.counts_as_at_work(),
            "at work again once the answer is in"
        );
        conn.waiting_for_user();
        assert!(!conn.counts_as_at_work());
        conn.at_work();
        assert!(conn.counts_as_at_work());
        conn.done(Outcome::Deny).await.unwrap();
        assert!(!conn.counts_as_at_work(), "decided");
        conn.at_work();
        assert!(
            !conn.counts_as_at_work(),
            "nothing counts after the verdict"
        );
    }

    #[tokio::test]
    async fn the_last_words_and_the_verdict_reach_the_client_in_one_write() {
        let (mut conn, mut client) = pair();
        let last = ServerMsg::Info {
            text: "Success. Logging you in...".into(),
        };
        conn.info_with_next("Success. Logging you in...");
        conn.done(Outcome::Allow).await.unwrap();
        // One read takes both frames: pam_mfa wakes once for them.
        let mut buf = vec![0u8; 4096];
        let n = std::io::Read::read(&mut client, &mut buf).unwrap();
        let mut bytes = &buf[..n];
        let first: ServerMsg = read_frame(&mut bytes).unwrap();
        let second: ServerMsg = read_frame(&mut bytes).unwrap();
        assert!(bytes.is_empty());
        assert_eq!(first, last);
        assert_eq!(
            second,
            ServerMsg::Done {
                outcome: Outcome::Allow
            }
        );
        assert_eq!(conn.verdict(), Some("allowed"));
    }

    #[tokio::test]
    async fn a_menu_and_its_prompt_go_out_in_one_write_and_a_break_still_says_both() {
        let (mut conn, mut client) = pair();
        conn.info_with_next("Two-factor login for alice\n 1. Push");
        assert!(conn.has_spoken());
        let asking = tokio::spawn(async move {
            let answer = conn.prompt("Passcode or option (1-1): ", true).await;
            (conn, answer)
        });
        let mut buf = vec![0u8; 4096];
        let n = tokio::task::spawn_blocking(move || {
            let n = std::io::Read::read(&mut client, &mut buf).unwrap();
            (client, buf, n)
        });
        let (mut client, buf, n) = n.await.unwrap();
        let mut bytes = &buf[..n];
        assert!(matches!(
            read_frame(&mut bytes).unwrap(),
            ServerMsg::Info { .. }
        ));
        assert!(matches!(
            read_frame(&mut bytes).unwrap(),
            ServerMsg::Prompt { .. }
        ));
        assert!(bytes.is_empty(), "both frames in one read");
        write_frame(&mut client, &mfa_proto::ClientMsg::Answer { text: None }).unwrap();
        let (mut conn, answer) = asking.await.unwrap();
        assert_eq!(answer.unwrap(), None);

        // Held, then the conversation breaks before anything else is sent: the client still
        // gets what was said, then the refusal.
        conn.info_with_next("Pushing a login request...");
        conn.refuse_after_break(&ConnError::TimedOut(Duration::from_secs(1)))
            .await;
        let got = received(&mut client);
        assert_eq!(
            got,
            vec![
                ServerMsg::Info {
                    text: "Pushing a login request...".into()
                },
                ServerMsg::Error {
                    text: "No answer within 1 seconds; login refused.".into()
                },
                ServerMsg::Done {
                    outcome: Outcome::Deny
                },
            ]
        );
    }

    #[tokio::test]
    async fn keep_alives_flow_while_mfad_waits_but_not_while_the_user_is_asked() {
        let (mut conn, mut client) = pair();
        let keepalives = tokio::spawn(conn.keepalive().unwrap());
        conn.info("Pushed a login request to your device...")
            .await
            .unwrap();
        // mfad waits (a push pending): about one keep-alive per interval.
        #[allow(clippy::disallowed_methods)] // the test's own pacing, in real time
        tokio::time::sleep(EVERY * 5).await;
        let got = received(&mut client);
        let alive = got.iter().filter(|m| **m == ServerMsg::KeepAlive).count();
        assert_eq!(
            got[0],
            ServerMsg::Info {
                text: "Pushed a login request to your device...".into()
            }
        );
        assert!((3..=6).contains(&alive), "{got:?}");

        // The user is at the prompt: nothing is sent while mfad waits for the answer.
        conn.send(&ServerMsg::Prompt {
            text: "Passcode: ".into(),
            echo: false,
        })
        .await
        .unwrap();
        let typist = std::thread::spawn(move || {
            std::thread::sleep(EVERY * 5);
            write_frame(&mut client, &mfa_proto::ClientMsg::Answer { text: None }).unwrap();
            client
        });
        assert_eq!(conn.answer().await.unwrap(), None);
        let mut client = typist.join().unwrap();
        assert_eq!(
            received(&mut client),
            vec![ServerMsg::Prompt {
                text: "Passcode: ".into(),
                echo: false
            }]
        );
        assert!(conn.has_spoken());
        keepalives.abort();
    }

    #[tokio::test]
    async fn unavailable_after_anything_was_said_is_a_refusal() {
        let (mut conn, mut client) = pair();
        conn.unavailable("database is locked").await.unwrap();
        assert_eq!(
            received(&mut client),
            vec![ServerMsg::Unavailable {
                reason: "database is locked".into()
            }]
        );
        let (mut conn, mut client) = pair();
        conn.info("Two-factor login for alice").await.unwrap();
        conn.unavailable("Duo could not be reached").await.unwrap();
        let got = received(&mut client);
        assert_eq!(
            got[1..],
            [
                ServerMsg::Error {
                    text: "Two-factor authentication is unavailable right now (Duo could not be reached); login refused.".into()
                },
                ServerMsg::Done { outcome: Outcome::Deny }
            ]
        );
    }
}
