//! The self-service portal's pages (`/portal`, `[web] portal = true` in mfad.toml): sign in
//! with the password and a code (or by phone: a texted code, a push, a call), then my
//! devices (the default, rename, remove, add an app, a phone, a push device or a token), new
//! bypass codes (shown once), my recent logins with "This wasn't me", the admin part, sign
//! out. mfad keeps the session (in its store) and decides
//! everything; these pages only render its replies.
//!
//! The session is the `mfa_session` cookie (`HttpOnly; SameSite=Strict; Path=/portal`, plus
//! `Secure` over TLS); every form carries the session's CSRF token, and the sign-in form
//! (before there is a session) a token equal to the `mfa_signin` cookie.

use super::enrol::{cookie_named, new_app_page, new_csrf};
use super::{
    App, ClientAddr, Shared, alert, html, mfad_down, password_and_continue, post_form, unexpected,
};
use axum::extract::{Extension, Form, State};
use axum::http::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use maud::{Markup, Render};
use mfa_proto::web::{
    AdminAction, LockedUser, Password, PortalChange, PortalLogin, PortalPage, PortalVia,
    ShownCodes, SignInRefusal,
};
use mfa_proto::{Closed, WebReply, WebRequest};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

const SESSION_COOKIE: &str = "mfa_session";
const SIGNIN_COOKIE: &str = "mfa_signin";
/// The browser forgets the session cookie after this (mfad ends the session after an hour,
/// or ten idle minutes, whichever comes first).
const SESSION_MAX_AGE: u64 = 3600;

fn cookie(name: &str, value: &str, max_age: u64, secure: bool) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/portal; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    ))
    .ok()
}

fn with_cookie(mut resp: Response, value: Option<HeaderValue>) -> Response {
    if let Some(v) = value {
        resp.headers_mut().append(SET_COOKIE, v);
    }
    resp
}

/// 303 to the portal's page (after a post, so that a reload does not post again).
fn to_portal() -> Response {
    let mut resp = html(StatusCode::SEE_OTHER, "Two-factor settings", html! {});
    resp.headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/portal"));
    resp
}

fn client_of(client: Option<Extension<ClientAddr>>) -> Option<String> {
    client.map(|Extension(ClientAddr(ip))| ip.to_string())
}

fn not_enabled() -> Response {
    html(
        StatusCode::NOT_FOUND,
        "Not available",
        html! {
            p {
                "The self-service pages are not enabled on this site. Use the " code { "mfa" }
                " command on a login node, or ask your administrator."
            }
        },
    )
}

fn unavailable() -> Response {
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service unavailable",
        html! {
            p {
                "The two-factor service cannot answer right now. Nothing was changed. Try again \
                 in a moment."
            }
        },
    )
}

fn bad_form() -> Response {
    html(
        StatusCode::FORBIDDEN,
        "Form expired",
        html! {
            p {
                "This form has expired or did not come from this site. Nothing was changed. "
                a href="/portal" { "Start again" } "."
            }
        },
    )
}

/// A paragraph with a link back to the portal's page.
fn portal_link(text: &str) -> Markup {
    html! { p { a href="/portal" { (text) } } }
}

