//! The self-service portal's pages (`/portal`, `[web] portal = true` in mfad.toml): sign in
//! with the password and a code, then my devices (make one the default, remove one), new
//! bypass codes (shown once), sign out. mfad keeps the session (in its store) and decides
//! everything; these pages only render its replies.
//!
//! The session is the `mfa_session` cookie (`HttpOnly; SameSite=Strict; Path=/portal`, plus
//! `Secure` over TLS); every form carries the session's CSRF token, and the sign-in form
//! (before there is a session) a token equal to the `mfa_signin` cookie.

use super::enrol::{cookie_named, new_app_page, new_csrf};
use super::{App, ClientAddr, Shared, escape, html, mfad_down, unexpected};
use axum::extract::{Extension, Form, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
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
    let mut resp = html(StatusCode::SEE_OTHER, "Two-factor settings", "");
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
        "<p>The self-service pages are not enabled on this site. Use the <code>mfa</code> \
         command on a login node, or ask your administrator.</p>",
    )
}

fn unavailable() -> Response {
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service unavailable",
        "<p>The two-factor service cannot answer right now. Nothing was changed. Try again \
         in a moment.</p>",
    )
}

fn bad_form() -> Response {
    html(
        StatusCode::FORBIDDEN,
        "Form expired",
        "<p>This form has expired or did not come from this site. Nothing was changed. \
         <a href=\"/portal\">Start again</a>.</p>",
    )
}

fn sign_in_page(app: &App, note: &str) -> Response {
    let csrf = new_csrf();
    let resp = html(
        StatusCode::OK,
        "Sign in",
        &format!(
            "<p>Sign in to see and change your two-factor settings.</p>{note}\
             <form method=\"post\" action=\"/portal/sign-in\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label for=\"user\">User name</label><br>\
             <input class=\"wide\" id=\"user\" name=\"user\" autocomplete=\"username\" \
             autocapitalize=\"none\" required><br>\
             <label for=\"password\">Password</label><br>\
             <input class=\"wide\" id=\"password\" name=\"password\" type=\"password\" \
             autocomplete=\"current-password\" required><br>\
             <button type=\"submit\">Continue</button></form>",
            csrf = escape(&csrf),
        ),
    );
    with_cookie(resp, cookie(SIGNIN_COOKIE, &csrf, 900, app.secure_cookies))
}

fn code_page(
    user: &str,
    csrf: &str,
    for_change: bool,
    offers: &[PortalVia],
    note: &str,
) -> Response {
    let why = if for_change {
        "Changes need a second factor from the last few minutes. Type a current code (or use \
         your phone below), then make the change again."
    } else {
        "Now a code from your authenticator app or hardware token, or one of your bypass \
         codes."
    };
    html(
        StatusCode::OK,
        "Second factor",
        &format!(
            "<p>Signed in as <b>{user}</b>. {why}</p>{note}{form}{phone}{out}",
            user = escape(user),
            form = code_form(csrf),
            phone = phone_offers(csrf, offers),
            out = sign_out_form(csrf),
        ),
    )
}

fn code_form(csrf: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/portal/code\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label for=\"code\">Code</label><br>\
         <input class=\"wide\" id=\"code\" name=\"code\" inputmode=\"numeric\" \
         autocomplete=\"one-time-code\" required><br>\
         <button type=\"submit\">Continue</button></form>",
        escape(csrf)
    )
}

/// The buttons that bring the second factor by phone, for the devices the user has.
fn phone_offers(csrf: &str, offers: &[PortalVia]) -> String {
    if offers.is_empty() {
        return String::new();
    }
    let mut out = String::from("<h2>Or by phone</h2>");
    for via in offers {
        let label = match via {
            PortalVia::Sms => "Text me a code",
            PortalVia::Push => "Send a push to my phone",
            PortalVia::Call => "Call me",
        };
        out.push_str(&format!(
            "<form method=\"post\" action=\"/portal/send\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"via\" value=\"{via}\">\
             <button type=\"submit\">{label}</button></form>",
            csrf = escape(csrf),
            via = via.as_str(),
        ));
    }
    out
}

fn sign_out_form(csrf: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/portal/sign-out\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\">Sign out</button></form>",
        escape(csrf)
    )
}

