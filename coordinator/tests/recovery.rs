//! No stranded saga: store failures injected at each step of an adoption and of an operator
//! retry, on the in-memory store behind a wrapper that fails chosen calls. Every saga still
//! ends terminal: what a failed step leaves owned here without a task, the lease loop's
//! periodic check finds and runs (`geosaga_stranded_sagas_found_total`).
//!
//! `a_claim_whose_answer_was_lost_is_run_by_the_periodic_check` pins down the five sagas of
//! `tests/crash.rs` `postgres_restarted_under_load` that never settled: while PostgreSQL
//! restarts, renewals fail long enough for this node's own leases to lapse, the next
//! adoption round claims them (bumping their generation) and then fails, or its answer is
//! lost; the old tasks are fenced at their next append, and renewals kept the sagas' leases
//! alive with nobody running them. Each case takes well under a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use coordinator::store::memory::MemoryStore;
use coordinator::store::{
    Append, AppendAck, Created, DefinitionRecord, DefinitionSummary, Expiry, ListFilter, NewSaga, PutDefinition,
    Renewed, SagaRecord, StoreStats, StoredEvent,
};
use coordinator::{Coordinator, HandlerRegistry, HostPolicy, HttpRunner, Options, Runners, RustSaga, StartSaga, Store};
use sagas::document::RetryDoc;
use sagas::{SagaStatus, StepError};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use uuid::Uuid;

/// The calls a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Call {
    Renew,
    Claim,
    /// The claim commits, and its answer is lost.
    ClaimAnswer,
    EventsOf,
    GetDefinition,
    TakeOver,
    Append,
    Events,
    GetSaga,
}

/// The in-memory store, failing the next `n` calls of each kind it is told to.
#[derive(Default)]
struct FailingStore {
    inner: MemoryStore,
    failures: Mutex<HashMap<Call, usize>>,
    /// Fail every renewal while set.
    renewals_down: AtomicBool,
    /// Fail every claim while set (with `renewals_down`: no lease can be written at all).
    claims_down: AtomicBool,
}

impl FailingStore {
    fn fail(&self, call: Call, times: usize) {
        self.failures.lock().unwrap().insert(call, times);
    }

    fn pending(&self, call: Call) -> usize {
        self.failures.lock().unwrap().get(&call).copied().unwrap_or(0)
    }

