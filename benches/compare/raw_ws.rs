//! raw-ws: a minimal hand-written mux over one tokio-tungstenite socket, the practical floor for
//! grid's transport. One binary WebSocket message per frame: a kind byte, a u64 id, the payload.
//! One writer task per side feeds queued messages and flushes when its queue is momentarily
//! empty. The server spawns a task per request (as a real handler needs) and a task per stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{check_msg, stream_msg, CountFn, EchoFn, System, Wire};

const REQ: u8 = 0;
const RESP: u8 = 1;
/// Opens a stream; payload: mode (0 server streaming, 1 two-way) and, for mode 0, a u64 count.
const OPEN: u8 = 2;
const MSG: u8 = 3;
const END: u8 = 4;

/// Queue of the writer task (messages, not bytes); senders wait when it is full.
const QUEUE: usize = 4096;
/// Per-stream inbound buffer (messages).
const STREAM_BUF: usize = 1024;

type Tx = mpsc::Sender<Message>;

fn frame(kind: u8, id: u64, payload: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(9 + payload.len());
    b.put_u8(kind);
    b.put_u64(id);
    b.put_slice(payload);
    Message::Binary(b.freeze())
}

fn parse(b: &Bytes) -> Option<(u8, u64, Bytes)> {
    if b.len() < 9 {
        return None;
    }
    let id = u64::from_be_bytes(b[1..9].try_into().ok()?);
    Some((b[0], id, b.slice(9..)))
}

/// Frames fed and flushes done by one writer.
#[derive(Default)]
struct Counters {
    frames: AtomicU64,
    flushes: AtomicU64,
}

/// Caller-side and callee-side writer counters (one raw-ws connection per process).
static CALLER: Counters = Counters {
    frames: AtomicU64::new(0),
    flushes: AtomicU64::new(0),
};
static CALLEE: Counters = Counters {
    frames: AtomicU64::new(0),
    flushes: AtomicU64::new(0),
};

/// Writer task: feed every queued message, flush when the queue is momentarily empty.
async fn writer<S>(mut sink: S, mut rx: mpsc::Receiver<Message>, counters: &'static Counters)
where
    S: futures::Sink<Message> + Unpin,
{
    while let Some(m) = rx.recv().await {
        let mut n = 1;
        if sink.feed(m).await.is_err() {
            return;
        }
        while let Ok(m) = rx.try_recv() {
            n += 1;
            if sink.feed(m).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
        counters.frames.fetch_add(n, Ordering::Relaxed);
        counters.flushes.fetch_add(1, Ordering::Relaxed);
    }
}

async fn server(listener: TcpListener) {
    while let Ok((tcp, _)) = listener.accept().await {
        tcp.set_nodelay(true).ok();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            let (sink, mut stream) = ws.split();
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(writer(sink, rx, &CALLEE));
            let mut inputs: HashMap<u64, mpsc::Sender<Bytes>> = HashMap::new();
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Binary(b) = msg else { continue };
                let Some((kind, id, payload)) = parse(&b) else {
                    return;
                };
                match kind {
                    REQ => {
                        // Task per request, as a real handler would need.
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let _ = tx.send(frame(RESP, id, &payload)).await;
                        });
                    }
                    OPEN if payload.first() == Some(&0) && payload.len() >= 9 => {
                        let n = u64::from_be_bytes(payload[1..9].try_into().unwrap_or_default());
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            for i in 0..n {
                                if tx.send(frame(MSG, id, &stream_msg(i))).await.is_err() {
                                    return;
                                }
                            }
                            let _ = tx.send(frame(END, id, &[])).await;
                        });
                    }
                    OPEN => {
                        let (itx, mut irx) = mpsc::channel::<Bytes>(STREAM_BUF);
                        inputs.insert(id, itx);
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            while let Some(m) = irx.recv().await {
                                if tx.send(frame(MSG, id, &m)).await.is_err() {
                                    return;
                                }
                            }
                            let _ = tx.send(frame(END, id, &[])).await;
                        });
                    }
                    MSG => {
                        if let Some(itx) = inputs.get(&id) {
                            let _ = itx.send(payload).await;
                        }
                    }
                    END => {
                        inputs.remove(&id);
                    }
                    _ => {}
                }
            }
        });
    }
}

#[derive(Default)]
struct Waiters {
    unary: HashMap<u64, oneshot::Sender<Bytes>>,
    streams: HashMap<u64, mpsc::Sender<Bytes>>,
}

struct Client {
    tx: Tx,
    waiters: Mutex<Waiters>,
    next_id: AtomicU64,
}

