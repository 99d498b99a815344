//! # geosaga regions
//!
//! The geo-distributed key-value layer: each key has a home region, writes replicate to
//! other regions, reads choose between consistency and latency. Built so far:
//!
//! - [`hlc`]: hybrid logical clocks, the timestamps every version of a key will carry
//!   (MVCC) and that closed timestamps are expressed in.
//!
//! Placement, the MVCC store, replication and the region API follow (see the issues).

pub mod hlc;

pub use hlc::{Clock, ClockError, Timestamp};
