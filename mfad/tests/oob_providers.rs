//! The outgoing side against local servers that act like ntfy, a push webhook and Twilio:
//! what mfad sends, and how each kind of provider failure (4xx, 5xx, garbage, silence,
//! nobody listening) comes back as a clear error that carries no credential.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use data_encoding::BASE64;
use mfad::oob::{
    MAX_IN_FLIGHT, Notifier, NotifierKind, ProviderError, PushConfig, PushMessage, Secret, Twilio,
    TwilioConfig, http_client,
};
use serde_json::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PUSH_TOKEN: &str = "tk_push_secret_0123456789";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "twilio_auth_secret_abcdef";

#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn form(&self) -> Vec<(String, String)> {
        let body = std::str::from_utf8(&self.body).unwrap();
        let url = reqwest::Url::parse(&format!("http://form.invalid/?{body}")).unwrap();
        url.query_pairs().into_owned().collect()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

/// How the fake provider answers.
#[derive(Clone, Copy)]
enum Reply {
    Answer(u16, &'static str),
    /// Accepts the request and never answers.
    Hang,
}

#[derive(Clone)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    reply: Reply,
}

async fn record(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fake.seen.lock().unwrap().push(Seen {
        method,
        path: uri.path().to_string(),
        headers,
        body,
    });
    match fake.reply {
        Reply::Answer(status, body) => (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", "application/json")],
            body,
        )
            .into_response(),
        Reply::Hang => {
            #[allow(clippy::disallowed_methods)] // the test's own pacing, in real time
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::OK.into_response()
        }
    }
}

