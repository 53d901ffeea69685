//! The approval pages over real sockets: mfa-web's server, answered by mfad's web service
//! (in-process, as root; the socket between them is tested with the test daemon). The page
//! shows and never decides, a POST decides, reports reach the hook, verified push checks the
//! number, the phone callbacks need the provider's signature (checked by mfad), hostile text
//! is escaped, and HTTPS works with the configured cert.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use data_encoding::BASE64;
use hmac::{Hmac, Mac};
use mfa_web::{Mfad, MfadError, WebConfig, WebError, WebServer};
use mfad::FakeClock;
use mfad::oob::{
    ApprovalConfig, ApprovalDecision, ApprovalHooks, ApprovalMethod, ApprovalRequest,
    ApprovalStore, Pending, Secret, TwilioConfig,
};
use mfad::web::WebService;
use sha1::Sha1;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const T0: i64 = 1_767_225_600; // 2026-01-01 00:00 UTC
const PUBLIC: &str = "https://mfa.example.org/prefix";
const AUTH_TOKEN: &str = "test-auth-token-0123456789abcdef";

#[derive(Default)]
struct Recorder {
    reported: Mutex<Vec<ApprovalRequest>>,
    decided: Mutex<Vec<(String, ApprovalDecision)>>,
}

impl ApprovalHooks for Recorder {
    fn reported(&self, request: &ApprovalRequest) {
        self.reported.lock().unwrap().push(request.clone());
    }
    fn decided(&self, request: &ApprovalRequest, decision: ApprovalDecision) {
        self.decided
            .lock()
            .unwrap()
            .push((request.user.clone(), decision));
    }
}

struct Endpoint {
    base: String,
    store: Arc<ApprovalStore>,
    hooks: Arc<Recorder>,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

fn config(verified_push: bool) -> ApprovalConfig {
    ApprovalConfig {
        public_url: format!("{PUBLIC}/"),
        verified_push,
        ..ApprovalConfig::default()
    }
}

fn web_config() -> WebConfig {
    WebConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..WebConfig::default()
    }
}

/// mfad's web service in-process, asked as root.
struct InProcess(WebService);

impl Mfad for InProcess {
    fn ask(&self, request: mfa_proto::WebRequest) -> mfa_web::Reply<'_> {
        Box::pin(async move {
            self.0
                .reply(0, request)
                .await
                .map_err(|e| MfadError::Task(e.to_string()))
        })
    }
}

/// mfad's web service over `store` and `hooks`, with `[approval]` = `cfg` and the voice
/// provider's auth token `twilio`.
fn web_service(
    cfg: ApprovalConfig,
    twilio: Option<&str>,
    store: &Arc<ApprovalStore>,
    hooks: Arc<dyn ApprovalHooks>,
) -> Arc<InProcess> {
    let config = mfad::Config {
        approval: Some(cfg),
        twilio: twilio.map(|t| TwilioConfig {
            auth_token: Secret::new(t),
            ..TwilioConfig::default()
        }),
        ..mfad::Config::default()
    };
    Arc::new(InProcess(WebService::new(
        &config,
        Arc::clone(store),
        hooks,
        Arc::new(mfad::accounts::NssAccounts),
    )))
}

async fn start_with(cfg: ApprovalConfig, twilio: Option<&str>) -> Endpoint {
    let clock = FakeClock::new(T0);
    let store = Arc::new(ApprovalStore::new(Arc::new(clock), cfg.verified_push));
    let hooks = Arc::new(Recorder::default());
    let mfad = web_service(cfg, twilio, &store, hooks.clone());
    let endpoint = WebServer::bind_with(&web_config(), mfad).await.unwrap();
    let addr = endpoint.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(endpoint.serve(async move {
        let _ = stopped.await;
    }));
    Endpoint {
        base: format!("http://{addr}"),
        store,
        hooks,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        stop: Some(stop),
        task,
    }
}

async fn start(verified_push: bool) -> Endpoint {
    start_with(config(verified_push), Some(AUTH_TOKEN)).await
}

