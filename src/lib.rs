//! grid: typed, multiplexed, two-way RPC between the servers of one cluster, over one WebSocket per
//! pair of nodes.
//!
//! This is the facade crate: the only crate users name. It re-exports the runtime (`grid-core`),
//! the typed layer and the [`handler`](macro@handler) macro. The [`guide`] explains streams,
//! deadlines, subroutes, TLS, embedding in axum and evolving a service; [`Manager`] has the
//! smallest complete program.
//!
//! # Stream ends
//!
//! A stream has four ends, named by what they carry and which way: *requests* go from the caller
//! to the handler, *responses* from the handler to the caller. The typed ends (items of a serde
//! type) are at the crate root; the untyped ends (`Bytes` messages, from
//! [`Connection::open_stream`]) have the same names in [`raw`].
//!
//! | end | held by | typed | untyped |
//! |---|---|---|---|
//! | sends requests | caller | [`RequestSender<T>`] | [`raw::RequestSender`] |
//! | receives responses | caller | [`ResponseReceiver<T, E>`] | [`raw::ResponseReceiver`] |
//! | receives requests | handler | [`RequestReceiver<T>`] | [`raw::RequestReceiver`] |
//! | sends responses | handler | [`ResponseSender<T>`] | [`raw::ResponseSender`] |
//!
//! Cargo features: `tls` (on by default) runs `https://` names over rustls ([`TlsConfig`]);
//! without it no TLS stack is built and `https://` names are refused. `hyper` serves grid's
//! route from an existing hyper 1 / axum 0.8 server (`grid::embed`). `unstable-internals` makes
//! the protocol layers public (`frame`, `mux`, `handshake`, `table`) for fuzzing, protocol tests
//! and wire tools: no part of the API, they change without notice.
//!
//! Types of other crates in the API are re-exported: [`Bytes`] (payloads), [`WebSocketStream`]
//! ([`Manager::accept_websocket`]), [`rustls`] with `tls` ([`TlsConfig::new`]), and in `embed`
//! the `http` types of hyper and axum.

#![deny(rustdoc::broken_intra_doc_links)]

pub use grid_core::{
    dialer_of, Authenticator, BoxedTransport, Bytes, CallOptions, CancelCause, ClientStream,
    ClockFn, CloseKind, CloseReason, Config, ConnState, Connection, ConnectionStats, Context,
    DialFailure, DialFn, DialTarget, Error, ErrorCode, FrameError, HandlerId, HandlerSpec,
    HandshakeError, HeldBytes, HmacAuth, InFlight, Initiator, InstanceId, Keyring, LinkEvent,
    LinkEvents, Manager, ManagerBuilder, ManagerStats, Metadata, MetadataError, MetadataLimits,
    MuxId, Op, ProtocolViolation, RejectCode, RemoteError, StreamOptions, Supported, TableError,
    TlsConfig, Transport, WebSocketStream, MAX_METADATA_KEY_LEN, MAX_METADATA_VALUE_LEN,
};

/// Middleware: tower layers around the raw call on both sides (see the module's docs).
pub use grid_core::layer;

#[cfg(feature = "hyper")]
pub use grid_core::embed;
#[cfg(feature = "tls")]
pub use grid_core::rustls;
#[cfg(feature = "unstable-internals")]
#[doc(hidden)]
pub use grid_core::{frame, handshake, mux, table};

