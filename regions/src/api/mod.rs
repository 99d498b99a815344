//! The HTTP API every region serves (axum), on top of everything else: the key-value routes
//! (`kv.rs`), counters (`counters.rs`), transactions and snapshots (`txns.rs`, with the internal
//! routes of their commit), the cluster's view and changes (`cluster.rs`:
//! placement, status, readiness, conflict counts, re-homing), the internal routes peers
//! call (`peers.rs`), the mutual-TLS gate in front of them (`tls.rs`) and the tokens of
//! the public routes (`auth.rs`), probes and the OpenAPI document (`meta.rs`,
//! [`openapi`]). Errors are problem details ([`problem`]), unknown paths included.

pub mod auth;
mod cluster;
mod counters;
mod kv;
mod meta;
pub mod openapi;
mod peers;
pub mod problem;
pub mod tls;
mod txns;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{StatusCode, header};
use regions_core::hlc::Timestamp;

use crate::Error;
use crate::node::Region;
use problem::{ApiError, ProblemType};

pub use kv::FORWARDED_BY;

/// Longest key accepted, in characters.
const MAX_KEY_CHARS: usize = 1024;

/// Largest `max_staleness_ms` of a read or a snapshot: a year.
const MAX_STALENESS_MS: u64 = 31_536_000_000;

/// The `{key}` of the routes that take one, as the OpenAPI document describes it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct KeyParam {
    /// The key: 1 to 1024 characters (`/` included; a `/` in the URL is part of the key).
    #[param(min_length = 1, max_length = 1024)]
    #[allow(dead_code)]
    key: String,
}

type Shared = State<Arc<Region>>;

/// Every route of the region, behind its gates, outermost first: the client certificate
/// as a [`crate::tls::PeerIdentity`], the public routes' tokens ([`auth`]), the body limit
/// (`Config::body_limit`), and the gate that lets only member regions reach `/internal/...`
/// (with a `[tls]` section). `Err`: a configured token is malformed.
pub fn router(region: Arc<Region>) -> Result<Router, Error> {
    let gate = auth::Gate {
        region: region.clone(),
        tokens: Arc::new(auth::Tokens::parse(&region.config.tokens).map_err(Error::Config)?),
    };
    Ok(Router::new()
        .merge(kv::routes())
        .merge(counters::routes())
        .merge(cluster::routes())
        .merge(peers::routes())
        .merge(txns::routes())
        .merge(meta::routes())
        .fallback(meta::no_route)
        .layer(axum::middleware::from_fn_with_state(region.clone(), tls::authorize))
        .layer(axum::extract::DefaultBodyLimit::max(region.config.body_limit()))
        .layer(axum::middleware::from_fn_with_state(gate, auth::authenticate))
        .layer(axum::middleware::from_fn(tls::identify))
        .with_state(region))
}

/// Refuses (413) a value past the region's `max_value_bytes`, naming the limit.
fn check_value(region: &Region, path: &str, json: &str) -> Result<(), ApiError> {
    let limit = region.config.max_value_bytes;
    if json.len() > limit {
        return Err(ApiError::new(
            ProblemType::TooLarge,
            format!(
                "{path}: {} bytes of JSON, past this region's max_value_bytes ({limit})",
                json.len()
            ),
        )
        .at(&region.name));
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
        return Err(ApiError::new(
            ProblemType::InvalidParameter,
            format!("/path/key: a key has 1 to {MAX_KEY_CHARS} characters"),
        ));
    }
    Ok(())
}

/// A version given by a client: `WALL_MS.LOGICAL`, 1 to 19 and 1 to 9 digits (what the
/// OpenAPI document's pattern says; no sign, no spaces).
fn parse_version(path: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    let digits = |s: &str, most: usize| (1..=most).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    text.map(|t| {
        let shaped = t.split_once('.').is_some_and(|(w, l)| digits(w, 19) && digits(l, 9));
        let parsed = if shaped {
            t.parse()
        } else {
            Err(format!("{t:?} is not a version (WALL_MS.LOGICAL, digits only)"))
        };
        parsed.map_err(|e: String| ApiError::new(ProblemType::InvalidParameter, format!("{path}: {e}")))
    })
    .transpose()
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::new(ProblemType::InvalidParameter, format!("/query: {}", e.body_text())))
}

/// A client's JSON body as a route extracts it: see [`body_of`].
type Body<T> = Result<JsonObject<T>, ApiError>;

/// A JSON object body read into `T` as it streams ([`::problem::body::object`]): an array of
/// a struct's fields or a scalar is refused, and a fault inside is named by its JSON Pointer.
/// Routes take it as a [`Body`], so that they check the path and the caller first.
struct JsonObject<T>(T);

impl<T: serde::de::DeserializeOwned> FromRequest<Arc<Region>> for JsonObject<T> {
    type Rejection = ApiError;

    /// Refuses a body not declared as JSON or not JSON (400), past the region's limit (413,
    /// with the limit), or JSON of the wrong shape, an array or a scalar included (422, with
    /// the JSON Pointer of the value at fault in `errors`).
    async fn from_request(req: Request, region: &Arc<Region>) -> Result<Self, ApiError> {
        let declared = req.headers().get(header::CONTENT_TYPE).map(::problem::body::media_type);
        if !declared.is_some_and(|m| ::problem::body::is_json(&m)) {
            return Err(ApiError::new(
                ProblemType::MalformedJson,
                "the request has no JSON body: send one with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, region).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ProblemType::TooLarge,
                    format!(
                        "the body is past this region's limit of {} bytes (max_value_bytes {})",
                        region.config.body_limit(),
                        region.config.max_value_bytes
                    ),
                )
                .at(&region.name)
            } else {
                ApiError::new(
                    ProblemType::MalformedJson,
                    format!("the body could not be read: {}", e.body_text()),
                )
            }
        })?;
        Ok(JsonObject(::problem::body::object(&bytes)?))
    }
}

/// A route's body, or the problem with it (see [`JsonObject`]).
fn body_of<T>(b: Body<T>) -> Result<T, ApiError> {
    b.map(|JsonObject(b)| b)
}

/// A peer's message, or its refusal.
fn peer_body<T: serde::de::DeserializeOwned>(b: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(b).map_err(|e| ApiError::new(ProblemType::PeerRefused, e.to_string()))
}

fn checked_op_id(path: &str, op_id: Option<String>) -> Result<Option<String>, ApiError> {
    if let Some(id) = &op_id {
        regions_core::op_ids::check(id)
            .map_err(|e| ApiError::new(ProblemType::InvalidParameter, format!("{path}: {e}")))?;
    }
    Ok(op_id)
}
