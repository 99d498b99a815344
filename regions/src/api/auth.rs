//! Who may call a region's public routes: tokens with roles, the same model as the
//! coordinator's API (docs/security.md). With no token configured every public route is
//! open (development); with tokens, a request needs `Authorization: Bearer TOKEN` of a role
//! at least the one its route needs ([`needs`]). `/readyz`, `/healthz` and `/openapi.json` stay open, and
//! `/internal/...` is for member regions, authorised by their certificates (`tls.rs`), not
//! by tokens. A request over TLS whose client certificate names a member region is taken
//! as `write`: a member forwards reads (and sends writes) on behalf of clients it already
//! checked. Transactions need `read` to begin, read, snapshot and commit or abort a
//! read-only transaction, and `write` to write in one or to commit or abort one that
//! writes: the route asks for the first, its handler for the second ([`require`], with the
//! role the request was [`Granted`]). A transaction belongs to the [`Caller`] that began it
//! (the token, or the member region): the handlers refuse it to any other (403).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::{ApiError, ProblemType};
use crate::node::Region;
pub use crate::node::txn::Caller;
use crate::tls::PeerIdentity;

/// What a token may do; each role may do what the roles before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads: keys, counters, the cluster's view.
    Read,
    /// Writes of keys and counters.
    Write,
    /// `/v1/admin/...`: re-homing a range.
    Admin,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// A region's tokens, each with its role.
#[derive(Clone, Default)]
pub struct Tokens(Vec<(Role, String)>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roles: Vec<&str> = self.0.iter().map(|(role, _)| role.name()).collect();
        f.debug_tuple("Tokens").field(&roles).finish()
    }
}

impl Tokens {
    /// Tokens written `ROLE:SECRET` (`read`, `write` or `admin`); `Err` names the faulty one
    /// by its position, never by its secret.
    pub fn parse(list: &[String]) -> Result<Tokens, String> {
        let mut tokens = Vec::new();
        for (i, text) in list.iter().enumerate() {
            let Some((role, secret)) = text.split_once(':') else {
                return Err(format!(
                    "token {}: expected ROLE:SECRET (ROLE read, write or admin)",
                    i + 1
                ));
            };
            let role = match role {
                "read" => Role::Read,
                "write" => Role::Write,
                "admin" => Role::Admin,
                other => {
                    return Err(format!(
                        "token {}: unknown role {other:?} (read, write or admin)",
                        i + 1
                    ));
                }
            };
            if secret.len() < 16 {
                return Err(format!("token {}: a secret has at least 16 characters", i + 1));
            }
            tokens.push((role, secret.to_owned()));
        }
        Ok(Tokens(tokens))
    }

    /// Whether none is configured (every public route is open).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The place (from 0) of the first token equal to `presented`, which names its caller
    /// (compared in constant time).
    pub fn position(&self, presented: &str) -> Option<usize> {
        self.0
            .iter()
            .position(|(_, secret)| same(secret.as_bytes(), presented.as_bytes()))
    }

    /// The highest role of the tokens equal to `presented` (compared in constant time).
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        self.0
            .iter()
            .filter(|(_, secret)| same(secret.as_bytes(), presented.as_bytes()))
            .map(|(role, _)| *role)
            .max()
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of `Authorization: Bearer TOKEN`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: health and readiness.
    Nothing,
    /// A member's certificate (`/internal/...`, checked by `super::tls::authorize`).
    Member,
    /// A token of at least this role.
    Token(Role),
}

/// What `method` on `path` needs. The transactions' `POST` routes that may not write
/// (begin, commit, abort, the one-request form, snapshots) need `read` here; their
/// handlers ask for `write` when the transaction writes ([`require`]).
pub fn needs(method: &Method, path: &str) -> Needs {
    if path.starts_with("/internal/") {
        return Needs::Member;
    }
    if matches!(path, "/readyz" | "/healthz" | "/openapi.json") {
        return Needs::Nothing;
    }
    if path.starts_with("/v1/admin/") {
        return Needs::Token(Role::Admin);
    }
    if method == Method::POST && reads_first(path) {
        return Needs::Token(Role::Read);
    }
    if method == Method::GET || method == Method::HEAD {
        Needs::Token(Role::Read)
    } else {
        Needs::Token(Role::Write)
    }
}

