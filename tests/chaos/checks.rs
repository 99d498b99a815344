//! The chaos suite's checks, run once the nemesis stopped and every link healed:
//!
//! - every transfer saga settled `completed` or `compensated`, and every account holds its
//!   opening balance less what it sent plus what it received in completed sagas;
//! - some sagas started on one coordinator were settled by the other (adopted: see
//!   [`super::coordinators`]);
//! - every write applied but answered too late (possibly applied) was undone when its saga
//!   unwound, and there was one ([`super::uncertain`]);
//! - eu-west ran with its clock ahead of the others' (its log says so), so the checks below
//!   held on clocks that disagree;
//! - every strong key's history is linearizable (`testkit::history`, after final strong
//!   reads through every region);
//! - no acknowledged strong write is lost: each is still readable at its home as of its
//!   version;
//! - no bounded-staleness answer was staler than its bound: each saw every write
//!   acknowledged more than its bound before it was sent;
//! - every region converges to the same version of every key, at least the last
//!   acknowledged async write; counters agree everywhere and hold every acknowledged
//!   increment; the writes-anywhere keys agree, and so do the regions' counts of writes
//!   overwritten by conflicts;
//! - every snapshot of the bank's accounts saw the whole total, which is conserved at the
//!   end ([`super::bank`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use regions::Timestamp;
use serde_json::Value;
use testkit::history::{self, Call, Operation, Outcome};

use super::bank::Bank;
use super::testbed::{CLOCK_OFFSET, MAX_CLOCK_OFFSET_MS, PREFIXES, REGIONS, Testbed};
use super::transfers::{self, Sagas};
use super::workload::{Workload, anywhere_keys, async_keys, counter_keys, strong_keys};

/// What the checks found.
pub struct Report {
    /// A one-line summary of the operations.
    pub operations: String,
    /// Each check: its name and summary, and its failure if it failed.
    pub checks: Vec<(String, Option<String>)>,
}

/// How long the regions get to converge after the faults healed.
const CONVERGENCE: Duration = Duration::from_secs(90);

pub(super) fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Written => "written",
        Outcome::Read(_) => "read",
        Outcome::Failed => "failed",
        Outcome::Unknown => "unknown",
    }
}

/// Runs every check.
pub async fn run(tb: &Testbed, w: &Workload, sagas: &Sagas, bank: &Bank) -> Report {
    let mut checks = Vec::new();
    match transfers::settle(w, sagas, &tb.coordinator).await {
        Ok((statuses, completed)) => {
            // Both outcomes must have happened, or the check proved little.
            let ok = statuses.contains_key("completed") && statuses.contains_key("compensated");
            checks.push((
                "every saga completed or compensated (those over the limit compensated)",
                if ok {
                    Ok(format!("{statuses:?}"))
                } else {
                    Err(format!("no transfer completed, or none compensated: {statuses:?}"))
                },
            ));
            checks.push((
                "money conserved across regions",
                transfers::money_conserved(w, &completed).await,
            ));
            let started = sagas.started.lock().unwrap().clone();
            checks.push(super::coordinators::adopted(&tb.database, &started).await);
            checks.push(super::uncertain::applied_then_timed_out(w, &tb.coordinator, &started).await);
        }
        Err(e) => checks.push((
            "every saga completed or compensated (those over the limit compensated)",
            Err(e),
        )),
    }
    checks.push(clock_ahead(tb).await);
    checks.push(final_reads(w).await);
    checks.push(linearizable(w).await);
    checks.push(no_lost_strong_write(w).await);
    checks.push(bounded_fresh(w));
    checks.push(converged(w).await);
    checks.push(counters_converged(w).await);
    checks.push(conflicts_agree(w).await);
    checks.push(super::bank::check(w, bank).await);

    let ops = w.rec.ops.lock().unwrap();
    let mut kinds = BTreeMap::new();
    for (_, o) in ops.iter() {
        *kinds.entry(outcome_name(&o.outcome)).or_insert(0usize) += 1;
    }
    let bounded = w.rec.bounded.lock().unwrap();
    let operations = format!(
        "transfer sagas started {}; strong {} {kinds:?}; async writes acknowledged {}; bounded-staleness reads answered {} ({} by a replica), \
         refused too-stale {}; counter increments acknowledged {}; writes-anywhere acknowledged {}; \
         calls failed or unanswered {} (testbed {})",
        sagas.started.lock().unwrap().len(),
        ops.len(),
        w.rec.async_acked.lock().unwrap().len(),
        bounded.len(),
        bounded.iter().filter(|b| b.local).count(),
        w.rec.bounded_refused.load(Ordering::Relaxed),
        w.rec.counters.lock().unwrap().values().map(|c| c.0).sum::<i64>(),
        w.rec.anywhere_acked.load(Ordering::Relaxed),
        w.rec.errors.load(Ordering::Relaxed),
        tb.project(),
    );
    Report {
        operations,
        checks: checks
            .into_iter()
            .map(|(name, result)| match result {
                Ok(summary) => (format!("{name}: {summary}"), None),
                Err(failure) => (name.to_owned(), Some(failure)),
            })
            .collect(),
    }
}

