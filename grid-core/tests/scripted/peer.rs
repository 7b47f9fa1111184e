//! One scripted connection: the real handshake as a dialing member, then frames sent as the test
//! scripts them and frames received one by one, read as fast or as slowly as the test allows.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use grid_core::frame::{
    decode_batch, encode_batch, BatchEncoder, Frame, Limits, MAX_FRAMES_PER_BATCH,
};
use grid_core::handshake::{
    random_instance, random_nonce, DialerHandshake, DialerParams, Features, PeerInfo,
    HANDSHAKE_LIMITS,
};
use grid_core::{BoxedTransport, HmacAuth, MuxId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{now_ms, SECRET, WAIT};

/// What the scripted peer's reader hands the test.
#[derive(Debug)]
pub enum Inbound {
    /// One frame, in the order the node sent it.
    Frame(Frame),
    /// The socket ended; why.
    Closed(String),
    /// The node sent a batch its own codec cannot decode (never right: the receive calls fail
    /// loudly on it).
    Undecodable(String),
}

type Ws = WebSocketStream<BoxedTransport>;

/// One scripted connection to the node, authenticated as a member.
pub struct ScriptedPeer {
    pub name: String,
    /// What the handshake agreed.
    pub info: PeerInfo,
    sink: SplitSink<Ws, Message>,
    inbox: mpsc::UnboundedReceiver<Inbound>,
    /// How many WebSocket messages the reader may have read in all.
    allowed: watch::Sender<u64>,
    reader: JoinHandle<()>,
    next_mux: u32,
    next_nonce: u64,
    closed: Option<String>,
}

impl std::fmt::Debug for ScriptedPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedPeer")
            .field("name", &self.name)
            .field("info", &self.info)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// The scripted side takes messages of any size: it is the node's limits that are under test.
fn client_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None)
}

/// Receives one handshake frame, failing loudly on anything else.
async fn recv_handshake(ws: &mut Ws) -> Frame {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no handshake message from the node")
            .expect("the node closed the socket during the handshake")
            .expect("socket error during the handshake");
        if let Message::Binary(b) = msg {
            let mut frames = decode_batch(b, &HANDSHAKE_LIMITS).expect("a handshake batch");
            assert_eq!(frames.len(), 1, "one handshake frame per message");
            return frames.remove(0);
        }
    }
}

impl ScriptedPeer {
    /// Upgrades `io` to a WebSocket on `route` and performs the handshake as `local`, dialing the
    /// node named `remote`, announcing no handler table (as a node of a version without tables).
    /// Starts with the reader stopped: call [`read_eagerly`](Self::read_eagerly) or
    /// [`allow_reads`](Self::allow_reads).
    pub async fn connect_over(
        io: BoxedTransport,
        host: &str,
        route: &str,
        local: &str,
        remote: &str,
    ) -> ScriptedPeer {
        ScriptedPeer::connect_announcing(io, host, route, local, remote, None).await
    }

    /// [`connect_over`](Self::connect_over), announcing `table` (a handler-table message) in
    /// the handshake when given: the node then takes `Handlers` updates from this peer.
    pub async fn connect_announcing(
        io: BoxedTransport,
        host: &str,
        route: &str,
        local: &str,
        remote: &str,
        table: Option<Bytes>,
    ) -> ScriptedPeer {
        ScriptedPeer::connect_with(io, host, route, local, remote, table, Features::NONE).await
    }

