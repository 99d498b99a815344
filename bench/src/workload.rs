//! The common workload (`shared/bench/WORKLOAD.md`): the saga "transfer" (debit, credit,
//! notify; every 10th saga fails at notify with a business error and compensates credit,
//! then debit), its chain variants with more steps, the participant service of the HTTP
//! variant, and the closed-loop client.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Json;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use coordinator::{HandlerRegistry, RustSaga, StepContext};
use indicatif::{ProgressBar, ProgressStyle};
use sagas::{SagaDefinition, StepError};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// Whether saga number `seq` fails at its last step (every 10th).
pub fn fails(seq: u64) -> bool {
    seq.is_multiple_of(10)
}

/// The output of a step: a small JSON object (about 50 bytes).
pub fn output(step: &str, seq: u64) -> Value {
    json!({"step": step, "seq": seq, "id": format!("{}-{seq}", &step[..1]), "ok": true})
}

/// The steps' shared context: counters of what ran, and an optional gate that holds every
/// first step until it is closed (for the in-flight memory and recovery measurements).
pub struct Bank {
    /// First steps entered (the started event is durable by then).
    pub entered: AtomicU64,
    /// Actions that succeeded.
    pub actions: AtomicU64,
    /// Business failures returned.
    pub failures: AtomicU64,
    /// Compensations run.
    pub compensations: AtomicU64,
    /// While set, first steps wait on `gate`.
    pub blocking: AtomicBool,
    /// Closed to release every waiting first step.
    pub gate: Semaphore,
}

impl Bank {
    /// A bank whose first steps run through.
    pub fn new() -> Arc<Bank> {
        Arc::new(Bank {
            entered: AtomicU64::new(0),
            actions: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            compensations: AtomicU64::new(0),
            blocking: AtomicBool::new(false),
            gate: Semaphore::new(0),
        })
    }

    /// Releases every first step waiting on the gate, now and later.
    pub fn release(&self) {
        self.blocking.store(false, Ordering::SeqCst);
        self.gate.close();
    }
}

#[derive(Deserialize)]
struct Input {
    seq: u64,
}

fn seq_of(cx: &StepContext) -> Result<u64, StepError> {
    cx.input::<Input>().map(|i| i.seq)
}

type StepFuture = std::pin::Pin<Box<dyn Future<Output = Result<Value, StepError>> + Send>>;

fn action(
    name: String,
    first: bool,
    last: bool,
) -> impl Fn(Arc<Bank>, StepContext) -> StepFuture + Send + Sync + 'static {
    move |bank: Arc<Bank>, cx: StepContext| {
        let name = name.clone();
        Box::pin(async move {
            let seq = seq_of(&cx)?;
            if first {
                bank.entered.fetch_add(1, Ordering::SeqCst);
                if bank.blocking.load(Ordering::SeqCst) {
                    // Closed by `release`: the error is the signal to go on.
                    let _ = bank.gate.acquire().await;
                }
            }
            if last && fails(seq) {
                bank.failures.fetch_add(1, Ordering::Relaxed);
                return Err(StepError::permanent(format!(
                    "saga {seq}: the receiver refuses the notification"
                )));
            }
            bank.actions.fetch_add(1, Ordering::Relaxed);
            Ok(output(&name, seq))
        })
    }
}

fn compensation(name: String) -> impl Fn(Arc<Bank>, StepContext) -> StepFuture + Send + Sync + 'static {
    move |bank: Arc<Bank>, cx: StepContext| {
        let name = name.clone();
        Box::pin(async move {
            let seq = seq_of(&cx)?;
            bank.compensations.fetch_add(1, Ordering::Relaxed);
            Ok(output(&format!("undo {name}"), seq))
        })
    }
}

