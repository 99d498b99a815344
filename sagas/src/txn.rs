//! Transaction steps: one step commits a multi-key transaction across the regions
//! (`docs/transactions.md`), exactly once, as written in a definition ([`TxnDoc`]) and as
//! checked ([`TxnCall`]).
//!
//! The coordinator sends the step's idempotency key as the transaction's op id, so a retry
//! or a recovery after a crash answers with the first commit instead of committing again.
//! Its compensation is a transaction too, sent with the action's op id as `undoes`: if the
//! action never committed it is cancelled (it never will) and the compensation writes
//! nothing. A step whose writes are all `add`s gets that compensation by itself (the
//! inverse deltas, which commute with everyone else's additions); a step that puts or
//! deletes must give its own.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::template::Template;

/// A transaction: reads at one snapshot, conditions on versions, and writes applied all or
/// none. Keys, values, versions and deltas may hold templates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnDoc {
    /// Keys read at the transaction's snapshot (the output's `reads`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<String>,
    /// Versions keys must have at the snapshot, or nothing is written and the step fails
    /// (`"0.0"`: absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<TxnConditionDoc>,
    /// The writes, committed all or none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<TxnWriteDoc>,
    /// The region the coordinator sends it to (its gateway), by the name its configuration
    /// gives it; absent: the configured `region_via`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// A condition of a transaction step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnConditionDoc {
    /// The key.
    pub key: String,
    /// The version it must have (`"0.0"`: absent).
    pub version: String,
}

/// A write of a transaction step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnWriteDoc {
    /// `put`, `delete` or `add`.
    pub op: TxnWriteOp,
    /// The key.
    pub key: String,
    /// `put`: the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// `add`: JSON Pointer of the number inside the value (`""`, the default: the value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `add`: the number to add: a number, or a template giving one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Value>,
    /// `add`: the transaction fails (a business failure) when the result would be below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// `add`: the transaction fails (a business failure) when the result would be above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// The operations of a transaction's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum TxnWriteOp {
    Put,
    Delete,
    Add,
}

impl TxnDoc {
    /// A transaction with no reads, conditions or writes yet.
    pub fn new() -> TxnDoc {
        TxnDoc::default()
    }

    /// Reads `key` at the snapshot.
    pub fn read(mut self, key: &str) -> TxnDoc {
        self.reads.push(key.to_owned());
        self
    }

    /// Writes `value` at `key`.
    pub fn put(mut self, key: &str, value: Value) -> TxnDoc {
        self.writes.push(TxnWriteDoc {
            value: Some(value),
            ..TxnWriteDoc::new(TxnWriteOp::Put, key)
        });
        self
    }

    /// Deletes `key`.
    pub fn delete(mut self, key: &str) -> TxnDoc {
        self.writes.push(TxnWriteDoc::new(TxnWriteOp::Delete, key));
        self
    }

    /// Adds `delta` to the number at `path` of `key`'s value, within `min` and `max`.
    pub fn add(mut self, key: &str, path: &str, delta: impl Into<Value>, min: Option<f64>, max: Option<f64>) -> TxnDoc {
        self.writes.push(TxnWriteDoc {
            path: Some(path.to_owned()),
            delta: Some(delta.into()),
            min,
            max,
            ..TxnWriteDoc::new(TxnWriteOp::Add, key)
        });
        self
    }

    /// Sends the step through the region the coordinator's configuration calls `region`.
    pub fn via(mut self, region: &str) -> TxnDoc {
        self.via = Some(region.to_owned());
        self
    }
}

impl TxnWriteDoc {
    fn new(op: TxnWriteOp, key: &str) -> TxnWriteDoc {
        TxnWriteDoc {
            op,
            key: key.to_owned(),
            value: None,
            path: None,
            delta: None,
            min: None,
            max: None,
        }
    }
}

