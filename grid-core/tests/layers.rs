//! Tower middleware on both sides, over real sockets, with real layers: an auth layer that
//! refuses a call without a token in its metadata, tower's `ConcurrencyLimitLayer`, and a
//! logging layer; node-wide, per registration and per connection handle.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use common::{bound, eventually, WAIT};
use futures::future::BoxFuture;
use futures::StreamExt;
use grid_core::layer::{
    ClientCall, ClientReply, HandlerService, Layer, ServerCall, ServerLayer, ServerReply, Service,
};
use grid_core::{
    CallOptions, Config, Error, ErrorCode, HandlerSpec, Manager, ManagerBuilder, Metadata,
    RemoteError, StreamOptions,
};
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tower::layer::layer_fn;
use tower::limit::ConcurrencyLimitLayer;

const ECHO: HandlerSpec = HandlerSpec::named("Layers.echo");
const OPEN: HandlerSpec = HandlerSpec::named("Layers.open");
const SLOW: HandlerSpec = HandlerSpec::named("Layers.slow");

/// Refuses a call whose metadata lacks `token = "let-me-in"`.
#[derive(Clone)]
struct RequireToken<S>(S);

impl<S> Service<ServerCall> for RequireToken<S>
where
    S: Service<ServerCall, Response = ServerReply, Error = RemoteError>,
    S::Future: Send + 'static,
{
    type Response = ServerReply;
    type Error = RemoteError;
    type Future = BoxFuture<'static, Result<ServerReply, RemoteError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), RemoteError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        if call.metadata().get("token") != Some(&b"let-me-in"[..]) {
            let who = call.context().caller().to_owned();
            return Box::pin(async move {
                Err(RemoteError::text(
                    ErrorCode::Application,
                    format!("unauthenticated call from {who}"),
                ))
            });
        }
        Box::pin(self.0.call(call))
    }
}

/// Records one line per call: the handler, whether it was a stream, and its outcome.
#[derive(Clone)]
struct Log<S> {
    inner: S,
    side: &'static str,
    lines: Arc<Mutex<Vec<String>>>,
}

impl<S> Service<ServerCall> for Log<S>
where
    S: Service<ServerCall, Response = ServerReply, Error = RemoteError>,
    S::Future: Send + 'static,
{
    type Response = ServerReply;
    type Error = RemoteError;
    type Future = BoxFuture<'static, Result<ServerReply, RemoteError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), RemoteError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        let head = format!(
            "{} {} stream={}",
            self.side,
            call.context().handler(),
            call.is_stream()
        );
        let lines = self.lines.clone();
        let run = self.inner.call(call);
        Box::pin(async move {
            let r = run.await;
            let outcome = match &r {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("err {:?}", e.code),
            };
            lines.lock().push(format!("{head} {outcome}"));
            r
        })
    }
}

fn log_layer(
    side: &'static str,
    lines: &Arc<Mutex<Vec<String>>>,
) -> impl Layer<HandlerService, Service = Log<HandlerService>> + Send + Sync + 'static {
    let lines = lines.clone();
    layer_fn(move |inner| Log {
        inner,
        side,
        lines: lines.clone(),
    })
}

/// Adds the token to every call made through the connection handle, and counts them.
#[derive(Clone)]
struct AddToken<S> {
    inner: S,
    calls: Arc<AtomicUsize>,
}

impl<S> Service<ClientCall> for AddToken<S>
where
    S: Service<ClientCall, Response = ClientReply, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = ClientReply;
    type Error = Error;
    type Future = BoxFuture<'static, Result<ClientReply, Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: ClientCall) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        call.metadata_mut().insert("token", "let-me-in").unwrap();
        Box::pin(self.inner.call(call))
    }
}

struct Pair {
    a: Manager,
    b: Manager,
}

impl Pair {
    /// `b` is built by `make_b` (so a test can give it node-wide layers).
    async fn start(make_b: impl FnOnce(ManagerBuilder) -> ManagerBuilder) -> Pair {
        let (la, a) = bound();
        let (lb, b) = bound();
        let names = [a.clone(), b.clone()];
        let builder = |l, me: &str| {
            Manager::builder(me)
                .peers(names.iter().cloned())
                .secret("s")
                .config(Config::default())
                .listener(l)
        };
        let ma = builder(la, &a).start().await.unwrap();
        let mb = make_b(builder(lb, &b)).start().await.unwrap();
        ma.connection(&b)
            .unwrap()
            .wait_for_connect(WAIT)
            .await
            .unwrap();
        Pair { a: ma, b: mb }
    }

