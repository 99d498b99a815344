//! Request headers a definition may not set, because the coordinator sets them on every
//! HTTP step (the participant contract rests on them) or because the HTTP client must:
//! `Host`, `Idempotency-Key`, every `X-Saga-*` header (`X-Saga-Id`, `X-Saga-Step`,
//! `X-Saga-Action-Key`, and any the coordinator adds later), `traceparent`, `tracestate`,
//! and the framing headers `Content-Length`, `Transfer-Encoding` and `Connection`.
//!
//! A new definition that sets one is refused ([`crate::validate::validate_new`]) with the
//! header's JSON Pointer. Definitions stored before this rule still load, and the HTTP
//! runner sends its own value of these headers, never theirs.

use serde_json::Value;

use crate::template::escape_pointer;
use crate::validate::ValidationError;

/// Headers the coordinator or the HTTP client sets, by their exact lowercase names.
const RESERVED: &[&str] = &[
    "host",
    "idempotency-key",
    "traceparent",
    "tracestate",
    "content-length",
    "transfer-encoding",
    "connection",
];

/// The prefix of the coordinator's own headers.
const SAGA_PREFIX: &str = "x-saga-";

/// Whether a step may not set the header `name` (case-insensitive).
pub fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED.contains(&lower.as_str()) || lower.starts_with(SAGA_PREFIX)
}

/// Every reserved header a definition document sets, at
/// `/steps/I/{action,compensation}/http/headers/NAME`. Reads the raw document, so that
/// these faults are reported whatever else is wrong with it.
pub fn reserved_header_faults(document: &Value) -> Vec<ValidationError> {
    let mut faults = Vec::new();
    let Some(Value::Array(steps)) = document.get("steps") else {
        return faults;
    };
    for (i, step) in steps.iter().enumerate() {
        for part in ["action", "compensation"] {
            let Some(Value::Object(headers)) = step.pointer(&format!("/{part}/http/headers")) else {
                continue;
            };
            for name in headers.keys().filter(|name| is_reserved(name)) {
                faults.push(ValidationError {
                    path: format!("/steps/{i}/{part}/http/headers/{}", escape_pointer(name)),
                    message: format!("`{name}` is set by the coordinator on every request: a step may not set it"),
                });
            }
        }
    }
    faults
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_coordinators_headers_are_reserved_in_any_case() {
        for name in [
            "Host",
            "IDEMPOTENCY-KEY",
            "X-Saga-Action-Key",
            "x-saga-anything",
            "Traceparent",
        ] {
            assert!(is_reserved(name), "{name}");
        }
        for name in ["Authorization", "Content-Type", "X-Sagas", "X-Request-Id"] {
            assert!(!is_reserved(name), "{name}");
        }
    }

    #[test]
    fn faults_name_the_header() {
        let doc = json!({"steps": [
            {"action": {"http": {"headers": {"a/b": "1", "Authorization": "x"}}}},
            {"action": {"rust": {}}, "compensation": {"http": {"headers": {"X-Saga-Id": "1", "Host": "h"}}}},
        ]});
        let paths: Vec<String> = reserved_header_faults(&doc).into_iter().map(|f| f.path).collect();
        assert_eq!(
            paths,
            [
                "/steps/1/compensation/http/headers/Host",
                "/steps/1/compensation/http/headers/X-Saga-Id"
            ]
        );
    }
}
