//! Templates: `{{input.x}}`, `{{saga.id}}` and `{{steps.NAME.output.path}}` inside JSON.
//!
//! A string that is exactly one template keeps the JSON type of the value it names
//! (`"{{input.amount}}"` renders as the number 5); a template inside a longer string is
//! rendered as text. Templates are parsed once, when a definition is validated; rendering
//! is a pure function of the saga input, its id and the outputs of earlier steps, bounded
//! by a [`Budget`] that the templates of one attempt share (`budget.rs`).

mod budget;

use std::borrow::Cow;

use serde_json::{Map, Value};

pub use budget::{Budget, MAX_RENDERED_BYTES};

/// Deepest JSON nesting a template may have.
pub const MAX_DEPTH: usize = 32;

/// A parsed template: a JSON value whose strings may reference saga data.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    /// A value with no template inside.
    Literal(Value),
    /// A string that is exactly one reference: renders to the referenced value itself.
    Value(Reference),
    /// A string mixing text and references: renders to a string.
    Text(Vec<Segment>),
    /// An array of templates.
    Array(Vec<Template>),
    /// An object whose values are templates.
    Object(Vec<(String, Template)>),
}

/// A piece of a [`Template::Text`].
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// Text copied as it is.
    Text(String),
    /// A reference rendered as text (strings bare, other values as JSON).
    Reference(Reference),
}

/// What a template refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `input.a.b`: a path into the saga input (empty for the whole input).
    Input(Vec<String>),
    /// `saga.id`.
    SagaId,
    /// `steps.NAME.output.a.b`: a path into the output of a step.
    StepOutput {
        /// The step's name.
        step: String,
        /// The path inside its output.
        path: Vec<String>,
    },
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Input(path) => write_path(f, "input", path),
            Reference::SagaId => f.write_str("saga.id"),
            Reference::StepOutput { step, path } => write_path(f, &format!("steps.{step}.output"), path),
        }
    }
}

fn write_path(f: &mut std::fmt::Formatter<'_>, head: &str, path: &[String]) -> std::fmt::Result {
    f.write_str(head)?;
    for segment in path {
        write!(f, ".{segment}")?;
    }
    Ok(())
}

/// Why a template could not be parsed. `path` is a JSON Pointer relative to the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Where in the templated value the fault is (JSON Pointer, relative).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A reference names something the saga does not have.
    #[error("template `{{{{{reference}}}}}` does not resolve: {reason}")]
    Unresolved {
        /// The reference that failed, as written.
        reference: String,
        /// Why it failed.
        reason: String,
    },
    /// The rendered request would pass its budget: nothing past it was built.
    #[error(
        "the step's templates render more than {limit} bytes, the most one request may hold \
         (the limit was reached at {at})"
    )]
    TooLarge {
        /// The budget, in bytes.
        limit: usize,
        /// What was being rendered when the budget ran out (a reference, or the text).
        at: String,
    },
}

/// The data a template is rendered against.
pub struct RenderContext<'a> {
    /// The saga input.
    pub input: &'a Value,
    /// The saga id.
    pub saga_id: &'a str,
    /// The output of a step by name, if it has one.
    pub output_of: &'a dyn Fn(&str) -> Option<&'a Value>,
    /// What the rendering may still produce, shared by the templates of one attempt.
    pub budget: Budget,
}

impl Template {
    /// Parses every string inside `value` as a template.
    pub fn parse(value: &Value) -> Result<Template, Vec<ParseError>> {
        let mut errors = Vec::new();
        let template = parse_value(value, "", 0, &mut errors);
        if errors.is_empty() { Ok(template) } else { Err(errors) }
    }

    /// Parses a string template (a URL or a header value).
    pub fn parse_str(text: &str) -> Result<Template, Vec<ParseError>> {
        Template::parse(&Value::String(text.to_owned()))
    }

