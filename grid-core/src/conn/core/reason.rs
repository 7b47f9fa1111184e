//! Why a connection ends, and the life of a connection core, as types.
//!
//! A [`CloseReason`] records *who* ended a connection ([`Initiator`], after h2's `Initiator`) and
//! *what* happened ([`CloseKind`]); a protocol violation names the rule the peer broke
//! ([`ProtocolViolation`]). Nothing here is a string except the text a remote peer or the socket
//! library gave us, kept as it came.

use std::fmt;

use super::chunks::ChunkViolation;
use super::compress::CompressViolation;
use crate::frame::{FrameError, Op};
use crate::ids::MuxId;
use crate::table::TableError;

/// The life of one connection core.
///
/// ```text
///   Open ──drain() / a go-away from the peer──▶ Draining{local, remote} ──close(reason)──▶ Closed
///     │                                          (the other side's go-away adds its flag)    ▲
///     └──────────close(reason): a violation, a socket error, a kill, shutdown, ...───────────┘
/// ```
///
/// A task that cannot take the core's lock where it stands (it holds a stream's lock) asks the
/// shell to close instead; the shell closes on its next turn, and the first reason wins.
///
/// `Closed` is final: a reconnect builds a new core. Calls admitted before the close keep their
/// admission slots until their tasks have ended, so a node's count of running handlers is exact
/// even while a closed connection's handlers finish their cancel grace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// Frames flow; calls are admitted both ways.
    Open,
    /// Frames flow, but a node is leaving. `local`: this node drains — it refuses new calls
    /// from the peer (`ShuttingDown`) and closes once nothing is in flight. `remote`: the peer
    /// said it is going away — new calls to it fail at once with `GoingAway`, calls in flight
    /// carry on, and its calls to us are still served.
    Draining { local: bool, remote: bool },
    /// Over. Tables are empty; nothing more is sent.
    Closed(CloseReason),
}

/// Who ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Initiator {
    /// This node's application asked for it (shutdown, a replaced session, a kill).
    Local,
    /// The peer did (it closed the socket, went away, or said we broke the protocol).
    Remote,
    /// grid itself did, on this node: the peer broke the protocol, went silent, or stopped
    /// reading.
    Library,
}

/// Why a connection ended: who, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// Who ended it.
    pub initiator: Initiator,
    /// What happened.
    pub kind: CloseKind,
}

/// What ended a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseKind {
    /// The peer broke the protocol (ours to detect: [`Initiator::Library`]).
    Violation(ProtocolViolation),
    /// The peer said we broke the protocol (its go-away text).
    PeerReportedViolation(String),
    /// The peer closed the socket.
    SocketClosed,
    /// Reading or writing the socket failed (the transport's text).
    Io(String),
    /// No inbound traffic for the idle timeout.
    Idle,
    /// One write stayed unfinished for the write timeout: the peer stopped reading.
    WriteStalled,
    /// The peer made us queue control frames (pongs, credits, refusals) but never read them.
    ControlQueueFull,
    /// The peer is going away (its go-away text), or this node is shutting down.
    GoingAway(String),
    /// A newer connection to the same peer replaced this one.
    Replaced,
    /// Closed on request (`Connection::kill_socket`, fault injection).
    Killed,
    /// The manager shut down.
    Shutdown,
    /// The peer was removed from the membership.
    Removed,
    /// The tasks driving the socket stopped: their supervisor dropped them, or one of them
    /// panicked (a unary handler's first poll runs on the reader).
    DriverStopped,
}

