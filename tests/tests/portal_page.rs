//! The self-service portal end to end: headless Chromium signs in to the real mfa-web (beside
//! the real mfad) with the user's password (checked by mfad through the shipped PAM service)
//! and a code from the app `mfa enroll totp` set up, sees the device as the default method,
//! adds a second app (secret read from the page, a code typed) that a real ssh login then
//! uses, gets new bypass codes, and a real ssh login gets in with one of them. An admin
//! unlocks a user locked by real ssh failures. The recent logins list real ssh logins and
//! "This wasn't me" locks the account. A push device made the default on the portal is what
//! the next scp uses. A wrong password posted to the sign-in form is left in neither mfa-web's
//! nor mfad's memory. Screenshots under `target/screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mfa_e2e::browser::Browser;
use mfa_e2e::fake_phone::{ACCOUNT_SID, AUTH_TOKEN, FROM, FakePhone, PUSH_TOKEN};
use mfa_e2e::mfad::APPROVAL_PORT;
use mfa_e2e::scratch::unique_name;
use mfa_e2e::sshd::PamService;
use mfa_e2e::user::{TestGroup, TestUser};
use mfa_e2e::{TestEnv, TotpSecret};

/// mfad with the portal on, and mfa-web beside it; the shipped PAM service checks the
/// portal's passwords (bind it first: it goes after the world).
fn portal_env() -> (PamService, TestEnv) {
    let port = APPROVAL_PORT;
    let pam = PamService::shipped_web().unwrap();
    let toml = format!(
        "[approval]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         [web]\npublic_url = \"http://127.0.0.1:{port}\"\nportal = true\n\
         pam_service = \"{}\"\n",
        pam.name
    );
    let env = TestEnv::builder().mfad_toml(&toml).start().unwrap();
    (pam, env)
}

