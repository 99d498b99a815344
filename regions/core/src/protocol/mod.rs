//! What travels on the wire: the public API's bodies ([`kv`]), the messages between regions
//! ([`replication`]) and about the cluster ([`cluster`]), transactions ([`txn`]), and the
//! problem documents errors are answered with ([`problem`]). Every field is typed here;
//! handlers never see raw JSON they must distrust.

pub mod cluster;
pub mod kv;
pub mod problem;
pub mod replication;
pub mod txn;

pub use cluster::*;
pub use kv::*;
pub use problem::{PROBLEM_BASE, Problem};
pub use replication::*;
pub use txn::*;
