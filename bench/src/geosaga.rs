//! geosaga under the workload: the coordinator in this process, driven through its REST
//! API over loopback HTTP (`POST /v1/sagas?wait_ms=30000`: latency is start-with-wait),
//! plus the child processes of the in-flight memory and recovery measurements.

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use coordinator::api::{ApiState, app};
use coordinator::store::sqlite::SqliteStore;
use coordinator::{Coordinator, Faults, HandlerRegistry, HostPolicy, HttpRunner, Options, Runners, StartSaga, Store};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::measure::{Cpu, CpuRoles, Row, SelfPeak};
use crate::procfs;
use crate::workload::{self, Bank};

/// The runtimes the harness keeps beside the engine's (the one `main` runs on).
#[derive(Clone)]
pub struct Runtimes {
    /// The load clients.
    pub client: tokio::runtime::Handle,
    /// The HTTP variant's participant service.
    pub participant: tokio::runtime::Handle,
}

/// A coordinator serving the API on loopback.
pub struct GeoServer {
    /// The coordinator.
    pub coordinator: Coordinator,
    /// The API's address.
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

/// The definitions every benchmark coordinator has: "transfer" (3 steps), "chain-K" for
/// the step-growth runs, and "transfer_http" when a participant is given.
fn registry_with_sagas(bank: &Arc<Bank>, chains: &[usize]) -> Result<(HandlerRegistry, Vec<sagas::SagaDefinition>)> {
    let registry = HandlerRegistry::new();
    let mut defs = vec![workload::chain_saga(
        "transfer",
        &workload::step_names(3),
        bank.clone(),
        &registry,
    )?];
    for &k in chains {
        defs.push(workload::chain_saga(
            &format!("chain-{k}"),
            &workload::step_names(k),
            bank.clone(),
            &registry,
        )?);
    }
    Ok((registry, defs))
}

/// Options of every benchmark coordinator: room for 200,000 running sagas.
fn options() -> Options {
    Options {
        max_running: 200_000,
        ..Options::default()
    }
}

impl GeoServer {
    /// Starts a coordinator on `store` and its API on 127.0.0.1:0.
    pub async fn start(store: Arc<dyn Store>, chains: &[usize], participant: Option<SocketAddr>) -> Result<GeoServer> {
        let bank = Bank::new();
        let (registry, defs) = registry_with_sagas(&bank, chains)?;
        let runners = Runners {
            http: HttpRunner::new(HostPolicy::Any),
            rust: registry,
            faults: Arc::new(Faults::new()),
        };
        let coordinator = Coordinator::start(store, runners, options()).await?;
        for def in &defs {
            coordinator.register(def).await?;
        }
        if let Some(addr) = participant {
            coordinator
                .register_definition(&workload::http_definition(addr))
                .await?;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = app(ApiState::new(coordinator.clone()));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(GeoServer {
            coordinator,
            addr,
            server,
        })
    }

    /// Stops the API and the coordinator.
    pub async fn stop(self) {
        self.server.abort();
        let _ = self.coordinator.shutdown().await;
    }

    /// Runs `n` sagas of `definition` from `concurrency` clients and measures them.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        rt: &Runtimes,
        definition: &str,
        steps: usize,
        concurrency: usize,
        n: u64,
        backend: &str,
        variant: &str,
        mut roles: CpuRoles,
    ) -> Result<Row> {
        roles.engine = Some(Cpu::SelfEngine);
        roles.client = Some(Cpu::SelfClient);
        let url = format!("http://{}/v1/sagas?wait_ms=30000", self.addr);
        let client = workload::http_client();
        let definition_name = definition.to_owned();
        let store = self.coordinator.store().clone();
        let stats0 = store.stats();
        let peak = SelfPeak::start();
        let cpu0 = roles.snapshot();
        let label = format!("geosaga {backend} {variant} {steps}st C={concurrency}");
        let stats = workload::closed_loop(&rt.client, n, concurrency, &label, move |seq| {
            let (client, url) = (client.clone(), url.clone());
            let body = json!({"definition": definition_name, "input": {"seq": seq}});
            async move { workload::post_for_status(&client, &url, &body).await }
        })
        .await?;
        let cpu1 = roles.snapshot();
        let (abs, delta) = peak.finish();
        let stats1 = store.stats();
        let mut row = Row::new(
            "geosaga",
            backend,
            variant,
            steps,
            concurrency,
            &stats,
            cpu0.per_saga_ms(&cpu1, stats.n),
        );
        row.peak_rss_mb = Some(delta);
        row.peak_rss_abs_mb = Some(abs);
        row.rss_note = "bench process peak minus RSS before the run (engine and client in one process)".into();
        let per = |x: u64| x as f64 / stats.n.max(1) as f64;
        row.commits_per_saga = Some(per(stats1.commits - stats0.commits));
        row.events_per_saga = Some(per(stats1.events - stats0.events));
        row.max_batch = Some(stats1.max_batch);
        Ok(row)
    }

