//! The coordinator's metrics, in the Prometheus (OpenMetrics) text format.
//!
//! [`Metrics`] is a cheap handle owned by the coordinator ([`crate::Options::metrics`]):
//! the saga tasks and the lease loop update it, and [`Metrics::render`] writes it out for
//! `GET /metrics`, together with the values read at scrape time (sagas in flight, the
//! store's counters). Every name starts with `geosaga_`.
//!
//! | Metric | Labels | |
//! |---|---|---|
//! | `geosaga_sagas_started_total` | definition | sagas created here |
//! | `geosaga_sagas_completed_total`, `_compensated_total`, `_stuck_total` | definition | sagas settled here |
//! | `geosaga_sagas_in_flight` | | sagas this coordinator runs now |
//! | `geosaga_step_duration_seconds` | definition, step, outcome | one action attempt |
//! | `geosaga_compensation_duration_seconds` | definition, step, outcome | one compensation attempt |
//! | `geosaga_step_retries_total` | definition, step, kind | failed attempts that will be retried |
//! | `geosaga_lease_adoptions_total` | | sagas this coordinator resumed or adopted |
//! | `geosaga_stranded_sagas_found_total` | | unsettled sagas found owned here without a task, and run |
//! | `geosaga_store_commits_total`, `_appends_total`, `_events_total` | | the store's work |
//! | `geosaga_store_appends_per_commit`, `geosaga_store_max_batch` | | group commit at work |
//! | `geosaga_retention_deleted_sagas_total`, `_archived_sagas_total` | | retention's work |
//! | `geosaga_retention_reclaimed_pages_total` | | SQLite pages given back to the file system |
//!
//! An attempt's `outcome` is `succeeded`, `retry`, `failed` (for good, known not applied)
//! or `possibly_applied` (an action that failed for good without a certain outcome: the
//! saga compensates it); alert on the last.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sagas::{Phase, SagaStatus};

use crate::store::StoreStats;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const PREFIX: &str = "geosaga";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DefinitionLabels {
    definition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    definition: String,
    step: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    definition: String,
    step: String,
    kind: &'static str,
}

type Latency = Family<AttemptLabels, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

#[derive(Debug)]
struct Families {
    registry: Registry,
    started: Family<DefinitionLabels, Counter>,
    completed: Family<DefinitionLabels, Counter>,
    compensated: Family<DefinitionLabels, Counter>,
    stuck: Family<DefinitionLabels, Counter>,
    step_duration: Latency,
    compensation_duration: Latency,
    retries: Family<RetryLabels, Counter>,
    adoptions: Counter,
    stranded: Counter,
    deleted: Counter,
    archived: Counter,
    reclaimed: Counter,
}

/// The coordinator's metrics. Clones share them.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Families>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// What is read at scrape time rather than counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scrape {
    /// Sagas this coordinator runs now.
    pub in_flight: usize,
    /// The store's counters.
    pub store: StoreStats,
}

