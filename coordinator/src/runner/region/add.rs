//! `add` (a read-modify-write at the key's home) and the automatic undo of region writes.

use sagas::StepError;
use serde_json::{Map, Number, Value, json};

use super::{RegionRequest, RegionRunner, Write, write_output};

/// Most read-modify-write rounds of one `add` attempt before it gives up (transient).
const MAX_ADD_ROUNDS: u32 = 64;

impl RegionRunner {
    /// Adds `delta` at `path`: read at the home, write with `if_version`, again while
    /// someone else wrote in between. `bounds`: the floor and the ceiling (actions only).
    pub(super) async fn add(
        &self,
        req: &RegionRequest,
        path: &str,
        delta: &Number,
        bounds: (Option<f64>, Option<f64>),
        op_id: &str,
    ) -> Result<Value, StepError> {
        let extra = |new: &Value| {
            let mut m = Map::new();
            m.insert("path".into(), json!(path));
            m.insert("delta".into(), Value::Number(delta.clone()));
            m.insert("value".into(), new.clone());
            m
        };
        for _ in 0..MAX_ADD_ROUNDS {
            // The strong read asks the home whether this op_id was applied already (a
            // retry after an answer was lost): then the recorded write is the result, and
            // the floor must not be checked again against a balance that includes it.
            let query = [("consistency", "strong".to_owned()), ("op_id", op_id.to_owned())];
            let current = self.read(req, &query).await?;
            if let Some(done) = current.body.get("op").filter(|o| o.is_object()) {
                let previous = done["previous"]["value"].clone();
                let new = add_at(previous, path, delta).map_err(StepError::permanent)?;
                let mut body = done.clone();
                body["replayed"] = json!(true);
                return Ok(write_output("add", req, &body, extra(&new.0)));
            }
            let found = current.status == 200;
            let (value, version) = if found {
                (current.body["value"].clone(), current.body["version"].clone())
            } else {
                (Value::Null, json!("0.0"))
            };
            let (new, result) = add_at(value, path, delta).map_err(StepError::permanent)?;
            let result_f = result.as_f64().unwrap_or(f64::NAN);
            let outside = match bounds {
                (Some(min), _) if result_f < min => Some(format!("below the minimum {min}")),
                (_, Some(max)) if result_f > max => Some(format!("above the maximum {max}")),
                _ => None,
            };
            if let Some(outside) = outside {
                return Err(StepError::permanent(format!(
                    "{}: adding {delta} at `{path}` would give {result}, {outside}",
                    req.key
                )));
            }
            let w = Write {
                key: &req.key,
                value: Some(new.clone()),
                if_version: Some(version.as_str().unwrap_or("0.0").to_owned()),
                consistency: req.consistency,
                op_id,
            };
            let answer = self.write(req.via.as_deref(), &w).await?;
            match (answer.status, answer.problem()) {
                (200, _) => return Ok(write_output("add", req, &answer.body, extra(&new))),
                (409, Some("version-mismatch")) => continue,
                _ => return Err(answer.error(&format!("add {}", req.key))),
            }
        }
        Err(StepError::transient(format!(
            "{}: {MAX_ADD_ROUNDS} read-modify-write rounds lost to concurrent writers",
            req.key
        )))
    }

    /// Undoes the write the step's action made, as its output records it.
    pub(super) async fn undo(&self, req: &RegionRequest, output: &Value, op_id: &str) -> Result<Value, StepError> {
        let key = output["key"].as_str().unwrap_or(&req.key).to_owned();
        let req = RegionRequest {
            key: key.clone(),
            ..req.clone()
        };
        let op = output["op"].as_str().unwrap_or_default();
        if op == "add" {
            let delta = number(&output["delta"], "the action's delta")?;
            let inverse = negate(&delta).map_err(StepError::permanent)?;
            let path = output["path"].as_str().unwrap_or_default();
            let mut out = self.add(&req, path, &inverse, (None, None), op_id).await?;
            out["op"] = json!("undo");
            return Ok(out);
        }
        if !matches!(op, "put" | "cas" | "delete") {
            return Err(StepError::permanent(format!(
                "the output of this step does not record a region write (op {op:?})"
            )));
        }
        let written = output["version"].as_str().unwrap_or("0.0");
        let previous = &output["previous"];
        // A deletion left no live version: the key must still be absent ("0.0").
        let if_version = if op == "delete" { "0.0" } else { written }.to_owned();
        if op == "delete" && previous.is_null() {
            return Ok(json!({"op": "undo", "key": key, "restored": null, "note": "the key was absent before"}));
        }
        let w = Write {
            key: &key,
            value: (!previous.is_null()).then(|| previous["value"].clone()),
            if_version: Some(if_version.clone()),
            consistency: req.consistency,
            op_id,
        };
        let answer = self.write(req.via.as_deref(), &w).await?;
        match (answer.status, answer.problem()) {
            (200, _) => {
                let mut extra = Map::new();
                extra.insert("restored".into(), previous.clone());
                Ok(write_output("undo", &req, &answer.body, extra))
            }
            (409, Some("version-mismatch")) => Err(StepError::permanent(format!(
                "conflict: {key} was written by someone else after this step wrote version {written}, \
                 so it was not overwritten and its previous value {} was not restored ({})",
                if previous.is_null() {
                    "(absent)".to_owned()
                } else {
                    previous["value"].to_string()
                },
                answer.body["detail"].as_str().unwrap_or("version mismatch")
            ))),
            _ => Err(answer.error(&format!("undo {key}"))),
        }
    }
}

