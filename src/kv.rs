//! `geosaga kv`: multi-key transactions and snapshots against any region (see
//! `docs/transactions.md`), through the `regions` crate's client.

use anyhow::Context;
use clap::Subcommand;
use geosaga::outln;
use regions::protocol::{Condition, OneShotRequest, OneShotWrite, SnapshotRequest};

/// `geosaga kv ...`.
#[derive(Subcommand)]
pub enum KvCommand {
    /// Read, check and write keys in one serializable transaction (`POST /v1/txn`): every
    /// write is applied, or none.
    Txn {
        /// The region to send it to (any region; keys may live anywhere).
        #[arg(long, env = "GEOSAGA_REGION_URL", default_value = "http://127.0.0.1:7401")]
        region: String,
        /// A token of the region's (`read` suffices for reads and snapshots, `write` for
        /// writes), sent as `Authorization: Bearer`.
        #[arg(long, env = "GEOSAGA_REGION_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A key to read at the transaction's snapshot (repeatable).
        #[arg(long = "read", value_name = "KEY")]
        reads: Vec<String>,
        /// Commit only if KEY is at VERSION at the snapshot (`0.0`: absent; repeatable).
        #[arg(long = "if", value_name = "KEY=VERSION")]
        conditions: Vec<String>,
        /// Write the JSON value at KEY (repeatable).
        #[arg(long = "set", value_name = "KEY=JSON")]
        writes: Vec<String>,
        /// Delete KEY (repeatable).
        #[arg(long = "delete", value_name = "KEY")]
        deletes: Vec<String>,
    },
    /// Read several keys at one timestamp (`POST /v1/snapshot`).
    Snapshot {
        /// The region to ask.
        #[arg(long, env = "GEOSAGA_REGION_URL", default_value = "http://127.0.0.1:7401")]
        region: String,
        /// A token of the region's (`read` suffices for reads and snapshots, `write` for
        /// writes), sent as `Authorization: Bearer`.
        #[arg(long, env = "GEOSAGA_REGION_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
        /// Read at this timestamp (`WALL_MS.LOGICAL`) instead of now.
        #[arg(long)]
        as_of: Option<String>,
        /// Serve from the region's own copies if they are at most this stale.
        #[arg(long)]
        max_staleness_ms: Option<u64>,
    },
}

fn split<'a>(flag: &str, text: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    text.split_once('=')
        .with_context(|| format!("{flag} {text:?}: expected KEY=..."))
}

/// Runs a `geosaga kv` command; exit code 4 when a transaction lost a conflict or a
/// condition failed, 5 when the region refused the request (nothing was written either way).
pub async fn run(command: KvCommand) -> anyhow::Result<u8> {
    let (region, answer) = match command {
        KvCommand::Txn {
            region,
            token,
            reads,
            conditions,
            writes,
            deletes,
        } => {
            let mut req = OneShotRequest {
                reads,
                ..OneShotRequest::default()
            };
            for c in &conditions {
                let (key, version) = split("--if", c)?;
                req.conditions.push(Condition {
                    key: key.to_owned(),
                    version: version.to_owned(),
                });
            }
            for w in &writes {
                let (key, json) = split("--set", w)?;
                let value =
                    serde_json::from_str(json).with_context(|| format!("--set {w:?}: the value is not JSON"))?;
                req.writes.push(OneShotWrite {
                    key: key.to_owned(),
                    value: Some(value),
                    add: None,
                });
            }
            req.writes.extend(deletes.into_iter().map(|key| OneShotWrite {
                key,
                value: None,
                add: None,
            }));
            let answer = regions::client::Client::new(&region)
                .with_token(token)
                .one_shot(&req)
                .await;
            (region, answer.map(|a| serde_json::to_value(a).expect("JSON")))
        }
        KvCommand::Snapshot {
            region,
            token,
            keys,
            as_of,
            max_staleness_ms,
        } => {
            let req = SnapshotRequest {
                keys,
                as_of,
                max_staleness_ms,
            };
            let answer = regions::client::Client::new(&region)
                .with_token(token)
                .snapshot(&req)
                .await;
            (region, answer.map(|a| serde_json::to_value(a).expect("JSON")))
        }
    };
    match answer {
        Ok(value) => {
            outln!("{}", serde_json::to_string_pretty(&value)?);
            Ok(0)
        }
        Err(e @ regions::Error::TxnConflict { .. }) => {
            eprintln!("not committed: {e}");
            Ok(4)
        }
        Err(regions::Error::BadRequest(e)) => {
            eprintln!("not committed: {e}");
            Ok(if e.starts_with("version-mismatch") { 4 } else { 5 })
        }
        Err(e) => Err(e).with_context(|| format!("asking {region}")),
    }
}
