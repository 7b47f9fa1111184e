//! Unary calls over real loopback sockets: payload sizes, remote errors, limits, routing
//! failures, panics, deadlines and cancel-on-drop.

#![allow(clippy::unwrap_used, clippy::panic)]
// What an `eventually` check saw (its `Err`) is printed once if the wait fails: size is no matter.
#![allow(clippy::result_large_err)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use grid::{CallOptions, CancelCause, Config, Error, ErrorCode, HandlerSpec, RemoteError};
use tokio::sync::mpsc;

const ECHO: HandlerSpec = HandlerSpec::named("Unary.echo");
const FAIL: HandlerSpec = HandlerSpec::named("Unary.fail");
const PANIC: HandlerSpec = HandlerSpec::named("Unary.panic");
const SLOW: HandlerSpec = HandlerSpec::named("Unary.slow");
const MISSING: HandlerSpec = HandlerSpec::named("Unary.missing");

fn register_echo(nodes: &[grid::Manager]) {
    for m in nodes {
        m.register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_payloads_round_trip_byte_exact() {
    let nodes = common::connected(2, common::test_config()).await;
    register_echo(&nodes);
    for (a, b) in [(0, 1), (1, 0)] {
        let conn = nodes[a].connection(nodes[b].name()).unwrap();
        for (i, len) in [0usize, 17, 1 << 20, 16 << 20].into_iter().enumerate() {
            let payload = common::pattern(len, i as u8);
            let resp = conn.request(ECHO.id, payload.clone()).await.unwrap();
            assert_eq!(resp.len(), len);
            assert!(
                resp == payload,
                "payload of {len} bytes came back different"
            );
        }
    }
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_remote_error_arrives_exactly() {
    let nodes = common::connected(2, common::test_config()).await;
    let message = common::pattern(1024, 7);
    for m in &nodes {
        let msg = message.clone();
        m.register_unary(FAIL, move |_ctx, _b| {
            let msg = msg.clone();
            async move { Err::<Bytes, _>(RemoteError::application(msg)) }
        })
        .unwrap();
    }
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    match conn.request(FAIL.id, Bytes::from_static(b"x")).await {
        Err(Error::Remote(e)) => {
            assert_eq!(e.code, ErrorCode::Application);
            assert_eq!(e.message, message);
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_payload_over_limit_is_refused_and_connection_survives() {
    let config = Config {
        max_payload: 1 << 20,
        ..common::test_config()
    };
    let nodes = common::connected(2, config).await;
    register_echo(&nodes);
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let big = common::pattern((1 << 20) + 1, 1);
    match conn.request(ECHO.id, big).await {
        Err(Error::PayloadTooLarge { len, limit }) => {
            assert_eq!(len, (1 << 20) + 1);
            assert_eq!(limit, 1 << 20);
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    let exact = common::pattern(1 << 20, 2);
    assert_eq!(conn.request(ECHO.id, exact.clone()).await.unwrap(), exact);
    common::assert_echo(&conn, ECHO, b"after").await;
    assert_eq!(
        conn.stats().connects,
        1,
        "the connection must not have dropped"
    );
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_unknown_handler_and_subroute_fail_fast() {
    let nodes = common::connected(2, common::test_config()).await;
    register_echo(&nodes);
    for m in &nodes {
        m.register_unary_at(ECHO, Some("disk1"), |_ctx, b| async move {
            Ok::<_, RemoteError>(b)
        })
        .unwrap();
    }
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let t = Instant::now();
    match conn.request(MISSING.id, Bytes::from_static(b"?")).await {
        Err(Error::UnknownHandler { handler, subroute }) => {
            assert_eq!(handler, MISSING.id);
            assert_eq!(subroute, None);
        }
        other => panic!("expected UnknownHandler, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );

    let t = Instant::now();
    match conn
        .subroute("disk9")
        .request(ECHO.id, Bytes::from_static(b"?"))
        .await
    {
        Err(Error::UnknownHandler { handler, subroute }) => {
            assert_eq!(handler, ECHO.id);
            assert_eq!(subroute.as_deref(), Some("disk9"));
        }
        other => panic!("expected UnknownHandler, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );

    // The connection survives, and the subroute that exists works.
    let sub = conn
        .subroute("disk1")
        .request(ECHO.id, Bytes::from_static(b"sub"))
        .await
        .unwrap();
    assert_eq!(&sub[..], b"sub");
    common::assert_echo(&conn, ECHO, b"ok").await;
    assert_eq!(conn.stats().connects, 1);
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_panicking_handler_gives_remote_panic_and_node_keeps_serving() {
    let nodes = common::connected(2, common::test_config()).await;
    register_echo(&nodes);
    for m in &nodes {
        m.register_unary(PANIC, |_ctx, _b| async move {
            if true {
                panic!("boom in handler");
            }
            Ok::<_, RemoteError>(Bytes::new())
        })
        .unwrap();
    }
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    for _ in 0..3 {
        match conn.request(PANIC.id, Bytes::new()).await {
            Err(Error::Remote(e)) => {
                assert_eq!(e.code, ErrorCode::Panic);
                let text = String::from_utf8_lossy(&e.message).into_owned();
                assert!(text.contains("boom in handler"), "{text}");
            }
            other => panic!("expected a remote panic, got {other:?}"),
        }
        common::assert_echo(&conn, ECHO, b"still").await;
    }
    assert_eq!(conn.stats().connects, 1);
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_deadline_reaches_handler_and_caller_gets_deadline() {
    let nodes = common::connected(2, common::test_config()).await;
    register_echo(&nodes);
    let (tx, mut rx) = mpsc::unbounded_channel();
    nodes[1]
        .register_unary(SLOW, move |ctx, _b| {
            let tx = tx.clone();
            async move {
                let deadline = ctx.deadline();
                let cause = ctx.cancelled().await;
                let _ = tx.send((deadline, cause));
                Ok::<_, RemoteError>(Bytes::new())
            }
        })
        .unwrap();
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let t = Instant::now();
    let res = conn
        .call(
            SLOW.id,
            Bytes::new(),
            CallOptions {
                timeout: Some(Duration::from_millis(200)),
                ..CallOptions::default()
            },
        )
        .await;
    assert!(matches!(res, Err(Error::Deadline)), "{res:?}");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(190), "{took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let (deadline, cause) = common::recv_within(&mut rx, common::WAIT).await;
    let deadline = deadline.expect("the handler must see the caller's deadline");
    let left = deadline.saturating_duration_since(tokio::time::Instant::now().into_std());
    assert!(left <= Duration::from_millis(200), "{left:?}");
    assert_eq!(cause, CancelCause::Deadline);
    common::assert_echo(&conn, ECHO, b"next").await;
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_dropping_the_future_cancels_the_handler() {
    let nodes = common::connected(2, common::test_config()).await;
    register_echo(&nodes);
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    nodes[1]
        .register_unary(SLOW, move |ctx, _b| {
            let tx = tx.clone();
            let started_tx = started_tx.clone();
            async move {
                let _ = started_tx.send(());
                let cause = ctx.cancelled().await;
                let _ = tx.send(cause);
                Ok::<_, RemoteError>(Bytes::new())
            }
        })
        .unwrap();
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let call = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.request(SLOW.id, Bytes::new()).await })
    };
    common::recv_within(&mut started_rx, common::WAIT).await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    let cause = common::recv_within(&mut rx, Duration::from_secs(2)).await;
    assert_eq!(cause, CancelCause::CallerGaveUp);
    common::assert_echo(&conn, ECHO, b"next").await;
    common::assert_drained(&nodes).await;
}

/// In-flight counts show a call on both sides while it runs; frame, byte, message and ping
/// counters move; concurrent calls are batched into fewer WebSocket messages than frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_stats_count_calls_frames_and_pings() {
    let nodes = common::connected(2, common::test_config()).await;
    register_echo(&nodes);
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    nodes[1]
        .register_unary(SLOW, move |_ctx, b| {
            let started_tx = started_tx.clone();
            let mut release = release_rx.clone();
            async move {
                let _ = started_tx.send(());
                let _ = release.wait_for(|r| *r).await;
                Ok::<_, RemoteError>(b)
            }
        })
        .unwrap();
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let call = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.request(SLOW.id, Bytes::from_static(b"s")).await })
    };
    common::recv_within(&mut started_rx, common::WAIT).await;
    assert_eq!(nodes[0].stats().in_flight.unary_out, 1);
    assert_eq!(nodes[1].stats().in_flight.unary_in, 1);
    release_tx.send(true).unwrap();
    assert_eq!(&call.await.unwrap().unwrap()[..], b"s");

    let before = conn.stats();
    let calls = (0..256u32).map(|i| {
        let conn = conn.clone();
        async move {
            conn.request(ECHO.id, Bytes::from(i.to_be_bytes().to_vec()))
                .await
                .unwrap()
        }
    });
    futures::future::join_all(calls).await;
    let after = conn.stats();
    assert!(after.frames_out >= before.frames_out + 256, "{after:?}");
    assert!(after.frames_in >= before.frames_in + 256, "{after:?}");
    assert!(after.bytes_out > before.bytes_out && after.bytes_in > before.bytes_in);
    assert!(
        after.messages_out < after.frames_out,
        "no batching under concurrency: {after:?}"
    );
    // Pings run every 200 ms (test_config): a round trip is recorded within the bound.
    common::eventually("a ping round trip recorded", common::WAIT, || {
        let s = conn.stats();
        s.last_rtt.map(|_| ()).ok_or(s)
    })
    .await;
    assert_eq!(nodes[0].stats().connected, 1);
    common::assert_drained(&nodes).await;
}
