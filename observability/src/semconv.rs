//! Span and log attribute names used across geosaga.

/// The saga's id.
pub const SAGA_ID: &str = "saga.id";
/// The definition's name.
pub const SAGA_DEFINITION: &str = "saga.definition";
/// The definition's version.
pub const SAGA_VERSION: &str = "saga.version";
/// The step's name.
pub const STEP_NAME: &str = "saga.step";
/// `action` or `compensation`.
pub const STEP_KIND: &str = "saga.step.kind";
/// The attempt number.
pub const STEP_ATTEMPT: &str = "saga.step.attempt";
/// `succeeded`, `retry` or `failed`.
pub const STEP_OUTCOME: &str = "saga.step.outcome";
/// The step's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "saga.idempotency_key";
