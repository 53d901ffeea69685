//! mfa-web: the web front of mfa. It serves what faces a browser or a provider's callback
//! (today the push/call approval pages and the voice provider's callbacks) as its own
//! unprivileged user. It holds no secret and decides nothing: every request becomes one
//! request of mfad's web role over mfad's Unix socket, and mfad's reply is rendered.
//!
//! A GET only shows the request (link previews and scanners fetch links); only a POST
//! decides. The listener bounds everything a stranger can make it hold: connections (in
//! all, and per client address), header time, body size and connection lifetime.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Path, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
// `html` names both maud's macro and the page layout below (different namespaces); the
// page modules get both with `use super::html`.
use maud::{DOCTYPE, Markup, PreEscaped, Render, html};
use mfa_proto::{Closed, VoiceStep, WebAnswer, WebDecision, WebReply, WebRequest};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

/// Where mfa-web reads its settings unless told otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/mfa/mfa-web.toml";

/// Connections served at once; past that new ones are closed at once rather than queued, so
/// a flood cannot hold memory.
const MAX_CONNECTIONS: usize = 256;
/// A connection that sends nothing at all within this is closed: a phone or the voice
/// provider sends its request at once; a flood of idle sockets does not.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);
/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's headers must arrive within this (slow-header clients are cut off).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection lives longer, whatever it sends: bounds slow bodies and idle keep-alives.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Largest request body: a form of two fields, or a provider callback of a few dozen.
const MAX_BODY: usize = 16 * 1024;
/// Largest request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Connecting to mfad's socket must succeed within this.
pub const MFAD_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Each read from and write to mfad must finish within this (mfad answers a web request at
/// once; its keep-alives come every 5 s while it waits on a cluster's database).
pub const MFAD_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The page's only style is inline, so the policy allows inline style and nothing else: no
/// script, no images, no frames, forms only back to this origin.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";
/// The security-key page's policy: as [`CSP`], plus the one script of this origin
/// ([`WEBAUTHN_JS`]); still no inline script, no connections, nothing from elsewhere.
pub(crate) const KEY_PAGE_CSP: &str = "default-src 'none'; script-src 'self'; \
                   style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";
/// The security-key page's script: hands mfad's challenge to `navigator.credentials` and
/// posts the answer back.
const WEBAUTHN_JS: &str = include_str!("webauthn.js");

/// `/etc/mfa/mfa-web.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address and port to listen on. Default `127.0.0.1:8443`.
    pub listen: SocketAddr,
    /// PEM certificate chain for HTTPS. Set both `tls_cert` and `tls_key`, or neither; with
    /// neither mfa-web speaks plain HTTP, which is allowed only on a loopback `listen`
    /// address, behind a reverse proxy that terminates TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// mfad's socket. Default `/run/mfa/mfad.sock`.
    pub socket: PathBuf,
    /// Connections one client address (an IPv6 /64) may hold open at once. Default 16;
    /// 1 to 256. Behind a reverse proxy every connection comes from the proxy: raise it,
    /// and let the proxy limit each client.
    pub connections_per_address: u32,
    /// Requests one client address (an IPv6 /64) may make per minute; past it, "Too many
    /// requests" (429) until the minute is over, and mfad is not asked. Default 60; 1 to
    /// 10000. Behind a reverse proxy, raise it as `connections_per_address`.
    pub requests_per_minute: u32,
    /// The reverse proxies (addresses or networks, `127.0.0.1/32`) whose `X-Forwarded-For`
    /// names the client: for a request from one of them, the client is the right-most
    /// address of that header that is not itself a trusted proxy, and it is what mfad logs
    /// (and PAM sees) and what `requests_per_minute` counts. Anyone else's header is
    /// ignored. Set, the cookies are also marked `Secure` (the proxy terminates TLS).
    /// Default: none.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls_cert: None,
            tls_key: None,
            socket: PathBuf::from(mfa_proto::DEFAULT_SOCKET),
            connections_per_address: 16,
            requests_per_minute: 60,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("cannot read the TLS certificate {path}: {why}")]
    Certificate { path: PathBuf, why: String },
    #[error("cannot read the TLS key {path}: {why}")]
    Key { path: PathBuf, why: String },
    #[error("the TLS certificate and key cannot be used together: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl WebConfig {
    /// Reads and checks `path`.
    pub fn load(path: &FsPath) -> Result<Self, WebError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: WebConfig = toml::from_str(&text).map_err(|e| WebError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Names the key that is wrong.
    pub fn validate(&self) -> Result<(), WebError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(WebError::Invalid {
                    key: "tls_key",
                    message: "must be set when tls_cert is".into(),
                });
            }
            (None, Some(_)) => {
                return Err(WebError::Invalid {
                    key: "tls_cert",
                    message: "must be set when tls_key is".into(),
                });
            }
            (None, None) if !self.listen.ip().is_loopback() => {
                return Err(WebError::Invalid {
                    key: "listen",
                    message: format!(
                        "{} is not a loopback address: without tls_cert and tls_key mfa-web \
                         speaks plain HTTP, allowed only on loopback behind a TLS proxy",
                        self.listen
                    ),
                });
            }
            _ => {}
        }
        if !(1..=256).contains(&self.connections_per_address) {
            return Err(WebError::Invalid {
                key: "connections_per_address",
                message: format!("{} is not within 1 to 256", self.connections_per_address),
            });
        }
        if !(1..=10_000).contains(&self.requests_per_minute) {
            return Err(WebError::Invalid {
                key: "requests_per_minute",
                message: format!("{} is not within 1 to 10000", self.requests_per_minute),
            });
        }
        if !self.socket.is_absolute() {
            return Err(WebError::Invalid {
                key: "socket",
                message: "must be an absolute path".into(),
            });
        }
        Ok(())
    }
}

