//! What the node's test handlers report ([`Gauge`]), the response buffers the node still holds
//! ([`TrackedBytes`]), and the byte budget the resource tests hold the node to.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use grid_core::{
    Config, Context, HandlerSpec, Manager, RemoteError, RequestReceiver, ResponseSender,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::WAIT;

/// Counters the node's test handlers report into. Each handler body holds a [`Running`] while it
/// is alive (also when its future is dropped, not only when it returns).
#[derive(Debug, Default)]
pub struct Gauge {
    running: AtomicUsize,
    peak: AtomicUsize,
    started: AtomicUsize,
    saw_cancel: AtomicUsize,
    release: CancellationToken,
    changed: Notify,
}

/// A snapshot of a [`Gauge`], for assertions and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Handler bodies alive now.
    pub running: usize,
    /// The most alive at once so far.
    pub peak: usize,
    /// Handler bodies that started.
    pub started: usize,
    /// Handler bodies that saw their context cancelled.
    pub saw_cancel: usize,
}

/// One live handler body; dropping it counts the body as ended.
#[derive(Debug)]
pub struct Running(Arc<Gauge>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

impl Gauge {
    pub fn new() -> Arc<Gauge> {
        Arc::new(Gauge::default())
    }

    /// A handler body starts.
    pub fn enter(self: &Arc<Self>) -> Running {
        self.started.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.changed.notify_waiters();
        Running(self.clone())
    }

    /// A handler body saw its context cancelled.
    pub fn saw_cancel(&self) {
        self.saw_cancel.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Ends every handler that waits for the test (those that ignore cancellation, too).
    pub fn release_all(&self) {
        self.release.cancel();
    }

    /// Resolves once [`release_all`](Self::release_all) was called.
    pub async fn released(&self) {
        self.release.cancelled().await;
    }

    pub fn counts(&self) -> Counts {
        Counts {
            running: self.running.load(Ordering::SeqCst),
            peak: self.peak.load(Ordering::SeqCst),
            started: self.started.load(Ordering::SeqCst),
            saw_cancel: self.saw_cancel.load(Ordering::SeqCst),
        }
    }

    /// Waits until `pred` holds, at most `within`; returns the counts either way, and whether it
    /// held. Wakes on every change, no polling.
    pub async fn wait_for(
        &self,
        within: Duration,
        pred: impl Fn(Counts) -> bool,
    ) -> (bool, Counts) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let c = self.counts();
            if pred(c) {
                return (true, c);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let c = self.counts();
                return (pred(c), c);
            }
        }
    }

    /// Waits until the counts have not changed for `quiet` (at most [`WAIT`], then fails loudly).
    ///
    /// Only for choosing when to read a high-water mark, which is exact whenever it is read: a
    /// node that keeps within its limits can never fail a test through this wait.
    pub async fn settle(&self, quiet: Duration) -> Counts {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if tokio::time::timeout(quiet, changed).await.is_err() {
                return self.counts();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the handlers never settled within {WAIT:?}: {:?}",
                self.counts()
            );
        }
    }

    /// Like [`wait_for`](Self::wait_for) with [`WAIT`], failing loudly.
    pub async fn expect(&self, what: &str, pred: impl Fn(Counts) -> bool) -> Counts {
        let (ok, c) = self.wait_for(WAIT, pred).await;
        assert!(ok, "{what}: not within {WAIT:?}; handlers: {c:?}");
        c
    }
}

/// Registers a unary handler that runs until its call is cancelled (it then reports it) or the
/// test releases it.
pub fn register_blocking_unary(node: &Manager, spec: HandlerSpec, gauge: &Arc<Gauge>) {
    let gauge = gauge.clone();
    node.register_unary(spec, move |ctx: Context, _payload: Bytes| {
        let gauge = gauge.clone();
        async move {
            let _running = gauge.enter();
            tokio::select! {
                _ = ctx.cancelled() => {
                    gauge.saw_cancel();
                    Err(RemoteError::text(grid_core::ErrorCode::Cancelled, "cancelled"))
                }
                () = gauge.released() => Ok(Bytes::new()),
            }
        }
    })
    .expect("register the blocking unary handler");
}

