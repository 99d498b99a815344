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
use super::views::{EventLog, EventView, SagaPage, SagaResponse, SagaSummary};
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
pub(crate) struct StartSagaRequest {
    /// Definition name.
    definition: String,
    /// Definition version (default: the latest).
    #[serde(default)]
    version: Option<i64>,
    /// The input, checked against the definition's `input_schema` (default: `{}`).
    #[serde(default = "empty_object")]
    input: Value,
    /// Starting twice with one key starts one saga (same as the `Idempotency-Key` header).
    #[serde(default)]
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
        ("wait_ms" = Option<u64>, Query, description = "Answer once the saga is settled or after this many ms (at most 60000)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Used when the body has no `idempotency_key`"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context the saga joins"),
        ("tracestate" = Option<String>, Header, description = "W3C vendor trace state, passed on to the saga's HTTP steps"),
    ),
    responses(
        (status = 201, description = "Started", body = SagaResponse),
        (status = 200, description = "The idempotency key had started this saga", body = SagaResponse),
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
    let idempotency_key = idempotency_key(&headers, body.idempotency_key)?;
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
        let timeout = Duration::from_millis(wait.min(MAX_WAIT_MS));
        state
            .coordinator
            .start_and_wait(request, timeout)
            .await
            .map_err(start_error)?
    } else {
        let (record, created) = state.coordinator.start_saga(request).await.map_err(start_error)?;
        (state.coordinator.saga(record.id).await?, created)
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
        if key.is_empty() || key.len() > MAX_KEY_LEN {
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
        ("status" = Option<String>, Query, description = "running, compensating, completed, compensated or stuck"),
        ("definition" = Option<String>, Query, description = "Only sagas of this definition"),
        ("idempotency_key" = Option<String>, Query, description = "Only the saga this idempotency key started"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
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
        None | Some("") => None,
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

/// A cursor: the hex of `created_at_ms:id` of the last saga of a page.
fn encode_cursor(record: &SagaRecord) -> String {
    format!("{}:{}", record.created_at_ms, record.id)
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_cursor(cursor: &str) -> Option<(i64, Uuid)> {
    if !cursor.len().is_multiple_of(2) || !cursor.is_ascii() {
        return None;
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&cursor[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let text = String::from_utf8(bytes).ok()?;
    let (ms, id) = text.split_once(':')?;
    Some((ms.parse().ok()?, Uuid::parse_str(id).ok()?))
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
    request_body(content = Option<CancelRequest>, description = "Optional"),
    responses(
        (status = 200, description = "Cancelled; compensations run", body = SagaResponse),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The saga is not running", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel(
    State(state): State<ApiState>,
    SagaId(id): SagaId,
    MaybeJson(body): MaybeJson<CancelRequest>,
) -> Result<Json<SagaResponse>, ApiError> {
    let reason = body
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
