//! Middleware: tower [`Layer`]s around the raw call, on both sides of a connection.
//!
//! Auth from metadata, concurrency and rate limits, timeouts and logging are ordinary tower
//! layers, as in tonic:
//!
//! - **server side**, a [`Layer`] over [`HandlerService`], which serves [`ServerCall`]s (the
//!   handler's [`Context`], with its metadata, and the request payload) and answers a
//!   [`ServerReply`] or a [`RemoteError`] the caller receives. Around every handler of a node:
//!   [`ManagerBuilder::layer`](crate::ManagerBuilder::layer); around the handlers of one
//!   registration: [`Manager::register_unary_with`](crate::Manager::register_unary_with) and
//!   its stream twin, which the generated `XServer::layer` uses;
//! - **client side**, a [`Layer`] over [`ConnectionService`], which sends [`ClientCall`]s (the
//!   handler, the payload, the options, the metadata a layer may add to) and answers a
//!   [`ClientReply`] or an [`Error`]: [`Connection::with_layer`]. A typed client over that
//!   connection (`XClient::new(conn.with_layer(..))`) calls through the same layers.
//!
//! Nothing here runs for a handler or a connection without layers: the plain call path only
//! checks that no layer is set. A layered call costs a boxed future per layer boundary.
//!
//! Readiness: each call takes a clone of the layered service and waits for its `poll_ready`
//! inside the call's future (a concurrency limit waits there for its permit), then calls it.
//! A layer's error becomes the call's error: a [`RemoteError`] (server) or an [`Error`] (client)
//! passes through as it is; anything else (tower's `Elapsed`, say) becomes
//! [`ErrorCode::Internal`] on the server and [`Error::Middleware`] on the client.

use std::fmt;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
pub use tower_layer::Layer;
pub use tower_service::Service;

use crate::conn::{CallOptions, ClientStream, Connection, StreamOptions};
use crate::error::{Error, RemoteError};
use crate::frame::{ErrorCode, Metadata};
use crate::handler::{Context, Registered};
use crate::ids::HandlerId;
use crate::stream::{RequestReceiver, ResponseSender};

/// The error type layers may return: anything that converts into it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ---- server side --------------------------------------------------------------------------

/// One call as a server-side layer sees it: the handler's context (caller, handler, subroute,
/// deadline, metadata, cancellation) and the request payload.
pub struct ServerCall {
    ctx: Context,
    payload: Bytes,
    /// The stream ends of a stream call; `None` for a unary call.
    streams: Option<(Option<RequestReceiver>, ResponseSender)>,
}

impl fmt::Debug for ServerCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCall")
            .field("ctx", &self.ctx)
            .field("payload", &self.payload.len())
            .field("stream", &self.is_stream())
            .finish()
    }
}

impl ServerCall {
    /// The context the handler will get.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The caller's metadata (the context's).
    pub fn metadata(&self) -> &Metadata {
        self.ctx.metadata()
    }

    /// The request (a stream's initial payload).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// True for a stream, false for a unary call.
    pub fn is_stream(&self) -> bool {
        self.streams.is_some()
    }
}

/// What a served call answered: a unary call's response payload, or nothing for a stream
/// (its items went out on the stream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerReply {
    payload: Option<Bytes>,
}

impl ServerReply {
    /// The response payload of a unary call; `None` for a stream.
    pub fn payload(&self) -> Option<&Bytes> {
        self.payload.as_ref()
    }
}

/// A handler as a tower service: the innermost service of a server-side stack (or the layers
/// inside the one being added). Cheap to clone.
#[derive(Clone)]
pub struct HandlerService {
    inner: Arc<dyn ErasedServer>,
}

impl fmt::Debug for HandlerService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandlerService")
    }
}

trait ErasedServer: Send + Sync {
    fn call(&self, call: ServerCall) -> BoxFuture<'static, Result<ServerReply, RemoteError>>;
}

impl Service<ServerCall> for HandlerService {
    type Response = ServerReply;
    type Error = RemoteError;
    type Future = BoxFuture<'static, Result<ServerReply, RemoteError>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), RemoteError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        self.inner.call(call)
    }
}

/// The registered handler itself.
struct Direct(Registered);

impl ErasedServer for Direct {
    fn call(&self, call: ServerCall) -> BoxFuture<'static, Result<ServerReply, RemoteError>> {
        match (&self.0, call.streams) {
            (Registered::Unary(h), None) => {
                let run = h(call.ctx, call.payload);
                Box::pin(async move { run.await.map(|p| ServerReply { payload: Some(p) }) })
            }
            (Registered::Stream(h), Some((input, output))) => {
                let run = h(call.ctx, call.payload, input, output);
                Box::pin(async move { run.await.map(|()| ServerReply { payload: None }) })
            }
            _ => Box::pin(std::future::ready(Err(RemoteError::text(
                ErrorCode::Internal,
                "a layer changed the kind of the call",
            )))),
        }
    }
}

