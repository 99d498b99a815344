//! # geosaga regions
//!
//! The geo-distributed key-value layer. Each key has a *home region*; writes go to the
//! home (any region forwards them) and replicate to every other region; reads choose
//! between consistency and latency per request.
//!
//! ## Layout
//!
//! In layers; each uses only those below it (`regions/tests/layers.rs` checks the imports):
//!
//! 0. The pure core, the crate `geosaga-regions-core` (re-exported here under the same
//!    module names): [`hlc`] (hybrid logical clocks), [`placement`] (a key's home),
//!    [`mvcc`] (which version a read sees), [`closed`] and [`replica`] (closed timestamps,
//!    what a replica may trust), [`conflict`], [`counter`] and [`digest`] (last-writer-wins,
//!    PN-counters, anti-entropy's digests), [`add`], [`op_ids`], [`txn`] (transactions' state
//!    machine and conflict rules), [`config`] (parsing only)
//!    and [`protocol`] (what travels on the wire). No I/O: it depends on no runtime,
//!    database or HTTP crate.
//! 1. [`store`]: the store port ([`store::Store`]) and its implementations: in memory (for
//!    tests), SQLite and PostgreSQL (one SQL text for both).
//! 2. What a region needs before it runs: [`tls`] (certificates, TLS configurations, the
//!    HTTP client to peers) and [`membership`] (the member list and its file, the failure
//!    detector's state, joining a cluster).
//! 3. [`node`]: [`Region`], the node: its shared state, writes at the home (with a strong
//!    write's quorum and op ids), undoing a write by its op id (or cancelling one that never
//!    applied, so that it never will: saga compensations of uncertain writes), reads,
//!    counters, what it knows of each peer, the clock-skew refusals it saw.
//! 4. The loops between regions, each over a [`Region`]: [`replication`] (applying what
//!    peers ship; `replication::ship`, the home's pipelined log shipping; GC),
//!    [`antientropy`] (digest rounds repairing what the log missed), [`rehome`] (moving a
//!    rule's keys to another home online), [`gossip`] (heartbeats, the failure detector),
//!    [`gateway`] (transactions begun here: their commit across homes, snapshots, and the
//!    loop that resolves the intents of vanished gateways), [`restore`] (a region restored
//!    from a backup takes its writes back from its peers).
//! 5. [`api`]: the HTTP API (axum) with its problem details, the mutual-TLS gate and the
//!    tokens of the public routes; [`serve`] starts a region: the API (served by the
//!    `geosaga-server` crate, with its connection limits) and the loops. [`client`]: a Rust
//!    client of the transaction API.
//!
//! ## The consistency argument
//!
//! **Strong writes and reads are linearizable.** Only the home executes writes of a key,
//! one at a time per key (a lock), and only the home serves strong reads. A strong write
//! is logged as *pending* at the home and sent as an *intent* to every replica; replicas
//! store intents durably but never show them to reads. When the configured quorum (`one`,
//! `quorum`: with the home a majority of regions, `all`) has acknowledged, the home commits:
//! in one durable transaction (SQLite fsynced, or PostgreSQL) the version becomes visible
//! and the log entry committed. That commit is the write's linearization point; a strong read at the home
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
//! **The log** is durable (SQLite `synchronous=FULL`, PostgreSQL `synchronous_commit=on`),
//! shipped in order from each peer's acknowledged position (kept in the store), replayed
//! after a restart from there, and truncated up to the position every peer acknowledged.
//! Applying is idempotent.
//!
//! **Log retention and closed timestamps after a gap.** The log also keeps at most
//! `log_retention_entries` entries: beyond that the oldest go even if a peer (down, or cut
//! off) has not acknowledged them. The shipper notices that a peer's position is below the
//! log's start and says so in the next batch: a *gap* (entries up to sequence `g`, every one
//! at or below timestamp `G`, the home's clock after the truncation). The peer's position
//! moves past the gap, so shipping goes on. The replica that receives a gap no longer holds
//! every write below the closed timestamps that follow, so it *freezes* the closed timestamp
//! reads use at the one it held before the gap (which was honest: it had applied everything
//! up to it), stores the gap, and keeps recording the batches' closed timestamps beside it.
//! Reads that need fresher data go to the home. The gap closes only when an anti-entropy
//! round that *started after it was recorded*, with `upto` (the batches' closed timestamp)
//! at least `G`, compared every item of that home: buckets whose digests match hold the same
//! versions (up to a 64-bit hash collision), differing buckets are fetched whole from the
//! home, which holds every version it committed. The replica then holds every write of the
//! home at or below `upto`, including the truncated ones, and reads may use the batches'
//! closed timestamp again. A newer gap (greater `g`) received during the round stays open.
//!
//! **Keys written anywhere** (`writes = "anywhere"`) take async writes at every replica.
//! Versions are identified by `(timestamp, origin region)` and every replica keeps all of
//! them; reads see the greatest, so regions holding the same versions read the same value
//! (last-writer-wins). Strong writes and `if_version` are refused for them, and their
//! reads are not linearizable; a bounded-staleness read uses the oldest closed timestamp of
//! the key's other replicas. Concurrent writes that lost are counted from the versions'
//! ancestry ([`conflict`]), the same at every region once they hold the same versions.
//!
//! **Transactions** (`docs/transactions.md`) read at a snapshot, lay intents at each key's
//! home when they commit (validated: nothing newer than the snapshot, no other live
//! transaction's intent), and are decided by one record at one home of a written key (the
//! gateway, when it is one), staged with the prepares: committed once every home prepared
//! (parallel commits). Whoever meets an intent asks the record, and, while it is staging,
//! every home. A home's closed
//! timestamp stays below every transaction prepared there until it is resolved, so a
//! snapshot read from a replica's copy never sees part of one.
//!
//! **Counters** are PN-counters: each region changes only its own component and ships it;
//! replicas merge by per-region maximum, so late, repeated or reordered components lose no
//! increment.
//!
//! **Re-homing** ([`rehome`]) freezes the old home's writes of a rule's range at a switch
//! point `S` and lets the new home execute them only once its (honest) closed timestamp for
//! the old home reached `S`: it then holds every write of the range, so strong reads there
//! stay linearizable across the switch.
//!
//! **Replica sets.** A rule's `replicas` narrow who holds its keys: intents and log entries
//! go only there (the quorum is counted over them), and other regions forward every read to
//! the home (never a stale answer from a copy they do not have).

