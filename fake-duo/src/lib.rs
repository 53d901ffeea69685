//! A fake Duo Auth API v2 server, written from Duo's public documentation, for tests and
//! benchmarks. It speaks HTTPS on 127.0.0.1 with a self-signed certificate (trust it with
//! `ca_pem()`), checks the signature and the date of every signed request, and answers as
//! the scenario of the user asks:
//!
//! | scenario        | what Duo does                                                        |
//! |-----------------|----------------------------------------------------------------------|
//! | `allow`         | preauth allows without a second factor                               |
//! | `deny`          | preauth denies                                                       |
//! | `enroll`        | preauth says enrol, with the portal URL                              |
//! | `push`          | push (and auto) approved after `push_delay`                          |
//! | `push-deny`     | push denied                                                          |
//! | `push-timeout`  | push times out                                                       |
//! | `phone`         | default factor phone: calling, answered, approved                    |
//! | `sms`           | default factor SMS; after sending, passcode `7654321` works          |
//! | `passcode`      | only passcodes (`123456` is right, in every scenario that asks)      |
//! | `locked`        | every authentication says locked out                                 |
//! | `unauthorized`  | 401 to preauth                                                       |
//! | `rate-limited`  | the first preauth gets 429 with `Retry-After: 1`, then as `push`     |
//! | `rate-limited-x`| the first preauth gets 429 with `X-Retry-After: 2` only, then `push` |
//! | `rate-limited-always` | every preauth gets 429 with `Retry-After: 1`                   |
//! | `no-devices`    | as `push`, but preauth lists the prompt's `factors` and no `devices` |
//! | `auth-error`    | as `push`, but `/auth` answers HTTP 500                              |
//! | `status-error`  | as `push`, but `/auth_status` answers HTTP 500                       |
//! | `server-error`  | 503 to preauth                                                       |
//! | `malformed`     | preauth answers with broken JSON                                     |
//! | `hang`          | preauth never answers                                                |
//! | `escapes`       | as `push`, with terminal escape sequences in every text              |
//!
//! A user's scenario is the one mapped to the name, else the name itself when it names a
//! scenario, else the default. `skew` moves the fake's clock (and `step_clock` while it
//! runs): a client must learn the offset from `/ping` to sign with an acceptable date.
//!
//! Signatures are checked as Duo checks them: the canonical request names the API host
//! without its port, lower-cased, although the fake listens on a port other than 443 (the
//! `verify` tests pin this to Duo's published worked example). `/auth` takes the documented
//! factors and `factor=prompt` with `prompt=` an option name or a passcode, as duo_unix
//! sends it; with `async=1` every factor answers with a `txid`.

use bytes::Bytes;
use data_encoding::{BASE64, HEXLOWER_PERMISSIVE};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Sha512;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// The passcode every scenario that asks for one accepts.
pub const PASSCODE: &str = "123456";
/// The SMS passcode, valid once SMS passcodes were sent.
pub const SMS_PASSCODE: &str = "7654321";
/// The device id of the one enrolled phone.
pub const DEVICE: &str = "DPFZRS9FB0D46QFTM891";
pub const ENROLL_URL: &str =
    "https://api-fake.duosecurity.test/portal?code=48bac5d9393fb2c2&akey=DAKXXXXXXXXXXXXXXXXX";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    Allow,
    Deny,
    Enroll,
    Push,
    PushDeny,
    PushTimeout,
    Phone,
    Sms,
    Passcode,
    Locked,
    Unauthorized,
    RateLimited,
    ServerError,
    Malformed,
    Hang,
    Escapes,
    RateLimitedX,
    RateLimitedAlways,
    NoDevices,
    AuthError,
    StatusError,
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "allow" => Scenario::Allow,
            "deny" => Scenario::Deny,
            "enroll" => Scenario::Enroll,
            "push" => Scenario::Push,
            "push-deny" => Scenario::PushDeny,
            "push-timeout" => Scenario::PushTimeout,
            "phone" => Scenario::Phone,
            "sms" => Scenario::Sms,
            "passcode" => Scenario::Passcode,
            "locked" => Scenario::Locked,
            "unauthorized" => Scenario::Unauthorized,
            "rate-limited" => Scenario::RateLimited,
            "server-error" => Scenario::ServerError,
            "malformed" => Scenario::Malformed,
            "hang" => Scenario::Hang,
            "escapes" => Scenario::Escapes,
            "rate-limited-x" => Scenario::RateLimitedX,
            "rate-limited-always" => Scenario::RateLimitedAlways,
            "no-devices" => Scenario::NoDevices,
            "auth-error" => Scenario::AuthError,
            "status-error" => Scenario::StatusError,
            _ => return Err(format!("no scenario {s:?}")),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub ikey: String,
    pub skey: String,
    /// Seconds the fake's clock runs ahead of the machine's (negative: behind).
    pub skew: i64,
    /// Largest difference between a request's date and the fake's clock.
    pub date_tolerance: i64,
    /// Added before every answer (server time, not network latency).
    pub delay: Duration,
    /// From a push or call to the phone's answer.
    pub push_delay: Duration,
    pub default_scenario: Scenario,
    pub users: HashMap<String, Scenario>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ikey: "DIXXXXXXXXXXXXXXXXXX".into(),
            skey: "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef".into(),
            skew: 0,
            date_tolerance: 300,
            delay: Duration::ZERO,
            push_delay: Duration::from_millis(300),
            default_scenario: Scenario::Push,
            users: HashMap::new(),
        }
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub params: BTreeMap<String, String>,
    /// Why the signature or date was refused; `None` when accepted (or unsigned).
    pub rejected: Option<String>,
    /// The date the client signed with, as Unix seconds.
    pub date: Option<i64>,
}

