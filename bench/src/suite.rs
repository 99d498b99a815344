//! `bench all` and `bench quick`: the suite of measurements in order (the common workload on
//! geosaga's stores and its peers, the storage limit, cost growth with steps, memory per
//! in-flight saga, recovery after SIGKILL), each recorded into the [`Report`] with its
//! outcome check, and the report written as Markdown, JSON and plots.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use coordinator::Store;
use coordinator::store::postgres::PostgresStore;
use coordinator::store::sqlite::SqliteStore;

use crate::geosaga::{GeoServer, Runtimes};
use crate::measure::{Cpu, CpuRoles, Row};
use crate::report::{HTTP_STEPS, POSTGRES, RUST_STEPS, Report, SQLITE};
use crate::{Plan, SuiteArgs, geosaga, machine, measure, peers, pg, runtime, sh, storage, workspace_root};

/// Records a row, and a failure when its outcome check did not pass.
pub(crate) fn record(report: &mut Report, row: Row, section: &str) {
    eprintln!(
        "  {:<58} C={:<3} {:>8.1} sagas/s  p50 {:>7.2} ms  p99 {:>7.2} ms  CPU {:>6.3} ms/saga ({}){}",
        format!("{} {}st", row.label(), row.steps),
        row.concurrency,
        row.sagas_per_s,
        row.p50_ms,
        row.p99_ms,
        row.cpu_total_ms(),
        [
            ("engine", row.cpu_engine_ms),
            ("participant", row.cpu_participant_ms),
            ("client", row.cpu_client_ms),
            ("db", row.cpu_db_ms)
        ]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k} {v:.3}")))
        .collect::<Vec<_>>()
        .join(", "),
        row.commits_per_saga
            .map_or(String::new(), |c| format!("  {c:.3} commits/saga"))
    );
    if !row.ok {
        let failure = format!(
            "{} at C={} ({section}): {} completed, {} compensated, {} other of {} {:?}",
            row.label(),
            row.concurrency,
            row.completed,
            row.compensated,
            row.other,
            row.n,
            row.errors
        );
        eprintln!("!! OUTCOME CHECK FAILED: {failure}");
        report.failures.push(failure);
    }
    match section {
        "steps" => report.steps.push(row),
        _ => report.workload.push(row),
    }
}

pub(crate) fn problem(report: &mut Report, what: &str, e: &anyhow::Error) {
    let text = format!("{what}: {e:#}");
    eprintln!("!! {text}");
    report.problems.push(text);
}

