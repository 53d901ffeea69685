//! `mfa-bench`: measures mfad over its socket and ssh logins through a private sshd, prints
//! the tables, and (with `--write`) puts them into docs/BENCHMARKS.md between its markers.
//!
//! Run it through `scripts/bench.sh`, which builds the release binaries first. The machine
//! is shared and noisy: every comparison is made within one run, interleaved, by medians.

mod daemon;
mod floor;
mod ntfy;
mod pamcall;
mod report;
mod socket;
mod ssh;
mod stats;
mod wake;

use daemon::{BenchDaemon, StoreSpec};
use mfa_test_support::postgres::TestPostgres;
use report::{Report, StoreRow};
use socket::{Op, UserPool};
use stats::{Samples, median};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Any failure of the harness itself, as one readable sentence.
#[derive(Debug)]
pub struct BenchError(pub String);

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<std::io::Error> for BenchError {
    fn from(e: std::io::Error) -> Self {
        BenchError(format!("i/o error: {e}"))
    }
}

impl From<rusqlite::Error> for BenchError {
    fn from(e: rusqlite::Error) -> Self {
        BenchError(format!("sqlite: {e}"))
    }
}

impl From<mfa_e2e::HarnessError> for BenchError {
    fn from(e: mfa_e2e::HarnessError) -> Self {
        BenchError(e.to_string())
    }
}

/// How long and how often: the full run, or the smoke run CI may afford.
#[derive(Debug, Clone)]
pub struct Plan {
    pub smoke: bool,
    pub phase: Duration,
    pub rounds: usize,
    pub pool: usize,
    pub pending: usize,
    pub big_store: usize,
    pub ssh_rounds: usize,
    pub clients: Vec<usize>,
    /// The in-process PAM calls: users, measured rounds, fresh-process load probes.
    pub pam_users: usize,
    pub pam_rounds: usize,
    pub pam_loads: usize,
}

impl Plan {
    fn new(smoke: bool) -> Plan {
        if smoke {
            Plan {
                smoke,
                phase: Duration::from_millis(300),
                rounds: 1,
                pool: 2_000,
                pending: 100,
                big_store: 10_000,
                ssh_rounds: 3,
                clients: vec![1, 10, 50, 200],
                pam_users: 4,
                pam_rounds: 1,
                pam_loads: 3,
            }
        } else {
            Plan {
                smoke,
                phase: Duration::from_secs(2),
                rounds: 3,
                // Enough fresh (user, step) pairs for any one TOTP phase: 20 per user (the
                // window's steps past the last one spent), put back before each phase
                // (socket::UserPool::start_over); the open loop's 5,000/s for 6 s takes
                // 30,000. Each lookup in nss_wrapper's files is a scan of them: 250 to 550
                // µs at 8,000 entries (BENCHMARKS.md, "What the directory costs").
                pool: 2_000,
                pending: 1_000,
                big_store: 100_000,
                ssh_rounds: 200,
                clients: vec![1, 10, 50, 200],
                pam_users: 150,
                // 600 calls per module: enough pairs for the call-by-call intervals to
                // tell a few tens of µs apart (report::paired_table).
                pam_rounds: 4,
                pam_loads: 100,
            }
        }
    }
}

struct Args {
    smoke: bool,
    write: Option<PathBuf>,
    skip_ssh: bool,
    only_ssh: bool,
    only_pam: bool,
    only_memory: bool,
    ssh_rounds: Option<usize>,
    profile: Option<usize>,
    /// Client threads of the profile load.
    profile_clients: usize,
    /// Users of the profile's daemon, in its directory and enrolled; the load goes round them.
    profile_users: usize,
    /// `--decisions`: the profile's load is its policy decisions alone.
    profile_decisions_only: bool,
    /// Another mfad binary to compare with this one on SQLite (before/after a change).
    compare: Option<PathBuf>,
    /// `--postgres`: the comparison on a PostgreSQL store instead.
    compare_postgres: bool,
}

/// The number after `flag`, which must be above 0.
fn above_zero(value: Option<String>, flag: &str) -> Result<usize, BenchError> {
    value
        .and_then(|n| n.parse().ok())
        .filter(|&n: &usize| n > 0)
        .ok_or_else(|| BenchError(format!("{flag} needs a number above 0")))
}

