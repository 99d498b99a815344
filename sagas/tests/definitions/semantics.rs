//! What a checked definition is made of: dependencies, merged policies, the content hash,
//! and checking inputs against `input_schema`.

use std::time::Duration;

use sagas::validate::{DEFAULT_TIMEOUT, validate_input, validate_value};
use sagas::{RetryPolicy, SagaDefinition};
use serde_json::{Value, json};

fn fixture(name: &str) -> SagaDefinition {
    let path = format!("{}/tests/fixtures/valid/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    sagas::validate::parse_definition(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn valid(doc: Value) -> SagaDefinition {
    validate_value(&doc).unwrap_or_else(|e| panic!("{doc}: {e}"))
}

fn names<'d>(def: &'d SagaDefinition, indices: &[usize]) -> Vec<&'d str> {
    indices.iter().map(|&i| def.steps[i].name.as_str()).collect()
}

/// Without `depends_on` a step depends on the step before it (the first on nothing);
/// `[]` makes a root; `dependents` are the reverse edges.
#[test]
fn depends_on_defaults_to_the_previous_step() {
    let linear = fixture("linear.json");
    let deps: Vec<&[usize]> = linear.steps.iter().map(|s| s.depends_on.as_slice()).collect();
    assert_eq!(deps, [&[][..], &[0], &[1]]);
    assert_eq!(names(&linear, &linear.steps[0].dependents), ["pay"]);
    assert_eq!(linear.topological_order(), [0, 1, 2]);

    let trip = fixture("book_trip_spec.json");
    assert!(trip.steps[1].depends_on.is_empty(), "`[]` is a root");
    assert_eq!(
        names(&trip, &trip.steps[2].depends_on),
        ["reserve_car", "reserve_hotel"]
    );
    assert_eq!(trip.step_index("charge"), Some(2));

    let diamond = fixture("diamond.json");
    assert_eq!(names(&diamond, &diamond.steps[0].dependents), ["b", "c"]);
    assert_eq!(names(&diamond, &diamond.steps[3].depends_on), ["b", "c"]);
    let order = diamond.topological_order();
    let pos = |name| order.iter().position(|&i| diamond.steps[i].name == name).unwrap();
    assert!(pos("a") < pos("b") && pos("a") < pos("c") && pos("b") < pos("d") && pos("c") < pos("d"));
}

/// Step names may contain dots, and templates still reach their outputs: the step name runs
/// up to the first `output` segment.
#[test]
fn templates_reach_steps_with_dotted_names() {
    use sagas::template::Reference;
    let def = fixture("dotted_step_names.json");
    let Some(sagas::definition::StepAction::Rust(call)) = def.steps[0].compensation.as_ref() else {
        panic!("a rust compensation")
    };
    let refs: Vec<Reference> = call
        .params
        .as_ref()
        .unwrap()
        .references()
        .into_iter()
        .map(|(_, r)| r.clone())
        .collect();
    assert_eq!(
        refs,
        [Reference::StepOutput {
            step: "reserve.car".into(),
            path: vec!["id".into()]
        }]
    );
    let sagas::StepAction::Http(http) = &def.steps[2].action else {
        panic!("an http action")
    };
    let refs: Vec<String> = http
        .body
        .as_ref()
        .unwrap()
        .references()
        .into_iter()
        .map(|(_, r)| r.to_string())
        .collect();
    assert_eq!(refs, ["steps.output.output.x"]);
}

/// A dependency declared later in the document resolves as well as an earlier one.
#[test]
fn dependencies_may_point_forward_in_the_document() {
    let def = valid(json!({"name": "fwd", "steps": [
        {"name": "last", "depends_on": ["first"], "action": {"rust": {"handler": "h", "params": "{{steps.first.output}}"}}},
        {"name": "first", "depends_on": [], "action": {"rust": {"handler": "h"}}},
    ]}));
    assert_eq!(def.steps[0].depends_on, [1]);
    assert_eq!(def.topological_order(), [1, 0]);
}

/// Defaults merge field by field: a step's `retry` overrides only the fields it sets, the
/// rest come from `defaults.retry`, then from the built-in policy; the same for
/// compensations and timeouts.
#[test]
fn defaults_merge_per_field() {
    let def = fixture("defaults_merged.json");
    let defaults = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(250),
        max_backoff: Duration::from_millis(8000),
        multiplier: 3.0,
        jitter: false,
    };
    let comp_defaults = RetryPolicy {
        max_attempts: 20,
        initial_backoff: Duration::from_millis(500),
        ..RetryPolicy::COMPENSATION_DEFAULT
    };
    let [uses_defaults, overrides, zero] = &def.steps[..] else {
        panic!("three steps")
    };
    assert_eq!(uses_defaults.retry, defaults);
    assert_eq!(uses_defaults.compensation_retry, comp_defaults);
    assert_eq!(uses_defaults.timeout, Duration::from_millis(2000));

    assert_eq!(
        overrides.retry,
        RetryPolicy {
            max_attempts: 7,
            ..defaults
        }
    );
    assert_eq!(
        overrides.compensation_retry,
        RetryPolicy {
            jitter: true,
            ..comp_defaults
        }
    );
    assert_eq!(overrides.timeout, Duration::from_millis(500));

    let zero_backoff = RetryPolicy {
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        multiplier: 1.0,
        ..defaults
    };
    assert_eq!(zero.retry, zero_backoff);
}

