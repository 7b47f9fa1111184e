//! A smoke figure: unary 512-byte echo at concurrency 64 over one connection, grid next to a
//! minimal hand-written mux over one plain tokio-tungstenite socket, in the same run.
//!
//! `cargo run --release --example smoke_echo -- [SECONDS] [--concurrency N] [--only grid|raw]`
//!
//! Both run in this process on a 2-worker runtime, over loopback. The raw mux is the practical
//! floor for our transport: a u64 id plus the payload per binary message, one writer task per side
//! that feeds messages and flushes when its queue is momentarily empty.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use grid::{HandlerSpec, Manager, RemoteError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_tungstenite::tungstenite::Message;

/// Unary 512-byte echo over one connection: grid next to a minimal tokio-tungstenite mux.
#[derive(Debug, Parser)]
#[command(name = "smoke_echo", about)]
struct Args {
    /// Seconds of load for each system
    #[arg(default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Concurrent callers
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    concurrency: u64,
    /// Run one system alone (for profiling)
    #[arg(long, value_parser = ["grid", "raw"])]
    only: Option<String>,
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

async fn raw_ws(seconds: u64, concurrency: u64) -> Result<f64, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("raw-ws: cannot listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(raw_ws_server(listener));
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("raw-ws: cannot connect: {e}"))?;
    tcp.set_nodelay(true).ok();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
        .await
        .map_err(|e| format!("raw-ws: WebSocket upgrade failed: {e}"))?;
    let (sink, mut stream) = ws.split();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(writer(sink, rx));
    let waiters: Waiters = Arc::default();
    let w2 = waiters.clone();
    tokio::spawn(async move {
        while let Some(Ok(Message::Binary(b))) = stream.next().await {
            let Some(id) = b.get(..8).and_then(|h| h.try_into().ok()) else {
                continue;
            };
            if let Some(w) = w2.lock().await.remove(&u64::from_be_bytes(id)) {
                let _ = w.send(b.slice(8..));
            }
        }
    });
    let next_id = Arc::new(AtomicU64::new(0));
    run_load(seconds, concurrency, move || {
        let (tx, waiters, next_id) = (tx.clone(), waiters.clone(), next_id.clone());
        async move {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let mut msg = Vec::with_capacity(8 + PAYLOAD);
            msg.extend_from_slice(&id.to_be_bytes());
            msg.extend_from_slice(&[7u8; PAYLOAD]);
            let (otx, orx) = oneshot::channel();
            waiters.lock().await.insert(id, otx);
            tx.send(Message::Binary(msg.into()))
                .map_err(|_| "raw-ws: the writer stopped".to_owned())?;
            let resp = orx
                .await
                .map_err(|_| "raw-ws: the connection closed".to_owned())?;
            check_len(resp.len())
        }
    })
    .await
}

fn check_len(len: usize) -> Result<(), String> {
    if len == PAYLOAD {
        Ok(())
    } else {
        Err(format!("echo returned {len} of {PAYLOAD} bytes"))
    }
}

async fn grid(seconds: u64, concurrency: u64) -> Result<f64, String> {
    // Names on ports free a moment ago; each manager binds the address in its name.
    let names = (0..2)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            Ok(format!("http://{}", l.local_addr()?))
        })
        .collect::<std::io::Result<Vec<String>>>()
        .map_err(|e| format!("grid: cannot find free ports: {e}"))?;
    let mut managers = Vec::new();
    for n in &names {
        let m = Manager::builder(n.clone())
            .peers(names.clone())
            .secret("smoke")
            .start()
            .await
            .map_err(|e| format!("grid: cannot start {n}: {e}"))?;
        managers.push(m);
    }
    for m in &managers {
        m.register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
            .map_err(|e| e.to_string())?;
    }
    let conn = managers[0]
        .connection(&names[1])
        .map_err(|e| e.to_string())?;
    conn.wait_for_connect(Duration::from_secs(10))
        .await
        .map_err(|e| format!("grid: {e}"))?;
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let stats_conn = conn.clone();
    let rate = run_load(seconds, concurrency, move || {
        let (conn, payload) = (conn.clone(), payload.clone());
        async move {
            let resp = conn
                .request(ECHO.id, payload)
                .await
                .map_err(|e| format!("grid: {e}"))?;
            check_len(resp.len())
        }
    })
    .await?;
    let s = stats_conn.stats();
    println!(
        "  grid client: {} frames in {} WebSocket messages ({:.1} frames per message)",
        s.frames_out,
        s.messages_out,
        s.frames_out as f64 / s.messages_out.max(1) as f64
    );
    Ok(rate)
}

/// Runs `concurrency` loops of `call` for `seconds`; returns completed calls per second, or the
/// first failure.
async fn run_load<F, Fut>(seconds: u64, concurrency: u64, call: F) -> Result<f64, String>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let call = Arc::new(call);
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (call, done) = (call.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    call().await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| format!("a load task failed: {e}"))??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let only = args.only.as_deref();
    let result = rt.block_on(async {
        let raw = match only {
            Some("grid") => f64::NAN,
            _ => raw_ws(args.seconds, args.concurrency).await?,
        };
        let g = match only {
            Some("raw") => f64::NAN,
            _ => grid(args.seconds, args.concurrency).await?,
        };
        println!(
            "unary {PAYLOAD} B echo, concurrency {}, one connection, {} s each",
            args.concurrency, args.seconds
        );
        println!("  raw tokio-tungstenite mux : {raw:>10.0} req/s");
        println!("  grid (raw byte API)       : {g:>10.0} req/s");
        println!("  grid / raw-ws             : {:>10.2}", g / raw);
        Ok::<(), String>(())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
