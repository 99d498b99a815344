//! Region steps: reads and writes of geosaga's geo-distributed key-value layer
//! (`docs/regions.md`), as written in a definition ([`RegionDoc`]) and as checked
//! ([`RegionCall`]).
//!
//! A write step (`put`, `cas`, `delete`, `add`) that has no compensation of its own gets
//! one: [`RegionOperation::Undo`], which undoes exactly what the action wrote, using the
//! action's output. `put`, `cas` and `delete` are undone by a conditional write that
//! restores the previous value only if nobody wrote the key since (else the saga is
//! stuck with the conflict); `add` is undone by the inverse delta, which commutes with
//! everyone else's additions. A write whose outcome is unknown (the step is possibly
//! applied and has no output) is undone by its op id at the key's home, which undoes it
//! if it was applied and otherwise cancels it, so that it never applies. How the
//! coordinator carries them out is its business (`coordinator::runner::region`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::template::Template;

/// A read or a write of the regions' key-value layer. `key`, `value`, `if_version` and
/// `delta` may hold templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegionDoc {
    /// What to do: `get`, `put`, `cas` (compare-and-set), `delete` or `add` (a numeric delta).
    pub op: RegionOp,
    /// The key (any region forwards a write to the key's home region).
    pub key: String,
    /// The value to write (`put`, `cas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// `cas`: write only if the key's current version is this one (`0.0`: only if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_version: Option<String>,
    /// Writes: `strong` (the default) or `async`. Reads: `strong` (the default) or
    /// `bounded_staleness` (with `max_staleness_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<RegionConsistency>,
    /// `get` with `bounded_staleness`: the oldest answer accepted, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_staleness_ms: Option<u64>,
    /// `add`: JSON Pointer of the number inside the value (`""`, the default: the value itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `add`: the number to add (negative to subtract): a number, or a template that gives
    /// one (`"{{input.amount}}"`) or text that reads as one (`"-{{input.amount}}"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Value>,
    /// `add`: the action fails (a business failure, not retried) when the result would be
    /// below this. Compensations ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// `add`: the action fails (a business failure, not retried) when the result would be
    /// above this. Compensations ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The region the coordinator sends this step to, by the name its configuration gives
    /// it (`[regions]`); absent: the configured `region_via`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// The operations of a region step: `get` reads the key; `put` writes the value; `cas`
/// writes it if the current version is `if_version`; `delete` deletes the key; `add` adds
/// `delta` to the number at `path` (read at the home, written with `if_version`).
// Variants without doc comments: the schema then lists the names in one `enum`, and a
// wrong name is reported as "not one of [...]".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum RegionOp {
    Get,
    Put,
    Cas,
    Delete,
    Add,
}

impl RegionOp {
    /// The name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            RegionOp::Get => "get",
            RegionOp::Put => "put",
            RegionOp::Cas => "cas",
            RegionOp::Delete => "delete",
            RegionOp::Add => "add",
        }
    }
}

/// The consistency of a region read or write. `strong`: a write is committed once the
/// quorum stored it, a read is served by the home (linearizable). `async`: a write is
/// committed at the home at once and shipped afterwards. `bounded_staleness`: a read is
/// served by the nearest copy that is fresh enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum RegionConsistency {
    Strong,
    Async,
    BoundedStaleness,
}

impl RegionConsistency {
    /// The name as written (and as the regions' API spells it).
    pub fn as_str(self) -> &'static str {
        match self {
            RegionConsistency::Strong => "strong",
            RegionConsistency::Async => "async",
            RegionConsistency::BoundedStaleness => "bounded_staleness",
        }
    }
}

impl RegionDoc {
    fn new(op: RegionOp, key: &str) -> RegionDoc {
        RegionDoc {
            op,
            key: key.to_owned(),
            value: None,
            if_version: None,
            consistency: None,
            max_staleness_ms: None,
            path: None,
            delta: None,
            min: None,
            max: None,
            via: None,
        }
    }

    /// A strong read of `key`.
    pub fn get(key: &str) -> RegionDoc {
        RegionDoc::new(RegionOp::Get, key)
    }

    /// A read of `key` served by a copy at most `max_staleness_ms` stale.
    pub fn get_bounded(key: &str, max_staleness_ms: u64) -> RegionDoc {
        RegionDoc {
            consistency: Some(RegionConsistency::BoundedStaleness),
            max_staleness_ms: Some(max_staleness_ms),
            ..RegionDoc::new(RegionOp::Get, key)
        }
    }

