//! Connections: the [`Connection`] handle callers use, over the live session of one peer.
//!
//! The connection code is layered so that each part can be read, and tested, alone:
//!
//! - [`core`](self::core): the sans-IO connection core — call tables, the mux-id rule,
//!   admission, byte budgets, lifecycle and typed close reasons; frames and time in, frames and
//!   events out; unit-tested with no socket;
//! - `budget`, `slot`, `outq`, `stats`, `watchdog`: the pieces it and the shell share (byte
//!   counters, a stream machine under its own lock, the two-lane outbound queue, counters, the
//!   liveness stamps);
//! - `session`: the shell's state for one socket, moving what the core produces to where it goes;
//! - `serve`: the task of each admitted call, holding its admission slot until it ends;
//! - `driver`: the reader, writer, timer and keepalive tasks of one socket;
//! - `peer`: what outlives a socket — the per-peer state a [`Connection`] calls through.
//!
//! Imports go one way: `driver` → `serve` → `session` → `core`; the user-facing stream ends
//! (`crate::stream`) and this module's `Connection` use `session`; nothing below `serve` knows
//! about handlers.

mod budget;
mod bulk;
pub(crate) mod core;
mod driver;
pub(crate) mod events;
mod lock;
pub(crate) mod outq;
pub(crate) mod peer;
mod serve;
pub(crate) mod session;
pub(crate) mod slot;
pub(crate) mod stats;
mod watchdog;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use crate::error::Error;
use crate::frame::{Frame, Metadata, MetadataError, Route};
use crate::handler::HandlerSpec;
use crate::ids::HandlerId;
use crate::layer::{ClientCall, ClientStack};
use crate::mux::{MuxError, StreamCaller, StreamParams, UnaryCaller};
use crate::stream::{RequestSender, ResponseReceiver};
use crate::table::Supported;

pub use self::core::{
    ChunkViolation, CloseKind, CloseReason, CompressViolation, InFlight, Initiator,
    ProtocolViolation, MAX_PARTIAL_FRAMES,
};
pub use budget::HeldBytes;
pub(crate) use driver::run_session;
pub use events::{LinkEvent, LinkEvents};
pub use peer::DialFailure;
pub(crate) use peer::PeerConn;
use session::{NotStarted, Session};
use stats::ConnStats;

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
    /// The peer was removed from the membership; the connection will not come back.
    Removed,
}

/// Options of one call.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// How long to wait; `None` uses the configured default (unary) or no deadline (streams).
    pub timeout: Option<Duration>,
    /// If not connected, wait for the connection (within the timeout) instead of failing fast.
    pub wait_for_connect: bool,
    /// Entries the handler reads from its [`Context::metadata`](crate::Context::metadata).
    /// Bounded by [`Config::max_metadata_entries`](crate::Config::max_metadata_entries) and
    /// `max_metadata_bytes`, this node's and the peer's: a call over either fails with
    /// [`Error::Metadata`] before anything is sent.
    pub metadata: Metadata,
}

/// Options of a stream.
///
/// Each direction is flow-controlled by two windows the receiving side declares: a message cap
/// (`*_capacity`) and a byte window (`*_window`). A sender may send while it has a message credit
/// and the payload bytes it sent and had no credit back for are under the byte window; the
/// message that crosses the window goes whole, so an item larger than the window travels alone.
/// The defaults are sized for throughput on a LAN: [`default`](Self::default) for a stream
/// without input, [`two_way`](Self::two_way) for one with input.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Messages the caller may send ahead of the handler's reading (0: no input stream).
    pub in_capacity: u32,
    /// Messages the callee may send ahead of the caller's reading. At least 1.
    pub out_capacity: u32,
    /// Payload bytes the caller may send ahead of the handler's reading (ignored without
    /// input). At least 1.
    pub in_window: u32,
    /// Payload bytes the callee may send ahead of the caller's reading. At least 1.
    pub out_window: u32,
    /// Deadline of the whole stream; `None` for none (stream pings watch liveness instead).
    pub timeout: Option<Duration>,
    /// If not connected, wait for the connection instead of failing fast.
    pub wait_for_connect: bool,
    /// Entries the handler reads from its [`Context::metadata`](crate::Context::metadata),
    /// bounded as [`CallOptions::metadata`] is.
    pub metadata: Metadata,
}

