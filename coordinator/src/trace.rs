//! One trace per saga, across restarts and hand-overs.
//!
//! A saga's trace is decided when the saga is created: its trace id (the caller's, from
//! `traceparent`, or a new one) and the id of its root span are drawn then and stored in
//! the saga row ([`SagaTrace`], in `trace_context`), with the caller's span id and
//! `tracestate`. Every attempt span is a child of that root span, built from the stored
//! ids; the root span itself is built when the saga settles, with the stored ids pinned
//! ([`observability::ids::with_ids`]) and the saga's creation time as its start. So a saga
//! resumed by another coordinator still makes one trace, with spans from every process
//! that drove it.
//!
//! Only the OpenTelemetry API is used here: until the binary installs a tracer provider
//! the global tracer is a no-op and building a span costs next to nothing. The stored
//! context is used either way: the API reports the saga's trace id, and HTTP steps pass
//! `traceparent` on to participants.

use std::time::{Duration, SystemTime};

use observability::semconv;
use opentelemetry::trace::{
    Event, Span, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, Tracer,
};
use opentelemetry::{Context, KeyValue, global};
use sagas::{Phase, SagaEvent, SagaStatus, StepError, UnwindCause};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::SagaRecord;

/// The instrumentation scope of geosaga's spans.
const SCOPE: &str = "geosaga";

/// The W3C trace context headers a caller sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeaders {
    /// `traceparent`: `00-<trace id>-<span id>-<flags>`.
    pub traceparent: String,
    /// `tracestate`, passed on unchanged.
    pub tracestate: Option<String>,
}

impl TraceHeaders {
    /// The headers, if `traceparent` is valid (an invalid one is ignored, as W3C asks).
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceHeaders> {
        parse_traceparent(traceparent)?;
        Some(TraceHeaders {
            traceparent: traceparent.trim().to_owned(),
            tracestate: tracestate.map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned),
        })
    }
}

fn parse_traceparent(traceparent: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let trace = trace_id(traceparent)?;
    let mut parts = traceparent.trim().split('-').skip(2);
    let span = SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    Some((TraceId::from_hex(trace).ok()?, span, TraceFlags::new(flags)))
}

/// The trace id of a W3C `traceparent` (`00-<trace-id>-<parent-id>-<flags>`), if valid.
fn trace_id(traceparent: &str) -> Option<&str> {
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let [version, trace, parent, flags, ..] = parts[..] else {
        return None;
    };
    let valid = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.len() == 4)
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && hex(flags, 2);
    valid.then_some(trace)
}

/// A saga's place in its trace, as stored in its row.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaTrace {
    /// The trace.
    pub trace_id: TraceId,
    /// The saga's root span, the parent of every attempt span.
    pub span_id: SpanId,
    /// The trace flags (the caller's sampling decision, or sampled).
    pub flags: TraceFlags,
    /// The caller's span, the parent of the root span.
    pub parent_span_id: Option<SpanId>,
    /// The caller's `tracestate`.
    pub tracestate: Option<String>,
}

/// The stored form: the root span's `traceparent`, and what the caller sent.
#[derive(Serialize, Deserialize)]
struct Stored {
    traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tracestate: Option<String>,
}

impl SagaTrace {
    /// A new saga's trace: the caller's trace, or a new one; a new root span id.
    pub fn new(caller: Option<&TraceHeaders>) -> SagaTrace {
        let parsed = caller.and_then(|c| parse_traceparent(&c.traceparent));
        let span_id = loop {
            let id = rand::random::<u64>();
            if id != 0 {
                break SpanId::from(id);
            }
        };
        match parsed {
            Some((trace_id, parent, flags)) => SagaTrace {
                trace_id,
                span_id,
                flags,
                parent_span_id: Some(parent),
                tracestate: caller.and_then(|c| c.tracestate.clone()),
            },
            None => SagaTrace {
                trace_id: loop {
                    let id = rand::random::<u128>();
                    if id != 0 {
                        break TraceId::from(id);
                    }
                },
                span_id,
                flags: TraceFlags::SAMPLED,
                parent_span_id: None,
                tracestate: None,
            },
        }
    }