#[test]
fn in_chromium_a_user_signs_in_with_password_and_code_and_new_bypass_codes_open_ssh() {
    let (_pam, env) = portal_env();
    let mut device = env.enroll_totp().unwrap();

    let browser = Browser::start(&env.dir);
    let web = env.web_port().unwrap();
    browser.open(&format!("http://127.0.0.1:{web}/portal"));
    assert_eq!(browser.wait_title("Sign in"), "Sign in");
    browser.type_into("#user", env.username());
    browser.type_into("#password", "not-the-password");
    browser.click("button[type=submit]");
    // The same title before and after: wait for the answer's words.
    let main = browser.wait_text("main", "do not match");
    assert!(main.contains("do not match"), "{main}");
    assert_eq!(browser.title(), "Sign in");
    browser.type_into("#user", env.username());
    browser.type_into("#password", env.password());
    browser.screenshot("portal-1-sign-in.png");
    browser.click("button[type=submit]");
    assert_eq!(browser.wait_title("Second factor"), "Second factor");
    browser.type_into("#code", &device.totp.fresh_code());
    browser.click("button[type=submit]");
    assert_eq!(
        browser.wait_title("My two-factor settings"),
        "My two-factor settings"
    );
    browser.screenshot("portal-2-devices.png");
    let main = browser.text("main");
    assert!(main.contains(env.username()), "{main}");
    assert!(
        main.contains("default: used by scp, sftp, rsync and file transfer apps"),
        "{main}"
    );
    assert!(main.contains("0 unused"), "{main}");

    // Add a second authenticator app: read its secret from the page, type its code.
    browser.click("input[value=begin-app] ~ button");
    assert_eq!(
        browser.wait_title("Add an authenticator app"),
        "Add an authenticator app"
    );
    browser.screenshot("portal-2b-new-app.png");
    let mut new_app = TotpSecret::from_base32(&browser.text("#secret"), 6, 30, 1).unwrap();
    browser.type_into("#code", &new_app.current_code());
    browser.click("button[type=submit]");
    assert_eq!(browser.wait_title("Done"), "Done");
    note_starts(&browser, "Added \"Authenticator app 2\".");
    browser.open(&format!("http://127.0.0.1:{web}/portal"));
    assert_eq!(
        browser.wait_title("My two-factor settings"),
        "My two-factor settings"
    );
    let added = env
        .login(&[&new_app.fresh_code()], "echo by-new-app")
        .unwrap();
    assert!(added.logged_in(), "{}", added.describe());

    browser.click("input[value=new-bypass-codes] ~ button");
    assert_eq!(browser.wait_title("Done"), "Done");
    browser.screenshot("portal-3-bypass-codes.png");
    let codes: Vec<String> = browser
        .text("#codes")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(codes.len(), 10, "{codes:?}");
    // The same codes, downloaded as a text file (a data: link: nothing to fetch again).
    let downloads = env.dir.join("downloads");
    browser.save_downloads_in(&downloads);
    browser.click("#download-codes");
    let file = downloads.join("bypass-codes.txt");
    // The browser creates the file before it has written it all: wait for every line.
    let saved = mfa_e2e::clock::wait_for(std::time::Duration::from_secs(10), || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|s| s.lines().count() >= 2 + codes.len())
    })
    .expect("no complete bypass-codes.txt downloaded");
    let lines: Vec<&str> = saved.lines().collect();
    assert!(
        lines[0].starts_with("New bypass codes: each works once"),
        "{saved}"
    );
    assert_eq!(
        lines[2..],
        codes.iter().map(String::as_str).collect::<Vec<_>>()[..],
        "{saved}"
    );

    let login = env.login(&[&codes[0]], "echo in-by-portal-code").unwrap();
    assert!(login.logged_in(), "{}", login.describe());
    assert!(login.stdout.contains("in-by-portal-code"));

    // My recent logins: the two ssh logins above, newest first, from the loopback address
    // (the history is written a moment after each login).
    let mut logins = String::new();
    for _ in 0..40 {
        browser.open(&format!("http://127.0.0.1:{web}/portal"));
        browser.wait_title("My two-factor settings");
        logins = browser.text("#logins");
        if logins.contains("with bypass") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let first = browser.text("#login-1");
    assert!(first.contains("allowed with bypass"), "{logins}");
    assert!(first.contains("from 127.0.0.1 to"), "{logins}");
    // The harness gives sshd a PAM service of its own (sshd-…).
    assert!(first.contains("(sshd"), "{logins}");
    assert!(
        browser.text("#login-2").contains("allowed with totp"),
        "{logins}"
    );
    browser.screenshot("portal-4-recent-logins.png");
    // "This wasn't me" locks the account at once: the next ssh login is refused even with
    // a right code, and the administrators get an ALERT.
    browser.click("#login-1 button");
    assert_eq!(browser.wait_title("Done"), "Done");
    let note = browser.text("#note");
    assert!(note.contains("Your account is locked until"), "{note}");
    browser.screenshot("portal-5-not-me.png");
    let code = device.totp.fresh_code();
    let refused = env.login(&[&code], "echo should-not-run").unwrap();
    assert!(refused.refused(), "{}", refused.describe());
    assert!(!refused.stdout.contains("should-not-run"));

    // mfad logged the portal's steps with the browser's address, never a code.
    let log = env.mfad_log();
    assert!(
        log.lines()
            .any(|l| l.contains("portal; wrong password") && l.contains("127.0.0.1")),
        "{log}"
    );
    assert!(log.contains("portal; 10 new codes"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("ALERT user={}", env.username()))
                && l.contains("did not make this login")),
        "{log}"
    );
    assert!(!log.contains(&codes[1]), "{log}");
}