/// A note on how the last step went, read out by screen readers.
fn status_note(note: &str) -> Markup {
    html! { p #note role="status" { (note) } }
}

/// A form that posts `action` to `/portal/change`, with `fields`.
fn change_form(csrf: &str, action: &str, fields: Markup) -> Markup {
    let fields = html! {
        input type="hidden" name="action" value=(action);
        (fields)
    };
    post_form("/portal/change", csrf, fields)
}

/// A form with one button that posts `action` (about device `device`, if given).
fn button_form(csrf: &str, action: &str, device: Option<i64>, label: impl Render) -> Markup {
    let fields = html! {
        @if let Some(id) = device {
            input type="hidden" name="device" value=(id);
        }
        button type="submit" { (label) }
    };
    change_form(csrf, action, fields)
}

/// The field for a code, labelled `label`, and the button that sends it.
fn code_field(label: &str, button: &str) -> Markup {
    html! {
        label for="code" { (label) }
        br;
        input.wide #code name="code" inputmode="numeric" autocomplete="one-time-code" required;
        br;
        button type="submit" { (button) }
    }
}

/// The optional name of a device being added (the field `id`).
fn name_field(id: &str) -> Markup {
    html! {
        label for=(id) { "Name (optional)" }
        br;
        input.wide id=(id) name="name" maxlength="64";
        br;
    }
}

fn sign_in_page(app: &App, note: Markup) -> Response {
    let csrf = new_csrf();
    let fields = html! {
        label for="user" { "User name" }
        br;
        input.wide #user name="user" autocomplete="username" autocapitalize="none" required;
        br;
        (password_and_continue(html! { "Password" }))
    };
    let body = html! {
        p { "Sign in to see and change your two-factor settings." }
        (note)
        (post_form("/portal/sign-in", &csrf, fields))
    };
    let resp = html(StatusCode::OK, "Sign in", body);
    with_cookie(resp, cookie(SIGNIN_COOKIE, &csrf, 900, app.secure_cookies))
}

fn code_page(
    user: &str,
    csrf: &str,
    for_change: bool,
    offers: &[PortalVia],
    note: Markup,
) -> Response {
    let why = if for_change {
        "Changes need a second factor from the last few minutes. Type a current code (or use \
         your phone below), then make the change again."
    } else {
        "Now a code from your authenticator app or hardware token, or one of your bypass \
         codes."
    };
    let body = html! {
        p { "Signed in as " b { (user) } ". " (why) }
        (note)
        (code_form(csrf))
        (phone_offers(csrf, offers))
        (sign_out_form(csrf))
    };
    html(StatusCode::OK, "Second factor", body)
}

fn code_form(csrf: &str) -> Markup {
    post_form("/portal/code", csrf, code_field("Code", "Continue"))
}

/// The buttons that bring the second factor by phone, for the devices the user has.
fn phone_offers(csrf: &str, offers: &[PortalVia]) -> Markup {
    let label = |via: &PortalVia| match via {
        PortalVia::Sms => "Text me a code",
        PortalVia::Push => "Send a push to my phone",
        PortalVia::Call => "Call me",
        PortalVia::Key => "Use my security key",
    };
    let (keys, phones): (Vec<&PortalVia>, Vec<&PortalVia>) =
        offers.iter().partition(|via| **via == PortalVia::Key);
    html! {
        @if !keys.is_empty() {
            h2 { "Or with your security key" }
        }
        @for via in keys {
            (post_form("/portal/send", csrf, html! {
                input type="hidden" name="via" value=(via.as_str());
                button #use-key type="submit" { (label(via)) }
            }))
        }
        @if !phones.is_empty() {
            h2 { "Or by phone" }
        }
        @for via in phones {
            (post_form("/portal/send", csrf, html! {
                input type="hidden" name="via" value=(via.as_str());
                button type="submit" { (label(via)) }
            }))
        }
    }
}

fn sign_out_form(csrf: &str) -> Markup {
    post_form(
        "/portal/sign-out",
        csrf,
        html! { button type="submit" { "Sign out" } },
    )
}

/// The form that renames device `id` (the `n`th listed, called `name`).
fn rename_form(csrf: &str, id: i64, n: usize, name: &str) -> Markup {
    let fields = html! {
        input type="hidden" name="device" value=(id);
        label for={ "name-" (n) } { "New name for \u{201c}" (name) "\u{201d}" }
        br;
        input.wide id={ "name-" (n) } name="name" maxlength="64" required;
        br;
        button type="submit" { "Rename" }
    };
    change_form(csrf, "rename", fields)
}

/// The forms that add a phone, a push device and a hardware token.
fn add_forms(page: &PortalPage) -> Markup {
    let csrf = &page.csrf;
    let phone = html! {
        label for="phone-number" { "Number, with its country code" }
        br;
        input.wide #phone-number name="number" type="tel" autocomplete="tel"
            placeholder="+1 555 123 4567" required;
        br;
        (name_field("phone-name"))
        button type="submit" { "Text me a code" }
    };
    let push = html! {
        (name_field("push-name"))
        button type="submit" { "Add a push device" }
    };
    let token = html! {
        label for="token-kind" { "Kind" }
        br;
        select #token-kind name="kind" {
            option value="hotp" { "counter-based (press the button for a code)" }
            option value="totp" { "time-based (a new code every 30 s)" }
        }
        br;
        label for="token-secret" {
            "Secret, from the token's seed file: base32, or " code { "hex:" } " and hex digits"
        }
        br;
        input.wide #token-secret name="secret" autocomplete="off" required;
        br;
        label for="token-code" { "A code it shows now" }
        br;
        input.wide #token-code name="code" inputmode="numeric" autocomplete="one-time-code"
            required;
        br;
        (name_field("token-name"))
        button type="submit" { "Add the token" }
    };
    html! {
        @if page.can_add_phone {
            h3 { "A phone (text messages and calls)" }
            (change_form(csrf, "begin-phone", phone))
        }
        @if page.can_add_push {
            h3 { "A push device (the ntfy app)" }
            (change_form(csrf, "begin-push", push))
        }
        h3 { "A hardware token" }
        (change_form(csrf, "add-token", token))
        @if page.can_add_key {
            h3 { "A security key (for these pages)" }
            p.note {
                "A FIDO2 or U2F key, touched to sign in here. ssh logins cannot use it: keep \
                 another device for them."
            }
            (change_form(csrf, "begin-key", html! {
                (name_field("key-name"))
                button #add-key type="submit" { "Add a security key" }
            }))
        }
    }
}

