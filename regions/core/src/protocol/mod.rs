//! What travels on the wire: the public API's bodies ([`kv`]), the messages between regions
//! ([`replication`]) and about the cluster ([`cluster`]), transactions ([`txn`]), and the
//! problem `type`s a peer acts on ([`problem`]). Every field is typed here;
//! handlers never see raw JSON they must distrust.

pub mod cluster;
pub mod kv;
pub mod problem;
pub mod replication;
pub mod txn;

pub use cluster::*;
pub use kv::*;
pub use replication::*;
pub use txn::*;