fn parse_args() -> Result<Args, BenchError> {
    let mut a = Args {
        smoke: false,
        write: None,
        skip_ssh: false,
        only_ssh: false,
        only_pam: false,
        only_memory: false,
        ssh_rounds: None,
        profile: None,
        profile_clients: 1,
        profile_users: PROFILE_USERS,
        profile_decisions_only: false,
        compare: None,
        compare_postgres: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--smoke" => a.smoke = true,
            "--skip-ssh" => a.skip_ssh = true,
            "--only-ssh" => a.only_ssh = true,
            "--only-pam" => a.only_pam = true,
            "--only-memory" => a.only_memory = true,
            "--pam-load-probe" => {
                // Internal: one fresh process timing the first pam_start of a service.
                let service = it.next().unwrap_or_default();
                let module = it.next().unwrap_or_default();
                match pamcall::load_probe(&service, &module) {
                    Ok(()) => std::process::exit(0),
                    Err(e) => {
                        eprintln!("mfa-bench: {e}");
                        std::process::exit(1);
                    }
                }
            }
            "--socket-floor" => {
                // Internal: the socket floor's server (floor.rs), until killed.
                let socket = PathBuf::from(it.next().unwrap_or_default());
                if let Err(e) = floor::serve(&socket) {
                    eprintln!("mfa-bench: {e}");
                }
                std::process::exit(1);
            }
            "--write" => {
                a.write = Some(PathBuf::from(it.next().ok_or_else(|| {
                    BenchError("--write needs the path of BENCHMARKS.md".into())
                })?))
            }
            "--ssh-rounds" => {
                a.ssh_rounds = it.next().and_then(|n| n.parse().ok());
                if a.ssh_rounds.is_none() {
                    return Err(BenchError("--ssh-rounds needs a number".into()));
                }
            }
            "--compare-mfad" => {
                a.compare = Some(PathBuf::from(it.next().ok_or_else(|| {
                    BenchError("--compare-mfad needs the path of another mfad binary".into())
                })?))
            }
            "--postgres" => a.compare_postgres = true,
            "--clients" => a.profile_clients = above_zero(it.next(), "--clients")?,
            "--users" => a.profile_users = above_zero(it.next(), "--users")?,
            "--decisions" => a.profile_decisions_only = true,
            "--profile" => {
                a.profile = it.next().and_then(|n| n.parse().ok());
                if a.profile.is_none() {
                    return Err(BenchError("--profile needs a number of logins".into()));
                }
            }
            "-h" | "--help" => {
                println!(
                    "mfa-bench [--smoke] [--skip-ssh | --only-ssh | --only-pam | --only-memory] [--ssh-rounds N] [--write docs/BENCHMARKS.md]\n\
                     mfa-bench --profile N [--clients C] [--users U] [--decisions]   (N TOTP accepts and N policy decisions, by C clients (1), \
                     going round U users ({PROFILE_USERS}), each in the directory and enrolled; with --decisions, the decisions alone \
                     (U users give about 20 U fresh TOTP steps a minute: more accepts than that wait for new steps); \
                     with MFA_BENCH_WRAPPER=\"valgrind --tool=callgrind\", \"strace -f -o FILE\" \
                     or \"perf stat -o FILE\": the wrapper and mfad get SIGINT as a group at the end)\n\
                     mfa-bench --compare-mfad OTHER/mfad [--postgres]   (the socket rows on SQLite, or on a private PostgreSQL, OTHER against this build, interleaved)\n\
                     mfa-bench --socket-floor SOCKET   (serves the socket floor there until killed; the full run starts its own)\n\
                     Needs root, the release build (scripts/bench.sh builds it) and \
                     libnss-wrapper, libpam-google-authenticator, libpam-oath, python3-paramiko."
                );
                std::process::exit(0);
            }
            other => {
                return Err(BenchError(format!(
                    "unknown argument {other:?}; try --help"
                )));
            }
        }
    }
    if a.compare_postgres && a.compare.is_none() {
        return Err(BenchError("--postgres goes with --compare-mfad".into()));
    }
    Ok(a)
}

fn main() {
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("mfa-bench: {e}");
            std::process::exit(1);
        }
    }
}

