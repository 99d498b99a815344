//! Which coordinator wrote which saga row, recorded by PostgreSQL itself: each coordinator
//! connects with `-c geosaga.node=NAME` in its database URL ([`node_url`]), and triggers on
//! `sagas` and `saga_events` copy every inserted or updated row's saga id, the writer's
//! name and (for `sagas`) the owner the row has after the write into `write_audit`, in
//! the order the writes happened (a sequence). A fenced write that matched no row fires no
//! trigger: only what a coordinator really changed is recorded.

use std::collections::HashSet;

use sqlx::{PgPool, Row};
use uuid::Uuid;

/// `url` with a startup option naming the writer, `node`, on every connection.
pub fn node_url(url: &str, node: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options[geosaga.node]={node}")
}

/// Installs the audit table and its triggers (after the coordinators created the schema,
/// before any saga is written).
pub async fn install(pool: &PgPool) {
    for statement in [
        "CREATE TABLE write_audit (
             id      BIGSERIAL PRIMARY KEY,
             node    TEXT,
             tbl     TEXT NOT NULL,
             saga_id UUID NOT NULL,
             owner   TEXT
         )",
        "CREATE FUNCTION write_audit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO write_audit (node, tbl, saga_id, owner)
             VALUES (current_setting('geosaga.node', true), TG_TABLE_NAME,
                     (to_jsonb(NEW) ->> TG_ARGV[0])::uuid, to_jsonb(NEW) ->> 'owner');
             RETURN NULL;
         END $$",
        "CREATE TRIGGER write_audit AFTER INSERT OR UPDATE ON sagas
             FOR EACH ROW EXECUTE FUNCTION write_audit('id')",
        "CREATE TRIGGER write_audit AFTER INSERT ON saga_events
             FOR EACH ROW EXECUTE FUNCTION write_audit('saga_id')",
    ] {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
}

/// The position of the last write recorded so far.
pub async fn last(pool: &PgPool) -> i64 {
    sqlx::query("SELECT coalesce(max(id), 0) AS n FROM write_audit")
        .fetch_one(pool)
        .await
        .unwrap()
        .get("n")
}

/// The sagas of `among` that `node` wrote after position `after`, as "table saga" lines.
pub async fn written_by(pool: &PgPool, node: &str, after: i64, among: &HashSet<Uuid>) -> Vec<String> {
    let ids: Vec<Uuid> = among.iter().copied().collect();
    sqlx::query("SELECT tbl, saga_id FROM write_audit WHERE node = $1 AND id > $2 AND saga_id = ANY($3) ORDER BY id")
        .bind(node)
        .bind(after)
        .bind(&ids)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r.get::<String, _>("tbl"), r.get::<Uuid, _>("saga_id")))
        .collect()
}

/// Writes of a saga row by a coordinator other than the owner the row has after the write
/// (a write past a broken fence), as "writer wrote saga, owned by owner" lines.
pub async fn foreign_writes(pool: &PgPool) -> Vec<String> {
    sqlx::query(
        "SELECT node, saga_id, owner FROM write_audit WHERE tbl = 'sagas' AND node IS DISTINCT FROM owner ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        format!(
            "{:?} wrote {}, owned by {:?}",
            r.get::<Option<String>, _>("node"),
            r.get::<Uuid, _>("saga_id"),
            r.get::<Option<String>, _>("owner")
        )
    })
    .collect()
}

/// How many writes `node` made in all (to tell that the audit sees its writes at all).
pub async fn count_by(pool: &PgPool, node: &str) -> i64 {
    sqlx::query("SELECT count(*) AS n FROM write_audit WHERE node = $1")
        .bind(node)
        .fetch_one(pool)
        .await
        .unwrap()
        .get("n")
}
