//! The [`Manager`]: one per node. It knows the node's name and every peer's, keeps exactly one
//! WebSocket per peer, serves registered handlers, and hands out [`Connection`]s.
//!
//! Which side of a pair dials is fixed by [`should_dial`]; the dialing side runs a supervisor
//! loop that connects, runs the session until it ends, and redials with jittered exponential
//! backoff. The accepting side serves the WebSocket upgrade on its listener (or on sockets handed
//! to [`Manager::accept`]) and installs each authenticated session on the peer it proved to be.
//!
//! TLS follows the names' schemes (see [`crate::tls`]): the listener serves TLS when the local
//! name is `https://`, and a peer is dialed over TLS (`wss://`) when its name is `https://`.
//!
//! Before the other side has authenticated, a socket gets little (see `gate`): a place among
//! [`Config::max_pending_handshakes`], WebSocket limits of one handshake message, and refusal
//! logs at a bounded rate.

mod gate;
mod refusals;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::{Role as WsRole, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::{Authenticator, HmacAuth};
use crate::config::Config;
use crate::conn::session::Session;
use crate::conn::{LinkEvent, LinkEvents};

use crate::conn::{
    run_session, BoxedTransport, ConnState, Connection, ConnectionStats, PeerConn, Ws,
};
use crate::error::{Error, RemoteError};
use crate::frame::{decode_batch, encode_batch, Frame};
use crate::handler::{Context, HandlerSpec, Registered, Registry};
use crate::handshake::{
    random_instance, random_nonce, should_dial, AcceptorHandshake, AcceptorParams, DialerHandshake,
    DialerParams, HandshakeError, InstanceId, PeerInfo, Rejection, HANDSHAKE_LIMITS,
};
use crate::mux::Role;
use crate::stream::{HandlerInput, HandlerOutput};
use crate::tls::{self, TlsConfig};
use gate::{handshake_ws_config, with_limits, Gate, Pending};

/// Where a dial should go: the peer's name and the address to reach it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialTarget {
    /// The peer's name (its identity).
    pub peer: String,
    /// `host:port` to connect to.
    pub address: String,
}

/// A custom dialer: service discovery, a proxy, or a test harness that injects faults.
pub type DialFn =
    Arc<dyn Fn(DialTarget) -> BoxFuture<'static, std::io::Result<BoxedTransport>> + Send + Sync>;

#[derive(Debug)]
enum Listen {
    FromName,
    Addr(String),
    Bound(std::net::TcpListener),
    None,
}

/// Builds a [`Manager`]. See [`Manager::builder`].
pub struct ManagerBuilder {
    local: String,
    peers: Vec<String>,
    auth: Option<Arc<dyn Authenticator>>,
    config: Config,
    listen: Listen,
    addresses: HashMap<String, String>,
    dialer: Option<DialFn>,
    tls: Option<TlsConfig>,
    clock: Option<ClockFn>,
}

