//! Unary deadlines served by the connection's walk of its call table (no timer per call), read
//! by a hostile peer: every call ends once, by its deadline or its answer, never before its
//! deadline and never hung; the peer sees each request at most once, a `Cancel` only after its
//! request and at most one, and one for every request of a call that timed out; a caller that
//! gives up after the walk failed its call still tells the peer.
//!
//! A scripted peer (a member holding the cluster secret) plays the other end, frame by frame.

#![allow(clippy::unwrap_used, missing_docs, clippy::result_large_err)]

mod scripted;

use std::collections::{HashMap, HashSet};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use grid_core::frame::Frame;
use grid_core::layer::{ClientCall, ClientReply, Service};
use grid_core::{CallOptions, Connection, Error, HandlerSpec};
use scripted::{base_config, eventually, Cluster, Inbound, ScriptedPeer, WAIT};
use tower::layer::layer_fn;

/// A handler the scripted peer "serves" (it announces no table, so the node calls anything).
const SILENT: HandlerSpec = HandlerSpec::named("Walk.silent");

fn within(timeout: Duration) -> CallOptions {
    CallOptions {
        timeout: Some(timeout),
        ..CallOptions::default()
    }
}

/// Waits until `conn` has exactly `n` unary calls of its own in flight.
async fn unary_out(conn: &Connection, n: usize, what: &str) {
    eventually(what, WAIT, || {
        let got = conn.stats().in_flight.unary_out;
        if got == n {
            Ok(())
        } else {
            Err(got)
        }
    })
    .await;
}

/// The next `Request` the peer gets (other frames are kept in `seen`).
async fn next_request(peer: &mut ScriptedPeer, seen: &mut Vec<Frame>) -> (u32, Bytes) {
    loop {
        match peer.frame().await {
            Frame::Request { mux, payload, .. } => return (mux.0, payload.unwrap_or_default()),
            f => seen.push(f),
        }
    }
}

/// Every frame the node has sent the peer so far, up to a barrier (the socket must be open).
async fn every_frame(peer: &mut ScriptedPeer) -> Vec<Frame> {
    let mut frames: Vec<Frame> = peer
        .received()
        .into_iter()
        .map(|i| match i {
            Inbound::Frame(f) => f,
            other => panic!("the node's socket ended: {other:?}"),
        })
        .collect();
    frames.extend(peer.barrier().await);
    frames
}

/// Every `Request` (mux, payload) and every `Cancel` (by mux) in `frames`, checking on the way
/// that no mux carries two requests, that no `Cancel` comes before its `Request` (or `Open`),
/// and that no call gets two `Cancel`s.
fn requests_and_cancels(frames: &[Frame]) -> (HashMap<u32, Bytes>, HashSet<u32>) {
    let (mut requests, mut cancels) = (HashMap::new(), HashSet::new());
    let mut opened = HashSet::new();
    let ops = || {
        frames
            .iter()
            .map(|f| format!("{:?} {}", f.op(), f.mux().0))
            .collect::<Vec<_>>()
    };
    for f in frames {
        match f {
            Frame::Request { mux, payload, .. } => {
                let fresh = requests
                    .insert(mux.0, payload.clone().unwrap_or_default())
                    .is_none();
                assert!(fresh, "two requests on mux {} ({:?})", mux.0, ops());
                opened.insert(mux.0);
            }
            Frame::Open { mux, .. } => {
                opened.insert(mux.0);
            }
            Frame::Cancel { mux, .. } => {
                assert!(
                    opened.contains(&mux.0),
                    "a Cancel for mux {} before (or without) its Request ({:?})",
                    mux.0,
                    ops()
                );
                assert!(
                    cancels.insert(mux.0),
                    "two Cancels for mux {} ({:?})",
                    mux.0,
                    ops()
                );
            }
            _ => {}
        }
    }
    (requests, cancels)
}

