//! Connections: the socket tasks of one live session, and the [`Connection`] handle callers use.
//!
//! Each live socket runs four tasks, all owned by its `Session`:
//! - the **writer** owns the socket's sink and is the only task that writes; it packs whatever is
//!   queued into one WebSocket message, control frames first;
//! - the **reader** owns the socket's stream, decodes each batch and dispatches every frame without
//!   awaiting anything a user task can fill;
//! - the **timer** task serves stream deadlines, pings and liveness checks;
//! - the **keepalive** task sends connection pings and closes the session when it is stuck.
//!
//! When any of them ends, the session closes; the peer's supervisor (in [`crate::manager`]) then
//! reconnects. A [`Connection`] outlives sessions: it always calls through the current one.

pub(crate) mod outq;
pub(crate) mod session;
pub(crate) mod stats;
pub(crate) mod timers;
mod watchdog;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use parking_lot::RwLock;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use crate::config::Config;
use crate::error::Error;
use crate::frame::{BatchDecoder, BatchEncoder, Frame, Route, MAX_FRAMES_PER_BATCH};
use crate::ids::HandlerId;
use crate::mux::{MuxError, StreamCaller, StreamParams, UnaryCaller};
use crate::stream::{StreamReceiver, StreamSender};

pub use session::InFlight;
use session::Session;
use stats::ConnStats;
use watchdog::Watchdog;

/// Any byte stream a WebSocket can run over: TCP, TLS, an in-memory pipe in tests.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// A boxed transport.
pub type BoxedTransport = Box<dyn Transport>;

pub(crate) type Ws = WebSocketStream<BoxedTransport>;

/// The state of a connection to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnState {
    /// No socket; the dialing side is (re)connecting, the accepting side is waiting.
    Disconnected,
    /// A socket is live and authenticated.
    Connected,
    /// The manager shut down; the connection will not come back.
    Shutdown,
}

/// Per-peer state shared by the manager and every [`Connection`] handle.
pub(crate) struct PeerConn {
    pub(crate) local: Arc<str>,
    pub(crate) peer: Arc<str>,
    pub(crate) config: Arc<Config>,
    pub(crate) current: RwLock<Option<Arc<Session>>>,
    pub(crate) state: watch::Sender<ConnState>,
    /// Why the last session ended.
    last_reason: parking_lot::Mutex<Option<String>>,
    pub(crate) stats: Arc<ConnStats>,
}

impl fmt::Debug for PeerConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConn")
            .field("peer", &self.peer)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

impl PeerConn {
    pub(crate) fn new(local: Arc<str>, peer: Arc<str>, config: Arc<Config>) -> PeerConn {
        PeerConn {
            local,
            peer,
            config,
            current: RwLock::new(None),
            state: watch::channel(ConnState::Disconnected).0,
            last_reason: parking_lot::Mutex::new(None),
            stats: Arc::new(ConnStats::default()),
        }
    }

    fn session(&self) -> Option<Arc<Session>> {
        self.current.read().clone().filter(|s| !s.is_closed())
    }

    /// Makes `session` the live one, closing any previous session first. Refuses (and closes
    /// `session`) once the manager shut down, so a dial that finishes late cannot revive it.
    pub(crate) fn install(&self, session: Arc<Session>) -> bool {
        let mut cur = self.current.write();
        if *self.state.borrow() == ConnState::Shutdown {
            drop(cur);
            session.close_as(
                "the manager shut down".into(),
                crate::mux::CancelCause::ShuttingDown,
            );
            return false;
        }
        let old = cur.replace(session);
        drop(cur);
        if let Some(old) = old {
            old.close("replaced by a new connection".into());
        }
        ConnStats::add(&self.stats.connects, 1);
        self.state.send_replace(ConnState::Connected);
        true
    }

    /// Clears `session` if it is still the live one.
    pub(crate) fn uninstall(&self, session: &Arc<Session>) {
        if let Some(reason) = session.close_reason() {
            *self.last_reason.lock() = Some(reason);
        }
        let mut cur = self.current.write();
        if cur.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) {
            *cur = None;
            drop(cur);
            self.state.send_if_modified(|s| {
                if *s == ConnState::Connected {
                    *s = ConnState::Disconnected;
                    true
                } else {
                    false
                }
            });
        }
    }
}