impl fmt::Debug for ManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("local", &self.local)
            .field("peers", &self.peers)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl ManagerBuilder {
    /// Adds peers by name (URL-like, e.g. `http://10.0.0.2:9000`). The local name is skipped, so
    /// every node can be given the same full list.
    pub fn peers<I, S>(mut self, peers: I) -> ManagerBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.peers.extend(peers.into_iter().map(Into::into));
        self
    }

    /// Authenticates handshakes with an HMAC over a shared cluster secret (the default scheme).
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> ManagerBuilder {
        self.auth = Some(Arc::new(HmacAuth::new(secret)));
        self
    }

    /// Authenticates handshakes with a custom scheme.
    pub fn authenticator(mut self, auth: Arc<dyn Authenticator>) -> ManagerBuilder {
        self.auth = Some(auth);
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> ManagerBuilder {
        self.config = config;
        self
    }

    /// Binds the embedded listener to `addr` (e.g. `127.0.0.1:0`) instead of the address in the
    /// local name.
    pub fn listen(mut self, addr: impl Into<String>) -> ManagerBuilder {
        self.listen = Listen::Addr(addr.into());
        self
    }

    /// Reads the wall clock from `clock` instead of the system's, for the handshake's clock
    /// check (tests give a node a skewed clock this way; see `Config::max_clock_skew`).
    pub fn clock(mut self, clock: ClockFn) -> ManagerBuilder {
        self.clock = Some(clock);
        self
    }

    /// Serves on a listener the caller already bound (tests bind port 0, read the address for
    /// the node's name, and keep the socket: no port is released and rebound).
    pub fn listener(mut self, listener: std::net::TcpListener) -> ManagerBuilder {
        self.listen = Listen::Bound(listener);
        self
    }

    /// Binds no listener: incoming sockets are handed over with [`Manager::accept`] or
    /// [`Manager::accept_websocket`].
    pub fn no_listener(mut self) -> ManagerBuilder {
        self.listen = Listen::None;
        self
    }

    /// Reaches `peer` at `address` (`host:port`) instead of the address in its name.
    pub fn peer_address(
        mut self,
        peer: impl Into<String>,
        address: impl Into<String>,
    ) -> ManagerBuilder {
        self.addresses.insert(peer.into(), address.into());
        self
    }

    /// Dials peers through `dialer` instead of plain TCP. For a peer with an `https://` name,
    /// TLS still runs on top of the byte stream the dialer returns.
    pub fn dialer(mut self, dialer: DialFn) -> ManagerBuilder {
        self.dialer = Some(dialer);
        self
    }

    /// Sets the TLS configuration, required when the local name or any peer's is `https://`.
    /// The listener serves TLS when the local name is `https://`; peers whose names are
    /// `https://` are dialed over TLS, whatever the local name. See [`crate::tls`].
    pub fn tls(mut self, tls: TlsConfig) -> ManagerBuilder {
        self.tls = Some(tls);
        self
    }

    /// Validates the configuration, binds the listener and starts dialing.
    ///
    /// # Errors
    /// [`Error::Config`] for bad names or settings (an `https://` name without
    /// [`tls`](Self::tls)), [`Error::Io`] when the listener cannot bind.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is started until the listener is bound.
    pub async fn start(self) -> Result<Manager, Error> {
        let auth = self
            .auth
            .ok_or_else(|| Error::Config("no secret or authenticator given".into()))?;
        address_of(&self.local)?;
        if is_tls(&self.local) && self.tls.is_none() {
            return Err(needs_tls(&self.local));
        }
        let gate = Gate::new(&self.config)?;
        let local: Arc<str> = self.local.clone().into();
        let config = Arc::new(self.config);
        let mut peers = HashMap::new();
        let events = tokio::sync::broadcast::channel(crate::conn::events::CAPACITY).0;
        for p in self.peers {
            if p == self.local {
                continue;
            }
            address_of(&p)?;
            if is_tls(&p) {
                if self.tls.is_none() {
                    return Err(needs_tls(&p));
                }
                // Its certificate is checked against the host in its name: refuse a bad one now.
                tls::server_name(&p, &address_of(&p)?)?;
            }
            let pc = Arc::new(PeerConn::new(
                local.clone(),
                p.clone().into(),
                config.clone(),
                events.clone(),
            ));
            peers.insert(p, pc);
        }
        let listener = match self.listen {
            Listen::None => None,
            Listen::FromName => Some(TcpListener::bind(address_of(&self.local)?).await?),
            Listen::Addr(ref a) => Some(TcpListener::bind(a.as_str()).await?),
            Listen::Bound(l) => {
                l.set_nonblocking(true)?;
                Some(TcpListener::from_std(l)?)
            }
        };
        let inner = Arc::new(ManagerInner {
            local,
            config,
            peers,
            registry: Arc::new(Registry::default()),
            auth,
            instance: random_instance()?,
            local_addr: listener.as_ref().and_then(|l| l.local_addr().ok()),
            shutdown: CancellationToken::new(),
            addresses: self.addresses,
            dialer: self.dialer,
            tls: self.tls,
            gate,
            tasks: Mutex::new(Vec::new()),
            events,
            clock: self.clock,
            draining: std::sync::atomic::AtomicBool::new(false),
        });
        let mut tasks = Vec::new();
        if let Some(l) = listener {
            tasks.push(tokio::spawn(accept_loop(inner.clone(), l)));
        }
        for pc in inner.peers.values() {
            if should_dial(&inner.local, &pc.peer) {
                tasks.push(tokio::spawn(dial_loop(inner.clone(), pc.clone())));
            }
        }
        inner.tasks.lock().extend(tasks);
        Ok(Manager { inner })
    }
}

struct ManagerInner {
    local: Arc<str>,
    config: Arc<Config>,
    peers: HashMap<String, Arc<PeerConn>>,
    registry: Arc<Registry>,
    auth: Arc<dyn Authenticator>,
    instance: InstanceId,
    local_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    addresses: HashMap<String, String>,
    dialer: Option<DialFn>,
    tls: Option<TlsConfig>,
    gate: Gate,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Every link's events.
    events: tokio::sync::broadcast::Sender<LinkEvent>,
    clock: Option<ClockFn>,
    /// Set by [`Manager::drain`]: no new sockets are accepted or dialed.
    draining: std::sync::atomic::AtomicBool,
}