/// A call whose deadline the walk served while its caller was not looking (the caller's task
/// busy elsewhere, or a `select!` whose other branch won), then dropped: its request reached
/// the peer, so the peer must still hear that the call is over. Dropping a call's future
/// cancels it on the callee; the walk having failed it first changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_after_the_walk_failed_it_still_cancels_on_the_callee() {
    let cluster = Cluster::start(base_config(), 1).await;
    let mut peer = cluster.attacker(0).await;
    peer.read_eagerly();
    let conn = cluster.node.connection(&peer.name).unwrap();

    let mut call = Box::pin(conn.call(
        SILENT.id,
        Bytes::from_static(b"dropped late"),
        within(Duration::from_millis(20)),
    ));
    // One poll registers the call and queues its request; then nobody polls it.
    assert!(futures::poll!(call.as_mut()).is_pending());
    let mut seen = Vec::new();
    let (mux, payload) = next_request(&mut peer, &mut seen).await;
    assert_eq!(&payload[..], b"dropped late");
    unary_out(&conn, 0, "the walk fails the call at its deadline").await;
    drop(call);

    seen.extend(peer.barrier().await);
    let cancels: Vec<_> = seen
        .iter()
        .filter(|f| matches!(f, Frame::Cancel { .. }))
        .collect();
    assert!(
        cancels.iter().any(|f| f.mux().0 == mux),
        "the peer never heard that call {mux} is over: {seen:?}"
    );
    assert_eq!(cancels.len(), 1, "{seen:?}");
    assert_eq!(conn.stats().in_flight.total(), 0);
    cluster.assert_honest_works("after the dropped call").await;
    peer.cut().await;
}

/// As above, with the request still queued when the caller lets go (the writer is stuck on a
/// large request the peer does not read): the request must be taken back, not sent after its
/// call is over (or, if the writer took it meanwhile, followed by its `Cancel`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_of_a_call_dropped_after_the_walk_failed_it_is_taken_back() {
    let cluster = Cluster::start(base_config(), 1).await;
    let mut peer = cluster.attacker(0).await;
    let conn = cluster.node.connection(&peer.name).unwrap();

    // A request far larger than the socket's buffers: the writer is stuck on it until the peer
    // reads (and the peer reads nothing yet).
    let filler = {
        let conn = conn.clone();
        tokio::spawn(async move {
            conn.call(
                SILENT.id,
                Bytes::from(vec![1u8; 1 << 20]),
                within(Duration::from_secs(30)),
            )
            .await
        })
    };
    eventually("the writer took the large request", WAIT, || {
        let s = conn.stats();
        if s.bytes_out >= 1 << 20 && s.held.queued == 0 {
            Ok(())
        } else {
            Err((s.bytes_out, s.held))
        }
    })
    .await;

    let mut call = Box::pin(conn.call(
        SILENT.id,
        Bytes::from_static(b"queued, dropped late"),
        within(Duration::from_millis(20)),
    ));
    assert!(futures::poll!(call.as_mut()).is_pending());
    assert!(
        conn.stats().held.queued > 0,
        "the request is queued behind the stuck writer"
    );
    unary_out(&conn, 1, "the walk fails the small call; the filler waits").await;
    drop(call);

    // The peer reads everything now and answers the filler.
    peer.read_eagerly();
    let mut frames = Vec::new();
    let (filler_mux, _) = next_request(&mut peer, &mut frames).await;
    peer.send(&[Frame::Response {
        mux: grid_core::MuxId(filler_mux),
        result: Ok(None),
    }])
    .await
    .unwrap();
    let got = tokio::time::timeout(WAIT, filler)
        .await
        .expect("the filler hung after its response")
        .unwrap();
    assert!(got.is_ok(), "{got:?}");
    // A data frame still queued when the barrier's ping comes goes out in the pong's batch,
    // after it (control frames lead a batch): a second barrier lets it arrive.
    frames.extend(peer.barrier().await);
    frames.extend(peer.barrier().await);
    let (requests, cancels) = requests_and_cancels(&frames);
    for (mux, payload) in &requests {
        if &payload[..] == b"queued, dropped late" {
            assert!(
                cancels.contains(mux),
                "the request of a call over before it was sent went out, with no Cancel after it"
            );
        }
    }
    assert!(cancels.iter().all(|m| *m != filler_mux), "{cancels:?}");
    assert_eq!(conn.stats().in_flight.total(), 0);
    cluster
        .assert_honest_works("after the taken-back request")
        .await;
    peer.cut().await;
}

