//! Per-call options of the typed client over real sockets: the deadline a handler sees is the
//! caller's, metadata reaches the handler's context, per-call stream capacities bind, and an
//! expired deadline never starts a handler on any call shape, typed or raw, and sends nothing.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{eventually, WAIT};
use futures::{FutureExt, StreamExt};
use grid::{
    CallError, CallOptions, Connection, Error, Manager, Metadata, MetadataError, StreamOptions,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProbeError {
    Failed(String),
}

/// What a handler saw of its call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// Milliseconds left until the deadline when the handler started, if it had one.
    pub left_ms: Option<u64>,
    /// The metadata entries, in key order.
    pub metadata: Vec<(String, Vec<u8>)>,
}

#[grid::handler]
pub trait Probe {
    /// What the context says.
    #[grid(timeout_ms = 60000)]
    async fn seen(&self, ctx: &grid::Context) -> Result<Seen, ProbeError>;
    /// The same, as the first item of a server stream; then sends `n` more items, counting
    /// those that went out without waiting for credit.
    async fn feed(
        &self,
        ctx: &grid::Context,
        n: u32,
        out: grid::ResponseSender<u32>,
    ) -> Result<(), ProbeError>;
    /// The same, for a client stream: reads nothing.
    async fn sink(
        &self,
        ctx: &grid::Context,
        input: grid::RequestReceiver<u32>,
    ) -> Result<Seen, ProbeError>;
    /// The same, for a two-way stream: its context, then an echo of each input.
    async fn chat(
        &self,
        ctx: &grid::Context,
        input: grid::RequestReceiver<u32>,
        out: grid::ResponseSender<Seen>,
    ) -> Result<(), ProbeError>;
}

#[derive(Default)]
struct Impl {
    /// Handlers started, of every shape.
    started: AtomicUsize,
    /// How many items `feed` sent before its first send had to wait for credit.
    sent_at_once: Mutex<Option<u32>>,
    /// Blocks `sink` so the caller's input is never read.
    hold: tokio::sync::Notify,
}

fn seen(ctx: &grid::Context) -> Seen {
    Seen {
        left_ms: ctx.deadline().map(|d| {
            u64::try_from(d.saturating_duration_since(Instant::now()).as_millis()).unwrap()
        }),
        metadata: ctx
            .metadata()
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect(),
    }
}

fn failed(e: Error) -> ProbeError {
    ProbeError::Failed(e.to_string())
}

impl Probe for Arc<Impl> {
    async fn seen(&self, ctx: &grid::Context) -> Result<Seen, ProbeError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        Ok(seen(ctx))
    }

    async fn feed(
        &self,
        ctx: &grid::Context,
        n: u32,
        mut out: grid::ResponseSender<u32>,
    ) -> Result<(), ProbeError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let _ = seen(ctx);
        let mut at_once = 0;
        for i in 0..n {
            match out.send(i).now_or_never() {
                Some(r) => r.map_err(failed)?,
                None => break,
            }
            at_once += 1;
        }
        *self.sent_at_once.lock() = Some(at_once);
        Ok(())
    }

    async fn sink(
        &self,
        ctx: &grid::Context,
        _input: grid::RequestReceiver<u32>,
    ) -> Result<Seen, ProbeError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let s = seen(ctx);
        self.hold.notified().await;
        Ok(s)
    }

    async fn chat(
        &self,
        ctx: &grid::Context,
        mut input: grid::RequestReceiver<u32>,
        mut out: grid::ResponseSender<Seen>,
    ) -> Result<(), ProbeError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        out.send(seen(ctx)).await.map_err(failed)?;
        while let Some(item) = input.recv().await {
            let mut s = seen(ctx);
            s.left_ms = Some(u64::from(item.map_err(failed)?));
            out.send(s).await.map_err(failed)?;
        }
        Ok(())
    }
}

struct Setup {
    nodes: Vec<Manager>,
    probe: Arc<Impl>,
}

impl Setup {
    async fn new() -> Setup {
        let nodes = common::connected(2, common::test_config()).await;
        let probe = Arc::new(Impl::default());
        ProbeServer::new(probe.clone()).register(&nodes[1]).unwrap();
        Setup { nodes, probe }
    }

    fn conn(&self) -> Connection {
        self.nodes[0].connection(self.nodes[1].name()).unwrap()
    }

    fn client(&self) -> ProbeClient {
        ProbeClient::new(self.conn())
    }