impl ManagerInner {
    fn now_ms(&self) -> i64 {
        millis_since_epoch(self.clock.as_ref().map_or_else(SystemTime::now, |c| c()))
    }

    fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// One node's view of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<ManagerInner>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("local", &self.inner.local)
            .field("peers", &self.inner.peers.len())
            .field("local_addr", &self.inner.local_addr)
            .finish()
    }
}

/// Counters of a whole manager: each connection, and their sum.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManagerStats {
    /// Every peer connection.
    pub connections: Vec<ConnectionStats>,
    /// Calls in flight over all connections.
    pub in_flight: crate::conn::InFlight,
    /// Connections currently up.
    pub connected: usize,
    /// Incoming sockets in their handshake right now (at most
    /// [`Config::max_pending_handshakes`]).
    pub pending_handshakes: usize,
    /// Incoming sockets refused at once because `max_pending_handshakes` were in progress.
    pub refused_handshakes: u64,
}

impl Manager {
    /// Starts building a manager for the node named `local` (e.g. `http://10.0.0.1:9000`).
    pub fn builder(local: impl Into<String>) -> ManagerBuilder {
        ManagerBuilder {
            local: local.into(),
            peers: Vec::new(),
            auth: None,
            config: Config::default(),
            listen: Listen::FromName,
            addresses: HashMap::new(),
            dialer: None,
            tls: None,
            clock: None,
        }
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.local
    }

    /// The embedded listener's address, if one is bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Every peer's name.
    pub fn peers(&self) -> impl Iterator<Item = &str> {
        self.inner.peers.keys().map(String::as_str)
    }

    /// A handle to the connection with `peer`.
    ///
    /// # Errors
    /// [`Error::UnknownPeer`] if `peer` is not one of this manager's peers.
    pub fn connection(&self, peer: &str) -> Result<Connection, Error> {
        self.inner
            .peers
            .get(peer)
            .map(|pc| Connection {
                inner: pc.clone(),
                subroute: None,
            })
            .ok_or_else(|| Error::UnknownPeer(peer.to_owned()))
    }