struct Tx {
    created: Instant,
    /// (due after, result, status, status_msg)
    steps: Vec<(Duration, &'static str, &'static str, String)>,
    returned: usize,
}

struct State {
    opts: Options,
    /// The fake's clock minus the machine's: `opts.skew`, moved by `step_clock`.
    skew: AtomicI64,
    requests: Mutex<Vec<Recorded>>,
    txs: Mutex<HashMap<String, Tx>>,
    /// Whose transaction each txid is.
    tx_users: Mutex<HashMap<String, String>>,
    sms_sent: Mutex<HashMap<String, bool>>,
    limited: Mutex<HashMap<String, u32>>,
    next_tx: AtomicUsize,
    connections: AtomicUsize,
}

/// A running fake; stops when dropped.
pub struct FakeDuo {
    addr: SocketAddr,
    ca_pem: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDuo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// The fake is Duo's server: it keeps the real time of day, like Duo.
#[allow(clippy::disallowed_methods)]
fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl FakeDuo {
    /// Binds 127.0.0.1 on a free port and serves on the current tokio runtime.
    pub async fn start(opts: Options) -> std::io::Result<FakeDuo> {
        let err = |e: String| std::io::Error::other(e);
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".into()])
                .map_err(|e| err(e.to_string()))?;
        let ca_pem = certified.cert.pem();
        let chain = vec![rustls::pki_types::CertificateDer::from(
            certified.cert.der().to_vec(),
        )];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| err(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            skew: AtomicI64::new(opts.skew),
            opts,
            requests: Mutex::new(Vec::new()),
            txs: Mutex::new(HashMap::new()),
            tx_users: Mutex::new(HashMap::new()),
            sms_sent: Mutex::new(HashMap::new()),
            limited: Mutex::new(HashMap::new()),
            next_tx: AtomicUsize::new(1),
            connections: AtomicUsize::new(0),
        });
        let served = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, acceptor.clone(), Arc::clone(&served)));
            }
        });
        Ok(FakeDuo {
            addr,
            ca_pem,
            state,
            task,
        })
    }

    /// The API host to configure: `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate to trust (mfad's `cafile`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ikey(&self) -> &str {
        &self.state.opts.ikey
    }

    pub fn skey(&self) -> &str {
        &self.state.opts.skey
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Requests to `path` (`/auth/v2/preauth`...).
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Steps the fake's clock by `secs` (as NTP stepping one side would), from now on.
    pub fn step_clock(&self, secs: i64) {
        self.state.skew.fetch_add(secs, Ordering::SeqCst);
    }

    /// TLS connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

async fn serve(stream: TcpStream, acceptor: TlsAcceptor, state: Arc<State>) {
    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
    else {
        return;
    };
    state.connections.fetch_add(1, Ordering::SeqCst);
    let svc = service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(handle(state, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), svc)
        .await;
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn ok(response: serde_json::Value) -> Response<Full<Bytes>> {
    reply(
        StatusCode::OK,
        serde_json::json!({"stat": "OK", "response": response}).to_string(),
    )
}

fn fail(status: StatusCode, code: u32, message: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        serde_json::json!({"stat": "FAIL", "code": code, "message": message}).to_string(),
    )
}

/// Duo's encoding: all but unreserved characters as upper-case `%XX`.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn parse_params(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k)?, decode(v)?);
    }
    Some(out)
}

