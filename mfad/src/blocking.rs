//! Blocking work a conversation needs (the store's statements and fsyncs, the directory's
//! lookups), run without parking the runtime's threads.
//!
//! [`run`] hands the work to a blocking thread and back. [`run_in_place`] runs it on the
//! conversation's own thread instead (`block_in_place`: the runtime first hands that
//! thread's other tasks to another thread), which costs no hand-off on the caller's path
//! but moves the runtime's worker to another thread each time: it is kept for the one fsync
//! a group commit's leader runs, where a login waits for nothing else. (Used for every
//! store call, it spread the tasks over many threads: 1,000 pending pushes took 76 MB
//! instead of about 52 in the same day's runs.) When the conversation asking is the only
//! one at work (others may wait for their users: at a prompt, for a phone) and the runtime
//! has another worker, even that hand-off is skipped: the work
//! runs on the worker as it is, which then serves nothing else meanwhile (the other worker
//! takes what comes); with other conversations at work, taking a worker away would halve the
//! threads serving them (TOTP accepts/s at 10 clients 0.89 × in `--compare-mfad`).
//! On a current-thread runtime (tests) both hand off.
//! Either way a panic in the work is an error of this conversation, never of the daemon.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::{Handle, RuntimeFlavor};

/// Conversations at work now (see [`Open`]).
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// A conversation at work, counted from its connection to its verdict except while it
/// waits for the user ([`crate::conn::Conn::waiting_for_user`]): [`run_in_place`] skips the
/// runtime's hand-off for a conversation that is alone at work.
pub(crate) struct Open(());

impl Open {
    pub(crate) fn new() -> Open {
        OPEN.fetch_add(1, Ordering::Relaxed);
        Open(())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

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

/// Awaits `f` on the calling task; a panic while polling it is this conversation's error.
pub(crate) async fn caught<T>(f: impl std::future::Future<Output = T>) -> Result<T, Failed> {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| f.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(Err(Failed::Panicked)),
        }
    })
    .await
}

/// Runs `f` on the calling task's own thread where the runtime allows it, else as [`run`].
pub(crate) async fn run_in_place<T, F>(f: F) -> Result<T, Failed>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match place() {
        Place::Here => here(f),
        Place::HandedOver => tokio::task::block_in_place(|| here(f)),
        Place::Away => run(f).await,
    }
}

/// Runs `f` on the calling task's own worker when the conversation is alone (see the
/// module's notes), else as [`run`]: for work short enough for a lone login to wait on
/// in place (the directory's lookup of its user), too frequent to move workers around for.
pub(crate) async fn run_here_if_alone<T, F>(f: F) -> Result<T, Failed>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match place() {
        Place::Here => here(f),
        Place::HandedOver | Place::Away => run(f).await,
    }
}

/// Where blocking work may run now.
enum Place {
    /// On the worker as it is: the conversation is alone and another worker is free.
    Here,
    /// On this thread, once the runtime has handed its worker to another.
    HandedOver,
    /// On a blocking thread (a current-thread runtime: tests).
    Away,
}

fn place() -> Place {
    place_for(Handle::try_current().ok(), OPEN.load(Ordering::Relaxed))
}

/// Where blocking work may run on runtime `handle` with `open` conversations.
fn place_for(handle: Option<Handle>, open: usize) -> Place {
    match handle {
        Some(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            if h.metrics().num_workers() >= 2 && open <= 1 {
                Place::Here
            } else {
                Place::HandedOver
            }
        }
        _ => Place::Away,
    }
}

fn here<T>(f: impl FnOnce() -> T) -> Result<T, Failed> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| Failed::Panicked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(workers: usize) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_lone_conversation_runs_its_work_on_its_worker_and_only_with_another_worker_free() {
        let two = runtime(2);
        let h = || Some(two.handle().clone());
        assert!(matches!(place_for(h(), 0), Place::Here));
        assert!(matches!(place_for(h(), 1), Place::Here));
        // Another conversation at work: the worker is handed over first.
        assert!(matches!(place_for(h(), 2), Place::HandedOver));
        // One worker: blocking it would stop everything else.
        let one = runtime(1);
        assert!(matches!(
            place_for(Some(one.handle().clone()), 1),
            Place::HandedOver
        ));
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(matches!(
            place_for(Some(current.handle().clone()), 1),
            Place::Away
        ));
        assert!(matches!(place_for(None, 1), Place::Away));
    }

    #[test]
    fn work_that_panics_is_this_conversations_error_wherever_it_ran() {
        let two = runtime(2);
        two.block_on(async {
            tokio::spawn(async {
                for r in [
                    caught(async { panic!("polled") }).await,
                    run_in_place(|| -> u32 { panic!("inline") }).await,
                    run_here_if_alone(|| -> u32 { panic!("here") }).await,
                    run(|| -> u32 { panic!("away") }).await,
                ] {
                    assert!(r.is_err());
                }
                // The worker goes on serving.
                assert_eq!(run_here_if_alone(|| 7).await.unwrap(), 7);
                assert_eq!(run_in_place(|| 8).await.unwrap(), 8);
            })
            .await
            .unwrap();
        });
    }
}
