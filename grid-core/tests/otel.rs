//! W3C trace context through call metadata (feature `otel`), over real sockets: a call made in
//! a traced span reaches its handler with a `traceparent`, and the handler's span belongs to the
//! caller's trace.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use bytes::Bytes;
use common::{bound, builder, test_config, WAIT};
use grid_core::{CallOptions, Config, HandlerSpec};
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

const TRACE: HandlerSpec = HandlerSpec::named("Otel.trace");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_carries_its_trace_to_the_handler_span() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("grid-test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let (la, an) = bound();
    let (lb, bn) = bound();
    let (lc, cn) = bound();
    let names = [an.clone(), bn.clone(), cn.clone()];
    let start = |l, me: &str, config| builder(l, me, &names, config).start();
    let a = start(la, &an, test_config()).await.unwrap();
    let b = start(lb, &bn, test_config()).await.unwrap();
    // c takes no metadata at all: calls to it go without the trace context, not refused.
    let no_metadata = Config {
        max_metadata_entries: 0,
        ..test_config()
    };
    let c = start(lc, &cn, no_metadata).await.unwrap();
    // The handler answers with the trace id of the span it runs in, and whether a traceparent
    // came with the call.
    for m in [&b, &c] {
        m.register_unary(TRACE, |ctx, _| async move {
            let span = tracing::Span::current();
            let trace = span.context().span().span_context().trace_id();
            let carried = ctx.metadata().get("traceparent").is_some();
            Ok(Bytes::from(format!("{trace} {carried}")))
        })
        .unwrap();
    }
    let conn = a.connection(&bn).unwrap();
    conn.wait_for_connect(WAIT).await.unwrap();

    let root = tracing::info_span!("root");
    let want = root.context().span().span_context().trace_id();
    assert_ne!(want, opentelemetry::trace::TraceId::INVALID);
    let got = conn
        .call(TRACE.id, Bytes::new(), CallOptions::default())
        .instrument(root)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&got), format!("{want} true"));

    // Another trace, another id: the handler's span is not stuck on the first one.
    let other = tracing::info_span!("other");
    let want2 = other.context().span().span_context().trace_id();
    assert_ne!(want2, want);
    let got = conn
        .call(TRACE.id, Bytes::new(), CallOptions::default())
        .instrument(other)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&got), format!("{want2} true"));

    let to_c = a.connection(&cn).unwrap();
    to_c.wait_for_connect(WAIT).await.unwrap();
    let third = tracing::info_span!("third");
    let want3 = third.context().span().span_context().trace_id();
    let got = to_c
        .call(TRACE.id, Bytes::new(), CallOptions::default())
        .instrument(third)
        .await
        .unwrap();
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(got.ends_with(" false"), "{got}");
    assert!(!got.starts_with(&want3.to_string()), "{got}");
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}
