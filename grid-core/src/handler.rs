//! Registered handlers and the context each invocation gets.
//!
//! A handler is registered under a [`HandlerId`] and optionally a static subroute name (one per
//! disk, say). Lookups happen on the socket reader for every request, so the registry is a
//! read-mostly map behind an `RwLock` that registration takes only briefly.
//!
//! The registry is also this node's handler table ([`LocalTable`]): every registration is
//! appended to a log, in order, which each connection announces to its peer from where it left
//! off (`PROTOCOL.md` section 9). Registration is bounded by the table's bounds, so a node never
//! announces more than a peer accepts.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::RwLock;

use crate::cancel::CancelSignal;
use crate::conn::core::{CallKind, Router};
use crate::error::{Error, RemoteError};
use crate::frame::{ErrorCode, ErrorRecord};
use crate::frame::{Metadata, Route};
use crate::ids::HandlerId;
use crate::layer::ServerLayer;
use crate::mux::CancelCause;
use crate::stream::{RequestReceiver, ResponseSender};
use crate::table::{self, Entry, LocalTable, MAX_TABLE_BYTES, MAX_TABLE_ENTRIES};

/// A unary handler: request bytes in, response bytes or an error out.
pub(crate) type UnaryHandler =
    Arc<dyn Fn(Context, Bytes) -> BoxFuture<'static, Result<Bytes, RemoteError>> + Send + Sync>;

/// A stream handler: the initial payload, the input stream if the caller sends one, and the
/// output stream. Returning ends the output stream (with the error, if any).
pub(crate) type StreamHandler = Arc<
    dyn Fn(
            Context,
            Bytes,
            Option<RequestReceiver>,
            ResponseSender,
        ) -> BoxFuture<'static, Result<(), RemoteError>>
        + Send
        + Sync,
>;

/// What a registration names: the id and the wire name it was derived from (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerSpec {
    /// The id on the wire.
    pub id: HandlerId,
    /// The wire name, e.g. `Locker.lock`.
    pub name: &'static str,
}

impl HandlerSpec {
    /// A spec whose id is derived from its wire name.
    pub const fn named(name: &'static str) -> HandlerSpec {
        HandlerSpec {
            id: HandlerId::from_wire_name(name),
            name,
        }
    }

    /// Tells this process the wire names of `specs`, so that their ids display as names in log
    /// lines, span fields, metric labels and error messages (see [`HandlerId`]'s doc).
    /// Registering a handler and creating a generated typed client do it already; call it for
    /// the ids a raw [`Connection`](crate::Connection) caller uses.
    pub fn remember(specs: &[HandlerSpec]) {
        crate::observe::names::remember(specs);
    }
}

/// A registration key: the handler and its subroute, if any.
type Key = (HandlerId, Option<Box<str>>);

#[derive(Clone)]
pub(crate) enum Registered {
    Unary(UnaryHandler),
    Stream(StreamHandler),
}

impl Registered {
    pub(crate) fn is_stream(&self) -> bool {
        matches!(self, Registered::Stream(_))
    }
}

/// The handlers of one manager.
#[derive(Default)]
pub(crate) struct Registry {
    names: RwLock<HashMap<HandlerId, &'static str>>,
    handlers: RwLock<HashMap<Key, Registered>>,
    /// Every registration in order, and their cost against the table's byte bound.
    log: RwLock<(Vec<Entry>, usize)>,
    /// Whether this node promises its peers it serves nothing it has not announced (it was
    /// started not ready, so it registers before taking any peer).
    complete: bool,
    /// The node's server-side layers, around every handler registered.
    layer: Option<ServerLayer>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("handlers", &self.handlers.read().len())
            .finish()
    }
}

impl Registry {
    /// An empty registry; `complete` as in [`LocalTable::is_complete`].
    pub(crate) fn new(complete: bool) -> Registry {
        Registry {
            complete,
            ..Registry::default()
        }
    }

    /// The same registry, with `layer` around every handler registered.
    pub(crate) fn with_layer(mut self, layer: Option<ServerLayer>) -> Registry {
        self.layer = layer;
        self
    }

