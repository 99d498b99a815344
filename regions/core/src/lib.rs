//! # geosaga regions: the pure core
//!
//! The decisions of the geo-distributed key-value layer, with no I/O: no runtime, no
//! database, no network, no file (this crate depends on none), and no clock but the one a
//! [`hlc::Clock`] is given. The `regions` crate (`geosaga-regions`) applies them to its
//! store and its peers; `regions/src/lib.rs` tells the consistency argument.
//!
//! ## Layout
//!
//! - [`hlc`]: hybrid logical clocks; every version and closed timestamp is one.
//! - [`placement`]: a key's home: prefix rules first, then consistent hashing with virtual
//!   nodes and weights.
//! - [`mvcc`]: which version a read at a timestamp sees; what garbage collection may drop.
//! - [`closed`]: what a home may promise as closed, how stale a replica may be, and where a
//!   read is served; [`replica`]: what a replica holds of a home, and how a shipped batch
//!   (with a gap, perhaps) changes it.
//! - [`conflict`]: last-writer-wins and the count of concurrent writes that lost;
//!   [`counter`]: counter components merged by maximum; [`digest`]: anti-entropy's
//!   windows, buckets and digests.
//! - [`add`]: a number inside a JSON value changed by a delta, within bounds;
//!   [`op_ids`]: what an idempotent write's op id records.
//! - [`txn`]: multi-key transactions: the record's state machine, intents and the
//!   conflict rules of a prepare, a gateway's open transaction and its commit plan.
//! - [`config`]: the cluster's TOML text, checked into typed values (reading the file is
//!   the regions crate's).
//! - [`protocol`]: what travels on the wire: the public API's bodies and the messages
//!   between regions.
//! - [`Error`]: what the core refuses.

pub mod add;
pub mod closed;
pub mod config;
pub mod conflict;
pub mod counter;
pub mod digest;
mod error;
pub mod hlc;
pub mod mvcc;
pub mod op_ids;
pub mod placement;
pub mod protocol;
pub mod replica;
pub mod txn;

pub use config::{Config, Quorum};
pub use error::{Error, Result};
pub use hlc::{Clock, ClockError, Timestamp};