fn run() -> Result<(), BenchError> {
    let args = parse_args()?;
    let mut plan = Plan::new(args.smoke);
    if let Some(n) = args.ssh_rounds {
        plan.ssh_rounds = n;
    }
    socket::raise_nofile();
    // Absolute: sshd's children load pam_mfa by this path from another directory.
    let bin = mfa_e2e::paths::bin_dir();
    let bin = bin.canonicalize().unwrap_or(bin);
    let mfad = bin.join("mfad");
    if !mfad.is_file() {
        return Err(BenchError(format!(
            "{} is missing: run scripts/bench.sh (it builds the release binaries)",
            mfad.display()
        )));
    }
    let scratch = tempdir("mfa-bench")?;
    if let Some(n) = args.profile {
        return profile(
            &mfad,
            &scratch.join("profile"),
            n,
            args.profile_clients,
            args.profile_users,
            args.profile_decisions_only,
        );
    }
    let mut report = Report::new(&plan, &bin);
    let started = Instant::now();
    if let Some(other) = &args.compare {
        let dir = scratch.join("compare");
        if args.compare_postgres {
            compare_postgres(other, &mfad, &dir, &plan, &mut report)?;
        } else {
            compare(other, &mfad, &dir, &plan, &mut report)?;
        }
        report.finish(started.elapsed());
        println!("{}", report.markdown());
        let _ = std::fs::remove_dir_all(&scratch);
        return Ok(());
    }
    if args.only_memory {
        memory(&mfad, &scratch.join("memory"), &plan, &mut report)?;
        report.finish(started.elapsed());
        println!("{}", report.markdown());
        let _ = std::fs::remove_dir_all(&scratch);
        return Ok(());
    }
    if !args.only_ssh {
        let r = pamcall::bench(&mfad, &bin, plan.pam_users, plan.pam_rounds, plan.pam_loads)?;
        report.pam_calls(&r);
    }
    if !args.only_ssh && !args.only_pam {
        concurrency(&mfad, &scratch.join("load"), &plan, &mut report)?;
        memory(&mfad, &scratch.join("memory"), &plan, &mut report)?;
        growth(&mfad, &scratch.join("growth"), &plan, &mut report)?;
    }
    if !args.skip_ssh && !args.only_pam {
        let result = ssh::bench(&bin, plan.ssh_rounds)?;
        report.ssh(&result);
    }
    report.finish(started.elapsed());
    let text = report.markdown();
    println!("{text}");
    if let Some(path) = args.write {
        report::write_into(&path, &text)?;
        eprintln!("mfa-bench: wrote {}", path.display());
    }
    let _ = std::fs::remove_dir_all(&scratch);
    // The figures above mean nothing if what they time did not work.
    if !report.problems().is_empty() {
        return Err(BenchError(format!(
            "what was measured did not all work:\n  {}",
            report.problems().join("\n  ")
        )));
    }
    Ok(())
}

/// The SQLite rows of the socket table for two mfad binaries (`before`, then this build's
/// `after`), interleaved in one run: each has its own store seeded alike.
fn compare(
    before: &std::path::Path,
    after: &std::path::Path,
    dir: &std::path::Path,
    plan: &Plan,
    report: &mut Report,
) -> Result<(), BenchError> {
    let binaries = [before, after];
    let daemons: Vec<BenchDaemon> = binaries
        .iter()
        .enumerate()
        .map(|(k, b)| {
            socket::daemon(
                b,
                &dir.join(format!("mfad-{k}")),
                plan.pool,
                plan.pool,
                "",
                0,
            )
        })
        .collect::<Result<_, _>>()?;
    let pools: Vec<UserPool> = daemons
        .iter()
        .map(|d| {
            UserPool::new(plan.pool).rewinding(socket::rewind_sqlite(d.dir.join("lib/mfa.db")))
        })
        .collect();
    let rows = interleaved(&daemons, [&pools[0], &pools[1]], plan)?;
    compared(
        before,
        after,
        rows,
        ("SQLite", "each on its own store seeded alike"),
        report,
        [&pools[0], &pools[1]],
    );
    drop(daemons);
    // The open-loop rows too, each binary on a fresh store.
    paced(
        before,
        &dir.join("paced-before"),
        plan,
        Some("before"),
        report,
    )?;
    paced(after, &dir.join("paced-after"), plan, Some("after"), report)
}

