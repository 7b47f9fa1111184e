//! The connection core: everything one connection knows about its calls, with no IO.
//!
//! [`ConnCore`] takes frames in ([`handle_frame`](ConnCore::handle_frame)) and time in
//! ([`handle_timeout`](ConnCore::handle_timeout)), and gives frames out
//! ([`poll_transmit`](ConnCore::poll_transmit)) and events out
//! ([`poll_event`](ConnCore::poll_event)): a reply for a call this side started, a cancellation
//! for a call it serves, a pong, the close. A new call the peer may run comes back from
//! `handle_frame` as a [`Start`], which the IO shell turns into a task. It owns:
//!
//! - **the two call tables**: calls this side started (`calls`) and calls it serves (`served`),
//!   keyed by mux id, whose parity says which side allocated it;
//! - **the mux-id rule**: a `Request`/`Open` on an id whose call is live here is a violation that
//!   closes the connection; an id whose call was cancelled may be reused at once (its handler may
//!   still be in its cancel grace). Every admitted call gets a [`CallKey`] with a generation, and
//!   only that key can remove the call's entry or release its slot, so a reused id can never make
//!   an old call's ending remove the new call;
//! - **admission**: a call holds its slot from admission until its task reports
//!   [`finish`](ConnCore::finish) — after its cancel grace, its panic, its last frame queued.
//!   At `max_incoming_calls` slots, or with the byte [`Budget`] full, new calls are refused with
//!   `Overloaded` and nothing is spawned;
//! - **budgets**: request payloads of running calls and buffered stream messages are charged to
//!   the connection's inbound budget; a stream that would take it past twice its bound is failed
//!   (see [`Slot::settle`]);
//! - **the lifecycle** ([`Lifecycle`]) and its typed [`CloseReason`];
//! - **the handler tables** (`PROTOCOL.md` section 9): what the peer announced it serves (a
//!   [`HandlerTable`], grown by its `Handlers` updates, answering [`peer_supports`] for the
//!   fail-fast of new calls) and how much of this node's own table the peer was told.
//!
//! [`peer_supports`]: ConnCore::peer_supports
//!
//! No tokio, no spawning, no clock: the shell (`session.rs`, `serve.rs`, `driver.rs`) drives it,
//! and `tests.rs` drives it frame by frame with no socket at all.

mod calls;
mod chunks;
mod compress;
mod ending;
#[cfg(test)]
mod hash_tests;
mod reason;
mod tables;
#[cfg(test)]
mod tests;
mod timers;

pub use calls::InFlight;
pub(crate) use calls::{
    CallKey, CallKind, CoreLimits, Event, Handles, Lane, Router, Start, StartKind,
};
pub use chunks::{ChunkViolation, MAX_PARTIAL_FRAMES};
pub use compress::CompressViolation;
pub(crate) use compress::{compress, worth_compressing};
pub(crate) use reason::Lifecycle;
pub use reason::{CloseKind, CloseReason, Initiator, ProtocolViolation};

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::budget::Budget;
use super::slot::{data_len, Machine, Shared, Slot, Wake};
use crate::frame::Op;
use crate::frame::{
    decode_frame_bytes, ErrorCode, ErrorRecord, Frame, Limits, Metadata, Payload, Route,
};
use crate::ids::MuxId;
use crate::mux::{
    unknown_mux_reply, CalleeLimits, CancelCause, Direction, MuxError, OpenRequest, Role,
    StreamCallee, StreamCaller, UnaryCallee,
};
use crate::table::HandlerTable;
use chunks::{FirstPart, Keep, Part, Reassembly};
use timers::TimerHeap;

/// The shortest time between two walks of the unary calls for deadlines (tokio's timers are as
/// coarse).
const UNARY_STEP: std::time::Duration = std::time::Duration::from_millis(1);

/// Time between two walks per call in the table, beyond [`UNARY_STEP`]: a walk looks at each
/// call for a few nanoseconds, so walks take at most about 1 % of a core however many calls a
/// silent peer leaves waiting (100,000 calls: a walk every 50 ms at most).
const UNARY_STEP_PER_CALL: std::time::Duration = std::time::Duration::from_nanos(500);

/// Ops whose frames keep their order with a frame of the same mux sent in parts: the sender
/// queues them behind it, so one that arrives in the middle of its parts breaks the rules.
fn carries_data(frame: &Frame) -> bool {
    matches!(
        frame,
        Frame::Request { .. }
            | Frame::Response { .. }
            | Frame::Open { .. }
            | Frame::Data { .. }
            | Frame::Items { .. }
            | Frame::End { .. }
            | Frame::Compressed { .. }
    )
}

enum Outgoing<H: Handles> {
    /// A unary call and its deadline (none: a timeout too long for the clock).
    Unary(H::Reply, Option<Instant>),
    Stream(Shared<StreamCaller>),
}

