//! Streams over real loopback sockets: two-way round trips, cancellation both ways, handler
//! errors mid-stream, and streams that stall without blocking the rest of the connection.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use grid::{CancelCause, Error, ErrorCode, HandlerSpec, RemoteError, StreamOptions};
use tokio::sync::mpsc;

const ECHO: HandlerSpec = HandlerSpec::named("Streams.echo");
const UNARY: HandlerSpec = HandlerSpec::named("Streams.unary");
const COUNT: HandlerSpec = HandlerSpec::named("Streams.count");
const HANG: HandlerSpec = HandlerSpec::named("Streams.hang");
const FAIL_AFTER: HandlerSpec = HandlerSpec::named("Streams.fail_after");
const STALL: HandlerSpec = HandlerSpec::named("Streams.stall");
const FILL: HandlerSpec = HandlerSpec::named("Streams.fill");

fn n_bytes(n: u32) -> Bytes {
    Bytes::from(n.to_be_bytes().to_vec())
}

fn parse(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

fn internal(e: Error) -> RemoteError {
    RemoteError::text(ErrorCode::Internal, e.to_string())
}

fn register_common(nodes: &[grid::Manager]) {
    for m in nodes {
        m.register_unary(UNARY, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
            .unwrap();
        m.register_stream(ECHO, |_ctx, _b, input, mut out| async move {
            let mut input = input.expect("echo needs input");
            while let Some(item) = input.next().await {
                out.send(item.map_err(internal)?).await.map_err(internal)?;
            }
            Ok(())
        })
        .unwrap();
        m.register_stream(COUNT, |_ctx, b, _input, mut out| async move {
            for i in 0..parse(&b) {
                out.send(n_bytes(i)).await.map_err(internal)?;
            }
            Ok(())
        })
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_two_way_round_trip_of_ten_each_way() {
    let nodes = common::connected(2, common::test_config()).await;
    register_common(&nodes);
    for (a, b) in [(0, 1), (1, 0)] {
        let conn = nodes[a].connection(nodes[b].name()).unwrap();
        let opts = StreamOptions {
            in_capacity: 4,
            ..StreamOptions::default()
        };
        let s = conn.open_stream(ECHO.id, Bytes::new(), opts).await.unwrap();
        let mut sender = s.sender.expect("two-way stream has a sender");
        let mut receiver = s.receiver;
        for i in 0..10u32 {
            sender.send(n_bytes(i)).await.unwrap();
            let got = receiver.next().await.unwrap().unwrap();
            assert_eq!(parse(&got), i);
        }
        sender.finish();
        assert!(receiver.next().await.is_none(), "clean end after finish");
    }
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_dropping_the_receiver_cancels_the_handler() {
    let nodes = common::connected(2, common::test_config()).await;
    register_common(&nodes);
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    nodes[1]
        .register_stream(HANG, move |ctx, _b, _input, mut out| {
            let tx = tx.clone();
            let started_tx = started_tx.clone();
            async move {
                out.send(n_bytes(0)).await.map_err(internal)?;
                let _ = started_tx.send(());
                let cause = ctx.cancelled().await;
                let _ = tx.send(cause);
                Ok(())
            }
        })
        .unwrap();
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    for two_way in [false, true] {
        let opts = StreamOptions {
            in_capacity: if two_way { 4 } else { 0 },
            ..StreamOptions::default()
        };
        let mut s = conn.open_stream(HANG.id, Bytes::new(), opts).await.unwrap();
        assert_eq!(parse(&s.receiver.next().await.unwrap().unwrap()), 0);
        common::recv_within(&mut started_rx, common::WAIT).await;
        drop(s.receiver);
        let cause = common::recv_within(&mut rx, Duration::from_secs(2)).await;
        assert_eq!(cause, CancelCause::CallerGaveUp, "two_way={two_way}");
        drop(s.sender.take());
    }
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_handler_error_after_k_items() {
    let nodes = common::connected(2, common::test_config()).await;
    register_common(&nodes);
    let message = common::pattern(1024, 3);
    for m in &nodes {
        let msg = message.clone();
        m.register_stream(FAIL_AFTER, move |_ctx, b, _input, mut out| {
            let msg = msg.clone();
            async move {
                for i in 0..parse(&b) {
                    out.send(n_bytes(i)).await.map_err(internal)?;
                }
                Err(RemoteError::application(msg))
            }
        })
        .unwrap();
    }
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    for k in [0u32, 1, 7] {
        let mut s = conn
            .open_stream(FAIL_AFTER.id, n_bytes(k), StreamOptions::default())
            .await
            .unwrap();
        for i in 0..k {
            assert_eq!(parse(&s.receiver.next().await.unwrap().unwrap()), i);
        }
        match s.receiver.next().await {
            Some(Err(Error::Remote(e))) => {
                assert_eq!(e.code, ErrorCode::Application);
                assert_eq!(e.message, message);
            }
            other => panic!("expected the handler's error after {k} items, got {other:?}"),
        }
        assert!(s.receiver.next().await.is_none());
    }
    common::assert_drained(&nodes).await;
}

/// Waits (bounded) until the counter a task reports to has reached `n`.
async fn wait_count(count: &mut tokio::sync::watch::Receiver<u32>, n: u32, what: &str) {
    let reached = tokio::time::timeout(common::WAIT, count.wait_for(|c| *c >= n))
        .await
        .is_ok();
    assert!(
        reached,
        "{what}: {} of {n} within the bound",
        *count.borrow()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_unread_output_does_not_block_unary_calls() {
    let nodes = common::connected(2, common::test_config()).await;
    register_common(&nodes);
    // Like COUNT, and it reports how many items it has sent so far.
    let (sent_tx, mut sent) = tokio::sync::watch::channel(0u32);
    nodes[1]
        .register_stream(FILL, move |_ctx, b, _input, mut out| {
            let sent_tx = sent_tx.clone();
            async move {
                for i in 0..parse(&b) {
                    out.send(n_bytes(i)).await.map_err(internal)?;
                    sent_tx.send_replace(i + 1);
                }
                Ok(())
            }
        })
        .unwrap();
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let opts = StreamOptions {
        out_capacity: 16,
        ..StreamOptions::default()
    };
    let mut s = conn
        .open_stream(FILL.id, n_bytes(1000), opts)
        .await
        .unwrap();
    // The handler fills the stream's window while nobody reads.
    wait_count(&mut sent, 16, "items sent ahead of the reader").await;
    let calls = (0..100u32).map(|i| {
        let conn = conn.clone();
        async move { conn.request(UNARY.id, n_bytes(i)).await }
    });
    let results = tokio::time::timeout(common::WAIT, futures::future::join_all(calls))
        .await
        .expect("unary calls blocked behind an unread stream");
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(parse(&r.unwrap()) as usize, i);
    }
    assert!(
        *sent.borrow() < 1000,
        "the handler sent everything although nobody read: no flow control"
    );
    for i in 0..1000u32 {
        assert_eq!(parse(&s.receiver.next().await.unwrap().unwrap()), i);
    }
    assert!(s.receiver.next().await.is_none());
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_stalled_handler_does_not_block_unary_calls() {
    let nodes = common::connected(2, common::test_config()).await;
    register_common(&nodes);
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    nodes[1]
        .register_stream(STALL, move |_ctx, _b, input, mut out| {
            let mut release = release_rx.clone();
            async move {
                let mut input = input.expect("stall needs input");
                release
                    .wait_for(|r| *r)
                    .await
                    .map_err(|e| RemoteError::text(ErrorCode::Internal, e.to_string()))?;
                let mut n = 0u32;
                while let Some(item) = input.next().await {
                    assert_eq!(parse(&item.map_err(internal)?), n);
                    n += 1;
                }
                out.send(n_bytes(n)).await.map_err(internal)?;
                Ok(())
            }
        })
        .unwrap();
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let opts = StreamOptions {
        in_capacity: 8,
        ..StreamOptions::default()
    };
    let s = conn
        .open_stream(STALL.id, Bytes::new(), opts)
        .await
        .unwrap();
    let mut sender = s.sender.unwrap();
    let mut receiver = s.receiver;
    // The pusher blocks once the handler's window is full; that must not hold up anything else.
    let (pushed_tx, mut pushed) = tokio::sync::watch::channel(0u32);
    let pusher = tokio::spawn(async move {
        for i in 0..100u32 {
            sender.send(n_bytes(i)).await.unwrap();
            pushed_tx.send_replace(i + 1);
        }
        sender.finish();
    });
    wait_count(&mut pushed, 8, "items pushed into the handler's window").await;
    let calls = (0..100u32).map(|i| {
        let conn = conn.clone();
        async move { conn.request(UNARY.id, n_bytes(i)).await }
    });
    let results = tokio::time::timeout(common::WAIT, futures::future::join_all(calls))
        .await
        .expect("unary calls blocked behind a stalled handler");
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(parse(&r.unwrap()) as usize, i);
    }
    assert!(
        !pusher.is_finished() && *pushed.borrow() < 100,
        "the handler reads nothing, yet the pusher sent {} items",
        *pushed.borrow()
    );
    release_tx.send(true).unwrap();
    tokio::time::timeout(common::WAIT, pusher)
        .await
        .expect("pusher hung")
        .unwrap();
    assert_eq!(parse(&receiver.next().await.unwrap().unwrap()), 100);
    assert!(receiver.next().await.is_none());
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_deadline_reaches_handler_and_caller_gets_deadline() {
    let nodes = common::connected(2, common::test_config()).await;
    register_common(&nodes);
    let (tx, mut rx) = mpsc::unbounded_channel();
    nodes[1]
        .register_stream(HANG, move |ctx, _b, _input, mut out| {
            let tx = tx.clone();
            async move {
                out.send(n_bytes(0)).await.map_err(internal)?;
                let deadline = ctx.deadline();
                let cause = ctx.cancelled().await;
                let _ = tx.send((deadline, cause));
                Ok(())
            }
        })
        .unwrap();
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let opts = StreamOptions {
        in_capacity: 4,
        timeout: Some(Duration::from_millis(200)),
        ..StreamOptions::default()
    };
    let t = std::time::Instant::now();
    let mut s = conn.open_stream(HANG.id, Bytes::new(), opts).await.unwrap();
    assert_eq!(parse(&s.receiver.next().await.unwrap().unwrap()), 0);
    let end = tokio::time::timeout(Duration::from_secs(2), s.receiver.next())
        .await
        .expect("the stream's deadline did not fire");
    assert!(matches!(end, Some(Err(Error::Deadline))), "{end:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(190),
        "{:?}",
        t.elapsed()
    );
    let (deadline, cause) = common::recv_within(&mut rx, Duration::from_secs(2)).await;
    assert!(
        deadline.is_some(),
        "the handler must see the stream's deadline"
    );
    assert_eq!(cause, CancelCause::Deadline);
    drop(s);
    let ok = conn.request(UNARY.id, n_bytes(5)).await.unwrap();
    assert_eq!(parse(&ok), 5);
    common::assert_drained(&nodes).await;
}

/// The handler ends while the caller is still sending: the caller's sender fails instead of
/// hanging, and the receiver reports the clean end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_handler_ending_early_stops_the_callers_sender() {
    let nodes = common::connected(2, common::test_config()).await;
    register_common(&nodes);
    for m in &nodes {
        m.register_stream(STALL, |_ctx, _b, input, mut out| async move {
            let mut input = input.expect("needs input");
            let first = input.next().await.unwrap().map_err(internal)?;
            out.send(first).await.map_err(internal)?;
            Ok(())
        })
        .unwrap();
    }
    for (a, b) in [(0, 1), (1, 0)] {
        let conn = nodes[a].connection(nodes[b].name()).unwrap();
        let opts = StreamOptions {
            in_capacity: 2,
            ..StreamOptions::default()
        };
        let s = conn
            .open_stream(STALL.id, Bytes::new(), opts)
            .await
            .unwrap();
        let mut sender = s.sender.unwrap();
        let mut receiver = s.receiver;
        sender.send(n_bytes(42)).await.unwrap();
        assert_eq!(parse(&receiver.next().await.unwrap().unwrap()), 42);
        assert!(receiver.next().await.is_none());
        let pushed = tokio::time::timeout(Duration::from_secs(2), async {
            for i in 0..100u32 {
                if sender.send(n_bytes(i)).await.is_err() {
                    return true;
                }
            }
            false
        })
        .await
        .expect("the sender hung after the handler ended");
        assert!(pushed, "sending 100 items to a finished handler must fail");
    }
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_that_panics_mid_item_sends_no_half_frame() {
    let nodes = common::connected(2, common::test_config()).await;
    register_common(&nodes);
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let connects = conn.stats().connects;
    let s = conn
        .open_stream(ECHO.id, Bytes::new(), StreamOptions::two_way())
        .await
        .unwrap();
    let mut sender = s.sender.expect("two-way stream has a sender");
    let mut receiver = s.receiver;
    // Item 1 is encoded whole; item 2's encoder writes part of it, then panics. The panic is the
    // sending task's; the items before it go, and the link carries no half frame.
    let sending = tokio::spawn(async move {
        sender
            .send_encoded([1u32, 2], |i: &u32, dst: &mut bytes::BytesMut| {
                dst.extend_from_slice(&i.to_be_bytes());
                if *i == 2 {
                    dst.extend_from_slice(b"half of an item");
                    panic!("the encoder gave up mid-item");
                }
                Ok::<(), Error>(())
            })
            .await
    });
    let joined = within("the sending task", sending).await;
    assert!(
        joined.unwrap_err().is_panic(),
        "the encoder's panic is the task's"
    );
    let got = within("item 1", receiver.next()).await;
    assert_eq!(
        parse(&got.unwrap().unwrap()),
        1,
        "the item before the panic went"
    );
    // The sender was dropped as the task unwound: its input ended, so the echo ends cleanly.
    let end = within("the stream's end", receiver.next()).await;
    assert!(end.is_none(), "a clean end, got {end:?}");
    common::assert_echo(&conn, UNARY, b"after the panic").await;
    assert_eq!(conn.stats().connects, connects, "the link stayed up");
    assert_eq!(conn.last_close_reason(), None, "nothing closed the link");
    common::assert_drained(&nodes).await;
}

/// Awaits `f`, failing the test if it takes longer than the suite's bound.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(common::WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {:?}", common::WAIT))
}