/// `Fri, 07 Dec 2012 17:18:00 -0000` (any numeric zone) as Unix seconds.
fn parse_rfc2822(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, hms, zone] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let year: i64 = year.parse().ok()?;
    let t: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = t.as_slice() else {
        return None;
    };
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let z: i64 = zone.get(1..)?.parse().ok()?;
    let offset = sign * ((z / 100) * 3600 + (z % 100) * 60);
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec - offset)
}

/// Checks Basic authorization, the date (against `now`, the fake's clock) and the
/// HMAC-SHA512 of the canonical request. The host in it is `host` (the Host header) without
/// its port, lower-cased: Duo's clients sign the bare API host name, whatever port they
/// connect to, and Duo checks against its own name.
#[allow(clippy::too_many_arguments)]
fn verify(
    opts: &Options,
    now: i64,
    method: &str,
    host: &str,
    path: &str,
    raw_params: &str,
    params: &BTreeMap<String, String>,
    headers: &hyper::HeaderMap,
) -> (Result<(), String>, Option<i64>) {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let Some(date) = header("x-duo-date").or_else(|| header("date")) else {
        return (Err("no Date or X-Duo-Date header".into()), None);
    };
    let when = parse_rfc2822(date);
    let Some(when) = when else {
        return (Err(format!("unreadable date {date:?}")), None);
    };
    if (when - now).abs() > opts.date_tolerance {
        return (
            Err(format!("date is {} s off the server's clock", when - now)),
            Some(when),
        );
    }
    let Some(auth) = header("authorization").and_then(|a| a.strip_prefix("Basic ")) else {
        return (Err("no Basic authorization".into()), Some(when));
    };
    let Some(pair) = BASE64
        .decode(auth.as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return (Err("authorization is not base64".into()), Some(when));
    };
    let Some((ikey, sig)) = pair.split_once(':') else {
        return (
            Err("authorization has no ikey:signature".into()),
            Some(when),
        );
    };
    if ikey != opts.ikey {
        return (Err("unknown integration key".into()), Some(when));
    }
    // Parameters must arrive in canonical form (sorted, Duo-encoded), as they were signed.
    let canon_params = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    if canon_params != raw_params {
        return (
            Err("parameters are not in canonical form".into()),
            Some(when),
        );
    }
    let bare_host = host.split(':').next().unwrap_or(host);
    let canonical = format!(
        "{date}\n{}\n{}\n{path}\n{canon_params}",
        method.to_ascii_uppercase(),
        bare_host.to_ascii_lowercase()
    );
    let Ok(mut mac) = Hmac::<Sha512>::new_from_slice(opts.skey.as_bytes()) else {
        return (Err("bad key".into()), Some(when));
    };
    mac.update(canonical.as_bytes());
    let Ok(given) = HEXLOWER_PERMISSIVE.decode(sig.as_bytes()) else {
        return (Err("signature is not hex".into()), Some(when));
    };
    // Constant time.
    match mac.verify_slice(&given) {
        Ok(()) => (Ok(()), Some(when)),
        Err(_) => (Err("signature does not match".into()), Some(when)),
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let opts = &state.opts;
    if !opts.delay.is_zero() {
        tokio::time::sleep(opts.delay).await;
    }
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let headers = req.headers().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).to_string(),
        Err(_) => String::new(),
    };
    let raw = if method == "GET" { query } else { body };
    let Some(params) = parse_params(&raw) else {
        return fail(StatusCode::BAD_REQUEST, 40002, "Invalid request parameters");
    };
    let signed = path != "/auth/v2/ping";
    let now = now_secs() + state.skew.load(Ordering::SeqCst);
    let (verdict, date) = if signed {
        verify(opts, now, &method, &host, &path, &raw, &params, &headers)
    } else {
        (Ok(()), None)
    };
    let mut record = Recorded {
        method: method.clone(),
        path: path.clone(),
        params: params.clone(),
        rejected: None,
        date,
    };
    record
        .params
        .remove("passcode")
        .map(|_| record.params.insert("passcode".into(), "(hidden)".into()));
    if let Some(p) = record.params.get_mut("prompt")
        && option_kind(p).is_none()
    {
        *p = "(hidden)".into();
    }
    if let Err(why) = &verdict {
        record.rejected = Some(why.clone());
    }
    if let Ok(mut r) = state.requests.lock() {
        r.push(record);
    }
    if verdict.is_err() {
        return fail(
            StatusCode::UNAUTHORIZED,
            40103,
            "Invalid signature in request credentials",
        );
    }
    match (method.as_str(), path.as_str()) {
        ("GET", "/auth/v2/ping") | ("GET", "/auth/v2/check") => {
            ok(serde_json::json!({"time": now}))
        }
        ("POST", "/auth/v2/preauth") => preauth(&state, &params).await,
        ("POST", "/auth/v2/auth") => auth(&state, &params),
        ("GET", "/auth/v2/auth_status") => auth_status(&state, &params).await,
        _ => fail(StatusCode::NOT_FOUND, 40401, "Resource not found"),
    }
}