    pub(crate) fn insert(
        &self,
        spec: HandlerSpec,
        subroute: Option<&str>,
        handler: Registered,
    ) -> Result<(), Error> {
        if spec.id.0 == 0 {
            return Err(Error::Registration(format!(
                "{}: handler id 0 is reserved",
                spec.name
            )));
        }
        if let Some(s) = subroute {
            if s.is_empty() || s.len() > crate::frame::MAX_SUBROUTE_LEN {
                return Err(Error::Registration(format!(
                    "{}: subroute must be 1..=255 bytes, got {}",
                    spec.name,
                    s.len()
                )));
            }
        }
        let mut names = self.names.write();
        if let Some(existing) = names.get(&spec.id) {
            if *existing != spec.name {
                return Err(Error::Registration(format!(
                    "handler id {} of {} collides with {}: give one of them another wire name or an explicit id",
                    spec.id, spec.name, existing
                )));
            }
        }
        let mut handlers = self.handlers.write();
        let key = (spec.id, subroute.map(Box::from));
        if handlers.contains_key(&key) {
            return Err(Error::Registration(format!(
                "{} is already registered{}",
                spec.name,
                subroute.map_or(String::new(), |s| format!(" under subroute {s:?}"))
            )));
        }
        let mut log = self.log.write();
        let cost = table::route_cost(subroute.map_or(0, str::len));
        if log.0.len() >= MAX_TABLE_ENTRIES || log.1 + cost > MAX_TABLE_BYTES {
            return Err(Error::Registration(format!(
                "{}: a node serves at most {MAX_TABLE_ENTRIES} handlers and subroutes, and \
                 {MAX_TABLE_BYTES} bytes of ids and subroute names (the bounds of the handler \
                 table its peers accept)",
                spec.name
            )));
        }
        log.0.push(key.clone());
        log.1 += cost;
        HandlerSpec::remember(&[spec]);
        names.insert(spec.id, spec.name);
        let handler = match &self.layer {
            Some(l) => l.apply(handler),
            None => handler,
        };
        handlers.insert(key, handler);
        Ok(())
    }

    /// The wire name registered for `id`, or the id in hex.
    pub(crate) fn name_of(&self, id: HandlerId) -> String {
        self.names
            .read()
            .get(&id)
            .map_or_else(|| id.to_string(), |n| (*n).to_owned())
    }

    /// The handler for a call, or the error record refusing it.
    pub(crate) fn lookup(
        &self,
        id: HandlerId,
        subroute: Option<&[u8]>,
    ) -> Result<Registered, ErrorRecord> {
        let sub = match subroute.map(std::str::from_utf8) {
            Some(Ok(s)) => Some(s),
            Some(Err(_)) => {
                return Err(ErrorRecord::text(
                    ErrorCode::UnknownSubroute,
                    "subroute is not UTF-8",
                ))
            }
            None => None,
        };
        let handlers = self.handlers.read();
        let key = (id, sub.map(Box::from));
        if let Some(h) = handlers.get(&key) {
            return Ok(h.clone());
        }
        drop(handlers);
        match (sub, self.names.read().get(&id)) {
            (Some(s), Some(name)) => Err(ErrorRecord::text(
                ErrorCode::UnknownSubroute,
                format!("{name} has no subroute {s:?}"),
            )),
            _ => Err(ErrorRecord::text(
                ErrorCode::UnknownHandler,
                format!("no handler {id}"),
            )),
        }
    }
}

impl LocalTable for Registry {
    fn entries_since(&self, from: usize) -> Vec<Entry> {
        self.log.read().0.get(from..).unwrap_or_default().to_vec()
    }

    fn is_complete(&self) -> bool {
        self.complete
    }
}

impl Router for Registry {
    type Handler = Registered;

