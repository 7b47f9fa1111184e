//! Serving grid's route inside your own hyper 1.x or axum 0.8 server (cargo feature `hyper`).
//!
//! By default a [`Manager`] binds its own listener. When the node already runs an HTTP server,
//! build the manager with [`no_listener`](crate::ManagerBuilder::no_listener) and hand it the
//! requests for its route ([`Config::route`](crate::Config::route), default `/grid/v1`):
//! [`Manager::serve_upgrade`] checks the WebSocket upgrade request, answers `101 Switching
//! Protocols`, and once the server has switched protocols runs grid's handshake and the
//! connection on the upgraded socket, in a task of its own. A bad request gets an error response
//! with the reason in its body instead (never a panic).
//!
//! The server must keep upgraded connections alive: with hyper, serve each connection with
//! `http1::Builder::serve_connection(..).with_upgrades()`; axum's `serve` already does. grid's
//! WebSocket runs over HTTP/1.1 only.
//!
//! # With hyper
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use grid_core::embed::is_grid_upgrade;
//! use grid_core::Manager;
//! use http_body_util::Full;
//! use hyper::server::conn::http1;
//! use hyper::service::service_fn;
//! use hyper::{Request, Response};
//! use hyper_util::rt::TokioIo;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = Manager::builder("http://10.0.0.1:9000")
//!     .peers(["http://10.0.0.2:9000"])
//!     .secret("cluster secret")
//!     .no_listener()
//!     .start()
//!     .await?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:9000").await?;
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     let manager = manager.clone();
//!     let service = service_fn(move |req: Request<hyper::body::Incoming>| {
//!         let manager = manager.clone();
//!         async move {
//!             if is_grid_upgrade(&req, &manager.config().route) {
//!                 return manager.serve_upgrade(req);
//!             }
//!             // ... the rest of your application.
//!             Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
//!         }
//!     });
//!     tokio::spawn(async move {
//!         let conn = http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
//!         let _ = conn.with_upgrades().await;
//!     });
//! }
//! # }
//! ```
//!
//! # With axum
//!
//! axum 0.8 runs on hyper 1, so the same call works from a handler (`axum::extract::Request` is an
//! `http::Request`, and the returned response converts with `into_response`):
//!
//! ```ignore
//! use axum::extract::Request;
//! use axum::http::StatusCode;
//! use axum::response::IntoResponse;
//! use axum::routing::{any, get};
//!
//! let route = manager.config().route.clone();
//! let app = axum::Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .route(&route, any(move |req: Request| async move {
//!         match manager.serve_upgrade(req) {
//!             Ok(response) => response.into_response(),
//!             Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
//!         }
//!     }));
//! axum::serve(tokio::net::TcpListener::bind("0.0.0.0:9000").await?, app).await?;
//! ```

/// The `http` crate of [`Manager::serve_upgrade`]'s request and response (hyper's and axum's).
pub use http;
/// The body of [`Manager::serve_upgrade`]'s response.
pub use http_body_util::Full;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::debug;

use crate::conn::BoxedTransport;
use crate::error::Error;
use crate::manager::Manager;

/// True when `req` asks for a WebSocket upgrade on `route`: its path is `route` and its `Upgrade`
/// header names `websocket`.
///
/// A quick routing test for a plain hyper service. It does not check the rest of the request;
/// [`Manager::serve_upgrade`] does, and answers a bad one with the reason.
pub fn is_grid_upgrade<B>(req: &Request<B>, route: &str) -> bool {
    req.uri().path() == route && header_has_token(req.headers(), http::header::UPGRADE, "websocket")
}