fn scenario(state: &State, user: &str) -> Scenario {
    state
        .opts
        .users
        .get(user)
        .copied()
        .or_else(|| user.parse().ok())
        .unwrap_or(state.opts.default_scenario)
}

const ESC: &str = "\u{1b}[2J\u{1b}]0;owned\u{7}";

fn menu(user: &str, s: Scenario) -> serde_json::Value {
    let (phone, default) = match s {
        Scenario::Phone => ("XXX-XXX-1234", "phone1"),
        Scenario::Sms => ("XXX-XXX-1234", "sms1"),
        Scenario::Escapes => ("XXX-XXX-1234\u{1b}[31m\u{1b}]8;;http://evil\u{7}", "push1"),
        _ => ("XXX-XXX-1234", "push1"),
    };
    let esc = if s == Scenario::Escapes { ESC } else { "" };
    let (text, factors) = if s == Scenario::Passcode {
        (
            format!("Duo two-factor login for {user}\n\nEnter a passcode: "),
            serde_json::json!({}),
        )
    } else {
        (
            format!(
                "{esc}Duo two-factor login for {user}\n\nEnter a passcode or select one of the \
                 following options:\n\n 1. Duo Push to {phone}\n 2. Phone call to {phone}\n 3. SMS \
                 passcodes to {phone}\n\nPasscode or option (1-3): "
            ),
            serde_json::json!({"default": default, "1": "push1", "2": "phone1", "3": "sms1"}),
        )
    };
    let capabilities = if s == Scenario::Passcode {
        serde_json::json!(["mobile_otp"])
    } else {
        serde_json::json!(["auto", "push", "sms", "phone", "mobile_otp"])
    };
    if s == Scenario::NoDevices {
        // Duo may send the prompt without a device list: options are resolved by Duo.
        return serde_json::json!({
            "result": "auth",
            "status_msg": "Account is active",
            "prompt": {"text": text, "factors": factors},
        });
    }
    serde_json::json!({
        "result": "auth",
        "status_msg": "Account is active",
        "devices": [{
            "device": DEVICE,
            "type": "phone",
            "number": phone,
            "name": "My iPhone",
            "display_name": format!("iOS ({phone})"),
            "capabilities": capabilities,
            "sms_nextcode": "1",
        }],
        "prompt": {"text": text, "factors": factors},
    })
}