    fn check(&self, call: Call) -> coordinator::Result<()> {
        let mut failures = self.failures.lock().unwrap();
        match failures.get_mut(&call) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Err(coordinator::Error::Store(format!("injected failure of {call:?}")))
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Store for FailingStore {
    async fn put_definition(&self, n: &str, h: &str, d: &Value, now: i64) -> coordinator::Result<PutDefinition> {
        self.inner.put_definition(n, h, d, now).await
    }
    async fn get_definition(&self, name: &str, version: Option<i64>) -> coordinator::Result<Option<DefinitionRecord>> {
        self.check(Call::GetDefinition)?;
        self.inner.get_definition(name, version).await
    }
    async fn list_definitions(&self) -> coordinator::Result<Vec<DefinitionSummary>> {
        self.inner.list_definitions().await
    }
    async fn create_saga(&self, new: NewSaga) -> coordinator::Result<Created> {
        self.inner.create_saga(new).await
    }
    async fn append(&self, append: Append) -> coordinator::Result<AppendAck> {
        self.check(Call::Append)?;
        self.inner.append(append).await
    }
    async fn get_saga(&self, id: Uuid) -> coordinator::Result<Option<SagaRecord>> {
        self.check(Call::GetSaga)?;
        self.inner.get_saga(id).await
    }
    async fn events(&self, id: Uuid) -> coordinator::Result<Vec<StoredEvent>> {
        self.check(Call::Events)?;
        self.inner.events(id).await
    }
    async fn events_of(&self, ids: &[Uuid]) -> coordinator::Result<HashMap<Uuid, Vec<StoredEvent>>> {
        self.check(Call::EventsOf)?;
        self.inner.events_of(ids).await
    }
    async fn list_sagas(&self, filter: &ListFilter) -> coordinator::Result<Vec<SagaRecord>> {
        self.inner.list_sagas(filter).await
    }
    async fn renew_leases(&self, owner: &str, until: i64) -> coordinator::Result<Renewed> {
        if self.renewals_down.load(Ordering::SeqCst) {
            return Err(coordinator::Error::Store("injected: renewals fail".into()));
        }
        self.check(Call::Renew)?;
        self.inner.renew_leases(owner, until).await
    }
    async fn claim(
        &self,
        owner: &str,
        own: bool,
        now: i64,
        until: i64,
        limit: u32,
    ) -> coordinator::Result<Vec<SagaRecord>> {
        if self.claims_down.load(Ordering::SeqCst) {
            return Err(coordinator::Error::Store("injected: claims fail".into()));
        }
        self.check(Call::Claim)?;
        let claimed = self.inner.claim(owner, own, now, until, limit).await?;
        if !claimed.is_empty() {
            self.check(Call::ClaimAnswer)?;
        }
        Ok(claimed)
    }
    async fn take_over_stuck(&self, id: Uuid, owner: &str, until: i64) -> coordinator::Result<Option<SagaRecord>> {
        self.check(Call::TakeOver)?;
        self.inner.take_over_stuck(id, owner, until).await
    }
    async fn request_cancel(&self, id: Uuid) -> coordinator::Result<Option<SagaRecord>> {
        self.inner.request_cancel(id).await
    }
    async fn release(&self, owner: &str) -> coordinator::Result<()> {
        self.inner.release(owner).await
    }
    async fn expired(&self, expiry: &Expiry, limit: u32) -> coordinator::Result<Vec<SagaRecord>> {
        self.inner.expired(expiry, limit).await
    }
    async fn delete_expired(&self, ids: &[Uuid], expiry: &Expiry) -> coordinator::Result<Vec<Uuid>> {
        self.inner.delete_expired(ids, expiry).await
    }
    async fn ping(&self) -> coordinator::Result<()> {
        self.inner.ping().await
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}

/// What the saga's steps share: a gate the first action waits at, and whether its
/// compensation fails for good (to make a saga stuck).
struct Gates {
    open: Semaphore,
    undo_fails: AtomicBool,
    /// Attempts of `act` launched.
    launched: AtomicUsize,
    /// Attempts of `second` launched.
    second_launched: AtomicUsize,
}

const LEASE: Duration = Duration::from_millis(300);

/// A coordinator `node` on `store` running the saga `work`: `act` waits at the gate and is
/// compensated (for good refused while `undo_fails`), then `second` fails when the input
/// says `"fail": true`.
async fn coordinator(node: &str, store: Arc<FailingStore>, gates: Arc<Gates>) -> Coordinator {
    let registry = HandlerRegistry::new();
    let saga = RustSaga::new("work", gates)
        .step("act", |g: Arc<Gates>, _| async move {
            g.launched.fetch_add(1, Ordering::SeqCst);
            let _pass = g.open.acquire().await.map_err(|_| StepError::transient("closed"))?;
            Ok(json!({}))
        })
        .compensate(|g: Arc<Gates>, _| async move {
            if g.undo_fails.load(Ordering::SeqCst) {
                return Err(StepError::permanent("undo refused"));
            }
            Ok(Value::Null)
        })
        .compensation_retry(RetryDoc {
            max_attempts: Some(1),
            ..RetryDoc::default()
        })
        .step("second", |g: Arc<Gates>, cx: coordinator::StepContext| async move {
            g.second_launched.fetch_add(1, Ordering::SeqCst);
            if cx.input["fail"] == true {
                return Err(StepError::permanent("told to fail"));
            }
            Ok(json!({}))
        })
        .depends_on(&["act"])
        .build(&registry)
        .expect("valid saga");
    let runners = Runners {
        http: HttpRunner::new(HostPolicy::Any),
        rust: registry,
        faults: Arc::default(),
    };
    let options = Options {
        node_id: node.into(),
        lease: LEASE,
        ..Options::default()
    };
    let c = Coordinator::start(store, runners, options).await.unwrap();
    c.register(&saga).await.unwrap();
    c
}

fn gates(open: usize) -> Arc<Gates> {
    Arc::new(Gates {
        open: Semaphore::new(open),
        undo_fails: AtomicBool::new(false),
        launched: AtomicUsize::new(0),
        second_launched: AtomicUsize::new(0),
    })
}

async fn start(c: &Coordinator, input: Value) -> Uuid {
    let request = StartSaga {
        definition: "work".into(),
        version: None,
        input,
        idempotency_key: None,
        trace_context: None,
    };
    c.start_saga(request).await.unwrap().0.record.id
}

/// Waits (at most 20 s, far beyond what a case needs) until every saga of `ids` settled;
/// returns their statuses.
async fn settle(c: &Coordinator, ids: &[Uuid]) -> Vec<SagaStatus> {
    let mut statuses = Vec::new();
    for &id in ids {
        let record = c.wait(id, Duration::from_secs(20)).await.unwrap();
        statuses.push(record.status);
    }
    statuses
}

fn stranded_found(c: &Coordinator) -> u64 {
    let text = c.render_metrics();
    let line = text
        .lines()
        .find(|l| l.starts_with("geosaga_stranded_sagas_found_total "))
        .unwrap_or_else(|| panic!("no stranded metric in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_answer_was_lost_is_run_by_the_periodic_check() {
    let store = Arc::new(FailingStore::default());
    let g = gates(0);
    let a = coordinator("a", store.clone(), g.clone()).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(start(&a, json!({})).await);
    }
    // The database goes away: renewals fail past the lease, so the store sees this node's
    // leases lapse; the next adoption claims them (a new generation) and its answer is lost.
    store.fail(Call::ClaimAnswer, 1);
    store.renewals_down.store(true, Ordering::SeqCst);
    while store.pending(Call::ClaimAnswer) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.renewals_down.store(false, Ordering::SeqCst);
    // The old tasks are fenced at their next append; nobody else runs the sagas.
    g.open.add_permits(1_000);
    assert_eq!(settle(&a, &ids).await, vec![SagaStatus::Completed; 5]);
    assert_eq!(stranded_found(&a), 5, "the periodic check ran each of them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_at_each_adoption_step_strand_nothing() {
    for call in [Call::Claim, Call::ClaimAnswer, Call::EventsOf, Call::GetDefinition] {
        let store = Arc::new(FailingStore::default());
        let g = gates(0);
        let a = coordinator("a", store.clone(), g.clone()).await;
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(start(&a, json!({})).await);
        }
        // b adopts what a gave up, through a failure at `call`.
        let b = coordinator("b", store.clone(), g.clone()).await;
        store.fail(call, 1);
        a.shutdown().await.unwrap();
        g.open.add_permits(1_000);
        assert_eq!(settle(&b, &ids).await, vec![SagaStatus::Completed; 3], "{call:?}");
        assert_eq!(store.pending(call), 0, "{call:?} was called and failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_at_each_retry_step_strand_nothing() {
    for call in [Call::TakeOver, Call::Append, Call::Events, Call::GetSaga] {
        let store = Arc::new(FailingStore::default());
        let g = gates(1_000);
        g.undo_fails.store(true, Ordering::SeqCst);
        let a = coordinator("a", store.clone(), g.clone()).await;
        let id = start(&a, json!({"fail": true})).await;
        assert_eq!(settle(&a, &[id]).await, [SagaStatus::Stuck]);
        g.undo_fails.store(false, Ordering::SeqCst);
        store.fail(call, 1);
        // An operator retries; the retry may answer the injected error, and then the
        // operator retries again if the saga is still stuck.
        let first = a.retry(id).await;
        let record = a.wait(id, Duration::from_secs(20)).await.unwrap();
        let record = match (first, record.status) {
            (Err(_), SagaStatus::Stuck) => {
                a.retry(id).await.unwrap();
                a.wait(id, Duration::from_secs(20)).await.unwrap()
            }
            (_, _) => record,
        };
        assert_eq!(record.status, SagaStatus::Compensated, "{call:?}");
        assert_eq!(store.pending(call), 0, "{call:?} was called and failed");
    }
}

/// A coordinator that cannot renew launches no attempt once no lease of the saga certainly
/// holds (the last renewal's, less a margin), and goes on once a renewal succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_cannot_renew_launches_nothing() {
    let store = Arc::new(FailingStore::default());
    let g = gates(0);
    let a = coordinator("a", store.clone(), g.clone()).await;
    let id = start(&a, json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while g.launched.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "act never launched");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // No lease can be written from now on (a claim would give the saga a fresh one): past
    // the lease (on the store's clock, which is this host's here), `act` finishes, and
    // `second` may not launch.
    store.renewals_down.store(true, Ordering::SeqCst);
    store.claims_down.store(true, Ordering::SeqCst);
    tokio::time::sleep(LEASE * 2).await;
    g.open.add_permits(1_000);
    tokio::time::sleep(LEASE * 2).await;
    assert_eq!(
        g.second_launched.load(Ordering::SeqCst),
        0,
        "an attempt was launched without a lease"
    );
    assert_eq!(a.saga(id).await.unwrap().record.status, SagaStatus::Running);
    store.renewals_down.store(false, Ordering::SeqCst);
    store.claims_down.store(false, Ordering::SeqCst);
    assert_eq!(settle(&a, &[id]).await, [SagaStatus::Completed]);
    assert_eq!(
        (
            g.launched.load(Ordering::SeqCst),
            g.second_launched.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
}
