//! W3C trace context through call metadata (feature `otel`): the caller's span context is
//! injected into the call's metadata (`traceparent`, `tracestate`) by the propagator the
//! application set (`opentelemetry::global::set_text_map_propagator`), and the serving span takes
//! the context it extracts as its parent, so one trace spans both nodes.
//!
//! Only enabled spans take part: with no subscriber interested in the call spans nothing is
//! injected. A context that does not fit the metadata bounds (or a peer of the version before
//! metadata) is left out: the call goes on without it.

use opentelemetry::propagation::{Extractor, Injector};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::frame::Metadata;

struct Inject<'a>(&'a mut Metadata);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        let _ = self.0.insert(key, value);
    }
}

struct Extract<'a>(&'a Metadata);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k).collect()
    }
}

/// Writes `span`'s trace context into `metadata`, if the result `fits`.
pub(crate) fn inject(span: &Span, metadata: &mut Metadata, fits: impl FnOnce(&Metadata) -> bool) {
    let cx = span.context();
    let mut with = metadata.clone();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut Inject(&mut with));
    });
    if fits(&with) {
        *metadata = with;
    }
}

/// Makes the context in `metadata`, if any, `span`'s parent.
pub(crate) fn adopt(span: &Span, metadata: &Metadata) {
    if metadata.is_empty() {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Extract(metadata)));
    let _ = span.set_parent(cx);
}