#[test]
fn in_chromium_an_admin_unlocks_a_user_locked_by_ssh_failures() {
    let port = APPROVAL_PORT;
    let pam = PamService::shipped_web().unwrap();
    let group = TestGroup::create().unwrap();
    let admin = TestUser::create(&unique_name()).unwrap();
    admin.join_group(&group.name).unwrap();
    let toml = format!(
        "user_cache = 0\n\
         [approval]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         [web]\npublic_url = \"http://127.0.0.1:{port}\"\nportal = true\n\
         pam_service = \"{}\"\nadmin_group = \"{}\"\n",
        pam.name, group.name
    );
    let env = TestEnv::builder()
        .lockout(3, 3600)
        .mfad_toml(&toml)
        .start()
        .unwrap();
    let mut victim = env.enroll_totp().unwrap();
    let (mut admin_app, _) = env.cli.enroll_totp(&admin, 6, 30, 1).unwrap();

    // Three wrong codes over ssh lock the user; the right code is then refused.
    let wrong = victim.totp.wrong_code();
    let login = env.login(&[&wrong, &wrong, &wrong], "true").unwrap();
    assert!(login.refused(), "{}", login.describe());
    let code = victim.totp.fresh_code();
    let locked = env.login(&[&code], "echo should not run").unwrap();
    assert!(locked.refused(), "{}", locked.describe());
    // The account was locked: the code was never checked, so it is still good.
    victim.totp.unused(&code);

    let browser = Browser::start(&env.dir);
    let web = env.web_port().unwrap();
    browser.open(&format!("http://127.0.0.1:{web}/portal"));
    assert_eq!(browser.wait_title("Sign in"), "Sign in");
    browser.type_into("#user", &admin.name);
    browser.type_into("#password", &admin.password);
    browser.click("button[type=submit]");
    assert_eq!(browser.wait_title("Second factor"), "Second factor");
    browser.type_into("#code", &admin_app.fresh_code());
    browser.click("button[type=submit]");
    assert_eq!(
        browser.wait_title("My two-factor settings"),
        "My two-factor settings"
    );
    let locked_list = browser.text("#locked");
    assert!(locked_list.contains(env.username()), "{locked_list}");
    browser.screenshot("portal-admin-1-locked.png");
    browser.click("#locked button");
    assert_eq!(browser.wait_title("Done"), "Done");
    let note = browser.text("#note");
    assert_eq!(
        note,
        format!(
            "{} is unlocked and its failure count is cleared.",
            env.username()
        )
    );
    browser.screenshot("portal-admin-2-unlocked.png");

    let back = env
        .login(&[&victim.totp.fresh_code()], "echo back-in")
        .unwrap();
    assert!(back.logged_in(), "{}", back.describe());
    let log = env.mfad_log();
    assert!(
        log.contains(&format!(
            "admin action=web-unlock user={} by={}",
            env.username(),
            admin.name
        )),
        "{log}"
    );
}

/// The sign-in form filled with the user's name and password: the code form follows.
fn password_step(browser: &Browser, env: &TestEnv) {
    browser.type_into("#user", env.username());
    browser.type_into("#password", env.password());
    browser.click("button[type=submit]");
    assert_eq!(browser.wait_title("Second factor"), "Second factor");
}

/// Signed in at `portal` with the password and `code`: the settings page follows.
fn signed_in_with_a_code(browser: &Browser, env: &TestEnv, portal: &str, code: &str) {
    browser.open(portal);
    assert_eq!(browser.wait_title("Sign in"), "Sign in");
    password_step(browser, env);
    browser.type_into("#code", code);
    browser.click("button[type=submit]");
    assert_eq!(
        browser.wait_title("My two-factor settings"),
        "My two-factor settings"
    );
}

/// The page's note begins with `prefix`.
fn note_starts(browser: &Browser, prefix: &str) {
    let note = browser.text("#note");
    assert!(note.starts_with(prefix), "{note}");
}