/// A rule of the protocol the peer broke on the connection as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// A message or frame that does not decode.
    Frame(FrameError),
    /// A text WebSocket message (the protocol is binary only).
    TextMessage,
    /// An op travelling in the wrong direction for its mux id's parity (a `Request` on an id of
    /// our half, a `Response` on an id of the peer's half).
    WrongSide {
        /// The op.
        op: Op,
        /// The mux id.
        mux: MuxId,
    },
    /// A `Request` or `Open` on a mux id whose call is still live on this side.
    MuxReused {
        /// The mux id.
        mux: MuxId,
    },
    /// An op that has no meaning after the handshake (a handshake op, a frame of the wrong kind
    /// on the connection mux).
    UnexpectedOp {
        /// The op.
        op: Op,
    },
    /// A `Handlers` update that is malformed, repeats a route, or takes the peer's handler table
    /// past its bounds (`PROTOCOL.md` section 9).
    HandlerTable(TableError),
    /// A frame in parts (`Chunk`, `ChunkAbort`) that breaks their rules (`PROTOCOL.md` section
    /// 10).
    Chunk(ChunkViolation),
    /// A compressed frame that breaks their rules (`PROTOCOL.md` section 11).
    Compressed(CompressViolation),
}

impl CloseReason {
    pub(crate) fn new(initiator: Initiator, kind: CloseKind) -> CloseReason {
        CloseReason { initiator, kind }
    }

    pub(crate) fn library(kind: CloseKind) -> CloseReason {
        CloseReason::new(Initiator::Library, kind)
    }

    pub(crate) fn local(kind: CloseKind) -> CloseReason {
        CloseReason::new(Initiator::Local, kind)
    }

    pub(crate) fn remote(kind: CloseKind) -> CloseReason {
        CloseReason::new(Initiator::Remote, kind)
    }

    pub(crate) fn violation(v: ProtocolViolation) -> CloseReason {
        CloseReason::library(CloseKind::Violation(v))
    }

    /// True when the link ended because a node is leaving (a go-away or a shutdown): handlers
    /// are then told `ShuttingDown` rather than `Disconnected`.
    pub fn is_going_away(&self) -> bool {
        matches!(self.kind, CloseKind::GoingAway(_) | CloseKind::Shutdown)
    }
}

impl fmt::Display for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Initiator::Local => "local",
            Initiator::Remote => "remote",
            Initiator::Library => "library",
        })
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.kind, self.initiator)
    }
}

impl fmt::Display for CloseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseKind::Violation(v) => write!(f, "protocol violation: {v}"),
            CloseKind::PeerReportedViolation(t) => write!(f, "the peer reports a violation: {t}"),
            CloseKind::SocketClosed => f.write_str("the socket was closed"),
            CloseKind::Io(t) => write!(f, "i/o failed: {t}"),
            CloseKind::Idle => f.write_str("no traffic from the peer for the idle timeout"),
            CloseKind::WriteStalled => f.write_str("a write stalled: the peer stopped reading"),
            CloseKind::ControlQueueFull => {
                f.write_str("control queue full: the peer stopped reading")
            }
            CloseKind::GoingAway(t) if t.is_empty() => f.write_str("going away"),
            CloseKind::GoingAway(t) => write!(f, "going away: {t}"),
            CloseKind::Replaced => f.write_str("replaced by a new connection"),
            CloseKind::Killed => f.write_str("killed on request"),
            CloseKind::Shutdown => f.write_str("the manager shut down"),
            CloseKind::Removed => f.write_str("the peer was removed from the membership"),
            CloseKind::DriverStopped => f.write_str("the socket's driver stopped"),
        }
    }
}

impl fmt::Display for ProtocolViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolViolation::Frame(e) => write!(f, "{e}"),
            ProtocolViolation::TextMessage => f.write_str("text message"),
            ProtocolViolation::WrongSide { op, mux } => {
                write!(f, "{op:?} on mux {mux} from the wrong side")
            }
            ProtocolViolation::MuxReused { mux } => {
                write!(f, "mux {mux} opened while its call is live")
            }
            ProtocolViolation::UnexpectedOp { op } => {
                write!(f, "unexpected {op:?} after the handshake")
            }
            ProtocolViolation::HandlerTable(e) => write!(f, "bad handler table update: {e}"),
            ProtocolViolation::Chunk(e) => write!(f, "{e}"),
            ProtocolViolation::Compressed(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CloseReason {}
