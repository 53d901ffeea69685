//! The Duo client against the fake Duo API: signatures and dates accepted, and every kind of
//! failure sorted into "Duo said no" or "Duo cannot be asked", each within its time bound.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fake_duo::{DroppingProxy, FakeDuo, Options, Scenario};
use mfad::duo::api::{DuoClient, DuoError, Outage, PreauthResult, http_client};
use mfad::duo::config::DuoConfig;
use mfad::oob::config::Secret;
use mfad::{FakeClock, SystemClock};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Setup {
    _dir: tempfile::TempDir,
    config: DuoConfig,
}

fn config_for(host: &str, ikey: &str, skey: &str, ca_pem: Option<&str>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cafile = ca_pem.map(|pem| {
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, pem).unwrap();
        path
    });
    Setup {
        config: DuoConfig {
            host: Some(host.into()),
            ikey: Some(ikey.into()),
            skey: Some(Secret::new(skey)),
            cafile,
            https_timeout: Some(2),
            status_timeout: Some(10),
            ..Default::default()
        },
        _dir: dir,
    }
}

fn client(s: &Setup) -> DuoClient {
    DuoClient::new(
        &s.config,
        http_client(&s.config).unwrap(),
        Arc::new(SystemClock),
    )
}

async fn fake(tune: impl FnOnce(&mut Options)) -> FakeDuo {
    let mut opts = Options::default();
    tune(&mut opts);
    FakeDuo::start(opts).await.unwrap()
}

fn setup(f: &FakeDuo) -> Setup {
    config_for(&f.host(), f.ikey(), f.skey(), Some(f.ca_pem()))
}

#[tokio::test]
async fn check_and_preauth_are_signed_as_duo_requires() {
    let f = fake(|_| {}).await;
    let s = setup(&f);
    let c = client(&s);
    c.sync_clock().await.unwrap();
    c.check().await.unwrap();
    let pre = c
        .preauth("push", Some("192.0.2.7"), "login1")
        .await
        .unwrap();
    assert_eq!(pre.result, PreauthResult::Auth);
    assert_eq!(pre.devices[0].device, fake_duo::DEVICE);
    let reqs = f.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert!(reqs.iter().all(|r| r.rejected.is_none()), "{reqs:?}");
    let preauth = &f.requests_to("/auth/v2/preauth")[0];
    assert_eq!(preauth.params["username"], "push");
    assert_eq!(preauth.params["text_prompt"], "1");
    assert_eq!(preauth.params["ipaddr"], "192.0.2.7");
    assert_eq!(preauth.params["hostname"], "login1");
}

#[tokio::test]
async fn a_wrong_secret_key_is_unauthorized_and_so_an_outage() {
    let f = fake(|_| {}).await;
    let s = config_for(&f.host(), f.ikey(), "not-the-secret", Some(f.ca_pem()));
    let err = client(&s).check().await.unwrap_err();
    assert_eq!(err, DuoError::Unavailable(Outage::Unauthorized));
    let r = &f.requests_to("/auth/v2/check")[0];
    assert_eq!(r.rejected.as_deref(), Some("signature does not match"));
}

#[tokio::test]
async fn a_skewed_duo_clock_is_learnt_from_ping() {
    let f = fake(|o| o.skew = 7200).await;
    let s = setup(&f);
    // Our clock is years away from Duo's; /ping tells the difference.
    let c = DuoClient::new(
        &s.config,
        http_client(&s.config).unwrap(),
        Arc::new(FakeClock::new(1_000_000_000)),
    );
    // Without /ping the date is refused; the 401 makes the client ping and sign again.
    c.check().await.unwrap();
    let checks = f.requests_to("/auth/v2/check");
    assert!(
        checks[0]
            .rejected
            .as_deref()
            .unwrap()
            .contains("off the server's clock")
    );
    assert!(checks[1].rejected.is_none());
    assert_eq!(f.requests_to("/auth/v2/ping").len(), 1);
}

#[tokio::test]
async fn a_host_with_a_port_is_signed_over_the_bare_host_name() {
    // The fake listens on a port other than 443 and, like Duo, checks the signature over
    // the host name alone.
    let f = fake(|_| {}).await;
    assert!(f.host().contains(':') && !f.host().ends_with(":443"));
    let s = setup(&f);
    let c = client(&s);
    c.sync_clock().await.unwrap();
    c.check().await.unwrap();
    c.preauth("push", None, "h").await.unwrap();
    let reqs = f.requests();
    assert!(reqs.iter().all(|r| r.rejected.is_none()), "{reqs:?}");
}