    /// A few sagas to warm caches and connections; checked, not recorded.
    pub async fn warm_up(&self, rt: &Runtimes, definition: &str) -> Result<()> {
        let url = format!("http://{}/v1/sagas?wait_ms=30000", self.addr);
        let client = workload::http_client();
        let name = definition.to_owned();
        let stats = workload::closed_loop(&rt.client, 50, 4, "warm-up", move |seq| {
            let (client, url) = (client.clone(), url.clone());
            let body = json!({"definition": name, "input": {"seq": seq}});
            async move { workload::post_for_status(&client, &url, &body).await }
        })
        .await?;
        stats.check().context("warm-up")
    }
}

/// Starts the participant service on the participant runtime.
pub async fn start_participant(rt: &Runtimes) -> Result<SocketAddr> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rt.participant.spawn(async move {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let _ = tx.send(listener.local_addr());
        let _ = axum::serve(listener, workload::participant(Bank::new())).await;
    });
    Ok(rx.await??)
}

// ---- child processes: in-flight memory and recovery ----

/// What the `inflight` child reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InflightResult {
    /// Sagas held in flight.
    pub count: u64,
    /// RSS before starting them (kB).
    pub rss_before_kb: u64,
    /// RSS with all of them in flight (kB).
    pub rss_inflight_kb: u64,
    /// (rss_inflight - rss_before) / count, in bytes.
    pub bytes_per_saga: f64,
    /// Seconds to start them all (every first step entered).
    pub start_s: f64,
    /// Seconds from release until all settled.
    pub drain_s: f64,
    /// Completed.
    pub completed: u64,
    /// Compensated.
    pub compensated: u64,
}

async fn settled_counts(pool: &sqlx::SqlitePool) -> Result<(u64, u64, u64)> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM sagas GROUP BY status")
        .fetch_all(pool)
        .await?;
    let get = |s: &str| rows.iter().find(|r| r.0 == s).map_or(0, |r| r.1 as u64);
    let total: u64 = rows.iter().map(|r| r.1 as u64).sum();
    Ok((get("completed"), get("compensated"), total))
}

async fn reader(db: &Path) -> Result<sqlx::SqlitePool> {
    use std::str::FromStr;
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))?.read_only(true);
    Ok(sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?)
}

