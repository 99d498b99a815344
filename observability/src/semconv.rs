//! Span, event and log attribute names used across geosaga, in one place so that traces,
//! logs and dashboards agree. geosaga's own names start with `saga.`; the rest are
//! OpenTelemetry's semantic conventions.

/// The saga's id.
pub const SAGA_ID: &str = "saga.id";
/// The definition's name.
pub const SAGA_DEFINITION: &str = "saga.definition";
/// The definition's version.
pub const SAGA_VERSION: &str = "saga.version";
/// How the saga settled: `completed`, `compensated` or `stuck`.
pub const SAGA_STATUS: &str = "saga.status";
/// The coordinator that ran a span (its node id).
pub const SAGA_NODE: &str = "saga.node";
/// The step's name.
pub const STEP_NAME: &str = "saga.step";
/// `action` or `compensation`.
pub const STEP_KIND: &str = "saga.step.kind";
/// The attempt number, from 1.
pub const STEP_ATTEMPT: &str = "saga.step.attempt";
/// `succeeded`, `retry` or `failed`.
pub const STEP_OUTCOME: &str = "saga.step.outcome";
/// The step's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "saga.idempotency_key";
/// Why a saga unwinds: the failed step's error, or the cancel reason.
pub const UNWIND_REASON: &str = "saga.unwind.reason";
/// The step whose failure made the saga unwind.
pub const UNWIND_STEP: &str = "saga.unwind.step";

/// Span event: the saga stopped going forward and began to compensate.
pub const EVENT_UNWIND: &str = "saga.unwind";
/// Span event: the saga's compensations were retried by an operator.
pub const EVENT_RETRY: &str = "saga.retry";

/// The class of an error: for steps `transient`, `timeout` or `permanent`.
pub const ERROR_TYPE: &str = "error.type";
/// The span event that records an error.
pub const EVENT_EXCEPTION: &str = "exception";
/// The error's message, on an `exception` event.
pub const EXCEPTION_MESSAGE: &str = "exception.message";
/// The error's class, on an `exception` event.
pub const EXCEPTION_TYPE: &str = "exception.type";

/// HTTP client spans: the request method.
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
/// HTTP client spans: the status code of the response.
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
/// HTTP client spans: the URL, without credentials.
pub const URL_FULL: &str = "url.full";
/// HTTP client spans: the host called.
pub const SERVER_ADDRESS: &str = "server.address";
/// HTTP client spans: the port called.
pub const SERVER_PORT: &str = "server.port";

/// Resource: the service's name.
pub const SERVICE_NAME: &str = "service.name";
/// Resource: the service's version.
pub const SERVICE_VERSION: &str = "service.version";
/// Resource: this instance of the service (the coordinator's node id).
pub const SERVICE_INSTANCE_ID: &str = "service.instance.id";
/// Resource: the process's id (tells apart the processes a saga's trace went through).
pub const PROCESS_PID: &str = "process.pid";
