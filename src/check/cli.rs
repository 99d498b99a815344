//! The command line of `geosaga check`.

use crate::{out, outln};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use coordinator::runner::region::RegionDirectory;
use serde_json::Value;

/// Options of `geosaga check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A definition file (JSON), or with `--server` the name of a registered definition.
    pub definition: String,
    /// The saga input every case starts with, as JSON.
    #[arg(long, conflicts_with = "input_file")]
    pub input: Option<String>,
    /// A file holding the input.
    #[arg(long)]
    pub input_file: Option<PathBuf>,
    /// Take the definition registered under this name at this coordinator (the saga still
    /// runs here, on a throwaway store, against the participants it names).
    /// (Not read from `GEOSAGA_SERVER`: a file name must never turn into a definition name.)
    #[arg(long)]
    pub server: Option<String>,
    /// API token of `--server`.
    #[arg(long, env = "GEOSAGA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A region region steps use, as `NAME=URL`; repeat or separate with commas.
    #[arg(long = "region", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// The region steps go through unless they name one (default: the first).
    #[arg(long)]
    pub region_via: Option<String>,
    /// How long one case may take to settle, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub case_timeout_ms: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `geosaga check`; returns the exit code (0: every case held, 20: a check failed).
pub async fn run(args: CheckArgs) -> anyhow::Result<u8> {
    let input: Value = match (&args.input, &args.input_file) {
        (Some(text), _) => serde_json::from_str(text).context("--input is not valid JSON")?,
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", file.display()))?
        }
        (None, None) => Value::Object(Default::default()),
    };
    let document = match &args.server {
        Some(server) => registered(server, args.token.as_deref(), &args.definition).await?,
        None => {
            let text = std::fs::read_to_string(&args.definition).with_context(|| {
                format!(
                    "reading {} (to check a registered definition, pass --server)",
                    args.definition
                )
            })?;
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", args.definition))?
        }
    };
    let mut regions = Vec::new();
    for flag in args.regions.iter().filter(|f| !f.is_empty()) {
        let (name, url) = flag
            .split_once('=')
            .with_context(|| format!("--region {flag:?}: expected NAME=URL"))?;
        regions.push((name.trim().to_owned(), url.trim().to_owned()));
    }
    let regions = RegionDirectory::new(regions, args.region_via).map_err(anyhow::Error::msg)?;
    let report = super::check(super::Options {
        document,
        input,
        regions,
        case_timeout: Duration::from_millis(args.case_timeout_ms),
    })
    .await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", report.text());
    }
    Ok(report.exit_code())
}

/// The document of the latest version of `name` at `server`.
async fn registered(server: &str, token: Option<&str>, name: &str) -> anyhow::Result<Value> {
    let url = format!("{}/v1/definitions/{name}", server.trim_end_matches('/'));
    let mut request = reqwest::Client::new().get(&url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.with_context(|| format!("asking {url}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    anyhow::ensure!(
        status.is_success(),
        "{url} answered {status}: {}",
        body["detail"].as_str().unwrap_or_default()
    );
    body.get("document")
        .cloned()
        .with_context(|| format!("{url} answered no `document`"))
}