fn change_form(csrf: &str, action: &str, device: Option<i64>, label: &str) -> String {
    let device = device
        .map(|id| format!("<input type=\"hidden\" name=\"device\" value=\"{id}\">"))
        .unwrap_or_default();
    format!(
        "<form method=\"post\" action=\"/portal/change\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"action\" value=\"{action}\">{device}\
         <button type=\"submit\">{label}</button></form>",
        csrf = escape(csrf),
        label = escape(label),
    )
}

/// The form that renames device `id` (the `n`th listed, called `name`).
fn rename_form(csrf: &str, id: i64, n: usize, name: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/portal/change\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"action\" value=\"rename\">\
         <input type=\"hidden\" name=\"device\" value=\"{id}\">\
         <label for=\"name-{n}\">New name for \u{201c}{name}\u{201d}</label><br>\
         <input class=\"wide\" id=\"name-{n}\" name=\"name\" maxlength=\"64\" required>\
         <br><button type=\"submit\">Rename</button></form>",
        csrf = escape(csrf),
        name = escape(name),
    )
}

/// The forms that add a phone, a push device and a hardware token.
fn add_forms(page: &PortalPage) -> String {
    let csrf = escape(&page.csrf);
    let start = |action: &str| {
        format!(
            "<form method=\"post\" action=\"/portal/change\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"action\" value=\"{action}\">"
        )
    };
    let mut forms = String::new();
    if page.can_add_phone {
        forms.push_str(&format!(
            "<h3>A phone (text messages and calls)</h3>{}\
             <label for=\"phone-number\">Number, with its country code</label><br>\
             <input class=\"wide\" id=\"phone-number\" name=\"number\" type=\"tel\" \
             autocomplete=\"tel\" placeholder=\"+1 555 123 4567\" required><br>\
             <label for=\"phone-name\">Name (optional)</label><br>\
             <input class=\"wide\" id=\"phone-name\" name=\"name\" maxlength=\"64\"><br>\
             <button type=\"submit\">Text me a code</button></form>",
            start("begin-phone")
        ));
    }
    if page.can_add_push {
        forms.push_str(&format!(
            "<h3>A push device (the ntfy app)</h3>{}\
             <label for=\"push-name\">Name (optional)</label><br>\
             <input class=\"wide\" id=\"push-name\" name=\"name\" maxlength=\"64\"><br>\
             <button type=\"submit\">Add a push device</button></form>",
            start("begin-push")
        ));
    }
    forms.push_str(&format!(
        "<h3>A hardware token</h3>{}\
         <label for=\"token-kind\">Kind</label><br>\
         <select id=\"token-kind\" name=\"kind\">\
         <option value=\"hotp\">counter-based (press the button for a code)</option>\
         <option value=\"totp\">time-based (a new code every 30 s)</option></select><br>\
         <label for=\"token-secret\">Secret, from the token's seed file: base32, or \
         <code>hex:</code> and hex digits</label>\
         <br><input class=\"wide\" id=\"token-secret\" name=\"secret\" autocomplete=\"off\" \
         required><br>\
         <label for=\"token-code\">A code it shows now</label><br>\
         <input class=\"wide\" id=\"token-code\" name=\"code\" inputmode=\"numeric\" \
         autocomplete=\"one-time-code\" required><br>\
         <label for=\"token-name\">Name (optional)</label><br>\
         <input class=\"wide\" id=\"token-name\" name=\"name\" maxlength=\"64\"><br>\
         <button type=\"submit\">Add the token</button></form>",
        start("add-token")
    ));
    forms
}

/// The page that asks for the code texted to the new phone.
fn phone_code_page(csrf: &str, masked: &str, note: &str) -> Response {
    html(
        StatusCode::OK,
        "Add a phone",
        &format!(
            "<p>A code was texted to {masked}.</p>{note}\
             <form method=\"post\" action=\"/portal/change\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"action\" value=\"confirm-phone\">\
             <label for=\"code\">Code from the text message</label><br>\
             <input class=\"wide\" id=\"code\" name=\"code\" inputmode=\"numeric\" \
             autocomplete=\"one-time-code\" required><br>\
             <button type=\"submit\">Add the phone</button></form>\
             <p><a href=\"/portal\">Cancel</a></p>",
            masked = escape(masked),
            csrf = escape(csrf),
        ),
    )
}