pub(crate) async fn suite(plan: Plan, args: SuiteArgs, command: &str) -> Result<bool> {
    let t_start = Instant::now();
    let root = workspace_root();
    let out = args.out.clone().unwrap_or_else(|| {
        if plan.mode == "all" {
            root.join("docs")
        } else {
            root.join("bench/cache/quick")
        }
    });
    std::fs::create_dir_all(&out)?;
    let cache = root.join("bench/cache");
    let peers_dir = root.join("bench/peers");
    std::fs::create_dir_all(&cache)?;
    let mut flags = String::new();
    if args.no_peers {
        flags.push_str(" --no-peers");
    }
    if args.no_postgres {
        flags.push_str(" --no-postgres");
    }
    let mut report = Report {
        mode: plan.mode.into(),
        command: format!("{command}{flags}"),
        started: sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        machine: machine(),
        ..Report::default()
    };
    eprintln!("== geosaga benchmark, {} mode; {}", plan.mode, sh("uptime"));
    let client_rt = runtime(measure::CLIENT_THREADS, 2)?;
    let participant_rt = runtime(measure::PARTICIPANT_THREADS, 2)?;
    let rt = Runtimes {
        client: client_rt.handle().clone(),
        participant: participant_rt.handle().clone(),
    };
    report.versions.push((
        "geosaga".into(),
        sh(&format!("cd {} && git describe --always --dirty", root.display())),
    ));
    report.versions.push(("rustc".into(), sh("rustc --version")));

    // ---- the storage limit ----
    eprintln!("== storage limit");
    match storage::sqlite_commits(plan.sqlite_limit).await {
        Ok(row) => report.storage.push(row),
        Err(e) => problem(&mut report, "SQLite commit rate", &e),
    }
    let sqlite_version = sqlite_version().await.unwrap_or_default();
    report.versions.push((
        "SQLite (the bundled libsqlite3 of sqlx and rusqlite)".into(),
        sqlite_version,
    ));
    let pg = if args.no_postgres {
        None
    } else {
        match pg::Pg::start(true).await {
            Ok(pg) => Some(pg),
            Err(e) => {
                problem(&mut report, "PostgreSQL", &e);
                None
            }
        }
    };
    if let Some(pg) = &pg {
        report.versions.push(("PostgreSQL".into(), pg.version.clone()));
        report.pg_settings = pg_settings(pg).await.unwrap_or_default();
        for clients in [1, 16, 64] {
            match storage::pgbench(pg, clients, plan.pgbench_s).await {
                Ok(row) => report.storage.push(row),
                Err(e) => problem(&mut report, "pgbench", &e),
            }
        }
    }

    // ---- geosaga on SQLite: Rust steps, HTTP steps, step growth ----
    eprintln!("== geosaga on SQLite");
    {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("geosaga.db")).await?);
        let participant = geosaga::start_participant(&rt).await?;
        let server = GeoServer::start(store, &plan.chains, Some(participant)).await?;
        server.warm_up(&rt, "transfer").await?;
        for &(c, n) in &plan.levels {
            let row = server
                .run(&rt, "transfer", 3, c, n, SQLITE, RUST_STEPS, CpuRoles::default())
                .await?;
            record(&mut report, row, "workload");
        }
        server.warm_up(&rt, "transfer_http").await?;
        for &(c, n) in &plan.levels {
            let roles = CpuRoles {
                participant: Some(Cpu::SelfParticipant),
                ..CpuRoles::default()
            };
            let row = server
                .run(&rt, "transfer_http", 3, c, n, SQLITE, HTTP_STEPS, roles)
                .await?;
            record(&mut report, row, "workload");
        }
        eprintln!("== cost growth with steps");
        for &k in &plan.chains {
            let row = server
                .run(
                    &rt,
                    &format!("chain-{k}"),
                    k,
                    16,
                    plan.steps_n,
                    SQLITE,
                    RUST_STEPS,
                    CpuRoles::default(),
                )
                .await?;
            record(&mut report, row, "steps");
        }
        server.stop().await;
    }

    // ---- geosaga on PostgreSQL ----
    if let Some(pg) = &pg {
        eprintln!("== geosaga on PostgreSQL");
        let run: Result<()> = async {
            let url = pg.create_db("geosaga_bench").await?;
            let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url).await?);
            let server = GeoServer::start(store, &[], None).await?;
            server.warm_up(&rt, "transfer").await?;
            for &(c, n) in &plan.levels {
                let roles = CpuRoles {
                    database: Some(Cpu::PgTree(pg.postmaster)),
                    ..CpuRoles::default()
                };
                let row = server
                    .run(&rt, "transfer", 3, c, n, POSTGRES, RUST_STEPS, roles)
                    .await?;
                record(&mut report, row, "workload");
            }
            server.stop().await;
            Ok(())
        }
        .await;
        if let Err(e) = run {
            problem(&mut report, "geosaga on PostgreSQL", &e);
            report
                .failures
                .push(format!("geosaga on PostgreSQL did not run: {e:#}"));
        }
    }

    // ---- memory per in-flight saga, recovery ----
    eprintln!("== memory per in-flight saga");
    for &count in &plan.inflight {
        let result = tokio::task::spawn_blocking(move || geosaga::memory_per_inflight(count)).await?;
        match result {
            Ok(m) => {
                eprintln!(
                    "  {count} in flight: {:.0} bytes/saga (start {:.2} s, drain {:.2} s)",
                    m.bytes_per_saga, m.start_s, m.drain_s
                );
                report.inflight.push(m);
            }
            Err(e) => {
                problem(&mut report, &format!("memory per in-flight saga ({count})"), &e);
                report.failures.push(format!("in-flight run of {count}: {e:#}"));
            }
        }
    }
    eprintln!("== recovery of {} in-flight sagas after SIGKILL", plan.recovery);
    let count = plan.recovery;
    match tokio::task::spawn_blocking(move || geosaga::recovery(count)).await? {
        Ok(r) => {
            eprintln!("  recovered {} sagas in {:.2} s", r.count, r.recover_s);
            report.recovery = Some(r);
        }
        Err(e) => {
            problem(&mut report, "recovery", &e);
            report.failures.push(format!("recovery: {e:#}"));
        }
    }

    // ---- the peers ----
    if !args.no_peers {
        eprintln!("== Restate");
        let restate: Result<()> = async {
            let install = peers::install_restate(&peers_dir, &cache).context("installing Restate from npm")?;
            report.versions.push(("Restate".into(), install.versions.clone()));
            let server = peers::Restate::start(&install).await?;
            server.warm_up(&rt).await?;
            for &(c, n) in &plan.levels {
                let row = server.run(&rt, c, n).await?;
                record(&mut report, row, "workload");
            }
            Ok(())
        }
        .await;
        if let Err(e) = restate {
            problem(&mut report, "Restate", &e);
        }
        eprintln!("== DBOS");
        match peers::install_dbos(&peers_dir, &cache).context("installing DBOS from PyPI") {
            Ok(install) => {
                report.versions.push(("DBOS".into(), install.versions.clone()));
                if let Some(pg) = &pg {
                    let rows: Result<Vec<Row>> = async {
                        let url = pg.create_db("dbos_bench").await?;
                        peers::run_dbos(&install, &url, POSTGRES, &plan.levels, Some(pg.postmaster)).await
                    }
                    .await;
                    match rows {
                        Ok(rows) => rows.into_iter().for_each(|r| record(&mut report, r, "workload")),
                        Err(e) => problem(&mut report, "DBOS on PostgreSQL", &e),
                    }
                }
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite:///{}", dir.path().join("dbos.sqlite").display());
                match peers::run_dbos(&install, &url, SQLITE, &plan.levels, None).await {
                    Ok(rows) => rows.into_iter().for_each(|r| record(&mut report, r, "workload")),
                    Err(e) => problem(&mut report, "DBOS on SQLite", &e),
                }
            }
            Err(e) => problem(&mut report, "DBOS", &e),
        }
    }
    drop(pg);

    // ---- the report ----
    report.duration_s = t_start.elapsed().as_secs_f64();
    report.machine.push(("`uptime` after the run".into(), sh("uptime")));
    let md_path = write_report(&report, &out, &root)?;
    eprintln!("== wrote {} ({:.0} s)", md_path.display(), report.duration_s);
    client_rt.shutdown_background();
    participant_rt.shutdown_background();
    if report.failures.is_empty() {
        Ok(true)
    } else {
        eprintln!("\n!!!! THE OUTCOME CHECK FAILED ({} runs):", report.failures.len());
        for f in &report.failures {
            eprintln!("!!!!   {f}");
        }
        Ok(false)
    }
}