struct Served<H: Handles> {
    generation: u64,
    kind: ServedKind<H>,
}

enum ServedKind<H: Handles> {
    Unary(H::Cancel),
    Stream(Shared<StreamCallee>, H::Cancel),
}

/// What a stream machine is handed: one frame, a run of `Data` frames of its mux, or the news
/// that a message of it in parts overran the budget.
enum Inbound<'a> {
    One(Frame),
    /// A run of data messages (sequence number, payload), taken from the start.
    Data(&'a mut Vec<(u32, Payload)>),
    OverBudget,
}

/// Hashes a call generation with one multiply (Fibonacci hashing, so the high bits the table's
/// tags use vary too). Generations are unique and ours, and no peer names one, so no lookup
/// walks a run of slots the peer built (it chooses which calls stay, as their handlers run
/// until it cancels them, but only our own lookups and inserts then cost more). Mux ids keep
/// the keyed default hash (see [`CallsHasher`]).
#[derive(Debug, Default)]
struct Generations(u64);

impl Hasher for Generations {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for `u64` keys; anything else folds in, byte by byte.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The hasher of the calls this side makes: keyed, as the peer's ids are. Their mux ids are
/// ours, but which of them stay in the table is the peer's choice (it answers the calls it
/// likes and leaves the others pending), so with a hash it can compute it could keep only
/// calls with one home slot and make every lookup of an id it names walk all of them.
type CallsHasher = std::collections::hash_map::RandomState;

/// Bytes a new call holds while its handler runs: its request payload and its metadata (both
/// slices of the message they arrived in).
fn charge_of(metadata: &Metadata, payload: &Payload) -> usize {
    metadata.encoded_len() + payload.as_ref().map_or(0, Bytes::len)
}

/// One connection's calls, rules and budgets.
pub(crate) struct ConnCore<H: Handles> {
    role: Role,
    limits: CoreLimits,
    life: Lifecycle,
    next_mux: u32,
    next_generation: u64,
    /// The calls this side makes, by the mux ids it allocated.
    calls: HashMap<MuxId, Outgoing<H>, CallsHasher>,
    served: HashMap<MuxId, Served<H>>,
    /// Every admitted call whose task has not finished: generation → (mux, bytes charged).
    /// Generations are ours (sequential), so they need no keyed hash.
    admitted: HashMap<u64, (MuxId, usize), BuildHasherDefault<Generations>>,
    budget: Arc<Budget>,
    timers: TimerHeap,
    /// When the next walk of the unary calls for deadlines is due: no deadline in `calls` is
    /// earlier, unless it is earlier than `unary_walk_after` too (see
    /// [`expire_unary`](Self::expire_unary)).
    unary_due: Option<Instant>,
    /// The earliest the next walk may come: the last walk's time plus its step.
    unary_walk_after: Option<Instant>,
    timer_moved: bool,
    transmit: VecDeque<(Frame, Lane)>,
    backlog_full: bool,
    events: VecDeque<Event<H>>,
    /// What the peer announced it serves; `None` for a peer that announces no table (an older
    /// node), which then gets no `Handlers` frames either.
    peer_table: Option<HandlerTable>,
    /// How many of this node's registrations the peer was told about, in registration order.
    announced: usize,
    /// The peer's frames that are arriving in parts.
    reasm: Reassembly,
}

impl<H: Handles> std::fmt::Debug for ConnCore<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnCore")
            .field("role", &self.role)
            .field("life", &self.life)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl<H: Handles> ConnCore<H> {
    pub(crate) fn new(role: Role, limits: CoreLimits, budget: Arc<Budget>) -> ConnCore<H> {
        ConnCore {
            role,
            limits,
            life: Lifecycle::Open,
            next_mux: role.first_id(),
            next_generation: 1,
            calls: HashMap::default(),
            served: HashMap::new(),
            admitted: HashMap::default(),
            budget,
            timers: TimerHeap::default(),
            unary_due: None,
            unary_walk_after: None,
            timer_moved: false,
            transmit: VecDeque::new(),
            backlog_full: false,
            events: VecDeque::new(),
            peer_table: None,
            announced: 0,
            reasm: Reassembly::default(),
        }
    }

    /// True until the core is closed: frames flow (a drain included).
    pub(crate) fn is_open(&self) -> bool {
        !matches!(self.life, Lifecycle::Closed(_))
    }

    pub(crate) fn close_reason(&self) -> Option<&CloseReason> {
        match &self.life {
            Lifecycle::Closed(r) => Some(r),
            _ => None,
        }
    }

    pub(crate) fn in_flight(&self) -> InFlight {
        let mut n = InFlight {
            handlers: self.admitted.len(),
            ..InFlight::default()
        };
        for c in self.calls.values() {
            match c {
                Outgoing::Unary(..) => n.unary_out += 1,
                Outgoing::Stream(_) => n.streams_out += 1,
            }
        }
        for c in self.served.values() {
            match c.kind {
                ServedKind::Unary(_) => n.unary_in += 1,
                ServedKind::Stream(..) => n.streams_in += 1,
            }
        }
        n
    }

    /// Calls in both tables: a cheap hint of how busy the connection is.
    pub(crate) fn activity(&self) -> usize {
        self.calls.len() + self.served.len()
    }

    /// The next frame to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<(Frame, Lane)> {
        self.transmit.pop_front()
    }

