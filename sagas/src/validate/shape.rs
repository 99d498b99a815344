//! The first pass: the document's shape against the published JSON Schema (types, unknown
//! fields, missing fields), before the meaning is looked at.

use std::collections::HashSet;
use std::sync::LazyLock;

use serde_json::Value;

use super::{Collector, MAX_STEPS, NUL_MESSAGE, ValidationError, ValidationErrors, find_nul, validate};
use crate::definition::SagaDefinition;
use crate::document::{DefinitionDoc, definition_schema};
use crate::template::escape_pointer;

static DOCUMENT_VALIDATOR: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| jsonschema::validator_for(&definition_schema()).expect("the generated schema is valid"));

/// The fault of a document with more than [`MAX_STEPS`] steps, found before anything else
/// is looked at: validation costs what a document of at most that many steps costs.
pub(super) fn too_many_steps(count: usize) -> Option<ValidationErrors> {
    (count > MAX_STEPS).then(|| {
        ValidationErrors::one(
            "/steps",
            format!("{count} steps: at most {MAX_STEPS} steps are allowed"),
        )
    })
}

pub(super) fn too_many_steps_in(value: &Value) -> Option<ValidationErrors> {
    match value.get("steps") {
        Some(Value::Array(steps)) => too_many_steps(steps.len()),
        _ => None,
    }
}

/// Validates a definition given as a JSON value: a stored one, or the shape and meaning of
/// a new one ([`super::validate_new`] adds the rules for new definitions).
///
/// Its cost is linear in the document's size: a document with more than [`MAX_STEPS`]
/// steps is refused before anything else is checked, and no check compares every fault,
/// step or reference with every other.
pub fn validate_value(value: &Value) -> Result<SagaDefinition, ValidationErrors> {
    if let Some(errors) = too_many_steps_in(value) {
        return Err(errors);
    }
    if let Some(at) = find_nul(value) {
        return Err(ValidationErrors::one(at, NUL_MESSAGE));
    }
    let mut errors = Collector::default();
    for error in DOCUMENT_VALIDATOR.iter_errors(value) {
        schema_error(&error, &mut errors);
    }
    if !errors.0.is_empty() {
        // Report the meaning faults too when the shape allows: drop the unknown fields and
        // try again, keeping only faults at paths the shape pass did not already name.
        let mut pruned = value.clone();
        for e in &errors.0 {
            if e.message.starts_with("unknown field") {
                remove_pointer(&mut pruned, &e.path);
            }
        }
        if let Ok(doc) = serde_json::from_value::<DefinitionDoc>(pruned)
            && let Err(more) = validate(doc)
        {
            let known: HashSet<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
            // A fault is not fresh if its path or one of its parents was already named.
            let named =
                |path: &str| known.contains(path) || path.match_indices('/').any(|(at, _)| known.contains(&path[..at]));
            let fresh: Vec<ValidationError> = more.0.into_iter().filter(|m| !named(&m.path)).collect();
            errors.0.extend(fresh);
        }
        return Err(ValidationErrors(errors.0));
    }
    let doc: DefinitionDoc = serde_path_to_error::deserialize(value)
        .map_err(|e| ValidationErrors::one(serde_path_to_pointer(e.path()), e.inner().to_string()))?;
    validate(doc)
}

/// Removes the value at a JSON Pointer, if it is there.
fn remove_pointer(value: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    if let Some(Value::Object(map)) = value.pointer_mut(parent) {
        map.remove(&key);
    }
}

/// Records one error of the schema pass, each fault at the pointer of the value at fault.
#[allow(
    clippy::wildcard_enum_match_arm,
    reason = "jsonschema's error kinds, not a status: the others are reported as jsonschema words them"
)]
fn schema_error(error: &jsonschema::ValidationError<'_>, errors: &mut Collector) {
    use jsonschema::error::{TypeKind, ValidationErrorKind};
    use jsonschema::types::JsonType;
    let path = error.instance_path().as_str().to_owned();
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            for field in unexpected {
                errors.push(
                    format!("{path}/{}", escape_pointer(field)),
                    format!("unknown field `{field}`"),
                );
            }
        }
        // Optional fields are `anyOf: [T, null]`; "matches no branch" would hide what is wrong
        // inside the value, so report why it is not a `T` (the branches that say only "not
        // null" are left out).
        ValidationErrorKind::AnyOf { context } => {
            let only_not_null = |branch: &Vec<jsonschema::ValidationError<'static>>| {
                matches!(
                    branch.as_slice(),
                    [e] if matches!(e.kind(), ValidationErrorKind::Type { kind: TypeKind::Single(JsonType::Null) })
                )
            };
            let branches: Vec<_> = context.iter().filter(|b| !only_not_null(b)).collect();
            if branches.len() == 1 && !branches[0].is_empty() {
                for inner in branches[0] {
                    schema_error(inner, errors);
                }
            } else {
                errors.push(path, error.to_string());
            }
        }
        _ => errors.push(path, error.to_string()),
    }
}

fn serde_path_to_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .map(|s| match s {
            Segment::Seq { index } => format!("/{index}"),
            Segment::Map { key } => format!("/{}", escape_pointer(key)),
            Segment::Enum { variant } => format!("/{}", escape_pointer(variant)),
            Segment::Unknown => "/?".to_owned(),
        })
        .collect()
}
