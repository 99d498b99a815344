//! # How geosaga's HTTP servers take connections
//!
//! The coordinator's API and every region serve HTTP through [`serve`], which bounds what
//! one client can hold:
//!
//! - at most [`Limits::max_connections`] connections at once; past it, no connection is
//!   accepted until one closes (the others wait in the kernel's backlog);
//! - a request's headers must arrive within [`Limits::header_timeout`] of the connection
//!   opening or of the previous answer, so a keep-alive connection idle that long is closed
//!   too (hyper's header read timeout);
//! - a connection on which no byte moves either way for [`Limits::idle_timeout`] is closed
//!   (a stalled upload, a client that stops reading an answer), see [`idle`];
//! - HTTP/1.1 only (no cleartext HTTP/2, whose streams would multiply what one connection
//!   holds).
//!
//! With a TLS configuration, the handshake must finish within the header timeout, and every
//! request carries the certificate the client presented as a [`ClientCertificate`]
//! extension, for the application to authorise.
//!
//! ## Layout
//! - [`limits`]: [`Limits`] and their defaults.
//! - [`idle`]: the idle timeout, as a wrapper around a connection's byte stream.
//! - this file: the accept loop, TLS, and graceful shutdown ([`shutdown_signal`]: Ctrl-C or
//!   SIGTERM, what every geosaga process stops on).

pub mod idle;
pub mod limits;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

pub use limits::Limits;

/// The certificate the client of a connection presented over TLS (`None`: it presented
/// none). Every request served over TLS carries one in its extensions.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Option<CertificateDer<'static>>);

/// Serves `app` on `listener` within `limits`, over TLS when `tls` is given, until
/// `shutdown` completes; then stops accepting and waits for the requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A slot first: at the cap, connections wait in the backlog, not in memory here.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, from) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let connection = Connection {
            app: app.clone(),
            limits,
            from,
            stop: stop_rx.clone(),
        };
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            connection.run(tcp, acceptor).await;
            drop(slot);
        });
        // Reap the finished ones, so that the set holds only live connections.
        while connections.try_join_next().is_some() {}
    }
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One accepted connection and what it is served with.
struct Connection {
    app: Router,
    limits: Limits,
    from: SocketAddr,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(self, tcp: TcpStream, acceptor: Option<tokio_rustls::TlsAcceptor>) {
        let io = idle::IdleTimeout::new(tcp, self.limits.idle_timeout);
        match acceptor {
            None => {
                let app = self.app.clone();
                self.http(io, app).await;
            }
            Some(acceptor) => {
                let stream = match tokio::time::timeout(self.limits.header_timeout, acceptor.accept(io)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::warn!(client = %self.from, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(client = %self.from, "TLS handshake timed out");
                        return;
                    }
                };
                let certificate = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.clone().into_owned());
                let app = self.app.clone().layer(axum::Extension(ClientCertificate(certificate)));
                self.http(stream, app).await;
            }
        }
    }

    async fn http<I>(mut self, io: I, app: Router)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = hyper_util::service::TowerToHyperService::new(app);
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout);
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        let mut connection = std::pin::pin!(connection);
        let mut stopping = false;
        loop {
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(client = %self.from, error = %e, "connection ended with an error");
                    }
                    return;
                }
                changed = self.stop.changed(), if !stopping => {
                    stopping = true;
                    if changed.is_ok() {
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (`kill`, `docker stop`): what a geosaga process serves
/// until.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
