//! `/v1/sagas`: start, list, read, cancel and retry sagas, and read their event logs.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use sagas::SagaStatus;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::ApiState;
use super::error::{ApiError, Problem, ProblemError, ProblemType};
use super::extract::{ApiJson, ApiQuery, MaybeJson, SagaId, param};
use super::views::{EventLog, EventView, SagaPage, SagaResponse, SagaStatusName, SagaSummary};
use crate::store::{ListFilter, SagaRecord};
use crate::{Error, StartSaga, TraceHeaders};

/// Longest `wait_ms` honoured.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Page size of `GET /v1/sagas` without `limit`.
pub const DEFAULT_PAGE: u32 = 50;
/// Largest page size.
pub const MAX_PAGE: u32 = 500;
/// Longest idempotency key.
pub const MAX_KEY_LEN: usize = 255;

/// The routes of this resource.
pub(crate) fn router() -> Router<ApiState> {
    Router::new()
        .route("/v1/sagas", post(start).get(list))
        .route("/v1/sagas/{id}", get(show))
        .route("/v1/sagas/{id}/events", get(events))
        .route("/v1/sagas/{id}/cancel", post(cancel))
        .route("/v1/sagas/{id}/retry", post(retry))
}

/// A request to start a saga.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"definition": "transfer", "input": {"from": "alice", "to": "bob", "amount": 50}}))]
pub(crate) struct StartSagaRequest {
    /// Definition name.
    definition: String,
    /// Definition version, 1 or more (default: the latest).
    #[serde(default)]
    #[schema(minimum = 1)]
    version: Option<i64>,
    /// The input, checked against the definition's `input_schema` (default: `{}`).
    #[serde(default = "empty_object")]
    input: Value,
    /// Starting twice with one key starts one saga (same as the `Idempotency-Key` header):
    /// 1 to 255 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    idempotency_key: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// The query of `POST /v1/sagas`.
#[derive(Debug, Deserialize)]
pub(crate) struct WaitQuery {
    wait_ms: Option<String>,
}

/// Starts a saga (201), or returns the one its idempotency key already started (200).
#[utoipa::path(
    post,
    path = "/v1/sagas",
    operation_id = "startSaga",
    tag = "sagas",
    request_body = StartSagaRequest,
    params(
        ("wait_ms" = Option<u64>, Query, minimum = 0, maximum = 60000,
            description = "Answer once the saga is settled or after this many ms, 0 to 60000 (a larger wait is refused)"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]*[!-~])?$",
            description = "Starting twice with one key starts one saga: 1 to 255 visible ASCII characters (spaces inside). \
                When the body's `idempotency_key` is given too, both must be equal."),
        ("traceparent" = Option<String>, Header, description = "W3C trace context the saga joins"),
        ("tracestate" = Option<String>, Header, description = "W3C vendor trace state, passed on to the saga's HTTP steps"),
    ),
    responses(
        (status = 201, description = "Started", body = SagaResponse, links(
            ("getSaga" = (operation_id = "getSaga", parameters(("id" = "$response.body#/id")))),
            ("getSagaEvents" = (operation_id = "getSagaEvents", parameters(("id" = "$response.body#/id")))),
            ("cancelSaga" = (operation_id = "cancelSaga", parameters(("id" = "$response.body#/id")))),
            ("retrySaga" = (operation_id = "retrySaga", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 200, description = "The idempotency key had started this saga", body = SagaResponse, links(
            ("getSaga" = (operation_id = "getSaga", parameters(("id" = "$response.body#/id")))),
        )),
        (status = 400, description = "Malformed JSON or bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such definition", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The idempotency key started a different saga", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body or input; input faults have paths under `/input`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn start(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<WaitQuery>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<StartSagaRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let wait = param::<u64>("wait_ms", query.wait_ms.as_deref(), "a number of milliseconds")?.unwrap_or(0);
    if wait > MAX_WAIT_MS {
        return Err(ApiError::parameter(
            "/query/wait_ms",
            format!("`{wait}` is longer than the longest wait, {MAX_WAIT_MS} ms"),
        ));
    }
    let idempotency_key = idempotency_key(&headers, body.idempotency_key)?;
    if let Some(v) = body.version
        && v < 1
    {
        let message = format!("`{v}` is not a version number (1 or more)");
        return Err(
            ApiError::new(ProblemType::InvalidBody, format!("/version: {message}")).with_errors(vec![ProblemError {
                path: "/version".into(),
                message,
            }]),
        );
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let trace_context = header("traceparent").and_then(|tp| TraceHeaders::parse(tp, header("tracestate")));
    let request = StartSaga {
        definition: body.definition,
        version: body.version,
        input: body.input,
        idempotency_key,
        trace_context,
    };
    let (view, created) = if wait > 0 {
        // A saga that settles here answers from memory, without reading it back.
        let timeout = Duration::from_millis(wait);
        state
            .coordinator
            .start_and_wait(request, timeout)
            .await
            .map_err(start_error)?
    } else {
        // A new saga answers with what its start committed, without reading it back.
        state.coordinator.start_saga(request).await.map_err(start_error)?
    };
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let location = format!("/v1/sagas/{}", view.record.id);
    Ok((
        status,
        [(header::LOCATION, location)],
        Json(SagaResponse::new(&view, state.jaeger_ui.as_deref())),
    ))
}

/// The idempotency key from the body or the `Idempotency-Key` header; both given and
/// different is a 400.
fn idempotency_key(headers: &HeaderMap, body: Option<String>) -> Result<Option<String>, ApiError> {
    const HEADER: &str = "/header/idempotency-key";
    let header = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::parameter(HEADER, "the key must be visible ASCII"))?
                .trim()
                .to_owned(),
        ),
    };
    let check = |key: &str, bad: &dyn Fn(&str) -> ApiError| {
        // In characters, as JSON Schema's `maxLength` counts them.
        if key.is_empty() || key.chars().count() > MAX_KEY_LEN {
            Err(bad(&format!("an idempotency key has 1 to {MAX_KEY_LEN} characters")))
        } else {
            Ok(())
        }
    };
    if let Some(key) = &header {
        check(key, &|m| ApiError::parameter(HEADER, m))?;
    }
    if let Some(key) = &body {
        check(key, &|m| {
            ApiError::new(ProblemType::InvalidBody, format!("/idempotency_key: {m}")).with_errors(vec![ProblemError {
                path: "/idempotency_key".into(),
                message: m.to_owned(),
            }])
        })?;
    }
    match (header, body) {
        (Some(h), Some(b)) if h != b => Err(ApiError::parameter(
            HEADER,
            format!(
                "the `Idempotency-Key` header (`{h}`) differs from the body's `idempotency_key` (`{b}`); send one, or both equal"
            ),
        )),
        (h, b) => Ok(b.or(h)),
    }
}

/// Input faults (paths under `/input`) are an invalid input; any other is the definition's.
#[allow(
    clippy::wildcard_enum_match_arm,
    reason = "not a status enum: every other error maps as it does everywhere"
)]
fn start_error(error: Error) -> ApiError {
    match error {
        Error::Invalid(errors)
            if errors
                .0
                .iter()
                .all(|e| e.path == "/input" || e.path.starts_with("/input/")) =>
        {
            ApiError::validation(ProblemType::InvalidInput, errors)
        }
        other => other.into(),
    }
}