    /// Every reference in the template, with the JSON Pointer of the string holding it.
    pub fn references(&self) -> Vec<(String, &Reference)> {
        let mut out = Vec::new();
        collect_references(self, String::new(), &mut out);
        out
    }

    /// Renders the template to JSON, within the context's budget.
    pub fn render(&self, cx: &RenderContext<'_>) -> Result<Value, RenderError> {
        let over = |at: String| RenderError::TooLarge {
            limit: cx.budget.limit(),
            at,
        };
        match self {
            Template::Literal(v) => {
                if !cx.budget.spend_json(v) {
                    return Err(over("the template's own text".to_owned()));
                }
                Ok(v.clone())
            }
            Template::Value(r) => {
                let value = resolve(r, cx)?;
                if !cx.budget.spend_json(&value) {
                    return Err(over(format!("`{{{{{r}}}}}`")));
                }
                Ok(value.into_owned())
            }
            Template::Text(segments) => {
                let mut out = String::new();
                for segment in segments {
                    match segment {
                        Segment::Text(t) => {
                            if !cx.budget.spend(t.len()) {
                                return Err(over("the template's own text".to_owned()));
                            }
                            out.push_str(t);
                        }
                        Segment::Reference(r) => {
                            let value = resolve(r, cx)?;
                            let fits = match value.as_ref() {
                                Value::String(s) => cx.budget.spend(s.len()),
                                Value::Null
                                | Value::Bool(_)
                                | Value::Number(_)
                                | Value::Array(_)
                                | Value::Object(_) => cx.budget.spend_json(&value),
                            };
                            if !fits {
                                return Err(over(format!("`{{{{{r}}}}}`")));
                            }
                            match value.as_ref() {
                                Value::String(s) => out.push_str(s),
                                other @ (Value::Null
                                | Value::Bool(_)
                                | Value::Number(_)
                                | Value::Array(_)
                                | Value::Object(_)) => out.push_str(&other.to_string()),
                            }
                        }
                    }
                }
                Ok(Value::String(out))
            }
            Template::Array(items) => items
                .iter()
                .map(|t| t.render(cx))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Template::Object(fields) => {
                let mut map = Map::new();
                for (k, t) in fields {
                    if !cx.budget.spend(k.len()) {
                        return Err(over("the template's own text".to_owned()));
                    }
                    map.insert(k.clone(), t.render(cx)?);
                }
                Ok(Value::Object(map))
            }
        }
    }

    /// Renders the template and turns the result into text (for URLs and headers).
    pub fn render_string(&self, cx: &RenderContext<'_>) -> Result<String, RenderError> {
        Ok(match self.render(cx)? {
            Value::String(s) => s,
            other @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_)) => {
                other.to_string()
            }
        })
    }
}

fn collect_references<'t>(t: &'t Template, path: String, out: &mut Vec<(String, &'t Reference)>) {
    match t {
        Template::Literal(_) => {}
        Template::Value(r) => out.push((path, r)),
        Template::Text(segments) => {
            for s in segments {
                match s {
                    Segment::Text(_) => {}
                    Segment::Reference(r) => out.push((path.clone(), r)),
                }
            }
        }
        Template::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_references(item, format!("{path}/{i}"), out);
            }
        }
        Template::Object(fields) => {
            for (k, item) in fields {
                collect_references(item, format!("{path}/{}", escape_pointer(k)), out);
            }
        }
    }
}