impl StreamOptions {
    /// The default message cap of each direction.
    pub const DEFAULT_CAPACITY: u32 = 4096;
    /// The default byte window of each direction: 1 MiB.
    pub const DEFAULT_WINDOW: u32 = 1 << 20;

    /// The defaults for a stream with input (two-way or client streaming): both directions get
    /// the default windows.
    pub fn two_way() -> StreamOptions {
        StreamOptions {
            in_capacity: StreamOptions::DEFAULT_CAPACITY,
            ..StreamOptions::default()
        }
    }
}

impl Default for StreamOptions {
    /// A stream without input, with the default output windows.
    fn default() -> StreamOptions {
        StreamOptions {
            in_capacity: 0,
            out_capacity: StreamOptions::DEFAULT_CAPACITY,
            in_window: StreamOptions::DEFAULT_WINDOW,
            out_window: StreamOptions::DEFAULT_WINDOW,
            timeout: None,
            wait_for_connect: false,
            metadata: Metadata::new(),
        }
    }
}

/// An open stream as the caller holds it.
#[derive(Debug)]
pub struct ClientStream {
    /// Input to the handler; `None` when the stream was opened without input.
    pub sender: Option<RequestSender>,
    /// The handler's output.
    pub receiver: ResponseReceiver,
}

/// A cheap, clonable handle to the connection with one peer, optionally bound to a subroute
/// and to client-side layers ([`with_layer`](Self::with_layer)).
///
/// Got from [`Manager::connection`](crate::Manager::connection); it outlives reconnects (a call
/// goes out on whatever socket is live). A call while no socket is up fails at once with
/// [`Error::NotConnected`] unless its options say to wait ([`CallOptions::wait_for_connect`]).
///
/// # Example
///
/// A unary call with a deadline, a call to a handler under a subroute, and a stream.
///
/// ```
/// # use grid_core as grid;
/// # use std::net::TcpListener;
/// # async fn two_nodes(register: impl Fn(&grid::Manager)) -> Result<(grid::Manager, grid::Manager), Box<dyn std::error::Error>> {
/// #     let listeners = [TcpListener::bind("127.0.0.1:0")?, TcpListener::bind("127.0.0.1:0")?];
/// #     let names = [format!("http://{}", listeners[0].local_addr()?), format!("http://{}", listeners[1].local_addr()?)];
/// #     let mut nodes = Vec::new();
/// #     for (name, listener) in names.iter().zip(listeners) {
/// #         let node = grid::Manager::builder(name.as_str()).peers(names.iter().cloned()).secret("docs").listener(listener).start().await?;
/// #         register(&node);
/// #         nodes.push(node);
/// #     }
/// #     let b = nodes.pop().ok_or("no node")?;
/// #     Ok((nodes.pop().ok_or("no node")?, b))
/// # }
/// use std::time::Duration;
///
/// use grid::{Bytes, CallOptions, HandlerSpec, RemoteError, StreamOptions};
///
/// const ECHO: HandlerSpec = HandlerSpec::named("Docs.echo");
/// const COUNT: HandlerSpec = HandlerSpec::named("Docs.count");
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // `b` serves ECHO, ECHO again under the subroute "disk1", and COUNT, a stream of
/// // `payload[0]` one-byte messages.
/// let (a, b) = two_nodes(|node| {
///     node.register_unary(ECHO, |_ctx, p| async move { Ok::<_, RemoteError>(p) }).unwrap();
///     node.register_unary_at(ECHO, Some("disk1"), |ctx, p| async move {
///         let sub = ctx.subroute().unwrap_or_default().to_owned();
///         Ok::<_, RemoteError>(Bytes::from([sub.as_bytes(), &p[..]].concat()))
///     })
///     .unwrap();
///     node.register_stream(COUNT, |_ctx, p, _input, mut out| async move {
///         for i in 0..p.first().copied().unwrap_or(0) {
///             out.send(Bytes::from(vec![i])).await.map_err(|e| {
///                 RemoteError::text(grid::ErrorCode::Cancelled, e.to_string())
///             })?;
///         }
///         Ok(())
///     })
///     .unwrap();
/// })
/// .await?;
///
/// let conn = a.connection(b.name())?;
/// conn.wait_for_connect(Duration::from_secs(10)).await?;
///
/// let opts = CallOptions { timeout: Some(Duration::from_secs(2)), ..CallOptions::default() };
/// let reply = conn.call(ECHO.id, Bytes::from_static(b"hi"), opts).await?;
/// assert_eq!(&reply[..], b"hi");
///
/// let disk1 = conn.subroute("disk1");
/// assert_eq!(&disk1.request(ECHO.id, Bytes::from_static(b":hi")).await?[..], b"disk1:hi");
///
/// let mut stream = conn.open_stream(COUNT.id, Bytes::from_static(&[3]), StreamOptions::default()).await?;
/// let mut got = Vec::new();
/// while let Some(item) = stream.receiver.recv().await {
///     got.push(item?[0]);
/// }
/// assert_eq!(got, [0, 1, 2]);
/// # a.shutdown().await;
/// # b.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Connection {
    pub(crate) inner: Arc<PeerConn>,
    pub(crate) subroute: Option<Bytes>,
    /// Client-side middleware every call of this handle goes through; `None`: none, and the
    /// call path pays nothing for it.
    pub(crate) layer: Option<ClientStack>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("local", &self.inner.local)
            .field("peer", &self.inner.peer)
            .field("subroute", &self.subroute)
            .field("layered", &self.layer.is_some())
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
    /// Bytes the live session holds for the peer (zero when disconnected).
    pub held: HeldBytes,
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

    /// The same connection (and layers), addressing handlers registered under `subroute`.
    pub fn subroute(&self, subroute: impl Into<String>) -> Connection {
        self.at_subroute(Some(Bytes::from(subroute.into())))
    }

    pub(crate) fn at_subroute(&self, subroute: Option<Bytes>) -> Connection {
        Connection {
            inner: self.inner.clone(),
            subroute,
            layer: self.layer.clone(),
        }
    }

    /// The same connection with `layer` around every call made through the returned handle
    /// (and through typed clients over it): a tower [`Layer`](crate::layer::Layer) over
    /// [`ConnectionService`](crate::layer::ConnectionService), outside the layers this handle
    /// already has. See [`crate::layer`].
    pub fn with_layer<L>(&self, layer: L) -> Connection
    where
        L: crate::layer::Layer<crate::layer::ConnectionService>,
        L::Service: crate::layer::Service<crate::layer::ClientCall, Response = crate::layer::ClientReply>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as crate::layer::Service<crate::layer::ClientCall>>::Error:
            Into<crate::layer::BoxError>,
        <L::Service as crate::layer::Service<crate::layer::ClientCall>>::Future: Send + 'static,
    {
        Connection {
            inner: self.inner.clone(),
            subroute: self.subroute.clone(),
            layer: Some(ClientStack::new(self.clone(), layer)),
        }
    }

    fn subroute_str(&self) -> Option<String> {
        self.subroute
            .as_ref()
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }

    /// The peer process's instance id on the live session, or on the last one: a new value
    /// after a reconnect means the peer restarted (see [`events`](Self::events)).
    pub fn peer_instance(&self) -> Option<crate::handshake::InstanceId> {
        self.inner.instance()
    }

    /// Why the last dial or handshake this node made to the peer failed, if one did (the
    /// dialing side only; see [`dialer_of`](crate::dialer_of)).
    pub fn last_dial_failure(&self) -> Option<DialFailure> {
        self.inner.last_dial_failure.lock().clone()
    }

    /// Watches this link's changes: connected, restarted, going away, disconnected.
    pub fn events(&self) -> LinkEvents {
        self.inner.events.subscribe()
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
                let state = *rx.borrow_and_update();
                if let Some(e) = self.gone(state) {
                    return Err(e);
                }
                // The state may say Connected a moment longer than its session lives; either
                // way the next change (uninstalled, reconnected, shut down) is the one to see.
                if rx.changed().await.is_err() {
                    return Err(Error::Shutdown);
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(Error::NotConnected {
                peer: self.peer().to_owned(),
            }),
        }
    }

    /// The error for a link that will not come back: shut down, or its peer removed.
    fn gone(&self, state: ConnState) -> Option<Error> {
        match state {
            ConnState::Shutdown => Some(Error::Shutdown),
            ConnState::Removed => Some(Error::UnknownPeer(self.peer().to_owned())),
            ConnState::Connected | ConnState::Disconnected => None,
        }
    }

    async fn live_session(&self, wait: Option<Duration>) -> Result<Arc<Session>, Error> {
        if let Some(s) = self.inner.session() {
            return Ok(s);
        }
        let state = *self.inner.state.borrow();
        if let Some(e) = self.gone(state) {
            return Err(e);
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

    /// Whether the peer serves `spec` (under this handle's subroute), from the handler table it
    /// announced on the live connection (`PROTOCOL.md` section 9), without a round trip.
    ///
    /// [`Supported::No`] only when the peer's table is complete (it was started not ready, see
    /// [`ManagerBuilder::start_not_ready`](crate::ManagerBuilder::start_not_ready)): then a call
    /// to `spec` fails at once with [`Error::UnknownHandler`] and sends nothing.
    /// [`Supported::Unknown`] when not connected, when the peer is of a version that announces no
    /// table, or when its table is incomplete and lacks `spec`; a call then goes out as usual.
    pub fn supports(&self, spec: HandlerSpec) -> Supported {
        self.inner.session().map_or(Supported::Unknown, |s| {
            s.peer_supports(&self.route(spec.id))
        })
    }

    /// The error for a call that was not registered on `session`.
    fn not_started(&self, why: NotStarted, handler: HandlerId) -> Error {
        match why {
            NotStarted::Closed => Error::NotConnected {
                peer: self.peer().to_owned(),
            },
            NotStarted::Unserved => Error::UnknownHandler {
                handler,
                subroute: self.subroute_str(),
            },
        }
    }

    /// Fails fast once the peer said it is going away: it would refuse the call anyway.
    fn check_leaving(&self, session: &Session) -> Result<(), Error> {
        if session.peer_leaving() {
            return Err(Error::GoingAway {
                peer: self.peer().to_owned(),
            });
        }
        Ok(())
    }

    /// Refuses a payload over our limit, or (once a session is known) over the peer's.
    fn check_size(&self, len: usize, session: Option<&Session>) -> Result<(), Error> {
        let limit = session.map_or(self.inner.config.max_payload, Session::max_payload);
        if len > limit {
            return Err(Error::PayloadTooLarge { len, limit });
        }
        Ok(())
    }

    /// Refuses metadata over this node's limits, or (once a session is known) over what the
    /// peer accepts; a peer that takes none gets a call with metadata refused, never sent
    /// without it.
    fn check_metadata(&self, metadata: &Metadata, session: Option<&Session>) -> Result<(), Error> {
        if metadata.is_empty() {
            return Ok(());
        }
        let limits = match session {
            None => self.inner.config.metadata_limits(),
            Some(s) => s.metadata_limits().ok_or_else(|| {
                Error::Metadata(MetadataError::Unsupported {
                    peer: self.peer().to_owned(),
                })
            })?,
        };
        limits.check(metadata).map_err(Error::Metadata)
    }

    /// A unary call with the default options.
    ///
    /// # Errors
    /// See [`call`](Self::call).
    ///
    /// # Cancel safety
    /// Dropping the future cancels the call, on the remote handler too.
    pub fn request(
        &self,
        handler: HandlerId,
        payload: Bytes,
    ) -> impl Future<Output = Result<Bytes, Error>> + Send + '_ {
        // `call`'s future itself: a wrapper's would hold the arguments a second time.
        self.call(handler, payload, CallOptions::default())
    }

    /// A unary call: sends `payload` to `handler` on the peer and waits for the response.
    ///
    /// # Errors
    /// [`Error::Remote`] when the handler returned an error or panicked; [`Error::UnknownHandler`]
    /// (at once, nothing sent, when the peer's complete handler table lacks it: see
    /// [`supports`](Self::supports));
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
        mut opts: CallOptions,
    ) -> Result<Bytes, Error> {
        if let Some(stack) = &self.layer {
            let call = ClientCall::unary(handler, self.subroute.clone(), payload, opts);
            return stack.unary(call).await;
        }
        // Observed where the call is made: a layered handle comes back here through its
        // innermost service (a handle without layers), so each call is observed once.
        let call = crate::observe::Call::start(
            &self.inner.stats,
            self.peer(),
            handler,
            self.subroute.as_deref(),
            false,
        );
        call.propagate(&mut opts.metadata, |m| {
            self.check_metadata(m, self.inner.session().as_deref())
                .is_ok()
        });
        let result = crate::observe::call_within!(call, self.call_once(handler, payload, opts));
        cooperative(call.end(result)).await
    }

    async fn call_once(
        &self,
        handler: HandlerId,
        payload: Bytes,
        opts: CallOptions,
    ) -> Result<Bytes, Error> {
        self.check_size(payload.len(), None)?;
        self.check_metadata(&opts.metadata, None)?;
        let timeout = opts.timeout.unwrap_or(self.inner.config.default_timeout);
        // Reading the clock costs a syscall on some VMs: only when the call had to wait.
        let (session, mut remaining) = match self.inner.session() {
            Some(s) => (s, timeout),
            None => {
                let started = Instant::now();
                // Boxed: a rare wait, kept out of every call's future (a future over 1 KiB is
                // not served from the allocator's per-thread cache when a caller boxes it).
                let s =
                    Box::pin(self.live_session(opts.wait_for_connect.then_some(timeout))).await?;
                (s, timeout.saturating_sub(started.elapsed()))
            }
        };
        if remaining.is_zero() {
            return Err(Error::Deadline);
        }
        self.check_size(payload.len(), Some(&session))?;
        self.check_metadata(&opts.metadata, Some(&session))?;
        self.check_leaving(&session)?;
        let route = self.route(handler);
        // The connection's timer task fails the call at its deadline: a call that finds room in
        // the data lane has no timer of its own (one that waits for room has one while it
        // waits). On tokio's clock, as the timer task is. None: a timeout too long for the clock,
        // no deadline.
        let deadline = tokio::time::Instant::now()
            .into_std()
            .checked_add(remaining);
        let (mux, rx) = session
            .register_unary(&route, deadline)
            .map_err(|why| self.not_started(why, handler))?;
        crate::observe::record_mux(mux);
        let mut guard = UnaryGuard {
            session: &session,
            mux,
            rx,
            armed: true,
            queued: false,
        };
        if session.data_lane_full() {
            // The request's deadline is the time left when it is queued, so the handler's is
            // never later than ours: wait for room first (registered, so a close fails the call
            // as one in flight), and take the wait off. Nothing is queued yet: on failure the
            // call is only forgotten.
            let started = Instant::now();
            // Boxed, as the wait for the link above.
            let waited = Box::pin(tokio::time::timeout(remaining, session.data_room())).await;
            remaining = remaining.saturating_sub(started.elapsed());
            let failed = match waited {
                Ok(Ok(())) if !remaining.is_zero() => None,
                Ok(Err(_)) => Some(Error::NotConnected {
                    peer: self.peer().to_owned(),
                }),
                _ => Some(Error::Deadline),
            };
            if let Some(e) = failed {
                guard.armed = false;
                session.forget_unary(mux);
                return Err(e);
            }
        }
        let frame = UnaryCaller::request(mux, route, opts.metadata, Some(payload), Some(remaining));
        // Queued at once unless the lane filled up since; the call may end (its deadline, a
        // lost link) while it waits for room.
        let first = {
            let send = std::pin::pin!(session.send_data(&frame));
            match futures::future::select(send, &mut guard.rx).await {
                futures::future::Either::Left((sent, _)) => Ok(sent),
                futures::future::Either::Right((ended, _)) => Err(ended),
            }
        };
        // Queued means copied into the lane (or, sent in parts, shared by them): the request
        // is let go now, not held until the answer. A typed call's payload is a slice of its
        // thread's scratch block, which can then be reused in place.
        drop(frame);
        let result = match first {
            Ok(Ok(())) => {
                guard.queued = true;
                (&mut guard.rx).await
            }
            // Nothing was sent: the link went down before the request could be queued.
            Ok(Err(_)) => Ok(Err(MuxError::Disconnected)),
            // The call ended before its request was queued: the callee never hears of it.
            Err(ended) => ended,
        };
        // Whatever ended the call took it out of the table.
        guard.armed = false;
        let result = match result.unwrap_or(Err(MuxError::Disconnected)) {
            Ok(p) => Ok(p),
            Err(MuxError::Disconnected) if !guard.queued => Err(None),
            Err(MuxError::Deadline) => {
                // A request still queued is taken back; one the writer took gets a `Cancel`,
                // which travels after it. One never queued is only forgotten.
                if guard.queued {
                    session.cancel_call(&Frame::Cancel {
                        mux,
                        reason: crate::frame::CancelReason::Deadline,
                    });
                }
                Err(Some(MuxError::Deadline))
            }
            Err(e) => Err(Some(e)),
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
    /// [`Error::NotConnected`], [`Error::PayloadTooLarge`]; [`Error::UnknownHandler`] when the
    /// peer's complete handler table lacks it (nothing sent, see [`supports`](Self::supports)).
    /// Other errors of the stream (an unknown handler the peer has to tell, a remote error)
    /// arrive on the receiver.
    ///
    /// # Cancel safety
    /// Cancel safe: a stream is opened only when the future completes.
    pub async fn open_stream(
        &self,
        handler: HandlerId,
        payload: Bytes,
        mut opts: StreamOptions,
    ) -> Result<ClientStream, Error> {
        if let Some(stack) = &self.layer {
            let call = ClientCall::stream(handler, self.subroute.clone(), payload, opts);
            return stack.stream(call).await;
        }
        // Observed where the call is made: a layered handle comes back here through its
        // innermost service (a handle without layers), so each call is observed once.
        let call = crate::observe::Call::start(
            &self.inner.stats,
            self.peer(),
            handler,
            self.subroute.as_deref(),
            true,
        );
        call.propagate(&mut opts.metadata, |m| {
            self.check_metadata(m, self.inner.session().as_deref())
                .is_ok()
        });
        let result =
            crate::observe::call_within!(call, self.open_stream_once(handler, payload, opts));
        cooperative(call.end(result)).await
    }

    async fn open_stream_once(
        &self,
        handler: HandlerId,
        payload: Bytes,
        mut opts: StreamOptions,
    ) -> Result<ClientStream, Error> {
        self.check_size(payload.len(), None)?;
        self.check_metadata(&opts.metadata, None)?;
        if opts.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::Deadline);
        }
        let wait = opts
            .wait_for_connect
            .then(|| opts.timeout.unwrap_or(self.inner.config.default_timeout));
        // The stream's deadline counts from the call: time spent waiting for the link or for
        // room in the data lane is taken off it, and a deadline that ran out meanwhile fails
        // here, before anything is sent.
        let started = opts.timeout.map(|_| Instant::now());
        let session = match self.inner.session() {
            Some(s) => s,
            None => self.live_session(wait).await?,
        };
        self.check_size(payload.len(), Some(&session))?;
        self.check_metadata(&opts.metadata, Some(&session))?;
        self.check_leaving(&session)?;
        session.data_room().await.map_err(|_| Error::NotConnected {
            peer: self.peer().to_owned(),
        })?;
        if let (Some(t), Some(started)) = (opts.timeout, started) {
            let left = t.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(Error::Deadline);
            }
            opts.timeout = Some(left);
        }
        let params = StreamParams {
            in_cap: opts.in_capacity,
            out_cap: opts.out_capacity,
            in_window: opts.in_window,
            out_window: opts.out_window,
            input: opts.in_capacity > 0,
            timeout: opts.timeout,
            ping_interval: Some(self.inner.config.stream_ping_interval),
            liveness_timeout: self.inner.config.stream_liveness_timeout,
        };
        let route = self.route(handler);
        let now = Instant::now();
        let (shared, open) = session
            .register_stream(&self.route(handler), |mux| {
                crate::observe::record_mux(mux);
                StreamCaller::open(mux, route, opts.metadata, Some(payload), params, now)
            })
            .map_err(|why| self.not_started(why, handler))?;
        // The open frame is queued before any input frame can be: the sender does not exist yet.
        if session.push_data_now(&open).is_err() {
            let mut slot = shared.lock();
            slot.machine.disconnect();
        }
        let sender = params
            .input
            .then(|| RequestSender::new(session.clone(), shared.clone()));
        let receiver = ResponseReceiver::new(session, shared, handler, self.subroute_str());
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
            frames_in: ConnStats::get(&s.inbound.frames),
            frames_out: ConnStats::get(&s.outbound.frames),
            messages_out: ConnStats::get(&s.outbound.messages),
            bytes_in: ConnStats::get(&s.inbound.bytes),
            bytes_out: ConnStats::get(&s.outbound.bytes),
            connects: s.connects.load(std::sync::atomic::Ordering::Relaxed),
            last_rtt: s.last_rtt(),
            held: self.inner.session().map(|s| s.held()).unwrap_or_default(),
        }
    }

    /// Why the last session ended, if one did: who ended it and what happened.
    pub fn last_close_reason(&self) -> Option<CloseReason> {
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
            s.close(CloseReason::local(CloseKind::Killed));
        }
    }
}