    fn push_control(&mut self, frame: Frame) {
        self.transmit.push_back((frame, Lane::Control));
    }

    /// Tells the core whether the socket's data lane is at its bound: while it is, the peer is
    /// not reading what it is owed, and new calls are refused.
    pub(crate) fn set_backlog_full(&mut self, full: bool) {
        self.backlog_full = full;
    }

    /// The next event for the shell.
    pub(crate) fn poll_event(&mut self) -> Option<Event<H>> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.next(), self.unary_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True once since the last call if a timer earlier than the previous earliest was set.
    pub(crate) fn take_timer_moved(&mut self) -> bool {
        std::mem::take(&mut self.timer_moved)
    }

    fn schedule(&mut self, mux: MuxId, at: Option<Instant>) {
        match at {
            Some(t) => self.timer_moved |= self.timers.schedule(mux, t),
            None => self.timers.cancel(mux),
        }
    }

    // ---- calls this side starts ------------------------------------------------------------

    fn alloc_mux(&mut self) -> MuxId {
        loop {
            let id = self.next_mux;
            self.next_mux = self.next_mux.wrapping_add(2);
            let mux = MuxId(id);
            // Not an id whose last response is still arriving in parts either.
            if id != 0
                && self.role.allocated(mux)
                && !self.calls.contains_key(&mux)
                && !self.reasm.holds(mux)
            {
                return mux;
            }
        }
    }

    /// Registers a unary call that fails with [`MuxError::Deadline`] at `deadline` (if any)
    /// unless it ended before; `Err` hands `reply` back when the connection is closed. The caller checks
    /// [`peer_supports`](Self::peer_supports) first, under the same lock.
    ///
    /// A call that times out here only fails: the caller tells the callee (takes its request
    /// back, or sends a `Cancel`), since only it knows whether its request was queued yet.
    pub(crate) fn register_unary(
        &mut self,
        reply: H::Reply,
        deadline: Option<Instant>,
    ) -> Result<MuxId, H::Reply> {
        if !self.is_open() || self.peer_leaving() {
            return Err(reply);
        }
        let mux = self.alloc_mux();
        self.calls.insert(mux, Outgoing::Unary(reply, deadline));
        // A deadline sooner than the next walk brings the walk forward, but never to within a
        // step of the last one.
        let walk = deadline.map(|d| self.unary_walk_after.map_or(d, |after| d.max(after)));
        if let Some(walk) = walk.filter(|w| self.unary_due.is_none_or(|t| *w < t)) {
            self.timer_moved |= self.poll_timeout().is_none_or(|t| walk < t);
            self.unary_due = Some(walk);
        }
        Ok(mux)
    }

    /// Forgets a unary call that ended locally; true if it was still pending (the callee must
    /// be told).
    pub(crate) fn forget_unary(&mut self, mux: MuxId) -> bool {
        if matches!(self.calls.get(&mux), Some(Outgoing::Unary(..))) {
            self.calls.remove(&mux);
            self.reasm.discard(mux, &self.budget);
            return true;
        }
        false
    }

    /// Registers a stream this side opens; `make` builds the machine and its `Open` frame.
    pub(crate) fn register_stream(
        &mut self,
        make: impl FnOnce(MuxId) -> (StreamCaller, Frame),
    ) -> Option<(Shared<StreamCaller>, Frame)> {
        if !self.is_open() || self.peer_leaving() {
            return None;
        }
        let mux = self.alloc_mux();
        let (machine, open) = make(mux);
        let first = machine.poll_timeout();
        let shared = Slot::shared(machine, self.budget.clone());
        self.calls.insert(mux, Outgoing::Stream(shared.clone()));
        self.schedule(mux, first);
        Some((shared, open))
    }

    /// Forgets a stream this side opened.
    pub(crate) fn forget_stream(&mut self, mux: MuxId) {
        if matches!(self.calls.get(&mux), Some(Outgoing::Stream(_))) {
            self.calls.remove(&mux);
            self.timers.cancel(mux);
            self.reasm.discard(mux, &self.budget);
        }
    }

    // ---- inbound frames ---------------------------------------------------------------------

