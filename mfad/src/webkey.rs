//! WebAuthn security keys (FIDO2 and U2F keys, touched in the browser) as a second factor
//! on the portal, through webauthn-rs (which checks the signatures with OpenSSL: see
//! SECURITY.md, "Security keys on the web").
//!
//! The relying party is `[web] public_url`: its host is the RP ID and its origin the only
//! one accepted, so a key registered here answers no other site, and an answer made for
//! another site does not count here. A key is a device of kind `webauthn`: its credential
//! (credential id and public key, nothing secret) is kept as JSON in the device's
//! `address`, and the signature counter it last showed in `counter`. ssh logins cannot use
//! these keys (sshd never talks to a browser); OpenSSH's own security keys are the
//! `security-key` kind.
//!
//! The challenge of each ceremony lives in the portal session (sealed, in the store), is
//! used once and dropped, so an answer cannot be replayed, and any node can take it.

use crate::store::{Device, DeviceKind};
use sha2::{Digest, Sha256};
use std::time::Duration;
use webauthn_rs::prelude::{
    AuthenticationResult, CredentialID, PublicKeyCredential, RegisterPublicKeyCredential,
    SecurityKey, SecurityKeyAuthentication, SecurityKeyRegistration, Url, Uuid, Webauthn,
    WebauthnBuilder, WebauthnError,
};

/// Largest browser answer looked at (an attestation with its certificate chain is a few
/// kilobytes).
pub const MAX_RESPONSE: usize = 12 * 1024;
/// How long the browser waits for the key to be touched.
const CEREMONY_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a security-key step did not succeed, in words for the user (and the log).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the browser's answer is not one (too long, or not WebAuthn's JSON)")]
    Malformed,
    #[error("the security key's answer does not check out ({0})")]
    Refused(String),
    #[error("this security key is already registered")]
    Duplicate,
    #[error("that security key is not one of yours")]
    NotYours,
    #[error("the security key's signature counter went backwards: it may have been copied")]
    CounterBackwards,
}

/// The relying party of `public_url`, when it names a host (browsers refuse IP addresses
/// as an RP ID) and is a URL webauthn-rs accepts; `rp_name` is what the browser shows.
pub fn relying_party(public_url: Option<&str>, rp_name: &str) -> Option<Webauthn> {
    let url = Url::parse(public_url?).ok()?;
    let host = url.host_str()?;
    if host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    // The key is the second factor after the password: touching it (user presence) is
    // what it proves, as with U2F keys; a PIN on the key is not asked for (many keys have
    // none). This also leaves out the credProtect extension webauthn-rs asks for otherwise,
    // which Chromium refuses for a key that is not discoverable (webauthn-rs issue 490).
    WebauthnBuilder::new(host, &url)
        .ok()?
        .rp_name(rp_name)
        .timeout(CEREMONY_TIMEOUT)
        .danger_set_user_presence_only_security_keys(true)
        .build()
        .ok()
}

