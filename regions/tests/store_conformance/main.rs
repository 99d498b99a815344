//! The region store's behaviour, the same on every backend: each case runs against the
//! in-memory store, a SQLite file and a real PostgreSQL database (`testkit::pg` starts a
//! throwaway server, or uses `GEOSAGA_TEST_POSTGRES_URL`; without either the PostgreSQL
//! cases fail saying how to get one). Cases are named `<backend>::<case>`
//! (`cargo nextest run -p geosaga-regions --test store_conformance postgres::`).

use testkit::pg;

mod cases;
mod txn_cases;

use std::sync::Arc;

use regions::store::{MemoryStore, PostgresStore, SqliteStore, Store};

/// Which database a case runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// The in-memory store.
    Memory,
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

/// What keeps a case's database alive (and lets it open the same one again).
pub enum Db {
    /// The in-memory store (every opening shares it).
    Memory(MemoryStore),
    /// The directory of the SQLite file.
    File(tempfile::TempDir),
    /// The PostgreSQL database.
    Postgres(pg::TestDb),
}

impl Db {
    /// A new, empty database.
    pub async fn new(backend: Backend) -> Db {
        match backend {
            Backend::Memory => Db::Memory(MemoryStore::new()),
            Backend::Sqlite => Db::File(tempfile::tempdir().unwrap()),
            Backend::Postgres => Db::Postgres(pg::fresh_database().await),
        }
    }

    /// Opens the store on it (migrating it the first time; the in-memory store is shared
    /// by every opening, as a file is).
    pub async fn open(&self) -> Arc<dyn Store> {
        match self {
            Db::Memory(store) => Arc::new(store.clone()),
            Db::File(dir) => Arc::new(SqliteStore::open(&dir.path().join("r.db")).await.unwrap()),
            Db::Postgres(db) => Arc::new(PostgresStore::connect(db.url()).await.unwrap()),
        }
    }
}

/// A store on a new database of `backend`, and what keeps it alive.
pub async fn store(backend: Backend) -> (Arc<dyn Store>, Db) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    assert_eq!(
        store.backend_name(),
        match backend {
            Backend::Memory => "memory",
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );
    (store, db)
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::cases::$case(crate::Backend::Memory).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::cases::$case(crate::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::cases::$case(crate::Backend::Postgres).await;
                }
            )*
        }
    };
}

conformance!(
    pending_writes_are_invisible_until_committed_and_aborted_on_restart,
    sequence_numbers_survive_truncation_and_apply_is_idempotent,
    gc_drops_only_what_no_later_read_sees,
    conflicts_count_the_same_in_every_arrival_order,
    equal_timestamps_keep_both_versions_and_the_greater_region_wins,
    a_gap_freezes_the_readable_closed_timestamp_until_it_is_closed,
    an_increment_with_an_op_id_seen_before_changes_nothing,
    retention_truncation_stops_at_a_pending_entry,
    ops_are_applied_with_their_version_only,
    everything_survives_reopening_and_a_restart_aborts_what_was_pending,
    listings_are_in_byte_order,
    a_database_belongs_to_one_region,
    cancelled_op_ids_are_remembered_until_pruned,
    intents_resolve_into_versions_or_nothing,
    records_are_pruned_by_when_they_were_last_written,
    staged_transactions_keep_their_homes,
    copies_of_transactions_keep_the_newest_per_home,
    copies_of_transactions_are_pruned_by_when_they_were_kept,
    a_restored_store_starts_a_new_log_incarnation_once,
);
