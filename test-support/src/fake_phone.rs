//! A fake phone and its providers: local servers on 127.0.0.1 that speak ntfy's JSON publish
//! API and Twilio's Messages and Calls APIs the way mfad calls them, record every request, and
//! then do what the phone's owner would: open the approval page and tap a button, answer the
//! call and press a key, or let the test read the code in an SMS.
//!
//! mfad's daemon tests and the end-to-end tests (which re-export it as
//! `mfa_e2e::fake_phone`) meet the same phone.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use data_encoding::BASE64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The Twilio account the fake provider accepts (basic auth user and URL path).
pub const ACCOUNT_SID: &str = "AC0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e";
/// The account's auth token: basic-auth password and the key of callback signatures.
pub const AUTH_TOKEN: &str = "e2e-twilio-auth-token-5f1c9a";
/// The number SMS and calls come from.
pub const FROM: &str = "+15555550100";
/// The bearer token the fake ntfy expects.
pub const PUSH_TOKEN: &str = "tk_e2e_ntfy_token_7b2d";

/// What the phone's owner does with a push or a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Opens the page and taps Approve; answers the call and presses 1.
    Approve,
    /// Taps Deny; presses 2.
    Deny,
    /// Taps "Deny and report"; presses 9.
    Report,
    /// Opens the page (or answers the call) and does nothing more.
    Look,
    /// Never opens the notification; never picks up.
    Ignore,
}

/// How a provider (ntfy, or the Twilio API) answers mfad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Working,
    /// Answers with this HTTP status and an error body in the provider's format.
    Fails(u16),
    /// Takes the request and never answers.
    Hangs,
    /// Answers 200 with a body that is not the provider's JSON.
    Garbage,
}

/// How the phone network signs its callbacks to mfad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// `X-Twilio-Signature` as Twilio documents it, keyed with [`AUTH_TOKEN`].
    Valid,
    /// The same, keyed with another token: what a forger without the token can do.
    WrongKey,
}

/// Which fake server got a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Ntfy,
    Twilio,
}

/// One request mfad sent to a fake provider.
#[derive(Debug, Clone)]
pub struct Request {
    pub api: Api,
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

impl Request {
    /// The body as JSON (ntfy), or `Null`.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The body as form parameters (Twilio).
    pub fn form(&self) -> Vec<(String, String)> {
        parse_form(&self.body)
    }

