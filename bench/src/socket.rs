//! mfad alone, over its socket: verifications per second and latency at several numbers of
//! concurrent clients (on SQLite, and on PostgreSQL with one node or two), daemon memory
//! idle and with pending push approvals, and how the cost grows with the number of enrolled
//! users.
//!
//! Every TOTP verification is a real accept with its durable replay record: each check uses
//! a (user, time step) pair not used since the last phase. These daemons accept
//! [`TOTP_WINDOW`] steps either side of now (the PAM call bench keeps the default, 1), and a
//! user's steps are spent in increasing order, so a pool of users gives 20 fresh checks
//! each; before each TOTP phase the daemon's record of spent steps is put back (untimed,
//! [`UserPool::start_over`]), so a pool of 2,000 users serves phases of thousands of
//! accepts a second. mfad then computes 21 codes per answer instead of 3, a cost counted
//! against it.

use crate::BenchError;
use crate::daemon::{BenchDaemon, params, secret_of, seeded_params, unix_now, user_name};
use crate::stats::Samples;
use mfa_proto::{AuthContext, AuthMode, Client, ClientMsg, Conversation, Operation, Outcome};
use mfad::factor::totp;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// What one client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A right TOTP code of a step not used before: accepted, step recorded durably.
    Totp,
    /// A login from a trusted network: allowed by policy, no code asked.
    Policy,
    /// A well-formed wrong code: refused, failure counted durably.
    WrongCode,
}

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::Totp => "TOTP accept + replay record",
            Op::Policy => "policy allow (trusted network)",
            Op::WrongCode => "wrong code (failure recorded)",
        }
    }
}

/// The TOTP window of the socket benches' daemons (`[totp] window`, at most 10).
pub const TOTP_WINDOW: u64 = 10;

/// The `[totp]` section that sets it.
pub fn totp_section() -> String {
    format!("\n[totp]\nwindow = {TOTP_WINDOW}\n")
}

/// Users the policy decisions cycle through ([`UserPool::recurring`]).
pub const RECURRING: usize = 400;

/// Puts a daemon's record of spent steps back to "nothing spent since step S" (every TOTP
/// device's counter to S), between phases.
pub type Rewind<'a> = Box<dyn Fn(u64) -> Result<(), BenchError> + Sync + 'a>;

/// Bench users and the last time step each has spent, shared by all client threads.
pub struct UserPool<'a> {
    last: Vec<AtomicU64>,
    /// With one, every TOTP phase starts with each user's whole window fresh (untimed):
    /// the same users come back phase after phase, as the decisions' do, instead of a
    /// pool large enough for a whole run of fresh steps, whose every first lookup would
    /// be a scan of a large directory.
    rewind: Option<Rewind<'a>>,
    /// A user with a check in flight: not claimed again until it ends, or a later step
    /// claimed meanwhile could reach mfad first and make the earlier one a replay.
    busy: Vec<std::sync::atomic::AtomicBool>,
    cursor: AtomicUsize,
    /// Times a client found no fresh step and waited for the clock: throughput then
    /// measures the pool, not mfad.
    waits: AtomicUsize,
    /// Steps may be used again (the socket floor checks no code): a claim is a user, round
    /// robin, and the current step, and the pool never runs out.
    reusable: bool,
}

