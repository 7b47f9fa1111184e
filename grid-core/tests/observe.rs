//! Observability over real sockets: the spans of calls and connections, captured by a test
//! subscriber, and the metrics, captured by a test recorder; handler names in messages.
//!
//! One subscriber and one recorder serve the whole binary (both are process-wide), so every
//! test runs its own pair of nodes on fresh ports and reads only what names its nodes.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use common::{bound, builder, eventually, next_event, test_config, WAIT};
use grid_core::{
    CallOptions, Error, ErrorCode, HandlerSpec, LinkEvent, Manager, RemoteError, StreamOptions,
};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use tracing::span::{Attributes, Id, Record};
use tracing::{field, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

const ECHO: HandlerSpec = HandlerSpec::named("Obs.echo");
const FAIL: HandlerSpec = HandlerSpec::named("Obs.fail");
const PANIC: HandlerSpec = HandlerSpec::named("Obs.panic");
const HANG: HandlerSpec = HandlerSpec::named("Obs.hang");
const FEED: HandlerSpec = HandlerSpec::named("Obs.feed");
const MISSING: HandlerSpec = HandlerSpec::named("Obs.missing");

// ---- a subscriber that keeps every closed span with its fields -------------------------------

/// A closed span: its name, target, fields, and its parent's name and fields.
#[derive(Debug, Clone, Default)]
struct Closed {
    name: &'static str,
    target: String,
    fields: HashMap<String, String>,
    parent: Option<(&'static str, HashMap<String, String>)>,
}

impl Closed {
    fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }
}

#[derive(Default)]
struct Fields(HashMap<String, String>);

impl field::Visit for Fields {
    fn record_debug(&mut self, f: &field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(f.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, f: &field::Field, value: &str) {
        self.0.insert(f.name().to_owned(), value.to_owned());
    }
}

struct Capture(Arc<Mutex<Vec<Closed>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        ctx.span(id).unwrap().extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let span = ctx.span(id).unwrap();
        let mut ext = span.extensions_mut();
        values.record(ext.get_mut::<Fields>().unwrap());
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        let span = ctx.span(&id).unwrap();
        let fields = |s: &tracing_subscriber::registry::SpanRef<'_, S>| {
            s.extensions()
                .get::<Fields>()
                .map(|f| f.0.clone())
                .unwrap_or_default()
        };
        let closed = Closed {
            name: span.name(),
            target: span.metadata().target().to_owned(),
            fields: fields(&span),
            parent: span.parent().map(|p| (p.name(), fields(&p))),
        };
        self.0.lock().unwrap().push(closed);
    }
}

// ---- a recorder whose values can be read without resetting them -----------------------------

struct TestRecorder(Arc<Registry<Key, AtomicStorage>>);

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

struct Observed {
    spans: Arc<Mutex<Vec<Closed>>>,
    metrics: Arc<Registry<Key, AtomicStorage>>,
}

/// Installs the subscriber and the recorder, once; before any manager is built, since a
/// connection takes its metric handles when it is created.
fn observed() -> &'static Observed {
    static OBSERVED: OnceLock<Observed> = OnceLock::new();
    OBSERVED.get_or_init(|| {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(spans.clone()));
        tracing::subscriber::set_global_default(subscriber).unwrap();
        let metrics = Arc::new(Registry::atomic());
        metrics::set_global_recorder(TestRecorder(metrics.clone())).unwrap();
        Observed { spans, metrics }
    })
}

