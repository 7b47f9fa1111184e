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

mod accept;
mod builder;
mod dial;
mod gate;
mod refusals;
mod wire;

use accept::{accept_loop, serve_socket, serve_upgraded};
use builder::Listen;
pub use builder::ManagerBuilder;
use dial::dial_loop;
pub(crate) use wire::ws_config;
pub use wire::ClockFn;
use wire::*;

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
use crate::conn::session::{PeerLimits, Session};
use crate::conn::{LinkEvent, LinkEvents};

use crate::conn::{
    run_session, BoxedTransport, ConnState, Connection, ConnectionStats, PeerConn, Ws,
};
use crate::error::{Error, RemoteError};
use crate::frame::{decode_batch, encode_batch, Frame};
use crate::handler::{Context, HandlerSpec, Registered, Registry};
use crate::handshake::{
    random_instance, random_nonce, should_dial, AcceptorHandshake, AcceptorParams, DialerHandshake,
    DialerParams, Features, HandshakeError, InstanceId, PeerInfo, Rejection, HANDSHAKE_LIMITS,
};
use crate::layer::ServerLayer;
use crate::mux::Role;
use crate::stream::{RequestReceiver, ResponseSender};
use crate::table::{self, LocalTable};
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
struct ManagerInner {
    local: Arc<str>,
    config: Arc<Config>,
    /// Every peer, by name; changed by [`Manager::add_peer`] and [`Manager::remove_peer`].
    peers: parking_lot::RwLock<HashMap<String, Arc<PeerConn>>>,
    /// The dial loop of each peer this node dials.
    dialers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// False until [`Manager::set_ready`] when started with
    /// [`ManagerBuilder::start_not_ready`].
    ready: tokio::sync::watch::Sender<bool>,
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
    fn peer(&self, name: &str) -> Option<Arc<PeerConn>> {
        self.peers.read().get(name).cloned()
    }

    fn peer_list(&self) -> Vec<Arc<PeerConn>> {
        self.peers.read().values().cloned().collect()
    }

    fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Starts the dial loop of `pc` if this node is the one to dial it.
    fn start_dialing(self: &Arc<Self>, pc: &Arc<PeerConn>) {
        if should_dial(&self.local, &pc.peer) {
            let task = tokio::spawn(dial_loop(self.clone(), pc.clone()));
            if let Some(old) = self.dialers.lock().insert(pc.peer.to_string(), task) {
                old.abort();
            }
        }
    }

    fn now_ms(&self) -> i64 {
        millis_since_epoch(self.clock.as_ref().map_or_else(SystemTime::now, |c| c()))
    }

    fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The part of this node's handler table that goes in a handshake record, and how many
    /// registrations it covers; the rest follows in `Handlers` frames once the session is up.
    fn handshake_table(&self) -> (Bytes, usize) {
        let entries = self.registry.entries_since(0);
        // Registration is over only once the node is ready. An acceptor that takes its snapshot
        // before (and then turns ready before refusing the handshake) announces it incomplete.
        let complete = self.registry.is_complete() && self.is_ready();
        table::encode_prefix(&entries, complete, table::MAX_HANDSHAKE_TABLE_LEN)
    }

    /// Tells every live session's peer about registrations it has not heard of.
    fn announce_handlers(&self) {
        for pc in self.peer_list() {
            if let Some(s) = pc.session() {
                s.announce(&*self.registry);
            }
        }
    }
}

