//! How much one step's templates may render: a bound checked while rendering, so that a
//! template that would blow up (thousands of references to a large input) fails before
//! its output is allocated.
//!
//! Every piece the renderer produces is charged before it is built: text by its length,
//! a JSON value by the length of its JSON text, counted by a writer that stops at the
//! bound, so that charging costs at most what is left of the budget and never allocates.

use std::cell::Cell;

use serde_json::Value;

/// Most bytes the templates of one attempt may render (its URL, headers and body, its
/// parameters or its region value, together): 4 MiB. A step whose templates would render
/// more fails for good with [`super::RenderError::TooLarge`].
pub const MAX_RENDERED_BYTES: usize = 4 << 20;

/// What the templates of one attempt may still render, shared by all of them.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    left: Cell<usize>,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Budget {
        Budget {
            limit,
            left: Cell::new(limit),
        }
    }

    /// The budget of one attempt: [`MAX_RENDERED_BYTES`].
    pub fn attempt() -> Budget {
        Budget::new(MAX_RENDERED_BYTES)
    }

    /// The bound this budget started with.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `bytes` from the budget; `false` (and nothing taken) when fewer are left.
    pub(crate) fn spend(&self, bytes: usize) -> bool {
        match self.left.get().checked_sub(bytes) {
            Some(left) => {
                self.left.set(left);
                true
            }
            None => false,
        }
    }

    /// Takes the length of `value`'s JSON text from the budget; `false` (and nothing taken)
    /// when it is longer than what is left. Costs at most what is left.
    pub(crate) fn spend_json(&self, value: &Value) -> bool {
        let bytes = match value {
            // The common cases without a serializer.
            Value::String(s) if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') => s.len() + 2,
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Array(_) | Value::Object(_) => {
                let mut counter = Counter {
                    left: self.left.get(),
                    count: 0,
                };
                if serde_json::to_writer(&mut counter, value).is_err() {
                    return false;
                }
                counter.count
            }
        };
        self.spend(bytes)
    }
}

/// An `io::Write` that counts what it is given and fails once it passes `left`.
struct Counter {
    left: usize,
    count: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.count += buf.len();
        if self.count > self.left {
            return Err(std::io::Error::other("over budget"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_values_are_charged_their_text_length() {
        for value in [
            json!(null),
            json!(12.5),
            json!("plain"),
            json!("a \"quoted\"\nline"),
            json!({"a": [1, 2, {"b": "c"}]}),
        ] {
            let budget = Budget::new(1000);
            assert!(budget.spend_json(&value));
            assert_eq!(1000 - budget.left.get(), value.to_string().len(), "{value}");
        }
    }

    #[test]
    fn an_overdraft_takes_nothing() {
        let budget = Budget::new(10);
        assert!(budget.spend(4));
        assert!(!budget.spend_json(&json!("seven chars")));
        assert!(!budget.spend_json(&json!([1, 2, 3, 4])));
        assert!(!budget.spend(7));
        assert!(budget.spend(6));
        assert!(!budget.spend(1));
    }
}