fn request(user: &str, method: ApprovalMethod) -> ApprovalRequest {
    ApprovalRequest {
        user: user.to_string(),
        host: "login1.example.org".to_string(),
        rhost: "192.0.2.10".to_string(),
        method,
        created: T0,
        adding_device: false,
    }
}

impl Endpoint {
    async fn create(&self, user: &str, method: ApprovalMethod) -> Pending {
        self.store
            .create(request(user, method), Duration::from_secs(60))
            .await
            .unwrap()
    }

    /// Waits for the decision in the background, as the login's task would.
    fn waiter(&self, pending: Pending) -> JoinHandle<ApprovalDecision> {
        let store = Arc::clone(&self.store);
        tokio::spawn(async move { store.wait(pending, Duration::from_secs(10)).await })
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// A callback as the voice provider sends it: signed over the public URL.
    async fn callback(
        &self,
        path: &str,
        form: &[(&str, &str)],
        signature: Option<String>,
    ) -> reqwest::Response {
        let mut req = self.client.post(format!("{}{path}", self.base)).form(form);
        if let Some(sig) = signature {
            req = req.header("X-Twilio-Signature", sig);
        }
        req.send().await.unwrap()
    }
}

/// Twilio's documented algorithm, written out again here so the test does not trust the
/// code under test: base64(HMAC-SHA1(auth token, URL + each name+value sorted by name)).
fn twilio_sign(auth_token: &str, url: &str, form: &[(&str, &str)]) -> String {
    let mut sorted = form.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    BASE64.encode(&mac.finalize().into_bytes())
}

#[test]
fn the_test_signer_reproduces_twilios_worked_example() {
    let form = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ];
    assert_eq!(
        twilio_sign(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            &form
        ),
        "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    );
}

fn call_form(digits: Option<&'static str>) -> Vec<(&'static str, &'static str)> {
    let mut form = vec![
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("CallSid", "CA0123456789abcdef0123456789abcdef"),
        ("CallStatus", "in-progress"),
        ("Called", "+15550001111"),
        ("From", "+15550002222"),
        ("To", "+15550001111"),
        ("Direction", "outbound-api"),
    ];
    if let Some(d) = digits {
        form.push(("Digits", d));
    }
    form
}

#[tokio::test]
async fn the_page_shows_the_context_and_a_get_decides_nothing() {
    let ep = start(false).await;
    let pending = ep.create("abc123", ApprovalMethod::Push).await;
    let path = format!("/a/{}", pending.token);
    for _ in 0..3 {
        // Link previews, scanners and reloads: none of them may decide.
        let resp = ep.get(&path).await;
        assert_eq!(resp.status(), 200);
        let h = resp.headers();
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let csp = h["content-security-policy"].to_str().unwrap().to_string();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("form-action 'self'"), "{csp}");
        assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
        let body = resp.text().await.unwrap();
        for shown in [
            "abc123",
            "login1.example.org",
            "192.0.2.10",
            "2026-01-01 00:00 UTC",
            "Approve",
            ">Deny<",
            "Deny and report",
        ] {
            assert!(body.contains(shown), "page lacks {shown:?}:\n{body}");
        }
        assert_eq!(body.matches("method=\"post\"").count(), 3, "{body}");
        assert!(
            !body.contains("name=\"number\""),
            "no number without verified push"
        );
        assert!(!body.contains("<script"), "the page needs no script");
    }
    let head = ep
        .client
        .head(format!("{}{path}", ep.base))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(ep.store.len(), 1);
    assert!(ep.hooks.decided.lock().unwrap().is_empty());
    assert_eq!(
        ep.store.wait(pending, Duration::from_millis(300)).await,
        ApprovalDecision::TimedOut,
        "nothing but a POST decides"
    );
}

