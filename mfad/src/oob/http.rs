//! The approval endpoint: the page a push links to, and the callbacks of a phone call.
//!
//! A GET only shows the request (link previews and scanners fetch links); only a POST
//! decides. Callbacks from the voice provider count only with a valid signature. The
//! listener bounds everything a stranger can make it hold: connections, header time, body
//! size and connection lifetime.

use crate::oob::approvals::{ApprovalDecision, ApprovalRequest, ApprovalStore, DecideError};
use crate::oob::config::{ApprovalConfig, OobConfigError, Secret};
use crate::oob::twilio;
use crate::text::{clean, utc};
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
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

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
/// Tokens are 43 characters; anything much longer is not one and is not hashed.
const MAX_TOKEN_LEN: usize = 64;

/// The page's only style is inline, so the policy allows inline style and nothing else: no
/// script, no images, no frames, forms only back to this origin.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// What the daemon does when a phone answers. Called from the endpoint's tasks; must not
/// block for long.
pub trait ApprovalHooks: Send + Sync {
    /// The user pressed "Deny and report" (or 9 on the call): they did not start this
    /// login. The daemon locks the account and logs an alert. Called even when the login
    /// had already stopped waiting.
    fn reported(&self, request: &ApprovalRequest);

    /// Every answer taken through the endpoint, for the decision log.
    fn decided(&self, _request: &ApprovalRequest, _decision: ApprovalDecision) {}
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Config(#[from] OobConfigError),
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

/// Text made safe to place in HTML or XML, in content or in a quoted attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Client-supplied text for the page: cut to a length, control characters shown as escapes
/// and direction overrides dropped (they could make an address read as another), then
/// escaped.
fn shown(s: &str) -> String {
    escape(&crate::oob::notify::visible(s))
}

struct App {
    store: Arc<ApprovalStore>,
    hooks: Arc<dyn ApprovalHooks>,
    twilio_auth_token: Option<Secret>,
    public_base: String,
}

type Shared = State<Arc<App>>;

fn looks_like_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{title}</title><style>{STYLE}</style></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>\n",
        title = escape(title),
    );
    (
        status,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        page,
    )
        .into_response()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:1em;background:#f6f6f6;color:#111}\
main{max-width:28em;margin:auto;background:#fff;padding:1em 1.5em;border-radius:8px}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3em 1em}dt{font-weight:bold}\
dd{margin:0;word-break:break-all}form{margin:.8em 0}\
button{width:100%;font-size:1.1em;padding:.7em;border-radius:6px;border:1px solid #888}\
.approve{background:#1a7f37;color:#fff}.report{background:#b42318;color:#fff}\
input{font-size:1.4em;width:3em;text-align:center;margin:.3em 0 .6em}.note{font-size:.9em;color:#444}";

fn gone(status: StatusCode, why: &str) -> Response {
    html(
        status,
        "Login request closed",
        &format!(
            "<p>{}</p><p>Nothing was approved. If a login is still waiting, start it again.</p>",
            escape(why)
        ),
    )
}

fn not_found() -> Response {
    gone(
        StatusCode::NOT_FOUND,
        "This login request is unknown, has expired, or was already answered.",
    )
}

async fn show(State(app): Shared, Path(token): Path<String>) -> Response {
    if !looks_like_token(&token) {
        return not_found();
    }
    let Some(view) = app.store.peek(&token).await else {
        return not_found();
    };
    let r = &view.request;
    let number = if view.needs_number {
        "<label for=\"number\">Type the number shown at the login prompt:</label><br>\
         <input id=\"number\" name=\"number\" inputmode=\"numeric\" pattern=\"[0-9]{2}\" \
         maxlength=\"2\" autocomplete=\"off\" required><br>"
    } else {
        ""
    };
    // The forms post to the relative URL `{token}`, which is this page's own address even
    // when a reverse proxy serves the endpoint under a path prefix.
    // `looks_like_token` above allowed only URL-safe base64 characters, so it needs no
    // escaping inside the attribute.
    let form = |action: &str, extra: &str, class: &str, label: &str| {
        format!(
            "<form method=\"post\" action=\"{token}\">\
             <input type=\"hidden\" name=\"action\" value=\"{action}\">{extra}\
             <button type=\"submit\" class=\"{class}\">{label}</button></form>"
        )
    };
    let lead = if r.adding_device {
        format!(
            "<p><b>{}</b> is adding this phone to their two-factor devices. Approve only if \
             you are doing that, now.</p>",
            shown(&r.user)
        )
    } else {
        format!(
            "<p>Someone is logging in as <b>{}</b>. Approve only if it is you, now.</p>",
            shown(&r.user)
        )
    };
    let body = format!(
        "{lead}\
         <dl><dt>User</dt><dd>{user}</dd><dt>Host</dt><dd>{host}</dd>\
         <dt>From</dt><dd>{rhost}</dd><dt>Time</dt><dd>{time}</dd></dl>{approve}{deny}{report}\
         <p class=\"note\">Did not start this login? Use <b>Deny and report</b>: the login \
         is refused and your administrator is alerted.</p>",
        user = shown(&r.user),
        host = shown(&r.host),
        rhost = shown(&r.rhost),
        time = escape(&utc(r.created)),
        approve = form("approve", number, "approve", "Approve"),
        deny = form("deny", "", "deny", "Deny"),
        report = form("report", "", "report", "Deny and report"),
    );
    html(StatusCode::OK, "Login request", &body)
}

#[derive(Deserialize)]
struct AnswerForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    number: Option<String>,
}

fn log_answer(request: &ApprovalRequest, decision: ApprovalDecision, via: &str) {
    info!(
        target: "mfad::approval",
        "user={} host={} rhost={} method={} answer={} via={}",
        clean(&request.user),
        clean(&request.host),
        clean(&request.rhost),
        request.method.as_str(),
        decision.as_str(),
        via
    );
}

/// Takes an answer and runs the hooks; the token is spent whatever happens.
async fn take_answer(
    app: &App,
    token: &str,
    wanted: ApprovalDecision,
    typed_number: Option<&str>,
    via: &str,
) -> Result<(ApprovalDecision, bool), DecideError> {
    let answered = app.store.answer(token, wanted, typed_number).await?;
    log_answer(&answered.request, answered.decision, via);
    if answered.decision == ApprovalDecision::Reported {
        warn!(
            target: "mfad::approval",
            "user={} reported a login request they did not start (host={} rhost={})",
            clean(&answered.request.user),
            clean(&answered.request.host),
            clean(&answered.request.rhost)
        );
        app.hooks.reported(&answered.request);
    }
    app.hooks.decided(&answered.request, answered.decision);
    Ok((answered.decision, answered.waiting))
}

async fn decide(
    State(app): Shared,
    Path(token): Path<String>,
    Form(form): Form<AnswerForm>,
) -> Response {
    if !looks_like_token(&token) {
        return not_found();
    }
    let wanted = match form.action.as_str() {
        "approve" => ApprovalDecision::Approved,
        "deny" => ApprovalDecision::Denied,
        "report" => ApprovalDecision::Reported,
        _ => {
            return html(
                StatusCode::BAD_REQUEST,
                "Unknown answer",
                "<p>Use one of the buttons on the login request page.</p>",
            );
        }
    };
    match take_answer(&app, &token, wanted, form.number.as_deref(), "web").await {
        Ok((decision, waiting)) => {
            let late = if waiting {
                ""
            } else {
                "<p>The login had already stopped waiting.</p>"
            };
            let (title, text) = match decision {
                ApprovalDecision::Approved => ("Approved", "The login may go ahead."),
                ApprovalDecision::Denied if wanted == ApprovalDecision::Approved => (
                    "Denied",
                    "The number did not match the one at the login prompt, so the login \
                     was denied. Start the login again to retry.",
                ),
                ApprovalDecision::Reported => (
                    "Denied and reported",
                    "The login was refused and your administrator has been alerted.",
                ),
                ApprovalDecision::Denied | ApprovalDecision::TimedOut => {
                    ("Denied", "The login was refused.")
                }
            };
            html(
                StatusCode::OK,
                title,
                &format!(
                    "<p>{}</p>{late}<p>You can close this page.</p>",
                    escape(text)
                ),
            )
        }
        Err(DecideError::Expired) => gone(StatusCode::GONE, "This login request has expired."),
        Err(DecideError::Abandoned) => gone(
            StatusCode::GONE,
            "The login that made this request is no longer waiting.",
        ),
        Err(DecideError::Unknown) => not_found(),
        Err(DecideError::Unavailable) => gone(
            StatusCode::SERVICE_UNAVAILABLE,
            "Login requests cannot be answered right now. Try again in a moment.",
        ),
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

/// Checks `X-Twilio-Signature` over `public_url` + the request's path and query and the
/// posted parameters. The URL is rebuilt from the configured public URL, not from the
/// request, because behind a reverse proxy the request no longer shows what was signed.
fn signed_by_provider(
    app: &App,
    uri: &Uri,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> bool {
    let Some(auth_token) = &app.twilio_auth_token else {
        return false;
    };
    let Some(header) = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{}{path}", app.public_base);
    twilio::signature_matches(auth_token.expose(), &url, params, header)
}

fn refused() -> Response {
    warn!(target: "mfad::approval", "refused a voice callback without a valid signature");
    (StatusCode::FORBIDDEN, "forbidden\n").into_response()
}

async fn voice(
    State(app): Shared,
    Path(token): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    Form(params): Form<Vec<(String, String)>>,
) -> Response {
    if !signed_by_provider(&app, &uri, &headers, &params) {
        return refused();
    }
    let view = if looks_like_token(&token) {
        app.store.peek(&token).await
    } else {
        None
    };
    match view {
        Some(view) => twiml(twilio::voice_twiml(
            &view.request,
            &format!("{}/twilio/gather/{token}", app.public_base),
        )),
        None => twiml(twilio::say_twiml(
            "This login request has expired or was already answered. Goodbye.",
        )),
    }
}

async fn gather(
    State(app): Shared,
    Path(token): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    Form(params): Form<Vec<(String, String)>>,
) -> Response {
    if !signed_by_provider(&app, &uri, &headers, &params) {
        return refused();
    }
    if !looks_like_token(&token) {
        return twiml(twilio::say_twiml("This login request is unknown. Goodbye."));
    }
    let digits = params
        .iter()
        .find(|(name, _)| name == "Digits")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let wanted = match digits {
        "1" => ApprovalDecision::Approved,
        "9" => ApprovalDecision::Reported,
        _ => ApprovalDecision::Denied,
    };
    let said = match take_answer(&app, &token, wanted, None, "phone").await {
        Ok((ApprovalDecision::Approved, _)) => "Approved. Goodbye.",
        Ok((ApprovalDecision::Reported, _)) => {
            "The login was denied and reported to your administrator. Goodbye."
        }
        Ok(_) => "The login was denied. Goodbye.",
        Err(_) => "This login request has expired or was already answered. Goodbye.",
    };
    twiml(twilio::say_twiml(said))
}

async fn fallback() -> Response {
    html(
        StatusCode::NOT_FOUND,
        "Not found",
        "<p>There is nothing here.</p>",
    )
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The token is in the URL: never hand it to another site.
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    resp
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/a/{token}", get(show).post(decide))
        .route("/twilio/voice/{token}", post(voice))
        .route("/twilio/gather/{token}", post(gather))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

fn load_tls(cert: &FsPath, key: &FsPath) -> Result<TlsAcceptor, EndpointError> {
    let cert_err = |why: String| EndpointError::Certificate {
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
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| EndpointError::Key {
        path: key.to_path_buf(),
        why: e.to_string(),
    })?;
    // Named explicitly so the choice never depends on which crypto features the dependency
    // tree happens to switch on.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EndpointError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| EndpointError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The approval endpoint, bound and ready to serve.
pub struct ApprovalEndpoint {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    local_addr: SocketAddr,
    per_address: usize,
}

/// The address a per-address cap counts: an IPv4 address, or an IPv6 /64 (one subscriber
/// usually holds a whole /64, so counting single IPv6 addresses would cap nothing).
fn client_key(addr: std::net::IpAddr) -> std::net::IpAddr {
    match addr {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                std::net::IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
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

impl ApprovalEndpoint {
    /// Validates `cfg`, loads the certificate and key (if set) and binds `cfg.listen`.
    /// `twilio_auth_token` verifies phone-call callbacks; without it they are all refused.
    pub async fn bind(
        cfg: &ApprovalConfig,
        store: Arc<ApprovalStore>,
        hooks: Arc<dyn ApprovalHooks>,
        twilio_auth_token: Option<Secret>,
    ) -> Result<Self, EndpointError> {
        cfg.validate()?;
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(cert), Some(key)) => Some(load_tls(cert, key)?),
            _ => None,
        };
        let listener =
            TcpListener::bind(cfg.listen)
                .await
                .map_err(|source| EndpointError::Bind {
                    addr: cfg.listen,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| EndpointError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let app = Arc::new(App {
            store,
            hooks,
            twilio_auth_token,
            public_base: cfg.public_base().to_string(),
        });
        Ok(ApprovalEndpoint {
            listener,
            tls,
            router: router(app),
            local_addr,
            per_address: cfg.connections_per_address as usize,
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
        info!(
            "approval endpoint listening on {} ({})",
            self.local_addr,
            if self.tls.is_some() {
                "https"
            } else {
                "plain http, loopback only"
            }
        );
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            warn!("approval endpoint: accept failed: {e}");
                            #[allow(clippy::disallowed_methods)] // a pause after a failed accept
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // One address may not take the whole endpoint: past its cap its new
                    // connections are closed at once, and everyone else is still served.
                    let Some(slot) = AddressSlot::take(&open, client_key(peer.ip()), self.per_address)
                    else {
                        continue;
                    };
                    let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                        // Full: shed the newcomer instead of queueing it.
                        continue;
                    };
                    let tls = self.tls.clone();
                    let router = self.router.clone();
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

/// Binds and serves the approval endpoint until `shutdown` resolves.
pub async fn serve_approvals(
    cfg: &ApprovalConfig,
    store: Arc<ApprovalStore>,
    hooks: Arc<dyn ApprovalHooks>,
    twilio_auth_token: Option<Secret>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EndpointError> {
    ApprovalEndpoint::bind(cfg, store, hooks, twilio_auth_token)
        .await?
        .serve(shutdown)
        .await;
    Ok(())
}