impl<'a> UserPool<'a> {
    pub fn new(users: usize) -> UserPool<'a> {
        // As seeded: the last step spent ten steps ago.
        let start = seeded_last_step();
        UserPool {
            last: (0..users).map(|_| AtomicU64::new(start)).collect(),
            rewind: None,
            busy: (0..users)
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            cursor: AtomicUsize::new(0),
            waits: AtomicUsize::new(0),
            reusable: false,
        }
    }

    /// A pool for the socket floor ([`crate::floor`]), which checks no code: claims never
    /// run out (a phase of the floor would otherwise spend the steps of a real pool within
    /// seconds and then measure the waits for the clock).
    pub fn reusable(users: usize) -> UserPool<'a> {
        UserPool {
            reusable: true,
            ..UserPool::new(users)
        }
    }

    /// This pool, its users' steps put back with `rewind` before each TOTP phase.
    pub fn rewinding(self, rewind: Rewind<'a>) -> UserPool<'a> {
        UserPool {
            rewind: Some(rewind),
            ..self
        }
    }

    /// Before a TOTP phase, with no check in flight: when the pool has a [`Rewind`], the
    /// daemon's record and the pool both go back to "last step spent ten steps ago" (as
    /// seeded), so each user has its whole window fresh again. Untimed.
    pub fn start_over(&self) -> Result<(), BenchError> {
        let Some(rewind) = &self.rewind else {
            return Ok(());
        };
        let start = seeded_last_step();
        rewind(start)?;
        for last in &self.last {
            last.store(start, Ordering::SeqCst);
        }
        Ok(())
    }

    /// A user and an unused step mfad accepts now; waits for the clock when every user has
    /// spent its window (up to one period).
    pub fn claim(&self) -> Option<(usize, u64)> {
        if self.reusable {
            return Some((self.any(), (unix_now() / 30.0).floor() as u64));
        }
        let deadline = Instant::now() + Duration::from_secs(35);
        while Instant::now() < deadline {
            for _ in 0..self.last.len() {
                let user = self.cursor.fetch_add(1, Ordering::Relaxed) % self.last.len();
                if self.busy[user].swap(true, Ordering::SeqCst) {
                    continue;
                }
                let now = unix_now();
                let step = (now / 30.0).floor() as u64;
                let left = 30.0 - (now - step as f64 * 30.0);
                // now-W stays valid only until this step ends: keep a margin (a check
                // waits in a queue for up to a second or two at saturation).
                let first = if left > 10.0 {
                    step - TOTP_WINDOW
                } else {
                    step - TOTP_WINDOW + 1
                };
                for candidate in first..=step + TOTP_WINDOW {
                    let last = self.last[user].load(Ordering::Relaxed);
                    if candidate > last
                        && self.last[user]
                            .compare_exchange(last, candidate, Ordering::SeqCst, Ordering::SeqCst)
                            .is_ok()
                    {
                        return Some((user, candidate));
                    }
                }
                self.release(user);
            }
            self.waits.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    /// The check of `user`'s claimed step has ended.
    pub fn release(&self, user: usize) {
        if let Some(b) = self.busy.get(user) {
            b.store(false, Ordering::SeqCst);
        }
    }

    /// How many times a client waited for the clock because every user had spent its window.
    pub fn waits(&self) -> usize {
        self.waits.load(Ordering::Relaxed)
    }

    /// Any user, round robin (for checks that spend nothing).
    pub fn any(&self) -> usize {
        self.cursor.fetch_add(1, Ordering::Relaxed) % self.last.len()
    }

    /// One of the first [`RECURRING`] users, round robin: the people who log in again and
    /// again, whom mfad's short NSS cache (and a site's nscd or sssd) answers without a
    /// lookup. The policy decisions use them: with all of a full run's 8,000 users (as
    /// many as the TOTP rows needed before their steps were put back between phases), each
    /// phase met every user past the cache, and the rows measured nss_wrapper's linear scan
    /// of its file, which is neither mfad's cost nor a site's.
    pub fn recurring(&self) -> usize {
        self.cursor.fetch_add(1, Ordering::Relaxed) % self.last.len().min(RECURRING)
    }
}

/// The step the seeded users spent last: ten steps ago.
fn seeded_last_step() -> u64 {
    totp::step_of(unix_now() as i64, params()).saturating_sub(10)
}

/// A [`Rewind`] of the daemon whose SQLite store is `database`: every device's counter set
/// while the daemon runs, as the PAM-call bench resets its replay state.
pub fn rewind_sqlite<'a>(database: PathBuf) -> Rewind<'a> {
    Box::new(move |step| {
        let conn = rusqlite::Connection::open(&database)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute("UPDATE devices SET counter = ?1", [step as i64])?;
        Ok(())
    })
}

struct Answer(Option<String>);

impl Conversation for Answer {
    fn info(&mut self, _: &str) {}
    fn error(&mut self, _: &str) {}
    fn prompt(&mut self, _: &str, _: bool) -> Option<Zeroizing<String>> {
        self.0.take().map(Zeroizing::new)
    }
}

fn auth_op(user: String, rhost: &str, mode: AuthMode) -> Operation {
    Operation::Authenticate(AuthContext {
        user,
        service: "sshd".into(),
        rhost: Some(rhost.into()),
        tty: Some("ssh".into()),
        mode,
        ..Default::default()
    })
}

/// A well-formed code that matches none of `user`'s steps near now.
fn wrong_code(user: usize) -> String {
    let params = seeded_params();
    let step = totp::step_of(unix_now() as i64, params);
    let near: Vec<String> = (step - 3..=step + 3)
        .map(|s| totp::code_at_step(&secret_of(user), params, s).to_string())
        .collect();
    (0..)
        .map(|n| format!("{n:0width$}", width = params.digits as usize))
        .find(|c| !near.contains(c))
        .unwrap_or_default()
}

/// One whole conversation as pam_mfa has it: connect, hello, relay, done. Returns whether it
/// ended as `op` should, and how long it took.
pub fn one(socket: &Path, op: Op, pool: &UserPool) -> Result<(bool, Duration), BenchError> {
    let mut claimed = None;
    let (operation, answer, want) = match op {
        Op::Totp => {
            let (user, step) = pool
                .claim()
                .ok_or_else(|| BenchError("the user pool ran out of fresh steps".into()))?;
            claimed = Some(user);
            let code = totp::code_at_step(&secret_of(user), seeded_params(), step).to_string();
            (
                auth_op(user_name(user), "192.0.2.7", AuthMode::Menu),
                Some(code),
                Outcome::Allow,
            )
        }
        Op::Policy => (
            auth_op(user_name(pool.recurring()), "10.1.2.3", AuthMode::Menu),
            None,
            Outcome::Allow,
        ),
        Op::WrongCode => {
            let user = pool.any();
            (
                auth_op(user_name(user), "192.0.2.7", AuthMode::Menu),
                Some(wrong_code(user)),
                Outcome::Deny,
            )
        }
    };
    let started = Instant::now();
    let client = Client::connect(socket, Duration::from_secs(10), Duration::from_secs(60))
        .map_err(|e| BenchError(e.to_string()));
    let outcome = client
        .map(|mut client| mfa_proto::run_conversation(&mut client, operation, &mut Answer(answer)));
    let took = started.elapsed();
    if let Some(user) = claimed {
        pool.release(user);
    }
    let outcome = outcome?;
    Ok((matches!(outcome, Ok(o) if o == want), took))
}

/// What one phase measured.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub done: usize,
    pub failed: usize,
    pub elapsed: Duration,
    pub samples: Samples,
}

impl Phase {
    pub fn per_second(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `clients` threads each running `op` back to back until `duration` has passed; thread `i`
/// talks to `sockets[i % sockets.len()]` (one node, or each of several in turn).
pub fn phase(
    sockets: &[PathBuf],
    op: Op,
    clients: usize,
    duration: Duration,
    pool: &UserPool,
) -> Result<Phase, BenchError> {
    if op == Op::Totp {
        pool.start_over()?;
    }
    let started = Instant::now();
    let deadline = started + duration;
    let results: Vec<Result<Phase, BenchError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let socket = sockets
                    .get(i % sockets.len().max(1))
                    .ok_or_else(|| BenchError("a phase needs at least one socket".into()));
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, move || {
                        let socket = socket?;
                        let mut mine = Phase::default();
                        while Instant::now() < deadline {
                            let (ok, took) = one(socket, op, pool)?;
                            if ok {
                                mine.done += 1;
                                mine.samples.push(took);
                            } else {
                                mine.failed += 1;
                            }
                        }
                        Ok(mine)
                    })
            })
            .collect();
        handles.into_iter().map(joined).collect()
    });
    summed(results, started.elapsed())
}