/// As [`compare`], both binaries as nodes of one private PostgreSQL store, seeded as the
/// full run's (one at a time: the phases are interleaved, never concurrent; every user's
/// steps are put back before each TOTP phase).
fn compare_postgres(
    before: &std::path::Path,
    after: &std::path::Path,
    dir: &std::path::Path,
    plan: &Plan,
    report: &mut Report,
) -> Result<(), BenchError> {
    let pg = start_postgres()?;
    let (url, password_file) = (pg.url(), pg.password_file());
    let store_key =
        daemon::seed_postgres(after, &dir.join("pg-seed"), plan.pool, &url, &password_file)?;
    let spec = StoreSpec::Postgres {
        url: &url,
        password_file: &password_file,
        store_key: &store_key,
    };
    let daemons: Vec<BenchDaemon> = [before, after]
        .iter()
        .enumerate()
        .map(|(k, b)| pg_node(b, &dir.join(format!("mfad-{k}")), plan, &spec))
        .collect::<Result<_, _>>()?;
    let pools = [
        UserPool::new(plan.pool).rewinding(rewind_postgres(&pg)),
        UserPool::new(plan.pool).rewinding(rewind_postgres(&pg)),
    ];
    first_logins(daemons.iter().map(|d| &d.socket), &pools[0])?;
    let rows = interleaved(&daemons, [&pools[0], &pools[1]], plan)?;
    compared(
        before,
        after,
        rows,
        (
            "PostgreSQL",
            "both nodes of one store seeded alike, one at a time",
        ),
        report,
        [&pools[0], &pools[1]],
    );
    Ok(())
}

/// A node of the PostgreSQL store `spec`: `mfad` with its configuration in `node`.
fn pg_node(
    mfad: &std::path::Path,
    node: &std::path::Path,
    plan: &Plan,
    spec: &StoreSpec<'_>,
) -> Result<BenchDaemon, BenchError> {
    let config = daemon::write_config(node, plan.pool, spec, &socket::totp_section())?;
    BenchDaemon::spawn(mfad, node, &config)
}

/// A [`socket::Rewind`] of the nodes on `pg`: every device's counter set, as
/// [`socket::rewind_sqlite`] does for one SQLite daemon.
fn rewind_postgres(pg: &TestPostgres) -> socket::Rewind<'_> {
    Box::new(move |step| {
        pg.psql(&format!("UPDATE devices SET counter = {step}"));
        Ok(())
    })
}

/// One login through each of `sockets`, one at a time: two nodes' first concurrent
/// lookups through nss_wrapper once found no such user (its files are read on first use);
/// a site's NSS has no such start.
fn first_logins<'a>(
    sockets: impl IntoIterator<Item = &'a PathBuf>,
    pool: &UserPool,
) -> Result<(), BenchError> {
    for socket in sockets {
        if !socket::one(socket, Op::Policy, pool)?.0 {
            return Err(BenchError(format!(
                "the first login through {} did not end as expected",
                socket.display()
            )));
        }
    }
    Ok(())
}

/// One compared row: the binary (0 before, 1 after), the check, its clients, each round's
/// rate, the samples and the checks that did not end as expected.
type CompareRound = (usize, Op, usize, Vec<f64>, Samples, usize);