/// A form with one button that posts `action`.
fn button_form(csrf: &str, action: &str, label: &str) -> String {
    change_form(csrf, action, None, label)
}

/// The new push device's topic, to subscribe to before the test notification.
fn push_topic_page(csrf: &str, topic: &str, server: &str) -> Response {
    let mut resp = html(
        StatusCode::OK,
        "Add a push device",
        &format!(
            "<p>In the ntfy app, subscribe to this topic on the server <code>{server}</code>:</p>\
             <p><code id=\"topic\">{topic}</code></p>\
             <p class=\"note\">Or open <code>{server}/{topic}</code> on the phone. Keep the \
             topic to yourself: whoever subscribes to it can answer your login requests.</p>\
             {send}<p><a href=\"/portal\">Cancel</a></p>",
            server = escape(server),
            topic = escape(topic),
            send = button_form(csrf, "test-push", "Send a test notification"),
        ),
    );
    resp.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    resp
}

/// The test notification is out (or was not approved): Continue, or send it again.
fn push_waiting_page(csrf: &str, note: &str) -> Response {
    html(
        StatusCode::OK,
        "Add a push device",
        &format!(
            "<p id=\"note\" role=\"status\">{}</p>{}{}<p><a href=\"/portal\">Cancel</a></p>",
            escape(note),
            button_form(csrf, "check-push", "Continue"),
            button_form(csrf, "test-push", "Send the test notification again"),
        ),
    )
}

/// The recent logins, each with its "this wasn't me" button.
fn logins_part(csrf: &str, logins: &[PortalLogin]) -> String {
    let mut list = String::from("<h2>My recent logins</h2><ol id=\"logins\" class=\"logins\">");
    if logins.is_empty() {
        list.push_str("<li>None recorded yet.</li>");
    }
    for (i, l) in logins.iter().enumerate() {
        let method = if l.method == "-" {
            String::new()
        } else {
            format!(" with {}", escape(&l.method))
        };
        list.push_str(&format!(
            "<li id=\"login-{n}\"><b>{at}</b>: <span class=\"outcome\">{outcome}</span>{method}\
             <br>from <span class=\"address\">{address}</span> to {host} ({service})\
             <br><span class=\"note\">{detail}</span>\
             <form method=\"post\" action=\"/portal/change\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"action\" value=\"not-me\">\
             <input type=\"hidden\" name=\"login\" value=\"{id}\">\
             <button type=\"submit\" class=\"report\" aria-label=\"This wasn't me: the \
             login of {at} from {address}\">This wasn't me</button></form></li>",
            n = i + 1,
            at = escape(&l.at),
            outcome = escape(&l.outcome),
            address = escape(&l.address),
            host = escape(&l.host),
            service = escape(&l.service),
            detail = escape(&l.detail),
            csrf = escape(csrf),
            id = l.id,
        ));
    }
    list.push_str(
        "</ol><p class=\"note\">\u{201c}This wasn't me\u{201d} locks your account at once \
         and alerts your administrator.</p>",
    );
    list
}

fn home_page(page: &PortalPage) -> Response {
    let mut devices = String::from("<ul class=\"devices\">");
    for (i, d) in page.devices.iter().enumerate() {
        let default = if d.default {
            " <b class=\"default\">(default: used by scp, sftp, rsync and file transfer \
             apps)</b>"
                .to_string()
        } else {
            change_form(
                &page.csrf,
                "set-default",
                Some(d.id),
                &format!("Make \u{201c}{}\u{201d} the default", d.name),
            )
        };
        devices.push_str(&format!(
            "<li id=\"device-{n}\"><b>{name}</b>: {detail}{default}{rename}{remove}</li>",
            n = i + 1,
            name = escape(&d.name),
            detail = escape(&d.detail),
            rename = rename_form(&page.csrf, d.id, i + 1, &d.name),
            remove = change_form(
                &page.csrf,
                "remove",
                Some(d.id),
                &format!("Remove \u{201c}{}\u{201d}", d.name)
            ),
        ));
    }
    devices.push_str("</ul>");
    let admin = if page.admin {
        admin_part(&page.csrf, &page.locked)
    } else {
        String::new()
    };
    html(
        StatusCode::OK,
        "My two-factor settings",
        &format!(
            "<p>Signed in as <b>{user}</b>.</p><h2>My devices</h2>{devices}\
             <h2>Bypass codes</h2><p id=\"bypass-left\">{left} unused.</p>{codes}\
             <h2>Add a device</h2>{add}{more}{logins}{admin}{out}",
            more = add_forms(page),
            logins = logins_part(&page.csrf, &page.logins),
            add = change_form(&page.csrf, "begin-app", None, "Add an authenticator app"),
            user = escape(&page.user),
            left = page.bypass_left,
            codes = change_form(&page.csrf, "new-bypass-codes", None, "New bypass codes"),
            out = sign_out_form(&page.csrf),
        ),
    )
}