/// The query of `GET /v1/sagas` (the console's list takes the same).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    pub(crate) status: Option<String>,
    pub(crate) definition: Option<String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) limit: Option<String>,
    pub(crate) cursor: Option<String>,
}

/// Lists sagas, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/sagas",
    operation_id = "listSagas",
    tag = "sagas",
    params(
        ("status" = Option<SagaStatusName>, Query, description = "Only sagas in this status"),
        ("definition" = Option<String>, Query, description = "Only sagas of this definition"),
        ("idempotency_key" = Option<String>, Query, description = "Only the saga this idempotency key started"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, pattern = "^([0-9a-fA-F]{48})?$", description = "The `next_cursor` of the previous page (empty: the first page)"),
    ),
    responses(
        (status = 200, description = "A page of sagas", body = SagaPage),
        (status = 400, description = "Bad parameter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<SagaPage>, ApiError> {
    let (rows, next_cursor) = list_page(&state, query).await?;
    let ui = state.jaeger_ui.as_deref();
    Ok(Json(SagaPage {
        sagas: rows.iter().map(|r| SagaSummary::new(r, ui)).collect(),
        next_cursor,
    }))
}

/// The rows of one page of `GET /v1/sagas` and the cursor of the next, if any.
pub(crate) async fn list_page(
    state: &ApiState,
    query: ListQuery,
) -> Result<(Vec<SagaRecord>, Option<String>), ApiError> {
    let status = match query.status.as_deref() {
        None => None,
        Some(raw) => Some(SagaStatus::parse(raw).ok_or_else(|| {
            let all: Vec<&str> = SagaStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::parameter("/query/status", format!("`{raw}` is not a status ({})", all.join(", ")))
        })?),
    };
    let limit = param::<u32>("limit", query.limit.as_deref(), "a page size")?.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::parameter(
            "/query/limit",
            format!("`{limit}` is not between 1 and {MAX_PAGE}"),
        ));
    }
    let before = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(decode_cursor(raw).ok_or_else(|| {
            ApiError::parameter(
                "/query/cursor",
                "not a cursor; pass the `next_cursor` of a previous page",
            )
        })?),
    };
    let filter = ListFilter {
        status,
        definition: query.definition.filter(|d| !d.is_empty()),
        idempotency_key: query.idempotency_key.filter(|k| !k.is_empty()),
        limit: limit + 1,
        before,
    };
    let mut rows = state.coordinator.store().list_sagas(&filter).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(encode_cursor) } else { None };
    Ok((rows, next_cursor))
}