#[tokio::test]
async fn a_clock_step_after_the_first_ping_costs_one_re_ping_not_a_refusal() {
    let f = fake(|_| {}).await;
    let s = setup(&f);
    let c = client(&s);
    c.sync_clock().await.unwrap();
    c.preauth("push", None, "h").await.unwrap();
    // NTP steps the clocks 20 minutes apart: the next signed date is off by more than 300 s.
    f.step_clock(1200);
    c.sync_clock().await.unwrap();
    let pre = c.preauth("push", None, "h").await.unwrap();
    assert_eq!(pre.result, PreauthResult::Auth);
    let paths: Vec<(String, bool)> = f
        .requests()
        .iter()
        .map(|r| (r.path.clone(), r.rejected.is_none()))
        .collect();
    let expected: Vec<(String, bool)> = [
        ("/auth/v2/ping", true),
        ("/auth/v2/preauth", true),
        ("/auth/v2/preauth", false),
        ("/auth/v2/ping", true),
        ("/auth/v2/preauth", true),
    ]
    .iter()
    .map(|(p, ok)| (p.to_string(), *ok))
    .collect();
    assert_eq!(paths, expected);
}

#[tokio::test]
async fn a_wrong_key_costs_one_re_ping_then_is_unauthorized() {
    let f = fake(|_| {}).await;
    let s = config_for(&f.host(), f.ikey(), "not-the-secret", Some(f.ca_pem()));
    let c = client(&s);
    c.sync_clock().await.unwrap();
    assert_eq!(
        c.check().await.unwrap_err(),
        DuoError::Unavailable(Outage::Unauthorized)
    );
    assert_eq!(f.requests_to("/auth/v2/check").len(), 2);
    assert_eq!(f.requests_to("/auth/v2/ping").len(), 2);
}

#[tokio::test]
async fn other_4xx_answers_are_refusals_with_duos_message() {
    let f = fake(|_| {}).await;
    let s = setup(&f);
    let c = client(&s);
    c.sync_clock().await.unwrap();
    let err = c
        .auth(vec![("username".into(), "push".into())])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DuoError::Refused {
            status: 400,
            code: Some(40002),
            message: "Invalid request parameters".into()
        }
    );
}

#[tokio::test]
async fn server_errors_bad_json_and_401_are_outages() {
    let f = fake(|_| {}).await;
    let s = setup(&f);
    let c = client(&s);
    c.sync_clock().await.unwrap();
    for (user, outage) in [
        ("server-error", Outage::Server(503)),
        ("malformed", Outage::BadResponse),
        ("unauthorized", Outage::Unauthorized),
    ] {
        let err = c.preauth(user, None, "h").await.unwrap_err();
        assert_eq!(err, DuoError::Unavailable(outage), "{user}");
    }
}

#[tokio::test]
async fn a_hanging_answer_times_out_within_https_timeout_per_try() {
    let f = fake(|_| {}).await;
    let s = setup(&f);
    let c = client(&s);
    c.sync_clock().await.unwrap();
    let started = Instant::now();
    let err = c.preauth("hang", None, "h").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        err,
        DuoError::Unavailable(Outage::Timeout(Duration::from_secs(2)))
    );
    // The pooled connection (from /ping) may be the dead one: one more try on a new
    // connection, each bounded by https_timeout.
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!(f.requests_to("/auth/v2/preauth").len(), 2);
    assert_eq!(f.connections(), 2);
}

#[tokio::test]
async fn a_server_that_never_completes_tls_times_out_in_connection_setup() {
    // Accepts TCP, never says a word: the TLS handshake itself must be bounded.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let s = config_for(&host, "DIXXXXXXXXXXXXXXXXXX", "k", None);
    let started = Instant::now();
    let err = client(&s).ping().await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            DuoError::Unavailable(Outage::Timeout(_) | Outage::Connect)
        ),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[tokio::test]