/// Hands a call's result back through tokio's cooperative budget when it failed: a call that
/// fails at once (not connected, shutting down, a peer going away) never awaits anything, so a
/// task retrying it in a loop would otherwise never yield and could starve its runtime.
async fn cooperative<T>(result: Result<T, Error>) -> Result<T, Error> {
    if result.is_err() {
        tokio::task::consume_budget().await;
    }
    result
}

/// Cancels a unary call whose future is dropped before it finished.
struct UnaryGuard<'a> {
    session: &'a Arc<Session>,
    mux: crate::ids::MuxId,
    /// The call's result, as the core hands it over.
    rx: tokio::sync::oneshot::Receiver<Result<crate::frame::Payload, MuxError>>,
    armed: bool,
    /// The request was queued: the callee may know of the call, so giving up sends `Cancel`
    /// (or takes the request back). A call dropped before is only forgotten.
    queued: bool,
}

impl Drop for UnaryGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let reason = if self.session.forget_unary(self.mux) {
            crate::frame::CancelReason::CallerGaveUp
        } else if matches!(self.rx.try_recv(), Ok(Err(MuxError::Deadline))) {
            // The timer task failed the call, and its caller let go before it saw that: the
            // callee must still be told (it is the caller that tells, see `expire_unary`).
            crate::frame::CancelReason::Deadline
        } else {
            // Answered, or lost with the link: nothing to tell.
            return;
        };
        if self.queued {
            debug!(mux = ?self.mux, ?reason, "unary call dropped: cancelling on the callee");
            self.session.cancel_call(&Frame::Cancel {
                mux: self.mux,
                reason,
            });
        }
    }
}
