//! OpenSSH security-key public keys (`sk-ssh-ed25519@openssh.com`,
//! `sk-ecdsa-sha2-nistp256@openssh.com`) registered as a second factor: parsed and checked
//! once into a [`SecurityKey`], shown as `ssh-keygen -l` shows them, and matched against the
//! keys sshd says a login used (`SSH_AUTH_INFO_0`, `ExposeAuthInfo yes`).
//!
//! Only the two FIDO key types count: their private half never leaves the authenticator and
//! sshd makes it prove a touch, so a copied key file is not enough. A plain key is refused.

use sha2::{Digest, Sha256};

/// The two OpenSSH security-key types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkKeyType {
    Ed25519,
    EcdsaP256,
}

impl SkKeyType {
    pub const ED25519: &'static str = "sk-ssh-ed25519@openssh.com";
    pub const ECDSA: &'static str = "sk-ecdsa-sha2-nistp256@openssh.com";

    /// The name OpenSSH writes in a .pub line and in the key blob.
    pub fn ssh_name(self) -> &'static str {
        match self {
            SkKeyType::Ed25519 => Self::ED25519,
            SkKeyType::EcdsaP256 => Self::ECDSA,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            Self::ED25519 => Some(SkKeyType::Ed25519),
            Self::ECDSA => Some(SkKeyType::EcdsaP256),
            _ => None,
        }
    }

    /// What `ssh-keygen -l` prints in parentheses.
    pub fn label(self) -> &'static str {
        match self {
            SkKeyType::Ed25519 => "ED25519-SK",
            SkKeyType::EcdsaP256 => "ECDSA-SK",
        }
    }
}

/// Key types that are plain keys: the file alone is the key, so it proves nothing more
/// than the login's publickey step already did.
const PLAIN_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
];

/// Why a public key cannot be registered; each Display is the sentence the user sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityKeyError {
    #[error(
        "No public key given: give the .pub file of a key made on your security key \
         (ssh-keygen -t ed25519-sk)."
    )]
    Empty,
    #[error(
        "{0} is a plain key, not a security key: it is not a second factor (a copied key file \
         is enough to use it). Make a key on your security key with `ssh-keygen -t ed25519-sk` \
         (or ecdsa-sk) and register its .pub file."
    )]
    PlainKey(String),
    #[error(
        "{0:?} is not an OpenSSH security-key type; mfa accepts sk-ssh-ed25519@openssh.com and \
         sk-ecdsa-sha2-nistp256@openssh.com (one line of a .pub file: type, key, comment)."
    )]
    UnknownType(String),
    #[error("The key data after the type is missing or is not base64.")]
    NotBase64,
    #[error("The line names {named} but the key inside is {inside:?}.")]
    TypeMismatch { named: String, inside: String },
    #[error("The key data is malformed: {0}.")]
    Malformed(&'static str),
}

/// A checked security-key public key: its type, the key blob as OpenSSH encodes it, and
/// the FIDO application it was made for (`ssh:` unless chosen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityKey {
    kind: SkKeyType,
    blob: Vec<u8>,
    application: String,
}

impl SecurityKey {
    /// Parses one line of an OpenSSH .pub file (`TYPE BASE64 [COMMENT]`), as `ssh-keygen`
    /// writes it, or the stored form (`TYPE BASE64`).
    pub fn parse(line: &str) -> Result<SecurityKey, SecurityKeyError> {
        let line = line
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or(SecurityKeyError::Empty)?;
        let mut fields = line.split_whitespace();
        let named = fields.next().ok_or(SecurityKeyError::Empty)?;
        if PLAIN_TYPES.contains(&named) || named.starts_with("ssh-") && named.contains("-cert-") {
            return Err(SecurityKeyError::PlainKey(named.to_string()));
        }
        let kind = SkKeyType::from_name(named)
            .ok_or_else(|| SecurityKeyError::UnknownType(truncate(named)))?;
        let blob = fields
            .next()
            .and_then(|b| data_encoding::BASE64.decode(b.as_bytes()).ok())
            .ok_or(SecurityKeyError::NotBase64)?;
        Self::from_blob(kind, blob)
    }

