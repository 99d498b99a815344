//! A client's JSON body read into a type, or the fault with it located by a JSON Pointer,
//! and whether its `Content-Type` declares JSON:
//! how both APIs tell a client what is wrong with what it sent.

use serde::de::DeserializeOwned;

/// What is wrong with a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// It is not JSON at all (a 400): serde's message, with the line and column.
    NotJson(String),
    /// It is JSON of the wrong shape (a 422): the JSON Pointer of the value at fault (`""`
    /// for the body itself) and what is wrong with it.
    Shape {
        /// JSON Pointer of the value at fault.
        path: String,
        /// What is wrong, for a person.
        message: String,
    },
}

impl Fault {
    /// The fault in one line: `POINTER: MESSAGE` (`(body)` for the body itself).
    pub fn detail(&self) -> String {
        match self {
            Fault::NotJson(message) => format!("the body is not JSON: {message}"),
            Fault::Shape { path, message } => {
                format!("{}: {message}", if path.is_empty() { "(body)" } else { path })
            }
        }
    }
}

/// Reads a body that must be one JSON object into `T`, as it streams (no intermediate
/// value).
///
/// serde's derived structs also take an array of their fields in order (`[1]` for
/// `{"value": 1}`), which no client means: anything but an object is a [`Fault::Shape`] at
/// the body itself.
pub fn object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Fault> {
    let first = bytes.iter().find(|b| !is_json_whitespace(b));
    if first != Some(&b'{') {
        // Say "not JSON" for what is not JSON, and "not an object" for an array or a scalar.
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Fault::Shape {
                path: String::new(),
                message: "expected a JSON object".to_owned(),
            },
            Err(e) => Fault::NotJson(e.to_string()),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = pointer(e.path());
        let inner = e.into_inner();
        if inner.is_data() {
            // The pointer says where; serde's " at line L column C" would only repeat it.
            let mut message = inner.to_string();
            let position = format!(" at line {} column {}", inner.line(), inner.column());
            if inner.line() > 0 && message.ends_with(&position) {
                message.truncate(message.len() - position.len());
            }
            Fault::Shape { path, message }
        } else {
            Fault::NotJson(inner.to_string())
        }
    })?;
    de.end().map_err(|e| Fault::NotJson(e.to_string()))?;
    Ok(value)
}

/// The media type a `Content-Type` value declares: lowercased, without its parameters
/// (`application/json` for `Application/JSON; charset=utf-8`).
pub fn media_type(value: &axum::http::HeaderValue) -> String {
    let text = value.to_str().unwrap_or_default();
    text.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Whether a [`media_type`] is JSON: `application/json` or `application/*+json`.
pub fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

/// Whether `b` is whitespace between JSON tokens (space, tab, line feed, carriage return:
/// RFC 8259; not form feed, which `u8::is_ascii_whitespace` takes).
pub fn is_json_whitespace(b: &u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The JSON Pointer of a serde path (`""` for the whole value).
pub fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => out.push_str(&format!("/{}", key.replace('~', "~0").replace('/', "~1"))),
            Segment::Enum { variant } => out.push_str(&format!("/{variant}")),
            Segment::Unknown => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Put {
        writes: Vec<Write>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Write {
        #[serde(rename = "a/b")]
        value: u32,
    }

    fn shape(path: &str) -> impl Fn(Fault) -> bool + '_ {
        move |fault| matches!(fault, Fault::Shape { path: p, .. } if p == path)
    }

    #[test]
    fn an_object_is_read_and_the_value_at_fault_is_named_by_its_pointer() {
        let put: Put = object(br#" {"writes": [{"a/b": 1}]} "#).unwrap();
        assert_eq!(put.writes, vec![Write { value: 1 }]);
        let fault = object::<Put>(br#"{"writes": [{"a/b": 1}, {"a/b": "x"}]}"#).unwrap_err();
        assert!(shape("/writes/1/a~1b")(fault.clone()), "{fault:?}");
        assert_eq!(
            fault.detail(),
            "/writes/1/a~1b: invalid type: string \"x\", expected u32",
            "the pointer says where, without serde's line and column"
        );
        let fault = object::<Put>(br#"{"writes": [], "extra": 1}"#).unwrap_err();
        assert!(shape("/extra")(fault.clone()), "{fault:?}");
    }

    #[test]
    fn an_array_or_a_scalar_is_refused_at_the_body_itself() {
        for body in [&br#"[[{"a/b": 1}]]"#[..], b"7", b"null", b" \"text\""] {
            let fault = object::<Put>(body).unwrap_err();
            assert_eq!(
                fault,
                Fault::Shape {
                    path: String::new(),
                    message: "expected a JSON object".to_owned()
                }
            );
            assert_eq!(fault.detail(), "(body): expected a JSON object");
        }
    }

    #[test]
    fn json_media_types_are_told_by_their_essence() {
        let media = |v: &'static str| media_type(&axum::http::HeaderValue::from_static(v));
        assert_eq!(media("Application/JSON; charset=utf-8"), "application/json");
        assert!(is_json(&media("application/json")));
        assert!(is_json(&media("application/problem+json")));
        assert!(!is_json(&media("text/plain")));
        assert!(!is_json(&media("application/jsonx")));
    }

    #[test]
    fn what_is_not_json_is_told_apart_from_a_wrong_shape() {
        for body in [
            &b""[..],
            b"{",
            b"{\"writes\": [}",
            b"{\"writes\": []} trailing",
            b"nope",
        ] {
            let fault = object::<Put>(body).unwrap_err();
            assert!(
                matches!(fault, Fault::NotJson(_)),
                "{:?}: {fault:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