/// The timeout of flood call `i`: zero, sub-millisecond ones (1 ns, 1 µs, 400 µs), and
/// milliseconds, so the walk sees deadlines due before, at and long after the one it was woken
/// for, in another order than the calls started.
fn mixed_timeout(i: usize) -> Duration {
    let ms = |m: usize| Duration::from_millis(m as u64);
    match i % 8 {
        0 => Duration::ZERO,
        1 => Duration::from_nanos(1),
        2 => Duration::from_micros(1),
        3 => Duration::from_micros(400),
        4 => ms(2),
        5 => ms(15 + i % 10),
        6 => ms(50 + i % 37),
        _ => ms(100),
    }
}

/// Spawns one call per timeout to `SILENT`, each with its index as payload; each result comes
/// back with its index and how long it took, bounded by [`WAIT`] (a hung call fails loudly).
fn spawn_calls(
    conn: &Connection,
    timeouts: impl IntoIterator<Item = Duration>,
) -> tokio::task::JoinSet<(usize, Duration, Duration, Result<Bytes, Error>)> {
    let mut calls = tokio::task::JoinSet::new();
    for (i, timeout) in timeouts.into_iter().enumerate() {
        let conn = conn.clone();
        calls.spawn(async move {
            let started = Instant::now();
            let got = tokio::time::timeout(
                WAIT,
                conn.call(SILENT.id, Bytes::from(i.to_string()), within(timeout)),
            )
            .await
            .unwrap_or_else(|_| panic!("call {i} (timeout {timeout:?}) hung past {WAIT:?}"));
            (i, timeout, started.elapsed(), got)
        });
    }
    calls
}

fn index_of(payload: &Bytes) -> usize {
    std::str::from_utf8(payload).unwrap().parse().unwrap()
}

/// A peer that reads every request and answers none: thousands of calls with mixed timeouts
/// (zero and under a millisecond among them) each end with `Deadline`, none before its
/// deadline, none hung. The peer gets each request at most once, none of a zero timeout, and
/// for each one exactly one `Cancel`, after it: every call timed out, and its caller told the
/// callee (or took the request back before the writer sent it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_sees_each_request_once_then_exactly_one_cancel() {
    const CALLS: usize = 3000;
    let cluster = Cluster::start(base_config(), 1).await;
    let mut peer = cluster.attacker(0).await;
    peer.read_eagerly();
    let conn = cluster.node.connection(&peer.name).unwrap();
    let connects = conn.stats().connects;

    let mut calls = spawn_calls(&conn, (0..CALLS).map(mixed_timeout));
    let mut ended = 0;
    while let Some(done) = calls.join_next().await {
        let (i, timeout, took, got) = done.unwrap();
        assert!(
            matches!(got, Err(Error::Deadline)),
            "call {i} (timeout {timeout:?}) to a silent peer got {got:?}"
        );
        assert!(
            took >= timeout,
            "call {i} failed after {took:?}, before its timeout {timeout:?}"
        );
        ended += 1;
    }
    assert_eq!(ended, CALLS);
    unary_out(&conn, 0, "every timed-out call left the table").await;

    let frames = every_frame(&mut peer).await;
    let (requests, cancels) = requests_and_cancels(&frames);
    let mut indices = HashSet::new();
    for (mux, payload) in &requests {
        let i = index_of(payload);
        assert!(indices.insert(i), "call {i}'s request came twice");
        assert!(
            !mixed_timeout(i).is_zero(),
            "call {i} had no time at all, yet its request went out"
        );
        assert!(
            cancels.contains(mux),
            "call {i} (timeout {:?}) timed out, its request reached the peer, and no Cancel followed",
            mixed_timeout(i)
        );
    }
    assert!(
        cancels.iter().all(|m| requests.contains_key(m)),
        "checked by requests_and_cancels"
    );
    assert!(!requests.is_empty(), "no request reached the peer at all");
    eprintln!(
        "{} of {CALLS} requests reached the silent peer, the rest were taken back",
        requests.len()
    );
    assert_eq!(conn.stats().connects, connects, "the link was replaced");
    cluster.assert_honest_works("after the silent flood").await;
    peer.cut().await;
}

