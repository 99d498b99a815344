//! A transaction as its gateway holds it between `begin` and `commit`: its snapshot, what
//! it read (and at which version), and its buffered writes; and the plan of its commit.

use std::collections::BTreeMap;

use crate::hlc::Timestamp;

use super::IntentKind;

/// One open transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    /// Its id.
    pub id: String,
    /// Its snapshot: every read sees the versions at or below it.
    pub read_ts: Timestamp,
    /// Keys read from the store, with the version seen (`None`: absent).
    pub reads: BTreeMap<String, Option<Timestamp>>,
    /// Buffered writes (`None`: a deletion), applied at commit.
    pub writes: BTreeMap<String, Option<String>>,
}

/// Where a commit lays its intents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The region that keeps the record: the gateway when it is the home of a key written,
    /// else the home of the first key written (so that the record never depends on a
    /// region the transaction does not otherwise involve).
    pub record_home: String,
    /// Per home, its keys and what to lay on each.
    pub by_home: BTreeMap<String, Vec<(String, IntentKind)>>,
}

impl Txn {
    /// A transaction with snapshot `read_ts`.
    pub fn new(id: String, read_ts: Timestamp) -> Txn {
        Txn {
            id,
            read_ts,
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
        }
    }

    /// The transaction's own write of `key`, if any (`Some(None)`: it deleted it).
    pub fn own_write(&self, key: &str) -> Option<Option<&str>> {
        self.writes.get(key).map(Option::as_deref)
    }

    /// Records that `key` was read at `version` (`None`: absent).
    pub fn read(&mut self, key: &str, version: Option<Timestamp>) {
        self.reads.insert(key.to_owned(), version);
    }

    /// Buffers a write (`None` deletes).
    pub fn write(&mut self, key: &str, value: Option<String>) {
        self.writes.insert(key.to_owned(), value);
    }

    /// The commit's plan at `gateway`: every key read or written, grouped by `home_of` its
    /// key; `None` for a read-only transaction, which commits at its snapshot with no round
    /// at all. The record is kept at the gateway when it homes a written key (its write then
    /// costs no round trip), else at the first written key's home.
    pub fn plan(&self, home_of: impl Fn(&str) -> String, gateway: &str) -> Option<Planned> {
        let first = self.writes.keys().next()?;
        let mut record_home = home_of(first);
        let mut by_home: BTreeMap<String, Vec<(String, IntentKind)>> = BTreeMap::new();
        for (key, value) in &self.writes {
            let kind = IntentKind::Write { value: value.clone() };
            let home = home_of(key);
            if home == gateway {
                record_home = home.clone();
            }
            by_home.entry(home).or_default().push((key.clone(), kind));
        }
        for key in self.reads.keys().filter(|k| !self.writes.contains_key(*k)) {
            by_home
                .entry(home_of(key))
                .or_default()
                .push((key.clone(), IntentKind::Read));
        }
        Some(Planned { record_home, by_home })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_groups_by_home_and_keeps_the_record_at_the_first_write() {
        let mut t = Txn::new("t".into(), Timestamp::default());
        t.read("eu/a", None);
        t.read("us/b", None);
        t.write("us/b", Some("1".into()));
        t.write("us/c", None);
        let plan = t.plan(|k| k[..2].to_owned(), "ap").unwrap();
        assert_eq!(plan.record_home, "us", "the first written key's home");
        assert_eq!(plan.by_home["eu"], vec![("eu/a".to_owned(), IntentKind::Read)]);
        assert_eq!(
            plan.by_home["us"].len(),
            2,
            "a key read and written is laid once, as a write"
        );
    }

    #[test]
    fn the_record_stays_at_the_gateway_when_it_homes_a_written_key() {
        let mut t = Txn::new("t".into(), Timestamp::default());
        t.write("eu/a", Some("1".into()));
        t.write("us/b", Some("2".into()));
        t.read("ap/c", None);
        let home = |k: &str| k[..2].to_owned();
        assert_eq!(t.plan(home, "us").unwrap().record_home, "us");
        assert_eq!(t.plan(home, "eu").unwrap().record_home, "eu");
        assert_eq!(
            t.plan(home, "ap").unwrap().record_home,
            "eu",
            "a home of keys only read never keeps the record"
        );
    }

    #[test]
    fn read_only_transactions_need_no_plan() {
        let mut t = Txn::new("t".into(), Timestamp::default());
        t.read("a", None);
        assert_eq!(t.plan(str::to_owned, "a"), None);
        t.write("a", None);
        assert_eq!(t.own_write("a"), Some(None));
    }
}
