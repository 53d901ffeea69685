//! A software FIDO authenticator that OpenSSH loads as its `SecurityKeyProvider`
//! (`ssh-keygen -w`, `ssh -o SecurityKeyProvider=`), speaking OpenSSH 9.x's middleware API
//! (sk-api version 0x000a0000). FOR TESTS ONLY: the key handle is the private key itself,
//! and every signature reports a touch, so a copied key file is all it takes to use it.
//!
//! It lets the end-to-end tests make real `ed25519-sk` / `ecdsa-sk` keys and log in through
//! a real sshd with them, without a USB authenticator.

use libc::{c_char, c_int, c_void, size_t};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use std::sync::atomic::{AtomicU32, Ordering};

const SSH_SK_VERSION_MAJOR: u32 = 0x000a_0000;
const SSH_SK_ECDSA: u32 = 0x00;
const SSH_SK_ED25519: u32 = 0x01;
const SSH_SK_USER_PRESENCE_REQD: u8 = 0x01;
const SSH_SK_ERR_GENERAL: c_int = -1;
const SSH_SK_ERR_UNSUPPORTED: c_int = -2;

/// The first byte of a key handle: which algorithm the rest is a private key of.
const HANDLE_ED25519: u8 = b'E';
const HANDLE_ECDSA: u8 = b'P';

/// `struct sk_enroll_response` (sk-api.h, version 0x000a0000).
#[repr(C)]
pub struct SkEnrollResponse {
    flags: u8,
    public_key: *mut u8,
    public_key_len: size_t,
    key_handle: *mut u8,
    key_handle_len: size_t,
    signature: *mut u8,
    signature_len: size_t,
    attestation_cert: *mut u8,
    attestation_cert_len: size_t,
    authdata: *mut u8,
    authdata_len: size_t,
}

/// `struct sk_sign_response`.
#[repr(C)]
pub struct SkSignResponse {
    flags: u8,
    counter: u32,
    sig_r: *mut u8,
    sig_r_len: size_t,
    sig_s: *mut u8,
    sig_s_len: size_t,
}

/// Signatures made so far (an authenticator's counter; sshd does not check it).
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A copy of `bytes` in memory from `malloc`: OpenSSH frees what the middleware returns.
fn c_copy(bytes: &[u8]) -> Option<*mut u8> {
    // SAFETY: malloc of at least one byte; the copy stays within both buffers.
    unsafe {
        let p = libc::malloc(bytes.len().max(1)).cast::<u8>();
        if p.is_null() {
            return None;
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        Some(p)
    }
}

/// A zeroed struct from `calloc`, for OpenSSH to free.
fn c_struct<T>() -> Option<*mut T> {
    // SAFETY: calloc of one T; all-zero bytes are a valid T for these plain C structs.
    let p = unsafe { libc::calloc(1, std::mem::size_of::<T>()) }.cast::<T>();
    (!p.is_null()).then_some(p)
}

/// What an authenticator signs: SHA-256(application) ‖ flags ‖ counter ‖ SHA-256(data),
/// the bytes sshd rebuilds to verify an sk signature.
fn signed_bytes(application: &[u8], flags: u8, counter: u32, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(69);
    m.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, application).as_ref());
    m.push(flags);
    m.extend_from_slice(&counter.to_be_bytes());
    m.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    m
}

/// A new key of `alg`: (public key as OpenSSH wants it, key handle).
fn new_key(alg: u32) -> Result<(Vec<u8>, Vec<u8>), c_int> {
    let rng = SystemRandom::new();
    match alg {
        SSH_SK_ED25519 => {
            let mut seed = [0u8; 32];
            rng.fill(&mut seed).map_err(|_| SSH_SK_ERR_GENERAL)?;
            let pair =
                Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| SSH_SK_ERR_GENERAL)?;
            let mut handle = vec![HANDLE_ED25519];
            handle.extend_from_slice(&seed);
            Ok((pair.public_key().as_ref().to_vec(), handle))
        }
        SSH_SK_ECDSA => {
            let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| SSH_SK_ERR_GENERAL)?;
            let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
                .map_err(|_| SSH_SK_ERR_GENERAL)?;
            let mut handle = vec![HANDLE_ECDSA];
            handle.extend_from_slice(pkcs8.as_ref());
            // An uncompressed point (0x04 ‖ x ‖ y), as OpenSSH reads it.
            Ok((pair.public_key().as_ref().to_vec(), handle))
        }
        _ => Err(SSH_SK_ERR_UNSUPPORTED),
    }
}