/// The socket checks against `daemons` (before, after) in `plan.rounds` rounds, the order
/// reversed every other round, after a warm-up.
fn interleaved(
    daemons: &[BenchDaemon],
    pools: [&UserPool; 2],
    plan: &Plan,
) -> Result<Vec<CompareRound>, BenchError> {
    for (d, pool) in daemons.iter().zip(pools) {
        for op in [Op::Policy, Op::Totp] {
            socket::phase(
                std::slice::from_ref(&d.socket),
                op,
                8,
                Duration::from_millis(200),
                pool,
            )?;
        }
    }
    let mut rows: Vec<CompareRound> = Vec::new();
    for op in [Op::Totp, Op::Policy] {
        for &clients in &plan.clients {
            for k in 0..daemons.len() {
                rows.push((k, op, clients, Vec::new(), Samples::default(), 0));
            }
        }
    }
    for round in 0..plan.rounds {
        eprintln!("mfa-bench: comparison round {}/{}", round + 1, plan.rounds);
        let order: Vec<usize> = if round % 2 == 0 {
            (0..rows.len()).collect()
        } else {
            (0..rows.len()).rev().collect()
        };
        for i in order {
            let (k, op, clients, rates, samples, failed) = &mut rows[i];
            socket::quiet(QUIET_LIMIT);
            let p = socket::phase(
                std::slice::from_ref(&daemons[*k].socket),
                *op,
                *clients,
                plan.phase,
                pools[*k],
            )?;
            eprintln!(
                "mfa-bench:   {} {} clients, {}: {:.0}/s, p50 {} ms, p99 {} ms, max {} ms, {} samples",
                op.label(),
                clients,
                if *k == 0 { "before" } else { "after" },
                p.per_second(),
                stats::ms(p.samples.median()),
                stats::ms(p.samples.percentile(99.0)),
                stats::ms(p.samples.percentile(100.0)),
                p.samples.len()
            );
            rates.push(p.per_second());
            samples.extend(&p.samples);
            *failed += p.failed;
        }
    }
    Ok(rows)
}

/// The compared rows into the report's table; `store`: the store's name and how the two
/// daemons use it.
fn compared(
    before: &std::path::Path,
    after: &std::path::Path,
    rows: Vec<CompareRound>,
    store: (&str, &str),
    report: &mut Report,
    pools: [&UserPool; 2],
) {
    let labels = [
        format!("before ({})", before.display()),
        format!("after ({})", after.display()),
    ];
    let compared: Vec<report::CompareRow> = rows
        .into_iter()
        .map(
            |(k, op, clients, rates, samples, failed)| report::CompareRow {
                binary: labels[k].clone(),
                reference: k == 0,
                op,
                clients,
                per_second: median(&rates),
                samples,
                failed,
            },
        )
        .collect();
    report.compare(&compared, store, [pools[0].waits(), pools[1].waits()]);
}

/// The open-loop rows, against a fresh mfad on SQLite with its own users, their steps put
/// back before each TOTP row (a client waiting for the clock would count its wait as mfad's
/// latency).
fn paced(
    mfad: &std::path::Path,
    dir: &std::path::Path,
    plan: &Plan,
    binary: Option<&str>,
    report: &mut Report,
) -> Result<(), BenchError> {
    let d = socket::daemon(mfad, dir, plan.pool, plan.pool, "", 0)?;
    let pool = UserPool::new(plan.pool).rewinding(socket::rewind_sqlite(d.dir.join("lib/mfa.db")));
    // Warm up: every user looked up once (NSS, the account cache), the statement cache.
    for op in [Op::Policy, Op::Totp] {
        socket::phase(
            std::slice::from_ref(&d.socket),
            op,
            8,
            Duration::from_millis(200),
            &pool,
        )?;
    }
    for _ in 0..plan.pool {
        socket::one(&d.socket, Op::Policy, &pool)?;
    }
    for (op, rate) in PACED {
        let p = socket::paced_phase(
            &d.socket,
            op,
            PACED_CLIENTS,
            rate,
            plan.phase * plan.rounds as u32,
            &pool,
        )?;
        report.paced_row(op, binary, PACED_CLIENTS, rate, &p);
    }
    report.paced_waits(binary, pool.waits());
    Ok(())
}

/// Users of `--profile`'s daemon unless `--users` says otherwise: few, so that the
/// directory's lookups (nss_wrapper's, 11 to 28 µs each at 400 entries, 250 to 550 µs at
/// 8,000) are a small part of the profile, and each user's account stays in mfad's cache.
const PROFILE_USERS: usize = 400;

/// The longest a socket phase waits for the machine to go quiet before it starts.
const QUIET_LIMIT: Duration = Duration::from_secs(5);

