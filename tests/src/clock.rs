//! Wall-clock time and waiting, in one place.
//!
//! The product takes time as a parameter; the harness cannot: it drives real processes that
//! read the real clock, so it reads it too.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, with fractions.
#[allow(clippy::disallowed_methods)]
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[allow(clippy::disallowed_methods)]
pub fn pause(d: Duration) {
    std::thread::sleep(d);
}

#[allow(clippy::disallowed_methods)]
pub fn deadline(after: Duration) -> Instant {
    Instant::now() + after
}

#[allow(clippy::disallowed_methods)]
pub fn passed(deadline: Instant) -> bool {
    Instant::now() >= deadline
}

/// Polls `ready` every 50 ms until it answers `Some`, or gives up after `limit`.
pub fn wait_for<T>(limit: Duration, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let end = deadline(limit);
    loop {
        if let Some(v) = ready() {
            return Some(v);
        }
        if passed(end) {
            return None;
        }
        pause(Duration::from_millis(50));
    }
}