/// Signs `message` with the key in `handle`: (r, s); for Ed25519 the whole signature is r.
fn sign(alg: u32, handle: &[u8], message: &[u8]) -> Result<(Vec<u8>, Vec<u8>), c_int> {
    match (alg, handle.split_first()) {
        (SSH_SK_ED25519, Some((&HANDLE_ED25519, seed))) => {
            let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| SSH_SK_ERR_GENERAL)?;
            Ok((pair.sign(message).as_ref().to_vec(), Vec::new()))
        }
        (SSH_SK_ECDSA, Some((&HANDLE_ECDSA, pkcs8))) => {
            let rng = SystemRandom::new();
            let pair =
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                    .map_err(|_| SSH_SK_ERR_GENERAL)?;
            let sig = pair.sign(&rng, message).map_err(|_| SSH_SK_ERR_GENERAL)?;
            let (r, s) = sig.as_ref().split_at(32);
            Ok((r.to_vec(), s.to_vec()))
        }
        (SSH_SK_ED25519 | SSH_SK_ECDSA, _) => Err(SSH_SK_ERR_GENERAL),
        _ => Err(SSH_SK_ERR_UNSUPPORTED),
    }
}

/// The bytes of a C string, or `None` for a null pointer.
///
/// # Safety
/// `p` is null or a NUL-terminated string that outlives the result.
unsafe fn c_str<'a>(p: *const c_char) -> Option<&'a [u8]> {
    // SAFETY: the caller's promise.
    (!p.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes())
}

/// The bytes of a C buffer (empty for a null pointer).
///
/// # Safety
/// `p` is null or points to `len` readable bytes that outlive the result.
unsafe fn c_bytes<'a>(p: *const u8, len: size_t) -> &'a [u8] {
    if p.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: the caller's promise.
    unsafe { std::slice::from_raw_parts(p, len) }
}

#[unsafe(no_mangle)]
pub extern "C" fn sk_api_version() -> u32 {
    SSH_SK_VERSION_MAJOR
}

/// Makes a key; no attestation (the test authenticator has no certificate).
///
/// # Safety
/// OpenSSH's contract: valid pointers (`application` a C string), `enroll_response` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sk_enroll(
    alg: u32,
    _challenge: *const u8,
    _challenge_len: size_t,
    application: *const c_char,
    flags: u8,
    _pin: *const c_char,
    _options: *mut *mut c_void,
    enroll_response: *mut *mut SkEnrollResponse,
) -> c_int {
    if enroll_response.is_null() {
        return SSH_SK_ERR_GENERAL;
    }
    // SAFETY: OpenSSH passes a C string or null.
    if unsafe { c_str(application) }.is_none_or(<[u8]>::is_empty) {
        return SSH_SK_ERR_GENERAL;
    }
    let (public, handle) = match new_key(alg) {
        Ok(k) => k,
        Err(e) => return e,
    };
    let (Some(resp), Some(pk), Some(kh)) = (
        c_struct::<SkEnrollResponse>(),
        c_copy(&public),
        c_copy(&handle),
    ) else {
        return SSH_SK_ERR_GENERAL;
    };
    // SAFETY: resp is a fresh, zeroed allocation; enroll_response is writable.
    unsafe {
        (*resp).flags = flags;
        (*resp).public_key = pk;
        (*resp).public_key_len = public.len();
        (*resp).key_handle = kh;
        (*resp).key_handle_len = handle.len();
        *enroll_response = resp;
    }
    0
}

