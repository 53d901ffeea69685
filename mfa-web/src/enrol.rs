//! The enrolment link's pages (`unenrolled = "link"`): the password, then the new app (its
//! QR code drawn as inline SVG, the secret to type by hand) and a code from it, then done.
//! mfad keeps the link's progress (password checked, the pending secret) and decides
//! everything; these pages only render its replies.
//!
//! Every form carries a CSRF token that must equal the `mfa_enrol` cookie (HttpOnly,
//! SameSite=Strict, Secure over TLS): a post from another site carries neither.

use super::{
    App, ClientAddr, Shared, alert, html, mfad_down, password_and_continue, post_form, unexpected,
};
use axum::extract::{Extension, Form, Path, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use maud::Markup;
use mfa_proto::web::{NewApp, Password};
use mfa_proto::{Closed, WebReply, WebRequest};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The cookie that holds the form's CSRF token.
pub const COOKIE_NAME: &str = "mfa_enrol";
/// How long the cookie lives: the longest a link lives by default (mfad enforces the
/// link's own expiry and the idle timeout).
const COOKIE_MAX_AGE: u64 = 900;

/// A new random CSRF token (256 bits, URL-safe base64).
pub(super) fn new_csrf() -> String {
    let mut raw = Zeroizing::new([0u8; 32]);
    // mfa-web holds no Random of its own; the OS generator is what a test could not
    // control anyway (the token is compared, never predicted).
    #[allow(clippy::disallowed_methods)]
    rand::RngCore::fill_bytes(&mut rand::rng(), raw.as_mut());
    data_encoding::BASE64URL_NOPAD.encode(raw.as_ref())
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    cookie_named(headers, COOKIE_NAME)
}

/// The value of the cookie `name` the request carries.
pub(super) fn cookie_named(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(resp: &mut Response, value: &str, secure: bool) {
    let cookie = format!(
        "{COOKIE_NAME}={value}; Max-Age={COOKIE_MAX_AGE}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
}

fn link_gone(why: Closed) -> Response {
    let (status, text) = match why {
        Closed::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Enrolment is not available right now. Nothing was changed. Try again in a moment.",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "This enrolment link is unknown, has expired, or was already used. Nothing was \
             changed. Log in with ssh again to get a new link.",
        ),
    };
    html(status, "Enrolment link closed", html! { p { (text) } })
}

/// A form for `step` of the link `token`. `token` passed `looks_like_token`; the form posts
/// to this page's own relative address.
fn step_form(token: &str, csrf: &str, step: &str, fields: Markup) -> Markup {
    post_form(
        token,
        csrf,
        html! {
            input type="hidden" name="step" value=(step);
            (fields)
        },
    )
}

/// The password form, after `note`.
fn password_page(token: &str, csrf: &str, user: &str, note: Markup) -> Response {
    let fields = password_and_continue(html! { "Password for " (user) });
    let body = html! {
        p { "This sets up an authenticator app for " b { (user) } ". First, your password." }
        (note)
        (step_form(token, csrf, "password", fields))
    };
    html(StatusCode::OK, "Set up two-factor login", body)
}

/// The QR code of `data` as inline SVG (no script, no external image).
fn qr_svg(data: &str) -> Markup {
    let Ok(code) = qrcode::QrCode::new(data.as_bytes()) else {
        return html! {};
    };
    let width = code.width();
    let quiet = 4;
    let size = width + 2 * quiet;
    let path: String = code
        .to_colors()
        .iter()
        .enumerate()
        .filter(|(_, color)| **color == qrcode::Color::Dark)
        .map(|(i, _)| format!("M{} {}h1v1h-1z", i % width + quiet, i / width + quiet))
        .collect();
    let view_box = format!("0 0 {size} {size}");
    html! {
        svg role="img" aria-label="QR code of the new app's account"
            xmlns="http://www.w3.org/2000/svg" viewBox=(view_box) width="260" height="260"
            shape-rendering="crispEdges" {
            rect width=(size) height=(size) fill="#fff" {}
            path d=(path) fill="#000" {}
        }
    }
}

fn code_form(token: &str, csrf: &str, digits: Option<u32>) -> Markup {
    let fields = html! {
        label for="code" { "Code the app shows now" }
        br;
        input.wide #code name="code" inputmode="numeric" autocomplete="one-time-code"
            pattern="[0-9]*" maxlength=[digits] required;
        br;
        button type="submit" { "Finish" }
    };
    step_form(token, csrf, "code", fields)
}

/// A new app's account for the user to add: its QR code (inline SVG), and the secret to
/// type by hand, then `form`. Not kept by the browser's cache.
pub(super) fn new_app_page(title: &str, app: &NewApp, form: Markup) -> Response {
    let body = html! {
        p { "Scan this QR code with your authenticator app (for " b { (app.user) } "):" }
        p.qr { (qr_svg(&app.uri)) }
        p {
            "Or add the account by hand (" (app.digits) " digits, every " (app.period)
            " s, SHA1):"
        }
        p { "Secret: " code #secret { (app.secret) } }
        (form)
    };
    // The secret is not kept by the browser's cache (`security_headers`: no-store).
    html(StatusCode::OK, title, body)
}

fn retry_app_form(token: &str, csrf: &str) -> Markup {
    let button = html! { button type="submit" { "Start again with a new app entry" } };
    step_form(token, csrf, "new-app", button)
}

/// Whose live link `token` is, or the page to show instead.
async fn link_user(app: &App, token: &str) -> Result<String, Response> {
    match app
        .mfad
        .ask(WebRequest::OpenEnrolment {
            token: token.to_string(),
        })
        .await
    {
        Ok(WebReply::Enrolment { user }) => Ok(user),
        Ok(WebReply::Closed { why }) => Err(link_gone(why)),
        Ok(_) => Err(unexpected()),
        Err(e) => Err(mfad_down(&e)),
    }
}

/// GET /enroll/{token}: whose link it is, and the password form.
pub(super) async fn show(State(app): Shared, Path(token): Path<String>) -> Response {
    if !mfa_proto::web::looks_like_token(&token) {
        return link_gone(Closed::Unknown);
    }
    let user = match link_user(&app, &token).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    let csrf = new_csrf();
    let mut resp = password_page(&token, &csrf, &user, html! {});
    set_cookie(&mut resp, &csrf, app.secure_cookies);
    resp
}

#[derive(Deserialize)]
pub(super) struct StepForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    step: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

fn forbidden() -> Response {
    html(
        StatusCode::FORBIDDEN,
        "Form expired",
        html! {
            p {
                "This form has expired or did not come from this page. Nothing was changed. \
                 Open the enrolment link again."
            }
        },
    )
}

/// POST /enroll/{token}: one step (password, code, or a new app entry), CSRF-checked first.
pub(super) async fn step(
    State(app): Shared,
    Path(token): Path<String>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    Form(form): Form<StepForm>,
) -> Response {
    let password = form.password.map(Zeroizing::new);
    if !mfa_proto::web::looks_like_token(&token) {
        return link_gone(Closed::Unknown);
    }
    let Some(cookie) = cookie_of(&headers) else {
        return forbidden();
    };
    if form.csrf.is_empty() || !bool::from(cookie.as_bytes().ct_eq(form.csrf.as_bytes())) {
        return forbidden();
    }
    let csrf = form.csrf.as_str();
    let client = client.map(|Extension(ClientAddr(ip))| ip.to_string());
    match form.step.as_str() {
        "password" => {
            let Some(password) = password else {
                return forbidden();
            };
            let reply = app
                .mfad
                .ask(WebRequest::EnrolmentPassword {
                    token: token.clone(),
                    password: Password::new(password.as_str().to_owned()),
                    client: client.clone(),
                })
                .await;
            match reply {
                Ok(WebReply::PasswordAccepted) => new_app(&app, &token, csrf).await,
                Ok(WebReply::PasswordRefused { locked }) => {
                    let user = match link_user(&app, &token).await {
                        Ok(user) => user,
                        Err(page) => return page,
                    };
                    let note = if locked {
                        "Your account is locked after too many failures. Ask your \
                         administrator, or wait for it to unlock."
                    } else {
                        "That password is not right (or too many were tried with this link)."
                    };
                    password_page(&token, csrf, &user, alert(note))
                }
                Ok(WebReply::Closed { why }) => link_gone(why),
                Ok(_) => unexpected(),
                Err(e) => mfad_down(&e),
            }
        }
        "new-app" => new_app(&app, &token, csrf).await,
        "code" => {
            let code = form.code.unwrap_or_default();
            match app
                .mfad
                .ask(WebRequest::ConfirmTotp {
                    token: token.clone(),
                    code,
                    client,
                })
                .await
            {
                Ok(WebReply::Enrolled { user }) => html(
                    StatusCode::OK,
                    "Done",
                    html! {
                        p {
                            "The app is enrolled for " b { (user) } ". Your next ssh login asks \
                             for a code from this app."
                        }
                        p { "You can close this page." }
                    },
                ),
                Ok(WebReply::WrongCode { tries_left }) => {
                    let again = if tries_left > 0 {
                        code_form(&token, csrf, None)
                    } else {
                        retry_app_form(&token, csrf)
                    };
                    let note = format!(
                        "That code does not match. Check the app (and that the phone's clock is \
                         right). {tries_left} tries left."
                    );
                    html(
                        StatusCode::OK,
                        "Add the app",
                        html! { (alert(note)) (again) },
                    )
                }
                Ok(WebReply::OutOfOrder) => back_to_start(&app, &token, csrf).await,
                Ok(WebReply::PasswordRefused { .. }) => html(
                    StatusCode::FORBIDDEN,
                    "Account locked",
                    html! { p { "Your account is locked. Nothing was enrolled." } },
                ),
                Ok(WebReply::Closed { why }) => link_gone(why),
                Ok(_) => unexpected(),
                Err(e) => mfad_down(&e),
            }
        }
        _ => forbidden(),
    }
}

async fn new_app(app: &App, token: &str, csrf: &str) -> Response {
    match app
        .mfad
        .ask(WebRequest::BeginTotp {
            token: token.to_string(),
        })
        .await
    {
        Ok(WebReply::NewApp { app: new }) => new_app_page(
            "Add the app",
            &new,
            code_form(token, csrf, Some(new.digits)),
        ),
        Ok(WebReply::OutOfOrder) => back_to_start(app, token, csrf).await,
        Ok(WebReply::Closed { why }) => link_gone(why),
        Ok(_) => unexpected(),
        Err(e) => mfad_down(&e),
    }
}

/// The password again (it was not checked, or the page sat idle too long).
async fn back_to_start(app: &App, token: &str, csrf: &str) -> Response {
    match link_user(app, token).await {
        Ok(user) => password_page(
            token,
            csrf,
            &user,
            alert("Please enter your password (again)."),
        ),
        Err(page) => page,
    }
}
