//! The store port: what the coordinator needs from a database, as one trait.
//!
//! Three implementations: [`memory::MemoryStore`] for tests, [`sqlite::SqliteStore`] (the
//! embedded default) and [`postgres::PostgresStore`]. One contract suite
//! (`coordinator/tests/store_contract.rs`) runs against all of them.
//!
//! Every write to a saga is fenced: it names the owner and generation the writer believes it
//! holds, and fails with [`crate::Error::Fenced`] when another coordinator adopted the saga
//! since. Event appends are idempotent: appending the same events at the same sequence
//! numbers again is harmless.

mod group_commit;
pub mod memory;
pub mod postgres;
mod postgres_writer;
mod rows;
pub mod schema;
pub mod sqlite;
mod sqlite_writer;

use std::collections::HashMap;

use async_trait::async_trait;
use sagas::{SagaEvent, SagaStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::Result;

/// A stored definition version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefinitionRecord {
    /// The definition's name.
    pub name: String,
    /// Its version, from 1.
    pub version: i64,
    /// The digest of its content.
    pub content_hash: String,
    /// The document.
    pub document: Value,
    /// When this version was stored (Unix ms).
    pub created_at_ms: i64,
}

/// What a definition registration did.
#[derive(Debug, Clone, PartialEq)]
pub struct PutDefinition {
    /// The stored version (new, or the existing one with the same content).
    pub record: DefinitionRecord,
    /// Whether a new version was created.
    pub created: bool,
}

/// The right to write a saga: who owns it, in which generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The owning coordinator's id.
    pub owner: String,
    /// The generation, bumped at every adoption.
    pub generation: i64,
}

/// A saga to create.
#[derive(Debug, Clone)]
pub struct NewSaga {
    /// Its id.
    pub id: Uuid,
    /// Definition name.
    pub definition: String,
    /// Definition version.
    pub version: i64,
    /// The input.
    pub input: Value,
    /// The caller's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// W3C trace context to continue (`traceparent`), if any.
    pub trace_context: Option<String>,
    /// The creating coordinator, which owns the saga from the start.
    pub owner: String,
    /// Lease expiry (Unix ms).
    pub lease_until_ms: i64,
    /// Creation time (Unix ms).
    pub now_ms: i64,
    /// The saga's first events (the starts of its root steps), written in the same
    /// transaction as the row, so that starting a saga costs one commit, not two. Written
    /// only when the saga is new.
    pub events: Vec<SagaEvent>,
}

impl NewSaga {
    /// Whether this start repeats the one that created `existing` with the same idempotency
    /// key (same definition version, same input); a different start with a used key is a
    /// conflict.
    pub(crate) fn repeats(&self, existing: &SagaRecord) -> bool {
        existing.definition == self.definition && existing.version == self.version && existing.input == self.input
    }

    /// The append that writes [`NewSaga::events`], fenced by the creator's first generation.
    pub(crate) fn initial_append(&self) -> Option<Append> {
        (!self.events.is_empty()).then(|| Append {
            saga_id: self.id,
            fence: Fence {
                owner: self.owner.clone(),
                generation: 1,
            },
            first_seq: 0,
            events: self.events.clone(),
            status: SagaStatus::Running,
            error: None,
            now_ms: self.now_ms,
        })
    }

    /// The row this saga has once created with its first events: what a store that
    /// inserted it answers, without reading it back.
    pub(crate) fn record(&self) -> SagaRecord {
        SagaRecord {
            id: self.id,
            definition: self.definition.clone(),
            version: self.version,
            input: self.input.clone(),
            status: SagaStatus::Running,
            error: None,
            owner: Some(self.owner.clone()),
            lease_until_ms: self.lease_until_ms,
            generation: 1,
            idempotency_key: self.idempotency_key.clone(),
            trace_context: self.trace_context.clone(),
            cancel_requested: false,
            created_at_ms: self.now_ms,
            updated_at_ms: self.now_ms,
            event_count: self.events.len() as i64,
        }
    }
}

/// What creating a saga did.
#[derive(Debug, Clone)]
pub enum Created {
    /// A new saga was stored.
    New(SagaRecord),
    /// The idempotency key was used before; here is the saga it started.
    Existing(SagaRecord),
}

