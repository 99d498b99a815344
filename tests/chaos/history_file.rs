//! The history a failed run leaves behind: every operation, acknowledgement, read, saga and
//! fault as JSON, and the containers' logs, in a directory under the target directory.

use std::path::PathBuf;

use serde_json::{Value, json};
use testkit::history::{Call, Operation, Outcome};

use super::Fault;
use super::checks::{Report, outcome_name};
use super::testbed::REGIONS;
use super::transfers::Sagas;
use super::workload::Workload;

fn op_json(key: &str, o: &Operation) -> Value {
    let (call, value) = match &o.call {
        Call::Write(v) => ("write", Some(v.clone())),
        Call::Read => ("read", None),
    };
    let seen = match &o.outcome {
        Outcome::Read(v) => json!(v),
        _ => Value::Null,
    };
    json!({
        "key": key, "client": o.client, "call": call, "value": value,
        "invoked_ms": o.invoked.as_secs_f64() * 1e3, "returned_ms": o.returned.as_secs_f64() * 1e3,
        "outcome": outcome_name(&o.outcome), "read": seen,
    })
}

/// Writes the whole history (and the containers' logs) to a file under the target
/// directory; returns its path.
pub fn keep(w: &Workload, sagas: &Sagas, faults: &[Fault], report: &Report, seed: u64, logs: &str) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-{stamp}"));
    std::fs::create_dir_all(&dir).unwrap();
    let acked = |list: &[super::workload::Acked]| -> Vec<Value> {
        list.iter()
            .map(|a| json!({"key": a.key, "version": a.version.to_string(), "value": a.value, "at_ms": a.at.as_secs_f64() * 1e3}))
            .collect()
    };
    let history = json!({
        "seed": seed,
        "operations": report.operations,
        "checks": report.checks.iter().map(|(n, f)| json!({"check": n, "failure": f})).collect::<Vec<_>>(),
        "faults": faults.iter().map(|f| json!({"at_ms": f.at.as_secs_f64() * 1e3, "kind": f.kind, "what": f.what})).collect::<Vec<_>>(),
        "strong": w.rec.ops.lock().unwrap().iter().map(|(k, o)| op_json(k, o)).collect::<Vec<_>>(),
        "strong_acknowledged": acked(&w.rec.strong_acked.lock().unwrap()),
        "async_acknowledged": acked(&w.rec.async_acked.lock().unwrap()),
        "bounded_reads": w.rec.bounded.lock().unwrap().iter().map(|b| json!({
            "key": b.key, "region": REGIONS[b.region], "invoked_ms": b.invoked.as_secs_f64() * 1e3,
            "version": b.version.map(|v| v.to_string()), "bound_ms": b.bound, "by_replica": b.local,
        })).collect::<Vec<_>>(),
        "sagas": sagas.started.lock().unwrap().iter().map(|t| json!({"id": t.id, "from": t.from, "to": t.to, "amount": t.amount, "started_on": super::coordinators::COORDINATORS[t.coordinator]})).collect::<Vec<_>>(),
        "counters": w.rec.counters.lock().unwrap().iter().map(|(k, (a, u))| json!({"key": k, "acknowledged": a, "unknown": u})).collect::<Vec<_>>(),
    });
    let path = dir.join("history.json");
    std::fs::write(&path, serde_json::to_string_pretty(&history).unwrap()).unwrap();
    std::fs::write(dir.join("containers.log"), logs).unwrap();
    path
}