impl Manager {
    /// Serves a WebSocket upgrade request that an existing hyper or axum server received on this
    /// manager's route ([`Config::route`](crate::Config::route)).
    ///
    /// Checks the request (path equal to the route, `GET`, HTTP/1.1, `Upgrade: websocket`,
    /// `Connection: upgrade`, `Sec-WebSocket-Version: 13`, a `Sec-WebSocket-Key`) and returns the
    /// response to send: `101 Switching Protocols` when it is good, otherwise an error status with
    /// the reason as a plain-text body (`404` for another path, `405` for another method, `426`
    /// with `Sec-WebSocket-Version: 13` for a missing or other WebSocket version, `503` when
    /// [`Config::max_pending_handshakes`](crate::Config::max_pending_handshakes) handshakes are
    /// already in progress, `400` for anything else). Returns at once; on a `101`, a spawned task
    /// waits for the server to hand the socket over, then runs grid's handshake (with WebSocket
    /// limits of one handshake message until the peer has authenticated) and the connection until
    /// it ends. A refused handshake is logged with `tracing::warn`, rate-limited as for sockets the
    /// manager accepts itself (the address is not known here: these share one limit).
    ///
    /// Must be called within a tokio runtime, on a request from a hyper 1 server (axum 0.8
    /// included) whose connection is served with upgrades enabled.
    ///
    /// # Errors
    /// Only for a server-side mistake, never for a bad request (that gets an error response):
    /// [`Error::Config`] when the request carries no hyper upgrade handle (it did not come from a
    /// hyper HTTP/1 server), or when there is no tokio runtime to run the connection on.
    pub fn serve_upgrade<B>(&self, mut req: Request<B>) -> Result<Response<Full<Bytes>>, Error> {
        let key = match check_upgrade(&req, &self.config().route) {
            Ok(key) => key,
            Err(refusal) => {
                debug!(local = %self.name(), path = %req.uri().path(), "upgrade refused: {}", refusal.reason);
                return Ok(refusal.into_response());
            }
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::Config(format!("serve_upgrade needs a tokio runtime: {e}")))?;
        // Refused before the upgrade: the server's HTTP connection carries on, no socket is taken.
        let pending = match self.enter_handshake() {
            Ok(p) => p,
            Err(e) => {
                self.log_refusal(None, &e);
                return Ok(
                    Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
                );
            }
        };
        let on_upgrade = req.extensions_mut().remove::<OnUpgrade>().ok_or_else(|| {
            Error::Config(
                "the request has no hyper upgrade handle: serve_upgrade needs a request from a \
                 hyper 1 HTTP/1 server (or axum 0.8)"
                    .into(),
            )
        })?;
        drop(req);
        let manager = self.clone();
        runtime.spawn(async move {
            let timeout = manager.config().handshake_timeout;
            let upgraded = match tokio::time::timeout(timeout, on_upgrade).await {
                Ok(Ok(upgraded)) => upgraded,
                Ok(Err(e)) => {
                    let e = Error::Io(std::io::Error::other(format!("upgrade failed: {e}")));
                    manager.log_refusal(None, &e);
                    return;
                }
                Err(_) => {
                    let e = Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "the server did not hand over the upgraded socket within {timeout:?}"
                        ),
                    ));
                    manager.log_refusal(None, &e);
                    return;
                }
            };
            let io: BoxedTransport = Box::new(TokioIo::new(upgraded));
            if let Err(e) = manager.serve_raw_upgraded(io, pending).await {
                manager.log_refusal(None, &e);
            }
        });
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
        headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .map_err(|e| Error::Protocol(format!("Sec-WebSocket-Accept: {e}")))?;
        headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
        Ok(response)
    }
}