/// A saga row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRecord {
    /// Its id.
    pub id: Uuid,
    /// Definition name.
    pub definition: String,
    /// Definition version it runs (fixed at start).
    pub version: i64,
    /// Its input.
    pub input: Value,
    /// Its status.
    pub status: SagaStatus,
    /// Why it unwound, if it did.
    pub error: Option<String>,
    /// The owning coordinator, if any.
    pub owner: Option<String>,
    /// Lease expiry (Unix ms).
    pub lease_until_ms: i64,
    /// Fencing generation.
    pub generation: i64,
    /// Idempotency key given at start.
    pub idempotency_key: Option<String>,
    /// Stored W3C trace context.
    pub trace_context: Option<String>,
    /// Whether a cancel was requested and not yet acted on.
    pub cancel_requested: bool,
    /// Creation time (Unix ms).
    pub created_at_ms: i64,
    /// Last change (Unix ms).
    pub updated_at_ms: i64,
    /// Events in its log.
    pub event_count: i64,
}

impl SagaRecord {
    /// The fence of the saga's current owner.
    pub fn fence(&self) -> Option<Fence> {
        self.owner.as_ref().map(|owner| Fence {
            owner: owner.clone(),
            generation: self.generation,
        })
    }

    /// The row as a committed `append` leaves it (the lease aside), with `event_count`
    /// events in its log.
    pub fn apply(&mut self, append: &Append, event_count: i64) {
        self.status = append.status;
        self.error.clone_from(&append.error);
        self.updated_at_ms = append.now_ms;
        self.event_count = event_count;
        if append.status != SagaStatus::Running {
            self.cancel_requested = false;
        }
    }
}

/// One event of a saga's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Position in the log, from 0.
    pub seq: i64,
    /// When it was written (Unix ms).
    pub at_ms: i64,
    /// The event.
    pub event: SagaEvent,
}

/// Events to add to one saga's log, with the saga's status after them.
#[derive(Debug, Clone)]
pub struct Append {
    /// The saga.
    pub saga_id: Uuid,
    /// The writer's fence.
    pub fence: Fence,
    /// Sequence number of the first event.
    pub first_seq: i64,
    /// The events.
    pub events: Vec<SagaEvent>,
    /// The saga's status once they are applied.
    pub status: SagaStatus,
    /// The saga's error once they are applied.
    pub error: Option<String>,
    /// When (Unix ms).
    pub now_ms: i64,
}

/// What the store tells a writer after an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppendAck {
    /// A cancel was requested for the saga since its owner last looked.
    pub cancel_requested: bool,
}

/// Filters for listing sagas (newest first).
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only sagas with this status.
    pub status: Option<SagaStatus>,
    /// Only sagas of this definition.
    pub definition: Option<String>,
    /// Only the saga this idempotency key started (at most one: keys are unique).
    pub idempotency_key: Option<String>,
    /// Most rows to return.
    pub limit: u32,
    /// Only sagas strictly older than this `(created_at_ms, id)` position.
    pub before: Option<(i64, Uuid)>,
}

/// Which finished sagas retention may delete: `completed` or `compensated` (never `stuck`,
/// never unsettled) and last changed before [`Expiry::finished_before_ms`]; one started with
/// an idempotency key also created before [`Expiry::keys_created_before_ms`], so that a
/// repeated start inside the key's window still finds its saga. Definitions are never
/// deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// Finished sagas last changed before this (Unix ms) may go.
    pub finished_before_ms: i64,
    /// A saga with an idempotency key waits until it was created before this (Unix ms).
    pub keys_created_before_ms: i64,
}

impl Expiry {
    /// Whether `saga` may be deleted under this expiry (what the stores' SQL says, for the
    /// in-memory store and for checks).
    pub fn covers(&self, saga: &SagaRecord) -> bool {
        let finished = match saga.status {
            SagaStatus::Completed | SagaStatus::Compensated => true,
            SagaStatus::Running | SagaStatus::Compensating | SagaStatus::Stuck => false,
        };
        finished
            && saga.updated_at_ms < self.finished_before_ms
            && (saga.idempotency_key.is_none() || saga.created_at_ms < self.keys_created_before_ms)
    }
}

/// What a renewal of one owner's leases found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewed {
    /// Every unsettled saga the owner holds (its lease extended).
    pub owned: Vec<Uuid>,
    /// Those of them with a pending cancel request.
    pub cancels: Vec<Uuid>,
}

/// A definition's latest version, for listings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DefinitionSummary {
    /// The name.
    pub name: String,
    /// The latest version.
    pub latest_version: i64,
    /// When the latest version was stored (Unix ms).
    pub updated_at_ms: i64,
}