    /// Registers a unary handler.
    ///
    /// # Errors
    /// [`Error::Registration`] on a duplicate or an id collision (naming both handlers).
    pub fn register_unary<F, Fut>(&self, spec: HandlerSpec, handler: F) -> Result<(), Error>
    where
        F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        self.register_unary_at(spec, None, handler)
    }

    /// Registers a unary handler under a subroute (or none).
    ///
    /// # Errors
    /// As [`register_unary`](Self::register_unary), and for an invalid subroute.
    pub fn register_unary_at<F, Fut>(
        &self,
        spec: HandlerSpec,
        subroute: Option<&str>,
        handler: F,
    ) -> Result<(), Error>
    where
        F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        let h: crate::handler::UnaryHandler = Arc::new(move |ctx, b| Box::pin(handler(ctx, b)));
        self.inner
            .registry
            .insert(spec, subroute, Registered::Unary(h))
    }

    /// Registers a stream handler.
    ///
    /// # Errors
    /// As [`register_unary`](Self::register_unary).
    pub fn register_stream<F, Fut>(&self, spec: HandlerSpec, handler: F) -> Result<(), Error>
    where
        F: Fn(Context, Bytes, Option<HandlerInput>, HandlerOutput) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.register_stream_at(spec, None, handler)
    }

    /// Registers a stream handler under a subroute (or none).
    ///
    /// # Errors
    /// As [`register_unary`](Self::register_unary).
    pub fn register_stream_at<F, Fut>(
        &self,
        spec: HandlerSpec,
        subroute: Option<&str>,
        handler: F,
    ) -> Result<(), Error>
    where
        F: Fn(Context, Bytes, Option<HandlerInput>, HandlerOutput) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        let h: crate::handler::StreamHandler =
            Arc::new(move |ctx, b, i, o| Box::pin(handler(ctx, b, i, o)));
        self.inner
            .registry
            .insert(spec, subroute, Registered::Stream(h))
    }

    /// Serves an already-accepted byte stream (a TCP stream from your own listener): performs the
    /// WebSocket upgrade and the handshake, then runs the connection until it ends. When the
    /// local name is `https://`, the TLS handshake comes first (hand over the raw socket).
    ///
    /// The socket counts among [`Config::max_pending_handshakes`] until its handshake ends.
    ///
    /// # Errors
    /// [`Error::TooManyHandshakes`] at once (the socket is dropped untouched) when the cap is
    /// reached; otherwise the upgrade or handshake failure. The connection's later end is not an
    /// error.
    ///
    /// # Cancel safety
    /// Dropping the future drops the connection.
    pub async fn accept(&self, io: BoxedTransport) -> Result<(), Error> {
        let pending = self.inner.gate.enter()?;
        serve_socket(self.inner.clone(), io, pending).await
    }

    /// Serves a WebSocket that another server (hyper, axum) already upgraded on this manager's
    /// route. Runs the handshake, then the connection until it ends. TLS, if any, is that
    /// server's business.
    ///
    /// The socket's WebSocket limits are replaced: handshake-sized until the peer has
    /// authenticated, the configured ones after. Hand it over right after the upgrade, before
    /// anything was read from it (bytes the old wrapper read ahead would be lost).
    ///
    /// # Errors
    /// [`Error::TooManyHandshakes`] at once when [`Config::max_pending_handshakes`] are in
    /// progress; otherwise the handshake failure.
    ///
    /// # Cancel safety
    /// Dropping the future drops the connection.
    pub async fn accept_websocket(&self, ws: Ws) -> Result<(), Error> {
        let pending = self.inner.gate.enter()?;
        let ws = with_limits(ws, WsRole::Server, handshake_ws_config()).await;
        serve_upgraded(self.inner.clone(), ws, pending).await
    }

    /// Takes a place among the pending handshakes for a socket another server is about to hand
    /// over (see [`crate::embed`]).
    #[cfg(feature = "hyper")]
    pub(crate) fn enter_handshake(&self) -> Result<Pending, Error> {
        self.inner.gate.enter()
    }

    /// Serves a socket another server upgraded, holding the place taken with
    /// [`enter_handshake`](Self::enter_handshake): handshake-sized limits until the peer has
    /// authenticated, then the connection until it ends.
    #[cfg(feature = "hyper")]
    pub(crate) async fn serve_raw_upgraded(
        &self,
        io: BoxedTransport,
        pending: Pending,
    ) -> Result<(), Error> {
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            io,
            WsRole::Server,
            Some(handshake_ws_config()),
        )
        .await;
        serve_upgraded(self.inner.clone(), ws, pending).await
    }

    /// Logs a refused incoming socket, rate-limited per address.
    #[cfg(feature = "hyper")]
    pub(crate) fn log_refusal(&self, from: Option<SocketAddr>, error: &Error) {
        self.inner.gate.log_refusal(&self.inner.local, from, error);
    }

    /// Counters of every connection.
    pub fn stats(&self) -> ManagerStats {
        let mut connections: Vec<ConnectionStats> = self
            .inner
            .peers
            .values()
            .map(|pc| {
                Connection {
                    inner: pc.clone(),
                    subroute: None,
                }
                .stats()
            })
            .collect();
        connections.sort_by(|a, b| a.peer.cmp(&b.peer));
        let mut in_flight = crate::conn::InFlight::default();
        for c in &connections {
            in_flight.unary_out += c.in_flight.unary_out;
            in_flight.streams_out += c.in_flight.streams_out;
            in_flight.unary_in += c.in_flight.unary_in;
            in_flight.streams_in += c.in_flight.streams_in;
        }
        let connected = connections
            .iter()
            .filter(|c| c.state == ConnState::Connected)
            .count();
        ManagerStats {
            connections,
            in_flight,
            connected,
            pending_handshakes: self.inner.gate.pending(),
            refused_handshakes: self.inner.gate.refused(),
        }
    }

    /// Waits until every peer is connected, at most `timeout`.
    ///
    /// # Errors
    /// [`Error::NotConnected`] naming the first peer still down when time runs out.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_for_peers(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        for peer in self.inner.peers.keys() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.connection(peer)?.wait_for_connect(left).await?;
        }
        Ok(())
    }

    /// Watches every link's changes (connected with the peer's instance, restarted, going away,
    /// disconnected with its reason), one channel for all peers.
    pub fn events(&self) -> LinkEvents {
        crate::conn::events::manager_events(&self.inner.events)
    }

    /// Leaves the cluster gracefully, then shuts down: every peer is told at once (a go-away)
    /// and fails its new calls to this node fast with [`Error::GoingAway`], so it can retry
    /// elsewhere; calls and streams in flight, both ways, may finish within `within`; this node's
    /// own calls keep working meanwhile; no new socket is accepted or dialed. Then every link is
    /// closed as in [`shutdown`](Self::shutdown): a call or stream still in flight at the bound
    /// ends with `GoingAway` on the peer (never as a clean end) and its handler here sees
    /// [`CancelCause::ShuttingDown`](crate::mux::CancelCause::ShuttingDown).
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped midway, the node keeps refusing new calls but stays up; call
    /// [`shutdown`](Self::shutdown) to finish.
    pub async fn drain(&self, within: Duration) {
        self.inner
            .draining
            .store(true, std::sync::atomic::Ordering::Release);
        let sessions: Vec<Arc<Session>> = self
            .inner
            .peers
            .values()
            .filter_map(|pc| pc.session())
            .collect();
        for s in &sessions {
            s.drain();
        }
        let all = futures::future::join_all(sessions.iter().map(|s| s.drained()));
        let _ = tokio::time::timeout(within, all).await;
        self.shutdown().await;
    }

    /// Stops the manager: tells every peer it is going away, fails every call in flight, cancels
    /// every handler with [`CancelCause::ShuttingDown`](crate::mux::CancelCause::ShuttingDown) and
    /// stops listening and dialing.
    ///
    /// # Cancel safety
    /// Cancel safe; shutdown has begun once the future is first polled.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        for pc in self.inner.peers.values() {
            let session = pc.current.read().clone();
            if let Some(s) = session {
                // Handlers here see `ShuttingDown`; the peer learns it from the go-away, which
                // the writer sends last. Waiting for it is bounded so shutdown never hangs.
                s.shut_down();
                let _ = tokio::time::timeout(Duration::from_millis(200), s.writer_done()).await;
            }
            pc.state.send_replace(ConnState::Shutdown);
        }
        let tasks = std::mem::take(&mut *self.inner.tasks.lock());
        for t in tasks {
            t.abort();
        }
    }
}

