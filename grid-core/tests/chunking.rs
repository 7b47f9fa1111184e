//! Large frames in parts (issue 15, `PROTOCOL.md` section 10): round trips at the chunk size's
//! edges and at the payload limit, many large and small calls interleaved with every byte
//! checked, cancelling mid-transfer on both sides, peers that break the rules of parts, and a
//! peer that has chunks off.
//!
//! The honest tests run a real node and a real peer over an in-memory socket (`scripted/`);
//! the rule-breaking ones play the peer frame by frame.

#![allow(clippy::result_large_err, clippy::unwrap_used)]

mod scripted;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use grid_core::frame::{encode_frame, Frame, Op, FRAME_HEADER_LEN};
use grid_core::handshake::Features;
use grid_core::{
    ChunkViolation, CloseKind, Config, Connection, Error, HandlerSpec, Manager, MuxId,
    ProtocolViolation, RemoteError, RequestReceiver, ResponseSender, StreamOptions,
};
use scripted::{
    base_config, cancel, data, eventually, register_blocking_unary, request, Cluster, Gauge,
    Inbound, ScriptedPeer, TrackedBytes, WAIT,
};

/// Returns its payload.
const MIRROR: HandlerSpec = HandlerSpec::named("Chunking.mirror");
/// Answers with `pattern(seed, len)` for a request of `len: u64, seed: u64`.
const MAKE: HandlerSpec = HandlerSpec::named("Chunking.make");
/// Streams `pattern(seed + i, len_i)` for a request listing `seed: u64` then `len_i: u64`s.
const ITEMS: HandlerSpec = HandlerSpec::named("Chunking.items");
/// Runs until cancelled.
const BLOCK: HandlerSpec = HandlerSpec::named("Chunking.block");

/// Every byte depends on its position and the seed, so a part out of place shows.
fn pattern(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&x.to_le_bytes()[..take]);
    }
    Bytes::from(out)
}

fn make_request(len: usize, seed: u64) -> Bytes {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&(len as u64).to_le_bytes());
    b.extend_from_slice(&seed.to_le_bytes());
    Bytes::from(b)
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap())
}

fn register(m: &Manager) {
    m.register_unary(MIRROR, |_ctx, payload: Bytes| async move {
        Ok::<_, RemoteError>(payload)
    })
    .unwrap();
    m.register_unary(MAKE, |_ctx, req: Bytes| async move {
        Ok::<_, RemoteError>(pattern(u64_at(&req, 1), u64_at(&req, 0) as usize))
    })
    .unwrap();
    m.register_stream(
        ITEMS,
        |_ctx, req: Bytes, _input: Option<RequestReceiver>, mut out: ResponseSender| async move {
            let seed = u64_at(&req, 0);
            for i in 1..req.len() / 8 {
                let item = pattern(seed + i as u64, u64_at(&req, i) as usize);
                if out.send(item).await.is_err() {
                    break;
                }
            }
            Ok::<_, RemoteError>(())
        },
    )
    .unwrap();
}

async fn cluster(config: Config, attackers: usize) -> Cluster {
    let c = Cluster::start(config, attackers).await;
    register(&c.node);
    register(&c.honest);
    c
}

