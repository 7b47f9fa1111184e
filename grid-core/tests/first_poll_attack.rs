//! A unary handler is polled once on the connection's reader (`conn/serve.rs`): these tests attack
//! that first poll as a member holding the secret, with the scripted peer of `scripted/`.
//!
//! Each test names what must hold: every call answered once and its slot released on every path
//! out of the first poll (answer, wait, panics, a response over the limit), its `serve` span
//! opened and ended once; a flood from a peer that never reads held within the queue's bound with
//! no slot held for a call that answered; responses that wait for room keeping their slot through
//! a cancel and letting go on a disconnect, within the pending-response budget; a handler that
//! calls back into its own connection and node from its first poll, one woken before its task
//! exists, and one that spends the reader's coop budget all answered; a panic in what the first
//! poll hands back never ending the reader.
//!
//! Every test runs under one process-wide span subscriber (tracing's global default), so the node
//! observes its calls: the first poll runs entered in its span, and the spans are what the
//! once-per-call checks read.

// What a bounded wait saw (whole stats) is printed at most once: `result_large_err` is allowed.
#![allow(clippy::unwrap_used, clippy::panic, clippy::result_large_err)]

mod scripted;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use grid_core::frame::{ErrorCode, Frame};
use grid_core::handshake::Features;
use grid_core::{Config, Connection, Context, HandlerSpec, Manager, MuxId, RemoteError};
use scripted::{
    base_config, cancel, eventually, expect_stats, request, Cluster, Inbound, ScriptedPeer,
    TrackedBytes, WAIT,
};
use tracing::span::{Attributes, Id, Record};
use tracing::{field, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

// ---- serve spans, counted per handler -------------------------------------------------------

/// What one `serve` span saw: its handler, how often its outcome was recorded, the last one.
#[derive(Debug, Clone, Default)]
struct ServeSpan {
    handler: String,
    outcome_records: usize,
    outcome: Option<String>,
}

#[derive(Default)]
struct SpanBook {
    opened: HashMap<String, usize>,
    closed: Vec<ServeSpan>,
}

struct Capture(Arc<Mutex<SpanBook>>);

#[derive(Default)]
struct Fields {
    handler: Option<String>,
    outcome: Option<String>,
}

impl field::Visit for Fields {
    fn record_debug(&mut self, f: &field::Field, value: &dyn std::fmt::Debug) {
        match f.name() {
            "handler" => self.handler = Some(format!("{value:?}")),
            "outcome" => self.outcome = Some(format!("{value:?}")),
            _ => {}
        }
    }
    fn record_str(&mut self, f: &field::Field, value: &str) {
        self.record_debug(f, &format_args!("{value}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        if attrs.metadata().name() != "serve" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let rec = ServeSpan {
            handler: fields.handler.unwrap_or_default(),
            ..ServeSpan::default()
        };
        *self
            .0
            .lock()
            .unwrap()
            .opened
            .entry(rec.handler.clone())
            .or_default() += 1;
        ctx.span(id).unwrap().extensions_mut().insert(rec);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(rec) = ext.get_mut::<ServeSpan>() else {
            return;
        };
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(o) = fields.outcome {
            rec.outcome_records += 1;
            rec.outcome = Some(o);
        }
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let rec = span.extensions().get::<ServeSpan>().cloned();
        if let Some(rec) = rec {
            self.0.lock().unwrap().closed.push(rec);
        }
    }
}

/// The process-wide span book (installed by the first test that asks).
fn spans() -> &'static Arc<Mutex<SpanBook>> {
    static BOOK: OnceLock<Arc<Mutex<SpanBook>>> = OnceLock::new();
    BOOK.get_or_init(|| {
        let book = Arc::new(Mutex::new(SpanBook::default()));
        let subscriber = tracing_subscriber::registry().with(Capture(book.clone()));
        tracing::subscriber::set_global_default(subscriber).unwrap();
        book
    })
}

/// Waits (bounded) until `n` `serve` spans of `spec` have closed; then every one of them was
/// opened once, closed once and had its outcome recorded once, and that outcome is `outcome`.
async fn expect_serve_spans(spec: HandlerSpec, n: usize, outcome: &str) {
    let handler = spec.id.to_string();
    let what = format!("{handler}: {n} serve spans closed");
    let (opened, closed) = eventually(&what, WAIT, || {
        let book = spans().lock().unwrap();
        let closed: Vec<ServeSpan> = book
            .closed
            .iter()
            .filter(|s| s.handler == handler)
            .cloned()
            .collect();
        let opened = book.opened.get(&handler).copied().unwrap_or(0);
        if closed.len() >= n {
            Ok((opened, closed))
        } else {
            Err((opened, closed))
        }
    })
    .await;
    assert_eq!(opened, n, "{handler}: serve spans opened");
    assert_eq!(closed.len(), n, "{handler}: serve spans closed");
    for s in &closed {
        assert_eq!(s.outcome_records, 1, "{handler}: outcome recorded: {s:?}");
        assert_eq!(s.outcome.as_deref(), Some(outcome), "{handler}: {s:?}");
    }
}

// ---- helpers --------------------------------------------------------------------------------

/// No call in flight on the node, and no handler task holding a slot.
fn released(s: &grid_core::ManagerStats) -> bool {
    s.in_flight.total() == 0 && s.in_flight.handlers == 0
}

fn node_conn(cluster: &Cluster, peer: &ScriptedPeer) -> Connection {
    cluster.node.connection(&peer.name).unwrap()
}

/// Waits (bounded) until the node has decoded `at_least` frames from `peer` in all: the reader
/// has then dispatched every frame of the messages before the last one counted (it decodes a
/// message only once it is done with the one before).
async fn dispatched(conn: &Connection, at_least: u64) {
    let what = format!("the node reads {at_least} frames");
    eventually(&what, WAIT, || {
        let s = conn.stats();
        if s.frames_in >= at_least {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
}

/// Sends `frames`, then one connection ping in a message of its own, and waits until the node's
/// reader has dispatched all of `frames`.
async fn send_and_settle(conn: &Connection, peer: &mut ScriptedPeer, frames: &[Frame]) {
    let before = conn.stats().frames_in;
    peer.send(frames).await.unwrap();
    peer.send(&[Frame::Ping {
        mux: MuxId::CONNECTION,
        nonce: 0xf1f0,
    }])
    .await
    .unwrap();
    dispatched(conn, before + frames.len() as u64 + 1).await;
}

/// The one answer of each of `muxes`, read until all have come (bounded); fails loudly on a
/// second answer to one mux or a close. Parts (`Chunk`) are acknowledged as they are read.
async fn answers(peer: &mut ScriptedPeer, muxes: &[MuxId]) -> HashMap<MuxId, Frame> {
    let want: HashSet<MuxId> = muxes.iter().copied().collect();
    let mut got = HashMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < want.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {} calls answered within {WAIT:?}",
            got.len(),
            want.len()
        );
        match peer.recv().await {
            Inbound::Frame(f @ (Frame::Response { .. } | Frame::Error { .. })) => {
                let mux = f.mux();
                if want.contains(&mux) {
                    assert!(got.insert(mux, f).is_none(), "{mux} answered twice");
                }
            }
            Inbound::Frame(Frame::Chunk { bytes, .. }) => ack(peer, bytes.len()).await,
            Inbound::Frame(_) => {}
            Inbound::Closed(reason) => panic!("the node closed the socket: {reason}"),
            Inbound::Undecodable(e) => panic!("{e}"),
        }
    }
    got
}

async fn ack(peer: &mut ScriptedPeer, n: usize) {
    if let Ok(bytes @ 1..) = u32::try_from(n) {
        peer.send(&[Frame::ChunkAck { bytes }]).await.unwrap();
    }
}

/// The error an answer carries: a refusal (`Error`) or a handler's failure (`Response` with an
/// error record).
fn error_code(f: &Frame) -> Option<ErrorCode> {
    match f {
        Frame::Error { error, .. }
        | Frame::Response {
            result: Err(error), ..
        } => Some(error.code),
        _ => None,
    }
}

// ---- every path out of the first poll ends the call once ------------------------------------

const READY: HandlerSpec = HandlerSpec::named("FirstPollAttack.ready");
const WAITS: HandlerSpec = HandlerSpec::named("FirstPollAttack.waits");
const ERR_NOW: HandlerSpec = HandlerSpec::named("FirstPollAttack.errNow");
const PANIC_IN_CALL: HandlerSpec = HandlerSpec::named("FirstPollAttack.panicInCall");
const PANIC_IN_FIRST_POLL: HandlerSpec = HandlerSpec::named("FirstPollAttack.panicInFirstPoll");
const PANIC_LATER: HandlerSpec = HandlerSpec::named("FirstPollAttack.panicLater");
const TOO_LARGE_NOW: HandlerSpec = HandlerSpec::named("FirstPollAttack.tooLargeNow");
const TOO_LARGE_LATER: HandlerSpec = HandlerSpec::named("FirstPollAttack.tooLargeLater");
const PAST_DEADLINE: HandlerSpec = HandlerSpec::named("FirstPollAttack.pastDeadline");
const READY_WITH_DEADLINE: HandlerSpec = HandlerSpec::named("FirstPollAttack.readyWithDeadline");

/// A `Request` to `handler` with a deadline of `ms` milliseconds.
fn request_within(mux: MuxId, handler: HandlerSpec, payload: Bytes, ms: u32) -> Frame {
    match request(mux, handler, payload) {
        Frame::Request {
            mux,
            route,
            metadata,
            payload,
            ..
        } => Frame::Request {
            mux,
            route,
            deadline_ms: ms,
            metadata,
            payload,
        },
        other => other,
    }
}

/// Every way a unary handler can leave its first poll — an answer, an error, a wait, a panic in
/// the call that makes the future, in the first poll or in a later one, a response over the
/// payload limit on the first poll or later, a wait past the call's deadline, an answer on the
/// first poll of a call that has a deadline — gives its call exactly one answer of the right
/// kind, releases its slot (the node's in-flight count back to zero, its held bytes too), and
/// opens and ends its `serve` span once with the right outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_out_of_the_first_poll_answers_once_and_releases_its_slot() {
    const EACH: usize = 20;
    const LIMIT: usize = 256 << 10;
    spans();
    let config = Config {
        max_payload: LIMIT,
        ..base_config()
    };
    let cluster = Cluster::start(config, 1).await;
    let node = &cluster.node;
    node.register_unary(
        READY,
        |_ctx, b: Bytes| async move { Ok::<_, RemoteError>(b) },
    )
    .unwrap();
    node.register_unary(WAITS, |_ctx, b: Bytes| async move {
        tokio::task::yield_now().await;
        Ok::<_, RemoteError>(b)
    })
    .unwrap();
    node.register_unary(ERR_NOW, |_ctx, _b| async move {
        Err::<Bytes, _>(RemoteError::text(ErrorCode::Application, "refused at once"))
    })
    .unwrap();
    node.register_unary(
        PANIC_IN_CALL,
        |_ctx, _b| -> std::future::Ready<Result<Bytes, RemoteError>> {
            panic!("in the call that makes the future")
        },
    )
    .unwrap();
    node.register_unary(PANIC_IN_FIRST_POLL, |_ctx, b: Bytes| async move {
        if !b.is_empty() {
            panic!("in the first poll");
        }
        Ok::<_, RemoteError>(b)
    })
    .unwrap();
    node.register_unary(PANIC_LATER, |_ctx, b: Bytes| async move {
        tokio::task::yield_now().await;
        if !b.is_empty() {
            panic!("after a wait");
        }
        Ok::<_, RemoteError>(b)
    })
    .unwrap();
    node.register_unary(TOO_LARGE_NOW, |_ctx, _b| async move {
        Ok::<_, RemoteError>(Bytes::from(vec![1u8; 2 * LIMIT]))
    })
    .unwrap();
    node.register_unary(TOO_LARGE_LATER, |_ctx, _b| async move {
        tokio::task::yield_now().await;
        Ok::<_, RemoteError>(Bytes::from(vec![1u8; 2 * LIMIT]))
    })
    .unwrap();

    node.register_unary(PAST_DEADLINE, |ctx: Context, _b| async move {
        ctx.cancelled().await;
        Err::<Bytes, _>(RemoteError::text(ErrorCode::Cancelled, "saw the deadline"))
    })
    .unwrap();
    node.register_unary(READY_WITH_DEADLINE, |_ctx, b: Bytes| async move {
        Ok::<_, RemoteError>(b)
    })
    .unwrap();

    let mut peer = cluster.attacker(0).await;
    peer.read_eagerly();
    let cases: [(HandlerSpec, Option<ErrorCode>, &str); 10] = [
        (READY, None, "ok"),
        (WAITS, None, "ok"),
        (ERR_NOW, Some(ErrorCode::Application), "application"),
        (PANIC_IN_CALL, Some(ErrorCode::Panic), "panic"),
        (PANIC_IN_FIRST_POLL, Some(ErrorCode::Panic), "panic"),
        (PANIC_LATER, Some(ErrorCode::Panic), "panic"),
        (TOO_LARGE_NOW, Some(ErrorCode::TooLarge), "too_large"),
        (TOO_LARGE_LATER, Some(ErrorCode::TooLarge), "too_large"),
        (PAST_DEADLINE, Some(ErrorCode::Deadline), "deadline"),
        (READY_WITH_DEADLINE, None, "ok"),
    ];
    // Interleaved, so each path runs beside the others on one reader.
    let mut frames = Vec::new();
    let mut expect: HashMap<MuxId, (HandlerSpec, Option<ErrorCode>)> = HashMap::new();
    for i in 0..EACH {
        for (spec, code, _) in cases {
            let m = peer.mux();
            let payload = Bytes::from(format!("call {i}"));
            frames.push(if spec == PAST_DEADLINE {
                request_within(m, spec, payload, 50)
            } else if spec == READY_WITH_DEADLINE {
                request_within(m, spec, payload, 10_000)
            } else {
                request(m, spec, payload)
            });
            expect.insert(m, (spec, code));
        }
    }
    let muxes: Vec<MuxId> = expect.keys().copied().collect();
    peer.send(&frames).await.unwrap();
    let got = answers(&mut peer, &muxes).await;
    for (mux, (spec, code)) in &expect {
        let f = &got[mux];
        assert_eq!(error_code(f), *code, "{}: {f:?}", spec.id);
        if code.is_none() {
            match f {
                Frame::Response {
                    result: Ok(Some(b)),
                    ..
                } => assert!(b.starts_with(b"call "), "{}: {b:?}", spec.id),
                other => panic!("{}: {other:?}", spec.id),
            }
        }
    }
    let stats = expect_stats(node, "every slot released", released).await;
    let held = node_conn(&cluster, &peer).stats().held;
    assert_eq!(
        (held.inbound, held.pending_responses),
        (0, 0),
        "{held:?} {stats:?}"
    );
    for (spec, _, outcome) in cases {
        expect_serve_spans(spec, EACH, outcome).await;
    }
    assert_eq!(
        node_conn(&cluster, &peer).state(),
        grid_core::ConnState::Connected
    );
    cluster.assert_honest_works("after every path").await;
    peer.cut().await;
}

// ---- a flood to a handler that answers at once, from a peer that never reads ----------------

const FLOOD: HandlerSpec = HandlerSpec::named("FirstPollAttack.flood");

/// A peer floods requests to a handler that answers at once (64 KiB each) and never reads. The
/// reader queues each response itself while the data lane has room and refuses the rest with
/// `Overloaded`: the lane stays within `max_queued_bytes` (one frame past it at most), no call
/// holds a slot or a response outside the lane, and the handler ran only for as many calls as
/// the lane and the socket's buffers take — not for the 2000 sent. Once the peer reads, each
/// call has exactly one answer; the honest peer works throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answering_flood_from_a_peer_that_never_reads_stays_within_the_queue_bound() {
    const RESPONSE: usize = 64 << 10;
    const CALLS: usize = 2000;
    spans();
    let config = Config {
        max_queued_bytes: 1 << 20,
        max_incoming_calls: 64,
        ..base_config()
    };
    let cluster = Cluster::start(config.clone(), 1).await;
    let tracked = TrackedBytes::new();
    let ran = Arc::new(AtomicUsize::new(0));
    register_answering(&cluster.node, FLOOD, &tracked, Some(&ran), RESPONSE);
    let mut peer = cluster.attacker(0).await;
    let conn = node_conn(&cluster, &peer);
    let muxes: Vec<MuxId> = (0..CALLS).map(|_| peer.mux()).collect();
    let frames: Vec<Frame> = muxes
        .iter()
        .map(|m| request(*m, FLOOD, Bytes::new()))
        .collect();
    send_and_settle(&conn, &mut peer, &frames).await;

    let s = conn.stats();
    let ran_n = ran.load(Ordering::SeqCst);
    eprintln!(
        "answering flood: handler ran {ran_n} of {CALLS}; held {:?}; in flight {:?}; tracked live {}",
        s.held,
        s.in_flight,
        tracked.live()
    );
    assert!(
        s.held.queued <= config.max_queued_bytes + RESPONSE + 64,
        "the data lane past its bound: {:?}",
        s.held
    );
    assert_eq!(s.held.pending_responses, 0, "{:?}", s.held);
    assert_eq!(
        s.in_flight.handlers, 0,
        "a call that answered at once holds a slot"
    );
    assert_eq!(tracked.live(), 0, "a response is held outside the lane");
    // What the writer took out is in the socket's buffers and one batch at most.
    let outside_lane = 2 * config.max_batch_bytes + 2 * scripted::PIPE_BYTES + 4 * RESPONSE;
    assert!(
        ran_n * RESPONSE <= config.max_queued_bytes + outside_lane,
        "the handler ran {ran_n} times for a peer that reads nothing"
    );
    assert!(ran_n < CALLS, "nothing was refused");
    cluster
        .assert_honest_works("during the answering flood")
        .await;

    peer.read_eagerly();
    let got = answers(&mut peer, &muxes).await;
    let refused = got
        .values()
        .filter(|f| error_code(f) == Some(ErrorCode::Overloaded))
        .count();
    let answered = got
        .values()
        .filter(|f| matches!(f, Frame::Response { result: Ok(_), .. }))
        .count();
    assert_eq!(answered, ran_n, "every call that ran is answered once");
    assert_eq!(answered + refused, CALLS, "every other call is refused");
    expect_stats(&cluster.node, "in-flight back to zero", released).await;
    expect_serve_spans(FLOOD, ran_n, "ok").await;
    peer.cut().await;
}

