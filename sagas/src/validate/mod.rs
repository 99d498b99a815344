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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::definition::{HttpTemplate, RustCall, SagaDefinition, Step, StepAction};
use crate::document::{ActionDoc, DefinitionDoc, HttpDoc, RetryDoc, StepDoc, definition_schema};
use crate::graph;
use crate::retry::RetryPolicy;
use crate::template::{Reference, Template, escape_pointer};

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

static DOCUMENT_VALIDATOR: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| jsonschema::validator_for(&definition_schema()).expect("the generated schema is valid"));

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

/// The fault of a document with more than [`MAX_STEPS`] steps, found before anything else
/// is looked at: validation costs what a document of at most that many steps costs.
fn too_many_steps(count: usize) -> Option<ValidationErrors> {
    (count > MAX_STEPS).then(|| {
        ValidationErrors::one(
            "/steps",
            format!("{count} steps: at most {MAX_STEPS} steps are allowed"),
        )
    })
}

fn too_many_steps_in(value: &Value) -> Option<ValidationErrors> {
    match value.get("steps") {
        Some(Value::Array(steps)) => too_many_steps(steps.len()),
        _ => None,
    }
}

/// Validates a definition given as a JSON value: a stored one, or the shape and meaning of
/// a new one ([`validate_new`] adds the rules for new definitions).
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

/// Checks the meaning of a well-formed document and builds the definition.
pub fn validate(doc: DefinitionDoc) -> Result<SagaDefinition, ValidationErrors> {
    if let Some(errors) = too_many_steps(doc.steps.len()) {
        return Err(errors);
    }
    let mut errors = Collector::default();
    check_name(&doc.name, "/name", &mut errors);
    if doc.steps.is_empty() {
        errors.push("/steps", "a saga needs at least one step");
    }
    let input_validator = match &doc.input_schema {
        Some(schema) => match jsonschema::validator_for(schema) {
            Ok(validator) => Some(Arc::new(validator)),
            Err(e) => {
                errors.push("/input_schema", format!("not a valid JSON Schema: {e}"));
                None
            }
        },
        None => None,
    };

    let defaults = doc.defaults.clone().unwrap_or_default();
    let default_retry = retry_policy(
        defaults.retry.as_ref(),
        None,
        RetryPolicy::ACTION_DEFAULT,
        "/defaults/retry",
        &mut errors,
    );
    let default_comp_retry = retry_policy(
        defaults.compensation_retry.as_ref(),
        None,
        RetryPolicy::COMPENSATION_DEFAULT,
        "/defaults/compensation_retry",
        &mut errors,
    );
    let default_timeout = timeout(
        defaults.timeout_ms,
        DEFAULT_TIMEOUT,
        "/defaults/timeout_ms",
        &mut errors,
    );

    // Names first, so that dependencies can be resolved whatever their order.
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, step) in doc.steps.iter().enumerate() {
        let path = format!("/steps/{i}/name");
        check_name(&step.name, &path, &mut errors);
        if let Some(first) = by_name.insert(&step.name, i) {
            by_name.insert(&step.name, first);
            errors.push(
                path,
                format!("duplicate step name `{}` (first used by /steps/{first})", step.name),
            );
        }
    }

    let deps: Vec<Vec<usize>> = doc
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| dependencies(i, step, &by_name, &mut errors))
        .collect();
    let upstream = match graph::topological_order(&deps) {
        Ok(order) => Some(graph::ancestors(&deps, &order)),
        Err(cycle) => {
            let names: Vec<&str> = cycle.iter().map(|&i| doc.steps[i].name.as_str()).collect();
            errors.push(
                format!("/steps/{}/depends_on", cycle[0]),
                format!("dependency cycle: {}", names.join(" -> ")),
            );
            None
        }
    };

    let mut steps = Vec::with_capacity(doc.steps.len());
    for (i, step) in doc.steps.iter().enumerate() {
        let base = format!("/steps/{i}");
        let refs = RefCheck {
            upstream: upstream.as_ref().map(|u| u[i].as_slice()),
            by_name: &by_name,
            step: i,
        };
        let action = step_action(&step.action, &format!("{base}/action"), &refs, false, &mut errors);
        let compensation = match (&step.compensation, &action) {
            (Some(c), _) => {
                let mut compensation = step_action(c, &format!("{base}/compensation"), &refs, true, &mut errors);
                // A transaction undoing a transaction applies only if that one committed.
                if let (Some(StepAction::Txn(undo)), Some(StepAction::Txn(_))) = (&mut compensation, &action) {
                    undo.undoes_action = true;
                }
                compensation
            }
            // A region write undoes itself unless the step says how.
            (None, Some(StepAction::Region(call))) if call.writes() => Some(StepAction::Region(call.undo())),
            // So does a transaction of additions; one that puts or deletes must say how.
            (None, Some(StepAction::Txn(call))) if !call.writes.is_empty() => match call.undo() {
                Some(undo) => Some(StepAction::Txn(undo)),
                None => {
                    errors.push(
                        format!("{base}/compensation"),
                        "a `txn` step that puts or deletes needs a compensation (a `txn` restoring what it \
                         wrote); only one whose writes are all `add`s undoes itself",
                    );
                    None
                }
            },
            (None, _) => None,
        };
        let retry = retry_policy(
            step.retry.as_ref(),
            defaults.retry.as_ref(),
            default_retry,
            &format!("{base}/retry"),
            &mut errors,
        );
        let compensation_retry = retry_policy(
            step.compensation_retry.as_ref(),
            defaults.compensation_retry.as_ref(),
            default_comp_retry,
            &format!("{base}/compensation_retry"),
            &mut errors,
        );
        let timeout = timeout(
            step.timeout_ms,
            default_timeout,
            &format!("{base}/timeout_ms"),
            &mut errors,
        );
        let verify = step
            .verify
            .as_ref()
            .and_then(|v| http_template(v, &format!("{base}/verify"), &refs, false, &mut errors));
        if let Some(action) = action {
            steps.push(Step {
                name: step.name.clone(),
                depends_on: deps[i].clone(),
                dependents: Vec::new(),
                action,
                compensation,
                retry,
                compensation_retry,
                timeout,
                verify,
            });
        }
    }
    if !errors.0.is_empty() {
        return Err(ValidationErrors(errors.0));
    }
    for i in 0..steps.len() {
        for d in steps[i].depends_on.clone() {
            steps[d].dependents.push(i);
        }
    }
    let hash = content_hash(&doc);
    let mut definition = SagaDefinition::new(doc, steps, hash, errors.1);
    definition.input_validator = input_validator;
    Ok(definition)
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