    /// Takes one inbound frame. A new call the peer may run comes back as a [`Start`]; replies,
    /// refusals and cancellations go to [`poll_transmit`](Self::poll_transmit) and
    /// [`poll_event`](Self::poll_event). A connection-level violation closes the core.
    pub(crate) fn handle_frame<R: Router>(
        &mut self,
        frame: Frame,
        now: Instant,
        router: &R,
    ) -> Option<Start<R::Handler, H::Cancel>> {
        if !self.is_open() {
            return None;
        }
        let frame = match frame {
            // The reader hands these on as runs (`handle_data_run`); taken here too, the same way.
            Frame::Items { mux, seq, items } => {
                let mut run = (0u32..)
                    .zip(items)
                    .map(|(i, item)| (seq.wrapping_add(i), Some(item)))
                    .collect();
                self.handle_data_run(Op::Items, mux, &mut run, now);
                return None;
            }
            Frame::Chunk { mux, bytes } => return self.on_chunk(mux, bytes, now, router),
            Frame::ChunkAbort { mux } => {
                let aborted = if self.limits.chunks {
                    self.reasm.abort(mux, &self.budget)
                } else {
                    Err(ChunkViolation::NotAgreed)
                };
                if let Err(v) = aborted {
                    self.violate(ProtocolViolation::Chunk(v));
                }
                return None;
            }
            frame if !self.reasm.is_empty() && carries_data(&frame) => {
                let mux = frame.mux();
                if self.reasm.holds(mux) {
                    let op = frame.op();
                    self.violate(ProtocolViolation::Chunk(ChunkViolation::Interleaved {
                        mux,
                        op,
                    }));
                    return None;
                }
                frame
            }
            frame => frame,
        };
        if let Frame::Compressed {
            mux,
            raw_len,
            block,
        } = frame
        {
            return self.on_compressed(mux, raw_len, &block, now, router);
        }
        match Direction::of(self.role, &frame) {
            Err(op) => {
                let mux = frame.mux();
                self.violate(ProtocolViolation::WrongSide { op, mux });
                None
            }
            Ok(Direction::Connection) => {
                self.on_connection_frame(frame);
                None
            }
            Ok(dir @ Direction::Outgoing(mux)) => {
                self.on_outgoing(dir, mux, frame, now);
                None
            }
            Ok(dir @ Direction::Incoming(mux)) => self.on_incoming(dir, mux, frame, now, router),
        }
    }

    /// One part of a frame in parts; once it is whole, the frame is handled like any other.
    fn on_chunk<R: Router>(
        &mut self,
        mux: MuxId,
        bytes: Bytes,
        now: Instant,
        router: &R,
    ) -> Option<Start<R::Handler, H::Cancel>> {
        if !self.limits.chunks {
            self.violate(ProtocolViolation::Chunk(ChunkViolation::NotAgreed));
            return None;
        }
        // Read: the sender may put as many more bytes of parts in flight (section 10.4).
        if let Ok(bytes @ 1..) = u32::try_from(bytes.len()) {
            self.push_control(Frame::ChunkAck { bytes });
        }
        let max_payload = self.limits.max_payload;
        let mut refuse = false;
        let (calls, served, budget) = (&self.calls, &self.served, &self.budget);
        let ours = self.role.allocated(mux);
        let keep = |first: FirstPart| match first.op {
            // A new call is admitted by its size now, as a whole one is when it arrives (a
            // compressed frame on the peer's mux is a request, by its compressed size).
            Op::Request | Op::Open if budget.admits(first.payload) => Keep::Reserve,
            Op::Compressed if !ours && budget.admits(first.payload) => Keep::Reserve,
            Op::Request | Op::Open => {
                refuse = true;
                Keep::Discard
            }
            Op::Compressed if !ours => {
                refuse = true;
                Keep::Discard
            }
            Op::Response | Op::Compressed
                if matches!(calls.get(&mux), Some(Outgoing::Unary(..))) =>
            {
                Keep::Free
            }
            Op::Data if ours && matches!(calls.get(&mux), Some(Outgoing::Stream(_))) => {
                Keep::PerPart
            }
            Op::Data
                if !ours
                    && matches!(
                        served.get(&mux),
                        Some(Served {
                            kind: ServedKind::Stream(..),
                            ..
                        })
                    ) =>
            {
                Keep::PerPart
            }
            _ => Keep::Discard,
        };
        let metadata = self.limits.metadata_wire_max();
        let part = self
            .reasm
            .part(mux, bytes, (max_payload, metadata), budget, keep);
        if refuse {
            self.push_control(Frame::Error {
                mux,
                error: ErrorRecord::text(
                    ErrorCode::Overloaded,
                    "the byte budget for this connection is full",
                ),
            });
        }
        match part {
            Ok(Part::Pending) => None,
            Ok(Part::OverBudget) => {
                self.deliver_to_stream(mux, Inbound::OverBudget, now);
                None
            }
            Ok(Part::Whole(whole)) => {
                match decode_frame_bytes(whole, &Limits::for_payload(max_payload)) {
                    // The first part's header named one of the ops that may travel in parts, on
                    // this mux: the frame cannot be another chunk.
                    Ok(frame) => self.handle_frame(frame, now, router),
                    Err(e) => {
                        self.violate(ProtocolViolation::Frame(e));
                        None
                    }
                }
            }
            Err(v) => {
                self.violate(ProtocolViolation::Chunk(v));
                None
            }
        }
    }

