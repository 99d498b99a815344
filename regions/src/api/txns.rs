//! Transactions (`crate::gateway`): begin, read, write, delete, commit and abort at the
//! region that began the transaction; the one-request form (`POST /v1/txn`); multi-key
//! snapshots (`POST /v1/snapshot`); and the internal routes a gateway calls at the homes
//! and the records (prepare, record, resolve, read at a timestamp). With tokens, writing in
//! a transaction needs `write`, and so does committing or aborting one that writes
//! (`auth.rs`), and a transaction is refused (403) to any caller but the one that began
//! it; values are bounded by `max_value_bytes` like single writes (413). The
//! internal messages name the region that sends them, and over TLS its certificate must
//! name it too (`tls::check_sender`), as for every other internal message.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use problem::Problem;
use regions_core::protocol::{
    BeginRequest, BeginResponse, CommitResponse, CopyRequest, OneShotRequest, OpRequest, Prepare, ReadAt, ReadAtAnswer,
    RecordRequest, Resolve, SnapshotRequest, SnapshotResponse, StatusRequest, TxnCopy, TxnPutRequest, TxnValue,
};

use super::auth::{Caller, Granted, Role, require};
use super::openapi::PROBLEM_JSON;
use super::problem::{ApiError, ProblemType};
use super::tls::check_sender;
use super::{
    Body, KeyParam, MAX_STALENESS_MS, Shared, body_of, check_key, check_value, checked_op_id, parse_version, peer_body,
};
use crate::Error;
use crate::gateway;
use crate::node::Region;
use crate::tls::PeerIdentity;

/// The role a request was let in with, when the region has tokens.
type Let = Option<Extension<Granted>>;

/// The client certificate of a request's connection, over TLS.
type Identity = Option<Extension<PeerIdentity>>;

/// Who sent a request, when the region has tokens.
type Called = Option<Extension<Caller>>;

/// The `{id}` of a transaction's routes, as the OpenAPI document describes it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct TxnParam {
    /// The transaction's id, as `POST /v1/txns` answered it (at this region).
    #[allow(dead_code)]
    id: String,
}

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
        .route("/internal/v1/txn/status", post(status))
        .route("/internal/v1/txn/copy", post(copy))
        .route("/internal/v1/txn/read", post(read_at))
        .route("/internal/v1/txn/claim", post(claim))
        .route("/internal/v1/txn/cancel", post(cancel))
}