#[tokio::test]
async fn approving_on_the_page_lets_the_waiting_login_in_once() {
    let ep = start(false).await;
    let pending = ep.create("abc123", ApprovalMethod::Push).await;
    let path = format!("/a/{}", pending.token);
    let waiter = ep.waiter(pending);
    let resp = ep.post(&path, &[("action", "approve")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body = resp.text().await.unwrap();
    assert!(body.contains("Approved"), "{body}");
    assert_eq!(waiter.await.unwrap(), ApprovalDecision::Approved);
    assert_eq!(
        ep.hooks.decided.lock().unwrap().as_slice(),
        &[("abc123".to_string(), ApprovalDecision::Approved)]
    );
    // Single use: the same link cannot answer again, nor show the request.
    let again = ep.post(&path, &[("action", "approve")]).await;
    assert_eq!(again.status(), 404);
    assert_eq!(ep.get(&path).await.status(), 404);
}

#[tokio::test]
async fn denying_on_the_page_refuses_the_login() {
    let ep = start(false).await;
    let pending = ep.create("abc123", ApprovalMethod::Push).await;
    let path = format!("/a/{}", pending.token);
    let waiter = ep.waiter(pending);
    let resp = ep.post(&path, &[("action", "deny")]).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("Denied"));
    assert_eq!(waiter.await.unwrap(), ApprovalDecision::Denied);
    assert!(ep.hooks.reported.lock().unwrap().is_empty());
}

#[tokio::test]
async fn deny_and_report_calls_the_report_hook() {
    let ep = start(false).await;
    let pending = ep.create("victim", ApprovalMethod::Push).await;
    let path = format!("/a/{}", pending.token);
    let waiter = ep.waiter(pending);
    let resp = ep.post(&path, &[("action", "report")]).await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert!(body.contains("reported"), "{body}");
    assert_eq!(waiter.await.unwrap(), ApprovalDecision::Reported);
    let reported = ep.hooks.reported.lock().unwrap().clone();
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0].user, "victim");
    assert_eq!(reported[0].rhost, "192.0.2.10");
}

#[tokio::test]
async fn a_report_after_the_login_stopped_waiting_still_reaches_the_hook() {
    let ep = start(false).await;
    let pending = ep.create("victim", ApprovalMethod::Push).await;
    let path = format!("/a/{}", pending.token);
    drop(pending);
    let resp = ep.post(&path, &[("action", "report")]).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("already stopped waiting")
    );
    assert_eq!(ep.hooks.reported.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn verified_push_asks_for_the_number_and_a_wrong_one_denies() {
    let ep = start(true).await;
    let pending = ep.create("abc123", ApprovalMethod::Push).await;
    let n = pending.verify_number.unwrap();
    let path = format!("/a/{}", pending.token);
    let body = ep.get(&path).await.text().await.unwrap();
    assert!(body.contains("name=\"number\""), "{body}");
    assert!(
        !body.contains(&format!(">{n}<")) && !body.contains(&format!("value=\"{n}\"")),
        "the page must not show the number it asks for"
    );
    let wrong = if n == 10 { "11" } else { "10" };
    let waiter = ep.waiter(pending);
    let resp = ep
        .post(&path, &[("action", "approve"), ("number", wrong)])
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("did not match"));
    assert_eq!(waiter.await.unwrap(), ApprovalDecision::Denied);

    let pending = ep.create("abc123", ApprovalMethod::Push).await;
    let n = pending.verify_number.unwrap().to_string();
    let path = format!("/a/{}", pending.token);
    let waiter = ep.waiter(pending);
    ep.post(&path, &[("action", "approve"), ("number", &n)])
        .await;
    assert_eq!(waiter.await.unwrap(), ApprovalDecision::Approved);
}

