//! Push notifications: a login request sent to the user's phone through ntfy or a generic
//! JSON webhook, carrying the context and a link to the approval page. Also the shared HTTP
//! client and the provider error every outgoing call reports.
//!
//! The webhook receives one POST per login request, `Content-Type: application/json`, with
//! `Authorization: Bearer <push.token>` when a token is configured:
//!
//! ```json
//! {
//!   "event": "mfa.login_request",
//!   "target": "the device's push id as enrolled",
//!   "user": "abc123",
//!   "host": "login1.example.org",
//!   "rhost": "192.0.2.10",
//!   "time": "2026-01-31 12:00 UTC",
//!   "approve_url": "https://mfa.example.org/a/TOKEN",
//!   "number_required": false
//! }
//! ```
//!
//! `approve_url` opens the approval page (a GET decides nothing). Any 2xx answer counts as
//! delivered; its body is ignored. `number_required` says the page will ask for the number
//! shown at the login prompt; the number itself is never sent through the push channel,
//! which is what makes verified push worth having.

use crate::oob::config::{NotifierKind, PushConfig, Secret};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Time allowed to open a connection, within each call's total timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest response body read from a provider; answers are small JSON objects.
const MAX_RESPONSE: usize = 64 * 1024;

/// Why a provider call failed. `Display` is one sentence fit to show a user or write to a
/// log: it names the provider and the kind of failure, never a URL, a token or a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider} did not answer in time")]
    Timeout { provider: &'static str },
    #[error("{provider} could not be reached")]
    Connect { provider: &'static str },
    /// The provider answered with a non-success status; `code` is the provider's own error
    /// number when it gave one (Twilio's `code`, such as 21211 for a bad number).
    #[error("{provider} refused the request (HTTP {status}{})", code.map(|c| format!(", error {c}")).unwrap_or_default())]
    Status {
        provider: &'static str,
        status: u16,
        code: Option<u32>,
    },
    #[error("{provider} sent an answer that could not be read")]
    BadResponse { provider: &'static str },
    #[error("the request to {provider} failed")]
    Request { provider: &'static str },
    #[error("the push target is not a valid ntfy topic")]
    BadTarget,
    #[error("the HTTP client could not be set up")]
    Client,
}

impl ProviderError {
    /// Transport errors, sorted without ever formatting the `reqwest::Error`, whose text may
    /// hold the URL (and so a webhook's secret path).
    pub(crate) fn from_reqwest(provider: &'static str, e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            ProviderError::Timeout { provider }
        } else if e.is_connect() {
            ProviderError::Connect { provider }
        } else if e.is_decode() || e.is_body() {
            ProviderError::BadResponse { provider }
        } else {
            ProviderError::Request { provider }
        }
    }
}

/// Requests to one out-of-band provider in flight at once. The client speaks HTTP/1.1, a
/// connection per request in flight: without a bound, a thousand logins asking for a push at
/// once would open a thousand connections to one provider (and hold a socket and about
/// 15 KB each). Past it, a request waits for a slot within its own timeout. Each provider has
/// slots of its own: a push server that hangs cannot hold up the texts.
pub const MAX_IN_FLIGHT: usize = crate::http::IDLE_PER_HOST;

/// The one HTTP client for every provider: pooled connections, a connect timeout, no
/// redirects (a redirect could carry a credential to another host). Clone it freely; clones
/// share the pool. A provider sends through [`HttpClient::with_own_slots`].
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
}

impl HttpClient {
    /// A provider's client: the same pool, with [`MAX_IN_FLIGHT`] slots of its own.
    pub(crate) fn with_own_slots(&self) -> ProviderClient {
        ProviderClient {
            client: self.client.clone(),
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }
}

/// One provider's way out: the shared pool, at most [`MAX_IN_FLIGHT`] requests at once.
/// Clones share the slots.
#[derive(Clone)]
pub(crate) struct ProviderClient {
    client: reqwest::Client,
    slots: Arc<Semaphore>,
}

impl ProviderClient {
    /// Runs `call` (one request and the reading of its answer) in a slot, all of it within
    /// `limit`: a provider that is slow to answer cannot make logins wait longer than its
    /// configured timeout, nor hold more than [`MAX_IN_FLIGHT`] connections.
    ///
    /// The request's state (a few KB) is made and boxed only once it has a slot: a burst of
    /// waiting requests holds little, and a login that may send one does not carry it.
    pub(crate) async fn in_slot<T, F>(
        &self,
        provider: &'static str,
        limit: Duration,
        call: impl FnOnce() -> F,
    ) -> Result<T, ProviderError>
    where
        F: Future<Output = Result<T, ProviderError>>,
    {
        let bounded = async {
            let _slot = self
                .slots
                .acquire()
                .await
                .map_err(|_| ProviderError::Client)?;
            Box::pin(call()).await
        };
        tokio::time::timeout(limit, bounded)
            .await
            .unwrap_or(Err(ProviderError::Timeout { provider }))
    }

    pub(crate) fn post(&self, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
        self.client.post(url)
    }
}

/// The shared client (see [`HttpClient`]).
pub fn http_client() -> Result<HttpClient, ProviderError> {
    // The total timeout is a backstop only: every request sets its configured timeout.
    let client = crate::http::client_builder(
        CONNECT_TIMEOUT,
        Duration::from_secs(60),
        concat!("mfad/", env!("CARGO_PKG_VERSION")),
    )
    .build()
    .map_err(|_| ProviderError::Client)?;
    Ok(HttpClient { client })
}

/// Reads at most [`MAX_RESPONSE`] bytes of a response body; a larger one cannot be read.
pub(crate) async fn read_capped(
    provider: &'static str,
    resp: reqwest::Response,
) -> Result<Vec<u8>, ProviderError> {
    crate::http::read_capped(resp, MAX_RESPONSE)
        .await
        .map_err(|e| ProviderError::from_reqwest(provider, &e))?
        .ok_or(ProviderError::BadResponse { provider })
}

/// What a push says. Built by the daemon from the login's context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushMessage {
    pub user: String,
    pub host: String,
    pub rhost: String,
    /// When the login asked, as the user should read it (`2026-01-31 12:00 UTC`).
    pub time_text: String,
    /// The approval page (`{public_url}/a/{token}`).
    pub approve_url: String,
    /// Verified push is on: the page will ask for the number shown at the login prompt.
    pub number_required: bool,
    /// Not a login: the user is adding this phone as a device.
    pub adding_device: bool,
}

/// Client-supplied text (a user name, a remote host) made safe to show a person: cut to a
/// length, control characters shown as escapes, and direction overrides and isolates
/// dropped (U+202E could make one address read as another). The approval page, pushes and
/// webhooks all show it this way.
pub fn visible(s: &str) -> String {
    let kept: String = s
        .chars()
        .filter(|c| {
            !matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    crate::text::clean(&kept).into_owned()
}

/// An ntfy topic as ntfy accepts it: 1 to 64 of letters, digits, `-` and `_`. Checked at
/// enrolment and again before each push, since the topic goes into the request.
pub fn is_ntfy_topic(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Serialize)]
struct NtfyAction<'a> {
    action: &'static str,
    label: &'static str,
    url: &'a str,
    clear: bool,
}

/// ntfy's JSON publish body (POST to the server's base URL, topic inside).
#[derive(Serialize)]
struct NtfyPublish<'a> {
    topic: &'a str,
    title: String,
    message: String,
    priority: u8,
    tags: [&'static str; 1],
    click: &'a str,
    actions: [NtfyAction<'a>; 1],
}

/// The part of ntfy's answer that shows the message was taken.
#[derive(Deserialize)]
struct NtfyReply {
    #[serde(rename = "id")]
    _id: String,
}

#[derive(Serialize)]
struct WebhookBody<'a> {
    event: &'static str,
    target: &'a str,
    user: &'a str,
    host: &'a str,
    rhost: &'a str,
    time: &'a str,
    approve_url: &'a str,
    number_required: bool,
}

/// Sends login requests to the configured notifier.
#[derive(Clone)]
pub struct Notifier {
    kind: NotifierKind,
    url: String,
    token: Option<Secret>,
    timeout: Duration,
    client: ProviderClient,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("kind", &self.kind)
            .field("token", &self.token)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// `cfg` should have passed `validate()`.
    pub fn new(cfg: &PushConfig, client: HttpClient) -> Self {
        Notifier {
            kind: cfg.notifier,
            url: cfg.url.clone(),
            token: cfg.token.clone(),
            timeout: Duration::from_secs(cfg.timeout),
            client: client.with_own_slots(),
        }
    }

    /// The name used in messages: "ntfy" or "the push webhook".
    pub fn provider(&self) -> &'static str {
        match self.kind {
            NotifierKind::Ntfy => "ntfy",
            NotifierKind::Webhook => "the push webhook",
        }
    }

    /// Sends one login request to `target`: the device's ntfy topic, or for a webhook the
    /// push id enrolled for the device (passed through as `target`).
    pub async fn push(&self, target: &str, msg: &PushMessage) -> Result<(), ProviderError> {
        let provider = self.provider();
        let call = self
            .client
            .in_slot(provider, self.timeout, || self.send_push(target, msg));
        crate::metrics::provider_request(provider, "push", call).await
    }

    async fn send_push(&self, target: &str, msg: &PushMessage) -> Result<(), ProviderError> {
        let provider = self.provider();
        let (user, host, rhost) = (visible(&msg.user), visible(&msg.host), visible(&msg.rhost));
        let request = match self.kind {
            NotifierKind::Ntfy => {
                if !is_ntfy_topic(target) {
                    return Err(ProviderError::BadTarget);
                }
                let mut message = if msg.adding_device {
                    format!(
                        "{user} is adding this phone as a two-factor device on {host} at {}. \
                         Open to approve or deny.",
                        msg.time_text
                    )
                } else {
                    format!(
                        "{user} is logging in to {host} from {rhost} at {}. Open to approve or \
                         deny.",
                        msg.time_text
                    )
                };
                if msg.number_required {
                    message.push_str(" You will need the number shown at the login prompt.");
                }
                let body = NtfyPublish {
                    topic: target,
                    title: format!("Login request: {user} on {host}"),
                    message,
                    // 4 = "high": the phone should ring through, a login is waiting.
                    priority: 4,
                    tags: ["closed_lock_with_key"],
                    click: &msg.approve_url,
                    actions: [NtfyAction {
                        action: "view",
                        label: "Review",
                        url: &msg.approve_url,
                        clear: true,
                    }],
                };
                self.client.post(&self.url).json(&body)
            }
            NotifierKind::Webhook => {
                let body = WebhookBody {
                    event: "mfa.login_request",
                    target,
                    user: &user,
                    host: &host,
                    rhost: &rhost,
                    time: &msg.time_text,
                    approve_url: &msg.approve_url,
                    number_required: msg.number_required,
                };
                self.client.post(&self.url).json(&body)
            }
        };
        let request = match &self.token {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        };
        let resp = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| ProviderError::from_reqwest(provider, &e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ProviderError::Status {
                provider,
                status: status.as_u16(),
                code: None,
            });
        }
        let body = read_capped(provider, resp).await?;
        if self.kind == NotifierKind::Ntfy {
            serde_json::from_slice::<NtfyReply>(&body)
                .map_err(|_| ProviderError::BadResponse { provider })?;
        }
        Ok(())
    }
}
