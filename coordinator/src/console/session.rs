//! Who may look, and proof that a POST came from the console's own pages.
//!
//! Without API tokens the console is as open as the API. With tokens, `GET /ui/login`
//! asks for one; `POST /ui/login` checks it with [`ApiState::accepts`] (the API's check)
//! and keeps it in the `geosaga_session` cookie: `HttpOnly` (no script reads it),
//! `SameSite=Strict` (no other site's request carries it), `Path=/ui`, gone when the
//! browser closes. The token never appears in a URL or a page. [`guard`] checks the cookie
//! on every console route but the login form and the assets, again with
//! [`ApiState::accepts`], so a token removed from the configuration closes its sessions.
//!
//! Since a cookie now authenticates, every POST must prove it comes from a console page:
//! [`Posted`] accepts a form only when its `csrf` field equals the `geosaga_csrf` cookie
//! (a random value set by [`csrf_cookie`], which another site can neither read nor set)
//! and its `Origin`, when the browser sends one, is this host.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::page;
use crate::api::ApiState;

/// The cookie that holds the API token (hex-encoded).
pub const SESSION_COOKIE: &str = "geosaga_session";
/// The cookie that holds the CSRF token.
pub const CSRF_COOKIE: &str = "geosaga_csrf";

/// What every page needs to know of the request: the CSRF token its forms carry, and
/// whether there is a session to log out of.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The value of the `csrf` field of the page's forms.
    pub csrf: String,
    /// Whether API tokens are configured (the page offers to log out).
    pub login: bool,
}

/// The CSRF token of this request, put in its extensions by [`csrf_cookie`].
#[derive(Debug, Clone)]
struct CsrfToken(String);

impl FromRequestParts<ApiState> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Ctx, Self::Rejection> {
        let csrf = parts
            .extensions
            .get::<CsrfToken>()
            .map(|t| t.0.clone())
            .unwrap_or_default();
        Ok(Ctx {
            csrf,
            login: !state.tokens.is_empty(),
        })
    }
}

/// The value of cookie `name`, if the request has it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The attributes of the console's cookies; `Secure` when the request came over HTTPS
/// through a proxy that says so.
fn set_cookie(headers: &HeaderMap, name: &str, value: &str, max_age: Option<u32>) -> HeaderValue {
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let mut text = format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        text.push_str("; Secure");
    }
    HeaderValue::from_str(&text).expect("cookie values are hex")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The API token of the request's session, if it has one.
fn session_token(headers: &HeaderMap) -> Option<String> {
    String::from_utf8(unhex(cookie(headers, SESSION_COOKIE)?)?).ok()
}

/// Gives every console request a CSRF token: the cookie's, or a new random one that the
/// response sets.
pub async fn csrf_cookie(mut request: Request, next: Next) -> Response {
    let existing = cookie(request.headers(), CSRF_COOKIE)
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned);
    let fresh = existing.is_none();
    let token = existing.unwrap_or_else(|| hex(&rand::random::<[u8; 16]>()));
    let headers = request.headers().clone();
    request.extensions_mut().insert(CsrfToken(token.clone()));
    let mut response = next.run(request).await;
    if fresh {
        response
            .headers_mut()
            .append(header::SET_COOKIE, set_cookie(&headers, CSRF_COOKIE, &token, None));
    }
    response
}

/// Lets a request through when no token is configured or its session holds an accepted
/// one; otherwise a page asks to log in (fragments and POSTs get a 401).
pub async fn guard(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if state.tokens.is_empty() || session_token(request.headers()).is_some_and(|t| state.accepts(&t)) {
        return next.run(request).await;
    }
    let path = request.uri().path();
    let page = matches!(*request.method(), Method::GET | Method::HEAD) && !path.starts_with("/ui/fragments/");
    if page {
        let here = request.uri().path_and_query().map_or("/ui", |p| p.as_str());
        let next: String = url_encode(here);
        return Redirect::to(&format!("/ui/login?next={next}")).into_response();
    }
    page::message(
        StatusCode::UNAUTHORIZED,
        "Log in first",
        html! { p { "This needs a session. " a href="/ui/login" { "Log in" } " and try again." } },
    )
}

fn url_encode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .map(|s| s.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// Where to go after logging in: a console path, never another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if (n == "/ui" || n.starts_with("/ui/") || n.starts_with("/ui?"))
                && !n.contains("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n
        }
        _ => "/ui",
    }
}

/// A form a console page posted: its `csrf` field matched the cookie and its origin is
/// this host. Anything else is a 403 before the handler runs.
#[derive(Debug)]
pub struct Posted<T>(pub T);

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

