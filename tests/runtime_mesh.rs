//! A mesh of five nodes in one process: exactly one connection per pair, every node calls every
//! other, calls run both ways at once, and handlers call back into their caller.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use grid::{ConnState, ErrorCode, HandlerSpec, Manager, RemoteError};

const ECHO: HandlerSpec = HandlerSpec::named("Mesh.echo");
const NEST: HandlerSpec = HandlerSpec::named("Mesh.nest");
const CROSS: HandlerSpec = HandlerSpec::named("Mesh.cross");

fn internal(e: grid::Error) -> RemoteError {
    RemoteError::text(ErrorCode::Internal, e.to_string())
}

/// ECHO; NEST(d): calls NEST(d-1) back on the caller, returns the depth reached; CROSS: waits on a
/// barrier shared by every node, then calls ECHO on its caller.
fn register(nodes: &[Manager], barrier: &Arc<tokio::sync::Barrier>) {
    for m in nodes {
        m.register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
            .unwrap();
        let me = m.clone();
        m.register_unary(NEST, move |ctx, b| {
            let me = me.clone();
            async move {
                let depth = b[0];
                if depth == 0 {
                    return Ok(Bytes::from(me.name().to_owned()));
                }
                let back = me.connection(ctx.caller()).map_err(internal)?;
                back.request(NEST.id, Bytes::from(vec![depth - 1]))
                    .await
                    .map_err(internal)
            }
        })
        .unwrap();
        let me = m.clone();
        let barrier = barrier.clone();
        m.register_unary(CROSS, move |ctx, b| {
            let me = me.clone();
            let barrier = barrier.clone();
            async move {
                barrier.wait().await;
                let back = me.connection(ctx.caller()).map_err(internal)?;
                back.request(ECHO.id, b).await.map_err(internal)
            }
        })
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_of_five_one_connection_per_pair_and_all_calls() {
    let nodes = common::connected(5, common::test_config()).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    register(&nodes, &barrier);
    // One connection per pair now; a duplicate or late second connection would show in the
    // count after the 200 calls below.
    for m in &nodes {
        let stats = m.stats();
        assert_eq!(stats.connected, 4, "{}: {stats:?}", m.name());
        assert_eq!(stats.connections.len(), 4);
        for c in &stats.connections {
            assert_eq!(c.state, ConnState::Connected);
            assert_eq!(c.connects, 1, "{} -> {}: {c:?}", m.name(), c.peer);
        }
    }
    // Every node calls every other, all at once, 10 calls per ordered pair.
    let mut calls = Vec::new();
    for a in &nodes {
        for b in &nodes {
            if a.name() == b.name() {
                continue;
            }
            for i in 0..10u8 {
                let conn = a.connection(b.name()).unwrap();
                let tag = format!("{} -> {} #{i}", a.name(), b.name());
                calls.push(tokio::spawn(async move {
                    let got = conn
                        .request(ECHO.id, Bytes::from(tag.clone()))
                        .await
                        .unwrap();
                    assert_eq!(got, Bytes::from(tag));
                }));
            }
        }
    }
    assert_eq!(calls.len(), 200);
    tokio::time::timeout(common::WAIT, futures::future::join_all(calls))
        .await
        .expect("mesh calls hung")
        .into_iter()
        .for_each(|r| r.unwrap());
    // Still exactly one connection per pair.
    for m in &nodes {
        for c in m.stats().connections {
            assert_eq!(c.connects, 1, "{} -> {}", m.name(), c.peer);
        }
    }
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_nested_cross_calls_complete() {
    let nodes = common::connected(5, common::test_config()).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    register(&nodes, &barrier);
    // Ping-pong: A -> B -> A -> B ... eight deep, on every pair, both directions at once.
    let mut calls = Vec::new();
    for a in 0..nodes.len() {
        for b in 0..nodes.len() {
            if a == b {
                continue;
            }
            let conn = nodes[a].connection(nodes[b].name()).unwrap();
            // Depth 8 runs on b, 7 on a, ..., so depth 0 runs on b again and names it.
            let last = nodes[b].name().to_owned();
            calls.push(tokio::spawn(async move {
                let got = conn.request(NEST.id, Bytes::from(vec![8u8])).await.unwrap();
                assert_eq!(got, Bytes::from(last));
            }));
        }
    }
    tokio::time::timeout(common::WAIT, futures::future::join_all(calls))
        .await
        .expect("nested calls hung")
        .into_iter()
        .for_each(|r| r.unwrap());

    // A's handler calls B while B's handler is calling A: the barrier holds both handlers until
    // both are running, so the two callbacks cross on one connection.
    for (a, b) in [(0, 1), (2, 4), (3, 1)] {
        let ab = nodes[a].connection(nodes[b].name()).unwrap();
        let ba = nodes[b].connection(nodes[a].name()).unwrap();
        let (x, y) = tokio::time::timeout(
            common::WAIT,
            futures::future::join(
                ab.request(CROSS.id, Bytes::from_static(b"from a")),
                ba.request(CROSS.id, Bytes::from_static(b"from b")),
            ),
        )
        .await
        .expect("crossing calls deadlocked");
        assert_eq!(&x.unwrap()[..], b"from a");
        assert_eq!(&y.unwrap()[..], b"from b");
    }
    common::assert_drained(&nodes).await;
}