fn conns(c: &Cluster) -> [(Connection, &'static str); 2] {
    [
        (c.honest.connection(c.node.name()).unwrap(), "peer -> node"),
        (c.node.connection(c.honest.name()).unwrap(), "node -> peer"),
    ]
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT * 6, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {:?}", WAIT * 6))
}

/// Opens an `ITEMS` stream of messages of `lens` bytes (from `seed`) and checks that each
/// arrives whole and in order, then the clean end.
async fn stream_items(conn: &Connection, seed: u64, lens: &[u64], dir: &str) {
    let mut req = seed.to_le_bytes().to_vec();
    for l in lens {
        req.extend_from_slice(&l.to_le_bytes());
    }
    let mut s = conn
        .open_stream(ITEMS.id, Bytes::from(req), StreamOptions::default())
        .await
        .unwrap();
    for (i, l) in lens.iter().enumerate() {
        let what = format!("{dir}: stream message {i} of {l} bytes");
        let item = within(&what, s.receiver.recv())
            .await
            .unwrap_or_else(|| panic!("{what}: ended early"))
            .unwrap();
        assert!(
            item == pattern(seed + i as u64 + 1, *l as usize),
            "{what}: the bytes differ ({} bytes)",
            item.len()
        );
    }
    assert!(within(&format!("{dir}: stream end"), s.receiver.recv())
        .await
        .is_none());
}

/// Mirrors `payload` over `conn` and checks every byte that comes back.
async fn mirror(conn: &Connection, payload: Bytes, what: &str) {
    let got = within(what, conn.request(MIRROR.id, payload.clone()))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got.len(), payload.len(), "{what}: length");
    assert!(got == payload, "{what}: the bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_at_the_edges_of_the_chunk_size_round_trip_both_ways() {
    let c = cluster(base_config(), 0).await;
    let chunk = c.config.chunk_size;
    // A unary request's frame carries 18 bytes besides its payload: a payload of chunk - 18
    // makes a frame of exactly one chunk.
    let edges = [
        chunk - 1,
        chunk,
        chunk + 1,
        chunk - 18 - 1,
        chunk - 18,
        chunk - 18 + 1,
        2 * chunk - 18,
        2 * chunk - 18 + 1,
        0,
        1,
    ];
    for (conn, dir) in conns(&c) {
        for (i, len) in edges.into_iter().enumerate() {
            mirror(
                &conn,
                pattern(i as u64, len),
                &format!("{dir}: {len} bytes"),
            )
            .await;
        }
    }
    // A handler's charge is released when its call ends, just after its answer is queued: the
    // caller may have the answer a moment before.
    for (conn, dir) in conns(&c) {
        eventually(
            &format!("{dir}: the inbound charge released"),
            WAIT,
            || match conn.stats().held.inbound {
                0 => Ok(()),
                held => Err(held),
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_payload_travels_in_parts_and_one_over_the_limit_is_refused() {
    // Budgets that hold a 64 MiB request (8 MiB refuses it, typed, as a whole one would be).
    let roomy = Config {
        max_inbound_bytes: 64 << 20,
        ..base_config()
    };
    let c = Cluster::start_with(roomy.clone(), roomy, 0).await;
    register(&c.node);
    register(&c.honest);
    let limit = c.config.max_payload;
    for (conn, dir) in conns(&c) {
        let before = conn.stats().messages_out;
        mirror(&conn, pattern(7, limit), &format!("{dir}: 64 MiB")).await;
        // Whole, the request would be one message; in parts of 64 KiB, at least one message
        // per 256 KiB batch.
        let sent = conn.stats().messages_out - before;
        assert!(
            sent >= (limit / c.config.max_batch_bytes) as u64,
            "{dir}: a 64 MiB request went in {sent} messages"
        );
        match conn
            .request(MIRROR.id, Bytes::from(vec![0u8; limit + 1]))
            .await
        {
            Err(Error::PayloadTooLarge { len, limit: l }) => {
                assert_eq!((len, l), (limit + 1, limit), "{dir}");
            }
            other => panic!("{dir}: limit + 1 gave {other:?}"),
        }
        // A response over the limit is refused by the handler's side, typed.
        let req = make_request(limit + 1, 1);
        match conn.request(MAKE.id, req).await {
            Err(Error::Remote(e)) => {
                assert_eq!(e.code, grid_core::ErrorCode::TooLarge, "{dir}: {e:?}");
            }
            other => panic!("{dir}: a response of limit + 1 gave {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_and_small_calls_interleave_with_every_byte_checked() {
    let c = Arc::new(cluster(base_config(), 0).await);
    let mut calls = Vec::new();
    for (conn, dir) in conns(&c) {
        for i in 0..6u64 {
            let conn = conn.clone();
            // Within the peers' 8 MiB inbound budgets all together.
            let len = 300_000 + (i as usize) * 250_001;
            calls.push(tokio::spawn(async move {
                let what = format!("{dir}: large {i}");
                if i % 2 == 0 {
                    mirror(&conn, pattern(100 + i, len), &what).await;
                } else {
                    let got = within(&what, conn.request(MAKE.id, make_request(len, 100 + i)))
                        .await
                        .unwrap();
                    assert!(got == pattern(100 + i, len), "{what}: the bytes differ");
                }
            }));
        }
        for i in 0..300u64 {
            let conn = conn.clone();
            calls.push(tokio::spawn(async move {
                let len = (i as usize * 37) % 2000;
                mirror(&conn, pattern(1000 + i, len), &format!("{dir}: small {i}")).await;
            }));
        }
        // A stream whose items are large and small, mixed: they must arrive in order.
        let conn = conn.clone();
        calls.push(tokio::spawn(async move {
            let lens: Vec<u64> = (0..24u64)
                .map(|i| {
                    if i % 3 == 0 {
                        300_000 + i * 1000
                    } else {
                        i * 10
                    }
                })
                .collect();
            stream_items(&conn, 77, &lens, dir).await;
        }));
    }
    for r in join_all(calls).await {
        r.unwrap();
    }
    // A call's charge and slot go when it ends, just after its last frame is queued: the
    // caller may have that frame a moment before.
    for (conn, dir) in conns(&c) {
        eventually(&format!("{dir}: charges and calls released"), WAIT, || {
            let s = conn.stats();
            if s.held.inbound == 0 && s.in_flight.total() == 0 {
                Ok(())
            } else {
                Err(s)
            }
        })
        .await;
    }
}

/// A `Request` of `len` bytes to `spec`, encoded whole, to be cut into parts.
fn request_bytes(mux: MuxId, spec: HandlerSpec, len: usize) -> Bytes {
    let mut b = BytesMut::new();
    encode_frame(&request(mux, spec, pattern(3, len)), false, &mut b);
    b.freeze()
}

/// The next frame the node sends, its acks of our parts skipped.
async fn next_frame(peer: &mut ScriptedPeer) -> Frame {
    loop {
        match peer.frame().await {
            Frame::ChunkAck { .. } => {}
            f => return f,
        }
    }
}

fn chunk(mux: MuxId, bytes: Bytes) -> Frame {
    Frame::Chunk { mux, bytes }
}

/// Lets the peer read a few messages, until the first part of `mux`'s frame in parts has come,
/// then cancels `mux` and reads everything: the node must abort the frame with a `ChunkAbort`,
/// send no part after it, and never send the frame whole. Returns the bytes of parts that came.
async fn cancel_mid_parts(peer: &mut ScriptedPeer, mux: MuxId) -> usize {
    // Read a few messages only: the node's writer then waits on the socket.
    peer.allow_reads(4);
    let mut got = 0usize;
    while got == 0 {
        match peer.recv().await {
            Inbound::Frame(Frame::Chunk { mux: m, bytes }) if m == mux => got += bytes.len(),
            Inbound::Frame(_) => {}
            other => panic!("expected parts of the frame, got {other:?}"),
        }
    }
    peer.send(&[cancel(mux)]).await.unwrap();
    peer.read_eagerly();
    let mut aborted = false;
    for f in peer.barrier().await {
        match f {
            Frame::Chunk { mux: m, bytes } if m == mux => {
                assert!(!aborted, "a part after the abort");
                got += bytes.len();
            }
            Frame::ChunkAbort { mux: m } if m == mux => aborted = true,
            Frame::Response { mux: m, .. } | Frame::Data { mux: m, .. } if m == mux => {
                panic!("the whole frame came")
            }
            _ => {}
        }
    }
    assert!(aborted, "the node abandons the frame with a ChunkAbort");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cancelled_mid_transfer_stops_at_once_with_an_abort() {
    let c = cluster(base_config(), 1).await;
    let mut peer = c.attacker_with(0, None, Features::CHUNKS).await;
    assert_eq!(
        peer.info.features,
        Features::CHUNKS,
        "the node agrees to chunks"
    );
    let len = 16 << 20;
    let mux = peer.mux();
    peer.send(&[request(mux, MAKE, make_request(len, 9))])
        .await
        .unwrap();
    let got = cancel_mid_parts(&mut peer, mux).await;
    assert!(got < len / 2, "{got} of {len} bytes were sent after all");
    let conn = c.node.connection(&c.attackers[0]).unwrap();
    assert_eq!(conn.stats().held.queued, 0, "nothing of it stays queued");
    // The link is fine: the same id again, whole this time.
    peer.send(&[request(mux, MIRROR, Bytes::from_static(b"again"))])
        .await
        .unwrap();
    loop {
        match next_frame(&mut peer).await {
            Frame::Response { mux: m, result } if m == mux => {
                assert_eq!(result.unwrap().unwrap(), Bytes::from_static(b"again"));
                break;
            }
            Frame::Chunk { .. } | Frame::ChunkAbort { .. } => panic!("parts after the abort"),
            _ => {}
        }
    }
    c.assert_honest_works("after a cancel mid-transfer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_abandoned_mid_transfer_never_reaches_its_handler() {
    let c = cluster(base_config(), 1).await;
    let gauge = Gauge::new();
    register_blocking_unary(&c.node, BLOCK, &gauge);
    let mut peer = c.attacker_with(0, None, Features::CHUNKS).await;
    peer.read_eagerly();
    let mux = peer.mux();
    let whole = request_bytes(mux, BLOCK, 1 << 20);
    peer.send(&[chunk(mux, whole.slice(..300_000))])
        .await
        .unwrap();
    peer.barrier().await;
    let conn = c.node.connection(&c.attackers[0]).unwrap();
    assert_eq!(
        conn.stats().held.inbound,
        whole.len(),
        "the whole request counts against the budget from its first part"
    );
    peer.send(&[Frame::ChunkAbort { mux }, cancel(mux)])
        .await
        .unwrap();
    peer.barrier().await;
    assert_eq!(conn.stats().held.inbound, 0, "the abort releases them");
    assert_eq!(gauge.counts().started, 0, "the handler never ran");
    // The same id, all parts this time: the call runs.
    let parts: Vec<Frame> = (0..whole.len())
        .step_by(100_000)
        .map(|at| chunk(mux, whole.slice(at..(at + 100_000).min(whole.len()))))
        .collect();
    peer.send(&parts).await.unwrap();
    gauge
        .expect("the whole request runs", |n| n.started == 1)
        .await;
    peer.send(&[cancel(mux)]).await.unwrap();
    gauge
        .expect("and is cancelled", |n| n.saw_cancel == 1)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_call_mid_transfer_stops_its_parts_and_frees_both_sides() {
    let c = cluster(base_config(), 0).await;
    let gauge = Gauge::new();
    register_blocking_unary(&c.node, BLOCK, &gauge);
    let conn = c.honest.connection(c.node.name()).unwrap();
    let back = c.node.connection(c.honest.name()).unwrap();
    // A request far larger than a socket buffer: it is still in parts when the call is dropped.
    let call = conn.request(BLOCK.id, pattern(5, 48 << 20));
    let _ = tokio::time::timeout(Duration::from_millis(20), call).await;
    eventually("both sides free the dropped call", WAIT, || {
        let (s, b) = (conn.stats(), back.stats());
        if s.held.queued == 0 && b.held.inbound == 0 && s.in_flight.total() == 0 {
            Ok(())
        } else {
            Err(format!(
                "queued {} and in flight {:?} on the caller, inbound {} on the callee",
                s.held.queued, s.in_flight, b.held.inbound
            ))
        }
    })
    .await;
    let bytes = back.stats().bytes_in;
    assert!(
        bytes < 40 << 20,
        "{bytes} bytes reached the callee after the drop"
    );
    // Nothing of the dropped call runs later, and the link carries on.
    c.assert_honest_works("after dropping a call mid-transfer")
        .await;
    assert_eq!(gauge.counts().started, 0, "the dropped request never ran");
}

/// One way to break the rules of parts, what the node must call it, and the peer's features.
struct Attack {
    name: &'static str,
    features: Features,
    frames: fn(MuxId) -> Vec<Frame>,
    expect: fn(&ChunkViolation) -> bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_break_the_rules_of_parts_are_closed_and_others_carry_on() {
    let attacks = [
        Attack {
            name: "a whole frame in the middle of its mux's parts",
            features: Features::CHUNKS,
            frames: |mux| {
                let whole = request_bytes(mux, MIRROR, 100_000);
                vec![
                    chunk(mux, whole.slice(..50_000)),
                    request(mux, MIRROR, Bytes::new()),
                ]
            },
            expect: |v| matches!(v, ChunkViolation::Interleaved { .. }),
        },
        Attack {
            name: "a stream message in the middle of its mux's parts",
            features: Features::CHUNKS,
            frames: |mux| {
                let whole = request_bytes(mux, MIRROR, 100_000);
                vec![
                    chunk(mux, whole.slice(..50_000)),
                    data(mux, 0, Bytes::new()),
                ]
            },
            expect: |v| matches!(v, ChunkViolation::Interleaved { op: Op::Data, .. }),
        },
        Attack {
            name: "packed stream messages in the middle of their mux's parts",
            features: Features::CHUNKS.union(Features::ITEMS),
            frames: |mux| {
                let whole = request_bytes(mux, MIRROR, 100_000);
                let items = vec![Bytes::from_static(b"a"), Bytes::new()];
                vec![
                    chunk(mux, whole.slice(..50_000)),
                    Frame::Items { mux, seq: 0, items },
                ]
            },
            expect: |v| matches!(v, ChunkViolation::Interleaved { op: Op::Items, .. }),
        },
        Attack {
            name: "an Items frame in parts",
            features: Features::CHUNKS.union(Features::ITEMS),
            frames: |mux| {
                let items = vec![Bytes::from(vec![7; 40_000]), Bytes::from(vec![8; 30_000])];
                let mut whole = BytesMut::new();
                encode_frame(&Frame::Items { mux, seq: 0, items }, false, &mut whole);
                vec![chunk(mux, whole.freeze().slice(..50_000))]
            },
            expect: |v| matches!(v, ChunkViolation::BadHeader { .. }),
        },
        Attack {
            name: "an abort for a mux with nothing in parts",
            features: Features::CHUNKS,
            frames: |mux| vec![Frame::ChunkAbort { mux }],
            expect: |v| matches!(v, ChunkViolation::UnknownAbort { .. }),
        },
        Attack {
            name: "a part past its frame's end",
            features: Features::CHUNKS,
            frames: |mux| {
                let whole = request_bytes(mux, MIRROR, 100_000);
                vec![
                    chunk(mux, whole.slice(..60_000)),
                    chunk(mux, whole.slice(..60_000)),
                ]
            },
            expect: |v| matches!(v, ChunkViolation::Overrun { .. }),
        },
        Attack {
            name: "a first part that is not a frame (parts of an unknown id)",
            features: Features::CHUNKS,
            frames: |mux| vec![chunk(mux, Bytes::from(vec![0xee; 1000]))],
            expect: |v| matches!(v, ChunkViolation::BadHeader { .. }),
        },
        Attack {
            name: "a frame in parts over the payload limit",
            features: Features::CHUNKS,
            frames: |mux| {
                // The header of a Request whose payload is one byte over the limit, and the
                // first bytes of its body.
                let body = 8 + (64u32 << 20) + 1;
                let mut first = vec![1u8, 0x04];
                first.extend_from_slice(&mux.0.to_be_bytes());
                first.extend_from_slice(&body.to_be_bytes());
                first.extend_from_slice(&[0; 10]);
                assert_eq!(first.len(), FRAME_HEADER_LEN + 10);
                vec![chunk(mux, Bytes::from(first))]
            },
            expect: |v| matches!(v, ChunkViolation::TooLarge { .. }),
        },
        Attack {
            name: "parts from a peer that did not agree to them",
            features: Features::NONE,
            frames: |mux| {
                let whole = request_bytes(mux, MIRROR, 1000);
                vec![chunk(mux, whole)]
            },
            expect: |v| matches!(v, ChunkViolation::NotAgreed),
        },
    ];
    let c = cluster(base_config(), attacks.len()).await;
    for (i, a) in attacks.iter().enumerate() {
        let mut peer = c.attacker_with(i, None, a.features).await;
        let mux = peer.mux();
        let _ = peer.send(&(a.frames)(mux)).await;
        match &c.closed_by_node(&mut peer, i, a.name).await {
            CloseKind::Violation(ProtocolViolation::Chunk(v)) if (a.expect)(v) => {}
            other => panic!("{}: closed with {other:?}", a.name),
        }
        c.assert_honest_works(a.name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_parts_over_the_budget_is_refused_at_its_first_part_and_not_kept() {
    let c = cluster(base_config(), 1).await;
    let mut peer = c.attacker_with(0, None, Features::CHUNKS).await;
    peer.read_eagerly();
    let conn = c.node.connection(&c.attackers[0]).unwrap();
    let mux = peer.mux();
    // 20 MiB against an 8 MiB budget, in parts of 1 MiB.
    let whole = request_bytes(mux, MIRROR, 20 << 20);
    let mut parts = (0..whole.len())
        .step_by(1 << 20)
        .map(|at| chunk(mux, whole.slice(at..(at + (1 << 20)).min(whole.len()))));
    peer.send(&[parts.next().unwrap()]).await.unwrap();
    match next_frame(&mut peer).await {
        Frame::Error { mux: m, error } if m == mux => {
            assert_eq!(
                error.code,
                grid_core::frame::ErrorCode::Overloaded,
                "{error:?}"
            );
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    for p in parts {
        peer.send(&[p]).await.unwrap();
        assert_eq!(
            conn.stats().held.inbound,
            0,
            "a refused request's parts are not kept"
        );
    }
    peer.barrier().await;
    // The link is up and the id free: a small request on it is answered.
    peer.send(&[request(mux, MIRROR, Bytes::from_static(b"small"))])
        .await
        .unwrap();
    match next_frame(&mut peer).await {
        Frame::Response { mux: m, result } if m == mux => {
            assert_eq!(result.unwrap().unwrap(), Bytes::from_static(b"small"));
        }
        other => panic!("expected the response, got {other:?}"),
    }
    c.assert_honest_works("after a refused request in parts")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_chunks_off_sends_and_takes_whole_frames() {
    let off = Config {
        chunk_size: 0,
        ..base_config()
    };
    let c = cluster(off, 1).await;
    for (conn, dir) in conns(&c) {
        // The handler tables announced by the registrations above go out first.
        mirror(&conn, Bytes::from_static(b"warm"), dir).await;
        let before = conn.stats().frames_out;
        mirror(&conn, pattern(11, 4 << 20), dir).await;
        let sent = conn.stats().frames_out - before;
        // One frame, and the keepalive's ping and pong if they fell in this window; in parts
        // of the default 64 KiB it would be 65 frames.
        assert!(sent <= 3, "{dir}: 4 MiB went in {sent} frames: in parts?");
    }
    // A peer that offers chunks to a node that has them off gets whole frames.
    let mut peer = c.attacker_with(0, None, Features::CHUNKS).await;
    assert_eq!(peer.info.features, Features::NONE, "nothing is agreed");
    peer.read_eagerly();
    let mux = peer.mux();
    peer.send(&[request(mux, MAKE, make_request(1 << 20, 4))])
        .await
        .unwrap();
    loop {
        match next_frame(&mut peer).await {
            Frame::Response { mux: m, result } if m == mux => {
                assert!(result.unwrap().unwrap() == pattern(4, 1 << 20));
                break;
            }
            Frame::Chunk { .. } => panic!("a part to a peer that did not agree to parts"),
            _ => {}
        }
    }
}

/// A large response whose parts the peer never acknowledges fills the bound of large frames
/// and stays there; a stream's small items on the same link still go out in full: small frames
/// wait only for the data lane, never behind transfers in parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_items_go_out_while_a_large_response_waits_for_its_acks() {
    let c = cluster(base_config(), 1).await;
    let mut peer = c.attacker_with(0, None, Features::CHUNKS).await;
    // Reads everything, acknowledges nothing: the response's parts stop at the in-flight cap.
    peer.read_eagerly();
    let big = peer.mux();
    peer.send(&[request(big, MAKE, make_request(16 << 20, 5))])
        .await
        .unwrap();
    loop {
        match peer.frame().await {
            Frame::Chunk { mux, .. } if mux == big => break,
            _ => {}
        }
    }
    let conn = c.node.connection(&c.attackers[0]).unwrap();
    eventually(
        "the unacknowledged response to hold the large-frame bound",
        WAIT,
        || {
            let held = conn.stats().held.queued;
            (held > 4 << 20).then_some(()).ok_or(held)
        },
    )
    .await;
    const ITEMS_N: usize = 8;
    let mut req = 11u64.to_le_bytes().to_vec();
    for _ in 0..ITEMS_N {
        req.extend_from_slice(&100u64.to_le_bytes());
    }
    let stream = peer.mux();
    let Frame::Open {
        route,
        metadata,
        out_window,
        ..
    } = scripted::open(stream, ITEMS, 0, 16)
    else {
        unreachable!("open() builds an Open")
    };
    peer.send(&[Frame::Open {
        mux: stream,
        route,
        deadline_ms: 0,
        metadata,
        in_cap: 0,
        out_cap: 16,
        in_window: 0,
        out_window,
        input: false,
        payload: Some(Bytes::from(req)),
    }])
    .await
    .unwrap();
    let mut items = 0;
    loop {
        match peer.frame().await {
            Frame::Data { mux, payload, .. } if mux == stream => {
                assert_eq!(payload.map_or(0, |p| p.len()), 100, "item {items}");
                items += 1;
            }
            Frame::End { mux, error, .. } if mux == stream => {
                assert!(error.is_none(), "the stream failed: {error:?}");
                break;
            }
            Frame::Chunk { mux, .. } if mux == big => {}
            Frame::Ack { mux } if mux == stream => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(items, ITEMS_N);
    c.assert_honest_works("beside a stalled large response")
        .await;
}

/// Registers `SHARE` on the node: sends the message `item` holds (once), reports to the test
/// that it is queued (or why not), and waits for the call to end.
fn register_share(
    c: &Cluster,
    item: Bytes,
) -> tokio::sync::mpsc::UnboundedReceiver<Result<(), String>> {
    let item = Arc::new(std::sync::Mutex::new(Some(item)));
    let (queued_tx, queued) = tokio::sync::mpsc::unbounded_channel();
    c.node
        .register_stream(SHARE, move |ctx, _req, _input, mut out| {
            let (item, queued_tx) = (item.lock().unwrap().take(), queued_tx.clone());
            async move {
                let item = item.ok_or_else(|| RemoteError::application("opened twice"))?;
                // `send` returns once the message is queued.
                let sent = out.send(item).await;
                let _ = queued_tx.send(sent.map_err(|e| e.to_string()));
                ctx.cancelled().await;
                Ok(())
            }
        })
        .unwrap();
    queued
}

/// Sends the message in parts to a scripted peer that reads nothing: returns the peer, the
/// stream's mux and the test's own handle on the message's bytes.
async fn share_with_a_silent_peer(c: &Cluster) -> (ScriptedPeer, MuxId, Bytes) {
    let item = pattern(5, 2 << 20);
    let kept = item.clone();
    let mut queued = register_share(c, item);
    let mut peer = c.attacker_with(0, None, Features::CHUNKS).await;
    let mux = peer.mux();
    // The peer reads nothing and acks no part: the message stays queued.
    peer.send(&[scripted::open(mux, SHARE, 0, 4)])
        .await
        .unwrap();
    within("the message queued", queued.recv())
        .await
        .expect("the handler reports")
        .expect("queued");
    assert!(
        !kept.is_unique(),
        "the queue holds the sender's bytes, not a copy of them"
    );
    (peer, mux, kept)
}

async fn let_go(kept: &Bytes, what: &str) {
    eventually(
        &format!("the queue lets go of the bytes {what}"),
        WAIT,
        || {
            if kept.is_unique() {
                Ok(())
            } else {
                Err("still shared")
            }
        },
    )
    .await;
}

/// Runs until cancelled, after sending the one message the test gave it.
const SHARE: HandlerSpec = HandlerSpec::named("Chunking.share");

/// A stream message that goes in parts is queued as it is: the queue shares the sender's bytes.
/// Copied into the outgoing run instead, it held the lane's lock for the whole copy (every other
/// producer of the link and its writer waited) and doubled the message's memory. The queue lets
/// go of the bytes when the link goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_message_in_parts_is_queued_without_a_copy() {
    let c = cluster(base_config(), 1).await;
    let (peer, _mux, kept) = share_with_a_silent_peer(&c).await;
    peer.cut().await;
    let_go(&kept, "when the link goes").await;
    c.assert_honest_works("after a link with a message in parts queued went")
        .await;
}

/// A cancel drops a queued stream message in parts at once: what was sent of it is aborted, and
/// the sender's bytes are let go while the link carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_stream_drops_its_queued_message_in_parts() {
    let c = cluster(base_config(), 1).await;
    let (mut peer, mux, kept) = share_with_a_silent_peer(&c).await;
    let got = cancel_mid_parts(&mut peer, mux).await;
    assert!(got < kept.len(), "{got} bytes of it were sent after all");
    let_go(&kept, "after the cancel").await;
    c.assert_honest_works("after a stream with a message in parts was cancelled")
        .await;
}

/// Stream messages at the edge of going in parts (a frame head of 14 bytes: a payload of
/// `chunk - 14` fits in one part, one byte more does not), mixed with small and empty ones,
/// arrive whole and in order both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_messages_at_the_edge_of_parts_arrive_whole_and_in_order() {
    let c = cluster(base_config(), 0).await;
    let chunk = Config::default().chunk_size as u64;
    let lens = [
        10,
        chunk - 15,
        chunk - 14,
        chunk - 13,
        5,
        chunk,
        chunk + 1,
        0,
        2 * chunk - 14,
        2 * chunk - 13,
        3,
    ];
    for (conn, dir) in conns(&c) {
        stream_items(&conn, 41, &lens, dir).await;
    }
}

/// A message over the payload limit is refused whole (`PayloadTooLarge`) after the ones before
/// it, a large one included, are queued; the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_message_over_the_limit_is_refused_and_the_stream_goes_on() {
    const OVER: HandlerSpec = HandlerSpec::named("Chunking.over");
    let c = cluster(base_config(), 0).await;
    let limit = Config::default().max_payload;
    let (refused_tx, mut refused) = tokio::sync::mpsc::unbounded_channel();
    c.node
        .register_stream(OVER, move |_ctx, _req, _input, mut out| {
            let refused_tx = refused_tx.clone();
            async move {
                // Zeroed, so the pages of the one over the limit are never touched.
                let over = Bytes::from(vec![0u8; limit + 1]);
                let items = [pattern(1, 10), pattern(2, 200_000), over, pattern(3, 10)];
                let r = out.send_all(items).await;
                let _ = refused_tx.send(r.map_err(|e| e.to_string()));
                out.send(pattern(4, 10))
                    .await
                    .map_err(|e| RemoteError::application(e.to_string()))
            }
        })
        .unwrap();
    let conn = c.honest.connection(c.node.name()).unwrap();
    let mut s = conn
        .open_stream(OVER.id, Bytes::new(), StreamOptions::default())
        .await
        .unwrap();
    for (seed, len) in [(1, 10), (2, 200_000), (4, 10)] {
        let what = format!("message {seed}");
        let item = within(&what, s.receiver.recv())
            .await
            .unwrap_or_else(|| panic!("{what}: ended early"))
            .unwrap();
        assert!(item == pattern(seed, len), "{what}: the bytes differ");
    }
    assert!(within("the end", s.receiver.recv()).await.is_none());
    let e = within("the refusal", refused.recv())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        e,
        format!(
            "payload of {} bytes exceeds the limit of {limit}",
            limit + 1
        )
    );
}

/// A unary call lets go of its request once it is queued (copied into the outgoing batch, or, in
/// parts, once the parts are written), not when its answer comes: a slow handler does not keep
/// the caller's request alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_lets_go_of_its_request_before_the_answer() {
    let c = cluster(base_config(), 0).await;
    let gauge = Gauge::new();
    register_blocking_unary(&c.node, BLOCK, &gauge);
    let conn = c.honest.connection(c.node.name()).unwrap();
    let tracked = TrackedBytes::new();
    // One request copied into a batch, one that goes in parts; both handlers wait.
    let calls: Vec<_> = [4 << 10, 1 << 20]
        .map(|len| {
            let (conn, payload) = (conn.clone(), tracked.make(len));
            tokio::spawn(async move { conn.request(BLOCK.id, payload).await })
        })
        .into();
    gauge.expect("both requests run", |n| n.started == 2).await;
    eventually(
        "the caller lets go of both requests while they run",
        WAIT,
        || match tracked.live() {
            0 => Ok(()),
            live => Err(format!("{live} bytes of requests alive")),
        },
    )
    .await;
    gauge.release_all();
    for (i, call) in calls.into_iter().enumerate() {
        within(&format!("request {i} answered"), call)
            .await
            .unwrap()
            .expect("answered");
    }
}