/// Runs one authenticated socket until it ends, then closes its session.
pub(crate) async fn run_session(session: Arc<Session>, ws: Ws) {
    let (sink, stream) = ws.split();
    let watchdog = Arc::new(Watchdog::new());
    watchdog.inbound();
    // Aborted on return *and* when this future is dropped (a supervisor that stops waiting must
    // not leave a detached reader, writer and keepalive running an orphan socket).
    let _tasks = AbortOnDrop(
        [
            tokio::spawn(write_loop(session.clone(), sink, watchdog.clone())),
            tokio::spawn(read_loop(session.clone(), stream, watchdog.clone())),
            tokio::spawn(timer_loop(session.clone())),
            tokio::spawn(keepalive_loop(session.clone(), watchdog)),
        ],
        session.clone(),
    );
    session.closed().await;
}

/// Aborts the tasks of one session when dropped, and closes the session: a session whose tasks
/// are gone must not look usable (its calls would wait for a writer that no longer exists).
struct AbortOnDrop([tokio::task::JoinHandle<()>; 4], Arc<Session>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
        self.1.close("the session's driver stopped".into());
    }
}

async fn write_loop(
    session: Arc<Session>,
    mut sink: futures::stream::SplitSink<Ws, Message>,
    watchdog: Arc<Watchdog>,
) {
    let cfg = session.config.clone();
    loop {
        // Several calls in flight means more frames are about to be queued.
        let busy = session.activity() > 1;
        let Some(mut batch) = session
            .out
            .drain(cfg.max_batch_bytes, MAX_FRAMES_PER_BATCH)
            .await
        else {
            break;
        };
        // A busy connection with a short batch: let the tasks that are runnable right now
        // (callers woken by the last responses, handlers spawned by the last requests) queue
        // their frames first, then send them all in one message (MinIO's Gosched merge). An idle
        // connection sends a lone frame at once, without the yield's cost.
        if busy && batch.frames.len() < 4 && batch.bytes < cfg.max_batch_bytes / 4 {
            tokio::task::yield_now().await;
            session
                .out
                .top_up(&mut batch, cfg.max_batch_bytes, MAX_FRAMES_PER_BATCH);
        }
        let mut enc = BatchEncoder::with_capacity(batch.bytes);
        for f in &batch.frames {
            enc.push_encoded(f);
        }
        let msg = enc.finish();
        ConnStats::add(&session.stats.frames_out, batch.frames.len());
        ConnStats::add(&session.stats.bytes_out, msg.len());
        ConnStats::add(&session.stats.messages_out, 1);
        // The keepalive task watches for a write that never ends (a peer that stopped reading).
        watchdog.write_begin();
        let sent = sink.send(Message::Binary(msg)).await;
        watchdog.write_end();
        if let Err(e) = sent {
            return session.close(format!("write failed: {e}"));
        }
    }
    let _ = sink.close().await;
}

async fn read_loop(
    session: Arc<Session>,
    mut stream: futures::stream::SplitStream<Ws>,
    watchdog: Arc<Watchdog>,
) {
    let cfg = session.config.clone();
    let limits = cfg.limits();
    loop {
        // Silence is detected by the keepalive task from the watchdog's stamps.
        let msg = match stream.next().await {
            None => return session.close("the peer closed the socket".into()),
            Some(Err(e)) => return session.close(format!("read failed: {e}")),
            Some(Ok(m)) => m,
        };
        watchdog.inbound();
        let data = match msg {
            Message::Binary(b) => b,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Close(_) => return session.close("the peer closed the socket".into()),
            Message::Text(_) => {
                return session.close("protocol violation: text message".into());
            }
        };
        ConnStats::add(&session.stats.bytes_in, data.len());
        let decoder = match BatchDecoder::new(data, &limits) {
            Ok(d) => d,
            Err(e) => return session.close(format!("protocol violation: {e}")),
        };
        let now = Instant::now();
        for frame in decoder {
            if session.is_closed() {
                return;
            }
            let frame = match frame {
                Ok(f) => f,
                Err(e) => return session.close(format!("protocol violation: {e}")),
            };
            ConnStats::add(&session.stats.frames_in, 1);
            if let Err(reason) = session.dispatch(frame, now) {
                session.send_control(&Frame::GoAway {
                    error: crate::frame::ErrorRecord::text(
                        crate::frame::ErrorCode::Protocol,
                        reason.clone(),
                    ),
                });
                return session.close(format!("protocol violation: {reason}"));
            }
        }
    }
}

