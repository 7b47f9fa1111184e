//! Failures over real loopback sockets: sockets killed mid-call and mid-stream, and a peer that
//! stops reading while the outbound queue fills.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use grid::{
    CallOptions, CancelCause, Config, Connection, Error, ErrorCode, HandlerSpec, Manager,
    RemoteError, StreamOptions,
};
use tokio::sync::mpsc;

const ECHO: HandlerSpec = HandlerSpec::named("Failures.echo");
const HANG: HandlerSpec = HandlerSpec::named("Failures.hang");
const HANG_STREAM: HandlerSpec = HandlerSpec::named("Failures.hang_stream");

type Reports = mpsc::UnboundedReceiver<(&'static str, CancelCause)>;

/// Registers an echo and two handlers that wait for cancellation and report its cause.
fn register(nodes: &[Manager]) -> (Reports, mpsc::UnboundedReceiver<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (started_tx, started_rx) = mpsc::unbounded_channel();
    for m in nodes {
        m.register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
            .unwrap();
        let (tx1, s1) = (tx.clone(), started_tx.clone());
        m.register_unary(HANG, move |ctx, _b| {
            let (tx, started) = (tx1.clone(), s1.clone());
            async move {
                let _ = started.send(());
                let cause = ctx.cancelled().await;
                let _ = tx.send(("unary", cause));
                Ok::<_, RemoteError>(Bytes::new())
            }
        })
        .unwrap();
        let (tx2, s2) = (tx.clone(), started_tx.clone());
        m.register_stream(HANG_STREAM, move |ctx, _b, _input, mut out| {
            let (tx, started) = (tx2.clone(), s2.clone());
            async move {
                out.send(Bytes::from_static(b"first"))
                    .await
                    .map_err(|e| RemoteError::text(ErrorCode::Internal, e.to_string()))?;
                let _ = started.send(());
                let cause = ctx.cancelled().await;
                let _ = tx.send(("stream", cause));
                Ok(())
            }
        })
        .unwrap();
    }
    (rx, started_rx)
}

/// Kills the socket from the caller's side or the callee's side while a unary call is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_kill_socket_mid_unary() {
    let nodes = common::connected(2, common::test_config()).await;
    let (mut reports, mut started) = register(&nodes);
    let mut connects = 1;
    for (a, b, kill_caller_side) in [(0, 1, true), (1, 0, true), (0, 1, false), (1, 0, false)] {
        let conn = nodes[a].connection(nodes[b].name()).unwrap();
        let back = nodes[b].connection(nodes[a].name()).unwrap();
        let call = {
            let conn = conn.clone();
            tokio::spawn(async move { conn.request(HANG.id, Bytes::new()).await })
        };
        common::recv_within(&mut started, common::WAIT).await;
        let t = Instant::now();
        if kill_caller_side {
            conn.kill_socket();
        } else {
            back.kill_socket();
        }
        let res = tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .expect("caller not failed promptly")
            .unwrap();
        assert!(matches!(res, Err(Error::Disconnected { .. })), "{res:?}");
        assert!(t.elapsed() < Duration::from_secs(2));
        let (kind, cause) = common::recv_within(&mut reports, Duration::from_secs(2)).await;
        assert_eq!((kind, cause), ("unary", CancelCause::Disconnected));
        connects += 1;
        reconnected(&conn, &back, connects).await;
    }
    common::assert_drained(&nodes).await;
}

/// Waits until both ends of a link have connected `connects` times; then a call gets through.
async fn reconnected(conn: &Connection, back: &Connection, connects: u64) {
    common::wait_connects(conn, connects).await;
    common::wait_connects(back, connects).await;
    common::assert_echo(conn, ECHO, b"again").await;
}

/// Kills the socket while a stream is open: the receiver ends with `Disconnected`, not a clean end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_kill_socket_mid_stream() {
    let nodes = common::connected(2, common::test_config()).await;
    let (mut reports, mut started) = register(&nodes);
    let mut connects = 1;
    for (a, b, kill_caller_side) in [(0, 1, true), (1, 0, true), (0, 1, false), (1, 0, false)] {
        let conn = nodes[a].connection(nodes[b].name()).unwrap();
        let back = nodes[b].connection(nodes[a].name()).unwrap();
        let opts = StreamOptions {
            in_capacity: 4,
            ..StreamOptions::default()
        };
        let mut s = conn
            .open_stream(HANG_STREAM.id, Bytes::new(), opts)
            .await
            .unwrap();
        assert_eq!(&s.receiver.next().await.unwrap().unwrap()[..], b"first");
        common::recv_within(&mut started, common::WAIT).await;
        let t = Instant::now();
        if kill_caller_side {
            conn.kill_socket();
        } else {
            back.kill_socket();
        }
        let end = tokio::time::timeout(Duration::from_secs(2), s.receiver.next())
            .await
            .expect("stream not failed promptly");
        assert!(
            matches!(end, Some(Err(Error::Disconnected { .. }))),
            "{end:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(2));
        let mut sender = s.sender.take().unwrap();
        assert!(sender.send(Bytes::from_static(b"late")).await.is_err());
        let (kind, cause) = common::recv_within(&mut reports, Duration::from_secs(2)).await;
        assert_eq!((kind, cause), ("stream", CancelCause::Disconnected));
        drop(sender);
        drop(s);
        connects += 1;
        reconnected(&conn, &back, connects).await;
    }
    common::assert_drained(&nodes).await;
}