#[tokio::test]
async fn hostile_user_and_host_strings_are_escaped() {
    let ep = start(false).await;
    let pending = ep
        .store
        .create(
            ApprovalRequest {
                user: "<script>alert(1)</script>".into(),
                host: "\"><img src=x onerror=alert(2)>".into(),
                rhost: "10.0.0.1&evil='x'\u{202e}gpj.exe".into(),
                method: ApprovalMethod::Push,
                created: T0,
                adding_device: false,
            },
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let body = ep
        .get(&format!("/a/{}", pending.token))
        .await
        .text()
        .await
        .unwrap();
    assert!(!body.contains("<script"), "{body}");
    assert!(!body.contains("<img"), "{body}");
    // Attributes are all double-quoted: a double quote is escaped, a single one is text.
    assert!(body.contains("&quot;&gt;&lt;img"), "{body}");
    assert!(!body.contains("=\"\"><img"), "{body}");
    assert!(
        !body.contains('\u{202e}'),
        "direction overrides are dropped"
    );
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{body}"
    );
    assert!(body.contains("&quot;&gt;&lt;img src=x"), "{body}");
    assert!(body.contains("10.0.0.1&amp;evil='x'gpj.exe"), "{body}");
}

#[tokio::test]
async fn unknown_tokens_and_bad_answers_decide_nothing() {
    let ep = start(false).await;
    let pending = ep.create("abc123", ApprovalMethod::Push).await;
    let path = format!("/a/{}", pending.token);
    let long = "A".repeat(500);
    for bad in [
        "/a/nope",
        "/a/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &format!("/a/{long}"),
    ] {
        assert_eq!(ep.get(bad).await.status(), 404, "{bad}");
        assert_eq!(ep.post(bad, &[("action", "approve")]).await.status(), 404);
    }
    assert_eq!(ep.get("/").await.status(), 404);
    let resp = ep.post(&path, &[("action", "maybe")]).await;
    assert_eq!(resp.status(), 400);
    // An oversized body is refused before it can decide.
    let big = "x".repeat(20 * 1024);
    let resp = ep
        .post(&path, &[("action", "approve"), ("pad", &big)])
        .await;
    assert_eq!(resp.status(), 413);
    assert_eq!(ep.store.len(), 1, "the token is still unspent");
    assert_eq!(
        ep.store.wait(pending, Duration::from_millis(100)).await,
        ApprovalDecision::TimedOut
    );
}

#[tokio::test]
async fn a_phone_call_fetches_twiml_that_gathers_one_key() {
    let ep = start(false).await;
    let pending = ep.create("abc123", ApprovalMethod::Call).await;
    let path = format!("/twilio/voice/{}", pending.token);
    let form = call_form(None);
    let sig = twilio_sign(AUTH_TOKEN, &format!("{PUBLIC}{path}"), &form);
    let resp = ep.callback(&path, &form, Some(sig)).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/xml")
    );
    let xml = resp.text().await.unwrap();
    let gather = format!(
        "<Gather numDigits=\"1\" action=\"{PUBLIC}/twilio/gather/{}\" method=\"POST\"",
        pending.token
    );
    assert!(xml.contains(&gather), "{xml}");
    assert!(xml.contains("Press 1 to approve"), "{xml}");
    assert!(xml.contains("Press 9"), "{xml}");
    assert!(xml.contains("login1.example.org"), "{xml}");
    assert!(xml.trim_end().ends_with("</Response>"), "{xml}");
    assert_eq!(ep.store.len(), 1, "fetching the TwiML decides nothing");
}

#[tokio::test]
async fn phone_callbacks_without_a_valid_signature_are_refused() {
    let ep = start(false).await;
    let pending = ep.create("abc123", ApprovalMethod::Call).await;
    let gather = format!("/twilio/gather/{}", pending.token);
    let voice = format!("/twilio/voice/{}", pending.token);
    let form = call_form(Some("1"));
    let url = format!("{PUBLIC}{gather}");
    let cases = [
        ("no header", None),
        ("garbage", Some("not-a-signature".to_string())),
        ("wrong key", Some(twilio_sign("another-token", &url, &form))),
        (
            "other URL",
            Some(twilio_sign(AUTH_TOKEN, &format!("{PUBLIC}{voice}"), &form)),
        ),
        (
            "URL as seen locally, not the public one",
            Some(twilio_sign(
                AUTH_TOKEN,
                &format!("{}{gather}", ep.base),
                &form,
            )),
        ),
        (
            "tampered digits",
            Some(twilio_sign(AUTH_TOKEN, &url, &call_form(Some("9")))),
        ),
    ];
    for (what, sig) in cases {
        let resp = ep.callback(&gather, &form, sig.clone()).await;
        assert_eq!(resp.status(), 403, "gather: {what}");
        let resp = ep.callback(&voice, &call_form(None), sig).await;
        assert_eq!(resp.status(), 403, "voice: {what}");
    }
    assert_eq!(ep.store.len(), 1, "nothing was decided");
    let waiter = ep.waiter(pending);
    let sig = twilio_sign(AUTH_TOKEN, &url, &form);
    let resp = ep.callback(&gather, &form, Some(sig)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("Approved"));
    assert_eq!(waiter.await.unwrap(), ApprovalDecision::Approved);
}