/// The form an administrator acts on a user with (`user` filled in, if given).
fn admin_form(csrf: &str, user: &str) -> String {
    let button = |action: AdminAction, label: &str| {
        format!(
            "<button type=\"submit\" name=\"action\" value=\"{}\">{label}</button>",
            action.as_str()
        )
    };
    format!(
        "<form method=\"post\" action=\"/portal/admin\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"admin-user\">User name</label><br>\
         <input class=\"wide\" id=\"admin-user\" name=\"user\" value=\"{user}\" \
         autocapitalize=\"none\" required><br>{status}{unlock}{codes}{reset}</form>",
        csrf = escape(csrf),
        user = escape(user),
        status = button(AdminAction::Status, "Status"),
        unlock = button(AdminAction::Unlock, "Unlock"),
        codes = button(AdminAction::BypassCodes, "Issue bypass codes"),
        reset = button(AdminAction::Reset, "Reset (remove every device and code)"),
    )
}

fn admin_part(csrf: &str, locked: &[LockedUser]) -> String {
    let mut list = String::from("<ul id=\"locked\">");
    if locked.is_empty() {
        list.push_str("<li>None.</li>");
    }
    for l in locked {
        list.push_str(&format!(
            "<li><b>{user}</b>: locked until {until}{failures}\
             <form method=\"post\" action=\"/portal/admin\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"user\" value=\"{user}\">\
             <button type=\"submit\" name=\"action\" value=\"unlock\">Unlock {user}</button>\
             </form></li>",
            user = escape(&l.user),
            failures = if l.failures > 0 {
                format!(" ({} failures since)", l.failures)
            } else {
                String::new()
            },
            until = escape(&l.until),
            csrf = escape(csrf),
        ));
    }
    list.push_str("</ul>");
    format!(
        "<h2>Administration</h2><h3>Locked accounts</h3>{list}<h3>A user</h3>{}",
        admin_form(csrf, "")
    )
}

fn confirm_app_form(csrf: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/portal/change\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"action\" value=\"confirm-app\">\
         <label for=\"code\">Code the app shows now</label><br>\
         <input class=\"wide\" id=\"code\" name=\"code\" inputmode=\"numeric\" \
         autocomplete=\"one-time-code\" required><br>\
         <button type=\"submit\">Add the app</button></form>\
         <p><a href=\"/portal\">Cancel</a></p>",
        escape(csrf)
    )
}

fn changed_page(note: &str, codes: &ShownCodes) -> Response {
    let list = if codes.0.is_empty() {
        String::new()
    } else {
        let mut list = Zeroizing::new(String::from("<ol id=\"codes\" class=\"codes\">"));
        for code in &codes.0 {
            list.push_str(&format!("<li><code>{}</code></li>", escape(code)));
        }
        list.push_str("</ol><p class=\"note\">Print this page, or write the codes down.</p>");
        list.to_string()
    };
    let mut resp = html(
        StatusCode::OK,
        "Done",
        &format!(
            "<p id=\"note\">{}</p>{list}<p><a href=\"/portal\">Back to my settings</a></p>",
            escape(note)
        ),
    );
    // Codes shown once: not kept by the browser's cache.
    resp.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    resp
}

