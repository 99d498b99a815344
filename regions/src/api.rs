//! The HTTP API every region serves (axum): the key-value routes, placement, the regions'
//! status, and the internal routes peers call. Requests for keys homed elsewhere are
//! forwarded to the home region, marked so that a disagreement on placement cannot loop.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::closed::{self, ReadConsistency};
use crate::hlc::Timestamp;
use crate::node::{ReadRequest, Region};
use crate::problem::{ApiError, ProblemType};
use crate::protocol::{
    Intent, PatchRequest, PlacementResponse, PutRequest, RegionStatus, ReplicateBatch, WriteCommand, WriteConsistency,
};
use crate::{Error, Result};

/// Set on requests one region forwards to another.
pub const FORWARDED_BY: &str = "x-geosaga-forwarded-by";

const MAX_KEY_BYTES: usize = 1024;

type Shared = State<Arc<Region>>;

/// The region's routes.
pub fn router(region: Arc<Region>) -> Router {
    Router::new()
        .route("/v1/kv/{*key}", get(read).put(put).patch(patch).delete(delete))
        .route("/v1/placement/{*key}", get(placement))
        .route("/v1/regions", get(regions))
        .route("/readyz", get(ready))
        .route("/internal/v1/write/{*key}", post(forwarded_write))
        .route("/internal/v1/undo/{*key}", post(forwarded_write))
        .route("/internal/v1/intents", post(intent))
        .route("/internal/v1/replicate", post(replicate))
        .merge(crate::convergence_api::routes())
        .with_state(region)
}

/// Longest a readiness check waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Ready when the region's store answers a query (within [`READY_TIMEOUT`]): a region whose
/// database is down is up but cannot serve, and a load balancer should send elsewhere.
async fn ready(State(region): Shared) -> Result<&'static str, ApiError> {
    let detail = match tokio::time::timeout(READY_TIMEOUT, region.store.last_seq()).await {
        Ok(Ok(_)) => return Ok("ready"),
        Ok(Err(e)) => format!("the region's {} store: {e}", region.store.backend_name()),
        Err(_) => format!(
            "the region's {} store did not answer within {} s",
            region.store.backend_name(),
            READY_TIMEOUT.as_secs()
        ),
    };
    Err(ApiError::new(ProblemType::StoreUnavailable, detail).at(&region.name))
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ApiError::new(
            ProblemType::InvalidParameter,
            format!("/path/key: a key has 1 to {MAX_KEY_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn parse_version(path: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| {
        t.parse()
            .map_err(|e: String| ApiError::new(ProblemType::InvalidParameter, format!("{path}: {e}")))
    })
    .transpose()
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::new(ProblemType::InvalidParameter, format!("/query: {}", e.body_text())))
}

fn key_url(base: &str, route: &[&str], key: &str) -> Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(base).map_err(|e| Error::Config(format!("address {base:?}: {e}")))?;
    url.path_segments_mut()
        .map_err(|()| Error::Config(format!("address {base:?} cannot have a path")))?
        .pop_if_empty()
        .extend(route)
        .extend(key.split('/'));
    Ok(url)
}

/// Sends `request` to the home region and relays its answer as is.
async fn relay(region: &Region, home: &str, request: reqwest::RequestBuilder) -> Result<Response, String> {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    #[serde(default = "strong")]
    consistency: ReadConsistency,
    max_staleness_ms: Option<u64>,
    #[serde(default)]
    allow_stale: bool,
    as_of: Option<String>,
    /// Strong reads: also say whether a write with this op id was applied (`"op"`).
    op_id: Option<String>,
}

fn strong() -> ReadConsistency {
    ReadConsistency::Strong
}

