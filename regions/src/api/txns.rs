//! Transactions (`crate::gateway`): begin, read, write, delete, commit and abort at the
//! region that began the transaction; the one-request form (`POST /v1/txn`); multi-key
//! snapshots (`POST /v1/snapshot`); and the internal routes a gateway calls at the homes
//! and the records (prepare, record, resolve, read at a timestamp). With tokens, writing in
//! a transaction needs `write`, and so does committing or aborting one that writes
//! (`auth.rs`); values are bounded by `max_value_bytes` like single writes (413). The
//! internal messages name the region that sends them, and over TLS its certificate must
//! name it too (`tls::check_sender`), as for every other internal message.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use regions_core::protocol::{
    BeginRequest, OneShotRequest, OpRequest, Prepare, ReadAt, ReadAtAnswer, RecordRequest, Resolve, SnapshotRequest,
    TxnPutRequest,
};

use super::auth::{Granted, Role, require};
use super::problem::{ApiError, ProblemType};
use super::tls::check_sender;
use super::{Shared, body_of, check_key, check_value, checked_op_id, peer_body};
use crate::Error;
use crate::gateway;
use crate::node::Region;
use crate::tls::PeerIdentity;

/// The role a request was let in with, when the region has tokens.
type Let = Option<Extension<Granted>>;

/// The client certificate of a request's connection, over TLS.
type Identity = Option<Extension<PeerIdentity>>;

/// The transaction routes.
pub(super) fn routes() -> Router<Arc<Region>> {
    Router::new()
        .route("/v1/txns", post(begin))
        .route("/v1/txns/{id}/kv/{*key}", get(read).put(put).delete(delete))
        .route("/v1/txns/{id}/commit", post(commit))
        .route("/v1/txns/{id}/abort", post(abort))
        .route("/v1/txn", post(one_shot))
        .route("/v1/snapshot", post(snapshot))
        .route("/internal/v1/txn/prepare", post(prepare))
        .route("/internal/v1/txn/record", post(record))
        .route("/internal/v1/txn/resolve", post(resolve))
        .route("/internal/v1/txn/read", post(read_at))
        .route("/internal/v1/txn/claim", post(claim))
        .route("/internal/v1/txn/cancel", post(cancel))
}

async fn begin(State(region): Shared, body: Bytes) -> Result<Response, ApiError> {
    // The body is optional; when given it must be a BeginRequest.
    if !body.iter().all(u8::is_ascii_whitespace) {
        let req: BeginRequest = serde_json::from_slice(&body).map_err(|e| {
            let kind = if e.is_data() {
                ProblemType::InvalidBody
            } else {
                ProblemType::MalformedJson
            };
            ApiError::new(kind, e.to_string())
        })?;
        let regions_core::txn::Isolation::Serializable = req.isolation;
    }
    Ok((StatusCode::CREATED, Json(gateway::begin(&region))).into_response())
}

async fn read(State(region): Shared, Path((id, key)): Path<(String, String)>) -> Result<Response, ApiError> {
    check_key(&key)?;
    match gateway::read(&region, &id, &key).await? {
        Some(value) => Ok(Json(value).into_response()),
        None => Err(Error::NotFound {
            key,
            staleness_bound_ms: 0,
        }
        .into()),
    }
}

