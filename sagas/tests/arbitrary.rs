//! Property tests over arbitrary documents, inputs and templates: validation and rendering
//! never panic, and every fault they report names a JSON Pointer into what was given.
//!
//! Documents are drawn two ways: arbitrary JSON whose keys and strings are biased towards
//! the definition format's words and template syntax (so that the validator's deeper
//! passes are reached), and valid definitions with one subtree replaced by arbitrary JSON.

use proptest::prelude::*;
use sagas::template::{Budget, RenderContext, RenderError, Template};
use sagas::validate::{ValidationErrors, validate_input, validate_new};
use serde_json::{Map, Value, json};

/// Words of the definition format, and a few that are not.
const KEYS: &[&str] = &[
    "name",
    "steps",
    "action",
    "compensation",
    "http",
    "rust",
    "region",
    "method",
    "url",
    "headers",
    "body",
    "depends_on",
    "retry",
    "max_attempts",
    "initial_backoff_ms",
    "max_backoff_ms",
    "multiplier",
    "jitter",
    "timeout_ms",
    "defaults",
    "input_schema",
    "handler",
    "params",
    "op",
    "key",
    "value",
    "via",
    "consistency",
    "path",
    "delta",
    "if_version",
    "type",
    "required",
    "properties",
    "a",
    "b",
    "x",
    "Host",
    "Idempotency-Key",
    "a/b",
    "t~1",
    "",
];

/// Strings with and without templates, well formed or not.
const STRINGS: &[&str] = &[
    "a",
    "b",
    "POST",
    "GET",
    "PUT",
    "DELETE",
    "put",
    "add",
    "get",
    "cas",
    "strong",
    "async",
    "http://svc/x",
    "https://svc/{{input.id}}",
    "{{input}}",
    "{{input.a}}",
    "{{input.a.0}}",
    "{{saga.id}}",
    "{{saga.name}}",
    "{{steps.a.output}}",
    "{{steps.a.output.x}}",
    "{{steps.b.output.a}}",
    "{{steps.a}}",
    "x-{{input.a}}-{{input.b}}",
    "{{",
    "}}",
    "{{}}",
    "{{ input . }}",
    "{{input..a}}",
    "eu/{{input.a}}",
    "",
    "\u{e9}\u{1F600}",
    "object",
    "string",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        (0u64..5_000).prop_map(Value::from),
        proptest::sample::select(STRINGS).prop_map(Value::from),
        "[a-z{}. /~]{0,12}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// A valid definition to start mutations from.
fn base_definition() -> Value {
    json!({
        "name": "base",
        "input_schema": {"type": "object"},
        "defaults": {"retry": {"max_attempts": 3}},
        "steps": [
            {"name": "a", "action": {"http": {"method": "POST", "url": "http://svc/a/{{input.a}}",
                "headers": {"x-t": "{{input.b}}"}, "body": {"v": "{{input}}", "s": "n={{saga.id}}"}}},
             "compensation": {"http": {"method": "DELETE", "url": "http://svc/a/{{steps.a.output.x}}"}}},
            {"name": "b", "action": {"rust": {"handler": "h", "params": ["{{steps.a.output}}", 1]}}},
            {"name": "c", "depends_on": ["a"], "action": {"region": {"op": "put", "key": "eu/{{input.a}}",
                "value": {"from": "{{steps.a.output.x}}"}, "consistency": "strong"}}},
        ]
    })
}

/// Every JSON Pointer into `value` (its own included).
fn pointers(value: &Value, here: String, out: &mut Vec<String>) {
    match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| pointers(v, format!("{here}/{i}"), out)),
        Value::Object(map) => map
            .iter()
            .for_each(|(k, v)| pointers(v, format!("{here}/{}", k.replace('~', "~0").replace('/', "~1")), out)),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
    out.push(here);
}

/// `doc` with the value at `at` replaced by `with`.
fn replaced(mut doc: Value, at: &str, with: Value) -> Value {
    match doc.pointer_mut(at) {
        Some(slot) => *slot = with,
        None => doc = with,
    }
    doc
}

fn mutated_definition() -> impl Strategy<Value = Value> {
    let base = base_definition();
    let mut all = Vec::new();
    pointers(&base, String::new(), &mut all);
    (proptest::sample::select(all), json_value()).prop_map(move |(at, with)| replaced(base.clone(), &at, with))
}