fn labels_match(key: &Key, want: &[(&str, &str)]) -> bool {
    want.iter()
        .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

impl Observed {
    /// Closed spans named `name` whose fields include every one of `want`.
    fn closed(&self, name: &str, want: &[(&str, &str)]) -> Vec<Closed> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == name && want.iter().all(|(k, v)| s.get(k) == Some(*v)))
            .cloned()
            .collect()
    }

    /// Waits (bounded) until `n` such spans closed, and returns them.
    async fn wait_closed(&self, name: &str, want: &[(&str, &str)], n: usize) -> Vec<Closed> {
        let what = format!("{n} closed {name} spans with {want:?}");
        eventually(&what, WAIT, || {
            let found = self.closed(name, want);
            if found.len() >= n {
                Ok(found)
            } else {
                Err(found)
            }
        })
        .await
    }

    fn counter(&self, name: &str, want: &[(&str, &str)]) -> u64 {
        self.metrics
            .get_counter_handles()
            .into_iter()
            .filter(|(k, _)| k.name() == name && labels_match(k, want))
            .map(|(_, c)| c.load(Ordering::SeqCst))
            .sum()
    }

    fn gauge(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.metrics
            .get_gauge_handles()
            .into_iter()
            .find(|(k, _)| k.name() == name && labels_match(k, want))
            .map(|(_, g)| f64::from_bits(g.load(Ordering::SeqCst)))
    }

    /// The in-flight gauge of `node`'s link to `peer` on `side` (`client` or `server`).
    fn in_flight(&self, node: &str, peer: &str, side: &str) -> Option<f64> {
        self.gauge(
            "grid_connection_in_flight",
            &[("node", node), ("peer", peer), ("side", side)],
        )
    }

    /// Waits (bounded) until [`in_flight`](Self::in_flight) is `n`.
    async fn wait_in_flight(&self, node: &str, peer: &str, side: &str, n: f64) {
        let what = format!("{node} -> {peer}: {side} in-flight gauge at {n}");
        eventually(&what, WAIT, || {
            let now = self.in_flight(node, peer, side);
            if now == Some(n) {
                Ok(())
            } else {
                Err(now)
            }
        })
        .await;
    }

    fn histogram(&self, name: &str, want: &[(&str, &str)]) -> Vec<f64> {
        self.metrics
            .get_histogram_handles()
            .into_iter()
            .filter(|(k, _)| k.name() == name && labels_match(k, want))
            .flat_map(|(_, h)| h.data())
            .collect()
    }

    /// Waits (bounded) until a counter reaches `n`.
    async fn wait_counter(&self, name: &str, want: &[(&str, &str)], n: u64) {
        eventually(
            &format!("{name} {want:?} reaches {n}"),
            WAIT,
            || match self.counter(name, want) {
                at if at >= n => Ok(()),
                at => Err(at),
            },
        )
        .await;
    }
}

// ---- two nodes with the test handlers --------------------------------------------------------

struct Pair {
    a: Manager,
    b: Manager,
    an: String,
    bn: String,
}

/// Node `a` calls node `b`, which serves the test handlers (`Obs.echo` also under `d1`).
async fn pair() -> Pair {
    observed();
    // A raw caller names the ids it calls that this process does not serve.
    HandlerSpec::remember(&[MISSING]);
    let (la, an) = bound();
    let (lb, bn) = bound();
    let names = [an.clone(), bn.clone()];
    let a = builder(la, &an, &names, test_config())
        .start()
        .await
        .unwrap();
    let b = builder(lb, &bn, &names, test_config())
        .start()
        .await
        .unwrap();
    b.register_unary(ECHO, |_, p| async move { Ok(p) }).unwrap();
    b.register_unary_at(ECHO, Some("d1"), |_, p| async move { Ok(p) })
        .unwrap();
    b.register_unary(FAIL, |_, _| async {
        Err(RemoteError::application(Bytes::from_static(b"no")))
    })
    .unwrap();
    b.register_unary(PANIC, |_, _| async { panic!("on purpose") })
        .unwrap();
    b.register_unary(HANG, |ctx, _| async move {
        ctx.cancelled().await;
        Ok(Bytes::new())
    })
    .unwrap();
    b.register_stream(FEED, |_, _, _, mut out| async move {
        for i in 0..3u8 {
            out.send(Bytes::from(vec![i]))
                .await
                .map_err(|e| RemoteError::text(ErrorCode::Internal, e.to_string()))?;
        }
        Ok(())
    })
    .unwrap();
    a.connection(&bn)
        .unwrap()
        .wait_for_connect(WAIT)
        .await
        .unwrap();
    Pair { a, b, an, bn }
}

impl Pair {
    async fn shutdown(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
    }
}

fn opts() -> CallOptions {
    CallOptions::default()
}

