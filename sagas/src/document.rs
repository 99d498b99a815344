//! The JSON definition format, exactly as users write it.
//!
//! These types mirror the document one to one (serde and schemars derive from them) and
//! carry no meaning of their own: [`crate::validate`] turns a document into a checked
//! [`crate::SagaDefinition`]. The JSON Schema published in `schemas/definition.schema.json`
//! is generated from these types by [`definition_schema`], so the two cannot drift.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::region::{RegionConsistency, RegionDoc, RegionOp};
pub use crate::txn::TxnDoc;

/// A saga definition document: a named DAG of steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "geosaga saga definition")]
pub struct DefinitionDoc {
    /// Name of the saga; letters, digits, `_`, `-` and `.`.
    pub name: String,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema that every saga input must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    /// Defaults applied to every step that does not set its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<DefaultsDoc>,
    /// The steps. Without `depends_on`, a step depends on the step before it.
    pub steps: Vec<StepDoc>,
}

/// Defaults for every step of a definition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultsDoc {
    /// Time limit of one attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retry policy of actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryDoc>,
    /// Retry policy of compensations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation_retry: Option<RetryDoc>,
}

/// One step: an action, an optional compensation, and how to run them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDoc {
    /// Unique name of the step within the saga.
    pub name: String,
    /// Steps that must succeed before this one starts. Absent: the previous step.
    /// `[]`: none (a root step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
    /// What the step does.
    pub action: ActionDoc,
    /// What undoes the action when the saga unwinds: run for a step that succeeded, and
    /// for one whose outcome is unknown (it timed out, lost its connection or got a 5xx:
    /// possibly applied, with no output). It may therefore run for an action that never
    /// happened, and must then change nothing: key it on the action's idempotency key (the
    /// `X-Saga-Action-Key` header), not on the action's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<ActionDoc>,
    /// Retry policy of the action (fields not given come from `defaults.retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryDoc>,
    /// Retry policy of the compensation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation_retry: Option<RetryDoc>,
    /// Time limit of one attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// A read that observes what the action did (a balance, a reservation), used by
    /// `geosaga check` only: its answer must not change when the action or the
    /// compensation is delivered again under the same idempotency key. It may use the
    /// templates the action may use. The coordinator never sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<HttpDoc>,
}

/// An action or a compensation: exactly one of the kinds below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct ActionDoc {
    /// An HTTP request to a participant service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpDoc>,
    /// A handler registered by name from Rust code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rust: Option<RustDoc>,
    /// A read or a write of the regions' key-value layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<RegionDoc>,
    /// A multi-key transaction across the regions, committed exactly once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<TxnDoc>,
}

/// An HTTP request. `url`, header values and `body` may hold templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpDoc {
    /// The request method.
    pub method: HttpMethod,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// JSON body of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// HTTP methods a step may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    /// The method as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }
}

/// A call to a Rust handler registered with the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RustDoc {
    /// The name the handler was registered under.
    pub handler: String,
    /// Parameters passed to the handler (may hold templates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

/// A retry policy; every field is optional and falls back to the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryDoc {
    /// Attempts in all, the first one included (1 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Wait before the second attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_backoff_ms: Option<u64>,
    /// Longest wait between attempts, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<u64>,
    /// Factor applied to the wait after each attempt (1 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    /// Randomise waits (between half and all of the computed wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<bool>,
}

/// The JSON Schema of [`DefinitionDoc`], as published for editors.
pub fn definition_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(DefinitionDoc)).expect("a schema is JSON")
}