/// A checked transaction step.
#[derive(Debug, Clone)]
pub struct TxnCall {
    /// The region to send it to (`None`: the coordinator's default).
    pub via: Option<String>,
    /// Keys read at the snapshot.
    pub reads: Vec<Template>,
    /// Keys and the versions they must have.
    pub conditions: Vec<(Template, Template)>,
    /// The writes.
    pub writes: Vec<TxnWrite>,
    /// A compensation of a transaction step: sent with the action's op id as `undoes`.
    pub undoes_action: bool,
}

/// A checked write.
#[derive(Debug, Clone)]
pub struct TxnWrite {
    /// The key.
    pub key: Template,
    /// The key as written (for plans).
    pub key_text: String,
    /// What to write.
    pub operation: TxnWriteOperation,
}

/// What a checked write does.
#[derive(Debug, Clone)]
pub enum TxnWriteOperation {
    /// Write a value.
    Put(Template),
    /// Delete the key.
    Delete,
    /// Add a number.
    Add {
        /// JSON Pointer of the number.
        path: String,
        /// The delta.
        delta: Template,
        /// Add its opposite (the automatic compensation).
        negated: bool,
        /// The floor.
        min: Option<f64>,
        /// The ceiling.
        max: Option<f64>,
    },
}

impl TxnCall {
    /// The automatic compensation, when every write is an `add`: the inverse deltas,
    /// without bounds, applied only if the action committed.
    pub fn undo(&self) -> Option<TxnCall> {
        let writes = self
            .writes
            .iter()
            .map(|w| match &w.operation {
                TxnWriteOperation::Add {
                    path, delta, negated, ..
                } => Some(TxnWrite {
                    operation: TxnWriteOperation::Add {
                        path: path.clone(),
                        delta: delta.clone(),
                        negated: !negated,
                        min: None,
                        max: None,
                    },
                    ..w.clone()
                }),
                TxnWriteOperation::Put(_) | TxnWriteOperation::Delete => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(TxnCall {
            via: self.via.clone(),
            reads: Vec::new(),
            conditions: Vec::new(),
            writes,
            undoes_action: true,
        })
    }

    /// A short description for plans: `txn: add us/a, put eu/b`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .writes
            .iter()
            .map(|w| {
                let op = match &w.operation {
                    TxnWriteOperation::Put(_) => "put",
                    TxnWriteOperation::Delete => "delete",
                    TxnWriteOperation::Add { negated: false, .. } => "add",
                    TxnWriteOperation::Add { negated: true, .. } => "subtract",
                };
                format!("{op} {}", w.key_text)
            })
            .collect();
        if parts.is_empty() {
            parts.push(format!("read {} keys", self.reads.len()));
        }
        let via = self.via.as_deref().map(|v| format!(" via {v}")).unwrap_or_default();
        format!("txn: {}{via}", parts.join(", "))
    }
}

/// Checks a transaction step; templates are parsed through `parse`, which reports their
/// faults itself (with the path it is given) and returns `None` on one. Faults are
/// `(path relative to the step's `txn` object, message)`.
pub(crate) fn check(
    doc: &TxnDoc,
    parse: &mut dyn FnMut(&Value, &str) -> Option<Template>,
    faults: &mut Vec<(String, String)>,
) -> Option<TxnCall> {
    let before = faults.len();
    let fault = |faults: &mut Vec<(String, String)>, at: String, message: &str| faults.push((at, message.to_owned()));
    if doc.writes.is_empty() && doc.reads.is_empty() {
        fault(
            faults,
            String::new(),
            "a transaction needs `writes` (or at least `reads`)",
        );
    }
    if doc.via.as_ref().is_some_and(|v| v.trim().is_empty()) {
        fault(faults, "/via".into(), "the region name is empty");
    }
    // A template at `at`; a key (`Value::String`, `is_key`) may not be empty.
    let mut template = |value: &Value, at: String, is_key: bool, faults: &mut Vec<(String, String)>| {
        if is_key && value.as_str().is_some_and(str::is_empty) {
            fault(faults, at.clone(), "the key is empty");
        }
        parse(value, &at)
    };
    let mut reads = Vec::new();
    for (i, k) in doc.reads.iter().enumerate() {
        reads.push(template(&Value::String(k.clone()), format!("/reads/{i}"), true, faults));
    }
    let mut conditions = Vec::new();
    for (i, c) in doc.conditions.iter().enumerate() {
        let k = template(
            &Value::String(c.key.clone()),
            format!("/conditions/{i}/key"),
            true,
            faults,
        );
        let v = template(
            &Value::String(c.version.clone()),
            format!("/conditions/{i}/version"),
            false,
            faults,
        );
        conditions.push(k.zip(v));
    }
    let mut writes = Vec::new();
    for (i, w) in doc.writes.iter().enumerate() {
        let at = format!("/writes/{i}");
        let k = template(&Value::String(w.key.clone()), format!("{at}/key"), true, faults);
        let is_add = w.op == TxnWriteOp::Add;
        for (present, field) in [
            (w.value.is_some() && w.op != TxnWriteOp::Put, "value"),
            (w.path.is_some() && !is_add, "path"),
            (w.delta.is_some() && !is_add, "delta"),
            (w.min.is_some() && !is_add, "min"),
            (w.max.is_some() && !is_add, "max"),
        ] {
            if present {
                fault(faults, format!("{at}/{field}"), "not used by this `op`");
            }
        }
        let operation = match w.op {
            TxnWriteOp::Put => match &w.value {
                None => {
                    fault(faults, at.clone(), "`put` needs a `value`");
                    None
                }
                Some(v) => template(v, format!("{at}/value"), false, faults).map(TxnWriteOperation::Put),
            },
            TxnWriteOp::Delete => Some(TxnWriteOperation::Delete),
            TxnWriteOp::Add => {
                let path = w.path.clone().unwrap_or_default();
                if !path.is_empty() && !path.starts_with('/') {
                    fault(
                        faults,
                        format!("{at}/path"),
                        "not a JSON Pointer (empty, or starting with `/`)",
                    );
                }
                for (bound, name) in [(w.min, "min"), (w.max, "max")] {
                    if bound.is_some_and(|b| !b.is_finite()) {
                        fault(faults, format!("{at}/{name}"), "must be a finite number");
                    }
                }
                if let (Some(min), Some(max)) = (w.min, w.max)
                    && min > max
                {
                    fault(faults, format!("{at}/max"), "below `min`");
                }
                let delta = match &w.delta {
                    None => {
                        fault(faults, at.clone(), "`add` needs a `delta`");
                        None
                    }
                    Some(Value::String(s)) if !s.contains("{{") => {
                        fault(faults, format!("{at}/delta"), "a number, or a template giving one");
                        None
                    }
                    Some(d @ (Value::Number(_) | Value::String(_))) => {
                        template(d, format!("{at}/delta"), false, faults)
                    }
                    Some(_) => {
                        fault(faults, format!("{at}/delta"), "a number, or a template giving one");
                        None
                    }
                };
                delta.map(|delta| TxnWriteOperation::Add {
                    path,
                    delta,
                    negated: false,
                    min: w.min,
                    max: w.max,
                })
            }
        };
        writes.push(k.zip(operation).map(|(key, operation)| TxnWrite {
            key,
            key_text: w.key.clone(),
            operation,
        }));
    }
    let reads: Option<Vec<Template>> = reads.into_iter().collect();
    let conditions: Option<Vec<(Template, Template)>> = conditions.into_iter().collect();
    let writes: Option<Vec<TxnWrite>> = writes.into_iter().collect();
    if faults.len() > before {
        return None;
    }
    Some(TxnCall {
        via: doc.via.clone(),
        reads: reads?,
        conditions: conditions?,
        writes: writes?,
        undoes_action: false,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::definition::StepAction;
    use crate::validate::validate_value;

    use super::*;

    fn txn(action: Option<&StepAction>) -> &TxnCall {
        match action {
            Some(StepAction::Txn(call)) => call,
            other => panic!("not a transaction step: {other:?}"),
        }
    }

    /// Additions undo themselves (negated, only if the action committed); an explicit
    /// compensation of a transaction step undoes it too; plans describe both.
    #[test]
    fn additions_undo_themselves_and_explicit_compensations_undo_the_action() {
        let def = validate_value(&json!({
            "name": "t",
            "steps": [
                {"name": "move", "action": {"txn": {"via": "us-east", "writes": [
                    {"op": "add", "key": "us/{{input.from}}", "path": "/balance", "delta": "-{{input.amount}}", "min": 0},
                    {"op": "add", "key": "eu/{{input.to}}", "path": "/balance", "delta": "{{input.amount}}"}
                ]}}},
                {"name": "order", "action": {"txn": {"conditions": [{"key": "orders/{{saga.id}}", "version": "0.0"}],
                    "writes": [{"op": "put", "key": "orders/{{saga.id}}", "value": {"n": "{{input.amount}}"}}]}},
                 "compensation": {"txn": {"writes": [{"op": "delete", "key": "orders/{{saga.id}}"}]}}}
            ]
        }))
        .unwrap();
        let undo = txn(def.steps[0].compensation.as_ref());
        assert!(undo.undoes_action && undo.via.as_deref() == Some("us-east"));
        assert!(matches!(
            undo.writes[0].operation,
            TxnWriteOperation::Add {
                negated: true,
                min: None,
                max: None,
                ..
            }
        ));
        assert!(!txn(Some(&def.steps[0].action)).undoes_action);
        assert!(txn(def.steps[1].compensation.as_ref()).undoes_action);
        let plan = crate::render::plan_text(&def);
        assert!(
            plan.contains("txn: add us/{{input.from}}, add eu/{{input.to}} via us-east"),
            "{plan}"
        );
        assert!(plan.contains("txn: subtract us/{{input.from}}"), "{plan}");
    }

    /// Every fault is reported at its JSON path.
    #[test]
    fn faults_name_their_paths() {
        let errors = validate_value(&json!({
            "name": "t",
            "steps": [
                {"name": "a", "action": {"txn": {"writes": [{"op": "put", "key": "k", "value": 1}]}}},
                {"name": "b", "action": {"txn": {"reads": [""], "writes": [
                    {"op": "add", "key": "k", "delta": "ten", "value": 1},
                    {"op": "put", "key": "k"},
                    {"op": "add", "key": "", "delta": 1, "path": "x", "min": 5, "max": 1}
                ]}}},
                {"name": "c", "action": {"txn": {}}},
                {"name": "d", "action": {"txn": {"reads": ["k"]}, "region": {"op": "get", "key": "k"}}}
            ]
        }))
        .unwrap_err();
        let paths = errors.paths();
        for expected in [
            "/steps/0/compensation",
            "/steps/1/action/txn/reads/0",
            "/steps/1/action/txn/writes/0/delta",
            "/steps/1/action/txn/writes/0/value",
            "/steps/1/action/txn/writes/1",
            "/steps/1/action/txn/writes/2/key",
            "/steps/1/action/txn/writes/2/path",
            "/steps/1/action/txn/writes/2/max",
            "/steps/2/action/txn",
            "/steps/3/action",
        ] {
            assert!(paths.contains(&expected), "{expected} missing from {errors}");
        }
    }

    /// The builders write the same document as JSON would.
    #[test]
    fn builders_match_the_json_form() {
        let built = TxnDoc::new()
            .read("us/a")
            .add("us/a", "/balance", -5, Some(0.0), None)
            .put("eu/b", json!(1))
            .delete("ap/c")
            .via("us-east");
        let parsed: TxnDoc = serde_json::from_value(json!({
            "reads": ["us/a"], "via": "us-east", "writes": [
                {"op": "add", "key": "us/a", "path": "/balance", "delta": -5, "min": 0.0},
                {"op": "put", "key": "eu/b", "value": 1},
                {"op": "delete", "key": "ap/c"}
            ]
        }))
        .unwrap();
        assert_eq!(built, parsed);
    }
}
