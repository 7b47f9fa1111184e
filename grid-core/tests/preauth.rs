//! Before authentication (issue 10, part 4): what anyone who can reach a node's port can make it
//! spend.
//!
//! - A socket that has not authenticated gets WebSocket limits of one handshake message: a larger
//!   message is refused by tungstenite at its header (a capacity error), before any of it is
//!   buffered, and the node stays healthy. Once the peer has proved itself, the configured limits
//!   apply (a 1 MiB call works).
//! - At most `max_pending_handshakes` sockets are in their handshake at once; an excess one is
//!   refused at once and counted, on `Manager::accept` and on the node's own listener, and the
//!   refusals are logged at a bounded rate. Honest peers get in once the stallers are gone, and
//!   connections already up are not affected.

#![allow(clippy::unwrap_used)]

mod scripted;

use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use grid_core::handshake::HANDSHAKE_LIMITS;
use grid_core::handshake::{random_instance, random_nonce, DialerHandshake, DialerParams};
use grid_core::{BoxedTransport, Config, Error, LinkEvent, Manager};
use scripted::{base_config, dialer_names, next_event, now_ms, Cluster, ECHO, NODE, SECRET, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<BoxedTransport>;

/// A socket handed to `node.accept`, and the accept's outcome.
fn accept_pipe(node: &Manager) -> (BoxedTransport, JoinHandle<Result<(), Error>>) {
    let (client, server) = tokio::io::duplex(scripted::PIPE_BYTES);
    let node = node.clone();
    let outcome = tokio::spawn(async move { node.accept(Box::new(server)).await });
    (Box::new(client), outcome)
}

/// The WebSocket upgrade on `io`, with a client that would send messages of any size.
async fn upgrade(io: BoxedTransport) -> Ws {
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async_with_config(
            "ws://node.scripted:9000/grid/v1",
            io,
            Some(config),
        ),
    )
    .await
    .expect("the upgrade hung")
    .expect("the upgrade");
    ws
}

/// The accept's outcome must be tungstenite's capacity error for a `size`-byte frame, refused
/// against the handshake limit.
async fn expect_capacity_error(outcome: JoinHandle<Result<(), Error>>, size: usize) {
    let r = tokio::time::timeout(WAIT, outcome)
        .await
        .expect("the node did not refuse the large message in time")
        .unwrap();
    let ws_error = match &r {
        Err(Error::Io(e)) => e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<tokio_tungstenite::tungstenite::Error>()),
        _ => None,
    };
    match ws_error {
        Some(tokio_tungstenite::tungstenite::Error::Capacity(CapacityError::MessageTooLong {
            size: s,
            max_size,
        })) => {
            assert_eq!(*s, size, "{r:?}");
            assert_eq!(*max_size, HANDSHAKE_LIMITS.max_batch, "{r:?}");
        }
        _ => panic!("expected tungstenite's capacity error, got {r:?}"),
    }
}

/// Reads until the socket ends; fails loudly if it stays open.
async fn expect_eof(io: &mut BoxedTransport, what: &str) {
    let mut sink = Vec::new();
    let r = tokio::time::timeout(WAIT, io.read_to_end(&mut sink)).await;
    assert!(r.is_ok(), "{what}: the socket stayed open");
}