// ---- spans -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_has_a_span_on_each_side_with_the_handler_name_peer_mux_outcome_and_duration() {
    let p = pair().await;
    let obs = observed();
    let conn = p.a.connection(&p.bn).unwrap();
    let got = conn.call(ECHO.id, Bytes::from_static(b"hi"), opts()).await;
    assert_eq!(got.unwrap(), Bytes::from_static(b"hi"));

    let client = obs
        .wait_closed("call", &[("node", &p.an), ("peer", &p.bn)], 1)
        .await;
    let c = &client[0];
    assert_eq!(c.target, "grid::call");
    assert_eq!(c.get("handler"), Some("Obs.echo"));
    assert_eq!(c.get("outcome"), Some("ok"));
    assert_eq!(c.get("subroute"), None);
    let mux = c.get("mux").expect("the mux id is recorded");
    assert!(mux.parse::<u32>().unwrap() > 0, "{c:?}");
    let took: u64 = c.get("duration_us").unwrap().parse().unwrap();
    assert!(took < WAIT.as_micros() as u64, "{c:?}");

    // The callee's span names the same handler and mux, and sits in its connection's span.
    let server = obs
        .wait_closed("serve", &[("peer", &p.an), ("mux", mux)], 1)
        .await;
    let s = &server[0];
    assert_eq!(s.target, "grid::serve");
    assert_eq!(s.get("handler"), Some("Obs.echo"));
    assert_eq!(s.get("outcome"), Some("ok"));
    assert_eq!(s.get("stream"), Some("false"));
    assert!(
        s.get("duration_us").unwrap().parse::<u64>().is_ok(),
        "{s:?}"
    );
    let (parent, conn_fields) = s
        .parent
        .as_ref()
        .expect("served inside the connection span");
    assert_eq!(*parent, "conn");
    assert_eq!(conn_fields.get("node"), Some(&p.bn));
    assert_eq!(conn_fields.get("peer"), Some(&p.an));
    let id = conn_fields.get("conn").expect("the connection id");
    assert_eq!(id.len(), 8, "{id}");
    assert!(id.chars().all(|ch| ch.is_ascii_hexdigit()), "{id}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn span_outcomes_tell_errors_apart_on_both_sides() {
    let p = pair().await;
    let obs = observed();
    let conn = p.a.connection(&p.bn).unwrap();
    let client = |h: &'static str| [("node", p.an.as_str()), ("handler", h)];
    let server = |h: &'static str| [("peer", p.an.as_str()), ("handler", h)];

    let r = conn.call(FAIL.id, Bytes::new(), opts()).await;
    assert!(matches!(r, Err(Error::Remote(_))), "{r:?}");
    let c = obs.wait_closed("call", &client("Obs.fail"), 1).await;
    assert_eq!(c[0].get("outcome"), Some("application"));
    let s = obs.wait_closed("serve", &server("Obs.fail"), 1).await;
    assert_eq!(s[0].get("outcome"), Some("application"));

    let r = conn.call(PANIC.id, Bytes::new(), opts()).await;
    assert!(matches!(r, Err(Error::Remote(_))), "{r:?}");
    let c = obs.wait_closed("call", &client("Obs.panic"), 1).await;
    assert_eq!(c[0].get("outcome"), Some("panic"));
    let s = obs.wait_closed("serve", &server("Obs.panic"), 1).await;
    assert_eq!(s[0].get("outcome"), Some("panic"));

    // The deadline passes on both sides.
    let short = CallOptions {
        timeout: Some(Duration::from_millis(50)),
        ..opts()
    };
    let r = conn.call(HANG.id, Bytes::new(), short).await;
    assert!(matches!(r, Err(Error::Deadline)), "{r:?}");
    let c = obs.wait_closed("call", &client("Obs.hang"), 1).await;
    assert_eq!(c[0].get("outcome"), Some("deadline"));
    let s = obs.wait_closed("serve", &server("Obs.hang"), 1).await;
    assert_eq!(s[0].get("outcome"), Some("deadline"));

    // A caller that drops its call: `dropped` here, `cancelled` (the caller gave up) there.
    let hung = conn.call(HANG.id, Bytes::new(), opts());
    let mut hung = Box::pin(hung);
    tokio::select! {
        _ = &mut hung => panic!("the hanging call returned"),
        // Once the callee runs its handler, the call is dropped.
        () = async {
            let served = p.b.connection(&p.an).unwrap();
            eventually("the callee runs the handler", WAIT, || {
                let f = served.stats().in_flight;
                if f.handlers == 0 {
                    Err(f)
                } else {
                    Ok(())
                }
            })
            .await;
        } => {}
    }
    drop(hung);
    let c = obs.wait_closed("call", &client("Obs.hang"), 2).await;
    assert!(
        c.iter().any(|s| s.get("outcome") == Some("dropped")),
        "{c:#?}"
    );
    let s = obs.wait_closed("serve", &server("Obs.hang"), 2).await;
    assert!(
        s.iter().any(|s| s.get("outcome") == Some("cancelled")),
        "{s:#?}"
    );

    // An unknown handler: the caller's span says so, and no handler span exists.
    let r = conn.call(MISSING.id, Bytes::new(), opts()).await;
    assert!(matches!(r, Err(Error::UnknownHandler { .. })), "{r:?}");
    let c = obs
        .wait_closed(
            "call",
            &[("node", &p.an), ("outcome", "unknown_handler")],
            1,
        )
        .await;
    assert_eq!(c.len(), 1, "{c:#?}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_subroutes_have_their_spans() {
    let p = pair().await;
    let obs = observed();
    let conn = p.a.connection(&p.bn).unwrap();
    let r = conn
        .subroute("d1")
        .call(ECHO.id, Bytes::from_static(b"x"), opts())
        .await;
    assert_eq!(r.unwrap(), Bytes::from_static(b"x"));
    let c = obs
        .wait_closed("call", &[("node", &p.an), ("subroute", "d1")], 1)
        .await;
    assert_eq!(c[0].get("handler"), Some("Obs.echo"));
    let s = obs
        .wait_closed("serve", &[("peer", &p.an), ("subroute", "d1")], 1)
        .await;
    assert_eq!(s[0].get("outcome"), Some("ok"));

    let mut stream = conn
        .open_stream(FEED.id, Bytes::new(), StreamOptions::default())
        .await
        .unwrap();
    let mut items = 0;
    while let Some(item) = tokio::time::timeout(WAIT, stream.receiver.recv())
        .await
        .unwrap()
    {
        item.unwrap();
        items += 1;
    }
    assert_eq!(items, 3);
    let open = obs
        .wait_closed("open", &[("node", &p.an), ("handler", "Obs.feed")], 1)
        .await;
    assert_eq!(open[0].get("outcome"), Some("ok"));
    let mux = open[0].get("mux").unwrap();
    let s = obs
        .wait_closed("serve", &[("peer", &p.an), ("mux", mux)], 1)
        .await;
    assert_eq!(s[0].get("handler"), Some("Obs.feed"));
    assert_eq!(s[0].get("stream"), Some("true"));
    assert_eq!(s[0].get("outcome"), Some("ok"));
    p.shutdown().await;
}

// ---- names -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_handlers_not_hex_ids() {
    let p = pair().await;
    let conn = p.a.connection(&p.bn).unwrap();
    // Nobody registered it, so its name is known only once remembered.
    const ODD: HandlerSpec = HandlerSpec::named("Obs.nowhere");
    let e = conn.call(ODD.id, Bytes::new(), opts()).await.unwrap_err();
    assert!(
        e.to_string().contains(&format!("{:#010x}", ODD.id.0)),
        "{e}"
    );
    HandlerSpec::remember(&[ODD]);
    let e = conn.call(ODD.id, Bytes::new(), opts()).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("Obs.nowhere") && !msg.contains("0x"), "{msg}");
    // A registered handler is named everywhere in the process, however its id was made.
    assert_eq!(grid_core::HandlerId(ECHO.id.0).to_string(), "Obs.echo");
    p.shutdown().await;
}

