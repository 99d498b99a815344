//! The geosaga benchmark harness (issue #6).
//!
//! `bench all` runs the common workload (`shared/bench/WORKLOAD.md`) against geosaga on
//! SQLite and PostgreSQL (through its REST API), Restate and DBOS, measures the storage
//! limit, the cost growth with steps, the memory per in-flight saga and the recovery time
//! after SIGKILL, and writes `docs/benchmarks.md` with SVG plots beside it. `bench quick`
//! is the same with small N (and, with `--no-peers`, geosaga alone): the CI smoke test. Both
//! exit non-zero when any engine does not end exactly 90% completed, 10% compensated.
//! `bench soak` runs a steady rate with retention on and samples the store's size over time.

/// The allocator the `geosaga` binary ships with, so that the engine measured in this
/// process allocates as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod geosaga;
mod measure;
mod peers;
mod pg;
mod procfs;
mod report;
mod soak;
mod storage;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use coordinator::Store;
use coordinator::store::postgres::PostgresStore;
use coordinator::store::sqlite::SqliteStore;

use crate::geosaga::{GeoServer, Runtimes};
use crate::measure::{Cpu, CpuRoles, Row};
use crate::report::{HTTP_STEPS, POSTGRES, RUST_STEPS, Report, SQLITE};

#[derive(Parser)]
#[command(
    name = "bench",
    about = "The geosaga benchmark harness: the common saga workload against geosaga and its peers."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The full run: every engine, every section; writes docs/benchmarks.md and its plots.
    All(SuiteArgs),
    /// A few minutes, small N (the CI smoke test with --no-peers); writes bench/cache/quick/.
    Quick(SuiteArgs),
    /// A steady rate of sagas with retention on, for minutes: the store's size and the
    /// throughput over time (writes a Markdown table, `--out`).
    Soak(soak::SoakArgs),
    /// Renders the report again from its JSON and bench/notes.md, without running anything.
    Report {
        /// The JSON a run wrote (default: docs/benchmarks.json).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// One geosaga run on SQLite (Rust steps, REST API), for profiling.
    #[command(hide = true)]
    Profile {
        /// Closed-loop clients.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Sagas.
        #[arg(long, default_value_t = 5000)]
        n: u64,
        /// Steps per saga (3: the transfer).
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// On a throwaway PostgreSQL instead of SQLite.
        #[arg(long)]
        postgres: bool,
    },
    /// Child process: holds COUNT sagas in flight and reports the RSS they take.
    #[command(hide = true)]
    Inflight {
        /// Sagas to hold in flight.
        #[arg(long)]
        count: u64,
    },
    /// Child process: a coordinator on a SQLite file, for the recovery measurement.
    #[command(hide = true)]
    ServeSqlite {
        /// The database file.
        #[arg(long)]
        db: PathBuf,
        /// Start --start sagas whose first step blocks, say READY, wait to be killed.
        #[arg(long)]
        block: bool,
        /// Sagas to start (with --block).
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Sagas to wait for (without --block).
        #[arg(long, default_value_t = 0)]
        expect: u64,
    },
}

#[derive(Args, Clone)]
struct SuiteArgs {
    /// geosaga only: skip Restate and DBOS.
    #[arg(long)]
    no_peers: bool,
    /// Skip PostgreSQL (geosaga on PostgreSQL, DBOS on PostgreSQL, pgbench).
    #[arg(long)]
    no_postgres: bool,
    /// Where the report goes (default: docs/ for `all`, bench/cache/quick/ for `quick`).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Sizes of one suite.
struct Plan {
    mode: &'static str,
    levels: Vec<(usize, u64)>,
    chains: Vec<usize>,
    steps_n: u64,
    inflight: Vec<u64>,
    recovery: u64,
    sqlite_limit: Duration,
    pgbench_s: u64,
}

impl Plan {
    fn all() -> Plan {
        Plan {
            mode: "all",
            levels: vec![(1, 2000), (16, 5000), (64, 5000)],
            chains: vec![1, 3, 10, 30],
            steps_n: 2000,
            inflight: vec![1_000, 10_000, 100_000],
            recovery: 10_000,
            sqlite_limit: Duration::from_secs(5),
            pgbench_s: 10,
        }
    }

