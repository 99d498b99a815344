//! Probes and self-description, open to all: `/healthz` (the process serves) and
//! `/openapi.json` (the document of this API, [`super::openapi`]). Readiness, which asks the
//! store, is with the cluster routes (`cluster.rs`).

use std::sync::{Arc, LazyLock};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::openapi;
use super::problem::{ApiError, ProblemType};
use crate::node::Region;

/// The routes of this module.
pub(super) fn routes() -> Router<Arc<Region>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi_json))
}

/// Liveness: `ok` while the process serves.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "meta",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain"))
)]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

static DOCUMENT: LazyLock<Value> = LazyLock::new(openapi::openapi);

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
pub(super) async fn openapi_json() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Json(DOCUMENT.clone()))
}

/// Every path no route takes: a problem document, like every other refusal.
pub(super) async fn no_route(State(region): State<Arc<Region>>, uri: axum::http::Uri) -> ApiError {
    ApiError::new(ProblemType::NoRoute, format!("{}: no such route", uri.path())).at(&region.name)
}
