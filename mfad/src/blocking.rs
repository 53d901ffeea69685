//! Blocking work a conversation needs (the store's statements and fsyncs, the directory's
//! lookups), run without parking the runtime.
//!
//! On the daemon's multi-threaded runtime the work runs on the conversation's own thread
//! (`block_in_place`: the runtime hands that thread's other tasks to another thread first),
//! so a login's store call costs no hand-off to a blocking thread and back, which was most
//! of a PAM call's time over the fsync. Elsewhere (a current-thread runtime in tests) it
//! goes to a blocking thread as before. Either way a panic in the work is an error of this
//! conversation, never of the daemon.

use std::panic::AssertUnwindSafe;
use tokio::runtime::{Handle, RuntimeFlavor};

/// The work did not give its value back.
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    #[error("a background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("a background task failed: it panicked")]
    Panicked,
}

/// Runs `f` where it may block, and gives its value back to the calling task.
pub(crate) async fn run<T, F>(f: F) -> Result<T, Failed>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let multi =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if multi {
        tokio::task::block_in_place(|| std::panic::catch_unwind(AssertUnwindSafe(f)))
            .map_err(|_| Failed::Panicked)
    } else {
        Ok(tokio::task::spawn_blocking(f).await?)
    }
}