    /// One form parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Something the phone did, and what came back.
#[derive(Debug, Clone)]
pub struct Step {
    /// `open page`, `tap approve`, `answer call`, `press 1`...
    pub what: String,
    pub url: String,
    pub status: u16,
    pub body: String,
}

struct Behaviour {
    push: Answer,
    call: Answer,
    ntfy: Service,
    twilio: Service,
    signing: Signing,
    /// How long the owner takes to react.
    delay: Duration,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    requests: Mutex<Vec<Request>>,
    steps: Mutex<Vec<Step>>,
    client: reqwest::Client,
    next_sid: Mutex<u32>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The phone, ntfy and Twilio of one test. Dropping it stops the servers and every task
/// the phone still had going.
pub struct FakePhone {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    ntfy_url: String,
    twilio_url: String,
}

impl FakePhone {
    /// Starts the fake ntfy and Twilio on ephemeral ports of 127.0.0.1. The owner approves
    /// pushes and calls until told otherwise.
    pub fn start() -> std::io::Result<FakePhone> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Behaviour {
                push: Answer::Approve,
                call: Answer::Approve,
                ntfy: Service::Working,
                twilio: Service::Working,
                signing: Signing::Valid,
                delay: Duration::from_millis(100),
            }),
            requests: Mutex::new(Vec::new()),
            steps: Mutex::new(Vec::new()),
            client,
            next_sid: Mutex::new(0),
        });
        let ntfy = Router::new()
            .fallback(ntfy_publish)
            .with_state(Arc::clone(&shared));
        let twilio = Router::new()
            .fallback(twilio_api)
            .with_state(Arc::clone(&shared));
        let (ntfy_url, twilio_url) = runtime.block_on(async {
            let a = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let b = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let urls = (
                format!("http://{}", a.local_addr()?),
                format!("http://{}", b.local_addr()?),
            );
            tokio::spawn(async move {
                let _ = axum::serve(a, ntfy).await;
            });
            tokio::spawn(async move {
                let _ = axum::serve(b, twilio).await;
            });
            Ok::<_, std::io::Error>(urls)
        })?;
        Ok(FakePhone {
            runtime: Some(runtime),
            shared,
            ntfy_url,
            twilio_url,
        })
    }

    /// ntfy's base URL (`push.url`).
    pub fn ntfy_url(&self) -> &str {
        &self.ntfy_url
    }

    /// Twilio's API base (`twilio.api_base`).
    pub fn twilio_url(&self) -> &str {
        &self.twilio_url
    }

    /// What the owner does with the next pushes.
    pub fn on_push(&self, answer: Answer) {
        locked(&self.shared.behaviour).push = answer;
    }

    /// What the owner does with the next calls.
    pub fn on_call(&self, answer: Answer) {
        locked(&self.shared.behaviour).call = answer;
    }

    pub fn ntfy_service(&self, service: Service) {
        locked(&self.shared.behaviour).ntfy = service;
    }

    pub fn twilio_service(&self, service: Service) {
        locked(&self.shared.behaviour).twilio = service;
    }

    pub fn sign_callbacks(&self, signing: Signing) {
        locked(&self.shared.behaviour).signing = signing;
    }

    /// Every request mfad sent, in order.
    pub fn requests(&self) -> Vec<Request> {
        locked(&self.shared.requests).clone()
    }

    /// The JSON bodies ntfy was asked to publish.
    pub fn notifications(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| r.api == Api::Ntfy)
            .map(Request::json)
            .collect()
    }

    /// The SMS sent through the Messages API.
    pub fn sms(&self) -> Vec<Request> {
        self.twilio_requests("/Messages.json")
    }

    /// The calls placed through the Calls API.
    pub fn calls(&self) -> Vec<Request> {
        self.twilio_requests("/Calls.json")
    }

    fn twilio_requests(&self, suffix: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.api == Api::Twilio && r.path.ends_with(suffix))
            .collect()
    }

    /// What the phone did so far.
    pub fn steps(&self) -> Vec<Step> {
        locked(&self.shared.steps).clone()
    }

    /// The owner opens a notification now (one the phone ignored when it came) and does
    /// `answer`; returns once done.
    pub fn open_notification(&self, notification: &Value, answer: Answer) {
        let (Some(rt), Some(link)) = (&self.runtime, approval_link(notification)) else {
            return;
        };
        rt.block_on(open_push(
            Arc::clone(&self.shared),
            link,
            answer,
            Duration::ZERO,
        ));
    }

    /// Waits (at most `limit`) for the `n`th notification (1-based).
    pub fn wait_notification(&self, n: usize, limit: Duration) -> Option<Value> {
        poll(limit, || self.notifications().into_iter().nth(n - 1))
    }

    /// Waits (at most `limit`) for the `n`th SMS (1-based) and returns the code it carries:
    /// its first run of six or more digits.
    pub fn wait_sms_code(&self, n: usize, limit: Duration) -> Option<String> {
        poll(limit, || self.sms().into_iter().nth(n - 1))
            .and_then(|r| r.param("Body"))
            .and_then(|body| code_in(&body))
    }

    /// Waits (at most `limit`) until the phone has done `n` steps; returns them all.
    pub fn wait_steps(&self, n: usize, limit: Duration) -> Option<Vec<Step>> {
        poll(limit, || {
            let steps = self.steps();
            (steps.len() >= n).then_some(steps)
        })
    }
}

impl Drop for FakePhone {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// A port of 127.0.0.1 free a moment ago, for a listener whose URL must be written into a
/// config before it starts (mfad's approval endpoint).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Polls `f` every 50 ms until it answers, at most `limit`.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first run of six or more digits in `text`.
pub fn code_in(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() >= 6)
        .map(str::to_string)
}

/// The approval link of a published ntfy notification: its click URL, which must also be
/// its "view" action.
pub fn approval_link(notification: &Value) -> Option<String> {
    let click = notification["click"].as_str()?;
    let view = notification["actions"]
        .as_array()?
        .iter()
        .find(|a| a["action"] == "view")?;
    (view["url"].as_str()? == click).then(|| click.to_string())
}

