//! The grid runtime: the frame codec, the per-call mux state machines, the connection driver and
//! the [`Manager`](crate::manager) that keeps one WebSocket per peer.
//!
//! Layers, bottom up (see `ARCHITECTURE.md`):
//! - [`frame`]: pure encode/decode of the wire protocol (`PROTOCOL.md`);
//! - [`mux`]: sans-IO state machines of unary calls and streams (time is an argument);
//! - the connection driver and manager, which put those on a real socket.

pub mod auth;
mod cancel;
pub mod config;
pub mod conn;
#[cfg(feature = "hyper")]
pub mod embed;
pub mod error;
pub mod frame;
pub mod handler;
pub mod handshake;
pub mod ids;
pub mod manager;
pub mod mux;
pub mod stream;
pub mod table;
#[cfg_attr(not(feature = "tls"), path = "tls_disabled.rs")]
pub mod tls;

pub use auth::{Authenticator, HmacAuth, Keyring};
pub use config::Config;
pub use conn::{
    BoxedTransport, CallOptions, ChunkViolation, ClientStream, CloseKind, CloseReason,
    CompressViolation, ConnState, Connection, ConnectionStats, DialFailure, HeldBytes, InFlight,
    Initiator, LinkEvent, LinkEvents, ProtocolViolation, StreamOptions, Transport,
    MAX_PARTIAL_FRAMES,
};
pub use error::{Error, RemoteError};
pub use frame::ErrorCode;
pub use handler::{Context, HandlerSpec};
pub use manager::{ClockFn, DialFn, DialTarget, Manager, ManagerBuilder, ManagerStats};
pub use mux::CancelCause;
pub use stream::{HandlerInput, HandlerOutput, StreamReceiver, StreamSender};
pub use table::Supported;
pub use tls::TlsConfig;

pub use ids::{HandlerId, MuxId};
