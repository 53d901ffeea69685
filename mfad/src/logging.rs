//! Logs: syslog (facility authpriv) for the record, stderr when run in the foreground.

use crate::config::{LogConfig, LogLevel};
use std::ffi::CStr;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

const IDENTITY: &CStr = c"mfad";

fn level(l: LogLevel) -> LevelFilter {
    match l {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
    }
}

pub fn init(config: &LogConfig, stderr: bool) {
    let filter = level(config.level);
    let stderr_layer = stderr.then(|| {
        fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false)
            .with_filter(filter)
    });
    let syslog_layer = if config.syslog {
        syslog_tracing::Syslog::new(
            IDENTITY,
            syslog_tracing::Options::LOG_PID,
            syslog_tracing::Facility::AuthPriv,
        )
        .map(|w| {
            fmt::layer()
                .with_writer(w)
                .with_ansi(false)
                .without_time()
                .with_target(false)
                .with_level(false)
                .with_filter(filter)
        })
    } else {
        None
    };
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(syslog_layer)
        .try_init();
}