/// `host:port` from a name like `http://host:port` or `https://host:port`.
fn address_of(name: &str) -> Result<String, Error> {
    let Some(rest) = name
        .strip_prefix("http://")
        .or_else(|| name.strip_prefix("https://"))
    else {
        return Err(Error::Config(format!(
            "{name}: a node name must look like http://host:port or https://host:port"
        )));
    };
    let host_port = rest.split('/').next().unwrap_or_default();
    if host_port.is_empty() || !host_port.contains(':') {
        return Err(Error::Config(format!(
            "{name}: a node name must include host and port"
        )));
    }
    Ok(host_port.to_owned())
}

/// True for an `https://` name: its node accepts TLS only.
fn is_tls(name: &str) -> bool {
    name.starts_with("https://")
}

fn needs_tls(name: &str) -> Error {
    Error::Config(format!(
        "{name}: https:// names need .tls(...) on the ManagerBuilder"
    ))
}

fn tls_failed(what: &str, e: &std::io::Error) -> Error {
    Error::Io(std::io::Error::new(e.kind(), format!("TLS {what}: {e}")))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The wall clock the handshake reads (see [`ManagerBuilder::clock`]).
pub type ClockFn = Arc<dyn Fn() -> SystemTime + Send + Sync>;

fn millis_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn ws_config(config: &Config) -> WebSocketConfig {
    let limits = config.limits();
    // tungstenite's default 128 KiB read buffer is zero-filled on the first read, so it is
    // resident for every idle connection; 32 KiB (MinIO's size) keeps an idle link cheap and
    // still takes a whole batch of small frames per read.
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_batch))
        .max_frame_size(Some(limits.max_batch))
        .read_buffer_size(32 << 10)
}

/// Whether this side asks for frame checksums on a link; `tls_link` is true when the accepting
/// node's name is `https://` (TLS already protects integrity).
fn wants_checksum(config: &Config, tls_link: bool) -> bool {
    config.checksum.unwrap_or(!tls_link)
}

async fn send_handshake(ws: &mut Ws, frame: &Frame) -> Result<(), Error> {
    ws.send(Message::Binary(encode_batch(
        std::slice::from_ref(frame),
        false,
    )))
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e)))
}

