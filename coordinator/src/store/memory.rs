//! An in-memory [`Store`] for tests: the same contract, no durability.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use sagas::SagaStatus;
use serde_json::Value;
use uuid::Uuid;

use super::{
    Append, AppendAck, Created, DefinitionRecord, DefinitionSummary, Expiry, ListFilter, NewSaga, PutDefinition,
    Renewed, SagaRecord, Store, StoreStats, StoredEvent,
};
use crate::{Error, Result};

#[derive(Default)]
struct Inner {
    definitions: HashMap<String, Vec<DefinitionRecord>>,
    sagas: HashMap<Uuid, SagaRecord>,
    events: HashMap<Uuid, Vec<StoredEvent>>,
    keys: HashMap<String, Uuid>,
    stats: StoreStats,
}

/// A store that keeps everything in memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("memory store lock poisoned")
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn put_definition(
        &self,
        name: &str,
        content_hash: &str,
        document: &Value,
        now_ms: i64,
    ) -> Result<PutDefinition> {
        let mut inner = self.lock();
        let versions = inner.definitions.entry(name.to_owned()).or_default();
        if let Some(existing) = versions.iter().find(|d| d.content_hash == content_hash) {
            return Ok(PutDefinition {
                record: existing.clone(),
                created: false,
            });
        }
        let record = DefinitionRecord {
            name: name.to_owned(),
            version: versions.len() as i64 + 1,
            content_hash: content_hash.to_owned(),
            document: document.clone(),
            created_at_ms: now_ms,
        };
        versions.push(record.clone());
        Ok(PutDefinition { record, created: true })
    }

    async fn get_definition(&self, name: &str, version: Option<i64>) -> Result<Option<DefinitionRecord>> {
        let inner = self.lock();
        let Some(versions) = inner.definitions.get(name) else {
            return Ok(None);
        };
        Ok(match version {
            None => versions.last().cloned(),
            Some(v) => versions.iter().find(|d| d.version == v).cloned(),
        })
    }

    async fn list_definitions(&self) -> Result<Vec<DefinitionSummary>> {
        let inner = self.lock();
        let mut out: Vec<DefinitionSummary> = inner
            .definitions
            .values()
            .filter_map(|v| v.last())
            .map(|d| DefinitionSummary {
                name: d.name.clone(),
                latest_version: d.version,
                updated_at_ms: d.created_at_ms,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn create_saga(&self, new: NewSaga) -> Result<Created> {
        let mut inner = self.lock();
        if let Some(key) = &new.idempotency_key
            && let Some(id) = inner.keys.get(key)
        {
            let existing = inner.sagas[id].clone();
            return if new.repeats(&existing) {
                Ok(Created::Existing(existing))
            } else {
                Err(Error::IdempotencyConflict {
                    key: key.clone(),
                    existing: existing.id,
                })
            };
        }
        let record = SagaRecord {
            id: new.id,
            definition: new.definition,
            version: new.version,
            input: new.input,
            status: SagaStatus::Running,
            error: None,
            owner: Some(new.owner),
            lease_until_ms: new.lease_until_ms,
            generation: 1,
            idempotency_key: new.idempotency_key.clone(),
            trace_context: new.trace_context,
            cancel_requested: false,
            created_at_ms: new.now_ms,
            updated_at_ms: new.now_ms,
            event_count: 0,
        };
        let log = new
            .events
            .iter()
            .enumerate()
            .map(|(seq, event)| StoredEvent {
                seq: seq as i64,
                at_ms: new.now_ms,
                event: event.clone(),
            })
            .collect::<Vec<_>>();
        let mut record = record;
        record.event_count = log.len() as i64;
        if let Some(key) = new.idempotency_key {
            inner.keys.insert(key, new.id);
        }
        inner.stats.events += log.len() as u64;
        inner.sagas.insert(new.id, record.clone());
        inner.events.insert(new.id, log);
        inner.stats.commits += 1;
        Ok(Created::New(record))
    }

    async fn append(&self, append: Append) -> Result<AppendAck> {
        let mut inner = self.lock();
        let Some(row) = inner.sagas.get(&append.saga_id) else {
            return Err(Error::SagaNotFound(append.saga_id));
        };
        if row.owner.as_deref() != Some(append.fence.owner.as_str()) || row.generation != append.fence.generation {
            return Err(Error::Fenced(append.saga_id));
        }
        let log = inner.events.get_mut(&append.saga_id).expect("every saga has a log");
        for (k, event) in append.events.iter().enumerate() {
            let seq = append.first_seq + k as i64;
            if seq < log.len() as i64 {
                continue; // already written: an idempotent retry
            }
            if seq != log.len() as i64 {
                return Err(Error::Store(format!(
                    "gap in the log of {}: seq {seq} after {}",
                    append.saga_id,
                    log.len()
                )));
            }
            log.push(StoredEvent {
                seq,
                at_ms: append.now_ms,
                event: event.clone(),
            });
        }
        let count = log.len() as i64;
        let row = inner.sagas.get_mut(&append.saga_id).expect("checked above");
        row.apply(&append, count);
        let ack = AppendAck {
            cancel_requested: row.cancel_requested,
        };
        inner.stats.commits += 1;
        inner.stats.appends += 1;
        inner.stats.events += append.events.len() as u64;
        inner.stats.max_batch = inner.stats.max_batch.max(1);
        Ok(ack)
    }

    async fn get_saga(&self, id: Uuid) -> Result<Option<SagaRecord>> {
        Ok(self.lock().sagas.get(&id).cloned())
    }

    async fn events(&self, id: Uuid) -> Result<Vec<StoredEvent>> {
        Ok(self.lock().events.get(&id).cloned().unwrap_or_default())
    }

    async fn list_sagas(&self, filter: &ListFilter) -> Result<Vec<SagaRecord>> {
        let inner = self.lock();
        let mut rows: Vec<SagaRecord> = inner
            .sagas
            .values()
            .filter(|s| filter.status.is_none_or(|st| s.status == st))
            .filter(|s| filter.definition.as_ref().is_none_or(|d| &s.definition == d))
            .filter(|s| filter.idempotency_key.is_none() || s.idempotency_key == filter.idempotency_key)
            .filter(|s| filter.before.is_none_or(|b| (s.created_at_ms, s.id) < b))
            .cloned()
            .collect();
        rows.sort_by_key(|s| std::cmp::Reverse((s.created_at_ms, s.id)));
        rows.truncate(filter.limit as usize);
        Ok(rows)
    }

    async fn renew_leases(&self, owner: &str, lease_until_ms: i64) -> Result<Renewed> {
        let mut inner = self.lock();
        let mut renewed = Renewed::default();
        for s in inner.sagas.values_mut() {
            if s.owner.as_deref() == Some(owner) && !s.status.is_settled() {
                s.lease_until_ms = lease_until_ms;
                renewed.owned.push(s.id);
                if s.cancel_requested {
                    renewed.cancels.push(s.id);
                }
            }
        }
        Ok(renewed)
    }

    async fn claim(
        &self,
        owner: &str,
        include_own: bool,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<SagaRecord>> {
        let mut inner = self.lock();
        let mut candidates: Vec<&mut SagaRecord> = inner
            .sagas
            .values_mut()
            .filter(|s| !s.status.is_settled())
            .filter(|s| s.lease_until_ms < now_ms || (include_own && s.owner.as_deref() == Some(owner)))
            .collect();
        // The oldest leases first, as the SQL stores do.
        candidates.sort_by_key(|s| s.lease_until_ms);
        candidates.truncate(limit as usize);
        Ok(candidates
            .into_iter()
            .map(|s| {
                s.owner = Some(owner.to_owned());
                s.generation += 1;
                s.lease_until_ms = lease_until_ms;
                s.clone()
            })
            .collect())
    }

    async fn take_over_stuck(&self, id: Uuid, owner: &str, lease_until_ms: i64) -> Result<Option<SagaRecord>> {
        let mut inner = self.lock();
        match inner.sagas.get_mut(&id) {
            Some(s) if s.status == SagaStatus::Stuck => {
                s.owner = Some(owner.to_owned());
                s.generation += 1;
                s.lease_until_ms = lease_until_ms;
                Ok(Some(s.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn request_cancel(&self, id: Uuid) -> Result<Option<SagaRecord>> {
        let mut inner = self.lock();
        Ok(inner.sagas.get_mut(&id).map(|s| {
            if s.status == SagaStatus::Running {
                s.cancel_requested = true;
            }
            s.clone()
        }))
    }

    async fn release(&self, owner: &str) -> Result<()> {
        let mut inner = self.lock();
        for s in inner.sagas.values_mut() {
            if s.owner.as_deref() == Some(owner) && !s.status.is_settled() {
                s.lease_until_ms = 0;
            }
        }
        Ok(())
    }

    async fn expired(&self, expiry: &Expiry, limit: u32) -> Result<Vec<SagaRecord>> {
        let inner = self.lock();
        let mut rows: Vec<SagaRecord> = inner.sagas.values().filter(|s| expiry.covers(s)).cloned().collect();
        rows.sort_by_key(|s| (s.created_at_ms, s.id));
        rows.truncate(limit as usize);
        Ok(rows)
    }

    async fn delete_expired(&self, ids: &[Uuid], expiry: &Expiry) -> Result<Vec<Uuid>> {
        let mut inner = self.lock();
        let mut deleted = Vec::new();
        for id in ids {
            if inner.sagas.get(id).is_some_and(|s| expiry.covers(s))
                && let Some(saga) = inner.sagas.remove(id)
            {
                inner.events.remove(id);
                if let Some(key) = &saga.idempotency_key {
                    inner.keys.remove(key);
                }
                deleted.push(*id);
            }
        }
        Ok(deleted)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        self.lock().stats
    }
}
