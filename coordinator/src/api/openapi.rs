//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and
//! the bodies' `ToSchema` derives, so it cannot drift from the code.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{Problem, ProblemError};
use super::{definitions, meta, sagas};

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
    modifiers(&BearerAuth),
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

/// The API's OpenAPI 3.1 document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
