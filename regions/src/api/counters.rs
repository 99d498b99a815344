//! The counter routes: `POST /v1/counters/{key}` adds to this region's component, `GET`
//! reads the sum of every component held here (see [`crate::node`]).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use problem::Problem;
use regions_core::protocol::{CounterResponse, IncrementRequest};

use super::openapi::PROBLEM_JSON;
use super::problem::ApiError;
use super::{Body, KeyParam, Shared, body_of, check_key};
use crate::node::Region;

/// The counter routes.
pub(super) fn routes() -> Router<Arc<Region>> {
    Router::new().route("/v1/counters/{*key}", get(counter).post(increment))
}

/// Adds to this region's component of a counter (negative: subtracts).
#[utoipa::path(
    post,
    path = "/v1/counters/{key}",
    operation_id = "incrementCounter",
    tag = "counters",
    params(KeyParam),
    request_body = IncrementRequest,
    responses(
        (status = 200, description = "The counter as this region holds it", body = CounterResponse),
        (status = 400, description = "The key is wrong, the body is not JSON, or the increment would overflow this region's component", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is past the region's limit", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "The body is JSON of the wrong shape", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn increment(
    State(region): Shared,
    Path(key): Path<String>,
    req: Body<IncrementRequest>,
) -> Result<Json<CounterResponse>, ApiError> {
    check_key(&key)?;
    let req = body_of(req)?;
    Ok(Json(
        region
            .increment(&key, req.increment, req.op_id.as_deref())
            .await
            .map_err(|e| ApiError::from(e).at(&region.name))?,
    ))
}

/// A counter: the sum of every region's component held here.
#[utoipa::path(
    get,
    path = "/v1/counters/{key}",
    operation_id = "readCounter",
    tag = "counters",
    params(KeyParam),
    responses(
        (status = 200, description = "The counter as this region holds it (0 if never changed)", body = CounterResponse),
        (status = 400, description = "The key is wrong", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn counter(State(region): Shared, Path(key): Path<String>) -> Result<Json<CounterResponse>, ApiError> {
    check_key(&key)?;
    Ok(Json(region.counter(&key).await.map_err(ApiError::from)?))
}
