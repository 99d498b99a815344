//! TLS at the HTTP edge: each request's client certificate as a [`PeerIdentity`]
//! ([`identify`]; the server crate, `http_server::serve`, serves the TLS), the gate that
//! lets only member regions reach `/internal/...` ([`authorize`]), and the check that a
//! peer's message in a region's name comes with that region's certificate
//! ([`check_sender`]). The certificates and configurations are [`crate::tls`]'s.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::{ApiError, ProblemType};
use crate::node::Region;
use crate::tls::PeerIdentity;

/// Internal routes whose message names its sender, which may not be a member here yet (a
/// join; the heartbeats of a region that joined elsewhere, which carry the news): they take
/// any certificate of the cluster CA, and the handler checks that it names the sender.
const SELF_NAMING: [&str; 2] = ["/internal/v1/join", "/internal/v1/heartbeat"];

/// Middleware: requests for `/internal/...` need a certificate naming a member region
/// (the `SELF_NAMING` routes only one from the cluster CA: their handlers check that it
/// names the sender). Passes everything when the region serves plain HTTP.
pub async fn authorize(State(region): State<Arc<Region>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !path.starts_with("/internal/") {
        return next.run(request).await;
    }
    let Some(identity) = request.extensions().get::<PeerIdentity>() else {
        return next.run(request).await;
    };
    let refusal = if identity.0.is_none() {
        Some((
            ProblemType::PeerUnauthenticated,
            format!("{path} is for member regions: present a client certificate from the cluster CA"),
        ))
    } else if SELF_NAMING.contains(&path) || region.membership.names().iter().any(|n| identity.names(n)) {
        None
    } else {
        Some((
            ProblemType::PeerForbidden,
            format!("{path}: the client certificate names no member region"),
        ))
    };
    match refusal {
        None => next.run(request).await,
        Some((kind, detail)) => {
            tracing::warn!(region = region.name, path, detail, "internal request refused");
            ApiError::new(kind, detail).at(&region.name).into_response()
        }
    }
}

/// Refuses (403) a peer's message in the name of `sender` (found at `at` in the message)
/// unless the connection's certificate names that region: a member's certificate cannot
/// speak for another member. Without TLS (no identity) the network is trusted.
pub fn check_sender(region: &Region, identity: Option<&PeerIdentity>, at: &str, sender: &str) -> Result<(), ApiError> {
    match identity {
        Some(identity) if !identity.names(sender) => {
            let detail = format!("{at}: the client certificate does not name {sender:?}");
            tracing::warn!(region = region.name, detail, "internal request refused");
            Err(ApiError::new(ProblemType::PeerForbidden, detail).at(&region.name))
        }
        _ => Ok(()),
    }
}

/// Middleware: the certificate the server crate put on a request
/// ([`http_server::ClientCertificate`]), as the [`PeerIdentity`] the handlers check.
pub async fn identify(mut request: Request, next: Next) -> Response {
    if let Some(http_server::ClientCertificate(cert)) = request.extensions_mut().remove() {
        request.extensions_mut().insert(PeerIdentity(cert));
    }
    next.run(request).await
}