/// The page that asks for the code texted to the new phone, after `note`.
fn phone_code_page(csrf: &str, masked: &str, note: Markup) -> Response {
    let code = code_field("Code from the text message", "Add the phone");
    let body = html! {
        p { "A code was texted to " (masked) "." }
        (note)
        (change_form(csrf, "confirm-phone", code))
        (portal_link("Cancel"))
    };
    html(StatusCode::OK, "Add a phone", body)
}

/// The new push device's topic, to subscribe to before the test notification.
fn push_topic_page(csrf: &str, topic: &str, server: &str) -> Response {
    let body = html! {
        p { "In the ntfy app, subscribe to this topic on the server " code { (server) } ":" }
        p { code #topic { (topic) } }
        p.note {
            "Or open " code { (server) "/" (topic) } " on the phone. Keep the topic to \
             yourself: whoever subscribes to it can answer your login requests."
        }
        (button_form(csrf, "test-push", None, "Send a test notification"))
        (portal_link("Cancel"))
    };
    html(StatusCode::OK, "Add a push device", body)
}

/// The test notification is out (or was not approved): Continue, or send it again.
fn push_waiting_page(csrf: &str, note: &str) -> Response {
    let body = html! {
        (status_note(note))
        (button_form(csrf, "check-push", None, "Continue"))
        (button_form(csrf, "test-push", None, "Send the test notification again"))
        (portal_link("Cancel"))
    };
    html(StatusCode::OK, "Add a push device", body)
}

/// The recent logins, each with its "this wasn't me" button.
fn logins_part(csrf: &str, logins: &[PortalLogin], unreadable: bool) -> Markup {
    html! {
        h2 { "My recent logins" }
        ol id="logins" class="logins" {
            @if unreadable {
                li #logins-unreadable {
                    "Your recent logins cannot be read right now. Try again later; if this \
                     lasts, tell your administrator."
                }
            } @else if logins.is_empty() {
                li { "None recorded yet." }
            }
            @for (i, l) in logins.iter().enumerate() {
                li id={ "login-" (i + 1) } {
                    b { (l.at) } ": " span.outcome { (l.outcome) }
                    @if l.method != "-" {
                        " with " (l.method)
                    }
                    br;
                    "from " span.address { (l.address) } " to " (l.host) " (" (l.service) ")"
                    br;
                    span.note { (l.detail) }
                    (change_form(csrf, "not-me", html! {
                        input type="hidden" name="login" value=(l.id);
                        button type="submit" class="report"
                            aria-label={
                                "This wasn't me: the login of " (l.at) " from " (l.address)
                            }
                            { "This wasn't me" }
                    }))
                }
            }
        }
        p.note {
            "\u{201c}This wasn't me\u{201d} locks your account at once and alerts your \
             administrator."
        }
    }
}

fn home_page(page: &PortalPage) -> Response {
    let csrf = &page.csrf;
    let body = html! {
        p { "Signed in as " b { (page.user) } "." }
        h2 { "My devices" }
        ul.devices {
            @for (i, d) in page.devices.iter().enumerate() {
                li id={ "device-" (i + 1) } {
                    b { (d.name) } ": " (d.detail)
                    @if d.kind == "webauthn" {
                        " " span.note { "(for these pages only)" }
                    } @else if d.default {
                        " " b.default {
                            "(default: used by scp, sftp, rsync and file transfer apps)"
                        }
                    } @else {
                        (button_form(csrf, "set-default", Some(d.id),
                            html! { "Make \u{201c}" (d.name) "\u{201d} the default" }))
                    }
                    (rename_form(csrf, d.id, i + 1, &d.name))
                    (button_form(csrf, "remove", Some(d.id),
                        html! { "Remove \u{201c}" (d.name) "\u{201d}" }))
                }
            }
        }
        h2 { "Bypass codes" }
        p #bypass-left { (page.bypass_left) " unused." }
        (button_form(csrf, "new-bypass-codes", None, "New bypass codes"))
        h2 { "Add a device" }
        (button_form(csrf, "begin-app", None, "Add an authenticator app"))
        (add_forms(page))
        (logins_part(csrf, &page.logins, page.logins_unreadable))
        @if page.admin {
            (admin_part(csrf, &page.locked))
        }
        (sign_out_form(csrf))
    };
    html(StatusCode::OK, "My two-factor settings", body)
}

