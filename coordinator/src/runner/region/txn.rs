//! Transaction steps (`sagas::txn`): one `POST /v1/txn` to the step's region, its gateway,
//! with the attempt's idempotency key as `op_id`, so that the regions commit it at most
//! once however often it is retried or recovered; a repeat is answered with the first
//! commit (`replayed` in the output). A compensation carries the action's op id as
//! `undoes`: the regions cancel the action if it never committed (and the compensation
//! then writes nothing, `undone: false`), else they commit the compensation once.
//!
//! Answers: 200 is the output; 409 `txn-conflict` is a try that lost a conflict, aborted
//! with nothing applied, so it is retried like a request that never arrived; other 4xx
//! refuse for good (a condition not met, a bound crossed); 5xx and no answer leave the
//! outcome unknown (retried with the same op id).

use regions_client::{Add, Condition, OneShotRequest, OneShotWrite};
use sagas::outcome::{self, NoAnswer};
use sagas::template::{RenderContext, RenderError};
use sagas::{Phase, StepError, TxnCall, TxnWriteOperation};
use serde_json::{Value, json};

use super::super::{RenderedAction, StepCall};
use super::add::{negate, number};
use super::{RegionRunner, built};

/// A transaction step with its templates rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnRequest {
    /// The region to go through (`None`: the default).
    pub via: Option<String>,
    /// Keys read at the snapshot.
    pub reads: Vec<String>,
    /// Versions keys must have at the snapshot.
    pub conditions: Vec<Condition>,
    /// The writes.
    pub writes: Vec<RenderedWrite>,
    /// A compensation of a transaction step: sent with the action's op id as `undoes`.
    pub undoes_action: bool,
}

/// A write of a transaction step with its templates rendered. An addition's delta is
/// taken for a number when an attempt runs (if it is none, the step fails for good,
/// naming the write).
#[derive(Debug, Clone, PartialEq)]
pub enum RenderedWrite {
    /// Write a value (`None`: delete the key).
    Value {
        /// The key.
        key: String,
        /// The value.
        value: Option<Value>,
    },
    /// Add a number at a path of the key's value.
    Add {
        /// The key.
        key: String,
        /// JSON Pointer of the number.
        path: String,
        /// The delta as rendered.
        delta: Value,
        /// Add its opposite (the automatic compensation).
        negated: bool,
        /// The floor.
        min: Option<f64>,
        /// The ceiling.
        max: Option<f64>,
    },
}

/// Renders a checked transaction step for one attempt.
pub fn render(call: &TxnCall, cx: &RenderContext<'_>) -> Result<RenderedAction, RenderError> {
    let reads = call
        .reads
        .iter()
        .map(|k| k.render_string(cx))
        .collect::<Result<Vec<_>, _>>()?;
    let mut conditions = Vec::new();
    for (key, version) in &call.conditions {
        conditions.push(Condition {
            key: key.render_string(cx)?,
            version: version.render_string(cx)?,
        });
    }
    let mut writes = Vec::new();
    for w in &call.writes {
        let key = w.key.render_string(cx)?;
        writes.push(match &w.operation {
            TxnWriteOperation::Put(value) => RenderedWrite::Value {
                key,
                value: Some(value.render(cx)?),
            },
            TxnWriteOperation::Delete => RenderedWrite::Value { key, value: None },
            TxnWriteOperation::Add {
                path,
                delta,
                negated,
                min,
                max,
            } => RenderedWrite::Add {
                key,
                path: path.clone(),
                delta: delta.render(cx)?,
                negated: *negated,
                min: *min,
                max: *max,
            },
        });
    }
    Ok(RenderedAction::Txn(TxnRequest {
        via: call.via.clone(),
        reads,
        conditions,
        writes,
        undoes_action: call.undoes_action,
    }))
}

impl TxnRequest {
    /// The body of `POST /v1/txn` for one attempt under `op_id`, a compensation's with
    /// `undoes` (the action's op id); or the step's permanent failure naming a write whose
    /// delta is no number.
    fn body(&self, op_id: &str, undoes: Option<String>) -> Result<OneShotRequest, StepError> {
        let mut writes = Vec::with_capacity(self.writes.len());
        for (i, w) in self.writes.iter().enumerate() {
            writes.push(match w {
                RenderedWrite::Value { key, value } => OneShotWrite {
                    key: key.clone(),
                    value: value.clone(),
                    add: None,
                },
                RenderedWrite::Add {
                    key,
                    path,
                    delta,
                    negated,
                    min,
                    max,
                } => {
                    let delta = number(delta, &format!("writes[{i}].delta"))?;
                    let delta = if *negated {
                        negate(&delta).map_err(StepError::permanent)?
                    } else {
                        delta
                    };
                    OneShotWrite {
                        key: key.clone(),
                        value: None,
                        add: Some(Add {
                            path: path.clone(),
                            delta,
                            min: *min,
                            max: *max,
                        }),
                    }
                }
            });
        }
        Ok(OneShotRequest {
            reads: self.reads.clone(),
            conditions: self.conditions.clone(),
            writes,
            op_id: Some(op_id.to_owned()),
            undoes,
        })
    }
}

impl RegionRunner {
    /// Runs one attempt of a transaction step.
    pub(crate) async fn run_txn(&self, call: &StepCall) -> Result<Value, StepError> {
        let RenderedAction::Txn(req) = &call.request else {
            return Err(StepError::permanent("not a transaction step"));
        };
        let undoes = (req.undoes_action && call.phase == Phase::Compensation)
            .then(|| sagas::idempotency_key(&call.saga_id.to_string(), &call.step, Phase::Action));
        let body = req.body(&call.idempotency_key, undoes)?;
        let answer = self
            .send(req.via.as_deref(), |client, base| {
                built(regions_client::one_shot(client, base, &body))
            })
            .await?;
        match (answer.status, answer.problem()) {
            (200, _) => {
                crash_if_asked(&call.step);
                let Value::Object(mut out) = answer.body else {
                    return Err(StepError::permanent(format!("the region answered {}", answer.body)));
                };
                out.insert("op".into(), json!("txn"));
                out.entry("replayed").or_insert(json!(false));
                Ok(Value::Object(out))
            }
            (409, Some("txn-conflict")) => Err(StepError {
                kind: outcome::no_answer(NoAnswer::NotSent),
                ..answer.error("the transaction lost a conflict and was aborted (nothing applied); retrying")
            }),
            _ => Err(answer.error("the transaction")),
        }
    }
}

/// Test hook: `GEOSAGA_CRASH_AFTER_TXN=STEP` aborts the process when a transaction step
/// named STEP has committed and before the coordinator records it (tests/regions_txn_saga.rs
/// restarts the coordinator without it and checks the transaction applied once).
pub const CRASH_AFTER_TXN: &str = "GEOSAGA_CRASH_AFTER_TXN";

fn crash_if_asked(step: &str) {
    if std::env::var(CRASH_AFTER_TXN).is_ok_and(|s| s == step) {
        eprintln!("{CRASH_AFTER_TXN}={step}: the coordinator aborts between the commit and its record");
        std::process::abort();
    }
}
