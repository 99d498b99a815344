//! Rust steps: handlers registered by name, with a typed context for the user's own
//! dependencies.
//!
//! A handler is an async function `(Arc<C>, StepContext) -> Result<T, StepError>` where `C`
//! is whatever the user's steps need (a database pool, a client) and `T` is any
//! serialisable output. Or implement [`Action`] on a type.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use sagas::{Phase, StepError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::{RenderedAction, StepCall};

/// What a Rust handler sees of its saga.
#[derive(Debug, Clone)]
pub struct StepContext {
    /// The saga.
    pub saga_id: Uuid,
    /// The step.
    pub step: String,
    /// Action or compensation.
    pub phase: Phase,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Stable across retries and recoveries: use it to make effects idempotent.
    pub idempotency_key: String,
    /// The saga input.
    pub input: Arc<Value>,
    /// The step's rendered `params` (`null` when it has none).
    pub params: Value,
    outputs: Arc<BTreeMap<String, Value>>,
}

impl StepContext {
    /// The idempotency key of this step's action (for an action, its own key): what a
    /// compensation is keyed by, since it may run for an action whose outcome is unknown
    /// (the step is then possibly applied and has no output) or that never ran.
    pub fn action_key(&self) -> String {
        sagas::idempotency_key(&self.saga_id.to_string(), &self.step, Phase::Action)
    }

    /// The saga input as a typed value.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        T::deserialize(&*self.input).map_err(|e| StepError::permanent(format!("saga input: {e}")))
    }

    /// The step's params as a typed value.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        T::deserialize(&self.params).map_err(|e| StepError::permanent(format!("step params: {e}")))
    }

    /// The output of an earlier step as a typed value (for a compensation, its own step's
    /// output too, if the action succeeded: a possibly-applied step has none).
    pub fn output<T: DeserializeOwned>(&self, step: &str) -> Result<T, StepError> {
        let value = self
            .outputs
            .get(step)
            .ok_or_else(|| StepError::permanent(format!("step `{step}` has no output")))?;
        T::deserialize(value).map_err(|e| StepError::permanent(format!("output of `{step}`: {e}")))
    }
}

/// A step implemented as a type, with the user's context `C`.
#[async_trait]
pub trait Action<C>: Send + Sync + 'static {
    /// Runs one attempt.
    async fn run(&self, context: &C, step: StepContext) -> Result<Value, StepError>;
}

#[async_trait]
trait ErasedHandler: Send + Sync {
    async fn call(&self, step: StepContext) -> Result<Value, StepError>;
}

struct FnHandler<C, F> {
    context: Arc<C>,
    f: F,
}

#[async_trait]
impl<C, F, Fut, T> ErasedHandler for FnHandler<C, F>
where
    C: Send + Sync + 'static,
    F: Fn(Arc<C>, StepContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, StepError>> + Send + 'static,
    T: Serialize + Send + 'static,
{
    async fn call(&self, step: StepContext) -> Result<Value, StepError> {
        let out = (self.f)(self.context.clone(), step).await?;
        serde_json::to_value(out).map_err(|e| StepError::unusable_output(format!("output is not JSON: {e}")))
    }
}

struct TypeHandler<C, A> {
    context: Arc<C>,
    action: A,
}

#[async_trait]
impl<C: Send + Sync + 'static, A: Action<C>> ErasedHandler for TypeHandler<C, A> {
    async fn call(&self, step: StepContext) -> Result<Value, StepError> {
        self.action.run(&self.context, step).await
    }
}

/// Rust handlers by name. Cheap to clone; shared by every saga of a coordinator.
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    handlers: Arc<RwLock<HashMap<String, Arc<dyn ErasedHandler>>>>,
}

impl HandlerRegistry {
    /// An empty registry.
    pub fn new() -> HandlerRegistry {
        HandlerRegistry::default()
    }

    /// Registers an async function under `name`, with the context `context`.
    pub fn register_fn<C, F, Fut, T>(&self, name: &str, context: Arc<C>, f: F)
    where
        C: Send + Sync + 'static,
        F: Fn(Arc<C>, StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, StepError>> + Send + 'static,
        T: Serialize + Send + 'static,
    {
        self.insert(name, Arc::new(FnHandler { context, f }));
    }

    /// Registers a type implementing [`Action`] under `name`.
    pub fn register_action<C: Send + Sync + 'static, A: Action<C>>(&self, name: &str, context: Arc<C>, action: A) {
        self.insert(name, Arc::new(TypeHandler { context, action }));
    }

    fn insert(&self, name: &str, handler: Arc<dyn ErasedHandler>) {
        self.handlers
            .write()
            .expect("registry lock")
            .insert(name.to_owned(), handler);
    }

    /// Whether a handler is registered under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.handlers.read().expect("registry lock").contains_key(name)
    }

    /// Every registered name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.handlers.read().expect("registry lock").keys().cloned().collect();
        names.sort();
        names
    }

    /// Runs one attempt of a Rust step.
    pub async fn run(&self, call: &StepCall) -> Result<Value, StepError> {
        let RenderedAction::Rust { handler, params } = &call.request else {
            return Err(StepError::permanent("not a Rust step"));
        };
        let found = self.handlers.read().expect("registry lock").get(handler).cloned();
        let Some(found) = found else {
            return Err(StepError::permanent(format!(
                "no Rust handler is registered as `{handler}`"
            )));
        };
        found
            .call(StepContext {
                saga_id: call.saga_id,
                step: call.step.clone(),
                phase: call.phase,
                attempt: call.attempt,
                idempotency_key: call.idempotency_key.clone(),
                input: call.input.clone(),
                params: params.clone(),
                outputs: call.outputs.clone(),
            })
            .await
    }
}
