//! Membership and failure detection.
//!
//! **Members.** The regions of the configuration file are the *voters*: they own the hash
//! ring and the rules' prefixes, execute writes of their keys and count toward strong
//! writes' quorums. Any other region may *join* through any member (`bootstrap = [URL]` in
//! its file, or `geosaga region --join URL`): it posts its name and address to
//! `/internal/v1/join` and receives the cluster's configuration text and the members known
//! there. It joins as a **replica-only** member: weight 0 and no rule, so the placement of
//! every key stays the same everywhere; every voter ships its log to it, so it serves
//! bounded-staleness reads of every home and forwards writes and strong reads. It receives
//! the writes logged after it joined (earlier ones reach it through anti-entropy). Making
//! it a voter (taking ring ranges) is a re-homing: an operator adds it to every region's
//! file and restarts them.
//!
//! **Spreading.** The replica-only members are a versioned list: each entry has a version
//! (the time it joined, raised when it joins again with a new address); two lists merge by
//! keeping, per name, the entry with the highest version, so lists converge whatever the
//! order of messages. Each member sends a heartbeat carrying its list to every other member
//! every `heartbeat_interval_ms`; a heartbeat (or its answer) changes only its sender's own
//! entry (which its certificate vouches for over TLS), so a region that joined through one
//! member makes itself known to the others with its heartbeats, and no heartbeat admits a
//! third region or redirects another's log shipping. Each region keeps its
//! list in a JSON file beside its database (`NAME.members.json`, written atomically), so a
//! restarted region knows every member at once; a joined region also keeps the cluster's
//! configuration there and needs no bootstrap to restart.
//!
//! **Failure detection.** A missed-heartbeats timeout: a member heard from (a heartbeat
//! received, or answered) within `suspect_after_ms` is `up`, within `down_after_ms`
//! `suspect`, and `down` after that (also when never heard from `down_after_ms` after
//! start). State changes are logged. The states inform operators (`GET /v1/regions`);
//! replication does not depend on them (a down peer's shipping simply fails and resumes).

mod join;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use regions_core::config::{Config, RegionConfig};
use regions_core::protocol::{Health, Member, Role};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub use join::prepare;

/// The file a region keeps its membership in.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    /// For a joined region: the cluster's configuration text.
    #[serde(default)]
    cluster_config: String,
    members: Vec<Member>,
}

struct Inner {
    learners: BTreeMap<String, Member>,
    heard: HashMap<String, Instant>,
    health: HashMap<String, Health>,
}

/// This region's view of the membership.
pub struct Membership {
    me: String,
    path: PathBuf,
    cluster_config: String,
    voters: Vec<Member>,
    started: Instant,
    inner: Mutex<Inner>,
}

/// Where region `me` keeps its membership: beside its SQLite file (or where `data` names
/// one, when it stores in PostgreSQL).
pub fn members_path(me: &RegionConfig) -> PathBuf {
    me.local_path().with_extension("members.json")
}