async fn refused_connections_and_untrusted_certificates_cannot_connect() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = config_for(&format!("127.0.0.1:{port}"), "DIX", "k", None);
    assert_eq!(
        client(&s).ping().await.unwrap_err(),
        DuoError::Unavailable(Outage::Connect)
    );
    // The fake's certificate is not trusted without cafile.
    let f = fake(|_| {}).await;
    let s = config_for(&f.host(), f.ikey(), f.skey(), None);
    assert_eq!(
        client(&s).ping().await.unwrap_err(),
        DuoError::Unavailable(Outage::Connect)
    );
    assert_eq!(f.requests().len(), 0);
}

#[tokio::test]
async fn rate_limits_are_waited_out_up_to_the_cap() {
    let f = fake(|_| {}).await;
    let s = setup(&f);
    let c = client(&s);
    c.sync_clock().await.unwrap();
    let started = Instant::now();
    let pre = c.preauth("rate-limited", None, "h").await.unwrap();
    assert_eq!(pre.result, PreauthResult::Auth);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(f.requests_to("/auth/v2/preauth").len(), 2);

    // A cap below Retry-After: no wait, an outage.
    let f = fake(|o| {
        o.users.insert("someone".into(), Scenario::RateLimited);
    })
    .await;
    let mut s = setup(&f);
    s.config.max_retry_wait = Some(0);
    let c = client(&s);
    c.sync_clock().await.unwrap();
    assert_eq!(
        c.preauth("someone", None, "h").await.unwrap_err(),
        DuoError::RateLimited
    );
}

#[tokio::test]
async fn x_retry_after_is_honoured_like_retry_after() {
    // The fake sends only `X-Retry-After: 2`; the default back-off would wait 1 s.
    let f = fake(|_| {}).await;
    let s = setup(&f);
    let c = client(&s);
    c.sync_clock().await.unwrap();
    let started = Instant::now();
    let pre = c.preauth("rate-limited-x", None, "h").await.unwrap();
    let took = started.elapsed();
    assert_eq!(pre.result, PreauthResult::Auth);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(f.requests_to("/auth/v2/preauth").len(), 2);
}

#[tokio::test]
async fn a_persistent_429_is_rate_limiting_not_an_outage() {
    let f = fake(|_| {}).await;
    let s = setup(&f);
    let c = client(&s);
    c.sync_clock().await.unwrap();
    let started = Instant::now();
    assert_eq!(
        c.preauth("rate-limited-always", None, "h")
            .await
            .unwrap_err(),
        DuoError::RateLimited
    );
    // Four tries, Retry-After: 1 between them.
    assert_eq!(f.requests_to("/auth/v2/preauth").len(), 4);
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn a_silently_dropped_pooled_connection_is_retried_on_a_new_one() {
    let f = fake(|_| {}).await;
    let proxy = DroppingProxy::start(f.addr()).await.unwrap();
    // The proxy answers as 127.0.0.1 too, so the fake's certificate fits.
    let s = config_for(&proxy.host(), f.ikey(), f.skey(), Some(f.ca_pem()));
    let c = client(&s);
    c.sync_clock().await.unwrap();
    assert_eq!(f.connections(), 1);
    // A NAT gateway forgets the idle connection: no FIN, no RST, just silence.
    proxy.drop_silently();
    let started = Instant::now();
    let pre = c.preauth("push", None, "h").await.unwrap();
    let took = started.elapsed();
    assert_eq!(pre.result, PreauthResult::Auth);
    assert_eq!(f.connections(), 2, "the retry went over a new connection");
    // One https_timeout (2 s) lost on the dead connection, then a prompt answer.
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(f.requests_to("/auth/v2/preauth").len(), 1);
}

#[tokio::test]
async fn one_client_keeps_one_connection_across_calls() {
    let f = fake(|_| {}).await;
    let s = setup(&f);
    let c = client(&s);
    c.sync_clock().await.unwrap();
    for _ in 0..10 {
        c.preauth("push", None, "h").await.unwrap();
    }
    assert_eq!(f.connections(), 1);
}

#[tokio::test]
async fn the_secret_key_never_shows_in_debug_output() {
    let s = config_for("api-x.duosecurity.com", "DIX", "very-secret-key", None);
    let c = client(&s);
    let shown = format!("{c:?} {:?}", s.config);
    assert!(!shown.contains("very-secret-key"), "{shown}");
    assert!(shown.contains("(hidden)"), "{shown}");
}
