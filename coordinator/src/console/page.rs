//! The page shell every console page shares, a refusal shown as its problem document, and
//! the formatters of times, durations and JSON.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::assets;
use super::session::Ctx;
use super::tone::Shown;
use crate::api::ApiError;
use crate::api::error::Kind as _;
use crate::api::views::rfc3339;

/// The section of the console a page belongs to (marked in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Sagas.
    Sagas,
    /// Definitions.
    Definitions,
    /// Regions.
    Regions,
}

/// Largest JSON text shown on a page; beyond it, the page says where to read the rest.
pub const MAX_JSON_CHARS: usize = 64 * 1024;

/// A whole page.
pub fn render(status: StatusCode, title: &str, ctx: &Ctx, section: Option<Section>, body: Markup) -> Response {
    let nav = |s: Section, href: &str, label: &str| {
        html! {
            @if section == Some(s) {
                a href=(href) aria-current="page" { (label) }
            } @else {
                a href=(href) { (label) }
            }
        }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · geosaga" }
                link rel="stylesheet" href=(assets::url("console.css"));
                link rel="icon" href=(assets::url("favicon.svg")) type="image/svg+xml";
                script src=(assets::url("console.js")) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="Console" {
                        a.brand href="/ui" { "geosaga" }
                        (nav(Section::Sagas, "/ui", "Sagas"))
                        (nav(Section::Definitions, "/ui/definitions", "Definitions"))
                        (nav(Section::Regions, "/ui/regions", "Regions"))
                    }
                    @if ctx.login {
                        form.logout method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(ctx.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    };
    html_response(status, markup)
}

/// A page with a message only (refusals, missing pages).
pub fn message(status: StatusCode, title: &str, body: Markup) -> Response {
    let ctx = Ctx {
        csrf: String::new(),
        login: false,
    };
    render(status, title, &ctx, None, html! { h1 { (title) } (body) })
}

/// An HTML answer.
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        markup.into_string(),
    )
        .into_response()
}

/// A refusal of the API, as a page: what the API would have answered, word for word.
pub fn refusal(ctx: &Ctx, error: &ApiError) -> Response {
    let status = error.kind.status();
    let body = html! {
        h1 { (error.kind.title()) }
        (problem(error))
    };
    render(status, error.kind.title(), ctx, None, body)
}

/// The problem document of a refusal: its detail, its located faults, and the JSON.
pub fn problem(error: &ApiError) -> Markup {
    let document = error.problem();
    html! {
        div.problem role="alert" {
            p { strong { (document.status) " " (document.title) } ": " (document.detail) }
            @if !document.errors.is_empty() {
                ul {
                    @for e in &document.errors {
                        li { code { (e.path) } " " (e.message) }
                    }
                }
            }
            details {
                summary { "Problem document" }
                (json(&serde_json::to_value(&document).unwrap_or(Value::Null)))
            }
        }
    }
}

/// `GET /ui/...` that matches no page.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Not found",
        html! { p { "The console has no page at " code { (uri.path()) } ". " a href="/ui" { "See the sagas" } "." } },
    )
}

/// A status badge: its colour and its word.
pub fn badge(shown: Shown) -> Markup {
    html! { span class={ "badge " (shown.tone.class()) } { (shown.label) } }
}

/// JSON, indented, escaped, and cut at [`MAX_JSON_CHARS`].
pub fn json(value: &Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let (shown, cut) = match text.char_indices().nth(MAX_JSON_CHARS) {
        Some((at, _)) => (&text[..at], text.len() - at),
        None => (text.as_str(), 0),
    };
    html! {
        pre.json { code { (shown) } }
        @if cut > 0 {
            p.note { "… " (cut) " more bytes; the API has the whole value." }
        }
    }
}

/// A moment, as its UTC time with the full timestamp on hover.
pub fn time(ms: i64) -> Markup {
    let full = rfc3339(ms);
    let short = full.get(11..19).unwrap_or(&full).to_owned();
    html! { time datetime=(full) title=(full) { (short) } }
}

/// How long ago `ms` was, in the largest unit that fits.
pub fn ago(ms: i64, now_ms: i64) -> String {
    let s = (now_ms - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86_400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// A duration: milliseconds under a second, then seconds, minutes and hours.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// The time now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_ages_read_naturally() {
        assert_eq!(duration(85), "85 ms");
        assert_eq!(duration(1234), "1.2 s");
        assert_eq!(duration(123_000), "2 min 3 s");
        assert_eq!(duration(7_380_000), "2 h 3 min");
        assert_eq!(ago(0, 59_999), "59 s ago");
        assert_eq!(ago(0, 3_600_000), "1 h ago");
    }

    #[test]
    fn json_is_escaped_and_cut() {
        let html = json(&serde_json::json!({"x": "<script>alert(1)</script>"})).into_string();
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"));
        let big = json(&Value::String("a".repeat(MAX_JSON_CHARS * 2))).into_string();
        assert!(big.contains("more bytes"));
        assert!(big.len() < MAX_JSON_CHARS + 1000);
    }
}