async fn preauth(state: &State, params: &BTreeMap<String, String>) -> Response<Full<Bytes>> {
    let Some(user) = params.get("username") else {
        return fail(StatusCode::BAD_REQUEST, 40002, "Invalid request parameters");
    };
    let s = scenario(state, user);
    match s {
        Scenario::Allow => ok(serde_json::json!({
            "result": "allow",
            "status_msg": "Your organization allows this login without two-factor authentication.",
        })),
        Scenario::Deny => ok(serde_json::json!({
            "result": "deny",
            "status_msg": "Login denied by your administrator.",
        })),
        Scenario::Enroll => ok(serde_json::json!({
            "result": "enroll",
            "status_msg": "Enroll an authentication device to proceed",
            "enroll_portal_url": ENROLL_URL,
            "prompt": {"text": format!("Please enroll at {ENROLL_URL}"), "factors": {}},
        })),
        Scenario::Unauthorized => fail(
            StatusCode::UNAUTHORIZED,
            40101,
            "Missing request credentials",
        ),
        Scenario::ServerError => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "<html><body>Service Unavailable</body></html>".into(),
        ),
        Scenario::Malformed => reply(
            StatusCode::OK,
            "{\"stat\": \"OK\", \"response\": {\"result\": ".into(),
        ),
        Scenario::Hang => {
            std::future::pending::<()>().await;
            fail(StatusCode::INTERNAL_SERVER_ERROR, 50000, "unreachable")
        }
        Scenario::RateLimitedAlways => {
            let mut r = fail(StatusCode::TOO_MANY_REQUESTS, 42901, "Too Many Requests");
            r.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from_static("1"),
            );
            r
        }
        Scenario::RateLimited | Scenario::RateLimitedX => {
            let first = state
                .limited
                .lock()
                .map(|mut m| {
                    let n = m.entry(user.clone()).or_insert(0);
                    *n += 1;
                    *n == 1
                })
                .unwrap_or(false);
            if first {
                let mut r = fail(StatusCode::TOO_MANY_REQUESTS, 42901, "Too Many Requests");
                let (name, value) = if s == Scenario::RateLimitedX {
                    ("x-retry-after", "2")
                } else {
                    ("retry-after", "1")
                };
                r.headers_mut().insert(
                    hyper::header::HeaderName::from_static(name),
                    hyper::header::HeaderValue::from_static(value),
                );
                r
            } else {
                ok(menu(user, s))
            }
        }
        _ => ok(menu(user, s)),
    }
}

/// What an option name of the text prompt selects: `push1`, `phone2`, `voice1`, `sms1`,
/// `smsrefresh1`, `auto` (one device here, so any number but 1 selects nothing).
fn option_kind(name: &str) -> Option<&'static str> {
    let kind = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let number = &name[kind.len()..];
    if !(number.is_empty() || number == "1") {
        return None;
    }
    Some(match kind {
        "push" => "push",
        "phone" | "voice" => "phone",
        "sms" | "smsrefresh" => "sms",
        "auto" => "auto",
        _ => return None,
    })
}

type Step = (Duration, &'static str, &'static str, String);

