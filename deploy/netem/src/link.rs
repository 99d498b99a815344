//! One proxy of `geosaga-netem`: a listener, its connections and the toxics acting on them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{NetemError, Stream, Toxic, ToxicKind, split_mix};

/// The toxics of a proxy, shared with its live connections.
type Toxics = Arc<Vec<Toxic>>;

/// A proxy: listens while enabled and forwards each connection to `upstream`.
pub struct Link {
    /// Its name.
    pub name: String,
    /// Where connections go (`host:port`, resolved for each connection).
    pub upstream: String,
    requested_listen: String,
    state: Mutex<State>,
    toxics: watch::Sender<Toxics>,
    connections: Arc<AtomicU64>,
}

#[derive(Default)]
struct State {
    /// The address it listens on, or listened on last.
    bound: Option<SocketAddr>,
    /// While enabled: the switch that stops the accept loop and every connection, and the loop.
    running: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl Link {
    /// A disabled proxy.
    pub fn new(name: String, listen: String, upstream: String) -> Link {
        Link {
            name,
            upstream,
            requested_listen: listen,
            state: Mutex::new(State::default()),
            toxics: watch::channel(Arc::new(Vec::new())).0,
            connections: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Where it listens (the bound address once it was enabled).
    pub async fn listen(&self) -> String {
        match self.state.lock().await.bound {
            Some(a) => a.to_string(),
            None => self.requested_listen.clone(),
        }
    }

    /// Whether it accepts connections.
    pub async fn enabled(&self) -> bool {
        self.state.lock().await.running.is_some()
    }

    /// Starts listening (again on the same address, once bound); no-op when enabled.
    pub async fn enable(&self) -> Result<(), String> {
        let mut state = self.state.lock().await;
        if state.running.is_some() {
            return Ok(());
        }
        let listener = match state.bound {
            Some(a) => TcpListener::bind(a).await,
            None => TcpListener::bind(self.requested_listen.as_str()).await,
        }
        .map_err(|e| format!("proxy {}: cannot listen on {}: {e}", self.name, self.requested_listen))?;
        state.bound = Some(listener.local_addr().map_err(|e| e.to_string())?);
        let (stop, stopped) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(
            listener,
            self.upstream.clone(),
            self.toxics.subscribe(),
            stopped,
            self.connections.clone(),
        ));
        state.running = Some((stop, accept));
        Ok(())
    }

    /// Stops listening and closes every connection: the link is cut. No-op when disabled.
    pub async fn disable(&self) {
        let running = self.state.lock().await.running.take();
        if let Some((stop, accept)) = running {
            stop.send_replace(true);
            let _ = accept.await;
        }
    }

    /// Its toxics.
    pub fn toxics(&self) -> Toxics {
        self.toxics.borrow().clone()
    }

    /// Adds a toxic (409 if one has its name).
    pub fn add_toxic(&self, toxic: Toxic) -> Result<(), NetemError> {
        let mut result = Ok(());
        self.toxics.send_if_modified(|toxics| {
            if toxics.iter().any(|t| t.name == toxic.name) {
                result = Err(NetemError::new(409, format!("toxic {} already exists", toxic.name)));
                return false;
            }
            Arc::make_mut(toxics).push(toxic.clone());
            true
        });
        result
    }

    /// Replaces the toxic of the same name (404 if none).
    pub fn replace_toxic(&self, toxic: Toxic) -> Result<(), NetemError> {
        let mut result = Ok(());
        self.toxics
            .send_if_modified(|toxics| match toxics.iter().position(|t| t.name == toxic.name) {
                Some(i) => {
                    Arc::make_mut(toxics)[i] = toxic.clone();
                    true
                }
                None => {
                    result = Err(NetemError::new(404, format!("toxic {} not found", toxic.name)));
                    false
                }
            });
        result
    }

    /// Removes a toxic (404 if none has this name).
    pub fn remove_toxic(&self, name: &str) -> Result<(), NetemError> {
        let mut result = Ok(());
        self.toxics
            .send_if_modified(|toxics| match toxics.iter().position(|t| t.name == name) {
                Some(i) => {
                    Arc::make_mut(toxics).remove(i);
                    true
                }
                None => {
                    result = Err(NetemError::new(404, format!("toxic {name} not found")));
                    false
                }
            });
        result
    }

    /// Removes every toxic.
    pub fn clear_toxics(&self) {
        self.toxics.send_replace(Arc::new(Vec::new()));
    }

    /// Toxiproxy's JSON for it.
    pub async fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "listen": self.listen().await,
            "upstream": self.upstream,
            "enabled": self.enabled().await,
            "toxics": self.toxics().iter().map(Toxic::to_json).collect::<Vec<_>>(),
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    toxics: watch::Receiver<Toxics>,
    mut stop: watch::Receiver<bool>,
    connections: Arc<AtomicU64>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((client, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let conn = connections.fetch_add(1, Ordering::Relaxed);
        let (upstream, toxics, mut stop) = (upstream.clone(), toxics.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = connection(client, &upstream, conn, toxics) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}

/// Forwards one connection until both directions closed, or a timeout toxic closed it.
async fn connection(client: TcpStream, upstream: &str, conn: u64, toxics: watch::Receiver<Toxics>) {
    let server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(upstream, error = %e, "upstream unreachable; closing the client's connection");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let (abort, mut aborted) = watch::channel(false);
    let both = async {
        tokio::join!(
            pump(cr, sw, Stream::Upstream, conn, toxics.clone(), &abort),
            pump(sr, cw, Stream::Downstream, conn, toxics, &abort)
        )
    };
    tokio::select! {
        _ = both => {}
        _ = aborted.wait_for(|a| *a) => {}
    }
}

/// What the toxics of one direction do to a connection now.
struct Effect {
    /// Milliseconds of latency and of jitter.
    latency: (u64, u64),
    /// A timeout toxic: `Some(ms)` (0: never closes).
    timeout: Option<u64>,
}

fn effect(toxics: &[Toxic], stream: Stream, conn: u64) -> Effect {
    let mut e = Effect {
        latency: (0, 0),
        timeout: None,
    };
    for t in toxics.iter().filter(|t| t.stream == stream && t.affects(conn)) {
        match t.kind {
            ToxicKind::Latency { latency, jitter } => {
                e.latency = (e.latency.0 + latency, e.latency.1 + jitter);
            }
            ToxicKind::Timeout { timeout } => e.timeout = Some(e.timeout.map_or(timeout, |t| t.min(timeout))),
        }
    }
    e
}

/// Copies `from` to `to` through the toxics of `stream`.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    stream: Stream,
    conn: u64,
    mut toxics: watch::Receiver<Toxics>,
    abort: &watch::Sender<bool>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut last_due = Instant::now();
        let mut timeout_at: Option<Instant> = None;
        let mut chunks = 0u64;
        loop {
            let now = effect(&toxics.borrow_and_update(), stream, conn);
            timeout_at = match now.timeout {
                None => None,
                Some(0) => None,
                Some(ms) => Some(timeout_at.unwrap_or_else(|| Instant::now() + Duration::from_millis(ms))),
            };
            let deadline = async {
                match timeout_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = from.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if now.timeout.is_some() {
                            continue; // a timeout toxic lets nothing through
                        }
                        chunks += 1;
                        let (latency, jitter) = now.latency;
                        let delay = if jitter == 0 {
                            latency
                        } else {
                            let offset = split_mix(conn.rotate_left(32) ^ chunks) % (2 * jitter + 1);
                            (latency + offset).saturating_sub(jitter)
                        };
                        let due = (Instant::now() + Duration::from_millis(delay)).max(last_due);
                        last_due = due;
                        if tx.send((due, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                },
                changed = toxics.changed() => if changed.is_err() { break },
                () = deadline => {
                    abort.send_replace(true);
                    break;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}
