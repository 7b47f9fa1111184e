//! grid's route mounted inside a plain hyper 1 server (feature `hyper`): a manager without a
//! listener serves its peer through `Manager::serve_upgrade`, next to the server's own routes.
//!
//! Run with `cargo test -p grid-core --features hyper --test embed_hyper`.

#![cfg(feature = "hyper")]

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::{eventually, test_config, WAIT};
use grid_core::embed::is_grid_upgrade;
use grid_core::handshake::should_dial;
use grid_core::{Error, HandlerSpec, Manager, RemoteError};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const ECHO: HandlerSpec = HandlerSpec::named("Embed.echo");
const SECRET: &str = "embed-test-secret";

/// Names for the pair: the first (the node with its own listener) is the one that dials the
/// second (the node inside the hyper server), by the protocol's rule.
fn pair_names() -> (String, String) {
    let embedded = "http://embedded.test:9000".to_owned();
    let dialer = (0..256)
        .map(|i| format!("http://dialer-{i}.test:9000"))
        .find(|d| should_dial(d, &embedded))
        .expect("some name among 256 dials the embedded node");
    assert!(!should_dial(&embedded, &dialer));
    (dialer, embedded)
}

/// The application's router: its own `/health`, grid's route, 404 for the rest.
fn route(manager: &Manager, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Error> {
    let path = req.uri().path();
    if path == "/health" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    }
    // `is_grid_upgrade` is the quick test; any other request on the route still goes to grid,
    // which answers it with the reason.
    if is_grid_upgrade(&req, &manager.config().route) || path == manager.config().route {
        return manager.serve_upgrade(req);
    }
    let mut not_found = Response::new(Full::new(Bytes::from_static(b"not found")));
    *not_found.status_mut() = StatusCode::NOT_FOUND;
    Ok(not_found)
}

/// A plain hyper 1 HTTP/1 server on `listener`, with upgrades enabled.
async fn serve_http(listener: TcpListener, manager: Manager) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let manager = manager.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let manager = manager.clone();
                async move { route(&manager, req) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
        });
    }
}

/// Sends one raw HTTP/1.1 request and reads the response: status code and body.
async fn raw_http(addr: SocketAddr, request: &str) -> (u16, String) {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = tcp.read(&mut chunk).await.expect("read");
            assert!(
                n > 0,
                "connection closed mid-response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.trim().parse().expect("content-length"))
                .unwrap_or(0);
            if buf.len() < end + 4 + length {
                continue;
            }
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("status code");
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string();
            return (status, body);
        }
    };
    timeout(WAIT, exchange)
        .await
        .expect("the hyper server did not answer in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grid_route_inside_a_hyper_server() {
    let (dialer_name, embedded_name) = pair_names();

    // The node inside the hyper server: no listener of its own.
    let embedded = Manager::builder(embedded_name.clone())
        .peers([dialer_name.clone()])
        .secret(SECRET)
        .config(test_config())
        .no_listener()
        .start()
        .await
        .expect("start the embedded node");
    assert_eq!(embedded.local_addr(), None);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http_addr = listener.local_addr().expect("local addr");
    let server = tokio::spawn(serve_http(listener, embedded.clone()));

    // The ordinary node: its own listener, and it dials the embedded node at the hyper server.
    let dialer = Manager::builder(dialer_name.clone())
        .peers([embedded_name.clone()])
        .secret(SECRET)
        .config(test_config())
        .listen("127.0.0.1:0")
        .peer_address(embedded_name.clone(), http_addr.to_string())
        .start()
        .await
        .expect("start the dialing node");

    for m in [&embedded, &dialer] {
        let name = m.name().to_owned();
        m.register_unary(ECHO, move |ctx, payload| {
            let name = name.clone();
            async move {
                let mut out = format!("{name} <- {}: ", ctx.caller()).into_bytes();
                out.extend_from_slice(&payload);
                Ok::<_, RemoteError>(Bytes::from(out))
            }
        })
        .expect("register");
    }

    embedded
        .wait_for_peers(WAIT)
        .await
        .expect("the embedded node sees its peer");
    dialer
        .wait_for_peers(WAIT)
        .await
        .expect("the dialing node connects through hyper");

    // Unary calls both ways over the connection that came through the hyper upgrade.
    for (from, to) in [(&dialer, &embedded), (&embedded, &dialer)] {
        let conn = from.connection(to.name()).expect("known peer");
        for i in 0..10 {
            let payload = Bytes::from(format!("call {i}"));
            let resp = timeout(WAIT, conn.request(ECHO.id, payload))
                .await
                .expect("the call did not finish in time")
                .expect("the call succeeds");
            let want = format!("{} <- {}: call {i}", to.name(), from.name());
            assert_eq!(String::from_utf8_lossy(&resp), want);
        }
    }
    for m in [&embedded, &dialer] {
        assert_eq!(m.stats().connected, 1, "{}", m.name());
    }

    // The server's own route still works next to grid's.
    let (status, body) =
        raw_http(http_addr, "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!((status, body.as_str()), (200, "ok"));

    // A bad upgrade on grid's route gets 400 with the reason, and does not disturb the link.
    let (status, body) = raw_http(
        http_addr,
        "GET /grid/v1 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Sec-WebSocket-Key"), "{body}");
    let (status, body) = raw_http(
        http_addr,
        "POST /grid/v1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405, "{body}");

    // A request that did not come through hyper cannot be upgraded: an error, not a panic.
    let forged = Request::builder()
        .uri("/grid/v1")
        .header("Host", "localhost")
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(())
        .expect("request");
    assert!(matches!(
        embedded.serve_upgrade(forged),
        Err(Error::Config(_))
    ));

    let conn = dialer.connection(embedded.name()).expect("known peer");
    let resp = timeout(WAIT, conn.request(ECHO.id, Bytes::from_static(b"still up")))
        .await
        .expect("the call did not finish in time")
        .expect("the link survived the bad requests");
    assert!(resp.ends_with(b"still up"));

    // Every in-flight count back to zero on both nodes.
    for m in [&embedded, &dialer] {
        let what = format!("{}: no call left in flight", m.name());
        eventually(&what, WAIT, || {
            let s = m.stats();
            if s.in_flight == grid_core::InFlight::default() {
                Ok(())
            } else {
                Err(s)
            }
        })
        .await;
    }

    dialer.shutdown().await;
    embedded.shutdown().await;
    server.abort();
}
