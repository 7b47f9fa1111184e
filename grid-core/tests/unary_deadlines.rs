//! Unary deadlines: every caller gets its one outcome by its deadline, the callee hears of it only when it got the request,
//! and nothing stays behind (calls in flight, queued requests).
//!
//! Real nodes over loopback for the floods; a scripted peer that does not read for a data lane
//! that stays full.

#![allow(clippy::unwrap_used, missing_docs, clippy::result_large_err)]

mod common;
mod scripted;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{builder, dialer_and_acceptor, eventually, quiet_config, WAIT};
use grid_core::frame::Frame;
use grid_core::{CallOptions, CancelCause, Config, Error, HandlerSpec, Manager, RemoteError};
use scripted::{base_config, Cluster, Inbound};

const SILENT: HandlerSpec = HandlerSpec::named("Deadlines.silent");
const LATE: HandlerSpec = HandlerSpec::named("Deadlines.late");
const ECHO: HandlerSpec = HandlerSpec::named("Deadlines.echo");

fn within(timeout: Duration) -> CallOptions {
    CallOptions {
        timeout: Some(timeout),
        ..CallOptions::default()
    }
}

/// Two real nodes, connected: the first dials the second. Both serve `ECHO`.
async fn pair(config: Config) -> (Manager, Manager) {
    let ((la, a), (lb, b)) = dialer_and_acceptor();
    let ma = builder(la, &a, std::slice::from_ref(&b), config.clone())
        .start()
        .await
        .unwrap();
    let mb = builder(lb, &b, std::slice::from_ref(&a), config)
        .start()
        .await
        .unwrap();
    for m in [&ma, &mb] {
        m.register_unary(ECHO, |_ctx, payload: Bytes| async move {
            Ok::<_, RemoteError>(payload)
        })
        .unwrap();
    }
    ma.wait_for_peers(WAIT).await.unwrap();
    mb.wait_for_peers(WAIT).await.unwrap();
    (ma, mb)
}

/// Waits until neither node has a call in flight, in either direction.
async fn drained(nodes: &[&Manager], what: &str) {
    for n in nodes {
        eventually(what, WAIT, || {
            let s = n.stats();
            if s.in_flight.total() == 0 && s.in_flight.handlers == 0 {
                Ok(())
            } else {
                Err(s.in_flight)
            }
        })
        .await;
    }
}

/// Many calls at once with tiny deadlines to a handler that never answers: every caller gets
/// `Deadline` (within a bound, not hung), every handler is cancelled with `Deadline`, and both
/// nodes' calls in flight return to zero; the link stays up and serves the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_calls_that_all_time_out_each_get_deadline_and_leave_nothing_in_flight() {
    const CALLS: usize = 300;
    let (caller, callee) = pair(quiet_config()).await;
    let started = Arc::new(AtomicUsize::new(0));
    let by_deadline = Arc::new(AtomicUsize::new(0));
    let other_cause = Arc::new(parking_lot::Mutex::new(Vec::new()));
    {
        let (started, by_deadline, other_cause) =
            (started.clone(), by_deadline.clone(), other_cause.clone());
        callee
            .register_unary(SILENT, move |ctx, _payload: Bytes| {
                let (started, by_deadline, other_cause) =
                    (started.clone(), by_deadline.clone(), other_cause.clone());
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    match ctx.cancelled().await {
                        CancelCause::Deadline => by_deadline.fetch_add(1, Ordering::SeqCst),
                        other => {
                            other_cause.lock().push(other);
                            0
                        }
                    };
                    Ok::<_, RemoteError>(Bytes::new())
                }
            })
            .unwrap();
    }
    let conn = caller.connection(callee.name()).unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let conn = conn.clone();
        // Deadlines from 20 to 79 ms, so the calls end in another order than they started.
        let timeout = Duration::from_millis(20 + (i % 60) as u64);
        calls.spawn(async move {
            tokio::time::timeout(
                WAIT,
                conn.call(SILENT.id, Bytes::from(vec![7u8; 64]), within(timeout)),
            )
            .await
        });
    }
    let mut deadlines = 0;
    while let Some(done) = calls.join_next().await {
        match done.unwrap() {
            Ok(Err(Error::Deadline)) => deadlines += 1,
            Ok(other) => panic!("a silent handler's caller got {other:?}, not Deadline"),
            Err(_) => panic!("a call with a deadline under 80 ms hung past {WAIT:?}"),
        }
    }
    assert_eq!(deadlines, CALLS);
    drained(
        &[&caller, &callee],
        "every timed-out call leaves both tables",
    )
    .await;
    // Each handler that ran was cancelled for its deadline (none for another cause). A
    // request retracted before the writer took it never reaches the callee.
    let ran = started.load(Ordering::SeqCst);
    assert!(
        other_cause.lock().is_empty(),
        "{:?}",
        other_cause.lock().clone()
    );
    assert_eq!(
        by_deadline.load(Ordering::SeqCst),
        ran,
        "of {ran} handlers run"
    );
    assert!(ran > 0, "no request reached the callee at all");
    let echoed = conn
        .call(ECHO.id, Bytes::from_static(b"after"), within(WAIT))
        .await
        .unwrap();
    assert_eq!(&echoed[..], b"after");
    drained(&[&caller, &callee], "the echo after the flood").await;
}

