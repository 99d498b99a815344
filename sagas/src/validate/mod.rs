//! Turning a definition document into a checked [`SagaDefinition`], and checking inputs.
//!
//! Validation reports every fault it finds, each with the JSON Pointer (RFC 6901) of the
//! value at fault, so that an API or CLI can show them all at once. It runs in two passes:
//! the document's shape against the published JSON Schema (types, unknown fields, missing
//! fields), then the meaning (names, the dependency graph, templates, retry values).
//!
//! What is allowed but questionable is a warning, kept in [`SagaDefinition::warnings`]
//! with its JSON Pointer: today, a compensation that reads its own step's output. Such a
//! compensation cannot run when the action's outcome is unknown (the step is possibly
//! applied and has no output); the saga then ends `stuck` with that reason. It is a
//! warning and not an error because many real participants can only undo by the id their
//! action returned, and refusing the definition would not make them safer; and because
//! definitions stored before this rule must still load.
//!
//! ## Layout
//! - this file: the entry points ([`parse_definition`], [`validate_new`],
//!   [`validate_input`]), the error types and the limits;
//! - `shape`: the first pass, the document against the JSON Schema ([`validate_value`]);
//! - `meaning`: the second pass ([`validate`]): names and the dependency graph, then each
//!   step;
//! - `templates`: a step's kind and its templates (URL, headers, body), with the references
//!   to other steps' outputs;
//! - `limits`: retry policies and time limits.

mod limits;
mod meaning;
mod shape;
mod templates;

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::definition::SagaDefinition;
use crate::document::DefinitionDoc;
use crate::template::escape_pointer;

pub use meaning::validate;
use shape::too_many_steps_in;
pub use shape::validate_value;

/// Most steps a definition may have.
pub const MAX_STEPS: usize = 256;
/// Longest step or saga name.
pub const MAX_NAME_LEN: usize = 128;
/// Longest time limit of one attempt (one hour).
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// Longest wait between two attempts (one day).
pub const MAX_BACKOFF_MS: u64 = 86_400_000;
/// Most attempts a retry policy may allow.
pub const MAX_ATTEMPTS: u32 = 100;
/// The time limit of an attempt when neither the step nor the defaults set one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// One fault in a definition or an input.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ValidationError {
    /// JSON Pointer of the value at fault (`""` for the whole document).
    pub path: String,
    /// What is wrong, for a person.
    pub message: String,
}

/// Every fault found; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_errors(.0))]
pub struct ValidationErrors(pub Vec<ValidationError>);

fn render_errors(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(|e| {
            let at = if e.path.is_empty() {
                "(document)"
            } else {
                e.path.as_str()
            };
            format!("{at}: {}", e.message)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl ValidationErrors {
    fn one(path: impl Into<String>, message: impl Into<String>) -> ValidationErrors {
        ValidationErrors(vec![ValidationError {
            path: path.into(),
            message: message.into(),
        }])
    }

    /// The paths at fault, in order.
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.path.as_str()).collect()
    }
}

#[derive(Default)]
struct Collector(Vec<ValidationError>, Vec<ValidationError>);

impl Collector {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.1.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// The warning given for a compensation that reads its own step's output.
pub const OWN_OUTPUT_WARNING: &str = "a compensation that reads its own step's output cannot run when the \
     action's outcome is unknown (a timeout, a lost connection, a 5xx: the step is then possibly applied and \
     has no output), and the saga ends `stuck`; undo by the action's idempotency key (the `X-Saga-Action-Key` \
     header) instead";

/// Parses and validates a new definition from JSON text ([`validate_new`]).
pub fn parse_definition(text: &str) -> Result<SagaDefinition, ValidationErrors> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| ValidationErrors::one("", format!("not valid JSON: {e}")))?;
    validate_new(&value)
}

/// Validates a definition about to be registered: [`validate_value`], and the rules that
/// apply to new definitions only, because definitions stored before them must still load
/// (today: no step sets a reserved header, [`crate::headers`]). Every fault of both, in one
/// answer.
pub fn validate_new(value: &Value) -> Result<SagaDefinition, ValidationErrors> {
    if let Some(errors) = too_many_steps_in(value) {
        return Err(errors);
    }
    let reserved = crate::headers::reserved_header_faults(value);
    match validate_value(value) {
        Ok(definition) if reserved.is_empty() => Ok(definition),
        Ok(_) => Err(ValidationErrors(reserved)),
        Err(ValidationErrors(mut errors)) => {
            errors.extend(reserved);
            Err(ValidationErrors(errors))
        }
    }
}

/// Why text with a NUL character is refused.
pub const NUL_MESSAGE: &str = "text may not contain the NUL character (\\u0000): stores cannot keep it";

/// The JSON Pointer of the first string (or object key) holding a NUL character, if any.
/// Saga data must survive a round trip through every store, and PostgreSQL cannot keep NUL
/// in `jsonb` or `text`, so such data is refused at the edge instead of failing later.
pub fn find_nul(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => s.contains('\0').then(String::new),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_nul(v).map(|p| format!("/{i}{p}"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let here = format!("/{}", escape_pointer(k));
            if k.contains('\0') {
                Some(here)
            } else {
                find_nul(v).map(|p| format!("{here}{p}"))
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}
/// A digest of the document's canonical JSON (object keys sorted).
pub fn content_hash(doc: &DefinitionDoc) -> String {
    let canonical = serde_json::to_value(doc).expect("a document is JSON").to_string();
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a saga input against the definition's `input_schema` (compiled once, when the
/// definition was checked); paths start with `/input`.
pub fn validate_input(def: &SagaDefinition, input: &Value) -> Result<(), ValidationErrors> {
    if let Some(at) = find_nul(input) {
        return Err(ValidationErrors::one(format!("/input{at}"), NUL_MESSAGE));
    }
    // Compiled when the definition was checked (a definition has a validator exactly when
    // it has an input schema).
    let Some(validator) = &def.input_validator else {
        return Ok(());
    };
    let errors: Vec<ValidationError> = validator
        .iter_errors(input)
        .map(|e| ValidationError {
            path: format!("/input{}", e.instance_path().as_str()),
            message: e.to_string(),
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}