/// Turns a trait of `async fn(&self, …)` methods into typed handlers.
///
/// The four shapes are told apart by argument types: unary (`args -> Result<T, E>`), server
/// stream (a last [`ResponseSender<T>`] argument, returns `Result<(), E>`), client stream (a
/// [`RequestReceiver<T>`] argument, returns `Result<T, E>`) and two-way (a `RequestReceiver` then a `ResponseSender`).
/// An optional first `&grid::Context` argument gives the caller, subroute, deadline and
/// cancellation. Request arguments, items, `T` and `E` must implement the serde traits; they
/// travel as msgpack with field names.
///
/// For `trait Locker` the macro generates (with the trait's visibility):
/// - `LockerClient`: `new(conn)`, `connection()`, a [`HandlerSpec`] constant per method
///   (`LockerClient::LOCK`, wire name `"Locker.lock"`, id derived at compile time) and
///   `LockerClient::HANDLERS`, and per method:
///   - unary: `async fn lock(&self, args…) -> Result<T, CallError<E>>`;
///   - server stream: `async fn watch(&self, args…) -> Result<ResponseReceiver<Item, E>, CallError<E>>`;
///   - client stream: `async fn f(&self, args…) -> Result<(RequestSender<In>, ResponseReceiver<T, E>), CallError<E>>`
///     (await [`ResponseReceiver::response`] for the result);
///   - two-way: `async fn f(&self, args…) -> Result<(RequestSender<In>, ResponseReceiver<Out, E>), CallError<E>>`.
/// - `LockerServer<S>`: `new(impl)`, `from_arc`, `layer(l)` (a tower layer around its
///   handlers, see [`layer`]), `register(&manager)`,
///   `register_subroute(&manager, "disk1")`, `register_at(&manager, Option<&str>)`.
/// - The trait itself, with each `async fn` declared as returning a `Send` future, so
///   implementations write plain `async fn`s.
///
/// Per-method options: `#[grid(name = "Locker.lock.v2")]` (wire name), `#[grid(id = 7)]`
/// (explicit id), `#[grid(in_capacity = 8, out_capacity = 64, timeout_ms = 2000)]`; they are
/// the defaults of every call of the method.
///
/// # Per-call options
///
/// A client method returns its call as a builder that is itself the future: `.await` it as it
/// is, or set options for this one call first. [`UnaryCall`] (unary), [`StreamCall`] (server
/// stream) and [`DuplexCall`] (client and two-way streams) all take `.timeout(d)` /
/// `.deadline(at)` (the handler's [`Context::deadline`] is then this one, not the method's
/// `timeout_ms`), `.wait_for_connect()` (wait for the link within the deadline instead of
/// failing with [`Error::NotConnected`]), `.metadata(key, value)` / `.with_metadata(m)` (read by
/// the handler from [`Context::metadata`]); streams also `.out_capacity(n)` / `.out_window(b)`,
/// and streams with input `.in_capacity(n)` / `.in_window(b)`. Nothing is sent before the first
/// poll. A builder rather than a `client.with(opts)` handle: the options sit on the call they
/// apply to, the stream-only ones exist only on stream calls, and the plain
/// `client.lock(args).await` form (and `join_all`, `select!`) is unchanged. The cost is one boxed
/// future per call.
///
/// ```no_run
/// # use serde::{Deserialize, Serialize};
/// # use std::time::Duration;
/// # #[derive(Serialize, Deserialize)] pub struct LockArgs { pub resource: String }
/// # #[derive(Debug, Serialize, Deserialize)] pub enum LockError { Busy }
/// #[grid::handler]
/// pub trait Locker {
///     #[grid(timeout_ms = 2000)]
///     async fn lock(&self, ctx: &grid::Context, args: LockArgs) -> Result<bool, LockError>;
/// }
/// # async fn demo(conn: grid::Connection) -> Result<(), grid::CallError<LockError>> {
/// let locker = LockerClient::new(conn);
/// let args = || LockArgs { resource: "a".into() };
/// let ok = locker.lock(args()).await?; // 2 s, the method's default
/// let ok = locker
///     .lock(args())
///     .timeout(Duration::from_millis(200))
///     .metadata("token", b"\x01secret")
///     .wait_for_connect()
///     .await?;
/// # let _ = ok; Ok(()) }
/// ```
///
/// # Example
///
/// A service with a unary method and a server stream, served by one node and called from
/// another (both in this process, on loopback ports the system picks).
///
/// ```
/// use std::net::TcpListener;
/// use std::time::Duration;
///
/// use futures::StreamExt;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct LockArgs {
///     pub resource: String,
/// }
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// pub enum LockError {
///     Busy,
/// }
///
/// #[grid::handler]
/// pub trait Locker {
///     /// Takes a lock.
///     async fn lock(&self, args: LockArgs) -> Result<bool, LockError>;
///     /// Streams the names of held locks.
///     #[grid(out_capacity = 16)]
///     async fn held(&self, out: grid::ResponseSender<String>) -> Result<(), LockError>;
/// }
///
/// struct Local;
///
/// impl Locker for Local {
///     async fn lock(&self, args: LockArgs) -> Result<bool, LockError> {
///         if args.resource == "busy" {
///             return Err(LockError::Busy);
///         }
///         Ok(!args.resource.is_empty())
///     }
///     async fn held(&self, mut out: grid::ResponseSender<String>) -> Result<(), LockError> {
///         for name in ["a", "b"] {
///             out.send(name.to_owned()).await.map_err(|_| LockError::Busy)?;
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// assert_eq!(LockerClient::LOCK.name, "Locker.lock");
/// assert_eq!(LockerClient::LOCK.id, grid::HandlerId::from_wire_name("Locker.lock"));
///
/// let listeners = [TcpListener::bind("127.0.0.1:0")?, TcpListener::bind("127.0.0.1:0")?];
/// let names = [
///     format!("http://{}", listeners[0].local_addr()?),
///     format!("http://{}", listeners[1].local_addr()?),
/// ];
/// let mut nodes = Vec::new();
/// for (name, listener) in names.iter().zip(listeners) {
///     let node = grid::Manager::builder(name.as_str())
///         .peers(names.iter().cloned())
///         .secret("shared cluster secret")
///         .listener(listener)
///         .start()
///         .await?;
///     LockerServer::new(Local).register(&node)?;
///     nodes.push(node);
/// }
///
/// let locker = LockerClient::new(nodes[0].connection(&names[1])?);
/// locker.connection().wait_for_connect(Duration::from_secs(10)).await?;
/// assert!(locker.lock(LockArgs { resource: "disk1".into() }).await?);
/// // The handler's own error comes back typed.
/// let busy = locker.lock(LockArgs { resource: "busy".into() }).await.unwrap_err();
/// assert_eq!(busy.remote(), Some(&LockError::Busy));
///
/// let held: Vec<String> = locker.held().await?.map(|item| item.unwrap()).collect().await;
/// assert_eq!(held, ["a", "b"]);
/// # for node in &nodes { node.shutdown().await; }
/// # Ok(())
/// # }
/// ```
pub use grid_macros::handler;

