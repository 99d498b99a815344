//! The recording proxy: one listener in front of each participant origin. It forwards what
//! the coordinator sends, records every request and answer in one log shared by all
//! proxies (in arrival order), and does to the traffic what the current [`Plan`] says:
//! refuse an action with a business 4xx, deliver a request twice, drop an answer after the
//! participant applied it, hold an action back until its compensation has run, or hold a
//! request while the coordinator restarts.
//!
//! It is built on hyper directly because dropping an answer means closing the connection
//! without one: the service returns an error and hyper closes it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sagas::Phase;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

/// The status the proxy answers an action it refuses on the participant's behalf.
pub const INJECTED_STATUS: u16 = 422;

/// What the proxy does to the traffic of the case being run. Empty: forward everything.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// Answer the first delivery of this step's action 422 without forwarding it.
    pub refuse: Option<String>,
    /// Deliver every action and compensation twice (concurrently, or one after the other).
    pub repeat: Option<Repeat>,
    /// Forward this step's action, then drop the answer: the first `times` deliveries.
    pub drop_answers: Option<(String, u32)>,
    /// Hold this step's action back (its connection dropped, nothing forwarded) until its
    /// compensation has been answered; then deliver the first attempt, late.
    pub late: Option<String>,
    /// Hold the n-th action delivery (from 1) and signal it; it is never forwarded.
    pub hold_action: Option<usize>,
}

/// How a request is delivered twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Repeat {
    /// The second copy after the first one's answer.
    Sequential,
    /// Both copies at once.
    Concurrent,
}

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "fate", rename_all = "snake_case")]
pub enum Fate {
    /// Forwarded; the participant answered this, and the coordinator got it.
    Answered {
        /// The participant's status.
        status: u16,
        /// The participant's body.
        body: Value,
    },
    /// Forwarded; the participant answered this, and the proxy dropped it.
    AnswerDropped {
        /// The participant's status.
        status: u16,
        /// The participant's body.
        body: Value,
    },
    /// Not forwarded: the proxy answered for the participant.
    Injected {
        /// The status the proxy answered with.
        status: u16,
    },
    /// Not forwarded (yet): the connection was dropped.
    Withheld,
    /// Forwarded, but the participant could not be reached.
    Unreachable {
        /// Why the participant could not be reached.
        error: String,
    },
}

impl Fate {
    /// The participant's answer, if it gave one.
    pub fn answer(&self) -> Option<(u16, &Value)> {
        match self {
            Fate::Answered { status, body } | Fate::AnswerDropped { status, body } => Some((*status, body)),
            Fate::Injected { .. } | Fate::Withheld | Fate::Unreachable { .. } => None,
        }
    }
}

/// One request seen by a proxy, or one `verify` read check made itself.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    /// Arrival order across every proxy.
    pub seq: u64,
    /// `X-Saga-Id`.
    pub saga: Option<Uuid>,
    /// `X-Saga-Step`.
    pub step: String,
    /// From the idempotency key; `None` for a verify read.
    pub phase: Option<Phase>,
    /// `Idempotency-Key`.
    pub key: String,
    /// `X-Saga-Action-Key`.
    pub action_key: String,
    /// Method and URL at the participant.
    pub request: String,
    /// What happened to it.
    #[serde(flatten)]
    pub fate: Fate,
    /// Why the proxy did what it did, when it did more than forward.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Reads a step's `verify` for a saga: `None` when the step has none.
pub type Verifier = Arc<dyn Fn(Uuid, String) -> BoxFuture<'static, Option<(String, Fate)>> + Send + Sync>;

/// The proxies of one check run, sharing the plan and the log.
#[derive(Clone)]
pub struct Proxies {
    shared: Arc<Shared>,
}

struct Shared {
    seq: AtomicU64,
    plan: Mutex<Plan>,
    seen: Mutex<Vec<Seen>>,
    counters: Mutex<HashMap<String, u32>>,
    late: Mutex<Option<Late>>,
    held: Mutex<Option<oneshot::Sender<()>>>,
    held_notify: Notify,
    client: reqwest::Client,
    verifier: Mutex<Option<Verifier>>,
}

/// The first withheld delivery of a late action, kept to be sent after its compensation.
struct Late {
    origin: String,
    parts: hyper::http::request::Parts,
    body: Bytes,
    seen: Seen,
}

impl Default for Proxies {
    fn default() -> Proxies {
        Proxies::new()
    }
}

impl Proxies {
    /// No proxies yet; [`Proxies::front`] adds one per origin.
    pub fn new() -> Proxies {
        Proxies {
            shared: Arc::new(Shared {
                seq: AtomicU64::new(0),
                plan: Mutex::new(Plan::default()),
                seen: Mutex::new(Vec::new()),
                counters: Mutex::new(HashMap::new()),
                late: Mutex::new(None),
                held: Mutex::new(None),
                held_notify: Notify::new(),
                client: reqwest::Client::builder().no_proxy().build().expect("an HTTP client"),
                verifier: Mutex::new(None),
            }),
        }
    }

