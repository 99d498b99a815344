//! # geosaga regions
//!
//! The geo-distributed key-value layer. Each key has a *home region*; writes go to the
//! home (any region forwards them) and replicate to every other region; reads choose
//! between consistency and latency per request.
//!
//! ## Layout
//!
//! The pure core (no I/O, no clock of its own):
//! - [`hlc`]: hybrid logical clocks; every version and closed timestamp is one.
//! - [`placement`]: a key's home: prefix rules first, then consistent hashing with virtual
//!   nodes and weights.
//! - [`mvcc`]: which version a read at a timestamp sees; what garbage collection may drop.
//! - [`closed`]: what a home may promise as closed, how stale a replica may be, and where a
//!   read is served.
//! - [`config`]: the cluster's TOML file, checked into typed values.
//! - [`history`]: a linearizability checker for recorded histories (tests use it).
//!
//! The I/O around it:
//! - [`store`]: SQLite (sqlx): versions, the replication log, cursors, intents.
//! - [`node`]: [`node::Region`], which executes writes at the home and serves reads.
//! - [`replication`]: intents of strong writes, log shipping with closed timestamps, GC.
//! - [`api`] and [`problem`]: the HTTP API (axum) and its problem details.
//!
//! ## The consistency argument
//!
//! **Strong writes and reads are linearizable.** Only the home executes writes of a key,
//! one at a time per key (a lock), and only the home serves strong reads. A strong write
//! is logged as *pending* at the home and sent as an *intent* to every replica; replicas
//! store intents durably but never show them to reads. When the configured quorum (`one`,
//! `quorum`: with the home a majority of regions, `all`) has acknowledged, the home commits:
//! in one SQLite transaction (fsynced) the version becomes visible and the log entry
//! committed. That commit is the write's linearization point; a strong read at the home
//! reads the latest committed version, so it sees every write acknowledged before it began.
//!
//! **A failed strong write leaves nothing visible.** If the quorum does not answer within
//! `strong_timeout_ms`, the home marks the entry *aborted* and answers 503
//! `quorum-not-reached`; the version was never inserted anywhere. Replicas holding the
//! intent drop it when the aborted entry is shipped. A home that crashes with a pending
//! entry aborts it on restart (it was never acknowledged). What remains is an aborted log
//! entry and, until it is shipped, invisible intents. A *forwarded* write whose home cannot
//! be reached is different: the answer (`home-unreachable`) does not know the outcome.
//!
//! **Async writes** commit at the home (version and committed log entry in one
//! transaction) and are acknowledged at once; the log ships them.
//!
//! **Closed timestamps.** With every batch of its log (at least every
//! `closed_ts_interval_ms`), a home sends a timestamp `T` below its clock's `now`, below
//! every write still pending, and below every log entry not in this batch or an earlier
//! one. Since new writes take timestamps above `now`, a replica that applied the batch
//! holds every write of that home at or below `T`, for good. With clocks at most
//! `max_clock_offset_ms` apart, it therefore holds every write acknowledged before local
//! time `T.wall - max_clock_offset_ms`, so its answer is at most
//! `now - T.wall + max_clock_offset_ms` stale. A bounded-staleness read is served locally
//! when that is within its bound, otherwise by the home, otherwise refused (`too-stale`)
//! unless the caller accepts a stale answer (`allow_stale=true`; the answer says so).
//!
//! **The log** is durable (SQLite, `synchronous=FULL`), shipped in order from each peer's
//! acknowledged position (kept in the store), replayed after a restart from there, and
//! truncated up to the position every peer acknowledged. Applying is idempotent.

pub mod api;
pub mod closed;
pub mod config;
mod error;
pub mod history;
pub mod hlc;
pub mod mvcc;
pub mod node;
pub mod placement;
pub mod problem;
pub mod protocol;
pub mod replication;
pub mod store;

use std::future::Future;
use std::sync::Arc;

pub use config::{Config, Quorum};
pub use error::{Error, Result};
pub use hlc::{Clock, ClockError, Timestamp};
pub use node::Region;

/// Runs region `name` of `config` on its configured listen address until `shutdown`
/// completes: the HTTP API, one log shipper per peer, and garbage collection.
pub async fn serve(config: Config, name: &str, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let listen = config.region(name)?.listen_addr();
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let clock = Clock::system(config.max_clock_offset_ms);
    serve_on(listener, config, name, clock, shutdown).await
}

/// [`serve`] on a bound listener with a given clock.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    config: Config,
    name: &str,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let region = Arc::new(Region::open(config, name, clock).await?);
    let mut tasks = tokio::task::JoinSet::new();
    for peer in region.peers.clone() {
        tasks.spawn(replication::ship_loop(region.clone(), peer));
    }
    tasks.spawn(replication::gc_loop(region.clone()));
    tracing::info!(region = name, address = %listener.local_addr()?, "region serving");
    let served = axum::serve(listener, api::router(region))
        .with_graceful_shutdown(shutdown)
        .await;
    tasks.abort_all();
    Ok(served?)
}
