//! Writes applied whose answers came too late (the nemesis's `slow` fault: a region's
//! answers held back longer than a step's time limit, its requests on time). A step whose
//! every attempt timed out ends possibly applied, without an output; when its saga unwinds,
//! it is undone by its op id like a succeeded step. The check reads each such step's op
//! ids at the key's home (`GET /v1/kv/KEY?op_id=`: what the write with that op id did):
//! every one whose action was applied has its undo applied too, and at least one was
//! applied, or the fault proved nothing.

use serde_json::Value;

use super::testbed::PREFIXES;
use super::transfers::Transfer;
use super::workload::Workload;

/// The key a transfer's `add` step writes, by step name. Additions leave their key in
/// place when undone, so its home can still say what an op id did; the receipt (a `put`,
/// undone by deleting its key) cannot be asked, and is left out.
fn key_of(t: &Transfer, step: &str) -> Option<String> {
    match step {
        "debit" => Some(t.from.clone()),
        "credit" => Some(t.to.clone()),
        "daily_limit" => Some(format!("{}/sent", t.from)),
        _ => None,
    }
}

/// What `key`'s home recorded for `op_id` (`null`: nothing applied under it).
async fn op_at_home(w: &Workload, key: &str, op_id: &str) -> Result<Value, String> {
    let home = PREFIXES
        .iter()
        .position(|p| key.starts_with(p))
        .ok_or_else(|| format!("{key} has no home"))?;
    let url = format!("{}/v1/kv/{key}", w.regions[home]);
    let mut last = String::new();
    for _ in 0..20 {
        match w.reader.get(&url).query(&[("op_id", op_id)]).send().await {
            Ok(r) if r.status() == 200 => {
                let body: Value = r.json().await.map_err(|e| e.to_string())?;
                return Ok(body["op"].clone());
            }
            Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    Err(format!("reading op {op_id} of {key}: {last}"))
}

/// The check: every write applied under a step left possibly applied was undone, and
/// there was at least one.
pub async fn applied_then_timed_out(
    w: &Workload,
    coordinator: &str,
    started: &[Transfer],
) -> (&'static str, Result<String, String>) {
    const NAME: &str = "writes applied but answered too late were undone (uncertain outcomes)";
    let (mut possibly, mut applied, mut undone) = (0, 0, 0);
    for t in started {
        let saga: Value = match w
            .coordinator
            .get(format!("{coordinator}/v1/sagas/{}", t.id))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => r.json().await.unwrap_or(Value::Null),
            other => return (NAME, Err(format!("reading saga {}: {other:?}", t.id))),
        };
        let steps = saga["steps"].as_array().cloned().unwrap_or_default();
        for step in &steps {
            // Possibly applied: an attempt's outcome was unknown, and none succeeded.
            if step["outcome_unknown"] != true || !step["output"].is_null() {
                continue;
            }
            let name = step["name"].as_str().unwrap_or("");
            let Some(key) = key_of(t, name) else {
                continue;
            };
            possibly += 1;
            let action = match op_at_home(w, &key, &format!("{}:{name}:action", t.id)).await {
                Ok(op) => op,
                Err(e) => return (NAME, Err(e)),
            };
            if action.is_null() {
                continue; // never applied (refused, or cancelled by its undo)
            }
            applied += 1;
            let status = saga["status"].as_str().unwrap_or("");
            let undo = match op_at_home(w, &key, &format!("{}:{name}:compensation", t.id)).await {
                Ok(op) => op,
                Err(e) => return (NAME, Err(e)),
            };
            if status != "compensated" || step["status"] != "compensated" || undo.is_null() {
                return (
                    NAME,
                    Err(format!(
                        "saga {} ({status}): step {name} was applied at {key}'s home ({action}) but timed out, and its undo is {undo} (step: {step})",
                        t.id
                    )),
                );
            }
            undone += 1;
        }
    }
    if applied == 0 {
        return (
            NAME,
            Err(format!(
                "{possibly} steps ended possibly applied, none of them applied at its home: no write was applied and answered too late, so the slow fault proved nothing"
            )),
        );
    }
    (
        NAME,
        Ok(format!(
            "{possibly} steps possibly applied, {applied} of them applied at the key's home (the answer late), {undone} undone"
        )),
    )
}