/// The 6-digit HOTP code of `hex` at `counter`, from oathtool (not mfa's own code).
fn oathtool_hotp(hex: &str, counter: u64) -> String {
    let out = std::process::Command::new("oathtool")
        .args(["--hotp", "-c", &counter.to_string(), hex])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn in_chromium_a_user_adds_a_phone_a_push_device_and_a_token_and_scp_uses_the_new_default() {
    let port = APPROVAL_PORT;
    let pam = PamService::shipped_web().unwrap();
    let phone = FakePhone::start().unwrap();
    let toml = format!(
        "[approval]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         token_ttl = 20\n\
         [push]\nnotifier = \"ntfy\"\nurl = \"{ntfy}\"\ntoken = \"{PUSH_TOKEN}\"\ntimeout = 3\n\
         [twilio]\napi_base = \"{twilio}\"\naccount_sid = \"{ACCOUNT_SID}\"\n\
         auth_token = \"{AUTH_TOKEN}\"\nfrom = \"{FROM}\"\ntimeout = 3\n\
         [web]\npublic_url = \"http://127.0.0.1:{port}\"\nportal = true\n\
         pam_service = \"{}\"\n",
        pam.name,
        ntfy = phone.ntfy_url(),
        twilio = phone.twilio_url(),
    );
    let env = TestEnv::builder()
        .pam_module_args("mode=auto")
        .module_timeout(30)
        .mfad_toml(&toml)
        .start()
        .unwrap();
    let mut device = env.enroll_totp().unwrap();
    let file = env.dir.join("notes.txt");
    std::fs::write(&file, "a file for the transfer\n").unwrap();

    let browser = Browser::start(&env.dir);
    let web = env.web_port().unwrap();
    let portal = format!("http://127.0.0.1:{web}/portal");
    signed_in_with_a_code(&browser, &env, &portal, &device.totp.fresh_code());

    // A phone: the fake Twilio gets the text, whose code is typed back (a wrong one first).
    browser.type_into("#phone-number", "+1 555 010 4477");
    browser.type_into("#phone-name", "Work phone");
    browser.click("input[value=begin-phone] ~ button");
    assert_eq!(browser.wait_title("Add a phone"), "Add a phone");
    assert!(
        browser.text("main").contains("XXX-XXX-4477"),
        "{}",
        browser.text("main")
    );
    let texted = phone
        .wait_sms_code(1, std::time::Duration::from_secs(10))
        .unwrap();
    let sms = phone.sms();
    assert_eq!(sms[0].param("To").as_deref(), Some("+15550104477"));
    let wrong = if texted == "000000" {
        "111111"
    } else {
        "000000"
    };
    browser.type_into("#code", wrong);
    browser.click("button[type=submit]");
    // The same title before and after: wait for the answer's words.
    let main = browser.wait_text("main", "does not match");
    assert!(main.contains("does not match"), "{main}");
    assert_eq!(browser.title(), "Add a phone");
    browser.type_into("#code", &texted);
    browser.click("button[type=submit]");
    assert_eq!(browser.wait_title("Done"), "Done");
    note_starts(&browser, "Added \"Work phone\".");

    // A push device: mfad's private topic, then a test push the fake phone approves.
    browser.open(&portal);
    browser.wait_title("My two-factor settings");
    browser.type_into("#push-name", "Pixel 8");
    browser.click("input[value=begin-push] ~ button");
    assert_eq!(browser.wait_title("Add a push device"), "Add a push device");
    let topic = browser.text("#topic");
    assert!(topic.starts_with("mfa-") && topic.len() == 26, "{topic}");
    browser.screenshot("portal-add-push.png");
    browser.click("input[value=test-push] ~ button");
    // The waiting page has the same title as the topic's: wait for its note.
    browser.wait_text("#note", "");
    assert_eq!(browser.title(), "Add a push device");
    let test_push = phone
        .wait_notification(1, std::time::Duration::from_secs(10))
        .unwrap();
    assert!(test_push.to_string().contains(&topic), "{test_push}");
    // The phone opens the approval page and taps approve (two steps); mfad adds the
    // device as the answer reaches it, and Continue says so.
    let steps = phone
        .wait_steps(2, std::time::Duration::from_secs(10))
        .unwrap();
    assert_eq!(steps[1].what, "tap approve", "{steps:?}");
    assert!(
        steps[0].body.contains("add"),
        "the page says a device is being added"
    );
    let mut note = String::new();
    for _ in 0..20 {
        browser.click("input[value=check-push] ~ button");
        std::thread::sleep(std::time::Duration::from_millis(300));
        note = browser.wait_text("main", "");
        if browser.title() == "Done" {
            break;
        }
    }
    assert!(note.contains("Added \"Pixel 8\"."), "{note}");

    // A counter-based hardware token, confirmed by a code oathtool computes from its secret.
    let hex = "3132333435363738393031323334353637383930";
    browser.open(&portal);
    browser.wait_title("My two-factor settings");
    browser.type_into("#token-secret", &format!("hex:{hex}"));
    browser.type_into("#token-code", &oathtool_hotp(hex, 0));
    browser.type_into("#token-name", "YubiKey");
    browser.click("input[value=add-token] ~ button");
    assert_eq!(browser.wait_title("Done"), "Done");
    note_starts(&browser, "Added \"YubiKey\".");

    browser.open(&portal);
    browser.wait_title("My two-factor settings");
    let devices = browser.text(".devices");
    for name in ["Work phone", "Pixel 8", "YubiKey"] {
        assert!(devices.contains(name), "{devices}");
    }
    browser.screenshot("portal-added-devices.png");

    // With the app as the default, scp asks for a passcode; the token's next code works.
    let up = env
        .client
        .scp(
            &[],
            &file,
            env.client.remote("by-token.txt"),
            &[env.password(), &oathtool_hotp(hex, 1)],
        )
        .unwrap();
    assert_eq!(up.status, Some(0), "{}", up.describe());
    assert!(up.prompts[1].ends_with("Passcode: "), "{}", up.describe());

    // Make the push device the default: the next scp pushes instead, no passcode typed.
    browser.click("#device-3 input[value=set-default] ~ button");
    assert_eq!(browser.wait_title("Done"), "Done");
    assert_eq!(
        browser.text("#note"),
        "\"Pixel 8\" is now your default method: scp, sftp, rsync and file transfer apps use \
         it."
    );
    let pushes = phone.notifications().len();
    let up = env
        .client
        .scp(
            &[],
            &file,
            env.client.remote("by-push.txt"),
            &[env.password(), ""],
        )
        .unwrap();
    assert_eq!(up.status, Some(0), "{}", up.describe());
    assert!(!up.shown().contains("Passcode"), "{}", up.describe());
    assert_eq!(phone.notifications().len(), pushes + 1, "one push");
    let home = std::path::Path::new(&env.user().unwrap().home).join("by-push.txt");
    assert_eq!(std::fs::read(home).unwrap(), std::fs::read(&file).unwrap());

    // Signing in again: the code form offers the phone. A push approved on the phone signs
    // in (then Continue), and so does a code texted to the phone.
    browser.open(&portal);
    browser.wait_title("My two-factor settings");
    browser.click("form[action='/portal/sign-out'] button");
    assert_eq!(browser.wait_title("Sign in"), "Sign in");
    password_step(&browser, &env);
    let steps = phone.steps().len();
    browser.click("input[value=push] ~ button");
    // The code form has the same title as the page that follows: wait for its note.
    assert_eq!(browser.wait_title("Second factor"), "Second factor");
    let note = browser.wait_text("#note", "approve it there");
    assert!(note.contains("approve it there"), "{note}");
    phone
        .wait_steps(steps + 2, std::time::Duration::from_secs(10))
        .unwrap();
    let mut title = String::new();
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(300));
        browser.click("#continue");
        title = browser.wait_title("My two-factor settings");
        if title == "My two-factor settings" {
            break;
        }
    }
    assert_eq!(title, "My two-factor settings");
    browser.screenshot("portal-signed-in-by-push.png");
    browser.click("form[action='/portal/sign-out'] button");
    assert_eq!(browser.wait_title("Sign in"), "Sign in");
    password_step(&browser, &env);
    browser.click("input[value=sms] ~ button");
    assert_eq!(browser.wait_title("Second factor"), "Second factor");
    let note = browser.wait_text("#note", "XXX-XXX-4477");
    assert!(note.contains("XXX-XXX-4477"), "{note}");
    let login_code = phone
        .wait_sms_code(2, std::time::Duration::from_secs(10))
        .unwrap();
    browser.type_into("#code", &login_code);
    browser.click("button[type=submit]");
    assert_eq!(
        browser.wait_title("My two-factor settings"),
        "My two-factor settings"
    );

    let log = env.mfad_log();
    assert!(
        !log.contains(&texted),
        "the texted code is never logged: {log}"
    );
    assert!(log.contains("portal; approved on the phone"), "{log}");
}

