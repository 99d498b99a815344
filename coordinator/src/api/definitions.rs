//! `/v1/definitions`: register, list and read saga definitions.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::ApiState;
use super::error::{ApiError, Problem};
use super::extract::{ApiJson, ApiQuery, param};
use super::views::{DefinitionCreated, DefinitionList, DefinitionListItem, DefinitionResponse, Warning};

/// The routes of this resource.
pub(crate) fn router() -> Router<ApiState> {
    Router::new()
        .route("/v1/definitions", post(register).get(list))
        .route("/v1/definitions/{name}", get(get_definition))
}

/// Registers a definition: a new version when its content changed (201), else the existing
/// version (200).
#[utoipa::path(
    post,
    path = "/v1/definitions",
    operation_id = "registerDefinition",
    tag = "definitions",
    request_body(
        content = ref("#/components/schemas/Definition"),
        description = "A definition document (its JSON Schema is also served at `/v1/schema/definition`). \
            A document the schema accepts may still be refused with a 422: validation also checks what a schema \
            cannot say (dependencies that exist and form no cycle, templates that resolve)."
    ),
    responses(
        (status = 201, description = "A new version was stored", body = DefinitionCreated, links(
            ("getDefinition" = (operation_id = "getDefinition", parameters(("name" = "$response.body#/name"), ("version" = "$response.body#/version")))),
            ("startSaga" = (operation_id = "startSaga", request_body = json!({"definition": "$response.body#/name", "version": "$response.body#/version"}))),
        )),
        (status = 200, description = "The same content was already stored", body = DefinitionCreated, links(
            ("getDefinition" = (operation_id = "getDefinition", parameters(("name" = "$response.body#/name")))),
        )),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid definition; `errors` lists every fault", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn register(
    State(state): State<ApiState>,
    ApiJson(document): ApiJson<Value>,
) -> Result<impl IntoResponse, ApiError> {
    let definition = sagas::validate::validate_value(&document).map_err(crate::Error::from)?;
    let put = state.coordinator.register(&definition).await?;
    let status = if put.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/definitions/{}?version={}", put.record.name, put.record.version);
    let body = DefinitionCreated {
        name: put.record.name,
        version: put.record.version,
        content_hash: put.record.content_hash,
        created: put.created,
        warnings: definition.warnings.iter().map(Warning::from).collect(),
    };
    Ok((status, [(header::LOCATION, location)], Json(body)))
}

/// Lists every definition with its latest version.
#[utoipa::path(
    get,
    path = "/v1/definitions",
    operation_id = "listDefinitions",
    tag = "definitions",
    responses((status = 200, description = "Every definition", body = DefinitionList)),
    security(("bearer" = []))
)]
pub(crate) async fn list(State(state): State<ApiState>) -> Result<Json<DefinitionList>, ApiError> {
    let definitions = state.coordinator.store().list_definitions().await?;
    Ok(Json(DefinitionList {
        definitions: definitions.iter().map(DefinitionListItem::from).collect(),
    }))
}

/// The query of `GET /v1/definitions/{name}`.
#[derive(Debug, Deserialize)]
pub(crate) struct VersionQuery {
    version: Option<String>,
}

/// A definition's latest version, or the version asked for.
#[utoipa::path(
    get,
    path = "/v1/definitions/{name}",
    operation_id = "getDefinition",
    tag = "definitions",
    params(
        ("name" = String, Path, description = "The definition's name"),
        ("version" = Option<i64>, Query, minimum = 1, description = "A version (default: the latest)"),
    ),
    responses(
        (status = 200, description = "The definition", body = DefinitionResponse),
        (status = 400, description = "Bad `version`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such definition or version", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_definition(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<VersionQuery>,
) -> Result<Json<DefinitionResponse>, ApiError> {
    let version = param::<i64>("version", query.version.as_deref(), "a version number (1 or more)")?;
    if let Some(v) = version
        && v < 1
    {
        return Err(ApiError::parameter(
            "/query/version",
            format!("`{v}` is not a version number (1 or more)"),
        ));
    }
    let (record, _) = state.coordinator.definition(&name, version).await?;
    Ok(Json(DefinitionResponse::from(&record)))
}