fn auth(state: &State, params: &BTreeMap<String, String>) -> Response<Full<Bytes>> {
    let (Some(user), Some(factor)) = (params.get("username"), params.get("factor")) else {
        return fail(StatusCode::BAD_REQUEST, 40002, "Invalid request parameters");
    };
    let s = scenario(state, user);
    if s == Scenario::AuthError {
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "<html><body>Internal Server Error</body></html>".into(),
        );
    }
    let esc = if s == Scenario::Escapes { ESC } else { "" };
    let asynchronous = params.get("async").map(String::as_str) == Some("1");
    // factor=prompt (duo_unix's form): an option name, else a passcode.
    let (factor, passcode) = match factor.as_str() {
        "prompt" => {
            let Some(p) = params.get("prompt") else {
                return fail(StatusCode::BAD_REQUEST, 40002, "Invalid request parameters");
            };
            match option_kind(p) {
                Some(kind) => (kind, None),
                None => ("passcode", Some(p.as_str())),
            }
        }
        "passcode" => ("passcode", params.get("passcode").map(String::as_str)),
        "push" | "phone" | "sms" | "auto" => {
            if params.get("device").is_none() {
                return fail(StatusCode::BAD_REQUEST, 40002, "Invalid request parameters");
            }
            (factor.as_str(), None)
        }
        _ => return fail(StatusCode::BAD_REQUEST, 40002, "Invalid request parameters"),
    };
    let locked: Step = (
        Duration::ZERO,
        "deny",
        "locked_out",
        "Your account has been locked out due to excessive authentication failures.".to_string(),
    );
    let d = state.opts.push_delay;
    let steps: Vec<Step> = match factor {
        "passcode" => {
            let code = passcode.unwrap_or("");
            let sms_ok = s == Scenario::Sms
                && code == SMS_PASSCODE
                && state
                    .sms_sent
                    .lock()
                    .map(|m| m.get(user).copied().unwrap_or(false))
                    .unwrap_or(false);
            if s == Scenario::Locked {
                vec![locked]
            } else if code == PASSCODE || sms_ok {
                vec![(
                    Duration::ZERO,
                    "allow",
                    "allow",
                    format!("{esc}Success. Logging you in..."),
                )]
            } else {
                vec![(
                    Duration::ZERO,
                    "deny",
                    "deny",
                    "Incorrect passcode. Please try again.".into(),
                )]
            }
        }
        "sms" => {
            if s == Scenario::Locked {
                vec![locked]
            } else {
                if let Ok(mut m) = state.sms_sent.lock() {
                    m.insert(user.clone(), true);
                }
                vec![(
                    Duration::ZERO,
                    "deny",
                    "sent",
                    "New SMS passcodes sent.".into(),
                )]
            }
        }
        _ => {
            let final_step: Step = match s {
                Scenario::Locked => locked,
                Scenario::PushDeny => (d, "deny", "deny", "Login request denied.".to_string()),
                Scenario::PushTimeout => (d, "deny", "timeout", "Login timed out.".to_string()),
                _ => (
                    d,
                    "allow",
                    "allow",
                    format!("{esc}Success. Logging you in..."),
                ),
            };
            let phone = factor == "phone" || (factor == "auto" && s == Scenario::Phone);
            let mut steps = Vec::new();
            if s != Scenario::Locked {
                if phone {
                    steps.push((
                        Duration::ZERO,
                        "waiting",
                        "calling",
                        format!("{esc}Dialing XXX-XXX-1234..."),
                    ));
                    steps.push((
                        d / 2,
                        "waiting",
                        "answered",
                        "Answered. Press any key on your phone to log in.".into(),
                    ));
                } else {
                    steps.push((
                        Duration::ZERO,
                        "waiting",
                        "pushed",
                        format!("{esc}Pushed a login request to your device..."),
                    ));
                }
            }
            steps.push(final_step);
            if !asynchronous {
                return fail(
                    StatusCode::BAD_REQUEST,
                    40002,
                    "This fake only does async push and phone",
                );
            }
            steps
        }
    };
    if !asynchronous {
        let (_, result, status, msg) = steps[0].clone();
        return ok(serde_json::json!({"result": result, "status": status, "status_msg": msg}));
    }
    let n = state.next_tx.fetch_add(1, Ordering::SeqCst);
    let txid = format!("45f7c92b-f45f-4862-8545-{n:012}");
    if let Ok(mut txs) = state.txs.lock() {
        txs.insert(
            txid.clone(),
            Tx {
                created: Instant::now(),
                steps,
                returned: 0,
            },
        );
    }
    if let Ok(mut users) = state.tx_users.lock() {
        users.insert(txid.clone(), user.clone());
    }
    ok(serde_json::json!({"txid": txid}))
}

/// Long-polls: answers with the transaction's next status once it is due.
async fn auth_status(state: &State, params: &BTreeMap<String, String>) -> Response<Full<Bytes>> {
    let Some(txid) = params.get("txid") else {
        return fail(StatusCode::BAD_REQUEST, 40002, "Invalid request parameters");
    };
    if let Some(user) = state
        .tx_users
        .lock()
        .ok()
        .and_then(|m| m.get(txid).cloned())
        && scenario(state, &user) == Scenario::StatusError
    {
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "<html><body>Internal Server Error</body></html>".into(),
        );
    }
    let next = state.txs.lock().ok().and_then(|mut txs| {
        let tx = txs.get_mut(txid)?;
        let i = tx.returned.min(tx.steps.len().saturating_sub(1));
        tx.returned = (tx.returned + 1).min(tx.steps.len());
        let (due, result, status, msg) = tx.steps.get(i)?.clone();
        Some((tx.created + due, result, status, msg))
    });
    let Some((at, result, status, msg)) = next else {
        return fail(StatusCode::BAD_REQUEST, 40002, "Invalid request parameters");
    };
    tokio::time::sleep_until(at.into()).await;
    ok(serde_json::json!({"result": result, "status": status, "status_msg": msg}))
}

