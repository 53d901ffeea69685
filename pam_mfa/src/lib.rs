//! pam_mfa: the PAM glue between a PAM stack (sshd, su, ...) and mfad.
//!
//! It holds no secret and no policy: it reads its module arguments, gathers the login's
//! context, and relays mfad's conversation through PAM. All of that lives in
//! [`authenticate`], generic over [`PamEnv`] so it is tested without libpam; the hooks
//! below only hand the real PAM handle to it.

pub mod args;
pub mod authenticate;
pub mod env;
pub mod handle;

pub use args::{FailMode, ModuleArgs};
pub use authenticate::authenticate;
pub use env::{LogLevel, PamEnv, PamItem};
pub use mfa_proto::client::{INTERRUPTED_TEXT, UNAVAILABLE_SAFE_TEXT, UNAVAILABLE_SECURE_TEXT};

use pam::constants::{PamFlag, PamResultCode};
use pam::module::{PamHandle, PamHooks};
use std::ffi::CStr;

/// The module as PAM sees it; `pam_hooks!` wraps every hook in `catch_unwind`.
pub struct PamMfa;
pam::pam_hooks!(PamMfa);

impl PamHooks for PamMfa {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        #[cfg(feature = "unwind-probe")]
        #[allow(clippy::panic)] // the probe's whole point (a test-only feature)
        if args.iter().any(|a| a.to_bytes() == b"unwind-probe") {
            panic!("unwind probe");
        }
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        authenticate(&mut handle::PamHandleEnv::new(pamh), &args)
    }

    // Success, not ignore: after a successful auth stack the application calls setcred,
    // and this module has no credential to set, so it must not make that call fail.
    fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }

    // acct_mgmt, open/close_session and chauthtok keep the default PAM_IGNORE: the second
    // factor is proven in auth only, and IGNORE leaves the outcome of those stacks to the
    // other modules if an admin lists pam_mfa there by mistake.
}
