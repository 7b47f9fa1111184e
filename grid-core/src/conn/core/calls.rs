//! What the connection core and its shell say to each other: the handles the core keeps for the
//! shell, the router it asks, the calls it admits and the events it emits.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::conn::slot::Shared;
use crate::frame::{ErrorRecord, Metadata, MetadataLimits, Payload, Route};
use crate::ids::MuxId;
use crate::mux::{CancelCause, MuxError, StreamCallee, UnaryCallee};

use super::CloseReason;

/// The shell's handles the core stores for it and hands back in events.
pub(crate) trait Handles {
    /// Completes a unary call this side started.
    type Reply;
    /// Cancels a call this side serves (the handler's context watches it).
    type Cancel: Clone + Default;
}

/// Whether a new call is a unary call or a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    Unary,
    Stream,
}

/// Finds the handler of a new call, or the refusal to send.
pub(crate) trait Router {
    /// What the shell needs to run the call.
    type Handler;
    /// The handler for `route`, of `kind`.
    ///
    /// # Errors
    /// The record refusing the call (unknown handler or subroute, wrong kind).
    fn route(&self, route: &Route, kind: CallKind) -> Result<Self::Handler, ErrorRecord>;
}

/// The identity of one admitted call: its mux id and a generation no other call shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CallKey {
    pub(crate) mux: MuxId,
    pub(super) generation: u64,
}

/// The bounds the core enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CoreLimits {
    /// Admitted calls at once (running, in cancel grace, or writing their last frame).
    pub(crate) max_incoming_calls: usize,
    /// Largest input capacity a caller may ask for.
    pub(crate) max_stream_capacity: u32,
    /// Silence after which a served long-lived stream is given up.
    pub(crate) stream_liveness_timeout: Duration,
    /// The metadata one call may carry; a call over it is refused (`TooLarge`).
    pub(crate) metadata: MetadataLimits,
    /// Largest payload of a frame, one that arrives in parts included.
    pub(crate) max_payload: usize,
    /// The peer agreed to send large frames in parts (`Chunk` frames).
    pub(crate) chunks: bool,
    /// The peer agreed to send compressed requests and responses.
    pub(crate) compression: bool,
}

impl CoreLimits {
    /// The most bytes a metadata block within these limits takes on the wire: its count, and
    /// per entry its key and value lengths, then the keys and values.
    pub(crate) fn metadata_wire_max(&self) -> usize {
        2 + self.metadata.entries.saturating_mul(3) + self.metadata.bytes
    }
}

/// What the core tells the shell.
pub(crate) enum Event<H: Handles> {
    /// A unary call this side started is over.
    Reply(H::Reply, Result<Payload, MuxError>),
    /// A call this side serves must stop.
    Cancel(H::Cancel, CancelCause),
    /// A connection-level pong arrived with this nonce.
    Pong(u64),
    /// The peer said it is going away (a go-away that is not a violation).
    PeerLeaving,
    /// The peer has read this many more bytes of the parts this side sent.
    ChunksRead(u32),
    /// The connection is closed (always the last event).
    Closed(CloseReason),
}

/// A call the peer asked for and the core admitted: the shell runs it, then calls
/// [`ConnCore::finish`] with its key.
pub(crate) struct Start<D, C> {
    pub(crate) key: CallKey,
    pub(crate) route: Route,
    pub(crate) handler: D,
    pub(crate) cancel: C,
    pub(crate) deadline: Option<Instant>,
    pub(crate) metadata: Metadata,
    pub(crate) payload: Bytes,
    pub(crate) kind: StartKind,
}

/// The machine of an admitted call.
pub(crate) enum StartKind {
    Unary(UnaryCallee),
    Stream {
        shared: Shared<StreamCallee>,
        input: bool,
    },
}

/// Counts of calls in flight on one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InFlight {
    /// Unary calls this side started and is waiting for.
    pub unary_out: usize,
    /// Streams this side opened.
    pub streams_out: usize,
    /// Unary calls this side is serving.
    pub unary_in: usize,
    /// Streams this side is serving.
    pub streams_in: usize,
    /// Handler tasks holding an admission slot: the served calls above plus those whose call is
    /// over but whose task has not ended yet (cancel grace, writing the last frame).
    pub handlers: usize,
}

/// Adds every count (a manager's totals are its connections' sums).
impl std::ops::AddAssign for InFlight {
    fn add_assign(&mut self, other: InFlight) {
        let InFlight {
            unary_out,
            streams_out,
            unary_in,
            streams_in,
            handlers,
        } = other;
        self.unary_out += unary_out;
        self.streams_out += streams_out;
        self.unary_in += unary_in;
        self.streams_in += streams_in;
        self.handlers += handlers;
    }
}

impl InFlight {
    /// Calls in both tables (handler tasks not counted twice).
    pub fn total(&self) -> usize {
        self.unary_out + self.streams_out + self.unary_in + self.streams_in
    }
}

/// Which lane of the outbound queue a frame from the core goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Ahead of bulk data: pongs, credits, acks, cancels, refusals of new calls, go-aways.
    Control,
    /// Behind the data already queued for its mux: the `End` or `Error` that finishes a stream
    /// on the callee's side, so it can never overtake the messages before it.
    AfterData,
}

impl Lane {
    pub(crate) fn of_stream_frame(frame: &crate::frame::Frame) -> Lane {
        match frame {
            crate::frame::Frame::End { .. } | crate::frame::Frame::Error { .. } => Lane::AfterData,
            _ => Lane::Control,
        }
    }
}
