//! The Duo Auth API v2 client: `/ping` (clock offset), `/check`, `/preauth`, `/auth` and
//! `/auth_status`, each signed (see `sign.rs`) and bounded in time, over one pooled HTTPS
//! client. Failures are sorted the way a login must treat them: [`DuoError::Unavailable`]
//! (Duo cannot be asked: before the challenge, the fail mode decides), [`DuoError::RateLimited`]
//! (Duo asked to wait longer than allowed: a refusal, as pam_duo makes it, not an outage) or
//! [`DuoError::Refused`] (Duo said no).

use super::config::{DuoConfig, load_cafile};
use super::sign::{self, Params};
use crate::clock::Clock;
use crate::oob::config::Secret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Largest answer read from Duo; its answers are small JSON objects.
const MAX_RESPONSE: usize = 256 * 1024;
/// How long (monotonic) a clock learnt from `/ping` is trusted before asking again.
const CLOCK_SYNC_EVERY: Duration = Duration::from_secs(600);
/// Idle pooled connections are closed after this long: below the idle timeouts of common
/// NAT gateways and firewalls (60 s and up), so a connection whose state they dropped is
/// never reused.
pub const POOL_IDLE: Duration = Duration::from_secs(30);
/// TCP keep-alive probes on every connection to Duo after this much silence: they keep NAT
/// state alive and let the kernel find a dead peer.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
/// Requests sent for one call, the first included, while Duo answers 429.
const MAX_TRIES: u32 = 4;

