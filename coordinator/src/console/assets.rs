//! The console's static files, embedded in the binary: one stylesheet, one script, one
//! icon. Their URLs carry a digest of their content, so browsers keep them until the binary
//! changes them.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// (name, media type, content).
const FILES: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    ("favicon.svg", "image/svg+xml", include_str!("assets/favicon.svg")),
];

/// FNV-1a over every file: changes whenever one does.
static DIGEST: LazyLock<String> = LazyLock::new(|| {
    let hash = FILES
        .iter()
        .flat_map(|(_, _, text)| text.bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
});

/// The URL of asset `name`, with the digest that busts caches.
pub fn url(name: &str) -> String {
    format!("/ui/assets/{name}?v={}", *DIGEST)
}

/// `GET /ui/assets/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, media_type, text)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(media_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400")),
            ],
            *text,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