async fn timer_loop(session: Arc<Session>) {
    loop {
        let changed = session.timers.changed();
        let sleep = async {
            match session.timers.next() {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = changed => {}
            () = session.closed() => return,
        }
        let now = Instant::now();
        for mux in session.timers.due(now) {
            session.fire_timer(mux, now);
        }
    }
}

async fn keepalive_loop(session: Arc<Session>, watchdog: Arc<Watchdog>) {
    let cfg = session.config.clone();
    let period = Watchdog::period(cfg.ping_interval, cfg.idle_timeout, cfg.write_timeout);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last_ping = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(reason) = watchdog.check(cfg.idle_timeout, cfg.write_timeout) {
                    return session.close(reason);
                }
                if last_ping.elapsed() >= cfg.ping_interval {
                    last_ping = Instant::now();
                    let nonce = session.stats.ping_nonce();
                    session.send_control(&Frame::Ping { mux: crate::ids::MuxId::CONNECTION, nonce });
                }
            }
            reason = session.kill_requested() => return session.close(reason),
            () = session.closed() => return,
        }
    }
}

/// Options of one call.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// How long to wait; `None` uses the configured default (unary) or no deadline (streams).
    pub timeout: Option<Duration>,
    /// If not connected, wait for the connection (within the timeout) instead of failing fast.
    pub wait_for_connect: bool,
}

/// Options of a stream.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Messages the caller may send ahead of the handler's reading (0: no input stream).
    pub in_capacity: u32,
    /// Messages the callee may send ahead of the caller's reading. At least 1.
    pub out_capacity: u32,
    /// Deadline of the whole stream; `None` for none (stream pings watch liveness instead).
    pub timeout: Option<Duration>,
    /// If not connected, wait for the connection instead of failing fast.
    pub wait_for_connect: bool,
}

impl Default for StreamOptions {
    fn default() -> StreamOptions {
        StreamOptions {
            in_capacity: 0,
            out_capacity: 32,
            timeout: None,
            wait_for_connect: false,
        }
    }
}

/// An open stream as the caller holds it.
#[derive(Debug)]
pub struct ClientStream {
    /// Input to the handler; `None` when the stream was opened without input.
    pub sender: Option<StreamSender>,
    /// The handler's output.
    pub receiver: StreamReceiver,
}

/// A cheap, clonable handle to the connection with one peer, optionally bound to a subroute.
#[derive(Clone)]
pub struct Connection {
    pub(crate) inner: Arc<PeerConn>,
    pub(crate) subroute: Option<Bytes>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("local", &self.inner.local)
            .field("peer", &self.inner.peer)
            .field("subroute", &self.subroute)
            .field("state", &self.state())
            .finish()
    }
}

/// A snapshot of one connection's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// The peer's name.
    pub peer: String,
    /// Current state.
    pub state: ConnState,
    /// Calls in flight on the live session (zero when disconnected).
    pub in_flight: InFlight,
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// WebSocket messages sent (each a batch of frames).
    pub messages_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Successful connects (the first one included).
    pub connects: u64,
    /// Round trip of the last connection ping.
    pub last_rtt: Option<Duration>,
}

impl Connection {
    /// The peer's name.
    pub fn peer(&self) -> &str {
        &self.inner.peer
    }

    /// This node's name.
    pub fn local(&self) -> &str {
        &self.inner.local
    }

    /// The same connection, addressing handlers registered under `subroute`.
    pub fn subroute(&self, subroute: impl Into<String>) -> Connection {
        Connection {
            inner: self.inner.clone(),
            subroute: Some(Bytes::from(subroute.into())),
        }
    }

    fn subroute_str(&self) -> Option<String> {
        self.subroute
            .as_ref()
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }

    /// The current state.
    pub fn state(&self) -> ConnState {
        *self.inner.state.borrow()
    }

