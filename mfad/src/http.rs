//! What every outgoing HTTPS call of mfad shares: a client that never follows a redirect
//! (it could carry a credential to another host) and is bounded in time, and a body reader
//! that stops at a size cap. Duo and the out-of-band providers add their own settings.

use std::time::Duration;

/// A client builder with a connect timeout, a `total` timeout per request (unless a request
/// sets its own), no redirects, and `user_agent`.
pub fn client_builder(
    connect: Duration,
    total: Duration,
    user_agent: &'static str,
) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .timeout(total)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent)
}

/// The body of `resp`, or `None` as soon as it grows past `max` bytes (the rest is not read).
pub async fn read_capped(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}
