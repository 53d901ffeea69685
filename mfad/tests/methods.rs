//! The login menu's out-of-band methods (push, phone call, SMS passcodes), conversations
//! in-process against mfad's real approval endpoint, with the fake phone of the end-to-end harness acting as
//! ntfy, Twilio and the phone's owner. The clock is the test's, and so is the bound of a
//! push nobody answers (`token_ttl = 10`): the test moves the clock on instead of waiting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_proto::{AuthContext, Conversation, NewDevice, Operation, Outcome};
use mfa_test_support::TestDaemon;
use mfa_test_support::fake_phone::{
    self, ACCOUNT_SID, AUTH_TOKEN, Answer, FROM, FakePhone, PUSH_TOKEN, Service, Signing,
};
use mfad::factor::totp::{self, HashAlgorithm, TotpParams};
use mfad::oob::{ApprovalConfig, NotifierKind, PushConfig, Secret, TwilioConfig};
use mfad::store::{DeviceKind, NewDeviceRow};
use mfad::{Clock, Config, FakeClock, Store};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

const T0: i64 = 1_800_000_000;
const SECRET: &[u8] = b"an-authenticator-key";
const NUMBER: &str = "+15555551234";
const TOPIC: &str = "root-pixel8";
/// The approval bound of these tests (`approval.token_ttl`).
const BOUND: Duration = Duration::from_secs(10);
const WAITING: &str = "Pushed a login request to your device...\nPress Enter once you have \
                       answered it: ";

fn params() -> TotpParams {
    TotpParams {
        algorithm: HashAlgorithm::Sha1,
        digits: 6,
        period: 30,
    }
}

/// A free port on 127.0.0.1 for the approval endpoint, whose public URL must be known before
/// the daemon is built.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// mfad on a private socket with its approval endpoint (the shared test daemon), pointed at
/// a fake phone. The daemon stops on drop, then the phone.
struct OobDaemon {
    d: TestDaemon,
    clock: FakeClock,
    public_url: String,
    phone: FakePhone,
}

impl OobDaemon {
    fn start() -> OobDaemon {
        Self::start_with(|_| {})
    }

    fn start_with(tune: impl FnOnce(&mut Config)) -> OobDaemon {
        let phone = FakePhone::start().unwrap();
        let port = free_port();
        let public_url = format!("http://127.0.0.1:{port}");
        let d = TestDaemon::start_serving_web(([127, 0, 0, 1], port).into(), |config| {
            config.approval = Some(ApprovalConfig {
                public_url: public_url.clone(),
                token_ttl: BOUND.as_secs(),
                ..ApprovalConfig::default()
            });
            config.push = Some(PushConfig {
                notifier: NotifierKind::Ntfy,
                url: phone.ntfy_url().to_string(),
                token: Some(Secret::new(PUSH_TOKEN)),
                timeout: 2,
                ..PushConfig::default()
            });
            config.twilio = Some(TwilioConfig {
                api_base: phone.twilio_url().to_string(),
                account_sid: ACCOUNT_SID.into(),
                auth_token: Secret::new(AUTH_TOKEN),
                from: FROM.into(),
                timeout: 2,
                ..TwilioConfig::default()
            });
            tune(config);
        });
        OobDaemon {
            clock: d.clock.clone(),
            d,
            public_url,
            phone,
        }
    }

    fn store(&self) -> Store {
        self.d.store()
    }

    fn add(&self, kind: DeviceKind, name: &str, address: &str) {
        self.add_for("root", kind, name, address);
    }

    fn add_for(&self, user: &str, kind: DeviceKind, name: &str, address: &str) {
        let row = NewDeviceRow {
            kind,
            name: name.into(),
            otp: None,
            address: Some(address.into()),
        };
        self.store().add_device(user, &row, T0).unwrap();
    }

    /// root with a push device (the default) and a phone: the seed's three-option menu.
    fn push_and_phone(&self) {
        self.add(DeviceKind::Push, "Pixel 8", TOPIC);
        self.add(DeviceKind::Phone, "Work phone", NUMBER);
    }

    fn add_totp(&self) {
        let step = totp::step_of(self.clock.now(), params());
        self.store()
            .add_totp_device("root", "app", SECRET, params(), step - 5, T0)
            .unwrap();
    }

    /// A TOTP code not used before: each call moves the clock one step on.
    fn fresh_totp(&self) -> String {
        self.clock.advance(30);
        let step = totp::step_of(self.clock.now(), params());
        totp::code_at_step(SECRET, params(), step).to_string()
    }

