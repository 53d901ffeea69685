//! What every outgoing HTTPS call of mfad shares: a client that never follows a redirect
//! (it could carry a credential to another host) and is bounded in time, and a body reader
//! that stops at a size cap. Duo and the out-of-band providers add their own settings.

use std::time::Duration;

/// Idle connections kept per host. The client speaks HTTP/1.1, one request per connection
/// at a time, so a burst of requests (Duo's, which wait for a phone, are not bounded in
/// number) opens as many connections; once answered, all but these are closed instead of
/// holding a socket and about 15 KB of buffers each until the pool's idle timeout. The
/// out-of-band providers never have more in flight, each (`oob::notify::MAX_IN_FLIGHT`).
pub const IDLE_PER_HOST: usize = 32;

/// A client builder with a connect timeout, a `total` timeout per request (unless a request
/// sets its own), no redirects, at most [`IDLE_PER_HOST`] idle connections per host, and
/// `user_agent`.
pub fn client_builder(
    connect: Duration,
    total: Duration,
    user_agent: &'static str,
) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .timeout(total)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(IDLE_PER_HOST)
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
