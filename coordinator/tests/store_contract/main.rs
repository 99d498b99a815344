//! The store contract: one suite of cases, run against every [`Store`] implementation
//! (in memory, SQLite in a file, PostgreSQL through `testkit::pg`), plus schema checks
//! and PostgreSQL-only cases.
//!
//! Every case is an `async fn(Fixture)`; `contract!` makes one `#[tokio::test]` per case and
//! backend, named `<backend>::<case>` (`cargo test --test store_contract postgres::`).

use testkit::pg;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use coordinator::Error;
use coordinator::store::memory::MemoryStore;
use coordinator::store::postgres::PostgresStore;
use coordinator::store::sqlite::SqliteStore;
use coordinator::store::{
    Append, AppendAck, Created, DefinitionRecord, Expiry, Fence, ListFilter, NewSaga, SagaRecord, Store,
};
use futures::future::join_all;
use sagas::SagaEvent;
use sagas::SagaStatus::{self, Compensated, Compensating, Completed, Running, Stuck};
use serde_json::{Value, json};
use uuid::Uuid;

const NOW: i64 = 1_700_000_000_000;
const LEASE: i64 = 10_000;
/// The lease that claims hand out.
const NEXT: i64 = NOW + 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

/// What keeps a test's database alive.
enum Db {
    Memory,
    Sqlite(tempfile::TempDir),
    Postgres(pg::TestDb),
}

/// A store on an empty database, and a way to open another coordinator's store on it.
struct Fixture {
    backend: Backend,
    store: Arc<dyn Store>,
    db: Db,
}

impl Fixture {
    async fn new(backend: Backend) -> Fixture {
        let db = match backend {
            Backend::Memory => Db::Memory,
            Backend::Sqlite => Db::Sqlite(tempfile::tempdir().expect("temp dir")),
            Backend::Postgres => Db::Postgres(pg::fresh_database().await),
        };
        let store: Arc<dyn Store> = match &db {
            Db::Memory => Arc::new(MemoryStore::new()),
            _ => Fixture::open(&db).await,
        };
        Fixture { backend, store, db }
    }

    async fn open(db: &Db) -> Arc<dyn Store> {
        match db {
            Db::Memory => unreachable!("a memory store cannot be opened twice"),
            Db::Sqlite(dir) => {
                let path = dir.path().join("geosaga.db");
                Arc::new(SqliteStore::open(&path).await.expect("sqlite"))
            }
            Db::Postgres(db) => Arc::new(PostgresStore::connect(db.url()).await.expect("postgres")),
        }
    }

    /// Another coordinator's store on the same database (the same store, in memory).
    async fn peer(&self) -> Arc<dyn Store> {
        match self.db {
            Db::Memory => self.store.clone(),
            _ => Fixture::open(&self.db).await,
        }
    }
}

macro_rules! backend_tests {
    ($module:ident, $backend:ident, [$($case:ident),*]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::Fixture::new(super::Backend::$backend).await).await;
                }
            )*
        }
    };
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        backend_tests!(memory, Memory, [$($case),*]);
        backend_tests!(sqlite, Sqlite, [$($case),*]);
        backend_tests!(postgres, Postgres, [$($case),*]);
    };
}

contract!(
    definitions_are_versioned,
    create_and_get,
    idempotency_keys,
    one_key_started_together,
    appends_are_ordered_and_idempotent,
    a_saga_is_created_with_its_first_events,
    appends_are_fenced,
    claim_takes_expired_unsettled_sagas,
    claim_includes_own_sagas_on_request,
    renew_extends_leases_and_reports_cancels,
    the_lease_clock_is_the_database_clock,
    request_cancel,
    take_over_stuck,
    release_frees_leases,
    list_sagas_filters_and_paginates,
    list_sagas_finds_an_idempotency_key,
    group_commit_batches,
    two_coordinators_claim_disjoint_sagas,
    two_coordinators_race_on_idempotency_keys,
    two_coordinators_register_definitions,
    events_of_reads_several_logs_at_once,
    retention_takes_finished_sagas_past_their_age,
    retention_deletes_what_expiry_still_covers,
);

/// `value.with(|v| v.field = x)`: a changed copy, in one line.
trait With: Sized {
    fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }
}
impl With for NewSaga {}
impl With for Append {}