#[tokio::test]
async fn keypad_1_approves_9_reports_and_anything_else_denies() {
    let ep = start(false).await;
    for (digits, expected) in [
        ("1", ApprovalDecision::Approved),
        ("9", ApprovalDecision::Reported),
        ("3", ApprovalDecision::Denied),
        ("", ApprovalDecision::Denied),
    ] {
        let pending = ep.create("abc123", ApprovalMethod::Call).await;
        let path = format!("/twilio/gather/{}", pending.token);
        let waiter = ep.waiter(pending);
        let form = call_form(Some(digits));
        let sig = twilio_sign(AUTH_TOKEN, &format!("{PUBLIC}{path}"), &form);
        let resp = ep.callback(&path, &form, Some(sig)).await;
        assert_eq!(resp.status(), 200, "digits {digits:?}");
        let xml = resp.text().await.unwrap();
        assert!(xml.contains("<Say>") && xml.contains("<Hangup/>"), "{xml}");
        assert_eq!(waiter.await.unwrap(), expected, "digits {digits:?}");
    }
    assert_eq!(ep.hooks.reported.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn without_a_provider_token_every_callback_is_refused() {
    let ep = start_with(config(false), None).await;
    let pending = ep.create("abc123", ApprovalMethod::Call).await;
    let path = format!("/twilio/gather/{}", pending.token);
    let form = call_form(Some("1"));
    let sig = twilio_sign("", &format!("{PUBLIC}{path}"), &form);
    assert_eq!(ep.callback(&path, &form, Some(sig)).await.status(), 403);
    assert_eq!(ep.store.len(), 1);
}

struct TlsFiles {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    cert_pem: String,
}

fn self_signed() -> TlsFiles {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let cert_pem = certified.cert.pem();
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    TlsFiles {
        _dir: dir,
        cert,
        key,
        cert_pem,
    }
}

#[tokio::test]
async fn https_serves_the_page_with_the_configured_certificate() {
    let tls = self_signed();
    let cfg = WebConfig {
        tls_cert: Some(tls.cert.clone()),
        tls_key: Some(tls.key.clone()),
        ..web_config()
    };
    let Served {
        addr,
        tls: is_tls,
        store,
        pending,
        task: server,
    } = page_served_with(cfg).await;
    assert!(is_tls);
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(tls.cert_pem.as_bytes()).unwrap())
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/a/{}", addr.port(), pending.token);
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("abc123"));
    let waiter = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.wait(pending, Duration::from_secs(10)).await })
    };
    let resp = client
        .post(&url)
        .form(&[("action", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(waiter.await.unwrap(), ApprovalDecision::Approved);

    // A client that does not trust the certificate cannot talk to it, and neither can plain
    // HTTP on the TLS port.
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert!(untrusting.get(&url).send().await.is_err());
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert!(
        plain
            .get(format!("http://{addr}/a/x"))
            .send()
            .await
            .is_err(),
        "plain HTTP must not be served on the TLS port"
    );
    server.abort();
}

#[tokio::test]
async fn bad_tls_or_listen_settings_are_refused_at_bind() {
    let tls = self_signed();
    let store = Arc::new(ApprovalStore::new(Arc::new(FakeClock::new(T0)), false));
    let mfad = || -> Arc<dyn Mfad> {
        web_service(config(false), None, &store, Arc::new(Recorder::default()))
    };

    let missing_key = WebConfig {
        tls_cert: Some(tls.cert.clone()),
        tls_key: Some(tls.cert.with_file_name("absent.pem")),
        ..web_config()
    };
    let err = WebServer::bind_with(&missing_key, mfad())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, WebError::Key { .. }), "{err}");
    assert!(err.to_string().contains("absent.pem"), "{err}");

    let key_as_cert = WebConfig {
        tls_cert: Some(tls.key.clone()),
        tls_key: Some(tls.key.clone()),
        ..web_config()
    };
    let err = WebServer::bind_with(&key_as_cert, mfad())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, WebError::Certificate { .. }), "{err}");
    assert!(
        !err.to_string().contains("PRIVATE KEY-----\n"),
        "never quote the key: {err}"
    );

    let public_plain = WebConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..web_config()
    };
    let err = WebServer::bind_with(&public_plain, mfad())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("listen"), "{err}");
    assert!(err.to_string().contains("loopback"), "{err}");
}

