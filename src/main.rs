//! `geosaga`: the command-line interface.
//!
//! - `serve` and `dev` run a coordinator with its REST API (`geosaga::serve`, the library's
//!   [`geosaga::Server`] builder).
//! - `definitions`, `plan` and `saga` talk to a running coordinator or work offline
//!   ([`client`]).
//! - `backup`, `restore` and `archive` are the operator's ([`ops`]).
//!
//! Exit codes: 0 success; 1 an error; 2 bad usage; 3 not found; 4 conflict (idempotency,
//! illegal transition); 5 invalid definition or input; with `saga start --wait`: 10 the saga
//! was compensated, 11 it is stuck, 12 it had not settled when the wait ended; with
//! `check`: 20 a check did not hold; 141 stdout was closed before everything was printed
//! (`geosaga saga list | head`; [`geosaga::output`]).

/// mimalloc instead of glibc's allocator: the engine allocates and frees small request,
/// event and future buffers across threads all the time, and glibc's malloc spent a fifth
/// of the engine's CPU doing it at C = 64 (bench/notes.md, sixth pass).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod kv;
mod ops;
mod region;
mod region_backup;

use geosaga::{dev, outln, serve};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// geosaga: a saga orchestrator and geo-distributed transaction coordinator.
#[derive(Parser)]
#[command(name = "geosaga", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a coordinator and its REST API.
    Serve(Box<serve::ServeArgs>),
    /// Run everything on this machine: coordinator on SQLite, the examples registered, and a
    /// demo participant service whose failures you pick with the saga input.
    Dev(dev::DevArgs),
    /// Register, validate and print saga definitions.
    #[command(subcommand)]
    Definitions(DefinitionsCommand),
    /// Print a definition's plan: stages, parallelism and the unwind order.
    Plan {
        /// The definition file.
        file: PathBuf,
        /// Print Graphviz dot instead of text.
        #[arg(long)]
        dot: bool,
    },
    /// Start, inspect, cancel and retry sagas.
    #[command(subcommand)]
    Saga(SagaCommand),
    /// Run a saga against its real participants, through a recording proxy, and report
    /// what held: it completes, unwinds from each step, survives repeated deliveries, lost
    /// answers, late actions and restarts (exit 0: all held; 20: a check failed).
    Check(geosaga::check::cli::CheckArgs),
    /// Run one region of the geo-distributed key-value layer.
    Region(region::RegionArgs),
    /// Back up a coordinator's SQLite database while it runs (PostgreSQL: pg_dump).
    Backup(ops::BackupArgs),
    /// Replace a stopped coordinator's SQLite database with a backup; a coordinator started
    /// on it resumes the sagas that were running.
    Restore(ops::RestoreArgs),
    /// Read the archive that retention writes (`serve --retention-archive`).
    #[command(subcommand)]
    Archive(ops::ArchiveCommand),
    /// Multi-key transactions and snapshots against the regions.
    #[command(subcommand)]
    Kv(kv::KvCommand),
}

/// Where the coordinator's API is.
#[derive(Args, Clone)]
struct Server {
    /// The coordinator's base URL.
    #[arg(long, global = true, env = "GEOSAGA_SERVER", default_value = "http://127.0.0.1:7379")]
    server: String,
    /// API token, when the coordinator requires one.
    #[arg(long, global = true, env = "GEOSAGA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum DefinitionsCommand {
    /// Register definition files with a running coordinator.
    Apply {
        /// Definition files (JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        server: Server,
    },
    /// Check definition files offline; prints every fault with its JSON path.
    Validate {
        /// Definition files (JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the definitions a coordinator knows.
    List {
        #[command(flatten)]
        server: Server,
    },
    /// Print the JSON Schema of definition files.
    Schema,
}

#[derive(Subcommand)]
enum SagaCommand {
    /// Start a saga.
    Start {
        /// The definition's name.
        definition: String,
        /// The input, as JSON.
        #[arg(long, default_value = "{}")]
        input: String,
        /// A definition version (default: the latest).
        #[arg(long)]
        version: Option<i64>,
        /// Starting twice with one key starts one saga.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait until the saga settles (up to 60 s) and exit with its outcome.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        server: Server,
    },
    /// Show a saga and its steps.
    Show {
        /// The saga id.
        id: String,
        #[command(flatten)]
        server: Server,
    },
    /// List sagas, newest first.
    List {
        /// Only this status (running, compensating, completed, compensated, stuck).
        #[arg(long)]
        status: Option<String>,
        /// Only this definition.
        #[arg(long)]
        definition: Option<String>,
        /// Most sagas to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Continue after this cursor (printed by the previous page).
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// Print a saga's event log.
    Events {
        /// The saga id.
        id: String,
        #[command(flatten)]
        server: Server,
    },
    /// Cancel a running saga: it compensates.
    Cancel {
        /// The saga id.
        id: String,
        /// Why.
        #[arg(long, default_value = "cancelled from the CLI")]
        reason: String,
        #[command(flatten)]
        server: Server,
    },
    /// Resume a stuck saga's compensations.
    Retry {
        /// The saga id.
        id: String,
        #[command(flatten)]
        server: Server,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(client::exit_code_of(&e))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Serve(args) => serve::serve(*args).await.map(|()| 0),
        Command::Dev(args) => dev::dev(args).await.map(|()| 0),
        Command::Region(args) => region::run(args).await.map(|()| 0),
        Command::Check(args) => geosaga::check::cli::run(args).await,
        Command::Backup(args) => ops::backup(args),
        Command::Restore(args) => ops::restore(args),
        Command::Archive(command) => ops::archive(command),
        Command::Kv(command) => kv::run(command).await,
        Command::Definitions(DefinitionsCommand::Apply { files, server }) => client::apply(&server, &files).await,
        Command::Definitions(DefinitionsCommand::Validate { files }) => client::validate(&files),
        Command::Definitions(DefinitionsCommand::List { server }) => client::list_definitions(&server).await,
        Command::Definitions(DefinitionsCommand::Schema) => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&sagas::document::definition_schema())?
            );
            Ok(0)
        }
        Command::Plan { file, dot } => client::plan(&file, dot),
        Command::Saga(SagaCommand::Start {
            definition,
            input,
            version,
            idempotency_key,
            wait,
            server,
        }) => client::start(&server, &definition, &input, version, idempotency_key, wait).await,
        Command::Saga(SagaCommand::Show { id, server }) => client::show(&server, &id).await,
        Command::Saga(SagaCommand::List {
            status,
            definition,
            limit,
            cursor,
            server,
        }) => client::list(&server, status, definition, limit, cursor).await,
        Command::Saga(SagaCommand::Events { id, server }) => client::events(&server, &id).await,
        Command::Saga(SagaCommand::Cancel { id, reason, server }) => client::cancel(&server, &id, &reason).await,
        Command::Saga(SagaCommand::Retry { id, server }) => client::retry(&server, &id).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
