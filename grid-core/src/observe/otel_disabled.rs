//! Without the `otel` feature: no trace context travels.

use tracing::Span;

use crate::frame::Metadata;

pub(crate) fn inject(_: &Span, _: &mut Metadata, _: impl FnOnce(&Metadata) -> bool) {}

pub(crate) fn adopt(_: &Span, _: &Metadata) {}