    /// [`connect_announcing`](Self::connect_announcing), offering `features` in its `Hello`
    /// (the node then agrees to those it has on: [`ScriptedPeer::info`]`.features`).
    pub async fn connect_with(
        io: BoxedTransport,
        host: &str,
        route: &str,
        local: &str,
        remote: &str,
        table: Option<Bytes>,
        features: Features,
    ) -> ScriptedPeer {
        let url = format!("ws://{host}{route}");
        let (mut ws, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::client_async_with_config(url, io, Some(client_ws_config())),
        )
        .await
        .expect("the WebSocket upgrade hung")
        .expect("the WebSocket upgrade");
        let auth = HmacAuth::new(SECRET);
        let (hs, hello) = DialerHandshake::start_offering(
            DialerParams {
                local: local.to_owned(),
                remote: remote.to_owned(),
                instance: random_instance().expect("random instance"),
                nonce: random_nonce().expect("random nonce"),
                now_ms: now_ms(),
                checksum: true,
                max_payload: 64 << 20,
                max_skew_ms: 300_000,
            },
            features,
        );
        let hs = match table {
            Some(t) => hs.announce(t),
            None => hs,
        };
        send_handshake(&mut ws, &hello).await;
        let welcome = recv_handshake(&mut ws).await;
        let (confirm, next) = hs
            .on_welcome(welcome, now_ms(), &auth)
            .unwrap_or_else(|r| panic!("the node's Welcome was refused: {}", r.error));
        send_handshake(&mut ws, &confirm).await;
        let ready = recv_handshake(&mut ws).await;
        let info = next
            .on_ready(ready)
            .unwrap_or_else(|r| panic!("the node refused the handshake: {}", r.error));
        let (sink, stream) = ws.split();
        let (tx, inbox) = mpsc::unbounded_channel();
        let (allowed, allowed_rx) = watch::channel(0u64);
        let reader = tokio::spawn(read_loop(stream, tx, allowed_rx));
        ScriptedPeer {
            name: local.to_owned(),
            info,
            sink,
            inbox,
            allowed,
            reader,
            next_mux: 1,
            next_nonce: 1,
            closed: None,
        }
    }

    /// The next mux id of this (dialing) side: odd, never reused.
    pub fn mux(&mut self) -> MuxId {
        let m = MuxId(self.next_mux);
        self.next_mux += 2;
        m
    }

    /// The reader reads everything the node sends, as fast as it can.
    pub fn read_eagerly(&self) {
        self.allowed.send_replace(u64::MAX);
    }

    /// The reader may read `n` more WebSocket messages.
    pub fn allow_reads(&self, n: u64) {
        self.allowed.send_modify(|a| *a = a.saturating_add(n));
    }

    /// Sends `frames` packed into as few WebSocket messages as the node's limits allow, in order.
    ///
    /// # Errors
    /// The socket's error once the node has closed it (the frames may be partly sent).
    pub async fn send(
        &mut self,
        frames: &[Frame],
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let mut batch = BatchEncoder::new();
        for f in frames {
            batch.push(f, self.info.checksum);
            if batch.count() == MAX_FRAMES_PER_BATCH || batch.len() >= 1 << 20 {
                let full = std::mem::take(&mut batch);
                self.sink.feed(Message::Binary(full.finish())).await?;
            }
        }
        if !batch.is_empty() {
            self.sink.feed(Message::Binary(batch.finish())).await?;
        }
        self.sink.flush().await
    }