    /// The trace of a saga row. A row without a readable context (written before sagas
    /// stored theirs, or by hand) gets ids derived from the saga id, the same in every
    /// process; one that holds just the caller's `traceparent` (as rows did before) stays
    /// in the caller's trace.
    pub fn of(record: &SagaRecord) -> SagaTrace {
        let derived = SagaTrace::derived(record.id);
        match record.trace_context.as_deref() {
            None => derived,
            Some(text) => SagaTrace::decode(text)
                .or_else(|| {
                    let (trace_id, parent, flags) = parse_traceparent(text)?;
                    Some(SagaTrace {
                        trace_id,
                        flags,
                        parent_span_id: Some(parent),
                        ..derived.clone()
                    })
                })
                .unwrap_or(derived),
        }
    }

    fn derived(id: Uuid) -> SagaTrace {
        let bits = id.as_u128();
        SagaTrace {
            trace_id: TraceId::from(bits.max(1)),
            span_id: SpanId::from((bits as u64).max(1)),
            flags: TraceFlags::SAMPLED,
            parent_span_id: None,
            tracestate: None,
        }
    }

    fn decode(text: &str) -> Option<SagaTrace> {
        let stored: Stored = serde_json::from_str(text).ok()?;
        let (trace_id, span_id, flags) = parse_traceparent(&stored.traceparent)?;
        let parent_span_id = match stored.parent_span_id {
            Some(hex) => Some(SpanId::from_hex(&hex).ok()?),
            None => None,
        };
        Some(SagaTrace {
            trace_id,
            span_id,
            flags,
            parent_span_id,
            tracestate: stored.tracestate,
        })
    }

    /// The form stored in the saga row.
    pub fn encode(&self) -> String {
        let stored = Stored {
            traceparent: self.traceparent(),
            parent_span_id: self.parent_span_id.map(|id| id.to_string()),
            tracestate: self.tracestate.clone(),
        };
        serde_json::to_string(&stored).expect("a trace context is JSON")
    }

    /// The trace id in hex, as trace UIs show it.
    pub fn trace_id_hex(&self) -> String {
        self.trace_id.to_string()
    }

    /// The root span's `traceparent`.
    pub fn traceparent(&self) -> String {
        traceparent(self.trace_id, self.span_id, self.flags)
    }

    /// The root span, as the remote parent of attempt spans.
    fn root_context(&self) -> Context {
        Context::new().with_remote_span_context(self.span_context(self.span_id))
    }

    /// The caller's span, as the remote parent of the root span (none: a root of its own).
    fn caller_context(&self) -> Context {
        match self.parent_span_id {
            Some(parent) => Context::new().with_remote_span_context(self.span_context(parent)),
            None => Context::new(),
        }
    }

    fn span_context(&self, span_id: SpanId) -> SpanContext {
        let state = self
            .tracestate
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        SpanContext::new(self.trace_id, span_id, self.flags, true, state)
    }
}