/// Starts a fake provider on 127.0.0.1; returns its base URL and what it was sent.
async fn fake(reply: Reply) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new().fallback(record).with_state(Fake {
        seen: Arc::clone(&seen),
        reply,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

/// A URL where nothing listens.
async fn nobody_listening() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

const NTFY_OK: &str = r#"{"id":"hwQ2YpKdmg","time":1767225600,"expires":1767268800,"event":"message","topic":"abc123-phone","message":"x"}"#;

fn message(number_required: bool) -> PushMessage {
    PushMessage {
        user: "abc123".into(),
        host: "login1.example.org".into(),
        rhost: "192.0.2.10".into(),
        time_text: "2026-01-01 00:00 UTC".into(),
        approve_url: "https://mfa.example.org/a/TOKEN123".into(),
        number_required,
        adding_device: false,
    }
}

fn notifier(kind: NotifierKind, url: &str, token: Option<&str>, timeout: u64) -> Notifier {
    let cfg = PushConfig {
        notifier: kind,
        url: url.to_string(),
        token: token.map(Secret::new),
        timeout,
        ..PushConfig::default()
    };
    cfg.validate().unwrap();
    Notifier::new(&cfg, http_client().unwrap())
}

fn twilio(api_base: &str, timeout: u64) -> Twilio {
    let cfg = TwilioConfig {
        api_base: api_base.to_string(),
        account_sid: SID.into(),
        auth_token: Secret::new(AUTH_TOKEN),
        from: "+15550001111".into(),
        timeout,
        ..TwilioConfig::default()
    };
    cfg.validate().unwrap();
    Twilio::new(&cfg, http_client().unwrap())
}

/// No error message may carry a credential or a provider's free text.
fn assert_safe(e: &ProviderError) {
    let text = e.to_string();
    for secret in [
        PUSH_TOKEN,
        AUTH_TOKEN,
        "TOKEN123",
        "not a valid phone number",
    ] {
        assert!(!text.contains(secret), "{text:?} leaks {secret:?}");
    }
    assert!(!format!("{e:?}").contains(AUTH_TOKEN));
}

#[tokio::test]
async fn ntfy_gets_a_json_publish_with_a_view_action_and_the_bearer_token() {
    let (url, seen) = fake(Reply::Answer(200, NTFY_OK)).await;
    let n = notifier(NotifierKind::Ntfy, &url, Some(PUSH_TOKEN), 5);
    n.push("abc123-phone", &message(false)).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.path, "/", "ntfy's JSON publish goes to the base URL");
    assert!(
        req.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(
        req.header("authorization").unwrap(),
        format!("Bearer {PUSH_TOKEN}")
    );
    let body = req.json();
    assert_eq!(body["topic"], "abc123-phone");
    let title = body["title"].as_str().unwrap();
    assert!(
        title.contains("abc123") && title.contains("login1.example.org"),
        "{title}"
    );
    let text = body["message"].as_str().unwrap();
    for part in [
        "abc123",
        "login1.example.org",
        "192.0.2.10",
        "2026-01-01 00:00 UTC",
    ] {
        assert!(text.contains(part), "message lacks {part}: {text}");
    }
    assert_eq!(body["priority"], 4);
    assert!(body["tags"].is_array());
    assert_eq!(body["click"], "https://mfa.example.org/a/TOKEN123");
    let actions = body["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0]["action"], "view");
    assert_eq!(actions[0]["label"], "Review");
    assert_eq!(actions[0]["url"], "https://mfa.example.org/a/TOKEN123");
}

#[tokio::test]
async fn ntfy_without_a_token_sends_no_authorization() {
    let (url, seen) = fake(Reply::Answer(200, NTFY_OK)).await;
    notifier(NotifierKind::Ntfy, &url, None, 5)
        .push("abc123-phone", &message(true))
        .await
        .unwrap();
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.header("authorization"), None);
    let text = req.json()["message"].as_str().unwrap().to_string();
    assert!(text.contains("number shown at the login prompt"), "{text}");
}

#[tokio::test]
async fn a_bad_ntfy_topic_is_refused_before_sending() {
    let (url, seen) = fake(Reply::Answer(200, NTFY_OK)).await;
    let n = notifier(NotifierKind::Ntfy, &url, None, 5);
    for topic in ["", "a/b", "with space", &"x".repeat(65)] {
        assert_eq!(
            n.push(topic, &message(false)).await,
            Err(ProviderError::BadTarget)
        );
    }
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn ntfy_refusals_come_back_with_the_status() {
    for status in [401, 403, 429, 500, 502] {
        let (url, _) = fake(Reply::Answer(
            status,
            r#"{"code":40101,"http":401,"error":"unauthorized"}"#,
        ))
        .await;
        let err = notifier(NotifierKind::Ntfy, &url, Some(PUSH_TOKEN), 5)
            .push("abc123-phone", &message(false))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            ProviderError::Status {
                provider: "ntfy",
                status,
                code: None
            }
        );
        assert!(err.to_string().contains(&format!("HTTP {status}")), "{err}");
        assert_safe(&err);
    }
}

#[tokio::test]
async fn garbage_from_ntfy_is_a_bad_response() {
    for garbage in ["<html>proxy error</html>", "", "{\"event\":\"message\"}"] {
        let (url, _) = fake(Reply::Answer(200, garbage)).await;
        let err = notifier(NotifierKind::Ntfy, &url, None, 5)
            .push("abc123-phone", &message(false))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            ProviderError::BadResponse { provider: "ntfy" },
            "{garbage:?}"
        );
        assert_eq!(
            err.to_string(),
            "ntfy sent an answer that could not be read"
        );
    }
}

#[tokio::test]
async fn a_silent_notifier_times_out_within_its_configured_timeout() {
    let (url, seen) = fake(Reply::Hang).await;
    let started = Instant::now();
    let err = notifier(NotifierKind::Ntfy, &url, Some(PUSH_TOKEN), 1)
        .push("abc123-phone", &message(false))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err, ProviderError::Timeout { provider: "ntfy" });
    assert_eq!(err.to_string(), "ntfy did not answer in time");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "the request did arrive");
}

/// A provider that holds every request until the test opens its gate, and counts what it
/// sees: requests in flight (now and at most) and the connections they came over.
#[derive(Default)]
struct Gate {
    in_flight: AtomicUsize,
    most: AtomicUsize,
    answered: AtomicUsize,
    peers: Mutex<HashSet<SocketAddr>>,
    open: tokio::sync::Notify,
    opened: std::sync::atomic::AtomicBool,
}

