//! The config parser: any text gives a Config or an error naming the file, never a panic.
//! A config that parses keeps its credentials (`push.token`, `twilio.auth_token`,
//! `duo.skey`) out of its `Debug` form (what `mfad --check-config` and logs print), and
//! names each one written inline, so mfad refuses a file others can read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// The credentials a config file can hold inline, as (table, key).
const SECRETS: [(&str, &str); 3] = [("push", "token"), ("twilio", "auth_token"), ("duo", "skey")];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/mfa/mfad.toml");
    match mfad::Config::parse(text, path) {
        Ok(config) => {
            let shown = format!("{config:?}");
            let Ok(table) = text.parse::<toml::Table>() else {
                panic!("mfad accepted a file that is not TOML");
            };
            for (section, key) in SECRETS {
                let Some(value) = table
                    .get(section)
                    .and_then(|s| s.get(key))
                    .and_then(|v| v.as_str())
                else {
                    continue;
                };
                let name = format!("{section}.{key}");
                // Short values could match unrelated text of the Debug form by chance.
                if value.len() >= 6 {
                    assert!(!shown.contains(value), "{name} shown: {shown}");
                }
                if !value.is_empty() {
                    assert!(
                        config.inline_secrets.contains(&name.as_str()),
                        "{name} set inline but not named: {:?}",
                        config.inline_secrets
                    );
                }
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("/etc/mfa/mfad.toml"), "{message}");
        }
    }
});