/// A flood of calls answered in time, each with a deadline: every one succeeds and no timer is
/// left to fire later (a fired timer would fail nothing, but would cancel on the callee a call
/// that is over: the callee sees no cancel at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_answered_in_time_leave_no_deadline_behind() {
    const CALLS: usize = 500;
    let (caller, callee) = pair(quiet_config()).await;
    let conn = caller.connection(callee.name()).unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let conn = conn.clone();
        calls.spawn(async move {
            let payload = Bytes::from(format!("call {i}"));
            let got = conn
                .call(ECHO.id, payload.clone(), within(Duration::from_millis(300)))
                .await;
            (payload, got)
        });
    }
    while let Some(done) = calls.join_next().await {
        let (payload, got) = done.unwrap();
        assert_eq!(got.unwrap(), payload);
    }
    drained(&[&caller, &callee], "answered calls leave both tables").await;
    // Past every deadline: the connection is still up and still serves.
    let s = conn.stats();
    let after = tokio::time::timeout(
        WAIT,
        conn.call(
            ECHO.id,
            Bytes::from_static(b"later"),
            within(Duration::from_secs(1)),
        ),
    )
    .await
    .expect("a call after the flood hung")
    .unwrap();
    assert_eq!(&after[..], b"later");
    assert_eq!(s.connects, conn.stats().connects, "the link was replaced");
}

/// A handler that answers around the caller's deadline (some before, some after): each call has
/// exactly one outcome, its payload or `Deadline`, never another error; nothing stays in
/// flight; the connection is not closed by a late `Response` crossing a `Cancel`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_answered_at_its_deadline_has_exactly_one_outcome() {
    const CALLS: usize = 200;
    let (caller, callee) = pair(quiet_config()).await;
    callee
        .register_unary(LATE, |_ctx, payload: Bytes| async move {
            // The payload says how long to take: 40 to 59 ms around a 50 ms deadline. The
            // handler ignores its own cancellation, so its answer races the caller's timer.
            let ms = u64::from(payload[0]);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, RemoteError>(payload)
        })
        .unwrap();
    let conn = caller.connection(callee.name()).unwrap();
    let connects = conn.stats().connects;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let conn = conn.clone();
        let payload = Bytes::from(vec![40 + (i % 20) as u8, (i % 256) as u8]);
        calls.spawn(async move {
            let got = tokio::time::timeout(
                WAIT,
                conn.call(LATE.id, payload.clone(), within(Duration::from_millis(50))),
            )
            .await;
            (payload, got)
        });
    }
    let (mut answered, mut expired) = (0, 0);
    while let Some(done) = calls.join_next().await {
        let (payload, got) = done.unwrap();
        match got.expect("a call with a 50 ms deadline hung") {
            Ok(p) => {
                assert_eq!(p, payload, "an answer went to the wrong call");
                answered += 1;
            }
            Err(Error::Deadline) => expired += 1,
            Err(e) => panic!("a call answered around its deadline got {e:?}"),
        }
    }
    assert_eq!(answered + expired, CALLS);
    eprintln!("around the deadline: {answered} answered, {expired} expired");
    drained(&[&caller, &callee], "calls answered around their deadline").await;
    assert_eq!(conn.stats().connects, connects, "the link was replaced");
    let echoed = conn
        .call(ECHO.id, Bytes::from_static(b"next"), within(WAIT))
        .await
        .unwrap();
    assert_eq!(&echoed[..], b"next");
}