/// A chain saga in Rust: `steps` in sequence, each but the last with a compensation; the
/// last fails for every 10th saga.
pub fn chain_saga(name: &str, steps: &[String], bank: Arc<Bank>, registry: &HandlerRegistry) -> Result<SagaDefinition> {
    let mut saga = RustSaga::new(name, bank);
    for (i, step) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        saga = saga.step(step, action(step.clone(), i == 0, last));
        if !last {
            saga = saga.compensate(compensation(step.clone()));
        }
    }
    saga.build(registry)
        .map_err(|e| anyhow::anyhow!("invalid saga {name}: {e}"))
}

/// The names of the steps of a `k`-step chain (`transfer`'s own for k = 3).
pub fn step_names(k: usize) -> Vec<String> {
    if k == 3 {
        return vec!["debit".into(), "credit".into(), "notify".into()];
    }
    (1..=k).map(|i| format!("s{i:02}")).collect()
}

/// The JSON definition of "transfer_http": the same three steps as HTTP calls to the
/// participant at `addr`.
pub fn http_definition(addr: SocketAddr) -> Value {
    let url = |path: &str| format!("http://{addr}/{path}");
    let call = |path: &str, body: Value| json!({"http": {"method": "POST", "url": url(path), "body": body}});
    let seq = json!({"seq": "{{input.seq}}"});
    json!({
        "name": "transfer_http",
        "description": "The benchmark's transfer with HTTP steps to a local participant.",
        "steps": [
            {"name": "debit", "action": call("debit", seq.clone()),
             "compensation": call("undo/debit", json!({"seq": "{{input.seq}}", "id": "{{steps.debit.output.id}}"}))},
            {"name": "credit", "action": call("credit", seq.clone()),
             "compensation": call("undo/credit", json!({"seq": "{{input.seq}}", "id": "{{steps.credit.output.id}}"}))},
            {"name": "notify", "action": call("notify", seq)}
        ]
    })
}

fn seq_from_body(body: &Value) -> Option<u64> {
    match &body["seq"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The participant service of the HTTP variant: no-op actions answering small JSON, and a
/// 422 (a business failure, not retried) at notify for every 10th saga.
pub fn participant(bank: Arc<Bank>) -> axum::Router {
    let handler = |name: &'static str, compensation: bool| {
        let bank = bank.clone();
        move |Json(body): Json<Value>| {
            let bank = bank.clone();
            async move {
                let Some(seq) = seq_from_body(&body) else {
                    return (StatusCode::BAD_REQUEST, Json(json!({"error": "no seq"}))).into_response();
                };
                if compensation {
                    bank.compensations.fetch_add(1, Ordering::Relaxed);
                    return Json(output(name, seq)).into_response();
                }
                if name == "notify" && fails(seq) {
                    bank.failures.fetch_add(1, Ordering::Relaxed);
                    let body = json!({"error": format!("saga {seq}: the receiver refuses the notification")});
                    return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
                }
                bank.actions.fetch_add(1, Ordering::Relaxed);
                Json(output(name, seq)).into_response()
            }
        }
    };
    axum::Router::new()
        .route("/debit", post(handler("debit", false)))
        .route("/credit", post(handler("credit", false)))
        .route("/notify", post(handler("notify", false)))
        .route("/undo/debit", post(handler("undo debit", true)))
        .route("/undo/credit", post(handler("undo credit", true)))
}

/// How one saga ended, as its client learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Completed.
    Completed,
    /// Compensated.
    Compensated,
    /// Anything else (stuck, running past the wait, an error).
    Other(String),
}

impl Outcome {
    /// From a status string.
    pub fn from_status(status: &str) -> Outcome {
        match status {
            "completed" => Outcome::Completed,
            "compensated" => Outcome::Compensated,
            other => Outcome::Other(other.to_owned()),
        }
    }
}

/// What a closed-loop run measured.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Sagas run.
    pub n: u64,
    /// Completed ones.
    pub completed: u64,
    /// Compensated ones.
    pub compensated: u64,
    /// Neither.
    pub other: u64,
    /// A few of the unexpected outcomes.
    pub errors: Vec<String>,
    /// Wall time of the run, in seconds.
    pub wall_s: f64,
    /// Latencies, in microseconds, sorted.
    pub latencies_us: Vec<u64>,
}