    async fn shutdown(self) {
        for n in self.nodes {
            n.shutdown().await;
        }
    }
}

fn left(s: &Seen) -> u64 {
    s.left_ms.expect("the call has a deadline")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_sees_the_callers_per_call_deadline() {
    let t = Setup::new().await;
    let c = t.client();
    // The method's default: 60 s.
    let s = c.seen().await.unwrap();
    assert!((59_000..=60_001).contains(&left(&s)), "{s:?}");
    // Per call: 300 ms, relative, so no clock sync is needed (rounded up to the millisecond).
    let s = c.seen().timeout(Duration::from_millis(300)).await.unwrap();
    assert!((1..=301).contains(&left(&s)), "{s:?}");
    let s = c
        .seen()
        .deadline(Instant::now() + Duration::from_secs(2))
        .await
        .unwrap();
    assert!((1_000..=2_001).contains(&left(&s)), "{s:?}");
    // Streams: no deadline by default, the caller's when set.
    let (_tx, mut rx) = c.chat().await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap().left_ms, None);
    let (_tx, mut rx) = c.chat().timeout(Duration::from_millis(900)).await.unwrap();
    let s = rx.next().await.unwrap().unwrap();
    assert!((1..=901).contains(&left(&s)), "{s:?}");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_metadata_reaches_the_handler_on_every_shape() {
    let t = Setup::new().await;
    let c = t.client();
    let s = c.seen().await.unwrap();
    assert!(s.metadata.is_empty());
    let s = c
        .seen()
        .metadata("token", [0xffu8, 0, 0x80])
        .metadata("empty", "")
        .metadata("token", "replaced")
        .await
        .unwrap();
    assert_eq!(
        s.metadata,
        [
            ("empty".to_owned(), vec![]),
            ("token".to_owned(), b"replaced".to_vec())
        ]
    );
    let mut many = Metadata::new();
    for i in 0..40u8 {
        many.insert(&format!("clé-{i:02}"), vec![i; usize::from(i)])
            .unwrap();
    }
    let s = c.seen().with_metadata(many.clone()).await.unwrap();
    assert_eq!(s.metadata.len(), 40);
    assert_eq!(s.metadata[7], ("clé-07".to_owned(), vec![7u8; 7]));
    let (_tx, mut rx) = c.chat().metadata("trace", "t-1").await.unwrap();
    let s = rx.next().await.unwrap().unwrap();
    assert_eq!(s.metadata, [("trace".to_owned(), b"t-1".to_vec())]);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_typed_metadata_fails_unsent() {
    let t = Setup::new().await;
    let c = t.client();
    let before = t.conn().stats().frames_out;
    let r = c.seen().metadata("", "x").await;
    assert!(
        matches!(
            r,
            Err(CallError::Transport(Error::Metadata(
                MetadataError::EmptyKey
            )))
        ),
        "{r:?}"
    );
    let r = c.feed(3).metadata(&"k".repeat(256), "x").await;
    assert!(
        matches!(
            r,
            Err(CallError::Transport(Error::Metadata(
                MetadataError::KeyTooLong { len: 256 }
            )))
        ),
        "{r:?}"
    );
    let mut too_many = Metadata::new();
    for i in 0..65 {
        too_many.insert(&format!("k{i}"), "").unwrap();
    }
    let r = c.seen().with_metadata(too_many).await;
    assert!(
        matches!(
            r,
            Err(CallError::Transport(Error::Metadata(
                MetadataError::TooManyEntries {
                    count: 65,
                    limit: 64
                }
            )))
        ),
        "{r:?}"
    );
    assert_eq!(t.conn().stats().frames_out, before, "nothing was sent");
    assert_eq!(t.probe.started.load(Ordering::SeqCst), 0);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_call_capacities_bind_on_both_directions() {
    let t = Setup::new().await;
    let c = t.client();
    // Output: the handler may send `out_capacity` items before it needs credit.
    for (cap, want) in [(None, 10), (Some(3), 3)] {
        *t.probe.sent_at_once.lock() = None;
        let call = c.feed(10);
        let call = match cap {
            Some(n) => call.out_capacity(n),
            None => call,
        };
        let _rx = call.await.unwrap();
        let got = eventually("feed reports", WAIT, || {
            t.probe.sent_at_once.lock().ok_or("no report yet")
        })
        .await;
        assert_eq!(got, want, "out_capacity {cap:?}");
    }
    // Input: the caller may send `in_capacity` items the handler has not read; the next one
    // needs credit the handler never gives back (it reads nothing).
    let (mut tx, _rx) = c.sink().in_capacity(2).await.unwrap();
    for i in 0..2 {
        let sent = tx.send(i).now_or_never();
        assert!(matches!(sent, Some(Ok(()))), "item {i}: {sent:?}");
    }
    assert!(tx.send(2).now_or_never().is_none(), "no credit for a third");
    let (mut tx, _rx) = c.sink().await.unwrap();
    for i in 0..3 {
        let sent = tx.send(i).now_or_never();
        assert!(matches!(sent, Some(Ok(()))), "default capacity, item {i}");
    }
    t.probe.hold.notify_waiters();
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_connect_waits_within_the_deadline() {
    // Node 1 starts after the call did: the call waits for the link instead of failing.
    let book = common::AddressBook::default();
    let names = common::names(2);
    let a = book
        .start(book.builder(&names[0], &names, common::test_config()))
        .await;
    let c = ProbeClient::new(a.connection(&names[1]).unwrap());
    let r = c.seen().await;
    assert!(
        matches!(r, Err(CallError::Transport(Error::NotConnected { .. }))),
        "{r:?}"
    );
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.seen().timeout(WAIT).wait_for_connect().await }
    });
    // Not ready until its handlers are registered: a ready node takes the waiting call as soon
    // as the link is up, which can be before `register` runs (the call then fails with
    // `UnknownHandler`).
    let b = book
        .start(
            book.builder(&names[1], &names, common::test_config())
                .start_not_ready(),
        )
        .await;
    ProbeServer::new(Arc::new(Impl::default()))
        .register(&b)
        .unwrap();
    b.set_ready();
    let s = call.await.unwrap().unwrap();
    assert!(left(&s) <= WAIT.as_millis() as u64 + 1, "{s:?}");
    a.shutdown().await;
    b.shutdown().await;
}

/// An expired deadline, on every call shape and through both APIs, fails with `Deadline`
/// before anything is sent, and no handler starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_deadline_never_starts_a_handler_on_any_shape() {
    let t = Setup::new().await;
    let c = t.client();
    let conn = t.conn();
    let before = conn.stats().frames_out;
    let past = Instant::now() - Duration::from_secs(1);
    fn deadline<T: std::fmt::Debug>(r: Result<T, CallError<ProbeError>>) {
        assert!(
            matches!(r, Err(CallError::Transport(Error::Deadline))),
            "{r:?}"
        );
    }
    for zero in [true, false] {
        if zero {
            deadline(c.seen().timeout(Duration::ZERO).await);
            deadline(c.feed(1).timeout(Duration::ZERO).await);
            deadline(c.sink().timeout(Duration::ZERO).await);
            deadline(c.chat().timeout(Duration::ZERO).await);
        } else {
            deadline(c.seen().deadline(past).await);
            deadline(c.feed(1).deadline(past).await);
            deadline(c.sink().deadline(past).await);
            deadline(c.chat().deadline(past).await);
        }
    }
    // The raw API, every shape: unary, server stream, client and two-way streams (input).
    let r = conn
        .call(
            ProbeClient::SEEN.id,
            Bytes::new(),
            CallOptions {
                timeout: Some(Duration::ZERO),
                ..CallOptions::default()
            },
        )
        .await;
    assert!(matches!(r, Err(Error::Deadline)), "{r:?}");
    for (spec, opts) in [
        (ProbeClient::FEED, StreamOptions::default()),
        (ProbeClient::SINK, StreamOptions::two_way()),
        (ProbeClient::CHAT, StreamOptions::two_way()),
    ] {
        let opts = StreamOptions {
            timeout: Some(Duration::ZERO),
            ..opts
        };
        let r = conn.open_stream(spec.id, Bytes::new(), opts).await;
        assert!(matches!(r, Err(Error::Deadline)), "{}: {r:?}", spec.name);
    }
    assert_eq!(conn.stats().frames_out, before, "nothing was sent");
    assert_eq!(
        t.probe.started.load(Ordering::SeqCst),
        0,
        "no handler started"
    );
    // The same calls with time left do start their handlers (the counter counts).
    c.seen().timeout(WAIT).await.unwrap();
    let (_tx, mut rx) = c.chat().timeout(WAIT).await.unwrap();
    assert!(
        rx.next().await.unwrap().is_ok(),
        "the chat handler answered"
    );
    assert_eq!(t.probe.started.load(Ordering::SeqCst), 2);
    t.shutdown().await;
}
