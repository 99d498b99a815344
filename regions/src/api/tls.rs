//! TLS at the HTTP edge: the gate that lets only member regions reach `/internal/...`
//! ([`authorize`]), and serving the API over TLS with each request carrying the client
//! certificate of its connection ([`serve`]). The certificates and configurations are
//! [`crate::tls`]'s.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use super::problem::{ApiError, ProblemType};
use crate::Result;
use crate::node::Region;
use crate::tls::PeerIdentity;

/// Internal routes whose message names its sender, which may not be a member here yet (a
/// join; the heartbeats of a region that joined elsewhere, which carry the news): they take
/// any certificate of the cluster CA, and the handler checks that it names the sender.
const SELF_NAMING: [&str; 2] = ["/internal/v1/join", "/internal/v1/heartbeat"];

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Serves `app` over TLS on `listener` until `shutdown` completes: one task per
/// connection, each request carrying the connection's [`PeerIdentity`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: rustls::ServerConfig,
    region: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (tcp, from) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(region, error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                connections.spawn(connection(acceptor.clone(), tcp, from, app.clone(), region.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
    Ok(())
}

async fn connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    from: SocketAddr,
    app: Router,
    region: String,
) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::warn!(region, client = %from, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::warn!(region, client = %from, "TLS handshake timed out");
            return;
        }
    };
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    let service = hyper_util::service::TowerToHyperService::new(app.layer(axum::Extension(PeerIdentity(cert))));
    let served = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(region, client = %from, error = %e, "connection ended with an error");
    }
}