/// A connection from `from` (any 127.x address works on loopback) to the endpoint.
async fn connect_from(from: [u8; 4], to: &str) -> tokio::net::TcpStream {
    let to: SocketAddr = to.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends a whole GET and reads whatever comes back before the server closes (or 5 s).
async fn whole_get(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream
        .write_all(b"GET /a/unknowntoken HTTP/1.1\r\nHost: mfa\r\nConnection: close\r\n\r\n")
        .await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn half_sent_requests_from_one_address_cannot_shut_out_another() {
    use tokio::io::AsyncWriteExt;
    let e = start(false).await;
    // 300 requests from one address, each stopped half-way through its headers.
    let mut flood = Vec::new();
    for _ in 0..300 {
        let mut s = connect_from([127, 0, 0, 2], &e.base).await;
        let _ = s.write_all(b"GET /a/x HTTP/1.1\r\nHost: mfa\r\n").await;
        flood.push(s);
    }
    #[allow(clippy::disallowed_methods)] // the test's own pacing, in real time
    tokio::time::sleep(Duration::from_millis(300)).await;
    // That address gets nothing more...
    let mut more = connect_from([127, 0, 0, 2], &e.base).await;
    let answer = whole_get(&mut more).await;
    assert!(
        answer.is_empty(),
        "the flooding address was served: {answer}"
    );
    // ...while everyone else still is.
    let mut other = connect_from([127, 0, 0, 3], &e.base).await;
    let answer = whole_get(&mut other).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer:?}");
    assert!(answer.contains("Nothing was approved"), "{answer}");
    drop(flood);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_first_byte_timeout() {
    use tokio::io::AsyncReadExt;
    let e = start(false).await;
    let mut silent = connect_from([127, 0, 0, 1], &e.base).await;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf))
        .await
        .expect("the silent connection was never closed");
    let waited = started.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let limit = mfa_web::FIRST_BYTE_TIMEOUT;
    assert!(
        waited >= limit - Duration::from_millis(200) && waited < limit + Duration::from_secs(2),
        "closed after {waited:?}"
    );
}

/// mfa-web with `cfg`, serving one pending approval.
struct Served {
    addr: SocketAddr,
    tls: bool,
    store: Arc<ApprovalStore>,
    /// The approval the page shows (kept pending while the test runs).
    pending: Pending,
    task: JoinHandle<()>,
}

impl Served {
    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The approval page's path.
    fn path(&self) -> String {
        format!("/a/{}", self.pending.token)
    }
}

