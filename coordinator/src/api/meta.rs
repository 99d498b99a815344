//! Probes and self-description: `/healthz`, `/readyz`, `/metrics`, `/openapi.json` (open
//! to all) and `/v1/schema/definition` (behind the tokens, like every `/v1` route).

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::ApiState;
use super::error::{ApiError, Problem, ProblemType};
use super::views::Status;

/// The routes of this resource.
pub(crate) fn router() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/v1/schema/definition", get(definition_schema))
}

/// Liveness: 200 while the process serves.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, description = "Alive", body = Status)))]
pub(crate) async fn healthz() -> Json<Status> {
    Json(Status { status: "ok".into() })
}

/// Readiness: 200 when the database answers and the last write succeeded, else 503 saying
/// the store is unavailable. The database's own error stays in the coordinator's log: it
/// can name hosts, users and paths, and the probe is open to all.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    responses(
        (status = 200, description = "Ready", body = Status),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn readyz(State(state): State<ApiState>) -> Result<Json<Status>, ApiError> {
    if let Err(e) = state.coordinator.store().ping().await {
        tracing::warn!(error = %e, "readiness: the database does not answer");
        return Err(ApiError::new(
            ProblemType::NotReady,
            "store unavailable: the database does not answer",
        ));
    }
    let health = state.coordinator.health();
    if !health.store_ok {
        let last = health.last_error.unwrap_or_else(|| "unknown error".into());
        tracing::warn!(failures = health.failures, error = %last, "readiness: the last database writes failed");
        return Err(ApiError::new(
            ProblemType::NotReady,
            format!("store unavailable: the last {} database writes failed", health.failures),
        ));
    }
    Ok(Json(Status { status: "ready".into() }))
}

/// The coordinator's metrics in the OpenMetrics text format, for Prometheus.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses((status = 200, description = "The metrics", body = String, content_type = "application/openmetrics-text"))
)]
pub(crate) async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.coordinator.render_metrics(),
    )
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub(crate) async fn openapi_json() -> Json<Value> {
    static DOCUMENT: LazyLock<Value> = LazyLock::new(super::openapi);
    Json(DOCUMENT.clone())
}

/// The JSON Schema of definition documents.
#[utoipa::path(
    get,
    path = "/v1/schema/definition",
    tag = "meta",
    responses((status = 200, description = "The JSON Schema (draft 2020-12)", body = Object)),
    security(("bearer" = []))
)]
pub(crate) async fn definition_schema() -> Json<Value> {
    static SCHEMA: LazyLock<Value> = LazyLock::new(sagas::document::definition_schema);
    Json(SCHEMA.clone())
}
