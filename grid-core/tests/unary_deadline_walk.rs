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
use std::time::{Duration, Instant};

use bytes::Bytes;
use grid_core::frame::Frame;
use grid_core::{CallOptions, Connection, Error, HandlerSpec};
use scripted::{base_config, eventually, Cluster, Inbound, ScriptedPeer, WAIT};

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

/// Every `Request` (mux, payload) and every `Cancel` (by mux) in `frames`, checking on the way
/// that no mux carries two requests, that no `Cancel` comes before its `Request`, and that no
/// call gets two `Cancel`s.
fn requests_and_cancels(frames: &[Frame]) -> (HashMap<u32, Bytes>, HashSet<u32>) {
    let (mut requests, mut cancels) = (HashMap::new(), HashSet::new());
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
            }
            Frame::Cancel { mux, .. } => {
                assert!(
                    requests.contains_key(&mux.0),
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
    cluster.assert_honest_works("after the taken-back request").await;
    peer.cut().await;
}