/// A button of the administrator's form that does `action`.
fn admin_button(action: AdminAction, label: impl Render) -> Markup {
    html! { button type="submit" name="action" value=(action.as_str()) { (label) } }
}

/// The form an administrator acts on a user with (`user` filled in, if given).
fn admin_form(csrf: &str, user: &str) -> Markup {
    let fields = html! {
        label for="admin-user" { "User name" }
        br;
        input.wide #admin-user name="user" value=(user) autocapitalize="none" required;
        br;
        (admin_button(AdminAction::Status, "Status"))
        (admin_button(AdminAction::Unlock, "Unlock"))
        (admin_button(AdminAction::BypassCodes, "Issue bypass codes"))
        (admin_button(AdminAction::Reset, "Reset (remove every device and code)"))
    };
    post_form("/portal/admin", csrf, fields)
}

fn admin_part(csrf: &str, locked: &[LockedUser]) -> Markup {
    html! {
        h2 { "Administration" }
        h3 { "Locked accounts" }
        ul #locked {
            @if locked.is_empty() {
                li { "None." }
            }
            @for l in locked {
                li {
                    b { (l.user) } ": locked until " (l.until)
                    @if l.failures > 0 {
                        " (" (l.failures) " failures since)"
                    }
                    (post_form("/portal/admin", csrf, html! {
                        input type="hidden" name="user" value=(l.user);
                        (admin_button(AdminAction::Unlock, html! { "Unlock " (l.user) }))
                    }))
                }
            }
        }
        h3 { "A user" }
        (admin_form(csrf, ""))
    }
}

fn confirm_app_form(csrf: &str) -> Markup {
    let code = code_field("Code the app shows now", "Add the app");
    html! {
        (change_form(csrf, "confirm-app", code))
        (portal_link("Cancel"))
    }
}

/// The codes as a text file, in a `data:` link (nothing is kept on the server to fetch
/// them again, and the page itself is not cached).
fn codes_download(note: &str, codes: &ShownCodes) -> String {
    let mut text = format!("{note}\n\n");
    for c in &codes.0 {
        text.push_str(c);
        text.push('\n');
    }
    let mut link = String::from("data:text/plain;charset=utf-8,");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b".-_".contains(&b) {
            link.push(char::from(b));
        } else {
            link.push_str(&format!("%{b:02X}"));
        }
    }
    link
}

fn changed_page(note: &str, codes: &ShownCodes) -> Response {
    let body = html! {
        p #note { (note) }
        @if !codes.0.is_empty() {
            ol id="codes" class="codes" {
                @for c in &codes.0 {
                    li { code { (c) } }
                }
            }
            p {
                a.button #download-codes download="bypass-codes.txt"
                    href=(codes_download(note, codes)) { "Download the codes" }
            }
            p.note {
                "Print this page, download the codes, or write them down. They are not shown \
                 again."
            }
        }
        (portal_link("Back to my settings"))
    };
    // Codes shown once: not kept by the browser's cache (`security_headers`: no-store).
    html(StatusCode::OK, "Done", body)
}

fn refused(why: SignInRefusal) -> Markup {
    alert(match why {
        SignInRefusal::Wrong => "That user name and password do not match.",
        SignInRefusal::Locked => {
            "Your account is locked after too many failures. Ask your administrator, or wait \
             for it to unlock."
        }
        SignInRefusal::NotEnrolled => {
            "You have no device that gives codes yet. Log in with ssh to enrol one."
        }
    })
}

/// What a reply about the session shows (the page, the code form, or sign-in again).
fn session_reply(app: &App, reply: WebReply) -> Response {
    match reply {
        WebReply::Portal { page } => home_page(&page),
        WebReply::PortalNeedsCode {
            user,
            csrf,
            for_change,
            offers,
        } => code_page(&user, &csrf, for_change, &offers, html! {}),
        WebReply::PortalChanged { note, codes } => changed_page(&note, &codes),
        WebReply::SignInRefused { why } => sign_in_page(app, refused(why)),
        WebReply::BadForm => bad_form(),
        WebReply::NotAdmin => html(
            StatusCode::FORBIDDEN,
            "Not allowed",
            html! {
                p { "Only members of the administrators' group may do this. Nothing was done." }
                (portal_link("Back to my settings"))
            },
        ),

        WebReply::Closed {
            why: Closed::Unavailable,
        } => unavailable(),
        WebReply::Closed { .. } => with_cookie(
            sign_in_page(
                app,
                html! { p.note { "Your session has ended. Sign in again." } },
            ),
            cookie(SESSION_COOKIE, "", 0, app.secure_cookies),
        ),
        _ => unexpected(),
    }
}