fn saga(owner: &str) -> NewSaga {
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

fn expired(lease_until_ms: i64) -> NewSaga {
    saga("node-a").with(|n| n.lease_until_ms = lease_until_ms)
}

fn keyed(key: &str, input: Value) -> NewSaga {
    saga("node-a").with(|n| (n.idempotency_key, n.input) = (Some(key.into()), input))
}

fn started(step: &str) -> SagaEvent {
    let (step, attempt) = (step.into(), 1);
    SagaEvent::StepStarted { step, attempt }
}

fn succeeded(step: &str) -> SagaEvent {
    let (step, attempt, output) = (step.into(), 1, json!({"ok": 1}));
    SagaEvent::StepSucceeded { step, attempt, output }
}

fn failed(step: &str) -> SagaEvent {
    let (step, attempt, error) = (step.into(), 1, sagas::StepError::permanent("no"));
    SagaEvent::StepFailed { step, attempt, error }
}

/// Events for `record` under its current fence, leaving it running.
fn append(record: &SagaRecord, first_seq: i64, events: Vec<SagaEvent>) -> Append {
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

fn fence(owner: &str, generation: i64) -> Fence {
    Fence {
        owner: owner.into(),
        generation,
    }
}

async fn create(s: &dyn Store, new: NewSaga) -> SagaRecord {
    match s.create_saga(new).await.expect("create") {
        Created::New(record) => record,
        Created::Existing(r) => panic!("expected a new saga, got existing {}", r.id),
    }
}

async fn put(s: &dyn Store, append: Append) -> AppendAck {
    s.append(append).await.expect("append")
}

async fn refused(s: &dyn Store, append: Append) -> Error {
    s.append(append).await.expect_err("the append must fail")
}

async fn row(s: &dyn Store, id: Uuid) -> SagaRecord {
    s.get_saga(id).await.expect("get_saga").expect("the saga exists")
}

async fn log(s: &dyn Store, id: Uuid) -> Vec<SagaEvent> {
    let events = s.events(id).await.expect("events");
    events.into_iter().map(|e| e.event).collect()
}

/// Moves a saga to `status` (no events) under its current fence; returns the new row.
async fn settle(s: &dyn Store, record: &SagaRecord, status: SagaStatus) -> SagaRecord {
    put(
        s,
        append(record, record.event_count, vec![]).with(|a| a.status = status),
    )
    .await;
    row(s, record.id).await
}

async fn claim(s: &dyn Store, owner: &str, include_own: bool, limit: u32) -> Vec<SagaRecord> {
    s.claim(owner, include_own, NOW, NEXT, limit).await.expect("claim")
}

fn ids(records: &[SagaRecord]) -> HashSet<Uuid> {
    records.iter().map(|r| r.id).collect()
}

/// Owner, generation and lease of a row.
fn lease(r: &SagaRecord) -> (&str, i64, i64) {
    let owner = r.owner.as_deref().unwrap_or("");
    (owner, r.generation, r.lease_until_ms)
}

/// A listing of the newest `limit` sagas.
fn newest(limit: u32) -> ListFilter {
    let before = None;
    ListFilter {
        status: None,
        definition: None,
        idempotency_key: None,
        limit,
        before,
    }
}

async fn def(s: &dyn Store, name: &str, version: Option<i64>) -> Option<DefinitionRecord> {
    s.get_definition(name, version).await.expect("get_definition")
}

async fn blocking(work: impl FnOnce() + Send + 'static) {
    tokio::task::spawn_blocking(work).await.expect("blocking work");
}

async fn definitions_are_versioned(f: Fixture) {
    let s = &*f.store;
    let (doc1, doc2) = (json!({"steps": [1]}), json!({"steps": [2]}));
    let v1 = s.put_definition("trip", "h1", &doc1, 10).await.unwrap();
    assert!(v1.created);
    assert_eq!((v1.record.version, v1.record.created_at_ms), (1, 10));
    assert_eq!(v1.record.document, doc1);
    let again = s.put_definition("trip", "h1", &doc1, 20).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.record, v1.record, "same content, same version");
    let v2 = s.put_definition("trip", "h2", &doc2, 30).await.unwrap();
    assert_eq!((v2.created, v2.record.version), (true, 2));
    let back = s.put_definition("trip", "h1", &doc1, 40).await.unwrap();
    assert_eq!((back.created, back.record.version), (false, 1));
    assert_eq!(def(s, "trip", None).await, Some(v2.record));
    assert_eq!(def(s, "trip", Some(1)).await, Some(v1.record));
    assert_eq!(def(s, "trip", Some(3)).await, None);
    assert_eq!(def(s, "nope", None).await, None);
    let alpha = s.put_definition("alpha", "a", &doc1, 50).await.unwrap();
    assert_eq!(alpha.record.version, 1, "versions count per name");
    let list = s.list_definitions().await.unwrap();
    let list: Vec<_> = list.iter().map(|d| (d.name.as_str(), d.latest_version)).collect();
    assert_eq!(list, [("alpha", 1), ("trip", 2)]);
    assert_eq!(list_updated(s).await, [50, 30]);
}

async fn list_updated(s: &dyn Store) -> Vec<i64> {
    let list = s.list_definitions().await.expect("list_definitions");
    list.iter().map(|d| d.updated_at_ms).collect()
}

async fn create_and_get(f: Fixture) {
    let s = &*f.store;
    let input = json!({"n": 12.5, "big": u64::MAX, "text": "héllo ✓ \"q\"", "a": [1, null, true]});
    let trace = Some("00-ab-01".to_owned());
    let new = saga("node-a").with(|n| (n.input, n.trace_context) = (input.clone(), trace));
    let r = create(s, new.clone()).await;
    assert_eq!((r.id, r.version, r.event_count), (new.id, 1, 0));
    assert_eq!((r.definition.as_str(), r.status), ("trip", Running));
    assert_eq!((&r.input, r.error.as_deref()), (&input, None));
    assert_eq!((r.created_at_ms, r.updated_at_ms), (NOW, NOW));
    assert_eq!(lease(&r), ("node-a", 1, NOW + LEASE));
    assert_eq!(r.trace_context.as_deref(), Some("00-ab-01"));
    assert!(!r.cancel_requested);
    assert_eq!(r.fence(), Some(fence("node-a", 1)));
    assert_eq!(row(s, r.id).await, r);
    assert!(log(s, r.id).await.is_empty());
    assert_eq!(s.get_saga(Uuid::new_v4()).await.unwrap(), None);
    s.ping().await.unwrap();
}

async fn idempotency_keys(f: Fixture) {
    let s = &*f.store;
    let first = create(s, keyed("k1", json!(1))).await;
    assert_eq!(first.idempotency_key.as_deref(), Some("k1"));
    let retry = keyed("k1", json!(1));
    let retry_id = retry.id;
    match s.create_saga(retry).await.unwrap() {
        Created::Existing(existing) => assert_eq!(existing, first),
        Created::New(_) => panic!("the same key and request must return the existing saga"),
    }
    assert_eq!(s.get_saga(retry_id).await.unwrap(), None);
    let err = s.create_saga(keyed("k1", json!(2))).await.unwrap_err();
    let conflict = |e: &Error| match e {
        Error::IdempotencyConflict { key, existing } => key == "k1" && *existing == first.id,
        _ => false,
    };
    assert!(conflict(&err), "{err:?}");
    let other_version = keyed("k1", json!(1)).with(|n| n.version = 2);
    let err = s.create_saga(other_version).await.unwrap_err();
    assert!(conflict(&err), "{err:?}");
    let a = create(s, saga("node-a")).await;
    let b = create(s, saga("node-a")).await;
    assert_ne!(a.id, b.id, "without a key, every start is a new saga");
    // Concurrent starts with one key (in one batch, or several): exactly one creates.
    let starts = (0..10).map(|_| s.create_saga(keyed("k2", json!(1))));
    let mut new = HashSet::new();
    let mut seen = HashSet::new();
    for created in join_all(starts).await {
        match created.expect("create") {
            Created::New(r) => new.insert(r.id),
            Created::Existing(r) => seen.insert(r.id),
        };
    }
    assert_eq!(new.len(), 1);
    assert!(seen.is_subset(&new));
}

/// Starts with one idempotency key submitted together, two different requests among them
/// (on SQLite and PostgreSQL, several in one batch): exactly one saga is stored, with its own
/// first events only; every other start gets that saga when its request is the same, else a
/// conflict naming it.
async fn one_key_started_together(f: Fixture) {
    const STARTS: usize = 32;
    const OTHERS: usize = 64;
    // Other starts first keep the writer busy, so that the keyed ones queue up together.
    let others: Vec<_> = (0..OTHERS)
        .map(|_| {
            let s = f.store.clone();
            tokio::spawn(async move { create(&*s, saga("node-a")).await })
        })
        .collect();
    let starts = (0..STARTS).map(|i| {
        let s = f.store.clone();
        let new = keyed("together", json!(i % 2)).with(|n| n.events = vec![started(&format!("s{i}"))]);
        tokio::spawn(async move { (new.clone(), s.create_saga(new).await) })
    });
    let outcomes: Vec<(NewSaga, Result<Created, Error>)> = join_all(starts)
        .await
        .into_iter()
        .map(|r| r.expect("start task"))
        .collect();
    for other in join_all(others).await {
        other.expect("start task");
    }
    let winners: Vec<(&NewSaga, &SagaRecord)> = outcomes
        .iter()
        .filter_map(|(new, created)| match created {
            Ok(Created::New(r)) => Some((new, r)),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "exactly one start creates");
    let (first, saga) = winners[0];
    assert_eq!((saga.id, saga.event_count), (first.id, 1));
    assert_eq!(row(&*f.store, saga.id).await, *saga);
    assert_eq!(log(&*f.store, saga.id).await, first.events);
    for (new, created) in &outcomes {
        match created {
            Ok(Created::New(_)) => {}
            Ok(Created::Existing(existing)) => {
                assert_eq!(new.input, first.input, "only the same request gets the saga");
                assert_eq!(existing, saga);
            }
            Err(Error::IdempotencyConflict { key, existing }) => {
                assert_ne!(new.input, first.input, "the same request is not a conflict");
                assert_eq!((key.as_str(), *existing), ("together", saga.id));
            }
            Err(e) => panic!("unexpected: {e:?}"),
        }
        assert_eq!(f.store.get_saga(new.id).await.unwrap().is_some(), new.id == saga.id);
    }
    assert_eq!(f.store.list_sagas(&newest(200)).await.unwrap().len(), 1 + OTHERS);
    if f.backend != Backend::Memory {
        assert!(f.store.stats().max_batch > 1, "the starts were never batched together");
    }
}

async fn appends_are_ordered_and_idempotent(f: Fixture) {
    let s = &*f.store;
    let r = create(s, saga("node-a")).await;
    let done = succeeded("a");
    let first = vec![started("a"), done.clone()];
    assert!(!put(s, append(&r, 0, first.clone())).await.cancel_requested);
    put(s, append(&r, 2, vec![started("b")])).await;
    let stored = s.events(r.id).await.unwrap();
    let positions: Vec<_> = stored.iter().map(|e| (e.seq, e.at_ms)).collect();
    assert_eq!(positions, [0, 1, 2].map(|seq| (seq, NOW + 1)));
    assert_eq!(log(s, r.id).await, [started("a"), done, started("b")]);
    // A retried append (same events, same seqs) is harmless.
    put(s, append(&r, 0, first).with(|a| a.now_ms = NOW + 5)).await;
    assert_eq!(s.events(r.id).await.unwrap(), stored);
    assert_eq!(row(s, r.id).await.event_count, 3);
    let failed = failed("b");
    let error = Some("b failed".to_owned());
    let unwind = |a: &mut Append| (a.status, a.error, a.now_ms) = (Compensating, error, NOW + 9);
    put(s, append(&r, 3, vec![failed.clone()]).with(unwind)).await;
    let r = row(s, r.id).await;
    assert_eq!((r.status, r.updated_at_ms, r.event_count), (Compensating, NOW + 9, 4));
    assert_eq!(r.error.as_deref(), Some("b failed"));
    assert_eq!(log(s, r.id).await[3], failed);
}

/// The logs of an adopted batch come in one read, each whole and in order; a saga without
/// events and an unknown id are absent.
async fn events_of_reads_several_logs_at_once(f: Fixture) {
    let s = &*f.store;
    let a = create(s, saga("node-a")).await;
    let b = create(s, saga("node-a")).await;
    let empty = create(s, saga("node-a")).await;
    put(s, append(&a, 0, vec![started("a"), succeeded("a")])).await;
    put(s, append(&a, 2, vec![started("b")])).await;
    put(s, append(&b, 0, vec![started("a")])).await;
    let logs = s.events_of(&[a.id, b.id, empty.id, Uuid::now_v7()]).await.unwrap();
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert_eq!(logs[&a.id], s.events(a.id).await.unwrap());
    assert_eq!(logs[&a.id].iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(
        logs[&b.id].iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        [started("a")]
    );
    assert!(s.events_of(&[]).await.unwrap().is_empty());
}

/// The starts of a saga's root steps are written with its row, in the same transaction;
/// a repeated start with the same idempotency key writes nothing.
async fn a_saga_is_created_with_its_first_events(f: Fixture) {
    let s = &*f.store;
    let first = vec![started("a"), started("b")];
    let new = keyed("k-first", json!({})).with(|n| n.events = first.clone());
    let r = create(s, new.clone()).await;
    assert_eq!(log(s, r.id).await, first);
    let stored = s.events(r.id).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| (e.seq, e.at_ms)).collect::<Vec<_>>(),
        [(0, NOW), (1, NOW)]
    );
    assert_eq!(
        (row(s, r.id).await.event_count, row(s, r.id).await.status),
        (2, SagaStatus::Running)
    );
    put(s, append(&r, 2, vec![succeeded("a")])).await;
    let again = s.create_saga(new.with(|n| n.id = Uuid::now_v7())).await.unwrap();
    assert!(matches!(again, Created::Existing(ref e) if e.id == r.id), "{again:?}");
    assert_eq!(log(s, r.id).await, [started("a"), started("b"), succeeded("a")]);
}

async fn appends_are_fenced(f: Fixture) {
    let s = &*f.store;
    let old = create(s, expired(NOW - 1)).await;
    let claimed = claim(s, "node-b", false, 10).await;
    let leases: Vec<_> = claimed.iter().map(lease).collect();
    assert_eq!(leases, [("node-b", 2, NEXT)]);
    for stale in [fence("node-a", 1), fence("node-b", 1), fence("node-a", 2)] {
        let stale = append(&old, 0, vec![started("a")]).with(|a| a.fence = stale);
        let err = refused(s, stale).await;
        assert!(matches!(err, Error::Fenced(id) if id == old.id), "{err:?}");
    }
    put(s, append(&claimed[0], 0, vec![started("x")])).await;
    assert_eq!(log(s, old.id).await, [started("x")]);
    let unknown = append(&claimed[0], 0, vec![]).with(|a| a.saga_id = Uuid::new_v4());
    let unknown_id = unknown.saga_id;
    let err = refused(s, unknown).await;
    let not_found = matches!(err, Error::SagaNotFound(id) if id == unknown_id);
    assert!(not_found, "{err:?}");
    assert!(log(s, unknown_id).await.is_empty());
}

async fn claim_takes_expired_unsettled_sagas(f: Fixture) {
    let s = &*f.store;
    let running = create(s, expired(NOW - 100)).await;
    let alive = create(s, saga("node-a")).await;
    for status in [Completed, Stuck] {
        settle(s, &create(s, expired(NOW - 100)).await, status).await;
    }
    let compensating = settle(s, &create(s, expired(NOW - 50)).await, Compensating).await;
    let claimed = claim(s, "node-b", false, 10).await;
    assert_eq!(ids(&claimed), HashSet::from([running.id, compensating.id]));
    for r in &claimed {
        assert_eq!(lease(r), ("node-b", 2, NEXT));
        assert_eq!(&row(s, r.id).await, r);
    }
    assert!(claim(s, "node-c", false, 10).await.is_empty());
    assert_eq!(row(s, alive.id).await, alive);
    // The oldest leases go first.
    let a = create(s, expired(NOW - 30)).await;
    let b = create(s, expired(NOW - 10)).await;
    let c = create(s, expired(NOW - 20)).await;
    let first = claim(s, "node-c", false, 2).await;
    assert_eq!(ids(&first), HashSet::from([a.id, c.id]));
    let second = claim(s, "node-c", false, 2).await;
    assert_eq!(ids(&second), HashSet::from([b.id]));
}

async fn claim_includes_own_sagas_on_request(f: Fixture) {
    let s = &*f.store;
    let mine = create(s, saga("node-a")).await;
    settle(s, &create(s, saga("node-a")).await, Completed).await;
    assert!(claim(s, "node-a", false, 10).await.is_empty());
    assert!(claim(s, "node-b", true, 10).await.is_empty());
    let own = claim(s, "node-a", true, 10).await;
    assert_eq!(ids(&own), HashSet::from([mine.id]));
    assert_eq!(lease(&own[0]), ("node-a", 2, NEXT));
}

async fn renew_extends_leases_and_reports_cancels(f: Fixture) {
    let s = &*f.store;
    let a1 = create(s, saga("node-a")).await;
    let a2 = create(s, saga("node-a")).await;
    let b1 = create(s, saga("node-b")).await;
    let a3 = settle(s, &create(s, saga("node-a")).await, Completed).await;
    s.request_cancel(a2.id).await.unwrap();
    let renewed = s.renew_leases("node-a", NOW + 9000).await.unwrap();
    assert_eq!(renewed.cancels, [a2.id]);
    assert_eq!(ids_of(&renewed.owned), HashSet::from([a1.id, a2.id]));
    for id in [a1.id, a2.id] {
        assert_eq!(row(s, id).await.lease_until_ms, NOW + 9000);
    }
    for id in [a3.id, b1.id] {
        assert_eq!(row(s, id).await.lease_until_ms, NOW + LEASE);
    }
    let b = s.renew_leases("node-b", NOW + 9000).await.unwrap();
    assert_eq!((b.owned, b.cancels), (vec![b1.id], vec![]));
}

/// The clock leases are judged by: PostgreSQL's own (`clock_timestamp()`, so that every
/// coordinator of a database agrees), this host's for the embedded stores. One host runs
/// both here, so they agree within a generous margin; the PostgreSQL one moves with the
/// database's clock, not with a transaction's start.
async fn the_lease_clock_is_the_database_clock(f: Fixture) {
    let s = &*f.store;
    let first = s.clock_ms().await.unwrap();
    let local = coordinator::clock::now_ms();
    assert!((first - local).abs() < 60_000, "{first} vs {local}");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = s.clock_ms().await.unwrap();
    assert!(second >= first + 20, "{first} then {second}");
}

async fn request_cancel(f: Fixture) {
    let s = &*f.store;
    let r = create(s, saga("node-a")).await;
    let asked = s.request_cancel(r.id).await.unwrap();
    assert!(asked.expect("the saga").cancel_requested);
    let ack = put(s, append(&r, 0, vec![started("a")])).await;
    assert!(ack.cancel_requested, "the owner learns of it");
    let ack = put(s, append(&r, 1, vec![]).with(|a| a.status = Compensating)).await;
    assert!(!ack.cancel_requested, "unwinding consumes it");
    assert!(!row(s, r.id).await.cancel_requested);
    let done = settle(s, &create(s, saga("node-a")).await, Completed).await;
    assert_eq!(s.request_cancel(done.id).await.unwrap(), Some(done));
    assert_eq!(s.request_cancel(Uuid::new_v4()).await.unwrap(), None);
}

async fn take_over_stuck(f: Fixture) {
    let s = &*f.store;
    let stuck = settle(s, &create(s, saga("node-a")).await, Stuck).await;
    let running = create(s, saga("node-a")).await;
    let taken = s.take_over_stuck(stuck.id, "node-b", NEXT).await.unwrap();
    let taken = taken.expect("a stuck saga is taken over");
    assert_eq!((lease(&taken), taken.status), (("node-b", 2, NEXT), Stuck));
    let unwind = |a: &mut Append| a.status = Compensating;
    let err = refused(s, append(&stuck, 0, vec![]).with(unwind)).await;
    assert!(matches!(err, Error::Fenced(_)), "{err:?}");
    let retry = vec![SagaEvent::RetryRequested {}];
    put(s, append(&taken, 0, retry).with(unwind)).await;
    for id in [running.id, Uuid::new_v4()] {
        let taken = s.take_over_stuck(id, "node-b", NOW).await.unwrap();
        assert_eq!(taken, None);
    }
}

async fn release_frees_leases(f: Fixture) {
    let s = &*f.store;
    let a1 = create(s, saga("node-a")).await;
    let b1 = create(s, saga("node-b")).await;
    let a2 = settle(s, &create(s, saga("node-a")).await, Completed).await;
    s.release("node-a").await.unwrap();
    assert_eq!(row(s, a1.id).await.lease_until_ms, 0);
    assert_eq!(row(s, a2.id).await.lease_until_ms, NOW + LEASE);
    assert_eq!(row(s, b1.id).await.lease_until_ms, NOW + LEASE);
    let adopted = claim(s, "node-b", false, 10).await;
    assert_eq!(ids(&adopted), HashSet::from([a1.id]));
}

/// Every page of a listing, in pages of `limit`, concatenated.
async fn list(s: &dyn Store, status: Option<SagaStatus>, def: Option<&str>, limit: u32) -> Vec<SagaRecord> {
    let definition = def.map(str::to_owned);
    let mut filter = ListFilter {
        status,
        definition,
        ..newest(limit)
    };
    let mut out = Vec::new();
    loop {
        let page = s.list_sagas(&filter).await.expect("list_sagas");
        assert!(page.len() <= limit as usize);
        let Some(last) = page.last() else { return out };
        filter.before = Some((last.created_at_ms, last.id));
        out.extend(page);
    }
}

async fn list_sagas_filters_and_paginates(f: Fixture) {
    let s = &*f.store;
    for i in 0..25_i64 {
        let definition = if i % 2 == 0 { "even" } else { "odd" };
        let at = NOW + i / 3; // ties in groups of 3
        let new = saga("node-a").with(|n| (n.definition, n.now_ms) = (definition.into(), at));
        let r = create(s, new).await;
        if i % 5 == 0 {
            settle(s, &r, Completed).await;
        }
    }
    let all = s.list_sagas(&newest(100)).await.unwrap();
    assert_eq!(all.len(), 25);
    let keys: Vec<_> = all.iter().map(|r| (r.created_at_ms, r.id)).collect();
    assert!(keys.windows(2).all(|w| w[0] > w[1]), "newest first");
    assert_eq!(list(s, None, None, 10).await, all, "no duplicates, no gaps");
    assert_eq!(s.list_sagas(&newest(10)).await.unwrap(), all[..10]);
    let completed = list(s, Some(Completed), None, 2).await;
    assert_eq!(completed.len(), 5);
    assert!(completed.iter().all(|r| r.status == Completed));
    let mut even = all.clone();
    even.retain(|r| r.definition == "even");
    assert_eq!(even.len(), 13);
    assert_eq!(list(s, None, Some("even"), 4).await, even);
    assert_eq!(list(s, Some(Completed), Some("even"), 10).await.len(), 3);
    assert!(list(s, Some(Stuck), None, 10).await.is_empty());
}

async fn list_sagas_finds_an_idempotency_key(f: Fixture) {
    let s = &*f.store;
    let keyed = create(s, saga("node-a").with(|n| n.idempotency_key = Some("order-7".into()))).await;
    create(s, saga("node-a").with(|n| n.idempotency_key = Some("order-8".into()))).await;
    create(s, saga("node-a")).await;
    let find = |key: &str, status: Option<SagaStatus>| ListFilter {
        idempotency_key: Some(key.into()),
        status,
        ..newest(10)
    };
    let found = s.list_sagas(&find("order-7", None)).await.unwrap();
    assert_eq!(ids(&found), HashSet::from([keyed.id]));
    assert!(s.list_sagas(&find("order-9", None)).await.unwrap().is_empty());
    assert!(
        s.list_sagas(&find("order-7", Some(Stuck))).await.unwrap().is_empty(),
        "filters combine"
    );
}

async fn group_commit_batches(f: Fixture) {
    const N: usize = 200;
    let store = |s: &Arc<dyn Store>| s.clone();
    let creates = (0..N).map(|_| {
        let s = store(&f.store);
        tokio::spawn(async move { create(&*s, saga("node-a")).await })
    });
    let mut records = Vec::new();
    for created in join_all(creates).await {
        records.push(created.expect("create task"));
    }
    let before = f.store.stats();
    let appends = records.iter().map(|r| {
        let (s, append) = (store(&f.store), append(r, 0, vec![started("a")]));
        tokio::spawn(async move { s.append(append).await })
    });
    for appended in join_all(appends).await {
        appended.unwrap().expect("append");
    }
    let after = f.store.stats();
    assert_eq!(after.appends - before.appends, N as u64);
    assert_eq!(after.events - before.events, N as u64);
    if f.backend != Backend::Memory {
        let commits = after.commits - before.commits;
        assert!(commits < N as u64, "no batching: {commits} commits");
        assert!(after.max_batch > 1);
    }
    for r in &records {
        assert_eq!(log(&*f.store, r.id).await, [started("a")]);
    }
    // Batched together: retries of a committed append that carry one event more (only that
    // one is stored), new appends, and appends from a stale generation (fenced, nothing
    // stored).
    let next = [started("a"), succeeded("a")];
    let mixed = records.iter().enumerate().map(|(i, r)| {
        let append = match i % 3 {
            0 => append(r, 0, next.to_vec()),
            1 => append(r, 1, vec![succeeded("a")]),
            _ => append(r, 1, vec![succeeded("a")]).with(|a| a.fence.generation += 1),
        };
        let s = store(&f.store);
        tokio::spawn(async move { s.append(append).await })
    });
    let before = f.store.stats();
    let mixed = join_all(mixed).await;
    if f.backend != Backend::Memory {
        let commits = f.store.stats().commits - before.commits;
        assert!(commits < N as u64, "no batching: {commits} commits");
    }
    for (i, (r, appended)) in records.iter().zip(mixed).enumerate() {
        let appended = appended.expect("append task");
        if i % 3 == 2 {
            assert!(matches!(appended, Err(Error::Fenced(id)) if id == r.id), "{appended:?}");
            assert_eq!(log(&*f.store, r.id).await, [started("a")]);
            assert_eq!(row(&*f.store, r.id).await.event_count, 1);
        } else {
            appended.expect("append");
            assert_eq!(log(&*f.store, r.id).await, next);
            assert_eq!(row(&*f.store, r.id).await.event_count, 2);
        }
    }
}

/// A saga of each status, with a step in its log, last changed at `NOW + 1`; the keyed one
/// completed. Returns them in creation order: completed, compensated, stuck, compensating,
/// running, keyed.
async fn one_of_each(s: &dyn Store) -> Vec<SagaRecord> {
    let mut rows = Vec::new();
    for status in [Completed, Compensated, Stuck, Compensating, Running, Completed] {
        let new = if rows.len() == 5 {
            keyed("kept", json!(1))
        } else {
            saga("node-a")
        };
        let r = create(s, new).await;
        put(s, append(&r, 0, vec![started("a")]).with(|a| a.status = status)).await;
        rows.push(row(s, r.id).await);
    }
    rows
}

async fn retention_takes_finished_sagas_past_their_age(f: Fixture) {
    let s = &*f.store;
    let all = one_of_each(s).await;
    let expired = |finished_before_ms, keys_created_before_ms, limit| async move {
        let expiry = Expiry {
            finished_before_ms,
            keys_created_before_ms,
        };
        let found = s.expired(&expiry, limit).await.expect("expired");
        found.iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(
        expired(NOW + 2, NOW, 10).await,
        [all[0].id, all[1].id],
        "finished, and no key"
    );
    assert_eq!(expired(NOW + 2, NOW, 1).await, [all[0].id], "the oldest first");
    assert!(
        expired(NOW + 1, NOW + 1, 10).await.is_empty(),
        "changed at NOW + 1: not before it"
    );
    let with_key = expired(NOW + 2, NOW + 1, 10).await;
    assert_eq!(with_key, [all[0].id, all[1].id, all[5].id], "the key's window is over");
    let found = s.expired(
        &Expiry {
            finished_before_ms: NOW + 2,
            keys_created_before_ms: NOW,
        },
        10,
    );
    assert_eq!(found.await.unwrap()[0], all[0], "whole rows, for the archive");
}

async fn retention_deletes_what_expiry_still_covers(f: Fixture) {
    let s = &*f.store;
    let all = one_of_each(s).await;
    let ids: Vec<Uuid> = all.iter().map(|r| r.id).collect();
    let expiry = Expiry {
        finished_before_ms: NOW + 2,
        keys_created_before_ms: NOW,
    };
    let deleted = s.delete_expired(&ids, &expiry).await.expect("delete");
    assert_eq!(ids_of(&deleted), ids_of(&ids[..2]), "the finished ones without a key");
    for id in &ids[..2] {
        assert_eq!(s.get_saga(*id).await.unwrap(), None);
        assert!(log(s, *id).await.is_empty(), "the log goes with its saga");
    }
    for r in &all[2..] {
        assert_eq!(row(s, r.id).await, *r, "untouched");
        assert_eq!(log(s, r.id).await, [started("a")]);
    }
    assert!(
        s.delete_expired(&ids, &expiry).await.unwrap().is_empty(),
        "nothing twice"
    );
    // Within its window the key still answers with its saga; past it, the key is free.
    let again = s.create_saga(keyed("kept", json!(1))).await.unwrap();
    assert!(matches!(again, Created::Existing(r) if r.id == all[5].id));
    let past = Expiry {
        keys_created_before_ms: NOW + 1,
        ..expiry
    };
    assert_eq!(s.delete_expired(&ids, &past).await.unwrap(), [all[5].id]);
    assert!(matches!(
        s.create_saga(keyed("kept", json!(1))).await.unwrap(),
        Created::New(_)
    ));
}

fn ids_of(ids: &[Uuid]) -> HashSet<Uuid> {
    ids.iter().copied().collect()
}

async fn two_coordinators_claim_disjoint_sagas(f: Fixture) {
    let peer = f.peer().await;
    for _ in 0..40 {
        create(&*f.store, expired(NOW - 1)).await;
    }
    let b = claim(&*f.store, "node-b", false, 40);
    let (b, c) = tokio::join!(b, claim(&*peer, "node-c", false, 40));
    assert_eq!(b.len() + c.len(), 40);
    assert!(ids(&b).is_disjoint(&ids(&c)), "adopted once");
    assert!(b.iter().chain(&c).all(|r| r.generation == 2));
}

async fn two_coordinators_race_on_idempotency_keys(f: Fixture) {
    let peer = f.peer().await;
    let start = |s: &Arc<dyn Store>, key: String, input: Value| {
        let s = s.clone();
        async move { s.create_saga(keyed(&key, input)).await }
    };
    let races = (0..20).map(|i| {
        let (key, input) = (format!("key-{i}"), json!(i));
        let mine = start(&f.store, key.clone(), input.clone());
        futures::future::join(mine, start(&peer, key, input))
    });
    for (a, b) in join_all(races).await {
        match (a.expect("no SQL error"), b.expect("no SQL error")) {
            (Created::New(n), Created::Existing(e)) | (Created::Existing(e), Created::New(n)) => {
                assert_eq!(n.id, e.id)
            }
            other => panic!("exactly one start creates: {other:?}"),
        }
    }
    let a = start(&f.store, "clash".into(), json!(1));
    let (a, b) = tokio::join!(a, start(&peer, "clash".into(), json!(2)));
    let outcomes = [a, b].map(|r| match r {
        Ok(Created::New(_)) => "new",
        Err(Error::IdempotencyConflict { .. }) => "conflict",
        other => panic!("unexpected: {other:?}"),
    });
    let mut outcomes = outcomes.to_vec();
    outcomes.sort();
    assert_eq!(outcomes, ["conflict", "new"]);
}

async fn two_coordinators_register_definitions(f: Fixture) {
    let stores = [f.store.clone(), f.peer().await];
    let puts = (0..16).map(|i| {
        let s = stores[i % 2].clone();
        let hash = format!("h{}", i.min(8)); // 8..16: the same content
        async move { s.put_definition("trip", &hash, &json!(hash), NOW).await }
    });
    let (mut created, mut same) = (Vec::new(), HashSet::new());
    for (i, put) in join_all(puts).await.into_iter().enumerate() {
        let put = put.expect("no SQL error");
        if put.created {
            created.push(put.record.version);
        }
        if i >= 8 {
            same.insert(put.record.version);
        }
    }
    created.sort();
    assert_eq!(created, (1..=9).collect::<Vec<_>>(), "one version per content");
    assert_eq!(same.len(), 1);
}

/// The tables and columns the code reads and writes: (table, column, SQLite type, PostgreSQL type).
const SCHEMA: &[[&str; 4]] = &[
    ["definitions", "content_hash", "TEXT", "text"],
    ["definitions", "created_at_ms", "INTEGER", "bigint"],
    ["definitions", "document", "TEXT", "jsonb"],
    ["definitions", "name", "TEXT", "text"],
    ["definitions", "version", "INTEGER", "bigint"],
    ["saga_events", "at_ms", "INTEGER", "bigint"],
    ["saga_events", "event", "TEXT", "jsonb"],
    ["saga_events", "saga_id", "TEXT", "uuid"],
    ["saga_events", "seq", "INTEGER", "bigint"],
    ["sagas", "cancel_requested", "INTEGER", "boolean"],
    ["sagas", "created_at_ms", "INTEGER", "bigint"],
    ["sagas", "definition", "TEXT", "text"],
    ["sagas", "error", "TEXT", "text"],
    ["sagas", "event_count", "INTEGER", "bigint"],
    ["sagas", "generation", "INTEGER", "bigint"],
    ["sagas", "id", "TEXT", "uuid"],
    ["sagas", "idempotency_key", "TEXT", "text"],
    ["sagas", "input", "TEXT", "jsonb"],
    ["sagas", "lease_until_ms", "INTEGER", "bigint"],
    ["sagas", "owner", "TEXT", "text"],
    ["sagas", "status", "TEXT", "text"],
    ["sagas", "trace_context", "TEXT", "text"],
    ["sagas", "updated_at_ms", "INTEGER", "bigint"],
    ["sagas", "version", "INTEGER", "bigint"],
];

/// [`SCHEMA`] as (table, column, type) with the types of column `types` (2: SQLite, 3: PostgreSQL).
fn expected_schema(types: usize) -> Vec<(String, String, String)> {
    let column = |c: &[&str; 4]| (c[0].into(), c[1].into(), c[types].into());
    SCHEMA.iter().map(column).collect()
}

#[tokio::test]
async fn sqlite_schema_matches_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("geosaga.db");
    let _store = SqliteStore::open(&path).await.unwrap();
    let url = format!("sqlite://{}", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT m.name, p.name, p.type FROM sqlite_master m JOIN pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT IN ('_sqlx_migrations', 'sqlite_sequence') ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(columns, expected_schema(2));
}

#[tokio::test]
async fn postgres_schema_matches_the_code() {
    let db = pg::fresh_database().await;
    let _store = PostgresStore::connect(db.url()).await.unwrap();
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations' ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(columns, expected_schema(3));
    pool.close().await;
}

/// `jsonb` refuses `\u0000`: such a write fails alone, the rest of its batch commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_refused_write_fails_alone() {
    let f = Fixture::new(Backend::Postgres).await;
    let bad = saga("node-a").with(|n| n.input = json!({"nul": "a\u{0}b"}));
    let good = |_| f.store.create_saga(saga("node-a"));
    let mut starts: Vec<_> = (0..30).map(good).collect();
    starts.insert(15, f.store.create_saga(bad));
    let mut results = join_all(starts).await;
    let refused = results.remove(15);
    let message = |e: &Error| matches!(e, Error::Store(m) if m.contains("refused"));
    assert!(refused.as_ref().is_err_and(message), "{refused:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(Created::New(_)))));
    let listed = f.store.list_sagas(&newest(100)).await;
    assert_eq!(listed.unwrap().len(), 30);
}

/// A database that goes away: calls fail with `Error::Store` while it is down, and the same
/// store works again once it is back, with nothing committed lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_survives_a_server_restart() {
    let server = Arc::new(pg::PgServer::dedicated());
    let db = server.fresh_database().await;
    let store = PostgresStore::connect(db.url()).await.unwrap();
    let r = create(&store, saga("node-a")).await;
    put(&store, append(&r, 0, vec![started("a")])).await;
    let down = server.clone();
    blocking(move || down.stop()).await;
    let next = || append(&r, 1, vec![started("b")]);
    let (ping, appended) = tokio::join!(store.ping(), store.append(next()));
    assert!(matches!(ping, Err(Error::Store(_))), "{ping:?}");
    assert!(matches!(appended, Err(Error::Store(_))), "{appended:?}");
    let up = server.clone();
    blocking(move || up.start()).await;
    let mut attempts = 0;
    while let Err(e) = store.append(next()).await {
        assert!(matches!(e, Error::Store(_)), "{e:?}");
        attempts += 1;
        assert!(attempts < 50, "the store did not come back: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(log(&store, r.id).await, [started("a"), started("b")]);
}

/// A database a newer binary migrated (a migration this one does not know) is refused with
/// an error that says so, and is left as it was.
#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused() {
    const FUTURE: &str = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, '\\x00', 0)";
    let expect_refusal = |error: Error| {
        let text = error.to_string();
        assert!(
            text.contains("schema is at version 9999, newer than this geosaga"),
            "{text}"
        );
        assert!(text.contains("docs/operations.md"), "{text}");
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("geosaga.db");
    drop(SqliteStore::open(&path).await.unwrap());
    let url = format!("sqlite://{}", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(&FUTURE.replace("'\\x00'", "x'00'"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    expect_refusal(SqliteStore::open(&path).await.err().expect("refused"));

    let db = pg::fresh_database().await;
    drop(PostgresStore::connect(db.url()).await.unwrap());
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    sqlx::query(FUTURE).execute(&pool).await.unwrap();
    expect_refusal(PostgresStore::connect(db.url()).await.err().expect("refused"));
    let newest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(newest, 9999, "nothing was changed");
    pool.close().await;
}

/// Deleted sagas' pages go back to the file system: the file shrinks once retention's
/// deletes and incremental vacuums are checkpointed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_gives_deleted_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("geosaga.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let filler = "x".repeat(2000);
    let starts = (0..800).map(|_| create(&store, saga("node-a").with(|n| n.input = json!({"pad": filler}))));
    let rows = join_all(starts).await;
    let settle = |r| {
        put(
            &store,
            append(r, 0, vec![started("a"), succeeded("a")]).with(|a| a.status = Completed),
        )
    };
    join_all(rows.iter().map(settle)).await;
    let checkpoint = || {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        std::fs::metadata(&path).unwrap().len()
    };
    let full = checkpoint();
    let expiry = Expiry {
        finished_before_ms: NOW + 2,
        keys_created_before_ms: NOW + 2,
    };
    loop {
        let batch = store.expired(&expiry, 100).await.unwrap();
        if batch.is_empty() {
            break;
        }
        let ids: Vec<Uuid> = batch.iter().map(|r| r.id).collect();
        assert_eq!(store.delete_expired(&ids, &expiry).await.unwrap().len(), ids.len());
        store.reclaim_space(1024).await.unwrap();
    }
    while store.reclaim_space(1024).await.unwrap() > 0 {}
    let emptied = checkpoint();
    assert!(
        emptied * 10 < full,
        "the file went from {full} to {emptied} bytes, not to a tenth"
    );
}

/// With several coordinators on one PostgreSQL, one at a time runs retention; another takes
/// over once its connection is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_retention_runs_on_one_coordinator_at_a_time() {
    let f = Fixture::new(Backend::Postgres).await;
    let peer = f.peer().await;
    assert!(f.store.retention_turn().await.unwrap());
    assert!(!peer.retention_turn().await.unwrap(), "held by the first");
    assert!(f.store.retention_turn().await.unwrap(), "kept");
    drop(f.store);
    let mut tries = 0;
    while !peer.retention_turn().await.unwrap() {
        tries += 1;
        assert!(tries < 100, "the lock was not released with its connection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