    /// A compressed request or response: decompressed within the payload limit, then handled
    /// like any frame.
    fn on_compressed<R: Router>(
        &mut self,
        mux: MuxId,
        raw_len: u32,
        block: &[u8],
        now: Instant,
        router: &R,
    ) -> Option<Start<R::Handler, H::Cancel>> {
        if !self.limits.compression {
            self.violate(ProtocolViolation::Compressed(CompressViolation::NotAgreed));
            return None;
        }
        let max_payload = self.limits.max_payload;
        let metadata = self.limits.metadata_wire_max();
        let whole = match compress::decompress(mux, raw_len, block, (max_payload, metadata)) {
            Ok(whole) => whole,
            Err(v) => {
                self.violate(ProtocolViolation::Compressed(v));
                return None;
            }
        };
        match decode_frame_bytes(whole, &Limits::for_payload(max_payload)) {
            // Checked by its header: a request or response of this mux, never another
            // compressed frame.
            Ok(frame) => self.handle_frame(frame, now, router),
            Err(e) => {
                self.violate(ProtocolViolation::Frame(e));
                None
            }
        }
    }

    fn on_connection_frame(&mut self, frame: Frame) {
        match frame {
            Frame::Ping { nonce, .. } => self.push_control(Frame::Pong {
                mux: MuxId::CONNECTION,
                nonce,
            }),
            Frame::Pong { nonce, .. } => self.events.push_back(Event::Pong(nonce)),
            Frame::GoAway { error } if error.code == ErrorCode::Protocol => {
                let text = String::from_utf8_lossy(&error.message).into_owned();
                self.close(CloseReason::remote(CloseKind::PeerReportedViolation(text)));
            }
            Frame::Handlers { update } => self.on_handlers(&update),
            Frame::ChunkAck { bytes } if self.limits.chunks => {
                self.events.push_back(Event::ChunksRead(bytes));
            }
            Frame::ChunkAck { .. } => {
                self.violate(ProtocolViolation::Chunk(ChunkViolation::NotAgreed));
            }
            Frame::GoAway { .. } => {
                // The peer is leaving: no new calls to it; what is in flight carries on until
                // it closes the socket.
                let local = self.draining_locally();
                if !self.peer_leaving() {
                    self.life = Lifecycle::Draining {
                        local,
                        remote: true,
                    };
                    self.events.push_back(Event::PeerLeaving);
                }
            }
            other => self.violate(ProtocolViolation::UnexpectedOp { op: other.op() }),
        }
    }

    fn on_outgoing(&mut self, dir: Direction, mux: MuxId, frame: Frame, now: Instant) {
        match self.calls.get(&mux) {
            None => {
                if let Some(reply) = unknown_mux_reply(dir, &frame) {
                    self.push_control(reply);
                }
            }
            Some(Outgoing::Unary(..)) => {
                let result = match frame {
                    Frame::Response { result, .. } => result.map_err(MuxError::Remote),
                    Frame::Error { error, .. } => Err(MuxError::Remote(error)),
                    // Credits, data or pings for a unary call: late or meaningless, ignored.
                    _ => return,
                };
                if let Some(Outgoing::Unary(reply, _)) = self.calls.remove(&mux) {
                    self.events.push_back(Event::Reply(reply, result));
                }
            }
            Some(Outgoing::Stream(shared)) => {
                let shared = shared.clone();
                self.deliver_to_caller(mux, &shared, Inbound::One(frame), now);
            }
        }
    }

    /// Hands frames to a stream this side opened; forgets it once it is over.
    fn deliver_to_caller(
        &mut self,
        mux: MuxId,
        shared: &Shared<StreamCaller>,
        frames: Inbound<'_>,
        now: Instant,
    ) {
        let mut slot = shared.lock();
        self.deliver(&mut slot, frames, now);
        let terminal = slot.machine.is_terminal();
        drop(slot);
        if terminal {
            self.forget_stream(mux);
        }
    }

    /// Takes a run of messages of `mux` that arrived back to back in `Data` or `Items` frames
    /// (`op`: the first one's), as (sequence number, payload): one table lookup, one lock of the
    /// stream's slot and one wake for the whole run, with the same rules as
    /// [`handle_frame`](Self::handle_frame) applied to each frame (data never starts a call,
    /// and data for a mux we do not know is ignored). `run` is left empty: what was not taken
    /// is dropped.
    pub(crate) fn handle_data_run(
        &mut self,
        op: Op,
        mux: MuxId,
        run: &mut Vec<(u32, Payload)>,
        now: Instant,
    ) {
        if self.is_open() {
            if self.reasm.holds(mux) {
                self.violate(ProtocolViolation::Chunk(ChunkViolation::Interleaved {
                    mux,
                    op,
                }));
            } else {
                self.deliver_to_stream(mux, Inbound::Data(run), now);
            }
        }
        run.clear();
    }