/// The CPUs' busy and total time so far, in clock ticks (the first line of /proc/stat).
fn cpu_ticks() -> Option<(u64, u64)> {
    busy_and_total(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The busy and total ticks of all CPUs in the text of /proc/stat.
fn busy_and_total(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().take(8).sum();
    // idle and iowait are the 4th and 5th fields.
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Waits, untimed, until the CPUs were busy less than a tenth of a 200 ms window, or
/// `limit` has passed, and says how long it waited. Run before each phase, so that work
/// a phase leaves behind (PostgreSQL's autovacuum and checkpoints after its rows, the
/// kernel writing back pages) is not charged to whichever row comes next.
pub fn quiet(limit: Duration) -> Duration {
    let started = Instant::now();
    let Some(mut last) = cpu_ticks() else {
        return Duration::ZERO;
    };
    while started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(200));
        let Some(now) = cpu_ticks() else {
            break;
        };
        let (busy, total) = (now.0 - last.0, now.1 - last.1);
        if total > 0 && busy * 10 < total {
            break;
        }
        last = now;
    }
    started.elapsed()
}

/// Open loop: `clients` threads that together start `rate` checks a second, each on a
/// schedule of its own (thread `i` every `clients / rate` seconds, the threads staggered),
/// for `duration`. A check's latency counts from when it was due, not from when it started:
/// a client held up by a slow answer does not hide the wait of the checks it sent late.
/// This is the latency at a given load, where [`phase`] (a closed loop) measures capacity
/// and its latencies are the queue that saturation builds (Little's law: clients divided
/// by throughput, on average).
pub fn paced_phase(
    socket: &Path,
    op: Op,
    clients: usize,
    rate: f64,
    duration: Duration,
    pool: &UserPool,
) -> Result<Phase, BenchError> {
    if op == Op::Totp {
        pool.start_over()?;
    }
    let interval = Duration::from_secs_f64(clients as f64 / rate.max(1.0));
    // The schedule starts once every thread is up, not with a burst of the checks due
    // while they were started.
    let started = Instant::now() + Duration::from_millis(200);
    let deadline = started + duration;
    let results: Vec<Result<Phase, BenchError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let first = started + interval.mul_f64(i as f64 / clients.max(1) as f64);
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, move || {
                        let mut mine = Phase::default();
                        let mut due = first;
                        while due < deadline {
                            let now = Instant::now();
                            if due > now {
                                std::thread::sleep(due - now);
                            }
                            let (ok, _) = one(socket, op, pool)?;
                            if ok {
                                mine.done += 1;
                                mine.samples.push(due.elapsed());
                            } else {
                                mine.failed += 1;
                            }
                            due += interval;
                        }
                        Ok(mine)
                    })
            })
            .collect();
        handles.into_iter().map(joined).collect()
    });
    summed(results, started.elapsed())
}