impl Client {
    async fn echo(&self, payload: Bytes) -> Result<Bytes, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (otx, orx) = oneshot::channel();
        self.waiters
            .lock()
            .map_err(|_| "poisoned")?
            .unary
            .insert(id, otx);
        self.tx
            .send(frame(REQ, id, &payload))
            .await
            .map_err(|_| "writer gone")?;
        orx.await.map_err(|_| "connection lost".to_owned())
    }

    fn open(&self) -> Result<(u64, mpsc::Receiver<Bytes>), String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (stx, srx) = mpsc::channel(STREAM_BUF);
        self.waiters
            .lock()
            .map_err(|_| "poisoned")?
            .streams
            .insert(id, stx);
        Ok((id, srx))
    }

    async fn server_stream(&self, n: u64) -> Result<u64, String> {
        let (id, mut rx) = self.open()?;
        let mut open = vec![0u8];
        open.extend_from_slice(&n.to_be_bytes());
        self.tx
            .send(frame(OPEN, id, &open))
            .await
            .map_err(|_| "writer gone")?;
        let mut got = 0;
        while let Some(m) = rx.recv().await {
            check_msg(&m, got)?;
            got += 1;
        }
        Ok(got)
    }

    async fn bidi(self: Arc<Self>, n: u64) -> Result<u64, String> {
        let (id, mut rx) = self.open()?;
        self.tx
            .send(frame(OPEN, id, &[1]))
            .await
            .map_err(|_| "writer gone")?;
        let me = self.clone();
        let sender = tokio::spawn(async move {
            for i in 0..n {
                if me.tx.send(frame(MSG, id, &stream_msg(i))).await.is_err() {
                    return;
                }
            }
            let _ = me.tx.send(frame(END, id, &[])).await;
        });
        let mut got = 0;
        while let Some(m) = rx.recv().await {
            check_msg(&m, got)?;
            got += 1;
        }
        sender.await.map_err(|e| e.to_string())?;
        Ok(got)
    }
}

async fn reader<S>(client: Arc<Client>, mut stream: S)
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(Ok(Message::Binary(b))) = stream.next().await {
        let Some((kind, id, payload)) = parse(&b) else {
            break;
        };
        match kind {
            RESP => {
                let w = client
                    .waiters
                    .lock()
                    .ok()
                    .and_then(|mut w| w.unary.remove(&id));
                if let Some(w) = w {
                    let _ = w.send(payload);
                }
            }
            MSG => {
                let s = client
                    .waiters
                    .lock()
                    .ok()
                    .and_then(|w| w.streams.get(&id).cloned());
                if let Some(s) = s {
                    let _ = s.send(payload).await;
                }
            }
            END => {
                if let Ok(mut w) = client.waiters.lock() {
                    w.streams.remove(&id);
                }
            }
            _ => {}
        }
    }
    // Connection over: fail everything in flight.
    if let Ok(mut w) = client.waiters.lock() {
        *w = Waiters::default();
    }
}

/// Starts the raw-ws server and connects one client to it.
pub(crate) async fn start() -> Result<System, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(server(listener));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).ok();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (sink, stream) = ws.split();
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(writer(sink, rx, &CALLER));
    let client = Arc::new(Client {
        tx,
        waiters: Mutex::default(),
        next_id: AtomicU64::new(1),
    });
    tokio::spawn(reader(client.clone(), stream));

    let c = client.clone();
    let echo: EchoFn = Arc::new(move |b| {
        let c = c.clone();
        async move { c.echo(b).await }.boxed()
    });
    let c = client.clone();
    let stream: CountFn = Arc::new(move |n| {
        let c = c.clone();
        async move { c.server_stream(n).await }.boxed()
    });
    let c = client;
    let bidi: CountFn = Arc::new(move |n| {
        let c = c.clone();
        async move { c.bidi(n).await }.boxed()
    });
    Ok(System {
        name: "raw-ws",
        echo,
        stream: Some(stream),
        bidi: Some(bidi),
        note: "",
        wire: Some(Arc::new(|| Wire {
            caller_frames: CALLER.frames.load(Ordering::Relaxed),
            caller_messages: CALLER.flushes.load(Ordering::Relaxed),
            callee_frames: CALLEE.frames.load(Ordering::Relaxed),
            callee_messages: CALLEE.flushes.load(Ordering::Relaxed),
        })),
    })
}

/// RSS per idle tokio-tungstenite connection (both ends in this process, one small message
/// exchanged each way), opened `k` at a time with `config`: prices the WebSocket layer under
/// grid's per-connection figure.
pub(crate) async fn idle_connection_bytes(
    k: usize,
    config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
) -> Result<(f64, f64), String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let before = crate::common::rss_bytes();
    let heap_before = crate::heap::live();
    let mut ends = Vec::with_capacity(2 * k);
    for _ in 0..k {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (server, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let accept = tokio_tungstenite::accept_async_with_config(server, Some(config));
        let connect =
            tokio_tungstenite::client_async_with_config(format!("ws://{addr}/"), tcp, Some(config));
        let (s, c) = tokio::join!(accept, connect);
        let mut s = s.map_err(|e| e.to_string())?;
        let (mut c, _) = c.map_err(|e| e.to_string())?;
        c.send(Message::Binary(Bytes::from_static(b"hello")))
            .await
            .map_err(|e| e.to_string())?;
        s.next().await.ok_or("closed")?.map_err(|e| e.to_string())?;
        s.send(Message::Binary(Bytes::from_static(b"hello")))
            .await
            .map_err(|e| e.to_string())?;
        c.next().await.ok_or("closed")?.map_err(|e| e.to_string())?;
        ends.push((s, c));
    }
    let after = crate::common::rss_bytes();
    let heap = (crate::heap::live() - heap_before) as f64 / k as f64;
    drop(ends);
    Ok((
        crate::common::rss_per_item(after as f64 - before as f64, k),
        heap,
    ))
}
