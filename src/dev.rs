//! `geosaga dev`: a coordinator with the example definitions, a demo participant and three
//! regions on loopback, for trying geosaga on one machine. With `--region NAME=URL` its
//! region steps go to a cluster of yours instead (the testbed's, say), reached with the
//! same settings as `geosaga serve`'s: the cluster CA, a client certificate and a token
//! (`crate::region_access`), so a TLS cluster that wants tokens works too.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use coordinator::HostPolicy;
use coordinator::runner::region::{RegionAccess, RegionDirectory};
use observability::LogFormat;
use observability::otlp::OtlpOptions;

use crate::region_access::{RegionAccessArgs, RegionAccessFile};
use crate::serve::{OtlpArgs, Settings, region_directory};
use crate::server::{LOG_FILTER, Server};

/// The example definitions `geosaga dev` registers.
const EXAMPLES: &[(&str, &str)] = &[
    ("transfer.json", include_str!("../examples/transfer.json")),
    ("book_trip.json", include_str!("../examples/book_trip.json")),
];

/// The example `geosaga dev` registers when its three regions run (its steps need them).
const REGION_EXAMPLE: (&str, &str) = (
    "transfer_regions.json",
    include_str!("../examples/transfer_regions.json"),
);

/// Options of `geosaga dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Address of the REST API.
    #[arg(long, default_value = "127.0.0.1:7379")]
    listen: SocketAddr,
    /// Address of the demo participant service.
    #[arg(long, default_value = "127.0.0.1:7380")]
    demo_listen: SocketAddr,
    /// Where the SQLite databases live.
    #[arg(long, default_value = "./geosaga-data")]
    data_dir: PathBuf,
    /// Port of the first of the three dev regions (the next two follow); 0 picks free ports.
    #[arg(long, default_value_t = 7401)]
    regions_port: u16,
    /// Do not start the three dev regions.
    #[arg(long)]
    no_regions: bool,
    /// A region of a cluster of yours for region steps, as `NAME=URL` (repeat or separate
    /// with commas): dev then starts no regions of its own. A TLS cluster that wants
    /// tokens needs --region-ca, --region-cert/--region-key and --region-token too.
    #[arg(
        long = "region",
        value_name = "NAME=URL",
        value_delimiter = ',',
        conflicts_with = "no_regions"
    )]
    regions: Vec<String>,
    /// The --region that region steps go through unless they name one (default: the first).
    #[arg(long, requires = "regions")]
    region_via: Option<String>,
    #[command(flatten)]
    region_access: RegionAccessArgs,
    /// Base URL of a Jaeger UI, to link sagas to their traces (e.g. `http://127.0.0.1:16686`).
    #[arg(long)]
    jaeger_ui: Option<String>,
    #[command(flatten)]
    otlp: OtlpArgs,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
}

