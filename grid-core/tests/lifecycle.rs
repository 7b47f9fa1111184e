//! A node's life as its peers see it, over real sockets: a graceful drain, a restart under the
//! same name, and the link events that report both.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{bound, eventually, next_event, test_config, SECRET, WAIT};
use grid_core::{
    CallOptions, CancelCause, CloseKind, Connection, Error, HandlerSpec, LinkEvent, Manager,
    StreamOptions,
};
use tokio::sync::{mpsc, Notify, Semaphore};

const SLOW: HandlerSpec = HandlerSpec::named("Life.slow");
const ECHO: HandlerSpec = HandlerSpec::named("Life.echo");
const FEED: HandlerSpec = HandlerSpec::named("Life.feed");

async fn node(listener: TcpListener, name: &str, peers: &[String]) -> Manager {
    common::builder(listener, name, peers, test_config())
        .start()
        .await
        .unwrap()
}

/// Two nodes that know each other, both serving `echo`.
async fn pair() -> (Manager, Manager) {
    let (la, a) = bound();
    let (lb, b) = bound();
    let names = [a.clone(), b.clone()];
    let ma = node(la, &a, &names).await;
    let mb = node(lb, &b, &names).await;
    for m in [&ma, &mb] {
        m.register_unary(ECHO, |_, b| async move { Ok(b) }).unwrap();
        m.wait_for_peers(WAIT).await.unwrap();
    }
    (ma, mb)
}