/// A binary frame header (client-masked) announcing `len` bytes, and none of the bytes.
fn frame_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x82, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_frame_before_the_handshake_is_refused_at_its_header() {
    // A handshake timeout well past the test's waits: only the limits can end the socket in time.
    let config = Config {
        handshake_timeout: Duration::from_secs(30),
        ..base_config()
    };
    let cluster = Cluster::start(config, 1).await;
    let (io, outcome) = accept_pipe(&cluster.node);
    let ws = upgrade(io).await;
    // Only the header of a 1 MiB frame: the node must refuse it without waiting for (or making
    // room for) the payload.
    let mut io = ws.into_inner();
    io.write_all(&frame_header(1 << 20)).await.unwrap();
    io.flush().await.unwrap();
    expect_capacity_error(outcome, 1 << 20).await;
    expect_eof(&mut io, "after the refused frame").await;
    scripted::expect_stats(&cluster.node, "no handshake left pending", |s| {
        s.pending_handshakes == 0
    })
    .await;
    cluster
        .assert_honest_works("after a large unauthenticated frame")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_before_the_confirm_is_refused() {
    let cluster = Cluster::start(base_config(), 1).await;
    let (io, outcome) = accept_pipe(&cluster.node);
    let mut ws = upgrade(io).await;
    // A good Hello from a member's name, then 1 MiB where the Confirm belongs: the dialer has
    // not proved itself yet, so the handshake limits still hold.
    let (_hs, hello) = DialerHandshake::start(DialerParams {
        local: cluster.attackers[0].clone(),
        remote: NODE.to_owned(),
        instance: random_instance().unwrap(),
        nonce: random_nonce().unwrap(),
        now_ms: now_ms(),
        checksum: true,
        max_payload: 64 << 20,
        max_skew_ms: 300_000,
    });
    let msg = grid_core::frame::encode_batch(std::slice::from_ref(&hello), false);
    ws.send(Message::Binary(msg)).await.unwrap();
    let welcome = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("no Welcome")
        .expect("the socket closed")
        .unwrap();
    assert!(matches!(welcome, Message::Binary(_)), "{welcome:?}");
    // The node refuses at the frame's header, so it may close before all of it is written.
    let _ = ws
        .send(Message::Binary(Bytes::from(vec![0u8; 1 << 20])))
        .await;
    expect_capacity_error(outcome, 1 << 20).await;
    let next = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("the socket stayed open");
    assert!(
        !matches!(next, Some(Ok(Message::Binary(_)))),
        "the node answered after the refused message: {next:?}"
    );
    cluster
        .assert_honest_works("after a large message before the Confirm")
        .await;
}

/// Once both sides have proved themselves, the configured limits apply in both directions: the
/// accepting side's and the dialing side's sockets take a 1 MiB call and its 1 MiB answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_limits_apply_after_the_handshake() {
    let cluster = Cluster::start(base_config(), 0).await;
    let big = Bytes::from(vec![7u8; 1 << 20]);
    for (from, to) in [
        (&cluster.honest, &cluster.node),
        (&cluster.node, &cluster.honest),
    ] {
        let got = tokio::time::timeout(
            WAIT,
            from.connection(to.name())
                .unwrap()
                .request(ECHO.id, big.clone()),
        )
        .await
        .expect("the 1 MiB call hung")
        .unwrap();
        assert_eq!(got.len(), big.len() + to.name().len() + 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_handshakes_are_capped_on_accept() {
    const CAP: usize = 4;
    let config = Config {
        max_pending_handshakes: CAP,
        ..base_config()
    };
    let cluster = Cluster::start(config, 0).await;
    let node = &cluster.node;
    // Three sockets that connect and say nothing: the cap is not reached, an honest peer still
    // gets in (its connection is cut so that it redials).
    let mut stallers: Vec<_> = (0..CAP - 1).map(|_| accept_pipe(node)).collect();
    scripted::expect_stats(node, "three pending", |s| s.pending_handshakes == CAP - 1).await;
    reconnect_honest(&cluster).await;
    cluster.assert_honest_works("with three stallers").await;
    // The honest peer's place comes back a moment after its link is up.
    scripted::expect_stats(node, "the honest place is back", |s| {
        s.pending_handshakes == CAP - 1
    })
    .await;

    // A fourth staller fills the cap: the next socket is refused at once, untouched.
    stallers.push(accept_pipe(node));
    scripted::expect_stats(node, "the cap is full", |s| s.pending_handshakes == CAP).await;
    let (mut refused_io, refused) = accept_pipe(node);
    let r = tokio::time::timeout(WAIT, refused)
        .await
        .expect("the refusal took long")
        .unwrap();
    assert!(
        matches!(r, Err(Error::TooManyHandshakes { limit: CAP })),
        "{r:?}"
    );
    assert_eq!(node.stats().refused_handshakes, 1);
    expect_eof(&mut refused_io, "the refused socket").await;
    // A connection already up is not a pending handshake: it keeps working.
    cluster.assert_honest_works("with the cap full").await;

    // The stallers leave: the places come back and an honest peer connects again.
    for (io, outcome) in stallers {
        drop(io);
        let r = tokio::time::timeout(WAIT, outcome)
            .await
            .expect("a staller's accept hung")
            .unwrap();
        assert!(r.is_err(), "a staller's handshake succeeded: {r:?}");
    }
    scripted::expect_stats(node, "nothing pending", |s| s.pending_handshakes == 0).await;
    reconnect_honest(&cluster).await;
    cluster.assert_honest_works("after the stallers left").await;
}

/// Cuts the honest peer's connection and waits until it has dialed in again: its link's
/// `Connected` event, sent once the new session is installed.
async fn reconnect_honest(cluster: &Cluster) {
    let conn = cluster.honest.connection(NODE).unwrap();
    let mut events = conn.events();
    conn.kill_socket();
    next_event("the honest peer reconnects", WAIT, &mut events, |e| {
        matches!(e, LinkEvent::Connected { .. }).then_some(())
    })
    .await;
}

// --- the listener ----------------------------------------------------------------------------

/// Every log line of this test binary (a global subscriber, installed once).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .init();
        logs
    })
    .clone()
}