fn session_of(headers: &HeaderMap) -> Option<String> {
    cookie_named(headers, SESSION_COOKIE).filter(|t| mfa_proto::web::looks_like_token(t))
}

/// GET /portal: the page for the session, or the sign-in form.
pub(super) async fn show(State(app): Shared, headers: HeaderMap) -> Response {
    let Some(session) = session_of(&headers) else {
        return sign_in_page(&app, html! {});
    };
    match app.mfad.ask(WebRequest::PortalView { session }).await {
        Ok(reply) => session_reply(&app, reply),
        Err(e) => mfad_down(&e),
    }
}

#[derive(Deserialize)]
pub(super) struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
}

/// POST /portal/sign-in: the password; a session that needs a code next.
pub(super) async fn sign_in(
    State(app): Shared,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    Form(form): Form<SignInForm>,
) -> Response {
    let password = Zeroizing::new(form.password);
    let expected = cookie_named(&headers, SIGNIN_COOKIE).unwrap_or_default();
    if form.csrf.is_empty() || !bool::from(expected.as_bytes().ct_eq(form.csrf.as_bytes())) {
        return bad_form();
    }
    let reply = app
        .mfad
        .ask(WebRequest::PortalSignIn {
            user: form.user.trim().to_string(),
            password: Password::new(password.as_str().to_owned()),
            client: client_of(client),
        })
        .await;
    match reply {
        Ok(WebReply::PortalStarted { session, .. }) => with_cookie(
            to_portal(),
            cookie(
                SESSION_COOKIE,
                &session,
                SESSION_MAX_AGE,
                app.secure_cookies,
            ),
        ),
        Ok(WebReply::SignInRefused { why }) => sign_in_page(&app, refused(why)),
        Ok(WebReply::Closed {
            why: Closed::Unknown,
        }) => not_enabled(),
        Ok(WebReply::Closed { .. }) => unavailable(),
        Ok(_) => unexpected(),
        Err(e) => mfad_down(&e),
    }
}

#[derive(Deserialize)]
pub(super) struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

/// POST /portal/code: the second factor (at sign-in, or fresh before a change).
pub(super) async fn code(
    State(app): Shared,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    Form(form): Form<CodeForm>,
) -> Response {
    let code = Zeroizing::new(form.code);
    let Some(session) = session_of(&headers) else {
        return bad_form();
    };
    let reply = app
        .mfad
        .ask(WebRequest::PortalCode {
            session: session.clone(),
            csrf: form.csrf.clone(),
            code: code.as_str().to_owned(),
            client: client_of(client),
        })
        .await;
    match reply {
        Ok(WebReply::Portal { .. }) => to_portal(),
        Ok(WebReply::WrongCode { tries_left }) => {
            let note = alert(format!("That code is not right. {tries_left} tries left."));
            code_again(&app, session, note).await
        }
        Ok(reply) => session_reply(&app, reply),
        Err(e) => mfad_down(&e),
    }
}

/// The code form again, after `note` (a second factor that was not accepted).
async fn code_again(app: &App, session: String, note: Markup) -> Response {
    match app.mfad.ask(WebRequest::PortalView { session }).await {
        Ok(WebReply::PortalNeedsCode {
            user,
            csrf,
            for_change,
            offers,
        }) => code_page(&user, &csrf, for_change, &offers, note),
        Ok(WebReply::Portal { page }) => code_page(&page.user, &page.csrf, true, &[], note),
        Ok(reply) => session_reply(app, reply),
        Err(e) => mfad_down(&e),
    }
}

/// The security-key page: the challenge mfad made, handed to the browser by the page's
/// one script (`/static/webauthn.js`) when the button is pressed; the answer goes to
/// `/portal/key` (the second factor) or to `/portal/change` (`adding`: a new key).
fn key_page(csrf: &str, options: &str, adding: bool) -> Response {
    let (title, to, button) = if adding {
        ("Add a security key", "/portal/change", "Register the key")
    } else {
        ("Security key", "/portal/key", "Use my security key")
    };
    let body = html! {
        // mfad's options, read by the script (an attribute: escaped here, read back exact).
        div #key-options data-options=(options) data-adding=(adding) {}
        p { "Insert your security key, press the button, then touch the key when it blinks." }
        p #key-note role="status" {
            noscript { "Security keys need JavaScript in this browser. Use a code instead." }
        }
        form #key-form method="post" action=(to) {
            input type="hidden" name="csrf" value=(csrf);
            @if adding {
                input type="hidden" name="action" value="finish-key";
            }
            input #key-response type="hidden" name="response" value="";
            button #key-start type="submit" { (button) }
        }
        (portal_link("Cancel"))
        script src="/static/webauthn.js" {}
    };
    let mut resp = html(StatusCode::OK, title, body);
    resp.headers_mut().insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(super::KEY_PAGE_CSP),
    );
    resp
}