async fn echo(conn: &Connection, what: &'static str) -> Result<Bytes, Error> {
    conn.call(
        ECHO.id,
        Bytes::from_static(what.as_bytes()),
        CallOptions::default(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_calls_in_flight_and_fails_new_ones_fast_with_going_away() {
    let (a, b) = pair().await;
    // b serves a slow unary call and a stream, both held until the test releases them.
    // Each handler takes one permit; the test adds them when it releases the handlers.
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    b.register_unary(SLOW, move |_, p| {
        let (g, entered_tx) = (g.clone(), entered_tx.clone());
        async move {
            let _ = entered_tx.send(());
            g.acquire().await.unwrap().forget();
            Ok(p)
        }
    })
    .unwrap();
    let g = gate.clone();
    b.register_stream(FEED, move |_, _, _, mut out| {
        let g = g.clone();
        async move {
            for i in 0..10u8 {
                if i == 5 {
                    g.acquire().await.unwrap().forget();
                }
                out.send(Bytes::from(vec![i])).await.map_err(|e| {
                    grid_core::RemoteError::text(grid_core::ErrorCode::Internal, e.to_string())
                })?;
            }
            Ok(())
        }
    })
    .unwrap();
    let to_b = a.connection(b.name()).unwrap();
    let mut events = to_b.events();
    let slow = {
        let c = to_b.clone();
        tokio::spawn(async move {
            c.call(SLOW.id, Bytes::from_static(b"kept"), CallOptions::default())
                .await
        })
    };
    let mut stream = to_b
        .open_stream(FEED.id, Bytes::new(), StreamOptions::default())
        .await
        .unwrap();
    for i in 0..5u8 {
        let item = tokio::time::timeout(WAIT, stream.receiver.recv())
            .await
            .unwrap();
        assert_eq!(item.unwrap().unwrap(), Bytes::from(vec![i]));
    }
    tokio::time::timeout(WAIT, entered.recv())
        .await
        .expect("the slow call reached its handler");
    // Both calls are now in flight on b.
    let draining = {
        let b = b.clone();
        tokio::spawn(async move { b.drain(WAIT).await })
    };
    next_event("going away", WAIT, &mut events, |e| {
        matches!(e, LinkEvent::GoingAway { .. }).then_some(())
    })
    .await;
    match echo(&to_b, "new").await {
        Err(Error::GoingAway { peer }) => assert_eq!(peer, b.name()),
        other => panic!("a new call to a draining node must fail fast with GoingAway: {other:?}"),
    }
    // The draining node's own calls keep working.
    let to_a = b.connection(a.name()).unwrap();
    assert_eq!(
        echo(&to_a, "out").await.unwrap(),
        Bytes::from_static(b"out")
    );
    // Release the handlers: everything in flight completes.
    gate.add_permits(2);
    let r = tokio::time::timeout(WAIT, slow).await.unwrap().unwrap();
    assert_eq!(r.unwrap(), Bytes::from_static(b"kept"));
    for i in 5..10u8 {
        let item = tokio::time::timeout(WAIT, stream.receiver.recv())
            .await
            .unwrap();
        assert_eq!(item.unwrap().unwrap(), Bytes::from(vec![i]));
    }
    assert!(
        tokio::time::timeout(WAIT, stream.receiver.recv())
            .await
            .unwrap()
            .is_none(),
        "a clean end"
    );
    tokio::time::timeout(WAIT, draining).await.unwrap().unwrap();
    let reason = next_event("disconnected", WAIT, &mut events, |e| match e {
        LinkEvent::Disconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.is_going_away(), "{reason}");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_by_the_drain_bound_ends_with_going_away_not_a_clean_end() {
    let (a, b) = pair().await;
    let (cause_tx, mut cause_rx) = mpsc::unbounded_channel();
    b.register_stream(FEED, move |ctx, _, _, mut out| {
        let cause_tx = cause_tx.clone();
        async move {
            let _ = out.send(Bytes::from_static(b"first")).await;
            let cause = ctx.cancelled().await;
            let _ = cause_tx.send(cause);
            Ok(())
        }
    })
    .unwrap();
    let to_b = a.connection(b.name()).unwrap();
    let mut stream = to_b
        .open_stream(FEED.id, Bytes::new(), StreamOptions::default())
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, stream.receiver.recv())
        .await
        .unwrap();
    assert_eq!(first.unwrap().unwrap(), Bytes::from_static(b"first"));
    b.drain(Duration::from_millis(300)).await;
    match tokio::time::timeout(WAIT, stream.receiver.recv())
        .await
        .unwrap()
    {
        Some(Err(Error::GoingAway { .. })) => {}
        other => panic!("expected GoingAway after the bound, got {other:?}"),
    }
    let cause = tokio::time::timeout(WAIT, cause_rx.recv()).await.unwrap();
    assert_eq!(cause, Some(CancelCause::ShuttingDown));
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_seen_as_restarted_and_old_calls_fail_disconnected() {
    // `a` listens; `b` has no listener and must be the dialing side, so it can be restarted
    // under the same name without any port being released and rebound.
    let (la, a_name) = bound();
    let b_name = (1..)
        .map(|i| format!("http://127.0.0.1:{}", 1000 + i))
        .find(|b| grid_core::dialer_of(&a_name, b) == b.as_str())
        .unwrap();
    let names = [a_name.clone(), b_name.clone()];
    let a = node(la, &a_name, &names).await;
    let start_b = || async {
        let b = Manager::builder(b_name.clone())
            .peers(names.iter().cloned())
            .secret(SECRET)
            .config(test_config())
            .no_listener()
            .start()
            .await
            .unwrap();
        let never = Arc::new(Notify::new());
        b.register_unary(SLOW, move |_, p| {
            let never = never.clone();
            async move {
                never.notified().await;
                Ok(p)
            }
        })
        .unwrap();
        b.register_unary(ECHO, |_, p| async move { Ok(p) }).unwrap();
        b
    };
    let to_b = a.connection(&b_name).unwrap();
    let mut events = to_b.events();
    let mut all = a.events();
    let b1 = start_b().await;
    let first = next_event("first connect", WAIT, &mut events, |e| match e {
        LinkEvent::Connected { instance, .. } => Some(*instance),
        _ => None,
    })
    .await;
    assert_eq!(to_b.peer_instance(), Some(first));
    let in_flight = {
        let c = to_b.clone();
        tokio::spawn(async move { c.call(SLOW.id, Bytes::new(), CallOptions::default()).await })
    };
    // Let the call reach b1 (its handler then waits forever), then crash b1's link.
    eventually("the call reaches b1", WAIT, || {
        let f = b1.stats().in_flight;
        if f.unary_in == 0 {
            Err(f)
        } else {
            Ok(())
        }
    })
    .await;
    b1.connection(&a_name).unwrap().kill_socket();
    b1.shutdown().await;
    match tokio::time::timeout(WAIT, in_flight)
        .await
        .unwrap()
        .unwrap()
    {
        Err(Error::Disconnected { .. }) => {}
        other => panic!("a call in flight to the old instance must fail Disconnected: {other:?}"),
    }
    let _b2 = start_b().await;
    let (old, new) = next_event("restarted", WAIT, &mut events, |e| match e {
        LinkEvent::Restarted { old, new, .. } => Some((*old, *new)),
        _ => None,
    })
    .await;
    assert_eq!(old, first);
    assert_ne!(new, first, "a new process has a new instance id");
    let connected = next_event("second connect", WAIT, &mut events, |e| match e {
        LinkEvent::Connected { instance, .. } => Some(*instance),
        _ => None,
    })
    .await;
    assert_eq!(connected, new);
    assert_eq!(to_b.peer_instance(), Some(new));
    assert_eq!(
        echo(&to_b, "again").await.unwrap(),
        Bytes::from_static(b"again")
    );
    // The manager's channel saw the same story, with a typed reason for the old session's end:
    // the crash, or — if the new instance arrived before the crash was noticed — its
    // replacement. The two events may come in either order.
    let (mut reason, mut restarted) = (None, false);
    while reason.is_none() || !restarted {
        next_event(
            "manager: disconnected and restarted",
            WAIT,
            &mut all,
            |e| match e {
                LinkEvent::Disconnected { reason: r, .. } => {
                    reason = Some(r.clone());
                    Some(())
                }
                LinkEvent::Restarted { .. } => {
                    restarted = true;
                    Some(())
                }
                _ => None,
            },
        )
        .await;
    }
    let reason = reason.unwrap();
    assert!(
        matches!(
            reason.kind,
            CloseKind::SocketClosed | CloseKind::Io(_) | CloseKind::Replaced
        ),
        "{reason:?}"
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_not_ready_refuses_peers_until_its_handlers_are_registered() {
    // `b` accepts `a` by the dial rule, and starts not ready.
    let ((la, a), (lb, b)) = common::dialer_and_acceptor();
    let names = [a.clone(), b.clone()];
    let ma = node(la, &a, &names).await;
    let mb = Manager::builder(b.as_str())
        .peers(names.iter().cloned())
        .secret(SECRET)
        .config(test_config())
        .listener(lb)
        .start_not_ready()
        .start()
        .await
        .unwrap();
    assert!(!mb.is_ready());
    let to_b = ma.connection(&b).unwrap();
    let refusal = eventually("a tries b", WAIT, || {
        to_b.last_dial_failure().ok_or(to_b.state())
    })
    .await;
    match refusal {
        grid_core::DialFailure::Handshake(grid_core::HandshakeError::Rejected { code, .. }) => {
            assert_eq!(code, grid_core::RejectCode::NotReady)
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    assert_eq!(to_b.state(), grid_core::ConnState::Disconnected);
    mb.register_unary(ECHO, |_, p| async move { Ok(p) })
        .unwrap();
    mb.set_ready();
    to_b.wait_for_connect(WAIT).await.unwrap();
    assert_eq!(
        echo(&to_b, "ready").await.unwrap(),
        Bytes::from_static(b"ready")
    );
    ma.shutdown().await;
    mb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_added_and_removed_under_load_leave_other_links_untouched() {
    let (a, b) = pair().await;
    // Load between a and b for the whole test.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (c, stop) = (a.connection(b.name()).unwrap(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                echo(&c, "load").await.expect("the a-b link never fails");
                n += 1;
            }
            n
        })
    };
    // c joins: it knows a and b from the start; they learn of it while running.
    let (lc, c) = bound();
    let mc = node(lc, &c, &[a.name().to_owned(), b.name().to_owned()]).await;
    mc.register_unary(ECHO, |_, p| async move { Ok(p) })
        .unwrap();
    for m in [&a, &b] {
        m.add_peer(c.clone()).unwrap();
        assert!(m.add_peer(c.clone()).is_err(), "a member is added once");
    }
    mc.wait_for_peers(WAIT).await.unwrap();
    let a_to_c = a.connection(&c).unwrap();
    a_to_c.wait_for_connect(WAIT).await.unwrap();
    assert_eq!(
        echo(&a_to_c, "hi c").await.unwrap(),
        Bytes::from_static(b"hi c")
    );
    let mut c_events = mc.connection(a.name()).unwrap().events();
    // b's link to c is up before a removes c (c saw its own side up; b's may come a moment
    // later), so what the end checks is that the removal left it alone.
    let b_to_c = b.connection(&c).unwrap();
    b_to_c.wait_for_connect(WAIT).await.unwrap();
    // a removes c: its link is drained and closed, and c can no longer be called through a.
    a.remove_peer(&c, Duration::from_secs(2)).await.unwrap();
    assert!(!a.peers().contains(&c));
    match echo(&a_to_c, "gone").await {
        Err(Error::UnknownPeer(p)) => assert_eq!(p, c),
        other => panic!("a call to a removed member must fail with UnknownPeer: {other:?}"),
    }
    assert!(matches!(a.connection(&c), Err(Error::UnknownPeer(_))));
    next_event("c sees the link to a close", WAIT, &mut c_events, |e| {
        matches!(e, LinkEvent::Disconnected { .. }).then_some(())
    })
    .await;
    // b's link to c is untouched, and the a-b load never saw an error.
    assert_eq!(
        echo(&b_to_c, "b-c").await.unwrap(),
        Bytes::from_static(b"b-c")
    );
    stop.cancel();
    let calls = tokio::time::timeout(WAIT, load).await.unwrap().unwrap();
    assert!(calls > 0);
    for m in [&a, &b, &mc] {
        m.shutdown().await;
    }
}