/// Opens `n` logins whose default method is a push and leaves them waiting for the phone.
/// Returns the open connections (dropping them hangs up).
pub fn pending_pushes(socket: &Path, n: usize) -> Result<Vec<Client>, BenchError> {
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Client::connect(socket, Duration::from_secs(10), Duration::from_secs(120))
            .map_err(|e| BenchError(e.to_string()))?;
        c.send(&ClientMsg::Hello {
            version: mfa_proto::PROTOCOL_VERSION,
            op: auth_op(user_name(i), "192.0.2.7", AuthMode::Auto),
        })
        .map_err(|e| BenchError(e.to_string()))?;
        clients.push(c);
    }
    Ok(clients)
}

/// Raises this process's open-file limit to its hard limit (children inherit it): a
/// thousand waiting logins are a thousand sockets on each side.
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Starts mfad with `enrolled` users, all known to NSS.
pub fn daemon(
    mfad: &Path,
    dir: &Path,
    enrolled: usize,
    in_nss: usize,
    extra: &str,
    push_users: usize,
) -> Result<BenchDaemon, BenchError> {
    let extra = format!("{}{extra}", totp_section());
    BenchDaemon::start(mfad, dir, enrolled, in_nss, &extra, push_users)
}

/// A client thread's phase, or why it has none.
fn joined(
    h: std::io::Result<std::thread::ScopedJoinHandle<'_, Result<Phase, BenchError>>>,
) -> Result<Phase, BenchError> {
    match h {
        Ok(h) => h
            .join()
            .unwrap_or_else(|_| Err(BenchError("a client thread panicked".into()))),
        Err(e) => Err(BenchError(format!("cannot start a client thread: {e}"))),
    }
}

/// The client threads' phases as one.
fn summed(results: Vec<Result<Phase, BenchError>>, elapsed: Duration) -> Result<Phase, BenchError> {
    let mut total = Phase {
        elapsed,
        ..Phase::default()
    };
    for r in results {
        let r = r?;
        total.done += r.done;
        total.failed += r.failed;
        total.samples.extend(&r.samples);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_leaves_out_idle_and_iowait_and_guests_counted_in_user() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let stat = "cpu  100 5 40 800 20 3 2 1 50 0\ncpu0 50 2 20 400 10 1 1 0 25 0\n";
        assert_eq!(busy_and_total(stat), Some((151, 971)));
        assert_eq!(busy_and_total("intr 1 2 3\n"), None);
        assert_eq!(busy_and_total("cpu  1 2 x\n"), None);
    }
}
