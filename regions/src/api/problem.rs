//! The region API's errors, rendered as the workspace's RFC 9457 problem details document
//! ([`Problem`], from the `problem` crate, which the saga API answers with too): a stable
//! `type` URI per kind, one status per kind, and only 5xx cases logged.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
pub use problem::{Kind, PROBLEM_BASE, Problem, ProblemError};

use crate::Error;

/// Every kind of problem the region API reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// 400: the body is not JSON.
    MalformedJson,
    /// 400: a query or path parameter is wrong.
    InvalidParameter,
    /// 400: a peer sent a message this region refuses.
    PeerRefused,
    /// 400: a peer's timestamp is further ahead of this region's clock than
    /// `max_clock_offset_ms`.
    ClockSkew,
    /// 401: an internal route was called without a client certificate from the cluster CA.
    PeerUnauthenticated,
    /// 403: an internal route was called with a certificate naming no member region.
    PeerForbidden,
    /// 401: a public route was called without a token, or with one this region does not know.
    Unauthenticated,
    /// 403: the token's role does not allow the route, or a member's certificate was used
    /// to speak for another region.
    Forbidden,
    /// 404: the key has no live value.
    KeyNotFound,
    /// 404: no route takes this path.
    NoRoute,
    /// 409: a conditional write found another version.
    VersionMismatch,
    /// 409: an `add` would take the number outside its bounds; nothing was written.
    OutOfBounds,
    /// 409: the write's op id was cancelled by its compensation; nothing was written.
    OpCancelled,
    /// 410: the versions asked for were garbage-collected.
    BeyondRetention,
    /// 409: a transaction lost a conflict; nothing of it was applied.
    TxnConflict,
    /// 404: no transaction with this id at this region.
    TxnNotFound,
    /// 410: the transaction expired, or already committed or aborted.
    TxnGone,
    /// 413: a value (or a request, or a peer's message) past the region's limit.
    TooLarge,
    /// 422: the body is JSON of the wrong shape.
    InvalidBody,
    /// 500: the region failed.
    Internal,
    /// 503: a strong write did not reach its quorum in time and was not applied.
    QuorumNotReached,
    /// 503: the key's home region cannot be reached (a forwarded write's outcome is unknown).
    HomeUnreachable,
    /// 503: the local replica is too stale and the home cannot be reached.
    TooStale,
    /// 503: the region's own store (its SQLite file or PostgreSQL database) does not answer.
    StoreUnavailable,
}

impl Kind for ProblemType {
    fn slug(self) -> &'static str {
        match self {
            ProblemType::MalformedJson => "malformed-json",
            ProblemType::InvalidParameter => "invalid-parameter",
            ProblemType::PeerRefused => "peer-refused",
            ProblemType::ClockSkew => regions_core::protocol::problem::CLOCK_SKEW,
            ProblemType::PeerUnauthenticated => "peer-unauthenticated",
            ProblemType::PeerForbidden => "peer-forbidden",
            ProblemType::Unauthenticated => "unauthenticated",
            ProblemType::Forbidden => "forbidden",
            ProblemType::KeyNotFound => "key-not-found",
            ProblemType::NoRoute => "not-found",
            ProblemType::VersionMismatch => "version-mismatch",
            ProblemType::OutOfBounds => "out-of-bounds",
            ProblemType::OpCancelled => "op-cancelled",
            ProblemType::BeyondRetention => "beyond-retention",
            ProblemType::TxnConflict => "txn-conflict",
            ProblemType::TxnNotFound => "txn-not-found",
            ProblemType::TxnGone => "txn-gone",
            ProblemType::TooLarge => "too-large",
            ProblemType::InvalidBody => "invalid-body",
            ProblemType::Internal => "internal",
            ProblemType::QuorumNotReached => "quorum-not-reached",
            ProblemType::HomeUnreachable => "home-unreachable",
            ProblemType::TooStale => "too-stale",
            ProblemType::StoreUnavailable => "store-unavailable",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            ProblemType::MalformedJson
            | ProblemType::InvalidParameter
            | ProblemType::PeerRefused
            | ProblemType::ClockSkew => StatusCode::BAD_REQUEST,
            ProblemType::PeerUnauthenticated | ProblemType::Unauthenticated => StatusCode::UNAUTHORIZED,
            ProblemType::PeerForbidden | ProblemType::Forbidden => StatusCode::FORBIDDEN,
            ProblemType::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemType::KeyNotFound | ProblemType::TxnNotFound | ProblemType::NoRoute => StatusCode::NOT_FOUND,
            ProblemType::VersionMismatch
            | ProblemType::OutOfBounds
            | ProblemType::OpCancelled
            | ProblemType::TxnConflict => StatusCode::CONFLICT,
            ProblemType::BeyondRetention | ProblemType::TxnGone => StatusCode::GONE,
            ProblemType::InvalidBody => StatusCode::UNPROCESSABLE_ENTITY,
            ProblemType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ProblemType::QuorumNotReached
            | ProblemType::HomeUnreachable
            | ProblemType::TooStale
            | ProblemType::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn title(self) -> &'static str {
        match self {
            ProblemType::MalformedJson => "The request body is not valid JSON",
            ProblemType::InvalidParameter => "A request parameter is invalid",
            ProblemType::PeerRefused => "Peer message refused",
            ProblemType::ClockSkew => "Peer's clock too far ahead; message refused",
            ProblemType::PeerUnauthenticated => "Client certificate required",
            ProblemType::PeerForbidden => "Client certificate names no member region",
            ProblemType::Unauthenticated => "A token is required",
            ProblemType::Forbidden => "Not allowed to this caller",
            ProblemType::TooLarge => "Past the region's size limit",
            ProblemType::KeyNotFound => "Key not found",
            ProblemType::NoRoute => "No such route",
            ProblemType::VersionMismatch => "The key is at another version",
            ProblemType::OutOfBounds => "The addition would leave its bounds; not applied",
            ProblemType::OpCancelled => "The write was cancelled by its compensation; not applied",
            ProblemType::BeyondRetention => "Version garbage-collected",
            ProblemType::TxnConflict => "The transaction lost a conflict; nothing of it was applied",
            ProblemType::TxnNotFound => "No such transaction at this region",
            ProblemType::TxnGone => "The transaction expired or ended",
            ProblemType::InvalidBody => "The request body has the wrong shape",
            ProblemType::Internal => "Internal server error",
            ProblemType::QuorumNotReached => "Write not replicated to its quorum in time; not applied",
            ProblemType::HomeUnreachable => "Home region unreachable",
            ProblemType::TooStale => "Local replica too stale and home region unreachable",
            ProblemType::StoreUnavailable => "The region's store does not answer",
        }
    }
}