async fn recv_handshake(ws: &mut Ws) -> Result<Frame, Error> {
    loop {
        let msg = ws
            .next()
            .await
            .ok_or_else(|| Error::Io(std::io::ErrorKind::UnexpectedEof.into()))?
            .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        match msg {
            Message::Binary(b) => {
                let mut frames = decode_batch(b, &HANDSHAKE_LIMITS)
                    .map_err(|e| Error::Protocol(format!("handshake: {e}")))?;
                if frames.len() != 1 {
                    return Err(Error::Protocol(format!(
                        "handshake: {} frames in one message",
                        frames.len()
                    )));
                }
                return frames
                    .pop()
                    .ok_or_else(|| Error::Protocol("handshake: empty message".into()));
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Text(_) | Message::Close(_) => {
                return Err(Error::Protocol("handshake: socket closed".into()))
            }
        }
    }
}

async fn reject(ws: &mut Ws, rejection: Rejection) -> Error {
    if let Some(frame) = rejection.frame {
        let _ = send_handshake(ws, &frame).await;
        let _ = ws.close(None).await;
    }
    Error::Handshake(rejection.error)
}

async fn accept_loop(inner: Arc<ManagerInner>, listener: TcpListener) {
    loop {
        let (tcp, from) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(local = %inner.local, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = inner.shutdown.cancelled() => return,
        };
        // Refused before any TLS or WebSocket work: the socket is just closed.
        let pending = match inner.gate.enter() {
            Ok(p) => p,
            Err(e) => {
                drop(tcp);
                inner.gate.log_refusal(&inner.local, Some(from), &e);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let inner = inner.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_socket(inner.clone(), Box::new(tcp), pending).await {
                inner.gate.log_refusal(&inner.local, Some(from), &e);
            }
        });
    }
}

async fn serve_socket(
    inner: Arc<ManagerInner>,
    io: BoxedTransport,
    pending: Pending,
) -> Result<(), Error> {
    let route = inner.config.route.clone();
    // The callback's signature is tungstenite's; its large error type is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let check_path = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() == route {
            Ok(resp)
        } else {
            let mut err =
                ErrorResponse::new(Some(format!("no grid route at {}", req.uri().path())));
            *err.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
            Err(err)
        }
    };
    let tls = match &inner.tls {
        Some(t) if is_tls(&inner.local) => Some(t.acceptor()),
        _ => None,
    };
    let upgrade = async {
        let io = match tls {
            Some(acceptor) => Box::new(
                acceptor
                    .accept(io)
                    .await
                    .map_err(|e| tls_failed("accept failed", &e))?,
            ) as BoxedTransport,
            None => io,
        };
        tokio_tungstenite::accept_hdr_async_with_config(io, check_path, Some(handshake_ws_config()))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))
    };
    // One deadline for the TLS handshake and the upgrade: a peer that connects and stalls in
    // either costs a task for at most this long.
    let ws = tokio::time::timeout(inner.config.handshake_timeout, upgrade)
        .await
        .map_err(|_| Error::Io(std::io::ErrorKind::TimedOut.into()))??;
    serve_upgraded(inner, ws, pending).await
}

/// Runs the acceptor's handshake on `ws` (which has handshake-sized limits), then the connection.
/// `pending` is the socket's place among the pending handshakes, given back when the handshake
/// ends.
async fn serve_upgraded(inner: Arc<ManagerInner>, ws: Ws, pending: Pending) -> Result<(), Error> {
    let handshake =
        tokio::time::timeout(inner.config.handshake_timeout, accept_handshake(&inner, ws)).await;
    drop(pending);
    let (ws, info) = match handshake {
        Ok(r) => r?,
        Err(_) => {
            return Err(Error::Handshake(HandshakeError::Timeout {
                peer: String::new(),
                after_ms: millis(inner.config.handshake_timeout),
            }))
        }
    };
    let Some(pc) = inner.peers.get(&info.name).cloned() else {
        return Err(Error::UnknownPeer(info.name));
    };
    if inner.shutdown.is_cancelled() || inner.is_draining() {
        return Err(Error::Shutdown);
    }
    info!(local = %inner.local, peer = %pc.peer, "accepted connection");
    let session = Session::new(
        pc.peer.clone(),
        Role::Acceptor,
        info.checksum,
        inner.config.clone(),
        pc.stats.clone(),
        pc.events.clone(),
        info.max_payload,
    );
    if !pc.install(session.clone(), info.instance) {
        return Err(Error::Shutdown);
    }
    run_session(session.clone(), ws, inner.registry.clone()).await;
    pc.uninstall(&session);
    debug!(local = %inner.local, peer = %pc.peer, reason = ?session.close_reason(), "connection ended");
    Ok(())
}

