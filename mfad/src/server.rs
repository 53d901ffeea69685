//! The listening socket: created with the right modes, one task per connection, and the
//! limits that keep one local user from starving everyone else.
//!
//! The caller's uid is read (SO_PEERCRED) as soon as a connection is accepted. Each non-root
//! uid may hold [`MAX_PER_USER`] connections, all non-root uids together [`MAX_USERS_TOTAL`];
//! root (sshd's PAM module) has its own [`MAX_ROOT`], which no user can take, and the web
//! front's user (`[web] user`) its own [`MAX_WEB`], as each of its page views is one
//! connection. A connection
//! over its limit is told so and closed at once, so the accept loop never waits, and a
//! flood by one user leaves root's logins as fast as ever.

use crate::conn::{self, Conn, Timeouts};
use crate::daemon::Daemon;
use mfa_proto::ServerMsg;
use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixListener;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// Connections one non-root uid may hold at once (its `mfa` commands and its
/// ForceCommand logins waiting at a prompt); more are closed at once.
pub const MAX_PER_USER: usize = 8;

/// Connections all non-root uids together may hold at once.
pub const MAX_USERS_TOTAL: usize = 256;

/// Connections root may hold at once: reserved for root, whatever the users do.
pub const MAX_ROOT: usize = 1024;

/// Connections the web front's user (mfa-web) may hold at once: its own pool, apart from
/// the users' and root's, so a busy approval page neither starves nor is starved by users.
pub const MAX_WEB: usize = 64;

/// How long a non-root caller may take to say hello (its client says it at once); root has
/// [`conn::IO_TIMEOUT`].
pub const USER_HELLO_TIMEOUT: Duration = Duration::from_secs(2);

/// A uid over its limit is logged at most once per this interval, with how many
/// connections were closed meanwhile.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// The connections held now, by uid.
#[derive(Default)]
struct Counts {
    by_uid: HashMap<u32, usize>,
    users: usize,
    root: usize,
    web: usize,
}

/// When a uid over its limit was last logged, and how many closes went unlogged since.
struct Report {
    at: Instant,
    unlogged: u64,
}

#[derive(Default)]
struct Limits {
    counts: Mutex<Counts>,
    reports: Mutex<HashMap<u32, Report>>,
}

/// One connection's place in the counts, given back when it is dropped.
struct Slot {
    limits: Arc<Limits>,
    uid: u32,
    web: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.limits.counts.lock() {
            if self.uid == 0 {
                c.root = c.root.saturating_sub(1);
            } else if self.web {
                c.web = c.web.saturating_sub(1);
            } else {
                c.users = c.users.saturating_sub(1);
                if let Some(n) = c.by_uid.get_mut(&self.uid) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        c.by_uid.remove(&self.uid);
                    }
                }
            }
        }
    }
}

/// Why a connection was not taken.
enum Over {
    Root,
    Web,
    User(usize),
    AllUsers,
}

impl Limits {
    /// `web_uid`: the uid of `[web] user`, if it exists.
    fn take(self: &Arc<Self>, uid: u32, web_uid: Option<u32>) -> Result<Slot, Over> {
        let mut c = self.counts.lock().map_err(|_| Over::AllUsers)?;
        let web = uid != 0 && web_uid == Some(uid);
        if uid == 0 {
            if c.root >= MAX_ROOT {
                return Err(Over::Root);
            }
            c.root += 1;
        } else if web {
            if c.web >= MAX_WEB {
                return Err(Over::Web);
            }
            c.web += 1;
        } else {
            let mine = c.by_uid.get(&uid).copied().unwrap_or(0);
            if mine >= MAX_PER_USER {
                return Err(Over::User(mine));
            }
            if c.users >= MAX_USERS_TOTAL {
                return Err(Over::AllUsers);
            }
            c.users += 1;
            *c.by_uid.entry(uid).or_insert(0) += 1;
        }
        Ok(Slot {
            limits: Arc::clone(self),
            uid,
            web,
        })
    }

    /// Logs a refused connection, at most once per uid per [`REPORT_EVERY`].
    fn report(&self, uid: u32, over: &Over) {
        let Ok(mut reports) = self.reports.lock() else {
            return;
        };
        let now = Instant::now();
        if reports.len() > 4096 {
            reports.retain(|_, r| now.duration_since(r.at) < REPORT_EVERY);
        }
        let unlogged = match reports.get_mut(&uid) {
            Some(r) if now.duration_since(r.at) < REPORT_EVERY => {
                r.unlogged += 1;
                return;
            }
            Some(r) => std::mem::take(&mut r.unlogged),
            None => 0,
        };
        reports.insert(
            uid,
            Report {
                at: now,
                unlogged: 0,
            },
        );
        let why = match over {
            Over::Root => format!("root already holds {MAX_ROOT} connections"),
            Over::Web => format!("the web front (uid {uid}) already holds {MAX_WEB} connections"),
            Over::User(n) => format!("uid {uid} already holds {n} connections (the limit)"),
            Over::AllUsers => {
                format!("non-root callers already hold {MAX_USERS_TOTAL} connections")
            }
        };
        warn!(
            "{why}; closing new connections from uid {uid} at once \
             ({unlogged} more closed since the last report; next report in at least {} s)",
            REPORT_EVERY.as_secs()
        );
    }
}