/// WebAuthn needs a host name (browsers refuse an IP address as the relying party), and
/// treats http://localhost as secure: this site is `http://localhost:{port}`.
#[test]
fn in_chromium_a_security_key_is_added_signs_in_and_a_copy_of_it_is_refused() {
    let port = APPROVAL_PORT;
    let pam = PamService::shipped_web().unwrap();
    let toml = format!(
        "[approval]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://localhost:{port}\"\n\
         [web]\npublic_url = \"http://localhost:{port}\"\nportal = true\n\
         pam_service = \"{}\"\n",
        pam.name
    );
    let env = TestEnv::builder().mfad_toml(&toml).start().unwrap();
    let mut device = env.enroll_totp().unwrap();
    let browser = Browser::start(&env.dir);
    let key = browser.add_security_key();
    let web = env.web_port().unwrap();
    let portal = format!("http://localhost:{web}/portal");

    // Signed in with a code, the user adds the key: the page's script hands mfad's
    // challenge to the browser, the (virtual) key is touched, mfad checks the answer.
    signed_in_with_a_code(&browser, &env, &portal, &device.totp.fresh_code());
    browser.type_into("#key-name", "Blue key");
    browser.click("#add-key");
    assert_eq!(
        browser.wait_title("Add a security key"),
        "Add a security key"
    );
    browser.screenshot("portal-key-1-register.png");
    browser.click("#key-start");
    assert_eq!(
        browser.wait_title("Done"),
        "Done",
        "{}",
        browser.text("main")
    );
    note_starts(&browser, "Added \"Blue key\".");
    assert_eq!(browser.security_key_credentials(&key).len(), 1);
    browser.open(&portal);
    browser.wait_title("My two-factor settings");
    let devices = browser.text(".devices");
    assert!(
        devices.contains("Blue key: security key for the web pages"),
        "{devices}"
    );
    assert!(devices.contains("(for these pages only)"), "{devices}");
    browser.screenshot("portal-key-2-added.png");

    // Signed out, the key alone is the second factor.
    browser.click("form[action='/portal/sign-out'] button");
    assert_eq!(browser.wait_title("Sign in"), "Sign in");
    password_step(&browser, &env);
    browser.screenshot("portal-key-3-offered.png");
    browser.click("#use-key");
    assert_eq!(browser.wait_title("Security key"), "Security key");
    browser.click("#key-start");
    assert_eq!(
        browser.wait_title("My two-factor settings"),
        "My two-factor settings",
        "{}",
        browser.text("main")
    );

    // ssh does not use the key: the login still asks for the app's code, and takes it.
    let login = env
        .login(&[&device.totp.fresh_code()], "echo by-app")
        .unwrap();
    assert!(login.logged_in(), "{}", login.describe());

    // A copy of the key (its private key, with a signature count one behind the
    // original's, still above the count it showed when it was registered) signs
    // correctly, but its count gives it away: refused, counted as a failure, and an ALERT
    // for the administrators.
    let mut copied = browser.security_key_credentials(&key).remove(0);
    let count = copied["signCount"].as_u64().unwrap();
    assert!(count >= 2, "{copied}");
    copied["signCount"] = serde_json::json!(count - 1);
    browser.remove_security_key(&key);
    let copy = browser.add_security_key();
    browser.put_security_key_credential(&copy, copied);
    browser.click("form[action='/portal/sign-out'] button");
    assert_eq!(browser.wait_title("Sign in"), "Sign in");
    password_step(&browser, &env);
    browser.click("#use-key");
    assert_eq!(browser.wait_title("Security key"), "Security key");
    browser.click("#key-start");
    let main = browser.wait_text("main", "not accepted");
    assert!(
        main.contains("The security key's answer was not accepted. 4 tries left."),
        "{main}"
    );
    browser.screenshot("portal-key-4-copy-refused.png");

    let log = env.mfad_log();
    assert!(
        log.lines()
            .any(|l| l.contains("method=webauthn") && l.contains("outcome=enrolled")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("method=webauthn") && l.contains("outcome=allow")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("ALERT")
            && l.contains(env.username())
            && l.contains("signature counter")),
        "{log}"
    );
}