/// A fixed load for a profiler: `n` TOTP accepts, then `n` policy decisions, shared by
/// `clients` client threads, going round `users` users (the decisions alone if
/// `decisions_only`).
fn profile(
    mfad: &std::path::Path,
    dir: &std::path::Path,
    n: usize,
    clients: usize,
    users: usize,
    decisions_only: bool,
) -> Result<(), BenchError> {
    let mut d = socket::daemon(mfad, dir, users, users, "", 0)?;
    let pool = UserPool::new(users);
    let started = Instant::now();
    let ops: &[Op] = if decisions_only {
        &[Op::Policy]
    } else {
        &[Op::Totp, Op::Policy]
    };
    for &op in ops {
        let phase_started = Instant::now();
        let done: Vec<Result<(usize, Samples), BenchError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|i| {
                    let (socket, pool) = (&d.socket, &pool);
                    let mine = n / clients + usize::from(i < n % clients);
                    s.spawn(move || {
                        let (mut ok, mut took) = (0, Samples::default());
                        for _ in 0..mine {
                            let (fine, t) = socket::one(socket, op, pool)?;
                            ok += usize::from(fine);
                            took.push(t);
                        }
                        Ok((ok, took))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(BenchError("a client thread panicked".into())))
                })
                .collect()
        });
        let elapsed = phase_started.elapsed();
        let (mut ok, mut took) = (0, Samples::default());
        for d in done {
            let (fine, t) = d?;
            ok += fine;
            took.extend(&t);
        }
        eprintln!(
            "mfa-bench: {ok}/{n} {} as expected ({clients} clients, {elapsed:?}; p50 {} ms, \
             p99 {} ms, max {} ms)",
            op.label(),
            stats::ms(took.median()),
            stats::ms(took.percentile(99.0)),
            stats::ms(took.percentile(100.0))
        );
    }
    eprintln!("mfa-bench: profile load took {:?}", started.elapsed());
    d.stop();
    Ok(())
}

fn tempdir(prefix: &str) -> Result<PathBuf, BenchError> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The stores the concurrency table compares, in its order.
const SETUPS: [&str; 3] = [
    "SQLite, 1 node",
    "PostgreSQL, 1 node",
    "PostgreSQL, 2 nodes",
];

/// A real PostgreSQL server (the test harness's: a fresh cluster, fsync on), or why not.
pub(crate) fn start_postgres() -> Result<TestPostgres, BenchError> {
    // The harness panics with its reason (no server installed, initdb failed): keep it.
    std::panic::catch_unwind(TestPostgres::start).map_err(|why| {
        let why = why
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| why.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        BenchError(format!("cannot start PostgreSQL for the benchmark: {why}"))
    })
}

