//! The JSON bodies the API answers with, and how they are built from the coordinator's
//! records. Times are RFC 3339 strings in UTC with milliseconds.

use sagas::{SagaStatus, StepError, StepState, StepStatus};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::redact;
use crate::store::{DefinitionRecord, DefinitionSummary, SagaRecord, StoredEvent};
use crate::{SagaTrace, SagaView};

/// Formats Unix milliseconds as RFC 3339 in UTC, e.g. `2025-01-31T12:00:00.250Z`.
pub fn rfc3339(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// A step's error.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StepErrorView {
    /// `transient` or `timeout` (the outcome is unknown: possibly applied), `permanent` (a
    /// refusal: known not applied), `not_delivered` (the request never left: known not
    /// applied) or `unusable_output` (applied, but its output could not be kept).
    pub kind: String,
    /// What happened.
    pub message: String,
    /// The HTTP status of the participant's answer, for HTTP steps that got one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

impl From<&StepError> for StepErrorView {
    fn from(e: &StepError) -> StepErrorView {
        StepErrorView {
            kind: e.kind.as_str().to_owned(),
            message: redact::url_credentials(&e.message).into_owned(),
            status: e.status,
        }
    }
}

/// Where a step's compensation is.
///
/// `none`: the step has no compensation. `not_needed`: the saga does not (or not yet) need
/// it: the step did not succeed (and is not possibly applied), or the saga is not
/// unwinding. `pending`: the saga unwinds and the compensation waits for its turn. `running`: an attempt is in flight or a retry is
/// due. `succeeded`, `failed`: its outcome (a failed one leaves the saga stuck).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompensationStatus {
    /// The step has no compensation.
    None,
    /// The saga does not need it.
    NotNeeded,
    /// Due once the steps after it are unwound.
    Pending,
    /// In flight or waiting for a retry.
    Running,
    /// Done.
    Succeeded,
    /// Failed for good.
    Failed,
}

/// A step's compensation.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CompensationView {
    /// Where it is.
    pub status: CompensationStatus,
    /// Attempts started so far (across operator retries).
    pub attempts: u32,
    /// The last error.
    pub error: Option<StepErrorView>,
}

/// One step of a saga.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StepView {
    /// The step's name.
    pub name: String,
    /// `pending`, `running`, `succeeded`, `failed` (known not applied), `possibly_applied`
    /// (failed without a certain outcome: compensated when the saga unwinds), `not_run`,
    /// `compensating`, `compensated` or `compensation_failed`.
    pub status: String,
    /// Whether an attempt of the action ended without a certain outcome: the action may
    /// have been applied although it has no output (a compensated step stays so marked).
    pub outcome_unknown: bool,
    /// Action attempts started so far.
    pub attempts: u32,
    /// The action's output, once it succeeded.
    pub output: Option<Value>,
    /// The last action error.
    pub error: Option<StepErrorView>,
    /// The compensation.
    pub compensation: CompensationView,
}

/// The schema of a saga status as the API writes it: one of [`SagaStatus::ALL`], by
/// [`SagaStatus::as_str`], so that the document follows the state machine.
pub struct SagaStatusName;

impl utoipa::PartialSchema for SagaStatusName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some(SagaStatus::ALL.iter().map(|s| s.as_str())))
            .description(Some("A saga's status"))
            .into()
    }
}

impl ToSchema for SagaStatusName {
    fn name() -> std::borrow::Cow<'static, str> {
        "SagaStatus".into()
    }
}

/// A saga as listed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SagaSummary {
    /// Its id.
    pub id: Uuid,
    /// Definition name.
    pub definition: String,
    /// Definition version.
    pub version: i64,
    /// `running`, `compensating`, `completed`, `compensated` or `stuck`.
    #[schema(value_type = SagaStatusName)]
    pub status: String,
    /// Why it unwound, if it did.
    pub error: Option<String>,
    /// The W3C trace id of the saga's trace: its caller's, when it was started with a
    /// `traceparent`, else its own.
    pub trace_id: Option<String>,
    /// Link to the trace in the configured Jaeger UI.
    pub trace_url: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

impl SagaSummary {
    /// The summary of a saga row; `jaeger_ui` is the base URL of the Jaeger UI, if any.
    pub fn new(record: &SagaRecord, jaeger_ui: Option<&str>) -> SagaSummary {
        let trace_id = Some(SagaTrace::of(record).trace_id_hex());
        let trace_url = match (jaeger_ui, &trace_id) {
            (Some(ui), Some(id)) => Some(format!("{}/trace/{id}", ui.trim_end_matches('/'))),
            _ => None,
        };
        SagaSummary {
            id: record.id,
            definition: record.definition.clone(),
            version: record.version,
            status: record.status.as_str().to_owned(),
            error: record.error.as_deref().map(|e| redact::url_credentials(e).into_owned()),
            trace_id,
            trace_url,
            created_at: rfc3339(record.created_at_ms),
            updated_at: rfc3339(record.updated_at_ms),
        }
    }
}

/// A saga with its input and steps.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SagaResponse {
    /// The row.
    #[serde(flatten)]
    pub summary: SagaSummary,
    /// Its input.
    pub input: Value,
    /// Its steps, in definition order.
    pub steps: Vec<StepView>,
}

