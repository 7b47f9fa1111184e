//! Calls that fail at once: they never start a handler, never send a frame, and never starve the
//! runtime of a caller that retries them in a loop.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{bound, SECRET, WAIT};
use grid_core::{CallOptions, Config, Error, HandlerSpec, Manager, StreamOptions};

const FEED: HandlerSpec = HandlerSpec::named("Fast.feed");
const ECHO: HandlerSpec = HandlerSpec::named("Fast.echo");

#[tokio::test(flavor = "current_thread")]
async fn a_retry_loop_against_a_disconnected_peer_lets_other_tasks_run() {
    // A peer that never answers: nothing listens at its address.
    let (l, me) = bound();
    let (gone, peer) = bound();
    drop(gone);
    let m = Manager::builder(me)
        .peers([peer.clone()])
        .secret(SECRET)
        .listener(l)
        .start()
        .await
        .unwrap();
    let conn = m.connection(&peer).unwrap();
    let ticks = Arc::new(AtomicUsize::new(0));
    let t = ticks.clone();
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(1));
        loop {
            every.tick().await;
            t.fetch_add(1, Ordering::Relaxed);
        }
    });
    // On one thread, the ticker runs only if the failing calls yield now and then.
    let mut calls = 0u64;
    while ticks.load(Ordering::Relaxed) < 5 {
        let r = conn
            .call(ECHO.id, Bytes::new(), CallOptions::default())
            .await;
        assert!(matches!(r, Err(Error::NotConnected { .. })), "{r:?}");
        calls += 1;
        assert!(
            calls < 20_000_000,
            "the ticker never ran: failing calls starve the runtime"
        );
    }
    ticker.abort();
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_stream_deadline_fails_before_anything_is_sent() {
    let (la, a) = bound();
    let (lb, b) = bound();
    let names = [a.clone(), b.clone()];
    let config = Config::default();
    let start = |l, me: &str| {
        Manager::builder(me)
            .peers(names.iter().cloned())
            .secret(SECRET)
            .config(config.clone())
            .listener(l)
            .start()
    };
    let ma = start(la, &a).await.unwrap();
    let mb = start(lb, &b).await.unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    mb.register_stream(FEED, move |_, _, _, _| {
        s.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    })
    .unwrap();
    let conn = ma.connection(&b).unwrap();
    conn.wait_for_connect(WAIT).await.unwrap();
    let before = conn.stats().frames_out;
    let opts = StreamOptions {
        timeout: Some(Duration::ZERO),
        ..StreamOptions::default()
    };
    let r = conn.open_stream(FEED.id, Bytes::new(), opts).await;
    assert!(matches!(r, Err(Error::Deadline)), "{r:?}");
    let r = conn
        .call(
            FEED.id,
            Bytes::new(),
            CallOptions {
                timeout: Some(Duration::ZERO),
                ..CallOptions::default()
            },
        )
        .await;
    assert!(matches!(r, Err(Error::Deadline)), "{r:?}");
    assert_eq!(conn.stats().frames_out, before, "nothing was sent");
    assert_eq!(started.load(Ordering::SeqCst), 0, "no handler started");
    ma.shutdown().await;
    mb.shutdown().await;
}