    /// Writes `value` to `key`.
    pub fn put(key: &str, value: Value) -> RegionDoc {
        RegionDoc {
            value: Some(value),
            ..RegionDoc::new(RegionOp::Put, key)
        }
    }

    /// Writes `value` to `key` if its version is `if_version`.
    pub fn cas(key: &str, if_version: &str, value: Value) -> RegionDoc {
        RegionDoc {
            value: Some(value),
            if_version: Some(if_version.to_owned()),
            ..RegionDoc::new(RegionOp::Cas, key)
        }
    }

    /// Deletes `key`.
    pub fn delete(key: &str) -> RegionDoc {
        RegionDoc::new(RegionOp::Delete, key)
    }

    /// Adds `delta` (a number, or a template such as `"{{input.amount}}"`) to the number at
    /// the JSON Pointer `path` of `key`'s value.
    pub fn add(key: &str, path: &str, delta: impl Into<Value>) -> RegionDoc {
        RegionDoc {
            path: Some(path.to_owned()),
            delta: Some(delta.into()),
            ..RegionDoc::new(RegionOp::Add, key)
        }
    }

    /// Sets the floor of an `add`.
    pub fn min(mut self, min: f64) -> RegionDoc {
        self.min = Some(min);
        self
    }

    /// Sets the ceiling of an `add`.
    pub fn max(mut self, max: f64) -> RegionDoc {
        self.max = Some(max);
        self
    }

    /// Sets the consistency.
    pub fn consistency(mut self, consistency: RegionConsistency) -> RegionDoc {
        self.consistency = Some(consistency);
        self
    }

    /// Sends the step through the region the coordinator's configuration calls `region`.
    pub fn via(mut self, region: &str) -> RegionDoc {
        self.via = Some(region.to_owned());
        self
    }
}

/// A checked region step.
#[derive(Debug, Clone)]
pub struct RegionCall {
    /// The region to send it to (`None`: the coordinator's default).
    pub via: Option<String>,
    /// The key.
    pub key: Template,
    /// The key as written (for plans).
    pub key_text: String,
    /// The consistency (never `bounded_staleness` for a write, never `async` for a read).
    pub consistency: RegionConsistency,
    /// What to do.
    pub operation: RegionOperation,
}

/// What a checked region step does.
#[derive(Debug, Clone)]
pub enum RegionOperation {
    /// Read the key.
    Get {
        /// Bounded-staleness reads: the bound.
        max_staleness_ms: Option<u64>,
    },
    /// Write a value.
    Put {
        /// The value.
        value: Template,
    },
    /// Write a value if the key is at a version.
    Cas {
        /// The value.
        value: Template,
        /// The expected current version.
        if_version: Template,
    },
    /// Delete the key.
    Delete,
    /// Add a number.
    Add {
        /// JSON Pointer of the number in the value.
        path: String,
        /// The number to add.
        delta: Template,
        /// The floor the action may not go below.
        min: Option<f64>,
        /// The ceiling the action may not go above.
        max: Option<f64>,
    },
    /// The automatic compensation of a write step: undo what the step's action wrote, as
    /// its output records it, or by its op id when the step has no output (possibly
    /// applied).
    Undo {
        /// The action's operation (an `add`'s delta gives the inverse).
        action: Box<RegionOperation>,
    },
}

impl RegionCall {
    /// Whether this call writes (and so gets an automatic compensation).
    pub fn writes(&self) -> bool {
        match self.operation {
            RegionOperation::Get { .. } => false,
            RegionOperation::Put { .. }
            | RegionOperation::Cas { .. }
            | RegionOperation::Delete
            | RegionOperation::Add { .. }
            | RegionOperation::Undo { .. } => true,
        }
    }

    /// The automatic compensation of this write.
    pub fn undo(&self) -> RegionCall {
        RegionCall {
            via: self.via.clone(),
            key: self.key.clone(),
            key_text: self.key_text.clone(),
            consistency: self.consistency,
            operation: RegionOperation::Undo {
                action: Box::new(self.operation.clone()),
            },
        }
    }