// ---- responses that wait for room -----------------------------------------------------------

const BLOCKER: HandlerSpec = HandlerSpec::named("FirstPollAttack.blocker");
const BIG_ADMIT: HandlerSpec = HandlerSpec::named("FirstPollAttack.bigAdmit");
const BIG_CANCEL: HandlerSpec = HandlerSpec::named("FirstPollAttack.bigCancel");
const BIG_CUT: HandlerSpec = HandlerSpec::named("FirstPollAttack.bigCut");

/// Bytes of each response in the waiting tests: four parts of the default chunk size.
const BIG_RESPONSE: usize = 256 << 10;

/// Bytes of the first response, which takes the bound of the frames sent in parts for itself.
const BLOCKER_RESPONSE: usize = 1 << 20;

/// A node whose large frames (sent in parts) are bounded by one [`BIG_RESPONSE`], and whose
/// answers may wait for room up to two of them.
fn waiting_config() -> Config {
    Config {
        max_queued_bytes: BIG_RESPONSE,
        max_pending_response_bytes: 2 * BIG_RESPONSE,
        max_incoming_calls: 1000,
        ..base_config()
    }
}

struct Waiting {
    cluster: Cluster,
    peer: ScriptedPeer,
    conn: Connection,
    tracked: Arc<TrackedBytes>,
    ran: Arc<AtomicUsize>,
    muxes: Vec<MuxId>,
}

