//! The errors callers see.
//!
//! [`Error`] keeps apart the outcomes a caller must treat differently: the remote handler said no
//! ([`Error::Remote`]), the call could not be routed ([`Error::UnknownHandler`]), the link failed
//! ([`Error::Disconnected`], [`Error::NotConnected`]), time ran out ([`Error::Deadline`]), and the
//! caller itself gave up ([`Error::Cancelled`]). A stream that ends cleanly is not an error at all.

use std::fmt;

use bytes::Bytes;

use crate::frame::{ErrorCode, ErrorRecord, MetadataError};
use crate::handshake::HandshakeError;
use crate::ids::HandlerId;
use crate::mux::{MuxError, Violation};

/// An error returned by the remote side of a call: a code and its message.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// UTF-8 text, or for [`ErrorCode::Application`] the application's encoded error value.
    pub message: Bytes,
}

impl RemoteError {
    /// An application error carrying `message` (typically an encoded error value).
    pub fn application(message: impl Into<Bytes>) -> RemoteError {
        RemoteError {
            code: ErrorCode::Application,
            message: message.into(),
        }
    }

    /// An error with a code and a text message.
    pub fn text(code: ErrorCode, message: impl Into<String>) -> RemoteError {
        RemoteError {
            code,
            message: Bytes::from(message.into()),
        }
    }

    pub(crate) fn into_record(self) -> ErrorRecord {
        ErrorRecord {
            code: self.code,
            message: self.message,
        }
    }
}

// From a type of the protocol layers, which are internal: kept out of the API docs.
#[doc(hidden)]
impl From<ErrorRecord> for RemoteError {
    fn from(rec: ErrorRecord) -> RemoteError {
        RemoteError {
            code: rec.code,
            message: rec.message,
        }
    }
}

impl fmt::Debug for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteError")
            .field("code", &self.code)
            .field("message", &String::from_utf8_lossy(&self.message))
            .finish()
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}: {}",
            self.code,
            String::from_utf8_lossy(&self.message)
        )
    }
}

impl std::error::Error for RemoteError {}

/// Everything that can go wrong with a call, a connection or a manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The remote handler returned an error, or panicked, or refused the call.
    #[error("remote error: {0}")]
    Remote(RemoteError),
    /// The remote node has no handler for this id (or not under this subroute). It said so in
    /// reply to the call, or, when its handler table is complete and lacks the handler, the call
    /// failed at once with nothing sent (see [`Connection::supports`](crate::Connection::supports)).
    #[error("no handler {handler} (subroute {subroute:?}) on the remote node")]
    UnknownHandler {
        /// The handler called.
        handler: HandlerId,
        /// The subroute called, if any.
        subroute: Option<String>,
    },
    /// The connection dropped while the call was in flight.
    #[error("disconnected from {peer} while the call was in flight")]
    Disconnected {
        /// The peer.
        peer: String,
    },
    /// The peer's node is leaving — it is draining or shutting down: it takes no new calls, and
    /// a call that did not finish before it closed ends with this. Distinct from
    /// [`Error::Disconnected`] (a crash or a broken link); retry on another node.
    #[error("{peer} is going away")]
    GoingAway {
        /// The peer.
        peer: String,
    },
    /// There is no live connection to the peer right now, so the call was not sent.
    #[error("not connected to {peer}")]
    NotConnected {
        /// The peer.
        peer: String,
    },
    /// The call's deadline passed.
    #[error("deadline exceeded")]
    Deadline,
    /// The call was cancelled locally.
    #[error("cancelled")]
    Cancelled,
    /// The peer stopped answering a long-lived stream's pings.
    #[error("the peer stopped answering stream pings")]
    Unresponsive,
    /// The peer kept sending into this node's full inbound byte budget for the connection
    /// (`Config::max_inbound_bytes`), so the stream was failed; the connection is unaffected.
    #[error("the inbound byte budget for the connection is full")]
    BudgetExceeded,
    /// A payload larger than the configured limit.
    #[error("payload of {len} bytes exceeds the limit of {limit}")]
    PayloadTooLarge {
        /// The payload's size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The call's metadata is over this node's limits or the peer's, or the peer (an older
    /// version) takes none: the call was not sent.
    #[error("metadata: {0}")]
    Metadata(#[from] MetadataError),
    /// A client-side layer failed the call with an error of its own (see
    /// [`crate::layer`]); a layer's [`Error`] passes through as it is instead.
    #[error("middleware: {0}")]
    Middleware(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The peer broke the protocol on this call.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The name is not one of this manager's peers.
    #[error("unknown peer {0:?}")]
    UnknownPeer(String),
    /// The manager is shutting down or stopped.
    #[error("the manager is shut down")]
    Shutdown,
    /// A handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// An incoming socket was refused before its handshake: `limit` handshakes were already in
    /// progress ([`Config::max_pending_handshakes`](crate::Config::max_pending_handshakes)).
    #[error("refused: {limit} handshakes already in progress")]
    TooManyHandshakes {
        /// The configured cap.
        limit: usize,
    },
    /// A handler could not be registered.
    #[error("registration failed: {0}")]
    Registration(String),
    /// Bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A socket error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The payload could not be encoded or decoded (typed layer).
    #[error("codec error: {0}")]
    Codec(String),
}

impl Error {
    /// True when the link failed (in flight or before sending): worth retrying on another peer.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            Error::Disconnected { .. }
                | Error::NotConnected { .. }
                | Error::Unresponsive
                | Error::GoingAway { .. }
        )
    }

    pub(crate) fn from_mux(
        err: MuxError,
        peer: &str,
        handler: HandlerId,
        subroute: Option<&str>,
    ) -> Error {
        match err {
            MuxError::Remote(rec) => match rec.code {
                ErrorCode::UnknownHandler | ErrorCode::UnknownSubroute => Error::UnknownHandler {
                    handler,
                    subroute: subroute.map(str::to_owned),
                },
                ErrorCode::Deadline => Error::Deadline,
                ErrorCode::ShuttingDown => Error::GoingAway {
                    peer: peer.to_owned(),
                },
                _ => Error::Remote(rec.into()),
            },
            MuxError::Cancelled => Error::Cancelled,
            MuxError::Deadline => Error::Deadline,
            MuxError::Disconnected => Error::Disconnected {
                peer: peer.to_owned(),
            },
            MuxError::Unresponsive => Error::Unresponsive,
            MuxError::Protocol(v) => Error::Protocol(v.to_string()),
            MuxError::BudgetExceeded => Error::BudgetExceeded,
            MuxError::GoingAway => Error::GoingAway {
                peer: peer.to_owned(),
            },
        }
    }
}

// From a type of the protocol layers, which are internal: kept out of the API docs.
#[doc(hidden)]
impl From<Violation> for Error {
    fn from(v: Violation) -> Error {
        Error::Protocol(v.to_string())
    }
}