/// What the scripted peer received: every `Request`'s mux (by payload) and the `Cancel`s, in
/// order. Fails loudly on a `Cancel` for a call whose `Request` did not come first.
fn requests_and_cancels(frames: &[Frame]) -> (Vec<(u32, Bytes)>, Vec<u32>) {
    let mut requested = HashSet::new();
    let (mut requests, mut cancels) = (Vec::new(), Vec::new());
    for f in frames {
        match f {
            Frame::Request { mux, payload, .. } => {
                requested.insert(mux.0);
                requests.push((mux.0, payload.clone().unwrap_or_default()));
            }
            Frame::Cancel { mux, .. } => {
                assert!(
                    requested.contains(&mux.0),
                    "a Cancel for mux {} whose Request the peer never got (frames: {:?})",
                    mux.0,
                    frames
                        .iter()
                        .map(|f| format!("{:?} {}", f.op(), f.mux().0))
                        .collect::<Vec<_>>()
                );
                cancels.push(mux.0);
            }
            _ => {}
        }
    }
    (requests, cancels)
}

/// The node calls a peer that does not read, until its data lane is full; a call with a short
/// deadline then waits for room and gets `Deadline` at its time, and a call dropped while it
/// waits ends too. Neither request is ever sent, nor a `Cancel` for it (the peer never heard
/// of them), when the peer reads again; the fillers' calls are all accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_while_waiting_for_room_sends_neither_the_request_nor_a_cancel() {
    let config = Config {
        max_queued_bytes: 64 << 10,
        ..base_config()
    };
    let cluster = Cluster::start(config, 1).await;
    let mut peer = cluster.attacker(0).await;
    let conn = cluster.node.connection(&peer.name).unwrap();

    // Requests of 256 KiB with long deadlines fill the socket, then the data lane.
    let mut fillers = Vec::new();
    for i in 0..8u8 {
        let filler = conn.clone();
        fillers.push(tokio::spawn(async move {
            filler
                .call(
                    SILENT.id,
                    Bytes::from(vec![i; 256 << 10]),
                    within(Duration::from_secs(30)),
                )
                .await
        }));
        eventually("the filler is in flight", WAIT, || {
            let n = conn.stats().in_flight.unary_out;
            if n > usize::from(i) {
                Ok(())
            } else {
                Err(n)
            }
        })
        .await;
    }
    eventually("the node's data lane is full", WAIT, || {
        let s = conn.stats();
        if s.held.queued >= 64 << 10 {
            Ok(())
        } else {
            Err(s.held)
        }
    })
    .await;

    let timed = tokio::time::timeout(
        WAIT,
        conn.call(
            SILENT.id,
            Bytes::from_static(b"timed out waiting"),
            within(Duration::from_millis(100)),
        ),
    )
    .await
    .expect("a call with a 100 ms deadline hung while it waited for room");
    assert!(matches!(timed, Err(Error::Deadline)), "{timed:?}");

    // A call given up by its caller while it waits for room.
    let dropped = tokio::time::timeout(
        Duration::from_millis(50),
        conn.call(
            SILENT.id,
            Bytes::from_static(b"dropped waiting"),
            within(Duration::from_secs(30)),
        ),
    )
    .await;
    assert!(dropped.is_err(), "the lane had room after all: {dropped:?}");
    eventually("only the fillers are in flight", WAIT, || {
        let n = conn.stats().in_flight.unary_out;
        if n == fillers.len() {
            Ok(())
        } else {
            Err(n)
        }
    })
    .await;

    // The peer reads everything now and answers each filler it got.
    peer.read_eagerly();
    let mut frames = Vec::new();
    let mut answered = HashSet::new();
    while answered.len() < fillers.len() {
        match peer.recv().await {
            Inbound::Frame(f) => {
                if let Frame::Request { mux, .. } = &f {
                    answered.insert(mux.0);
                    peer.send(&[Frame::Response {
                        mux: *mux,
                        result: Ok(None),
                    }])
                    .await
                    .unwrap();
                }
                frames.push(f);
            }
            other => panic!("the node's socket ended: {other:?}"),
        }
    }
    for f in fillers {
        let got = tokio::time::timeout(WAIT, f)
            .await
            .expect("a filler hung after its response")
            .unwrap();
        assert!(got.is_ok(), "{got:?}");
    }
    frames.extend(peer.barrier().await);
    let (requests, cancels) = requests_and_cancels(&frames);
    let waited: Vec<_> = requests.iter().filter(|(_, p)| p.len() < 1024).collect();
    assert!(
        waited.is_empty(),
        "requests sent after their call ended: {waited:?}"
    );
    assert_eq!(requests.len(), 8, "every filler's request, once");
    assert!(
        cancels.is_empty(),
        "cancels for answered calls: {cancels:?}"
    );
    assert_eq!(conn.stats().in_flight.total(), 0);
    cluster.assert_honest_works("after the full lane").await;
    peer.cut().await;
}

