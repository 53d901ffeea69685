//! mfa-web: serves the approval pages and the voice provider's callbacks, relaying each to
//! mfad. Run it as its own unprivileged user (packaging/mfa-web.service).

use clap::Parser;
use mfa_web::{DEFAULT_CONFIG, WebConfig, WebServer};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};
use tracing::error;

/// The unprivileged web front of mfa: approval pages and voice callbacks, relayed to mfad.
#[derive(Parser)]
#[command(version)]
pub(crate) struct Args {
    /// The config file (listen, tls_cert, tls_key, socket, connections_per_address). A
    /// missing file at the default path means the defaults.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Overrides `listen`.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Overrides `tls_cert`.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Overrides `tls_key`.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Overrides `socket` (mfad's).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Check the config (and that the certificate and key load) and exit: 0 when it is
    /// good, 1 when it cannot be read or a key is wrong, 2 when a TLS file cannot be used.
    #[arg(long)]
    check_config: bool,
}

fn config(args: &Args) -> Result<WebConfig, mfa_web::WebError> {
    let mut cfg =
        if args.config.as_path() == std::path::Path::new(DEFAULT_CONFIG) && !args.config.exists() {
            WebConfig::default()
        } else {
            WebConfig::load(&args.config)?
        };
    if let Some(listen) = args.listen {
        cfg.listen = listen;
    }
    if let Some(cert) = &args.tls_cert {
        cfg.tls_cert = Some(cert.clone());
    }
    if let Some(key) = &args.tls_key {
        cfg.tls_key = Some(key.clone());
    }
    if let Some(socket) = &args.socket {
        cfg.socket = socket.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

#[tokio::main]
async fn main() -> ExitCode {
    // Before anything is read: no core file of sessions or typed passwords, and no other
    // process of the web user reading this memory.
    if let Err(e) = mfa_proto::alloc::keep_memory_private() {
        eprintln!("mfa-web: cannot keep its memory out of core files: {e}");
        return ExitCode::FAILURE;
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never into the journal or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MFA_WEB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cfg = match config(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            error!("{e}");
            eprintln!("mfa-web: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        if let Err(e) = cfg.check_files() {
            eprintln!("mfa-web: {e}");
            return ExitCode::from(2);
        }
        println!("{}: OK\n{cfg:#?}", args.config.display());
        return ExitCode::SUCCESS;
    }
    let server = match WebServer::bind(&cfg).await {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        error!("cannot install a SIGTERM handler");
        return ExitCode::FAILURE;
    };
    mfa_web::announce(&server, &cfg.socket);
    // SIGTERM (systemd) or Ctrl-C (by hand) stops the listener.
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    server.serve(stop).await;
    ExitCode::SUCCESS
}
