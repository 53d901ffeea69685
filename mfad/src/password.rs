//! Checking a user's password for mfa-web's enrolment page: through a PAM service of mfad's
//! own (`/etc/pam.d/mfa-web`, auth and account), driven from mfad (root, so pam_unix can
//! read the shadow file). The FFI is wrapped here once; nothing else touches PAM's
//! pointers. The conversation answers only the hidden prompt, with the password.

use std::ffi::{CString, c_char, c_int, c_void};

/// How a password check went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordVerdict {
    /// The password is the user's and the account may log in.
    Right,
    /// Wrong password, or an account PAM refuses.
    Wrong,
    /// PAM could not decide (the service is missing, a module failed).
    Unavailable(String),
}

/// Checks a user's password. Blocking: call it off the async threads.
pub trait PasswordCheck: Send + Sync {
    /// `rhost`: the client's address, or "-" when unknown (PAM's `PAM_RHOST`).
    fn check(&self, user: &str, password: &str, rhost: &str) -> PasswordVerdict;
}

/// PAM must answer within this.
const PASSWORD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// At most this many password checks run at once (PAM modules can be slow, and a failed
/// check may sleep for pam_faildelay): a flood of sign-ins waits for a slot instead of
/// filling mfad's blocking threads, which its store calls need too.
pub const MAX_CONCURRENT_CHECKS: usize = 8;
static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_CHECKS);

/// Checks `password` for `user` off the async threads, within [`PASSWORD_TIMEOUT`] (the wait
/// for a slot included). A check that outlives the timeout keeps its slot until PAM returns,
/// so hung modules cannot pile up threads.
pub(crate) async fn check_off_thread(
    checker: &std::sync::Arc<dyn PasswordCheck>,
    user: &str,
    password: mfa_proto::web::Password,
    rhost: &str,
) -> PasswordVerdict {
    let checker = std::sync::Arc::clone(checker);
    let (u, r) = (user.to_string(), rhost.to_string());
    let check = async move {
        let Ok(slot) = SLOTS.acquire().await else {
            return PasswordVerdict::Unavailable("password checks are closed".into());
        };
        let run = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            checker.check(&u, password.expose(), &r)
        });
        match run.await {
            Ok(verdict) => verdict,
            Err(e) => PasswordVerdict::Unavailable(e.to_string()),
        }
    };
    match tokio::time::timeout(PASSWORD_TIMEOUT, check).await {
        Ok(verdict) => verdict,
        Err(_) => PasswordVerdict::Unavailable("PAM did not answer in time".into()),
    }
}

/// The PAM service mfad checks web passwords through by default.
pub const DEFAULT_SERVICE: &str = "mfa-web";

/// Passwords checked through the PAM service `service` (`/etc/pam.d/{service}`).
pub struct PamPasswords {
    pub service: String,
}