impl SagaResponse {
    /// The view of a saga.
    pub fn new(view: &SagaView, jaeger_ui: Option<&str>) -> SagaResponse {
        let state = &view.state;
        let unwinding = matches!(state.status(), SagaStatus::Compensating | SagaStatus::Stuck);
        let steps = state
            .definition()
            .steps
            .iter()
            .zip(state.steps())
            .map(|(step, s)| StepView {
                name: step.name.clone(),
                status: s.status.as_str().to_owned(),
                attempts: s.attempts,
                outcome_unknown: s.uncertain && s.output.is_none(),
                output: s.output.clone(),
                error: s.error.as_ref().map(StepErrorView::from),
                compensation: compensation(s, step.compensation.is_some(), unwinding),
            })
            .collect();
        SagaResponse {
            summary: SagaSummary::new(&view.record, jaeger_ui),
            input: view.record.input.clone(),
            steps,
        }
    }
}

fn compensation(s: &StepState, defined: bool, unwinding: bool) -> CompensationView {
    let status = match s.status {
        _ if !defined => CompensationStatus::None,
        StepStatus::Compensating | StepStatus::CompensationRetryWaiting { .. } => CompensationStatus::Running,
        StepStatus::Compensated => CompensationStatus::Succeeded,
        StepStatus::CompensationFailed => CompensationStatus::Failed,
        StepStatus::Succeeded | StepStatus::PossiblyApplied if unwinding => CompensationStatus::Pending,
        StepStatus::Pending
        | StepStatus::Running
        | StepStatus::RetryWaiting { .. }
        | StepStatus::Succeeded
        | StepStatus::PossiblyApplied
        | StepStatus::Failed
        | StepStatus::NotRun => CompensationStatus::NotNeeded,
    };
    CompensationView {
        status,
        attempts: s.compensation_attempts,
        error: s.compensation_error.as_ref().map(StepErrorView::from),
    }
}

/// One page of sagas, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SagaPage {
    /// The sagas.
    pub sagas: Vec<SagaSummary>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One event of a saga's log: `seq`, `at`, `type` and the event's own fields (`step`,
/// `attempt`, `output`, `error`, `retry_at_ms`, `reason`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EventView {
    /// Position in the log, from 0.
    pub seq: i64,
    /// When it was written (RFC 3339).
    pub at: String,
    /// The event's type, e.g. `step_started`.
    #[serde(rename = "type")]
    pub r#type: String,
    /// The event's own fields.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, Value>,
}

impl From<&StoredEvent> for EventView {
    fn from(e: &StoredEvent) -> EventView {
        let mut fields = match serde_json::to_value(&e.event) {
            Ok(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let r#type = e.event.kind().to_owned();
        fields.remove("type");
        // Errors and reasons are the coordinator's words, with URLs in them; outputs are the
        // participants' own data and are shown as they are.
        if let Some(Value::String(message)) = fields.get_mut("error").and_then(|e| e.get_mut("message")) {
            *message = redact::url_credentials(message).into_owned();
        }
        if let Some(Value::String(reason)) = fields.get_mut("reason") {
            *reason = redact::url_credentials(reason).into_owned();
        }
        EventView {
            seq: e.seq,
            at: rfc3339(e.at_ms),
            r#type,
            fields,
        }
    }
}

/// A saga's event log.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EventLog {
    /// The events, in order.
    pub events: Vec<EventView>,
}

/// What registering a definition did.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DefinitionCreated {
    /// The definition's name.
    pub name: String,
    /// The stored version (new, or the existing one with the same content).
    pub version: i64,
    /// The digest of its content.
    pub content_hash: String,
    /// Whether a new version was stored.
    pub created: bool,
    /// What validation found questionable but allowed (e.g. a compensation that reads its
    /// own step's output, which cannot run for a possibly-applied step).
    pub warnings: Vec<Warning>,
}

/// A validation warning.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Warning {
    /// JSON Pointer of the value concerned.
    pub path: String,
    /// What is questionable about it.
    pub message: String,
}

impl From<&sagas::ValidationError> for Warning {
    fn from(w: &sagas::ValidationError) -> Warning {
        Warning {
            path: w.path.clone(),
            message: w.message.clone(),
        }
    }
}

/// A stored definition version.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DefinitionResponse {
    /// The name.
    pub name: String,
    /// The version, from 1.
    pub version: i64,
    /// The digest of its content.
    pub content_hash: String,
    /// When this version was stored (RFC 3339).
    pub created_at: String,
    /// The document (see `GET /v1/schema/definition`).
    pub document: Value,
}

impl From<&DefinitionRecord> for DefinitionResponse {
    fn from(r: &DefinitionRecord) -> DefinitionResponse {
        DefinitionResponse {
            name: r.name.clone(),
            version: r.version,
            content_hash: r.content_hash.clone(),
            created_at: rfc3339(r.created_at_ms),
            document: r.document.clone(),
        }
    }
}

/// A definition and its latest version.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DefinitionListItem {
    /// The name.
    pub name: String,
    /// The latest version.
    pub latest_version: i64,
    /// When the latest version was stored (RFC 3339).
    pub updated_at: String,
}

impl From<&DefinitionSummary> for DefinitionListItem {
    fn from(d: &DefinitionSummary) -> DefinitionListItem {
        DefinitionListItem {
            name: d.name.clone(),
            latest_version: d.latest_version,
            updated_at: rfc3339(d.updated_at_ms),
        }
    }
}

/// Every definition.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DefinitionList {
    /// By name.
    pub definitions: Vec<DefinitionListItem>,
}

/// The answer of the health and readiness probes.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Status {
    /// `ok` (alive) or `ready`.
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_735_689_599_999), "2024-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }
}