/// A layered stack, driven one call at a time on a clone.
struct Stacked<S>(S);

impl<S> ErasedServer for Stacked<S>
where
    S: Service<ServerCall, Response = ServerReply> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    fn call(&self, call: ServerCall) -> BoxFuture<'static, Result<ServerReply, RemoteError>> {
        let mut svc = self.0.clone();
        Box::pin(async move {
            poll_fn(|cx| svc.poll_ready(cx))
                .await
                .map_err(server_error)?;
            svc.call(call).await.map_err(server_error)
        })
    }
}

fn server_error(e: impl Into<BoxError>) -> RemoteError {
    match e.into().downcast::<RemoteError>() {
        Ok(remote) => *remote,
        Err(other) => RemoteError::text(ErrorCode::Internal, format!("middleware: {other}")),
    }
}

/// A server-side tower layer, type-erased so that a node or a registration can hold it.
#[derive(Clone)]
pub struct ServerLayer {
    wrap: Arc<dyn Fn(HandlerService) -> HandlerService + Send + Sync>,
}

impl fmt::Debug for ServerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerLayer")
    }
}

impl ServerLayer {
    /// Erases `layer` (one layer, or a `tower::ServiceBuilder` stack of them).
    pub fn new<L>(layer: L) -> ServerLayer
    where
        L: Layer<HandlerService> + Send + Sync + 'static,
        L::Service: Service<ServerCall, Response = ServerReply> + Clone + Send + Sync + 'static,
        <L::Service as Service<ServerCall>>::Error: Into<BoxError>,
        <L::Service as Service<ServerCall>>::Future: Send + 'static,
    {
        ServerLayer {
            wrap: Arc::new(move |inner| HandlerService {
                inner: Arc::new(Stacked(layer.layer(inner))),
            }),
        }
    }

    /// `inner` inside `self`: a call passes `self` first.
    pub fn around(&self, inner: &ServerLayer) -> ServerLayer {
        let (outer, inner) = (self.wrap.clone(), inner.wrap.clone());
        ServerLayer {
            wrap: Arc::new(move |svc| outer(inner(svc))),
        }
    }

    /// The handler `h` behind this layer, as a handler of the same kind.
    pub(crate) fn apply(&self, h: Registered) -> Registered {
        let stream = matches!(h, Registered::Stream(_));
        let svc = (self.wrap)(HandlerService {
            inner: Arc::new(Direct(h)),
        });
        if stream {
            Registered::Stream(Arc::new(move |ctx, payload, input, output| {
                let call = ServerCall {
                    ctx,
                    payload,
                    streams: Some((input, output)),
                };
                let run = svc.inner.call(call);
                Box::pin(async move { run.await.map(|_| ()) })
            }))
        } else {
            Registered::Unary(Arc::new(move |ctx, payload| {
                let call = ServerCall {
                    ctx,
                    payload,
                    streams: None,
                };
                let run = svc.inner.call(call);
                Box::pin(async move { run.await.map(|r| r.payload.unwrap_or_default()) })
            }))
        }
    }
}

impl Layer<HandlerService> for ServerLayer {
    type Service = HandlerService;

    fn layer(&self, inner: HandlerService) -> HandlerService {
        (self.wrap)(inner)
    }
}

/// Anything that can be a server-side layer: a tower [`Layer`] over [`HandlerService`] whose
/// service serves [`ServerCall`]s (a `tower::ServiceBuilder` stack included), or a
/// [`ServerLayer`] already erased.
pub trait IntoServerLayer {
    /// The erased layer.
    fn into_server_layer(self) -> ServerLayer;
}

impl<L> IntoServerLayer for L
where
    L: Layer<HandlerService> + Send + Sync + 'static,
    L::Service: Service<ServerCall, Response = ServerReply> + Clone + Send + Sync + 'static,
    <L::Service as Service<ServerCall>>::Error: Into<BoxError>,
    <L::Service as Service<ServerCall>>::Future: Send + 'static,
{
    fn into_server_layer(self) -> ServerLayer {
        ServerLayer::new(self)
    }
}

// ---- client side --------------------------------------------------------------------------

/// One call as a client-side layer sees it: what is called, the payload, and its options (a
/// layer may add metadata, or set a deadline).
#[derive(Debug)]
pub struct ClientCall {
    handler: HandlerId,
    subroute: Option<Bytes>,
    payload: Bytes,
    kind: ClientKind,
}

#[derive(Debug)]
enum ClientKind {
    Unary(CallOptions),
    Stream(StreamOptions),
}

impl ClientCall {
    pub(crate) fn unary(
        handler: HandlerId,
        subroute: Option<Bytes>,
        payload: Bytes,
        opts: CallOptions,
    ) -> ClientCall {
        ClientCall {
            handler,
            subroute,
            payload,
            kind: ClientKind::Unary(opts),
        }
    }