/// Registers on `node` a unary handler for `spec` that answers at once with `len` bytes made by
/// `tracked`, counting its runs in `ran` when given.
fn register_answering(
    node: &Manager,
    spec: HandlerSpec,
    tracked: &Arc<TrackedBytes>,
    ran: Option<&Arc<AtomicUsize>>,
    len: usize,
) {
    let (t, r) = (tracked.clone(), ran.cloned());
    node.register_unary(spec, move |_ctx, _b| {
        if let Some(r) = &r {
            r.fetch_add(1, Ordering::SeqCst);
        }
        let body = t.make(len);
        async move { Ok::<_, RemoteError>(body) }
    })
    .unwrap();
}

/// A peer that agreed to parts calls [`BLOCKER`] (1 MiB, answered at once and queued: its
/// first 256 KiB of parts fill the window, and the peer acknowledges none, so the rest stays
/// queued past the bound), then floods `calls` requests to `spec`, which answers 256 KiB at
/// once: every one of those answers finds no room and waits. The data lane itself stays empty,
/// so the reader's "caller is not reading" refusal does not see any of it: only the
/// pending-response budget stops admission.
async fn waiting(calls: usize, spec: HandlerSpec) -> Waiting {
    spans();
    let cluster = Cluster::start(waiting_config(), 1).await;
    let tracked = TrackedBytes::new();
    let ran = Arc::new(AtomicUsize::new(0));
    register_answering(&cluster.node, BLOCKER, &tracked, None, BLOCKER_RESPONSE);
    register_answering(&cluster.node, spec, &tracked, Some(&ran), BIG_RESPONSE);
    let mut peer = cluster.attacker_with(0, None, Features::CHUNKS).await;
    assert!(
        peer.info.features.contains(Features::CHUNKS),
        "the node agrees to parts"
    );
    let conn = node_conn(&cluster, &peer);
    let blocker = peer.mux();
    send_and_settle(&conn, &mut peer, &[request(blocker, BLOCKER, Bytes::new())]).await;
    let muxes: Vec<MuxId> = (0..calls).map(|_| peer.mux()).collect();
    let frames: Vec<Frame> = muxes
        .iter()
        .map(|m| request(*m, spec, Bytes::new()))
        .collect();
    send_and_settle(&conn, &mut peer, &frames).await;
    Waiting {
        cluster,
        peer,
        conn,
        tracked,
        ran,
        muxes,
    }
}

