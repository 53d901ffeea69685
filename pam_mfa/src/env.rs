//! What the module needs from PAM, as a trait: the real handle implements it in
//! [`crate::handle`], tests implement it with a script.

use pam::constants::PamResultCode;
use zeroize::Zeroizing;

/// The PAM items the module reads besides the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PamItem {
    Service,
    RHost,
    Tty,
}

/// Syslog priorities the module uses (facility authpriv is pam_syslog's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Alert,
    Err,
    Warning,
    Notice,
    Debug,
}

impl LogLevel {
    pub fn priority(self) -> libc::c_int {
        match self {
            LogLevel::Alert => libc::LOG_ALERT,
            LogLevel::Err => libc::LOG_ERR,
            LogLevel::Warning => libc::LOG_WARNING,
            LogLevel::Notice => libc::LOG_NOTICE,
            LogLevel::Debug => libc::LOG_DEBUG,
        }
    }
}

pub trait PamEnv {
    /// PAM_USER, as `pam_get_user` returns it (it may ask the application for it).
    fn user(&mut self) -> Result<String, PamResultCode>;
    /// A PAM item; `None` when unset.
    fn item(&mut self, item: PamItem) -> Option<String>;
    /// A variable of the PAM environment (`pam_getenv`), not of the process.
    fn getenv(&mut self, name: &str) -> Option<String>;
    /// PAM_TEXT_INFO.
    fn info(&mut self, text: &str) -> Result<(), PamResultCode>;
    /// PAM_ERROR_MSG.
    fn error(&mut self, text: &str) -> Result<(), PamResultCode>;
    /// PAM_PROMPT_ECHO_ON when `echo`, else PAM_PROMPT_ECHO_OFF. `Ok(None)` when the
    /// application returned no text.
    fn prompt(
        &mut self,
        text: &str,
        echo: bool,
    ) -> Result<Option<Zeroizing<String>>, PamResultCode>;
    /// `pam_syslog`. Never pass an answer here.
    fn syslog(&mut self, level: LogLevel, message: &str);
}
