//! A smoke figure: unary 512-byte echo at concurrency 64 over one connection, grid next to a
//! minimal hand-written mux over one plain tokio-tungstenite socket, in the same run.
//!
//! `cargo run --release --example smoke_echo [seconds]`
//!
//! Both run in this process on a 2-worker runtime, over loopback. The raw mux is the practical
//! floor for our transport: a u64 id plus the payload per binary message, one writer task per side
//! that feeds messages and flushes when its queue is momentarily empty.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use grid::{HandlerSpec, Manager, RemoteError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_tungstenite::tungstenite::Message;

/// Concurrent callers; `SMOKE_C` overrides.
fn concurrency() -> usize {
    std::env::var("SMOKE_C")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}
const PAYLOAD: usize = 512;
const ECHO: HandlerSpec = HandlerSpec::named("Smoke.echo");

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>;

/// Writer task: feed every queued message, flush when the queue is momentarily empty.
async fn writer<S>(mut sink: S, mut rx: mpsc::UnboundedReceiver<Message>)
where
    S: futures::Sink<Message> + Unpin,
{
    while let Some(m) = rx.recv().await {
        if sink.feed(m).await.is_err() {
            return;
        }
        while let Ok(m) = rx.try_recv() {
            if sink.feed(m).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

async fn raw_ws_server(listener: TcpListener) {
    while let Ok((tcp, _)) = listener.accept().await {
        tcp.set_nodelay(true).ok();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            let (sink, mut stream) = ws.split();
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(writer(sink, rx));
            while let Some(Ok(msg)) = stream.next().await {
                if let Message::Binary(b) = msg {
                    // Task per request, as a real handler would need.
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(Message::Binary(b));
                    });
                }
            }
        });
    }
}

async fn raw_ws(seconds: u64) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(raw_ws_server(listener));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).ok();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
        .await
        .expect("upgrade");
    let (sink, mut stream) = ws.split();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(writer(sink, rx));
    let waiters: Waiters = Arc::default();
    let w2 = waiters.clone();
    tokio::spawn(async move {
        while let Some(Ok(Message::Binary(b))) = stream.next().await {
            let id = u64::from_be_bytes(b[..8].try_into().expect("id"));
            if let Some(w) = w2.lock().await.remove(&id) {
                let _ = w.send(b.slice(8..));
            }
        }
    });
    let next_id = Arc::new(AtomicU64::new(0));
    run_load(seconds, move || {
        let (tx, waiters, next_id) = (tx.clone(), waiters.clone(), next_id.clone());
        async move {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let mut msg = Vec::with_capacity(8 + PAYLOAD);
            msg.extend_from_slice(&id.to_be_bytes());
            msg.extend_from_slice(&[7u8; PAYLOAD]);
            let (otx, orx) = oneshot::channel();
            waiters.lock().await.insert(id, otx);
            tx.send(Message::Binary(msg.into())).expect("writer alive");
            let resp = orx.await.expect("response");
            assert_eq!(resp.len(), PAYLOAD);
        }
    })
    .await
}

async fn grid(seconds: u64) -> f64 {
    let names: Vec<String> = (0..2)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}", l.local_addr().expect("addr"))
        })
        .collect();
    let mut managers = Vec::new();
    for n in &names {
        let m = Manager::builder(n.clone())
            .peers(names.clone())
            .secret("smoke")
            .start()
            .await
            .expect("start");
        m.register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
            .expect("register");
        managers.push(m);
    }
    let conn = managers[0].connection(&names[1]).expect("peer");
    conn.wait_for_connect(Duration::from_secs(10))
        .await
        .expect("connected");
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let stats_conn = conn.clone();
    let rate = run_load(seconds, move || {
        let (conn, payload) = (conn.clone(), payload.clone());
        async move {
            let resp = conn.request(ECHO.id, payload).await.expect("echo");
            assert_eq!(resp.len(), PAYLOAD);
        }
    })
    .await;
    let s = stats_conn.stats();
    println!(
        "  grid client: {} frames in {} WebSocket messages ({:.1} frames per message)",
        s.frames_out,
        s.messages_out,
        s.frames_out as f64 / s.messages_out.max(1) as f64
    );
    rate
}

/// Runs `concurrency()` loops of `call` for `seconds`; returns completed calls per second.
async fn run_load<F, Fut>(seconds: u64, call: F) -> f64
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency())
        .map(|_| {
            let (call, done) = (call.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    call().await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("load task");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // SMOKE_ONLY=grid or =raw runs one side alone (for profiling).
        let only = std::env::var("SMOKE_ONLY").unwrap_or_default();
        let raw = if only == "grid" {
            f64::NAN
        } else {
            raw_ws(seconds).await
        };
        let g = if only == "raw" {
            f64::NAN
        } else {
            grid(seconds).await
        };
        println!(
            "unary {PAYLOAD} B echo, concurrency {}, one connection, {seconds} s each",
            concurrency()
        );
        println!("  raw tokio-tungstenite mux : {raw:>10.0} req/s");
        println!("  grid (raw byte API)       : {g:>10.0} req/s");
        println!("  grid / raw-ws             : {:>10.2}", g / raw);
    });
}