#[derive(Deserialize)]
pub(super) struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    response: String,
}

/// POST /portal/key: the browser's answer to "Use my security key".
pub(super) async fn key(
    State(app): Shared,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    Form(form): Form<KeyForm>,
) -> Response {
    let Some(session) = session_of(&headers) else {
        return bad_form();
    };
    let reply = app
        .mfad
        .ask(WebRequest::PortalKey {
            session: session.clone(),
            csrf: form.csrf,
            response: form.response,
            client: client_of(client),
        })
        .await;
    match reply {
        Ok(WebReply::Portal { .. }) => to_portal(),
        Ok(WebReply::WrongCode { tries_left }) => {
            let note = alert(format!(
                "The security key's answer was not accepted. {tries_left} tries left."
            ));
            code_again(&app, session, note).await
        }
        Ok(reply) => session_reply(&app, reply),
        Err(e) => mfad_down(&e),
    }
}

#[derive(Deserialize)]
pub(super) struct SendForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    via: String,
}

/// POST /portal/send: the second factor by phone (a texted code, a push or a call).
pub(super) async fn send(
    State(app): Shared,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    Form(form): Form<SendForm>,
) -> Response {
    let Some(session) = session_of(&headers) else {
        return bad_form();
    };
    let via = match form.via.as_str() {
        "sms" => PortalVia::Sms,
        "push" => PortalVia::Push,
        "call" => PortalVia::Call,
        "key" => PortalVia::Key,
        _ => return bad_form(),
    };
    let reply = app
        .mfad
        .ask(WebRequest::PortalSend {
            session,
            csrf: form.csrf.clone(),
            via,
            client: client_of(client),
        })
        .await;
    match reply {
        Ok(WebReply::KeyCeremony { options, adding }) => key_page(&form.csrf, &options, adding),
        Ok(WebReply::PortalSent { via, note }) => {
            let body = html! {
                (status_note(&note))
                @if via != PortalVia::Sms {
                    p { a.button #continue href="/portal" { "Continue" } }
                    p.note { "Or type a code instead:" }
                }
                (code_form(&form.csrf))
            };
            html(StatusCode::OK, "Second factor", body)
        }
        Ok(reply) => session_reply(&app, reply),
        Err(e) => mfad_down(&e),
    }
}

#[derive(Deserialize)]
pub(super) struct ChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    device: Option<i64>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    login: Option<i64>,
    #[serde(default)]
    number: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    response: Option<String>,
}

