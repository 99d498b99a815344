//! `add` (applied by the key's home) and the automatic undo of region writes: from the
//! action's output, or by its op id when the action's outcome is unknown.

use regions_client::{Add, PatchRequest, Undo};
use sagas::StepError;
use serde_json::{Map, Number, Value, json};

use super::{RegionRequest, RegionRunner, Write, built, write_consistency, write_output};

impl RegionRunner {
    /// Adds `delta` at `path`: one `PATCH` with `add`, which the key's home applies under
    /// the key's write lock (`regions::add`), checking `bounds` (the floor and the ceiling;
    /// actions only) against the value it changes. A repeat of `op_id` is answered with
    /// the first result.
    pub(super) async fn add(
        &self,
        req: &RegionRequest,
        path: &str,
        delta: &Number,
        bounds: (Option<f64>, Option<f64>),
        op_id: &str,
    ) -> Result<Value, StepError> {
        let add = Add {
            path: path.to_owned(),
            delta: delta.clone(),
            min: bounds.0,
            max: bounds.1,
        };
        let answer = self.patch(req, Some(add), None, op_id).await?;
        if answer.status != 200 {
            return Err(answer.error(&format!("add {}", req.key)));
        }
        let mut extra = Map::new();
        extra.insert("path".into(), json!(path));
        extra.insert("delta".into(), Value::Number(delta.clone()));
        extra.insert("value".into(), answer.body["value"].clone());
        Ok(write_output("add", req, &answer.body, extra))
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
            consistency: write_consistency(req.consistency)?,
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

impl RegionRunner {
    /// Undoes the write of a step whose outcome is unknown (no output), by the action's op
    /// id: the key's home undoes it if it was applied (an `add` by the inverse of `add`'s
    /// delta, the others by restoring what it replaced, only over its own version) and
    /// otherwise cancels it, so that it never applies (`regions/src/node/undo.rs`).
    pub(super) async fn undo_by_op_id(
        &self,
        req: &RegionRequest,
        action_op_id: &str,
        add: Option<&(String, Value)>,
        op_id: &str,
    ) -> Result<Value, StepError> {
        let inverse = match add {
            Some((path, delta)) => Some(Add {
                path: path.clone(),
                delta: negate(&number(delta, "the action's delta")?).map_err(StepError::permanent)?,
                min: None,
                max: None,
            }),
            None => None,
        };
        let undo = Undo {
            op_id: action_op_id.to_owned(),
            add: inverse,
        };
        let answer = self.patch(req, None, Some(undo), op_id).await?;
        match (answer.status, answer.problem()) {
            (200, _) => {
                let applied = answer.body["undo"]["applied"].as_bool().unwrap_or(false);
                let mut extra = Map::new();
                extra.insert("undid".into(), json!(action_op_id));
                extra.insert("was_applied".into(), json!(applied));
                Ok(write_output("undo", req, &answer.body, extra))
            }
            (409, Some("version-mismatch")) => Err(StepError::permanent(format!(
                "conflict: {} was written by someone else after this step's write (whose outcome was unknown) \
                 was applied, so it was not overwritten and the value it replaced was not restored ({})",
                req.key,
                answer.body["detail"].as_str().unwrap_or("version mismatch")
            ))),
            _ => Err(answer.error(&format!("undo {} by op id", req.key))),
        }
    }
}

impl RegionRunner {
    /// One `PATCH` of the step's key, with an addition or an undo, carrying `op_id`.
    async fn patch(
        &self,
        req: &RegionRequest,
        add: Option<Add>,
        undo: Option<Undo>,
        op_id: &str,
    ) -> Result<super::Answer, StepError> {
        let body = PatchRequest {
            add,
            undo,
            consistency: write_consistency(req.consistency)?,
            if_version: None,
            op_id: Some(op_id.to_owned()),
        };
        self.send(req.via.as_deref(), |client, base| {
            built(regions_client::patch(client, base, &req.key, &body))
        })
        .await
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
        other @ (Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_)) => {
            Err(StepError::permanent(format!("{what} must be a number, not {other}")))
        }
    }
}

pub(super) fn negate(n: &Number) -> Result<Number, String> {
    match n.as_i64() {
        Some(i) => i
            .checked_neg()
            .map(Number::from)
            .ok_or_else(|| format!("cannot negate {n}")),
        None => Number::from_f64(-n.as_f64().unwrap_or(f64::NAN)).ok_or_else(|| format!("cannot negate {n}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negate_keeps_integers_exact() {
        assert_eq!(negate(&Number::from(4)).unwrap(), Number::from(-4));
        assert_eq!(
            negate(&Number::from_f64(0.5).unwrap()).unwrap(),
            Number::from_f64(-0.5).unwrap()
        );
        assert!(negate(&Number::from(i64::MIN)).is_err());
    }
}