/// Characters in a cursor.
const CURSOR_LEN: usize = 48;

/// A cursor: `created_at_ms` (as 16 hex digits of its 64 bits) and the id (32 hex digits)
/// of the last saga of a page. Every string of 48 hex digits is one, so that the document
/// can say exactly what is accepted (a forged one only moves where the page starts).
fn encode_cursor(record: &SagaRecord) -> String {
    format!("{:016x}{}", record.created_at_ms as u64, record.id.simple())
}

fn decode_cursor(cursor: &str) -> Option<(i64, Uuid)> {
    if cursor.len() != CURSOR_LEN || !cursor.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let ms = u64::from_str_radix(&cursor[..16], 16).ok()? as i64;
    Some((ms, Uuid::parse_str(&cursor[16..]).ok()?))
}

/// A saga with its steps.
#[utoipa::path(
    get,
    path = "/v1/sagas/{id}",
    operation_id = "getSaga",
    tag = "sagas",
    params(("id" = Uuid, Path, description = "The saga's id")),
    responses(
        (status = 200, description = "The saga", body = SagaResponse),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn show(State(state): State<ApiState>, SagaId(id): SagaId) -> Result<Json<SagaResponse>, ApiError> {
    view(&state, id).await.map(Json)
}

async fn view(state: &ApiState, id: Uuid) -> Result<SagaResponse, ApiError> {
    let view = state.coordinator.saga(id).await?;
    Ok(SagaResponse::new(&view, state.jaeger_ui.as_deref()))
}

/// A saga's event log.
#[utoipa::path(
    get,
    path = "/v1/sagas/{id}/events",
    operation_id = "getSagaEvents",
    tag = "sagas",
    params(("id" = Uuid, Path, description = "The saga's id")),
    responses(
        (status = 200, description = "The log", body = EventLog),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn events(State(state): State<ApiState>, SagaId(id): SagaId) -> Result<Json<EventLog>, ApiError> {
    let events = state.coordinator.events(id).await?;
    Ok(Json(EventLog {
        events: events.iter().map(EventView::from).collect(),
    }))
}

/// The optional body of a cancel.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelRequest {
    /// Why, recorded in the log (default: "cancelled through the API").
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

/// Cancels a running saga: it starts no more steps and compensates.
#[utoipa::path(
    post,
    path = "/v1/sagas/{id}/cancel",
    operation_id = "cancelSaga",
    tag = "sagas",
    params(("id" = Uuid, Path, description = "The saga's id")),
    request_body(content = Option<CancelRequest>, description = "Optional: no body and `null` are the same as `{}`"),
    responses(
        (status = 200, description = "Cancelled; compensations run", body = SagaResponse),
        (status = 400, description = "Malformed id or JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The saga is not running", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A body of the wrong shape", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel(
    State(state): State<ApiState>,
    SagaId(id): SagaId,
    MaybeJson(body): MaybeJson<Option<CancelRequest>>,
) -> Result<Json<SagaResponse>, ApiError> {
    let reason = body
        .flatten()
        .and_then(|b| b.reason)
        .unwrap_or_else(|| "cancelled through the API".to_owned());
    state.coordinator.cancel(id, &reason).await?;
    view(&state, id).await.map(Json)
}

/// Retries a stuck saga's failed compensations.
#[utoipa::path(
    post,
    path = "/v1/sagas/{id}/retry",
    operation_id = "retrySaga",
    tag = "sagas",
    params(("id" = Uuid, Path, description = "The saga's id")),
    responses(
        (status = 200, description = "Compensations resume", body = SagaResponse),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The saga is not stuck", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded; see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn retry(State(state): State<ApiState>, SagaId(id): SagaId) -> Result<Json<SagaResponse>, ApiError> {
    state.coordinator.retry(id).await?;
    view(&state, id).await.map(Json)
}