async fn page_served_with(cfg: WebConfig) -> Served {
    let store = Arc::new(ApprovalStore::new(Arc::new(FakeClock::new(T0)), false));
    let mfad = web_service(config(false), None, &store, Arc::new(Recorder::default()));
    let server = WebServer::bind_with(&cfg, mfad).await.unwrap();
    let (addr, tls) = (server.local_addr(), server.is_tls());
    let task = tokio::spawn(server.serve(std::future::pending()));
    let pending = store
        .create(
            request("abc123", ApprovalMethod::Push),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    Served {
        addr,
        tls,
        store,
        pending,
        task,
    }
}

/// A whole GET of `path` from `from`, as raw HTTP: the status line and the rest.
async fn get_from(from: [u8; 4], base: &str, path: &str) -> String {
    get_from_with(from, base, path, "").await
}

/// As [`get_from`], with `headers` (each line ending in CRLF) added to the request.
async fn get_from_with(from: [u8; 4], base: &str, path: &str, headers: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = connect_from(from, base).await;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: mfa\r\n{headers}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn requests_past_an_addresss_rate_get_429_while_other_addresses_are_served() {
    let served = page_served_with(WebConfig {
        requests_per_minute: 5,
        ..web_config()
    })
    .await;
    let (base, path) = (served.base(), served.path());
    for _ in 0..5 {
        let answer = get_from([127, 0, 0, 2], &base, &path).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let answer = get_from([127, 0, 0, 2], &base, &path).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("Too many requests"), "{answer}");
    assert!(
        answer
            .to_lowercase()
            .contains("content-security-policy: default-src 'none'"),
        "{answer}"
    );
    assert!(
        !answer.contains("abc123"),
        "the page was shown past the limit: {answer}"
    );
    // Another address is still served the page.
    let answer = get_from([127, 0, 0, 3], &base, &path).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("abc123"), "{answer}");
    served.task.abort();
}

#[tokio::test]
async fn with_mfad_down_the_page_says_unavailable_and_nothing_is_decided() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WebConfig {
        socket: dir.path().join("mfad.sock"),
        ..web_config()
    };
    // The real client of mfad's socket, with nothing listening there.
    let server = WebServer::bind(&cfg).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let task = tokio::spawn(server.serve(std::future::pending()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let token = "a".repeat(43);
    let started = std::time::Instant::now();
    let shown = client
        .get(format!("{base}/a/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 503);
    let page = shown.text().await.unwrap();
    assert!(page.contains("Service unavailable"), "{page}");
    assert!(page.contains("Nothing was approved"), "{page}");
    let answered = client
        .post(format!("{base}/a/{token}"))
        .form(&[("action", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 503);
    // Within the connect timeout, not hanging.
    assert!(
        started.elapsed() < mfa_web::MFAD_CONNECT_TIMEOUT * 2 + Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    task.abort();
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_rate_and_others_headers_count_for_nothing()
 {
    let served = page_served_with(WebConfig {
        requests_per_minute: 3,
        trusted_proxies: vec!["127.0.0.2/32".parse().unwrap()],
        ..web_config()
    })
    .await;
    let (base, path) = (served.base(), served.path());
    let status = |answer: String| answer.lines().next().unwrap_or_default().to_string();
    let via_proxy = |client: &'static str| {
        let (base, path) = (base.clone(), path.clone());
        async move {
            let header = format!("X-Forwarded-For: 203.0.113.1, {client}\r\n");
            status(get_from_with([127, 0, 0, 2], &base, &path, &header).await)
        }
    };
    // Through the proxy, 198.51.100.7 has its own three requests a minute...
    for _ in 0..3 {
        assert_eq!(via_proxy("198.51.100.7").await, "HTTP/1.1 200 OK");
    }
    assert_eq!(
        via_proxy("198.51.100.7").await,
        "HTTP/1.1 429 Too Many Requests"
    );
    // ... and another client behind the same proxy is not held back by it.
    assert_eq!(via_proxy("198.51.100.8").await, "HTTP/1.1 200 OK");
    // A client that is not the proxy cannot pick an address to be counted as.
    for n in 0..4 {
        let header = format!("X-Forwarded-For: 192.0.2.{n}\r\n");
        let answer = status(get_from_with([127, 0, 0, 3], &base, &path, &header).await);
        let want = if n < 3 {
            "HTTP/1.1 200 OK"
        } else {
            "HTTP/1.1 429 Too Many Requests"
        };
        assert_eq!(answer, want, "request {n}");
    }
    served.task.abort();
}
