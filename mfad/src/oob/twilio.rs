//! A Twilio-compatible REST client (SMS through Messages, phone calls through Calls), the
//! TwiML the call speaks, and the check of the signature on the provider's callbacks.

use crate::oob::approvals::ApprovalRequest;
use crate::oob::config::{Secret, TwilioConfig};
use crate::oob::http::escape;
use crate::oob::notify::{HttpClient, ProviderClient, ProviderError, read_capped};
use data_encoding::BASE64;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha1::Sha1;
use std::time::Duration;
use subtle::ConstantTimeEq;

const PROVIDER: &str = "the SMS and voice provider";

/// The signature Twilio puts in `X-Twilio-Signature`: base64 of HMAC-SHA1, keyed with the
/// auth token, over the full URL it requested followed by every POST parameter's name and
/// value, sorted by name.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // Sorting by value too keeps a repeated name in a stable order, as the providers do.
    sorted.sort();
    // HMAC takes a key of any length, so this never fails; an empty result never matches.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()) else {
        return String::new();
    };
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    BASE64.encode(&mac.finalize().into_bytes())
}

/// Whether `header` is the right signature, compared in constant time.
pub fn signature_matches(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header: &str,
) -> bool {
    let expected = signature(auth_token, url, params);
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(header.trim().as_bytes()))
}

/// The TwiML the call speaks: the login's context, then one keypress collected and posted to
/// `gather_url`. Silence falls through to the goodbye, and the waiter times out.
pub fn voice_twiml(request: &ApprovalRequest, gather_url: &str) -> String {
    // Spaced out so the voice reads a user name or address a character at a time.
    let spell = |s: &str| -> String {
        s.chars()
            .take(64)
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <Response>\
         <Gather numDigits=\"1\" action=\"{action}\" method=\"POST\" timeout=\"15\">\
         <Say>This is a login request for user {user}, on {host}. \
         Press 1 to approve. Press 9 if you did not start this login, to deny and report it. \
         Press any other key to deny.</Say>\
         </Gather>\
         <Say>No answer was received. The login will be denied. Goodbye.</Say>\
         </Response>",
        action = escape(gather_url),
        user = escape(&spell(&request.user)),
        host = escape(&request.host),
    )
}

/// TwiML that says one thing and hangs up.
pub fn say_twiml(text: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>{}</Say><Hangup/></Response>",
        escape(text)
    )
}

/// The part of a created Message or Call that we keep: its id, for the log.
#[derive(Deserialize)]
struct Created {
    sid: String,
}

/// Twilio's error body; only the numeric code is kept (the message may quote the request).
#[derive(Deserialize)]
struct ErrorBody {
    code: Option<u32>,
}

/// The REST client. Clone it freely; clones share the HTTP pool and their [`MAX_IN_FLIGHT`]
/// slots.
///
/// [`MAX_IN_FLIGHT`]: crate::oob::notify::MAX_IN_FLIGHT
#[derive(Clone)]
pub struct Twilio {
    client: ProviderClient,
    api_base: String,
    account_sid: String,
    auth_token: Secret,
    from: String,
    timeout: Duration,
}

impl std::fmt::Debug for Twilio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Twilio")
            .field("api_base", &self.api_base)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &self.auth_token)
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Twilio {
    /// `cfg` should have passed `validate()`.
    pub fn new(cfg: &TwilioConfig, client: HttpClient) -> Self {
        Twilio {
            client: client.with_own_slots(),
            api_base: cfg.api_base.trim_end_matches('/').to_string(),
            account_sid: cfg.account_sid.clone(),
            auth_token: cfg.auth_token.clone(),
            from: cfg.from.clone(),
            timeout: Duration::from_secs(cfg.timeout),
        }
    }

    /// Sends an SMS; returns the provider's message id. `body` holds a passcode: it is sent,
    /// never logged.
    pub async fn send_sms(&self, to: &str, body: &str) -> Result<String, ProviderError> {
        self.create(
            "Messages.json",
            &[("To", to), ("From", &self.from), ("Body", body)],
        )
        .await
    }

    /// Places a call whose TwiML the provider fetches (POST) from `twiml_url`; returns the
    /// call id.
    pub async fn place_call(&self, to: &str, twiml_url: &str) -> Result<String, ProviderError> {
        self.create(
            "Calls.json",
            &[
                ("To", to),
                ("From", &self.from),
                ("Url", twiml_url),
                ("Method", "POST"),
            ],
        )
        .await
    }

    async fn create(&self, resource: &str, form: &[(&str, &str)]) -> Result<String, ProviderError> {
        let call = if resource.starts_with("Calls") {
            "call"
        } else {
            "sms"
        };
        let request = self
            .client
            .in_slot(PROVIDER, self.timeout, || self.send_create(resource, form));
        crate::metrics::provider_request(PROVIDER, call, request).await
    }

    async fn send_create(
        &self,
        resource: &str,
        form: &[(&str, &str)],
    ) -> Result<String, ProviderError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/{resource}",
            self.api_base, self.account_sid
        );
        let resp = self
            .client
            .post(url)
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .form(form)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| ProviderError::from_reqwest(PROVIDER, &e))?;
        let status = resp.status();
        let body = read_capped(PROVIDER, resp).await;
        if !status.is_success() {
            let code = body
                .ok()
                .and_then(|b| serde_json::from_slice::<ErrorBody>(&b).ok())
                .and_then(|e| e.code);
            return Err(ProviderError::Status {
                provider: PROVIDER,
                status: status.as_u16(),
                code,
            });
        }
        let created: Created = serde_json::from_slice(&body?)
            .map_err(|_| ProviderError::BadResponse { provider: PROVIDER })?;
        Ok(created.sid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(caller: &str) -> Vec<(String, String)> {
        [
            ("Digits", "1234"),
            ("To", "+18005551212"),
            ("From", caller),
            ("Caller", caller),
            ("CallSid", "CA1234567890ABCDE"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    /// The worked example in Twilio's security documentation (auth token `12345`).
    #[test]
    fn twilio_documented_example_signature() {
        assert_eq!(
            signature("12345", URL, &params("+12349013030")),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        // The same example as the PHP helper library's documentation gives it.
        assert_eq!(
            signature("12345", URL, &params("+14158675309")),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }

    #[test]
    fn a_signature_matches_only_its_own_url_params_and_token() {
        let p = params("+12349013030");
        assert!(signature_matches(
            "12345",
            URL,
            &p,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(!signature_matches(
            "12346",
            URL,
            &p,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(!signature_matches(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &p,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        let mut tampered = p.clone();
        tampered[0].1 = "1".into();
        assert!(!signature_matches(
            "12345",
            URL,
            &tampered,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
        assert!(!signature_matches("12345", URL, &p, ""));
    }

    #[test]
    fn twiml_escapes_what_it_speaks() {
        let r = ApprovalRequest {
            user: "a<b".into(),
            host: "h&\"x".into(),
            rhost: "r".into(),
            method: crate::oob::approvals::ApprovalMethod::Call,
            created: 0,
            adding_device: false,
        };
        let x = voice_twiml(&r, "https://m.example.org/twilio/gather/T?a=1&b=2");
        assert!(x.contains("action=\"https://m.example.org/twilio/gather/T?a=1&amp;b=2\""));
        assert!(x.contains("a &lt; b"), "{x}");
        assert!(x.contains("h&amp;&quot;x"), "{x}");
        assert!(!x.contains("a<b"));
    }
}
