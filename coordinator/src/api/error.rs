//! The API's one error type, [`ApiError`], rendered as the workspace's RFC 9457 problem
//! details document ([`Problem`], from the `problem` crate, which a region's API answers
//! with too).
//!
//! Every problem has a stable `type` URI under [`PROBLEM_BASE`] (see [`ProblemType`]), so
//! that clients branch on it rather than on the wording of `detail`. Faults with a location
//! (a definition's field, a query parameter) are listed in `errors`, each with a JSON
//! Pointer: into the request body (`/steps/0/name`, `/input/amount`), or into the request's
//! other parts (`/query/limit`, `/path/id`, `/header/idempotency-key`).
//!
//! Only server-side failures (5xx) are logged; client errors are the client's business.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
pub use problem::{Kind, PROBLEM_BASE, PROBLEM_JSON, Problem, ProblemError};

use crate::Error;

/// Every kind of problem the API reports; each has one status and one `type` URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// 400: the body is not JSON.
    MalformedJson,
    /// 400: a query, path or header parameter is wrong.
    InvalidParameter,
    /// 401: the bearer token is missing or wrong.
    Unauthorized,
    /// 404: no route has this path.
    NotFound,
    /// 404: no saga has this id.
    SagaNotFound,
    /// 404: no definition has this name (and version).
    DefinitionNotFound,
    /// 405: the route does not take this method.
    MethodNotAllowed,
    /// 409: the idempotency key started another saga.
    IdempotencyConflict,
    /// 409: the saga's status does not allow the request.
    IllegalTransition,
    /// 409: another coordinator took the saga over meanwhile; try again.
    ConcurrentModification,
    /// 413: the body is larger than the limit.
    PayloadTooLarge,
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType,
    /// 422: the body is JSON of the wrong shape.
    InvalidBody,
    /// 422: the definition document does not validate.
    InvalidDefinition,
    /// 422: the saga input does not match the definition's input schema.
    InvalidInput,
    /// 500: the server failed (database, corrupted log).
    Internal,
    /// 503: the coordinator runs as many sagas as it may.
    Overloaded,
    /// 503: the coordinator cannot serve (its database does not answer).
    NotReady,
}

impl Kind for ProblemType {
    fn slug(self) -> &'static str {
        match self {
            ProblemType::MalformedJson => "malformed-json",
            ProblemType::InvalidParameter => "invalid-parameter",
            ProblemType::Unauthorized => "unauthorized",
            ProblemType::NotFound => "not-found",
            ProblemType::SagaNotFound => "saga-not-found",
            ProblemType::DefinitionNotFound => "definition-not-found",
            ProblemType::MethodNotAllowed => "method-not-allowed",
            ProblemType::IdempotencyConflict => "idempotency-conflict",
            ProblemType::IllegalTransition => "illegal-transition",
            ProblemType::ConcurrentModification => "concurrent-modification",
            ProblemType::PayloadTooLarge => "payload-too-large",
            ProblemType::UnsupportedMediaType => "unsupported-media-type",
            ProblemType::InvalidBody => "invalid-body",
            ProblemType::InvalidDefinition => "invalid-definition",
            ProblemType::InvalidInput => "invalid-input",
            ProblemType::Internal => "internal",
            ProblemType::Overloaded => "overloaded",
            ProblemType::NotReady => "not-ready",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            ProblemType::MalformedJson | ProblemType::InvalidParameter => StatusCode::BAD_REQUEST,
            ProblemType::Unauthorized => StatusCode::UNAUTHORIZED,
            ProblemType::NotFound | ProblemType::SagaNotFound | ProblemType::DefinitionNotFound => {
                StatusCode::NOT_FOUND
            }
            ProblemType::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemType::IdempotencyConflict | ProblemType::IllegalTransition | ProblemType::ConcurrentModification => {
                StatusCode::CONFLICT
            }
            ProblemType::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemType::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemType::InvalidBody | ProblemType::InvalidDefinition | ProblemType::InvalidInput => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ProblemType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ProblemType::Overloaded | ProblemType::NotReady => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn title(self) -> &'static str {
        match self {
            ProblemType::MalformedJson => "The request body is not valid JSON",
            ProblemType::InvalidParameter => "A request parameter is invalid",
            ProblemType::Unauthorized => "Authentication required",
            ProblemType::NotFound => "Not found",
            ProblemType::SagaNotFound => "Saga not found",
            ProblemType::DefinitionNotFound => "Definition not found",
            ProblemType::MethodNotAllowed => "Method not allowed",
            ProblemType::IdempotencyConflict => "Idempotency key already used",
            ProblemType::IllegalTransition => "Not allowed in the saga's current status",
            ProblemType::ConcurrentModification => "The saga changed owner meanwhile",
            ProblemType::PayloadTooLarge => "Request body too large",
            ProblemType::UnsupportedMediaType => "Unsupported media type",
            ProblemType::InvalidBody => "The request body has the wrong shape",
            ProblemType::InvalidDefinition => "Invalid saga definition",
            ProblemType::InvalidInput => "Invalid saga input",
            ProblemType::Internal => "Internal server error",
            ProblemType::Overloaded => "Coordinator overloaded",
            ProblemType::NotReady => "Coordinator not ready",
        }
    }
}

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The kind of problem.
    pub kind: ProblemType,
    /// What happened this time.
    pub detail: String,
    /// Located faults.
    pub errors: Vec<ProblemError>,
    /// Extra response headers (`Retry-After`, `WWW-Authenticate`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The underlying cause of a server failure: logged, never sent.
    pub cause: Option<String>,
}

