//! Plain HTTP requests to the test daemon's web front, as a browser's form would send
//! them: no redirect followed, no cookie kept (the test passes the cookie it means to).

/// A response: its status, headers and body.
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    /// The `name=value` pair of the cookie `name` this response sets, if any.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookie(name)
            .and_then(|c| c.split(';').next().map(str::to_string))
    }

    /// The whole `Set-Cookie` header for the cookie `name`, with its attributes.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_string)
    }
}

fn send(req: reqwest::RequestBuilder) -> Page {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let r = req.send().await.unwrap();
            Page {
                status: r.status().as_u16(),
                headers: r.headers().clone(),
                body: r.text().await.unwrap(),
            }
        })
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// GET `url`, with `cookie` (`name=value`) if given.
pub fn get(url: &str, cookie: Option<&str>) -> Page {
    let mut req = client().get(url);
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    send(req)
}

/// POST the form `form` to `url`, with `cookie` (`name=value`) if given.
pub fn post(url: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Page {
    let mut req = client().post(url).form(form);
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    send(req)
}

/// The text of `text` between the first `start` and the next `end` after it.
pub fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let at = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not in:\n{text}"))
        + start.len();
    let len = text[at..]
        .find(end)
        .unwrap_or_else(|| panic!("{end:?} not after {start:?} in:\n{text}"));
    &text[at..at + len]
}
