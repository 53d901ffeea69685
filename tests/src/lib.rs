//! End-to-end test harness: real users, a real mfad, a real sshd and the real OpenSSH client.
//!
//! Each test builds one [`TestEnv`]: a throwaway Unix user, a private mfad on its own socket and
//! database, a private PAM service and a private sshd on its own port of 127.0.0.1. Everything
//! it creates is removed when the `TestEnv` is dropped, also when the test panics.
//!
//! The harness needs root (it runs `useradd`, writes `/etc/pam.d/` and starts sshd) and the
//! workspace built first (`cargo build --workspace`; `scripts/test.sh` does both).

pub mod browser;
pub mod cli;
pub mod clock;
pub mod env;
pub mod error;
/// The fake phone (ntfy, Twilio and the phone's owner) lives with mfad's test support.
pub use mfa_test_support::fake_phone;
pub mod interactive;
pub mod leftovers;
pub mod mfad;
pub mod pam_login;
pub mod paths;
pub mod process;
pub mod qr;
pub mod scratch;
pub mod ssh;
pub mod sshd;
pub mod totp;
pub mod user;

pub use cli::{CliOutput, parse_bypass_codes};
pub use env::{Enrolment, FailMode, TestEnv, TestEnvBuilder};
pub use error::{Context, HarnessError, Result};
pub use mfad::MfadConfig;
pub use ssh::{LoginOutcome, SshClient};
pub use totp::TotpSecret;