    fn run(&self, op: Operation, answers: &[Say]) -> (Outcome, Script<'_>) {
        let mut script = Script {
            phone: &self.phone,
            answers: answers.to_vec(),
            next: 0,
            shown: Vec::new(),
        };
        let outcome = self.d.run_with(op, &mut script).unwrap();
        assert_eq!(
            script.next,
            script.answers.len(),
            "answers left over; conversation:\n{}",
            script.text()
        );
        (outcome, script)
    }

    /// A login whose push or call the phone only looks at: once it has, the clock moves on
    /// by the approval bound (every 50 ms until the login ends), so the wait reaches its
    /// bound in the clock's time, not in real time.
    fn login_unanswered(&self, answers: &[Say]) -> (Outcome, Script<'_>) {
        let looked = self.phone.steps().len();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                    if self.phone.steps().len() > looked {
                        self.clock.advance(BOUND.as_secs() as i64);
                    }
                }
            });
            let result = self.login(answers);
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            result
        })
    }

    fn login(&self, answers: &[Say]) -> (Outcome, Script<'_>) {
        self.login_as("root", answers)
    }

    /// A login of `user` (who must exist on the host: root, daemon).
    fn login_as(&self, user: &str, answers: &[Say]) -> (Outcome, Script<'_>) {
        self.run(
            Operation::Authenticate(AuthContext {
                user: user.into(),
                service: "sshd".into(),
                rhost: Some("192.0.2.7".into()),
                tty: Some("ssh".into()),
                ..Default::default()
            }),
            answers,
        )
    }

    fn locked(&self) -> bool {
        self.store()
            .lock_state("root")
            .unwrap()
            .locked_until
            .is_some_and(|until| until > self.clock.now())
    }
}

/// One answer the user gives.
#[derive(Clone)]
enum Say {
    Text(String),
    /// The code in the phone's `n`th SMS (1-based), read when the prompt comes.
    Sms(usize),
}

fn say(s: &str) -> Say {
    Say::Text(s.to_string())
}

/// Answers prompts in order; fails the test on a prompt it has no answer for.
struct Script<'a> {
    phone: &'a FakePhone,
    answers: Vec<Say>,
    next: usize,
    shown: Vec<String>,
}

impl Script<'_> {
    fn text(&self) -> String {
        self.shown.join("\n")
    }
    fn has(&self, needle: &str) -> bool {
        self.shown.iter().any(|s| s.contains(needle))
    }
    fn prompts(&self) -> Vec<&str> {
        self.shown
            .iter()
            .filter_map(|s| s.strip_prefix("prompt: "))
            .collect()
    }
}

impl Conversation for Script<'_> {
    fn info(&mut self, text: &str) {
        self.shown.push(format!("info: {text}"));
    }
    fn error(&mut self, text: &str) {
        self.shown.push(format!("error: {text}"));
    }
    fn prompt(&mut self, text: &str, _echo: bool) -> Option<Zeroizing<String>> {
        self.shown.push(format!("prompt: {text}"));
        let answer = match self.answers.get(self.next) {
            Some(Say::Text(t)) => t.clone(),
            Some(Say::Sms(n)) => self
                .phone
                .wait_sms_code(*n, Duration::from_secs(10))
                .unwrap_or_else(|| panic!("no SMS number {n}; conversation:\n{}", self.text())),
            None => panic!("unexpected prompt {text:?}; conversation:\n{}", self.text()),
        };
        self.next += 1;
        Some(Zeroizing::new(answer))
    }
}

const MENU: &str = "info: Two-factor login for root\n\nEnter a passcode or select one of the \
                    following options:\n\n 1. Push to Pixel 8\n 2. Phone call to XXX-XXX-1234\n \
                    3. SMS passcodes to XXX-XXX-1234\n";