    /// Sets how `verify` reads are made.
    pub fn set_verifier(&self, verifier: Verifier) {
        *self.shared.verifier.lock().expect("lock") = Some(verifier);
    }

    /// Starts a proxy in front of `origin` (`http://host:port`); returns its address.
    pub async fn front(&self, origin: &str) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shared, origin) = (self.shared.clone(), origin.to_owned());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (shared, origin) = (shared.clone(), origin.clone());
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    handle(shared.clone(), origin.clone(), request)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Ok(addr)
    }

    /// Starts a case: a new plan, the counters reset.
    pub fn set_plan(&self, plan: Plan) {
        *self.shared.plan.lock().expect("lock") = plan;
        self.shared.counters.lock().expect("lock").clear();
        *self.shared.late.lock().expect("lock") = None;
    }

    /// Everything seen for `saga`, in arrival order.
    pub fn seen(&self, saga: Uuid) -> Vec<Seen> {
        let seen = self.shared.seen.lock().expect("lock");
        let mut mine: Vec<Seen> = seen.iter().filter(|s| s.saga == Some(saga)).cloned().collect();
        mine.sort_by_key(|s| s.seq);
        mine
    }

    /// Waits until the request the plan holds has arrived; dropping the returned sender
    /// drops that request without forwarding it.
    pub async fn held(&self) -> oneshot::Sender<()> {
        loop {
            let notified = self.shared.held_notify.notified();
            if let Some(sender) = self.shared.held.lock().expect("lock").take() {
                return sender;
            }
            notified.await;
        }
    }
}

/// The proxy answers nothing: hyper closes the connection.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the proxy dropped the answer")
    }
}

impl std::error::Error for Dropped {}

fn header(parts: &hyper::http::request::Parts, name: &str) -> String {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn phase_of(key: &str) -> Option<Phase> {
    match key.rsplit(':').next() {
        Some("action") => Some(Phase::Action),
        Some("compensation") => Some(Phase::Compensation),
        _ => None,
    }
}

impl Shared {
    fn record(&self, mut seen: Seen) -> Seen {
        seen.seq = self.seq.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().expect("lock").push(seen.clone());
        seen
    }

    /// Counts deliveries of `what`; returns this one's number, from 1.
    fn count(&self, what: String) -> u32 {
        let mut counters = self.counters.lock().expect("lock");
        let n = counters.entry(what).or_default();
        *n += 1;
        *n
    }

    async fn forward(&self, origin: &str, parts: &hyper::http::request::Parts, body: &Bytes) -> Fate {
        let url = format!(
            "{origin}{}",
            parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
        );
        let mut request = self.client.request(parts.method.clone(), url).body(body.clone());
        for (name, value) in &parts.headers {
            if !matches!(name.as_str(), "host" | "content-length" | "connection") {
                request = request.header(name, value);
            }
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let bytes = response.bytes().await.unwrap_or_default();
                let body = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
                Fate::Answered { status, body }
            }
            Err(e) => Fate::Unreachable { error: e.to_string() },
        }
    }

    async fn verify(&self, saga: Option<Uuid>, step: &str) {
        let verifier = self.verifier.lock().expect("lock").clone();
        if let (Some(verifier), Some(saga)) = (verifier, saga)
            && let Some((request, fate)) = verifier(saga, step.to_owned()).await
        {
            self.record(Seen {
                seq: 0,
                saga: Some(saga),
                step: step.to_owned(),
                phase: None,
                key: String::new(),
                action_key: String::new(),
                request,
                fate,
                note: Some("verify".into()),
            });
        }
    }
}

fn respond(fate: &Fate) -> Result<Response<Body>, Dropped> {
    match fate {
        Fate::Answered { status, body } => Ok(Response::builder()
            .status(*status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap_or_default()))
            .expect("a response")),
        Fate::Injected { status } => Ok(Response::builder()
            .status(*status)
            .header("content-type", "application/json")
            .body(Body::from(
                r#"{"error":"refused by geosaga check: a business failure injected at the proxy"}"#,
            ))
            .expect("a response")),
        Fate::Unreachable { .. } => Ok(Response::builder().status(502).body(Body::empty()).expect("a response")),
        Fate::AnswerDropped { .. } | Fate::Withheld => Err(Dropped),
    }
}