/// One node's view of the cluster. Cheap to clone.
///
/// A manager keeps one WebSocket to each peer (one side of each pair dials, by
/// [`dialer_of`](crate::dialer_of); the other accepts), reconnects it when it drops, serves the
/// handlers registered on it and hands out [`Connection`]s to call the peers' handlers.
///
/// # Example
///
/// Two nodes in one process, on loopback ports the system picks: each listener is bound first
/// so that each node's name is its real address.
///
/// ```
/// # use grid_core as grid;
/// use std::net::TcpListener;
/// use std::time::Duration;
///
/// use grid::{Bytes, HandlerSpec, Manager, RemoteError};
///
/// const ECHO: HandlerSpec = HandlerSpec::named("Docs.echo");
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let listeners = [TcpListener::bind("127.0.0.1:0")?, TcpListener::bind("127.0.0.1:0")?];
/// let names = [
///     format!("http://{}", listeners[0].local_addr()?),
///     format!("http://{}", listeners[1].local_addr()?),
/// ];
/// let mut nodes = Vec::new();
/// for (name, listener) in names.iter().zip(listeners) {
///     let node = Manager::builder(name.as_str())
///         .peers(names.iter().cloned()) // every node gets the full list; its own name is skipped
///         .secret("shared cluster secret")
///         .listener(listener)
///         .start()
///         .await?;
///     node.register_unary(ECHO, |_ctx, payload| async move { Ok::<_, RemoteError>(payload) })?;
///     nodes.push(node);
/// }
///
/// let to_b = nodes[0].connection(&names[1])?;
/// to_b.wait_for_connect(Duration::from_secs(10)).await?;
/// let reply = to_b.request(ECHO.id, Bytes::from_static(b"ping")).await?;
/// assert_eq!(&reply[..], b"ping");
/// assert_eq!(nodes[0].stats().connected, 1);
///
/// for node in &nodes {
///     node.shutdown().await;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Manager {
    inner: Arc<ManagerInner>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("local", &self.inner.local)
            .field("peers", &self.inner.peers.read().len())
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
            ready: true,
            layer: None,
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

    /// Every peer's name, sorted.
    pub fn peers(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.peers.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// Adds a member while running: the node starts dialing it (or accepting it, by the dial
    /// rule) and hands out [`Connection`]s to it.
    ///
    /// # Errors
    /// [`Error::Config`] if `peer` is this node or already a member, or its name has no address
    /// (or needs TLS that is not set up); [`Error::Shutdown`] once shut down.
    pub fn add_peer(&self, peer: impl Into<String>) -> Result<(), Error> {
        let peer = peer.into();
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::Shutdown);
        }
        if peer == *self.inner.local {
            return Err(Error::Config(format!("{peer} is this node's own name")));
        }
        check_peer_name(&peer, self.inner.tls.as_ref())?;
        let pc = {
            let mut peers = self.inner.peers.write();
            if peers.contains_key(&peer) {
                return Err(Error::Config(format!("{peer} is already a member")));
            }
            let pc = Arc::new(PeerConn::new(
                self.inner.local.clone(),
                peer.clone().into(),
                self.inner.config.clone(),
                self.inner.events.clone(),
            ));
            peers.insert(peer, pc.clone());
            pc
        };
        if self.inner.is_ready() {
            self.inner.start_dialing(&pc);
        }
        Ok(())
    }

    /// Removes a member while running: no new call to it can start (handles fail with
    /// [`Error::UnknownPeer`], the peer's sockets are refused), its link is drained — calls in
    /// flight, both ways, may finish within `within` — then closed.
    ///
    /// # Errors
    /// [`Error::UnknownPeer`] if `peer` is not a member.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped midway, the peer is removed but its link may stay open until it
    /// drops or the manager shuts down.
    pub async fn remove_peer(&self, peer: &str, within: Duration) -> Result<(), Error> {
        let pc = self
            .inner
            .peers
            .write()
            .remove(peer)
            .ok_or_else(|| Error::UnknownPeer(peer.to_owned()))?;
        if let Some(dialer) = self.inner.dialers.lock().remove(peer) {
            dialer.abort();
        }
        pc.state.send_replace(ConnState::Removed);
        let live = pc.current.read().clone();
        if let Some(s) = live {
            s.drain();
            let _ = tokio::time::timeout(within, s.drained()).await;
            s.close(crate::conn::CloseReason::local(
                crate::conn::CloseKind::Removed,
            ));
        }
        Ok(())
    }

    /// Opens a node started with [`ManagerBuilder::start_not_ready`]: it accepts peers and
    /// dials from now on. Call it once every handler is registered. Idempotent.
    pub fn set_ready(&self) {
        if self.inner.ready.send_replace(true) {
            return;
        }
        for pc in self.inner.peer_list() {
            self.inner.start_dialing(&pc);
        }
    }

    /// True once the node accepts and dials peers.
    pub fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    /// A handle to the connection with `peer`.
    ///
    /// # Errors
    /// [`Error::UnknownPeer`] if `peer` is not one of this manager's peers.
    pub fn connection(&self, peer: &str) -> Result<Connection, Error> {
        self.inner
            .peer(peer)
            .map(|pc| Connection {
                inner: pc.clone(),
                subroute: None,
                layer: None,
            })
            .ok_or_else(|| Error::UnknownPeer(peer.to_owned()))
    }

    /// Registers a unary handler. Peers connected now learn of it from a `Handlers` update;
    /// until that arrives, a peer whose table of this node is complete (this node was started
    /// not ready) fails its calls to it at once, so register before [`set_ready`](Self::set_ready)
    /// what peers may call right away.
    ///
    /// # Errors
    /// [`Error::Registration`] on a duplicate or an id collision (naming both handlers), or past
    /// the handler table's bounds (16 384 routes and 1 MiB per
    /// peer, `PROTOCOL.md` section 9).
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
        self.register_unary_with(spec, subroute, None, handler)
    }

    /// Registers a unary handler under a subroute (or none) behind `layer` (inside the node's
    /// layers, if it has any; see [`crate::layer`]).
    ///
    /// # Errors
    /// As [`register_unary_at`](Self::register_unary_at).
    pub fn register_unary_with<F, Fut>(
        &self,
        spec: HandlerSpec,
        subroute: Option<&str>,
        layer: Option<&ServerLayer>,
        handler: F,
    ) -> Result<(), Error>
    where
        F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RemoteError>> + Send + 'static,
    {
        let h: crate::handler::UnaryHandler = Arc::new(move |ctx, b| Box::pin(handler(ctx, b)));
        self.register_with(spec, subroute, layer, Registered::Unary(h))
    }

    /// What a unary and a stream registration share once the handler is boxed: its own layer,
    /// if any; the table insert (which checks the subroute and refuses duplicates, collisions and
    /// registrations past the bounds); the `Handlers` update to connected peers.
    fn register_with(
        &self,
        spec: HandlerSpec,
        subroute: Option<&str>,
        layer: Option<&ServerLayer>,
        handler: Registered,
    ) -> Result<(), Error> {
        let handler = match layer {
            Some(l) => l.apply(handler),
            None => handler,
        };
        self.inner.registry.insert(spec, subroute, handler)?;
        self.inner.announce_handlers();
        Ok(())
    }

    /// Registers a stream handler.
    ///
    /// # Errors
    /// As [`register_unary`](Self::register_unary).
    pub fn register_stream<F, Fut>(&self, spec: HandlerSpec, handler: F) -> Result<(), Error>
    where
        F: Fn(Context, Bytes, Option<RequestReceiver>, ResponseSender) -> Fut
            + Send
            + Sync
            + 'static,
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
        F: Fn(Context, Bytes, Option<RequestReceiver>, ResponseSender) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        self.register_stream_with(spec, subroute, None, handler)
    }

    /// Registers a stream handler under a subroute (or none) behind `layer` (inside the node's
    /// layers, if it has any; see [`crate::layer`]).
    ///
    /// # Errors
    /// As [`register_unary_at`](Self::register_unary_at).
    pub fn register_stream_with<F, Fut>(
        &self,
        spec: HandlerSpec,
        subroute: Option<&str>,
        layer: Option<&ServerLayer>,
        handler: F,
    ) -> Result<(), Error>
    where
        F: Fn(Context, Bytes, Option<RequestReceiver>, ResponseSender) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = Result<(), RemoteError>> + Send + 'static,
    {
        let h: crate::handler::StreamHandler =
            Arc::new(move |ctx, b, i, o| Box::pin(handler(ctx, b, i, o)));
        self.register_with(spec, subroute, layer, Registered::Stream(h))
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
    /// server's business. The socket is a tokio-tungstenite [`WebSocketStream`](crate::WebSocketStream)
    /// (re-exported by this crate) over any [`Transport`](crate::Transport).
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
    pub async fn accept_websocket(
        &self,
        ws: tokio_tungstenite::WebSocketStream<BoxedTransport>,
    ) -> Result<(), Error> {
        let pending = self.inner.gate.enter()?;
        let ws = with_limits(ws, WsRole::Server, handshake_ws_config()).await;
        serve_upgraded(self.inner.clone(), ws, None, pending).await
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
        serve_upgraded(self.inner.clone(), ws, None, pending).await
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
            .peer_list()
            .into_iter()
            .map(|pc| {
                Connection {
                    inner: pc.clone(),
                    subroute: None,
                    layer: None,
                }
                .stats()
            })
            .collect();
        connections.sort_by(|a, b| a.peer.cmp(&b.peer));
        let mut in_flight = crate::conn::InFlight::default();
        for c in &connections {
            in_flight += c.in_flight;
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
        for peer in self.peers() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.connection(&peer)?.wait_for_connect(left).await?;
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
            .peer_list()
            .iter()
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
        for pc in self.inner.peer_list() {
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
        let dialers = std::mem::take(&mut *self.inner.dialers.lock());
        for t in tasks.into_iter().chain(dialers.into_values()) {
            t.abort();
        }
    }
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