impl Waiting {
    /// Reads everything (acknowledging every part) until the node holds no slot and no response
    /// buffer for this peer; returns the refusals (`Error` frames) seen, by mux.
    async fn read_until_released(&mut self) -> HashMap<MuxId, ErrorCode> {
        self.peer.read_eagerly();
        let mut refused = HashMap::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let s = self.conn.stats();
            if s.in_flight.handlers == 0 && self.tracked.live() == 0 {
                return refused;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "slots or buffers still held {WAIT:?} after the peer read: {s:?}, {} bytes",
                self.tracked.live()
            );
            match self.peer.recv_within(Duration::from_millis(20)).await {
                Some(Inbound::Frame(Frame::Chunk { bytes, .. })) => {
                    ack(&mut self.peer, bytes.len()).await;
                }
                Some(Inbound::Frame(Frame::Error { mux, error })) => {
                    assert!(refused.insert(mux, error.code).is_none(), "{mux} twice");
                }
                Some(Inbound::Closed(reason)) => panic!("the node closed the socket: {reason}"),
                Some(Inbound::Undecodable(e)) => panic!("{e}"),
                Some(Inbound::Frame(_)) | None => {}
            }
        }
    }
}

/// Answers that wait for room are charged to the pending-response budget before the reader
/// admits another call: a burst of 200 calls in one message gets exactly as many admitted as
/// `max_pending_response_bytes` takes (two), each holding its slot and charged in full, and the
/// other 198 refused with `Overloaded`. (Before the fix in `serve.rs`, an answer was charged only
/// once its task first ran, and the reader admitted calls past the budget meanwhile: up to 13
/// answers of 256 KiB waited under a budget of 512 KiB.) Once the peer reads, every slot and
/// buffer is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_wait_for_room_stop_admission_at_the_pending_budget() {
    const CALLS: usize = 200;
    let mut w = waiting(CALLS, BIG_ADMIT).await;
    let config = waiting_config();
    let s = w.conn.stats();
    let ran = w.ran.load(Ordering::SeqCst);
    eprintln!(
        "waiting answers: handler ran {ran} of {CALLS}; held {:?}; in flight {:?}; tracked live {} KiB",
        s.held,
        s.in_flight,
        w.tracked.live() >> 10
    );
    let budget = config.max_pending_response_bytes / BIG_RESPONSE;
    assert_eq!(
        ran, budget,
        "calls admitted while their answers wait, under a budget of {budget} answers"
    );
    assert_eq!(s.in_flight.handlers, ran, "a waiting answer holds its slot");
    assert_eq!(
        s.held.pending_responses,
        ran * BIG_RESPONSE,
        "every waiting answer is charged in full: {s:?}"
    );
    w.cluster
        .assert_honest_works("with answers waiting for room")
        .await;
    let refused = w.read_until_released().await;
    assert_eq!(
        refused.len(),
        CALLS - ran,
        "every call not admitted is refused"
    );
    assert!(
        refused.values().all(|c| *c == ErrorCode::Overloaded),
        "{refused:?}"
    );
    assert_eq!(w.conn.stats().held.pending_responses, 0);
    expect_serve_spans(BIG_ADMIT, ran, "ok").await;
    w.peer.cut().await;
}

