//! The listening socket: created with the right modes, one task per connection.

use crate::conn::Conn;
use crate::daemon::Daemon;
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another mfad is already listening on {0}")]
    InUse(String),
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: String },
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
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(io)?;
    Ok(listener)
}

/// Accepts connections until `shutdown` resolves.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                info!("shutting down");
                return;
            }
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                    return;
                };
                let daemon = Arc::clone(&daemon);
                tokio::spawn(async move {
                    let conn = Conn::new(stream, daemon.answer_timeout());
                    daemon.serve(conn).await;
                    drop(permit);
                });
            }
        }
    }
}