fn check_name(name: &str, path: &str, errors: &mut Collector) {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars {
        errors.push(
            path,
            format!("`{name}` is not a valid name: 1 to {MAX_NAME_LEN} letters, digits, `_`, `-` or `.`"),
        );
    }
}

fn dependencies(i: usize, step: &StepDoc, by_name: &HashMap<&str, usize>, errors: &mut Collector) -> Vec<usize> {
    let Some(names) = &step.depends_on else {
        return if i == 0 { Vec::new() } else { vec![i - 1] };
    };
    let mut deps = Vec::new();
    let mut listed = HashSet::new();
    for (k, name) in names.iter().enumerate() {
        let path = format!("/steps/{i}/depends_on/{k}");
        match by_name.get(name.as_str()) {
            None => errors.push(path, format!("no step is named `{name}`")),
            Some(&d) if d == i => errors.push(path, "a step cannot depend on itself"),
            Some(&d) if !listed.insert(d) => errors.push(path, format!("`{name}` is listed twice")),
            Some(&d) => deps.push(d),
        }
    }
    deps
}

struct RefCheck<'a> {
    /// Whether each step is upstream of this one; `None` when the graph has a cycle.
    upstream: Option<&'a [bool]>,
    by_name: &'a HashMap<&'a str, usize>,
    step: usize,
}