/// An error answer of the region API.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The kind of problem.
    pub kind: ProblemType,
    /// What happened this time.
    pub detail: String,
    /// The region that answered.
    pub region: Option<String>,
    /// For `key-not-found`: the staleness bound of the answering copy.
    pub staleness_bound_ms: Option<u64>,
    /// For `txn-conflict`: the key, and the transaction it lost to when known.
    /// (Boxed, like `fault`, to keep the error small.)
    pub conflict: Option<Box<(String, Option<String>)>>,
    /// For `invalid-body`: the value at fault, by its JSON Pointer (boxed: an error is
    /// returned by value on every route, and most have none).
    pub fault: Option<Box<ProblemError>>,
}

impl ApiError {
    /// A problem of `kind` with `detail`.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            detail: detail.into(),
            region: None,
            staleness_bound_ms: None,
            conflict: None,
            fault: None,
        }
    }

    /// Names the answering region.
    pub fn at(mut self, region: &str) -> ApiError {
        self.region = Some(region.to_owned());
        self
    }
}

impl ApiError {
    /// An `invalid-body` (422) at the value `path` points to (`""`: the body itself).
    pub fn invalid_body(path: &str, message: impl Into<String>) -> ApiError {
        ApiError::from(problem::body::Fault::Shape {
            path: path.to_owned(),
            message: message.into(),
        })
    }
}

impl From<problem::body::Fault> for ApiError {
    /// A body that is not JSON (`malformed-json`, 400), or of the wrong shape
    /// (`invalid-body`, 422, the value at fault located in `errors`).
    fn from(fault: problem::body::Fault) -> ApiError {
        let detail = fault.detail();
        match fault {
            problem::body::Fault::NotJson(_) => ApiError::new(ProblemType::MalformedJson, detail),
            problem::body::Fault::Shape { path, message } => ApiError {
                fault: Some(Box::new(ProblemError { path, message })),
                ..ApiError::new(ProblemType::InvalidBody, detail)
            },
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        let detail = error.to_string();
        let kind = match error {
            Error::BadRequest(_) => ProblemType::InvalidParameter,
            Error::NotFound { staleness_bound_ms, .. } => {
                return ApiError {
                    staleness_bound_ms: Some(staleness_bound_ms),
                    ..ApiError::new(ProblemType::KeyNotFound, detail)
                };
            }
            Error::VersionMismatch { .. } => ProblemType::VersionMismatch,
            Error::OutOfBounds(_) => ProblemType::OutOfBounds,
            Error::OpCancelled { .. } => ProblemType::OpCancelled,
            Error::QuorumNotReached { .. } => ProblemType::QuorumNotReached,
            Error::HomeUnreachable { .. } => ProblemType::HomeUnreachable,
            Error::TooStale { .. } => ProblemType::TooStale,
            Error::BeyondRetention { .. } => ProblemType::BeyondRetention,
            Error::TxnConflict { key, with, .. } => {
                return ApiError {
                    conflict: Some(Box::new((key, with))),
                    ..ApiError::new(ProblemType::TxnConflict, detail)
                };
            }
            Error::TxnNotFound(_) => ProblemType::TxnNotFound,
            Error::TxnGone { .. } => ProblemType::TxnGone,
            Error::Peer(_) => ProblemType::PeerRefused,
            Error::Clock(_) => ProblemType::ClockSkew,
            Error::Config(_)
            | Error::Store(_)
            | Error::StoreOpen { .. }
            | Error::StoreTaken(_)
            | Error::Migrate(_)
            | Error::Corrupt(_)
            | Error::Io(_) => ProblemType::Internal,
        };
        ApiError::new(kind, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            region: self.region,
            staleness_bound_ms: self.staleness_bound_ms,
            key: self.conflict.as_ref().map(|c| c.0.clone()),
            conflicting_txn: self.conflict.and_then(|c| c.1),
            errors: self.fault.map(|f| vec![*f]).unwrap_or_default(),
            ..Problem::new(self.kind, self.detail)
        };
        problem::respond(self.kind, &problem, None, Vec::new())
    }
}
