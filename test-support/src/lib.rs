//! What mfad's tests share, once: a daemon on a private socket in a temporary directory,
//! with a clock the test controls ([`TestDaemon`]); a scripted user that answers prompts
//! from a list and fails the test on any prompt it was not ready for ([`Script`]); and the
//! same conversations run in-process over a [`mfad::conn::ScriptDialogue`], without a
//! socket ([`TestDaemon::converse`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod binary;
pub mod fake_phone;
pub mod http;
pub mod memory;
pub mod postgres;

use mfa_proto::{AuthContext, ClientError, ClientMsg, Conversation, Operation, Outcome, ServerMsg};
use mfad::accounts::Accounts;
use mfad::conn::{
    Conn, ConnError, Dialogue, DialogueFuture, KEEPALIVE_INTERVAL, ScriptDialogue, Timeouts,
};
use mfad::store::Backend;
use mfad::{Config, Daemon, FakeClock, Store};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// The fake clock's start: 2027-01-15, far from the machine's own time.
pub const T0: i64 = 1_800_000_000;
/// The test daemon's randomness repeats from this seed (`mfad::random::SeededRandom`): a test
/// can know the secrets and codes a user was shown.
pub const SEED: u64 = 0x6d66_6164;

/// A daemon on a private socket, stopped on drop.
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub clock: FakeClock,
    daemon: Arc<Daemon>,
    /// The daemon's own runtime: in-process conversations run on it too, so what lives
    /// across logins (pooled HTTPS connections, pending approvals) is shared as in mfad.
    runtime: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Where the web front (mfa-web's server, in-process) listens, when `[approval]` is set.
    web: Option<std::net::SocketAddr>,
}

impl TestDaemon {
    /// The default test config (socket and database in a fresh directory, issuer
    /// "testhost", no syslog), changed by `tune`.
    pub fn start(tune: impl FnOnce(&mut Config)) -> TestDaemon {
        TestDaemon::start_with(tune, None)
    }

    /// With `accounts` in place of the system's user database.
    pub fn start_with(
        tune: impl FnOnce(&mut Config),
        accounts: Option<Arc<dyn Accounts>>,
    ) -> TestDaemon {
        TestDaemon::start_inner(tune, accounts, None, None)
    }

    /// With the web front listening on `web` (when `tune` sets `[approval]`), as mfa-web
    /// would beside mfad; without it the web front takes a free port ([`TestDaemon::web_addr`]).
    pub fn start_serving_web(
        web: std::net::SocketAddr,
        tune: impl FnOnce(&mut Config),
    ) -> TestDaemon {
        TestDaemon::start_inner(tune, None, None, Some(web))
    }

    /// With the daemon's store backend wrapped by `wrap` (e.g. to watch the calls a
    /// login makes); [`TestDaemon::store`] still opens the file directly.
    pub fn start_wrapping_backend(
        tune: impl FnOnce(&mut Config),
        wrap: impl FnOnce(Box<dyn Backend>) -> Box<dyn Backend> + 'static,
    ) -> TestDaemon {
        TestDaemon::start_inner(tune, None, Some(Box::new(wrap)), None)
    }