const PAM_SUCCESS: c_int = 0;
const PAM_RHOST: c_int = 4;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_AUTH_ERR: c_int = 7;
const PAM_USER_UNKNOWN: c_int = 10;
const PAM_MAXTRIES: c_int = 11;
const PAM_PERM_DENIED: c_int = 6;
const PAM_ACCT_EXPIRED: c_int = 13;
const PAM_NEW_AUTHTOK_REQD: c_int = 12;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;
const PAM_SILENT: c_int = 0x8000;
const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x1;

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    c_int,
    *mut *const PamMessage,
    *mut *mut PamResponse,
    *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_start(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        pamh: *mut *mut c_void,
    ) -> c_int;
    fn pam_authenticate(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_set_item(pamh: *mut c_void, item_type: c_int, item: *const c_void) -> c_int;
    fn pam_acct_mgmt(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_end(pamh: *mut c_void, status: c_int) -> c_int;
}

/// Answers PAM's prompts: the hidden one with the password (`appdata`, a C string), the
/// texts with nothing; anything else (a visible prompt: a user name, a new password) fails
/// the conversation. Never panics: it runs under C.
unsafe extern "C" fn answer_password(
    n: c_int,
    msgs: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    if n <= 0 || msgs.is_null() || resp.is_null() || appdata.is_null() {
        return PAM_CONV_ERR;
    }
    let count = n as usize;
    // SAFETY: libpam frees the responses with free(): they must come from the C allocator.
    let out =
        unsafe { libc::calloc(count, std::mem::size_of::<PamResponse>()) } as *mut PamResponse;
    if out.is_null() {
        return PAM_BUF_ERR;
    }
    for i in 0..count {
        // SAFETY: Linux-PAM passes an array of `n` message pointers.
        let msg = unsafe { *msgs.add(i) };
        let style = if msg.is_null() {
            -1
        } else {
            // SAFETY: a non-null message from libpam.
            unsafe { (*msg).msg_style }
        };
        match style {
            PAM_PROMPT_ECHO_OFF => {
                // SAFETY: appdata is the NUL-terminated password this module passed.
                let copy = unsafe { libc::strdup(appdata as *const c_char) };
                if copy.is_null() {
                    // SAFETY: frees what was handed out so far, then the array.
                    unsafe { free_responses(out, i) };
                    return PAM_BUF_ERR;
                }
                // SAFETY: `out` has `count` zeroed entries.
                unsafe { (*out.add(i)).resp = copy };
            }
            PAM_ERROR_MSG | PAM_TEXT_INFO => {}
            _ => {
                // SAFETY: as above.
                unsafe { free_responses(out, i) };
                return PAM_CONV_ERR;
            }
        }
    }
    // SAFETY: libpam owns the array from here.
    unsafe { *resp = out };
    PAM_SUCCESS
}

/// Wipes and frees the first `filled` responses, then the array.
unsafe fn free_responses(out: *mut PamResponse, filled: usize) {
    for i in 0..filled {
        // SAFETY: entries below `filled` are zeroed or hold a strdup'ed string.
        let r = unsafe { (*out.add(i)).resp };
        if !r.is_null() {
            // SAFETY: a NUL-terminated string from strdup.
            unsafe {
                let len = libc::strlen(r);
                std::ptr::write_bytes(r, 0, len);
                libc::free(r as *mut c_void);
            }
        }
    }
    // SAFETY: the array from calloc.
    unsafe { libc::free(out as *mut c_void) };
}

impl PasswordCheck for PamPasswords {
    fn check(&self, user: &str, password: &str, rhost: &str) -> PasswordVerdict {
        let (Ok(service), Ok(c_user)) = (CString::new(self.service.as_str()), CString::new(user))
        else {
            return PasswordVerdict::Wrong;
        };
        let Ok(secret) = CString::new(password) else {
            return PasswordVerdict::Wrong;
        };
        let secret = zeroize::Zeroizing::new(secret.into_bytes_with_nul());
        let conv = PamConv {
            conv: Some(answer_password),
            appdata_ptr: secret.as_ptr() as *mut c_void,
        };
        let mut pamh: *mut c_void = std::ptr::null_mut();
        // SAFETY: valid C strings and a conversation that outlives the handle.
        let rc = unsafe { pam_start(service.as_ptr(), c_user.as_ptr(), &conv, &mut pamh) };
        if rc != PAM_SUCCESS || pamh.is_null() {
            return PasswordVerdict::Unavailable(format!("pam_start failed ({rc})"));
        }
        // The client's address, for modules that log or decide on it (pam_faillock,
        // pam_access); pam_set_item copies the string.
        if rhost != "-"
            && let Ok(c_rhost) = CString::new(rhost)
        {
            // SAFETY: a handle pam_start returned and a NUL-terminated string.
            unsafe { pam_set_item(pamh, PAM_RHOST, c_rhost.as_ptr() as *const c_void) };
        }
        // SAFETY: a handle pam_start returned.
        let mut rc = unsafe { pam_authenticate(pamh, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK) };
        if rc == PAM_SUCCESS {
            // SAFETY: as above.
            rc = unsafe { pam_acct_mgmt(pamh, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK) };
        }
        // SAFETY: ends the handle once.
        unsafe { pam_end(pamh, rc) };
        match rc {
            PAM_SUCCESS => PasswordVerdict::Right,
            PAM_AUTH_ERR | PAM_USER_UNKNOWN | PAM_MAXTRIES | PAM_PERM_DENIED | PAM_ACCT_EXPIRED
            | PAM_NEW_AUTHTOK_REQD => PasswordVerdict::Wrong,
            other => PasswordVerdict::Unavailable(format!("PAM error {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Right after a pause, counting how many checks run at once.
    struct Slow {
        running: AtomicUsize,
        most: AtomicUsize,
    }

    impl PasswordCheck for Slow {
        fn check(&self, _user: &str, _password: &str, _rhost: &str) -> PasswordVerdict {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            #[allow(clippy::disallowed_methods)] // a slow PAM module, in real time
            std::thread::sleep(std::time::Duration::from_millis(100));
            self.running.fetch_sub(1, Ordering::SeqCst);
            PasswordVerdict::Right
        }
    }

    #[test]
    fn a_flood_of_password_checks_runs_a_few_at_a_time_and_all_are_answered() {
        let slow = Arc::new(Slow {
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        });
        let checker: Arc<dyn PasswordCheck> = slow.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let verdicts = rt.block_on(async {
            let checks = (0..30).map(|i| {
                let checker = Arc::clone(&checker);
                tokio::spawn(async move {
                    let password = mfa_proto::web::Password::new(format!("p{i}"));
                    check_off_thread(&checker, "alice", password, "-").await
                })
            });
            let mut verdicts = Vec::new();
            for c in checks.collect::<Vec<_>>() {
                verdicts.push(c.await.unwrap());
            }
            verdicts
        });
        assert!(verdicts.iter().all(|v| *v == PasswordVerdict::Right));
        let most = slow.most.load(Ordering::SeqCst);
        assert!(
            (2..=MAX_CONCURRENT_CHECKS).contains(&most),
            "{most} checks ran at once"
        );
    }
}