async fn held(
    State(gate): State<Arc<Gate>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let now = gate.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    gate.most.fetch_max(now, Ordering::SeqCst);
    gate.peers.lock().unwrap().insert(peer);
    while !gate.opened.load(Ordering::SeqCst) {
        let opened = gate.open.notified();
        if gate.opened.load(Ordering::SeqCst) {
            break;
        }
        opened.await;
    }
    gate.in_flight.fetch_sub(1, Ordering::SeqCst);
    gate.answered.fetch_add(1, Ordering::SeqCst);
    ([("content-type", "application/json")], NTFY_OK).into_response()
}

/// A provider on 127.0.0.1 that holds every request until its gate opens: its URL.
async fn gated(gate: &Arc<Gate>) -> String {
    let app = Router::new().fallback(held).with_state(Arc::clone(gate));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    format!("http://{addr}")
}

/// `burst` pushes through `n`, once [`MAX_IN_FLIGHT`] of them are held at the gate (and
/// no more arrive while they are): their tasks.
#[allow(clippy::disallowed_methods)] // the test's own pacing, in real time
async fn slots_filled(
    n: &Notifier,
    gate: &Gate,
    burst: usize,
) -> Vec<tokio::task::JoinHandle<Result<(), ProviderError>>> {
    let pushes: Vec<_> = (0..burst)
        .map(|_| {
            let n = n.clone();
            tokio::spawn(async move { n.push("abc123-phone", &message(false)).await })
        })
        .collect();
    let waiting_since = Instant::now();
    while gate.in_flight.load(Ordering::SeqCst) < MAX_IN_FLIGHT {
        assert!(
            waiting_since.elapsed() < Duration::from_secs(30),
            "only {} requests arrived",
            gate.in_flight.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gate.in_flight.load(Ordering::SeqCst), MAX_IN_FLIGHT);
    assert_eq!(gate.answered.load(Ordering::SeqCst), 0);
    pushes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_pushes_reaches_the_provider_a_bounded_number_at_a_time_and_all_are_sent() {
    let gate = Arc::new(Gate::default());
    let url = gated(&gate).await;
    let n = notifier(NotifierKind::Ntfy, &url, None, 60);
    let burst = 3 * MAX_IN_FLIGHT;
    let pushes = slots_filled(&n, &gate, burst).await;
    gate.opened.store(true, Ordering::SeqCst);
    gate.open.notify_waiters();
    for push in pushes {
        push.await.unwrap().unwrap();
    }
    assert_eq!(gate.answered.load(Ordering::SeqCst), burst);
    assert_eq!(gate.most.load(Ordering::SeqCst), MAX_IN_FLIGHT);
    let connections = gate.peers.lock().unwrap().len();
    assert!(
        connections <= MAX_IN_FLIGHT,
        "{burst} pushes came over {connections} connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_server_holding_all_its_slots_does_not_hold_up_a_text() {
    let gate = Arc::new(Gate::default());
    let push_url = gated(&gate).await;
    let (twilio_url, seen) = fake(Reply::Answer(201, SMS_OK)).await;
    // One client, as mfad has it: the push notifier and Twilio share its pool.
    let client = http_client().unwrap();
    let push = PushConfig {
        notifier: NotifierKind::Ntfy,
        url: push_url,
        timeout: 60,
        ..PushConfig::default()
    };
    push.validate().unwrap();
    let n = Notifier::new(&push, client.clone());
    let sms = TwilioConfig {
        api_base: twilio_url,
        account_sid: SID.into(),
        auth_token: Secret::new(AUTH_TOKEN),
        from: "+15550001111".into(),
        timeout: 5,
        ..TwilioConfig::default()
    };
    sms.validate().unwrap();
    let t = Twilio::new(&sms, client);
    let pushes = slots_filled(&n, &gate, MAX_IN_FLIGHT + 4).await;
    assert_eq!(
        t.send_sms("+15555550123", "123456").await.unwrap(),
        "SM0123456789abcdef0123456789abcdef"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    gate.opened.store(true, Ordering::SeqCst);
    gate.open.notify_waiters();
    for push in pushes {
        push.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn an_unreachable_notifier_is_a_connect_error() {
    let url = nobody_listening().await;
    let err = notifier(NotifierKind::Webhook, &url, Some(PUSH_TOKEN), 5)
        .push("device-1", &message(false))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::Connect {
            provider: "the push webhook"
        }
    );
    assert_eq!(err.to_string(), "the push webhook could not be reached");
    assert_safe(&err);
}

#[tokio::test]
async fn the_webhook_gets_the_documented_json_body() {
    let (url, seen) = fake(Reply::Answer(202, "accepted, thanks")).await;
    let hook_url = format!("{url}/hooks/mfa");
    notifier(NotifierKind::Webhook, &hook_url, Some(PUSH_TOKEN), 5)
        .push("device-7", &message(true))
        .await
        .expect("any 2xx counts as delivered, whatever the body");
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.path, "/hooks/mfa");
    assert_eq!(
        req.header("authorization").unwrap(),
        format!("Bearer {PUSH_TOKEN}")
    );
    let body = req.json();
    assert_eq!(
        body,
        serde_json::json!({
            "event": "mfa.login_request",
            "target": "device-7",
            "user": "abc123",
            "host": "login1.example.org",
            "rhost": "192.0.2.10",
            "time": "2026-01-01 00:00 UTC",
            "approve_url": "https://mfa.example.org/a/TOKEN123",
            "number_required": true
        })
    );
}

/// Hostile text from the client side of a login: a right-to-left override that would make
/// the address read backwards, and a newline that would start a fake line.
fn hostile_message() -> PushMessage {
    PushMessage {
        user: "abc\u{202e}321".into(),
        host: "login1.example.org".into(),
        rhost: "10.0.0.1\nApproved by IT: 192.0.2.1\u{2066}".into(),
        ..message(false)
    }
}

fn assert_clean(field: &str, text: &str) {
    for bad in ['\u{202e}', '\u{2066}', '\n'] {
        assert!(!text.contains(bad), "{field} carries {bad:?}: {text:?}");
    }
}

#[tokio::test]
async fn push_text_is_cleaned_of_direction_overrides_and_control_characters() {
    let (url, seen) = fake(Reply::Answer(200, NTFY_OK)).await;
    notifier(NotifierKind::Ntfy, &url, None, 5)
        .push("abc123-phone", &hostile_message())
        .await
        .unwrap();
    let body = seen.lock().unwrap()[0].json();
    let message = body["message"].as_str().unwrap();
    assert_clean("title", body["title"].as_str().unwrap());
    assert_clean("message", message);
    // Shown as the page shows it: the override dropped, the newline escaped.
    assert!(message.contains("abc321 is logging in"), "{message}");
    assert!(message.contains("10.0.0.1\\nApproved by IT"), "{message}");

    let (url, seen) = fake(Reply::Answer(200, "ok")).await;
    notifier(NotifierKind::Webhook, &url, None, 5)
        .push("device-7", &hostile_message())
        .await
        .unwrap();
    let body = seen.lock().unwrap()[0].json();
    for field in ["user", "rhost"] {
        assert_clean(field, body[field].as_str().unwrap());
    }
    assert_eq!(body["user"], "abc321");
}

#[tokio::test]
async fn a_failing_webhook_reports_its_status() {
    let (url, _) = fake(Reply::Answer(503, "down")).await;
    let err = notifier(NotifierKind::Webhook, &url, None, 5)
        .push("device-7", &message(false))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the push webhook refused the request (HTTP 503)"
    );
}

const SMS_OK: &str = r#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued","body":"x"}"#;
const CALL_OK: &str = r#"{"sid":"CA0123456789abcdef0123456789abcdef","status":"queued"}"#;

fn basic_auth_of(req: &Seen) -> String {
    let header = req.header("authorization").unwrap();
    let encoded = header.strip_prefix("Basic ").unwrap();
    String::from_utf8(BASE64.decode(encoded.as_bytes()).unwrap()).unwrap()
}

#[tokio::test]
async fn an_sms_is_posted_to_messages_json_with_basic_auth() {
    let (url, seen) = fake(Reply::Answer(201, SMS_OK)).await;
    let sid = twilio(&url, 5)
        .send_sms("+15557654321", "Your passcode is 123456")
        .await
        .unwrap();
    assert_eq!(sid, "SM0123456789abcdef0123456789abcdef");
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.method, Method::POST);
    assert_eq!(
        req.path,
        format!("/2010-04-01/Accounts/{SID}/Messages.json")
    );
    assert_eq!(
        req.header("content-type").unwrap(),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(basic_auth_of(&req), format!("{SID}:{AUTH_TOKEN}"));
    let mut form = req.form();
    form.sort();
    assert_eq!(
        form,
        vec![
            ("Body".to_string(), "Your passcode is 123456".to_string()),
            ("From".to_string(), "+15550001111".to_string()),
            ("To".to_string(), "+15557654321".to_string()),
        ]
    );
}

#[tokio::test]
async fn a_call_is_posted_to_calls_json_with_the_twiml_url() {
    let (url, seen) = fake(Reply::Answer(201, CALL_OK)).await;
    let sid = twilio(&format!("{url}/"), 5)
        .place_call(
            "+15557654321",
            "https://mfa.example.org/twilio/voice/TOKEN123",
        )
        .await
        .unwrap();
    assert_eq!(sid, "CA0123456789abcdef0123456789abcdef");
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.path, format!("/2010-04-01/Accounts/{SID}/Calls.json"));
    assert_eq!(basic_auth_of(&req), format!("{SID}:{AUTH_TOKEN}"));
    let mut form = req.form();
    form.sort();
    assert_eq!(
        form,
        vec![
            ("From".to_string(), "+15550001111".to_string()),
            ("Method".to_string(), "POST".to_string()),
            ("To".to_string(), "+15557654321".to_string()),
            (
                "Url".to_string(),
                "https://mfa.example.org/twilio/voice/TOKEN123".to_string()
            ),
        ]
    );
}

#[tokio::test]
async fn a_twilio_error_gives_its_code_but_not_its_text() {
    let (url, _) = fake(Reply::Answer(
        400,
        r#"{"code":21211,"message":"The 'To' number +1555 is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#,
    ))
    .await;
    let err = twilio(&url, 5)
        .send_sms("+15557654321", "Your passcode is 123456")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::Status {
            provider: "the SMS and voice provider",
            status: 400,
            code: Some(21211)
        }
    );
    assert_eq!(
        err.to_string(),
        "the SMS and voice provider refused the request (HTTP 400, error 21211)"
    );
    assert_safe(&err);
    assert!(!err.to_string().contains("123456"), "never the passcode");
}

#[tokio::test]
async fn twilio_failures_are_sorted_by_kind() {
    let (url, _) = fake(Reply::Answer(500, "<html>oops</html>")).await;
    let err = twilio(&url, 5)
        .place_call("+15557654321", "https://m.example.org/twilio/voice/T")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::Status {
            provider: "the SMS and voice provider",
            status: 500,
            code: None
        }
    );

    let (url, _) = fake(Reply::Answer(201, "{not json")).await;
    let err = twilio(&url, 5)
        .send_sms("+15557654321", "Your passcode is 123456")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::BadResponse {
            provider: "the SMS and voice provider"
        }
    );

    let err = twilio(&nobody_listening().await, 5)
        .send_sms("+15557654321", "Your passcode is 123456")
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Connect { .. }), "{err}");
    assert_safe(&err);
}

#[tokio::test]
async fn a_silent_twilio_times_out_within_its_configured_timeout() {
    let (url, _) = fake(Reply::Hang).await;
    let started = Instant::now();
    let err = twilio(&url, 1)
        .send_sms("+15557654321", "Your passcode is 123456")
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, ProviderError::Timeout { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    assert_safe(&err);
}

#[tokio::test]
async fn one_client_serves_many_requests() {
    let (url, seen) = fake(Reply::Answer(200, NTFY_OK)).await;
    let n = notifier(NotifierKind::Ntfy, &url, None, 5);
    let pushes: Vec<_> = (0..20)
        .map(|i| {
            let n = n.clone();
            tokio::spawn(async move { n.push(&format!("topic-{i}"), &message(false)).await })
        })
        .collect();
    for p in pushes {
        p.await.unwrap().unwrap();
    }
    assert_eq!(seen.lock().unwrap().len(), 20);
}
