//! Headless Chromium under chromedriver, driven through the W3C WebDriver API: what the
//! browser tests (the approval page, the enrolment page) open, type, click and photograph.
//! Screenshots are kept under `target/screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::clock;
use crate::fake_phone::free_port;
use crate::paths::workspace_root;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Chromium under chromedriver, with a fresh profile; both stop on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    log: PathBuf,
}

impl Browser {
    /// chromedriver on a port free a moment ago; on another one when that port was taken
    /// meanwhile (chromedriver then exits instead of saying it started).
    fn spawn_driver(log: &Path, stderr: &Path) -> (Child, u16) {
        for _ in 0..5 {
            let port = free_port().unwrap();
            let mut driver = Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(log).unwrap())
                .stderr(std::fs::File::create(stderr).unwrap())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("chromedriver: {e} (scripts/deps.sh installs chromium-driver)")
                });
            let started = clock::wait_for(Duration::from_secs(20), || {
                if std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .contains("started successfully")
                {
                    return Some(true);
                }
                matches!(driver.try_wait(), Ok(Some(_))).then_some(false)
            });
            match started {
                Some(true) => return (driver, port),
                Some(false) => continue,
                None => {
                    let _ = driver.kill();
                    let _ = driver.wait();
                    panic!(
                        "chromedriver did not start within 20 s:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
            }
        }
        panic!("chromedriver found no free port in five tries")
    }

    pub fn start(dir: &Path) -> Browser {
        let log = dir.join("chromedriver.log");
        let (driver, port) = Browser::spawn_driver(&log, &dir.join("chromedriver.stderr"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            rt,
            http,
            log,
        };
        let ready = clock::wait_for(Duration::from_secs(20), || {
            let status = browser.call("GET", "/status", None).ok()?;
            (status["ready"] == true).then_some(())
        });
        assert!(
            ready.is_some(),
            "chromedriver not ready:\n{}",
            browser.logs()
        );
        let profile = dir.join("chromium-profile");
        let created = browser
            .call(
                "POST",
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": "/usr/lib/chromium/chromium",
                        "args": [
                            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                            "--no-first-run", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync",
                            "--window-size=480,820",
                            format!("--user-data-dir={}", profile.display()),
                        ],
                    },
                }}})),
            )
            .unwrap_or_else(|e| panic!("no Chromium session: {e}\n{}", browser.logs()));
        browser.session = created["sessionId"].as_str().unwrap().to_string();
        browser
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One WebDriver command; its `value`, or the error it reported.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self
                .http
                .post(&url)
                .json(&body.unwrap_or_else(|| json!({}))),
        };
        self.rt.block_on(async {
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let v: Value = resp.json().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(v["value"].clone())
            } else {
                Err(format!("{method} {path}: HTTP {status}: {}", v["value"]))
            }
        })
    }

    pub fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).unwrap()
    }

    pub fn open(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn title(&self) -> String {
        self.session_call("GET", "/title", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits (at most 10 s) for the page titled `want`, as after a form's POST; returns the
    /// last title seen.
    pub fn wait_title(&self, want: &str) -> String {
        let mut last = String::new();
        let found = clock::wait_for(Duration::from_secs(10), || {
            last = self.title();
            (last == want).then_some(())
        });
        if found.is_none() {
            println!("still titled {last:?}, not {want:?}");
        }
        last
    }

    /// The element matching the CSS `selector`.
    pub fn find(&self, selector: &str) -> String {
        let el = self.session_call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": selector})),
        );
        el.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_string()
    }

    /// The rendered text of the element matching `selector`.
    pub fn text(&self, selector: &str) -> String {
        let el = self.find(selector);
        self.session_call("GET", &format!("/element/{el}/text"), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits (at most 10 s) until an element matching `selector` is there and shows
    /// `needle` (as after a form's POST that leaves the title as it was; `""`: until it is
    /// there); returns its last text. A page still loading is read again, not a failure.
    pub fn wait_text(&self, selector: &str, needle: &str) -> String {
        let mut last = String::new();
        let read = |browser: &Browser| -> Option<String> {
            let el = browser
                .call(
                    "POST",
                    &format!("/session/{}/element", browser.session),
                    Some(json!({"using": "css selector", "value": selector})),
                )
                .ok()?;
            let id = el.as_object()?.values().next()?.as_str()?.to_string();
            let path = format!("/session/{}/element/{id}/text", browser.session);
            Some(browser.call("GET", &path, None).ok()?.as_str()?.to_string())
        };
        let found = clock::wait_for(Duration::from_secs(10), || {
            let text = read(self)?;
            last = text;
            last.contains(needle).then_some(())
        });
        if found.is_none() {
            println!("{selector} still shows {last:?}, not {needle:?}");
        }
        last
    }

    pub fn click(&self, selector: &str) {
        let el = self.find(selector);
        self.session_call("POST", &format!("/element/{el}/click"), Some(json!({})));
    }

    /// Types `text` into the element matching `selector`.
    pub fn type_into(&self, selector: &str, text: &str) {
        let el = self.find(selector);
        self.session_call(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Lets the browser save downloads, into `dir` (made if missing), without asking.
    pub fn save_downloads_in(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        self.session_call(
            "POST",
            "/goog/cdp/execute",
            Some(json!({
                "cmd": "Browser.setDownloadBehavior",
                "params": {"behavior": "allow", "downloadPath": dir.display().to_string()},
            })),
        );
    }

    /// Plugs in a virtual security key (Chromium's WebAuthn virtual authenticator: CTAP2
    /// over USB, touched at once, no PIN); returns its id.
    pub fn add_security_key(&self) -> String {
        let id = self.session_call(
            "POST",
            "/webauthn/authenticator",
            Some(json!({
                "protocol": "ctap2",
                "transport": "usb",
                "hasResidentKey": false,
                "hasUserVerification": false,
                "isUserConsenting": true,
            })),
        );
        id.as_str().unwrap().to_string()
    }

    /// Unplugs the virtual security key `id`.
    pub fn remove_security_key(&self, id: &str) {
        self.session_call("DELETE", &format!("/webauthn/authenticator/{id}"), None);
    }

    /// The credentials the virtual security key `id` holds (id, private key, rpId, user
    /// handle, signature count), as WebDriver gives them.
    pub fn security_key_credentials(&self, id: &str) -> Vec<Value> {
        let creds = self.session_call(
            "GET",
            &format!("/webauthn/authenticator/{id}/credentials"),
            None,
        );
        creds.as_array().cloned().unwrap_or_default()
    }

    /// Puts `credential` (as [`Browser::security_key_credentials`] gives one) into the
    /// virtual security key `id`.
    pub fn put_security_key_credential(&self, id: &str, credential: Value) {
        self.session_call(
            "POST",
            &format!("/webauthn/authenticator/{id}/credential"),
            Some(credential),
        );
    }

    /// Saves what the browser shows as a PNG; returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.session_call("GET", "/screenshot", None);
        let bytes = data_encoding::BASE64
            .decode(png.as_str().unwrap().as_bytes())
            .unwrap();
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"))
            .join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        println!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.call("DELETE", &path, None);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.driver.id().to_string()])
            .status();
        let exited = clock::wait_for(Duration::from_secs(5), || {
            self.driver.try_wait().ok().flatten()
        });
        if exited.is_none() {
            let _ = self.driver.kill();
            let _ = self.driver.wait();
        }
    }
}
