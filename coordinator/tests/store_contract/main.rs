//! The store contract: one suite of cases, run against every [`Store`] implementation
//! (in memory, SQLite in a file, PostgreSQL through `testkit::pg`), plus schema checks
//! and PostgreSQL-only cases.
//!
//! Every case is an `async fn(Fixture)`; `contract!` makes one `#[tokio::test]` per case and
//! backend, named `<backend>::<case>` (`cargo test --test store_contract postgres::`).
//! The cases live by subject: `saga_rows.rs` (definitions, starts, appends), `leases.rs`,
//! `listings.rs` (with group commit and retention), `two_coordinators.rs`, and
//! `backends.rs` (schemas, and what only PostgreSQL or SQLite has); `helpers.rs` builds
//! their sagas and events.

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

mod backends;
mod helpers;
mod leases;
mod listings;
mod saga_rows;
mod two_coordinators;

use helpers::*;
use leases::*;
use listings::*;
use saga_rows::*;
use two_coordinators::*;

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