/// Whether `path` is a transaction route whose `POST` needs `write` only when the
/// transaction writes.
fn reads_first(path: &str) -> bool {
    if matches!(path, "/v1/txns" | "/v1/txn" | "/v1/snapshot") {
        return true;
    }
    path.strip_prefix("/v1/txns/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(id, action)| !id.is_empty() && matches!(action, "commit" | "abort"))
}

/// The role a request was let in with (a request extension [`authenticate`] sets when the
/// region has tokens; without tokens there is none and every route is open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted(pub Role);

/// Refuses (403) a request let in with a role below `needed` for `what`; `Ok` when the
/// region has no tokens (`granted` is `None`).
pub fn require(region: &Region, granted: Option<Granted>, needed: Role, what: &str) -> Result<(), ApiError> {
    match granted {
        Some(Granted(role)) if role < needed => {
            let detail = format!(
                "{what} needs the {} role; this token has {}",
                needed.name(),
                role.name()
            );
            tracing::warn!(region = region.name, detail, "request refused");
            Err(ApiError::new(ProblemType::Forbidden, detail).at(&region.name))
        }
        _ => Ok(()),
    }
}

/// What [`authenticate`] checks a request against.
#[derive(Clone)]
pub struct Gate {
    /// The region (its members' names).
    pub region: Arc<Region>,
    /// Its tokens.
    pub tokens: Arc<Tokens>,
}

/// Middleware: refuses a public request without a token of the role it needs (401 without
/// one, 403 with one of a lower role), and marks the others with their role ([`Granted`])
/// and their [`Caller`]. Every refusal is logged, without the token.
pub async fn authenticate(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let Needs::Token(needed) = needs(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    if gate.tokens.is_empty() {
        return next.run(request).await;
    }
    let region = &gate.region;
    let member = request
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|identity| region.membership.names().into_iter().find(|n| identity.names(n)));
    let presented = bearer(request.headers());
    let role = match presented {
        Some(token) => gate.tokens.role_of(token),
        None => None,
    };
    let role = if member.is_some() {
        role.max(Some(Role::Write))
    } else {
        role
    };
    let caller = match (presented.and_then(|t| gate.tokens.position(t)), &member) {
        (Some(i), _) => Some(Caller(format!("token {}", i + 1))),
        (None, Some(name)) => Some(Caller(format!("region {name}"))),
        (None, None) => None,
    };
    let refusal = match (presented, role) {
        (_, Some(role)) if role >= needed => {
            request.extensions_mut().insert(Granted(role));
            if let Some(caller) = caller {
                request.extensions_mut().insert(caller);
            }
            None
        }
        (None, _) => Some((
            ProblemType::Unauthenticated,
            format!("{} needs a token (Authorization: Bearer ...)", request.uri().path()),
        )),
        (Some(_), None) => Some((
            ProblemType::Unauthenticated,
            "the token is not one of this region's".to_owned(),
        )),
        (Some(_), Some(role)) => Some((
            ProblemType::Forbidden,
            format!(
                "{} {} needs the {} role; this token has {}",
                request.method(),
                request.uri().path(),
                needed.name(),
                role.name()
            ),
        )),
    };
    match refusal {
        None => next.run(request).await,
        Some((kind, detail)) => {
            tracing::warn!(
                region = region.name,
                path = request.uri().path(),
                detail,
                "request refused"
            );
            ApiError::new(kind, detail).at(&region.name).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_with_their_roles_and_faults_name_no_secret() {
        let tokens = Tokens::parse(&[
            "read:rrrrrrrrrrrrrrrrrr".into(),
            "admin:aaaaaaaaaaaaaaaaaa".into(),
            "write:aaaaaaaaaaaaaaaaaa".into(),
        ])
        .unwrap();
        assert_eq!(tokens.role_of("rrrrrrrrrrrrrrrrrr"), Some(Role::Read));
        assert_eq!(tokens.role_of("aaaaaaaaaaaaaaaaaa"), Some(Role::Admin));
        assert_eq!(tokens.role_of("aaaaaaaaaaaaaaaaa"), None);
        assert_eq!(tokens.position("aaaaaaaaaaaaaaaaaa"), Some(1));
        assert_eq!(tokens.position("rrrrrrrrrrrrrrrrrr"), Some(0));
        assert_eq!(tokens.position("zzzzzzzzzzzzzzzzzz"), None);
        assert_eq!(format!("{tokens:?}"), r#"Tokens(["read", "admin", "write"])"#);
        let err = Tokens::parse(&["root:ssssssssssssssssssss".into()]).unwrap_err();
        assert!(
            err.contains("token 1: unknown role \"root\"") && !err.contains("ssss"),
            "{err}"
        );
        let err = Tokens::parse(&["read:short".into()]).unwrap_err();
        assert!(err.contains("at least 16") && !err.contains("short"), "{err}");
        assert!(Tokens::parse(&["nocolon".into()]).unwrap_err().contains("ROLE:SECRET"));
    }

    #[test]
    fn routes_need_what_their_class_does() {
        assert_eq!(needs(&Method::GET, "/readyz"), Needs::Nothing);
        assert_eq!(needs(&Method::GET, "/openapi.json"), Needs::Nothing);
        assert_eq!(needs(&Method::POST, "/internal/v1/replicate"), Needs::Member);
        assert_eq!(needs(&Method::GET, "/v1/kv/a/b"), Needs::Token(Role::Read));
        assert_eq!(needs(&Method::GET, "/v1/regions"), Needs::Token(Role::Read));
        assert_eq!(needs(&Method::PUT, "/v1/kv/a"), Needs::Token(Role::Write));
        assert_eq!(needs(&Method::PATCH, "/v1/kv/a"), Needs::Token(Role::Write));
        assert_eq!(needs(&Method::DELETE, "/v1/kv/a"), Needs::Token(Role::Write));
        assert_eq!(needs(&Method::POST, "/v1/counters/c"), Needs::Token(Role::Write));
        assert_eq!(needs(&Method::POST, "/v1/admin/rehome"), Needs::Token(Role::Admin));
        assert_eq!(needs(&Method::GET, "/v1/admin/rehome"), Needs::Token(Role::Admin));
    }

    #[test]
    fn transactions_need_read_to_begin_and_write_to_write() {
        assert_eq!(needs(&Method::POST, "/v1/txns"), Needs::Token(Role::Read));
        assert_eq!(needs(&Method::GET, "/v1/txns/t1/kv/a"), Needs::Token(Role::Read));
        assert_eq!(needs(&Method::PUT, "/v1/txns/t1/kv/a"), Needs::Token(Role::Write));
        assert_eq!(needs(&Method::DELETE, "/v1/txns/t1/kv/a"), Needs::Token(Role::Write));
        assert_eq!(needs(&Method::POST, "/v1/txns/t1/commit"), Needs::Token(Role::Read));
        assert_eq!(needs(&Method::POST, "/v1/txns/t1/abort"), Needs::Token(Role::Read));
        assert_eq!(needs(&Method::POST, "/v1/txn"), Needs::Token(Role::Read));
        assert_eq!(needs(&Method::POST, "/v1/snapshot"), Needs::Token(Role::Read));
        assert_eq!(needs(&Method::POST, "/v1/txns/t1/other"), Needs::Token(Role::Write));
        assert_eq!(needs(&Method::POST, "/v1/txns//commit"), Needs::Token(Role::Write));
        assert_eq!(needs(&Method::POST, "/internal/v1/txn/prepare"), Needs::Member);
    }
}
