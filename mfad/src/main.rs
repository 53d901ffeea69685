//! mfad: reads its config, opens the store, listens, and serves until SIGTERM or SIGINT.

use clap::Parser;
use mfad::{Config, Daemon, SystemClock, config::DEFAULT_CONFIG, logging, server};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(version, about = "Second-factor authentication daemon for SSH hosts")]
pub(crate) struct Args {
    /// The configuration file.
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Also log to stderr (for running by hand; syslog gets the record either way).
    #[arg(short, long)]
    foreground: bool,
    /// Check the configuration file, print the settings in force, and exit.
    #[arg(long)]
    check_config: bool,
    /// Create the store key (`store_key`) when it does not exist yet, then exit. The unit
    /// runs this outside its sandbox, where /etc/mfa is read-only.
    #[arg(long)]
    create_store_key: bool,
    /// Replace the database with the backup FILE (from `mfa admin backup`), then exit. mfad
    /// must be stopped. Every TOTP device's last spent step is raised to now (plus the
    /// window), HOTP counters move forward, unused bypass codes are marked spent, SMS
    /// passcodes and remembered logins are dropped: no code spent after the backup works again.
    #[arg(long, value_name = "FILE")]
    restore: Option<PathBuf>,
    /// With --restore: go on even though something answers on mfad's socket.
    #[arg(long, requires = "restore")]
    force: bool,
    /// With --restore: how far HOTP counters move forward (default: [hotp] look_ahead).
    #[arg(long, value_name = "N", requires = "restore")]
    hotp_advance: Option<u64>,
    /// With --restore: keep the backup's unused bypass codes usable (default: all spent).
    #[arg(long, requires = "restore")]
    keep_bypass_codes: bool,
    /// Copy the state in the SQLite file FILE (a node's /var/lib/mfa/mfa.db) into the store
    /// the configuration names (`store = "postgresql://…"`), all or nothing, then exit. The
    /// target must be empty unless --merge. FILE must have been written with this
    /// configuration's `store_key`.
    #[arg(long, value_name = "FILE")]
    migrate_store: Option<PathBuf>,
    /// With --migrate-store: merge into a store that already holds state (another node's):
    /// devices keep the larger counter, failures are summed, the later lock is kept.
    #[arg(long, requires = "migrate_store")]
    merge: bool,
}