/// Writes the Markdown and the plots of `report` into `out`.
pub(crate) fn write_report(report: &Report, out: &Path, root: &Path) -> Result<PathBuf> {
    let name = if report.mode == "all" {
        "benchmarks"
    } else {
        "benchmarks-quick"
    };
    let notes = if report.mode == "all" {
        std::fs::read_to_string(root.join("bench/notes.md")).unwrap_or_default()
    } else {
        String::new()
    };
    let md_path = out.join(format!("{name}.md"));
    std::fs::write(&md_path, report.markdown(name, &notes))?;
    std::fs::write(out.join(format!("{name}.json")), serde_json::to_string_pretty(report)?)?;
    if let Err(e) = report.plots(&out.join(name)) {
        eprintln!("!! plots: {e:#}");
    }
    Ok(md_path)
}

async fn sqlite_version() -> Result<String> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:").await?;
    let (v,): (String,) = sqlx::query_as("SELECT sqlite_version()").fetch_one(&mut conn).await?;
    Ok(v)
}

async fn pg_settings(pg: &pg::Pg) -> Result<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&pg.url("postgres")).await?;
    let mut parts = Vec::new();
    for name in [
        "fsync",
        "synchronous_commit",
        "wal_sync_method",
        "full_page_writes",
        "shared_buffers",
    ] {
        let (v,): (String,) = sqlx::query_as(&format!("SHOW {name}")).fetch_one(&mut conn).await?;
        parts.push(format!("`{name}={v}`"));
    }
    Ok(parts.join(", "))
}
