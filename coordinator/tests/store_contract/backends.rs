//! What only a backend has: the schemas the code expects, and PostgreSQL's and SQLite's
//! own failure and space cases.

use super::*;

/// The tables and columns the code reads and writes: (table, column, SQLite type, PostgreSQL type).
pub(crate) const SCHEMA: &[[&str; 4]] = &[
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
pub(crate) fn expected_schema(types: usize) -> Vec<(String, String, String)> {
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