/// Log lines holding every one of `needles`.
fn lines_with(logs: &Logs, needles: &[&str]) -> Vec<String> {
    let all = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    all.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_refuses_excess_sockets_at_once_and_logs_them_at_a_bounded_rate() {
    const CAP: usize = 2;
    const EXCESS: usize = 20;
    let logs = logs();
    let name = "http://listener.preauth:9000";
    let honest_name = dialer_names(name, "honest", 1).remove(0);
    let config = Config {
        max_pending_handshakes: CAP,
        ..base_config()
    };
    let node = Manager::builder(name)
        .peers([honest_name.clone()])
        .secret(SECRET)
        .config(config)
        .listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let addr = node.local_addr().unwrap();
    let honest = Manager::builder(honest_name)
        .peers([name])
        .secret(SECRET)
        .config(base_config())
        .no_listener()
        .peer_address(name, addr.to_string())
        .start()
        .await
        .unwrap();
    for m in [&node, &honest] {
        m.register_unary(ECHO, |_ctx, b: Bytes| async move {
            Ok::<_, grid_core::RemoteError>(b)
        })
        .unwrap();
    }
    honest.wait_for_peers(WAIT).await.unwrap();
    // The honest peer can see its link up a moment before the node gives its handshake place
    // back: start from an empty gate.
    scripted::expect_stats(&node, "the honest handshake's place is back", |s| {
        s.pending_handshakes == 0
    })
    .await;

    let mut stallers = Vec::new();
    for _ in 0..CAP {
        stallers.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    scripted::expect_stats(&node, "the cap is full", |s| s.pending_handshakes == CAP).await;
    // Every further socket is closed at once, before the node reads a byte of it.
    for i in 0..EXCESS {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("excess socket {i} was kept open"));
        assert!(matches!(n, Ok(0) | Err(_)), "excess socket {i} got {n:?}");
    }
    let stats = scripted::expect_stats(&node, "every excess socket counted", |s| {
        s.refused_handshakes == EXCESS as u64
    })
    .await;
    assert_eq!(stats.pending_handshakes, CAP);
    // The connection that is up is not affected.
    let echoed = honest
        .connection(name)
        .unwrap()
        .request(ECHO.id, Bytes::from_static(b"still here"))
        .await
        .unwrap();
    assert_eq!(&echoed[..], b"still here");
    // Twenty refusals from one address in a burst: one WARN line.
    let _ = std::io::stdout().flush();
    let refused = lines_with(&logs, &["listener.preauth", "incoming connection refused"]);
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert!(refused[0].contains("127.0.0.1"), "{refused:#?}");

    drop(stallers);
    scripted::expect_stats(&node, "nothing pending", |s| s.pending_handshakes == 0).await;
    honest.connection(name).unwrap().kill_socket();
    honest.wait_for_peers(WAIT).await.unwrap();
    let echoed = honest
        .connection(name)
        .unwrap()
        .request(ECHO.id, Bytes::from_static(b"back"))
        .await
        .unwrap();
    assert_eq!(&echoed[..], b"back");
    node.shutdown().await;
    honest.shutdown().await;
}