    /// Sends one WebSocket binary message of raw bytes.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn send_raw(
        &mut self,
        bytes: Bytes,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.sink.send(Message::Binary(bytes)).await
    }

    /// The next thing the node sent (connection-level pings skipped), within [`WAIT`].
    pub async fn recv(&mut self) -> Inbound {
        match self.recv_within(WAIT).await {
            Some(i) => i,
            None => panic!("{}: nothing from the node within {WAIT:?}", self.name),
        }
    }

    /// The next thing the node sent (connection-level pings skipped), or `None` after `within`.
    pub async fn recv_within(&mut self, within: Duration) -> Option<Inbound> {
        if let Some(reason) = &self.closed {
            return Some(Inbound::Closed(reason.clone()));
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.inbox.recv())
                .await
                .ok()?;
            match next {
                Some(Inbound::Frame(Frame::Ping { mux, .. })) if mux == MuxId::CONNECTION => {}
                Some(Inbound::Closed(reason)) => {
                    self.closed = Some(reason.clone());
                    return Some(Inbound::Closed(reason));
                }
                Some(Inbound::Undecodable(e)) => {
                    panic!(
                        "{}: the node sent a batch its own codec cannot decode: {e}",
                        self.name
                    )
                }
                Some(i) => return Some(i),
                None => {
                    let reason = "the reader stopped".to_owned();
                    self.closed = Some(reason.clone());
                    return Some(Inbound::Closed(reason));
                }
            }
        }
    }

    /// The next frame; fails loudly if the socket closed instead.
    pub async fn frame(&mut self) -> Frame {
        match self.recv().await {
            Inbound::Frame(f) => f,
            Inbound::Closed(reason) => panic!(
                "{}: expected a frame, the socket closed: {reason}",
                self.name
            ),
            Inbound::Undecodable(e) => panic!("{}: undecodable batch: {e}", self.name),
        }
    }

    /// Everything already received, without waiting.
    pub fn received(&mut self) -> Vec<Inbound> {
        let mut out = Vec::new();
        while let Ok(i) = self.inbox.try_recv() {
            match &i {
                Inbound::Closed(reason) => self.closed = Some(reason.clone()),
                Inbound::Undecodable(e) => {
                    panic!(
                        "{}: the node sent a batch its own codec cannot decode: {e}",
                        self.name
                    )
                }
                Inbound::Frame(_) => {}
            }
            out.push(i);
        }
        out
    }

    /// Sends a connection ping and returns every frame that arrived before its pong: once it is
    /// back, the node has dispatched everything sent before it. Frames the node queues behind data
    /// (ends, errors) may still follow the pong. Fails loudly if the socket closes first.
    pub async fn barrier(&mut self) -> Vec<Frame> {
        match self.try_barrier().await {
            Ok(before) => before,
            Err((before, reason)) => panic!(
                "{}: the socket closed before the barrier's pong: {reason}; frames before: {before:?}",
                self.name
            ),
        }
    }

    /// [`barrier`](Self::barrier), or the frames and the reason when the socket closes first.
    ///
    /// # Errors
    /// The frames received and why the socket closed, when it closed before the pong.
    pub async fn try_barrier(&mut self) -> Result<Vec<Frame>, (Vec<Frame>, String)> {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        let ping = Frame::Ping {
            mux: MuxId::CONNECTION,
            nonce,
        };
        if let Err(e) = self.send(&[ping]).await {
            return Err((
                Vec::new(),
                format!("the barrier ping could not be sent: {e}"),
            ));
        }
        let mut before = Vec::new();
        loop {
            match self.recv().await {
                Inbound::Frame(Frame::Pong { mux, nonce: n })
                    if mux == MuxId::CONNECTION && n == nonce =>
                {
                    return Ok(before)
                }
                Inbound::Frame(f) => before.push(f),
                Inbound::Closed(reason) => return Err((before, reason)),
                Inbound::Undecodable(e) => panic!("{}: undecodable batch: {e}", self.name),
            }
        }
    }

    /// Reads until the socket ends, within [`WAIT`]; returns the frames that came first.
    pub async fn expect_closed(&mut self, what: &str) -> Vec<Frame> {
        self.read_eagerly();
        let mut before = Vec::new();
        loop {
            match self.recv_within(WAIT).await {
                Some(Inbound::Frame(f)) => before.push(f),
                Some(Inbound::Closed(_)) => return before,
                Some(Inbound::Undecodable(e)) => panic!("{what}: undecodable batch: {e}"),
                None => panic!(
                    "{what}: the node did not close the socket within {WAIT:?}; frames: {before:?}"
                ),
            }
        }
    }

    /// Cuts the socket: the node sees it end.
    pub async fn cut(self) {
        self.reader.abort();
        let _ = self.reader.await;
        drop(self.sink);
    }
}

async fn send_handshake(ws: &mut Ws, frame: &Frame) {
    tokio::time::timeout(
        WAIT,
        ws.send(Message::Binary(encode_batch(
            std::slice::from_ref(frame),
            false,
        ))),
    )
    .await
    .expect("sending a handshake message hung")
    .expect("sending a handshake message");
}

async fn read_loop(
    mut stream: SplitStream<Ws>,
    tx: mpsc::UnboundedSender<Inbound>,
    mut allowed: watch::Receiver<u64>,
) {
    // Items frames come only from a node this peer offered them to.
    let limits = Limits {
        items: true,
        ..Limits::for_payload(64 << 20)
    };
    let mut read = 0u64;
    loop {
        if allowed.wait_for(|a| *a > read).await.is_err() {
            return;
        }
        let msg = match stream.next().await {
            None => {
                let _ = tx.send(Inbound::Closed("end of stream".into()));
                return;
            }
            Some(Err(e)) => {
                let _ = tx.send(Inbound::Closed(format!("socket error: {e}")));
                return;
            }
            Some(Ok(m)) => m,
        };
        let bytes = match msg {
            Message::Binary(b) => b,
            Message::Close(c) => {
                let _ = tx.send(Inbound::Closed(format!("close frame {c:?}")));
                return;
            }
            _ => continue,
        };
        read += 1;
        match decode_batch(bytes, &limits) {
            Ok(frames) => {
                for f in frames {
                    let _ = tx.send(Inbound::Frame(f));
                }
            }
            Err(e) => {
                let _ = tx.send(Inbound::Undecodable(e.to_string()));
                return;
            }
        }
    }
}
