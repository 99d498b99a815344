//! The key-value routes: reads, writes (`PUT`, `PATCH` with an addition or an undo,
//! `DELETE`) and the internal routes a forwarded write or undo arrives on. A request for a key homed elsewhere is
//! forwarded to its home, marked so that a disagreement on placement cannot loop; a read
//! may be answered here when the local copy is fresh enough (see [`crate::node`]).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use problem::Problem;
use regions_core::closed::ReadConsistency;
use regions_core::protocol::{
    DeleteQuery, PatchRequest, PutRequest, ReadQuery, ReadResponse, WriteCommand, WriteConsistency, WriteResponse,
};

use super::openapi::PROBLEM_JSON;
use super::problem::{ApiError, ProblemType};
use super::tls;
use super::{
    Body, KeyParam, MAX_STALENESS_MS, Shared, body_of, check_key, check_value, checked_op_id, parse_version, peer_body,
    query,
};
use crate::node::{ReadRequest, Region};
use crate::tls::PeerIdentity;
use crate::{Error, Result};

/// The key-value routes.
pub(super) fn routes() -> Router<Arc<Region>> {
    Router::new()
        .route("/v1/kv/{*key}", get(read).put(put).patch(patch).delete(delete))
        .route("/internal/v1/write/{*key}", post(forwarded_write))
        .route("/internal/v1/undo/{*key}", post(forwarded_write))
}

/// Set on requests one region forwards to another.
pub const FORWARDED_BY: &str = "x-geosaga-forwarded-by";

fn key_url(base: &str, route: &[&str], key: &str) -> Result<reqwest::Url> {
    regions_client::key_url(base, route, key).map_err(|e| Error::Config(e.to_string()))
}

/// Sends `request` to the home region and relays its answer as is. The client's token goes
/// along (`headers`), so that the home checks it too (`super::auth`).
async fn relay(
    region: &Region,
    home: &str,
    headers: &HeaderMap,
    mut request: reqwest::RequestBuilder,
) -> Result<Response, String> {
    if let Some(token) = headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, token);
    }
    let response = request
        .header(FORWARDED_BY, &region.name)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = StatusCode::from_u16(response.status().as_u16()).map_err(|e| e.to_string())?;
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    region.touch(home);
    let mut out = (status, body).into_response();
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(out)
}

fn refuse_loop(region: &Region, headers: &HeaderMap, key: &str, home: &str) -> Result<(), ApiError> {
    match headers.get(FORWARDED_BY) {
        Some(from) => Err(ApiError::new(
            ProblemType::InvalidParameter,
            format!(
                "{from:?} forwarded {key:?} here, but {} places it in {home}: the regions' placement rules disagree",
                region.name
            ),
        )),
        None => Ok(()),
    }
}