/// A cancel that arrives while the answer waits for room finds the answer committed: the call
/// keeps its slot and its charge until the answer is queued (so the cap and the budget count
/// it), then lets go once the peer reads; the connection stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_the_answer_waits_for_room_keeps_the_slot_until_it_is_queued() {
    let mut w = waiting(2, BIG_CANCEL).await;
    let before = w.conn.stats();
    assert_eq!(before.in_flight.handlers, 2, "{before:?}");
    let cancels: Vec<Frame> = w.muxes.iter().map(|m| cancel(*m)).collect();
    send_and_settle(&w.conn, &mut w.peer, &cancels).await;
    let after = w.conn.stats();
    assert_eq!(
        after.in_flight.handlers, before.in_flight.handlers,
        "a committed answer waiting for room let its slot go at the cancel"
    );
    assert_eq!(
        after.held.pending_responses, before.held.pending_responses,
        "the waiting answers' charge changed at the cancel"
    );
    let refused = w.read_until_released().await;
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(w.conn.stats().held.pending_responses, 0);
    expect_serve_spans(BIG_CANCEL, 2, "ok").await;
    w.cluster.assert_honest_works("after the cancels").await;
    w.peer.cut().await;
}

/// A disconnect while answers wait for room ends every waiting task: the slots, the pending
/// charge and the response buffers are all let go, and each call's span ends once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_while_answers_wait_for_room_frees_everything() {
    let w = waiting(16, BIG_CUT).await;
    let s = w.conn.stats();
    assert!(s.in_flight.handlers >= 1, "nothing waits: {s:?}");
    let Waiting {
        cluster,
        peer,
        tracked,
        ran,
        ..
    } = w;
    let ran = ran.load(Ordering::SeqCst);
    peer.cut().await;
    expect_stats(&cluster.node, "in-flight back to zero", released).await;
    eventually(
        "the response buffers let go after the disconnect",
        WAIT,
        || match tracked.live() {
            0 => Ok(()),
            live => Err(live),
        },
    )
    .await;
    // The handler answered: its span says so, once, though the answer went nowhere.
    expect_serve_spans(BIG_CUT, ran, "ok").await;
    cluster.assert_honest_works("after the disconnect").await;
}