/// A password typed on the portal's sign-in page (a wrong one, with a `"` that the JSON
/// between mfa-web and mfad carries escaped) is gone from both processes' memory once the
/// page has answered: nothing of it is left in a freed buffer of hyper's, serde's or
/// serde_json's (both free through mfa_proto::alloc::ZeroizingAlloc). No browser needed: the
/// form as a browser posts it.
#[test]
fn a_password_typed_on_the_sign_in_page_is_left_in_neither_mfa_web_nor_mfad() {
    use mfa_test_support::http;
    use mfa_test_support::memory::found_in_memory;

    let (_pam, env) = portal_env();
    let (Some(mfad), Some(web_pid)) = env.process_ids() else {
        panic!("mfad and mfa-web should both run:\n{}", env.diagnostics());
    };
    let portal = format!("http://127.0.0.1:{}/portal", env.web_port().unwrap());

    let marker = {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        format!("pw{random:016x}{:08x}", std::process::id())
    };
    let password = format!("correct-horse-battery\"{marker}\\staple");
    let page = http::get(&portal, None);
    let cookie = page.cookie("mfa_signin").unwrap();
    let csrf = http::between(&page.body, "name=\"csrf\" value=\"", "\"").to_string();
    let answer = http::post(
        &format!("{portal}/sign-in"),
        Some(&cookie),
        &[
            ("csrf", &csrf),
            ("user", env.username()),
            ("password", &password),
        ],
    );
    assert!(answer.body.contains("do not match"), "{}", answer.body);
    std::thread::sleep(std::time::Duration::from_millis(300));

    let socket = env.socket().to_str().unwrap().as_bytes();
    for (name, pid) in [("mfad", mfad), ("mfa-web", web_pid)] {
        // The scan reads the process's memory: both hold the socket's path.
        assert!(!found_in_memory(pid, socket).is_empty(), "{name}");
        let found = found_in_memory(pid, marker.as_bytes());
        assert!(
            found.is_empty(),
            "the password is still in {name}'s memory, in:\n{}",
            found.join("\n")
        );
    }
}
