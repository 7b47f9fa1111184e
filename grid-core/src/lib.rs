//! The grid runtime: the connection driver and the [`Manager`] that keeps one WebSocket per
//! peer. Users name it through the `grid` facade, which re-exports this API and adds the typed
//! layer; the guide and the examples are there.
//!
//! Layers, bottom up (see `ARCHITECTURE.md`):
//! - `frame`: pure encode/decode of the wire protocol (`PROTOCOL.md`);
//! - `mux`: sans-IO state machines of unary calls and streams (time is an argument);
//! - `handshake`: the sans-IO hello/proof exchange that opens a connection;
//! - the connection driver and manager, which put those on a real socket.
//!
//! The first three (and `table`, the handler-table records) are no part of the API: they are
//! public only with the `unstable-internals` cargo feature, for the fuzz targets, the protocol
//! tests and wire tools, and change without notice.
//!
//! Types of other crates in the API are re-exported: [`Bytes`] (payloads), [`WebSocketStream`]
//! ([`Manager::accept_websocket`]) and, with the `tls` feature, [`rustls`] ([`TlsConfig::new`]).

#![deny(rustdoc::broken_intra_doc_links)]

mod auth;
mod cancel;
mod config;
mod conn;
#[cfg(feature = "hyper")]
pub mod embed;
mod error;
mod handler;
mod ids;
pub mod layer;
mod manager;
mod observe;
mod stream;
#[cfg_attr(not(feature = "tls"), path = "tls_disabled.rs")]
mod tls;

// The protocol layers under the runtime: the frame codec, the per-call state machines, the
// handshake and the handler-table records. They are public only with the `unstable-internals`
// feature, for the fuzz targets, the protocol tests and tools that speak the wire directly, and
// change without notice. Without it their test-and-tool-only items are unused and their `pub`
// items unreachable, which is as meant.
macro_rules! internal_modules {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "unstable-internals")]
        pub mod $name;
        #[cfg(not(feature = "unstable-internals"))]
        #[allow(unreachable_pub, dead_code, unused_imports)]
        mod $name;
    )*};
}
internal_modules!(frame, handshake, mux, table);

pub use auth::{Authenticator, HmacAuth, Keyring};
pub use config::Config;
pub use conn::{
    BoxedTransport, CallOptions, ChunkViolation, ClientStream, CloseKind, CloseReason,
    CompressViolation, ConnState, Connection, ConnectionStats, DialFailure, HeldBytes, InFlight,
    Initiator, LinkEvent, LinkEvents, ProtocolViolation, StreamOptions, Transport,
    MAX_PARTIAL_FRAMES,
};
pub use error::{Error, RemoteError};
pub use frame::{
    ErrorCode, FrameError, Metadata, MetadataError, MetadataLimits, Op, MAX_METADATA_KEY_LEN,
    MAX_METADATA_VALUE_LEN,
};
pub use handler::{Context, HandlerSpec};
pub use handshake::{dialer_of, HandshakeError, InstanceId, RejectCode};
pub use manager::{ClockFn, DialFn, DialTarget, Manager, ManagerBuilder, ManagerStats};
pub use mux::CancelCause;
pub use stream::{RequestReceiver, RequestSender, ResponseReceiver, ResponseSender};
pub use table::{Supported, TableError};
pub use tls::TlsConfig;

pub use ids::{HandlerId, MuxId};

pub use bytes::Bytes;
#[cfg(feature = "tls")]
pub use rustls;
pub use tokio_tungstenite::WebSocketStream;