/// The next connection, non-blocking, or why none could be taken (`listener` from
/// [`conn::watch_reading`]).
pub async fn accept(
    listener: &AsyncFd<std::os::unix::net::UnixListener>,
) -> std::io::Result<UnixStream> {
    loop {
        let mut ready = listener.readable().await?;
        if let Ok(accepted) = ready.try_io(|l| accept_nonblocking(l.get_ref())) {
            return accepted;
        }
    }
}

/// One connection from `listener`, already non-blocking and close-on-exec: one system call
/// (`accept4`) where std's `accept` and `set_nonblocking` take two.
fn accept_nonblocking(listener: &std::os::unix::net::UnixListener) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{SockFlag, accept4};
    use std::os::fd::{AsRawFd, FromRawFd};
    let fd = accept4(
        listener.as_raw_fd(),
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    // SAFETY: `accept4` just returned `fd`, a new descriptor nothing else owns; the stream
    // takes it over and closes it when dropped.
    Ok(unsafe { UnixStream::from_raw_fd(fd) })
}

/// The caller's uid, as the kernel saw it at connect (SO_PEERCRED).
pub fn peer_uid(stream: &UnixStream) -> nix::Result<u32> {
    nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map(|cred| cred.uid())
}

/// Tells a refused caller why, if its socket takes the frame now; never waits.
fn turn_away(stream: &UnixStream, over: &Over) {
    let reason = match over {
        Over::Root => "mfad is serving too many logins; try again",
        Over::Web => "mfad is serving too many web requests; try again",
        Over::User(_) => "too many connections from this user at once",
        Over::AllUsers => "too many connections from users at once; try again",
    };
    if let Ok(bytes) = mfa_proto::frame::encode(&ServerMsg::Unavailable {
        reason: reason.into(),
    }) {
        let _ = conn::send_now(stream, &bytes);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another mfad is already listening on {0}")]
    InUse(String),
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: String },
    #[error("socket activation: {0}")]
    Activation(String),
    #[error("cannot create the socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Binds `path`: creates its directory (0755), replaces a stale socket left by a crash (but
/// never a live one or another kind of file), and opens the socket to every local user (0666):
/// each connection is then judged by its peer credentials.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let io = |source| BindError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(io)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket {
                path: path.display().to_string(),
            });
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse(path.display().to_string()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    // The socket appears under its name only once it listens and is open to all: bound
    // under a temporary name beside it, then renamed into place. A client (or a starter
    // waiting for the file) never finds a socket that refuses connections.
    let mut fresh = path.as_os_str().to_owned();
    fresh.push(format!(".{}.new", std::process::id()));
    let fresh = std::path::PathBuf::from(fresh);
    let _ = std::fs::remove_file(&fresh);
    let listener = UnixListener::bind(&fresh).map_err(io)?;
    let placed = std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o666))
        .and_then(|()| std::fs::rename(&fresh, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&fresh);
        return Err(io(e));
    }
    Ok(listener)
}

/// The listening socket systemd passed (socket activation, `mfad.socket`): `Ok(None)` when
/// none was passed to this process (`LISTEN_PID` unset or another process's pid: mfad then
/// binds its own). The socket stays systemd's: connections wait in its backlog while mfad
/// restarts, and mfad must not remove or chmod it.
pub fn inherited() -> Result<Option<std::os::unix::net::UnixListener>, BindError> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id());
    if !ours {
        return Ok(None);
    }
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() != 1 {
        return Err(BindError::Activation(format!(
            "systemd passed {} sockets; mfad.socket must have exactly one ListenStream",
            fds.len()
        )));
    }
    match fds.take_unix_listener(0) {
        Ok(listener) => Ok(listener),
        Err(e) => Err(BindError::Activation(format!(
            "the socket systemd passed is not a Unix stream socket: {e}"
        ))),
    }
}

/// How long mfad, told to stop, lets the conversations in progress finish (a user typing
/// their code, a push being answered) before it ends them. Meanwhile it accepts nothing new:
/// under socket activation new logins wait in the socket's backlog for the next mfad.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// [`serve_with_grace`] with no grace: conversations in progress end with the server.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) {
    let (_keep, daemon) = tokio::sync::watch::channel(daemon);
    if let Err(e) = serve_with_grace(daemon, listener, shutdown, Duration::ZERO).await {
        error!("cannot watch the socket for connections: {e}");
    }
}