impl RefCheck<'_> {
    fn check(&self, template: &Template, base: &str, own_output_allowed: bool, errors: &mut Collector) {
        for (path, reference) in template.references() {
            let Reference::StepOutput { step: name, .. } = reference else {
                continue;
            };
            let at = format!("{base}{path}");
            match self.by_name.get(name.as_str()) {
                None => errors.push(at, format!("`{{{{{reference}}}}}`: no step is named `{name}`")),
                Some(&target) if target == self.step => {
                    if own_output_allowed {
                        errors.warn(at, format!("`{{{{{reference}}}}}`: {OWN_OUTPUT_WARNING}"));
                    } else {
                        errors.push(
                            at,
                            format!("`{{{{{reference}}}}}`: an action cannot use its own output"),
                        );
                    }
                }
                Some(&target) => {
                    if self.upstream.is_some_and(|upstream| !upstream[target]) {
                        errors.push(
                            at,
                            format!("`{{{{{reference}}}}}`: step `{name}` is not upstream of this step (add it to depends_on)"),
                        );
                    }
                }
            }
        }
    }
}

/// The template of `value` at `path`, its references checked; its faults go to `errors`.
fn parse_template(
    value: &Value,
    path: String,
    refs: &RefCheck<'_>,
    is_compensation: bool,
    errors: &mut Collector,
) -> Option<Template> {
    match Template::parse(value) {
        Ok(t) => {
            refs.check(&t, &path, is_compensation, errors);
            Some(t)
        }
        Err(faults) => {
            for f in faults {
                errors.push(format!("{path}{}", f.path), f.message);
            }
            None
        }
    }
}

/// An HTTP request of a step (its action, compensation or `verify`) at `base`.
fn http_template(
    http: &HttpDoc,
    base: &str,
    refs: &RefCheck<'_>,
    is_compensation: bool,
    errors: &mut Collector,
) -> Option<HttpTemplate> {
    let parse = |value: &Value, path: String, errors: &mut Collector| {
        parse_template(value, path, refs, is_compensation, errors)
    };
    let url = parse(&Value::String(http.url.clone()), format!("{base}/url"), errors);
    let starts_with_template = http.url.trim_start().starts_with("{{");
    let absolute = http.url.starts_with("http://") || http.url.starts_with("https://");
    if url.is_some() && !starts_with_template && !absolute {
        errors.push(format!("{base}/url"), "the URL must start with http:// or https://");
    }
    let mut headers = Vec::new();
    for (name, value) in &http.headers {
        let path = format!("{base}/headers/{}", escape_pointer(name));
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name {
            errors.push(path.clone(), format!("`{name}` is not a valid header name"));
        }
        if let Some(t) = parse(&Value::String(value.clone()), path, errors) {
            headers.push((name.clone(), t));
        }
    }
    let body = http
        .body
        .as_ref()
        .and_then(|b| parse(b, format!("{base}/body"), errors));
    Some(HttpTemplate {
        method: http.method,
        url: url?,
        headers,
        body,
    })
}

fn step_action(
    doc: &ActionDoc,
    base: &str,
    refs: &RefCheck<'_>,
    is_compensation: bool,
    errors: &mut Collector,
) -> Option<StepAction> {
    let parse = |value: &Value, path: String, errors: &mut Collector| {
        parse_template(value, path, refs, is_compensation, errors)
    };
    let kinds = [
        doc.http.is_some(),
        doc.rust.is_some(),
        doc.region.is_some(),
        doc.txn.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        errors.push(base, "give exactly one step kind: `http`, `rust`, `region` or `txn`");
        return None;
    }
    if let Some(txn) = &doc.txn {
        let base = format!("{base}/txn");
        let mut faults = Vec::new();
        let mut parse_at = |value: &Value, at: &str| parse(value, format!("{base}{at}"), errors);
        let call = crate::txn::check(txn, &mut parse_at, &mut faults);
        for (at, message) in faults {
            errors.push(format!("{base}{at}"), message);
        }
        return call.map(StepAction::Txn);
    }
    match (&doc.http, &doc.rust) {
        (Some(http), None) if doc.region.is_none() => {
            http_template(http, &format!("{base}/http"), refs, is_compensation, errors).map(StepAction::Http)
        }
        (None, Some(rust)) if doc.region.is_none() => {
            let base = format!("{base}/rust");
            if rust.handler.trim().is_empty() {
                errors.push(format!("{base}/handler"), "the handler name is empty");
            }
            let params = rust
                .params
                .as_ref()
                .and_then(|p| parse(p, format!("{base}/params"), errors));
            Some(StepAction::Rust(RustCall {
                handler: rust.handler.clone(),
                params,
            }))
        }
        (None, None) if doc.region.is_some() => {
            let region = doc.region.as_ref().expect("just checked");
            let base = format!("{base}/region");
            let mut faults = Vec::new();
            let mut parse_at = |value: &Value, at: &str| parse(value, format!("{base}{at}"), errors);
            let call = crate::region::check(region, is_compensation, &mut parse_at, &mut faults);
            for (at, message) in faults {
                errors.push(format!("{base}{at}"), message);
            }
            call.map(StepAction::Region)
        }
        _ => {
            errors.push(base, "give exactly one step kind: `http`, `rust`, `region` or `txn`");
            None
        }
    }
}

