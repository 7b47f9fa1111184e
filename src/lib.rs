//! grid: typed, multiplexed, two-way RPC between the servers of one cluster, over one WebSocket per
//! pair of nodes.
//!
//! This is the facade crate: the only crate users name. It re-exports the runtime (`grid-core`),
//! the typed layer and the [`handler`](macro@handler) macro.
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
//! route from an existing hyper 1 / axum 0.8 server (`grid::embed`).

pub use grid_core::*;

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
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct LockArgs {
///     pub resource: String,
/// }
///
/// #[derive(Debug, Serialize, Deserialize)]
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
///         Ok(!args.resource.is_empty())
///     }
///     async fn held(&self, mut out: grid::ResponseSender<String>) -> Result<(), LockError> {
///         out.send("a".to_owned()).await.map_err(|_| LockError::Busy)
///     }
/// }
///
/// assert_eq!(LockerClient::LOCK.name, "Locker.lock");
/// assert_eq!(LockerClient::LOCK.id, grid::HandlerId::from_wire_name("Locker.lock"));
/// let _server = LockerServer::new(Local);
/// // With a running `grid::Manager` `m` and a peer `p`:
/// //   LockerServer::new(Local).register(&m)?;
/// //   let ok = LockerClient::new(m.connection(p)?).lock(LockArgs { .. }).await?;
/// ```
pub use grid_macros::handler;

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
}