/// A peer that answers each call at 20 to 40 ms after it gets the request, around the caller's
/// 30 ms deadline: each call has exactly one outcome (its own payload or `Deadline`), and the
/// peer gets a `Cancel` exactly for the calls that ended with `Deadline` after their request
/// reached it, never for an answered one. Late answers do not close the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_answered_around_their_deadline_end_exactly_once() {
    const CALLS: usize = 600;
    const TIMEOUT: Duration = Duration::from_millis(30);
    let cluster = Cluster::start(base_config(), 1).await;
    let mut peer = cluster.attacker(0).await;
    peer.read_eagerly();
    let conn = cluster.node.connection(&peer.name).unwrap();
    let connects = conn.stats().connects;

    let calls = spawn_calls(&conn, (0..CALLS).map(|_| TIMEOUT));
    let outcomes = tokio::spawn(async move {
        let mut calls = calls;
        let mut out = HashMap::new();
        while let Some(done) = calls.join_next().await {
            let (i, _, took, got) = done.unwrap();
            out.insert(i, (took, got));
        }
        out
    });

    // Answers each request at its time, until every caller has its outcome.
    let mut frames = Vec::new();
    let mut due: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u32)>> =
        std::collections::BinaryHeap::new();
    let mut payloads = HashMap::new();
    let bound = Instant::now() + WAIT;
    while !(outcomes.is_finished() && due.is_empty()) {
        assert!(
            Instant::now() < bound,
            "the exchange did not end within {WAIT:?}"
        );
        let now = Instant::now();
        let mut answers = Vec::new();
        while let Some(std::cmp::Reverse((at, mux))) = due.peek().copied() {
            if at > now {
                break;
            }
            due.pop();
            answers.push(Frame::Response {
                mux: grid_core::MuxId(mux),
                result: Ok(Some(payloads.remove(&mux).unwrap())),
            });
        }
        if !answers.is_empty() {
            peer.send(&answers).await.unwrap();
        }
        let wait = due
            .peek()
            .map_or(Duration::from_millis(5), |std::cmp::Reverse((at, _))| {
                at.saturating_duration_since(now)
            })
            .min(Duration::from_millis(5));
        match peer.recv_within(wait).await {
            None => {}
            Some(Inbound::Frame(f)) => {
                if let Frame::Request { mux, payload, .. } = &f {
                    let payload = payload.clone().unwrap_or_default();
                    let delay = Duration::from_millis(20 + (index_of(&payload) % 21) as u64);
                    due.push(std::cmp::Reverse((Instant::now() + delay, mux.0)));
                    payloads.insert(mux.0, payload);
                }
                frames.push(f);
            }
            Some(other) => panic!("the node's socket ended: {other:?}"),
        }
    }
    let outcomes = outcomes.await.unwrap();
    frames.extend(peer.barrier().await);
    let (requests, cancels) = requests_and_cancels(&frames);
    let mux_of: HashMap<usize, u32> = requests
        .iter()
        .map(|(mux, p)| (index_of(p), *mux))
        .collect();
    let (mut answered, mut expired) = (0, 0);
    for i in 0..CALLS {
        let (took, got) = outcomes
            .get(&i)
            .unwrap_or_else(|| panic!("call {i} has no outcome"));
        let cancelled = mux_of.get(&i).is_some_and(|m| cancels.contains(m));
        match got {
            Ok(p) => {
                assert_eq!(index_of(p), i, "call {i} got another call's answer");
                assert!(
                    !cancelled,
                    "call {i} was answered, and the peer got a Cancel"
                );
                answered += 1;
            }
            Err(Error::Deadline) => {
                assert!(*took >= TIMEOUT, "call {i} failed after {took:?}");
                assert!(
                    cancelled || !mux_of.contains_key(&i),
                    "call {i} timed out after its request reached the peer, and no Cancel came"
                );
                expired += 1;
            }
            Err(e) => panic!("call {i}, answered around its deadline, got {e:?}"),
        }
    }
    eprintln!("around the deadline: {answered} answered, {expired} expired");
    assert_eq!(answered + expired, CALLS);
    unary_out(&conn, 0, "every call left the table").await;
    assert_eq!(
        conn.stats().connects,
        connects,
        "late answers replaced the link"
    );
    peer.cut().await;
}