// ---- a panic in what the first poll hands back ------------------------------------------------

const READY_AFTER_DROP: HandlerSpec = HandlerSpec::named("FirstPollAttack.readyAfterDrop");
const PANIC_ON_DROP: HandlerSpec = HandlerSpec::named("FirstPollAttack.panicOnDrop");
const PANIC_ON_DROP_LATER: HandlerSpec = HandlerSpec::named("FirstPollAttack.panicOnDropLater");

/// A response buffer whose owner panics when it is dropped (a pool that refuses it back, say).
struct PanicOnDrop(Vec<u8>);

impl AsRef<[u8]> for PanicOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("the response buffer panics when it is dropped");
        }
    }
}

/// A handler's response whose buffer panics when dropped: when the handler answers on its first
/// poll, that drop happens on the connection's reader. The handler's panic must not end the
/// reader (the connection would stop reading and hang until `idle_timeout`): the call is
/// answered, and the next calls on the same connection are too. The same response from a
/// handler that waited first (dropped in its task) is the baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_dropping_what_the_first_poll_returned_does_not_end_the_reader() {
    spans();
    let cluster = Cluster::start(base_config(), 1).await;
    let node = &cluster.node;
    node.register_unary(READY_AFTER_DROP, |_ctx, b: Bytes| async move {
        Ok::<_, RemoteError>(b)
    })
    .unwrap();
    node.register_unary(PANIC_ON_DROP, |_ctx, _b| async move {
        Ok::<_, RemoteError>(Bytes::from_owner(PanicOnDrop(b"fragile".to_vec())))
    })
    .unwrap();
    node.register_unary(PANIC_ON_DROP_LATER, |_ctx, _b| async move {
        tokio::task::yield_now().await;
        Ok::<_, RemoteError>(Bytes::from_owner(PanicOnDrop(b"fragile".to_vec())))
    })
    .unwrap();
    let mut peer = cluster.attacker(0).await;
    peer.read_eagerly();
    for spec in [PANIC_ON_DROP_LATER, PANIC_ON_DROP] {
        let (m, next) = (peer.mux(), peer.mux());
        peer.send(&[request(m, spec, Bytes::new())]).await.unwrap();
        peer.send(&[request(next, READY_AFTER_DROP, Bytes::from_static(b"next"))])
            .await
            .unwrap();
        let got = answers(&mut peer, &[m, next]).await;
        match &got[&m] {
            Frame::Response {
                result: Ok(Some(b)),
                ..
            } => assert_eq!(&b[..], b"fragile", "{}", spec.id),
            other => panic!("{}: {other:?}", spec.id),
        }
        assert!(
            matches!(&got[&next], Frame::Response { result: Ok(Some(b)), .. } if &b[..] == b"next"),
            "{}: the call after it: {:?}",
            spec.id,
            got[&next]
        );
    }
    expect_stats(node, "every slot released", released).await;
    cluster
        .assert_honest_works("after the panics in drop")
        .await;
    peer.cut().await;
}

