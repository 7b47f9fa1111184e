//! A unary handler is polled once on the connection's reader and gets a task of its own only if
//! it waits: these tests check that a waiting handler holds up nothing else, and that every way
//! a handler can leave its first poll (answer, wait, wake itself, panic) ends in one answer.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use grid::{Error, ErrorCode, HandlerSpec, RemoteError};
use tokio::sync::{mpsc, Notify};

const ECHO: HandlerSpec = HandlerSpec::named("FirstPoll.echo");
const GATED: HandlerSpec = HandlerSpec::named("FirstPoll.gated");
const YIELDS: HandlerSpec = HandlerSpec::named("FirstPoll.yields");
const LATE_PANIC: HandlerSpec = HandlerSpec::named("FirstPoll.late_panic");

/// Calls to a handler that waits on a gate are held while echo calls on the same connection
/// are answered; opening the gate answers them all, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_handler_holds_up_no_other_call_on_its_connection() {
    let nodes = common::connected(2, common::test_config()).await;
    let gate = Arc::new(Notify::new());
    let (started_tx, mut started) = mpsc::unbounded_channel();
    for m in &nodes {
        m.register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
            .unwrap();
        let gate = gate.clone();
        let started_tx = started_tx.clone();
        m.register_unary(GATED, move |_ctx, b| {
            let gate = gate.clone();
            let started_tx = started_tx.clone();
            async move {
                let opened = gate.notified();
                let _ = started_tx.send(());
                opened.await;
                Ok::<_, RemoteError>(b)
            }
        })
        .unwrap();
    }
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    const HELD: usize = 8;
    let held: Vec<_> = (0..HELD)
        .map(|i| {
            let conn = conn.clone();
            tokio::spawn(async move { conn.request(GATED.id, Bytes::from(vec![i as u8; 3])).await })
        })
        .collect();
    for _ in 0..HELD {
        common::recv_within(&mut started, common::WAIT).await;
    }
    // Every gated handler is waiting; the connection still answers at once.
    for i in 0..100u32 {
        let body = Bytes::from(i.to_be_bytes().to_vec());
        let back = tokio::time::timeout(common::WAIT, conn.request(ECHO.id, body.clone()))
            .await
            .expect("an echo call beside waiting handlers")
            .unwrap();
        assert_eq!(back, body);
    }
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "a gated call ended early"
    );
    gate.notify_waiters();
    for (i, h) in held.into_iter().enumerate() {
        let back = tokio::time::timeout(common::WAIT, h)
            .await
            .expect("a gated call after the gate opened")
            .unwrap()
            .unwrap();
        assert_eq!(&back[..], &[i as u8; 3]);
    }
    common::assert_drained(&nodes).await;
}

/// A handler that wakes itself and returns pending on its first poll (as `yield_now` does) is
/// polled again in its own task and answers; one that panics on a later poll is answered with a
/// remote panic, and the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_yields_or_panics_after_its_first_poll_is_answered_once() {
    let nodes = common::connected(2, common::test_config()).await;
    let polls = Arc::new(AtomicUsize::new(0));
    for m in &nodes {
        m.register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
            .unwrap();
        let p = polls.clone();
        m.register_unary(YIELDS, move |_ctx, b| {
            let p = p.clone();
            async move {
                for _ in 0..3 {
                    p.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
                Ok::<_, RemoteError>(b)
            }
        })
        .unwrap();
        m.register_unary(LATE_PANIC, |_ctx, _b| async move {
            tokio::task::yield_now().await;
            if true {
                panic!("boom after a wait");
            }
            Ok::<_, RemoteError>(Bytes::new())
        })
        .unwrap();
    }
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    for i in 0..20u8 {
        let back = conn
            .request(YIELDS.id, Bytes::from(vec![i; 5]))
            .await
            .unwrap();
        assert_eq!(&back[..], &[i; 5]);
        match conn.request(LATE_PANIC.id, Bytes::new()).await {
            Err(Error::Remote(e)) => {
                assert_eq!(e.code, ErrorCode::Panic);
                let text = String::from_utf8_lossy(&e.message).into_owned();
                assert!(text.contains("boom after a wait"), "{text}");
            }
            other => panic!("expected a remote panic, got {other:?}"),
        }
    }
    assert_eq!(polls.load(Ordering::Relaxed), 60);
    let back = conn
        .request(ECHO.id, Bytes::from_static(b"after"))
        .await
        .unwrap();
    assert_eq!(&back[..], b"after");
    assert_eq!(conn.stats().connects, 1);
    common::assert_drained(&nodes).await;
}
