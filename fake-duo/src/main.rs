//! `fake-duo`: the fake Duo API as a program, for end-to-end tests that run mfad as a
//! separate process.
//!
//! ```text
//! fake-duo --ca FILE [--log FILE] [--default SCENARIO] [--user NAME=SCENARIO]...
//!          [--push-delay-ms N]
//! ```
//!
//! Writes its certificate to the `--ca` file, prints `HOST IKEY SKEY` on one line of stdout,
//! and serves until stdin is closed or it is killed. With `--log`, the requests seen so far
//! are kept in that file, one line each: `METHOD PATH name=value ...` (passcodes hidden),
//! with `REJECTED: why` when the signature or date was refused.

use fake_duo::{FakeDuo, Options, Scenario};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-duo: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut opts = Options::default();
    let mut ca = None;
    let mut log: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--ca" => ca = Some(value()?),
            "--log" => log = Some(value()?),
            "--default" => opts.default_scenario = value()?.parse::<Scenario>()?,
            "--user" => {
                let v = value()?;
                let (name, s) = v.split_once('=').ok_or("--user takes NAME=SCENARIO")?;
                opts.users.insert(name.to_string(), s.parse()?);
            }
            "--push-delay-ms" => {
                let ms: u64 = value()?
                    .parse()
                    .map_err(|_| "--push-delay-ms takes a number")?;
                opts.push_delay = Duration::from_millis(ms);
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    let ca = ca.ok_or("--ca FILE is required")?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let fake = FakeDuo::start(opts).await.map_err(|e| e.to_string())?;
        std::fs::write(&ca, fake.ca_pem()).map_err(|e| format!("{ca}: {e}"))?;
        let mut out = std::io::stdout();
        writeln!(out, "{} {} {}", fake.host(), fake.ikey(), fake.skey())
            .map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        let fake = std::sync::Arc::new(fake);
        if let Some(log) = log {
            let seen = std::sync::Arc::clone(&fake);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let lines: String = seen
                        .requests()
                        .iter()
                        .map(|r| {
                            let params: Vec<String> =
                                r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                            let rejected = r
                                .rejected
                                .as_ref()
                                .map(|w| format!(" REJECTED: {w}"))
                                .unwrap_or_default();
                            format!("{} {} {}{rejected}\n", r.method, r.path, params.join(" "))
                        })
                        .collect();
                    let tmp = format!("{log}.tmp");
                    if std::fs::write(&tmp, lines).is_ok() {
                        let _ = std::fs::rename(&tmp, &log);
                    }
                }
            });
        }
        // Until stdin closes: the test that started it holds the other end.
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        })
        .await;
        drop(fake);
        Ok(())
    })
}