impl RunStats {
    /// The latency at quantile `q`, in ms.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 * q).ceil() as usize).clamp(1, self.latencies_us.len()) - 1;
        self.latencies_us[i] as f64 / 1000.0
    }

    /// Sagas per second.
    pub fn rate(&self) -> f64 {
        self.n as f64 / self.wall_s.max(1e-9)
    }

    /// Checks the expected outcome: exactly 90% completed and 10% compensated.
    pub fn check(&self) -> Result<()> {
        let compensated = self.n / 10;
        if self.completed == self.n - compensated && self.compensated == compensated && self.other == 0 {
            Ok(())
        } else {
            bail!(
                "expected {} completed and {compensated} compensated of {}, got {} completed, {} compensated, {} other {:?}",
                self.n - compensated,
                self.n,
                self.completed,
                self.compensated,
                self.other,
                self.errors
            )
        }
    }
}

/// A progress bar for `n` sagas.
pub fn progress(n: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(n);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>38} [{bar:30}] {pos:>6}/{len:6} {per_sec:>12} {elapsed:>4}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// Runs sagas 1..=n through `start` from `concurrency` closed-loop clients on `runtime` and
/// measures every saga's latency.
pub async fn closed_loop<F, Fut>(
    runtime: &tokio::runtime::Handle,
    n: u64,
    concurrency: usize,
    label: &str,
    start: F,
) -> Result<RunStats>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let bar = progress(n, label);
    let next = Arc::new(AtomicU64::new(1));
    let start = Arc::new(start);
    let t0 = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        let (next, start, bar) = (next.clone(), start.clone(), bar.clone());
        clients.push(runtime.spawn(async move {
            let mut mine = RunStats::default();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq > n {
                    return mine;
                }
                let t = Instant::now();
                let outcome = start(seq).await;
                mine.latencies_us.push(t.elapsed().as_micros() as u64);
                mine.n += 1;
                let expected = if fails(seq) {
                    Outcome::Compensated
                } else {
                    Outcome::Completed
                };
                match outcome {
                    Outcome::Completed if expected == Outcome::Completed => mine.completed += 1,
                    Outcome::Compensated if expected == Outcome::Compensated => mine.compensated += 1,
                    other => {
                        mine.other += 1;
                        if mine.errors.len() < 3 {
                            mine.errors.push(format!("saga {seq}: {other:?}"));
                        }
                    }
                }
                bar.inc(1);
            }
        }));
    }
    let mut stats = RunStats::default();
    for client in clients {
        let mine = client.await.context("a client task failed")?;
        stats.n += mine.n;
        stats.completed += mine.completed;
        stats.compensated += mine.compensated;
        stats.other += mine.other;
        stats.errors.extend(mine.errors);
        stats.latencies_us.extend(mine.latencies_us);
    }
    stats.wall_s = t0.elapsed().as_secs_f64();
    stats.latencies_us.sort_unstable();
    stats.errors.truncate(5);
    bar.finish_and_clear();
    Ok(stats)
}

/// An HTTP client for the load: many connections to one host, generous time limits.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(120))
        .tcp_nodelay(true)
        .build()
        .expect("the HTTP client builds")
}

/// Posts `body` to `url` and reads the saga status from the answer's `status` field.
pub async fn post_for_status(client: &reqwest::Client, url: &str, body: &Value) -> Outcome {
    let response = match client.post(url).json(body).send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Other(format!("request failed: {e}")),
    };
    let code = response.status();
    let text = response.text().await.unwrap_or_default();
    if !code.is_success() {
        return Outcome::Other(format!("HTTP {code}: {}", text.chars().take(200).collect::<String>()));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => match v["status"].as_str() {
            Some(s) => Outcome::from_status(s),
            None => Outcome::Other(format!("no status in {}", text.chars().take(200).collect::<String>())),
        },
        Err(e) => Outcome::Other(format!(
            "not JSON ({e}): {}",
            text.chars().take(200).collect::<String>()
        )),
    }
}
