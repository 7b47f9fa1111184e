//! Handshake rejections: wrong secret, unknown node name, dial from the wrong side and clock skew,
//! each refused with its reason visible in the error of `Manager::accept`; right pairs still
//! connect next to them.
//!
//! The acceptor binds no listener: every dial is routed by a custom `DialFn` into
//! `Manager::accept`, whose result the test reads. Dials a real `Manager` would never make (from
//! the wrong side, with a skewed clock) are made by a minimal hand-written WebSocket client that
//! sends a `Hello` built with the public handshake state machine.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use grid::handshake::{
    dialer_of, random_instance, random_nonce, DialerHandshake, DialerParams, HandshakeError,
    RejectCode,
};
use grid::{BoxedTransport, DialFn, Error, HandlerSpec, Manager, RemoteError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const ECHO: HandlerSpec = HandlerSpec::named("Handshake.echo");

/// `n` names `http://127.0.0.1:<port>`; none is listened on (dials are routed in-process).
fn names_where(pred: impl Fn(&str) -> bool, acceptor: &str, base: u16) -> String {
    (base..base + 1000)
        .map(|p| format!("http://127.0.0.1:{p}"))
        .find(|n| pred(n) && n != acceptor)
        .unwrap()
}

struct Harness {
    acceptor: Manager,
    results: mpsc::UnboundedReceiver<Result<(), Error>>,
    route: DialFn,
}

/// An acceptor named `name` that knows `peers`; `route` hands a socket to its `accept` and reports
/// the handshake's outcome (an error, or `Ok` once an accepted connection ends).
async fn harness(name: &str, peers: &[String], secret: &str) -> Harness {
    let acceptor = Manager::builder(name)
        .peers(peers.iter().cloned())
        .secret(secret)
        .config(common::test_config())
        .no_listener()
        .start()
        .await
        .unwrap();
    acceptor
        .register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
        .unwrap();
    let (tx, results) = mpsc::unbounded_channel();
    let acc = acceptor.clone();
    let route: DialFn = Arc::new(move |target: grid::DialTarget| {
        let acc = acc.clone();
        let tx = tx.clone();
        Box::pin(async move {
            // Only the acceptor is reachable; dials between the other nodes fail.
            if target.peer != acc.name() {
                return Err(std::io::ErrorKind::ConnectionRefused.into());
            }
            let (client, server) = tokio::io::duplex(256 << 10);
            tokio::spawn(async move {
                let r = acc.accept(Box::new(server) as BoxedTransport).await;
                let _ = tx.send(r);
            });
            Ok(Box::new(client) as BoxedTransport)
        })
    });
    Harness {
        acceptor,
        results,
        route,
    }
}

async fn dialer(name: &str, peers: &[String], secret: &str, route: &DialFn) -> Manager {
    Manager::builder(name)
        .peers(peers.iter().cloned())
        .secret(secret)
        .config(common::test_config())
        .no_listener()
        .dialer(route.clone())
        .start()
        .await
        .unwrap()
}

/// The next handshake failure reported by the acceptor (skipping nothing: there must be one).
async fn next_refusal(h: &mut Harness) -> HandshakeError {
    let r = tokio::time::timeout(common::WAIT, h.results.recv())
        .await
        .expect("no handshake outcome")
        .unwrap();
    match r {
        Err(Error::Handshake(e)) => e,
        other => panic!("expected a handshake error, got {other:?}"),
    }
}

fn code_of(e: &HandshakeError) -> (RejectCode, String) {
    match e {
        HandshakeError::Refused { code, reason, .. }
        | HandshakeError::Rejected { code, reason, .. } => (*code, reason.clone()),
        other => panic!("expected a refusal with a code, got {other:?}"),
    }
}

/// A good dialer still connects to the harness's acceptor, and a call works both ways.
async fn good_pair_connects(h: &Harness, good: &Manager) {
    good.register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
        .unwrap();
    let conn = good.connection(h.acceptor.name()).unwrap();
    conn.wait_for_connect(common::WAIT).await.unwrap();
    let ok = conn
        .request(ECHO.id, Bytes::from_static(b"hi"))
        .await
        .unwrap();
    assert_eq!(&ok[..], b"hi");
    let back = h.acceptor.connection(good.name()).unwrap();
    back.wait_for_connect(common::WAIT).await.unwrap();
    let ok = back
        .request(ECHO.id, Bytes::from_static(b"yo"))
        .await
        .unwrap();
    assert_eq!(&ok[..], b"yo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_wrong_secret_is_refused() {
    let acc = "http://127.0.0.1:1".to_owned();
    let bad = names_where(|n| dialer_of(n, &acc) == n, &acc, 20000);
    let good = names_where(|n| dialer_of(n, &acc) == n && n != bad, &acc, 21000);
    let all = vec![acc.clone(), bad.clone(), good.clone()];
    let mut h = harness(&acc, &all, "right-secret").await;
    let intruder = dialer(&bad, &all, "wrong-secret", &h.route).await;
    let e = next_refusal(&mut h).await;
    let (code, reason) = code_of(&e);
    assert_eq!(code, RejectCode::BadProof, "{e}");
    assert!(!reason.is_empty(), "{e}");
    eprintln!("wrong secret: {e}");
    intruder.shutdown().await;
    let good = dialer(&good, &all, "right-secret", &h.route).await;
    good_pair_connects(&h, &good).await;
    assert_ne!(
        h.acceptor.connection(&bad).unwrap().state(),
        grid::ConnState::Connected
    );
    common::assert_drained(&[h.acceptor.clone(), good]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_unknown_node_is_refused() {
    let acc = "http://127.0.0.1:1".to_owned();
    let stranger = names_where(|n| dialer_of(n, &acc) == n, &acc, 20000);
    let good = names_where(|n| dialer_of(n, &acc) == n && n != stranger, &acc, 21000);
    let members = vec![acc.clone(), good.clone()];
    let mut h = harness(&acc, &members, "s").await;
    let s = dialer(&stranger, &[acc.clone(), stranger.clone()], "s", &h.route).await;
    let e = next_refusal(&mut h).await;
    let (code, reason) = code_of(&e);
    assert_eq!(code, RejectCode::UnknownPeer, "{e}");
    assert!(
        e.to_string().contains(&stranger) || reason.contains(&stranger),
        "{e}"
    );
    eprintln!("unknown node: {e}");
    s.shutdown().await;
    let good = dialer(&good, &members, "s", &h.route).await;
    good_pair_connects(&h, &good).await;
    common::assert_drained(&[h.acceptor.clone(), good]).await;
}

/// Upgrades `io` to a WebSocket by hand, sends one binary message, and reads until the server
/// closes (its `Reject` and close frames are not decoded: the reason is read on the acceptor).
async fn raw_ws_send(mut io: BoxedTransport, host: &str, payload: &[u8]) {
    let req = format!(
        "GET /grid/v1 HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    io.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x82u8];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    io.write_all(&frame).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(common::WAIT, io.read_to_end(&mut sink)).await;
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Sends a `Hello` from `from` to `to` with the given clock, over a socket routed to the harness.
async fn hand_made_hello(h: &Harness, from: &str, to: &str, clock_ms: i64) {
    let (_hs, hello) = DialerHandshake::start(DialerParams {
        local: from.to_owned(),
        remote: to.to_owned(),
        instance: random_instance().unwrap(),
        nonce: random_nonce().unwrap(),
        now_ms: clock_ms,
        checksum: true,
        max_payload: 1 << 20,
        max_skew_ms: 300_000,
    });
    let msg = grid::frame::encode_batch(std::slice::from_ref(&hello), false);
    let io = (h.route)(grid::DialTarget {
        peer: to.to_owned(),
        address: "127.0.0.1:1".to_owned(),
    })
    .await
    .unwrap();
    raw_ws_send(io, "127.0.0.1", &msg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_dial_from_the_wrong_side_is_refused() {
    let acc = "http://127.0.0.1:1".to_owned();
    // `wrong` is a member, but the acceptor is the side that must dial it.
    let wrong = names_where(|n| dialer_of(n, &acc) != n, &acc, 20000);
    let good = names_where(|n| dialer_of(n, &acc) == n, &acc, 21000);
    let members = vec![acc.clone(), wrong.clone(), good.clone()];
    let mut h = harness(&acc, &members, "s").await;
    hand_made_hello(&h, &wrong, &acc, now_ms()).await;
    let e = next_refusal(&mut h).await;
    let (code, _reason) = code_of(&e);
    assert_eq!(code, RejectCode::WrongDirection, "{e}");
    eprintln!("wrong side: {e}");
    let good = dialer(&good, &members, "s", &h.route).await;
    good_pair_connects(&h, &good).await;
    common::assert_drained(&[h.acceptor.clone(), good]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_clock_skew_is_refused() {
    let acc = "http://127.0.0.1:1".to_owned();
    let skewed = names_where(|n| dialer_of(n, &acc) == n, &acc, 20000);
    let good = names_where(|n| dialer_of(n, &acc) == n && n != skewed, &acc, 21000);
    let members = vec![acc.clone(), skewed.clone(), good.clone()];
    let mut h = harness(&acc, &members, "s").await;
    // Ten minutes behind: twice the default bound of five.
    hand_made_hello(&h, &skewed, &acc, now_ms() - 600_000).await;
    let e = next_refusal(&mut h).await;
    let (code, _reason) = code_of(&e);
    assert_eq!(code, RejectCode::ClockSkew, "{e}");
    eprintln!("clock skew: {e}");
    let good = dialer(&good, &members, "s", &h.route).await;
    good_pair_connects(&h, &good).await;
    common::assert_drained(&[h.acceptor.clone(), good]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeout_on_a_silent_dialer() {
    let acc = "http://127.0.0.1:1".to_owned();
    let mut h = harness(&acc, std::slice::from_ref(&acc), "s").await;
    let io = (h.route)(grid::DialTarget {
        peer: acc.clone(),
        address: "127.0.0.1:1".to_owned(),
    })
    .await
    .unwrap();
    // Connect and say nothing: the acceptor must give up after its handshake timeout (5 s).
    let t = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), h.results.recv())
        .await
        .expect("the acceptor never gave up on a silent socket")
        .unwrap();
    assert!(r.is_err(), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(7));
    drop(io);
}
