//! Extractors that turn every rejection into an [`ApiError`]: JSON bodies ([`ApiJson`],
//! [`MaybeJson`]), saga ids in the path ([`SagaId`]) and query strings ([`ApiQuery`]).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::ApiState;
use super::error::{ApiError, ProblemError, ProblemType};

/// A JSON request body of type `T`.
///
/// Rejections: 415 when the body is not declared as JSON, 413 beyond the body limit, 400
/// when it is not JSON (with serde's message), 422 when it is JSON of the wrong shape (with
/// the JSON Pointer of the value at fault).
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// An optional JSON request body: `None` when the body is empty, else as [`ApiJson`].
#[derive(Debug, Clone)]
pub struct MaybeJson<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<ApiState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        check_content_type(req.headers())?;
        let bytes = read_body(req, state).await?;
        parse(&bytes).map(ApiJson)
    }
}

impl<T: DeserializeOwned> FromRequest<ApiState> for MaybeJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        let headers = req.headers().clone();
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(MaybeJson(None));
        }
        check_content_type(&headers)?;
        parse(&bytes).map(|v| MaybeJson(Some(v)))
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::new(
            ProblemType::UnsupportedMediaType,
            "the request has a body but no `Content-Type`; send `Content-Type: application/json`",
        ));
    };
    let essence = problem::body::media_type(value);
    let json = problem::body::is_json(&essence);
    if json {
        Ok(())
    } else {
        Err(ApiError::new(
            ProblemType::UnsupportedMediaType,
            format!("`Content-Type: {essence}` is not supported; send `application/json`"),
        ))
    }
}

async fn read_body(req: Request, state: &ApiState) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ProblemType::PayloadTooLarge,
                format!(
                    "the request body is larger than the limit of {} bytes",
                    state.body_limit
                ),
            )
        } else {
            ApiError::new(
                ProblemType::MalformedJson,
                format!("the request body could not be read: {}", rejection.body_text()),
            )
        }
    })
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ProblemType::MalformedJson,
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    // serde's structs also take an array of their fields in order, which no client means.
    if !(value.is_object() || value.is_null()) {
        let message = "expected a JSON object".to_owned();
        return Err(
            ApiError::new(ProblemType::InvalidBody, format!("(body): {message}")).with_errors(vec![ProblemError {
                path: String::new(),
                message,
            }]),
        );
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = problem::body::pointer(e.path());
        let message = e.inner().to_string();
        ApiError::new(
            ProblemType::InvalidBody,
            format!("{}: {message}", if path.is_empty() { "(body)" } else { &path }),
        )
        .with_errors(vec![ProblemError { path, message }])
    })
}

/// A saga id from the `{id}` path segment; a malformed one is a 400 at `/path/id`.
#[derive(Debug, Clone, Copy)]
pub struct SagaId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for SagaId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::parameter("/path/id", e.body_text()))?;
        Uuid::parse_str(&raw)
            .map(SagaId)
            .map_err(|_| ApiError::parameter("/path/id", format!("`{raw}` is not a saga id (a UUID)")))
    }
}

/// A query string of type `T` (fields are best `Option<String>`, checked one by one with
/// [`param`] so that each fault names its parameter).
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::parameter("/query", e.body_text()))
    }
}

/// Parses the query parameter `name`, if given; a fault is a 400 at `/query/NAME`.
pub fn param<T: std::str::FromStr>(name: &str, raw: Option<&str>, expected: &str) -> Result<Option<T>, ApiError> {
    match raw {
        None => Ok(None),
        Some(raw) => raw
            .parse()
            .map(Some)
            .map_err(|_| ApiError::parameter(&format!("/query/{name}"), format!("`{raw}` is not {expected}"))),
    }
}