/// `geosaga dev`.
pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    observability::init_logging(args.log_format, LOG_FILTER);
    let demo = crate::demo::serve(args.demo_listen)
        .await
        .with_context(|| format!("starting the demo participant on {}", args.demo_listen))?;
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let external = !args.regions.is_empty();
    let (directory, region_access) = if external {
        let directory = region_directory(&args.regions, &toml::Table::new(), args.region_via)
            .context("--region: the regions of region steps")?;
        (directory, args.region_access.access(RegionAccessFile::default())?)
    } else {
        let regions = if args.no_regions {
            Vec::new()
        } else {
            crate::dev_regions::start(&args.data_dir, args.regions_port).await?
        };
        // Region steps go through us-east, as a coordinator there would. The dev regions
        // speak plain HTTP on loopback and want no token: a CA, certificate or token given
        // (flags or GEOSAGA_REGION_* variables) would only be sent to them.
        let via = regions.first().map(|(name, _)| name.clone());
        let directory = RegionDirectory::new(regions, via).map_err(anyhow::Error::msg)?;
        (directory, RegionAccess::default())
    };
    let regions = directory.regions().to_vec();
    let settings = Settings {
        regions: directory,
        region_access,
        listen: args.listen,
        database: args.data_dir.join("geosaga.db").display().to_string(),
        node_id: Some("local".to_owned()),
        lease: Duration::from_secs(10),
        tokens: Vec::new(),
        insecure: false,
        hosts: HostPolicy::Any,
        body_limit: 1024 * 1024,
        max_running: 10_000,
        limits: http_server::Limits::default(),
        jaeger_ui: args.jaeger_ui,
        otlp: OtlpOptions {
            endpoint: args.otlp.otlp_endpoint,
            protocol: args.otlp.otlp_protocol,
            instance_id: None,
        },
        retention: None,
    };
    let with_regions = (!regions.is_empty()).then_some(&REGION_EXAMPLE);
    let mut builder = settings.apply(Server::builder()).log_format(None);
    for (file, text) in EXAMPLES.iter().chain(with_regions) {
        let mut doc: serde_json::Value = serde_json::from_str(text).with_context(|| format!("example {file}"))?;
        rebase_urls(&mut doc, demo);
        builder = builder.definition(doc);
    }
    let server = builder.start().await?;
    // A cluster of yours keeps its own accounts (the testbed opens the demo's).
    if let (false, Some((_, us_east))) = (external, regions.first()) {
        crate::dev_regions::seed_accounts(us_east).await;
    }
    // A server keeps serving when nobody reads its banner (`geosaga dev | head -3`):
    // `println!` would panic on a closed stdout.
    let banner = welcome(server.local_addr(), &args.data_dir, &regions, external);
    let _ = writeln!(std::io::stdout().lock(), "{banner}");
    server.serve().await?;
    Ok(())
}

/// Points the examples' URLs at the demo participant's actual address.
fn rebase_urls(doc: &mut serde_json::Value, demo: SocketAddr) {
    match doc {
        serde_json::Value::String(s) if s.starts_with("http://127.0.0.1:7380") => {
            *s = s.replacen("http://127.0.0.1:7380", &format!("http://{demo}"), 1);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| rebase_urls(v, demo)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| rebase_urls(v, demo)),
        _ => {}
    }
}

fn welcome(api: SocketAddr, data_dir: &Path, regions: &[(String, String)], external: bool) -> String {
    let mut text = welcome_sagas(api, data_dir);
    if external {
        text.push_str(
            "\nRegion steps go to your regions (transfer_regions registered; its accounts are yours to open):\n",
        );
        for (name, address) in regions {
            text.push_str(&format!("  {name:<9} {address}\n"));
        }
    } else if let Some((_, first)) = regions.first() {
        text.push_str("\nRegions (geo-distributed key-value layer, see docs/regions.md):\n");
        for (name, address) in regions {
            text.push_str(&format!("  {name:<9} {address}\n"));
        }
        text.push_str(&format!(
            "  geosaga saga start transfer_regions --input '{{\"from\":\"us/alice\",\"to\":\"eu/bob\",\"amount\":300}}' --wait   # money across regions\n  curl -s -X PUT {first}/v1/kv/eu/alice -H 'content-type: application/json' -d '{{\"value\": 100, \"consistency\": \"strong\"}}'\n  curl -s '{first}/v1/kv/eu/alice?consistency=bounded_staleness&max_staleness_ms=5000'\n"
        ));
    }
    text
}

fn welcome_sagas(api: SocketAddr, data_dir: &Path) -> String {
    let data_dir = data_dir.display();
    format!(
        r#"
geosaga dev is running: API on http://{api}, data in {data_dir} (SQLite).
Web console: http://{api}/ui
Examples registered: transfer, book_trip. Try, in another terminal:

  geosaga saga start transfer --input '{{"from":"alice","to":"bob","amount":50}}' --wait
  geosaga saga start transfer --input '{{"from":"alice","to":"closed","amount":50}}' --wait   # credit fails: debit is refunded
  geosaga saga start transfer --input '{{"from":"alice","to":"flaky","amount":50}}' --wait    # notify retries twice, then succeeds
  geosaga saga list
  geosaga saga events <ID>

or with curl:
  curl -s http://{api}/v1/sagas -H 'content-type: application/json' \
       -d '{{"definition":"transfer","input":{{"from":"alice","to":"closed","amount":50}}}}'
"#
    )
}