    /// Checks `blob` as a key of type `kind`: the type inside matches, the key has its
    /// size, the application is text, nothing follows.
    fn from_blob(kind: SkKeyType, blob: Vec<u8>) -> Result<SecurityKey, SecurityKeyError> {
        let mut r = Reader(&blob);
        let inside = r.string()?;
        if inside != kind.ssh_name().as_bytes() {
            return Err(SecurityKeyError::TypeMismatch {
                named: kind.ssh_name().to_string(),
                inside: truncate(&String::from_utf8_lossy(inside)),
            });
        }
        match kind {
            SkKeyType::Ed25519 => {
                if r.string()?.len() != 32 {
                    return Err(SecurityKeyError::Malformed("an Ed25519 key has 32 bytes"));
                }
            }
            SkKeyType::EcdsaP256 => {
                if r.string()? != b"nistp256" {
                    return Err(SecurityKeyError::Malformed("the curve is not nistp256"));
                }
                let point = r.string()?;
                if point.len() != 65 || point[0] != 4 {
                    return Err(SecurityKeyError::Malformed(
                        "a P-256 key is an uncompressed point of 65 bytes",
                    ));
                }
            }
        }
        let application = std::str::from_utf8(r.string()?)
            .ok()
            .filter(|a| !a.is_empty() && !a.chars().any(char::is_control))
            .ok_or(SecurityKeyError::Malformed("the application is not text"))?
            .to_string();
        if !r.0.is_empty() {
            return Err(SecurityKeyError::Malformed("extra bytes after the key"));
        }
        Ok(SecurityKey {
            kind,
            blob,
            application,
        })
    }

    pub fn kind(&self) -> SkKeyType {
        self.kind
    }

    /// `TYPE BASE64`: what the store keeps, and what sshd's auth info names.
    pub fn to_openssh(&self) -> String {
        format!(
            "{} {}",
            self.kind.ssh_name(),
            data_encoding::BASE64.encode(&self.blob)
        )
    }

    /// `SHA256:…`, as `ssh-keygen -l` prints it (unpadded base64 of the blob's SHA-256).
    pub fn fingerprint(&self) -> String {
        format!(
            "SHA256:{}",
            data_encoding::BASE64_NOPAD.encode(&Sha256::digest(&self.blob))
        )
    }

    /// `ED25519-SK SHA256:…`, plus the application when it is not the default `ssh:`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.kind.label(), self.fingerprint());
        if self.application != "ssh:" {
            s.push_str(&format!(", application {}", self.application));
        }
        s
    }

    /// Whether one of the `publickey` steps in sshd's auth info (`SSH_AUTH_INFO_0`: one
    /// method per line, `publickey TYPE BASE64`) used this key.
    pub fn used_in(&self, auth_info: &str) -> bool {
        auth_info.lines().any(|line| {
            let mut f = line.split_whitespace();
            f.next() == Some("publickey")
                && f.next() == Some(self.kind.ssh_name())
                && f.next()
                    .and_then(|b| data_encoding::BASE64.decode(b.as_bytes()).ok())
                    .is_some_and(|b| b == self.blob)
        })
    }
}

/// A name as the user wrote it, cut short for a message.
fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