    pub(crate) fn stream(
        handler: HandlerId,
        subroute: Option<Bytes>,
        payload: Bytes,
        opts: StreamOptions,
    ) -> ClientCall {
        ClientCall {
            handler,
            subroute,
            payload,
            kind: ClientKind::Stream(opts),
        }
    }

    /// The handler called.
    pub fn handler(&self) -> HandlerId {
        self.handler
    }

    /// The request (a stream's initial payload).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// True for a stream, false for a unary call.
    pub fn is_stream(&self) -> bool {
        matches!(self.kind, ClientKind::Stream(_))
    }

    /// The call's metadata.
    pub fn metadata(&self) -> &Metadata {
        match &self.kind {
            ClientKind::Unary(o) => &o.metadata,
            ClientKind::Stream(o) => &o.metadata,
        }
    }

    /// The call's metadata, to add entries to (a token, a trace id).
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        match &mut self.kind {
            ClientKind::Unary(o) => &mut o.metadata,
            ClientKind::Stream(o) => &mut o.metadata,
        }
    }

    /// The call's timeout (`None`: the defaults of [`CallOptions`] and [`StreamOptions`]).
    pub fn timeout(&self) -> Option<Duration> {
        match &self.kind {
            ClientKind::Unary(o) => o.timeout,
            ClientKind::Stream(o) => o.timeout,
        }
    }

    /// Sets the call's timeout.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        match &mut self.kind {
            ClientKind::Unary(o) => o.timeout = timeout,
            ClientKind::Stream(o) => o.timeout = timeout,
        }
    }
}

/// What a client call answered: a unary call's response, or an open stream.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientReply {
    /// The response of a unary call.
    Unary(Bytes),
    /// An open stream.
    Stream(ClientStream),
}

/// The connection as a tower service: the innermost service of a client-side stack (it sends
/// through the layers the connection had before this one).
#[derive(Clone, Debug)]
pub struct ConnectionService {
    conn: Connection,
}

impl Service<ClientCall> for ConnectionService {
    type Response = ClientReply;
    type Error = Error;
    type Future = BoxFuture<'static, Result<ClientReply, Error>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: ClientCall) -> Self::Future {
        // The subroute is the outer handle's: `with_layer(..).subroute(..)` addresses it.
        let conn = self.conn.at_subroute(call.subroute);
        Box::pin(async move {
            match call.kind {
                ClientKind::Unary(opts) => conn
                    .call(call.handler, call.payload, opts)
                    .await
                    .map(ClientReply::Unary),
                ClientKind::Stream(opts) => conn
                    .open_stream(call.handler, call.payload, opts)
                    .await
                    .map(ClientReply::Stream),
            }
        })
    }
}

trait ErasedClient: Send + Sync {
    fn call(&self, call: ClientCall) -> BoxFuture<'static, Result<ClientReply, Error>>;
}

struct ClientStacked<S>(S);

impl<S> ErasedClient for ClientStacked<S>
where
    S: Service<ClientCall, Response = ClientReply> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    fn call(&self, call: ClientCall) -> BoxFuture<'static, Result<ClientReply, Error>> {
        let mut svc = self.0.clone();
        Box::pin(async move {
            poll_fn(|cx| svc.poll_ready(cx))
                .await
                .map_err(client_error)?;
            svc.call(call).await.map_err(client_error)
        })
    }
}

fn client_error(e: impl Into<BoxError>) -> Error {
    match e.into().downcast::<Error>() {
        Ok(e) => *e,
        Err(other) => Error::Middleware(other),
    }
}

/// The layers of a connection handle, type-erased.
#[derive(Clone)]
pub(crate) struct ClientStack(Arc<dyn ErasedClient>);

impl fmt::Debug for ClientStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientStack")
    }
}

impl ClientStack {
    /// `layer` around `conn` (and the layers `conn` already has).
    pub(crate) fn new<L>(conn: Connection, layer: L) -> ClientStack
    where
        L: Layer<ConnectionService>,
        L::Service: Service<ClientCall, Response = ClientReply> + Clone + Send + Sync + 'static,
        <L::Service as Service<ClientCall>>::Error: Into<BoxError>,
        <L::Service as Service<ClientCall>>::Future: Send + 'static,
    {
        ClientStack(Arc::new(ClientStacked(
            layer.layer(ConnectionService { conn }),
        )))
    }

    pub(crate) async fn unary(&self, call: ClientCall) -> Result<Bytes, Error> {
        match self.0.call(call).await? {
            ClientReply::Unary(b) => Ok(b),
            ClientReply::Stream(_) => Err(Error::Protocol(
                "a client layer answered a unary call with a stream".into(),
            )),
        }
    }

    pub(crate) async fn stream(&self, call: ClientCall) -> Result<ClientStream, Error> {
        match self.0.call(call).await? {
            ClientReply::Stream(s) => Ok(s),
            ClientReply::Unary(_) => Err(Error::Protocol(
                "a client layer answered a stream with a unary response".into(),
            )),
        }
    }
}