/// The acceptor's handshake. `ws` arrives with handshake-sized limits; it is returned with the
/// configured ones once the dialer has proved itself.
async fn accept_handshake(inner: &ManagerInner, mut ws: Ws) -> Result<(Ws, PeerInfo), Error> {
    let hs = AcceptorHandshake::new(AcceptorParams {
        local: inner.local.to_string(),
        instance: inner.instance,
        nonce: random_nonce()?,
        checksum: wants_checksum(&inner.config, is_tls(&inner.local)),
        max_payload: inner.config.max_payload as u64,
        max_skew_ms: i64::try_from(inner.config.max_clock_skew.as_millis()).unwrap_or(i64::MAX),
    });
    let hello = recv_handshake(&mut ws).await?;
    let known = |name: &str| inner.peers.contains_key(name);
    let (welcome, next) = match hs.on_hello(hello, inner.now_ms(), &known, inner.auth.as_ref()) {
        Ok(ok) => ok,
        Err(rej) => return Err(reject(&mut ws, rej).await),
    };
    send_handshake(&mut ws, &welcome).await?;
    let confirm = recv_handshake(&mut ws).await?;
    let (ready, info) = match next.on_confirm(confirm, inner.auth.as_ref()) {
        Ok(ok) => ok,
        Err(rej) => return Err(reject(&mut ws, rej).await),
    };
    // The dialer has proved itself and waits for `Ready`: the configured limits from here on.
    let mut ws = with_limits(ws, WsRole::Server, ws_config(&inner.config)).await;
    send_handshake(&mut ws, &ready).await?;
    Ok((ws, info))
}

async fn dial_loop(inner: Arc<ManagerInner>, pc: Arc<PeerConn>) {
    let cfg = inner.config.clone();
    let mut backoff = cfg.reconnect_min;
    let mut last_error = String::new();
    loop {
        if inner.shutdown.is_cancelled() || inner.is_draining() {
            return;
        }
        match dial_once(&inner, &pc).await {
            Ok((session, ws, instance)) => {
                backoff = cfg.reconnect_min;
                last_error.clear();
                info!(local = %inner.local, peer = %pc.peer, "connected");
                if !pc.install(session.clone(), instance) {
                    return;
                }
                // Not raced against shutdown: `Manager::shutdown` finds the installed session,
                // sends its go-away and closes it, which ends `run_session`. (Racing here used
                // to uninstall the session first, so shutdown never closed it and its socket
                // lived on, kept alive by its own pings.)
                run_session(session.clone(), ws, inner.registry.clone()).await;
                pc.uninstall(&session);
                info!(local = %inner.local, peer = %pc.peer, reason = ?session.close_reason(), "disconnected");
            }
            Err(e) => {
                pc.record_dial_failure(&e);
                // Log each distinct failure once, not every retry.
                let msg = e.to_string();
                if msg != last_error {
                    warn!(local = %inner.local, peer = %pc.peer, "cannot connect: {msg}");
                    last_error = msg;
                }
            }
        }
        let jittered = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
        tokio::select! {
            () = tokio::time::sleep(jittered) => {}
            () = inner.shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(cfg.reconnect_max);
    }
}

async fn dial_once(
    inner: &ManagerInner,
    pc: &PeerConn,
) -> Result<(Arc<Session>, Ws, InstanceId), Error> {
    let cfg = &inner.config;
    let address = match inner.addresses.get(pc.peer.as_ref()) {
        Some(a) => a.clone(),
        None => address_of(&pc.peer)?,
    };
    // TLS when the peer's name says https://; its certificate must be valid for the host in that
    // name, wherever `address` points.
    let tls = if is_tls(&pc.peer) {
        let tls = inner.tls.as_ref().ok_or_else(|| needs_tls(&pc.peer))?;
        Some((
            tls.connector(),
            tls::server_name(&pc.peer, &address_of(&pc.peer)?)?,
        ))
    } else {
        None
    };
    let target = DialTarget {
        peer: pc.peer.to_string(),
        address: address.clone(),
    };
    let connect = async {
        let io = match &inner.dialer {
            Some(d) => d(target).await?,
            None => {
                let tcp = TcpStream::connect(address.as_str()).await?;
                tcp.set_nodelay(true)?;
                Box::new(tcp) as BoxedTransport
            }
        };
        match tls {
            Some((connector, name)) => {
                let io = connector
                    .connect(name, io)
                    .await
                    .map_err(|e| tls_failed("handshake failed", &e))?;
                Ok::<_, Error>(Box::new(io) as BoxedTransport)
            }
            None => Ok(io),
        }
    };
    let io = tokio::time::timeout(cfg.dial_timeout, connect)
        .await
        .map_err(|_| Error::Io(std::io::ErrorKind::TimedOut.into()))??;
    let scheme = if is_tls(&pc.peer) { "wss" } else { "ws" };
    let url = format!("{scheme}://{address}{}", cfg.route);
    let handshake = async {
        // Handshake-sized limits until the acceptor has proved itself in its `Welcome`.
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            url.as_str(),
            io,
            Some(handshake_ws_config()),
        )
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        dial_handshake(inner, &pc.peer, ws).await
    };
    let (ws, info) = tokio::time::timeout(cfg.handshake_timeout, handshake)
        .await
        .map_err(|_| {
            Error::Handshake(HandshakeError::Timeout {
                peer: pc.peer.to_string(),
                after_ms: millis(cfg.handshake_timeout),
            })
        })??;
    let session = Session::new(
        pc.peer.clone(),
        Role::Dialer,
        info.checksum,
        cfg.clone(),
        pc.stats.clone(),
        pc.events.clone(),
        info.max_payload,
    );
    Ok((session, ws, info.instance))
}