pub mod guide;
mod typed;

pub use typed::{
    CallError, DuplexCall, RequestReceiver, RequestSender, ResponseReceiver, ResponseSender,
    StreamCall, UnaryCall,
};

/// The untyped stream ends: `Bytes` messages, as [`Connection::open_stream`] and raw handlers
/// ([`Manager::register_stream`]) use them. The typed ends of the same names are at the crate
/// root; the table in the [crate docs](crate#stream-ends) sets them side by side.
pub mod raw {
    pub use grid_core::{RequestReceiver, RequestSender, ResponseReceiver, ResponseSender};
}

/// Paths used by code that `#[grid::handler]` generates. Not a public API: it changes without
/// notice.
#[doc(hidden)]
pub mod __private {
    pub use crate::typed::support::*;
    pub use crate::typed::{
        CallError, DuplexCall, RequestReceiver, RequestSender, ResponseReceiver, ResponseSender,
        StreamCall, UnaryCall,
    };
    pub use bytes::Bytes;
    pub use futures;
    pub use grid_core::layer::{IntoServerLayer, ServerLayer};
    pub use grid_core::{
        CallOptions, Connection, Context, Error, HandlerId, HandlerSpec, Manager, RemoteError,
        RequestReceiver as RawRequestReceiver, ResponseSender as RawResponseSender, StreamOptions,
    };
    pub use rmp_serde;
    pub use serde;
    pub use std::boxed::Box;
    pub use std::clone::Clone;
    pub use std::fmt;
    pub use std::future::Future;
    pub use std::marker::{Send, Sync};
    pub use std::option::Option::{self, None, Some};
    pub use std::result::Result::{self, Err, Ok};
    pub use std::sync::Once;
}