    fn route(&self, route: &Route, kind: CallKind) -> Result<Registered, ErrorRecord> {
        match (self.lookup(route.handler, route.subroute.as_deref())?, kind) {
            (Registered::Unary(_), CallKind::Stream) => Err(ErrorRecord::text(
                ErrorCode::UnknownHandler,
                format!("{} is a unary handler", self.name_of(route.handler)),
            )),
            (Registered::Stream(_), CallKind::Unary) => Err(ErrorRecord::text(
                ErrorCode::UnknownHandler,
                format!("{} is a stream handler", self.name_of(route.handler)),
            )),
            (h, _) => Ok(h),
        }
    }
}

/// What a handler knows about the call it serves: who called, through which subroute, until when,
/// and whether the call has been cancelled (and why).
///
/// # Example
///
/// A handler that answers with its caller's name, and one that works until the caller gives up:
/// when the call's deadline passes, [`cancelled`](Context::cancelled) returns and the handler
/// stops.
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
/// use grid::{Bytes, CallOptions, CancelCause, Error, HandlerSpec, RemoteError};
///
/// const WHO: HandlerSpec = HandlerSpec::named("Docs.who");
/// const SLOW: HandlerSpec = HandlerSpec::named("Docs.slow");
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (stopped_tx, mut stopped_rx) = tokio::sync::mpsc::unbounded_channel();
/// let (a, b) = two_nodes(|node| {
///     node.register_unary(WHO, |ctx, _| async move {
///         assert!(ctx.deadline().is_some()); // unary calls always have one
///         Ok::<_, RemoteError>(Bytes::from(ctx.caller().to_owned()))
///     })
///     .unwrap();
///     let stopped = stopped_tx.clone();
///     node.register_unary(SLOW, move |ctx, _| {
///         let stopped = stopped.clone();
///         async move {
///             let cause = ctx.cancelled().await; // in real code: select! with the work
///             stopped.send(cause).unwrap();
///             Ok::<_, RemoteError>(Bytes::new())
///         }
///     })
///     .unwrap();
/// })
/// .await?;
///
/// let conn = a.connection(b.name())?;
/// conn.wait_for_connect(Duration::from_secs(10)).await?;
/// assert_eq!(conn.request(WHO.id, Bytes::new()).await?, a.name().as_bytes());
///
/// let opts = CallOptions { timeout: Some(Duration::from_millis(200)), ..CallOptions::default() };
/// let err = conn.call(SLOW.id, Bytes::new(), opts).await.unwrap_err();
/// assert!(matches!(err, Error::Deadline), "{err}");
/// let cause = tokio::time::timeout(Duration::from_secs(10), stopped_rx.recv()).await?;
/// assert_eq!(cause, Some(CancelCause::Deadline));
/// # a.shutdown().await;
/// # b.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    caller: Arc<str>,
    handler: HandlerId,
    subroute: Option<Box<str>>,
    deadline: Option<Instant>,
    metadata: Metadata,
    cancel: CancelSignal,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("caller", &self.caller())
            .field("handler", &self.inner.handler)
            .field("subroute", &self.subroute())
            .field("deadline", &self.inner.deadline)
            .field("metadata", &self.inner.metadata)
            .field("cancelled", &self.cancel_cause())
            .finish()
    }
}

impl Context {
    pub(crate) fn new(
        caller: Arc<str>,
        handler: HandlerId,
        subroute: Option<&[u8]>,
        deadline: Option<Instant>,
        metadata: Metadata,
        cancel: CancelSignal,
    ) -> Context {
        Context {
            inner: Arc::new(ContextInner {
                caller,
                handler,
                subroute: subroute.map(|s| String::from_utf8_lossy(s).into()),
                deadline,
                metadata,
                cancel,
            }),
        }
    }

    /// The calling node's name.
    pub fn caller(&self) -> &str {
        &self.inner.caller
    }

    /// The handler id that was called.
    pub fn handler(&self) -> HandlerId {
        self.inner.handler
    }

    /// The subroute the call was addressed to, if any.
    pub fn subroute(&self) -> Option<&str> {
        self.inner.subroute.as_deref()
    }