impl ApiError {
    /// A problem of `kind` with `detail`.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            headers: Vec::new(),
            cause: None,
        }
    }

    /// A bad parameter at `path` (`/query/limit`, `/path/id`, ...).
    pub fn parameter(path: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::new(ProblemType::InvalidParameter, format!("{path}: {message}")).with_errors(vec![ProblemError {
            path: path.to_owned(),
            message,
        }])
    }

    /// Validation faults as a problem of `kind`.
    pub fn validation(kind: ProblemType, errors: sagas::ValidationErrors) -> ApiError {
        let count = errors.0.len();
        let what = if count == 1 { "fault" } else { "faults" };
        let errors = errors
            .0
            .into_iter()
            .map(|e| ProblemError {
                path: e.path,
                message: e.message,
            })
            .collect();
        ApiError::new(kind, format!("{count} {what} found; see `errors`")).with_errors(errors)
    }

    /// Sets the located faults.
    pub fn with_errors(mut self, errors: Vec<ProblemError>) -> ApiError {
        self.errors = errors;
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: &str) -> ApiError {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((name, value));
        }
        self
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        Problem {
            errors: self.errors.clone(),
            ..Problem::new(self.kind, self.detail.clone())
        }
    }
}

impl From<Error> for ApiError {
    /// Maps a coordinator error; validation faults count as an invalid definition (the
    /// saga routes map input faults to [`ProblemType::InvalidInput`] themselves).
    fn from(error: Error) -> ApiError {
        let detail = error.to_string();
        match error {
            Error::Invalid(errors) => ApiError::validation(ProblemType::InvalidDefinition, errors),
            Error::DefinitionNotFound { .. } => ApiError::new(ProblemType::DefinitionNotFound, detail),
            Error::SagaNotFound(_) => ApiError::new(ProblemType::SagaNotFound, detail),
            Error::IdempotencyConflict { .. } => ApiError::new(ProblemType::IdempotencyConflict, detail),
            Error::IllegalTransition { .. } => ApiError::new(ProblemType::IllegalTransition, detail),
            Error::Fenced(_) => ApiError::new(ProblemType::ConcurrentModification, detail),
            Error::Overloaded(_) => {
                ApiError::new(ProblemType::Overloaded, detail).with_header(header::RETRY_AFTER, "1")
            }
            Error::CorruptLog { .. } | Error::Store(_) => {
                // The full error goes to the log only: it may name database internals.
                let mut e = ApiError::new(
                    ProblemType::Internal,
                    "the coordinator failed to serve the request; see its log",
                );
                e.cause = Some(error_chain(&error));
                e
            }
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem::respond(self.kind, &self.problem(), self.cause.as_deref(), self.headers)
    }
}
