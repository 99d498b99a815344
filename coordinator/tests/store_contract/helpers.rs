//! What the cases share: sagas, events and appends built in a line, and the store calls
//! the cases make, with their failures turned into panics.

use super::*;

/// `value.with(|v| v.field = x)`: a changed copy, in one line.
pub(crate) trait With: Sized {
    fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }
}
impl With for NewSaga {}
impl With for Append {}

pub(crate) fn saga(owner: &str) -> NewSaga {
    NewSaga {
        id: Uuid::now_v7(),
        definition: "trip".into(),
        version: 1,
        input: json!({"to": "Lisbon"}),
        idempotency_key: None,
        trace_context: None,
        owner: owner.into(),
        lease_until_ms: NOW + LEASE,
        now_ms: NOW,
        events: Vec::new(),
    }
}

pub(crate) fn expired(lease_until_ms: i64) -> NewSaga {
    saga("node-a").with(|n| n.lease_until_ms = lease_until_ms)
}

pub(crate) fn keyed(key: &str, input: Value) -> NewSaga {
    saga("node-a").with(|n| (n.idempotency_key, n.input) = (Some(key.into()), input))
}

pub(crate) fn started(step: &str) -> SagaEvent {
    let (step, attempt) = (step.into(), 1);
    SagaEvent::StepStarted { step, attempt }
}

pub(crate) fn succeeded(step: &str) -> SagaEvent {
    let (step, attempt, output) = (step.into(), 1, json!({"ok": 1}));
    SagaEvent::StepSucceeded { step, attempt, output }
}

pub(crate) fn failed(step: &str) -> SagaEvent {
    let (step, attempt, error) = (step.into(), 1, sagas::StepError::permanent("no"));
    SagaEvent::StepFailed { step, attempt, error }
}

/// Events for `record` under its current fence, leaving it running.
pub(crate) fn append(record: &SagaRecord, first_seq: i64, events: Vec<SagaEvent>) -> Append {
    let fence = record.fence().expect("owned");
    let (saga_id, status, error, now_ms) = (record.id, Running, None, NOW + 1);
    Append {
        saga_id,
        fence,
        first_seq,
        events,
        status,
        error,
        now_ms,
    }
}

pub(crate) fn fence(owner: &str, generation: i64) -> Fence {
    Fence {
        owner: owner.into(),
        generation,
    }
}

pub(crate) async fn create(s: &dyn Store, new: NewSaga) -> SagaRecord {
    match s.create_saga(new).await.expect("create") {
        Created::New(record) => record,
        Created::Existing(r) => panic!("expected a new saga, got existing {}", r.id),
    }
}

pub(crate) async fn put(s: &dyn Store, append: Append) -> AppendAck {
    s.append(append).await.expect("append")
}

pub(crate) async fn refused(s: &dyn Store, append: Append) -> Error {
    s.append(append).await.expect_err("the append must fail")
}

pub(crate) async fn row(s: &dyn Store, id: Uuid) -> SagaRecord {
    s.get_saga(id).await.expect("get_saga").expect("the saga exists")
}

pub(crate) async fn log(s: &dyn Store, id: Uuid) -> Vec<SagaEvent> {
    let events = s.events(id).await.expect("events");
    events.into_iter().map(|e| e.event).collect()
}

/// Moves a saga to `status` (no events) under its current fence; returns the new row.
pub(crate) async fn settle(s: &dyn Store, record: &SagaRecord, status: SagaStatus) -> SagaRecord {
    put(
        s,
        append(record, record.event_count, vec![]).with(|a| a.status = status),
    )
    .await;
    row(s, record.id).await
}

pub(crate) async fn claim(s: &dyn Store, owner: &str, include_own: bool, limit: u32) -> Vec<SagaRecord> {
    s.claim(owner, include_own, NOW, NEXT, limit).await.expect("claim")
}

pub(crate) fn ids(records: &[SagaRecord]) -> HashSet<Uuid> {
    records.iter().map(|r| r.id).collect()
}

/// Owner, generation and lease of a row.
pub(crate) fn lease(r: &SagaRecord) -> (&str, i64, i64) {
    let owner = r.owner.as_deref().unwrap_or("");
    (owner, r.generation, r.lease_until_ms)
}

/// A listing of the newest `limit` sagas.
pub(crate) fn newest(limit: u32) -> ListFilter {
    let before = None;
    ListFilter {
        status: None,
        definition: None,
        idempotency_key: None,
        limit,
        before,
    }
}

pub(crate) async fn def(s: &dyn Store, name: &str, version: Option<i64>) -> Option<DefinitionRecord> {
    s.get_definition(name, version).await.expect("get_definition")
}

pub(crate) async fn blocking(work: impl FnOnce() + Send + 'static) {
    tokio::task::spawn_blocking(work).await.expect("blocking work");
}
