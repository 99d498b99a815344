//! RFC 9457 problem details: the one error document of geosaga's HTTP APIs, the
//! coordinator's REST API and a region's.
//!
//! # Layout
//! - [`Kind`]: what an API's own vocabulary of problems (an exhaustive enum per API:
//!   `coordinator::api::error::ProblemType`, `regions::api::problem::ProblemType`) says of each
//!   kind: the last segment of its stable `type` URI under [`PROBLEM_BASE`], its one status
//!   and its title. Clients branch on the `type`, never on the wording of `detail`.
//! - [`Problem`]: the document (`application/problem+json`), with the members both APIs use
//!   beside the standard ones: `errors` (located faults, each with a JSON Pointer) and, from a
//!   region, `region` and `staleness_bound_ms`.
//! - [`respond`]: the response carrying a problem; it logs server-side failures (5xx) only,
//!   since client errors are the client's business.
//! - [`body`]: a client's JSON body read into a type, or its fault located by a JSON Pointer
//!   (the `errors` of a 422).

pub mod body;

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The prefix of every problem `type` URI.
pub const PROBLEM_BASE: &str = "https://geosaga.dev/problems/";

/// The media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A kind of problem of one API: each has one `type` URI, one status and one title.
pub trait Kind: Copy {
    /// The last segment of the `type` URI.
    fn slug(self) -> &'static str;

    /// The HTTP status.
    fn status(self) -> StatusCode;

    /// A short summary that does not change from one occurrence to the next.
    fn title(self) -> &'static str;

    /// The `type` URI, e.g. `https://geosaga.dev/problems/invalid-definition`.
    fn uri(self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug())
    }
}

/// One located fault of a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProblemError {
    /// JSON Pointer of the value at fault: into the body, or `/query/NAME`, `/path/NAME`,
    /// `/header/NAME`.
    pub path: String,
    /// What is wrong, for a person.
    pub message: String,
}

/// An RFC 9457 problem details document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// Stable URI identifying the kind of problem.
    #[serde(rename = "type")]
    #[cfg_attr(
        feature = "openapi",
        schema(example = "https://geosaga.dev/problems/invalid-definition")
    )]
    pub r#type: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened this time.
    pub detail: String,
    /// Every located fault, when there are any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemError>,
    /// The region that answered (a region's problems only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub region: Option<String>,
    /// For a region's `key-not-found`: how stale the answering copy may be (0: the home's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub staleness_bound_ms: Option<u64>,
    /// For a region's `txn-conflict`: the key the transaction lost on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub key: Option<String>,
    /// For a region's `txn-conflict`: the transaction it lost to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub conflicting_txn: Option<String>,
}

impl Problem {
    /// A problem of `kind` with `detail`, and no other member.
    pub fn new(kind: impl Kind, detail: impl Into<String>) -> Problem {
        Problem {
            r#type: kind.uri(),
            title: kind.title().to_owned(),
            status: kind.status().as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            region: None,
            staleness_bound_ms: None,
            key: None,
            conflicting_txn: None,
        }
    }

    /// Whether this is a problem of `kind`.
    pub fn is(&self, kind: impl Kind) -> bool {
        self.r#type == kind.uri()
    }

    /// The last segment of the `type` URI, if it is one of geosaga's (under
    /// [`PROBLEM_BASE`]): how a client that does not link the answering API's kinds
    /// branches on a problem.
    pub fn slug(&self) -> Option<&str> {
        self.r#type.strip_prefix(PROBLEM_BASE)
    }
}

/// The response carrying `problem` (of `kind`), with extra `headers` (`Retry-After`,
/// `WWW-Authenticate`). A server-side failure is logged, with `cause` (which may name
/// internals the document leaves out) or else the detail: a 500 as an error, another 5xx
/// as a warning.
pub fn respond(
    kind: impl Kind,
    problem: &Problem,
    cause: Option<&str>,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> Response {
    let status = kind.status();
    if status.is_server_error() {
        let cause = cause.unwrap_or(&problem.detail);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(status = status.as_u16(), problem = kind.slug(), cause, "request failed");
        } else {
            tracing::warn!(
                status = status.as_u16(),
                problem = kind.slug(),
                cause,
                "request refused"
            );
        }
    }
    let body = serde_json::to_vec(problem).expect("a problem is JSON");
    let mut response = (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        body,
    )
        .into_response();
    response.headers_mut().extend(headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy)]
    struct Gone;

    impl Kind for Gone {
        fn slug(self) -> &'static str {
            "gone"
        }
        fn status(self) -> StatusCode {
            StatusCode::GONE
        }
        fn title(self) -> &'static str {
            "Gone"
        }
    }

    #[test]
    fn a_problem_names_its_kind_and_leaves_out_empty_members() {
        let problem = Problem::new(Gone, "it went");
        assert!(problem.is(Gone));
        assert_eq!(problem.slug(), Some("gone"));
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "https://geosaga.dev/problems/gone", "title": "Gone", "status": 410, "detail": "it went"})
        );
        assert_eq!(serde_json::from_value::<Problem>(json).unwrap(), problem);
    }

    #[test]
    fn the_response_has_the_kind_s_status_the_media_type_and_the_headers() {
        let response = respond(
            Gone,
            &Problem::new(Gone, "it went"),
            None,
            vec![(header::RETRY_AFTER, HeaderValue::from_static("1"))],
        );
        assert_eq!(response.status(), StatusCode::GONE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
