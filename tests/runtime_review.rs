//! Regression tests for failures found in review: a handler closure that panics before it
//! returns its future, nodes with different payload limits, and a shut-down manager.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use grid::{Config, Error, ErrorCode, HandlerSpec, RemoteError};

const EARLY_PANIC: HandlerSpec = HandlerSpec::named("Review.early_panic");
const ECHO: HandlerSpec = HandlerSpec::named("Review.echo");
const EARLY_PANIC_STREAM: HandlerSpec = HandlerSpec::named("Review.early_panic_stream");

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
async fn a_stream_handler_that_panics_before_returning_its_future_ends_the_stream_with_a_panic() {
    let nodes = common::connected(2, common::test_config()).await;
    for m in &nodes {
        m.register_stream(EARLY_PANIC_STREAM, |_ctx, b: Bytes, _input, mut out| {
            if b.is_empty() {
                panic!("bad stream request, refused before any await");
            }
            async move {
                out.send(b)
                    .await
                    .map_err(|e| RemoteError::application(e.to_string()))
            }
        })
        .unwrap();
    }
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let mut s = conn
        .open_stream(
            EARLY_PANIC_STREAM.id,
            Bytes::new(),
            grid::StreamOptions::default(),
        )
        .await
        .unwrap();
    match s.receiver.recv().await {
        Some(Err(Error::Remote(e))) => {
            assert_eq!(e.code, ErrorCode::Panic);
            assert!(String::from_utf8_lossy(&e.message).contains("refused before any await"));
        }
        other => panic!("expected a remote panic, got {other:?}"),
    }
    assert!(
        s.receiver.recv().await.is_none(),
        "the error ends the stream"
    );
    let mut ok = conn
        .open_stream(
            EARLY_PANIC_STREAM.id,
            Bytes::from_static(b"x"),
            grid::StreamOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(&ok.receiver.recv().await.unwrap().unwrap()[..], b"x");
    assert!(ok.receiver.recv().await.is_none(), "the node keeps serving");
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_over_the_peers_smaller_limit_is_refused_locally() {
    let names = common::names(2);
    let book = common::AddressBook::default();
    let limits = [4usize << 20, 1 << 20];
    let mut nodes = Vec::new();
    for (name, limit) in names.iter().zip(limits) {
        let config = Config {
            max_payload: limit,
            ..common::test_config()
        };
        let m = book.start(book.builder(name, &names, config)).await;
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

/// A pair whose dialing node counts its dials; `shut_dialer` picks which node shuts down.
/// After the shutdown the link stays down, calls on the shut-down node fail fast, and the peer
/// sees the link go down with a reason and gets no connection back.
async fn shutdown_stays_down(shut_dialer: bool) {
    let names = common::names(2);
    let dialer = grid::dialer_of(&names[0], &names[1]).to_owned();
    let acceptor = names.iter().find(|n| **n != dialer).unwrap().clone();
    let book = common::AddressBook::default();
    let dials = Arc::new(AtomicUsize::new(0));
    let (dialed_tx, mut dialed) = tokio::sync::mpsc::unbounded_channel();
    let counting: grid::DialFn = {
        let (inner, dials) = (book.dialer(), dials.clone());
        Arc::new(move |target| {
            dials.fetch_add(1, Ordering::SeqCst);
            let _ = dialed_tx.send(());
            inner(target)
        })
    };
    let d = book
        .start(
            book.builder(&dialer, &names, common::test_config())
                .dialer(counting),
        )
        .await;
    let a = book
        .start(book.builder(&acceptor, &names, common::test_config()))
        .await;
    let nodes = [d, a];
    common::wait_mesh(&nodes).await;
    for m in &nodes {
        m.register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
            .unwrap();
    }
    let (gone, survivor) = if shut_dialer {
        (&nodes[0], &nodes[1])
    } else {
        (&nodes[1], &nodes[0])
    };
    gone.shutdown().await;
    let dials_at_shutdown = dials.load(Ordering::SeqCst);

    let conn = gone.connection(survivor.name()).unwrap();
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

    // The peer sees the link go down with a reason.
    // Polled: the link's state changes a moment after its `Disconnected` event, which may have
    // gone out before this test could subscribe.
    let back = survivor.connection(gone.name()).unwrap();
    common::eventually("the peer sees the link down", common::WAIT, || {
        match back.state() {
            grid::ConnState::Connected => Err(grid::ConnState::Connected),
            _ => Ok(()),
        }
    })
    .await;
    assert!(back.last_close_reason().is_some(), "a reason is kept");

    if shut_dialer {
        // The shut-down node's dial loop is gone: not one dial after `shutdown` returned.
        assert_eq!(dials.load(Ordering::SeqCst), dials_at_shutdown);
    } else {
        // The survivor keeps redialing; let it try twice more, then the link must still be
        // down: the shut-down node accepts nothing.
        while dialed.try_recv().is_ok() {}
        for _ in 0..2 {
            tokio::time::timeout(common::WAIT, dialed.recv())
                .await
                .expect("the surviving dialer stopped redialing")
                .unwrap();
        }
    }
    assert_ne!(
        back.state(),
        grid::ConnState::Connected,
        "the link came back"
    );
    assert_eq!(back.stats().connects, 1, "{:?}", back.stats());
    assert_eq!(conn.state(), grid::ConnState::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_acceptor_shuts_down_the_link_stays_down_and_calls_fail_fast() {
    shutdown_stays_down(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_dialer_shuts_down_the_link_stays_down_and_calls_fail_fast() {
    shutdown_stays_down(true).await;
}

const HOLD: HandlerSpec = HandlerSpec::named("Review.hold");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managers_stats_count_the_handler_tasks_of_all_its_connections() {
    let nodes = common::connected(3, common::test_config()).await;
    for m in &nodes {
        m.register_stream(HOLD, |ctx, _b: Bytes, _input, _out| async move {
            ctx.cancelled().await;
            Ok(())
        })
        .unwrap();
    }
    // Two streams from each of the other nodes: the server's count spans two connections.
    let mut held = Vec::new();
    for caller in &nodes[1..] {
        let conn = caller.connection(nodes[0].name()).unwrap();
        for _ in 0..2 {
            held.push(
                conn.open_stream(HOLD.id, Bytes::new(), grid::StreamOptions::default())
                    .await
                    .unwrap(),
            );
        }
    }
    common::eventually("4 streams served by 4 handler tasks", common::WAIT, || {
        let f = nodes[0].stats().in_flight;
        if f.streams_in == 4 && f.handlers == 4 {
            Ok(())
        } else {
            Err(f)
        }
    })
    .await;
    drop(held);
    common::assert_drained(&nodes).await;
}
