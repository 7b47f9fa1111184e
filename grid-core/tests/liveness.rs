//! Liveness by progress (issue 15): on a slow link, a large payload that takes longer than the
//! idle and write timeouts to cross keeps the link alive as long as it moves, because it travels
//! in parts and every part is a message of its own (the reader's and the writer's stamps move per
//! part). The same transfer sent whole is declared dead: the contrast shows the test measures
//! what it claims.

#![allow(clippy::unwrap_used)]

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use grid_core::{
    BoxedTransport, CloseKind, Config, DialFn, Error, HandlerSpec, Manager, RemoteError,
};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::time::Sleep;

const MIRROR: HandlerSpec = HandlerSpec::named("Liveness.mirror");
const SECRET: &str = "liveness-secret";

/// Bytes per second each direction of the slow link carries.
const RATE: u64 = 2 << 20;

/// A pipe that writes at most [`RATE`] bytes per second, in slices of 8 KiB.
struct Slow {
    inner: DuplexStream,
    pause: Option<Pin<Box<Sleep>>>,
}

impl AsyncRead for Slow {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slow {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(p) = self.pause.as_mut() {
            ready!(p.as_mut().poll(cx));
            self.pause = None;
        }
        let n = buf.len().min(8 << 10);
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..n]))?;
        let wait = Duration::from_micros(n as u64 * 1_000_000 / RATE);
        self.pause = Some(Box::pin(tokio::time::sleep(wait)));
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

use std::future::Future;

fn slow_pipe() -> (Slow, Slow) {
    let (a, b) = tokio::io::duplex(64 << 10);
    let slow = |inner| Slow { inner, pause: None };
    (slow(a), slow(b))
}

/// Two nodes joined by the slow link; returns (caller, callee).
async fn slow_pair(config: Config) -> (Manager, Manager) {
    let names = ["http://slow-a:9000", "http://slow-b:9000"];
    let dialer = grid_core::handshake::dialer_of(names[0], names[1]).to_owned();
    let acceptor = names.iter().find(|n| **n != dialer).unwrap().to_string();
    let node = Manager::builder(acceptor.clone())
        .peers([dialer.clone()])
        .secret(SECRET)
        .config(config.clone())
        .no_listener()
        .start()
        .await
        .unwrap();
    let to_node = node.clone();
    let dial: DialFn = Arc::new(move |_| {
        let node = to_node.clone();
        Box::pin(async move {
            let (client, server) = slow_pipe();
            tokio::spawn(async move { node.accept(Box::new(server)).await });
            Ok(Box::new(client) as BoxedTransport)
        })
    });
    let peer = Manager::builder(dialer)
        .peers([acceptor])
        .secret(SECRET)
        .config(config)
        .no_listener()
        .dialer(dial)
        .start()
        .await
        .unwrap();
    for m in [&node, &peer] {
        m.register_unary(
            MIRROR,
            |_ctx, b: Bytes| async move { Ok::<_, RemoteError>(b) },
        )
        .unwrap();
    }
    peer.wait_for_peers(Duration::from_secs(10)).await.unwrap();
    (peer, node)
}

fn config(chunk_size: usize) -> Config {
    Config {
        idle_timeout: Duration::from_millis(500),
        write_timeout: Duration::from_millis(500),
        ping_interval: Duration::from_millis(100),
        checksum: Some(false),
        chunk_size,
        // The slow link's reconnects must not mix with the measurement.
        reconnect_min: Duration::from_secs(30),
        reconnect_max: Duration::from_secs(30),
        ..Config::default()
    }
}

/// 3 MiB each way at 2 MiB/s: about three seconds, six times the timeouts.
const LEN: usize = 3 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_moving_transfer_in_parts_never_looks_dead() {
    let (caller, callee) = slow_pair(config(Config::default().chunk_size)).await;
    let conn = caller.connection(callee.name()).unwrap();
    let payload = Bytes::from(vec![0x5a; LEN]);
    let got = tokio::time::timeout(Duration::from_secs(30), conn.request(MIRROR.id, payload))
        .await
        .expect("the transfer ends")
        .expect("the link stays up while the payload moves");
    assert_eq!(got.len(), LEN);
    assert_eq!(conn.stats().connects, 1, "no reconnect on the way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_transfer_sent_whole_is_declared_dead() {
    let (caller, callee) = slow_pair(config(0)).await;
    let conn = caller.connection(callee.name()).unwrap();
    let payload = Bytes::from(vec![0x5a; LEN]);
    let result = tokio::time::timeout(Duration::from_secs(30), conn.request(MIRROR.id, payload))
        .await
        .expect("the call ends");
    assert!(
        matches!(result, Err(Error::Disconnected { .. })),
        "{result:?}"
    );
    // One side or the other gave up on it: the side that found it silent, or stuck writing.
    let back = callee.connection(caller.name()).unwrap();
    let reasons = [conn.last_close_reason(), back.last_close_reason()];
    assert!(
        reasons
            .iter()
            .flatten()
            .any(|r| matches!(r.kind, CloseKind::Idle | CloseKind::WriteStalled)),
        "{reasons:?}"
    );
}
