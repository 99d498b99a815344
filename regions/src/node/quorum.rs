//! A strong write's quorum: the home sends the write as an intent to every replica of its
//! key and commits only once the configured quorum stored it durably (replicas never show
//! intents to reads), or gives up at the deadline.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use regions_core::hlc::Timestamp;
use regions_core::protocol::{EntryKind, EntryState, Intent, LogEntry, ReplicateAck};

use super::{Peer, Region};
use crate::{Error, Result};

/// The pause before a failed intent is sent again (within the write's deadline).
const INTENT_RETRY: Duration = Duration::from_millis(50);

async fn post<T: serde::Serialize>(region: &Region, peer: &Peer, path: &str, body: &T) -> Result<ReplicateAck, String> {
    let response = region
        .http
        .post(format!("{}{path}", peer.address))
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        region.note_refusal(&peer.name, &body);
        return Err(format!("{} answered {status}: {body}", peer.name));
    }
    response.json().await.map_err(|e| e.to_string())
}

/// Sends a strong write to every replica and returns once the configured quorum stored it
/// durably, or fails with [`Error::QuorumNotReached`] at the deadline.
pub(super) async fn store_intents(
    region: &Region,
    key: &str,
    seq: i64,
    ts: Timestamp,
    value: Option<&str>,
) -> Result<()> {
    // A rule's replica set narrows who holds the key, and so the quorum.
    let placement = region.placement();
    let replicas: Vec<&Peer> = region
        .peers
        .iter()
        .filter(|p| placement.replicates_to(key, &p.name))
        .collect();
    let needed = region.config.quorum.needed(replicas.len());
    if needed == 0 {
        return Ok(());
    }
    let intent = Intent {
        from: region.name.clone(),
        entry: LogEntry {
            seq,
            key: key.to_owned(),
            ts,
            value: value.map(str::to_owned),
            state: EntryState::Pending,
            kind: EntryKind::Version,
            prev: None,
        },
    };
    let timeout_ms = region.config.strong_timeout_ms;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let mut sends: FuturesUnordered<_> = replicas
        .into_iter()
        .map(|peer| {
            let intent = &intent;
            async move {
                loop {
                    match post(region, peer, "/internal/v1/intents", intent).await {
                        Ok(_) => return peer,
                        Err(e) => {
                            tracing::debug!(peer = peer.name, error = e, "intent not stored; retrying");
                            tokio::time::sleep(INTENT_RETRY).await;
                        }
                    }
                }
            }
        })
        .collect();
    let mut acked = 0;
    while acked < needed {
        match tokio::time::timeout_at(deadline, sends.next()).await {
            Ok(Some(peer)) => {
                acked += 1;
                region.touch(&peer.name);
            }
            Ok(None) | Err(_) => {
                return Err(Error::QuorumNotReached {
                    key: key.to_owned(),
                    acked,
                    needed,
                    timeout_ms,
                });
            }
        }
    }
    Ok(())
}