/// A session closed while calls wait (long deadlines, and none: `Duration::MAX`) fails them
/// all with `Disconnected` at once, not at their deadlines. On the next session (the peer
/// reconnects) deadlines are served again, and a call without one is not failed by the walks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_fails_waiting_calls_at_once_and_the_next_session_serves_deadlines() {
    const CALLS: usize = 300;
    let cluster = Cluster::start(base_config(), 1).await;
    let mut peer = cluster.attacker(0).await;
    peer.read_eagerly();
    let conn = cluster.node.connection(&peer.name).unwrap();

    let long = |i: usize| {
        if i % 3 == 0 {
            Duration::MAX
        } else {
            Duration::from_secs(30)
        }
    };
    let mut calls = spawn_calls(&conn, (0..CALLS).map(long));
    let mut seen = Vec::new();
    for _ in 0..CALLS {
        next_request(&mut peer, &mut seen).await;
    }
    unary_out(&conn, CALLS, "every call is in flight").await;
    peer.cut().await;
    while let Some(done) = calls.join_next().await {
        let (i, timeout, _, got) = done.unwrap();
        assert!(
            matches!(got, Err(Error::Disconnected { .. })),
            "call {i} (timeout {timeout:?}) sent, then its link closed: {got:?}"
        );
    }
    cluster
        .expect_node_disconnected(&cluster.attackers[0], "the cut")
        .await;

    // The next session.
    let mut peer = cluster.attacker(0).await;
    peer.read_eagerly();
    let mut forever = Box::pin(conn.call(
        SILENT.id,
        Bytes::from_static(b"no deadline"),
        within(Duration::MAX),
    ));
    assert!(futures::poll!(forever.as_mut()).is_pending());
    let mut frames = Vec::new();
    let (forever_mux, _) = next_request(&mut peer, &mut frames).await;
    let mut calls = spawn_calls(&conn, (0..CALLS).map(|i| mixed_timeout(i + 1)));
    while let Some(done) = calls.join_next().await {
        let (i, timeout, took, got) = done.unwrap();
        assert!(
            matches!(got, Err(Error::Deadline)),
            "call {i} (timeout {timeout:?}) on the new session got {got:?}"
        );
        assert!(took >= timeout, "call {i} failed after {took:?}");
    }
    unary_out(&conn, 1, "only the call without a deadline is left").await;
    peer.send(&[Frame::Response {
        mux: grid_core::MuxId(forever_mux),
        result: Ok(Some(Bytes::from_static(b"at last"))),
    }])
    .await
    .unwrap();
    let got = tokio::time::timeout(WAIT, forever)
        .await
        .expect("the call without a deadline hung after its answer");
    assert_eq!(&got.unwrap()[..], b"at last");
    frames.extend(peer.barrier().await);
    let (requests, cancels) = requests_and_cancels(&frames);
    assert!(
        requests
            .keys()
            .all(|m| *m == forever_mux || cancels.contains(m)),
        "a timed-out call's request reached the peer with no Cancel after it"
    );
    assert!(!cancels.contains(&forever_mux));
    assert_eq!(conn.stats().in_flight.total(), 0);
    peer.cut().await;
}

