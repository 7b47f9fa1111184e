//! Regression tests for failures found in review: a handler closure that panics before it
//! returns its future, nodes with different payload limits, and a shut-down manager.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use grid::{Config, Error, ErrorCode, HandlerSpec, Manager, RemoteError};

const EARLY_PANIC: HandlerSpec = HandlerSpec::named("Review.early_panic");
const ECHO: HandlerSpec = HandlerSpec::named("Review.echo");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_before_returning_its_future_is_a_remote_panic() {
    let nodes = common::connected(2, common::test_config()).await;
    for m in &nodes {
        // The panic happens in the closure itself, not inside the returned future.
        m.register_unary(EARLY_PANIC, |_ctx, b: Bytes| {
            if b.is_empty() {
                panic!("bad request, refused before any await");
            }
            async move { Ok::<_, RemoteError>(b) }
        })
        .unwrap();
    }
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let started = Instant::now();
    match conn.request(EARLY_PANIC.id, Bytes::new()).await {
        Err(Error::Remote(e)) => {
            assert_eq!(e.code, ErrorCode::Panic);
            assert!(String::from_utf8_lossy(&e.message).contains("refused before any await"));
        }
        other => panic!("expected a remote panic, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered promptly"
    );
    let ok = conn
        .request(EARLY_PANIC.id, Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(&ok[..], b"x", "the node keeps serving");
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_over_the_peers_smaller_limit_is_refused_locally() {
    let names = common::free_names(2);
    let limits = [4usize << 20, 1 << 20];
    let mut nodes = Vec::new();
    for (name, limit) in names.iter().zip(limits) {
        let m = Manager::builder(name.clone())
            .peers(names.clone())
            .secret("test-secret")
            .config(Config {
                max_payload: limit,
                ..common::test_config()
            })
            .start()
            .await
            .unwrap();
        m.register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
            .unwrap();
        nodes.push(m);
    }
    common::wait_mesh(&nodes).await;
    let big = common::pattern(2 << 20, 3);
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    match conn.request(ECHO.id, big).await {
        Err(Error::PayloadTooLarge { len, limit }) => {
            assert_eq!((len, limit), (2 << 20, 1 << 20), "the peer's limit applies");
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    let small = common::pattern(1 << 20, 4);
    assert_eq!(conn.request(ECHO.id, small.clone()).await.unwrap(), small);
    assert_eq!(conn.stats().connects, 1, "the connection survived");
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_the_connection_stays_down_and_calls_fail_fast() {
    let nodes = common::connected(2, common::test_config()).await;
    for m in &nodes {
        m.register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
            .unwrap();
    }
    nodes[0].shutdown().await;
    // Give any dial that was in progress time to finish: it must not revive the connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let started = Instant::now();
    let r = conn.request(ECHO.id, Bytes::from_static(b"x")).await;
    assert!(
        matches!(r, Err(Error::Shutdown | Error::NotConnected { .. })),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1), "failed fast");
    assert!(matches!(
        conn.wait_for_connect(Duration::from_millis(200)).await,
        Err(Error::Shutdown)
    ));
    // The peer sees the link go down with a reason, and gets no connection back.
    let back = nodes[1].connection(nodes[0].name()).unwrap();
    let deadline = Instant::now() + common::WAIT;
    while back.state() == grid::ConnState::Connected {
        assert!(
            Instant::now() < deadline,
            "the peer still thinks it is connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(back.last_close_reason().is_some(), "a reason is kept");
}