    fn conn(&self) -> grid_core::Connection {
        self.a.connection(self.b.name()).unwrap()
    }

    async fn shutdown(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
    }
}

fn register_echo(m: &Manager, layer: Option<&ServerLayer>) {
    m.register_unary_with(ECHO, None, layer, |ctx, payload| async move {
        let _ = ctx;
        Ok::<_, RemoteError>(payload)
    })
    .unwrap();
    m.register_stream_with(
        OPEN,
        None,
        layer,
        |_ctx, payload, _input, mut out| async move {
            out.send(payload)
                .await
                .map_err(|e| RemoteError::text(ErrorCode::Internal, e.to_string()))
        },
    )
    .unwrap();
}

fn with_token() -> CallOptions {
    CallOptions {
        metadata: Metadata::new().with("token", "let-me-in").unwrap(),
        ..CallOptions::default()
    }
}

fn unauthenticated(r: &Result<Bytes, Error>) -> bool {
    matches!(r, Err(Error::Remote(e)) if e.code == ErrorCode::Application
        && String::from_utf8_lossy(&e.message).contains("unauthenticated"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_wide_auth_layer_refuses_calls_without_a_token_and_logs_every_call() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let log = log_layer("node", &lines);
    let p = Pair::start(|b| b.layer(layer_fn(RequireToken)).layer(log)).await;
    register_echo(&p.b, None);
    let conn = p.conn();
    let r = conn
        .call(ECHO.id, Bytes::from_static(b"x"), CallOptions::default())
        .await;
    assert!(unauthenticated(&r), "{r:?}");
    let r = conn
        .call(ECHO.id, Bytes::from_static(b"x"), with_token())
        .await;
    assert_eq!(r.unwrap(), Bytes::from_static(b"x"));
    // Streams go through the same layers: refused without the token, served with it.
    let mut s = conn
        .open_stream(OPEN.id, Bytes::from_static(b"s"), StreamOptions::default())
        .await
        .unwrap();
    let first = s.receiver.next().await.unwrap();
    assert!(
        matches!(&first, Err(Error::Remote(e)) if e.code == ErrorCode::Application),
        "{first:?}"
    );
    let opts = StreamOptions {
        metadata: Metadata::new().with("token", "let-me-in").unwrap(),
        ..StreamOptions::default()
    };
    let mut s = conn
        .open_stream(OPEN.id, Bytes::from_static(b"s"), opts)
        .await
        .unwrap();
    assert_eq!(
        s.receiver.next().await.unwrap().unwrap(),
        Bytes::from_static(b"s")
    );
    assert!(s.receiver.next().await.is_none());
    // The logging layer is outside the auth layer: it saw all four calls and their outcomes.
    let lines = lines.lock().clone();
    assert_eq!(
        lines,
        [
            format!("node {} stream=false err Application", ECHO.id),
            format!("node {} stream=false ok", ECHO.id),
            format!("node {} stream=true err Application", OPEN.id),
            format!("node {} stream=true ok", OPEN.id),
        ]
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_on_one_registration_leaves_the_others_alone() {
    let p = Pair::start(|b| b).await;
    let auth = ServerLayer::new(layer_fn(RequireToken));
    register_echo(&p.b, Some(&auth));
    p.b.register_unary(SLOW, |_ctx, payload| async move {
        Ok::<_, RemoteError>(payload)
    })
    .unwrap();
    let conn = p.conn();
    let r = conn
        .call(ECHO.id, Bytes::new(), CallOptions::default())
        .await;
    assert!(unauthenticated(&r), "{r:?}");
    let r = conn
        .call(SLOW.id, Bytes::from_static(b"free"), CallOptions::default())
        .await;
    assert_eq!(r.unwrap(), Bytes::from_static(b"free"));
    p.shutdown().await;
}

/// A handler that holds each call until released, recording how many run at once.
#[derive(Clone)]
struct Held {
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

impl Held {
    fn new() -> Held {
        Held {
            running: Arc::default(),
            most: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }

    fn register(&self, m: &Manager, layer: Option<&ServerLayer>) {
        let held = self.clone();
        m.register_unary_with(SLOW, None, layer, move |_ctx, payload| {
            let held = held.clone();
            async move {
                let now = held.running.fetch_add(1, Ordering::SeqCst) + 1;
                held.most.fetch_max(now, Ordering::SeqCst);
                let permit = held.gate.acquire().await.unwrap();
                permit.forget();
                held.running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, RemoteError>(payload)
            }
        })
        .unwrap();
    }

    async fn wait_running(&self, n: usize) {
        eventually(&format!("{n} handlers run at once"), WAIT, || {
            match self.running.load(Ordering::SeqCst) {
                running if running >= n => Ok(()),
                running => Err(running),
            }
        })
        .await;
    }
}

async fn wait_admitted(m: &Manager, n: usize) {
    eventually(&format!("{n} calls arrive"), WAIT, || {
        let f = m.stats().in_flight;
        if f.unary_in >= n {
            Ok(())
        } else {
            Err(f)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn towers_concurrency_limit_bounds_the_handlers_running_at_once() {
    const LIMIT: usize = 2;
    const CALLS: usize = 6;
    let p = Pair::start(|b| b).await;
    let held = Held::new();
    held.register(
        &p.b,
        Some(&ServerLayer::new(ConcurrencyLimitLayer::new(LIMIT))),
    );
    let conn = p.conn();
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let conn = conn.clone();
            tokio::spawn(async move {
                conn.call(SLOW.id, Bytes::from(vec![i as u8]), CallOptions::default())
                    .await
            })
        })
        .collect();
    // Every call has arrived and holds its slot; only LIMIT run, the rest wait for a permit.
    wait_admitted(&p.b, CALLS).await;
    held.wait_running(LIMIT).await;
    assert_eq!(held.running.load(Ordering::SeqCst), LIMIT);
    held.gate.add_permits(CALLS);
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(c.await.unwrap().unwrap(), Bytes::from(vec![i as u8]));
    }
    assert_eq!(
        held.most.load(Ordering::SeqCst),
        LIMIT,
        "never more than the limit"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_layers_add_metadata_and_limit_concurrency_per_handle() {
    let p = Pair::start(|b| b.layer(layer_fn(RequireToken))).await;
    register_echo(&p.b, None);
    let held = Held::new();
    held.register(&p.b, None);
    let plain = p.conn();
    let r = plain
        .call(ECHO.id, Bytes::new(), CallOptions::default())
        .await;
    assert!(unauthenticated(&r), "{r:?}");
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let authed = plain.with_layer(layer_fn(move |inner| AddToken {
        inner,
        calls: counted.clone(),
    }));
    let r = authed
        .call(ECHO.id, Bytes::from_static(b"hi"), CallOptions::default())
        .await;
    assert_eq!(r.unwrap(), Bytes::from_static(b"hi"));
    let mut s = authed
        .open_stream(OPEN.id, Bytes::from_static(b"st"), StreamOptions::default())
        .await
        .unwrap();
    assert_eq!(
        s.receiver.next().await.unwrap().unwrap(),
        Bytes::from_static(b"st")
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "both calls went through the layer"
    );
    // The handle without the layer is unchanged.
    let r = plain
        .call(ECHO.id, Bytes::new(), CallOptions::default())
        .await;
    assert!(unauthenticated(&r), "{r:?}");
    // Stacked: a client-side concurrency limit of 1 outside the token layer.
    let one_at_a_time = authed.with_layer(ConcurrencyLimitLayer::new(1));
    let tasks: Vec<_> = (0..3u8)
        .map(|i| {
            let c = one_at_a_time.clone();
            tokio::spawn(async move {
                c.call(SLOW.id, Bytes::from(vec![i]), CallOptions::default())
                    .await
            })
        })
        .collect();
    held.wait_running(1).await;
    // Each call is released in turn; the next reaches the handler only once one finished.
    for _ in 0..3 {
        held.gate.add_permits(1);
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap(), Bytes::from(vec![i as u8]));
    }
    assert_eq!(held.most.load(Ordering::SeqCst), 1, "one call at a time");
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    // A subroute of a layered handle keeps its layers.
    let r = authed
        .subroute("none")
        .call(ECHO.id, Bytes::new(), CallOptions::default())
        .await;
    assert!(matches!(r, Err(Error::UnknownHandler { .. })), "{r:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    p.shutdown().await;
}