/// `X-Twilio-Signature` as Twilio's security documentation describes it: the full URL,
/// then each POST parameter's name and value, sorted by name, HMAC-SHA1 keyed with the auth
/// token, in base64.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    match Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(data.as_bytes());
            BASE64.encode(&mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

fn parse_form(body: &str) -> Vec<(String, String)> {
    match reqwest::Url::parse(&format!("http://form.invalid/?{body}")) {
        Ok(url) => url.query_pairs().into_owned().collect(),
        Err(_) => Vec::new(),
    }
}

fn record(shared: &Shared, api: Api, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    locked(&shared.requests).push(Request {
        api,
        method: method.to_string(),
        path: uri.path().to_string(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: String::from_utf8_lossy(body).into_owned(),
    });
}

fn json_reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A fault the provider was told to show, as the response to send (after a hang, if any).
async fn fault(service: Service, error_body: Value) -> Option<Response> {
    match service {
        Service::Working => None,
        Service::Fails(status) => Some(json_reply(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            error_body,
        )),
        Service::Hangs => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Some(StatusCode::GATEWAY_TIMEOUT.into_response())
        }
        Service::Garbage => Some(
            (
                StatusCode::OK,
                [("content-type", "text/html")],
                "<html><body>502 Bad Gateway (but with a 200)</body></html>",
            )
                .into_response(),
        ),
    }
}

async fn ntfy_publish(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&shared, Api::Ntfy, &method, &uri, &headers, &body);
    let (service, answer, delay) = {
        let b = locked(&shared.behaviour);
        (b.ntfy, b.push, b.delay)
    };
    let error = json!({"code": 50001, "http": 500, "error": "internal server error"});
    if let Some(resp) = fault(service, error).await {
        return resp;
    }
    let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let topic = msg["topic"].as_str().unwrap_or("");
    if method != Method::POST || uri.path() != "/" || topic.is_empty() {
        return json_reply(
            StatusCode::BAD_REQUEST,
            json!({"code": 40001, "http": 400, "error": "invalid request"}),
        );
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {PUSH_TOKEN}"))
    {
        return json_reply(
            StatusCode::FORBIDDEN,
            json!({"code": 40301, "http": 403, "error": "forbidden"}),
        );
    }
    if let Some(link) = approval_link(&msg)
        && answer != Answer::Ignore
    {
        tokio::spawn(open_push(Arc::clone(&shared), link, answer, delay));
    }
    json_reply(
        StatusCode::OK,
        json!({
            "id": "e2eMsg0001", "time": 1_767_225_600, "expires": 1_767_268_800,
            "event": "message", "topic": topic, "message": msg["message"],
        }),
    )
}

/// What the owner does after the notification: opens it, then taps a button.
async fn open_push(shared: Arc<Shared>, link: String, answer: Answer, delay: Duration) {
    tokio::time::sleep(delay).await;
    let page = get(&shared, "open page", &link).await;
    let action = match answer {
        Answer::Approve => "approve",
        Answer::Deny => "deny",
        Answer::Report => "report",
        Answer::Look | Answer::Ignore => return,
    };
    let Some(target) = form_target(&page.body, action, &link) else {
        push_step(&shared, format!("no {action} button"), &link, 0, &page.body);
        return;
    };
    let form = [("action".to_string(), action.to_string())];
    post(&shared, format!("tap {action}"), &target, &form, None).await;
}

fn push_step(shared: &Shared, what: String, url: &str, status: u16, body: &str) {
    locked(&shared.steps).push(Step {
        what,
        url: url.to_string(),
        status,
        body: body.to_string(),
    });
}

async fn get(shared: &Shared, what: &str, url: &str) -> Step {
    let (status, body) = match shared.client.get(url).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, format!("request failed: {e}")),
    };
    push_step(shared, what.to_string(), url, status, &body);
    Step {
        what: what.to_string(),
        url: url.to_string(),
        status,
        body,
    }
}

async fn post(
    shared: &Shared,
    what: String,
    url: &str,
    form: &[(String, String)],
    signature: Option<String>,
) -> Step {
    let mut req = shared.client.post(url).form(form);
    if let Some(sig) = signature {
        req = req.header("X-Twilio-Signature", sig);
    }
    let (status, body) = match req.send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, format!("request failed: {e}")),
    };
    push_step(shared, what.clone(), url, status, &body);
    Step {
        what,
        url: url.to_string(),
        status,
        body,
    }
}

/// Undoes the HTML/XML escaping of an attribute value.
fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of the first `name="..."` attribute in `tag`.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[start..].find('"')?;
    Some(unescape(&tag[start..start + len]))
}

/// The absolute URL the page's form for `action` posts to.
pub fn form_target(html: &str, action: &str, page_url: &str) -> Option<String> {
    let marker = format!("name=\"action\" value=\"{action}\"");
    let form = html
        .split("<form")
        .skip(1)
        .map(|f| f.split("</form>").next().unwrap_or(f))
        .find(|f| f.contains(&marker))?;
    let target = attribute(form, "action")?;
    let base = reqwest::Url::parse(page_url).ok()?;
    base.join(&target).ok().map(String::from)
}

