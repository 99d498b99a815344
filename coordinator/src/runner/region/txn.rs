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

use sagas::outcome::{self, NoAnswer};
use sagas::template::{RenderContext, RenderError};
use sagas::{Phase, StepError, TxnCall, TxnWriteOperation};
use serde_json::{Map, Value, json};

use super::super::{RenderedAction, StepCall};
use super::RegionRunner;
use super::add::{negate, number};

/// A transaction step with its templates rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnRequest {
    /// The region to go through (`None`: the default).
    pub via: Option<String>,
    /// The body of `POST /v1/txn` without its op ids: `reads`, `conditions`, `writes`.
    pub body: Map<String, Value>,
    /// A compensation of a transaction step: sent with the action's op id as `undoes`.
    pub undoes_action: bool,
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
        conditions.push(json!({"key": key.render_string(cx)?, "version": version.render_string(cx)?}));
    }
    let mut writes = Vec::new();
    for w in &call.writes {
        let key = w.key.render_string(cx)?;
        writes.push(match &w.operation {
            TxnWriteOperation::Put(value) => json!({"key": key, "value": value.render(cx)?}),
            TxnWriteOperation::Delete => json!({"key": key, "value": null}),
            TxnWriteOperation::Add {
                path,
                delta,
                negated,
                min,
                max,
            } => json!({"key": key, "add": {"path": path, "delta": delta.render(cx)?, "min": min, "max": max},
                        "negated": negated}),
        });
    }
    let mut body = Map::new();
    body.insert("reads".into(), json!(reads));
    body.insert("conditions".into(), json!(conditions));
    body.insert("writes".into(), json!(writes));
    Ok(RenderedAction::Txn(TxnRequest {
        via: call.via.clone(),
        body,
        undoes_action: call.undoes_action,
    }))
}

/// The deltas of the rendered writes as numbers (negated where the write says so), or the
/// step's permanent failure naming the write.
fn numbers(writes: &mut [Value]) -> Result<(), StepError> {
    for (i, w) in writes.iter_mut().enumerate() {
        let Some(w) = w.as_object_mut() else { continue };
        let negated = w.remove("negated").and_then(|n| n.as_bool()).unwrap_or(false);
        let Some(add) = w.get_mut("add").and_then(Value::as_object_mut) else {
            continue;
        };
        let delta = number(&add["delta"], &format!("writes[{i}].delta"))?;
        let delta = if negated {
            negate(&delta).map_err(StepError::permanent)?
        } else {
            delta
        };
        add.insert("delta".into(), Value::Number(delta));
        add.retain(|_, v| !v.is_null());
    }
    Ok(())
}

impl RegionRunner {
    /// Runs one attempt of a transaction step.
    pub(crate) async fn run_txn(&self, call: &StepCall) -> Result<Value, StepError> {
        let RenderedAction::Txn(req) = &call.request else {
            return Err(StepError::permanent("not a transaction step"));
        };
        let mut body = req.body.clone();
        if let Some(Value::Array(writes)) = body.get_mut("writes") {
            numbers(writes)?;
        }
        body.insert("op_id".into(), json!(call.idempotency_key));
        if req.undoes_action && call.phase == Phase::Compensation {
            let action = sagas::idempotency_key(&call.saga_id.to_string(), &call.step, Phase::Action);
            body.insert("undoes".into(), json!(action));
        }
        let body = Value::Object(body);
        let answer = self
            .send(req.via.as_deref(), |client, base| {
                Ok(client.post(format!("{base}/v1/txn")).json(&body))
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
