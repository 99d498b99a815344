//! The storage limit on this machine: SQLite commits/s (WAL, synchronous=FULL, one small
//! INSERT per transaction, through sqlx as geosaga uses it) and PostgreSQL single-row
//! INSERT transactions/s with pgbench.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use crate::pg::Pg;

/// One storage-limit figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorageRow {
    /// SQLite or PostgreSQL.
    pub database: String,
    /// How it was measured.
    pub method: String,
    /// Clients.
    pub clients: usize,
    /// Commits (transactions) per second.
    pub commits_per_s: f64,
    /// Mean latency of one commit (ms).
    pub latency_ms: f64,
}

/// SQLite: one connection, one small INSERT per transaction, for `duration`.
pub async fn sqlite_commits(duration: Duration) -> Result<StorageRow> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("limit.db").display());
    let options = SqliteConnectOptions::from_str(&url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, v BLOB NOT NULL)")
        .execute(&mut conn)
        .await?;
    let payload = vec![7u8; 64];
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < duration {
        sqlx::query("INSERT INTO t (at, v) VALUES (?, ?)")
            .bind(n as i64)
            .bind(&payload)
            .execute(&mut conn)
            .await?;
        n += 1;
    }
    let wall = t0.elapsed().as_secs_f64();
    Ok(StorageRow {
        database: "SQLite".into(),
        method: "sqlx, WAL, synchronous=FULL, autocommit INSERT of 64 bytes".into(),
        clients: 1,
        commits_per_s: n as f64 / wall,
        latency_ms: wall * 1000.0 / n as f64,
    })
}

/// PostgreSQL: pgbench with a one-INSERT script, `clients` clients, for `seconds`.
pub async fn pgbench(pg: &Pg, clients: usize, seconds: u64) -> Result<StorageRow> {
    let url = pg.create_db("bench_limit").await?;
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    sqlx::query("CREATE TABLE t (id BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL, v BYTEA NOT NULL)")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("insert.sql");
    std::fs::write(
        &script,
        "INSERT INTO t (at, v) VALUES (1, '\\x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff');\n",
    )?;
    let pgbench = if pg.bin.join("pgbench").exists() {
        pg.bin.join("pgbench")
    } else {
        "pgbench".into()
    };
    let out = tokio::process::Command::new(pgbench)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
            "-n",
            "-M",
            "prepared",
        ])
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &seconds.to_string(),
            "-f",
        ])
        .arg(&script)
        .arg("bench_limit")
        .output()
        .await
        .context("running pgbench")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("pgbench failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let find = |prefix: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let tps = find("tps = ").context(format!("no tps in pgbench's output:\n{text}"))?;
    let latency = find("latency average = ").unwrap_or(0.0);
    pg.drop_db("bench_limit").await?;
    Ok(StorageRow {
        database: "PostgreSQL".into(),
        method: "pgbench -M prepared, one single-row INSERT per transaction".into(),
        clients,
        commits_per_s: tps,
        latency_ms: latency,
    })
}
