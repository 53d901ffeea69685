//! [`PamEnv`] over a real PAM handle: the only place that talks to libpam.
//!
//! pam-bindings covers items, the user and the conversation; `pam_getenv` and
//! `pam_syslog` are declared here.

use crate::env::{LogLevel, PamEnv, PamItem};
use pam::constants::{
    PAM_ERROR_MSG, PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_TEXT_INFO, PamMessageStyle,
    PamResultCode,
};
use pam::conv::Conv;
use pam::items::{RHost, Service, Tty};
use pam::module::PamHandle;
use std::ffi::{CStr, CString, c_char, c_int};
use zeroize::Zeroizing;

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_getenv(pamh: *mut PamHandle, name: *const c_char) -> *const c_char;
    fn pam_syslog(pamh: *const PamHandle, priority: c_int, fmt: *const c_char, ...);
}

pub struct PamHandleEnv<'a> {
    pamh: &'a mut PamHandle,
}

impl<'a> PamHandleEnv<'a> {
    pub fn new(pamh: &'a mut PamHandle) -> Self {
        PamHandleEnv { pamh }
    }

    fn send(
        &mut self,
        style: PamMessageStyle,
        text: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, PamResultCode> {
        let conv = match self.pamh.get_item::<Conv>()? {
            Some(conv) => conv,
            None => return Err(PamResultCode::PAM_CONV_ERR),
        };
        // Text from mfad with a NUL in it would be refused whole; cut it there instead.
        let text = text.split('\0').next().unwrap_or_default();
        Ok(conv
            .send(style, text)?
            .map(|secret| Zeroizing::new(secret.as_bytes().to_vec())))
    }
}

/// The message style for a prompt from mfad.
pub fn prompt_style(echo: bool) -> PamMessageStyle {
    if echo {
        PAM_PROMPT_ECHO_ON
    } else {
        PAM_PROMPT_ECHO_OFF
    }
}

fn item_string(item: Option<&CStr>) -> Option<String> {
    item.map(|s| s.to_string_lossy().into_owned())
}

impl PamEnv for PamHandleEnv<'_> {
    fn user(&mut self) -> Result<String, PamResultCode> {
        self.pamh.get_user(None)
    }

    fn item(&mut self, item: PamItem) -> Option<String> {
        // A failed lookup is treated like an unset item: both mean "not known here".
        match item {
            PamItem::Service => item_string(self.pamh.get_item::<Service>().ok()?.map(|s| s.0)),
            PamItem::RHost => item_string(self.pamh.get_item::<RHost>().ok()?.map(|s| s.0)),
            PamItem::Tty => item_string(self.pamh.get_item::<Tty>().ok()?.map(|s| s.0)),
        }
    }

    fn getenv(&mut self, name: &str) -> Option<String> {
        let name = CString::new(name).ok()?;
        // SAFETY: the handle is live for this call; pam_getenv returns NULL or a pointer to
        // a NUL-terminated string owned by the handle, which we copy before any other call.
        let value = unsafe { pam_getenv(std::ptr::from_mut(self.pamh), name.as_ptr()) };
        if value.is_null() {
            return None;
        }
        // SAFETY: non-null and NUL-terminated, see above.
        let value = unsafe { CStr::from_ptr(value) };
        Some(value.to_string_lossy().into_owned())
    }

    fn info(&mut self, text: &str) -> Result<(), PamResultCode> {
        self.send(PAM_TEXT_INFO, text).map(|_| ())
    }

    fn error(&mut self, text: &str) -> Result<(), PamResultCode> {
        self.send(PAM_ERROR_MSG, text).map(|_| ())
    }

    fn prompt(
        &mut self,
        text: &str,
        echo: bool,
    ) -> Result<Option<Zeroizing<String>>, PamResultCode> {
        let Some(bytes) = self.send(prompt_style(echo), text)? else {
            return Ok(None);
        };
        // Lossy: mfad refuses anything that is not a passcode or a menu choice anyway.
        Ok(Some(Zeroizing::new(
            String::from_utf8_lossy(&bytes).into_owned(),
        )))
    }

    fn syslog(&mut self, level: LogLevel, message: &str) {
        let Ok(message) = CString::new(message.replace('\0', "\\0")) else {
            return;
        };
        // SAFETY: the handle is live; the format is a literal "%s" matched by one C string.
        unsafe {
            pam_syslog(
                std::ptr::from_ref(self.pamh),
                level.priority(),
                c"%s".as_ptr(),
                message.as_ptr(),
            );
        }
    }
}