    /// When the caller stops waiting: the time the call arrived plus the caller's remaining time.
    /// Transit time is not subtracted, so this is slightly later than the caller's own deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// The metadata the caller sent with the call (empty if none): a slice of the message it
    /// arrived in, read without copying.
    pub fn metadata(&self) -> &Metadata {
        &self.inner.metadata
    }

    /// Why the call was cancelled, if it was.
    pub fn cancel_cause(&self) -> Option<CancelCause> {
        self.inner.cancel.cause()
    }

    /// True once the call is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel_cause().is_some()
    }

    /// Waits until the call is cancelled and says why. A handler that returns first never sees it.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn cancelled(&self) -> CancelCause {
        self.inner.cancel.cancelled().await
    }
}

/// Turns a caught panic into the error record the caller receives.
pub(crate) fn panic_record(panic: Box<dyn std::any::Any + Send>) -> ErrorRecord {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "handler panicked".to_owned());
    ErrorRecord::text(ErrorCode::Panic, format!("handler panicked: {msg}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unary() -> Registered {
        Registered::Unary(Arc::new(|_, b| Box::pin(async move { Ok(b) })))
    }

    #[test]
    fn lookup_tells_unknown_handler_from_unknown_subroute() {
        let r = Registry::default();
        let spec = HandlerSpec::named("Disk.read");
        r.insert(spec, Some("disk1"), unary()).expect("fresh");
        assert!(r.lookup(spec.id, Some(b"disk1")).is_ok());
        let e = r
            .lookup(spec.id, Some(b"disk2"))
            .err()
            .expect("no such subroute");
        assert_eq!(e.code, ErrorCode::UnknownSubroute);
        let e = r
            .lookup(HandlerId(42), None)
            .err()
            .expect("no such handler");
        assert_eq!(e.code, ErrorCode::UnknownHandler);
    }

    #[test]
    fn duplicates_and_collisions_are_refused_with_both_names() {
        let r = Registry::default();
        let a = HandlerSpec {
            id: HandlerId(5),
            name: "A.a",
        };
        let b = HandlerSpec {
            id: HandlerId(5),
            name: "B.b",
        };
        r.insert(a, None, unary()).expect("fresh");
        let dup = r.insert(a, None, unary()).expect_err("duplicate");
        assert!(dup.to_string().contains("already registered"), "{dup}");
        let col = r.insert(b, None, unary()).expect_err("collision");
        let msg = col.to_string();
        assert!(msg.contains("A.a") && msg.contains("B.b"), "{msg}");
        r.insert(a, Some("x"), unary())
            .expect("same handler, new subroute");
    }

    #[test]
    fn the_registry_logs_registrations_in_order_for_the_table() {
        let r = Registry::new(true);
        assert!(r.is_complete());
        let spec = HandlerSpec::named("Disk.read");
        r.insert(spec, None, unary()).expect("fresh");
        r.insert(spec, Some("d1"), unary()).expect("fresh");
        // A refused registration is not logged.
        assert!(r.insert(spec, Some("d1"), unary()).is_err());
        let other = HandlerSpec::named("Disk.write");
        r.insert(other, Some("d1"), unary()).expect("fresh");
        assert_eq!(
            r.entries_since(1),
            vec![(spec.id, Some("d1".into())), (other.id, Some("d1".into()))]
        );
        assert_eq!(r.entries_since(3), vec![]);
        assert_eq!(r.entries_since(7), vec![]);
    }

    #[test]
    fn registration_stops_at_the_table_bounds() {
        let r = Registry::default();
        let spec = HandlerSpec::named("Disk.read");
        let long = "x".repeat(250);
        let mut n = 0;
        let err = loop {
            match r.insert(spec, Some(&format!("{long}{n:05}")), unary()) {
                Ok(()) => n += 1,
                Err(e) => break e,
            }
        };
        // 255-byte names cost 259 bytes each: the byte bound comes first.
        assert_eq!(n, MAX_TABLE_BYTES / table::route_cost(255));
        assert!(err.to_string().contains("at most"), "{err}");
        assert_eq!(r.entries_since(0).len(), n);
    }
}