#[test]
fn the_menu_has_the_seed_shape_and_an_approved_push_logs_in() {
    let d = OobDaemon::start();
    d.push_and_phone();
    let pushed = r#"mfa_provider_requests_total{provider="ntfy",call="push",result="ok"}"#;
    let before = mfad::metrics::render().unwrap();
    let (outcome, script) = d.login(&[say("1"), say("")]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    let after = mfad::metrics::render().unwrap();
    assert!(
        mfad::metrics::sample(&after, pushed) - mfad::metrics::sample(&before, pushed) >= 1.0,
        "{after}"
    );
    assert!(after.contains(r#"mfa_provider_seconds_count{provider="ntfy",call="push"}"#));
    assert_eq!(script.shown[0], MENU, "{}", script.text());
    assert_eq!(
        script.prompts(),
        ["Passcode or option (1-3): ", WAITING],
        "{}",
        script.text()
    );
    assert!(script.has("Success. Logging you in..."));

    // What ntfy was sent: the device's topic, the context, and the approval link.
    let requests = d.phone.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0].authorization.as_deref(),
        Some(format!("Bearer {PUSH_TOKEN}").as_str())
    );
    let note = &d.phone.notifications()[0];
    assert_eq!(note["topic"], TOPIC);
    let message = note["message"].as_str().unwrap();
    for part in ["root", "testhost", "192.0.2.7"] {
        assert!(message.contains(part), "{message}");
    }
    let link = fake_phone::approval_link(note).unwrap();
    assert!(link.starts_with(&format!("{}/a/", d.public_url)), "{link}");

    // What the phone did: opened the page (which showed the context), then tapped Approve.
    let steps = d.phone.wait_steps(2, Duration::from_secs(5)).unwrap();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(
        (steps[0].what.as_str(), steps[0].status),
        ("open page", 200)
    );
    for part in [
        "root",
        "testhost",
        "192.0.2.7",
        "Approve",
        "Deny and report",
    ] {
        assert!(steps[0].body.contains(part), "page lacks {part}");
    }
    assert_eq!(
        (steps[1].what.as_str(), steps[1].status),
        ("tap approve", 200)
    );
    assert!(steps[1].body.contains("The login may go ahead."));
}

#[test]
fn without_a_terminal_the_advice_names_what_this_host_offers() {
    let d = OobDaemon::start();
    d.add_totp();
    let (outcome, script) = d.run(
        Operation::Authenticate(AuthContext {
            user: "root".into(),
            service: "sshd".into(),
            rhost: Some("192.0.2.7".into()),
            mode: mfa_proto::AuthMode::Auto,
            can_prompt: false,
            ..Default::default()
        }),
        &[],
    );
    assert_eq!(outcome, Outcome::Deny);
    let text = script.text();
    assert!(text.contains("`mfa add push`"), "{text}");
    assert!(text.contains("`mfa add phone`"), "{text}");
    assert!(text.contains("mfa default N"), "{text}");
}

#[test]
fn a_denied_push_refuses_the_login() {
    let d = OobDaemon::start();
    d.push_and_phone();
    d.phone.on_push(Answer::Deny);
    let (outcome, script) = d.login(&[say("1"), say("")]);
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    assert!(
        script.has("error: Login request denied."),
        "{}",
        script.text()
    );
    assert!(!script.has("Success"));
    assert!(!d.locked());
}

#[test]
fn deny_and_report_refuses_and_locks_the_account() {
    let d = OobDaemon::start();
    d.push_and_phone();
    d.add_totp();
    d.phone.on_push(Answer::Report);
    let (outcome, script) = d.login(&[say("1"), say("")]);
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    assert!(
        script.has("Login request denied and reported. The account is locked"),
        "{}",
        script.text()
    );
    let steps = d.phone.wait_steps(2, Duration::from_secs(5)).unwrap();
    assert_eq!(steps[1].what, "tap report");
    assert!(d.locked(), "a report locks the account");

    // A later login is refused as locked before anything is asked, even with a right code.
    let (outcome, script) = d.login(&[]);
    assert_eq!(outcome, Outcome::Deny);
    assert!(script.has("locked out"), "{}", script.text());
    assert!(script.prompts().is_empty());
}

#[test]
fn pressing_9_on_the_call_reports_and_locks() {
    let d = OobDaemon::start();
    d.push_and_phone();
    d.phone.on_call(Answer::Report);
    let (outcome, script) = d.login(&[say("2"), say("")]);
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    assert!(script.has("denied and reported"), "{}", script.text());
    assert!(d.locked());
}

#[test]
fn an_unanswered_push_is_refused_after_the_bound_and_a_late_tap_decides_nothing() {
    let d = OobDaemon::start();
    d.push_and_phone();
    // The owner opens the page but never taps: a GET decides nothing.
    d.phone.on_push(Answer::Look);
    let (started, real) = (d.clock.now(), Instant::now());
    let (outcome, script) = d.login_unanswered(&[say("1"), say("")]);
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    assert!(
        script.has("No answer to the login request in time; login refused."),
        "{}",
        script.text()
    );
    // Refused once the bound had passed on the clock, and without waiting for it.
    let waited = d.clock.now() - started;
    assert!(waited >= BOUND.as_secs() as i64, "waited {waited} s");
    assert!(real.elapsed() < BOUND, "{:?}", real.elapsed());
    let steps = d.phone.steps();
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(
        (steps[0].what.as_str(), steps[0].status),
        ("open page", 200)
    );
    assert!(steps[0].body.contains("192.0.2.7"));

    // Tapping Approve now finds the request withdrawn.
    let link = fake_phone::approval_link(&d.phone.notifications()[0]).unwrap();
    let late = late_tap(&link, "approve");
    assert_eq!(late.0, 404, "{}", late.1);
    assert!(late.1.contains("Nothing was approved"), "{}", late.1);
}

#[test]
fn a_failing_notifier_says_so_returns_to_the_menu_and_a_passcode_still_works() {
    let d = OobDaemon::start();
    d.push_and_phone();
    d.add_totp();
    let failed = r#"mfa_provider_requests_total{provider="ntfy",call="push",result="error"}"#;
    let before = mfad::metrics::sample(&mfad::metrics::render().unwrap(), failed);
    for (service, says) in [
        (
            Service::Fails(500),
            "Could not send the push: ntfy refused the request (HTTP 500). Choose another \
             option or enter a passcode.",
        ),
        (
            Service::Hangs,
            "Could not send the push: ntfy did not answer in time. Choose another option or \
             enter a passcode.",
        ),
        (
            Service::Garbage,
            "Could not send the push: ntfy sent an answer that could not be read. Choose \
             another option or enter a passcode.",
        ),
    ] {
        d.phone.ntfy_service(service);
        let code = d.fresh_totp();
        let started = Instant::now();
        let (outcome, script) = d.login(&[say("1"), say(&code)]);
        assert_eq!(outcome, Outcome::Allow, "{service:?}: {}", script.text());
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{service:?} took {:?}",
            started.elapsed()
        );
        assert!(
            script.has(&format!("error: {says}")),
            "{service:?}: {}",
            script.text()
        );
        // The menu's prompt again, not a waiting prompt.
        assert_eq!(
            script.prompts(),
            ["Passcode or option (1-3): ", "Passcode or option (1-3): "],
            "{service:?}: {}",
            script.text()
        );
        assert!(!script.text().contains(PUSH_TOKEN));
    }
    // Three pushes went out; the phone never saw one it could open.
    assert_eq!(d.phone.notifications().len(), 3);
    // The metrics count the three failed requests.
    let after = mfad::metrics::sample(&mfad::metrics::render().unwrap(), failed);
    assert!(after - before >= 3.0, "{before} -> {after}");
    assert!(d.phone.steps().is_empty());
}