/// Rows of the concurrency tables: for each (op, clients) and each store setup, per-round
/// throughputs and all latencies. The setups of one (op, clients) run next to each other and
/// the rounds are interleaved, so drift in the machine's load hits every row alike.
fn concurrency(
    mfad: &std::path::Path,
    dir: &std::path::Path,
    plan: &Plan,
    report: &mut Report,
) -> Result<(), BenchError> {
    eprintln!(
        "mfa-bench: mfad with {} enrolled users, on SQLite and on PostgreSQL",
        plan.pool
    );
    let sqlite = socket::daemon(mfad, &dir.join("sqlite"), plan.pool, plan.pool, "", 0)?;
    let pg = start_postgres()?;
    let password_file = pg.password_file();
    let url = pg.url();
    let started = Instant::now();
    let store_key =
        daemon::seed_postgres(mfad, &dir.join("pg-seed"), plan.pool, &url, &password_file)?;
    eprintln!(
        "mfa-bench: PostgreSQL seeded by mfad --migrate-store in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let spec = StoreSpec::Postgres {
        url: &url,
        password_file: &password_file,
        store_key: &store_key,
    };
    let nodes: Vec<BenchDaemon> = ["pg-a", "pg-b"]
        .iter()
        .map(|name| pg_node(mfad, &dir.join(name), plan, &spec))
        .collect::<Result<_, _>>()?;
    // The two PostgreSQL setups share one database, hence one record of spent steps.
    let sqlite_pool =
        UserPool::new(plan.pool).rewinding(socket::rewind_sqlite(sqlite.dir.join("lib/mfa.db")));
    let pg_pool = UserPool::new(plan.pool).rewinding(rewind_postgres(&pg));
    // The socket floor (floor.rs) runs beside them, interleaved, as a fourth setup.
    let floor = BenchDaemon::spawn_floor(&dir.join("floor"))?;
    let floor_pool = UserPool::reusable(plan.pool);
    let setups: [(Vec<PathBuf>, &UserPool); 4] = [
        (vec![sqlite.socket.clone()], &sqlite_pool),
        (vec![nodes[0].socket.clone()], &pg_pool),
        (nodes.iter().map(|n| n.socket.clone()).collect(), &pg_pool),
        (vec![floor.socket.clone()], &floor_pool),
    ];
    const FLOOR: usize = 3;
    first_logins(
        [&sqlite.socket, &nodes[0].socket, &nodes[1].socket],
        &sqlite_pool,
    )?;
    // Warm up: page cache, the first connections, SQLite's statement cache, each node's
    // pool of PostgreSQL connections.
    for (sockets, pool) in &setups {
        for op in [Op::Policy, Op::Totp] {
            let w = socket::phase(sockets, op, 8, Duration::from_millis(200), pool)?;
            if w.failed > 0 {
                return Err(BenchError(format!(
                    "{} of {} warm-up checks ({}) did not end as expected",
                    w.failed,
                    w.failed + w.done,
                    op.label()
                )));
            }
        }
    }
    struct Row {
        setup: usize,
        op: Op,
        clients: usize,
        rates: Vec<f64>,
        samples: Samples,
        failed: usize,
    }
    let mut rows: Vec<Row> = Vec::new();
    for op in [Op::Totp, Op::Policy] {
        for &clients in &plan.clients {
            for setup in 0..setups.len() {
                rows.push(Row {
                    setup,
                    op,
                    clients,
                    rates: Vec::new(),
                    samples: Samples::default(),
                    failed: 0,
                });
            }
        }
    }
    for round in 0..plan.rounds {
        eprintln!("mfa-bench: socket round {}/{}", round + 1, plan.rounds);
        // Alternate the order each round.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..rows.len()).collect()
        } else {
            (0..rows.len()).rev().collect()
        };
        for i in order {
            let row = &mut rows[i];
            let (sockets, pool) = &setups[row.setup];
            let waited = socket::quiet(QUIET_LIMIT);
            let p = socket::phase(sockets, row.op, row.clients, plan.phase, pool)?;
            eprintln!(
                "mfa-bench:   {} {} clients, {}: {:.0}/s, p50 {} ms, p99 {} ms (after {} ms for \
                 the machine to go quiet)",
                row.op.label(),
                row.clients,
                SETUPS.get(row.setup).copied().unwrap_or("socket floor"),
                p.per_second(),
                stats::ms(p.samples.median()),
                stats::ms(p.samples.percentile(99.0)),
                waited.as_millis()
            );
            row.rates.push(p.per_second());
            row.samples.extend(&p.samples);
            row.failed += p.failed;
        }
    }
    // Latency at a given load (open loop, SQLite): the rates the targets name.
    paced(mfad, &dir.join("paced"), plan, None, report)?;
    let floor_of = |op: Op, clients: usize| {
        rows.iter()
            .find(|r| r.setup == FLOOR && r.op == op && r.clients == clients)
            .map(|r| (median(&r.rates), r.failed))
    };
    let floors: Vec<_> = rows.iter().map(|r| floor_of(r.op, r.clients)).collect();
    let mut compared = Vec::new();
    for (row, floor) in rows.into_iter().zip(floors) {
        let rate = median(&row.rates);
        if row.setup == FLOOR {
            if row.failed > 0 {
                report.problem(format!(
                    "{} socket floor conversations ({}, {} clients) did not end as expected",
                    row.failed,
                    row.op.label(),
                    row.clients
                ));
            }
            continue;
        }
        if row.setup == 0 {
            report.load_row(
                row.op,
                row.clients,
                &row.rates,
                floor.map(|(f, _)| f),
                &row.samples,
                row.failed,
            );
        }
        compared.push(StoreRow {
            setup: SETUPS[row.setup],
            reference: row.setup == 0,
            op: row.op,
            clients: row.clients,
            per_second: rate,
            samples: row.samples,
            failed: row.failed,
        });
    }
    report.stores(
        &compared,
        &postgres_version(&pg),
        [sqlite_pool.waits(), pg_pool.waits()],
    );
    drop(nodes);
    drop(sqlite);
    drop(floor);
    Ok(())
}

