//! mfad: reads its config, opens the store, listens, and serves until SIGTERM or SIGINT.

use clap::Parser;
use mfad::oob::http::ApprovalEndpoint;
use mfad::{Config, Daemon, Store, SystemClock, config::DEFAULT_CONFIG, logging, server};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

#[derive(Parser)]
#[command(version, about = "Second-factor authentication daemon for SSH hosts")]
struct Args {
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
}

fn main() -> ExitCode {
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
        println!("{}: OK", args.config.display());
        println!("{}", config.describe());
        return ExitCode::SUCCESS;
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
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let store = match Store::open_with_key_file(&config.database, &config.store_key) {
        Ok(s) => s,
        Err(e) => {
            error!(
                "cannot open the database {}: {e}",
                config.database.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let listener = match server::bind(&config.socket) {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
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
        "listening on {} (database {})",
        socket.display(),
        config.database.display()
    );
    let approval = config.approval.clone();
    let twilio_token = config.twilio.as_ref().map(|t| t.auth_token.clone());
    let daemon = match Daemon::new(config, store, Arc::new(SystemClock)) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            error!("cannot set up the providers: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One signal stops the socket server and the approval endpoint alike.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut endpoint_task = None;
    if let Some(cfg) = approval {
        let endpoint = match ApprovalEndpoint::bind(
            &cfg,
            daemon.approvals(),
            daemon.approval_hooks(),
            twilio_token,
        )
        .await
        {
            Ok(e) => e,
            Err(e) => {
                error!("cannot start the approval endpoint: {e}");
                return ExitCode::FAILURE;
            }
        };
        info!(
            "approval endpoint on {}://{} (public URL {})",
            if endpoint.is_tls() { "https" } else { "http" },
            endpoint.local_addr(),
            cfg.public_base()
        );
        let _purger = daemon
            .approvals()
            .spawn_purger(std::time::Duration::from_secs(30));
        endpoint_task = Some(tokio::spawn(endpoint.serve(stopped(stop_rx.clone()))));
    }
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = stop_tx.send(true);
    };
    server::serve(daemon, listener, shutdown).await;
    if let Some(task) = endpoint_task {
        let _ = task.await;
    }
    let _ = std::fs::remove_file(&socket);
    ExitCode::SUCCESS
}