async fn twilio_api(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&shared, Api::Twilio, &method, &uri, &headers, &body);
    let (service, answer, signing, delay) = {
        let b = locked(&shared.behaviour);
        (b.twilio, b.call, b.signing, b.delay)
    };
    let error = json!({"code": 20500, "message": "Internal Server Error", "status": 500});
    if let Some(resp) = fault(service, error).await {
        return resp;
    }
    let basic = format!(
        "Basic {}",
        BASE64.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}").as_bytes())
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(basic.as_str()) {
        return json_reply(
            StatusCode::UNAUTHORIZED,
            json!({"code": 20003, "message": "Authenticate", "status": 401}),
        );
    }
    let form = parse_form(&String::from_utf8_lossy(&body));
    let param = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let base = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/");
    let resource = uri.path().strip_prefix(&base).unwrap_or("");
    if method != Method::POST || !matches!(resource, "Messages.json" | "Calls.json") {
        return json_reply(
            StatusCode::NOT_FOUND,
            json!({"code": 20404, "message": "The requested resource was not found", "status": 404}),
        );
    }
    if param("To").is_empty() || param("From").is_empty() {
        return json_reply(
            StatusCode::BAD_REQUEST,
            json!({"code": 21604, "message": "A 'To' phone number is required.", "status": 400}),
        );
    }
    let n = {
        let mut next = locked(&shared.next_sid);
        *next += 1;
        *next
    };
    if resource == "Messages.json" {
        return json_reply(
            StatusCode::CREATED,
            json!({"sid": format!("SM{n:032x}"), "status": "queued", "to": param("To"),
                   "from": param("From"), "body": param("Body")}),
        );
    }
    let call_sid = format!("CA{n:032x}");
    if answer != Answer::Ignore {
        let call = Call {
            sid: call_sid.clone(),
            to: param("To"),
            from: param("From"),
            url: param("Url"),
        };
        tokio::spawn(answer_call(
            Arc::clone(&shared),
            call,
            answer,
            signing,
            delay,
        ));
    }
    json_reply(
        StatusCode::CREATED,
        json!({"sid": call_sid, "status": "queued", "to": param("To"), "from": param("From")}),
    )
}

struct Call {
    sid: String,
    to: String,
    from: String,
    url: String,
}

/// The phone network's side of a call: fetches the TwiML when the owner picks up, then
/// posts the key they pressed to the Gather action, each signed like Twilio signs.
async fn answer_call(
    shared: Arc<Shared>,
    call: Call,
    answer: Answer,
    signing: Signing,
    delay: Duration,
) {
    tokio::time::sleep(delay).await;
    let key = match signing {
        Signing::Valid => AUTH_TOKEN,
        Signing::WrongKey => "not-the-auth-token-0000",
    };
    let mut params: Vec<(String, String)> = [
        ("AccountSid", ACCOUNT_SID),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call.sid.as_str()),
        ("CallStatus", "in-progress"),
        ("Called", call.to.as_str()),
        ("Caller", call.from.as_str()),
        ("Direction", "outbound-api"),
        ("From", call.from.as_str()),
        ("To", call.to.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let sig = twilio_signature(key, &call.url, &params);
    let voice = post(&shared, "answer call".into(), &call.url, &params, Some(sig)).await;
    let digits = match answer {
        Answer::Approve => "1",
        Answer::Report => "9",
        Answer::Deny => "2",
        Answer::Look | Answer::Ignore => return,
    };
    // The Gather action from the TwiML; a refused voice request gives none, and a forger
    // would guess it from the voice URL anyway.
    let gather = gather_action(&voice.body)
        .unwrap_or_else(|| call.url.replacen("/twilio/voice/", "/twilio/gather/", 1));
    params.push(("Digits".into(), digits.into()));
    params.push(("FinishedOnKey".into(), String::new()));
    let sig = twilio_signature(key, &gather, &params);
    post(
        &shared,
        format!("press {digits}"),
        &gather,
        &params,
        Some(sig),
    )
    .await;
}

/// The `action` of the TwiML's `<Gather>`.
pub fn gather_action(twiml: &str) -> Option<String> {
    let start = twiml.find("<Gather")?;
    let tag = &twiml[start..start + twiml[start..].find('>')?];
    attribute(tag, "action")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Twilio's security documentation (auth token 12345).
    #[test]
    fn signs_twilios_documented_example() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            twilio_signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn finds_forms_gathers_and_codes() {
        let html = "<form method=\"post\" action=\"TOK\"><input type=\"hidden\" name=\"action\" \
                    value=\"approve\"><button>Approve</button></form><form method=\"post\" \
                    action=\"TOK\"><input type=\"hidden\" name=\"action\" value=\"report\">\
                    </form>";
        assert_eq!(
            form_target(html, "report", "http://127.0.0.1:9/a/TOK").as_deref(),
            Some("http://127.0.0.1:9/a/TOK")
        );
        assert_eq!(form_target(html, "deny", "http://127.0.0.1:9/a/TOK"), None);
        let twiml = "<Response><Gather numDigits=\"1\" action=\"http://h/twilio/gather/T?a=1&amp;b=2\" \
                     method=\"POST\"><Say>x</Say></Gather></Response>";
        assert_eq!(
            gather_action(twiml).as_deref(),
            Some("http://h/twilio/gather/T?a=1&b=2")
        );
        assert_eq!(
            code_in("1234567 is your login code for h (u).").as_deref(),
            Some("1234567")
        );
        assert_eq!(code_in("no code 12 here"), None);
    }
}