/// The timer task sleeps until the earliest timer it knows of: a unary call's far deadline
/// (35,000 years away: representable, unlike `Duration::MAX`), a stream's (its ping, its
/// deadline), a long call's. A call with a shorter deadline, made while it sleeps, must wake
/// it: the call ends by its deadline, not at the later timer. The long calls and the stream
/// are left alone, and answered later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_deadline_wakes_a_timer_task_asleep_on_a_later_timer() {
    const SHORT: Duration = Duration::from_millis(20);
    let cluster = Cluster::start(base_config(), 1).await;
    let mut peer = cluster.attacker(0).await;
    peer.read_eagerly();
    let conn = cluster.node.connection(&peer.name).unwrap();
    let mut frames = Vec::new();

    let short_call = |what: &'static str| {
        let conn = conn.clone();
        async move {
            let started = Instant::now();
            let got = tokio::time::timeout(
                WAIT,
                conn.call(SILENT.id, Bytes::from_static(b"short"), within(SHORT)),
            )
            .await
            .unwrap_or_else(|_| panic!("{what}: a {SHORT:?} call hung past {WAIT:?}"));
            assert!(matches!(got, Err(Error::Deadline)), "{what}: {got:?}");
            assert!(started.elapsed() >= SHORT, "{what}: failed early");
        }
    };

    let mut far = Box::pin(conn.call(
        SILENT.id,
        Bytes::from_static(b"far"),
        within(Duration::from_secs(1 << 40)),
    ));
    assert!(futures::poll!(far.as_mut()).is_pending());
    let far_mux = request_of(&mut peer, b"far", &mut frames).await;
    short_call("asleep on a deadline 35,000 years away").await;

    // A stream whose timers are seconds away (its ping at 15 s, its deadline at 60 s).
    let stream = conn
        .open_stream(
            SILENT.id,
            Bytes::new(),
            grid_core::StreamOptions {
                timeout: Some(Duration::from_secs(60)),
                ..grid_core::StreamOptions::default()
            },
        )
        .await
        .unwrap();
    short_call("asleep on the stream's timers").await;

    // A long call: its deadline is now the earliest unary one, the stream's timers earlier.
    let mut long = Box::pin(conn.call(
        SILENT.id,
        Bytes::from_static(b"long"),
        within(Duration::from_secs(40)),
    ));
    assert!(futures::poll!(long.as_mut()).is_pending());
    let long_mux = request_of(&mut peer, b"long", &mut frames).await;
    short_call("with a long call in flight").await;
    short_call("again, after a walk").await;
    let s = conn.stats().in_flight;
    assert_eq!(
        (s.unary_out, s.streams_out),
        (2, 1),
        "the long calls and the stream are left"
    );

    for (mux, answer) in [(long_mux, &b"long answer"[..]), (far_mux, b"far answer")] {
        peer.send(&[Frame::Response {
            mux: grid_core::MuxId(mux),
            result: Ok(Some(Bytes::from_static(answer))),
        }])
        .await
        .unwrap();
    }
    for (call, answer) in [(long, &b"long answer"[..]), (far, b"far answer")] {
        let got = tokio::time::timeout(WAIT, call)
            .await
            .expect("a long call hung after its answer");
        assert_eq!(&got.unwrap()[..], answer);
    }
    drop(stream);
    frames.extend(peer.barrier().await);
    let (requests, cancels) = requests_and_cancels(&frames);
    assert!(
        frames.iter().any(|f| matches!(f, Frame::Open { .. })),
        "{frames:?}"
    );
    for (mux, payload) in &requests {
        let answered = *mux == long_mux || *mux == far_mux;
        assert_eq!(
            cancels.contains(mux),
            !answered,
            "request {payload:?}: answered {answered}, cancelled {}",
            cancels.contains(mux)
        );
    }
    peer.cut().await;
}

/// Reads frames (keeping them all in `frames`) until the `Request` whose payload is
/// `payload`; returns its mux.
async fn request_of(peer: &mut ScriptedPeer, payload: &[u8], frames: &mut Vec<Frame>) -> u32 {
    loop {
        let f = peer.frame().await;
        let mux = match &f {
            Frame::Request {
                mux,
                payload: Some(p),
                ..
            } if &p[..] == payload => Some(mux.0),
            _ => None,
        };
        frames.push(f);
        if let Some(mux) = mux {
            return mux;
        }
    }
}

