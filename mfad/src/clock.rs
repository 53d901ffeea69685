//! Time enters the daemon through [`Clock`], so tests can drive a lockout to its end and a
//! push to its bound without waiting for either.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// A wait of a [`Clock`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now(&self) -> i64;

    /// Waits `d` of this clock's time: the bound of a pending push or call.
    fn sleep(&self, d: Duration) -> Sleep;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        #[allow(clippy::disallowed_methods)] // the one reading of the wall clock
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            // A clock before 1970 is broken; treat it as the epoch rather than panic.
            Err(_) => 0,
        }
    }

    #[allow(clippy::disallowed_methods)] // the one wait on tokio's timer for the daemon
    fn sleep(&self, d: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(d))
    }
}

/// A clock that only moves when told to. Its waits end once it has been moved on by
/// their length (whole seconds, rounded up), and at the latest after the same real time,
/// so a test that never moves it still ends.
#[derive(Clone)]
pub struct FakeClock(Arc<Fake>);

struct Fake {
    secs: AtomicI64,
    moved: watch::Sender<i64>,
}

impl FakeClock {
    pub fn new(start: i64) -> Self {
        FakeClock(Arc::new(Fake {
            secs: AtomicI64::new(start),
            moved: watch::Sender::new(start),
        }))
    }
    pub fn advance(&self, secs: i64) {
        let now = self.0.secs.fetch_add(secs, Ordering::SeqCst) + secs;
        self.0.moved.send_replace(now);
    }
    pub fn set(&self, secs: i64) {
        self.0.secs.store(secs, Ordering::SeqCst);
        self.0.moved.send_replace(secs);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> i64 {
        self.0.secs.load(Ordering::SeqCst)
    }

    #[allow(clippy::disallowed_methods)] // the real-time cap on a fake wait
    fn sleep(&self, d: Duration) -> Sleep {
        let start = self.now();
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let need = secs.saturating_add(i64::from(d.subsec_nanos() > 0));
        let mut moved = self.0.moved.subscribe();
        Box::pin(async move {
            let moved_on = async {
                while moved.borrow_and_update().saturating_sub(start) < need {
                    if moved.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                _ = moved_on => {}
                _ = tokio::time::sleep(d) => {}
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fake_wait_ends_when_the_clock_is_moved_on_by_its_length() {
        let clock = FakeClock::new(100);
        let wait = tokio::spawn(clock.sleep(Duration::from_secs(60)));
        clock.advance(59);
        tokio::task::yield_now().await;
        assert!(!wait.is_finished());
        clock.advance(1);
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_fake_wait_nobody_moves_on_still_ends_after_its_real_length() {
        let clock = FakeClock::new(100);
        let started = tokio::time::Instant::now();
        clock.sleep(Duration::from_millis(50)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