/// The dialer's handshake. `ws` arrives with handshake-sized limits; it is returned with the
/// configured ones (set once the acceptor has proved itself).
async fn dial_handshake(
    inner: &ManagerInner,
    peer: &str,
    mut ws: Ws,
) -> Result<(Ws, PeerInfo), Error> {
    let (hs, hello) = DialerHandshake::start(DialerParams {
        local: inner.local.to_string(),
        remote: peer.to_owned(),
        instance: inner.instance,
        nonce: random_nonce()?,
        now_ms: inner.now_ms(),
        checksum: wants_checksum(&inner.config, is_tls(peer)),
        max_payload: inner.config.max_payload as u64,
        max_skew_ms: i64::try_from(inner.config.max_clock_skew.as_millis()).unwrap_or(i64::MAX),
    });
    send_handshake(&mut ws, &hello).await?;
    let welcome = recv_handshake(&mut ws).await?;
    let (confirm, next) = match hs.on_welcome(welcome, inner.now_ms(), inner.auth.as_ref()) {
        Ok(ok) => ok,
        Err(rej) => return Err(reject(&mut ws, rej).await),
    };
    // The acceptor has proved itself and waits for `Confirm`: the configured limits from here on.
    let mut ws = with_limits(ws, WsRole::Client, ws_config(&inner.config)).await;
    send_handshake(&mut ws, &confirm).await?;
    let ready = recv_handshake(&mut ws).await?;
    let info = next
        .on_ready(ready)
        .map_err(|r| Error::Handshake(r.error))?;
    Ok((ws, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_addresses() {
        assert_eq!(
            address_of("http://10.0.0.1:9000").ok().as_deref(),
            Some("10.0.0.1:9000")
        );
        assert_eq!(
            address_of("http://node1:9000/").ok().as_deref(),
            Some("node1:9000")
        );
        assert!(matches!(address_of("10.0.0.1:9000"), Err(Error::Config(_))));
        assert!(matches!(address_of("http://node1"), Err(Error::Config(_))));
        assert_eq!(
            address_of("https://node1:1").ok().as_deref(),
            Some("node1:1")
        );
        assert!(matches!(address_of("https://node1"), Err(Error::Config(_))));
        assert!(matches!(address_of("ftp://node1:1"), Err(Error::Config(_))));
    }

    #[test]
    fn checksums_follow_the_link() {
        let mut config = Config::default();
        assert!(wants_checksum(&config, false));
        assert!(!wants_checksum(&config, true));
        config.checksum = Some(true);
        assert!(wants_checksum(&config, true));
        config.checksum = Some(false);
        assert!(!wants_checksum(&config, false));
    }

    #[tokio::test]
    async fn https_names_need_tls() {
        let err = Manager::builder("https://127.0.0.1:1")
            .secret("s")
            .no_listener()
            .start()
            .await
            .err();
        assert!(
            matches!(&err, Some(Error::Config(m)) if m.contains(".tls(")),
            "{err:?}"
        );
        let err = Manager::builder("http://127.0.0.1:1")
            .peers(["https://127.0.0.1:2"])
            .secret("s")
            .no_listener()
            .start()
            .await
            .err();
        assert!(
            matches!(&err, Some(Error::Config(m)) if m.contains(".tls(")),
            "{err:?}"
        );
    }
}