impl WebConfig {
    /// Checks what `validate` cannot: that the certificate and key load and match.
    pub fn check_files(&self) -> Result<(), WebError> {
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            load_tls(cert, key)?;
        }
        Ok(())
    }
}

/// Why mfad gave no reply.
#[derive(Debug, thiserror::Error)]
pub enum MfadError {
    #[error(transparent)]
    Client(#[from] mfa_proto::ClientError),
    #[error("the request to mfad failed: {0}")]
    Task(String),
}

/// mfad's reply to one request, to be awaited.
pub type Reply<'a> = Pin<Box<dyn Future<Output = Result<WebReply, MfadError>> + Send + 'a>>;

/// Who answers mfa-web's requests: mfad over its socket ([`MfadSocket`]); in tests, mfad's
/// web service in-process.
pub trait Mfad: Send + Sync {
    fn ask(&self, request: WebRequest) -> Reply<'_>;
}

/// mfad at the end of its Unix socket. Each request is one connection; connect and every
/// read and write carry a timeout, and a socket not served by root is refused (it is not
/// mfad).
pub struct MfadSocket {
    pub path: PathBuf,
}

impl Mfad for MfadSocket {
    fn ask(&self, request: WebRequest) -> Reply<'_> {
        let path = self.path.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut client =
                    mfa_proto::Client::connect(&path, MFAD_CONNECT_TIMEOUT, MFAD_IO_TIMEOUT)?;
                Ok(mfa_proto::web_request(&mut client, request)?)
            })
            .await
            .map_err(|e| MfadError::Task(e.to_string()))?
        })
    }
}

struct App {
    mfad: Arc<dyn Mfad>,
    /// Served over TLS: cookies carry `Secure`.
    secure_cookies: bool,
}

mod enrol;
mod portal;

type Shared = State<Arc<App>>;

/// The page: `title` as its title and heading, then `body`.
fn html(status: StatusCode, title: &str, body: Markup) -> Response {
    let page = html! {
        (DOCTYPE) "\n"
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) }
                // STYLE is a constant of this file: no outside text ever reaches it.
                style { (PreEscaped(STYLE)) }
            }
            body { main { h1 { (title) } (body) } }
        }
        "\n"
    };
    (
        status,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        page.into_string(),
    )
        .into_response()
}

/// A form that posts `fields` to `to`, with the CSRF token `csrf`.
fn post_form(to: &str, csrf: &str, fields: Markup) -> Markup {
    html! {
        form method="post" action=(to) {
            input type="hidden" name="csrf" value=(csrf);
            (fields)
        }
    }
}

/// The password input (labelled `label`) and the form's Continue button.
fn password_and_continue(label: Markup) -> Markup {
    html! {
        label for="password" { (label) }
        br;
        input.wide #password name="password" type="password" autocomplete="current-password"
            required;
        br;
        button type="submit" { "Continue" }
    }
}

