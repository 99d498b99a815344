//! A region node: the decisions of the pure core applied to its store. [`Region`] holds what
//! every task and handler of a region shares, executes the writes of the keys homed here
//! (`write.rs`, with the quorum of a strong write in `quorum.rs`, op ids in [`op_ids`], and
//! the undo of a write by its op id in `undo.rs`), records clock-skew refusals ([`skew`]),
//! serves reads (`read.rs`) and counters (`counter.rs`), keeps what it knows of each peer
//! (`peers.rs`), and holds the home's and the gateway's side of transactions ([`txn`]).
//! The loops between regions (`crate::replication`,
//! `crate::antientropy`, `crate::rehome`, `crate::gossip`) and the HTTP API (`crate::api`)
//! are built on it; nothing here knows of them.

mod counter;
pub mod op_ids;
mod peers;
mod quorum;
mod read;
pub mod skew;
pub mod txn;
mod undo;
mod write;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use regions_core::config::Config;
use regions_core::hlc::{Clock, Timestamp};
use regions_core::placement::{Home, Placement};

use crate::membership::Membership;
use crate::store::{self, Store};
use crate::{Error, Result};

pub use peers::Peer;
pub use read::ReadRequest;

/// The newest possible timestamp: reads "now" as of it.
pub const LATEST: Timestamp = Timestamp {
    wall_ms: u64::MAX,
    logical: u32::MAX,
};

const KEY_LOCKS: usize = 64;

/// One region.
pub struct Region {
    /// Its name.
    pub name: String,
    /// Whether its store was restored from a backup and opened now for the first time: it
    /// takes its writes back from its peers before it serves (`crate::restore`).
    pub restored: bool,
    /// The cluster's configuration.
    pub config: Config,
    /// The placement function (re-homing replaces it).
    placement: RwLock<Arc<Placement>>,
    /// Its hybrid logical clock.
    pub clock: Clock,
    /// Its storage.
    pub store: Arc<dyn Store>,
    /// The other regions.
    pub peers: Vec<Peer>,
    /// The client it calls its peers with (mutual TLS when configured).
    pub(crate) http: reqwest::Client,
    /// The members and what the failure detector thinks of them.
    pub membership: Membership,
    /// Peers' timestamps refused for clock skew, and ours refused by peers.
    pub clock_skew: skew::Refusals,
    /// Timestamps of the writes in progress (see [`Region::begin_write`]).
    pending: Arc<Mutex<BTreeSet<Timestamp>>>,
    /// Held by a write of a key (by hash) from its checks to its commit or abort.
    key_locks: Vec<tokio::sync::Mutex<()>>,
    /// Bumped whenever a write was logged and resolved: wakes the log shippers.
    log_changed: Arc<tokio::sync::watch::Sender<u64>>,
    /// Per home: the closed timestamp reads use here.
    closed: Mutex<HashMap<String, Timestamp>>,
    /// Per peer: the last successful exchange.
    contact: Mutex<HashMap<String, Instant>>,
    /// Per peer: the log position it acknowledged.
    acked: Mutex<HashMap<String, i64>>,
    /// Per peer: versions and counter components anti-entropy fetched from it.
    repaired: Mutex<HashMap<String, u64>>,
    /// Per transaction prepared here: the hold on its proposal until it is resolved.
    txn_holds: Mutex<HashMap<String, write::PendingGuard>>,
    /// Held while a transaction record kept here changes.
    records_lock: tokio::sync::Mutex<()>,
    /// What this region knows of the copies its peers keep of its transaction states.
    txn_copies: txn::Copies,
    /// Held (by the transaction's hash) while a prepare lays a transaction's intents, and
    /// while a recovery asks whether it did (and prevents it if not): the two never
    /// interleave. Always taken after the key locks, never before.
    txn_gates: Vec<tokio::sync::Mutex<()>>,
    /// The open transactions this region is the gateway of.
    pub sessions: txn::Sessions,
    /// Held while a replica state is written and the closed timestamp reads use is set
    /// from it, so the two never disagree.
    replica_lock: tokio::sync::Mutex<()>,
}

impl Region {
    /// Opens region `name` of `config` with its own clock and the store its configuration
    /// names (migrated), then as [`Region::with_store`].
    pub async fn open(config: Config, name: &str, clock: Clock) -> Result<Region> {
        let storage = config.region(name)?.storage()?;
        // What else of the configuration can fail is read before the store is opened (and
        // created): a wrong TLS path or placement rule leaves no fresh, empty store behind.
        config.placement()?;
        crate::tls::http_client(&config)?;
        Membership::open(&config, name)?;
        let opened = match store::open(&storage).await {
            Ok(store) => store.claim(name).await.map(|()| store),
            Err(e) => Err(e),
        };
        let store = opened.map_err(|e| Error::StoreOpen {
            store: storage.describe(),
            source: Box::new(e),
        })?;
        tracing::info!(region = name, store = %storage.describe(), "store opened");
        Region::with_store(config, name, clock, store).await
    }

