//! Placement: which region is a key's home. Pure: no I/O, no clock.
//!
//! Explicit rules come first: the longest matching key prefix names the home (like
//! CockroachDB's regional-by-row tables, with the prefix as the partition key). Every other
//! key is placed by consistent hashing: each region owns `weight × vnodes_per_weight`
//! points on a 64-bit ring, and a key belongs to the owner of the first point at or after
//! its hash. Adding or re-weighting a region therefore moves only the keys of the ring
//! segments it takes over; [`Placement::moved`] counts them.

use serde::Serialize;

/// A prefix rule: keys starting with `prefix` live in `region`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The key prefix.
    pub prefix: String,
    /// The home region of matching keys.
    pub region: String,
    /// Matching keys accept (async) writes at any of their replicas, not only the home;
    /// replicas merge them by last-writer-wins.
    pub writes_anywhere: bool,
    /// The regions holding a copy of matching keys (the home among them); `None`: every region.
    pub replicas: Option<Vec<String>>,
}

impl Rule {
    /// A rule homing `prefix` in `region`, replicated everywhere, written at the home only.
    pub fn new(prefix: impl Into<String>, region: impl Into<String>) -> Rule {
        Rule {
            prefix: prefix.into(),
            region: region.into(),
            writes_anywhere: false,
            replicas: None,
        }
    }
}

/// Why a key lives where it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Reason {
    /// An explicit prefix rule.
    Rule {
        /// The matching prefix.
        prefix: String,
    },
    /// Consistent hashing.
    Hash {
        /// The key's position on the ring.
        hash: u64,
        /// The index of the owning virtual node within its region.
        vnode: u32,
    },
}

/// Where a key lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Home {
    /// The home region.
    pub region: String,
    /// Why.
    pub reason: Reason,
}

/// The placement function of a cluster.
#[derive(Debug, Clone)]
pub struct Placement {
    rules: Vec<Rule>,
    /// (point, region index, vnode index), sorted by point.
    ring: Vec<(u64, usize, u32)>,
    regions: Vec<String>,
}