fn load(path: &Path) -> Result<Option<Saved>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn save(path: &Path, saved: &Saved) -> Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(saved).map_err(|e| Error::Corrupt(e.to_string()))?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Membership {
    /// Region `me`'s membership: the voters of `config` and the replica-only members in its
    /// file.
    pub fn open(config: &Config, me: &str) -> Result<Membership> {
        let path = members_path(config.region(me)?);
        let saved = load(&path)?.unwrap_or_default();
        // A region with `bootstrap` set joined: it is the one member of its list that is no voter.
        let joined = !config.bootstrap.is_empty();
        let voters: Vec<Member> = config
            .regions
            .iter()
            .filter(|r| !(joined && r.name == me))
            .map(|r| Member {
                name: r.name.clone(),
                address: r.address.trim_end_matches('/').to_owned(),
                role: Role::Voter,
                version: 0,
            })
            .collect();
        let learners = saved
            .members
            .into_iter()
            .filter(|m| m.role == Role::Replica && !voters.iter().any(|v| v.name == m.name))
            .map(|m| (m.name.clone(), m))
            .collect();
        Ok(Membership {
            me: me.to_owned(),
            path,
            cluster_config: config.source.clone(),
            voters,
            started: Instant::now(),
            inner: Mutex::new(Inner {
                learners,
                heard: HashMap::new(),
                health: HashMap::new(),
            }),
        })
    }

    /// Whether `name` is a voter (a region of the configuration file).
    pub fn is_configured(&self, name: &str) -> bool {
        self.voters.iter().any(|v| v.name == name)
    }

    /// The cluster's configuration text, as handed to joining regions.
    pub fn cluster_config(&self) -> &str {
        &self.cluster_config
    }

    /// Whether this region is a voter (it ships its log and homes keys).
    pub fn is_voter(&self) -> bool {
        self.voters.iter().any(|v| v.name == self.me)
    }

    /// The replica-only members.
    pub fn learners(&self) -> Vec<Member> {
        self.inner
            .lock()
            .expect("membership lock")
            .learners
            .values()
            .cloned()
            .collect()
    }

    /// Every member, voters first.
    pub fn members(&self) -> Vec<Member> {
        let mut all = self.voters.clone();
        all.extend(self.learners());
        all
    }

    /// Every member's name.
    pub fn names(&self) -> Vec<String> {
        self.members().into_iter().map(|m| m.name).collect()
    }

    /// Merges a list of replica-only members (highest version per name wins) and keeps
    /// the result durably. Returns the members that were new or changed.
    pub fn merge(&self, members: &[Member]) -> Result<Vec<Member>> {
        let mut inner = self.inner.lock().expect("membership lock");
        let mut changed = Vec::new();
        for m in members {
            if m.role != Role::Replica || self.voters.iter().any(|v| v.name == m.name) {
                continue;
            }
            if inner.learners.get(&m.name).is_none_or(|old| old.version < m.version) {
                inner.learners.insert(m.name.clone(), m.clone());
                changed.push(m.clone());
            }
        }
        if !changed.is_empty() {
            save(
                &self.path,
                &Saved {
                    cluster_config: self.cluster_config.clone(),
                    members: inner.learners.values().cloned().collect(),
                },
            )?;
        }
        Ok(changed)
    }

    /// [`Membership::merge`] of what a heartbeat (or its answer) from `sender` may change:
    /// `sender`'s own entry (its address and version, after a restart elsewhere), which its
    /// certificate vouches for over TLS. Entries about other regions are ignored: a
    /// heartbeat cannot add a member, nor point the log shipper at an address of its
    /// sender's choosing. Logs what it learned (region `me`'s view) or why it could not keep
    /// the list.
    pub fn merge_from(&self, me: &str, sender: &str, members: &[Member]) {
        let own: Vec<Member> = members.iter().filter(|m| m.name == sender).cloned().collect();
        match self.merge(&own) {
            Ok(new) => {
                for m in new {
                    tracing::info!(region = me, member = m.name, address = m.address, "learned a member");
                }
            }
            Err(e) => tracing::error!(region = me, error = %e, "could not keep the membership"),
        }
    }

    /// Notes that `name` was heard from just now.
    pub fn heard(&self, name: &str) {
        self.inner
            .lock()
            .expect("membership lock")
            .heard
            .insert(name.to_owned(), Instant::now());
    }

    /// The detector's state of `name` and the milliseconds since its last heartbeat.
    pub fn health(&self, name: &str) -> (Health, Option<u64>) {
        let inner = self.inner.lock().expect("membership lock");
        let ago = inner
            .heard
            .get(name)
            .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX));
        (inner.health.get(name).copied().unwrap_or(Health::Suspect), ago)
    }

    /// Re-evaluates every member's state; returns the changes (name, before, after).
    pub(crate) fn evaluate(
        &self,
        now: Instant,
        suspect_after: Duration,
        down_after: Duration,
    ) -> Vec<(String, Option<Health>, Health)> {
        let names: Vec<String> = self.names().into_iter().filter(|n| *n != self.me).collect();
        let mut inner = self.inner.lock().expect("membership lock");
        let mut changes = Vec::new();
        for name in names {
            let health = match inner.heard.get(&name).map(|t| now.saturating_duration_since(*t)) {
                Some(age) if age <= suspect_after => Health::Up,
                Some(age) if age <= down_after => Health::Suspect,
                Some(_) => Health::Down,
                None if now.saturating_duration_since(self.started) <= down_after => Health::Suspect,
                None => Health::Down,
            };
            let before = inner.health.insert(name.clone(), health);
            if before != Some(health) && !(before.is_none() && health == Health::Suspect) {
                changes.push((name, before, health));
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        Config::parse(&format!(
            "[[regions]]\nname = \"a\"\naddress = \"http://127.0.0.1:1\"\ndata = \"{}\"\n\
             [[regions]]\nname = \"b\"\naddress = \"http://127.0.0.1:2\"\n",
            dir.join("a.db").display()
        ))
        .unwrap()
    }

    fn replica(name: &str, address: &str, version: u64) -> Member {
        Member {
            name: name.into(),
            address: address.into(),
            role: Role::Replica,
            version,
        }
    }

    #[test]
    fn lists_merge_by_highest_version_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let m = Membership::open(&config(dir.path()), "a").unwrap();
        assert!(m.is_voter());
        assert_eq!(m.names(), ["a", "b"]);
        let new = m
            .merge(&[replica("c", "http://c:1", 5), replica("b", "http://evil", 9)])
            .unwrap();
        assert_eq!(
            new,
            [replica("c", "http://c:1", 5)],
            "a voter is never replaced by gossip"
        );
        assert!(
            m.merge(&[replica("c", "http://old", 4)]).unwrap().is_empty(),
            "older loses"
        );
        assert_eq!(m.merge(&[replica("c", "http://c:2", 6)]).unwrap().len(), 1);
        drop(m);
        let again = Membership::open(&config(dir.path()), "a").unwrap();
        assert_eq!(again.learners(), [replica("c", "http://c:2", 6)]);
    }

    #[test]
    fn the_detector_goes_suspect_then_down_and_back_up() {
        let dir = tempfile::tempdir().unwrap();
        let m = Membership::open(&config(dir.path()), "a").unwrap();
        let (suspect, down) = (Duration::from_secs(3), Duration::from_secs(8));
        let ms = Duration::from_millis;
        assert!(
            m.evaluate(Instant::now(), suspect, down).is_empty(),
            "never heard: suspect, not logged"
        );
        m.heard("b");
        let t0 = Instant::now();
        assert_eq!(
            m.evaluate(t0, suspect, down),
            [("b".to_owned(), Some(Health::Suspect), Health::Up)]
        );
        assert!(m.evaluate(t0 + ms(2_000), suspect, down).is_empty(), "still up");
        assert_eq!(m.evaluate(t0 + ms(4_000), suspect, down)[0].2, Health::Suspect);
        assert_eq!(m.evaluate(t0 + ms(9_000), suspect, down)[0].2, Health::Down);
        assert_eq!(m.health("b").0, Health::Down);
        m.heard("b");
        assert_eq!(m.evaluate(Instant::now(), suspect, down)[0].2, Health::Up);
    }
}