impl Metrics {
    /// Fresh metrics, all zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let started = Family::default();
        let completed = Family::default();
        let compensated = Family::default();
        let stuck = Family::default();
        let step_duration: Latency = Family::new_with_constructor(latency_buckets);
        let compensation_duration: Latency = Family::new_with_constructor(latency_buckets);
        let retries = Family::default();
        let adoptions = Counter::default();
        let stranded = Counter::default();
        let (deleted, archived, reclaimed) = (Counter::default(), Counter::default(), Counter::default());
        registry.register("sagas_started", "Sagas created by this coordinator", started.clone());
        registry.register(
            "sagas_completed",
            "Sagas that completed on this coordinator",
            completed.clone(),
        );
        registry.register(
            "sagas_compensated",
            "Sagas that unwound cleanly on this coordinator",
            compensated.clone(),
        );
        registry.register(
            "sagas_stuck",
            "Sagas left stuck on this coordinator: a compensation failed for good; an operator must act",
            stuck.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Duration of one action attempt",
            step_duration.clone(),
        );
        registry.register(
            "compensation_duration_seconds",
            "Duration of one compensation attempt",
            compensation_duration.clone(),
        );
        registry.register("step_retries", "Failed attempts that will be retried", retries.clone());
        registry.register(
            "lease_adoptions",
            "Sagas this coordinator resumed from the store (its own after a restart, or orphans whose lease expired)",
            adoptions.clone(),
        );
        registry.register(
            "stranded_sagas_found",
            "Unsettled sagas the periodic check found owned by this coordinator without a task (an adoption or an \
             operator retry cut short), and ran; alert on any",
            stranded.clone(),
        );
        registry.register(
            "retention_deleted_sagas",
            "Finished sagas retention deleted (on the coordinator that runs retention)",
            deleted.clone(),
        );
        registry.register(
            "retention_archived_sagas",
            "Sagas retention wrote to its archive before deleting them",
            archived.clone(),
        );
        registry.register(
            "retention_reclaimed_pages",
            "Database pages freed by retention and given back to the file system (SQLite)",
            reclaimed.clone(),
        );
        Metrics {
            inner: Arc::new(Families {
                registry,
                started,
                completed,
                compensated,
                stuck,
                step_duration,
                compensation_duration,
                retries,
                adoptions,
                stranded,
                deleted,
                archived,
                reclaimed,
            }),
        }
    }

    /// A saga of `definition` was created.
    pub fn saga_started(&self, definition: &str) {
        self.inner
            .started
            .get_or_create(&DefinitionLabels {
                definition: definition.to_owned(),
            })
            .inc();
    }

    /// A saga of `definition` settled as `status`.
    pub fn saga_settled(&self, definition: &str, status: SagaStatus) {
        let family = match status {
            SagaStatus::Completed => &self.inner.completed,
            SagaStatus::Compensated => &self.inner.compensated,
            SagaStatus::Stuck => &self.inner.stuck,
            SagaStatus::Running | SagaStatus::Compensating => return,
        };
        family
            .get_or_create(&DefinitionLabels {
                definition: definition.to_owned(),
            })
            .inc();
    }

    /// One attempt ended with `outcome` (`succeeded`, `retry`, `failed` or
    /// `possibly_applied`) after `took`.
    pub fn attempt(&self, definition: &str, step: &str, phase: Phase, outcome: &'static str, took: Duration) {
        let labels = AttemptLabels {
            definition: definition.to_owned(),
            step: step.to_owned(),
            outcome,
        };
        let family = match phase {
            Phase::Action => &self.inner.step_duration,
            Phase::Compensation => &self.inner.compensation_duration,
        };
        family.get_or_create(&labels).observe(took.as_secs_f64());
        if outcome == "retry" {
            let labels = RetryLabels {
                definition: labels.definition,
                step: labels.step,
                kind: phase.as_str(),
            };
            self.inner.retries.get_or_create(&labels).inc();
        }
    }

    /// A saga was claimed from the store and resumed here.
    pub fn adopted(&self) {
        self.inner.adoptions.inc();
    }

    /// The periodic check found a saga owned here without a task, and ran it.
    pub fn stranded_found(&self) {
        self.inner.stranded.inc();
    }

    /// Retention deleted `n` sagas.
    pub fn retention_deleted(&self, n: u64) {
        self.inner.deleted.inc_by(n);
    }

    /// Retention archived `n` sagas.
    pub fn retention_archived(&self, n: u64) {
        self.inner.archived.inc_by(n);
    }

    /// Retention gave `pages` pages back to the file system.
    pub fn retention_reclaimed(&self, pages: u64) {
        self.inner.reclaimed.inc_by(pages);
    }

    /// The metrics as OpenMetrics text (which Prometheus scrapes as it is).
    pub fn render(&self, scrape: Scrape) -> String {
        let stats = scrape.store;
        let mut now = Registry::with_prefix(PREFIX);
        now.register(
            "sagas_in_flight",
            "Sagas this coordinator runs now",
            ConstGauge::new(i64::try_from(scrape.in_flight).unwrap_or(i64::MAX)),
        );
        now.register(
            "store_commits",
            "Write transactions the store committed",
            ConstCounter::new(stats.commits),
        );
        now.register(
            "store_appends",
            "Saga appends carried by those commits",
            ConstCounter::new(stats.appends),
        );
        now.register("store_events", "Saga events written", ConstCounter::new(stats.events));
        let per_commit = if stats.commits == 0 {
            0.0
        } else {
            stats.appends as f64 / stats.commits as f64
        };
        now.register(
            "store_appends_per_commit",
            "Appends per commit since start: how much group commit batches",
            ConstGauge::new(per_commit),
        );
        now.register(
            "store_max_batch",
            "The most appends one commit carried",
            ConstGauge::new(i64::try_from(stats.max_batch).unwrap_or(i64::MAX)),
        );
        let mut out = String::new();
        encode_registry(&mut out, &self.inner.registry).expect("writing to a String");
        encode_registry(&mut out, &now).expect("writing to a String");
        encode_eof(&mut out).expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_scrape_values_are_rendered() {
        let metrics = Metrics::new();
        metrics.saga_started("trip");
        metrics.saga_settled("trip", SagaStatus::Compensated);
        metrics.attempt("trip", "book", Phase::Action, "retry", Duration::from_millis(3));
        metrics.attempt(
            "trip",
            "book",
            Phase::Compensation,
            "succeeded",
            Duration::from_millis(2),
        );
        metrics.adopted();
        metrics.retention_archived(3);
        metrics.retention_deleted(3);
        let text = metrics.render(Scrape {
            in_flight: 2,
            store: StoreStats {
                commits: 4,
                appends: 10,
                events: 20,
                max_batch: 5,
            },
        });
        for line in [
            "geosaga_sagas_started_total{definition=\"trip\"} 1",
            "geosaga_sagas_compensated_total{definition=\"trip\"} 1",
            "geosaga_step_duration_seconds_count{definition=\"trip\",step=\"book\",outcome=\"retry\"} 1",
            "geosaga_compensation_duration_seconds_count{definition=\"trip\",step=\"book\",outcome=\"succeeded\"} 1",
            "geosaga_step_retries_total{definition=\"trip\",step=\"book\",kind=\"action\"} 1",
            "geosaga_lease_adoptions_total 1",
            "geosaga_retention_deleted_sagas_total 3",
            "geosaga_retention_archived_sagas_total 3",
            "geosaga_retention_reclaimed_pages_total 0",
            "geosaga_sagas_in_flight 2",
            "geosaga_store_commits_total 4",
            "geosaga_store_appends_total 10",
            "geosaga_store_appends_per_commit 2.5",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