    #[allow(clippy::type_complexity)]
    fn start_inner(
        tune: impl FnOnce(&mut Config),
        accounts: Option<Arc<dyn Accounts>>,
        wrap: Option<Box<dyn FnOnce(Box<dyn Backend>) -> Box<dyn Backend>>>,
        web: Option<std::net::SocketAddr>,
    ) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut config = Config {
            socket: dir.path().join("mfad.sock"),
            database: dir.path().join("db/mfa.db"),
            store_key: dir.path().join("db/store.key"),
            issuer: Some("testhost".into()),
            ..Config::default()
        };
        config.log.syslog = false;
        tune(&mut config);
        let clock = FakeClock::new(T0);
        let store = match wrap {
            None => Store::open_with_key_file(&config.database, &config.store_key).unwrap(),
            Some(wrap) => {
                let key = mfad::sealing::StoreKey::load(&config.store_key, true).unwrap();
                let backend =
                    mfad::store::sqlite::SqliteBackend::open(&config.database, &key).unwrap();
                Store::from_backend(wrap(Box::new(backend)), Arc::new(key)).unwrap()
            }
        };
        let store = mfad::store::pool::StorePool::single(store).unwrap();
        let world = mfad::daemon::World {
            clock: Arc::new(clock.clone()),
            accounts: accounts.unwrap_or_else(|| Arc::new(mfad::accounts::NssAccounts)),
            random: Arc::new(mfad::random::SeededRandom::new(SEED)),
            passwords: Arc::new(TestPasswords),
        };
        let daemon = Daemon::in_world(config.clone(), store, world);
        let daemon = Arc::new(daemon.unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let socket = config.socket.clone();
        let with_web = config.approval.is_some() || config.web.public_url.is_some();
        let serving = Arc::clone(&daemon);
        let web_timeouts = Timeouts {
            hello: Duration::from_secs(10),
            answer: Duration::from_secs(config.answer_timeout),
            keepalive: KEEPALIVE_INTERVAL,
        };
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let listener = mfad::server::bind(&socket).unwrap();
                // The web front too, when approvals or enrolment links are configured:
                // mfa-web's server, its requests handed to this daemon in-process as root (the
                // binary relays them over the socket; tests/tests/out_of_band.rs runs that end
                // to end), so these tests need no root either.
                let (stop_all, stopped) = tokio::sync::watch::channel(false);
                let (endpoint, web_addr) = if with_web {
                    let cfg = mfa_web::WebConfig {
                        listen: web.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
                        socket: socket.clone(),
                        ..mfa_web::WebConfig::default()
                    };
                    let web = InProcessWeb {
                        daemon: Arc::clone(&serving),
                        timeouts: web_timeouts,
                    };
                    let server = mfa_web::WebServer::bind_with(&cfg, Arc::new(web))
                        .await
                        .unwrap();
                    let addr = server.local_addr();
                    let mut stop = stopped.clone();
                    let task = tokio::spawn(server.serve(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    }));
                    (Some(task), Some(addr))
                } else {
                    (None, None)
                };
                ready_tx
                    .send((tokio::runtime::Handle::current(), web_addr))
                    .unwrap();
                mfad::server::serve(serving, listener, async {
                    let _ = rx.await;
                })
                .await;
                let _ = stop_all.send(true);
                if let Some(endpoint) = endpoint {
                    let _ = endpoint.await;
                }
            });
        });
        let (runtime, web) = ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        TestDaemon {
            dir,
            config,
            clock,
            daemon,
            runtime,
            stop: Some(tx),
            thread: Some(thread),
            web,
        }
    }

    /// Where the web front listens (`[approval]` or `[web] public_url` set), as
    /// `http://127.0.0.1:PORT`.
    pub fn web_url(&self) -> Option<String> {
        self.web.map(|a| format!("http://{a}"))
    }

    /// The daemon itself (its pending approvals, its web service).
    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    pub fn socket(&self) -> PathBuf {
        self.config.socket.clone()
    }

    /// A second handle on the daemon's database, to seed and inspect state.
    pub fn store(&self) -> Store {
        Store::open_with_key_file(&self.config.database, &self.config.store_key).unwrap()
    }

    /// One conversation as root (sshd's PAM stack), in-process: the daemon's conversation
    /// runs on its runtime over a [`Live`] channel pair, relayed to a [`Script`] as the
    /// client's `run_conversation` relays the socket. No socket, no root needed.
    pub fn run(
        &self,
        op: impl Into<Operation>,
        answers: &[&str],
    ) -> (Result<Outcome, ClientError>, Script) {
        self.run_as(0, op, answers)
    }

    /// The same as the caller `uid` (a user's own CLI or ForceCommand helper).
    pub fn run_as(
        &self,
        uid: u32,
        op: impl Into<Operation>,
        answers: &[&str],
    ) -> (Result<Outcome, ClientError>, Script) {
        let mut script = Script::new(answers);
        let outcome =
            mfa_proto::run_conversation(&mut self.connect_as(uid), op.into(), &mut script);
        (outcome, script)
    }

    /// One conversation as root, in-process, answered by `conv`.
    pub fn run_with(
        &self,
        op: impl Into<Operation>,
        conv: &mut dyn Conversation,
    ) -> Result<Outcome, ClientError> {
        mfa_proto::run_conversation(&mut self.connect_as(0), op.into(), conv)
    }

    /// A connection to the daemon in-process as the caller `uid`: what the socket would
    /// carry, frame by frame, without the socket (see [`Live`]).
    pub fn connect_as(&self, uid: u32) -> Live {
        let (to_daemon, from_client) = tokio::sync::mpsc::unbounded_channel();
        let (to_client, from_daemon) = std::sync::mpsc::channel();
        let daemon = Arc::clone(&self.daemon);
        let timeouts = self.timeouts();
        self.runtime.spawn(async move {
            let mut dialogue = LiveDialogue {
                from_client,
                to_client,
            };
            // The hello, as the server reads it.
            let op = match dialogue.read(timeouts.hello).await {
                Ok(ClientMsg::Hello { version, op }) if version == mfa_proto::PROTOCOL_VERSION => {
                    op
                }
                _ => return,
            };
            let mut conn = Conn::over(Box::new(dialogue), uid, timeouts);
            daemon.converse(&mut conn, op).await;
        });
        Live {
            to_daemon,
            from_daemon,
        }
    }

    /// One conversation over the socket, as root, answered by a [`Script`]: for what only
    /// the socket shows (framing, peer credentials, the binary). Needs root: the client
    /// refuses a socket root does not own.
    pub fn run_over_socket(
        &self,
        op: impl Into<Operation>,
        answers: &[&str],
    ) -> (Result<Outcome, ClientError>, Script) {
        let op = op.into();
        let mut script = Script::new(answers);
        let mut client = mfa_proto::Client::connect(
            &self.socket(),
            Duration::from_secs(2),
            Duration::from_secs(20),
        )
        .unwrap();
        let outcome = mfa_proto::run_conversation(&mut client, op, &mut script);
        (outcome, script)
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            hello: Duration::from_secs(10),
            answer: Duration::from_secs(self.config.answer_timeout),
            keepalive: KEEPALIVE_INTERVAL,
        }
    }

    /// An interactive ssh login of `user` (through sshd's PAM stack, from 192.0.2.7)
    /// answering `answers`; every answer must be asked for, and mfad must give a verdict.
    pub fn login(&self, user: &str, answers: &[&str]) -> (Outcome, Script) {
        let (outcome, script) = self.run(ssh(user), answers);
        let outcome = outcome.unwrap_or_else(|e| panic!("{e}:\n{}", script.text()));
        script.all_answered();
        (outcome, script)
    }

    /// One request of the web role (as mfa-web sends them), in-process as root: mfad's reply.
    pub fn web(&self, request: mfa_proto::WebRequest) -> mfa_proto::WebReply {
        let conversed = self.converse(0, Operation::Web(request), &[]);
        conversed
            .said
            .iter()
            .find_map(|m| match m {
                mfa_proto::ServerMsg::Web { reply } => Some(reply.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no web reply: {}", conversed.text()))
    }

    /// One conversation in-process, as the caller `uid`, answered from `answers` by a
    /// [`ScriptDialogue`]: every message mfad sent, to inspect.
    pub fn converse(&self, uid: u32, op: Operation, answers: &[&str]) -> Conversed {
        let dialogue = ScriptDialogue::answering(answers);
        let mut conn = Conn::over(Box::new(dialogue.clone()), uid, self.timeouts());
        let daemon = Arc::clone(&self.daemon);
        self.runtime.block_on(daemon.converse(&mut conn, op));
        Conversed {
            said: dialogue.said(),
            unanswered: dialogue.unanswered(),
        }
    }
}

/// The client's end of an in-process connection ([`TestDaemon::connect_as`]): frames go
/// to the daemon's conversation as they would over its socket, and each read waits at most
/// 20 s (longer than any approval bound of the tests). When the daemon's side ends, the
/// connection reads as closed.
pub struct Live {
    to_daemon: tokio::sync::mpsc::UnboundedSender<ClientMsg>,
    from_daemon: std::sync::mpsc::Receiver<ServerMsg>,
}

impl mfa_proto::Transport for Live {
    fn send(&mut self, msg: &ClientMsg) -> Result<(), ClientError> {
        self.to_daemon
            .send(msg.clone())
            .map_err(|_| ClientError::Closed)
    }

    fn recv(&mut self) -> Result<ServerMsg, ClientError> {
        self.from_daemon
            .recv_timeout(Duration::from_secs(20))
            .map_err(|e| match e {
                std::sync::mpsc::RecvTimeoutError::Timeout => ClientError::TimedOut,
                std::sync::mpsc::RecvTimeoutError::Disconnected => ClientError::Closed,
            })
    }
}

/// mfa-web's requests answered by the test daemon in-process: one conversation each, as
/// root, over a [`LiveDialogue`] that reads nothing and keeps what mfad said.
struct InProcessWeb {
    daemon: Arc<Daemon>,
    timeouts: Timeouts,
}

impl mfa_web::Mfad for InProcessWeb {
    fn ask(&self, request: mfa_proto::WebRequest) -> mfa_web::Reply<'_> {
        Box::pin(async move {
            let (_to_daemon, from_client) = tokio::sync::mpsc::unbounded_channel();
            let (to_client, from_daemon) = std::sync::mpsc::channel();
            let dialogue = LiveDialogue {
                from_client,
                to_client,
            };
            let mut conn = Conn::over(Box::new(dialogue), 0, self.timeouts);
            self.daemon
                .converse(&mut conn, Operation::Web(request))
                .await;
            drop(conn);
            from_daemon
                .try_iter()
                .find_map(|msg| match msg {
                    ServerMsg::Web { reply } => Some(reply),
                    _ => None,
                })
                .ok_or(mfa_web::MfadError::Client(ClientError::Closed))
        })
    }
}

/// The daemon's end of a [`Live`] connection.
struct LiveDialogue {
    from_client: tokio::sync::mpsc::UnboundedReceiver<ClientMsg>,
    to_client: std::sync::mpsc::Sender<ServerMsg>,
}

impl Dialogue for LiveDialogue {
    fn write<'a>(&'a mut self, msgs: &'a [ServerMsg], _limit: Duration) -> DialogueFuture<'a, ()> {
        // A client that has gone reads nothing more; the daemon finds out at its next read,
        // as with a socket whose peer has closed.
        for msg in msgs {
            let _ = self.to_client.send(msg.clone());
        }
        Box::pin(async { Ok(()) })
    }

    fn read(&mut self, limit: Duration) -> DialogueFuture<'_, ClientMsg> {
        Box::pin(async move {
            match tokio::time::timeout(limit, self.from_client.recv()).await {
                Ok(Some(msg)) => Ok(msg),
                Ok(None) => Err(ConnError::Protocol("the client closed the connection")),
                Err(_) => Err(ConnError::TimedOut(limit)),
            }
        })
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The password every user has for the enrolment page in a [`TestDaemon`].
pub const TEST_PASSWORD: &str = "right horse battery";

/// Passwords as the test daemon checks them: [`TEST_PASSWORD`] for every user.
struct TestPasswords;

impl mfad::password::PasswordCheck for TestPasswords {
    fn check(&self, _user: &str, password: &str, _rhost: &str) -> mfad::password::PasswordVerdict {
        if password == TEST_PASSWORD {
            mfad::password::PasswordVerdict::Right
        } else {
            mfad::password::PasswordVerdict::Wrong
        }
    }
}

/// What sshd's PAM stack sends for an interactive login of `user` from 192.0.2.7.
pub fn ssh(user: &str) -> AuthContext {
    AuthContext {
        user: user.into(),
        service: "sshd".into(),
        rhost: Some("192.0.2.7".into()),
        tty: Some("ssh".into()),
        ..Default::default()
    }
}

/// What an in-process conversation came to.
#[derive(Debug)]
pub struct Conversed {
    /// Everything mfad said, in order.
    pub said: Vec<ServerMsg>,
    /// Answers the script had left.
    pub unanswered: usize,
}

impl Conversed {
    /// The verdict, if mfad gave one.
    pub fn outcome(&self) -> Option<Outcome> {
        self.said.iter().find_map(|m| match m {
            ServerMsg::Done { outcome } => Some(*outcome),
            _ => None,
        })
    }

    /// Whether mfad answered "unavailable" (the client's fail mode decides).
    pub fn unavailable(&self) -> bool {
        self.said
            .iter()
            .any(|m| matches!(m, ServerMsg::Unavailable { .. }))
    }

    /// The conversation as the user saw it, a line per message ("prompt: …").
    pub fn text(&self) -> String {
        self.said
            .iter()
            .filter_map(|m| match m {
                ServerMsg::Info { text } => Some(format!("info: {text}")),
                ServerMsg::Error { text } => Some(format!("error: {text}")),
                ServerMsg::Prompt { text, .. } => Some(format!("prompt: {text}")),
                ServerMsg::Unavailable { reason } => Some(format!("unavailable: {reason}")),
                ServerMsg::Done { outcome } => Some(format!("done: {outcome:?}")),
                ServerMsg::KeepAlive => None,
                ServerMsg::Web { reply } => Some(format!("web: {reply:?}")),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// How many prompts were shown.
    pub fn prompts(&self) -> usize {
        self.said
            .iter()
            .filter(|m| matches!(m, ServerMsg::Prompt { .. }))
            .count()
    }
}

/// A user who answers prompts from a list; fails the test on a prompt it has no answer for.
pub struct Script {
    answers: Vec<String>,
    next: usize,
    /// What the user saw, a line per message ("info: …", "error: …", "prompt: …").
    pub shown: Vec<String>,
}

impl Script {
    pub fn new(answers: &[&str]) -> Self {
        Script {
            answers: answers.iter().map(|s| s.to_string()).collect(),
            next: 0,
            shown: Vec::new(),
        }
    }

    /// What the user saw, a line per message ("info: …", "error: …", "prompt: …").
    pub fn text(&self) -> String {
        self.shown.join("\n")
    }

    /// The prompts, in order.
    pub fn prompts(&self) -> Vec<&str> {
        self.shown
            .iter()
            .filter_map(|s| s.strip_prefix("prompt: "))
            .collect()
    }

    /// Fails the test unless every answer was asked for.
    pub fn all_answered(&self) {
        assert_eq!(
            self.next,
            self.answers.len(),
            "prompts left unanswered; conversation was:\n{}",
            self.text()
        );
    }
}

impl Conversation for Script {
    fn info(&mut self, text: &str) {
        self.shown.push(format!("info: {text}"));
    }
    fn error(&mut self, text: &str) {
        self.shown.push(format!("error: {text}"));
    }
    fn prompt(&mut self, text: &str, _echo: bool) -> Option<Zeroizing<String>> {
        self.shown.push(format!("prompt: {text}"));
        let answer = self.answers.get(self.next).unwrap_or_else(|| {
            panic!("unexpected prompt {text:?}; conversation:\n{}", self.text())
        });
        self.next += 1;
        Some(Zeroizing::new(answer.clone()))
    }
}