/// A client layer that gives up after the call's own timeout, as a user's timeout layer
/// would: it races the walk for every call, and whichever ends the call first, the caller
/// tells the peer.
#[derive(Clone)]
struct GiveUpAtTimeout<S>(S);

impl<S> Service<ClientCall> for GiveUpAtTimeout<S>
where
    S: Service<ClientCall, Response = ClientReply, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = ClientReply;
    type Error = Error;
    type Future = BoxFuture<'static, Result<ClientReply, Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, call: ClientCall) -> Self::Future {
        let timeout = call.timeout().expect("every call here has a timeout");
        let inner = self.0.call(call);
        Box::pin(async move {
            tokio::time::timeout(timeout, inner)
                .await
                .unwrap_or(Err(Error::Deadline))
        })
    }
}

/// Calls through client layers still time out: through a layer that only passes them on, and
/// through one that gives up at the same timeout itself (so it drops the call's future just
/// before, or just after, the walk failed it). Either way each call ends with `Deadline` and
/// each request that reached the peer is followed by one `Cancel`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_layers_time_out_and_each_tells_the_peer() {
    const CALLS: usize = 800;
    let cluster = Cluster::start(base_config(), 1).await;
    let mut peer = cluster.attacker(0).await;
    peer.read_eagerly();
    let conn = cluster.node.connection(&peer.name).unwrap();
    let passing = conn.with_layer(tower::layer::util::Identity::new());
    let giving_up = conn.with_layer(layer_fn(GiveUpAtTimeout));

    for (what, layered) in [("passing on", &passing), ("giving up", &giving_up)] {
        let timeouts = (0..CALLS).map(|i| Duration::from_micros(500 + 37 * (i % 500) as u64));
        let mut calls = spawn_calls(layered, timeouts);
        while let Some(done) = calls.join_next().await {
            let (i, timeout, took, got) = done.unwrap();
            assert!(
                matches!(got, Err(Error::Deadline)),
                "{what}: call {i} (timeout {timeout:?}) got {got:?}"
            );
            assert!(took >= timeout, "{what}: call {i} failed after {took:?}");
        }
        unary_out(&conn, 0, "every layered call left the table").await;
    }
    let frames = every_frame(&mut peer).await;
    let (requests, cancels) = requests_and_cancels(&frames);
    let untold: Vec<_> = requests.keys().filter(|m| !cancels.contains(m)).collect();
    assert!(
        untold.is_empty(),
        "{} of {} requests that reached the peer got no Cancel",
        untold.len(),
        requests.len()
    );
    cluster.assert_honest_works("after the layered calls").await;
    peer.cut().await;
}

/// Under tokio's paused clock (how users test their timeouts), a call's deadline passes in
/// virtual time, as a `tokio::time::timeout` would: a 3 s timeout ends at once in real time,
/// instead of the timer task spinning until the real clock catches up.
#[tokio::test(flavor = "current_thread")]
async fn a_deadline_follows_tokios_clock_when_it_is_paused() {
    let c = Cluster::start(base_config(), 1).await;
    let peer = c.attacker(0).await;
    peer.read_eagerly();
    let conn = c.node.connection(&c.attackers[0]).unwrap();
    // Paused once the link is up: the handshake's timeouts run on the real clock.
    tokio::time::pause();
    let (real, virtual_start) = (Instant::now(), tokio::time::Instant::now());
    let got = conn
        .call(
            SILENT.id,
            Bytes::from_static(b"x"),
            within(Duration::from_secs(3)),
        )
        .await;
    let (virtual_time, real_time) = (virtual_start.elapsed(), real.elapsed());
    assert!(matches!(got, Err(Error::Deadline)), "{got:?}");
    assert!(
        virtual_time >= Duration::from_secs(3),
        "ended {virtual_time:?} into a 3 s timeout on tokio's clock"
    );
    assert!(
        real_time < Duration::from_secs(2),
        "took {real_time:?} of real time: the deadline waited for the real clock"
    );
    drop(peer);
}