async fn read(
    State(region): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    check_key(&key)?;
    let q = query(q)?;
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
    let mut params = vec![("consistency", "strong".to_owned())];
    if let Some(as_of) = req.as_of {
        params.push(("as_of", as_of.to_string()));
    }
    if let Some(op_id) = op_id {
        params.push(("op_id", op_id));
    }
    let url = key_url(&peer.address, &["v1", "kv"], &key)?;
    match relay(&region, &home, region.http.get(url).query(&params)).await {
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
    answer: crate::protocol::ReadResponse,
) -> Result<Response, ApiError> {
    let Some(op_id) = op_id else {
        return Ok(Json(answer).into_response());
    };
    let applied = crate::op_ids::applied(&region.store, key, op_id)
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
    relay(&region, &home, region.http.post(url).json(&cmd))
        .await
        .map_err(|reason| {
            ApiError::from(Error::HomeUnreachable {
                region: home,
                reason: format!("{reason}; the write may or may not have been applied"),
            })
            .at(&region.name)
        })
}

async fn put(
    State(region): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Result<Json<PutRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| match e {
        JsonRejection::JsonDataError(e) => ApiError::new(ProblemType::InvalidBody, e.body_text()),
        other => ApiError::new(ProblemType::MalformedJson, other.body_text()),
    })?;
    let cmd = WriteCommand {
        value: Some(body.value.to_string()),
        consistency: body.consistency,
        if_version: parse_version("/if_version", body.if_version.as_deref())?,
        op_id: checked_op_id("/op_id", body.op_id)?,
        add: None,
        undo: None,
    };
    write(region, key, headers, cmd).await
}

/// `PATCH /v1/kv/{key}` with `{"add": {"path", "delta", "min", "max"}}`: the home adds; with
/// `{"undo": {"op_id", "add"?}, "op_id"}`: the home undoes or cancels a write
/// ([`crate::undo`]).
async fn patch(
    State(region): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Result<Json<PatchRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| match e {
        JsonRejection::JsonDataError(e) => ApiError::new(ProblemType::InvalidBody, e.body_text()),
        other => ApiError::new(ProblemType::MalformedJson, other.body_text()),
    })?;
    match (&body.add, &body.undo) {
        (Some(add), None) => add
            .check()
            .map_err(|e| ApiError::new(ProblemType::InvalidBody, format!("/add/path: {e}")))?,
        (None, Some(undo)) => {
            checked_op_id("/undo/op_id", Some(undo.op_id.clone()))?;
            if let Some(add) = &undo.add {
                add.check()
                    .map_err(|e| ApiError::new(ProblemType::InvalidBody, format!("/undo/add/path: {e}")))?;
            }
            if body.op_id.is_none() || body.if_version.is_some() {
                return Err(ApiError::new(
                    ProblemType::InvalidBody,
                    "/op_id: an undo needs an op_id of its own, and takes no if_version",
                ));
            }
        }
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::new(
                ProblemType::InvalidBody,
                "give exactly one of `add` and `undo`",
            ));
        }
    }
    let cmd = WriteCommand {
        value: None,
        consistency: body.consistency,
        if_version: parse_version("/if_version", body.if_version.as_deref())?,
        op_id: checked_op_id("/op_id", body.op_id)?,
        add: body.add,
        undo: body.undo,
    };
    write(region, key, headers, cmd).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    #[serde(default)]
    consistency: WriteConsistency,
    if_version: Option<String>,
    op_id: Option<String>,
}

async fn delete(
    State(region): Shared,
    Path(key): Path<String>,
    headers: HeaderMap,
    q: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let cmd = WriteCommand {
        value: None,
        consistency: q.consistency,
        if_version: parse_version("/query/if_version", q.if_version.as_deref())?,
        op_id: checked_op_id("/query/op_id", q.op_id)?,
        add: None,
        undo: None,
    };
    write(region, key, headers, cmd).await
}

fn checked_op_id(path: &str, op_id: Option<String>) -> Result<Option<String>, ApiError> {
    if let Some(id) = &op_id {
        crate::op_ids::check(id).map_err(|e| ApiError::new(ProblemType::InvalidParameter, format!("{path}: {e}")))?;
    }
    Ok(op_id)
}

