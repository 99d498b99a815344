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

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// geosaga: a saga orchestrator and geo-distributed transaction coordinator.
#[derive(Parser)]
#[command(name = "geosaga", version, about)]
struct Cli {
    #[command(flatten)]
    before: ServerBefore,
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

/// The coordinator a client command talks to when neither `--server` nor `GEOSAGA_SERVER`
/// names one.
const DEFAULT_SERVER: &str = "http://127.0.0.1:7379";

/// `--server`, `--token` and `--json` given before the subcommand (`geosaga --server URL
/// saga list`), or from `GEOSAGA_SERVER` and `GEOSAGA_TOKEN`. Not `global` in clap: `serve`,
/// `region` and `kv` have a `--token` of their own meaning. The client commands take these
/// unless the same option follows the subcommand ([`ServerArgs::resolve`]); the other
/// commands refuse them when typed ([`ServerBefore::refuse_unless_client`]).
#[derive(Args)]
struct ServerBefore {
    /// The coordinator's base URL, for `definitions apply|list`, `saga` and `check` (also
    /// after the subcommand).
    #[arg(long, value_name = "URL", env = "GEOSAGA_SERVER")]
    server: Option<String>,
    /// API token of the coordinator, for the same commands.
    #[arg(long, env = "GEOSAGA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of tables, for the same commands.
    #[arg(long)]
    json: bool,
}

impl ServerBefore {
    /// The options typed before the subcommand (not those from the environment).
    fn typed(matches: &ArgMatches) -> ServerBefore {
        let typed = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        ServerBefore {
            server: typed("server")
                .then(|| matches.get_one::<String>("server").cloned())
                .flatten(),
            token: typed("token")
                .then(|| matches.get_one::<String>("token").cloned())
                .flatten(),
            json: typed("json") && matches.get_flag("json"),
        }
    }

    /// Exits with a usage error (2) when options meant for the client commands were typed
    /// before a command that has no use for them, rather than ignore them.
    fn refuse_unless_client(matches: &ArgMatches, command: &Command) {
        let typed = ServerBefore::typed(matches);
        let given = typed.server.is_some() || typed.token.is_some() || typed.json;
        let client = match command {
            Command::Definitions(DefinitionsCommand::Apply { .. } | DefinitionsCommand::List { .. })
            | Command::Saga(_)
            | Command::Check(_) => true,
            Command::Definitions(DefinitionsCommand::Validate { .. } | DefinitionsCommand::Schema)
            | Command::Serve(_)
            | Command::Dev(_)
            | Command::Plan { .. }
            | Command::Region(_)
            | Command::Backup(_)
            | Command::Restore(_)
            | Command::Archive(_)
            | Command::Kv(_) => false,
        };
        if given && !client {
            Cli::command()
                .error(
                    ErrorKind::ArgumentConflict,
                    "--server, --token and --json before the subcommand go with the client commands \
                     (definitions apply|list, saga, check); put this command's own options after it",
                )
                .exit();
        }
    }
}

/// Where the coordinator's API is, as given after a client subcommand.
#[derive(Args, Clone)]
struct ServerArgs {
    /// The coordinator's base URL [default: before the subcommand, else $GEOSAGA_SERVER, else
    /// http://127.0.0.1:7379].
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// API token, when the coordinator requires one [default: before the subcommand, else
    /// $GEOSAGA_TOKEN].
    #[arg(long)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

impl ServerArgs {
    /// These options, each completed from `before` (typed before the subcommand or from the
    /// environment) and then the default.
    fn resolve(self, before: &ServerBefore) -> Server {
        Server {
            server: self
                .server
                .or_else(|| before.server.clone())
                .unwrap_or_else(|| DEFAULT_SERVER.to_owned()),
            token: self.token.or_else(|| before.token.clone()),
            json: self.json || before.json,
        }
    }
}

/// Where the coordinator's API is: [`ServerArgs`] resolved.
#[derive(Clone)]
struct Server {
    server: String,
    token: Option<String>,
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
        server: ServerArgs,
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
        server: ServerArgs,
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
        server: ServerArgs,
    },
    /// Show a saga and its steps.
    Show {
        /// The saga id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
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
        server: ServerArgs,
    },
    /// Print a saga's event log.
    Events {
        /// The saga id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel a running saga: it compensates.
    Cancel {
        /// The saga id.
        id: String,
        /// Why.
        #[arg(long, default_value = "cancelled from the CLI")]
        reason: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Resume a stuck saga's compensations.
    Retry {
        /// The saga id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    ServerBefore::refuse_unless_client(&matches, &cli.command);
    if let Command::Check(args) = &mut cli.command {
        // Typed only: `check` never reads GEOSAGA_SERVER (a file name must not turn into a
        // definition name).
        let typed = ServerBefore::typed(&matches);
        let after = |id: &str| {
            matches.subcommand_matches("check").and_then(|m| m.value_source(id)) == Some(ValueSource::CommandLine)
        };
        if !after("server") && typed.server.is_some() {
            args.server = typed.server;
        }
        if !after("token") && typed.token.is_some() {
            args.token = typed.token;
        }
        args.json |= typed.json;
    }
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
    let before = cli.before;
    match cli.command {
        Command::Serve(args) => serve::serve(*args).await.map(|()| 0),
        Command::Dev(args) => dev::dev(args).await.map(|()| 0),
        Command::Region(args) => region::run(args).await.map(|()| 0),
        Command::Check(args) => geosaga::check::cli::run(args).await,
        Command::Backup(args) => ops::backup(args),
        Command::Restore(args) => ops::restore(args),
        Command::Archive(command) => ops::archive(command),
        Command::Kv(command) => kv::run(command).await,
        Command::Definitions(DefinitionsCommand::Apply { files, server }) => {
            client::apply(&server.resolve(&before), &files).await
        }
        Command::Definitions(DefinitionsCommand::Validate { files }) => client::validate(&files),
        Command::Definitions(DefinitionsCommand::List { server }) => {
            client::list_definitions(&server.resolve(&before)).await
        }
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
        }) => {
            client::start(
                &server.resolve(&before),
                &definition,
                &input,
                version,
                idempotency_key,
                wait,
            )
            .await
        }
        Command::Saga(SagaCommand::Show { id, server }) => client::show(&server.resolve(&before), &id).await,
        Command::Saga(SagaCommand::List {
            status,
            definition,
            limit,
            cursor,
            server,
        }) => client::list(&server.resolve(&before), status, definition, limit, cursor).await,
        Command::Saga(SagaCommand::Events { id, server }) => client::events(&server.resolve(&before), &id).await,
        Command::Saga(SagaCommand::Cancel { id, reason, server }) => {
            client::cancel(&server.resolve(&before), &id, &reason).await
        }
        Command::Saga(SagaCommand::Retry { id, server }) => client::retry(&server.resolve(&before), &id).await,
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
