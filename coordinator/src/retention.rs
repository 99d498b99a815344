//! Retention: finished sagas older than an age are deleted in the background, in small
//! batches, optionally archived first ([`crate::archive`]).
//!
//! What goes: `completed` and `compensated` sagas whose last change is older than
//! [`RetentionOptions::age`] and, when started with an idempotency key, created longer ago
//! than [`RetentionOptions::idempotency_window`] ([`Expiry`]). Never a running,
//! compensating or stuck saga, never a definition.
//!
//! How: one round at a time on one coordinator of a database ([`Store::retention_turn`]):
//! read a batch of candidates, archive them (lines synced to disk), delete them with the
//! condition checked again in the delete itself, give freed space back
//! ([`Store::reclaim_space`]), pause, and go on while batches come back full. On SQLite each
//! delete is one short transaction on the writer thread between two group commits; the
//! pause between batches keeps a backlog (retention turned on over months of sagas) from
//! taking the writer's time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::archive::{ArchiveWriter, ArchivedSaga};
use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::store::{DefinitionRecord, Expiry, SagaRecord, Store};
use crate::{Error, Result};

/// Sagas deleted in one batch by default.
pub const DEFAULT_BATCH: u32 = 100;

/// The idempotency window by default: a repeated start within a day finds its saga.
pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Pages given back to the file system after each batch, at most (4 MiB of 4 KiB pages;
/// a batch of 100 sagas frees about 50).
const RECLAIM_PAGES: u32 = 1024;

/// The pause after a full batch, before the next one.
const PAUSE: Duration = Duration::from_millis(50);

/// How retention runs.
#[derive(Debug, Clone)]
pub struct RetentionOptions {
    /// Finished sagas older than this go.
    pub age: Duration,
    /// Sagas started with an idempotency key stay at least this long after their creation;
    /// no longer than [`RetentionOptions::age`].
    pub idempotency_window: Duration,
    /// Sagas deleted per batch.
    pub batch: u32,
    /// Where deleted sagas are archived first, if anywhere.
    pub archive: Option<PathBuf>,
}

impl RetentionOptions {
    /// Retention of sagas older than `age`, with the default window and batch, no archive.
    pub fn new(age: Duration) -> RetentionOptions {
        RetentionOptions {
            age,
            idempotency_window: DEFAULT_IDEMPOTENCY_WINDOW.min(age),
            batch: DEFAULT_BATCH,
            archive: None,
        }
    }

    /// Checks the options: an age, a window no longer than it, a batch of 1 to 10,000.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.age.is_zero() {
            return Err("the retention age must be more than zero".into());
        }
        if self.idempotency_window > self.age {
            return Err(format!(
                "the idempotency window ({}) is longer than the retention age ({}): a saga past its age is \
                 kept for its key anyway, so make the age at least the window",
                show(self.idempotency_window),
                show(self.age)
            ));
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(format!("a retention batch is 1 to 10000 sagas, not {}", self.batch));
        }
        Ok(())
    }

    /// The expiry of a round at `now_ms`.
    pub fn expiry(&self, now_ms: i64) -> Expiry {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Expiry {
            finished_before_ms: now_ms.saturating_sub(ms(self.age)),
            keys_created_before_ms: now_ms.saturating_sub(ms(self.idempotency_window)),
        }
    }

    /// How long retention waits when there is nothing to delete: a tenth of the age, between
    /// 100 ms and 30 s.
    fn idle(&self) -> Duration {
        (self.age / 10).clamp(Duration::from_millis(100), Duration::from_secs(30))
    }
}

