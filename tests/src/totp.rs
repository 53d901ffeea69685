//! RFC 6238 codes computed independently of the product (own SHA-1 and HMAC), so a test
//! checks mfad against the standard rather than against the library mfad uses.
//!
//! mfad accepts each time step once. [`TotpSecret::fresh_code`] hands out codes for steps not
//! used before, inside the accepted window, and waits for the next step only when it must.

use crate::bail;
use crate::clock;
use crate::error::Result;
use std::time::Duration;

/// An enrolled TOTP secret and the steps this test has already spent.
#[derive(Debug, Clone)]
pub struct TotpSecret {
    key: Vec<u8>,
    base32: String,
    digits: u32,
    period: u64,
    window: u64,
    last_used_step: Option<u64>,
}

impl TotpSecret {
    /// A secret as mfa prints it (`Secret: JBSW...`), with the daemon's digits, period and
    /// window.
    pub fn from_base32(secret: &str, digits: u32, period: u64, window: u64) -> Result<Self> {
        let key = base32_decode(secret)?;
        if key.is_empty() {
            bail!("empty TOTP secret");
        }
        Ok(TotpSecret {
            key,
            base32: secret.trim().to_string(),
            digits,
            period,
            window,
            last_used_step: None,
        })
    }

    pub fn base32(&self) -> &str {
        &self.base32
    }

    /// The code of one time step.
    pub fn code_at_step(&self, step: u64) -> String {
        hotp(&self.key, step, self.digits)
    }

    /// The code at a Unix time.
    pub fn code_at(&self, unix: u64) -> String {
        self.code_at_step(unix / self.period)
    }

    fn step_now(&self) -> (u64, f64) {
        let now = clock::unix_now();
        let period = self.period as f64;
        let step = (now / period).floor() as u64;
        let left = period - (now - step as f64 * period);
        (step, left)
    }

    /// A code of the current step, for the enrolment (which may not allow any drift), marked
    /// as used. Waits for the next step when this one is about to end.
    pub fn current_code(&mut self) -> String {
        loop {
            let (step, left) = self.step_now();
            if left > 3.0 && self.last_used_step.is_none_or(|u| step > u) {
                self.last_used_step = Some(step);
                return self.code_at_step(step);
            }
            clock::pause(Duration::from_secs_f64(left + 0.2));
        }
    }

    /// A code mfad accepts now and that this test has not used: the earliest unused step of
    /// the window around now, waiting for the clock when the window is spent.
    ///
    /// The previous step is used only when the current one has more than 10 s left, so the
    /// code is still inside the window when the login reaches mfad.
    pub fn fresh_code(&mut self) -> String {
        loop {
            let (step, left) = self.step_now();
            let mut candidates = Vec::new();
            if self.window >= 1 && left > 10.0 && step > 0 {
                candidates.push(step - 1);
            }
            if left > 3.0 || self.window >= 1 {
                candidates.push(step);
            }
            if self.window >= 1 {
                candidates.push(step + 1);
            }
            if let Some(&s) = candidates
                .iter()
                .find(|&&s| self.last_used_step.is_none_or(|u| s > u))
            {
                self.last_used_step = Some(s);
                return self.code_at_step(s);
            }
            clock::pause(Duration::from_secs_f64(left + 0.2));
        }
    }

    /// A well-formed code that matches no step near now: a guaranteed wrong answer.
    /// Hands back the code last taken: the login it was typed into ended before mfad
    /// checked it (refused at an earlier wrong code), so it is still unspent and may be used
    /// again without waiting for the clock.
    pub fn unused(&mut self, code: &str) {
        if let Some(step) = self.last_used_step
            && self.code_at_step(step) == code
        {
            self.last_used_step = step.checked_sub(1);
        }
    }

    pub fn wrong_code(&self) -> String {
        let (step, _) = self.step_now();
        let near: Vec<String> = (step.saturating_sub(3)..=step + 3)
            .map(|s| self.code_at_step(s))
            .collect();
        let modulo = 10u64.pow(self.digits);
        let mut n: u64 = 123_456 % modulo;
        loop {
            let c = format!("{n:0width$}", width = self.digits as usize);
            if !near.contains(&c) {
                return c;
            }
            n = (n + 1) % modulo;
        }
    }
}

/// RFC 4226 HOTP with HMAC-SHA-1.
pub fn hotp(key: &[u8], counter: u64, digits: u32) -> String {
    let mac = hmac_sha1(key, &counter.to_be_bytes());
    let offset = (mac[19] & 0x0f) as usize;
    let bin = (u32::from(mac[offset] & 0x7f) << 24)
        | (u32::from(mac[offset + 1]) << 16)
        | (u32::from(mac[offset + 2]) << 8)
        | u32::from(mac[offset + 3]);
    let code = u64::from(bin) % 10u64.pow(digits);
    format!("{code:0width$}", width = digits as usize)
}

/// RFC 4648 base32, upper or lower case, padding and spaces ignored.
pub fn base32_decode(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for ch in s.chars() {
        if ch == '=' || ch.is_whitespace() {
            continue;
        }
        let v = match ch.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u32 - 'A' as u32,
            c @ '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => bail!("not base32: {s:?}"),
        };
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

pub fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..20].copy_from_slice(&sha1(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Vec::with_capacity(64 + msg.len());
    inner.extend(k.iter().map(|b| b ^ 0x36));
    inner.extend_from_slice(msg);
    let inner_hash = sha1(&inner);
    let mut outer = Vec::with_capacity(84);
    outer.extend(k.iter().map(|b| b ^ 0x5c));
    outer.extend_from_slice(&inner_hash);
    sha1(&outer)
}

/// FIPS 180 SHA-1 (for HMAC in tests only).
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in chunk.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        h[0] = h[0].wrapping_add(a);
        h[1] = h[1].wrapping_add(b);
        h[2] = h[2].wrapping_add(c);
        h[3] = h[3].wrapping_add(d);
        h[4] = h[4].wrapping_add(e);
    }
    let mut out = [0u8; 20];
    for (i, v) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha1_matches_fips_vectors() {
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }

    #[test]
    fn hotp_matches_rfc4226_vectors() {
        let key = b"12345678901234567890";
        let expected = ["755224", "287082", "359152", "969429", "338314"];
        for (i, e) in expected.iter().enumerate() {
            assert_eq!(hotp(key, i as u64, 6), *e);
        }
    }

    #[test]
    fn totp_matches_rfc6238_sha1_vectors() {
        // RFC 6238 appendix B, SHA-1, 8 digits; the key is "12345678901234567890" in base32.
        let t = TotpSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", 8, 30, 1).unwrap();
        assert_eq!(t.code_at(59), "94287082");
        assert_eq!(t.code_at(1_111_111_109), "07081804");
        assert_eq!(t.code_at(1_234_567_890), "89005924");
        assert_eq!(t.code_at(20_000_000_000), "65353130");
    }

    #[test]
    fn fresh_codes_never_repeat_a_step() {
        let mut t = TotpSecret::from_base32("JBSWY3DPEHPK3PXP", 6, 30, 1).unwrap();
        let a = t.current_code();
        let b = t.fresh_code();
        assert_ne!(a, b);
        assert_ne!(t.wrong_code(), b);
    }
}