pub mod antientropy;
pub mod api;
pub mod client;
mod error;
pub mod gateway;
pub mod gossip;
pub mod membership;
pub mod node;
pub mod rehome;
pub mod replication;
pub mod restore;
pub mod store;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

pub use error::{Error, Result};
pub use node::Region;
pub use regions_core::{Clock, ClockError, Config, Quorum, Timestamp};
/// The pure core (the `geosaga-regions-core` crate), under the names it has there.
pub use regions_core::{
    add, closed, config, conflict, counter, digest, hlc, mvcc, op_ids, placement, protocol, replica, txn,
};

/// Reads, parses and checks a configuration file.
pub fn load_config(path: &std::path::Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
    Ok(Config::parse(&text)?)
}

/// Runs region `name` of `config` on its configured listen address until `shutdown`
/// completes: the HTTP API, one log shipper per peer, membership, anti-entropy and garbage
/// collection.
pub async fn serve(mut config: Config, name: &str, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    config.tls = config.tls.map(|t| t.for_region(name));
    let config = membership::prepare(config, name).await?;
    let own = config.region(name)?;
    let listen = own.listen_addr();
    if own.clock_offset_ms != 0 {
        tracing::warn!(
            region = name,
            clock_offset_ms = own.clock_offset_ms,
            "this region's clock is moved by clock_offset_ms (a setting for tests only)"
        );
    }
    let clock = Clock::system_skewed(config.max_clock_offset_ms, own.clock_offset_ms);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    refuse_open_address(&config, listener.local_addr()?)?;
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
    let mut config = config;
    config.tls = config.tls.map(|t| t.for_region(name));
    // The TLS files are read before the store is opened: a wrong path fails here and leaves
    // no fresh store behind (Region::open checks the rest of the configuration first too).
    let tls = match &config.tls {
        Some(tls) => Some(Arc::new(tls::server_config(tls)?)),
        None => None,
    };
    let region = Arc::new(Region::open(config, name, clock).await?);
    if region.restored {
        let recovered = restore::recover(&region).await?;
        tracing::info!(
            region = name,
            recovered,
            "restored from a backup: every peer handed back our writes"
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    if region.membership.is_voter() {
        for peer in region.peers.clone() {
            tasks.spawn(replication::ship::ship_loop(region.clone(), peer));
        }
    }
    tasks.spawn(gossip::run(region.clone()));
    tasks.spawn(replication::gc_loop(region.clone()));
    tasks.spawn(antientropy::run(region.clone()));
    tasks.spawn(gateway::recover::run(region.clone()));
    tasks.spawn(node::txn::copy_loop(region.clone()));
    tracing::info!(region = name, address = %listener.local_addr()?, "region serving");
    let app = api::router(region.clone())?;
    let served = http_server::serve(listener, app, server_limits(&region.config), tls, shutdown)
        .await
        .map_err(Error::from);
    tasks.abort_all();
    served
}

/// A region on a non-loopback address needs TLS between regions and tokens on its public
/// routes, unless the configuration says `insecure = true` (`geosaga region --insecure`).
fn refuse_open_address(config: &Config, address: std::net::SocketAddr) -> Result<()> {
    if address.ip().is_loopback() || config.insecure || (config.tls.is_some() && !config.tokens.is_empty()) {
        return Ok(());
    }
    let missing = match (config.tls.is_some(), config.tokens.is_empty()) {
        (false, true) => "without [tls] and without tokens",
        (false, false) => "without [tls] (its internal routes would trust anyone)",
        (true, _) => "without tokens (its public routes would be open)",
    };
    Err(Error::Config(format!(
        "refusing to listen on {address} {missing}: configure them (docs/security.md), or --insecure to accept the risk"
    )))
}

/// The server limits of `config`, the server crate's defaults where it sets none.
fn server_limits(config: &Config) -> http_server::Limits {
    let defaults = http_server::Limits::default();
    http_server::Limits {
        max_connections: config.max_connections.unwrap_or(defaults.max_connections),
        header_timeout: config
            .header_timeout_ms
            .map_or(defaults.header_timeout, std::time::Duration::from_millis),
        idle_timeout: config
            .idle_timeout_ms
            .map_or(defaults.idle_timeout, std::time::Duration::from_millis),
    }
}