fn refused(why: SignInRefusal) -> &'static str {
    match why {
        SignInRefusal::Wrong => {
            "<p class=\"error\" role=\"alert\">That user name and password do not match.</p>"
        }
        SignInRefusal::Locked => {
            "<p class=\"error\" role=\"alert\">Your account is locked after too many \
             failures. Ask your administrator, or wait for it to unlock.</p>"
        }
        SignInRefusal::NotEnrolled => {
            "<p class=\"error\" role=\"alert\">You have no device that gives codes yet. Log \
             in with ssh to enrol one.</p>"
        }
    }
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
        } => code_page(&user, &csrf, for_change, &offers, ""),
        WebReply::PortalChanged { note, codes } => changed_page(&note, &codes),
        WebReply::SignInRefused { why } => sign_in_page(app, refused(why)),
        WebReply::BadForm => bad_form(),
        WebReply::NotAdmin => html(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "<p>Only members of the administrators' group may do this. Nothing was done.</p>\
             <p><a href=\"/portal\">Back to my settings</a></p>",
        ),

        WebReply::Closed {
            why: Closed::Unavailable,
        } => unavailable(),
        WebReply::Closed { .. } => with_cookie(
            sign_in_page(
                app,
                "<p class=\"note\">Your session has ended. Sign in again.</p>",
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
        return sign_in_page(&app, "");
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
            let note = format!(
                "<p class=\"error\" role=\"alert\">That code is not right. {tries_left} \
                 tries left.</p>"
            );
            match app.mfad.ask(WebRequest::PortalView { session }).await {
                Ok(WebReply::PortalNeedsCode {
                    user,
                    csrf,
                    for_change,
                    offers,
                }) => code_page(&user, &csrf, for_change, &offers, &note),
                Ok(WebReply::Portal { page }) => {
                    code_page(&page.user, &page.csrf, true, &[], &note)
                }
                Ok(reply) => session_reply(&app, reply),
                Err(e) => mfad_down(&e),
            }
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
        Ok(WebReply::PortalSent { via, note }) => {
            let note = format!("<p id=\"note\" role=\"status\">{}</p>", escape(&note));
            let body = match via {
                PortalVia::Sms => format!("{note}{}", code_form(&form.csrf)),
                _ => format!(
                    "{note}<p><a class=\"button\" id=\"continue\" href=\"/portal\">Continue</a>\
                     </p><p class=\"note\">Or type a code instead:</p>{}",
                    code_form(&form.csrf)
                ),
            };
            html(StatusCode::OK, "Second factor", &body)
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
}

/// POST /portal/change: one change (default, removal, new bypass codes).
pub(super) async fn change(
    State(app): Shared,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    Form(form): Form<ChangeForm>,
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
            secret: Zeroizing::new(form.secret.clone().unwrap_or_default()),
            code: form.code.as_deref().unwrap_or_default().to_string(),
        },
        ("not-me", _) => match form.login {
            Some(login) => PortalChange::NotMe { login },
            None => return bad_form(),
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
            &confirm_app_form(&form.csrf),
        ),
        Ok(WebReply::PhoneCodeSent { masked }) => phone_code_page(&form.csrf, &masked, ""),
        Ok(WebReply::WrongCode { tries_left }) if form.action == "confirm-phone" => {
            phone_code_page(
                &form.csrf,
                "your new phone",
                &format!(
                    "<p class=\"error\" role=\"alert\">That code does not match. {tries_left} \
                     tries left.</p>"
                ),
            )
        }
        Ok(WebReply::NewPushTopic { topic, server }) => {
            push_topic_page(&form.csrf, &topic, &server)
        }
        Ok(WebReply::PushWaiting { note }) => push_waiting_page(&form.csrf, &note),
        Ok(WebReply::WrongCode { tries_left }) => html(
            StatusCode::OK,
            "Add an authenticator app",
            &format!(
                "<p class=\"error\" role=\"alert\">That code does not match the new app. \
                 Check the app (and that the phone's clock is right). {tries_left} tries \
                 left.</p>{}",
                confirm_app_form(&form.csrf)
            ),
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
        return sign_in_page(&app, "");
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
            sign_in_page(&app, "<p class=\"note\">Signed out.</p>"),
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
            &format!(
                "<pre id=\"status\">{}</pre>{}<p><a href=\"/portal\">Back</a></p>",
                escape(&report),
                admin_form(&form.csrf, &user)
            ),
        ),
        Ok(reply) => session_reply(&app, reply),
        Err(e) => mfad_down(&e),
    }
}