/// Accepts connections until `shutdown` resolves, each served by the daemon `daemon` holds
/// when it is accepted (a reload sends a new one; conversations in progress keep theirs),
/// then lets the conversations in progress
/// finish for up to `grace`; those still going are dropped, which their clients report as
/// an interrupted login, refused ("Please try again"). Never waits for a connection to end
/// while accepting: one over its limit is closed at once. An error only when the runtime
/// cannot watch `listener` at all (nothing was served).
pub async fn serve_with_grace(
    daemon: tokio::sync::watch::Receiver<Arc<Daemon>>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    let limits = Arc::new(Limits::default());
    let mut conversations = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    let listener = listener.into_std().and_then(conn::watch_reading)?;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conversations.join_next(), if !conversations.is_empty() => {}
            accepted = accept(&listener) => {
                let stream = match accepted {
                    Ok(stream) => stream,
                    Err(e) => {
                        warn!("accept failed: {e}");
                        #[allow(clippy::disallowed_methods)] // a pause after a failed accept
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let uid = match peer_uid(&stream) {
                    Ok(uid) => uid,
                    Err(e) => {
                        warn!("cannot read the peer credentials of a connection: {e}");
                        continue;
                    }
                };
                let web_uid = daemon.borrow().web_uid();
                let slot = match limits.take(uid, web_uid) {
                    Ok(slot) => slot,
                    Err(over) => {
                        crate::metrics::connection_refused(match over {
                            Over::Root => "root",
                            Over::Web => "web",
                            Over::User(_) => "user",
                            Over::AllUsers => "all_users",
                        });
                        limits.report(uid, &over);
                        turn_away(&stream, &over);
                        continue;
                    }
                };
                let daemon = Arc::clone(&daemon.borrow());
                let timeouts = Timeouts {
                    hello: if uid == 0 { conn::IO_TIMEOUT } else { USER_HELLO_TIMEOUT },
                    answer: daemon.answer_timeout(),
                    keepalive: conn::KEEPALIVE_INTERVAL,
                };
                conversations.spawn(async move {
                    match Conn::new(stream, uid, timeouts) {
                        Ok(conn) => daemon.serve(conn).await,
                        Err(e) => warn!("cannot watch a connection: {e}"),
                    }
                    drop(slot);
                });
            }
        }
    }
    // Accept nothing more: under socket activation new logins wait in systemd's socket for
    // the next mfad; otherwise the socket file goes with this process.
    drop(listener);
    let last = Arc::clone(&daemon.borrow());
    let open = conversations.len();
    if open == 0 {
        info!("shutting down");
        last.flush_history().await;
        return Ok(());
    }
    info!(
        "shutting down: accepting no new connections; waiting up to {} s for {open} \
         conversations in progress",
        grace.as_secs()
    );
    let drained = tokio::time::timeout(grace, async {
        while conversations.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            "{} conversations still in progress after {} s are ended; their logins are \
             refused and told to try again",
            conversations.len(),
            grace.as_secs()
        );
        conversations.shutdown().await;
    }
    last.flush_history().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_taken_non_blocking_and_closed_on_exec() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        let mut stream = accept_nonblocking(&listener).unwrap();
        let mut buf = [0u8; 4];
        // Nothing sent yet: the read says so at once instead of waiting.
        let err = stream.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        client.write_all(b"ping").unwrap();
        stream.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        let flags = nix::fcntl::fcntl(&stream, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(
            nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
        );
        // No connection waiting: an error (would block), never a wait.
        listener.set_nonblocking(true).unwrap();
        let err = accept_nonblocking(&listener).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    }

    #[test]
    fn the_web_front_has_its_own_pool_apart_from_users_and_root() {
        let limits = Arc::new(Limits::default());
        const WEB: u32 = 990;
        // The web front's uid holds far more than a user's 8 (each page view is one
        // connection), up to its own cap.
        let web: Vec<Slot> = (0..MAX_WEB)
            .map(|_| limits.take(WEB, Some(WEB)).ok().unwrap())
            .collect();
        assert!(matches!(limits.take(WEB, Some(WEB)), Err(Over::Web)));
        // Users and root are untouched by it.
        let users: Vec<Slot> = (0..MAX_PER_USER)
            .map(|_| limits.take(1000, Some(WEB)).ok().unwrap())
            .collect();
        assert!(matches!(limits.take(1000, Some(WEB)), Err(Over::User(_))));
        assert!(limits.take(0, Some(WEB)).is_ok());
        // The same uid, when it is not the web user, is an ordinary user.
        drop(web);
        let plain: Vec<Slot> = (0..MAX_PER_USER)
            .map(|_| limits.take(WEB, None).ok().unwrap())
            .collect();
        assert!(matches!(limits.take(WEB, None), Err(Over::User(_))));
        drop((users, plain));
    }
}