/// With no defaults at all, steps get the built-in policies and the 30 s timeout.
#[test]
fn builtin_policies_apply_without_defaults() {
    let def = fixture("linear.json");
    for step in &def.steps {
        assert_eq!(step.retry, RetryPolicy::ACTION_DEFAULT);
        assert_eq!(step.compensation_retry, RetryPolicy::COMPENSATION_DEFAULT);
        assert_eq!(step.timeout, DEFAULT_TIMEOUT);
    }
    assert!(def.steps[0].compensation.is_some() && def.steps[2].compensation.is_none());
    let rust = fixture("rust_params.json");
    assert_eq!(
        rust.rust_handlers(),
        ["orders.validate", "payments.charge", "payments.refund", "notify"]
    );
}

/// The content hash depends on content only: the same document with its keys in another
/// order (at every depth) and other whitespace hashes the same; any change of content
/// changes it.
#[test]
fn content_hash_ignores_key_order_but_not_content() {
    let a = r#"{"name": "h", "description": "d", "steps": [
        {"name": "s", "action": {"http": {"method": "POST", "url": "http://x",
            "headers": {"b": "2", "a": "1"}, "body": {"z": 1, "y": {"q": [1, 2], "p": null}}}},
         "retry": {"max_attempts": 2, "jitter": false}}]}"#;
    let b = r#"{"steps":[{"retry":{"jitter":false,"max_attempts":2},"action":{"http":{
        "body":{"y":{"p":null,"q":[1,2]},"z":1},"headers":{"a":"1","b":"2"},"url":"http://x","method":"POST"}},
        "name":"s"}],"description":"d","name":"h"}"#;
    let hash = |text: &str| sagas::validate::parse_definition(text).unwrap().content_hash;
    assert_eq!(hash(a), hash(b));
    assert_eq!(hash(a).len(), 64, "a hex SHA-256");
    assert!(
        hash(a)
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );

    let changed = [
        a.replace(r#""z": 1"#, r#""z": 2"#),
        a.replace(r#"[1, 2]"#, r#"[2, 1]"#),
        a.replace(r#""description": "d""#, r#""description": "e""#),
        a.replace(r#""max_attempts": 2"#, r#""max_attempts": 3"#),
        a.replace(r#""b": "2""#, r#""B": "2""#),
    ];
    for text in &changed {
        assert_ne!(hash(a), hash(text), "{text}");
    }
}

fn with_input_schema(schema: Value) -> SagaDefinition {
    valid(json!({"name": "in", "input_schema": schema, "steps": [{"name": "a", "action": {"rust": {"handler": "h"}}}]}))
}

/// Input faults are reported under `/input`: a missing required field at the object that
/// lacks it, a wrong value at the value itself.
#[test]
fn inputs_are_checked_against_the_input_schema() {
    let def = with_input_schema(json!({
        "type": "object",
        "required": ["from", "amount"],
        "properties": {
            "amount": {"type": "number", "exclusiveMinimum": 0},
            "card": {"type": "object", "required": ["number"]},
        },
    }));
    assert!(validate_input(&def, &json!({"from": "a", "amount": 5})).is_ok());

    let missing = validate_input(&def, &json!({"amount": 5})).unwrap_err();
    assert_eq!(missing.paths(), ["/input"]);
    assert!(
        missing.0[0].message.contains("\"from\" is a required property"),
        "{missing}"
    );

    let nested = validate_input(&def, &json!({"from": "a", "amount": "5", "card": {}})).unwrap_err();
    assert_eq!(nested.paths(), ["/input/amount", "/input/card"]);

    let zero = validate_input(&def, &json!({"from": "a", "amount": 0})).unwrap_err();
    assert_eq!(zero.paths(), ["/input/amount"]);

    let not_object = validate_input(&def, &json!([1])).unwrap_err();
    assert_eq!(not_object.paths(), ["/input"]);
}

/// Without an `input_schema` any input is accepted.
#[test]
fn any_input_is_accepted_without_an_input_schema() {
    let def = fixture("linear.json");
    assert!(def.input_schema.is_none());
    for input in [json!(null), json!(1), json!({"anything": ["goes"]})] {
        assert!(validate_input(&def, &input).is_ok());
    }
}

/// The published examples accept the inputs they are documented with and refuse
/// incomplete ones.
#[test]
fn example_inputs() {
    let example = |name: &str| {
        let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
        sagas::validate::parse_definition(&std::fs::read_to_string(&path).unwrap()).unwrap()
    };
    let transfer = example("transfer.json");
    assert!(validate_input(&transfer, &json!({"from": "alice", "to": "bob", "amount": 25})).is_ok());
    assert_eq!(
        validate_input(&transfer, &json!({"from": "alice", "amount": 25}))
            .unwrap_err()
            .paths(),
        ["/input"]
    );
    let trip = example("book_trip.json");
    assert!(validate_input(&trip, &json!({"city": "Lisbon", "amount": 420})).is_ok());
    assert_eq!(
        validate_input(&trip, &json!({"amount": 420})).unwrap_err().paths(),
        ["/input"]
    );
}

/// A document with more steps than allowed is refused with one fault, before any step is
/// looked at: 20,000 steps that are each wrong in several ways cost what one fault costs.
#[test]
fn too_many_steps_are_refused_before_the_steps_are_checked() {
    let steps: Vec<Value> = (0..20_000)
        .map(|i| {
            json!({
                "name": format!("bad name {i}"),
                "depends_on": ["nowhere", "nowhere"],
                "unknown": true,
                "action": {"http": {"method": "POST", "url": "ftp://x/{{steps.none.output}}", "headers": {"Host": "h"}}},
            })
        })
        .collect();
    let doc = json!({"name": "huge", "steps": steps});
    for result in [validate_value(&doc), sagas::validate::validate_new(&doc)] {
        let errors = result.unwrap_err();
        assert_eq!(errors.paths(), ["/steps"]);
        assert_eq!(
            errors.0[0].message,
            format!("20000 steps: at most {} steps are allowed", sagas::validate::MAX_STEPS)
        );
    }
}

/// Reserved headers are refused in new definitions only: one stored before the rule still
/// loads, so that its sagas can run (the HTTP runner sends its own values of them).
#[test]
fn reserved_headers_are_refused_only_in_new_definitions() {
    let doc = json!({"name": "old", "steps": [{"name": "a", "action": {"http": {
        "method": "POST", "url": "http://svc/a", "headers": {"Idempotency-Key": "mine"}}}}]});
    assert!(validate_value(&doc).is_ok());
    let errors = sagas::validate::validate_new(&doc).unwrap_err();
    assert_eq!(errors.paths(), ["/steps/0/action/http/headers/Idempotency-Key"]);
}

/// A compensation that reads its own step's output is allowed with a warning at the
/// template's path (it cannot run for a possibly-applied step); one that reads only the
/// input, the saga id or upstream outputs gets none, and neither do region writes' automatic
/// undos.
#[test]
fn compensations_reading_their_own_output_are_warned_about() {
    let def = valid(json!({
        "name": "w",
        "steps": [
            {"name": "a", "action": {"http": {"method": "POST", "url": "http://p/a"}},
             "compensation": {"http": {"method": "POST", "url": "http://p/undo", "body": {"saga": "{{saga.id}}"}}}},
            {"name": "b", "action": {"http": {"method": "POST", "url": "http://p/b", "body": {"a": "{{steps.a.output.id}}"}}},
             "compensation": {"http": {"method": "POST", "url": "http://p/undo", "body": {"a": "{{steps.a.output.id}}", "b": "{{steps.b.output.id}}"}}}},
            {"name": "c", "action": {"region": {"op": "add", "key": "k", "delta": 1}}}
        ]
    }));
    let warned: Vec<&str> = def.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(warned, ["/steps/1/compensation/http/body/b"]);
    assert!(
        def.warnings[0].message.contains("possibly applied") && def.warnings[0].message.contains("X-Saga-Action-Key"),
        "{}",
        def.warnings[0].message
    );
}

/// A step's `verify` (for `geosaga check`) is an HTTP request checked like its action:
/// its templates may read the input and the outputs of the steps it depends on, no other.
#[test]
fn verify_is_checked_like_the_action() {
    let http = |url: &str| json!({"http": {"method": "POST", "url": url}});
    let def = valid(json!({
        "name": "t",
        "steps": [
            {"name": "a", "action": http("http://p/a")},
            {"name": "b", "action": http("http://p/b"),
             "verify": {"method": "GET", "url": "http://p/seen/{{input.who}}/{{steps.a.output.id}}"}}
        ]
    }));
    assert!(def.steps[0].verify.is_none());
    assert!(def.steps[1].verify.is_some());

    let bad = validate_value(&json!({
        "name": "t",
        "steps": [
            {"name": "a", "action": http("http://p/a"),
             "verify": {"method": "GET", "url": "http://p/{{steps.b.output.id}}"}},
            {"name": "b", "action": http("http://p/b"), "verify": {"method": "GET", "url": "p/relative"}}
        ]
    }))
    .unwrap_err();
    let paths: Vec<&str> = bad.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["/steps/0/verify/url", "/steps/1/verify/url"], "{bad}");
}