    /// Hands `frames` to the stream of `mux`, in whichever table it is; nothing if none.
    fn deliver_to_stream(&mut self, mux: MuxId, frames: Inbound<'_>, now: Instant) {
        if self.role.allocated(mux) {
            if let Some(Outgoing::Stream(shared)) = self.calls.get(&mux) {
                let shared = shared.clone();
                self.deliver_to_caller(mux, &shared, frames, now);
            }
        } else if let Some(Served {
            kind: ServedKind::Stream(shared, cancel),
            ..
        }) = self.served.get(&mux)
        {
            let (shared, cancel) = (shared.clone(), cancel.clone());
            self.deliver_to_callee(mux, &shared, cancel, frames, now);
        }
    }

    fn on_incoming<R: Router>(
        &mut self,
        dir: Direction,
        mux: MuxId,
        frame: Frame,
        now: Instant,
        router: &R,
    ) -> Option<Start<R::Handler, H::Cancel>> {
        match frame {
            Frame::Request {
                route,
                deadline_ms,
                metadata,
                payload,
                ..
            } => {
                let handler =
                    self.admit(mux, &route, CallKind::Unary, &metadata, &payload, router)?;
                let machine = UnaryCallee::accept(mux, deadline_ms, now);
                let cancel = H::Cancel::default();
                let charge = charge_of(&metadata, &payload);
                let key = self.enter(mux, charge, ServedKind::Unary(cancel.clone()));
                Some(Start {
                    key,
                    route,
                    handler,
                    cancel,
                    deadline: machine.deadline(),
                    metadata,
                    payload: payload.unwrap_or_default(),
                    kind: StartKind::Unary(machine),
                })
            }
            Frame::Open {
                route,
                deadline_ms,
                in_cap,
                out_cap,
                in_window,
                out_window,
                input,
                metadata,
                payload,
                ..
            } => {
                let handler =
                    self.admit(mux, &route, CallKind::Stream, &metadata, &payload, router)?;
                let open = OpenRequest {
                    mux,
                    deadline_ms,
                    in_cap,
                    out_cap,
                    in_window,
                    out_window,
                    input,
                };
                let liveness = self.limits.stream_liveness_timeout;
                // Long or endless streams are watched for liveness; short ones rely on their
                // deadline.
                let watch = deadline_ms == 0 || u128::from(deadline_ms) > liveness.as_millis();
                let limits = CalleeLimits {
                    max_in_cap: self.limits.max_stream_capacity,
                    liveness_timeout: watch.then_some(liveness),
                };
                let (machine, ack) = match StreamCallee::accept(open, limits, now) {
                    Ok(ok) => ok,
                    Err(refusal) => {
                        self.push_control(refusal);
                        return None;
                    }
                };
                let deadline = machine.deadline();
                let first = machine.poll_timeout();
                let shared = Slot::shared(machine, self.budget.clone());
                let cancel = H::Cancel::default();
                let key = self.enter(
                    mux,
                    charge_of(&metadata, &payload),
                    ServedKind::Stream(shared.clone(), cancel.clone()),
                );
                self.push_control(ack);
                self.schedule(mux, first);
                Some(Start {
                    key,
                    route,
                    handler,
                    cancel,
                    deadline,
                    metadata,
                    payload: payload.unwrap_or_default(),
                    kind: StartKind::Stream { shared, input },
                })
            }
            frame => {
                self.on_served_frame(dir, mux, frame, now);
                None
            }
        }
    }

    /// Decides whether a new call may run: `None` when it was refused (the refusal is queued)
    /// or when it broke the mux-id rule (the core is then closed).
    fn admit<R: Router>(
        &mut self,
        mux: MuxId,
        route: &Route,
        kind: CallKind,
        metadata: &Metadata,
        payload: &Payload,
        router: &R,
    ) -> Option<R::Handler> {
        if self.served.contains_key(&mux) {
            self.violate(ProtocolViolation::MuxReused { mux });
            return None;
        }
        // Refused for this call only: the peer sent more than it was told this node accepts.
        let metadata_refusal = self.limits.metadata.check(metadata).err();
        let refusal = match router.route(route, kind) {
            _ if self.draining_locally() => {
                ErrorRecord::text(ErrorCode::ShuttingDown, "this node is draining")
            }
            Err(rec) => rec,
            Ok(_) if metadata_refusal.is_some() => ErrorRecord::text(
                ErrorCode::TooLarge,
                format!(
                    "call refused: {}",
                    metadata_refusal.map_or_else(String::new, |e| e.to_string())
                ),
            ),
            Ok(_) if self.admitted.len() >= self.limits.max_incoming_calls => ErrorRecord::text(
                ErrorCode::Overloaded,
                format!(
                    "too many calls in flight ({} of {})",
                    self.admitted.len(),
                    self.limits.max_incoming_calls
                ),
            ),
            Ok(_) if !self.budget.admits(charge_of(metadata, payload)) => ErrorRecord::text(
                ErrorCode::Overloaded,
                "the byte budget for this connection is full",
            ),
            Ok(_) if self.backlog_full => ErrorRecord::text(
                ErrorCode::Overloaded,
                "the caller is not reading its responses",
            ),
            Ok(h) => return Some(h),
        };
        self.push_control(Frame::Error {
            mux,
            error: refusal,
        });
        None
    }