/// Each fault names a pointer that is well formed and reaches into the document: the value
/// it names, or (for a field that is missing) its parent.
fn check_paths(doc: &Value, errors: &ValidationErrors, root: &str) -> Result<(), TestCaseError> {
    prop_assert!(!errors.0.is_empty(), "an error without faults");
    for fault in &errors.0 {
        prop_assert!(
            !fault.message.is_empty(),
            "a fault without a message at {:?}",
            fault.path
        );
        let Some(inner) = fault.path.strip_prefix(root) else {
            return Err(TestCaseError::fail(format!("{:?} is not under {root:?}", fault.path)));
        };
        prop_assert!(
            inner.is_empty() || inner.starts_with('/'),
            "{:?} is not a JSON Pointer",
            fault.path
        );
        let parent = inner.rsplit_once('/').map_or("", |(p, _)| p);
        prop_assert!(
            doc.pointer(inner).is_some() || doc.pointer(parent).is_some(),
            "{:?} ({}) does not reach into {doc}",
            fault.path,
            fault.message
        );
    }
    Ok(())
}

/// Renders every template of every step of `def` against `input` and `outputs`.
fn render_all(def: &sagas::SagaDefinition, input: &Value, outputs: &Map<String, Value>, limit: usize) {
    let lookup = |name: &str| outputs.get(name);
    for step in &def.steps {
        for action in std::iter::once(&step.action).chain(step.compensation.as_ref()) {
            let templates: Vec<&Template> = match action {
                sagas::StepAction::Http(http) => std::iter::once(&http.url)
                    .chain(http.headers.iter().map(|(_, t)| t))
                    .chain(http.body.as_ref())
                    .collect(),
                sagas::StepAction::Rust(call) => call.params.iter().collect(),
                sagas::StepAction::Region(_) | sagas::StepAction::Txn(_) => Vec::new(),
            };
            let cx = RenderContext {
                input,
                saga_id: "s",
                output_of: &lookup,
                budget: Budget::new(limit),
            };
            for t in templates {
                let _ = t.render_string(&cx);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_documents_are_judged_with_paths(doc in json_value()) {
        if let Err(errors) = validate_new(&doc) {
            check_paths(&doc, &errors, "")?;
        }
    }

    #[test]
    fn mutated_definitions_are_judged_with_paths(
        doc in mutated_definition(),
        input in json_value(),
        outputs in proptest::collection::btree_map(proptest::sample::select(&["a", "b", "c"][..]), json_value(), 0..3),
        limit in prop_oneof![0usize..64, Just(usize::MAX)],
    ) {
        match validate_new(&doc) {
            Err(errors) => check_paths(&doc, &errors, "")?,
            Ok(def) => {
                if let Err(errors) = validate_input(&def, &input) {
                    check_paths(&input, &errors, "/input")?;
                }
                let outputs: Map<String, Value> = outputs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                render_all(&def, &input, &outputs, limit);
            }
        }
    }

    /// A template renders, within any budget, to what it renders without one, or fails; and
    /// a budget of the output's JSON length is always enough.
    #[test]
    fn templates_render_within_their_budget(template in json_value(), input in json_value(), limit in 0usize..256) {
        let Ok(template) = Template::parse(&template) else { return Ok(()) };
        let outputs = json!({"a": input.clone()});
        let lookup = |name: &str| outputs.get(name);
        let render = |limit: usize| {
            template.render(&RenderContext { input: &input, saga_id: "s", output_of: &lookup, budget: Budget::new(limit) })
        };
        match render(usize::MAX) {
            Err(RenderError::Unresolved { .. }) => {
                let bounded = render(limit);
                let failed = matches!(bounded, Err(RenderError::Unresolved { .. } | RenderError::TooLarge { .. }));
                prop_assert!(failed, "rendered within a budget: {:?}", bounded);
            }
            Err(e @ RenderError::TooLarge { .. }) => return Err(TestCaseError::fail(format!("unbounded: {e}"))),
            Ok(full) => {
                prop_assert_eq!(render(full.to_string().len()), Ok(full.clone()));
                match render(limit) {
                    Ok(out) => prop_assert_eq!(out, full),
                    Err(RenderError::TooLarge { limit: l, .. }) => prop_assert!(l == limit && limit < full.to_string().len()),
                    Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
                }
            }
        }
    }
}
