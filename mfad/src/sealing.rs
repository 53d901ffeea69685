//! The store key: seals what a copy of the database must not give away.
//!
//! TOTP and HOTP keys are stored encrypted (ChaCha20-Poly1305, bound to their user), and
//! one-time codes (bypass, SMS) as HMAC-SHA256 under the key of SHA-256(salt || code): an
//! 8-digit code is 10^8 guesses, seconds for a plain hash, impossible without the key. The
//! key lives in its own root-only file (`store_key`, default /etc/mfa/store.key), never in
//! the database; one 256-bit master key, from which each use derives its own.

use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use zeroize::Zeroizing;

const NONCE_LEN: usize = 12;
/// The first byte of every sealed blob: its format.
const SEALED_V1: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    File(#[from] crate::secret_file::SecretFileError),
    #[error("store_key: cannot create {}: {source}", path.display())]
    Create {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("store_key {0}: holds no key (it must be 64 hexadecimal digits, as mfad writes it)")]
    Malformed(String),
    #[error("the store key could not be set up for encryption")]
    Crypto,
}

/// The keys derived from the store's master key.
pub struct StoreKey {
    aead: LessSafeKey,
    codes: hmac::Key,
    check: [u8; 32],
}

fn derive(master: &[u8; 32], label: &str) -> Zeroizing<[u8; 32]> {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, master), label.as_bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(tag.as_ref());
    out
}

impl StoreKey {
    pub fn from_master(master: &[u8; 32]) -> Result<Self, KeyError> {
        let aead_key = derive(master, "mfa store key v1: device secrets");
        let codes = derive(master, "mfa store key v1: one-time codes");
        let check = derive(master, "mfa store key v1: key check");
        Ok(StoreKey {
            aead: LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, &aead_key[..]).map_err(|_| KeyError::Crypto)?,
            ),
            codes: hmac::Key::new(hmac::HMAC_SHA256, &codes[..]),
            check: *check,
        })
    }

    /// A fresh random key (in-memory stores, tests).
    pub fn generate() -> Result<Self, KeyError> {
        let mut master = Zeroizing::new([0u8; 32]);
        crate::random::fill(&mut master[..]);
        Self::from_master(&master)
    }

    /// Reads the key file, which must be private to root; creates it (0600, 256 random
    /// bits) when it does not exist and `create` is set.
    pub fn load(path: &Path, create: bool) -> Result<Self, KeyError> {
        if create && !path.exists() {
            Self::create(path)?;
        }
        let text = crate::secret_file::read_secret(path, "store_key")?;
        let bytes = Zeroizing::new(
            data_encoding::HEXLOWER_PERMISSIVE
                .decode(text.trim().as_bytes())
                .map_err(|_| KeyError::Malformed(path.display().to_string()))?,
        );
        let master: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes[..]
                .try_into()
                .map_err(|_| KeyError::Malformed(path.display().to_string()))?,
        );
        Self::from_master(&master)
    }

    fn create(path: &Path) -> Result<(), KeyError> {
        let err = |source| KeyError::Create {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err)?;
        }
        let mut master = Zeroizing::new([0u8; 32]);
        crate::random::fill(&mut master[..]);
        let hex = Zeroizing::new(data_encoding::HEXLOWER.encode(&master[..]));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        file.write_all(hex.as_bytes()).map_err(err)?;
        file.write_all(b"\n").map_err(err)?;
        file.sync_all().map_err(err)?;
        tracing::warn!(
            "created the store key {}: keep a copy apart from the database backups; without \
             it the enrolled secrets cannot be read",
            path.display()
        );
        Ok(())
    }

    /// A value that tells whether a database was written with this key.
    pub fn check_value(&self) -> [u8; 32] {
        self.check
    }

    /// Encrypts `secret`, bound to `context` (the owner's name): a sealed secret moved to
    /// another row does not open.
    pub fn seal(&self, secret: &[u8], context: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        crate::random::fill(&mut nonce);
        let mut buf = Zeroizing::new(secret.to_vec());
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            // Sealing fails only for inputs of over 256 GiB.
            .map(|t| t.as_ref().to_vec())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len() + tag.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        out.extend_from_slice(&tag);
        out
    }

    /// Decrypts what [`seal`](Self::seal) made for `context`; `None` when it was made with
    /// another key, for another context, or was changed.
    pub fn open(&self, sealed: &[u8], context: &str) -> Option<Zeroizing<Vec<u8>>> {
        let (&version, rest) = sealed.split_first()?;
        if version != SEALED_V1 || rest.len() < NONCE_LEN + aead::MAX_TAG_LEN {
            return None;
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = Zeroizing::new(body.to_vec());
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf[..])
            .ok()?;
        Some(Zeroizing::new(plain.to_vec()))
    }

    /// The stored form of a one-time code's salted hash.
    pub fn code_tag(&self, salted_hash: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.codes, salted_hash);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_context() {
        let k = StoreKey::generate().unwrap();
        let sealed = k.seal(b"12345678901234567890", "alice");
        assert!(!sealed.windows(20).any(|w| w == b"12345678901234567890"));
        assert_eq!(
            &k.open(&sealed, "alice").unwrap()[..],
            b"12345678901234567890"
        );
        assert!(k.open(&sealed, "bob").is_none());
        assert!(
            StoreKey::generate()
                .unwrap()
                .open(&sealed, "alice")
                .is_none()
        );
        let mut tampered = sealed.clone();
        tampered[5] ^= 1;
        assert!(k.open(&tampered, "alice").is_none());
        assert_ne!(
            k.seal(b"x", "a"),
            k.seal(b"x", "a"),
            "a fresh nonce each time"
        );
    }

    #[test]
    fn the_key_file_is_created_private_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/store.key");
        let a = StoreKey::load(&path, true).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = StoreKey::load(&path, false).unwrap();
        assert_eq!(a.check_value(), b.check_value());
        assert_eq!(a.code_tag(b"h"), b.code_tag(b"h"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(StoreKey::load(&path, false).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not hex\n").unwrap();
        assert!(matches!(
            StoreKey::load(&path, false),
            Err(KeyError::Malformed(_))
        ));
        assert!(StoreKey::load(&dir.path().join("missing"), false).is_err());
    }
}
