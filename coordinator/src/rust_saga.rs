//! Sagas defined in Rust: a builder that produces the same checked definition as JSON does,
//! with every action and compensation a Rust function registered in a [`HandlerRegistry`].
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use coordinator::{RustSaga, HandlerRegistry, StepContext};
//! # use sagas::StepError;
//! struct Bank; // the user's own dependencies
//! async fn debit(bank: Arc<Bank>, cx: StepContext) -> Result<serde_json::Value, StepError> {
//!     Ok(serde_json::json!({"debited": cx.input::<serde_json::Value>()?["amount"]}))
//! }
//! async fn refund(_: Arc<Bank>, _: StepContext) -> Result<(), StepError> { Ok(()) }
//! # fn main() -> Result<(), sagas::ValidationErrors> {
//! let registry = HandlerRegistry::new();
//! let definition = RustSaga::new("transfer", Arc::new(Bank))
//!     .step("debit", debit)
//!     .compensate(refund)
//!     .build(&registry)?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sagas::document::{ActionDoc, DefinitionDoc, RegionDoc, RetryDoc, RustDoc, StepDoc, TxnDoc};
use sagas::{SagaDefinition, StepError, ValidationErrors};
use serde::Serialize;

use crate::runner::rust::{HandlerRegistry, StepContext};

type Registration = Box<dyn FnOnce(&HandlerRegistry) + Send>;

/// Builds a saga from Rust functions sharing the context `C`.
pub struct RustSaga<C> {
    context: Arc<C>,
    doc: DefinitionDoc,
    registrations: Vec<Registration>,
}

impl<C: Send + Sync + 'static> RustSaga<C> {
    /// A saga called `name` whose steps get `context`.
    pub fn new(name: &str, context: Arc<C>) -> RustSaga<C> {
        RustSaga {
            context,
            doc: DefinitionDoc {
                name: name.to_owned(),
                description: None,
                input_schema: None,
                defaults: None,
                steps: Vec::new(),
            },
            registrations: Vec::new(),
        }
    }

    fn handler_name(&self, step: &str, undo: bool) -> String {
        let suffix = if undo { ".undo" } else { "" };
        format!("{}.{step}{suffix}", self.doc.name)
    }

    fn register<F, Fut, T>(&mut self, name: String, f: F)
    where
        F: Fn(Arc<C>, StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StepError>> + Send + 'static,
        T: Serialize + Send + 'static,
    {
        let context = self.context.clone();
        self.registrations
            .push(Box::new(move |registry| registry.register_fn(&name, context, f)));
    }

    /// Adds a step whose action is `f`; it depends on the step before it.
    pub fn step<F, Fut, T>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(Arc<C>, StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StepError>> + Send + 'static,
        T: Serialize + Send + 'static,
    {
        let handler = self.handler_name(name, false);
        self.register(handler.clone(), f);
        self.doc.steps.push(StepDoc {
            name: name.to_owned(),
            depends_on: None,
            action: ActionDoc {
                http: None,
                rust: Some(RustDoc { handler, params: None }),
                region: None,
                txn: None,
            },
            compensation: None,
            retry: None,
            compensation_retry: None,
            timeout_ms: None,
            verify: None,
        });
        self
    }

    /// Adds a region step (a read or a write of the regions' key-value layer; see
    /// [`RegionDoc`]'s builders); it depends on the step before it. A write undoes itself
    /// unless [`RustSaga::compensate`] gives it another compensation.
    pub fn region(mut self, name: &str, region: RegionDoc) -> Self {
        self.doc.steps.push(StepDoc {
            name: name.to_owned(),
            depends_on: None,
            action: ActionDoc {
                region: Some(region),
                ..ActionDoc::default()
            },
            compensation: None,
            retry: None,
            compensation_retry: None,
            timeout_ms: None,
            verify: None,
        });
        self
    }

    /// Adds a transaction step (a multi-key transaction across the regions, committed
    /// exactly once; see [`TxnDoc`]'s builders); it depends on the step before it. One whose
    /// writes are all additions undoes itself; one that puts or deletes needs
    /// [`RustSaga::compensate_txn`].
    pub fn txn(mut self, name: &str, txn: TxnDoc) -> Self {
        self.doc.steps.push(StepDoc {
            name: name.to_owned(),
            depends_on: None,
            action: ActionDoc {
                txn: Some(txn),
                ..ActionDoc::default()
            },
            compensation: None,
            retry: None,
            compensation_retry: None,
            timeout_ms: None,
            verify: None,
        });
        self
    }

    /// Sets the compensation of the last step added to a transaction (applied only if that
    /// step's transaction committed, when the step is a transaction step).
    pub fn compensate_txn(mut self, txn: TxnDoc) -> Self {
        self.last().compensation = Some(ActionDoc {
            txn: Some(txn),
            ..ActionDoc::default()
        });
        self
    }

    fn last(&mut self) -> &mut StepDoc {
        self.doc.steps.last_mut().expect("call step() first")
    }

    /// Sets the compensation of the last step added.
    pub fn compensate<F, Fut, T>(mut self, f: F) -> Self
    where
        F: Fn(Arc<C>, StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StepError>> + Send + 'static,
        T: Serialize + Send + 'static,
    {
        let step = self.last().name.clone();
        let handler = self.handler_name(&step, true);
        self.register(handler.clone(), f);
        self.last().compensation = Some(ActionDoc {
            http: None,
            rust: Some(RustDoc { handler, params: None }),
            region: None,
            txn: None,
        });
        self
    }

    /// Sets the dependencies of the last step added (`&[]` makes it a root).
    pub fn depends_on(mut self, steps: &[&str]) -> Self {
        self.last().depends_on = Some(steps.iter().map(|s| (*s).to_owned()).collect());
        self
    }

    /// Sets the retry policy of the last step's action.
    pub fn retry(mut self, retry: RetryDoc) -> Self {
        self.last().retry = Some(retry);
        self
    }

    /// Sets the retry policy of the last step's compensation.
    pub fn compensation_retry(mut self, retry: RetryDoc) -> Self {
        self.last().compensation_retry = Some(retry);
        self
    }

    /// Sets the time limit of each attempt of the last step.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.last().timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Sets the saga's input schema.
    pub fn input_schema(mut self, schema: serde_json::Value) -> Self {
        self.doc.input_schema = Some(schema);
        self
    }

    /// Sets the saga's input schema from the Rust type its steps read the input as
    /// (`cx.input::<I>()`): an input that does not fit is refused when the saga starts
    /// (the API's 422, naming each path at fault), before any step runs.
    pub fn input<I: schemars::JsonSchema>(self) -> Self {
        let schema = serde_json::to_value(schemars::schema_for!(I)).expect("a schema is JSON");
        self.input_schema(schema)
    }

    /// The document this builder describes, as JSON would.
    pub fn document(&self) -> &DefinitionDoc {
        &self.doc
    }

    /// Validates the saga and registers its handlers.
    pub fn build(self, registry: &HandlerRegistry) -> Result<SagaDefinition, ValidationErrors> {
        let definition = sagas::validate::validate(self.doc)?;
        for register in self.registrations {
            register(registry);
        }
        Ok(definition)
    }
}