impl<T: DeserializeOwned> FromRequest<ApiState> for Posted<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, Response> {
        let forbidden = |why: &str| {
            page::message(
                StatusCode::FORBIDDEN,
                "Refused",
                html! { p { (why) } p { "Go back, reload the page and try again." } },
            )
        };
        let headers = request.headers().clone();
        if !same_origin(&headers) {
            return Err(forbidden("This form was sent from another site."));
        }
        let expected = request.extensions().get::<CsrfToken>().map(|t| t.0.clone());
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|_| forbidden("The form could not be read."))?;
        let sent: CsrfField =
            serde_urlencoded::from_bytes(&body).map_err(|_| forbidden("The form could not be read."))?;
        let fresh = cookie(&headers, CSRF_COOKIE).is_none();
        match expected {
            Some(expected) if !fresh && equal(expected.as_bytes(), sent.csrf.as_bytes()) => {}
            _ => {
                return Err(forbidden(
                    "The form's CSRF token does not match this browser's session.",
                ));
            }
        }
        serde_urlencoded::from_bytes(&body)
            .map(Posted)
            .map_err(|e| page::message(StatusCode::BAD_REQUEST, "Bad form", html! { p { (e.to_string()) } }))
    }
}

/// No `Origin` (an old browser, or not a browser: the CSRF token decides), or one naming
/// the host the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or_default();
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The query of the login form.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /ui/login`: the login form (without tokens there is nothing to log in to).
pub async fn login_form(
    State(state): State<ApiState>,
    ctx: Ctx,
    axum::extract::Query(query): axum::extract::Query<LoginQuery>,
) -> Response {
    if state.tokens.is_empty() {
        return Redirect::to("/ui").into_response();
    }
    login_page(&ctx, safe_next(query.next.as_deref()), None, StatusCode::OK)
}

fn login_page(ctx: &Ctx, next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let body: Markup = html! {
        h1 { "Log in" }
        p { "This coordinator needs an API token (one of its " code { "--token" } " values)." }
        @if let Some(error) = error {
            p.alert role="alert" { (error) }
        }
        form.login method="post" action="/ui/login" {
            input type="hidden" name="csrf" value=(ctx.csrf);
            input type="hidden" name="next" value=(next);
            label for="token" { "API token" }
            input #token type="password" name="token" required autocomplete="current-password" autofocus;
            button type="submit" { "Log in" }
        }
    };
    page::render(
        status,
        "Log in",
        &Ctx {
            login: false,
            ..ctx.clone()
        },
        None,
        body,
    )
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub struct Login {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

/// `POST /ui/login`: checks the token like the API does and opens a session.
pub async fn login(
    State(state): State<ApiState>,
    ctx: Ctx,
    headers: HeaderMap,
    Posted(form): Posted<Login>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    if state.tokens.is_empty() {
        return Redirect::to(next).into_response();
    }
    if form.token.is_empty() || !state.accepts(&form.token) {
        return login_page(
            &ctx,
            next,
            Some("That token is not accepted."),
            StatusCode::UNAUTHORIZED,
        );
    }
    let mut response = Redirect::to(next).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, &hex(form.token.as_bytes()), None),
    );
    response
}

/// The logout form's fields (only the CSRF token, which [`Posted`] checks).
#[derive(Debug, Deserialize)]
pub struct Logout {}

/// `POST /ui/logout`: forgets the session.
pub async fn logout(headers: HeaderMap, Posted(_): Posted<Logout>) -> Response {
    let mut response = Redirect::to("/ui/login").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(&headers, SESSION_COOKIE, "", Some(0)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/ui/sagas/1?x=2")), "/ui/sagas/1?x=2");
        assert_eq!(safe_next(Some("/ui?status=stuck")), "/ui?status=stuck");
        for bad in [
            "//evil.example/ui",
            "https://evil.example",
            "/ui//evil",
            "/uix",
            "/ui/\\evil",
            "/v1/sagas",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui");
    }

    #[test]
    fn tokens_survive_the_cookie() {
        let token = "s3cret; with=odd \"chars\"";
        let mut headers = HeaderMap::new();
        let value = format!("other=1; {SESSION_COOKIE}={}", hex(token.as_bytes()));
        headers.insert(header::COOKIE, HeaderValue::from_str(&value).unwrap());
        assert_eq!(session_token(&headers).as_deref(), Some(token));
    }

    #[test]
    fn origins_must_name_this_host() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7379"));
        assert!(same_origin(&headers), "no Origin: the CSRF token decides");
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:7379"));
        assert!(same_origin(&headers));
        for other in ["http://evil.example", "null", "http://127.0.0.1:7380"] {
            headers.insert(header::ORIGIN, HeaderValue::from_static(other));
            assert!(!same_origin(&headers), "{other}");
        }
    }
}
