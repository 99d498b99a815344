//! The counter routes: `POST /v1/counters/{key}` adds to this region's component, `GET`
//! reads the sum of every component held here (see [`crate::node`]).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use regions_core::protocol::{CounterResponse, IncrementRequest};

use super::problem::ApiError;
use super::{Shared, body_of, check_key};
use crate::node::Region;

/// The counter routes.
pub(super) fn routes() -> Router<Arc<Region>> {
    Router::new().route("/v1/counters/{*key}", get(counter).post(increment))
}

async fn increment(
    State(region): Shared,
    Path(key): Path<String>,
    req: Result<Json<IncrementRequest>, JsonRejection>,
) -> Result<Json<CounterResponse>, ApiError> {
    check_key(&key)?;
    let req = body_of(&region, req)?;
    Ok(Json(
        region
            .increment(&key, req.increment, req.op_id.as_deref())
            .await
            .map_err(|e| ApiError::from(e).at(&region.name))?,
    ))
}

async fn counter(State(region): Shared, Path(key): Path<String>) -> Result<Json<CounterResponse>, ApiError> {
    check_key(&key)?;
    Ok(Json(region.counter(&key).await.map_err(ApiError::from)?))
}