/// Registers a unary handler that ignores cancellation: it runs until the test releases it (or
/// the node drops its future).
pub fn register_ignoring_unary(node: &Manager, spec: HandlerSpec, gauge: &Arc<Gauge>) {
    let gauge = gauge.clone();
    node.register_unary(spec, move |_ctx: Context, _payload: Bytes| {
        let gauge = gauge.clone();
        async move {
            let _running = gauge.enter();
            gauge.released().await;
            Ok(Bytes::new())
        }
    })
    .expect("register the unary handler that ignores cancellation");
}

/// Registers a stream handler that holds its input and output without reading or writing, until
/// its stream is cancelled (it then reports it) or the test releases it.
pub fn register_blocking_stream(node: &Manager, spec: HandlerSpec, gauge: &Arc<Gauge>) {
    let gauge = gauge.clone();
    node.register_stream(
        spec,
        move |ctx: Context,
              _init: Bytes,
              input: Option<RequestReceiver>,
              output: ResponseSender| {
            let gauge = gauge.clone();
            async move {
                let _running = gauge.enter();
                let _hold = (input, output);
                tokio::select! {
                    _ = ctx.cancelled() => {
                        gauge.saw_cancel();
                        Err(RemoteError::text(grid_core::ErrorCode::Cancelled, "cancelled"))
                    }
                    () = gauge.released() => Ok(()),
                }
            }
        },
    )
    .expect("register the blocking stream handler");
}

/// Counts the bytes of response buffers that are still alive: a handler returns a buffer made by
/// [`TrackedBytes::make`], and the count drops when the node lets go of it (once it is encoded into
/// the outbound queue, or dropped).
#[derive(Debug, Default)]
pub struct TrackedBytes {
    live: AtomicUsize,
    peak: AtomicUsize,
}

struct Owner {
    buf: Vec<u8>,
    tracker: Arc<TrackedBytes>,
}

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.tracker
            .live
            .fetch_sub(self.buf.len(), Ordering::SeqCst);
    }
}

impl TrackedBytes {
    pub fn new() -> Arc<TrackedBytes> {
        Arc::new(TrackedBytes::default())
    }

    /// A fresh buffer of `len` bytes, counted while alive.
    pub fn make(self: &Arc<Self>, len: usize) -> Bytes {
        let now = self.live.fetch_add(len, Ordering::SeqCst) + len;
        self.peak.fetch_max(now, Ordering::SeqCst);
        Bytes::from_owner(Owner {
            buf: vec![0x5a; len],
            tracker: self.clone(),
        })
    }

    /// Bytes alive now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// The most bytes alive at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// The most bytes a node may hold for one peer's *responses*: what finished handlers may hold
/// while they wait (`max_pending_response_bytes`), what is queued for the socket
/// (`max_queued_bytes`, one frame past it at most), one batch in the writer, and the responses of
/// the calls that were already running when those bounds filled (at most `max_incoming_calls`,
/// each `response` bytes) — see `Config::max_pending_response_bytes`.
pub fn response_budget(config: &Config, response: usize) -> usize {
    config.max_pending_response_bytes
        + config.max_queued_bytes
        + response
        + config.max_batch_bytes
        + config.max_incoming_calls * response
}

/// The most bytes a node may hold for one peer's *inbound streams*: twice
/// `max_inbound_bytes`, past which the stream that overran is failed (see
/// `Config::max_inbound_bytes`).
pub fn inbound_budget(config: &Config) -> usize {
    2 * config.max_inbound_bytes
}

/// The byte assertion of the resource tests: `held` bytes must be within `budget`.
pub fn assert_held_bytes_within_budget(what: &str, held: usize, budget: usize) {
    if let Err(e) = check_held_bytes_within_budget(what, held, budget) {
        panic!("{e}");
    }
}

/// [`assert_held_bytes_within_budget`] as a result, for tests that collect every failure.
///
/// # Errors
/// The message, when `held` is over the budget.
pub fn check_held_bytes_within_budget(
    what: &str,
    held: usize,
    budget: usize,
) -> Result<(), String> {
    if held <= budget {
        return Ok(());
    }
    Err(format!(
        "{what}: the node held {} KiB for one peer, over the budget of {} KiB",
        held >> 10,
        budget >> 10
    ))
}