/// POST /portal/change: one change of the session's own settings (see [`PortalChange`]).
pub(super) async fn change(
    State(app): Shared,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    Form(mut form): Form<ChangeForm>,
) -> Response {
    let Some(session) = session_of(&headers) else {
        return bad_form();
    };
    let change = match (form.action.as_str(), form.device) {
        ("set-default", Some(device)) => PortalChange::SetDefault { device },
        ("remove", Some(device)) => PortalChange::Remove { device },
        ("rename", Some(device)) => PortalChange::Rename {
            device,
            name: form.name.clone().unwrap_or_default(),
        },
        ("new-bypass-codes", _) => PortalChange::NewBypassCodes,
        ("begin-phone", _) => PortalChange::BeginPhone {
            name: form.name.clone().unwrap_or_default(),
            number: form.number.clone().unwrap_or_default(),
        },
        ("confirm-phone", _) => PortalChange::ConfirmPhone {
            code: form.code.as_deref().unwrap_or_default().to_string(),
        },
        ("begin-push", _) => PortalChange::BeginPush {
            name: form.name.clone().unwrap_or_default(),
        },
        ("test-push", _) => PortalChange::TestPush,
        ("check-push", _) => PortalChange::CheckPush,
        ("add-token", _) => PortalChange::AddToken {
            kind: form.kind.clone().unwrap_or_default(),
            name: form.name.clone().unwrap_or_default(),
            // Moved, not copied: the form's own string is wiped with it.
            secret: Zeroizing::new(form.secret.take().unwrap_or_default()),
            code: form.code.as_deref().unwrap_or_default().to_string(),
        },
        ("not-me", _) => match form.login {
            Some(login) => PortalChange::NotMe { login },
            None => return bad_form(),
        },
        ("begin-key", _) => PortalChange::BeginKey {
            name: form.name.clone().unwrap_or_default(),
        },
        ("finish-key", _) => PortalChange::FinishKey {
            response: form.response.clone().unwrap_or_default(),
        },
        ("begin-app", _) => PortalChange::BeginApp,
        ("confirm-app", _) => PortalChange::ConfirmApp {
            code: form.code.as_deref().unwrap_or_default().to_string(),
        },
        _ => return bad_form(),
    };
    match app
        .mfad
        .ask(WebRequest::PortalChange {
            session,
            csrf: form.csrf.clone(),
            change,
            client: client_of(client),
        })
        .await
    {
        Ok(WebReply::NewApp { app: new }) => new_app_page(
            "Add an authenticator app",
            &new,
            confirm_app_form(&form.csrf),
        ),
        Ok(WebReply::PhoneCodeSent { masked }) => phone_code_page(&form.csrf, &masked, html! {}),
        Ok(WebReply::WrongCode { tries_left }) if form.action == "confirm-phone" => {
            phone_code_page(
                &form.csrf,
                "your new phone",
                alert(format!(
                    "That code does not match. {tries_left} tries left."
                )),
            )
        }
        Ok(WebReply::NewPushTopic { topic, server }) => {
            push_topic_page(&form.csrf, &topic, &server)
        }
        Ok(WebReply::PushWaiting { note }) => push_waiting_page(&form.csrf, &note),
        Ok(WebReply::KeyCeremony { options, adding }) => key_page(&form.csrf, &options, adding),
        Ok(WebReply::WrongCode { tries_left }) => html(
            StatusCode::OK,
            "Add an authenticator app",
            html! {
                (alert(format!(
                    "That code does not match the new app. Check the app (and that the phone's \
                     clock is right). {tries_left} tries left."
                )))
                (confirm_app_form(&form.csrf))
            },
        ),
        Ok(reply) => session_reply(&app, reply),
        Err(e) => mfad_down(&e),
    }
}

#[derive(Deserialize)]
pub(super) struct SignOutForm {
    #[serde(default)]
    csrf: String,
}

/// POST /portal/sign-out: ends the session (in the store) and forgets the cookie.
pub(super) async fn sign_out(
    State(app): Shared,
    headers: HeaderMap,
    Form(form): Form<SignOutForm>,
) -> Response {
    let Some(session) = session_of(&headers) else {
        return sign_in_page(&app, html! {});
    };
    match app
        .mfad
        .ask(WebRequest::PortalSignOut {
            session,
            csrf: form.csrf,
        })
        .await
    {
        Ok(WebReply::BadForm) => bad_form(),
        Ok(WebReply::Closed {
            why: Closed::Unavailable,
        }) => unavailable(),
        Ok(WebReply::Closed { .. }) => with_cookie(
            sign_in_page(&app, html! { p.note { "Signed out." } }),
            cookie(SESSION_COOKIE, "", 0, app.secure_cookies),
        ),
        Ok(_) => unexpected(),
        Err(e) => mfad_down(&e),
    }
}

#[derive(Deserialize)]
pub(super) struct AdminForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    action: String,
}