type Check = (&'static str, Result<String, String>);

/// The region of [`CLOCK_OFFSET`] said at its start that its clock is moved (every start:
/// the nemesis restarts it).
async fn clock_ahead(tb: &Testbed) -> Check {
    let (region, ms) = CLOCK_OFFSET;
    let logs = tb.run(&["logs", region]).await.output;
    let said = format!("clock_offset_ms={ms}");
    let starts = logs.lines().filter(|l| l.contains(&said)).count();
    (
        "a region's clock ahead of the others'",
        if starts > 0 {
            Ok(format!(
                "{region} {ms} ms ahead (max_clock_offset_ms {MAX_CLOCK_OFFSET_MS}), said at {starts} start(s)"
            ))
        } else {
            Err(format!("{region}'s log never says {said}"))
        },
    )
}

/// Final strong reads of every key through every region join the histories.
async fn final_reads(w: &Workload) -> Check {
    for key in strong_keys() {
        for (i, region) in REGIONS.iter().enumerate() {
            let mut read = false;
            for attempt in 0..60 {
                if w.strong_call(1_000 + i, &key, i, attempt, false).await {
                    read = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if !read {
                return (
                    "final strong reads",
                    Err(format!("no strong read of {key} through {region} succeeded")),
                );
            }
        }
    }
    (
        "final strong reads",
        Ok(format!(
            "{} keys through {} regions",
            strong_keys().len(),
            REGIONS.len()
        )),
    )
}

/// A write of unknown outcome whose value no read returned constrains nothing (it may
/// not have taken effect), so it is left out: the search stays small however long a
/// region was down.
fn prune(history: Vec<Operation>) -> Vec<Operation> {
    let seen: HashSet<String> = history
        .iter()
        .filter_map(|o| match &o.outcome {
            Outcome::Read(Some(v)) => Some(v.clone()),
            _ => None,
        })
        .collect();
    history
        .into_iter()
        .filter(|o| match (&o.outcome, &o.call) {
            (Outcome::Unknown, Call::Write(v)) => seen.contains(v),
            _ => true,
        })
        .collect()
}

async fn linearizable(w: &Workload) -> Check {
    let ops = w.rec.ops.lock().unwrap().clone();
    let mut checked = Vec::new();
    for key in strong_keys() {
        let history: Vec<Operation> = prune(ops.iter().filter(|(k, _)| *k == key).map(|(_, o)| o.clone()).collect());
        let n = history.len();
        checked.push((
            key,
            n,
            tokio::task::spawn_blocking(move || history::check(None, &history)),
        ));
    }
    let mut sizes = Vec::new();
    for (key, n, task) in checked {
        if let Err(e) = task.await.unwrap() {
            return ("strong histories linearizable per key", Err(format!("{key}: {e}")));
        }
        sizes.push(n);
    }
    let writes = ops.iter().filter(|(_, o)| o.outcome == Outcome::Written).count();
    let reads = ops
        .iter()
        .filter(|(_, o)| matches!(o.outcome, Outcome::Read(_)))
        .count();
    if writes < 10 || reads < 10 {
        return (
            "strong histories linearizable per key",
            Err(format!(
                "too few strong operations succeeded to check anything: {writes} writes, {reads} reads"
            )),
        );
    }
    (
        "strong histories linearizable per key",
        Ok(format!("{} keys, {sizes:?} operations each", sizes.len())),
    )
}

fn home(key: &str) -> usize {
    PREFIXES.iter().position(|p| key.starts_with(p)).expect("a homed key")
}

async fn get_json(w: &Workload, url: &str) -> Option<(u16, Value)> {
    let r = w.reader.get(url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.unwrap_or(Value::Null)))
}

async fn no_lost_strong_write(w: &Workload) -> Check {
    let acked = w.rec.strong_acked.lock().unwrap().clone();
    for a in &acked {
        let url = format!("{}/v1/kv/{}?as_of={}", w.regions[home(&a.key)], a.key, a.version);
        let mut answer = None;
        for _ in 0..20 {
            answer = get_json(w, &url).await;
            if answer.as_ref().is_some_and(|(s, _)| *s == 200 || *s == 404) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        match answer {
            Some((200, body)) if body["value"].as_str() == Some(a.value.as_str()) => {}
            other => {
                return (
                    "no acknowledged strong write lost",
                    Err(format!(
                        "{}@{} was acknowledged with {:?}; now: {other:?}",
                        a.key, a.version, a.value
                    )),
                );
            }
        }
    }
    (
        "no acknowledged strong write lost",
        Ok(format!("{} writes read back as of their versions", acked.len())),
    )
}

fn bounded_fresh(w: &Workload) -> Check {
    let mut acked = w.rec.strong_acked.lock().unwrap().clone();
    acked.extend(w.rec.async_acked.lock().unwrap().iter().cloned());
    let bounded = w.rec.bounded.lock().unwrap().clone();
    for b in &bounded {
        let must_see = acked
            .iter()
            .filter(|a| a.key == b.key && a.at.as_millis() + u128::from(b.bound) < b.invoked.as_millis())
            .map(|a| a.version)
            .max();
        if let Some(must) = must_see
            && b.version.is_none_or(|v| v < must)
        {
            return (
                "bounded-staleness reads within their bound",
                Err(format!(
                    "{} read through {} at {:?} with bound {} ms saw {:?}, older than {must}",
                    b.key, REGIONS[b.region], b.invoked, b.bound, b.version
                )),
            );
        }
        if b.bound > super::workload::MAX_STALENESS_MS {
            return (
                "bounded-staleness reads within their bound",
                Err(format!("{} answered with a bound of {} ms", b.key, b.bound)),
            );
        }
    }
    if bounded.iter().all(|b| !b.local) {
        return (
            "bounded-staleness reads within their bound",
            Err("no bounded-staleness read was served by a replica".into()),
        );
    }
    (
        "bounded-staleness reads within their bound",
        Ok(format!("{} answers", bounded.len())),
    )
}

/// The version and value of `key` in region `i`'s own copy.
async fn local_copy(w: &Workload, i: usize, key: &str) -> Result<Option<(Timestamp, Value)>, String> {
    let url = format!(
        "{}/v1/kv/{key}?consistency=bounded_staleness&max_staleness_ms=86400000&allow_stale=true",
        w.regions[i]
    );
    match get_json(w, &url).await {
        Some((200, body)) if body["served_by"] == REGIONS[i] => {
            let version = body["version"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .ok_or("no version")?;
            Ok(Some((version, body["value"].clone())))
        }
        Some((404, body)) if body["type"].as_str().unwrap_or("").ends_with("key-not-found") => Ok(None),
        other => Err(format!("{} answered {other:?}", REGIONS[i])),
    }
}

/// Polls until `probe` succeeds or the convergence deadline passes.
async fn until_converged<F, Fut>(mut probe: F) -> Result<String, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let deadline = Instant::now() + CONVERGENCE;
    loop {
        match probe().await {
            Ok(summary) => return Ok(summary),
            Err(e) if Instant::now() > deadline => return Err(format!("not converged after {CONVERGENCE:?}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

async fn converged(w: &Workload) -> Check {
    let async_acked = w.rec.async_acked.lock().unwrap().clone();
    let keys: Vec<String> = strong_keys()
        .into_iter()
        .chain(async_keys())
        .chain(anywhere_keys())
        .collect();
    let result = until_converged(|| async {
        for key in &keys {
            let mut copies = Vec::new();
            for i in 0..REGIONS.len() {
                copies.push(local_copy(w, i, key).await?);
            }
            if copies.iter().any(|c| c != &copies[0]) {
                return Err(format!("{key}: the regions hold {copies:?}"));
            }
            if let Some(last) = async_acked.iter().filter(|a| &a.key == key).map(|a| a.version).max()
                && copies[0].as_ref().is_none_or(|(v, _)| *v < last)
            {
                return Err(format!(
                    "{key}: the last acknowledged async write {last} is missing: {copies:?}"
                ));
            }
        }
        Ok(format!("{} keys identical in every region", keys.len()))
    })
    .await;
    ("every region converged (async writes included)", result)
}

async fn counters_converged(w: &Workload) -> Check {
    let expected = w.rec.counters.lock().unwrap().clone();
    let result = until_converged(|| async {
        let mut summary = Vec::new();
        for key in counter_keys() {
            let (acked, unknown) = expected.get(&key).copied().unwrap_or_default();
            let mut values = Vec::new();
            for url in &w.regions {
                match get_json(w, &format!("{url}/v1/counters/{key}")).await {
                    Some((200, body)) => values.push(body["value"].as_i64().ok_or("no value")?),
                    other => return Err(format!("{key} at {url}: {other:?}")),
                }
            }
            if values.iter().any(|v| *v != values[0]) {
                return Err(format!("{key}: the regions read {values:?}"));
            }
            if values[0] < acked || values[0] > acked + unknown {
                return Err(format!(
                    "{key} reads {} but {acked} was acknowledged (+ up to {unknown} of unknown outcome)",
                    values[0]
                ));
            }
            summary.push(format!("{key}={}", values[0]));
        }
        Ok(summary.join(", "))
    })
    .await;
    ("counters agree and hold every acknowledged increment", result)
}

async fn conflicts_agree(w: &Workload) -> Check {
    let result = until_converged(|| async {
        let mut counts = Vec::new();
        for url in &w.regions {
            match get_json(w, &format!("{url}/v1/conflicts")).await {
                Some((200, body)) => {
                    let n = body["prefixes"]
                        .as_array()
                        .and_then(|ps| ps.iter().find(|p| p["prefix"] == "any/"))
                        .and_then(|p| p["overwritten"].as_i64())
                        .ok_or_else(|| format!("no count for any/ in {body}"))?;
                    counts.push(n);
                }
                other => return Err(format!("{url}/v1/conflicts: {other:?}")),
            }
        }
        if counts.iter().any(|c| *c != counts[0]) {
            return Err(format!("the regions count {counts:?}"));
        }
        Ok(format!(
            "{} writes-anywhere overwritten by conflicts, counted alike in every region",
            counts[0]
        ))
    })
    .await;
    ("conflict counts agree", result)
}
