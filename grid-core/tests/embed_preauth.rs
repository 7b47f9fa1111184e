//! Before authentication, through an existing hyper server (feature `hyper`): a socket upgraded by
//! `Manager::serve_upgrade` gets handshake-sized WebSocket limits until its peer has proved itself,
//! and counts among `max_pending_handshakes`; an excess upgrade request gets `503` instead of a
//! `101`.
//!
//! Run with `cargo test -p grid-core --features hyper --test embed_preauth`.

#![cfg(feature = "hyper")]
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use grid_core::dialer_of;
use grid_core::{Config, Manager, RemoteError};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);
const SECRET: &str = "embed-preauth-secret";
const ECHO: grid_core::HandlerSpec = grid_core::HandlerSpec::named("EmbedPreauth.echo");
const EMBEDDED: &str = "http://embedded.preauth:9000";

/// A node inside a plain hyper server on 127.0.0.1:0, and a real peer that dials it there.
async fn pair(config: Config) -> (Manager, Manager, SocketAddr) {
    let dialer_name = (0..1000)
        .map(|i| format!("http://dialer-{i}.preauth:9000"))
        .find(|d| dialer_of(d, EMBEDDED) == d.as_str())
        .unwrap();
    let embedded = Manager::builder(EMBEDDED)
        .peers([dialer_name.clone()])
        .secret(SECRET)
        .config(config)
        .no_listener()
        .start()
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = embedded.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let manager = server.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let manager = manager.clone();
                    async move {
                        let r: Result<Response<Full<Bytes>>, grid_core::Error> =
                            manager.serve_upgrade(req);
                        r
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    let dialer = Manager::builder(dialer_name)
        .peers([EMBEDDED])
        .secret(SECRET)
        .config(Config {
            reconnect_min: Duration::from_millis(20),
            reconnect_max: Duration::from_millis(100),
            ..Config::default()
        })
        .no_listener()
        .peer_address(EMBEDDED, addr.to_string())
        .start()
        .await
        .unwrap();
    for m in [&embedded, &dialer] {
        m.register_unary(
            ECHO,
            |_ctx, b: Bytes| async move { Ok::<_, RemoteError>(b) },
        )
        .unwrap();
    }
    dialer.wait_for_peers(WAIT).await.unwrap();
    // The embedded side ends the handshake a moment after the dialer sees the link up; until
    // then the dialer's socket still holds a pending place.
    embedded.wait_for_peers(WAIT).await.unwrap();
    wait_pending(&embedded, 0).await;
    (embedded, dialer, addr)
}

/// Sends a WebSocket upgrade request on a new socket; returns the socket and the response head.
async fn upgrade_request(addr: SocketAddr) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let req = "GET /grid/v1 HTTP/1.1\r\nHost: embedded.preauth\r\nUpgrade: websocket\r\n\
               Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
               Sec-WebSocket-Version: 13\r\n\r\n";
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let read_head = async {
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            tcp.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
    };
    timeout(WAIT, read_head).await.expect("no response head");
    (tcp, String::from_utf8_lossy(&head).into_owned())
}

async fn echo_works(from: &Manager, to: &str, what: &str) {
    let got = timeout(
        WAIT,
        from.connection(to)
            .unwrap()
            .request(ECHO.id, Bytes::from_static(b"ping")),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: the call hung"))
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(&got[..], b"ping", "{what}");
}

async fn wait_pending(node: &Manager, n: usize) {
    let what = format!("pending handshakes reach {n}");
    common::eventually(&what, WAIT, || {
        let s = node.stats();
        if s.pending_handshakes == n {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_socket_gets_handshake_limits_until_its_peer_is_authenticated() {
    // A handshake timeout well past the test's waits: only the limits can close the socket in time.
    let config = Config {
        handshake_timeout: Duration::from_secs(30),
        ..Config::default()
    };
    let (embedded, dialer, addr) = pair(config).await;
    let (mut tcp, head) = upgrade_request(addr).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // The header of a 1 MiB frame, and none of its bytes: refused at once, the socket closed.
    let mut frame = vec![0x82u8, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&frame).await.unwrap();
    let mut rest = Vec::new();
    timeout(WAIT, tcp.read_to_end(&mut rest))
        .await
        .expect("the node kept a socket that announced a 1 MiB frame before its handshake")
        .ok();
    wait_pending(&embedded, 0).await;
    // After the handshake, the configured limits: a 1 MiB call both ways.
    let big = Bytes::from(vec![3u8; 1 << 20]);
    for (from, to) in [(&dialer, EMBEDDED), (&embedded, dialer.name())] {
        let got = timeout(
            WAIT,
            from.connection(to).unwrap().request(ECHO.id, big.clone()),
        )
        .await
        .expect("the 1 MiB call hung")
        .unwrap();
        assert_eq!(got.len(), big.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_over_the_pending_cap_gets_503() {
    let config = Config {
        max_pending_handshakes: 1,
        ..Config::default()
    };
    let (embedded, dialer, addr) = pair(config).await;
    let (staller, head) = upgrade_request(addr).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    wait_pending(&embedded, 1).await;
    let (_refused, head) = upgrade_request(addr).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert_eq!(embedded.stats().refused_handshakes, 1);
    // The connection that is up keeps working; once the staller leaves, a new one gets in.
    echo_works(&dialer, EMBEDDED, "with the cap full").await;
    drop(staller);
    wait_pending(&embedded, 0).await;
    dialer.connection(EMBEDDED).unwrap().kill_socket();
    dialer.wait_for_peers(WAIT).await.unwrap();
    echo_works(&dialer, EMBEDDED, "after the staller left").await;
    echo_works(&embedded, dialer.name(), "after the staller left").await;
}