/// 64-bit FNV-1a followed by the SplitMix64 finaliser: stable across platforms and
/// releases (unlike `std`'s hasher), and well spread.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Placement {
    /// A placement over `regions` (name, weight) with `vnodes_per_weight` ring points per
    /// unit of weight, and prefix `rules`. A weight of 0 keeps a region off the ring (it
    /// is home only for the keys of its rules). At least one region must have a weight.
    pub fn new(regions: &[(String, u32)], vnodes_per_weight: u32, rules: Vec<Rule>) -> Result<Placement, String> {
        let names: Vec<String> = regions.iter().map(|(n, _)| n.clone()).collect();
        if let Some(rule) = rules.iter().find(|r| !names.contains(&r.region)) {
            return Err(format!(
                "rule for prefix {:?} names unknown region {:?}",
                rule.prefix, rule.region
            ));
        }
        for rule in &rules {
            if let Some(replicas) = &rule.replicas {
                if let Some(unknown) = replicas.iter().find(|r| !names.contains(r)) {
                    return Err(format!(
                        "rule for prefix {:?}: replicas names unknown region {unknown:?}",
                        rule.prefix
                    ));
                }
                if !replicas.contains(&rule.region) {
                    return Err(format!(
                        "rule for prefix {:?}: replicas must include its home region {:?}",
                        rule.prefix, rule.region
                    ));
                }
            }
        }
        let mut ring = Vec::new();
        for (i, (name, weight)) in regions.iter().enumerate() {
            for v in 0..weight.saturating_mul(vnodes_per_weight) {
                ring.push((hash(format!("{name}#{v}").as_bytes()), i, v));
            }
        }
        if ring.is_empty() {
            return Err("no region has a weight above 0 (and vnodes_per_weight above 0)".into());
        }
        ring.sort_unstable();
        let mut rules = rules;
        // Longest prefix first, so that the first match is the most specific.
        rules.sort_by(|a, b| b.prefix.len().cmp(&a.prefix.len()).then(a.prefix.cmp(&b.prefix)));
        Ok(Placement {
            rules,
            ring,
            regions: names,
        })
    }

    /// The home of `key`.
    pub fn home(&self, key: &str) -> Home {
        if let Some(rule) = self.rules.iter().find(|r| key.starts_with(&r.prefix)) {
            return Home {
                region: rule.region.clone(),
                reason: Reason::Rule {
                    prefix: rule.prefix.clone(),
                },
            };
        }
        let h = hash(key.as_bytes());
        let i = self.ring.partition_point(|(point, _, _)| *point < h);
        let (_, region, vnode) = self.ring[if i == self.ring.len() { 0 } else { i }];
        Home {
            region: self.regions[region].clone(),
            reason: Reason::Hash { hash: h, vnode },
        }
    }

    /// The rule that places `key`, if one does.
    pub fn rule(&self, key: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| key.starts_with(&r.prefix))
    }

    /// The rules, longest prefix first.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether `region` holds a copy of `key` (its home always does).
    pub fn replicates_to(&self, key: &str, region: &str) -> bool {
        match self.rule(key) {
            Some(Rule {
                replicas: Some(replicas),
                ..
            }) => replicas.iter().any(|r| r == region),
            Some(_) | None => true,
        }
    }

    /// The prefix of the rule letting `key` be written anywhere (`None`: home only).
    pub fn writes_anywhere(&self, key: &str) -> Option<&str> {
        self.rule(key).filter(|r| r.writes_anywhere).map(|r| r.prefix.as_str())
    }

    /// This placement with the rule for exactly `prefix` homed in `region` instead (re-homing
    /// a key range). The new home must be one of the rule's replicas.
    pub fn with_home(&self, prefix: &str, region: &str) -> Result<Placement, String> {
        if !self.regions.iter().any(|r| r == region) {
            return Err(format!("unknown region {region:?}"));
        }
        let mut next = self.clone();
        let rule = next
            .rules
            .iter_mut()
            .find(|r| r.prefix == prefix)
            .ok_or_else(|| format!("no placement rule has the prefix {prefix:?}"))?;
        if let Some(replicas) = rule.replicas.as_ref().filter(|rs| !rs.iter().any(|r| r == region)) {
            return Err(format!(
                "{region} holds no replica of {prefix:?} (its replicas: {})",
                replicas.join(", ")
            ));
        }
        rule.region = region.to_owned();
        Ok(next)
    }

    /// How many of `keys` have a different home under `other` (re-homing a key range).
    pub fn moved<'a>(&self, other: &Placement, keys: impl IntoIterator<Item = &'a str>) -> usize {
        keys.into_iter()
            .filter(|k| self.home(k).region != other.home(k).region)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions(ws: &[(&str, u32)]) -> Vec<(String, u32)> {
        ws.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("user/{i}")).collect()
    }

    #[test]
    fn the_longest_matching_rule_wins_over_hashing() {
        let rules = vec![Rule::new("eu/", "eu-west"), Rule::new("eu/us/", "us-east")];
        let p = Placement::new(&regions(&[("us-east", 1), ("eu-west", 1), ("ap-south", 1)]), 64, rules).unwrap();
        assert_eq!(p.home("eu/alice").region, "eu-west");
        assert_eq!(p.home("eu/us/bob").region, "us-east");
        assert_eq!(
            p.home("eu/us/bob").reason,
            Reason::Rule {
                prefix: "eu/us/".into()
            }
        );
        assert!(matches!(p.home("other").reason, Reason::Hash { .. }));
    }

    #[test]
    fn rules_naming_unknown_regions_are_refused() {
        let rules = vec![Rule::new("x", "mars")];
        assert!(Placement::new(&regions(&[("a", 1)]), 8, rules).is_err());
        let outside = Rule {
            replicas: Some(vec!["b".into()]),
            ..Rule::new("x", "a")
        };
        assert!(Placement::new(&regions(&[("a", 1), ("b", 1)]), 8, vec![outside]).is_err());
        assert!(Placement::new(&regions(&[("a", 0)]), 8, vec![]).is_err());
    }

    #[test]
    fn keys_spread_by_weight() {
        let p = Placement::new(&regions(&[("a", 1), ("b", 1), ("c", 2)]), 128, vec![]).unwrap();
        let mut counts = std::collections::HashMap::new();
        for k in keys(20_000) {
            *counts.entry(p.home(&k).region).or_insert(0usize) += 1;
        }
        let share = |r: &str| counts[r] as f64 / 20_000.0;
        assert!((share("c") - 0.5).abs() < 0.06, "{counts:?}");
        assert!((share("a") - 0.25).abs() < 0.05, "{counts:?}");
    }

    #[test]
    fn adding_a_region_moves_only_the_keys_it_takes() {
        let before = Placement::new(&regions(&[("a", 1), ("b", 1), ("c", 1)]), 128, vec![]).unwrap();
        let after = Placement::new(&regions(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)]), 128, vec![]).unwrap();
        let ks = keys(10_000);
        let moved = before.moved(&after, ks.iter().map(String::as_str));
        assert!((1_500..3_500).contains(&moved), "about a quarter moves, not {moved}");
        for k in &ks {
            let (b, a) = (before.home(k).region, after.home(k).region);
            assert!(a == b || a == "d", "{k} moved from {b} to {a}, not to the new region");
        }
    }

    #[test]
    fn replica_sets_writes_anywhere_and_re_homing() {
        let rules = vec![
            Rule {
                replicas: Some(vec!["a".into(), "b".into()]),
                ..Rule::new("p/", "a")
            },
            Rule {
                writes_anywhere: true,
                ..Rule::new("m/", "c")
            },
        ];
        let p = Placement::new(&regions(&[("a", 1), ("b", 1), ("c", 1)]), 16, rules).unwrap();
        assert!(p.replicates_to("p/1", "b") && !p.replicates_to("p/1", "c"));
        assert!(p.replicates_to("m/1", "a") && p.replicates_to("other", "c"));
        assert_eq!(p.writes_anywhere("m/1"), Some("m/"));
        assert_eq!(p.writes_anywhere("p/1"), None);
        let moved = p.with_home("p/", "b").unwrap();
        assert_eq!(moved.home("p/1").region, "b");
        let ks = ["p/1", "p/2", "m/1", "q"];
        assert_eq!(p.moved(&moved, ks), 2);
        assert!(p.with_home("p/", "c").is_err(), "c holds no replica of p/");
        assert!(p.with_home("nope/", "a").is_err());
    }

    #[test]
    fn placement_is_stable_for_a_given_configuration() {
        let p = Placement::new(&regions(&[("a", 1), ("b", 1)]), 16, vec![]).unwrap();
        let q = Placement::new(&regions(&[("a", 1), ("b", 1)]), 16, vec![]).unwrap();
        assert!(keys(500).iter().all(|k| p.home(k) == q.home(k)));
        assert_eq!(hash(b"geosaga"), hash(b"geosaga"));
    }
}