/// `mfad --migrate-store`: offline, from a node's SQLite file into the configured store.
fn migrate_store(args: &Args, config: &Config, from: &std::path::Path) -> ExitCode {
    if config.location == mfad::config::StoreLocation::Sqlite && config.database == from {
        eprintln!(
            "mfad: {} is already the configured store; set store = \"postgresql://…\" in {} first",
            from.display(),
            args.config.display()
        );
        return ExitCode::from(2);
    }
    if !from.is_file() {
        eprintln!("mfad: {}: no such database file", from.display());
        return ExitCode::from(2);
    }
    let load_key = || mfad::sealing::StoreKey::load(&config.store_key, false);
    let (source_key, target_key) = match (load_key(), load_key()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("mfad: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mfad: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut source = match mfad::Store::open(from, source_key) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mfad: {}: {e}", from.display());
            return ExitCode::FAILURE;
        }
    };
    let mut target = match runtime.block_on(mfad::store::open::open_store(config, target_key)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "mfad: cannot open the {}: {e}",
                mfad::store::open::describe(config)
            );
            return ExitCode::FAILURE;
        }
    };
    // The store's calls block on the runtime: run them outside it, on this thread.
    match mfad::store::migrate::migrate(&mut source, &mut target, args.merge) {
        Ok(r) => {
            let summary = format!(
                "copied {} into the {}: {} users, {} devices ({} merged with devices already \
                 there), {} bypass codes, {} remembered logins",
                from.display(),
                mfad::store::open::describe(config),
                r.users,
                r.devices,
                r.devices_merged,
                r.bypass_codes,
                r.remembered
            );
            let uid = nix::unistd::getuid().as_raw();
            logging::admin_action(&format!("uid{uid}"), uid, "migrate-store", "-", &summary);
            println!("{summary}.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mfad: migration failed; nothing was written: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mfad --restore`: offline, because it replaces the file a running mfad holds open.
fn restore(args: &Args, config: &Config, from: &std::path::Path) -> ExitCode {
    if let mfad::config::StoreLocation::Postgres(_) = config.location {
        eprintln!(
            "mfad: --restore replaces an SQLite file; this configuration's store is PostgreSQL: \
             restore it with the database's own tools (pg_restore), then raise every TOTP \
             device's spent step as docs/CLUSTER.md says"
        );
        return ExitCode::from(2);
    }
    if std::os::unix::net::UnixStream::connect(&config.socket).is_ok() && !args.force {
        eprintln!(
            "mfad: mfad is running (it answers on {}); stop it first (systemctl stop mfad), \
             or add --force if that socket is not this mfad's",
            config.socket.display()
        );
        return ExitCode::from(2);
    }
    let key = match mfad::sealing::StoreKey::load(&config.store_key, false) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("mfad: {e}");
            return ExitCode::FAILURE;
        }
    };
    let policy = mfad::admin::backup::RestorePolicy {
        totp_window: config.totp.window,
        hotp_advance: args.hotp_advance.unwrap_or(config.hotp.look_ahead),
        keep_bypass_codes: args.keep_bypass_codes,
    };
    let now = mfad::Clock::now(&SystemClock);
    match mfad::admin::backup::restore(from, &config.database, key, policy, now) {
        Ok(r) => {
            let taken = r
                .taken_at
                .map_or_else(|| "unknown".to_string(), mfad::text::utc);
            let summary = format!(
                "{} restored from {} (taken {taken}): {} TOTP devices raised to the current \
                 step, {} HOTP counters advanced by {}, {}",
                config.database.display(),
                from.display(),
                r.totp_devices,
                r.hotp_devices,
                policy.hotp_advance,
                if policy.keep_bypass_codes {
                    "bypass codes kept".to_string()
                } else {
                    format!(
                        "unused bypass codes of {} users marked spent",
                        r.bypass_users.len()
                    )
                }
            );
            let uid = nix::unistd::getuid().as_raw();
            let by = mfad::accounts::Accounts::by_uid(&mfad::accounts::NssAccounts, uid)
                .ok()
                .flatten()
                .map_or_else(|| format!("uid{uid}"), |u| u.name);
            logging::admin_action(&by, uid, "restore", "-", &summary);
            println!("{summary}.");
            if !r.bypass_users.is_empty() {
                println!(
                    "These users need new bypass codes (mfa admin bypass-codes USER): {}",
                    r.bypass_users.join(" ")
                );
            }
            println!("Start mfad again.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("restore failed: {e}");
            eprintln!("mfad: restore failed; the database was not replaced: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `mfad --check-config`: errors exit 2; warnings are printed and the check passes. Written
/// so that a closed pipe (`mfad --check-config | head -1`) ends it quietly.
fn check_config(args: &Args, config: &Config) -> ExitCode {
    use std::io::Write;
    let found = mfad::check::check(config, &mfad::accounts::NssAccounts);
    for w in &found.warnings {
        eprintln!("mfad: {}: warning: {w}", args.config.display());
    }
    if !found.errors.is_empty() {
        for e in &found.errors {
            eprintln!("mfad: {}: {e}", args.config.display());
        }
        return ExitCode::from(2);
    }
    let text = format!("{}: OK\n{}\n", args.config.display(), config.describe());
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head -1`): what it read said OK.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mfad: cannot write the settings: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP: reads and checks `path` as `--check-config` does, keeps the running value of
/// each key that needs a restart (and says which), and builds the daemon new conversations
/// get. `None`, with the reason logged, when the new file is refused: the running
/// configuration stays.
fn reload(path: &std::path::Path, current: &Daemon) -> Option<Daemon> {
    info!("SIGHUP: reloading {}", path.display());
    let refused = |why: &str| {
        error!(
            "reload refused, the running configuration is kept: {}",
            mfad::config::redact_urls(why)
        );
    };
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            refused(&e.to_string());
            return None;
        }
    };
    let found = mfad::check::check(&config, &mfad::accounts::NssAccounts);
    for w in &found.warnings {
        warn!("{}: warning: {w}", path.display());
    }
    if !found.errors.is_empty() {
        for e in &found.errors {
            refused(&format!("{}: {e}", path.display()));
        }
        return None;
    }
    let (config, kept) = current.config().for_reload(config);
    for key in &kept {
        warn!(
            "reload: {key} changed in {}, but a running mfad cannot change it; keeping the \
             running value until a restart (systemctl restart mfad)",
            path.display()
        );
    }
    match current.reloaded(config) {
        Ok(next) => {
            info!(
                "configuration reloaded from {}; new logins use it, logins in progress finish \
                 with the one they started with",
                path.display()
            );
            Some(next)
        }
        Err(e) => {
            refused(&format!("cannot set up the providers: {e}"));
            None
        }
    }
}

fn main() -> ExitCode {
    // Before anything secret is read: no core file, no other process reading this memory.
    if let Err(e) = mfa_proto::alloc::keep_memory_private() {
        eprintln!("mfad: cannot keep its memory out of core files: {e}");
        return ExitCode::FAILURE;
    }
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            // A bad proxy URL is quoted in its error: never with its password.
            eprintln!("mfad: {}", mfad::config::redact_urls(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        return check_config(&args, &config);
    }
    if args.create_store_key {
        return match mfad::sealing::StoreKey::load(&config.store_key, true) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mfad: {e}");
                ExitCode::FAILURE
            }
        };
    }
    logging::init(&config.log, args.foreground);
    if let Some(from) = &args.restore {
        return restore(&args, &config, from);
    }
    if let Some(from) = &args.migrate_store {
        return migrate_store(&args, &config, from);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On a worker of the runtime, not this thread: a connection the accept loop takes is
    // then served by the same worker once the loop waits again, with no hand-off to another
    // thread (from this thread, every accepted connection woke a worker first).
    let daemon = runtime.spawn(run(config, args.config.clone()));
    runtime.block_on(async {
        daemon.await.unwrap_or_else(|e| {
            error!("mfad's main task ended abnormally: {e}");
            ExitCode::FAILURE
        })
    })
}

async fn run(config: Config, config_path: PathBuf) -> ExitCode {
    let store = match mfad::store::open::open_pool(&config).await {
        Ok(s) => s,
        Err(e) => {
            error!(
                "cannot open the {}: {e}",
                mfad::store::open::describe(&config)
            );
            return ExitCode::FAILURE;
        }
    };
    // Under systemd's mfad.socket the socket is systemd's: connections wait in its backlog
    // while mfad restarts. Otherwise mfad binds (and on exit removes) its own.
    let inherited = match server::inherited() {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let activated = inherited.is_some();
    let listener = match inherited {
        Some(std_listener) => {
            let path = std_listener
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(std::path::Path::to_path_buf));
            if path.as_deref() != Some(config.socket.as_path()) {
                warn!(
                    "systemd passed the socket {}, but `socket` in the config is {}; serving \
                     systemd's (pam_mfa's socket= and the mfa command must name it)",
                    path.as_deref()
                        .map_or_else(|| "(unnamed)".to_string(), |p| p.display().to_string()),
                    config.socket.display()
                );
            }
            let listener = std_listener
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixListener::from_std(std_listener));
            match listener {
                Ok(l) => l,
                Err(e) => {
                    error!("cannot use the socket systemd passed: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => match server::bind(&config.socket) {
            Ok(l) => l,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let socket = config.socket.clone();
    info!(
        "listening on {}{} ({})",
        socket.display(),
        if activated {
            " (socket from systemd)"
        } else {
            ""
        },
        mfad::store::open::describe(&config)
    );
    let approval = config.approval.clone();
    let metrics = config.metrics.clone();
    let daemon = match Daemon::new(config, store, Arc::new(SystemClock)) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            error!("cannot set up the providers: {e}");
            return ExitCode::FAILURE;
        }
    };
    daemon.share_approvals();
    // One signal stops the socket server and the metrics listener alike.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut metrics_task = None;
    if let Some(cfg) = metrics {
        let listener = match tokio::net::TcpListener::bind(cfg.listen).await {
            Ok(l) => l,
            Err(e) => {
                error!("cannot listen for metrics on {}: {e}", cfg.listen);
                return ExitCode::FAILURE;
            }
        };
        metrics_task = Some(tokio::spawn(mfad::metrics::serve(
            Arc::clone(&daemon),
            listener,
            stopped(stop_rx.clone()),
        )));
    }
    if approval.is_some() {
        // The approval pages are mfa-web's (its own unprivileged process); mfad only keeps
        // the pending requests and answers mfa-web's web-role requests on its socket.
        let _purger = daemon
            .approvals()
            .spawn_purger(std::time::Duration::from_secs(30));
    }
    // SIGHUP: reload the config for the conversations that start after it.
    let (daemon_tx, daemon_rx) = tokio::sync::watch::channel(Arc::clone(&daemon));
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(h) => h,
        Err(e) => {
            error!("cannot install the SIGHUP handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reloader = tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let path = config_path.clone();
            let current = Arc::clone(&daemon_tx.borrow());
            match tokio::task::spawn_blocking(move || reload(&path, &current)).await {
                Ok(Some(next)) => {
                    daemon_tx.send_replace(Arc::new(next));
                }
                Ok(None) => {}
                Err(e) => error!("reload failed: {e}; the running configuration is kept"),
            }
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    // The metrics stay up while the conversations in progress finish. mfa-web's requests
    // are new connections, which the socket no longer accepts once stopping began: a push
    // answered during the grace reaches its login only if it was answered before.
    let served = server::serve_with_grace(daemon_rx, listener, shutdown, server::SHUTDOWN_GRACE)
        .await
        .inspect_err(|e| error!("cannot watch the socket for connections: {e}"));
    reloader.abort();
    let _ = stop_tx.send(true);
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    if !activated {
        let _ = std::fs::remove_file(&socket);
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
