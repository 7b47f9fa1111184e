//! Sans-IO state machines of one multiplexed call ("mux"): the caller and callee halves of a unary
//! call and of a stream.
//!
//! Nothing here touches a socket, a task or a clock. Each machine takes frames in
//! (`handle_frame`), takes time in (`handle_timeout(now)`, `poll_timeout()`), and hands frames out
//! (`poll_transmit`) and messages out (`poll_recv`). They never block: a send without credit is
//! refused with the payload handed back, and the caller of the machine decides how to wait. The
//! connection driver wraps each machine in a mutex shared by the socket reader and the user-facing
//! handle; these machines are what make "the reader never waits for a user task" possible, because
//! every inbound frame is a bounded, non-blocking state change.
//!
//! Invariants every machine keeps:
//! - messages of one direction are delivered exactly once, in order, and before the outcome that
//!   ends the direction (a clean end, a remote error, a deadline, a disconnect); only a local
//!   cancellation drops what was queued, because the local side asked for that;
//! - the peer can never make a machine buffer more than the windows the machine granted (its
//!   message cap, and its byte window plus the one message that crosses it): a data frame
//!   without credit, a credit beyond the window or a sequence gap ends *that* mux with a
//!   [`Violation`], and leaves every other mux alone;
//! - once terminal, a machine ignores further frames (late frames are normal after a cancel).

mod flow;
mod route;
mod stream;
mod unary;

pub use route::{unknown_mux_reply, Direction, Role};
pub use stream::{
    CalleeLimits, OpenRequest, RecvChunk, RecvItem, StreamCallee, StreamCaller, StreamParams,
};
pub use unary::{UnaryCallee, UnaryCaller};

use std::fmt;

use bytes::Bytes;

use crate::frame::{ErrorRecord, Payload};

/// A payload handed back to the sender because it could not be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRejected {
    /// The payload, returned so the caller can retry or drop it.
    pub payload: Payload,
    /// Why.
    pub reason: SendRefusal,
}

/// Why a stream message could not be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendRefusal {
    /// No send credit right now: wait for the peer to grant more.
    NoCredit,
    /// This direction is closed (ended by us, or the mux is finished); it will never accept more.
    Closed,
}

/// Why a mux ended other than cleanly: what the user-facing handle reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxError {
    /// The remote side answered with an error record (a handler error, an unknown handler, ...).
    Remote(ErrorRecord),
    /// The local side cancelled the call.
    Cancelled,
    /// The call's deadline passed.
    Deadline,
    /// The connection carrying the call was lost.
    Disconnected,
    /// The peer stopped answering this mux's liveness pings.
    Unresponsive,
    /// The peer broke the protocol on this mux.
    Protocol(Violation),
    /// The peer sent more than this node's inbound byte budget for the connection holds (it
    /// kept sending into a full budget): the stream was failed to keep the node's memory
    /// bounded.
    BudgetExceeded,
    /// The peer's node is leaving (it drained or shut down) and the call did not finish before
    /// it closed the connection.
    GoingAway,
}

impl fmt::Display for MuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MuxError::Remote(rec) => write!(
                f,
                "remote error {:?}: {}",
                rec.code,
                String::from_utf8_lossy(&rec.message)
            ),
            MuxError::Cancelled => f.write_str("cancelled"),
            MuxError::Deadline => f.write_str("deadline exceeded"),
            MuxError::Disconnected => f.write_str("disconnected"),
            MuxError::Unresponsive => f.write_str("peer stopped answering stream pings"),
            MuxError::Protocol(v) => write!(f, "protocol violation: {v}"),
            MuxError::BudgetExceeded => f.write_str("inbound byte budget exceeded"),
            MuxError::GoingAway => f.write_str("the peer is going away"),
        }
    }
}

/// Why a callee's handler is being cancelled: what the handler's context reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelCause {
    /// The caller gave up (dropped its future or cancelled explicitly).
    CallerGaveUp,
    /// The call's deadline passed.
    Deadline,
    /// The connection to the caller dropped.
    Disconnected,
    /// This node or the caller's node is shutting down.
    ShuttingDown,
    /// The caller stopped pinging a long-lived stream.
    CallerUnresponsive,
    /// The caller broke the protocol on this stream.
    Protocol,
    /// The caller sent more than this node's inbound byte budget for the connection holds.
    Overloaded,
}

impl fmt::Display for CancelCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CancelCause::CallerGaveUp => "the caller gave up",
            CancelCause::Deadline => "the deadline passed",
            CancelCause::Disconnected => "the connection dropped",
            CancelCause::ShuttingDown => "shutting down",
            CancelCause::CallerUnresponsive => "the caller stopped pinging",
            CancelCause::Protocol => "the caller broke the protocol",
            CancelCause::Overloaded => "the caller overran the inbound byte budget",
        })
    }
}

// From a type of the protocol layers, which are internal: kept out of the API docs.
#[doc(hidden)]
impl From<crate::frame::CancelReason> for CancelCause {
    fn from(reason: crate::frame::CancelReason) -> CancelCause {
        unary::cause_of(reason)
    }
}

/// A protocol violation confined to one mux.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A data or end frame whose sequence number is not the next one expected.
    SequenceGap {
        /// The next sequence number we expected.
        expected: u32,
        /// The one that arrived.
        got: u32,
    },
    /// The peer sent data without credit.
    NoCredit,
    /// The peer granted more credit than the capacity we declared.
    CreditOverflow {
        /// The declared capacity.
        capacity: u32,
    },
    /// The peer gave back more window bytes than we had sent and not yet had credited.
    ByteCreditOverflow {
        /// Bytes we had in flight.
        in_flight: u64,
    },
    /// A frame that makes no sense in this state (data after end, a second ack, ...).
    Unexpected(&'static str),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::SequenceGap { expected, got } => {
                write!(f, "sequence gap: expected {expected}, got {got}")
            }
            Violation::NoCredit => f.write_str("data sent without credit"),
            Violation::CreditOverflow { capacity } => {
                write!(f, "credit beyond the declared capacity {capacity}")
            }
            Violation::ByteCreditOverflow { in_flight } => {
                write!(f, "byte credit beyond the {in_flight} bytes in flight")
            }
            Violation::Unexpected(what) => write!(f, "unexpected {what}"),
        }
    }
}

impl Violation {
    /// The error record sent to the peer that caused the violation.
    pub fn to_record(&self) -> ErrorRecord {
        ErrorRecord {
            code: crate::frame::ErrorCode::Protocol,
            message: Bytes::from(self.to_string()),
        }
    }
}
