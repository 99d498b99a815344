//! A step's kind (`http`, `rust`, `region`, `txn`) and its templates: the URL, headers and
//! body of HTTP requests, with every reference to a step's output checked against the
//! dependency graph ([`RefCheck`]).

use std::collections::HashMap;

use serde_json::Value;

use super::{Collector, OWN_OUTPUT_WARNING};
use crate::definition::{HttpTemplate, RustCall, StepAction};
use crate::document::{ActionDoc, HttpDoc};
use crate::template::{Reference, Template, escape_pointer};

/// Checks the references of one step's templates to the outputs of other steps.
pub(super) struct RefCheck<'a> {
    /// Whether each step is upstream of this one; `None` when the graph has a cycle.
    pub(super) upstream: Option<&'a [bool]>,
    /// The index of each step by name.
    pub(super) by_name: &'a HashMap<&'a str, usize>,
    /// The step whose templates are checked.
    pub(super) step: usize,
}

impl RefCheck<'_> {
    fn check(&self, template: &Template, base: &str, own_output_allowed: bool, errors: &mut Collector) {
        for (path, reference) in template.references() {
            let Reference::StepOutput { step: name, .. } = reference else {
                continue;
            };
            let at = format!("{base}{path}");
            match self.by_name.get(name.as_str()) {
                None => errors.push(at, format!("`{{{{{reference}}}}}`: no step is named `{name}`")),
                Some(&target) if target == self.step => {
                    if own_output_allowed {
                        errors.warn(at, format!("`{{{{{reference}}}}}`: {OWN_OUTPUT_WARNING}"));
                    } else {
                        errors.push(
                            at,
                            format!("`{{{{{reference}}}}}`: an action cannot use its own output"),
                        );
                    }
                }
                Some(&target) => {
                    if self.upstream.is_some_and(|upstream| !upstream[target]) {
                        errors.push(
                            at,
                            format!("`{{{{{reference}}}}}`: step `{name}` is not upstream of this step (add it to depends_on)"),
                        );
                    }
                }
            }
        }
    }
}

/// The template of `value` at `path`, its references checked; its faults go to `errors`.
fn parse_template(
    value: &Value,
    path: String,
    refs: &RefCheck<'_>,
    is_compensation: bool,
    errors: &mut Collector,
) -> Option<Template> {
    match Template::parse(value) {
        Ok(t) => {
            refs.check(&t, &path, is_compensation, errors);
            Some(t)
        }
        Err(faults) => {
            for f in faults {
                errors.push(format!("{path}{}", f.path), f.message);
            }
            None
        }
    }
}

/// An HTTP request of a step (its action, compensation or `verify`) at `base`.
pub(super) fn http_template(
    http: &HttpDoc,
    base: &str,
    refs: &RefCheck<'_>,
    is_compensation: bool,
    errors: &mut Collector,
) -> Option<HttpTemplate> {
    let parse = |value: &Value, path: String, errors: &mut Collector| {
        parse_template(value, path, refs, is_compensation, errors)
    };
    let url = parse(&Value::String(http.url.clone()), format!("{base}/url"), errors);
    let starts_with_template = http.url.trim_start().starts_with("{{");
    let absolute = http.url.starts_with("http://") || http.url.starts_with("https://");
    if url.is_some() && !starts_with_template && !absolute {
        errors.push(format!("{base}/url"), "the URL must start with http:// or https://");
    }
    let mut headers = Vec::new();
    for (name, value) in &http.headers {
        let path = format!("{base}/headers/{}", escape_pointer(name));
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name {
            errors.push(path.clone(), format!("`{name}` is not a valid header name"));
        }
        if let Some(t) = parse(&Value::String(value.clone()), path, errors) {
            headers.push((name.clone(), t));
        }
    }
    let body = http
        .body
        .as_ref()
        .and_then(|b| parse(b, format!("{base}/body"), errors));
    Some(HttpTemplate {
        method: http.method,
        url: url?,
        headers,
        body,
    })
}

pub(super) fn step_action(
    doc: &ActionDoc,
    base: &str,
    refs: &RefCheck<'_>,
    is_compensation: bool,
    errors: &mut Collector,
) -> Option<StepAction> {
    let parse = |value: &Value, path: String, errors: &mut Collector| {
        parse_template(value, path, refs, is_compensation, errors)
    };
    let kinds = [
        doc.http.is_some(),
        doc.rust.is_some(),
        doc.region.is_some(),
        doc.txn.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        errors.push(base, "give exactly one step kind: `http`, `rust`, `region` or `txn`");
        return None;
    }
    if let Some(txn) = &doc.txn {
        let base = format!("{base}/txn");
        let mut faults = Vec::new();
        let mut parse_at = |value: &Value, at: &str| parse(value, format!("{base}{at}"), errors);
        let call = crate::txn::check(txn, &mut parse_at, &mut faults);
        for (at, message) in faults {
            errors.push(format!("{base}{at}"), message);
        }
        return call.map(StepAction::Txn);
    }
    match (&doc.http, &doc.rust) {
        (Some(http), None) if doc.region.is_none() => {
            http_template(http, &format!("{base}/http"), refs, is_compensation, errors).map(StepAction::Http)
        }
        (None, Some(rust)) if doc.region.is_none() => {
            let base = format!("{base}/rust");
            if rust.handler.trim().is_empty() {
                errors.push(format!("{base}/handler"), "the handler name is empty");
            }
            let params = rust
                .params
                .as_ref()
                .and_then(|p| parse(p, format!("{base}/params"), errors));
            Some(StepAction::Rust(RustCall {
                handler: rust.handler.clone(),
                params,
            }))
        }
        (None, None) if doc.region.is_some() => {
            let region = doc.region.as_ref().expect("just checked");
            let base = format!("{base}/region");
            let mut faults = Vec::new();
            let mut parse_at = |value: &Value, at: &str| parse(value, format!("{base}{at}"), errors);
            let call = crate::region::check(region, is_compensation, &mut parse_at, &mut faults);
            for (at, message) in faults {
                errors.push(format!("{base}{at}"), message);
            }
            call.map(StepAction::Region)
        }
        _ => {
            errors.push(base, "give exactly one step kind: `http`, `rust`, `region` or `txn`");
            None
        }
    }
}
