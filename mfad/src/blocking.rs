//! Blocking work a conversation needs (the store's statements and fsyncs, the directory's
//! lookups), run without parking the runtime's threads.
//!
//! [`run`] hands the work to a blocking thread and back. [`run_in_place`] runs it on the
//! conversation's own thread instead (`block_in_place`: the runtime first hands that
//! thread's other tasks to another thread), which costs no hand-off on the caller's path
//! but moves the runtime's worker to another thread each time: it is kept for the one fsync
//! a group commit's leader runs, where a login waits for nothing else. (Used for every
//! store call, it spread the tasks over many threads: 1,000 pending pushes took 76 MB
//! instead of about 52 in the same day's runs.) On a current-thread runtime (tests) both hand off.
//! Either way a panic in the work is an error of this conversation, never of the daemon.

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

/// Runs `f` on a blocking thread, and gives its value back to the calling task.
pub(crate) async fn run<T, F>(f: F) -> Result<T, Failed>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    Ok(tokio::task::spawn_blocking(f).await?)
}

/// Runs `f` on the calling task's own thread where the runtime allows it, else as [`run`].
pub(crate) async fn run_in_place<T, F>(f: F) -> Result<T, Failed>
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
        run(f).await
    }
}