    /// Waits until the connection is up, at most `timeout`.
    ///
    /// # Errors
    /// [`Error::NotConnected`] when the time runs out, [`Error::Shutdown`] if the manager stopped.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_for_connect(&self, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.inner.state.subscribe();
        let wait = async {
            loop {
                // The state says Connected a moment longer than the session lives (until its
                // supervisor notices the close), so the live session is what counts.
                if self.inner.session().is_some() {
                    return Ok(());
                }
                if *rx.borrow_and_update() == ConnState::Shutdown {
                    return Err(Error::Shutdown);
                }
                // Wake on the next state change, or re-check shortly for a session closing.
                let _ = tokio::time::timeout(Duration::from_millis(5), rx.changed()).await;
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(Error::NotConnected {
                peer: self.peer().to_owned(),
            }),
        }
    }

    async fn live_session(&self, wait: Option<Duration>) -> Result<Arc<Session>, Error> {
        if let Some(s) = self.inner.session() {
            return Ok(s);
        }
        if *self.inner.state.borrow() == ConnState::Shutdown {
            return Err(Error::Shutdown);
        }
        match wait {
            Some(t) => {
                self.wait_for_connect(t).await?;
                self.inner.session().ok_or_else(|| Error::NotConnected {
                    peer: self.peer().to_owned(),
                })
            }
            None => Err(Error::NotConnected {
                peer: self.peer().to_owned(),
            }),
        }
    }

    fn route(&self, handler: HandlerId) -> Route {
        Route {
            handler,
            subroute: self.subroute.clone(),
        }
    }

    /// Refuses a payload over our limit, or (once a session is known) over the peer's.
    fn check_size(&self, len: usize, session: Option<&Session>) -> Result<(), Error> {
        let limit = session.map_or(self.inner.config.max_payload, Session::max_payload);
        if len > limit {
            return Err(Error::PayloadTooLarge { len, limit });
        }
        Ok(())
    }

    /// A unary call with the default options.
    ///
    /// # Errors
    /// See [`call`](Self::call).
    ///
    /// # Cancel safety
    /// Dropping the future cancels the call, on the remote handler too.
    pub async fn request(&self, handler: HandlerId, payload: Bytes) -> Result<Bytes, Error> {
        self.call(handler, payload, CallOptions::default()).await
    }

    /// A unary call: sends `payload` to `handler` on the peer and waits for the response.
    ///
    /// # Errors
    /// [`Error::Remote`] when the handler returned an error or panicked; [`Error::UnknownHandler`];
    /// [`Error::Deadline`]; [`Error::NotConnected`] (nothing was sent) or [`Error::Disconnected`]
    /// (the link dropped in flight); [`Error::PayloadTooLarge`].
    ///
    /// # Cancel safety
    /// Dropping the future cancels the call: a `Cancel` frame reaches the remote handler, whose
    /// context reports [`CancelCause::CallerGaveUp`](crate::mux::CancelCause::CallerGaveUp).
    pub async fn call(
        &self,
        handler: HandlerId,
        payload: Bytes,
        opts: CallOptions,
    ) -> Result<Bytes, Error> {
        self.check_size(payload.len(), None)?;
        let timeout = opts.timeout.unwrap_or(self.inner.config.default_timeout);
        // Reading the clock costs a syscall on some VMs: only when the call had to wait.
        let (session, remaining) = match self.inner.session() {
            Some(s) => (s, timeout),
            None => {
                let started = Instant::now();
                let s = self
                    .live_session(opts.wait_for_connect.then_some(timeout))
                    .await?;
                (s, timeout.saturating_sub(started.elapsed()))
            }
        };
        if remaining.is_zero() {
            return Err(Error::Deadline);
        }
        self.check_size(payload.len(), Some(&session))?;
        let (mux, rx) = session.register_unary().map_err(|_| Error::NotConnected {
            peer: self.peer().to_owned(),
        })?;
        let mut guard = UnaryGuard {
            session: &session,
            mux,
            armed: true,
        };
        let frame = UnaryCaller::request(mux, self.route(handler), Some(payload), Some(remaining));
        let result = tokio::time::timeout(remaining, async {
            if session.send_data(&frame).await.is_err() {
                // Nothing was sent: the link went down before the request could be queued.
                return Err(None);
            }
            rx.await
                .unwrap_or(Err(MuxError::Disconnected))
                .map_err(Some)
        })
        .await;
        let result = match result {
            Ok(r) => {
                guard.armed = false;
                r
            }
            Err(_) => {
                guard.armed = false;
                if session.forget_unary(mux) {
                    session.cancel_call(&Frame::Cancel {
                        mux,
                        reason: crate::frame::CancelReason::Deadline,
                    });
                }
                Err(Some(MuxError::Deadline))
            }
        };
        match result {
            Ok(p) => Ok(p.unwrap_or_default()),
            Err(None) => {
                session.forget_unary(mux);
                Err(Error::NotConnected {
                    peer: self.peer().to_owned(),
                })
            }
            Err(Some(e)) => Err(Error::from_mux(
                e,
                self.peer(),
                handler,
                self.subroute_str().as_deref(),
            )),
        }
    }

