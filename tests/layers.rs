//! Tower middleware through the typed layer: `XServer::layer` around one service's handlers,
//! and a typed client over a layered connection handle, over real sockets.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use grid::layer::{
    ClientCall, ClientReply, ConnectionService, HandlerService, Layer, ServerCall, ServerReply,
    Service,
};
use grid::{CallError, Error, ErrorCode, RemoteError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KvError {
    Missing,
}

#[grid::handler]
pub trait Kv {
    async fn get(&self, key: String) -> Result<String, KvError>;
    async fn keys(&self, out: grid::ResponseSender<String>) -> Result<(), KvError>;
}

#[grid::handler]
pub trait Open {
    async fn ping(&self) -> Result<u32, KvError>;
}

struct Store;

impl Kv for Store {
    async fn get(&self, key: String) -> Result<String, KvError> {
        Ok(format!("value of {key}"))
    }

    async fn keys(&self, mut out: grid::ResponseSender<String>) -> Result<(), KvError> {
        out.send("a".to_owned()).await.map_err(|_| KvError::Missing)
    }
}

impl Open for Store {
    async fn ping(&self) -> Result<u32, KvError> {
        Ok(7)
    }
}

/// Server side: refuses calls without `token = "t0k"`, counting the calls it saw.
#[derive(Clone)]
struct Auth {
    seen: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct AuthService {
    inner: HandlerService,
    seen: Arc<AtomicUsize>,
}

impl Layer<HandlerService> for Auth {
    type Service = AuthService;
    fn layer(&self, inner: HandlerService) -> AuthService {
        AuthService {
            inner,
            seen: self.seen.clone(),
        }
    }
}

impl Service<ServerCall> for AuthService {
    type Response = ServerReply;
    type Error = RemoteError;
    type Future = BoxFuture<'static, Result<ServerReply, RemoteError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), RemoteError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        self.seen.fetch_add(1, Ordering::SeqCst);
        if call.metadata().get("token") != Some(&b"t0k"[..]) {
            return Box::pin(async { Err(RemoteError::text(ErrorCode::Internal, "no token")) });
        }
        self.inner.call(call)
    }
}

/// Client side: adds the token to every call of the handle.
#[derive(Clone)]
struct Token;

#[derive(Clone)]
struct TokenService(ConnectionService);

impl Layer<ConnectionService> for Token {
    type Service = TokenService;
    fn layer(&self, inner: ConnectionService) -> TokenService {
        TokenService(inner)
    }
}

impl Service<ClientCall> for TokenService {
    type Response = ClientReply;
    type Error = Error;
    type Future = BoxFuture<'static, Result<ClientReply, Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut call: ClientCall) -> Self::Future {
        call.metadata_mut().insert("token", "t0k").unwrap();
        self.0.call(call)
    }
}

fn refused<T: std::fmt::Debug>(r: &Result<T, CallError<KvError>>) -> bool {
    matches!(r, Err(CallError::Transport(Error::Remote(e)))
        if e.code == ErrorCode::Internal && e.message == "no token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_layer_and_a_layered_typed_client() {
    let nodes = common::connected(2, common::test_config()).await;
    let seen = Arc::new(AtomicUsize::new(0));
    KvServer::new(Store)
        .layer(Auth { seen: seen.clone() })
        .register(&nodes[1])
        .unwrap();
    OpenServer::new(Store).register(&nodes[1]).unwrap();
    let conn = nodes[0].connection(nodes[1].name()).unwrap();

    let plain = KvClient::new(conn.clone());
    let r = plain.get("k".into()).await;
    assert!(refused(&r), "{r:?}");
    // The per-call form reaches the handler through the same layer.
    let v = plain
        .get("k".into())
        .metadata("token", "t0k")
        .await
        .unwrap();
    assert_eq!(v, "value of k");
    // The other service has no layer.
    assert_eq!(OpenClient::new(conn.clone()).ping().await.unwrap(), 7);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "the layer saw only its service's calls"
    );

    // A typed client over a layered handle: every call carries the token.
    let authed = KvClient::new(conn.with_layer(Token));
    assert_eq!(authed.get("z".into()).await.unwrap(), "value of z");
    let mut keys = authed.keys().await.unwrap();
    assert_eq!(
        futures::StreamExt::next(&mut keys).await.unwrap().unwrap(),
        "a"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 4);
    for n in nodes {
        n.shutdown().await;
    }
}
