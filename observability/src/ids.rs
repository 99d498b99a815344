//! Pinning the ids of the next span built on this thread.
//!
//! OpenTelemetry's `SpanBuilder` takes no ids: the SDK draws every span's id (and a root
//! span's trace id) from its `IdGenerator`. A saga's root span, though, must carry the ids
//! its children already point at: they were drawn when the saga was created and stored
//! with it, maybe by another process. [`with_ids`] pins the ids that the span built inside
//! it gets; `PinnedIdGenerator` (feature `setup`), the generator `otlp::install` installs,
//! hands them out. Under any other generator the pin is ignored and the span gets random
//! ids (an embedder's own generator can honour it with [`take_trace_id`] and
//! [`take_span_id`]).

use std::cell::Cell;

use opentelemetry::trace::{SpanId, TraceId};

thread_local! {
    static PINNED: Cell<(Option<TraceId>, Option<SpanId>)> = const { Cell::new((None, None)) };
}

/// Runs `build` (which builds one span) with `trace_id` and `span_id` pinned: the first
/// span id drawn on this thread meanwhile is `span_id`, the first trace id `trace_id` (a
/// span with a parent takes its parent's trace id and draws none).
pub fn with_ids<R>(trace_id: TraceId, span_id: SpanId, build: impl FnOnce() -> R) -> R {
    struct Unpin;
    impl Drop for Unpin {
        fn drop(&mut self) {
            PINNED.with(|p| p.set((None, None)));
        }
    }
    PINNED.with(|p| p.set((Some(trace_id), Some(span_id))));
    let _unpin = Unpin;
    build()
}

/// Takes the pinned trace id, if any: for an `IdGenerator` of one's own (the SDK's
/// generator interface is not available to this crate without `setup`).
pub fn take_trace_id() -> Option<TraceId> {
    PINNED.with(|p| {
        let (trace, span) = p.get();
        p.set((None, span));
        trace
    })
}

/// Takes the pinned span id, if any.
pub fn take_span_id() -> Option<SpanId> {
    PINNED.with(|p| {
        let (trace, span) = p.get();
        p.set((trace, None));
        span
    })
}

/// An id generator that hands out the ids pinned by [`with_ids`], and random ones
/// otherwise.
#[cfg(feature = "setup")]
#[derive(Debug, Default)]
pub struct PinnedIdGenerator {
    random: opentelemetry_sdk::trace::RandomIdGenerator,
}

#[cfg(feature = "setup")]
impl opentelemetry_sdk::trace::IdGenerator for PinnedIdGenerator {
    fn new_trace_id(&self) -> TraceId {
        take_trace_id().unwrap_or_else(|| self.random.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        take_span_id().unwrap_or_else(|| self.random.new_span_id())
    }
}

#[cfg(all(test, feature = "setup"))]
mod tests {
    use opentelemetry::Context;
    use opentelemetry::trace::{Span, SpanContext, TraceContextExt, TraceFlags, TraceState, Tracer, TracerProvider};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    use super::*;

    #[test]
    fn pinned_ids_go_to_the_span_built_inside_and_to_no_other() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .with_id_generator(PinnedIdGenerator::default())
            .build();
        let tracer = provider.tracer("test");
        let trace_id = TraceId::from(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef_u128);
        let (root_id, child_id) = (SpanId::from(0x11_u64), SpanId::from(0x22_u64));

        // A root span: both ids pinned.
        with_ids(trace_id, root_id, || tracer.start("root")).end();
        // A span with a remote parent takes the parent's trace id and the pinned span id;
        // the unused pinned trace id must not leak to the next root.
        let parent = SpanContext::new(trace_id, root_id, TraceFlags::SAMPLED, true, TraceState::default());
        let cx = Context::new().with_remote_span_context(parent);
        let other_trace = TraceId::from(0xfeed_u128);
        with_ids(other_trace, child_id, || tracer.start_with_context("child", &cx)).end();
        tracer.start("unpinned").end();

        let spans = exporter.get_finished_spans().unwrap();
        let by_name = |name: &str| spans.iter().find(|s| s.name == name).unwrap();
        let root = by_name("root");
        assert_eq!(
            (root.span_context.trace_id(), root.span_context.span_id()),
            (trace_id, root_id)
        );
        assert_eq!(root.parent_span_id, SpanId::INVALID);
        let child = by_name("child");
        assert_eq!(
            (child.span_context.trace_id(), child.span_context.span_id()),
            (trace_id, child_id)
        );
        assert_eq!(child.parent_span_id, root_id);
        let unpinned = by_name("unpinned");
        assert_ne!(unpinned.span_context.trace_id(), other_trace);
        assert_ne!(unpinned.span_context.span_id(), child_id);
    }
}