/// Starts `count` sagas, 256 at a time; keeps none of their records (the in-flight
/// measurement counts what the coordinator holds, not what this harness would).
async fn start_many(coordinator: &Coordinator, first: u64, count: u64) -> Result<()> {
    futures::stream::iter(first..first + count)
        .map(|seq| {
            let coordinator = coordinator.clone();
            async move {
                coordinator
                    .start_saga(StartSaga {
                        definition: "transfer".into(),
                        version: None,
                        input: json!({"seq": seq}),
                        idempotency_key: None,
                        trace_context: None,
                    })
                    .await
                    .map(drop)
            }
        })
        .buffer_unordered(256)
        .try_collect::<()>()
        .await?;
    Ok(())
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The `inflight` child: holds `count` sagas in their first step and measures RSS.
pub async fn inflight_child(count: u64) -> Result<()> {
    const WARM: u64 = 100;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("geosaga.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await?);
    let bank = Bank::new();
    let (registry, defs) = registry_with_sagas(&bank, &[])?;
    let runners = Runners {
        http: HttpRunner::new(HostPolicy::Any),
        rust: registry,
        faults: Arc::new(Faults::new()),
    };
    let coordinator = Coordinator::start(store, runners, options()).await?;
    coordinator.register(&defs[0]).await?;
    // Warm up: a hundred sagas run through, so that pools and caches exist before the baseline.
    start_many(&coordinator, 1, WARM).await?;
    let pool = reader(&db).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while settled_counts(&pool).await?.0 + settled_counts(&pool).await?.1 < WARM {
        if Instant::now() > deadline {
            bail!("warm-up sagas did not settle");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bank.blocking.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before_kb = procfs::status_kb("self", "VmRSS").unwrap_or(0);
    let t0 = Instant::now();
    start_many(&coordinator, WARM + 1, count).await?;
    wait_until("every first step", Duration::from_secs(600), || {
        bank.entered.load(Ordering::SeqCst) >= WARM + count
    })
    .await?;
    let start_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_inflight_kb = procfs::status_kb("self", "VmRSS").unwrap_or(0);
    let t1 = Instant::now();
    bank.release();
    let total = WARM + count;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (completed, compensated) = loop {
        let (c, k, _) = settled_counts(&pool).await?;
        if c + k >= total {
            break (c, k);
        }
        if Instant::now() > deadline {
            bail!("in-flight sagas did not settle: {c} completed, {k} compensated of {total}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let drain_s = t1.elapsed().as_secs_f64();
    let result = InflightResult {
        count,
        rss_before_kb,
        rss_inflight_kb,
        bytes_per_saga: (rss_inflight_kb as f64 - rss_before_kb as f64) * 1024.0 / count as f64,
        start_s,
        drain_s,
        completed: completed.saturating_sub(WARM - WARM / 10),
        compensated: compensated.saturating_sub(WARM / 10),
    };
    println!("RESULT {}", serde_json::to_string(&result)?);
    Ok(())
}

fn spawn_self(args: &[String]) -> Result<std::process::Child> {
    let exe = std::env::current_exe()?;
    Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning the benchmark's child process")
}

fn read_line_with(child: &mut std::process::Child, prefix: &str) -> Result<String> {
    let stdout = child.stdout.as_mut().context("child stdout")?;
    let mut lines = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            bail!("the child exited before saying {prefix}");
        }
        if let Some(rest) = line.trim_end().strip_prefix(prefix) {
            return Ok(rest.trim().to_owned());
        }
    }
}

/// Memory per in-flight saga: one fresh child process per count.
pub fn memory_per_inflight(count: u64) -> Result<InflightResult> {
    let mut child = spawn_self(&["inflight".into(), "--count".into(), count.to_string()])?;
    let line = read_line_with(&mut child, "RESULT")?;
    let status = child.wait()?;
    if !status.success() {
        bail!("the inflight child failed: {status}");
    }
    let result: InflightResult = serde_json::from_str(&line)?;
    let expected_compensated = count / 10;
    if result.compensated != expected_compensated || result.completed != count - expected_compensated {
        bail!(
            "in-flight run of {count}: expected {} completed and {expected_compensated} compensated, got {} and {}",
            count - expected_compensated,
            result.completed,
            result.compensated
        );
    }
    Ok(result)
}

/// What the recovery measurement found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryResult {
    /// Sagas in flight at the kill.
    pub count: u64,
    /// Seconds the first process took to get them all in flight.
    pub start_s: f64,
    /// Seconds from spawning the new process until every saga settled.
    pub recover_s: f64,
    /// Inside the new process: opening the store (s).
    pub open_s: f64,
    /// Inside the new process: until `Coordinator::start` returned, every saga adopted (s).
    pub adopted_s: f64,
    /// Inside the new process: until all settled (s).
    pub settled_s: f64,
    /// Completed.
    pub completed: u64,
    /// Compensated.
    pub compensated: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ServeReport {
    open_s: f64,
    adopted_s: f64,
    settled_s: f64,
    completed: u64,
    compensated: u64,
}

/// The `serve-sqlite` child. With `block`: starts `start` sagas whose first step blocks,
/// says READY once all are in flight, and waits to be killed. Without: recovers the
/// database's sagas with succeeding handlers and says SETTLED once `expect` have settled.
pub async fn serve_sqlite_child(db: &Path, block: bool, start: u64, expect: u64) -> Result<()> {
    let t0 = Instant::now();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db).await?);
    let open_s = t0.elapsed().as_secs_f64();
    let bank = Bank::new();
    bank.blocking.store(block, Ordering::SeqCst);
    let (registry, defs) = registry_with_sagas(&bank, &[])?;
    let runners = Runners {
        http: HttpRunner::new(HostPolicy::Any),
        rust: registry,
        faults: Arc::new(Faults::new()),
    };
    let coordinator = Coordinator::start(store, runners, options()).await?;
    let adopted_s = t0.elapsed().as_secs_f64();
    coordinator.register(&defs[0]).await?;
    if block {
        let t = Instant::now();
        start_many(&coordinator, 1, start).await?;
        wait_until("every first step", Duration::from_secs(600), || {
            bank.entered.load(Ordering::SeqCst) >= start
        })
        .await?;
        println!("READY {}", json!({"start_s": t.elapsed().as_secs_f64()}));
        std::io::stdout().flush()?;
        std::future::pending::<()>().await;
    }
    let pool = reader(db).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (completed, compensated) = loop {
        let (c, k, _) = settled_counts(&pool).await?;
        if c + k >= expect {
            break (c, k);
        }
        if Instant::now() > deadline {
            bail!("recovery did not settle: {c} completed, {k} compensated of {expect}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let report = ServeReport {
        open_s,
        adopted_s,
        settled_s: t0.elapsed().as_secs_f64(),
        completed,
        compensated,
    };
    println!("SETTLED {}", serde_json::to_string(&report)?);
    Ok(())
}

/// Time to recover `count` in-flight sagas after SIGKILL.
pub fn recovery(count: u64) -> Result<RecoveryResult> {
    let dir = tempfile::tempdir()?;
    let db: PathBuf = dir.path().join("geosaga.db");
    let db_arg = db.to_string_lossy().into_owned();
    let mut first = spawn_self(&[
        "serve-sqlite".into(),
        "--db".into(),
        db_arg.clone(),
        "--block".into(),
        "--start".into(),
        count.to_string(),
    ])?;
    let ready: Value = serde_json::from_str(&read_line_with(&mut first, "READY")?)?;
    first.kill()?; // SIGKILL
    first.wait()?;
    let t = Instant::now();
    let mut second = spawn_self(&[
        "serve-sqlite".into(),
        "--db".into(),
        db_arg,
        "--expect".into(),
        count.to_string(),
    ])?;
    let settled = read_line_with(&mut second, "SETTLED")?;
    let recover_s = t.elapsed().as_secs_f64();
    let status = second.wait()?;
    if !status.success() {
        bail!("the recovering child failed: {status}");
    }
    let report: ServeReport = serde_json::from_str(&settled)?;
    let expected_compensated = count / 10;
    if report.compensated != expected_compensated || report.completed != count - expected_compensated {
        bail!(
            "recovery of {count}: expected {} completed and {expected_compensated} compensated, got {} and {}",
            count - expected_compensated,
            report.completed,
            report.compensated
        );
    }
    Ok(RecoveryResult {
        count,
        start_s: ready["start_s"].as_f64().unwrap_or(0.0),
        recover_s,
        open_s: report.open_s,
        adopted_s: report.adopted_s,
        settled_s: report.settled_s,
        completed: report.completed,
        compensated: report.compensated,
    })
}