/// Why an upgrade request is refused, as the response to send.
struct Refusal {
    status: StatusCode,
    reason: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status;
        let mut response = Response::new(Full::new(Bytes::from(self.reason)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match status {
            StatusCode::UPGRADE_REQUIRED => {
                headers.insert(
                    http::header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
                headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(
                    http::header::CONNECTION,
                    HeaderValue::from_static("upgrade"),
                );
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                headers.insert(http::header::ALLOW, HeaderValue::from_static("GET"));
            }
            _ => {}
        }
        response
    }
}

/// Checks a WebSocket upgrade request (RFC 6455, section 4.2.1) on `route`; returns its
/// `Sec-WebSocket-Key`.
fn check_upgrade<B>(req: &Request<B>, route: &str) -> Result<String, Refusal> {
    let path = req.uri().path();
    if path != route {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!("no grid route at {path}"),
        ));
    }
    if req.method() != Method::GET {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("a WebSocket upgrade must be a GET, not {}", req.method()),
        ));
    }
    if req.version() != Version::HTTP_11 {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!(
                "a WebSocket upgrade needs HTTP/1.1, not {:?}",
                req.version()
            ),
        ));
    }
    let headers = req.headers();
    if !header_has_token(headers, http::header::UPGRADE, "websocket") {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "missing header Upgrade: websocket",
        ));
    }
    if !header_has_token(headers, http::header::CONNECTION, "upgrade") {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "missing header Connection: upgrade",
        ));
    }
    match headers.get(http::header::SEC_WEBSOCKET_VERSION) {
        Some(v) if v.as_bytes().trim_ascii() == b"13" => {}
        Some(v) => {
            return Err(Refusal::new(
                StatusCode::UPGRADE_REQUIRED,
                format!(
                    "unsupported Sec-WebSocket-Version {}: only 13 is supported",
                    String::from_utf8_lossy(v.as_bytes())
                ),
            ))
        }
        None => {
            return Err(Refusal::new(
                StatusCode::UPGRADE_REQUIRED,
                "missing header Sec-WebSocket-Version: 13",
            ))
        }
    }
    let key = headers
        .get(http::header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    match key {
        Some(k) => Ok(k.to_owned()),
        None => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "missing header Sec-WebSocket-Key",
        )),
    }
}

/// True when any `name` header holds `token` in its comma-separated list (case-insensitive).
fn header_has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_request() -> http::request::Builder {
        Request::builder()
            .method(Method::GET)
            .uri("/grid/v1")
            .header("Host", "example")
            .header("Upgrade", "websocket")
            .header("Connection", "keep-alive, Upgrade")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
    }

    fn status_of(req: &Request<()>) -> Option<StatusCode> {
        check_upgrade(req, "/grid/v1").err().map(|r| r.status)
    }

    #[test]
    fn a_good_request_passes_and_gives_its_key() {
        let req = upgrade_request().body(()).ok();
        let key = req.as_ref().map(|r| check_upgrade(r, "/grid/v1").ok());
        assert_eq!(key, Some(Some("dGhlIHNhbXBsZSBub25jZQ==".to_owned())));
        // The RFC 6455 example.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn bad_requests_get_their_status() {
        let cases: Vec<(http::request::Builder, StatusCode)> = vec![
            (upgrade_request().uri("/other"), StatusCode::NOT_FOUND),
            (
                upgrade_request().method(Method::POST),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                upgrade_request().version(Version::HTTP_10),
                StatusCode::BAD_REQUEST,
            ),
        ];
        for (builder, want) in cases {
            let req = builder.body(()).ok();
            assert_eq!(req.as_ref().and_then(status_of), Some(want));
        }
        let mut req = upgrade_request().body(()).ok();
        if let Some(r) = req.as_mut() {
            r.headers_mut()
                .insert("Sec-WebSocket-Version", HeaderValue::from_static("8"));
        }
        assert_eq!(
            req.as_ref().and_then(status_of),
            Some(StatusCode::UPGRADE_REQUIRED)
        );
        for drop_header in [
            "Upgrade",
            "Connection",
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Version",
        ] {
            let mut req = upgrade_request().body(()).ok();
            if let Some(r) = req.as_mut() {
                r.headers_mut().remove(drop_header);
            }
            let want = if drop_header == "Sec-WebSocket-Version" {
                StatusCode::UPGRADE_REQUIRED
            } else {
                StatusCode::BAD_REQUEST
            };
            assert_eq!(
                req.as_ref().and_then(status_of),
                Some(want),
                "{drop_header}"
            );
        }
    }

    #[test]
    fn routing_test_looks_at_path_and_upgrade_header() {
        let req = upgrade_request().body(()).ok();
        assert_eq!(req.map(|r| is_grid_upgrade(&r, "/grid/v1")), Some(true));
        let req = upgrade_request().uri("/health").body(()).ok();
        assert_eq!(req.map(|r| is_grid_upgrade(&r, "/grid/v1")), Some(false));
        let req = Request::builder().uri("/grid/v1").body(()).ok();
        assert_eq!(req.map(|r| is_grid_upgrade(&r, "/grid/v1")), Some(false));
    }
}
