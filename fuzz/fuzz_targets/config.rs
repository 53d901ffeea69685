//! The config parser: any text gives a Config or an error naming what is wrong, never a
//! panic; and a config that parses once parses the same again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/mfa/mfad.toml");
    match mfad::Config::parse(text, path) {
        Ok(config) => {
            let again = mfad::Config::parse(text, path).map(|c| format!("{c:?}"));
            assert_eq!(again.ok(), Some(format!("{config:?}")));
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("/etc/mfa/mfad.toml"), "{message}");
        }
    }
});