/// Signs as an authenticator would, reporting a touch (user presence) every time.
///
/// # Safety
/// OpenSSH's contract: `data` has `data_len` bytes, `key_handle` `key_handle_len`,
/// `application` a C string, `sign_response` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sk_sign(
    alg: u32,
    data: *const u8,
    data_len: size_t,
    application: *const c_char,
    key_handle: *const u8,
    key_handle_len: size_t,
    _flags: u8,
    _pin: *const c_char,
    _options: *mut *mut c_void,
    sign_response: *mut *mut SkSignResponse,
) -> c_int {
    if sign_response.is_null() {
        return SSH_SK_ERR_GENERAL;
    }
    // SAFETY: OpenSSH's contract for these pointers.
    let (data, handle, application) = unsafe {
        (
            c_bytes(data, data_len),
            c_bytes(key_handle, key_handle_len),
            c_str(application),
        )
    };
    let Some(application) = application else {
        return SSH_SK_ERR_GENERAL;
    };
    let flags = SSH_SK_USER_PRESENCE_REQD;
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    let (r, s) = match sign(
        alg,
        handle,
        &signed_bytes(application, flags, counter, data),
    ) {
        Ok(sig) => sig,
        Err(e) => return e,
    };
    let Some(resp) = c_struct::<SkSignResponse>() else {
        return SSH_SK_ERR_GENERAL;
    };
    let Some(sig_r) = c_copy(&r) else {
        // SAFETY: resp came from calloc above and is not handed out.
        unsafe { libc::free(resp.cast()) };
        return SSH_SK_ERR_GENERAL;
    };
    let sig_s = if s.is_empty() {
        Some(std::ptr::null_mut())
    } else {
        c_copy(&s)
    };
    let Some(sig_s) = sig_s else {
        // SAFETY: both came from malloc/calloc above and are not handed out.
        unsafe {
            libc::free(sig_r.cast());
            libc::free(resp.cast());
        }
        return SSH_SK_ERR_GENERAL;
    };
    // SAFETY: resp is a fresh, zeroed allocation; sign_response is writable.
    unsafe {
        (*resp).flags = flags;
        (*resp).counter = counter;
        (*resp).sig_r = sig_r;
        (*resp).sig_r_len = r.len();
        (*resp).sig_s = sig_s;
        (*resp).sig_s_len = s.len();
        *sign_response = resp;
    }
    0
}

/// No resident keys: this authenticator keeps nothing.
///
/// # Safety
/// OpenSSH's contract: `rks` and `nrks` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sk_load_resident_keys(
    _pin: *const c_char,
    _options: *mut *mut c_void,
    rks: *mut *mut *mut c_void,
    nrks: *mut size_t,
) -> c_int {
    // SAFETY: OpenSSH passes writable pointers (checked for null).
    unsafe {
        if !rks.is_null() {
            *rks = std::ptr::null_mut();
        }
        if !nrks.is_null() {
            *nrks = 0;
        }
    }
    SSH_SK_ERR_UNSUPPORTED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_signatures_verify_over_what_sshd_rebuilds() {
        let (public, handle) = new_key(SSH_SK_ED25519).unwrap();
        let m = signed_bytes(b"ssh:", 1, 7, b"session data");
        let (r, s) = sign(SSH_SK_ED25519, &handle, &m).unwrap();
        assert!(s.is_empty());
        signature::UnparsedPublicKey::new(&signature::ED25519, &public)
            .verify(&m, &r)
            .unwrap();
        assert_eq!(sign(SSH_SK_ECDSA, &handle, &m), Err(SSH_SK_ERR_GENERAL));
    }

    #[test]
    fn ecdsa_signatures_verify_and_the_point_is_uncompressed() {
        let (public, handle) = new_key(SSH_SK_ECDSA).unwrap();
        assert_eq!((public.len(), public[0]), (65, 4));
        let m = signed_bytes(b"ssh:", 1, 8, b"session data");
        let (r, s) = sign(SSH_SK_ECDSA, &handle, &m).unwrap();
        let sig = [r, s].concat();
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &public)
            .verify(&m, &sig)
            .unwrap();
    }
}