// ---- a first poll that calls back into its own connection and node --------------------------

const REENTER: HandlerSpec = HandlerSpec::named("FirstPollAttack.reenter");
const LATE_REGISTERED: HandlerSpec = HandlerSpec::named("FirstPollAttack.lateRegistered");
const PEER_ECHO: HandlerSpec = HandlerSpec::named("FirstPollAttack.peerEcho");

/// From its first poll (on the reader, before any wait), a handler reads its node's and its
/// connection's stats and state, registers a new handler on the node (the registry's write lock
/// and a table update to every session, this one included) and starts a call back to its caller
/// over the same connection, whose answer only this reader can deliver. The reader holds no
/// lock while it polls the handler: nothing deadlocks, every call is answered with the peer's
/// reply, and the handler registered from inside is served on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_poll_that_calls_back_into_its_connection_and_node_does_not_deadlock() {
    const CALLS: usize = 20;
    spans();
    let cluster = Cluster::start(base_config(), 1).await;
    // The handler holds its own node: taken back at the end, so the node can be dropped.
    let me: Arc<Mutex<Option<grid_core::Manager>>> =
        Arc::new(Mutex::new(Some(cluster.node.clone())));
    let attacker = cluster.attackers[0].clone();
    let m = me.clone();
    cluster
        .node
        .register_unary(REENTER, move |_ctx, b: Bytes| {
            let node = m.lock().unwrap().clone().expect("the node");
            let attacker = attacker.clone();
            async move {
                // All of this runs in the first poll, on the reader.
                let _ = node.stats();
                let conn = node.connection(&attacker).expect("known peer");
                let _ = (conn.stats(), conn.state());
                let _ = node.register_unary(LATE_REGISTERED, |_ctx, b: Bytes| async move {
                    Ok::<_, RemoteError>(b)
                });
                conn.request(PEER_ECHO.id, b).await.map_err(|e| {
                    RemoteError::text(ErrorCode::Application, format!("call back: {e}"))
                })
            }
        })
        .unwrap();
    let mut peer = cluster.attacker(0).await;
    peer.read_eagerly();
    let muxes: Vec<MuxId> = (0..CALLS).map(|_| peer.mux()).collect();
    let frames: Vec<Frame> = muxes
        .iter()
        .enumerate()
        .map(|(i, m)| request(*m, REENTER, Bytes::from(format!("reenter {i}"))))
        .collect();
    peer.send(&frames).await.unwrap();
    // Play the callee of the node's calls back, and collect the answers to ours.
    let want: HashSet<MuxId> = muxes.iter().copied().collect();
    let mut got: HashMap<MuxId, Frame> = HashMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < CALLS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {CALLS} answered within {WAIT:?}: {got:?}",
            got.len()
        );
        match peer.frame().await {
            Frame::Request {
                mux,
                route,
                payload,
                ..
            } => {
                assert_eq!(route.handler, PEER_ECHO.id);
                let back = Frame::Response {
                    mux,
                    result: Ok(Some(payload.unwrap_or_default())),
                };
                peer.send(&[back]).await.unwrap();
            }
            f @ (Frame::Response { .. } | Frame::Error { .. }) if want.contains(&f.mux()) => {
                assert!(got.insert(f.mux(), f.clone()).is_none(), "answered twice");
            }
            _ => {}
        }
    }
    for (i, m) in muxes.iter().enumerate() {
        match &got[m] {
            Frame::Response {
                result: Ok(Some(b)),
                ..
            } => assert_eq!(&b[..], format!("reenter {i}").as_bytes()),
            other => panic!("call {i}: {other:?}"),
        }
    }
    // The handler registered from a first poll is served on this very connection.
    let late = peer.mux();
    peer.send(&[request(late, LATE_REGISTERED, Bytes::from_static(b"late"))])
        .await
        .unwrap();
    let got = answers(&mut peer, &[late]).await;
    assert!(
        matches!(&got[&late], Frame::Response { result: Ok(Some(b)), .. } if &b[..] == b"late"),
        "{:?}",
        got[&late]
    );
    expect_stats(&cluster.node, "every slot released", released).await;
    expect_serve_spans(REENTER, CALLS, "ok").await;
    cluster.assert_honest_works("after the calls back").await;
    me.lock().unwrap().take();
    peer.cut().await;
}