async fn put(
    State(region): Shared,
    Path((id, key)): Path<(String, String)>,
    body: Result<Json<TxnPutRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    check_key(&key)?;
    let body = body_of(&region, body)?;
    check_value(&region, "/value", &body.value.to_string())?;
    gateway::write(&region, &id, &key, Some(&body))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete(State(region): Shared, Path((id, key)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    check_key(&key)?;
    gateway::write(&region, &id, &key, None)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn commit(State(region): Shared, Path(id): Path<String>, granted: Let) -> Result<Response, ApiError> {
    writes_need_write(&region, &id, granted, "committing a transaction that writes")?;
    Ok(Json(gateway::commit(&region, &id).await?).into_response())
}

async fn abort(State(region): Shared, Path(id): Path<String>, granted: Let) -> Result<StatusCode, ApiError> {
    writes_need_write(&region, &id, granted, "aborting a transaction that writes")?;
    gateway::abort(&region, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses `what` to a `read` token when open transaction `id` has writes.
fn writes_need_write(region: &Region, id: &str, granted: Let, what: &str) -> Result<(), ApiError> {
    if granted.is_some() && region.sessions.with(id, |t| !t.writes.is_empty())? {
        require(region, granted.map(|Extension(g)| g), Role::Write, what)?;
    }
    Ok(())
}

async fn one_shot(
    State(region): Shared,
    granted: Let,
    body: Result<Json<OneShotRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body_of(&region, body)?;
    checked_op_id("/op_id", req.op_id.clone())?;
    checked_op_id("/undoes", req.undoes.clone())?;
    if !req.writes.is_empty() || req.undoes.is_some() {
        require(
            &region,
            granted.map(|Extension(g)| g),
            Role::Write,
            "a transaction that writes",
        )?;
    }
    for (i, write) in req.writes.iter().enumerate() {
        if let Some(value) = &write.value {
            check_value(&region, &format!("/writes/{i}/value"), &value.to_string())?;
        }
    }
    for (i, key) in req
        .reads
        .iter()
        .chain(req.conditions.iter().map(|c| &c.key))
        .chain(req.writes.iter().map(|w| &w.key))
        .enumerate()
    {
        check_key(key).map_err(|e| ApiError::new(e.kind, format!("key {i} of the request: {}", e.detail)))?;
    }
    Ok(Json(gateway::one_shot(&region, &req).await?).into_response())
}

async fn snapshot(
    State(region): Shared,
    body: Result<Json<SnapshotRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body_of(&region, body)?;
    for key in &req.keys {
        check_key(key)?;
    }
    Ok(Json(gateway::snapshot(&region, &req).await?).into_response())
}

async fn prepare(State(region): Shared, identity: Identity, body: Bytes) -> Result<Response, ApiError> {
    let p: Prepare = peer_body(&body)?;
    check_sender(&region, identity.as_deref(), "/from", &p.from)?;
    for (i, (key, intent)) in p.intents.iter().enumerate() {
        check_key(key)?;
        if let regions_core::txn::IntentKind::Write { value: Some(value) } = intent {
            check_value(&region, &format!("/intents/{i}/value"), value)?;
        }
    }
    Ok(Json(region.txn_prepare(&p).await?).into_response())
}

async fn record(State(region): Shared, identity: Identity, body: Bytes) -> Result<Response, ApiError> {
    let r: RecordRequest = peer_body(&body)?;
    check_sender(&region, identity.as_deref(), "/from", &r.from)?;
    Ok(Json(region.txn_record_event(&r.txn, r.event).await?).into_response())
}

async fn resolve(State(region): Shared, identity: Identity, body: Bytes) -> Result<Response, ApiError> {
    let r: Resolve = peer_body(&body)?;
    check_sender(&region, identity.as_deref(), "/from", &r.from)?;
    let resolved = region.txn_resolve(&r.txn, r.commit_ts).await?;
    Ok(Json(serde_json::json!({ "resolved": resolved })).into_response())
}

async fn read_at(State(region): Shared, identity: Identity, body: Bytes) -> Result<Response, ApiError> {
    let r: ReadAt = peer_body(&body)?;
    check_sender(&region, identity.as_deref(), "/from", &r.from)?;
    let version = region.txn_read_at(&r.key, r.ts).await?;
    Ok(Json(ReadAtAnswer {
        version: version.map(|v| (v.ts, v.value)),
    })
    .into_response())
}

async fn claim(State(region): Shared, identity: Identity, body: Bytes) -> Result<Response, ApiError> {
    let r: OpRequest = peer_body(&body)?;
    check_sender(&region, identity.as_deref(), "/from", &r.from)?;
    checked_op_id("/op_id", Some(r.op_id.clone()))?;
    Ok(Json(region.txn_op_claim(&r.op_id).await?).into_response())
}

async fn cancel(State(region): Shared, identity: Identity, body: Bytes) -> Result<Response, ApiError> {
    let r: OpRequest = peer_body(&body)?;
    check_sender(&region, identity.as_deref(), "/from", &r.from)?;
    checked_op_id("/op_id", Some(r.op_id.clone()))?;
    Ok(Json(region.txn_op_cancel(&r.op_id).await?).into_response())
}
