//! mfad: the daemon that owns all second-factor policy and state.
//!
//! pam_mfa, mfa-login-prompt and the mfa CLI connect to its Unix socket; it checks each
//! caller's uid, drives the conversation, and keeps devices, codes and counters in SQLite.

pub mod accounts;
pub mod admin;
pub(crate) mod blocking;
pub mod calendar;
pub mod check;
pub mod clock;
pub mod config;
pub mod conn;
pub mod core;
pub mod daemon;
pub mod devices;
pub mod duo;
pub mod enrol_link;
pub mod enrol_web;
pub mod factor;
pub mod history;
pub mod http;
pub mod logging;
pub mod login;
pub mod metrics;
pub mod oob;
pub mod password;
pub mod policy;
pub mod portal;
pub mod providers;
pub mod random;
pub mod sealing;
pub mod secret_file;
pub mod server;
pub mod store;
pub mod text;
pub mod web;
pub mod webkey;

pub use clock::{Clock, FakeClock, SystemClock};
pub use config::Config;
pub use daemon::Daemon;
pub use store::Store;