/// A duration as the command line takes it (`7d`, `12h`, `30m`, `45s`, `500ms`).
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Parses a duration: a whole number and a unit, `ms`, `s`, `m`, `h` or `d` (`7d`, `90m`).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        format!("`{text}` is not a duration: write a whole number and a unit, like 7d, 12h, 30m, 45s or 500ms")
    })?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{text}`: the unit is one of ms, s, m, h, d")),
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// The retention task; it stops when this handle is dropped.
pub struct Retention {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Retention {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Retention {
    /// Starts retention on `store`, archiving as coordinator `node`; counts in `metrics`.
    pub fn start(store: Arc<dyn Store>, options: RetentionOptions, node: &str, metrics: Metrics) -> Result<Retention> {
        options.check().map_err(Error::Store)?;
        let archive = options
            .archive
            .as_deref()
            .map(|dir| ArchiveWriter::open(dir, node))
            .transpose()?;
        let mut worker = Worker {
            store,
            options,
            archive,
            metrics,
            definitions: HashMap::new(),
        };
        let task = tokio::spawn(async move {
            loop {
                let pause = match worker.round().await {
                    Ok(n) if n >= worker.options.batch as usize => PAUSE,
                    Ok(_) => worker.options.idle(),
                    Err(e) => {
                        tracing::warn!(error = %e, "retention round failed; trying again later");
                        worker.options.idle()
                    }
                };
                tokio::time::sleep(pause).await;
            }
        });
        Ok(Retention { task })
    }
}

struct Worker {
    store: Arc<dyn Store>,
    options: RetentionOptions,
    archive: Option<ArchiveWriter>,
    metrics: Metrics,
    /// Definition versions read for the archive.
    definitions: HashMap<(String, i64), DefinitionRecord>,
}

impl Worker {
    /// One batch: returns how many sagas it found to delete.
    async fn round(&mut self) -> Result<usize> {
        if !self.store.retention_turn().await? {
            return Ok(0);
        }
        let now = now_ms();
        let expiry = self.options.expiry(now);
        let batch = self.store.expired(&expiry, self.options.batch).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let ids: Vec<_> = batch.iter().map(|s| s.id).collect();
        if self.archive.is_some() {
            self.archive(batch.clone(), now).await?;
        }
        let deleted = self.store.delete_expired(&ids, &expiry).await?;
        self.metrics.retention_deleted(deleted.len() as u64);
        let pages = self.store.reclaim_space(RECLAIM_PAGES).await?;
        self.metrics.retention_reclaimed(pages);
        tracing::debug!(found = batch.len(), deleted = deleted.len(), pages, "retention batch");
        Ok(batch.len())
    }

    /// Writes `batch` with its logs (and the definitions they ran) to the archive, synced.
    async fn archive(&mut self, batch: Vec<SagaRecord>, now: i64) -> Result<()> {
        let ids: Vec<_> = batch.iter().map(|s| s.id).collect();
        let mut logs = self.store.events_of(&ids).await?;
        let mut definitions = Vec::new();
        for saga in &batch {
            let key = (saga.definition.clone(), saga.version);
            if !self.definitions.contains_key(&key) {
                let record = self
                    .store
                    .get_definition(&saga.definition, Some(saga.version))
                    .await?
                    .ok_or_else(|| Error::DefinitionNotFound {
                        name: saga.definition.clone(),
                        version: Some(saga.version),
                    })?;
                self.definitions.insert(key.clone(), record);
            }
            definitions.push(self.definitions[&key].clone());
        }
        let lines: Vec<ArchivedSaga> = batch
            .into_iter()
            .map(|saga| ArchivedSaga {
                events: logs.remove(&saga.id).unwrap_or_default(),
                saga,
            })
            .collect();
        let count = lines.len() as u64;
        let mut writer = self.archive.take().expect("archiving");
        let (writer, written) = tokio::task::spawn_blocking(move || {
            let written = writer.write(&lines, &definitions, now);
            (writer, written)
        })
        .await
        .map_err(|e| Error::Store(format!("archive writer: {e}")))?;
        self.archive = Some(writer);
        written?;
        self.metrics.retention_archived(count);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 90m "), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("7 days").unwrap_err().contains("unit"));
        assert!(parse_duration("d").unwrap_err().contains("whole number"));
        assert_eq!(show(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(show(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn a_window_longer_than_the_age_is_refused() {
        let mut options = RetentionOptions::new(Duration::from_secs(3600));
        assert_eq!(options.idempotency_window, Duration::from_secs(3600));
        assert!(options.check().is_ok());
        options.idempotency_window = Duration::from_secs(7200);
        assert!(
            options
                .check()
                .unwrap_err()
                .contains("longer than the retention age (1h)")
        );
        options.idempotency_window = Duration::ZERO;
        options.batch = 0;
        assert!(options.check().unwrap_err().contains("1 to 10000"));
    }
}