/// The WebAuthn user handle of `user`: fixed per name, so each key of one user is
/// registered for the same account. A name is not a secret; nothing else goes in.
fn user_handle(user: &str) -> Uuid {
    let digest = Sha256::digest(format!("mfa webauthn user\0{user}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

/// The user's WebAuthn keys with their device ids (a stored credential that no longer
/// parses is left out, and so cannot be used).
pub fn keys(devices: &[Device]) -> Vec<(i64, SecurityKey)> {
    devices
        .iter()
        .filter(|d| d.kind == DeviceKind::WebKey)
        .filter_map(|d| {
            let key = serde_json::from_str(d.address.as_deref()?).ok()?;
            Some((d.id, key))
        })
        .collect()
}

/// A short description of a stored key: the start of its credential id.
pub fn describe(d: &Device) -> String {
    let id = d
        .address
        .as_deref()
        .and_then(|a| serde_json::from_str::<SecurityKey>(a).ok())
        .map(|k| {
            let id: String = data_encoding::HEXLOWER
                .encode(k.cred_id().as_ref())
                .chars()
                .take(12)
                .collect();
            format!(" (credential {id}…)")
        })
        .unwrap_or_default();
    format!("security key for the web pages{id}")
}

/// A registration: the options for `navigator.credentials.create` (JSON), and what to keep
/// until the answer comes.
pub fn begin_registration(
    rp: &Webauthn,
    user: &str,
    devices: &[Device],
) -> Result<(String, SecurityKeyRegistration), KeyError> {
    let exclude: Vec<CredentialID> = keys(devices)
        .iter()
        .map(|(_, k)| k.cred_id().clone())
        .collect();
    let (options, state) = rp
        .start_securitykey_registration(user_handle(user), user, user, Some(exclude), None, None)
        .map_err(|e| KeyError::Refused(e.to_string()))?;
    let options = serde_json::to_string(&options).map_err(|_| KeyError::Malformed)?;
    Ok((options, state))
}

/// The browser's answer to a registration: the new key's credential (JSON, for the
/// device's `address`), checked against the challenge and the user's other keys.
pub fn finish_registration(
    rp: &Webauthn,
    state: &SecurityKeyRegistration,
    response: &str,
    devices: &[Device],
) -> Result<String, KeyError> {
    if response.len() > MAX_RESPONSE {
        return Err(KeyError::Malformed);
    }
    let answer: RegisterPublicKeyCredential =
        serde_json::from_str(response).map_err(|_| KeyError::Malformed)?;
    let key = rp
        .finish_securitykey_registration(&answer, state)
        .map_err(|e| KeyError::Refused(e.to_string()))?;
    if keys(devices)
        .iter()
        .any(|(_, k)| k.cred_id() == key.cred_id())
    {
        return Err(KeyError::Duplicate);
    }
    serde_json::to_string(&key).map_err(|_| KeyError::Malformed)
}

/// An assertion over the user's keys: the options for `navigator.credentials.get` (JSON)
/// and what to keep until the answer comes; `None` when the user has no usable key.
pub fn begin_assertion(
    rp: &Webauthn,
    devices: &[Device],
) -> Result<Option<(String, SecurityKeyAuthentication)>, KeyError> {
    let keys: Vec<SecurityKey> = keys(devices).into_iter().map(|(_, k)| k).collect();
    if keys.is_empty() {
        return Ok(None);
    }
    let (options, state) = rp
        .start_securitykey_authentication(&keys)
        .map_err(|e| KeyError::Refused(e.to_string()))?;
    let options = serde_json::to_string(&options).map_err(|_| KeyError::Malformed)?;
    Ok(Some((options, state)))
}

/// A checked assertion: the device that signed, and its signature counter (0 when the key
/// keeps none).
#[derive(Debug)]
pub struct Asserted {
    pub device: i64,
    pub counter: u32,
}

/// The browser's answer to an assertion, checked against the challenge (origin, RP ID,
/// user presence, signature) and the user's keys.
pub fn finish_assertion(
    rp: &Webauthn,
    state: &SecurityKeyAuthentication,
    response: &str,
    devices: &[Device],
) -> Result<Asserted, KeyError> {
    if response.len() > MAX_RESPONSE {
        return Err(KeyError::Malformed);
    }
    let answer: PublicKeyCredential =
        serde_json::from_str(response).map_err(|_| KeyError::Malformed)?;
    let result: AuthenticationResult = rp
        .finish_securitykey_authentication(&answer, state)
        .map_err(|e| match e {
            // Not above the count the key showed when it was registered.
            WebauthnError::CredentialPossibleCompromise => KeyError::CounterBackwards,
            e => KeyError::Refused(e.to_string()),
        })?;
    let device = keys(devices)
        .iter()
        .find(|(_, k)| k.cred_id() == result.cred_id())
        .map(|(id, _)| *id)
        .ok_or(KeyError::NotYours)?;
    Ok(Asserted {
        device,
        counter: result.counter(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relying_party_needs_a_host_name() {
        assert!(relying_party(Some("https://mfa.example.org"), "mfa").is_some());
        assert!(relying_party(Some("http://localhost:8443"), "mfa").is_some());
        assert!(relying_party(Some("http://127.0.0.1:8443"), "mfa").is_none());
        assert!(relying_party(Some("https://[::1]:8443"), "mfa").is_none());
        assert!(relying_party(None, "mfa").is_none());
        assert!(relying_party(Some("not a url"), "mfa").is_none());
    }

    #[test]
    fn the_user_handle_is_fixed_per_name() {
        assert_eq!(user_handle("alice"), user_handle("alice"));
        assert_ne!(user_handle("alice"), user_handle("bob"));
    }

    #[test]
    fn an_answer_that_is_not_webauthn_changes_nothing() {
        let rp = relying_party(Some("https://mfa.example.org"), "mfa").unwrap();
        let (_, state) = begin_registration(&rp, "alice", &[]).unwrap();
        assert!(matches!(
            finish_registration(&rp, &state, "{}", &[]),
            Err(KeyError::Malformed)
        ));
        let long = "x".repeat(MAX_RESPONSE + 1);
        assert!(matches!(
            finish_registration(&rp, &state, &long, &[]),
            Err(KeyError::Malformed)
        ));
    }
}