fn traceparent(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> String {
    format!("00-{trace_id}-{span_id}-{:02x}", flags.to_u8())
}

fn at_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// What every span of one saga says about it.
pub(crate) struct SagaSpans {
    trace: SagaTrace,
    definition: String,
    attributes: Vec<KeyValue>,
}

/// One attempt's span, open while the attempt runs.
pub(crate) struct AttemptSpan {
    /// The context the attempt runs in (the span is its active span).
    pub(crate) context: Context,
}

impl SagaSpans {
    pub(crate) fn new(record: &SagaRecord, node: &str) -> SagaSpans {
        SagaSpans {
            trace: SagaTrace::of(record),
            definition: record.definition.clone(),
            attributes: vec![
                KeyValue::new(semconv::SAGA_ID, record.id.to_string()),
                KeyValue::new(semconv::SAGA_DEFINITION, record.definition.clone()),
                KeyValue::new(semconv::SAGA_VERSION, record.version),
                KeyValue::new(semconv::SAGA_NODE, node.to_owned()),
            ],
        }
    }

    pub(crate) fn trace(&self) -> &SagaTrace {
        &self.trace
    }

    /// Opens the span of one attempt, a child of the saga's root span.
    pub(crate) fn attempt(
        &self,
        step: &str,
        phase: Phase,
        attempt: u32,
        idempotency_key: &str,
        http: bool,
    ) -> AttemptSpan {
        let tracer = global::tracer(SCOPE);
        let mut attributes = self.attributes.clone();
        attributes.extend([
            KeyValue::new(semconv::STEP_NAME, step.to_owned()),
            KeyValue::new(semconv::STEP_KIND, phase.as_str()),
            KeyValue::new(semconv::STEP_ATTEMPT, i64::from(attempt)),
            KeyValue::new(semconv::IDEMPOTENCY_KEY, idempotency_key.to_owned()),
        ]);
        let parent = self.trace.root_context();
        let span = tracer
            .span_builder(format!("{} {step}", phase.as_str()))
            .with_kind(if http { SpanKind::Client } else { SpanKind::Internal })
            .with_start_time(SystemTime::now())
            .with_attributes(attributes)
            .start_with_context(&tracer, &parent);
        AttemptSpan {
            context: parent.with_span(span),
        }
    }

    /// Settles a saga's trace: emits its root span (from its creation until now), or, for
    /// a saga an operator retried, a span for the retry (the root span went out when the
    /// saga first settled).
    pub(crate) fn settled(
        &self,
        status: SagaStatus,
        created_at_ms: i64,
        unwind: Option<(i64, &UnwindCause)>,
        retried_at_ms: Option<i64>,
    ) {
        let tracer = global::tracer(SCOPE);
        let mut attributes = self.attributes.clone();
        attributes.push(KeyValue::new(semconv::SAGA_STATUS, status.as_str()));
        let mut span = match retried_at_ms {
            None => {
                let mut events = Vec::new();
                if let Some((at, cause)) = unwind {
                    let mut fields = vec![KeyValue::new(semconv::UNWIND_REASON, cause.to_string())];
                    if let UnwindCause::StepFailed { step, .. } = cause {
                        fields.push(KeyValue::new(semconv::UNWIND_STEP, step.clone()));
                    }
                    events.push(Event::new(semconv::EVENT_UNWIND, at_ms(at), fields, 0));
                }
                let builder = tracer
                    .span_builder(self.definition.clone())
                    .with_start_time(at_ms(created_at_ms))
                    .with_attributes(attributes)
                    .with_events(events);
                let parent = self.trace.caller_context();
                observability::ids::with_ids(self.trace.trace_id, self.trace.span_id, || {
                    builder.start_with_context(&tracer, &parent)
                })
            }
            Some(at) => tracer
                .span_builder(format!("{} retry", self.definition))
                .with_start_time(at_ms(at))
                .with_attributes(attributes)
                .with_events(vec![Event::new(semconv::EVENT_RETRY, at_ms(at), Vec::new(), 0)])
                .start_with_context(&tracer, &self.trace.root_context()),
        };
        match status {
            SagaStatus::Completed => {}
            SagaStatus::Compensated | SagaStatus::Stuck => {
                let cause = unwind.map(|(_, c)| c.to_string()).unwrap_or_default();
                span.set_status(Status::error(format!("{}: {cause}", status.as_str())));
            }
            SagaStatus::Running | SagaStatus::Compensating => {}
        }
        span.end_with_timestamp(SystemTime::now());
    }
}

impl AttemptSpan {
    /// The `traceparent` a participant gets: this attempt's span (the saga's root span
    /// when tracing is off and the span is a no-op).
    pub(crate) fn traceparent(&self, saga: &SagaTrace) -> String {
        let span = self.context.span();
        let sc = span.span_context();
        if sc.is_valid() {
            traceparent(sc.trace_id(), sc.span_id(), sc.trace_flags())
        } else {
            saga.traceparent()
        }
    }

    /// Ends the span with the attempt's outcome, as the planner recorded it.
    pub(crate) fn finish(self, event: &SagaEvent) {
        let span = self.context.span();
        let (outcome, error) = outcome_of(event);
        span.set_attribute(KeyValue::new(semconv::STEP_OUTCOME, outcome));
        if let Some(error) = error {
            let kind = error_kind(error);
            span.set_attribute(KeyValue::new(semconv::ERROR_TYPE, kind));
            span.add_event(
                semconv::EVENT_EXCEPTION,
                vec![
                    KeyValue::new(semconv::EXCEPTION_TYPE, kind),
                    KeyValue::new(semconv::EXCEPTION_MESSAGE, error.message.clone()),
                ],
            );
            span.set_status(Status::error(error.to_string()));
        }
        span.end_with_timestamp(SystemTime::now());
    }
}

/// How an attempt ended, as the outcome event says: `succeeded`, `retry`, `failed` (known
/// not applied) or `possibly_applied` (failed for good without a certain outcome), and the
/// error if it failed.
pub(crate) fn outcome_of(event: &SagaEvent) -> (&'static str, Option<&StepError>) {
    match event {
        SagaEvent::StepSucceeded { .. } | SagaEvent::CompensationSucceeded { .. } => ("succeeded", None),
        SagaEvent::StepAttemptFailed { error, .. } | SagaEvent::CompensationAttemptFailed { error, .. } => {
            ("retry", Some(error))
        }
        SagaEvent::StepFailed { error, .. } | SagaEvent::CompensationFailed { error, .. } => ("failed", Some(error)),
        SagaEvent::StepOutcomeUnknown { error, .. } => ("possibly_applied", Some(error)),
        SagaEvent::StepStarted { .. }
        | SagaEvent::CompensationStarted { .. }
        | SagaEvent::CancelRequested { .. }
        | SagaEvent::RetryRequested {} => ("unknown", None),
    }
}

fn error_kind(error: &StepError) -> &'static str {
    error.kind.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_saga_joins_its_callers_trace_under_a_root_span_of_its_own() {
        let caller = TraceHeaders::parse(CALLER, Some("vendor=abc")).unwrap();
        let trace = SagaTrace::new(Some(&caller));
        assert_eq!(trace.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            trace.parent_span_id,
            Some(SpanId::from_hex("00f067aa0ba902b7").unwrap())
        );
        assert_ne!(trace.span_id, SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert_eq!(SagaTrace::decode(&trace.encode()), Some(trace.clone()));
        assert!(trace.traceparent().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_eq!(trace.tracestate.as_deref(), Some("vendor=abc"));
    }

    #[test]
    fn without_a_caller_a_saga_starts_a_sampled_trace() {
        let (a, b) = (SagaTrace::new(None), SagaTrace::new(None));
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!((a.parent_span_id, a.flags), (None, TraceFlags::SAMPLED));
        assert_eq!(SagaTrace::decode(&a.encode()), Some(a));
        assert!(TraceHeaders::parse("00-zz-00f067aa0ba902b7-01", None).is_none());
    }

    #[test]
    fn unreadable_contexts_get_ids_derived_from_the_saga() {
        let id = Uuid::now_v7();
        assert!(SagaTrace::decode(CALLER).is_none());
        let derived = SagaTrace::derived(id);
        assert_eq!(derived, SagaTrace::derived(id));
        assert_eq!(derived.trace_id_hex(), id.simple().to_string());
        let mut record = SagaRecord {
            id,
            definition: "d".into(),
            version: 1,
            input: serde_json::Value::Null,
            status: SagaStatus::Running,
            error: None,
            owner: None,
            lease_until_ms: 0,
            generation: 0,
            idempotency_key: None,
            trace_context: Some("not a context".into()),
            cancel_requested: false,
            created_at_ms: 0,
            updated_at_ms: 0,
            event_count: 0,
        };
        assert_eq!(SagaTrace::of(&record), derived);
        record.trace_context = Some(CALLER.into());
        let legacy = SagaTrace::of(&record);
        assert_eq!(legacy.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            (legacy.span_id, legacy.parent_span_id),
            (derived.span_id, Some(SpanId::from_hex("00f067aa0ba902b7").unwrap()))
        );
    }

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(
            trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(
            trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id("garbage"), None);
    }
}