/// A paragraph that tells what went wrong, announced by screen readers.
fn alert(text: impl Render) -> Markup {
    html! { p.error role="alert" { (text) } }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:1em;background:#f6f6f6;color:#111}\
main{max-width:28em;margin:auto;background:#fff;padding:1em 1.5em;border-radius:8px}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3em 1em}dt{font-weight:bold}\
dd{margin:0;word-break:break-all}form{margin:.8em 0}\
button{width:100%;font-size:1.1em;padding:.7em;border-radius:6px;border:1px solid #888}\
.approve{background:#1a7f37;color:#fff}.report{background:#b42318;color:#fff}\
input{font-size:1.4em;width:3em;text-align:center;margin:.3em 0 .6em}.note{font-size:.9em;color:#444}\
input.wide{width:100%;box-sizing:border-box;text-align:left}.error{color:#b42318}\
.qr svg{max-width:100%;height:auto}code{word-break:break-all}\
pre{white-space:pre-wrap;word-break:break-word}form button+button{margin-top:.4em}\
a.button{display:block;text-align:center;font-size:1.1em;padding:.7em;border-radius:6px;\
border:1px solid #888;background:#1a7f37;color:#fff;text-decoration:none}";

fn gone(status: StatusCode, why: &str) -> Response {
    html(
        status,
        "Login request closed",
        html! {
            p { (why) }
            p { "Nothing was approved. If a login is still waiting, start it again." }
        },
    )
}

fn not_found() -> Response {
    gone(
        StatusCode::NOT_FOUND,
        "This login request is unknown, has expired, or was already answered.",
    )
}

/// mfad gave no reply (down, restarting, or refusing this process): nothing was decided.
fn mfad_down(e: &MfadError) -> Response {
    warn!("mfad did not answer a web request: {e}");
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service unavailable",
        html! {
            p {
                "Login requests cannot be shown or answered right now: the two-factor service \
                 is not reachable. Nothing was approved. Try again in a moment."
            }
        },
    )
}

fn closed(why: Closed) -> Response {
    match why {
        Closed::Unknown => not_found(),
        Closed::Expired => gone(StatusCode::GONE, "This login request has expired."),
        Closed::Abandoned => gone(
            StatusCode::GONE,
            "The login that made this request is no longer waiting.",
        ),
        Closed::Unavailable => gone(
            StatusCode::SERVICE_UNAVAILABLE,
            "Login requests cannot be answered right now. Try again in a moment.",
        ),
    }
}

/// A reply mfad should not have given to this request: nothing to show but an error.
fn unexpected() -> Response {
    warn!("mfad gave an unexpected reply to a web request");
    html(
        StatusCode::BAD_GATEWAY,
        "Unexpected answer",
        html! { p { "The two-factor service gave an unexpected answer. Nothing was approved." } },
    )
}

async fn show(State(app): Shared, Path(token): Path<String>) -> Response {
    if !mfa_proto::web::looks_like_token(&token) {
        return not_found();
    }
    let page = match app
        .mfad
        .ask(WebRequest::ShowApproval {
            token: token.clone(),
        })
        .await
    {
        Ok(WebReply::Approval { page }) => page,
        Ok(WebReply::Closed { why }) => return closed(why),
        Ok(_) => return unexpected(),
        Err(e) => return mfad_down(&e),
    };
    // The forms post to the relative URL `{token}`, which is this page's own address even
    // when a reverse proxy serves the pages under a path prefix.
    let form = |action: &str, extra: Markup, class: &str, label: &str| {
        html! {
            form method="post" action=(token) {
                input type="hidden" name="action" value=(action);
                (extra)
                button type="submit" class=(class) { (label) }
            }
        }
    };
    let number = html! {
        @if page.needs_number {
            label for="number" { "Type the number shown at the login prompt:" }
            br;
            input id="number" name="number" inputmode="numeric" pattern="[0-9]{2}"
                maxlength="2" autocomplete="off" required;
            br;
        }
    };
    let body = html! {
        @if page.adding_device {
            p {
                b { (page.user) }
                " is adding this phone to their two-factor devices. Approve only if you are \
                 doing that, now."
            }
        } @else {
            p { "Someone is logging in as " b { (page.user) } ". Approve only if it is you, now." }
        }
        dl {
            dt { "User" } dd { (page.user) }
            dt { "Host" } dd { (page.host) }
            dt { "From" } dd { (page.rhost) }
            dt { "Time" } dd { (page.time) }
        }
        (form("approve", number, "approve", "Approve"))
        (form("deny", html! {}, "deny", "Deny"))
        (form("report", html! {}, "report", "Deny and report"))
        p.note {
            "Did not start this login? Use " b { "Deny and report" } ": the login is refused \
             and your administrator is alerted."
        }
    };
    html(StatusCode::OK, "Login request", body)
}

#[derive(Deserialize)]
struct AnswerForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    number: Option<String>,
}

async fn decide(
    State(app): Shared,
    Path(token): Path<String>,
    Form(form): Form<AnswerForm>,
) -> Response {
    if !mfa_proto::web::looks_like_token(&token) {
        return not_found();
    }
    let answer = match form.action.as_str() {
        "approve" => WebAnswer::Approve,
        "deny" => WebAnswer::Deny,
        "report" => WebAnswer::Report,
        _ => {
            return html(
                StatusCode::BAD_REQUEST,
                "Unknown answer",
                html! { p { "Use one of the buttons on the login request page." } },
            );
        }
    };
    let request = WebRequest::DecideApproval {
        token,
        answer,
        number: form.number,
    };
    match app.mfad.ask(request).await {
        Ok(WebReply::Decided { decision, waiting }) => {
            let (title, text) = match decision {
                WebDecision::Approved => ("Approved", "The login may go ahead."),
                WebDecision::WrongNumber => (
                    "Denied",
                    "The number did not match the one at the login prompt, so the login \
                     was denied. Start the login again to retry.",
                ),
                WebDecision::Reported => (
                    "Denied and reported",
                    "The login was refused and your administrator has been alerted.",
                ),
                WebDecision::Denied => ("Denied", "The login was refused."),
            };
            let body = html! {
                p { (text) }
                @if !waiting {
                    p { "The login had already stopped waiting." }
                }
                p { "You can close this page." }
            };
            html(StatusCode::OK, title, body)
        }
        Ok(WebReply::Closed { why }) => closed(why),
        Ok(_) => unexpected(),
        Err(e) => mfad_down(&e),
    }
}

fn twiml(body: String) -> Response {
    (
        StatusCode::OK,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Forwards a voice callback as it came; mfad checks the signature and writes the TwiML.
async fn callback(
    app: &App,
    step: VoiceStep,
    token: String,
    uri: &Uri,
    headers: &HeaderMap,
    params: Vec<(String, String)>,
) -> Response {
    let request = WebRequest::VoiceCallback {
        step,
        token,
        path: uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string(),
        params,
        signature: headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    match app.mfad.ask(request).await {
        Ok(WebReply::Voice { twiml: body }) => twiml(body),
        Ok(WebReply::Forbidden) => (StatusCode::FORBIDDEN, "forbidden\n").into_response(),
        Ok(_) => unexpected(),
        Err(e) => mfad_down(&e),
    }
}

async fn voice(
    State(app): Shared,
    Path(token): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    Form(params): Form<Vec<(String, String)>>,
) -> Response {
    callback(&app, VoiceStep::Voice, token, &uri, &headers, params).await
}

async fn gather(
    State(app): Shared,
    Path(token): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    Form(params): Form<Vec<(String, String)>>,
) -> Response {
    callback(&app, VoiceStep::Gather, token, &uri, &headers, params).await
}

async fn fallback() -> Response {
    html(
        StatusCode::NOT_FOUND,
        "Not found",
        html! { p { "There is nothing here." } },
    )
}

/// GET /static/webauthn.js: the security-key page's script.
async fn webauthn_js() -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        WEBAUTHN_JS,
    )
        .into_response()
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    // No page is cached: some show a secret or codes once.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The token is in the URL: never hand it to another site.
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // A page that set its own (the security-key page) keeps it.
    if !h.contains_key(CONTENT_SECURITY_POLICY) {
        h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    }
    resp
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/a/{token}", get(show).post(decide))
        .route("/twilio/voice/{token}", post(voice))
        .route("/twilio/gather/{token}", post(gather))
        .route("/enroll/{token}", get(enrol::show).post(enrol::step))
        .route("/portal", get(portal::show))
        .route("/portal/sign-in", post(portal::sign_in))
        .route("/portal/code", post(portal::code))
        .route("/portal/send", post(portal::send))
        .route("/portal/change", post(portal::change))
        .route("/portal/sign-out", post(portal::sign_out))
        .route("/portal/admin", post(portal::admin))
        .route("/portal/key", post(portal::key))
        .route("/static/webauthn.js", get(webauthn_js))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

fn load_tls(cert: &FsPath, key: &FsPath) -> Result<TlsAcceptor, WebError> {
    let cert_err = |why: String| WebError::Certificate {
        path: cert.to_path_buf(),
        why,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("it holds no PEM certificate".into()));
    }
    // The error never quotes the key's contents, only what kind of problem it is.
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| WebError::Key {
        path: key.to_path_buf(),
        why: e.to_string(),
    })?;
    // Named explicitly so the choice never depends on which crypto features the dependency
    // tree happens to switch on.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| WebError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The web front, bound and ready to serve.
pub struct WebServer {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    local_addr: SocketAddr,
    per_address: usize,
    /// `trusted_proxies`.
    proxies: Arc<Vec<ipnet::IpNet>>,
    requests: Arc<RequestRate>,
}

/// How long a client address's request count lasts.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Requests per client address in the current minute (a fixed window per address).
struct RequestRate {
    per_window: u32,
    counts:
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (tokio::time::Instant, u32)>>,
}

impl RequestRate {
    /// Counts one request of `key`; false when it is over the limit.
    fn allow(&self, key: std::net::IpAddr) -> bool {
        let now = tokio::time::Instant::now();
        let mut map = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > 65_536 {
            map.retain(|_, (start, _)| now.duration_since(*start) < RATE_WINDOW);
        }
        let entry = map.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= RATE_WINDOW {
            *entry = (now, 0);
        }
        if entry.1 >= self.per_window {
            return false;
        }
        entry.1 += 1;
        true
    }
}

fn too_many() -> Response {
    html(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        html! {
            p {
                "Too many requests from this address. Nothing was approved. Wait a minute, \
                 then open the link again."
            }
        },
    )
}

/// The client's address (IPv4-mapped addresses as IPv4; behind a trusted proxy, the one it
/// forwarded for, see [`forwarded_client`]), passed to mfad for its logs and PAM.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) std::net::IpAddr);

/// The client of a request that came from `peer`: `peer` itself, unless it is one of the
/// trusted `proxies`; then the right-most address of `X-Forwarded-For` (each proxy appends
/// the address it was reached from) that is not a trusted proxy. A header that does not
/// parse leaves the proxy's address (logged, counted: nothing is guessed).
fn forwarded_client(
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
    proxies: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let peer = unmapped(peer);
    let trusted = |ip: &std::net::IpAddr| proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return peer;
        };
        for hop in text.split(',') {
            match hop.trim().parse::<std::net::IpAddr>() {
                Ok(ip) => hops.push(unmapped(ip)),
                Err(_) => return peer,
            }
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !trusted(ip))
        .unwrap_or(peer)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn unmapped(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// The address a per-address cap counts: an IPv4 address, or an IPv6 /64 (one subscriber
/// usually holds a whole /64, so counting single IPv6 addresses would cap nothing).
fn client_key(addr: std::net::IpAddr) -> std::net::IpAddr {
    match unmapped(addr) {
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            std::net::IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

type OpenCounts = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// One connection counted against its address; uncounted when dropped.
struct AddressSlot {
    counts: OpenCounts,
    key: std::net::IpAddr,
}

impl AddressSlot {
    fn take(counts: &OpenCounts, key: std::net::IpAddr, cap: usize) -> Option<AddressSlot> {
        let mut map = counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(key).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: Arc::clone(counts),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl WebServer {
    /// Checks `cfg`, loads the certificate and key (if set) and binds `cfg.listen`; requests
    /// go to mfad at `cfg.socket`.
    pub async fn bind(cfg: &WebConfig) -> Result<Self, WebError> {
        let mfad = Arc::new(MfadSocket {
            path: cfg.socket.clone(),
        });
        Self::bind_with(cfg, mfad).await
    }

    /// As [`WebServer::bind`], with requests answered by `mfad`.
    pub async fn bind_with(cfg: &WebConfig, mfad: Arc<dyn Mfad>) -> Result<Self, WebError> {
        cfg.validate()?;
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(cert), Some(key)) => Some(load_tls(cert, key)?),
            _ => None,
        };
        let bind_err = |source| WebError::Bind {
            addr: cfg.listen,
            source,
        };
        let secure_cookies = tls.is_some() || !cfg.trusted_proxies.is_empty();
        let listener = TcpListener::bind(cfg.listen).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        Ok(WebServer {
            listener,
            tls,
            router: router(Arc::new(App {
                mfad,
                secure_cookies,
            })),
            local_addr,
            per_address: cfg.connections_per_address as usize,
            proxies: Arc::new(cfg.trusted_proxies.clone()),
            requests: Arc::new(RequestRate {
                per_window: cfg.requests_per_minute,
                counts: Default::default(),
            }),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown` resolves. Connections already open finish on their own, each
    /// within [`CONNECTION_LIFETIME`].
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let open: OpenCounts = Arc::default();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            warn!("accept failed: {e}");
                            #[allow(clippy::disallowed_methods)] // a pause after a failed accept
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // One address may not take the whole listener: past its cap its new
                    // connections are closed at once, and everyone else is still served.
                    let key = client_key(peer.ip());
                    let Some(slot) = AddressSlot::take(&open, key, self.per_address)
                    else {
                        continue;
                    };
                    let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                        // Full: shed the newcomer instead of queueing it.
                        continue;
                    };
                    let tls = self.tls.clone();
                    // Each request of this connection counts against its address's rate.
                    let requests = Arc::clone(&self.requests);
                    let proxies = Arc::clone(&self.proxies);
                    let router = self.router.clone().layer(axum::middleware::from_fn(
                        move |mut req: axum::extract::Request, next: axum::middleware::Next| {
                            let client = forwarded_client(peer.ip(), req.headers(), &proxies);
                            let allowed = requests.allow(client_key(client));
                            req.extensions_mut().insert(ClientAddr(client));
                            async move {
                                if allowed {
                                    next.run(req).await
                                } else {
                                    security_headers(too_many()).await
                                }
                            }
                        },
                    ));
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            CONNECTION_LIFETIME,
                            serve_connection(stream, tls, router),
                        )
                        .await;
                        drop(permit);
                        drop(slot);
                    });
                }
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, tls: Option<TlsAcceptor>, router: Router) {
    // Nothing (not even a TLS hello) within the first-byte timeout: not a client worth a slot.
    match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut [0u8; 1])).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    let service = TowerToHyperService::new(router);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    // Errors here are a client's broken or abandoned connection: nothing to report.
    match tls {
        Some(acceptor) => {
            let Ok(Ok(stream)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
            else {
                return;
            };
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        }
        None => {
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        }
    }
}

/// Logs where the server listens, in the line tests and admins look for.
pub fn announce(server: &WebServer, socket: &FsPath) {
    info!(
        "mfa-web listening on {}://{} (mfad at {})",
        if server.is_tls() { "https" } else { "http" },
        server.local_addr(),
        socket.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> axum::http::HeaderMap {
        let mut map = axum::http::HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn the_client_is_the_last_address_a_trusted_proxy_did_not_add() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let proxies: Vec<ipnet::IpNet> =
            vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let peer = ip("10.1.2.3");
        // The client, then two proxies of the site (the last one is the peer itself).
        let h = headers(&["198.51.100.7, 10.9.9.9"]);
        assert_eq!(forwarded_client(peer, &h, &proxies), ip("198.51.100.7"));
        // Whatever the client wrote before is not believed: the right-most untrusted wins.
        let h = headers(&["1.2.3.4, 198.51.100.7"]);
        assert_eq!(forwarded_client(peer, &h, &proxies), ip("198.51.100.7"));
        // Several header lines read as one list, in order.
        let h = headers(&["1.2.3.4", "198.51.100.8"]);
        assert_eq!(forwarded_client(peer, &h, &proxies), ip("198.51.100.8"));
        // No header, or one that does not parse: the proxy's own address.
        assert_eq!(forwarded_client(peer, &headers(&[]), &proxies), peer);
        let h = headers(&["198.51.100.7, not-an-address"]);
        assert_eq!(forwarded_client(peer, &h, &proxies), peer);
        // Only trusted proxies are believed, IPv4-mapped peers included.
        let h = headers(&["198.51.100.7"]);
        assert_eq!(
            forwarded_client(ip("192.0.2.1"), &h, &proxies),
            ip("192.0.2.1")
        );
        assert_eq!(
            forwarded_client(ip("::ffff:192.0.2.1"), &h, &proxies),
            ip("192.0.2.1")
        );
        assert_eq!(
            forwarded_client(ip("::1"), &h, &proxies),
            ip("198.51.100.7")
        );
        // Only proxies in the header: the proxy's own address.
        let h = headers(&["10.4.4.4"]);
        assert_eq!(forwarded_client(peer, &h, &proxies), peer);
    }
}