/// POST /portal/admin: an administrator's action on a user.
pub(super) async fn admin(
    State(app): Shared,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    Form(form): Form<AdminForm>,
) -> Response {
    let Some(session) = session_of(&headers) else {
        return bad_form();
    };
    let action = match form.action.as_str() {
        "status" => AdminAction::Status,
        "unlock" => AdminAction::Unlock,
        "reset" => AdminAction::Reset,
        "bypass-codes" => AdminAction::BypassCodes,
        _ => return bad_form(),
    };
    let user = form.user.trim().to_string();
    match app
        .mfad
        .ask(WebRequest::PortalAdmin {
            session,
            csrf: form.csrf.clone(),
            user,
            action,
            client: client_of(client),
        })
        .await
    {
        Ok(WebReply::AdminStatus { user, report }) => html(
            StatusCode::OK,
            "Account status",
            html! {
                pre #status { (report) }
                (admin_form(&form.csrf, &user))
                (portal_link("Back"))
            },
        ),
        Ok(reply) => session_reply(&app, reply),
        Err(e) => mfad_down(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mfa_proto::web::{NewApp, PortalDevice};

    const EVIL: &str = "<script>x</script>\"'&";
    const ESCAPED: &str = "&lt;script&gt;x&lt;/script&gt;&quot;'&amp;";

    async fn body(resp: Response) -> String {
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_security_key_page_escapes_the_options_and_allows_only_its_own_script() {
        for adding in [true, false] {
            let resp = key_page(EVIL, EVIL, adding);
            let csp = resp.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert_eq!(csp, super::super::KEY_PAGE_CSP);
            assert!(csp.contains("script-src 'self';"), "{csp}");
            assert!(!csp.contains("script-src 'unsafe"), "{csp}");
            let html = body(resp).await;
            // The one script is the file of this origin; the options are an escaped
            // attribute, never script text.
            assert_eq!(html.matches("<script").count(), 1, "{html}");
            assert!(
                html.contains("<script src=\"/static/webauthn.js\"></script>"),
                "{html}"
            );
            assert!(
                html.contains(&format!("data-options=\"{ESCAPED}\"")),
                "{html}"
            );
            let to = if adding {
                "/portal/change"
            } else {
                "/portal/key"
            };
            assert!(html.contains(&format!("action=\"{to}\"")), "{html}");
            assert_eq!(html.contains("value=\"finish-key\""), adding, "{html}");
        }
    }

    #[tokio::test]
    async fn a_history_that_cannot_be_read_is_said_so_not_shown_as_empty() {
        let page = |logins_unreadable| PortalPage {
            user: "alice".into(),
            csrf: "c".into(),
            devices: Vec::new(),
            bypass_left: 0,
            fresh_for: 0,
            admin: false,
            locked: Vec::new(),
            logins: Vec::new(),
            logins_unreadable,
            can_add_phone: false,
            can_add_push: false,
            can_add_key: false,
        };
        let html = body(home_page(&page(true))).await;
        assert!(html.contains("id=\"logins-unreadable\""), "{html}");
        assert!(html.contains("cannot be read right now"), "{html}");
        assert!(!html.contains("None recorded yet."), "{html}");
        let html = body(home_page(&page(false))).await;
        assert!(html.contains("None recorded yet."), "{html}");
        assert!(!html.contains("logins-unreadable"), "{html}");
    }

    #[tokio::test]
    async fn every_value_on_the_home_page_is_escaped() {
        let page = PortalPage {
            user: EVIL.into(),
            csrf: EVIL.into(),
            devices: vec![PortalDevice {
                id: 3,
                kind: "totp".into(),
                name: EVIL.into(),
                detail: EVIL.into(),
                default: false,
            }],
            bypass_left: 2,
            fresh_for: 0,
            admin: true,
            locked: vec![LockedUser {
                user: EVIL.into(),
                failures: 1,
                until: EVIL.into(),
            }],
            logins: vec![PortalLogin {
                id: 9,
                at: EVIL.into(),
                host: EVIL.into(),
                service: EVIL.into(),
                address: EVIL.into(),
                method: EVIL.into(),
                outcome: EVIL.into(),
                detail: EVIL.into(),
            }],
            logins_unreadable: false,
            can_add_phone: true,
            can_add_push: true,
            can_add_key: true,
        };
        let html = body(home_page(&page)).await;
        assert!(!html.contains("<script"), "{html}");
        assert!(
            html.contains(&format!("<b>{ESCAPED}</b>: {ESCAPED}")),
            "{html}"
        );
        assert!(
            html.contains(&format!("name=\"csrf\" value=\"{ESCAPED}\"")),
            "{html}"
        );
        assert!(
            html.contains(&format!("Remove \u{201c}{ESCAPED}\u{201d}")),
            "{html}"
        );
        assert!(html.contains(&format!(
            "aria-label=\"This wasn't me: the login of {ESCAPED}"
        )));
        assert!(
            html.contains(&format!("name=\"user\" value=\"{ESCAPED}\"")),
            "{html}"
        );
        for id in [
            "device-1",
            "login-1",
            "locked",
            "bypass-left",
            "phone-number",
            "token-kind",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "{id}: {html}");
        }
    }

    #[tokio::test]
    async fn the_new_app_page_draws_its_qr_code_and_escapes_the_secret() {
        let app = NewApp {
            user: EVIL.into(),
            uri: "otpauth://totp/mfa:alice?secret=JBSWY3DPEHPK3PXP".into(),
            secret: EVIL.into(),
            digits: 6,
            period: 30,
        };
        let html = body(new_app_page("Add the app", &app, confirm_app_form(EVIL))).await;
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("<p class=\"qr\"><svg role=\"img\""), "{html}");
        assert!(html.contains("<path d=\"M4 4h1v1h-1z"), "{html}");
        assert!(
            html.contains(&format!("<code id=\"secret\">{ESCAPED}</code>")),
            "{html}"
        );
    }
}