    /// Opens a stream to `handler` with an initial payload.
    ///
    /// # Errors
    /// [`Error::NotConnected`], [`Error::PayloadTooLarge`]. Errors of the stream itself (an
    /// unknown handler, a remote error) arrive on the receiver.
    ///
    /// # Cancel safety
    /// Cancel safe: a stream is opened only when the future completes.
    pub async fn open_stream(
        &self,
        handler: HandlerId,
        payload: Bytes,
        opts: StreamOptions,
    ) -> Result<ClientStream, Error> {
        self.check_size(payload.len(), None)?;
        let wait = opts
            .wait_for_connect
            .then(|| opts.timeout.unwrap_or(self.inner.config.default_timeout));
        let session = self.live_session(wait).await?;
        self.check_size(payload.len(), Some(&session))?;
        session.data_room().await.map_err(|_| Error::NotConnected {
            peer: self.peer().to_owned(),
        })?;
        let params = StreamParams {
            in_cap: opts.in_capacity,
            out_cap: opts.out_capacity,
            input: opts.in_capacity > 0,
            timeout: opts.timeout,
            ping_interval: Some(self.inner.config.stream_ping_interval),
            liveness_timeout: self.inner.config.stream_liveness_timeout,
        };
        let route = self.route(handler);
        let now = Instant::now();
        let (shared, open) = session
            .register_stream(|mux| StreamCaller::open(mux, route, Some(payload), params, now))
            .map_err(|_| Error::NotConnected {
                peer: self.peer().to_owned(),
            })?;
        // The open frame is queued before any input frame can be: the sender does not exist yet.
        if session.push_data_now(&open).is_err() {
            let mut slot = shared.lock();
            slot.machine.disconnect();
        }
        let sender = params
            .input
            .then(|| StreamSender::new(session.clone(), shared.clone()));
        let receiver = StreamReceiver::new(session, shared, handler, self.subroute_str());
        Ok(ClientStream { sender, receiver })
    }

    /// Counters of this connection.
    pub fn stats(&self) -> ConnectionStats {
        let s = &self.inner.stats;
        ConnectionStats {
            peer: self.peer().to_owned(),
            state: self.state(),
            in_flight: self
                .inner
                .session()
                .map(|s| s.in_flight())
                .unwrap_or_default(),
            frames_in: ConnStats::get(&s.frames_in),
            frames_out: ConnStats::get(&s.frames_out),
            messages_out: ConnStats::get(&s.messages_out),
            bytes_in: ConnStats::get(&s.bytes_in),
            bytes_out: ConnStats::get(&s.bytes_out),
            connects: ConnStats::get(&s.connects),
            last_rtt: s.last_rtt(),
        }
    }

    /// Why the last session ended, if one did.
    pub fn last_close_reason(&self) -> Option<String> {
        let live = self
            .inner
            .current
            .read()
            .as_ref()
            .and_then(|s| s.close_reason());
        live.or_else(|| self.inner.last_reason.lock().clone())
    }

    /// Closes the live socket (for tests and fault injection); the dialing side reconnects.
    pub fn kill_socket(&self) {
        if let Some(s) = self.inner.session() {
            s.close("killed on request".into());
        }
    }
}

/// Cancels a unary call whose future is dropped before it finished.
struct UnaryGuard<'a> {
    session: &'a Arc<Session>,
    mux: crate::ids::MuxId,
    armed: bool,
}

impl Drop for UnaryGuard<'_> {
    fn drop(&mut self) {
        if self.armed && self.session.forget_unary(self.mux) {
            debug!(mux = ?self.mux, "unary call dropped: cancelling on the callee");
            self.session.cancel_call(&Frame::Cancel {
                mux: self.mux,
                reason: crate::frame::CancelReason::CallerGaveUp,
            });
        }
    }
}