async fn handle(shared: Arc<Shared>, origin: String, request: Request<Incoming>) -> Result<Response<Body>, Dropped> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(Body::new(body), usize::MAX)
        .await
        .map_err(|_| Dropped)?;
    let key = header(&parts, "idempotency-key");
    let phase = phase_of(&key);
    let seen = |fate: Fate, note: Option<&str>| Seen {
        seq: 0,
        saga: Uuid::parse_str(&header(&parts, "x-saga-id")).ok(),
        step: header(&parts, "x-saga-step"),
        phase,
        key: key.clone(),
        action_key: header(&parts, "x-saga-action-key"),
        request: format!("{} {origin}{}", parts.method, parts.uri.path()),
        fate,
        note: note.map(str::to_owned),
    };
    let step = header(&parts, "x-saga-step");
    let saga = Uuid::parse_str(&header(&parts, "x-saga-id")).ok();
    let plan = shared.plan.lock().expect("lock").clone();
    let is_action = phase == Some(Phase::Action);
    let dropping = plan.drop_answers.as_ref().is_some_and(|(s, _)| *s == step) && is_action;
    let late_compensation = phase == Some(Phase::Compensation) && plan.late.as_deref() == Some(step.as_str());

    if is_action && let Some(nth) = plan.hold_action {
        let arrived = shared.count("actions".into()) as usize;
        if arrived == nth {
            shared.record(seen(
                Fate::Withheld,
                Some("held while the coordinator restarts; never forwarded"),
            ));
            let (tx, rx) = oneshot::channel();
            *shared.held.lock().expect("lock") = Some(tx);
            shared.held_notify.notify_waiters();
            let _ = rx.await;
            return Err(Dropped);
        }
    }
    if is_action && plan.refuse.as_deref() == Some(step.as_str()) && shared.count(format!("refuse {step}")) == 1 {
        let fate = Fate::Injected {
            status: INJECTED_STATUS,
        };
        shared.record(seen(fate.clone(), Some("business failure injected")));
        return respond(&fate);
    }
    if is_action && plan.late.as_deref() == Some(step.as_str()) {
        let mut late = shared.late.lock().expect("lock");
        let note = if late.is_none() {
            "held back: delivered after the compensation"
        } else {
            "a retry, dropped unforwarded"
        };
        let recorded = shared.record(seen(Fate::Withheld, Some(note)));
        if late.is_none() {
            *late = Some(Late {
                origin: origin.clone(),
                parts: parts.clone(),
                body: body.clone(),
                seen: recorded,
            });
        }
        return Err(Dropped);
    }
    if let Some((_, times)) = &plan.drop_answers
        && dropping
        && shared.count(format!("drop {step}")) <= *times
    {
        let fate = match shared.forward(&origin, &parts, &body).await {
            Fate::Answered { status, body } => Fate::AnswerDropped { status, body },
            other => other,
        };
        shared.record(seen(fate.clone(), Some("answer dropped by the proxy")));
        shared.verify(saga, &step).await;
        return respond(&fate);
    }
    let Some(repeat) = plan.repeat.filter(|_| phase.is_some()) else {
        if late_compensation {
            shared.verify(saga, &step).await;
        }
        let fate = shared.forward(&origin, &parts, &body).await;
        shared.record(seen(fate.clone(), None));
        if dropping {
            shared.verify(saga, &step).await;
        }
        if late_compensation {
            deliver_late(&shared, &step).await;
        }
        return respond(&fate);
    };
    let first = match repeat {
        Repeat::Sequential => {
            let first = shared.forward(&origin, &parts, &body).await;
            shared.record(seen(first.clone(), Some("first copy")));
            shared.verify(saga, &step).await;
            let second = shared.forward(&origin, &parts, &body).await;
            shared.record(seen(second, Some("second copy, in sequence")));
            first
        }
        Repeat::Concurrent => {
            let (first, second) = tokio::join!(
                shared.forward(&origin, &parts, &body),
                shared.forward(&origin, &parts, &body)
            );
            shared.record(seen(first.clone(), Some("first copy")));
            shared.record(seen(second, Some("second copy, concurrent")));
            shared.verify(saga, &step).await;
            let third = shared.forward(&origin, &parts, &body).await;
            shared.record(seen(third, Some("third copy, in sequence")));
            first
        }
    };
    shared.verify(saga, &step).await;
    respond(&first)
}

/// After a step's compensation was answered: verify, deliver its held-back action, verify.
async fn deliver_late(shared: &Shared, step: &str) {
    let late = shared.late.lock().expect("lock").take();
    let Some(late) = late else { return };
    shared.verify(late.seen.saga, step).await;
    let fate = shared.forward(&late.origin, &late.parts, &late.body).await;
    shared.record(Seen {
        fate,
        note: Some("the held-back action, delivered after its compensation".into()),
        ..late.seen.clone()
    });
    shared.verify(late.seen.saga, step).await;
}