#[test]
fn a_failing_sms_provider_says_so_and_leaves_the_menu() {
    let d = OobDaemon::start();
    d.push_and_phone();
    d.add_totp();
    d.phone.twilio_service(Service::Fails(500));
    let code = d.fresh_totp();
    let (outcome, script) = d.login(&[say("3"), say(&code)]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(
        script.has(
            "error: Could not send an SMS: the SMS and voice provider refused the request \
             (HTTP 500, error 20500). Choose another option or enter a passcode."
        ),
        "{}",
        script.text()
    );
    assert!(!script.text().contains(AUTH_TOKEN));
}

#[test]
fn an_sms_passcode_logs_in_once_and_a_wrong_one_is_counted() {
    let d = OobDaemon::start();
    d.push_and_phone();
    let (outcome, script) = d.login(&[say("3"), Say::Sms(1)]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(
        script.has("info: SMS passcode sent to XXX-XXX-1234. Enter it below."),
        "{}",
        script.text()
    );
    // The SMS: to the number, from the account's number, with the code and the host.
    let sms = &d.phone.sms()[0];
    assert_eq!(
        sms.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    );
    assert_eq!(sms.param("To").as_deref(), Some(NUMBER));
    assert_eq!(sms.param("From").as_deref(), Some(FROM));
    let body = sms.param("Body").unwrap();
    let code = fake_phone::code_in(&body).unwrap();
    assert_eq!(code.len(), 7, "{body}");
    assert!(body.contains("testhost"), "{body}");

    // The same code again: refused as used, and counted.
    let (outcome, script) = d.login(&[say(&code), say(&code), say(&code)]);
    assert_eq!(outcome, Outcome::Deny);
    assert!(script.has("already used"), "{}", script.text());
    d.store().clear_failures("root").unwrap();

    // A wrong code of the SMS length is counted as a failure.
    let (outcome, script) = d.login(&[say("3"), say("0000000"), Say::Sms(2)]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(script.has("Incorrect passcode"), "{}", script.text());
    let (outcome, script) = d.login(&[say("3"), say("1111111"), say("2222222"), say("3333333")]);
    assert_eq!(outcome, Outcome::Deny);
    assert!(script.has("Too many attempts"), "{}", script.text());
    assert_eq!(d.store().lock_state("root").unwrap().failures, 3);
}

#[test]
fn an_sms_passcode_expires_after_five_minutes() {
    let d = OobDaemon::start();
    d.push_and_phone();
    d.add_totp();
    let (outcome, _) = d.login(&[say("3"), say(&d.fresh_totp())]);
    assert_eq!(outcome, Outcome::Allow);
    let code = d.phone.wait_sms_code(1, Duration::from_secs(5)).unwrap();
    // One second before the five minutes end, the passcode still opens a login.
    d.clock.advance(299);
    let (outcome, script) = d.login(&[say(&code)]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());

    // A second passcode, tried one second after its five minutes: refused as a wrong code
    // (mfad does not tell an expired passcode from a mistyped one), all three times.
    let (outcome, _) = d.login(&[say("3"), say(&d.fresh_totp())]);
    assert_eq!(outcome, Outcome::Allow);
    let code = d.phone.wait_sms_code(2, Duration::from_secs(5)).unwrap();
    d.clock.advance(301);
    let (outcome, script) = d.login(&[say(&code), say(&code), say(&code)]);
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    println!("{}", script.text());
    assert_eq!(
        script.text().matches("Incorrect passcode").count(),
        3,
        "{}",
        script.text()
    );
}

#[test]
fn an_approved_call_logs_in_through_signed_callbacks() {
    let d = OobDaemon::start();
    d.push_and_phone();
    let (outcome, script) = d.login(&[say("2"), say("")]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert_eq!(
        script.prompts()[1],
        "Calling XXX-XXX-1234... Answer it and press 1 to approve.\nPress Enter once you have \
         answered it: "
    );
    let call = &d.phone.calls()[0];
    assert_eq!(call.param("To").as_deref(), Some(NUMBER));
    assert_eq!(call.param("From").as_deref(), Some(FROM));
    assert_eq!(call.param("Method").as_deref(), Some("POST"));
    let voice = call.param("Url").unwrap();
    assert!(
        voice.starts_with(&format!("{}/twilio/voice/", d.public_url)),
        "{voice}"
    );
    let steps = d.phone.wait_steps(2, Duration::from_secs(5)).unwrap();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(
        (steps[0].what.as_str(), steps[0].status),
        ("answer call", 200)
    );
    assert!(steps[0].body.contains("<Gather"), "{}", steps[0].body);
    assert!(steps[0].body.contains("Press 1 to approve"));
    assert_eq!((steps[1].what.as_str(), steps[1].status), ("press 1", 200));
    assert!(
        steps[1].body.contains("Approved. Goodbye."),
        "{}",
        steps[1].body
    );
}

#[test]
fn a_call_with_a_bad_signature_is_refused_and_not_approved() {
    let d = OobDaemon::start();
    d.push_and_phone();
    d.phone.sign_callbacks(Signing::WrongKey);
    let (outcome, script) = d.login(&[say("2"), say("")]);
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    assert!(script.has("No answer to the login request in time"));
    let steps = d.phone.wait_steps(2, Duration::from_secs(5)).unwrap();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(
        (steps[0].what.as_str(), steps[0].status),
        ("answer call", 403)
    );
    assert_eq!((steps[1].what.as_str(), steps[1].status), ("press 1", 403));
}

#[test]
fn an_empty_answer_runs_the_default_method() {
    let d = OobDaemon::start();
    d.push_and_phone();
    // The push device came first, so it is the default.
    let (outcome, script) = d.login(&[say(""), say("")]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert_eq!(d.phone.notifications().len(), 1);
    assert!(d.phone.calls().is_empty());

    // Making the phone the default takes a fresh factor (the push), then Enter calls.
    let (outcome, script) = d.run(Operation::SetDefault { index: 2 }, &[say("1"), say("")]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert_eq!(d.phone.notifications().len(), 2);
    let (outcome, script) = d.login(&[say(""), say("")]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert_eq!(d.phone.calls().len(), 1);
    assert_eq!(d.phone.notifications().len(), 2);
}

fn add_phone(number: &str) -> Operation {
    Operation::AddDevice(NewDevice::Phone {
        name: Some("Work phone".into()),
        number: number.into(),
    })
}

#[test]
fn adding_a_phone_needs_the_code_sent_to_it() {
    let d = OobDaemon::start();
    let (outcome, script) = d.run(
        add_phone("+1 (555) 555-1234"),
        &[say("0000000"), say("1111111"), say("2222222")],
    );
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    assert!(script.has("Enter the code sent to XXX-XXX-1234: "));
    assert!(script.has("nothing was added"), "{}", script.text());
    assert!(d.store().devices("root").unwrap().is_empty());

    let (outcome, script) = d.run(add_phone("+1 (555) 555-1234"), &[Say::Sms(2)]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    let devices = d.store().devices("root").unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].kind, DeviceKind::Phone);
    assert_eq!(devices[0].address.as_deref(), Some(NUMBER));
    assert_eq!(d.phone.sms()[1].param("To").as_deref(), Some(NUMBER));
}

fn add_push(target: &str) -> Operation {
    Operation::AddDevice(NewDevice::Push {
        name: Some("Pixel 8".into()),
        target: target.into(),
    })
}

/// The topic `mfa add push` showed, from its conversation.
fn shown_topic(script: &Script<'_>) -> String {
    let text = script.text();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("info: Your private push topic is "))
        .unwrap_or_else(|| panic!("no topic shown:\n{text}"));
    line.trim().to_string()
}

#[test]
fn adding_a_push_target_needs_the_test_push_approved() {
    let d = OobDaemon::start_with(|c| c.push.as_mut().unwrap().allow_chosen_topics = true);
    let (outcome, script) = d.run(
        Operation::AddDevice(NewDevice::Push {
            name: None,
            target: "not a topic!".into(),
        }),
        &[],
    );
    assert_eq!(outcome, Outcome::Deny);
    assert!(script.has("An ntfy topic has"), "{}", script.text());
    assert!(d.phone.requests().is_empty());

    d.phone.on_push(Answer::Deny);
    let (outcome, script) = d.run(add_push(TOPIC), &[say("")]);
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    assert!(script.has("nothing was added"), "{}", script.text());
    assert!(d.store().devices("root").unwrap().is_empty());
    // The test push says what it is for, not that someone is logging in.
    let page = &d.phone.steps()[0].body;
    assert!(page.contains("is adding this phone"), "{page}");
    assert!(!page.contains("logging in"), "{page}");
    let note = &d.phone.notifications()[0]["message"];
    assert!(
        note.as_str().unwrap().contains("adding this phone"),
        "{note}"
    );

    d.phone.on_push(Answer::Approve);
    let (outcome, script) = d.run(add_push(TOPIC), &[say("")]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    let devices = d.store().devices("root").unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].kind, DeviceKind::Push);
    assert_eq!(devices[0].address.as_deref(), Some(TOPIC));
    assert_eq!(d.phone.notifications()[1]["topic"], TOPIC);
}

#[test]
fn mfad_generates_each_push_topic_and_refuses_one_the_user_picks() {
    let d = OobDaemon::start();
    // `mfa add push a`: a guessable topic is refused before anything is sent.
    let (outcome, script) = d.run(add_push("a"), &[]);
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    assert!(
        script.has("mfad picks the push topic itself"),
        "{}",
        script.text()
    );
    assert!(d.phone.requests().is_empty());

    // Without a topic: mfad shows one, waits for the subscription, then pushes to it.
    let (outcome, script) = d.run(add_push(""), &[say(""), say("")]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    let topic = shown_topic(&script);
    assert!(
        script.prompts()[0].starts_with("Press Enter once you have subscribed"),
        "{}",
        script.text()
    );
    assert!(script.has(&format!(
        "{}/{topic}",
        d.phone.ntfy_url().trim_end_matches('/')
    )));
    // 128 random bits in URL-safe base64 after the prefix.
    let random = topic.strip_prefix("mfa-").unwrap();
    assert_eq!(random.len(), 22, "{topic}");
    assert!(mfad::oob::is_ntfy_topic(&topic), "{topic}");
    assert_eq!(d.phone.notifications()[0]["topic"], topic.as_str());
    let devices = d.store().devices("root").unwrap();
    assert_eq!(devices[0].address.as_deref(), Some(topic.as_str()));

    // A second device gets a topic of its own. (root is enrolled now: the push proves it.)
    let (outcome, script) = d.run(add_push(""), &[say("1"), say(""), say(""), say("")]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    let second = shown_topic(&script);
    assert_ne!(second, topic);
    let devices = d.store().devices("root").unwrap();
    assert_eq!(devices[1].address.as_deref(), Some(second.as_str()));
}

/// A tap on the page's button from outside the phone, after the fact: status and body.
fn late_tap(url: &str, action: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(url)
            .form(&[("action", action)])
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    })
}

#[test]
fn denied_and_unanswered_pushes_count_toward_the_lockout() {
    let d = OobDaemon::start_with(|c| c.lockout.max_failures = 3);
    d.push_and_phone();
    d.phone.on_push(Answer::Deny);
    for n in 1..=2 {
        let (outcome, script) = d.login(&[say("1"), say("")]);
        assert_eq!(outcome, Outcome::Deny, "{}", script.text());
        assert!(script.has("Login request denied."), "{}", script.text());
        assert_eq!(d.store().lock_state("root").unwrap().failures, n);
    }
    // The third request is left unanswered: it counts too, and locks.
    d.phone.on_push(Answer::Look);
    let (outcome, script) = d.login_unanswered(&[say("1"), say("")]);
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    assert!(script.has("locked"), "{}", script.text());
    assert!(
        d.locked(),
        "push fatigue ends in a lock, not in an approval"
    );
}
/// root with only a phone; daemon (another user) too.
fn phones_for_root_and_daemon(d: &OobDaemon) {
    d.add(DeviceKind::Phone, "Work phone", NUMBER);
    d.add_for("daemon", DeviceKind::Phone, "Phone", "+15555559876");
}

const TOO_MANY_TEXTS: &str =
    "error: Too many texts were sent for this account; wait 15 minutes or use another method.";

#[test]
fn a_flood_of_texts_is_cut_at_five_per_user_and_another_user_is_unaffected() {
    let d = OobDaemon::start();
    phones_for_root_and_daemon(&d);
    // Options of a phone-only menu: 1 call, 2 SMS. Three requests per login, then refused.
    for _ in 0..2 {
        let (outcome, script) = d.login(&[say("2"), say("2"), say("2"), say("2")]);
        assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    }
    // Six asked for, five sent; the sixth was refused in plain words.
    assert_eq!(d.phone.sms().len(), 5);
    let (_, script) = d.login(&[say("2"), say("0000000"), say("1111111"), say("2222222")]);
    assert!(script.has(TOO_MANY_TEXTS), "{}", script.text());
    assert_eq!(d.phone.sms().len(), 5);
    d.store().clear_failures("root").unwrap();

    // Another user still gets a text, and logs in with it.
    let (outcome, script) = d.login_as("daemon", &[say("2"), Say::Sms(6)]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert_eq!(
        d.phone.sms()[5].param("To").as_deref(),
        Some("+15555559876")
    );

    // Fifteen minutes after the first, root may text again.
    d.clock.advance(15 * 60);
    let (outcome, script) = d.login(&[say("2"), Say::Sms(7)]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
}

#[test]
fn the_host_wide_text_limit_holds_across_users() {
    let d = OobDaemon::start_with(|c| c.limits.sms_per_host = 3);
    phones_for_root_and_daemon(&d);
    let (outcome, _) = d.login(&[say("2"), say("2"), say("2"), say("2")]);
    assert_eq!(outcome, Outcome::Deny);
    assert_eq!(d.phone.sms().len(), 3);
    let (_, script) = d.login_as("daemon", &[say("2"), say("0000000"), say("1"), say("1")]);
    assert!(
        script.has(
            "error: Too many texts were sent from this host; wait 60 minutes or use another \
             method."
        ),
        "{}",
        script.text()
    );
    assert_eq!(d.phone.sms().len(), 3);
}

#[test]
fn a_flood_of_calls_is_cut_at_the_limit_and_another_user_is_unaffected() {
    let d = OobDaemon::start_with(|c| c.limits.calls_per_user = 2);
    phones_for_root_and_daemon(&d);
    d.add_totp();
    d.phone.on_call(Answer::Deny);
    for _ in 0..2 {
        let (outcome, script) = d.login(&[say("1"), say("")]);
        assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    }
    assert_eq!(d.phone.calls().len(), 2);
    // The third call is refused; the user is back at the menu and a passcode still works.
    let code = d.fresh_totp();
    let (outcome, script) = d.login(&[say("1"), say(&code)]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(
        script.has(
            "error: Too many calls were placed for this account; wait 15 minutes or use \
             another method."
        ),
        "{}",
        script.text()
    );
    assert_eq!(d.phone.calls().len(), 2);
    d.phone.on_call(Answer::Approve);
    let (outcome, script) = d.login_as("daemon", &[say("1"), say("")]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert_eq!(d.phone.calls().len(), 3);
}

#[test]
fn a_flood_of_pushes_is_cut_at_the_limit_and_another_user_is_unaffected() {
    let d = OobDaemon::start_with(|c| c.limits.pushes_per_user = 3);
    d.add(DeviceKind::Push, "Pixel 8", TOPIC);
    d.add_for(
        "daemon",
        DeviceKind::Push,
        "Phone",
        "daemon-topic-0123456789abcdef",
    );
    d.add_totp();
    // Push fatigue: the attacker has the password and pushes again and again.
    d.phone.on_push(Answer::Deny);
    for _ in 0..3 {
        let (outcome, script) = d.login(&[say("1"), say("")]);
        assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    }
    assert_eq!(d.phone.notifications().len(), 3);
    let code = d.fresh_totp();
    let (outcome, script) = d.login(&[say("1"), say(&code)]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert!(
        script.has(
            "error: Too many push requests were sent for this account; wait 15 minutes or use \
             another method."
        ),
        "{}",
        script.text()
    );
    assert_eq!(d.phone.notifications().len(), 3);
    d.phone.on_push(Answer::Approve);
    let (outcome, script) = d.login_as("daemon", &[say("1"), say("")]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
    assert_eq!(
        d.phone.notifications()[3]["topic"],
        "daemon-topic-0123456789abcdef"
    );
}

#[test]
fn unconfirmed_phone_additions_are_capped_at_three_numbers() {
    let d = OobDaemon::start();
    let wrong = [say("0000000"), say("1111111"), say("2222222")];
    for n in ["+15555550001", "+15555550002", "+15555550003"] {
        let (outcome, script) = d.run(add_phone(n), &wrong);
        assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    }
    assert_eq!(d.phone.sms().len(), 3);
    // A fourth number gets nothing sent, and says why.
    let (outcome, script) = d.run(add_phone("+15555550004"), &[]);
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    assert!(
        script.has("You already have 3 phone numbers waiting for their confirmation code"),
        "{}",
        script.text()
    );
    assert_eq!(d.phone.sms().len(), 3);
    // One of the pending numbers may still be confirmed.
    let (outcome, script) = d.run(add_phone("+15555550002"), &[Say::Sms(4)]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
}

#[test]
fn a_number_outside_the_allowed_countries_is_refused_before_any_text() {
    let d = OobDaemon::start_with(|c| {
        c.twilio.as_mut().unwrap().allowed_country_codes = vec!["+44".into(), "+33".into()]
    });
    let (outcome, script) = d.run(add_phone(NUMBER), &[]);
    assert_eq!(outcome, Outcome::Deny, "{}", script.text());
    assert!(
        script.has(
            "error: This host sends texts and calls only to numbers starting with +44, +33; \
             XXX-XXX-1234 is not one. Nothing was sent."
        ),
        "{}",
        script.text()
    );
    assert!(d.phone.requests().is_empty());
    let (outcome, script) = d.run(add_phone("+447700900123"), &[Say::Sms(1)]);
    assert_eq!(outcome, Outcome::Allow, "{}", script.text());
}

/// A transfer (no terminal) whose default method is a push nobody answers: mfad waits for
/// the phone, not the client, and says every keep-alive interval that it is alive, on the
/// real socket server, so a client's read timeout shorter than the push's bound never runs
/// out first. (The keep-alives run in the conversation's own task: this is the wiring.)
#[test]
fn keep_alives_reach_a_client_while_mfad_waits_for_a_push() {
    use mfa_proto::frame::{read_frame, write_frame};
    use mfa_proto::{ClientMsg, KEEPALIVE_INTERVAL_SECS, PROTOCOL_VERSION, ServerMsg};
    // A bound well past two keep-alive intervals (the other tests' 10 s is exactly two).
    let d = OobDaemon::start_with(|config| {
        if let Some(approval) = config.approval.as_mut() {
            approval.token_ttl = 60;
        }
    });
    d.push_and_phone();
    d.phone.on_push(Answer::Look);
    let mut s = std::os::unix::net::UnixStream::connect(d.d.socket()).unwrap();
    let interval = Duration::from_secs(KEEPALIVE_INTERVAL_SECS);
    s.set_read_timeout(Some(interval * 2)).unwrap();
    let hello = ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        op: Operation::Authenticate(AuthContext {
            user: "root".into(),
            service: "sshd".into(),
            rhost: Some("192.0.2.7".into()),
            mode: mfa_proto::AuthMode::Auto,
            can_prompt: false,
            command: Some("scp -t /tmp".into()),
            ..Default::default()
        }),
    };
    write_frame(&mut s, &hello).unwrap();
    let pushed = Instant::now();
    let mut said = Vec::new();
    let mut alive = 0;
    while alive < 2 {
        match read_frame::<_, ServerMsg>(&mut s) {
            Ok(ServerMsg::KeepAlive) => alive += 1,
            Ok(ServerMsg::Done { outcome }) => {
                panic!("the login ended ({outcome:?}) while the push was pending: {said:?}")
            }
            Ok(msg) => said.push(msg),
            Err(e) => panic!(
                "no keep-alive within {:?} ({e}); mfad said {said:?}",
                interval * 2
            ),
        }
    }
    assert!(
        said.iter().any(
            |m| matches!(m, ServerMsg::Info { text } if text.contains("Pushed a login request"))
        ),
        "{said:?}"
    );
    // Two keep-alives, one interval apart, after the push went out.
    assert!(pushed.elapsed() >= interval * 2 - Duration::from_millis(1500));
}