    fn quick() -> Plan {
        Plan {
            mode: "quick",
            levels: vec![(1, 200), (16, 500), (64, 500)],
            chains: vec![1, 3, 10, 30],
            steps_n: 200,
            inflight: vec![1_000, 10_000],
            recovery: 2_000,
            sqlite_limit: Duration::from_secs(2),
            pgbench_s: 3,
        }
    }
}

fn workspace_root() -> PathBuf {
    // bench/ sits in the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

fn sh(cmd: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).to_owned());
    let mem = procfs_meminfo();
    vec![
        ("nproc".into(), sh("nproc")),
        ("CPU".into(), model.unwrap_or_default()),
        ("Memory".into(), mem),
        ("Kernel".into(), sh("uname -sr")),
        ("`uptime` before the run".into(), sh("uptime")),
        (
            "Disk of the temp dirs".into(),
            sh("df -h --output=source,fstype,size /tmp | tail -1"),
        ),
    ]
}

fn procfs_meminfo() -> String {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("MemTotal"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn runtime(name: &str, threads: usize) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let engine = match runtime(
        "geosaga-engine",
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    ) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = engine.block_on(async {
        match cli.command {
            Cmd::All(args) => suite(Plan::all(), args, "cargo run --release -p bench -- all").await,
            Cmd::Quick(args) => suite(Plan::quick(), args, "cargo run --release -p bench -- quick").await,
            Cmd::Report { json } => render_again(json).map(|()| true),
            Cmd::Soak(args) => {
                let client_rt = runtime(measure::CLIENT_THREADS, 2)?;
                let ok = soak::soak(args, client_rt.handle().clone()).await;
                client_rt.shutdown_background();
                ok
            }
            Cmd::Profile {
                concurrency,
                n,
                steps,
                postgres,
            } => profile(concurrency, n, steps, postgres).await.map(|()| true),
            Cmd::Inflight { count } => geosaga::inflight_child(count).await.map(|()| true),
            Cmd::ServeSqlite {
                db,
                block,
                start,
                expect,
            } => geosaga::serve_sqlite_child(&db, block, start, expect)
                .await
                .map(|()| true),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Records a row, and a failure when its outcome check did not pass.
fn record(report: &mut Report, row: Row, section: &str) {
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

fn problem(report: &mut Report, what: &str, e: &anyhow::Error) {
    let text = format!("{what}: {e:#}");
    eprintln!("!! {text}");
    report.problems.push(text);
}

async fn suite(plan: Plan, args: SuiteArgs, command: &str) -> Result<bool> {
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
fn write_report(report: &Report, out: &Path, root: &Path) -> Result<PathBuf> {
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

fn render_again(json: Option<PathBuf>) -> Result<()> {
    let root = workspace_root();
    let json = json.unwrap_or_else(|| root.join("docs/benchmarks.json"));
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(&json).with_context(|| format!("reading {}", json.display()))?)?;
    let out = json.parent().context("the JSON's folder")?;
    let md = write_report(&report, out, &root)?;
    eprintln!("== wrote {}", md.display());
    Ok(())
}

async fn profile(concurrency: usize, n: u64, steps: usize, postgres: bool) -> Result<()> {
    let client_rt = runtime(measure::CLIENT_THREADS, 2)?;
    let participant_rt = runtime(measure::PARTICIPANT_THREADS, 2)?;
    let rt = Runtimes {
        client: client_rt.handle().clone(),
        participant: participant_rt.handle().clone(),
    };
    let dir = tempfile::tempdir()?;
    let mut roles = CpuRoles::default();
    let (store, pg, backend): (Arc<dyn Store>, _, _) = if postgres {
        let pg = pg::Pg::start(true).await?;
        roles.database = Some(Cpu::PgTree(pg.postmaster));
        let store = Arc::new(PostgresStore::connect(&pg.create_db("geosaga_profile").await?).await?);
        (store, Some(pg), POSTGRES)
    } else {
        (
            Arc::new(SqliteStore::open(&dir.path().join("geosaga.db")).await?),
            None,
            SQLITE,
        )
    };
    let server = GeoServer::start(store, &[steps], None).await?;
    let definition = if steps == 3 {
        "transfer".to_owned()
    } else {
        format!("chain-{steps}")
    };
    server.warm_up(&rt, "transfer").await?;
    let row = server
        .run(&rt, &definition, steps, concurrency, n, backend, RUST_STEPS, roles)
        .await?;
    let mut report = Report::default();
    record(&mut report, row, "workload");
    server.stop().await;
    drop(pg);
    client_rt.shutdown_background();
    participant_rt.shutdown_background();
    if report.failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("the outcome check failed")
    }
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