// ---- metrics ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_metrics_count_calls_errors_by_kind_and_latency() {
    let p = pair().await;
    let obs = observed();
    let conn = p.a.connection(&p.bn).unwrap();
    for _ in 0..5 {
        conn.call(ECHO.id, Bytes::from_static(b"m"), opts())
            .await
            .unwrap();
    }
    for _ in 0..2 {
        conn.call(FAIL.id, Bytes::new(), opts()).await.unwrap_err();
    }
    conn.call(MISSING.id, Bytes::new(), opts())
        .await
        .unwrap_err();

    let an = p.an.as_str();
    let bn = p.bn.as_str();
    let calls = "grid_calls_total";
    let errors = "grid_call_errors_total";
    let client = |h| [("node", an), ("handler", h), ("side", "client")];
    let server = |h| [("node", bn), ("handler", h), ("side", "server")];
    assert_eq!(obs.counter(calls, &client("Obs.echo")), 5);
    assert_eq!(obs.counter(calls, &client("Obs.fail")), 2);
    assert_eq!(obs.counter(calls, &client("Obs.missing")), 1);
    // The server's counts land as its tasks end.
    obs.wait_counter(calls, &server("Obs.echo"), 5).await;
    obs.wait_counter(errors, &server("Obs.fail"), 2).await;
    assert_eq!(obs.counter(calls, &server("Obs.echo")), 5);
    assert_eq!(obs.counter(calls, &server("Obs.fail")), 2);
    // The unknown handler never reached a handler: nothing counted on the server.
    assert_eq!(obs.counter(calls, &server("Obs.missing")), 0);

    let kind = |h, side, node, k| [("node", node), ("handler", h), ("side", side), ("kind", k)];
    assert_eq!(
        obs.counter(errors, &kind("Obs.fail", "client", an, "application")),
        2
    );
    assert_eq!(
        obs.counter(errors, &kind("Obs.fail", "server", bn, "application")),
        2
    );
    assert_eq!(
        obs.counter(
            errors,
            &kind("Obs.missing", "client", an, "unknown_handler")
        ),
        1
    );
    assert_eq!(obs.counter(errors, &client("Obs.echo")), 0);

    let latency = obs.histogram("grid_call_duration_seconds", &client("Obs.echo"));
    assert_eq!(latency.len(), 5, "{latency:?}");
    assert!(
        latency.iter().all(|s| *s > 0.0 && *s < WAIT.as_secs_f64()),
        "{latency:?}"
    );
    let served = obs.histogram("grid_call_duration_seconds", &server("Obs.echo"));
    assert_eq!(served.len(), 5, "{served:?}");

    // Nothing is left in flight on either side once the calls are over.
    assert_eq!(obs.in_flight(an, bn, "client"), Some(0.0));
    obs.wait_in_flight(bn, an, "server", 0.0).await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_gauges_count_running_calls() {
    let p = pair().await;
    let obs = observed();
    let conn = p.a.connection(&p.bn).unwrap();
    let (an, bn) = (p.an.as_str(), p.bn.as_str());
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let c = conn.clone();
            tokio::spawn(async move { c.call(HANG.id, Bytes::new(), opts()).await })
        })
        .collect();
    obs.wait_in_flight(bn, an, "server", 3.0).await;
    assert_eq!(obs.in_flight(an, bn, "client"), Some(3.0));
    // The callers give up: both sides count down to zero.
    for c in &calls {
        c.abort();
    }
    obs.wait_in_flight(bn, an, "server", 0.0).await;
    obs.wait_in_flight(an, bn, "client", 0.0).await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_metrics_follow_the_stats_and_count_reconnects() {
    let p = pair().await;
    let obs = observed();
    let conn = p.a.connection(&p.bn).unwrap();
    for _ in 0..10 {
        conn.call(ECHO.id, Bytes::from(vec![7u8; 1000]), opts())
            .await
            .unwrap();
    }
    let (an, bn) = (p.an.as_str(), p.bn.as_str());
    let of = |name, dir| obs.counter(name, &[("node", an), ("peer", bn), ("direction", dir)]);
    // Pings may add to the counters between two reads: the metric lies between the snapshots.
    type Stat = fn(&grid_core::ConnectionStats) -> u64;
    let rows: [(&str, &str, Stat); 5] = [
        ("grid_connection_bytes_total", "out", |s| s.bytes_out),
        ("grid_connection_bytes_total", "in", |s| s.bytes_in),
        ("grid_connection_frames_total", "out", |s| s.frames_out),
        ("grid_connection_frames_total", "in", |s| s.frames_in),
        ("grid_connection_messages_total", "out", |s| s.messages_out),
    ];
    for (name, dir, stat) in rows {
        let before = stat(&conn.stats());
        let metric = of(name, dir);
        let after = stat(&conn.stats());
        assert!(
            before <= metric && metric <= after,
            "{name} {dir}: {before} <= {metric} <= {after}"
        );
    }
    assert!(of("grid_connection_bytes_total", "out") > 10_000);
    assert!(of("grid_connection_frames_total", "in") >= 10);
    assert!(
        obs.gauge(
            "grid_connection_queued_bytes",
            &[("node", an), ("peer", bn)]
        )
        .is_some(),
        "the queue depth is sampled"
    );

    let reconnects = |node, peer| {
        obs.counter(
            "grid_connection_reconnects_total",
            &[("node", node), ("peer", peer)],
        )
    };
    assert_eq!(
        reconnects(an, bn),
        0,
        "the first connect is not a reconnect"
    );
    let mut events = conn.events();
    conn.kill_socket();
    next_event("a reconnect", WAIT, &mut events, |e| {
        matches!(e, LinkEvent::Connected { .. }).then_some(())
    })
    .await;
    assert_eq!(reconnects(an, bn), 1);
    // The other side installs a new session too.
    obs.wait_counter(
        "grid_connection_reconnects_total",
        &[("node", bn), ("peer", an)],
        1,
    )
    .await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_client_layers_is_observed_once() {
    let p = pair().await;
    let obs = observed();
    let layered =
        p.a.connection(&p.bn)
            .unwrap()
            .with_layer(tower::layer::util::Identity::new())
            .with_layer(tower::layer::util::Identity::new());
    for _ in 0..3 {
        layered
            .call(ECHO.id, Bytes::from_static(b"l"), opts())
            .await
            .unwrap();
    }
    let an = p.an.as_str();
    let client = [("node", an), ("handler", "Obs.echo"), ("side", "client")];
    assert_eq!(obs.counter("grid_calls_total", &client), 3);
    let spans = obs
        .wait_closed("call", &[("node", an), ("handler", "Obs.echo")], 3)
        .await;
    assert_eq!(spans.len(), 3, "one span per call: {spans:#?}");
    p.shutdown().await;
}