    /// Records an admitted call in both tables and charges `charged` bytes (its payload and
    /// metadata) to the inbound budget.
    fn enter(&mut self, mux: MuxId, charged: usize, kind: ServedKind<H>) -> CallKey {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.budget.charge_inbound(charged);
        self.admitted.insert(generation, (mux, charged));
        self.served.insert(mux, Served { generation, kind });
        CallKey { mux, generation }
    }

    fn on_served_frame(&mut self, dir: Direction, mux: MuxId, frame: Frame, now: Instant) {
        let Some(entry) = self.served.get(&mux) else {
            if let Some(reply) = unknown_mux_reply(dir, &frame) {
                self.push_control(reply);
            }
            return;
        };
        match &entry.kind {
            ServedKind::Unary(cancel) => {
                if let Frame::Cancel { reason, .. } = frame {
                    // The entry goes now, the slot when the task ends: the id is free for the
                    // peer to reuse, the slot still counts the handler in its grace.
                    let cancel = cancel.clone();
                    self.served.remove(&mux);
                    self.events
                        .push_back(Event::Cancel(cancel, CancelCause::from(reason)));
                }
            }
            ServedKind::Stream(shared, cancel) => {
                let (shared, cancel) = (shared.clone(), cancel.clone());
                self.deliver_to_callee(mux, &shared, cancel, Inbound::One(frame), now);
            }
        }
    }

    /// Hands frames to a stream this side serves; removes it once it is over.
    fn deliver_to_callee(
        &mut self,
        mux: MuxId,
        shared: &Shared<StreamCallee>,
        cancel: H::Cancel,
        frames: Inbound<'_>,
        now: Instant,
    ) {
        let mut slot = shared.lock();
        self.deliver(&mut slot, frames, now);
        let cancelled = slot.machine.cancelled();
        let terminal = slot.machine.is_terminal();
        let next = slot.machine.poll_timeout();
        drop(slot);
        if let Some(cause) = cancelled {
            self.events.push_back(Event::Cancel(cancel, cause));
        }
        if terminal {
            self.served.remove(&mux);
            self.timers.cancel(mux);
        } else {
            // Any frame is a sign of life: the liveness check moves.
            self.schedule(mux, next);
        }
    }

    /// Hands frames to a stream machine, within the inbound budget, and queues what it says;
    /// wakes the directions the frames concern once at the end.
    fn deliver<M: Machine>(&mut self, slot: &mut Slot<M>, frames: Inbound<'_>, now: Instant) {
        let was_terminal = slot.machine.is_terminal();
        let mut wake = Wake::default();
        match frames {
            Inbound::One(frame) => {
                wake.add(&frame);
                let len = data_len(&frame);
                if len > 0 && slot.would_overrun(len) {
                    slot.machine.fail_budget();
                } else {
                    slot.machine.handle_frame(frame, now);
                }
            }
            Inbound::OverBudget => {
                slot.machine.fail_budget();
            }
            Inbound::Data(run) => {
                wake.add_data();
                // The budget is read once for the run: what the run adds counts against it.
                let room = slot.overrun_room();
                let mut taken = 0usize;
                let within = run.iter().position(|(_, payload)| {
                    let len = payload.as_ref().map_or(0, Bytes::len);
                    taken += len;
                    len > 0 && taken > room
                });
                if let Some(over) = within {
                    run.truncate(over);
                }
                slot.machine.handle_data_run(run, now);
                if within.is_some() {
                    slot.machine.fail_budget();
                }
            }
        }
        if slot.machine.is_terminal() && !was_terminal {
            // A frame that ended the stream (a violation, say) concerns both directions.
            wake = Wake::BOTH;
        }
        slot.settle();
        while let Some(f) = slot.machine.poll_transmit() {
            let lane = Lane::of_stream_frame(&f);
            self.transmit.push_back((f, lane));
        }
        slot.wake_only(wake);
    }

    // ---- the end of served calls -------------------------------------------------------------