/// Begins a transaction here: its snapshot is this region's now.
#[utoipa::path(
    post,
    path = "/v1/txns",
    operation_id = "beginTxn",
    tag = "txns",
    request_body(content = Option<BeginRequest>, description = "Optional: the isolation (only `serializable`, the default)"),
    responses(
        (status = 201, description = "Begun: its id and snapshot", body = BeginResponse),
        (status = 400, description = "The body is not JSON", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "The body is JSON of the wrong shape", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn begin(State(region): Shared, caller: Called, body: Bytes) -> Result<Response, ApiError> {
    // The body is optional (empty or `null`); when given it must be a BeginRequest object.
    let start = body
        .iter()
        .position(|b| !::problem::body::is_json_whitespace(b))
        .unwrap_or(body.len());
    let end = body
        .iter()
        .rposition(|b| !::problem::body::is_json_whitespace(b))
        .map_or(start, |i| i + 1);
    let text = &body[start..end];
    if !text.is_empty() && text != b"null" {
        let req: BeginRequest = ::problem::body::object(text)?;
        let regions_core::txn::Isolation::Serializable = req.isolation;
    }
    let owner = caller.map(|Extension(c)| c);
    Ok((StatusCode::CREATED, Json(gateway::begin(&region, owner))).into_response())
}

/// Reads a key in a transaction: its own write, else the version at its snapshot (read at
/// the key's home, and checked again at the commit).
#[utoipa::path(
    get,
    path = "/v1/txns/{id}/kv/{key}",
    operation_id = "readTxnKey",
    tag = "txns",
    params(TxnParam, KeyParam),
    responses(
        (status = 200, description = "The value and its version (`null` for the transaction's own write)", body = TxnValue),
        (status = 400, description = "The key is wrong", body = Problem, content_type = PROBLEM_JSON),
        (status = 403, description = "The transaction was begun with another token (only the token that began it may go on with it)", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No transaction with this id at this region, or the key has no value at its snapshot", body = Problem, content_type = PROBLEM_JSON),
        (status = 410, description = "The transaction expired (idle past its limit), or was already committed or aborted", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "A key's home cannot be reached, or the store does not answer", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn read(
    State(region): Shared,
    Path((id, key)): Path<(String, String)>,
    caller: Called,
) -> Result<Response, ApiError> {
    check_key(&key)?;
    mine(&region, &id, &caller)?;
    match gateway::read(&region, &id, &key).await? {
        Some(value) => Ok(Json(value).into_response()),
        None => Err(Error::NotFound {
            key,
            staleness_bound_ms: 0,
        }
        .into()),
    }
}

/// Writes a key in a transaction (applied at its commit, with the rest of it).
#[utoipa::path(
    put,
    path = "/v1/txns/{id}/kv/{key}",
    operation_id = "putTxnKey",
    tag = "txns",
    params(TxnParam, KeyParam),
    request_body = TxnPutRequest,
    responses(
        (status = 204, description = "Buffered until the commit"),
        (status = 400, description = "The key is wrong, the body is not JSON, or the key is written anywhere (transactions need a key's home)", body = Problem, content_type = PROBLEM_JSON),
        (status = 403, description = "The token's role is below write, or the transaction was begun with another token (only the token that began it may go on with it)", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No transaction with this id at this region", body = Problem, content_type = PROBLEM_JSON),
        (status = 410, description = "The transaction expired (idle past its limit), or was already committed or aborted", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The value (or the body) is past the region's max_value_bytes", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "The body is JSON of the wrong shape", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn put(
    State(region): Shared,
    Path((id, key)): Path<(String, String)>,
    caller: Called,
    body: Body<TxnPutRequest>,
) -> Result<StatusCode, ApiError> {
    check_key(&key)?;
    mine(&region, &id, &caller)?;
    let body = body_of(body)?;
    check_value(&region, "/value", &body.value.to_string())?;
    gateway::write(&region, &id, &key, Some(&body))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a key in a transaction (at its commit, with the rest of it).
#[utoipa::path(
    delete,
    path = "/v1/txns/{id}/kv/{key}",
    operation_id = "deleteTxnKey",
    tag = "txns",
    params(TxnParam, KeyParam),
    responses(
        (status = 204, description = "Buffered until the commit"),
        (status = 400, description = "The key is wrong, or it is written anywhere (transactions need a key's home)", body = Problem, content_type = PROBLEM_JSON),
        (status = 403, description = "The token's role is below write, or the transaction was begun with another token (only the token that began it may go on with it)", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No transaction with this id at this region", body = Problem, content_type = PROBLEM_JSON),
        (status = 410, description = "The transaction expired (idle past its limit), or was already committed or aborted", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn delete(
    State(region): Shared,
    Path((id, key)): Path<(String, String)>,
    caller: Called,
) -> Result<StatusCode, ApiError> {
    check_key(&key)?;
    mine(&region, &id, &caller)?;
    gateway::write(&region, &id, &key, None)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Commits a transaction: all of its writes, at every key's home, or none.
#[utoipa::path(
    post,
    path = "/v1/txns/{id}/commit",
    operation_id = "commitTxn",
    tag = "txns",
    params(TxnParam),
    responses(
        (status = 200, description = "Committed: its commit timestamp", body = CommitResponse),
        (status = 403, description = "The transaction was begun with another token (only the token that began it may go on with it), or the transaction writes and the token has only the read role", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No transaction with this id at this region", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "It lost a conflict (the problem names the key, and the transaction it lost to when known); nothing of it was applied", body = Problem, content_type = PROBLEM_JSON),
        (status = 410, description = "The transaction expired (idle past its limit), or was already committed or aborted", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "A key's home cannot be reached, or the store does not answer", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn commit(
    State(region): Shared,
    Path(id): Path<String>,
    granted: Let,
    caller: Called,
) -> Result<Response, ApiError> {
    mine(&region, &id, &caller)?;
    writes_need_write(&region, &id, granted, "committing a transaction that writes")?;
    Ok(Json(gateway::commit(&region, &id).await?).into_response())
}

/// Aborts a transaction (nothing of it was laid anywhere yet).
#[utoipa::path(
    post,
    path = "/v1/txns/{id}/abort",
    operation_id = "abortTxn",
    tag = "txns",
    params(TxnParam),
    responses(
        (status = 204, description = "Aborted"),
        (status = 403, description = "The transaction was begun with another token (only the token that began it may go on with it), or the transaction writes and the token has only the read role", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "No transaction with this id at this region", body = Problem, content_type = PROBLEM_JSON),
        (status = 410, description = "The transaction expired (idle past its limit), or was already committed or aborted", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn abort(
    State(region): Shared,
    Path(id): Path<String>,
    granted: Let,
    caller: Called,
) -> Result<StatusCode, ApiError> {
    mine(&region, &id, &caller)?;
    writes_need_write(&region, &id, granted, "aborting a transaction that writes")?;
    gateway::abort(&region, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses (403) a request for transaction `id` from another caller than the one that
/// began it, before anything of the transaction is read or told (404 if there is none).
fn mine(region: &Region, id: &str, caller: &Called) -> Result<(), ApiError> {
    if region.sessions.may(id, caller.as_deref())? {
        return Ok(());
    }
    let detail = format!(
        "transaction {id} was begun with another token: only the token that began it may read, write, commit or abort it"
    );
    tracing::warn!(region = region.name, detail, "request refused");
    Err(ApiError::new(ProblemType::Forbidden, detail).at(&region.name))
}

/// Refuses `what` to a `read` token when open transaction `id` has writes.
fn writes_need_write(region: &Region, id: &str, granted: Let, what: &str) -> Result<(), ApiError> {
    if granted.is_some() && region.sessions.with(id, |t| !t.writes.is_empty())? {
        require(region, granted.map(|Extension(g)| g), Role::Write, what)?;
    }
    Ok(())
}

/// A transaction in one request: reads, conditions and writes, committed together.
#[utoipa::path(
    post,
    path = "/v1/txn",
    operation_id = "oneShotTxn",
    tag = "txns",
    request_body = OneShotRequest,
    responses(
        (status = 200, description = "Committed (or, with `op_id`, committed before: `replayed`; with `undoes` of a transaction that never committed: `undone` false and nothing written)", body = CommitResponse),
        (status = 400, description = "A key or version is wrong, the body is not JSON, a write gives both `add` and `value`, a key is written anywhere, or an addition's path crosses a non-number", body = Problem, content_type = PROBLEM_JSON),
        (status = 403, description = "The transaction writes and the token has only the read role", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "It lost a conflict, a condition found another version, an addition would leave its bounds, or its op id was cancelled by its undo; nothing of it was applied", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "A value (or the body) is past the region's max_value_bytes", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "The body is JSON of the wrong shape", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "A key's home cannot be reached, or the store does not answer", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn one_shot(
    State(region): Shared,
    granted: Let,
    body: Body<OneShotRequest>,
) -> Result<Response, ApiError> {
    let req = body_of(body)?;
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
    for (i, condition) in req.conditions.iter().enumerate() {
        parse_version(&format!("/conditions/{i}/version"), Some(&condition.version))?;
    }
    Ok(Json(gateway::one_shot(&region, &req).await?).into_response())
}

/// Reads several keys at one timestamp: here when every home's closed timestamp is fresh
/// enough for `max_staleness_ms`, else at the homes.
#[utoipa::path(
    post,
    path = "/v1/snapshot",
    operation_id = "snapshot",
    tag = "txns",
    request_body = SnapshotRequest,
    responses(
        (status = 200, description = "Every key at one timestamp (`null`: absent there)", body = SnapshotResponse),
        (status = 400, description = "A key or `as_of` is wrong, the body is not JSON, or a key is written anywhere (snapshots need a key's home)", body = Problem, content_type = PROBLEM_JSON),
        (status = 410, description = "`as_of` is older than the versions kept (retention_ms)", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "The body is JSON of the wrong shape", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "A key's home cannot be reached, or the store does not answer", body = Problem, content_type = PROBLEM_JSON),
    )
)]
pub(super) async fn snapshot(State(region): Shared, body: Body<SnapshotRequest>) -> Result<Response, ApiError> {
    let req = body_of(body)?;
    for key in &req.keys {
        check_key(key)?;
    }
    parse_version("/as_of", req.as_of.as_deref())?;
    if req.max_staleness_ms.is_some_and(|m| m > MAX_STALENESS_MS) {
        return Err(ApiError::new(
            ProblemType::InvalidParameter,
            format!("/max_staleness_ms: at most {MAX_STALENESS_MS} (a year)"),
        ));
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
    if let Some(copy) = r.record {
        // The record's decision: kept here before anything is resolved on it.
        check_copy(&region, "/record", &copy)?;
        let request = CopyRequest { from: r.from, copy };
        region.txn_keep_copy(&request).await?;
    }
    let resolved = region.txn_resolve(&r.txn, r.commit_ts).await?;
    Ok(Json(serde_json::json!({ "resolved": resolved })).into_response())
}

async fn status(State(region): Shared, identity: Identity, body: Bytes) -> Result<Response, ApiError> {
    let r: StatusRequest = peer_body(&body)?;
    check_sender(&region, identity.as_deref(), "/from", &r.from)?;
    let at_home = region.txn_status_here(&r.txn, &r.record_home, r.prevent).await?;
    Ok(Json(at_home).into_response())
}

/// Checks the keys and values of a peer's copy of a transaction's state at `path`.
fn check_copy(region: &Region, path: &str, copy: &TxnCopy) -> Result<(), ApiError> {
    for (i, intent) in copy.intents.iter().enumerate() {
        check_key(&intent.key)?;
        if let regions_core::txn::IntentKind::Write { value: Some(value) } = &intent.kind {
            check_value(region, &format!("{path}/intents/{i}/value"), value.as_str())?;
        }
    }
    Ok(())
}

async fn copy(State(region): Shared, identity: Identity, body: Bytes) -> Result<Response, ApiError> {
    let r: CopyRequest = peer_body(&body)?;
    check_sender(&region, identity.as_deref(), "/from", &r.from)?;
    check_copy(&region, "/copy", &r.copy)?;
    region.txn_keep_copy(&r).await?;
    Ok(Json(serde_json::json!({ "kept": true })).into_response())
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
