//! `bench soak`: a steady rate of sagas for a long time with retention on, sampling the
//! store's size, the sagas it holds and the throughput as time passes (issue #23). With
//! retention the store should level off once the first sagas reach their age, and stay
//! there, without the throughput falling.
//!
//! The coordinator runs in this process behind its REST API (Rust steps, the three-step
//! transfer of the workload, 10% compensated); the load is open: one start every
//! `1/rate` s, each waiting for its saga (`wait_ms`), whatever the latency.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use coordinator::Store;
use coordinator::retention::{Retention, RetentionOptions, parse_duration, show};
use coordinator::store::postgres::PostgresStore;
use coordinator::store::sqlite::SqliteStore;
use serde_json::json;

use crate::geosaga::GeoServer;
use crate::pg;
use crate::workload::{self, Outcome};

/// Options of `bench soak`.
#[derive(Args, Clone, Debug)]
pub struct SoakArgs {
    /// How long each backend runs, in minutes.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Sagas started per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// The retention age (`60s`, `10m`).
    #[arg(long, default_value = "60s")]
    retention: String,
    /// How often the store is measured (`30s`).
    #[arg(long, default_value = "30s")]
    sample: String,
    /// Backends, in order: sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    /// Where the report goes (Markdown).
    #[arg(long, default_value = "bench/cache/soak.md")]
    out: PathBuf,
}

/// One measurement.
struct Sample {
    at_s: f64,
    bytes: u64,
    sagas: i64,
    deleted: u64,
    done: u64,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// What one backend's run measured.
struct Run {
    samples: Vec<Sample>,
    wrong: u64,
    errors: Vec<String>,
    /// Bytes per saga held at the end, and how many were held.
    sizing: (f64, i64),
}

/// What the load saw since the last sample: latencies (µs) and outcomes.
#[derive(Default)]
struct Window {
    latencies_us: Vec<u64>,
    wrong: u64,
    errors: Vec<String>,
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Runs the soak on each backend and writes the report; `false` when an outcome was wrong.
pub async fn soak(args: SoakArgs, client: tokio::runtime::Handle) -> Result<bool> {
    let age = parse_duration(&args.retention).map_err(anyhow::Error::msg)?;
    let every = parse_duration(&args.sample).map_err(anyhow::Error::msg)?;
    let mut report = format!(
        "# Soak: a steady rate with retention on\n\n`cargo run --release -p bench -- soak --minutes {} --rate {} \
         --retention {} --sample {} --backends {}`, started {} on this machine (`uptime`: {}).\n\n\
         One start every {:.1} ms (open loop, each waiting for its saga), the three-step transfer with Rust \
         steps through the REST API, 10% compensated; retention deletes finished sagas older than {} in \
         batches of {} (no archive). *Store* is the database's size on disk (SQLite: the file and its \
         WAL; PostgreSQL: the two tables with their indexes and TOAST), *sagas* the rows it holds.\n",
        args.minutes,
        args.rate,
        args.retention,
        args.sample,
        args.backends.join(","),
        crate::sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        crate::sh("uptime"),
        1000.0 / args.rate as f64,
        show(age),
        coordinator::retention::DEFAULT_BATCH,
    );
    let mut ok = true;
    for backend in &args.backends {
        let run = run(backend, &args, age, every, client.clone()).await?;
        ok &= run.wrong == 0;
        // Retention must have deleted something once the run outlasted the age.
        let deleted = run.samples.last().map_or(0, |s| s.deleted);
        if deleted == 0 && age.as_secs_f64() < args.minutes * 60.0 {
            eprintln!("!! retention deleted nothing on {backend} in a run longer than its age");
            ok = false;
        }
        write_table(&mut report, backend, &run);
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &report).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("{report}\n== written to {}", args.out.display());
    Ok(ok)
}

/// The store's size on disk and its saga rows.
enum Probe {
    Sqlite(PathBuf, sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Probe {
    /// Bytes per saga held, as the data alone takes them: SQLite's pages in use once the WAL
    /// is checkpointed; PostgreSQL's tables rewritten without dead rows (`VACUUM FULL`).
    async fn bytes_per_saga(&self) -> Result<(f64, i64)> {
        match self {
            Probe::Sqlite(path, _) => {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await?;
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await?;
                let (used, rows): (i64, i64) = sqlx::query_as(
                    "SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count()), \
                     (SELECT COUNT(*) FROM sagas)",
                )
                .fetch_one(&pool)
                .await?;
                let page: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(&pool).await?;
                pool.close().await;
                Ok(((used * page) as f64 / rows.max(1) as f64, rows))
            }
            Probe::Postgres(pool) => {
                sqlx::query("VACUUM FULL sagas").execute(pool).await?;
                sqlx::query("VACUUM FULL saga_events").execute(pool).await?;
                let (bytes, rows) = self.measure().await?;
                Ok((bytes as f64 / rows.max(1) as f64, rows))
            }
        }
    }

    async fn measure(&self) -> Result<(u64, i64)> {
        match self {
            Probe::Sqlite(path, pool) => {
                let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                let wal = PathBuf::from(format!("{}-wal", path.display()));
                let rows = sqlx::query_scalar("SELECT COUNT(*) FROM sagas").fetch_one(pool).await?;
                Ok((size(path) + size(&wal), rows))
            }
            Probe::Postgres(pool) => {
                let (bytes, rows): (i64, i64) = sqlx::query_as(
                    "SELECT pg_total_relation_size('sagas') + pg_total_relation_size('saga_events'), \
                     (SELECT COUNT(*) FROM sagas)",
                )
                .fetch_one(pool)
                .await?;
                Ok((bytes as u64, rows))
            }
        }
    }
}

async fn run(
    backend: &str,
    args: &SoakArgs,
    age: Duration,
    every: Duration,
    client: tokio::runtime::Handle,
) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let mut pg_server = None;
    let (store, probe): (Arc<dyn Store>, Probe) = match backend {
        "sqlite" => {
            let path = dir.path().join("geosaga.db");
            let store = SqliteStore::open(&path).await?;
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display())).await?;
            (Arc::new(store), Probe::Sqlite(path, pool))
        }
        "postgres" => {
            let server = pg::Pg::start(true).await?;
            let url = server.create_db("geosaga_soak").await?;
            let store = PostgresStore::connect(&url).await?;
            let pool = sqlx::PgPool::connect(&url).await?;
            pg_server = Some(server);
            (Arc::new(store), Probe::Postgres(pool))
        }
        other => bail!("unknown backend `{other}` (sqlite or postgres)"),
    };
    let server = GeoServer::start(store.clone(), &[], None).await?;
    let metrics = server.coordinator.metrics().clone();
    let retention = Retention::start(store, RetentionOptions::new(age), "bench", metrics)?;
    eprintln!("== soak on {backend}: {} sagas/s for {} min", args.rate, args.minutes);