// ---- wakers and the coop budget -------------------------------------------------------------

const WOKEN_EARLY: HandlerSpec = HandlerSpec::named("FirstPollAttack.wokenEarly");
const COOP: HandlerSpec = HandlerSpec::named("FirstPollAttack.coop");
const READY_BESIDE_COOP: HandlerSpec = HandlerSpec::named("FirstPollAttack.readyBesideCoop");

/// A future that follows the `Future` contract (it keeps the waker of its latest poll) and is
/// made ready, and woken, by another thread started from its first poll: the wake may come while
/// the first poll's no-op waker is the registered one, before the task that takes the future
/// over exists.
struct WokenByThread {
    state: Arc<Mutex<(bool, Option<Waker>)>>,
    started: bool,
}

impl Future for WokenByThread {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let mut st = self.state.lock().unwrap();
        if st.0 {
            return Poll::Ready(());
        }
        st.1 = Some(cx.waker().clone());
        drop(st);
        if !self.started {
            self.started = true;
            let state = self.state.clone();
            std::thread::spawn(move || {
                let waker = {
                    let mut st = state.lock().unwrap();
                    st.0 = true;
                    st.1.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
            });
        }
        Poll::Pending
    }
}

/// Handlers woken from another thread at any moment around the hand-over from the reader to
/// their task (the wake may reach the first poll's no-op waker) are all answered: the task polls
/// once on its own, and the future registers the task's waker then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_woken_before_its_task_exists_is_answered() {
    const CALLS: usize = 200;
    spans();
    let cluster = Cluster::start(base_config(), 1).await;
    cluster
        .node
        .register_unary(WOKEN_EARLY, |_ctx, b: Bytes| async move {
            WokenByThread {
                state: Arc::new(Mutex::new((false, None))),
                started: false,
            }
            .await;
            Ok::<_, RemoteError>(b)
        })
        .unwrap();
    let mut peer = cluster.attacker(0).await;
    peer.read_eagerly();
    let muxes: Vec<MuxId> = (0..CALLS).map(|_| peer.mux()).collect();
    let frames: Vec<Frame> = muxes
        .iter()
        .map(|m| request(*m, WOKEN_EARLY, Bytes::from_static(b"w")))
        .collect();
    peer.send(&frames).await.unwrap();
    let got = answers(&mut peer, &muxes).await;
    assert!(got.values().all(|f| matches!(
        f,
        Frame::Response {
            result: Ok(Some(_)),
            ..
        }
    )));
    expect_stats(&cluster.node, "every slot released", released).await;
    expect_serve_spans(WOKEN_EARLY, CALLS, "ok").await;
    peer.cut().await;
}

/// A handler whose first poll receives 300 ready messages from a tokio channel spends more than
/// tokio's coop budget of the reader's task: the channel then says pending (waking the first
/// poll's no-op waker, which does nothing) and the handler goes on in its task, where it is
/// polled again. Every call is answered, with every message counted, and the reader keeps
/// serving other calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_poll_that_spends_the_coop_budget_is_polled_again_in_its_task() {
    const CALLS: usize = 50;
    const MESSAGES: usize = 300;
    spans();
    let cluster = Cluster::start(base_config(), 1).await;
    cluster
        .node
        .register_unary(READY_BESIDE_COOP, |_ctx, b: Bytes| async move {
            Ok::<_, RemoteError>(b)
        })
        .unwrap();
    cluster
        .node
        .register_unary(COOP, |_ctx: Context, _b| async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            for i in 0..MESSAGES {
                tx.send(i).unwrap();
            }
            drop(tx);
            let mut n = 0usize;
            while rx.recv().await.is_some() {
                n += 1;
            }
            Ok::<_, RemoteError>(Bytes::from(n.to_string()))
        })
        .unwrap();
    let mut peer = cluster.attacker(0).await;
    peer.read_eagerly();
    let mut frames = Vec::new();
    let mut coop = Vec::new();
    let mut ready = Vec::new();
    for _ in 0..CALLS {
        let (c, r) = (peer.mux(), peer.mux());
        frames.push(request(c, COOP, Bytes::new()));
        frames.push(request(r, READY_BESIDE_COOP, Bytes::from_static(b"r")));
        coop.push(c);
        ready.push(r);
    }
    peer.send(&frames).await.unwrap();
    let all: Vec<MuxId> = coop.iter().chain(ready.iter()).copied().collect();
    let got = answers(&mut peer, &all).await;
    for m in &coop {
        assert!(
            matches!(&got[m], Frame::Response { result: Ok(Some(b)), .. } if *b == MESSAGES.to_string().as_bytes()),
            "{:?}",
            got[m]
        );
    }
    for m in &ready {
        assert!(matches!(
            &got[m],
            Frame::Response {
                result: Ok(Some(_)),
                ..
            }
        ));
    }
    expect_stats(&cluster.node, "every slot released", released).await;
    expect_serve_spans(COOP, CALLS, "ok").await;
    peer.cut().await;
}
