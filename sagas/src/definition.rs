//! A validated saga definition: the typed form the state machine and executor work with.
//!
//! Built only by [`crate::validate::validate`] (from JSON) or by the Rust builder in the
//! coordinator (which goes through the same validation), so every `SagaDefinition` is a
//! DAG whose references all resolve.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::document::{DefinitionDoc, HttpMethod};
use crate::region::RegionCall;
use crate::retry::RetryPolicy;
use crate::template::Template;
use crate::txn::TxnCall;

/// The index of a step in its definition (the position in `steps`).
pub type StepIndex = usize;

/// A checked saga definition.
#[derive(Debug, Clone)]
pub struct SagaDefinition {
    /// The saga's name.
    pub name: String,
    /// Free text for people.
    pub description: Option<String>,
    /// The JSON Schema inputs must match.
    pub input_schema: Option<Value>,
    /// The steps, in the order of the document.
    pub steps: Vec<Step>,
    /// The document this definition was built from (what the store keeps).
    pub document: DefinitionDoc,
    /// A digest of the document's canonical JSON: same content, same digest.
    pub content_hash: String,
    /// `input_schema` compiled, once per definition (and so once per stored version).
    pub(crate) input_validator: Option<Arc<jsonschema::Validator>>,
    /// What validation found questionable but allowed, each with its JSON Pointer (see
    /// [`crate::validate::validate`]).
    pub warnings: Vec<crate::validate::ValidationError>,
    by_name: HashMap<String, StepIndex>,
    order: Vec<StepIndex>,
}

/// One step of a checked definition.
#[derive(Debug, Clone)]
pub struct Step {
    /// Unique name within the saga.
    pub name: String,
    /// Steps that must succeed before this one starts.
    pub depends_on: Vec<StepIndex>,
    /// Steps that depend on this one (the reverse edges).
    pub dependents: Vec<StepIndex>,
    /// What the step does.
    pub action: StepAction,
    /// What undoes it.
    pub compensation: Option<StepAction>,
    /// Retry policy of the action.
    pub retry: RetryPolicy,
    /// Retry policy of the compensation.
    pub compensation_retry: RetryPolicy,
    /// Time limit of one attempt.
    pub timeout: Duration,
    /// The read `geosaga check` uses to observe the action's effect (never sent by the
    /// coordinator).
    pub verify: Option<HttpTemplate>,
}

/// What an action or a compensation does.
#[derive(Debug, Clone)]
pub enum StepAction {
    /// An HTTP request.
    Http(HttpTemplate),
    /// A Rust handler registered by name.
    Rust(RustCall),
    /// A read or a write of the regions' key-value layer.
    Region(RegionCall),
    /// A multi-key transaction across the regions.
    Txn(TxnCall),
}

/// An HTTP request whose parts are templates.
#[derive(Debug, Clone)]
pub struct HttpTemplate {
    /// The method.
    pub method: HttpMethod,
    /// The URL.
    pub url: Template,
    /// Extra headers, by name.
    pub headers: Vec<(String, Template)>,
    /// The JSON body.
    pub body: Option<Template>,
}

/// A call to a registered Rust handler.
#[derive(Debug, Clone)]
pub struct RustCall {
    /// The handler's registered name.
    pub handler: String,
    /// Its parameters.
    pub params: Option<Template>,
}

impl SagaDefinition {
    pub(crate) fn new(
        document: DefinitionDoc,
        steps: Vec<Step>,
        content_hash: String,
        warnings: Vec<crate::validate::ValidationError>,
    ) -> SagaDefinition {
        let by_name = steps.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
        let deps: Vec<Vec<StepIndex>> = steps.iter().map(|s| s.depends_on.clone()).collect();
        let order = crate::graph::topological_order(&deps).expect("a validated definition has no cycle");
        SagaDefinition {
            name: document.name.clone(),
            description: document.description.clone(),
            input_schema: document.input_schema.clone(),
            steps,
            document,
            content_hash,
            input_validator: None,
            warnings,
            by_name,
            order,
        }
    }

    /// The index of the step called `name`.
    pub fn step_index(&self, name: &str) -> Option<StepIndex> {
        self.by_name.get(name).copied()
    }

    /// Step indices in an order where every step comes after its dependencies.
    pub fn topological_order(&self) -> &[StepIndex] {
        &self.order
    }

    /// Every Rust handler name the definition uses, actions and compensations.
    pub fn rust_handlers(&self) -> Vec<&str> {
        let mut names = Vec::new();
        for step in &self.steps {
            for action in std::iter::once(&step.action).chain(step.compensation.as_ref()) {
                match action {
                    StepAction::Rust(call) => names.push(call.handler.as_str()),
                    StepAction::Http(_) | StepAction::Region(_) | StepAction::Txn(_) => {}
                }
            }
        }
        names
    }
}