/// Escapes one JSON Pointer token (RFC 6901).
pub fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn parse_value(value: &Value, path: &str, depth: usize, errors: &mut Vec<ParseError>) -> Template {
    if depth > MAX_DEPTH {
        errors.push(ParseError {
            path: path.to_owned(),
            message: format!("nested deeper than {MAX_DEPTH} levels"),
        });
        return Template::Literal(Value::Null);
    }
    match value {
        Value::String(s) => match parse_string(s) {
            Ok(t) => t,
            Err(message) => {
                errors.push(ParseError {
                    path: path.to_owned(),
                    message,
                });
                Template::Literal(Value::Null)
            }
        },
        Value::Array(items) => {
            let parsed: Vec<Template> = items
                .iter()
                .enumerate()
                .map(|(i, v)| parse_value(v, &format!("{path}/{i}"), depth + 1, errors))
                .collect();
            if parsed.iter().all(|t| matches!(t, Template::Literal(_))) {
                Template::Literal(value.clone())
            } else {
                Template::Array(parsed)
            }
        }
        Value::Object(map) => {
            let parsed: Vec<(String, Template)> = map
                .iter()
                .map(|(k, v)| {
                    let p = format!("{path}/{}", escape_pointer(k));
                    (k.clone(), parse_value(v, &p, depth + 1, errors))
                })
                .collect();
            if parsed.iter().all(|(_, t)| matches!(t, Template::Literal(_))) {
                Template::Literal(value.clone())
            } else {
                Template::Object(parsed)
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Template::Literal(value.clone()),
    }
}

fn parse_string(s: &str) -> Result<Template, String> {
    let mut segments = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            segments.push(Segment::Text(rest[..start].to_owned()));
        }
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("unclosed `{{{{` in {s:?}"))?;
        segments.push(Segment::Reference(parse_reference(after[..end].trim())?));
        rest = &after[end + 2..];
    }
    if rest.contains("}}") {
        return Err(format!("`}}}}` without an opening `{{{{` in {s:?}"));
    }
    if !rest.is_empty() {
        segments.push(Segment::Text(rest.to_owned()));
    }
    Ok(match segments.as_slice() {
        [] => Template::Literal(Value::String(String::new())),
        [Segment::Text(_)] => Template::Literal(Value::String(s.to_owned())),
        [Segment::Reference(r)] => Template::Value(r.clone()),
        _ => Template::Text(segments),
    })
}

fn parse_reference(text: &str) -> Result<Reference, String> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("`{{{{{text}}}}}` is not a valid reference"));
    }
    let owned = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    match parts.as_slice() {
        ["input", path @ ..] => Ok(Reference::Input(owned(path))),
        ["saga", "id"] => Ok(Reference::SagaId),
        ["saga", ..] => Err(format!("`{{{{{text}}}}}`: the only saga field is `saga.id`")),
        // Step names may contain dots: the name runs up to the first `output` after it.
        ["steps", rest @ ..] => match rest.iter().skip(1).position(|p| *p == "output") {
            Some(k) => Ok(Reference::StepOutput {
                step: rest[..=k].join("."),
                path: owned(&rest[k + 2..]),
            }),
            None => Err(format!(
                "`{{{{{text}}}}}`: step references have the form `steps.NAME.output.path`"
            )),
        },
        _ => Err(format!(
            "`{{{{{text}}}}}`: a reference starts with `input`, `saga` or `steps`"
        )),
    }
}