/// Reads a key: at its home for a strong read, here when the local copy is fresh enough
/// for a bounded-staleness one (else at the home).
#[utoipa::path(
    get,
    path = "/v1/kv/{key}",
    operation_id = "readKey",
    tag = "kv",
    params(KeyParam, ReadQuery),
    responses(
        (status = 200, description = "The value and its version (with `op` when `op_id` was given)", body = ReadResponse),
        (status = 400, description = "A parameter is wrong", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "The key has no live value", body = Problem, content_type = PROBLEM_JSON),
        (status = 410, description = "`as_of` is older than the versions kept (retention_ms)", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The home cannot be reached and the local copy is too stale, or the store does not answer", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn read(
    State(region): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    check_key(&key)?;
    let q = query(q)?;
    if q.max_staleness_ms.is_some_and(|m| m > MAX_STALENESS_MS) {
        return Err(ApiError::new(
            ProblemType::InvalidParameter,
            format!("/query/max_staleness_ms: at most {MAX_STALENESS_MS} (a year)"),
        ));
    }
    let max_staleness_ms = match (q.consistency, q.max_staleness_ms) {
        (ReadConsistency::BoundedStaleness, None) => {
            return Err(ApiError::new(
                ProblemType::InvalidParameter,
                "/query/max_staleness_ms: required for bounded_staleness reads",
            ));
        }
        (_, m) => m.unwrap_or(0),
    };
    let req = ReadRequest {
        consistency: q.consistency,
        max_staleness_ms,
        allow_stale: q.allow_stale,
        as_of: parse_version("/query/as_of", q.as_of.as_deref())?,
    };
    let op_id = checked_op_id("/query/op_id", q.op_id)?;
    if op_id.is_some() && (req.consistency != ReadConsistency::Strong || req.as_of.is_some()) {
        return Err(ApiError::new(
            ProblemType::InvalidParameter,
            "/query/op_id: only strong reads of the latest version (at the home) can tell whether an op was applied",
        ));
    }
    if let Some(answer) = region
        .read_here(&key, req)
        .await
        .map_err(|e| ApiError::from(e).at(&region.name))?
    {
        return answer_with_op(&region, &key, op_id.as_deref(), answer).await;
    }
    let home = region.home(&key).region;
    refuse_loop(&region, &headers, &key, &home)?;
    let peer = region.peer(&home)?;
    let at_home = ReadQuery {
        as_of: req.as_of.map(|t| t.to_string()),
        op_id,
        ..ReadQuery::new(ReadConsistency::Strong)
    };
    let url = key_url(&peer.address, &regions_client::KV, &key)?;
    match relay(&region, &home, &headers, region.http.get(url).query(&at_home)).await {
        Ok(response) => Ok(response),
        Err(reason) => match region.read_unreachable_home(&key, req, reason).await {
            Ok(answer) => Ok(Json(answer).into_response()),
            Err(e) => Err(ApiError::from(e).at(&region.name)),
        },
    }
}

/// A read answered here, with `"op"` (what the write with `op_id` did, or `null` if it was
/// not applied) when the read asked. Looked up after the value was read: an op applied in
/// between shows, so a caller never sees its own write in the value without knowing it.
async fn answer_with_op(
    region: &Region,
    key: &str,
    op_id: Option<&str>,
    answer: ReadResponse,
) -> Result<Response, ApiError> {
    let Some(op_id) = op_id else {
        return Ok(Json(answer).into_response());
    };
    let applied = region
        .store
        .op_applied(key, op_id)
        .await
        .map_err(|e| ApiError::from(e).at(&region.name))?;
    let mut body = serde_json::to_value(&answer).unwrap_or_default();
    body["op"] = serde_json::to_value(applied).unwrap_or_default();
    Ok(Json(body).into_response())
}

async fn write(region: Arc<Region>, key: String, headers: HeaderMap, cmd: WriteCommand) -> Result<Response, ApiError> {
    check_key(&key)?;
    let home = region.home(&key).region;
    if region.executes_writes(&key) {
        return Ok(Json(
            region
                .write_at_home(&key, &cmd)
                .await
                .map_err(|e| ApiError::from(e).at(&region.name))?,
        )
        .into_response());
    }
    refuse_loop(&region, &headers, &key, &home)?;
    let peer = region.peer(&home)?;
    // An undo goes on a route of its own: a home that does not know undos answers 404
    // rather than taking it for a deletion.
    let route = if cmd.undo.is_some() { "undo" } else { "write" };
    let url = key_url(&peer.address, &["internal", "v1", route], &key)?;
    relay(&region, &home, &headers, region.http.post(url).json(&cmd))
        .await
        .map_err(|reason| {
            ApiError::from(Error::HomeUnreachable {
                region: home,
                reason: format!("{reason}; the write may or may not have been applied"),
            })
            .at(&region.name)
        })
}

/// Writes a key's value (at its home, which this region forwards to).
#[utoipa::path(
    put,
    path = "/v1/kv/{key}",
    operation_id = "putKey",
    tag = "kv",
    params(KeyParam),
    request_body = PutRequest,
    responses(
        (status = 200, description = "Written: the new version", body = WriteResponse),
        (status = 400, description = "A parameter is wrong, the body is not JSON, or the write is not allowed for this key (a strong write of a key written anywhere)", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "`if_version` found another version, the op id was cancelled by its undo, or an addition would leave its bounds; nothing was written", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The value (or the body) is past the region's max_value_bytes", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "The body is JSON of the wrong shape", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "A strong write did not reach its quorum in time (not applied), or the key's home cannot be reached (the outcome is unknown)", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn put(
    State(region): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body<PutRequest>,
) -> Result<Response, ApiError> {
    let body = body_of(body)?;
    let value = body.value.to_string();
    check_value(&region, "/value", &value)?;
    let cmd = WriteCommand {
        value: Some(value),
        ..command("/", body.consistency, body.if_version, body.op_id)?
    };
    write(region, key, headers, cmd).await
}

/// `PATCH /v1/kv/{key}` with `{"add": {"path", "delta", "min", "max"}}`: the home adds; with
/// `{"undo": {"op_id", "add"?}, "op_id"}`: the home undoes or cancels a write (see the
/// node's `undo.rs`).
#[utoipa::path(
    patch,
    path = "/v1/kv/{key}",
    operation_id = "patchKey",
    tag = "kv",
    params(KeyParam),
    request_body = PatchRequest,
    responses(
        (status = 200, description = "Written: the new version", body = WriteResponse),
        (status = 400, description = "A parameter is wrong, the body is not JSON, or the write is not allowed for this key (a strong write of a key written anywhere)", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "`if_version` found another version, the op id was cancelled by its undo, or an addition would leave its bounds; nothing was written", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The value (or the body) is past the region's max_value_bytes", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "The body is JSON of the wrong shape", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "A strong write did not reach its quorum in time (not applied), or the key's home cannot be reached (the outcome is unknown)", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn patch(
    State(region): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body<PatchRequest>,
) -> Result<Response, ApiError> {
    let body = body_of(body)?;
    match (&body.add, &body.undo) {
        (Some(add), None) => add.check().map_err(|e| ApiError::invalid_body("/add/path", e))?,
        (None, Some(undo)) => {
            checked_op_id("/undo/op_id", Some(undo.op_id.clone()))?;
            if let Some(add) = &undo.add {
                add.check().map_err(|e| ApiError::invalid_body("/undo/add/path", e))?;
            }
            if body.op_id.is_none() || body.if_version.is_some() {
                return Err(ApiError::invalid_body(
                    "/op_id",
                    "an undo needs an op_id of its own, and takes no if_version",
                ));
            }
        }
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::invalid_body("", "give exactly one of `add` and `undo`"));
        }
    }
    let cmd = WriteCommand {
        add: body.add,
        undo: body.undo,
        ..command("/", body.consistency, body.if_version, body.op_id)?
    };
    write(region, key, headers, cmd).await
}

/// Deletes a key (writes a tombstone at its home).
#[utoipa::path(
    delete,
    path = "/v1/kv/{key}",
    operation_id = "deleteKey",
    tag = "kv",
    params(KeyParam, DeleteQuery),
    responses(
        (status = 200, description = "Deleted: the tombstone's version", body = WriteResponse),
        (status = 400, description = "A parameter is wrong, or the write is not allowed for this key", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "`if_version` found another version, or the op id was cancelled; nothing was written", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "A strong write did not reach its quorum in time (not applied), or the key's home cannot be reached (the outcome is unknown)", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn delete(
    State(region): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    q: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    write(
        region,
        key,
        headers,
        command("/query/", q.consistency, q.if_version, q.op_id)?,
    )
    .await
}

/// A write of no value (a deletion, unless the caller sets one) from what every write
/// request carries; `at` is where those fields are (`/` in a body, `/query/` in the URL).
fn command(
    at: &str,
    consistency: WriteConsistency,
    if_version: Option<String>,
    op_id: Option<String>,
) -> Result<WriteCommand, ApiError> {
    Ok(WriteCommand {
        value: None,
        consistency,
        if_version: parse_version(&format!("{at}if_version"), if_version.as_deref())?,
        op_id: checked_op_id(&format!("{at}op_id"), op_id)?,
        add: None,
        undo: None,
    })
}

/// The client certificate of a request's connection, over TLS.
type Identity = Option<Extension<PeerIdentity>>;

/// A write or an undo another region forwarded: over TLS, its `x-geosaga-forwarded-by`
/// must name the region whose certificate the connection presented.
async fn forwarded_write(
    State(region): Shared,
    Path(key): Path<String>,
    identity: Identity,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if identity.is_some() {
        let by = headers
            .get(FORWARDED_BY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        tls::check_sender(&region, identity.as_deref(), FORWARDED_BY, by)?;
    }
    let cmd: WriteCommand = peer_body(&body)?;
    check_key(&key)?;
    if let Some(value) = &cmd.value {
        check_value(&region, "/value", value)?;
    }
    Ok(Json(
        region
            .write_at_home(&key, &cmd)
            .await
            .map_err(|e| ApiError::from(e).at(&region.name))?,
    )
    .into_response())
}