    let window = Arc::new(Mutex::new(Window::default()));
    let url = format!("http://{}/v1/sagas?wait_ms=60000", server.addr);
    let http = workload::http_client();
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let t0 = Instant::now();
    let mut load = {
        let (window, rate, client) = (window.clone(), args.rate, client.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0u64;
            let mut running = Vec::new();
            while t0.elapsed() < total {
                tick.tick().await;
                seq += 1;
                let (http, url, window) = (http.clone(), url.clone(), window.clone());
                running.push(client.spawn(async move {
                    let body = json!({"definition": "transfer", "input": {"seq": seq}});
                    let t = Instant::now();
                    let outcome = workload::post_for_status(&http, &url, &body).await;
                    let expected = if workload::fails(seq) {
                        Outcome::Compensated
                    } else {
                        Outcome::Completed
                    };
                    let mut w = window.lock().expect("lock");
                    w.latencies_us.push(t.elapsed().as_micros() as u64);
                    if outcome != expected {
                        w.wrong += 1;
                        if w.errors.len() < 3 {
                            w.errors.push(format!("saga {seq}: {outcome:?}"));
                        }
                    }
                }));
                running.retain(|h| !h.is_finished());
            }
            for h in running {
                let _ = h.await;
            }
        })
    };
    let mut samples = Vec::new();
    let (mut wrong, mut errors, mut done) = (0, Vec::new(), 0u64);
    let mut last = Instant::now();
    loop {
        // A sample every `every`, and one when the load has ended.
        let finished = tokio::time::timeout(every, &mut load).await.is_ok();
        let mut w = std::mem::take(&mut *window.lock().expect("lock"));
        w.latencies_us.sort_unstable();
        wrong += w.wrong;
        errors.extend(w.errors);
        done += w.latencies_us.len() as u64;
        let (bytes, sagas) = probe.measure().await?;
        let deleted = deleted_so_far(&server.coordinator.render_metrics());
        let sample = Sample {
            at_s: t0.elapsed().as_secs_f64(),
            bytes,
            sagas,
            deleted,
            done,
            rate: w.latencies_us.len() as f64 / last.elapsed().as_secs_f64(),
            p50_ms: quantile(&w.latencies_us, 0.5),
            p99_ms: quantile(&w.latencies_us, 0.99),
        };
        last = Instant::now();
        eprintln!(
            "  {:>6.0} s  store {:>7.1} MB  {:>7} sagas  {:>8} deleted  {:>6.1} sagas/s  p50 {:>6.2} ms  p99 {:>7.2} ms",
            sample.at_s,
            sample.bytes as f64 / 1e6,
            sample.sagas,
            sample.deleted,
            sample.rate,
            sample.p50_ms,
            sample.p99_ms
        );
        samples.push(sample);
        if finished {
            break;
        }
    }
    drop(retention);
    server.stop().await;
    let (per_saga, held) = probe.bytes_per_saga().await?;
    eprintln!("  {per_saga:.0} bytes per saga ({held} sagas held at the end)");
    let sizing = (per_saga, held);
    drop(pg_server);
    errors.truncate(5);
    Ok(Run {
        samples,
        wrong,
        errors,
        sizing,
    })
}

/// `geosaga_retention_deleted_sagas_total` from the metrics text.
fn deleted_so_far(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("geosaga_retention_deleted_sagas_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn write_table(report: &mut String, backend: &str, run: &Run) {
    let Run {
        samples,
        wrong,
        errors,
        sizing: (per_saga, held),
    } = run;
    let _ = write!(
        report,
        "\n## {backend}\n\n| time | store | sagas held | deleted so far | finished so far | sagas/s | p50 | p99 |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for s in samples {
        let _ = writeln!(
            report,
            "| {:.0} s | {:.1} MB | {} | {} | {} | {:.1} | {:.2} ms | {:.2} ms |",
            s.at_s,
            s.bytes as f64 / 1e6,
            s.sagas,
            s.deleted,
            s.done,
            s.rate,
            s.p50_ms,
            s.p99_ms
        );
    }
    let _ = writeln!(
        report,
        "\nOutcome check: {}.",
        if *wrong == 0 {
            "every saga ended as the workload meant (90% completed, 10% compensated)".to_owned()
        } else {
            format!("{wrong} sagas ended otherwise, e.g. {errors:?}")
        }
    );
    let _ = writeln!(
        report,
        "\nData per saga at the end: {per_saga:.0} bytes ({held} sagas held; SQLite: pages in use after a \
         checkpoint, PostgreSQL: the tables after `VACUUM FULL`)."
    );
}