/// A number, or text that reads as one (`"-{{input.amount}}"` renders as `"-30"`).
pub(super) fn number(value: &Value, what: &str) -> Result<Number, StepError> {
    match value {
        Value::Number(n) => Ok(n.clone()),
        Value::String(s) => match serde_json::from_str::<Value>(s.trim()) {
            Ok(Value::Number(n)) => Ok(n),
            _ => Err(StepError::permanent(format!("{what} must be a number, not {value}"))),
        },
        other => Err(StepError::permanent(format!("{what} must be a number, not {other}"))),
    }
}

fn negate(n: &Number) -> Result<Number, String> {
    match n.as_i64() {
        Some(i) => i
            .checked_neg()
            .map(Number::from)
            .ok_or_else(|| format!("cannot negate {n}")),
        None => Number::from_f64(-n.as_f64().unwrap_or(f64::NAN)).ok_or_else(|| format!("cannot negate {n}")),
    }
}

/// `value` with `delta` added to the number at the JSON Pointer `path` (missing objects
/// and numbers start empty and at 0); returns the new value and the new number.
pub fn add_at(value: Value, path: &str, delta: &Number) -> Result<(Value, Number), String> {
    let mut root = value;
    let mut slot = &mut root;
    if !path.is_empty() {
        for token in path.trim_start_matches('/').split('/') {
            let token = token.replace("~1", "/").replace("~0", "~");
            if slot.is_null() {
                *slot = Value::Object(Map::new());
            }
            let Value::Object(map) = slot else {
                return Err(format!("`{path}`: `{token}` is inside a value that is not an object"));
            };
            slot = map.entry(token).or_insert(Value::Null);
        }
    }
    let current = match slot {
        Value::Null => Number::from(0),
        Value::Number(n) => n.clone(),
        other => return Err(format!("`{path}` holds {other}, not a number")),
    };
    let sum = match (current.as_i64(), delta.as_i64()) {
        (Some(a), Some(b)) => Number::from(a.checked_add(b).ok_or_else(|| format!("{a} + {b} overflows"))?),
        _ => {
            let s = current.as_f64().unwrap_or(f64::NAN) + delta.as_f64().unwrap_or(f64::NAN);
            Number::from_f64(s).ok_or_else(|| format!("{current} + {delta} is not a finite number"))?
        }
    };
    *slot = Value::Number(sum.clone());
    Ok((root, sum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_at_creates_missing_parts_and_keeps_integers_exact() {
        let (v, n) = add_at(json!({"balance": 10, "owner": "a"}), "/balance", &Number::from(-3)).unwrap();
        assert_eq!((v, n.as_i64()), (json!({"balance": 7, "owner": "a"}), Some(7)));
        let (v, _) = add_at(Value::Null, "/a/b", &Number::from(5)).unwrap();
        assert_eq!(v, json!({"a": {"b": 5}}));
        let (v, _) = add_at(json!(1.5), "", &Number::from_f64(0.25).unwrap()).unwrap();
        assert_eq!(v, json!(1.75));
        assert!(add_at(json!({"balance": "x"}), "/balance", &Number::from(1)).is_err());
        assert!(add_at(json!({"balance": i64::MAX}), "/balance", &Number::from(1)).is_err());
        assert_eq!(negate(&Number::from(4)).unwrap(), Number::from(-4));
    }
}