fn retry_policy(
    own: Option<&RetryDoc>,
    defaults: Option<&RetryDoc>,
    builtin: RetryPolicy,
    path: &str,
    errors: &mut Collector,
) -> RetryPolicy {
    let pick_u32 = |f: fn(&RetryDoc) -> Option<u32>| own.and_then(f).or_else(|| defaults.and_then(f));
    let pick_u64 = |f: fn(&RetryDoc) -> Option<u64>| own.and_then(f).or_else(|| defaults.and_then(f));
    let max_attempts = pick_u32(|r| r.max_attempts).unwrap_or(builtin.max_attempts);
    let initial = pick_u64(|r| r.initial_backoff_ms)
        .map(Duration::from_millis)
        .unwrap_or(builtin.initial_backoff);
    let max = pick_u64(|r| r.max_backoff_ms)
        .map(Duration::from_millis)
        .unwrap_or(builtin.max_backoff);
    let multiplier = own
        .and_then(|r| r.multiplier)
        .or_else(|| defaults.and_then(|r| r.multiplier))
        .unwrap_or(builtin.multiplier);
    let jitter = own
        .and_then(|r| r.jitter)
        .or_else(|| defaults.and_then(|r| r.jitter))
        .unwrap_or(builtin.jitter);
    // Only the values this policy sets are checked here (those taken from the defaults were
    // checked at `/defaults`), so that each fault is reported once, where it is written.
    if let Some(own) = own {
        if own.max_attempts.is_some() && !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            errors.push(
                format!("{path}/max_attempts"),
                format!("must be between 1 and {MAX_ATTEMPTS}"),
            );
        }
        if own.max_backoff_ms.is_some() && max.as_millis() > u128::from(MAX_BACKOFF_MS) {
            errors.push(
                format!("{path}/max_backoff_ms"),
                format!("must be at most {MAX_BACKOFF_MS}"),
            );
        }
        if initial > max {
            if own.initial_backoff_ms.is_some() {
                errors.push(
                    format!("{path}/initial_backoff_ms"),
                    format!(
                        "{} is more than max_backoff_ms ({})",
                        initial.as_millis(),
                        max.as_millis()
                    ),
                );
            } else if own.max_backoff_ms.is_some() {
                errors.push(
                    format!("{path}/max_backoff_ms"),
                    format!(
                        "{} is less than initial_backoff_ms ({})",
                        max.as_millis(),
                        initial.as_millis()
                    ),
                );
            }
        }
        if own.multiplier.is_some() && !(multiplier.is_finite() && (1.0..=100.0).contains(&multiplier)) {
            errors.push(format!("{path}/multiplier"), "must be between 1 and 100");
        }
    }
    RetryPolicy {
        max_attempts,
        initial_backoff: initial,
        max_backoff: max,
        multiplier,
        jitter,
    }
}

fn timeout(ms: Option<u64>, default: Duration, path: &str, errors: &mut Collector) -> Duration {
    match ms {
        None => default,
        Some(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => Duration::from_millis(ms),
        Some(_) => {
            errors.push(path, format!("must be between 1 and {MAX_TIMEOUT_MS} milliseconds"));
            default
        }
    }
}