/// A TCP proxy on 127.0.0.1 that delays every byte by `one_way` in each direction, like a
/// network with a round-trip time of twice that: connection set-up, TLS handshakes and
/// requests all pay for it, as they would between a login host and Duo.
pub struct LatencyProxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LatencyProxy {
    pub async fn start(upstream: SocketAddr, one_way: Duration) -> std::io::Result<LatencyProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    // The SYN/SYN-ACK of a real connection costs a round trip too.
                    tokio::time::sleep(one_way * 2).await;
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, one_way), pipe(sr, cw, one_way));
                });
            }
        });
        Ok(LatencyProxy { addr, task })
    }

    /// The host to give the client: `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

/// A TCP proxy on 127.0.0.1 that can drop the connections it carries silently, as a NAT
/// gateway or a firewall forgets idle state: after `drop_silently`, nothing more passes on
/// any connection open so far, in either direction, and none is closed (no FIN, no RST);
/// connections made afterwards work.
pub struct DroppingProxy {
    addr: SocketAddr,
    dropped: Arc<AtomicUsize>,
    client_ports: Arc<Mutex<Vec<u16>>>,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Drop for DroppingProxy {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}

impl DroppingProxy {
    pub async fn start(upstream: SocketAddr) -> std::io::Result<DroppingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let dropped = Arc::new(AtomicUsize::new(0));
        let client_ports = Arc::new(Mutex::new(Vec::new()));
        let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::new(Mutex::new(Vec::new()));
        let (d, ports, held) = (
            Arc::clone(&dropped),
            Arc::clone(&client_ports),
            Arc::clone(&tasks),
        );
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, peer)) = listener.accept().await else {
                    continue;
                };
                if let Ok(mut p) = ports.lock() {
                    p.push(peer.port());
                }
                let d = Arc::clone(&d);
                let conn = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let generation = d.load(Ordering::SeqCst);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(
                        relay(cr, sw, generation, Arc::clone(&d)),
                        relay(sr, cw, generation, d)
                    );
                });
                if let Ok(mut t) = held.lock() {
                    t.push(conn.abort_handle());
                }
            }
        });
        if let Ok(mut t) = tasks.lock() {
            t.push(accept.abort_handle());
        }
        Ok(DroppingProxy {
            addr,
            dropped,
            client_ports,
            tasks,
        })
    }

    /// The host to give the client: `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// From now on, the connections open so far carry nothing and are never closed.
    pub fn drop_silently(&self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }

    /// The client-side ports of the connections accepted so far, oldest first.
    pub fn client_ports(&self) -> Vec<u16> {
        self.client_ports
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }
}

/// Forwards `from` to `to` until the proxy drops the connection's generation; then swallows
/// what comes and holds `to` open, so the other side sees silence, not a close.
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    generation: usize,
    dropped: Arc<AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if dropped.load(Ordering::SeqCst) != generation {
                    continue;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    if dropped.load(Ordering::SeqCst) != generation {
        // Until the proxy itself is dropped (which aborts this task).
        std::future::pending::<()>().await;
    }
    let _ = to.shutdown().await;
}