    /// A unary handler has its response: true if it is still wanted (the call was not cancelled
    /// and the connection is open). The entry leaves the table now, so a `Cancel` that arrives
    /// later finds nothing: the response is committed. The slot stays until
    /// [`finish`](Self::finish).
    pub(crate) fn commit_response(&mut self, key: CallKey) -> bool {
        match self.served.get(&key.mux) {
            Some(e) if e.generation == key.generation => {
                self.served.remove(&key.mux);
                true
            }
            _ => false,
        }
    }

    /// The task of `key` has completely ended: releases its slot and its charge, and removes its
    /// entry if it is still there. Only the owner's key can do this; a call that reused the mux
    /// id since is untouched.
    pub(crate) fn finish(&mut self, key: CallKey) {
        if let Some((_, charged)) = self.admitted.remove(&key.generation) {
            self.budget.release_inbound(charged);
        }
        if self
            .served
            .get(&key.mux)
            .is_some_and(|e| e.generation == key.generation)
        {
            self.served.remove(&key.mux);
            self.timers.cancel(key.mux);
        }
    }

    // ---- time -------------------------------------------------------------------------------

    /// Runs the timers due at `now`: unary deadlines; stream deadlines, pings and liveness.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if !self.is_open() {
            return;
        }
        if self.unary_due.is_some_and(|t| t <= now) {
            self.expire_unary(now);
        }
        for mux in self.timers.pop_due(now) {
            if self.role.allocated(mux) {
                let Some(Outgoing::Stream(shared)) = self.calls.get(&mux) else {
                    continue;
                };
                let shared = shared.clone();
                let mut slot = shared.lock();
                self.time_out(&mut slot, now);
                let (terminal, next) = (slot.machine.is_terminal(), slot.machine.poll_timeout());
                drop(slot);
                if terminal {
                    self.forget_stream(mux);
                } else {
                    self.schedule(mux, next);
                }
            } else {
                let Some(Served {
                    kind: ServedKind::Stream(shared, cancel),
                    ..
                }) = self.served.get(&mux)
                else {
                    continue;
                };
                let (shared, cancel) = (shared.clone(), cancel.clone());
                let mut slot = shared.lock();
                self.time_out(&mut slot, now);
                let (cancelled, next) = (slot.machine.cancelled(), slot.machine.poll_timeout());
                drop(slot);
                if let Some(cause) = cancelled {
                    self.events.push_back(Event::Cancel(cancel, cause));
                    self.served.remove(&mux);
                    self.timers.cancel(mux);
                } else {
                    self.schedule(mux, next);
                }
            }
        }
    }

    /// Fails every unary call whose deadline has passed with [`MuxError::Deadline`], and
    /// finds when the next one is due.
    ///
    /// A unary call costs the timers nothing but its deadline, kept with it in `calls`:
    /// `unary_due` is only when the next walk of the table comes, moved earlier by a new call
    /// due sooner, and this walk finds the next one. A call answered in time is never looked
    /// at, and a steady flow of calls with one timeout costs one walk per timeout. Walks are at
    /// least [`UNARY_STEP`] apart, and more with many calls in flight
    /// ([`UNARY_STEP_PER_CALL`]); a new call due sooner never brings the next walk within that
    /// step of the last one. So calls with deadlines of their own, or a peer that answers
    /// nothing, cost at most one walk per step, and a deadline fires at most a step late (1 ms
    /// up to 2,000 calls in flight).
    ///
    /// A call timed out here is only failed: its caller tells the callee (takes the request
    /// back or sends a `Cancel`), since only it knows whether its request was queued yet.
    fn expire_unary(&mut self, now: Instant) {
        let mut next: Option<Instant> = None;
        let mut expired = Vec::new();
        for (mux, call) in &self.calls {
            if let Outgoing::Unary(_, Some(at)) = call {
                if *at <= now {
                    expired.push(*mux);
                } else {
                    next = Some(next.map_or(*at, |n| n.min(*at)));
                }
            }
        }
        for mux in expired {
            if let Some(Outgoing::Unary(reply, _)) = self.calls.remove(&mux) {
                self.reasm.discard(mux, &self.budget);
                self.events
                    .push_back(Event::Reply(reply, Err(MuxError::Deadline)));
            }
        }
        let per_call =
            UNARY_STEP_PER_CALL.saturating_mul(u32::try_from(self.calls.len()).unwrap_or(u32::MAX));
        let after = now + UNARY_STEP.max(per_call);
        self.unary_walk_after = Some(after);
        self.unary_due = next.map(|t| t.max(after));
    }

    fn time_out<M: Machine>(&mut self, slot: &mut Slot<M>, now: Instant) {
        slot.machine.handle_timeout(now);
        slot.settle();
        while let Some(f) = slot.machine.poll_transmit() {
            let lane = Lane::of_stream_frame(&f);
            self.transmit.push_back((f, lane));
        }
        slot.wake();
    }
}