    /// Region `name` of `config` on `store`: aborts the strong writes a crash left pending,
    /// and loads what it had applied and shipped, and the re-homed prefixes.
    pub async fn with_store(config: Config, name: &str, clock: Clock, store: Arc<dyn Store>) -> Result<Region> {
        let aborted = store.abort_all_pending().await?;
        // Layer 4's `restore` says why: a restored store's log starts a new incarnation.
        let restored = store.rebase_if_restored(restore_floor(clock.physical_ms())).await?;
        if let Some(last) = restored {
            tracing::warn!(
                region = name,
                last_seq = last,
                "restored from a backup: the log starts a new incarnation after this sequence number"
            );
        }
        if aborted > 0 {
            tracing::info!(
                region = name,
                aborted,
                "aborted strong writes left pending by a restart"
            );
        }
        let closed = store
            .replica_states()
            .await?
            .into_iter()
            .map(|(h, s)| (h, s.readable_closed()))
            .collect();
        let placement = with_overrides(config.placement()?, &store.placement_overrides().await?);
        let acked = store.cursors().await?;
        let peers = config
            .regions
            .iter()
            .filter(|r| r.name != name)
            .map(|r| Peer {
                name: r.name.clone(),
                address: r.address.trim_end_matches('/').to_owned(),
            })
            .collect();
        let http = crate::tls::http_client(&config)?;
        let membership = Membership::open(&config, name)?;
        let intents = store.txn_intents().await?;
        let region = Region {
            name: name.to_owned(),
            restored: restored.is_some(),
            placement: RwLock::new(Arc::new(placement)),
            config,
            clock,
            store,
            peers,
            http,
            membership,
            clock_skew: skew::Refusals::default(),
            pending: Arc::default(),
            key_locks: (0..KEY_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            log_changed: Arc::new(tokio::sync::watch::Sender::new(0)),
            closed: Mutex::new(closed),
            contact: Mutex::default(),
            acked: Mutex::new(acked),
            repaired: Mutex::default(),
            replica_lock: tokio::sync::Mutex::new(()),
            txn_holds: Mutex::default(),
            records_lock: tokio::sync::Mutex::new(()),
            txn_copies: txn::Copies::default(),
            txn_gates: (0..KEY_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            sessions: txn::Sessions::default(),
        };
        region.txn_hold_restored(&intents);
        Ok(region)
    }

    /// The home of `key`.
    pub fn home(&self, key: &str) -> Home {
        self.placement().home(key)
    }

    /// The placement function in force.
    pub fn placement(&self) -> Arc<Placement> {
        self.placement.read().expect("placement lock").clone()
    }

    /// Replaces the placement function (re-homing).
    pub(crate) fn set_placement(&self, placement: Placement) {
        *self.placement.write().expect("placement lock") = Arc::new(placement);
    }

    /// Whether this region executes writes of `key`: it is its home, or the key may be
    /// written anywhere and this region holds a replica.
    pub fn executes_writes(&self, key: &str) -> bool {
        let placement = self.placement();
        // A replica-only member ships no log: its writes would never leave it.
        placement.home(key).region == self.name
            || (placement.writes_anywhere(key).is_some()
                && placement.replicates_to(key, &self.name)
                && self.membership.is_voter())
    }

    /// The oldest timestamp reads may still ask for.
    pub fn gc_horizon(&self) -> Timestamp {
        Timestamp {
            wall_ms: self.clock.physical_ms().saturating_sub(self.config.retention_ms),
            logical: 0,
        }
    }
}

/// `placement` with the stored overrides applied (an override whose rule is gone from the
/// configuration is ignored, with a warning).
fn with_overrides(placement: Placement, overrides: &[(String, String)]) -> Placement {
    overrides
        .iter()
        .fold(placement, |p, (prefix, region)| match p.with_home(prefix, region) {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(prefix, region, error = e, "stored re-homing ignored");
                p
            }
        })
}

/// The first sequence number of a restored store's new incarnation at `now_ms` (see
/// `crate::restore`): past every number a region gives by `now_ms`, at most
/// [`SEQ_PER_MS`] a millisecond.
pub fn restore_floor(now_ms: u64) -> i64 {
    i64::try_from(now_ms).unwrap_or(i64::MAX).saturating_mul(SEQ_PER_MS)
}

/// Sequence numbers a region may give per millisecond of its clock, at most: a million a
/// second, far past what one writer connection commits.
pub const SEQ_PER_MS: i64 = 1_000;
