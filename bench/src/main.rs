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
mod suite;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use coordinator::Store;
use coordinator::store::postgres::PostgresStore;
use coordinator::store::sqlite::SqliteStore;

use crate::geosaga::{GeoServer, Runtimes};
use crate::measure::{Cpu, CpuRoles};
use crate::report::{POSTGRES, RUST_STEPS, Report, SQLITE};
use crate::suite::{record, suite, write_report};

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
