//! The approval page as a person meets it: Debian's Chromium, headless, driven through
//! chromedriver's W3C WebDriver API, opens the link of the push that ntfy was asked to send,
//! shows the login's context and takes the tap that lets the waiting ssh login in (or denies
//! and reports it). Screenshots are kept under `target/screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::fake_phone::{
    ACCOUNT_SID, AUTH_TOKEN, Answer, FROM, FakePhone, PUSH_TOKEN, approval_link, free_port,
};
use mfa_e2e::mfad::APPROVAL_PORT;
use mfa_e2e::paths::workspace_root;
use mfa_e2e::{LoginOutcome, TestEnv, clock};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Long enough for a browser on a busy two-core machine, short enough to fail fast.
const TOKEN_TTL: u64 = 30;

/// A world whose pushes go to the fake ntfy, with a push device added (the fake phone
/// approved the test push); from then on the phone only records, and Chromium answers.
fn world(phone: &FakePhone) -> TestEnv {
    let port = APPROVAL_PORT;
    let toml = format!(
        "[approval]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         token_ttl = {TOKEN_TTL}\n\
         [push]\nurl = \"{ntfy}\"\ntoken = \"{PUSH_TOKEN}\"\ntimeout = 3\n\
         [twilio]\napi_base = \"{twilio}\"\naccount_sid = \"{ACCOUNT_SID}\"\n\
         auth_token = \"{AUTH_TOKEN}\"\nfrom = \"{FROM}\"\ntimeout = 3\n",
        ntfy = phone.ntfy_url(),
        twilio = phone.twilio_url(),
    );
    let env = TestEnv::builder()
        .module_timeout(60)
        .mfad_toml(&toml)
        .start()
        .unwrap();
    let out = env
        .cli
        .as_user(
            env.user().unwrap(),
            &["add", "push", "--name", "Pixel 8"],
            // Enter once subscribed to the generated topic, Enter at the test push.
            "\n\n",
        )
        .unwrap();
    assert_eq!(out.status, Some(0), "{}", out.describe());
    phone.on_push(Answer::Ignore);
    env
}

/// Chromium under chromedriver, with a fresh profile; both stop on drop.
struct Browser {
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

    fn start(dir: &Path) -> Browser {
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

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One WebDriver command; its `value`, or the error it reported.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
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

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).unwrap()
    }

    fn open(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    fn title(&self) -> String {
        self.session_call("GET", "/title", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits (at most 10 s) for the page titled `want`, as after a form's POST; returns the
    /// last title seen.
    fn wait_title(&self, want: &str) -> String {
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
    fn find(&self, selector: &str) -> String {
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
    fn text(&self, selector: &str) -> String {
        let el = self.find(selector);
        self.session_call("GET", &format!("/element/{el}/text"), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn click(&self, selector: &str) {
        let el = self.find(selector);
        self.session_call("POST", &format!("/element/{el}/click"), Some(json!({})));
    }

    /// Saves what the browser shows as a PNG; returns its path.
    fn screenshot(&self, name: &str) -> PathBuf {
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

/// Starts an ssh login that picks the push (option 1) while the test plays the phone's
/// owner in Chromium with `act`; returns the login once ssh ends.
fn login_while(env: &TestEnv, command: &str, act: impl FnOnce()) -> LoginOutcome {
    std::thread::scope(|s| {
        let login = s.spawn(|| env.login(&["1", ""], command).unwrap());
        act();
        let login = login.join().unwrap();
        println!("{}", login.describe());
        login
    })
}

/// Opens the login's push in Chromium and checks the page names the login.
fn open_the_push(browser: &Browser, phone: &FakePhone, env: &TestEnv, shot: &str) {
    // The test push of `mfa add push` was the first; this login's is the second.
    let note = phone
        .wait_notification(2, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no push for the login:\n{}", env.diagnostics()));
    let link = approval_link(&note).unwrap();
    browser.open(&link);
    assert_eq!(browser.title(), "Login request");
    let text = browser.text("main");
    println!("the page says:\n{text}");
    let user = env.username();
    for part in [
        format!("Someone is logging in as {user}."),
        // The context, one term and its value per line as the grid lays them out.
        format!("User\n{user}\n"),
        "Host\nmfa-e2e\n".to_string(),
        "From\n127.0.0.1\n".to_string(),
        "Time\n".to_string(),
        "Approve".to_string(),
        "Deny and report".to_string(),
    ] {
        assert!(text.contains(&part), "the page lacks {part:?}:\n{text}");
    }
    browser.screenshot(shot);
}

#[test]
fn approving_in_chromium_lets_the_waiting_ssh_login_in() {
    let phone = FakePhone::start().unwrap();
    let env = world(&phone);
    let browser = Browser::start(&env.dir);
    let login = login_while(&env, "echo approved in chromium", || {
        open_the_push(&browser, &phone, &env, "approval-page.png");
        browser.click("button.approve");
        assert_eq!(browser.wait_title("Approved"), "Approved");
        assert!(browser.text("main").contains("The login may go ahead."));
        browser.screenshot("approval-page-approved.png");
    });
    assert!(
        login.logged_in(),
        "{}\n{}",
        login.describe(),
        env.diagnostics()
    );
    assert_eq!(login.stdout.trim(), "approved in chromium");
    // The fake phone answered only the test push of `mfa add push`: Chromium let this login in.
    assert_eq!(phone.steps().len(), 2, "{:?}", phone.steps());
}

#[test]
fn deny_and_report_in_chromium_refuses_the_login_and_locks_the_account() {
    let phone = FakePhone::start().unwrap();
    let env = world(&phone);
    let browser = Browser::start(&env.dir);
    let login = login_while(&env, "echo should not run", || {
        open_the_push(&browser, &phone, &env, "approval-page-before-report.png");
        browser.click("button.report");
        assert_eq!(
            browser.wait_title("Denied and reported"),
            "Denied and reported"
        );
        browser.screenshot("approval-page-reported.png");
    });
    assert!(login.refused(), "{}", login.describe());
    assert!(login.stdout.is_empty());
    let status = env.admin("status").unwrap();
    assert!(
        status.stdout.contains("Locked:       yes"),
        "{}",
        status.describe()
    );
}