/// Starts a pair where the dialing node dials through `proxy`. Returns (dialer, acceptor).
async fn proxied_pair(proxy: &common::Proxy, config: Config) -> Vec<Manager> {
    let names = common::names(2);
    let dialer = grid::dialer_of(&names[0], &names[1]).to_owned();
    let acceptor = names.iter().find(|n| **n != dialer).unwrap().clone();
    let book = common::AddressBook::default();
    let d = book
        .start(
            book.builder(&dialer, &names, config.clone())
                .dialer(proxy.dialer(&book)),
        )
        .await;
    let a = book.start(book.builder(&acceptor, &names, config)).await;
    let nodes = vec![d, a];
    common::wait_mesh(&nodes).await;
    nodes
}

async fn load_then_fail(nodes: &[Manager], proxy: &common::Proxy, kill: bool) {
    let (_reports, _started) = register(nodes);
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    common::assert_echo(&conn, ECHO, b"before").await;
    proxy.pause_current();
    // 200 x 64 KiB is more than the 8 MiB outbound queue plus the pipe: senders must wait.
    let payload = common::pattern(64 << 10, 9);
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let conn = conn.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                conn.call(
                    ECHO.id,
                    payload,
                    CallOptions {
                        timeout: Some(Duration::from_secs(30)),
                        ..CallOptions::default()
                    },
                )
                .await
            })
        })
        .collect();
    // A stream opened behind the blocked queue must fail too, not hang.
    let stream = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let s = conn
                .open_stream(HANG_STREAM.id, Bytes::new(), StreamOptions::default())
                .await;
            match s {
                Ok(mut s) => s.receiver.next().await.map(|r| r.map(|_| ())),
                Err(e) => Some(Err(e)),
            }
        })
    };
    // Every call has taken its slot (each registers before it waits for queue room); none may
    // have finished, since the peer reads nothing.
    common::eventually("all 200 calls start", common::WAIT, || {
        let in_flight = nodes[0].stats().in_flight;
        if in_flight.unary_out == 200 {
            Ok(())
        } else {
            Err(in_flight)
        }
    })
    .await;
    assert!(
        calls.iter().all(|c| !c.is_finished()),
        "calls finished although the peer reads nothing"
    );
    let t = Instant::now();
    if kill {
        conn.kill_socket();
    }
    let bound = if kill {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(10)
    };
    for c in calls {
        let r = tokio::time::timeout(bound, c)
            .await
            .expect("a call hung after the socket died")
            .unwrap();
        assert!(r.unwrap_err().is_connection_error());
    }
    let s = tokio::time::timeout(bound, stream)
        .await
        .expect("the stream hung after the socket died")
        .unwrap();
    assert!(
        !matches!(s, None | Some(Ok(()))),
        "the stream must end with an error: {s:?}"
    );
    eprintln!("all calls failed {:?} after the kill", t.elapsed());
    common::wait_connects(&conn, 2).await;
    assert!(proxy.dials() >= 2);
    common::assert_echo(&conn, ECHO, b"after").await;
    let back = nodes[1].connection(nodes[0].name()).unwrap();
    common::assert_echo(&back, ECHO, b"back").await;
    proxy.resume_all();
    common::assert_drained(nodes).await;
}

/// The peer stops reading, the outbound queue fills, the socket is killed: every call returns
/// within a bound and the connection comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_reconnect_under_load_after_kill() {
    let proxy = common::Proxy::default();
    let nodes = proxied_pair(&proxy, common::test_config()).await;
    load_then_fail(&nodes, &proxy, true).await;
}

/// The same without a manual kill: the write timeout must notice the stuck peer by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_reconnect_under_load_after_write_timeout() {
    let proxy = common::Proxy::default();
    let config = Config {
        write_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        ..common::test_config()
    };
    let nodes = proxied_pair(&proxy, config).await;
    load_then_fail(&nodes, &proxy, false).await;
}

/// A node shutting down cancels the handlers it serves (`ShuttingDown`), fails the calls made
/// to it promptly, and later calls to it fail fast; the rest of the cluster keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_shutdown_cancels_handlers_and_fails_callers() {
    let nodes = common::connected(3, common::test_config()).await;
    let (mut reports, mut started) = register(&nodes);
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let call = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.request(HANG.id, Bytes::new()).await })
    };
    common::recv_within(&mut started, common::WAIT).await;
    let in_flight = nodes[1].stats().in_flight;
    assert_eq!(in_flight.unary_in, 1, "{in_flight:?}");
    let t = Instant::now();
    nodes[1].shutdown().await;
    let res = match tokio::time::timeout(Duration::from_secs(2), call).await {
        Ok(r) => r.unwrap(),
        Err(_) => panic!(
            "caller not failed promptly: dialer {}, {:?}, last close {:?}",
            grid::dialer_of(nodes[0].name(), nodes[1].name()) == nodes[0].name(),
            conn.stats(),
            conn.last_close_reason()
        ),
    };
    assert!(res.is_err(), "{res:?}");
    assert!(t.elapsed() < Duration::from_secs(2));
    let (kind, cause) = common::recv_within(&mut reports, Duration::from_secs(2)).await;
    assert_eq!((kind, cause), ("unary", CancelCause::ShuttingDown));
    let t = Instant::now();
    let late = conn.request(ECHO.id, Bytes::new()).await;
    assert!(late.unwrap_err().is_connection_error());
    assert!(t.elapsed() < Duration::from_secs(1));
    let other = nodes[0].connection(nodes[2].name()).unwrap();
    common::assert_echo(&other, ECHO, b"x").await;
    common::assert_drained(&nodes).await;
}