/// The open-loop rows: checks started per second, by kind.
const PACED: [(Op, f64); 4] = [
    (Op::Totp, 2_500.0),
    (Op::Totp, 5_000.0),
    (Op::Policy, 10_000.0),
    (Op::Policy, 20_000.0),
];

/// The open-loop rows' connections at a time, at most.
const PACED_CLIENTS: usize = 200;

/// `postgres (PostgreSQL) 15.x (Debian …)`, from the server binary in use.
fn postgres_version(pg: &TestPostgres) -> String {
    std::process::Command::new(pg.bin_dir().join("postgres"))
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "PostgreSQL (version unknown)".into())
}

fn memory(
    mfad: &std::path::Path,
    dir: &std::path::Path,
    plan: &Plan,
    report: &mut Report,
) -> Result<(), BenchError> {
    let ntfy = ntfy::FakeNtfy::start()?;
    let approval_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let extra = format!(
        "\n[approval]\npublic_url = \"http://127.0.0.1:{approval_port}\"\ntoken_ttl = 600\n\n\
         [push]\nnotifier = \"ntfy\"\nurl = \"http://127.0.0.1:{}/\"\n",
        ntfy.port
    );
    let users = plan.pending;
    // Every user's default method is a push to its own topic.
    let mut d = socket::daemon(mfad, dir, users, users, &extra, users)?;
    std::thread::sleep(Duration::from_millis(500));
    let (idle, _) = d.rss_kib()?;
    // One login of each kind, so the idle figure after use counts warmed-up caches.
    let pool = UserPool::new(users);
    let _ = socket::one(&d.socket, Op::Policy, &pool)?;
    std::thread::sleep(Duration::from_millis(200));
    let (idle_used, _) = d.rss_kib()?;
    let started = Instant::now();
    let clients = socket::pending_pushes(&d.socket, users)?;
    while ntfy.count() < users && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = ntfy.count();
    std::thread::sleep(Duration::from_millis(300));
    let (pending, peak) = d.rss_kib()?;
    drop(clients);
    d.stop();
    report.memory(idle, idle_used, pending, peak, sent, users);
    Ok(())
}

fn growth(
    mfad: &std::path::Path,
    dir: &std::path::Path,
    plan: &Plan,
    report: &mut Report,
) -> Result<(), BenchError> {
    const MEASURED: usize = 10;
    let sizes = [MEASURED, plan.big_store];
    eprintln!("mfa-bench: stores of {} and {} users", sizes[0], sizes[1]);
    let daemons: Vec<_> = sizes
        .iter()
        .map(|&n| socket::daemon(mfad, &dir.join(format!("users-{n}")), n, MEASURED, "", 0))
        .collect::<Result<_, _>>()?;
    let pools: Vec<UserPool> = sizes.iter().map(|_| UserPool::new(MEASURED)).collect();
    let ops = [(Op::Policy, 200), (Op::WrongCode, 50), (Op::Totp, 6)];
    let mut samples = vec![vec![Samples::default(); ops.len()]; sizes.len()];
    let mut failed = vec![vec![0usize; ops.len()]; sizes.len()];
    let rounds = if plan.smoke { 1 } else { 5 };
    for round in 0..rounds {
        for k in 0..sizes.len() {
            let k = if round % 2 == 0 {
                k
            } else {
                sizes.len() - 1 - k
            };
            for (j, &(op, n)) in ops.iter().enumerate() {
                for _ in 0..n {
                    let (ok, took) = socket::one(&daemons[k].socket, op, &pools[k])?;
                    if ok {
                        samples[k][j].push(took);
                    } else {
                        failed[k][j] += 1;
                    }
                }
            }
        }
    }
    for (j, &(op, _)) in ops.iter().enumerate() {
        report.growth_row(op, sizes, &samples[0][j], &samples[1][j]);
        for (k, size) in sizes.iter().enumerate() {
            if failed[k][j] > 0 {
                report.problem(format!(
                    "{} of the {} checks against {size} users did not end as expected",
                    failed[k][j],
                    op.label()
                ));
            }
        }
    }
    Ok(())
}
