//! # geosaga's saga core
//!
//! Everything about sagas that can be decided without touching the world: this crate does
//! no I/O and depends on no runtime, database or HTTP crate.
//!
//! ## Layout
//! - [`document`]: the JSON definition format as users write it, and its JSON Schema.
//! - [`validate`]: document to checked [`SagaDefinition`], every fault with its JSON Pointer;
//!   checking saga inputs against a definition's `input_schema`.
//! - [`headers`]: the request headers only the coordinator sets.
//! - [`definition`]: the checked, typed definition (steps, DAG edges, policies, templates).
//! - [`region`]: region steps, reads and writes of the geo-distributed key-value layer,
//!   and the automatic compensation of their writes.
//! - [`txn`]: transaction steps, a multi-key transaction across the regions committed
//!   exactly once, and their compensating transactions.
//! - [`template`]: `{{input.x}}`, `{{saga.id}}`, `{{steps.NAME.output.path}}`.
//! - [`retry`]: retry policies and backoff.
//! - [`outcome`]: the outcome classifier: what an attempt's answer (or its absence) says
//!   about its effect: success, refused (known not applied) or unknown (possibly applied).
//! - [`event`]: the saga events a log is made of.
//! - [`state`]: the state machine; a saga's state is the fold of its events.
//! - [`planner`]: what may run now, and which event an outcome becomes.
//! - [`render`]: a definition's plan as text and as Graphviz dot.
//! - [`graph`]: topological order, cycles, ancestry.
//!
//! A typical flow: `validate::parse_definition(json)` → `SagaState::new(def)` →
//! `planner::plan(&state, now)` → the executor appends `planner::started_event` and runs the
//! work → `planner::outcome_event` → `state.apply(&event)` → plan again.

// Status enums (`SagaStatus`, `StepStatus`) are matched here: every match names each of
// its variants, so that a new one forces a review of every decision (ARCHITECTURE.md).
#![deny(clippy::wildcard_enum_match_arm)]

pub mod definition;
pub mod document;
mod error;
pub mod event;
pub mod graph;
pub mod headers;
pub mod outcome;
pub mod planner;
pub mod region;
pub mod render;
pub mod retry;
pub mod state;
pub mod template;
pub mod txn;
pub mod validate;

pub use definition::{HttpTemplate, RustCall, SagaDefinition, Step, StepAction, StepIndex};
pub use document::{DefinitionDoc, HttpMethod};
pub use error::Error;
pub use event::{FailureKind, Phase, SagaEvent, StepError, idempotency_key};
pub use planner::{Plan, Work};
pub use region::{RegionCall, RegionConsistency, RegionDoc, RegionOp, RegionOperation};
pub use retry::RetryPolicy;
pub use state::{IllegalEvent, SagaState, SagaStatus, StepState, StepStatus, UnwindCause};
pub use template::Template;
pub use txn::{TxnCall, TxnDoc, TxnWrite, TxnWriteOp, TxnWriteOperation};
pub use validate::{ValidationError, ValidationErrors};