    /// A short description for plans: `add us/{{input.from}} /balance`.
    pub fn describe(&self) -> String {
        let key = &self.key_text;
        let op = match &self.operation {
            RegionOperation::Get { .. } => "get".to_owned(),
            RegionOperation::Put { .. } => "put".to_owned(),
            RegionOperation::Cas { .. } => "cas".to_owned(),
            RegionOperation::Delete => "delete".to_owned(),
            RegionOperation::Add { path, .. } => format!("add at `{path}` of"),
            RegionOperation::Undo { .. } => "undo the write to".to_owned(),
        };
        let via = self.via.as_deref().map(|v| format!(" via {v}")).unwrap_or_default();
        format!("region {op} {key} ({}){via}", self.consistency.as_str())
    }
}

/// What is wrong with a region step: `(path relative to the step's `region` object, message)`.
pub(crate) type Fault = (String, String);

/// Checks the combination of fields of a region step; templates are parsed by the caller
/// through `parse`, which reports their faults itself and returns `None` on one.
pub(crate) fn check(
    doc: &RegionDoc,
    is_compensation: bool,
    parse: &mut dyn FnMut(&Value, &str) -> Option<Template>,
    faults: &mut Vec<Fault>,
) -> Option<RegionCall> {
    let op = doc.op.as_str();
    let mut fault = |at: &str, message: String| faults.push((at.to_owned(), message));
    let unused = |present: bool, field: &str, fault: &mut dyn FnMut(&str, String)| {
        if present {
            fault(&format!("/{field}"), format!("`{field}` is not used by `{op}`"));
        }
    };
    if doc.key.is_empty() {
        fault("/key", "the key is empty".to_owned());
    }
    if let Some(via) = &doc.via
        && via.trim().is_empty()
    {
        fault("/via", "the region name is empty".to_owned());
    }
    if is_compensation && doc.op == RegionOp::Get {
        fault(
            "/op",
            "a compensation cannot be a `get`: it must undo something".to_owned(),
        );
    }
    let consistency = doc.consistency.unwrap_or(RegionConsistency::Strong);
    let read = doc.op == RegionOp::Get;
    match (read, consistency) {
        (true, RegionConsistency::Async) => {
            fault("/consistency", "a `get` is `strong` or `bounded_staleness`".to_owned())
        }
        (false, RegionConsistency::BoundedStaleness) => fault(
            "/consistency",
            format!("`{op}` writes: its consistency is `strong` or `async`"),
        ),
        _ => {}
    }
    if read {
        match (consistency, doc.max_staleness_ms) {
            (RegionConsistency::BoundedStaleness, None) => {
                fault("/max_staleness_ms", "required for `bounded_staleness` reads".to_owned())
            }
            (RegionConsistency::Strong | RegionConsistency::Async, Some(_)) => fault(
                "/max_staleness_ms",
                "only `bounded_staleness` reads take a staleness bound".to_owned(),
            ),
            _ => {}
        }
    } else {
        unused(doc.max_staleness_ms.is_some(), "max_staleness_ms", &mut fault);
    }
    let takes_value = matches!(doc.op, RegionOp::Put | RegionOp::Cas);
    if !takes_value {
        unused(doc.value.is_some(), "value", &mut fault);
    } else if doc.value.is_none() {
        fault("", format!("`{op}` needs a `value`"));
    }
    if doc.op != RegionOp::Cas {
        unused(doc.if_version.is_some(), "if_version", &mut fault);
    } else if doc.if_version.is_none() {
        fault("", "`cas` needs an `if_version`".to_owned());
    }
    if doc.op == RegionOp::Add {
        if doc.delta.is_none() {
            fault("", "`add` needs a `delta`".to_owned());
        }
        let number_or_template = match &doc.delta {
            None | Some(Value::Number(_)) => true,
            Some(Value::String(s)) => s.contains("{{"),
            Some(_) => false,
        };
        if !number_or_template {
            fault("/delta", "a number, or a template giving one".to_owned());
        }
        if let Some(path) = &doc.path
            && !path.is_empty()
            && !path.starts_with('/')
        {
            fault(
                "/path",
                format!("`{path}` is not a JSON Pointer (empty, or starting with `/`)"),
            );
        }
        for (bound, name) in [(doc.min, "min"), (doc.max, "max")] {
            if bound.is_some_and(|b| !b.is_finite()) {
                fault(&format!("/{name}"), "must be a finite number".to_owned());
            }
        }
        if let (Some(min), Some(max)) = (doc.min, doc.max)
            && min > max
        {
            fault("/max", format!("{max} is below min ({min})"));
        }
    } else {
        unused(doc.delta.is_some(), "delta", &mut fault);
        unused(doc.path.is_some(), "path", &mut fault);
        unused(doc.min.is_some(), "min", &mut fault);
        unused(doc.max.is_some(), "max", &mut fault);
    }
    let key = parse(&Value::String(doc.key.clone()), "/key");
    let value = doc.value.as_ref().and_then(|v| parse(v, "/value"));
    let if_version = doc
        .if_version
        .as_ref()
        .and_then(|v| parse(&Value::String(v.clone()), "/if_version"));
    let delta = doc.delta.as_ref().and_then(|d| parse(d, "/delta"));
    let operation = match doc.op {
        RegionOp::Get => RegionOperation::Get {
            max_staleness_ms: doc.max_staleness_ms,
        },
        RegionOp::Put => RegionOperation::Put { value: value? },
        RegionOp::Cas => RegionOperation::Cas {
            value: value?,
            if_version: if_version?,
        },
        RegionOp::Delete => RegionOperation::Delete,
        RegionOp::Add => RegionOperation::Add {
            path: doc.path.clone().unwrap_or_default(),
            delta: delta?,
            min: doc.min,
            max: doc.max,
        },
    };
    Some(RegionCall {
        via: doc.via.clone(),
        key: key?,
        key_text: doc.key.clone(),
        consistency,
        operation,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::definition::StepAction;
    use crate::validate::validate_value;

    use super::*;

    fn region(action: Option<&StepAction>) -> &RegionCall {
        match action {
            Some(StepAction::Region(call)) => call,
            other => panic!("not a region step: {other:?}"),
        }
    }

    /// Writes undo themselves unless the step gives its own compensation; reads need none.
    #[test]
    fn writes_get_an_automatic_undo_and_reads_none() {
        let def = validate_value(&json!({
            "name": "r",
            "steps": [
                {"name": "read", "action": {"region": {"op": "get", "key": "eu/a", "consistency": "bounded_staleness", "max_staleness_ms": 50}}},
                {"name": "debit", "action": {"region": {"op": "add", "key": "eu/a", "path": "/balance", "delta": -5, "min": 0, "via": "eu-west"}}},
                {"name": "mark", "action": {"region": {"op": "put", "key": "m", "value": 1}},
                 "compensation": {"region": {"op": "delete", "key": "m"}}}
            ]
        }))
        .unwrap();
        assert!(def.steps[0].compensation.is_none());
        let undo = region(def.steps[1].compensation.as_ref());
        assert!(matches!(
            &undo.operation,
            RegionOperation::Undo { action } if matches!(**action, RegionOperation::Add { .. })
        ));
        assert_eq!(undo.via.as_deref(), Some("eu-west"));
        let explicit = region(def.steps[2].compensation.as_ref());
        assert!(matches!(explicit.operation, RegionOperation::Delete));
        let action = region(Some(&def.steps[1].action));
        assert!(matches!(
            action.operation,
            RegionOperation::Add { ref path, min: Some(m), .. } if path == "/balance" && m == 0.0
        ));
        assert_eq!(
            action.describe(),
            "region add at `/balance` of eu/a (strong) via eu-west"
        );
        let plan = crate::render::plan_text(&def);
        assert!(
            plan.contains("undo debit: region undo the write to eu/a (strong) via eu-west"),
            "{plan}"
        );
    }

    /// The builders write the same document as JSON would.
    #[test]
    fn builders_match_the_json_form() {
        let built = RegionDoc::add("us/{{input.from}}", "/balance", "{{input.amount}}")
            .min(0.0)
            .via("us-east");
        let parsed: RegionDoc = serde_json::from_value(json!({
            "op": "add", "key": "us/{{input.from}}", "path": "/balance",
            "delta": "{{input.amount}}", "min": 0.0, "via": "us-east"
        }))
        .unwrap();
        assert_eq!(built, parsed);
        assert_eq!(
            RegionDoc::get_bounded("k", 10).consistency,
            Some(RegionConsistency::BoundedStaleness)
        );
    }
}