async fn forwarded_write(State(region): Shared, Path(key): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let cmd: WriteCommand =
        serde_json::from_slice(&body).map_err(|e| ApiError::new(ProblemType::PeerRefused, e.to_string()))?;
    check_key(&key)?;
    Ok(Json(
        region
            .write_at_home(&key, &cmd)
            .await
            .map_err(|e| ApiError::from(e).at(&region.name))?,
    )
    .into_response())
}

async fn placement(State(region): Shared, Path(key): Path<String>) -> Result<Json<PlacementResponse>, ApiError> {
    check_key(&key)?;
    let home = region.home(&key);
    Ok(Json(PlacementResponse::new(&key, home.region, &home.reason)))
}

async fn regions(State(region): Shared) -> Result<Json<Vec<RegionStatus>>, ApiError> {
    let now_ms = region.clock.physical_ms();
    let last_seq = region.store.last_seq().await.map_err(ApiError::from)?;
    let healthy_within = u64::try_from(region.skew_window().as_millis()).unwrap_or(u64::MAX);
    let (now, pending) = region.now_and_earliest_pending();
    let mut out = vec![RegionStatus {
        name: region.name.clone(),
        address: region
            .config
            .region(&region.name)
            .map(|r| r.address.clone())
            .unwrap_or_default(),
        is_self: true,
        healthy: true,
        last_contact_ms_ago: None,
        closed_ts: Some(closed::closed_timestamp(now, pending, None).to_string()),
        replication_lag_ms: Some(0),
        unacked_entries: None,
        anti_entropy_repaired: None,
        anti_entropy_gap: None,
        ..RegionStatus::default()
    }];
    let states = region.store.replica_states().await.map_err(ApiError::from)?;
    for peer in &region.peers {
        let ago = region
            .contact
            .lock()
            .expect("contact lock")
            .get(&peer.name)
            .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX));
        let closed = region.closed_for(&peer.name);
        let acked = region
            .acked
            .lock()
            .expect("acked lock")
            .get(&peer.name)
            .copied()
            .unwrap_or(0);
        let clock_skew = region.clock_skew.of(&peer.name);
        // A peer whose timestamps were refused lately is not healthy, whatever the contact.
        let skewed = clock_skew.iter().any(|s| s.last_ms_ago <= healthy_within);
        out.push(RegionStatus {
            name: peer.name.clone(),
            address: peer.address.clone(),
            is_self: false,
            healthy: ago.is_some_and(|a| a <= healthy_within) && !skewed,
            clock_skew,
            last_contact_ms_ago: ago,
            closed_ts: closed.map(|c| c.to_string()),
            replication_lag_ms: closed.map(|c| now_ms.saturating_sub(c.wall_ms)),
            unacked_entries: Some(last_seq - acked),
            anti_entropy_repaired: Some(region.anti_entropy.repaired(&peer.name)),
            anti_entropy_gap: Some(states.get(&peer.name).is_some_and(|s| s.gap.is_some())),
            ..RegionStatus::default()
        });
    }
    crate::membership::annotate(&region, &mut out, last_seq);
    Ok(Json(out))
}

async fn intent(State(region): Shared, body: Bytes) -> Result<Response, ApiError> {
    let intent: Intent =
        serde_json::from_slice(&body).map_err(|e| ApiError::new(ProblemType::PeerRefused, e.to_string()))?;
    Ok(Json(region.accept_intent(&intent).await?).into_response())
}

async fn replicate(State(region): Shared, body: Bytes) -> Result<Response, ApiError> {
    let batch: ReplicateBatch =
        serde_json::from_slice(&body).map_err(|e| ApiError::new(ProblemType::PeerRefused, e.to_string()))?;
    Ok(Json(region.accept_batch(&batch).await?).into_response())
}
