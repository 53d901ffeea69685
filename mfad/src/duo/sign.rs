//! Duo's request signature (Auth API v2, signature version 2): the canonical request is the
//! date, the upper-cased method, the lower-cased API host, the path and the sorted,
//! percent-encoded parameters, one per line; the password of HTTP Basic authorization is its
//! HMAC-SHA512 in lower-case hex, keyed with the secret key, and the user is the integration key.

use data_encoding::{BASE64, HEXLOWER};
use hmac::{Hmac, Mac};
use sha2::Sha512;

/// Request parameters: (name, value), in any order; they are sorted when signed and sent.
pub type Params = Vec<(String, String)>;

/// Duo's percent-encoding: every byte but ASCII letters, digits, `_`, `.`, `~` and `-` becomes
/// `%XX` with upper-case hex digits (so a space is `%20`, never `+`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'~' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The parameters as Duo signs them, which is also how they are sent (query string for
/// GET, form body for POST): sorted by name, then value, `name=value` joined by `&`.
pub fn canon_params(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The canonical request of signature version 2.
pub fn canonical(
    date: &str,
    method: &str,
    host: &str,
    path: &str,
    params: &[(String, String)],
) -> String {
    format!(
        "{date}\n{}\n{}\n{path}\n{}",
        method.to_ascii_uppercase(),
        host.to_ascii_lowercase(),
        canon_params(params)
    )
}

/// HMAC-SHA512 of `canonical` keyed with `skey`, in lower-case hex.
pub fn signature(skey: &str, canonical: &str) -> String {
    // HMAC takes keys of any length, so this cannot fail; an empty tag would only ever be
    // refused by Duo.
    match Hmac::<Sha512>::new_from_slice(skey.as_bytes()) {
        Ok(mut mac) => {
            mac.update(canonical.as_bytes());
            HEXLOWER.encode(&mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// The `Authorization` header: `Basic base64(ikey:signature)`.
pub fn authorization(ikey: &str, skey: &str, canonical: &str) -> String {
    let pair = format!("{ikey}:{}", signature(skey, canonical));
    format!("Basic {}", BASE64.encode(pair.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // The vectors below are the published test vectors of Duo's own client libraries
    // (duo_client_python tests/test_client.py, duo_api_csharp and duo_api_perl use the same).

    #[test]
    fn parameters_are_sorted_and_encoded_as_duo_does() {
        assert_eq!(canon_params(&[]), "");
        assert_eq!(
            canon_params(&p(&[("username", "root"), ("realname", "First Last")])),
            "realname=First%20Last&username=root"
        );
        assert_eq!(
            canon_params(&p(&[("foo_bar", "2"), ("foo", "1")])),
            "foo=1&foo_bar=2"
        );
        assert_eq!(
            canon_params(&p(&[
                ("digits", "0123456789"),
                (
                    "letters",
                    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                ),
                ("punctuation", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
                ("whitespace", "\t\n\x0b\x0c\r "),
            ])),
            "digits=0123456789&letters=abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\
             &punctuation=%21%22%23%24%25%26%27%28%29%2A%2B%2C-.%2F%3A%3B%3C%3D%3E%3F%40%5B%5C%5D%5E_%60%7B%7C%7D~\
             &whitespace=%09%0A%0B%0C%0D%20"
        );
        assert_eq!(
            canon_params(&p(&[(
                "qux",
                "\u{8b97}\u{c846}-\u{828e}\u{831a}\u{ccca}\u{a2d4}\u{8c3e}\u{b8b2}\u{99be}"
            )])),
            "qux=%E8%AE%97%EC%A1%86-%E8%8A%8E%E8%8C%9A%EC%B3%8A%EA%8B%94%E8%B0%BE%EB%A2%B2%E9%A6%BE"
        );
    }

    fn duo_vector_params() -> Params {
        p(&[
            (
                "\u{469a}\u{287b}\u{35d0}\u{8ef3}\u{6727}\u{502a}\u{0810}\u{d091}\u{c8}\u{c170}",
                "\u{0f45}\u{1a76}\u{341a}\u{654c}\u{c23f}\u{9b09}\u{abe2}\u{8343}\u{1b27}\u{60d0}",
            ),
            (
                "\u{7449}\u{7e4b}\u{ccfb}\u{59ff}\u{fe5f}\u{83b7}\u{adcc}\u{900c}\u{cfd1}\u{7813}",
                "\u{8db7}\u{5022}\u{92d3}\u{42ef}\u{207d}\u{8730}\u{acfe}\u{5617}\u{0946}\u{4e30}",
            ),
            (
                "\u{7470}\u{9314}\u{901c}\u{9eae}\u{40d8}\u{4201}\u{82d8}\u{8c70}\u{1d31}\u{a042}",
                "\u{17d9}\u{0ba8}\u{9358}\u{aadf}\u{a42a}\u{48be}\u{fb96}\u{6fe9}\u{b7ff}\u{32f3}",
            ),
            (
                "\u{c2c5}\u{2c1d}\u{2620}\u{3617}\u{96b3}F\u{8605}\u{20e8}\u{ac21}\u{5934}",
                "\u{fba9}\u{41aa}\u{bd83}\u{840b}\u{2615}\u{3e6e}\u{652d}\u{a8b5}\u{d56b}U",
            ),
        ])
    }

    #[test]
    fn the_canonical_request_matches_duos_worked_example() {
        let c = canonical(
            "Fri, 07 Dec 2012 17:18:00 -0000",
            "PoSt",
            "foO.BAr52.cOm",
            "/Foo/BaR2/qux",
            &duo_vector_params(),
        );
        assert!(
            c.starts_with("Fri, 07 Dec 2012 17:18:00 -0000\nPOST\nfoo.bar52.com\n/Foo/BaR2/qux\n%E4%9A%9A%E2%A1%BB"),
            "{c}"
        );
        assert!(c.ends_with("%E6%94%AD%EA%A2%B5%ED%95%ABU"), "{c}");
    }

    #[test]
    fn the_hmac_sha512_signature_matches_duos_worked_example() {
        let c = canonical(
            "Fri, 07 Dec 2012 17:18:00 -0000",
            "PoSt",
            "foO.BAr52.cOm",
            "/Foo/BaR2/qux",
            &duo_vector_params(),
        );
        let skey = "gtdfxv9YgVBYcF6dl2Eq17KUQJN2PLM2ODVTkvoT";
        let expected = "0508065035a03b2a1de2f453e629e791d180329e157f65df6b3e0f08299d4321\
                        e1c5c7a7c7ee6b9e5fc80d1fb6fbf3ad5eb7c44dd3b3985a02c37aca53ec3698";
        assert_eq!(signature(skey, &c), expected);
        assert_eq!(
            authorization("test_ikey", skey, &c),
            format!(
                "Basic {}",
                BASE64.encode(format!("test_ikey:{expected}").as_bytes())
            )
        );
    }
}
