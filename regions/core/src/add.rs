//! `add`: a number inside a key's JSON value changed by a delta, applied by the key's home
//! under the key's write lock (`PATCH /v1/kv/{key}` with `{"add": {...}}`).
//!
//! The home reads the live value, adds, checks the optional floor and ceiling, and writes
//! the result as an ordinary version (strong or async, with an `op_id` like any write). No
//! other writer can get in between, so concurrent adds to one key never lose a round to
//! each other, and the caller pays one round trip to the home instead of a read and a
//! conditional write per round. A repeat of an applied `op_id` is answered with the first
//! result; its new value is recomputed from the recorded previous value, which gives the
//! same number since an add is a function of the value it replaced.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use utoipa::ToSchema;

use crate::mvcc::Version;
use crate::{Error, Result};

/// An addition to the number at a JSON Pointer inside a key's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Add {
    /// Where the number is: a JSON Pointer (`""`: the value itself). Missing objects are
    /// created and a missing number starts at 0.
    #[serde(default)]
    pub path: String,
    /// The number to add (negative to subtract).
    #[schema(value_type = f64)]
    pub delta: Number,
    /// The result may not be below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The result may not be above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl Add {
    /// Refuses a path that is no JSON Pointer.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !self.path.is_empty() && !self.path.starts_with('/') {
            return Err(format!(
                "`{}` is not a JSON Pointer (\"\" or starting with /)",
                self.path
            ));
        }
        Ok(())
    }

    /// The value after this addition to `current` (absent or deleted: `null`), or why it cannot be made: the path crosses a non-object or holds a non-number
    /// ([`Error::BadRequest`]), or the result is outside the bounds ([`Error::OutOfBounds`]).
    pub fn apply(&self, key: &str, current: Option<&Version>) -> Result<Value> {
        let value = match current.and_then(|v| v.value.as_deref()) {
            Some(text) => serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("stored value: {e}")))?,
            None => Value::Null,
        };
        let (new, result) =
            add_at(value, &self.path, &self.delta).map_err(|e| Error::BadRequest(format!("{key}: {e}")))?;
        let n = result.as_f64().unwrap_or(f64::NAN);
        let outside = match (self.min, self.max) {
            (Some(min), _) if n < min => Some(format!("below the minimum {min}")),
            (_, Some(max)) if n > max => Some(format!("above the maximum {max}")),
            _ => None,
        };
        if let Some(outside) = outside {
            return Err(Error::OutOfBounds(format!(
                "{key}: adding {} at `{}` would give {result}, {outside}; nothing was written",
                self.delta, self.path
            )));
        }
        Ok(new)
    }

    /// The value this addition made from `previous` (for answering a repeat).
    pub fn result_from(&self, previous: Option<&Value>) -> Option<Value> {
        add_at(previous.cloned().unwrap_or(Value::Null), &self.path, &self.delta)
            .ok()
            .map(|(v, _)| v)
    }
}

/// `value` with `delta` added to the number at the JSON Pointer `path` (missing objects
/// and numbers start empty and at 0); returns the new value and the new number. Integers
/// stay exact (an overflow is an error); otherwise the sum is a finite float.
pub fn add_at(value: Value, path: &str, delta: &Number) -> std::result::Result<(Value, Number), String> {
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
    use crate::hlc::Timestamp;
    use serde_json::json;

    fn version(value: Value) -> Version {
        Version {
            ts: Timestamp { wall_ms: 1, logical: 0 },
            value: Some(value.to_string()),
        }
    }

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
    }

    #[test]
    fn apply_checks_the_bounds_and_the_path() {
        let add = |delta: i64, min: Option<f64>, max: Option<f64>| Add {
            path: "/balance".into(),
            delta: Number::from(delta),
            min,
            max,
        };
        let current = version(json!({"balance": 10}));
        assert_eq!(
            add(-10, Some(0.0), None).apply("k", Some(&current)).unwrap(),
            json!({"balance": 0})
        );
        assert!(matches!(
            add(-11, Some(0.0), None).apply("k", Some(&current)),
            Err(Error::OutOfBounds(_))
        ));
        assert!(matches!(
            add(491, None, Some(500.0)).apply("k", Some(&current)),
            Err(Error::OutOfBounds(_))
        ));
        assert_eq!(add(5, None, None).apply("k", None).unwrap(), json!({"balance": 5}));
        assert!(matches!(
            add(1, None, None).apply("k", Some(&version(json!({"balance": "ten"})))),
            Err(Error::BadRequest(_))
        ));
        let bad = Add {
            path: "balance".into(),
            ..add(1, None, None)
        };
        assert!(bad.check().is_err());
        assert_eq!(
            add(-3, None, None).result_from(Some(&json!({"balance": 10}))),
            Some(json!({"balance": 7}))
        );
    }
}