/// Reads SSH wire strings (u32 big-endian length, then the bytes).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn string(&mut self) -> Result<&'a [u8], SecurityKeyError> {
        const SHORT: SecurityKeyError = SecurityKeyError::Malformed("it ends too soon");
        let (len, rest) = self.0.split_first_chunk::<4>().ok_or(SHORT)?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(SHORT);
        }
        let (s, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ed25519-sk key (public bytes 1..=32, application "ssh:"); `ssh-keygen -l -f` prints
    // `256 SHA256:nX0hpi5mKbTIJ10yBq5/sLQhiI1Y0RBAqN0drDdgJWs alice@host (ED25519-SK)`.
    const ED: &str = "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gAAAABHNzaDo= alice@host";

    fn blob(parts: &[&[u8]]) -> String {
        let mut b = Vec::new();
        for p in parts {
            b.extend_from_slice(&(p.len() as u32).to_be_bytes());
            b.extend_from_slice(p);
        }
        data_encoding::BASE64.encode(&b)
    }

    #[test]
    fn an_ed25519_sk_line_is_parsed_and_fingerprinted_like_ssh_keygen() {
        let k = SecurityKey::parse(ED).unwrap();
        assert_eq!(k.kind(), SkKeyType::Ed25519);
        assert_eq!(k.to_openssh(), ED.rsplit_once(' ').unwrap().0);
        assert_eq!(SecurityKey::parse(&k.to_openssh()).unwrap(), k);
        assert_eq!(
            k.fingerprint(),
            "SHA256:nX0hpi5mKbTIJ10yBq5/sLQhiI1Y0RBAqN0drDdgJWs"
        );
        assert_eq!(
            k.describe(),
            "ED25519-SK SHA256:nX0hpi5mKbTIJ10yBq5/sLQhiI1Y0RBAqN0drDdgJWs"
        );
    }

    #[test]
    fn an_ecdsa_sk_key_is_accepted_and_a_bad_point_refused() {
        let mut point = vec![4u8];
        point.extend([7u8; 64]);
        let line = format!(
            "{} {}",
            SkKeyType::ECDSA,
            blob(&[SkKeyType::ECDSA.as_bytes(), b"nistp256", &point, b"ssh:"])
        );
        assert_eq!(
            SecurityKey::parse(&line).unwrap().kind(),
            SkKeyType::EcdsaP256
        );
        let short = format!(
            "{} {}",
            SkKeyType::ECDSA,
            blob(&[
                SkKeyType::ECDSA.as_bytes(),
                b"nistp256",
                &point[..33],
                b"ssh:"
            ])
        );
        assert!(matches!(
            SecurityKey::parse(&short),
            Err(SecurityKeyError::Malformed(_))
        ));
    }

    #[test]
    fn a_plain_key_is_refused_saying_it_is_not_a_second_factor() {
        let e = SecurityKey::parse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ user@host").unwrap_err();
        assert_eq!(e, SecurityKeyError::PlainKey("ssh-ed25519".into()));
        assert!(e.to_string().contains("not a second factor"), "{e}");
        assert!(e.to_string().contains("a copied key file"), "{e}");
    }

    #[test]
    fn the_type_inside_must_match_the_type_named_and_nothing_may_follow() {
        let ed_blob = ED.split_whitespace().nth(1).unwrap();
        let e = SecurityKey::parse(&format!("{} {ed_blob}", SkKeyType::ECDSA)).unwrap_err();
        assert!(matches!(e, SecurityKeyError::TypeMismatch { .. }), "{e:?}");
        let trailing = blob(&[SkKeyType::ED25519.as_bytes(), &[1; 32], b"ssh:", b"x"]);
        assert!(matches!(
            SecurityKey::parse(&format!("{} {trailing}", SkKeyType::ED25519)),
            Err(SecurityKeyError::Malformed(_))
        ));
        assert_eq!(
            SecurityKey::parse(&format!("{} !!!", SkKeyType::ED25519)),
            Err(SecurityKeyError::NotBase64)
        );
        assert_eq!(SecurityKey::parse("\n  \n"), Err(SecurityKeyError::Empty));
        assert!(matches!(
            SecurityKey::parse("from=\"x\" sk-ssh-ed25519@openssh.com AAAA"),
            Err(SecurityKeyError::UnknownType(_))
        ));
    }

    #[test]
    fn the_key_counts_only_when_a_publickey_step_used_exactly_it() {
        let k = SecurityKey::parse(ED).unwrap();
        let stored = k.to_openssh();
        assert!(k.used_in(&format!("publickey {stored}\n")));
        assert!(k.used_in(&format!("publickey ssh-ed25519 AAAA\npublickey {stored}\n")));
        assert!(!k.used_in(&format!("password\nkeyboard-interactive {stored}\n")));
        let other = blob(&[SkKeyType::ED25519.as_bytes(), &[9; 32], b"ssh:"]);
        assert!(!k.used_in(&format!("publickey {} {other}\n", SkKeyType::ED25519)));
        assert!(!k.used_in(""));
    }
}