/// Counters of the store's work, for the cost-per-saga figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Write transactions committed (each one an fsync on SQLite with synchronous=FULL).
    pub commits: u64,
    /// Append requests carried by those commits.
    pub appends: u64,
    /// Events written.
    pub events: u64,
    /// The largest number of appends one commit carried.
    pub max_batch: u64,
}

/// The store port.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a definition: a new version when its content changed, else the existing one.
    async fn put_definition(
        &self,
        name: &str,
        content_hash: &str,
        document: &Value,
        now_ms: i64,
    ) -> Result<PutDefinition>;
    /// A definition's version (the latest when `version` is `None`).
    async fn get_definition(&self, name: &str, version: Option<i64>) -> Result<Option<DefinitionRecord>>;
    /// Every definition name with its latest version.
    async fn list_definitions(&self) -> Result<Vec<DefinitionSummary>>;

    /// Creates a saga, or returns the one its idempotency key already started.
    async fn create_saga(&self, new: NewSaga) -> Result<Created>;
    /// Appends events to a saga's log and updates its row, if the fence still holds.
    async fn append(&self, append: Append) -> Result<AppendAck>;
    /// A saga's row.
    async fn get_saga(&self, id: Uuid) -> Result<Option<SagaRecord>>;
    /// A saga's whole log.
    async fn events(&self, id: Uuid) -> Result<Vec<StoredEvent>>;
    /// The whole logs of several sagas (an adopted batch), in one read where the backend
    /// can; a saga without events is absent from the map.
    async fn events_of(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Vec<StoredEvent>>> {
        let mut logs = HashMap::with_capacity(ids.len());
        for &id in ids {
            let log = self.events(id).await?;
            if !log.is_empty() {
                logs.insert(id, log);
            }
        }
        Ok(logs)
    }
    /// Sagas, newest first.
    async fn list_sagas(&self, filter: &ListFilter) -> Result<Vec<SagaRecord>>;

    /// Extends the lease of every unsettled saga `owner` holds; returns their ids and those
    /// with a pending cancel request.
    async fn renew_leases(&self, owner: &str, lease_until_ms: i64) -> Result<Renewed>;
    /// Adopts up to `limit` unsettled sagas whose lease expired (or whose owner is `owner`
    /// itself, after a restart): sets the owner, bumps the generation, sets the lease.
    async fn claim(
        &self,
        owner: &str,
        include_own: bool,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<SagaRecord>>;
    /// Takes a stuck saga over for an operator retry: sets the owner and bumps the generation
    /// if the saga is still stuck.
    async fn take_over_stuck(&self, id: Uuid, owner: &str, lease_until_ms: i64) -> Result<Option<SagaRecord>>;
    /// Marks a running saga as asked to cancel; returns its row (unchanged if not running).
    async fn request_cancel(&self, id: Uuid) -> Result<Option<SagaRecord>>;
    /// Gives up the leases `owner` holds (a clean shutdown), so others adopt at once.
    async fn release(&self, owner: &str) -> Result<()>;

    /// Up to `limit` sagas that `expiry` lets go, oldest first (by creation).
    async fn expired(&self, expiry: &Expiry, limit: u32) -> Result<Vec<SagaRecord>>;
    /// Deletes those of `ids` that `expiry` still lets go (checked again in the same
    /// statement), with their logs; returns the ids deleted.
    async fn delete_expired(&self, ids: &[Uuid], expiry: &Expiry) -> Result<Vec<Uuid>>;
    /// Whether this process may run retention now: with several coordinators on one
    /// database, one at a time does (so that a saga is archived once); an embedded store is
    /// always its process's own.
    async fn retention_turn(&self) -> Result<bool> {
        Ok(true)
    }
    /// Gives up to `pages` pages freed by deletions back to the file system (SQLite's
    /// incremental vacuum, in a short write of its own); returns how many it gave back.
    /// Nothing to do where the database reclaims space itself (PostgreSQL's autovacuum).
    async fn reclaim_space(&self, pages: u32) -> Result<u64> {
        let _ = pages;
        Ok(0)
    }

    /// The time leases are judged by (Unix ms): the database's clock where several hosts
    /// share one (PostgreSQL's `now()`), this host's for an embedded store. Coordinators
    /// compute every lease from it ([`crate::Coordinator`]'s lease loop keeps the offset),
    /// so hosts whose clocks differ still agree on when a lease ends.
    async fn clock_ms(&self) -> Result<i64> {
        Ok(crate::clock::now_ms())
    }

    /// Whether the database answers.
    async fn ping(&self) -> Result<()>;
    /// Work counters since start.
    fn stats(&self) -> StoreStats;
}