/// Why Duo could not be asked. Never holds a key, a signature or a passcode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Outage {
    #[error("could not connect to Duo (network or TLS failure)")]
    Connect,
    #[error("Duo did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error(
        "Duo refused mfad's credentials or signature (HTTP 401); check ikey, skey and the clock"
    )]
    Unauthorized,
    #[error("Duo had a server error (HTTP {0})")]
    Server(u16),
    #[error("Duo sent an answer that could not be read")]
    BadResponse,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DuoError {
    #[error("{0}")]
    Unavailable(#[from] Outage),
    /// Duo kept answering 429 (or asked to wait longer than `max_retry_wait`). Duo is up and
    /// refusing this traffic: pam_duo denies, and so does mfad (no fail mode).
    #[error("Duo is rate-limiting requests and asked to wait longer than allowed")]
    RateLimited,
    /// Duo understood the request and refused it (a 4xx other than 401 and 429).
    #[error("Duo refused the request: {message}")]
    Refused {
        status: u16,
        code: Option<u64>,
        message: String,
    },
}

/// `/preauth`'s verdict on a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreauthResult {
    /// Second factor required: the devices (and the text prompt) follow.
    Auth,
    /// Let in without a second factor (bypass status, policy).
    Allow,
    /// Refused (locked out, disabled, policy).
    Deny,
    /// Not enrolled, and allowed to enrol: `enroll_portal_url`.
    Enroll,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Preauth {
    pub result: PreauthResult,
    #[serde(default)]
    pub status_msg: String,
    #[serde(default)]
    pub enroll_portal_url: Option<String>,
    #[serde(default)]
    pub devices: Vec<DuoDevice>,
    /// With `text_prompt=1`: Duo's own menu text and what each answer selects.
    #[serde(default)]
    pub prompt: Option<TextPrompt>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DuoDevice {
    /// The device id sent back as `device`.
    pub device: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub number: Option<String>,
    /// `auto`, `push`, `sms`, `phone`, `mobile_otp`...
    #[serde(default)]
    pub capabilities: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TextPrompt {
    pub text: String,
    /// `"1" -> "push1"`, `"default" -> "push1"`...
    #[serde(default)]
    pub factors: BTreeMap<String, String>,
}

/// The answer of `/auth` (sync) or `/auth_status`; an async `/auth` carries only `txid`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthAnswer {
    /// `allow`, `deny` or `waiting`.
    #[serde(default)]
    pub result: Option<String>,
    /// `pushed`, `calling`, `answered`, `sent`, `allow`, `deny`, `fraud`, `locked_out`,
    /// `timeout`, `bypass`...
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub status_msg: Option<String>,
    #[serde(default)]
    pub txid: Option<String>,
}

impl AuthAnswer {
    pub fn is_waiting(&self) -> bool {
        self.result.as_deref() == Some("waiting")
    }
    pub fn is_allow(&self) -> bool {
        self.result.as_deref() == Some("allow")
    }
}

#[derive(Deserialize)]
struct Envelope {
    stat: String,
    #[serde(default)]
    response: Option<serde_json::Value>,
    #[serde(default)]
    code: Option<u64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    message_detail: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Time {
    time: i64,
}

/// Builds the HTTPS client for Duo: rustls with the built-in roots, the system's CA bundle
/// and `cafile`; the configured proxy or none (never the environment's); `https_timeout` for
/// connecting (TCP and TLS) and for each request as a whole; no redirects.
pub fn http_client(cfg: &DuoConfig) -> Result<reqwest::Client, DuoClientError> {
    let mut builder = crate::http::client_builder(
        cfg.https_timeout(),
        cfg.status_timeout().max(cfg.https_timeout()),
        concat!("mfad/", env!("CARGO_PKG_VERSION"), " (Duo Auth API v2)"),
    )
    .pool_idle_timeout(POOL_IDLE)
    .tcp_keepalive(TCP_KEEPALIVE)
    .tcp_nodelay(true);
    for bundle in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ] {
        if let Ok(bytes) = std::fs::read(bundle)
            && let Ok(certs) = reqwest::Certificate::from_pem_bundle(&bytes)
        {
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
            break;
        }
    }
    if let Some(path) = &cfg.cafile {
        for c in load_cafile(path)? {
            builder = builder.add_root_certificate(c);
        }
    }
    builder = match &cfg.http_proxy {
        Some(p) => builder
            .proxy(reqwest::Proxy::all(p.as_str()).map_err(|_| DuoClientError::Proxy(p.clone()))?),
        None => builder.no_proxy(),
    };
    builder.build().map_err(DuoClientError::Build)
}

/// Why Duo's HTTPS client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DuoClientError {
    #[error(transparent)]
    CaFile(#[from] super::config::DuoConfigError),
    #[error("duo: bad http_proxy {0:?}")]
    Proxy(String),
    #[error("duo: the HTTPS client could not be set up: {0}")]
    Build(reqwest::Error),
}

/// A signed, bounded conversation with one Duo API host.
pub struct DuoClient {
    /// Replaced by a new client (a new pool) when a pooled connection turned out dead.
    http: Mutex<reqwest::Client>,
    /// Builds that new client; `None` when it cannot be built (then the old one is kept).
    rebuild: Arc<dyn Fn() -> Option<reqwest::Client> + Send + Sync>,
    /// `host` as configured: where to connect (`name` or `name:port`).
    host: String,
    /// What is signed: the host name alone, lower-cased, as Duo's clients sign it.
    signed_host: String,
    ikey: String,
    skey: Secret,
    https_timeout: Duration,
    status_timeout: Duration,
    max_retry_wait: Duration,
    clock: Arc<dyn Clock>,
    /// Duo's time at the last `/ping` and when (monotonic) it was learnt. Signed dates are
    /// that time plus the monotonic time since, so a step of the host's wall clock changes
    /// nothing; `None` before the first `/ping`.
    synced: Mutex<Option<(i64, Instant)>>,
    /// When (monotonic) the last exchange ended well: a connection to Duo may be pooled.
    last_ok: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for DuoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DuoClient")
            .field("host", &self.host)
            .field("ikey", &self.ikey)
            .field("skey", &self.skey)
            .field("https_timeout", &self.https_timeout)
            .finish_non_exhaustive()
    }
}

impl DuoClient {
    /// `cfg` should have passed `validate()`; `http` is shared by every login.
    pub fn new(cfg: &DuoConfig, http: reqwest::Client, clock: Arc<dyn Clock>) -> DuoClient {
        let host = cfg.host.clone().unwrap_or_default();
        let own = cfg.clone();
        DuoClient {
            http: Mutex::new(http),
            rebuild: Arc::new(move || http_client(&own).ok()),
            signed_host: signed_host(&host),
            host,
            ikey: cfg.ikey.clone().unwrap_or_default(),
            skey: cfg.skey.clone().unwrap_or_default(),
            https_timeout: cfg.https_timeout(),
            status_timeout: cfg.status_timeout(),
            max_retry_wait: cfg.max_retry_wait(),
            clock,
            synced: Mutex::new(None),
            last_ok: Mutex::new(None),
        }
    }

    /// How long a push or call is waited for.
    pub fn status_limit(&self) -> Duration {
        self.status_timeout
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Duo's time now, as far as mfad knows: the last `/ping`'s answer plus the monotonic
    /// time since; our wall clock before the first `/ping`.
    pub fn duo_now(&self) -> i64 {
        match self.synced.lock().ok().and_then(|s| *s) {
            Some((duo, at)) => duo.saturating_add(at.elapsed().as_secs() as i64),
            None => self.clock.now(),
        }
    }

    /// Duo's clock minus our wall clock, as last learnt (0 before the first `/ping`).
    pub fn clock_offset(&self) -> i64 {
        self.duo_now() - self.clock.now()
    }

    /// `/ping` (unsigned): Duo's time, from which the offset used in signed dates follows.
    pub async fn ping(&self) -> Result<i64, DuoError> {
        let t: Time = self
            .call(
                "GET",
                "/auth/v2/ping",
                Vec::new(),
                false,
                self.https_timeout,
            )
            .await?;
        if let Ok(mut s) = self.synced.lock() {
            *s = Some((t.time, Instant::now()));
        }
        Ok(t.time)
    }

    /// Pings when Duo's time is unknown or was learnt more than 10 minutes ago (monotonic),
    /// so a skewed clock never breaks signatures.
    pub async fn sync_clock(&self) -> Result<(), DuoError> {
        let fresh = self
            .synced
            .lock()
            .ok()
            .and_then(|s| *s)
            .is_some_and(|(_, at)| at.elapsed() <= CLOCK_SYNC_EVERY);
        if !fresh {
            self.ping().await?;
        }
        Ok(())
    }

    /// `/check`: the keys and the signature are accepted.
    pub async fn check(&self) -> Result<i64, DuoError> {
        let t: Time = self
            .call(
                "GET",
                "/auth/v2/check",
                Vec::new(),
                true,
                self.https_timeout,
            )
            .await?;
        Ok(t.time)
    }

    /// `/preauth` for `username`, asking for Duo's text prompt.
    pub async fn preauth(
        &self,
        username: &str,
        ipaddr: Option<&str>,
        hostname: &str,
    ) -> Result<Preauth, DuoError> {
        let mut params = vec![
            ("username".to_string(), username.to_string()),
            ("text_prompt".to_string(), "1".to_string()),
        ];
        if let Some(ip) = ipaddr {
            params.push(("ipaddr".into(), ip.into()));
        }
        if !hostname.is_empty() {
            params.push(("hostname".into(), hostname.into()));
        }
        self.call("POST", "/auth/v2/preauth", params, true, self.https_timeout)
            .await
    }

    /// `/auth` with the parameters of one factor (see `flow.rs`). Async requests answer with a
    /// `txid` at once; sync ones (passcode, SMS) with the result.
    pub async fn auth(&self, params: Params) -> Result<AuthAnswer, DuoError> {
        self.call("POST", "/auth/v2/auth", params, true, self.https_timeout)
            .await
    }

    /// `/auth_status`: long-polls for the transaction's next status, so it may take up to the
    /// status timeout (connecting is still bounded by `https_timeout`).
    pub async fn auth_status(&self, txid: &str) -> Result<AuthAnswer, DuoError> {
        let params = vec![("txid".to_string(), txid.to_string())];
        self.call(
            "GET",
            "/auth/v2/auth_status",
            params,
            true,
            self.status_timeout,
        )
        .await
    }

    /// One API call: signs, sends, waits out 429s up to `max_retry_wait`, and sorts failures.
    /// A signed call refused with 401 re-pings once (the clocks may have stepped apart) and is
    /// sent again; an idempotent call (every GET, and `/preauth`) that fails in transport
    /// while a pooled connection may have been used is sent once more on a new connection.
    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        params: Params,
        signed: bool,
        limit: Duration,
    ) -> Result<T, DuoError> {
        let name = path.trim_start_matches("/auth/v2/");
        crate::metrics::provider_request(
            "duo",
            name,
            self.call_with_retries(method, path, params, signed, limit),
        )
        .await
    }

    async fn call_with_retries<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        params: Params,
        signed: bool,
        limit: Duration,
    ) -> Result<T, DuoError> {
        let idempotent = method == "GET" || path == "/auth/v2/preauth";
        let mut backoff = Duration::from_secs(1);
        let mut rate_limited = 0;
        let mut repinged = false;
        let mut renewed = false;
        loop {
            let may_be_pooled = self.may_be_pooled();
            let (status, retry_after, bytes) = match self
                .exchange(method, path, &params, signed, limit)
                .await
            {
                Ok(r) => r,
                Err(o) if idempotent && !renewed && may_be_pooled && o != Outage::BadResponse => {
                    // The pooled connection may be dead (a NAT or firewall dropped it
                    // silently): a new pool, so a new connection, and one more try.
                    renewed = true;
                    self.renew_pool();
                    continue;
                }
                Err(o) => return Err(o.into()),
            };
            self.mark_ok();
            let Some(bytes) = bytes else {
                return Err(Outage::BadResponse.into());
            };
            match status {
                200..=299 => return parse(&bytes, status),
                401 if signed && !repinged => {
                    // Duo's clock and ours may have moved apart since the last /ping (NTP
                    // stepped one of them): learn the offset again, then send once more.
                    repinged = true;
                    Box::pin(self.ping()).await?;
                }
                401 => return Err(Outage::Unauthorized.into()),
                429 => {
                    rate_limited += 1;
                    let wait = retry_after
                        .as_deref()
                        .and_then(|v| self.retry_after(v))
                        .unwrap_or(backoff);
                    if rate_limited >= MAX_TRIES || wait > self.max_retry_wait {
                        return Err(DuoError::RateLimited);
                    }
                    #[allow(clippy::disallowed_methods)] // Duo's retry backoff: real time, bounded
                    tokio::time::sleep(wait).await;
                    backoff = backoff.saturating_mul(2);
                }
                500..=599 => return Err(Outage::Server(status).into()),
                400..=499 => {
                    let env: Option<Envelope> = serde_json::from_slice(&bytes).ok();
                    return Err(DuoError::Refused {
                        status,
                        code: env.as_ref().and_then(|e| e.code),
                        message: env
                            .and_then(|e| e.message)
                            .map(|m| super::clean_text(&m))
                            .unwrap_or_else(|| format!("HTTP {status}")),
                    });
                }
                _ => return Err(Outage::BadResponse.into()),
            }
        }
    }

    /// One request and its answer, bounded by `limit` as a whole: (status, the retry-after
    /// header, the body or `None` when it is too large).
    async fn exchange(
        &self,
        method: &str,
        path: &str,
        params: &Params,
        signed: bool,
        limit: Duration,
    ) -> Result<(u16, Option<String>, Option<Vec<u8>>), Outage> {
        let body = sign::canon_params(params);
        let url = if method == "GET" && !body.is_empty() {
            format!("https://{}{path}?{body}", self.host)
        } else {
            format!("https://{}{path}", self.host)
        };
        let http = match self.http.lock() {
            Ok(h) => h.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut req = if method == "GET" {
            http.get(&url)
        } else {
            http.post(&url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body)
        };
        if signed {
            let date = crate::calendar::rfc2822(self.duo_now());
            let canon = sign::canonical(&date, method, &self.signed_host, path, params);
            req = req
                .header("Date", &date)
                .header("X-Duo-Date", &date)
                .header(
                    "Authorization",
                    sign::authorization(&self.ikey, self.skey.expose(), &canon),
                );
        }
        // The whole exchange, body included, is bounded; reqwest's own timeout is the
        // same bound, this one also covers reading the body.
        let exchange = async {
            let resp = req.timeout(limit).send().await?;
            let status = resp.status().as_u16();
            // Duo's clients honour both headers (duo_unix reads either).
            let retry_after = ["Retry-After", "X-Retry-After"].iter().find_map(|h| {
                resp.headers()
                    .get(*h)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            });
            let body = crate::http::read_capped(resp, MAX_RESPONSE).await?;
            Ok::<_, reqwest::Error>((status, retry_after, body))
        };
        match tokio::time::timeout(limit, exchange).await {
            Err(_) => Err(Outage::Timeout(limit)),
            Ok(Err(e)) => Err(classify(&e, limit)),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Whether a connection from an earlier exchange may still sit in the pool.
    fn may_be_pooled(&self) -> bool {
        self.last_ok
            .lock()
            .ok()
            .and_then(|t| *t)
            .is_some_and(|at| at.elapsed() < POOL_IDLE)
    }

    fn mark_ok(&self) {
        if let Ok(mut t) = self.last_ok.lock() {
            *t = Some(Instant::now());
        }
    }

    /// Drops the pool (its connections close once no request uses them) for a new one.
    fn renew_pool(&self) {
        if let Some(fresh) = (self.rebuild)()
            && let Ok(mut http) = self.http.lock()
        {
            *http = fresh;
        }
        if let Ok(mut t) = self.last_ok.lock() {
            *t = None;
        }
    }

    /// `Retry-After` as seconds or as an HTTP date.
    fn retry_after(&self, value: &str) -> Option<Duration> {
        if let Ok(secs) = value.trim().parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        let at = crate::calendar::parse_http_date(value)?;
        Some(crate::calendar::until(at, self.duo_now()))
    }
}

/// The host as Duo's clients sign it: the name without `:port`, lower-cased (duo_unix
/// splits `host:port` and signs the name; Duo checks against its own host name).
pub fn signed_host(host: &str) -> String {
    host.split(':').next().unwrap_or(host).to_ascii_lowercase()
}

/// Sorts a transport error without formatting it (its text may hold the URL).
fn classify(e: &reqwest::Error, limit: Duration) -> Outage {
    if e.is_timeout() {
        Outage::Timeout(limit)
    } else if e.is_connect() {
        Outage::Connect
    } else if e.is_decode() || e.is_body() {
        Outage::BadResponse
    } else {
        Outage::Connect
    }
}

/// A 2xx answer: `stat: OK` with a readable `response`, or Duo's refusal. Text that is not
/// JSON, or OK without a readable `response`, could not be read (an outage). Any other
/// `stat`, and a FAIL without a `code`, is kept as a refusal: duo_unix counts those as
/// server errors (its fail mode), but refusing is the safer side of an answer Duo did send.
fn parse<T: DeserializeOwned>(bytes: &[u8], status: u16) -> Result<T, DuoError> {
    let env: Envelope = serde_json::from_slice(bytes).map_err(|_| Outage::BadResponse)?;
    if env.stat.eq_ignore_ascii_case("OK") {
        let response = env.response.ok_or(Outage::BadResponse)?;
        return serde_json::from_value(response).map_err(|_| Outage::BadResponse.into());
    }
    let mut message = env.message.unwrap_or_else(|| "no reason given".into());
    if let Some(detail) = env.message_detail {
        message = format!("{message}: {detail}");
    }
    Err(DuoError::Refused {
        status,
        code: env.code,
        message: super::clean_text(&message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_host_is_the_bare_lower_cased_name() {
        assert_eq!(
            signed_host("API-abc.DuoSecurity.com"),
            "api-abc.duosecurity.com"
        );
        assert_eq!(
            signed_host("api-abc.duosecurity.com:8443"),
            "api-abc.duosecurity.com"
        );
        assert_eq!(signed_host("127.0.0.1:40000"), "127.0.0.1");
    }

    #[test]
    fn an_unknown_stat_or_a_fail_without_code_is_a_refusal() {
        let odd: Result<Time, _> = parse(br#"{"stat":"MAYBE","response":{"time":5}}"#, 200);
        assert!(
            matches!(odd, Err(DuoError::Refused { code: None, .. })),
            "{odd:?}"
        );
        let codeless: Result<Time, _> = parse(br#"{"stat":"FAIL","message":"no"}"#, 200);
        assert!(
            matches!(codeless, Err(DuoError::Refused { code: None, .. })),
            "{codeless:?}"
        );
    }

    #[test]
    fn envelopes_sort_ok_fail_and_garbage() {
        let ok: Result<Time, _> = parse(br#"{"stat":"OK","response":{"time":5}}"#, 200);
        assert_eq!(ok.unwrap().time, 5);
        let fail: Result<Time, _> = parse(
            br#"{"stat":"FAIL","code":40002,"message":"Invalid request parameters","message_detail":"username"}"#,
            400,
        );
        assert_eq!(
            fail.unwrap_err(),
            DuoError::Refused {
                status: 400,
                code: Some(40002),
                message: "Invalid request parameters: username".into()
            }
        );
        let bad: Result<Time, _> = parse(b"{not json", 200);
        assert_eq!(bad.unwrap_err(), DuoError::Unavailable(Outage::BadResponse));
        let shapeless: Result<Time, _> = parse(br#"{"stat":"OK","response":{"t":1}}"#, 200);
        assert_eq!(
            shapeless.unwrap_err(),
            DuoError::Unavailable(Outage::BadResponse)
        );
    }
}
