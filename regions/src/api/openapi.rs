//! The region API's OpenAPI document, served at `/openapi.json`: generated from the
//! handlers' `#[utoipa::path]` annotations and the bodies' `ToSchema` derives (in the core's
//! `protocol`), so it cannot drift from the code.
//!
//! What every route gets by construction, in one place (`Guarded`): the security
//! requirement and the refusals of [`super::auth`], decided by the same [`auth::needs`] the
//! middleware asks (401 on every route behind a token, 403 on those needing more than
//! `read`). A few bounds JSON Schema states better than the derive can are set afterwards
//! (`exact_bounds`). `tests/openapi.rs` runs schemathesis against a real region
//! with every check.

use axum::http::Method;
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::auth::{self, Needs, Role};
use super::{cluster, counters, kv, meta, txns};
use problem::Problem;

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "geosaga region",
        description = "The API every geosaga region serves: keys (strong or bounded-staleness reads, \
            strong or async writes, additions and undos), multi-key transactions and snapshots, counters, where keys live, the cluster's view, \
            and re-homing. Errors are RFC 9457 problem details (`application/problem+json`) with a stable \
            `type` URI under https://geosaga.dev/problems/. The routes under `/internal/` are for member \
            regions (mutual TLS) and are not part of this document."
    ),
    paths(
        kv::read,
        kv::put,
        kv::patch,
        kv::delete,
        counters::counter,
        counters::increment,
        cluster::placement,
        cluster::regions,
        cluster::conflicts,
        cluster::rehome,
        cluster::ready,
        meta::healthz,
        meta::openapi_json,
        txns::begin,
        txns::read,
        txns::put,
        txns::delete,
        txns::commit,
        txns::abort,
        txns::one_shot,
        txns::snapshot,
    ),
    components(schemas(Problem)),
    modifiers(&Guarded),
    tags(
        (name = "kv", description = "Keys and their versions"),
        (name = "counters", description = "PN-counters every region may change"),
        (name = "txns", description = "Multi-key transactions and snapshots across the homes"),
        (name = "cluster", description = "Placement, the regions' status, conflict counts"),
        (name = "admin", description = "Changes to the cluster (the admin role)"),
        (name = "meta", description = "Probes and this document"),
    )
)]
struct ApiDoc;

/// Adds the bearer scheme, and to each operation the requirement and refusals its route
/// has in [`auth::needs`].
struct Guarded;

fn problem_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(Ref::from_schema_name("Problem"))))
                    .build(),
            )
            .build(),
    )
}

impl Modify for Guarded {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                (Method::GET, &mut item.get),
                (Method::PUT, &mut item.put),
                (Method::POST, &mut item.post),
                (Method::DELETE, &mut item.delete),
                (Method::PATCH, &mut item.patch),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                let Needs::Token(role) = auth::needs(&method, path) else {
                    continue;
                };
                operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
                let responses = &mut operation.responses.responses;
                responses.insert(
                    "401".into(),
                    problem_response("No token, or one this region does not know (only when it has tokens)"),
                );
                if role > Role::Read {
                    // A route that refuses more than a low role says so in its own 403.
                    responses
                        .entry("403".into())
                        .or_insert_with(|| problem_response("The token's role is below the one this route needs"));
                }
            }
        }
    }
}

/// The region API's OpenAPI 3.1 document, as served at `/openapi.json`.
pub fn openapi() -> Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).expect("an OpenAPI document is JSON");
    exact_bounds(&mut document);
    transaction_links(&mut document);
    document
}

/// Links from a begun transaction to its routes (OpenAPI's Link objects, written here in
/// their camel case), so that a client, or schemathesis's stateful phase, follows its id.
fn transaction_links(document: &mut Value) {
    let Some(begun) = document.pointer_mut("/paths/~1v1~1txns/post/responses/201") else {
        return;
    };
    let id = json!({"id": "$response.body#/id"});
    let links: serde_json::Map<String, Value> = ["putTxnKey", "readTxnKey", "deleteTxnKey", "commitTxn", "abortTxn"]
        .into_iter()
        .map(|operation| {
            (
                operation.to_owned(),
                json!({"operationId": operation, "parameters": id}),
            )
        })
        .collect();
    begun["links"] = Value::Object(links);
}

/// Bounds the derive cannot write exactly: an `add`'s path is `""` or a JSON Pointer
/// (a pattern alone would let a trailing newline through some regex engines), an
/// increment is a 64-bit integer (a float bound rounds past `i64::MAX`), and the keys in
/// a transaction's or a snapshot's lists have a key's lengths (as `{key}` in a path), and a
/// snapshot's `max_staleness_ms` is an integer up to a year (the derive writes a float bound).
fn exact_bounds(document: &mut Value) {
    if let Some(bound) = document.pointer_mut("/components/schemas/SnapshotRequest/properties/max_staleness_ms") {
        bound["minimum"] = json!(0);
        bound["maximum"] = json!(super::MAX_STALENESS_MS);
    }
    for keys in [
        "/components/schemas/OneShotRequest/properties/reads/items",
        "/components/schemas/SnapshotRequest/properties/keys/items",
    ] {
        if let Some(items) = document.pointer_mut(keys) {
            items["minLength"] = json!(1);
            items["maxLength"] = json!(super::MAX_KEY_CHARS);
        }
    }
    if let Some(path) = document.pointer_mut("/components/schemas/Add/properties/path") {
        let description = path.get("description").cloned().unwrap_or(Value::Null);
        *path = json!({
            "type": "string",
            "description": description,
            "anyOf": [{"const": ""}, {"pattern": "^/"}],
        });
    }
    if let Some(increment) = document.pointer_mut("/components/schemas/IncrementRequest/properties/increment") {
        increment["minimum"] = json!(i64::MIN);
        increment["maximum"] = json!(i64::MAX);
    }
}
