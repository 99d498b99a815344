//! The REST API, v1 (axum).
//!
//! [`app`] builds the whole service from one [`ApiState`]. Each resource has its own router
//! (`definitions`, `sagas`, `meta`); handlers are thin: they parse, call the
//! [`Coordinator`], and shape the answer ([`views`]). Every failure is an [`ApiError`],
//! answered as an RFC 9457 problem (`application/problem+json`) with a stable `type` URI.
//!
//! | Route | |
//! |---|---|
//! | `POST /v1/definitions`, `GET /v1/definitions`, `GET /v1/definitions/{name}?version=` | definitions |
//! | `POST /v1/sagas?wait_ms=`, `GET /v1/sagas?status=&definition=&idempotency_key=&limit=&cursor=` | sagas |
//! | `GET /v1/sagas/{id}`, `GET /v1/sagas/{id}/events` | one saga |
//! | `POST /v1/sagas/{id}/cancel`, `POST /v1/sagas/{id}/retry` | operator actions |
//! | `GET /v1/schema/definition` | the definition JSON Schema |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /openapi.json` | probes, Prometheus metrics, the OpenAPI 3.1 document |
//!
//! When [`ApiState::tokens`] is not empty, every `/v1` route needs
//! `Authorization: Bearer <token>`; the probes, the metrics and the OpenAPI document stay
//! open. The web console ([`crate::console`], at `/ui`) checks the token its session cookie
//! holds with the same [`ApiState::accepts`].

mod definitions;
pub mod error;
pub(crate) mod extract;
mod meta;
mod openapi;
pub(crate) mod sagas;
pub mod views;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::trace::TraceLayer;

pub use error::{ApiError, Problem, ProblemError, ProblemType};
pub use openapi::openapi;

use crate::Coordinator;

/// The default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// Everything the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The coordinator the API drives.
    pub coordinator: Coordinator,
    /// Accepted bearer tokens; empty: no authentication.
    pub tokens: Vec<String>,
    /// Largest request body, in bytes (see [`DEFAULT_BODY_LIMIT`]).
    pub body_limit: usize,
    /// Base URL of a Jaeger UI, to link sagas to their traces.
    pub jaeger_ui: Option<String>,
}

impl ApiState {
    /// A state without authentication, with the default body limit and no Jaeger UI.
    pub fn new(coordinator: Coordinator) -> ApiState {
        ApiState {
            coordinator,
            tokens: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
            jaeger_ui: None,
        }
    }

    /// Whether `token` opens the `/v1` routes: the one check of the API and the console.
    pub fn accepts(&self, token: &str) -> bool {
        self.tokens.is_empty() || self.tokens.iter().any(|t| same(t.as_bytes(), token.as_bytes()))
    }
}

/// The whole API as one router, with the web console at `/ui` ([`crate::console`]).
pub fn app(state: ApiState) -> Router {
    Router::new()
        .merge(definitions::router())
        .merge(sagas::router())
        .merge(meta::router())
        .merge(crate::console::router(&state))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(state.body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        ProblemType::NotFound,
        format!("no route for `{}`", request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        ProblemType::MethodNotAllowed,
        format!("`{}` does not take {}", request.uri().path(), request.method()),
    )
}

/// Checks the bearer token of `/v1` requests when tokens are configured.
async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let guarded = path == "/v1" || path.starts_with("/v1/");
    if state.tokens.is_empty() || !guarded {
        return next.run(request).await;
    }
    match bearer(request.headers()) {
        Some(token) if state.accepts(token) => next.run(request).await,
        Some(_) => ApiError::new(ProblemType::Unauthorized, "the bearer token is not valid")
            .with_header(header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#)
            .into_response(),
        None => ApiError::new(
            ProblemType::Unauthorized,
            "this route needs `Authorization: Bearer <token>`",
        )
        .with_header(header::WWW_AUTHENTICATE, "Bearer")
        .into_response(),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