/// A timeout too long for the clock (`Duration::MAX`, a common way to say "no deadline") is no
/// deadline: the call is answered, nothing panics, nothing stays in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_too_long_for_the_clock_is_no_deadline() {
    let (caller, callee) = pair(quiet_config()).await;
    let conn = caller.connection(callee.name()).unwrap();
    let got = tokio::time::timeout(
        WAIT,
        conn.call(
            ECHO.id,
            Bytes::from_static(b"forever"),
            within(Duration::MAX),
        ),
    )
    .await
    .expect("a call with no deadline to an echo hung")
    .unwrap();
    assert_eq!(&got[..], b"forever");
    drained(&[&caller, &callee], "the call without a deadline").await;
}

/// Large requests sent in parts, with deadlines that fall while their parts are on the way:
/// each caller gets `Deadline`, the callee lets go of the parts it held (its inbound bytes
/// return to zero) and of any handler it started, and the link is not closed by the parts
/// abandoned midway (a `ChunkAbort`, then the `Cancel`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_of_requests_sent_in_parts_abandon_them_cleanly() {
    const CALLS: usize = 24;
    let config = Config {
        chunk_size: 8 << 10,
        ..quiet_config()
    };
    let (caller, callee) = pair(config).await;
    callee
        .register_unary(SILENT, |ctx, _payload: Bytes| async move {
            ctx.cancelled().await;
            Ok::<_, RemoteError>(Bytes::new())
        })
        .unwrap();
    let conn = caller.connection(callee.name()).unwrap();
    let connects = conn.stats().connects;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let conn = conn.clone();
        // 1 MiB in 128 parts; deadlines of 2 to 25 ms fall before, during and after the parts.
        let timeout = Duration::from_millis(2 + i as u64);
        calls.spawn(async move {
            tokio::time::timeout(
                WAIT,
                conn.call(
                    SILENT.id,
                    Bytes::from(vec![i as u8; 1 << 20]),
                    within(timeout),
                ),
            )
            .await
        });
    }
    while let Some(done) = calls.join_next().await {
        match done.unwrap() {
            Ok(Err(Error::Deadline)) => {}
            Ok(other) => panic!("a large call to a silent handler got {other:?}"),
            Err(_) => panic!("a large call with a deadline under 30 ms hung"),
        }
    }
    drained(&[&caller, &callee], "large calls that timed out").await;
    let peer = caller.name().to_owned();
    eventually(
        "the callee holds no parts of abandoned requests",
        WAIT,
        || {
            let held = callee.connection(&peer).unwrap().stats().held;
            if held.inbound == 0 {
                Ok(())
            } else {
                Err(held)
            }
        },
    )
    .await;
    assert_eq!(conn.stats().connects, connects, "the link was replaced");
    let echoed = conn
        .call(ECHO.id, Bytes::from_static(b"after parts"), within(WAIT))
        .await
        .unwrap();
    assert_eq!(&echoed[..], b"after parts");
}
