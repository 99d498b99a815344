//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and
//! the bodies' `ToSchema` derives, so it cannot drift from the code.
//!
//! Two things are added to what the annotations say, each in one place so that a new
//! route gets them by construction: every operation that names the `bearer` security
//! scheme answers 401 ([`Guarded`]), and the definition body is the definition's own JSON
//! Schema (`schemas/definition.schema.json`), whose `$defs` become components
//! ([`with_definition_schema`]). `scripts/schemathesis` checks the document against the
//! server with every check schemathesis has.

use serde_json::{Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error::{PROBLEM_JSON, Problem, ProblemError};
use super::{definitions, meta, sagas};

/// The component name of the definition document's schema.
pub const DEFINITION_SCHEMA: &str = "Definition";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "geosaga",
        description = "The geosaga coordinator's REST API. Errors are RFC 9457 problem details \
            (`application/problem+json`) with a stable `type` URI under https://geosaga.dev/problems/."
    ),
    paths(
        definitions::register,
        definitions::list,
        definitions::get_definition,
        sagas::start,
        sagas::list,
        sagas::show,
        sagas::events,
        sagas::cancel,
        sagas::retry,
        meta::healthz,
        meta::readyz,
        meta::metrics,
        meta::openapi_json,
        meta::definition_schema,
    ),
    components(schemas(Problem, ProblemError)),
    modifiers(&BearerAuth, &Guarded),
    tags(
        (name = "definitions", description = "Saga definitions, versioned by content"),
        (name = "sagas", description = "Saga instances"),
        (name = "meta", description = "Probes and schemas"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Documents the 401 of every operation behind the tokens: those whose `security` names a
/// scheme. The API's `authenticate` middleware answers it before any handler runs.
pub(crate) struct Guarded;

impl Modify for Guarded {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let unauthorized = ResponseBuilder::new()
            .description("The bearer token is missing or not valid (only when the server has tokens)")
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(Ref::from_schema_name("Problem"))))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                let guarded = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                if guarded {
                    operation
                        .responses
                        .responses
                        .insert("401".into(), RefOr::T(unauthorized.clone()));
                }
            }
        }
    }
}

/// The API's OpenAPI 3.1 document, as served at `/openapi.json`.
pub fn openapi() -> Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).expect("an OpenAPI document is JSON");
    camel_case_links(&mut document);
    with_definition_schema(document, ::sagas::document::definition_schema())
}

/// utoipa 5.5 writes a Link object's fields in snake case (`operation_id`); OpenAPI spells
/// them `operationId`, `operationRef` and `requestBody`.
pub fn camel_case_links(document: &mut Value) {
    let links = document
        .get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses").and_then(Value::as_object_mut))
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links").and_then(Value::as_object_mut))
        .flat_map(|links| links.values_mut())
        .filter_map(Value::as_object_mut);
    for link in links {
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(snake) {
                link.insert(camel.to_owned(), value);
            }
        }
    }
}

/// Adds the definition document's JSON Schema as the component [`DEFINITION_SCHEMA`], its
/// `$defs` as components beside it (their `$ref`s rewritten to point there). OpenAPI 3.1's
/// schemas are JSON Schema 2020-12, the dialect the definition schema is written in, so
/// nothing is lost on the way.
pub fn with_definition_schema(mut document: Value, mut schema: Value) -> Value {
    let defs = schema
        .as_object_mut()
        .and_then(|s| {
            s.remove("$schema");
            s.remove("$defs")
        })
        .unwrap_or_default();
    let schemas = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .expect("the document has component schemas");
    let mut add = |name: &str, mut value: Value| {
        rewrite_refs(&mut value);
        assert!(
            schemas.insert(name.to_owned(), value).is_none(),
            "the definition schema's `{name}` shadows a component of the API"
        );
    };
    add(DEFINITION_SCHEMA, schema);
    for (name, value) in defs.as_object().cloned().unwrap_or_else(Map::new) {
        add(&name, value);
    }
    // A body given as `ref(...)` is optional to utoipa; a definition body never is.
    let reference = format!("#/components/schemas/{DEFINITION_SCHEMA}");
    for body in request_bodies(&mut document) {
        if body.pointer("/content/application~1json/schema/$ref") == Some(&Value::String(reference.clone())) {
            body["required"] = Value::Bool(true);
        }
    }
    document
}

fn request_bodies(document: &mut Value) -> impl Iterator<Item = &mut Value> {
    document
        .get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("requestBody"))
}

fn rewrite_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref")
                && let Some(name) = target.strip_prefix("#/$defs/")
            {
                *target = format!("#/components/schemas/{name}");
            }
            map.values_mut().for_each(rewrite_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}