fn resolve<'a>(r: &Reference, cx: &RenderContext<'a>) -> Result<Cow<'a, Value>, RenderError> {
    let fail = |reason: String| RenderError::Unresolved {
        reference: r.to_string(),
        reason,
    };
    let (root, path): (&'a Value, &[String]) = match r {
        Reference::Input(path) => (cx.input, path),
        Reference::SagaId => return Ok(Cow::Owned(Value::String(cx.saga_id.to_owned()))),
        Reference::StepOutput { step, path } => match (cx.output_of)(step) {
            Some(v) => (v, path),
            None => return Err(fail(format!("step `{step}` has no output"))),
        },
    };
    let mut current = root;
    for segment in path {
        current = match current {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => None,
        }
        .ok_or_else(|| fail(format!("no field `{segment}`")))?;
    }
    Ok(Cow::Borrowed(current))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &Value, input: &Value, outputs: &Value) -> Result<Value, RenderError> {
        let outputs = outputs.clone();
        let outputs: &'static Value = Box::leak(Box::new(outputs));
        let input: &'static Value = Box::leak(Box::new(input.clone()));
        let lookup = move |name: &str| outputs.get(name);
        let cx = RenderContext {
            input,
            saga_id: "s-1",
            output_of: &lookup,
            budget: Budget::attempt(),
        };
        Template::parse(t).unwrap().render(&cx)
    }

    #[test]
    fn whole_string_template_keeps_the_json_type() {
        let out = render(
            &json!({"amount": "{{input.amount}}", "who": "{{input.user}}", "all": "{{input}}"}),
            &json!({"amount": 5, "user": {"id": 1}}),
            &json!({}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"amount": 5, "who": {"id": 1}, "all": {"amount": 5, "user": {"id": 1}}})
        );
    }

    #[test]
    fn embedded_templates_render_as_text() {
        let out = render(
            &json!("http://h/cars/{{steps.car.output.id}}?trip={{saga.id}}&n={{input.n}}"),
            &json!({"n": 3}),
            &json!({"car": {"id": "c9"}}),
        )
        .unwrap();
        assert_eq!(out, json!("http://h/cars/c9?trip=s-1&n=3"));
    }

    #[test]
    fn array_indices_resolve() {
        let out = render(&json!("{{input.items.1}}"), &json!({"items": [1, 2]}), &json!({})).unwrap();
        assert_eq!(out, json!(2));
    }

    #[test]
    fn missing_paths_are_render_errors() {
        let err = render(&json!("{{input.nope}}"), &json!({}), &json!({})).unwrap_err();
        assert!(matches!(&err, RenderError::Unresolved { reference, .. } if reference == "input.nope"));
        let err = render(&json!("{{steps.a.output.x}}"), &json!({}), &json!({})).unwrap_err();
        assert!(err.to_string().contains("no output"), "{err}");
    }

    #[test]
    fn parse_errors_carry_their_path() {
        let errs = Template::parse(&json!({"a": ["ok", "{{oops"], "b": "{{saga.name}}"})).unwrap_err();
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/a/1", "/b"]);
    }

    #[test]
    fn references_are_listed_with_paths() {
        let t = Template::parse(&json!({"x": ["{{input.a}}", "n={{steps.s.output.v}}"]})).unwrap();
        let refs: Vec<_> = t.references().into_iter().map(|(p, r)| format!("{p} {r}")).collect();
        assert_eq!(refs, ["/x/0 input.a", "/x/1 steps.s.output.v"]);
    }

    #[test]
    fn a_blow_up_fails_before_it_is_built() {
        let refs: Vec<Value> = (0..5000).map(|_| json!("{{input.blob}}")).collect();
        let texts: Vec<Value> = (0..5000).map(|_| json!("x{{input.blob}}")).collect();
        let input = json!({"blob": "b".repeat(150_000)});
        for template in [Value::Array(refs), Value::Array(texts)] {
            let err = render(&template, &input, &json!({})).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "the step's templates render more than {MAX_RENDERED_BYTES} bytes, the most one request may hold \
                     (the limit was reached at `{{{{input.blob}}}}`)"
                )
            );
        }
    }

    #[test]
    fn the_budget_is_shared_and_exact() {
        let input = json!({"s": "abcd"});
        let template = Template::parse(&json!({"k": ["{{input.s}}", "<{{input.s}}>"]})).unwrap();
        // `k` (1) + `"abcd"` (6) + `<` `abcd` `>` (6): 13 bytes.
        for (limit, fits) in [(13, true), (12, false)] {
            let lookup = |_: &str| None;
            let cx = RenderContext {
                input: &input,
                saga_id: "s-1",
                output_of: &lookup,
                budget: Budget::new(limit),
            };
            assert_eq!(template.render(&cx).is_ok(), fits, "limit {limit}");
        }
    }
}