/// Copies `from` to `to`, each chunk delivered `delay` after it was read, without holding
/// back the chunks behind it (latency, not bandwidth).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_with_zones() {
        assert_eq!(
            parse_rfc2822("Fri, 07 Dec 2012 17:18:00 -0000"),
            Some(1_354_900_680)
        );
        assert_eq!(
            parse_rfc2822("Fri, 07 Dec 2012 18:18:00 +0100"),
            Some(1_354_900_680)
        );
        assert_eq!(parse_rfc2822("yesterday"), None);
    }

    // Duo's published worked example of signature version 2 with HMAC-SHA512
    // (duo_client_python tests/test_client.py, `test_hmac_sha512`): the request, the keys
    // and the expected signature exactly as published. The fake must accept it, so that
    // the fake and mfad cannot agree on a mistake of their own.
    const VECTOR_DATE: &str = "Fri, 07 Dec 2012 17:18:00 -0000";
    const VECTOR_SKEY: &str = "gtdfxv9YgVBYcF6dl2Eq17KUQJN2PLM2ODVTkvoT";
    const VECTOR_SIG: &str = "0508065035a03b2a1de2f453e629e791d180329e157f65df6b3e0f08299d4321\
                              e1c5c7a7c7ee6b9e5fc80d1fb6fbf3ad5eb7c44dd3b3985a02c37aca53ec3698";
    const VECTOR_PARAMS: &str = "%E4%9A%9A%E2%A1%BB%E3%97%90%E8%BB%B3%E6%9C%A7%E5%80%AA%E0%A0%90\
        %ED%82%91%C3%88%EC%85%B0=%E0%BD%85%E1%A9%B6%E3%90%9A%E6%95%8C%EC%88%BF%E9%AC%89%EA%AF%A2\
        %E8%8D%83%E1%AC%A7%E6%83%90&%E7%91%89%E7%B9%8B%EC%B3%BB%E5%A7%BF%EF%B9%9F%E8%8E%B7%EA%B7\
        %8C%E9%80%8C%EC%BF%91%E7%A0%93=%E8%B6%B7%E5%80%A2%E9%8B%93%E4%8B%AF%E2%81%BD%E8%9C%B0%EA\
        %B3%BE%E5%98%97%E0%A5%86%E4%B8%B0&%E7%91%B0%E9%8C%94%E9%80%9C%E9%BA%AE%E4%83%98%E4%88%81\
        %E8%8B%98%E8%B1%B0%E1%B4%B1%EA%81%82=%E1%9F%99%E0%AE%A8%E9%8D%98%EA%AB%9F%EA%90%AA%E4%A2\
        %BE%EF%AE%96%E6%BF%A9%EB%9F%BF%E3%8B%B3&%EC%8B%85%E2%B0%9D%E2%98%A0%E3%98%97%E9%9A%B3F\
        %E8%98%85%E2%83%A8%EA%B0%A1%E5%A4%B4=%EF%AE%A9%E4%86%AA%EB%B6%83%E8%90%8B%E2%98%95%E3%B9\
        %AE%E6%94%AD%EA%A2%B5%ED%95%ABU";

    fn vector_request(host: &str, sig: &str) -> Result<(), String> {
        let opts = Options {
            ikey: "test_ikey".into(),
            skey: VECTOR_SKEY.into(),
            ..Options::default()
        };
        let mut headers = hyper::HeaderMap::new();
        headers.insert("date", VECTOR_DATE.parse().unwrap());
        let auth = format!(
            "Basic {}",
            BASE64.encode(format!("test_ikey:{sig}").as_bytes())
        );
        headers.insert("authorization", auth.parse().unwrap());
        let params = parse_params(VECTOR_PARAMS).unwrap();
        let now = parse_rfc2822(VECTOR_DATE).unwrap();
        verify(
            &opts,
            now,
            "POST",
            host,
            "/Foo/BaR2/qux",
            VECTOR_PARAMS,
            &params,
            &headers,
        )
        .0
    }

    #[test]
    fn verify_accepts_duos_published_example() {
        assert_eq!(vector_request("foO.BAr52.cOm", VECTOR_SIG), Ok(()));
    }

    #[test]
    fn verify_signs_the_host_without_its_port_as_duo_does() {
        // Reached on another port than 443, the signature still covers the bare name.
        assert_eq!(vector_request("foO.BAr52.cOm:8443", VECTOR_SIG), Ok(()));
        // A signature over `host:port` (the mistake Duo refuses with 401) is refused here too.
        let canonical =
            format!("{VECTOR_DATE}\nPOST\nfoo.bar52.com:8443\n/Foo/BaR2/qux\n{VECTOR_PARAMS}");
        let mut mac = Hmac::<Sha512>::new_from_slice(VECTOR_SKEY.as_bytes()).unwrap();
        mac.update(canonical.as_bytes());
        let with_port = data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes());
        assert_eq!(
            vector_request("foO.BAr52.cOm:8443", &with_port),
            Err("signature does not match".into())
        );
        // And one character off the published signature is refused.
        let mut wrong = VECTOR_SIG.to_string();
        wrong.replace_range(0..1, "1");
        assert_eq!(
            vector_request("foO.BAr52.cOm", &wrong),
            Err("signature does not match".into())
        );
    }

    #[test]
    fn parameters_decode() {
        let p = parse_params("a=First%20Last&b=x+y&c=").unwrap();
        assert_eq!(p["a"], "First Last");
        assert_eq!(p["b"], "x y");
        assert_eq!(p["c"], "");
    }
}
