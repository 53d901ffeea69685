//! Duo logins per second and their latency against the fake Duo API behind a latency proxy,
//! with mfad's one pooled HTTPS client versus a fresh client (new TCP and TLS connection,
//! and a `/ping`) for every login, as pam_duo does in each sshd child.
//!
//! A "login" is the Duo part of a passcode login, the calls mfad's flow makes: `/ping` when
//! the clock offset is unknown, `/preauth`, `/auth` with the passcode. sshd, PAM and the Unix
//! socket are the same either way and left out.
//!
//! `cargo bench -p mfad --bench duo_login` (env `DUO_BENCH_QUICK=1` for a short run). Every
//! request goes to 127.0.0.1 only; every loop is bounded in count.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fake_duo::{FakeDuo, LatencyProxy, Options, Scenario};
use mfad::SystemClock;
use mfad::duo::api::{DuoClient, http_client};
use mfad::duo::config::DuoConfig;
use mfad::oob::config::Secret;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Pooling {
    Reused,
    Fresh,
}

async fn login(client: &DuoClient) {
    client.sync_clock().await.unwrap();
    let pre = client
        .preauth("passcode", Some("192.0.2.7"), "bench-host")
        .await
        .unwrap();
    assert_eq!(pre.result, mfad::duo::api::PreauthResult::Auth);
    let a = client
        .auth(vec![
            ("username".into(), "passcode".into()),
            ("factor".into(), "passcode".into()),
            ("passcode".into(), fake_duo::PASSCODE.into()),
            ("ipaddr".into(), "192.0.2.7".into()),
            ("hostname".into(), "bench-host".into()),
        ])
        .await
        .unwrap();
    assert!(a.is_allow());
}

fn client(cfg: &DuoConfig) -> DuoClient {
    DuoClient::new(cfg, http_client(cfg).unwrap(), Arc::new(SystemClock))
}

struct Figures {
    p50: Duration,
    p95: Duration,
    per_sec: f64,
    connections: usize,
}

async fn measure(
    cfg: &DuoConfig,
    pooling: Pooling,
    fake: &FakeDuo,
    sequential: usize,
    workers: usize,
    per_worker: usize,
) -> Figures {
    let shared = Arc::new(client(cfg));
    // Warm-up: the pooled client opens its connection and learns the clock offset once.
    login(&shared).await;
    let before = fake.connections();
    let mut lat = Vec::with_capacity(sequential);
    for _ in 0..sequential {
        let started = Instant::now();
        match pooling {
            Pooling::Reused => login(&shared).await,
            Pooling::Fresh => login(&client(cfg)).await,
        }
        lat.push(started.elapsed());
    }
    lat.sort();
    let p50 = lat[lat.len() / 2];
    let p95 = lat[(lat.len() * 95 / 100).min(lat.len() - 1)];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let shared = Arc::clone(&shared);
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_worker {
                match pooling {
                    Pooling::Reused => login(&shared).await,
                    Pooling::Fresh => login(&client(&cfg)).await,
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let per_sec = (workers * per_worker) as f64 / started.elapsed().as_secs_f64();
    Figures {
        p50,
        p95,
        per_sec,
        connections: fake.connections() - before,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var_os("DUO_BENCH_QUICK").is_some();
    let (sequential, workers, per_worker) = if quick { (10, 4, 5) } else { (40, 16, 10) };
    let dir = std::env::temp_dir().join(format!("duo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "Duo passcode logins against fake-duo on 127.0.0.1; {sequential} sequential logins for \
         latency, {workers} concurrent workers x {per_worker} logins for throughput.\n"
    );
    println!(
        "| RTT | client | p50 ms | p95 ms | logins/s ({workers} at once) | TLS connections | p50 ratio | logins/s ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for one_way_ms in [0u64, 10, 25] {
        let fake = FakeDuo::start(Options {
            default_scenario: Scenario::Passcode,
            ..Options::default()
        })
        .await
        .unwrap();
        let proxy = LatencyProxy::start(fake.addr(), Duration::from_millis(one_way_ms))
            .await
            .unwrap();
        let ca = dir.join(format!("ca-{one_way_ms}.pem"));
        std::fs::write(&ca, fake.ca_pem()).unwrap();
        let cfg = DuoConfig {
            host: Some(proxy.host()),
            ikey: Some(fake.ikey().into()),
            skey: Some(Secret::new(fake.skey())),
            cafile: Some(ca),
            https_timeout: Some(30),
            ..Default::default()
        };
        let reused = measure(
            &cfg,
            Pooling::Reused,
            &fake,
            sequential,
            workers,
            per_worker,
        )
        .await;
        let fresh = measure(&cfg, Pooling::Fresh, &fake, sequential, workers, per_worker).await;
        for (name, f) in [
            ("pooled (mfad)", &reused),
            ("fresh per login (pam_duo)", &fresh),
        ] {
            println!(
                "| {} ms | {name} | {} | {} | {:.1} | {} | {:.2} | {:.2} |",
                one_way_ms * 2,
                ms(f.p50),
                ms(f.p95),
                f.per_sec,
                f.connections,
                f.p50.as_secs_f64() / reused.p50.as_secs_f64(),
                f.per_sec / reused.per_sec,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
