//! Step runners: how one attempt of an action or a compensation is carried out.
//!
//! The executor renders a step's templates into a [`StepCall`] and hands it to
//! [`Runners::run`], which applies fault injection, enforces the step's time limit and
//! dispatches on the step kind: [`http::HttpRunner`], a Rust handler from the
//! [`rust::HandlerRegistry`], or a region read or write ([`region::RegionRunner`], which
//! the HTTP runner holds: it shares its connection pool). Both read answers through
//! [`body::read`], which stops at a cap while the body streams.

pub mod body;
pub mod faults;
pub mod http;
pub mod region;
pub mod rust;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sagas::{HttpMethod, Phase, StepError};
use serde_json::Value;
use uuid::Uuid;

/// One attempt to run, with every template already rendered.
#[derive(Debug, Clone)]
pub struct StepCall {
    /// The saga.
    pub saga_id: Uuid,
    /// The definition's name.
    pub definition: String,
    /// The step's name.
    pub step: String,
    /// Action or compensation.
    pub phase: Phase,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Stable across retries and recoveries.
    pub idempotency_key: String,
    /// The saga input.
    pub input: Arc<Value>,
    /// Outputs of the steps that have one, by name.
    pub outputs: Arc<BTreeMap<String, Value>>,
    /// What to do.
    pub request: RenderedAction,
    /// Time limit of this attempt.
    pub timeout: Duration,
    /// W3C `traceparent` of the span this attempt runs in, to pass on.
    pub traceparent: Option<String>,
    /// W3C `tracestate` the saga's caller sent, to pass on.
    pub tracestate: Option<String>,
}

/// A step action with its templates rendered.
#[derive(Debug, Clone, PartialEq)]
pub enum RenderedAction {
    /// An HTTP request.
    Http {
        /// Method.
        method: HttpMethod,
        /// URL.
        url: String,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// JSON body.
        body: Option<Value>,
    },
    /// A call to a Rust handler.
    Rust {
        /// Registered name.
        handler: String,
        /// Parameters.
        params: Value,
    },
    /// A read or a write of the regions' key-value layer.
    Region(region::RegionRequest),
    /// A multi-key transaction across the regions.
    Txn(region::TxnRequest),
}

/// Everything that can run a step.
#[derive(Clone)]
pub struct Runners {
    /// Runs HTTP steps.
    pub http: http::HttpRunner,
    /// Runs Rust steps.
    pub rust: rust::HandlerRegistry,
    /// Failures and repeats injected by tests.
    pub faults: Arc<faults::Faults>,
}

impl Runners {
    /// Runs one attempt: injected faults first, then the real step within its time limit.
    pub async fn run(&self, call: &StepCall) -> Result<Value, StepError> {
        let runs = match self.faults.take(call.saga_id, &call.step, call.phase) {
            Some(faults::Fault::Fail(error)) => return Err(error),
            Some(faults::Fault::RunThenFail(error)) => {
                let _ = self.run_once(call).await;
                return Err(error);
            }
            // Run once and throw the result away: the second run must be harmless.
            Some(faults::Fault::Repeat) => 2,
            None => 1,
        };
        let mut outcome = self.run_once(call).await;
        for _ in 1..runs {
            outcome = self.run_once(call).await;
        }
        storable(outcome)
    }

    async fn run_once(&self, call: &StepCall) -> Result<Value, StepError> {
        // An HTTP exchange's future is kilobytes; boxed, it is allocated only for HTTP and
        // region steps, and every in-flight attempt of a Rust step does not carry its size.
        let attempt = async {
            match &call.request {
                RenderedAction::Http { .. } => Box::pin(self.http.run(call)).await,
                RenderedAction::Rust { .. } => self.rust.run(call).await,
                RenderedAction::Region(_) => Box::pin(self.http.regions().run(call)).await,
                RenderedAction::Txn(_) => Box::pin(self.http.regions().run_txn(call)).await,
            }
        };
        match tokio::time::timeout(call.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(StepError::timeout(format!(
                "no answer within {} ms",
                call.timeout.as_millis()
            ))),
        }
    }
}

/// Makes an outcome fit every store: an output holding a NUL character cannot be kept
/// (PostgreSQL refuses it), so it fails the step for good instead of wedging the saga's log
/// (as an unusable output: the action did succeed, so it is compensated on unwind); NUL
/// in an error message is replaced. And keeps credentials out of it: the user information
/// of a URL in an error message is redacted ([`crate::redact`]).
fn storable(outcome: Result<Value, StepError>) -> Result<Value, StepError> {
    match outcome {
        Ok(output) => match sagas::validate::find_nul(&output) {
            None => Ok(output),
            Some(at) => Err(StepError::unusable_output(format!(
                "output at `{at}`: {}",
                sagas::validate::NUL_MESSAGE
            ))),
        },
        Err(mut error) => {
            if error.message.contains('\0') {
                error.message = error.message.replace('\0', "\u{FFFD}");
            }
            if let Cow::Owned(redacted) = crate::redact::url_credentials(&error.message) {
                error.message = redacted;
            }
            Err(error)
        }
    }
}
