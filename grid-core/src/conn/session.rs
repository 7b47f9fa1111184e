//! The IO shell's state for one live socket: the connection core behind its lock, the outbound
//! queue, the byte budget, and the signals the socket's tasks wait on.
//!
//! A `Session` lives exactly as long as one WebSocket. Every change to the core goes through
//! [`Session::with_core`], which afterwards moves what the core produced to where it goes:
//! frames into the outbound queue, replies into the callers' oneshots, cancellations into the
//! handlers' signals, the close into the queue, the timer task and the `closed` token. Nothing
//! here spawns a task or awaits under a lock; the reader calls [`Session::dispatch`] and never
//! waits for a user task.
//!
//! Lock order: the core, then a stream's slot, then the queue's lanes. Stream handles take a
//! slot and then the lanes, never the core while holding a slot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::budget::{Budget, HeldBytes, Received};
use super::core::{
    compress, worth_compressing, CallKey, CloseKind, CloseReason, ConnCore, CoreLimits, Event,
    Handles, InFlight, Lane, Router, Start,
};
use super::events::EventSink;
use super::lock::Mutex;
use super::outq::{Batch, Bound, DataWriter, OutQueue, QueueError, Refused};
use super::slot::{Machine, Shared};
use super::stats::{ConnStats, Padded};
use crate::cancel::CancelSignal;
use crate::config::Config;
use crate::frame::{self, ErrorCode, ErrorRecord, Frame, MetadataLimits, Op, Payload, Route};
use crate::handshake::Features;
use crate::ids::MuxId;
use crate::mux::{MuxError, Role, StreamCaller};
use crate::table::{HandlerTable, LocalTable, Supported};

/// Received messages shorter than this are copied into a buffer of their own before they are
/// decoded ([`Session::received`]), cheaply at that size; longer ones are decoded in place (what
/// that leaves: ARCHITECTURE.md, "Received messages kept alive").
const OWN_BUFFER_BELOW: usize = 32 << 10;

/// The smallest chunk size a session uses, whatever the configuration says: a first part holds
/// at least a whole frame header, and parts far smaller than a batch only cost headers.
const MIN_CHUNK_SIZE: usize = 1024;

/// The shell's handles, as the core stores them.
#[derive(Debug)]
pub(crate) struct Shell;

impl Handles for Shell {
    type Reply = oneshot::Sender<Result<Payload, MuxError>>;
    type Cancel = CancelSignal;
}

/// Answers for unary calls, to send once the core's lock is let go.
pub(crate) type Replies = Vec<(
    oneshot::Sender<Result<Payload, MuxError>>,
    Result<Payload, MuxError>,
)>;

/// What the peer's handshake said it accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerLimits {
    /// Its payload limit.
    pub(crate) max_payload: u64,
    /// Its metadata limits; `None` from a peer that takes no metadata.
    pub(crate) metadata: Option<MetadataLimits>,
    /// The optional features the handshake agreed (chunks, compression).
    pub(crate) features: Features,
}

/// Why a call this side starts was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStarted {
    /// The session is closed (or the peer is leaving).
    Closed,
    /// The peer's complete handler table lacks the route: nothing was sent.
    Unserved,
}

/// One live socket.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: u32,
    pub(crate) peer: Arc<str>,
    checksum: bool,
    max_payload: usize,
    /// Requests and responses with a payload of at least this many bytes go compressed (0:
    /// never; the peer did not agree).
    compress_at: usize,
    /// Both sides agreed to `Items` frames: a stream's small messages go packed in them, and
    /// the peer's are accepted.
    items: bool,
    /// The metadata a call to the peer may carry (the smaller of both sides' limits), or `None`
    /// when the peer announced no metadata limits: it cannot take any.
    metadata: Option<MetadataLimits>,
    pub(crate) config: Arc<Config>,
    /// The queue (whose lanes are padded, so it starts on a line of its own) and the core (on
    /// lines of its own): both are written under their locks by every call, and the fields
    /// around them are read by every call.
    out: OutQueue,
    pub(crate) stats: Arc<ConnStats>,
    core: Padded<Mutex<ConnCore<Shell>>>,
    budget: Arc<Budget>,
    /// Mirrors "the core is closed" for lock-free checks on hot paths.
    closing: AtomicBool,
    /// Mirrors "the peer said it is going away".
    peer_leaving: AtomicBool,
    drained: CancellationToken,
    events: Arc<EventSink>,
    closed: CancellationToken,
    writer_done: CancellationToken,
    timer_wake: Notify,
    kill: CancellationToken,
    kill_reason: Mutex<Option<CloseReason>>,
}

impl Session {
    /// A session for the socket whose handshake agreed `checksum` and `limits`.
    pub(crate) fn new(
        peer: Arc<str>,
        role: Role,
        checksum: bool,
        config: Arc<Config>,
        stats: Arc<ConnStats>,
        events: Arc<EventSink>,
        limits: PeerLimits,
    ) -> Arc<Session> {
        let PeerLimits {
            max_payload: peer_max_payload,
            metadata: peer_metadata,
            features,
        } = limits;
        // Sending more than the peer accepts would make it drop the whole connection.
        let max_payload = usize::try_from(peer_max_payload)
            .unwrap_or(usize::MAX)
            .min(config.max_payload);
        let budget = Arc::new(Budget::new(
            config.max_inbound_bytes,
            config.max_pending_response_bytes,
        ));
        let chunks = features.contains(Features::CHUNKS);
        let limits = CoreLimits {
            max_incoming_calls: config.max_incoming_calls,
            max_stream_capacity: config.max_stream_capacity,
            stream_liveness_timeout: config.stream_liveness_timeout,
            metadata: config.metadata_limits(),
            max_payload: config.max_payload,
            chunks,
            compression: features.contains(Features::LZ4),
        };
        let compress_at = if features.contains(Features::LZ4) {
            config.compress_threshold
        } else {
            0
        };
        // Only to a peer that agreed; never so small that a first part lacks a whole header.
        let chunk = if chunks && config.chunk_size > 0 {
            config.chunk_size.max(MIN_CHUNK_SIZE)
        } else {
            0
        };
        // What a call may carry on this link: what both sides accept; nothing to a peer that
        // announced no metadata (an older node would close the link on the flag).
        let metadata = peer_metadata.map(|p| p.min(config.metadata_limits()));
        Arc::new(Session {
            id: fastrand::u32(..),
            peer,
            checksum,
            max_payload,
            compress_at,
            items: features.contains(Features::ITEMS),
            metadata,
            out: OutQueue::new(
                config.max_queued_bytes,
                config.max_batch_bytes,
                config.max_queued_control,
                chunk,
            ),
            config,
            stats,
            core: Padded(Mutex::new(ConnCore::new(role, limits, budget.clone()))),
            budget,
            closing: AtomicBool::new(false),
            peer_leaving: AtomicBool::new(false),
            drained: CancellationToken::new(),
            events,
            closed: CancellationToken::new(),
            writer_done: CancellationToken::new(),
            timer_wake: Notify::new(),
            kill: CancellationToken::new(),
            kill_reason: Mutex::new(None),
        })
    }

    /// Runs `f` on the core, then moves what it produced to where it goes.
    fn with_core<T>(&self, f: impl FnOnce(&mut ConnCore<Shell>) -> T) -> T {
        self.with_core_into(f, None)
    }

    /// [`with_core`](Self::with_core), with the answers for the calls that ended moved into
    /// `replies` (when given) instead of sent under the lock.
    fn with_core_into<T>(
        &self,
        f: impl FnOnce(&mut ConnCore<Shell>) -> T,
        mut replies: Option<&mut Replies>,
    ) -> T {
        let mut core = self.core.lock();
        let out = f(&mut core);
        let mut last = None;
        while let Some((frame, lane)) = core.poll_transmit() {
            if core.is_open() {
                self.queue_in(&frame, lane);
            } else {
                // After a close only the go-away naming a violation is left: it goes out last.
                last = Some(self.encode(&frame));
            }
        }
        while let Some(event) = core.poll_event() {
            match event {
                Event::Reply(tx, result) => match replies.as_deref_mut() {
                    Some(later) => later.push((tx, result)),
                    None => {
                        let _ = tx.send(result);
                    }
                },
                Event::Cancel(signal, cause) => signal.cancel(cause),
                Event::Pong(nonce) => self.stats.record_pong(nonce),
                Event::ChunksRead(bytes) => self.out.parts_read(bytes as usize),
                Event::PeerLeaving => {
                    self.peer_leaving.store(true, Ordering::Release);
                    self.events.going_away();
                }
                Event::Closed(reason) => {
                    debug!(conn = %format_args!("{:08x}", self.id), peer = %self.peer, %reason, "session closed");
                    self.closing.store(true, Ordering::Release);
                    self.out.close_with(last.take());
                    self.closed.cancel();
                    self.timer_wake.notify_one();
                }
            }
        }
        if core.take_timer_moved() {
            self.timer_wake.notify_one();
        }
        if core.drained() {
            self.drained.cancel();
        }
        out
    }

    /// Encodes one frame for this socket (with no checksum of its own: the writer checksums
    /// whole batches).
    pub(crate) fn encode(&self, frame: &Frame) -> Bytes {
        let mut buf = BytesMut::with_capacity(frame::encoded_len(frame, false));
        frame::encode_frame(frame, false, &mut buf);
        buf.freeze()
    }

    /// A received message to decode, counted among the received messages kept alive until its
    /// last slice goes, and whether what is kept of it must be copied out (past the inbound
    /// bound of those). A message under [`OWN_BUFFER_BELOW`] is first copied into a buffer of
    /// its own: the socket reads messages into shared buffers of 16 KiB and more, and a slice
    /// of a small message would keep all of its buffer alive, uncounted.
    pub(crate) fn received(&self, msg: Bytes) -> (Bytes, bool) {
        let copy_payloads = self.budget.received_full();
        let msg = if msg.len() < OWN_BUFFER_BELOW {
            Bytes::copy_from_slice(&msg)
        } else {
            msg
        };
        (Received::track(msg, &self.budget), copy_payloads)
    }

    /// Whether this socket's batches carry a checksum (agreed in the handshake).
    pub(crate) fn checksum(&self) -> bool {
        self.checksum
    }

    /// Encodes `frame` straight into the data lane, within `bound`.
    fn append_frame(&self, frame: &Frame, bound: Bound) -> Result<(), Refused<()>> {
        self.out.append(bound, |w| {
            w.frame(|dst| {
                frame::encode_frame(frame, false, dst);
                Ok(())
            })
        })
    }

    /// Queues a frame of the core in its lane, without waiting.
    fn queue_in(&self, frame: &Frame, lane: Lane) {
        let stuck = match lane {
            Lane::AfterData => {
                matches!(self.append_frame(frame, Bound::Twice), Err(Refused::Stuck))
            }
            Lane::Control => self.out.push_control(self.encode(frame)) == Err(QueueError::Stuck),
        };
        if stuck {
            self.request_close(CloseReason::library(CloseKind::ControlQueueFull));
        }
    }

    /// Queues a frame without waiting; a peer that stopped reading gets the session closed.
    ///
    /// Frames that *end* a mux on the callee's side (`End`, `Error`) go in the data lane, behind
    /// the messages already queued for that mux, so a clean end or an error can never overtake
    /// the data before it (MinIO lost stream tails exactly that way). Everything else (credits,
    /// pings, pongs, acks, cancels, refusals) goes in the control lane, ahead of bulk data.
    pub(crate) fn send_control(&self, frame: &Frame) {
        let lane = match frame {
            Frame::End { .. } | Frame::Error { .. } => Lane::AfterData,
            _ => Lane::Control,
        };
        self.queue_in(frame, lane);
    }

    /// Queues every frame a stream machine has to send (credits, pings, pongs, ends, errors).
    pub(crate) fn transmit<M: Machine>(&self, machine: &mut M) {
        while let Some(f) = machine.poll_transmit() {
            self.send_control(&f);
        }
    }

    /// Asks the keepalive task to close the session, from a place that cannot take the core's
    /// lock (it holds a stream's). The first reason wins.
    pub(crate) fn request_close(&self, reason: CloseReason) {
        self.kill_reason.lock().get_or_insert(reason);
        self.kill.cancel();
    }

    /// Resolves with the reason once [`request_close`](Self::request_close) was called.
    pub(crate) async fn close_requested(&self) -> CloseReason {
        self.kill.cancelled().await;
        self.kill_reason
            .lock()
            .clone()
            .unwrap_or_else(|| CloseReason::library(CloseKind::DriverStopped))
    }

    /// See [`OutQueue::append`]: data frames encoded straight into the data lane.
    pub(crate) fn append_data<T, E>(
        &self,
        bound: Bound,
        write: impl FnOnce(&mut DataWriter<'_>) -> Result<T, E>,
    ) -> Result<T, Refused<E>> {
        self.out.append(bound, write)
    }

    /// Waits until something is queued, then takes a batch for the writer (`None` once
    /// closed).
    ///
    /// # Cancel safety
    /// Cancel safe: frames are only taken in the poll that returns them.
    pub(crate) async fn next_batch(&self, max_bytes: usize) -> Option<Batch> {
        let batch = self.out.drain(max_bytes).await;
        self.stats.metrics.queued(|| self.out.data_bytes());
        batch
    }

    /// Takes a batch for the writer if one is queued now: `None` when nothing is, `Some(None)`
    /// once closed.
    pub(crate) fn try_batch(&self, max_bytes: usize) -> Option<Option<Batch>> {
        let batch = self.out.take(max_bytes);
        self.stats.metrics.queued(|| self.out.data_bytes());
        batch
    }

    /// Adds to `batch` what is queued now, within the bound.
    pub(crate) fn top_up(&self, batch: &mut Batch, max_bytes: usize) {
        self.out.top_up(batch, max_bytes);
    }

    /// True when the writer has nothing more to take right now.
    pub(crate) fn nothing_queued(&self) -> bool {
        !self.out.sendable()
    }

    /// Lets idle buffers go (see [`OutQueue::trim_idle`]); once per keepalive tick.
    pub(crate) fn trim_idle(&self) {
        self.out.trim_idle();
    }

    /// The writer's last message buffer, for the next batch (see [`OutQueue::recycle`]).
    pub(crate) fn recycle(&self, buf: BytesMut) {
        self.out.recycle(buf);
    }

    /// True while the data lane is at its byte bound: a sender would wait for room.
    pub(crate) fn data_lane_full(&self) -> bool {
        self.out.is_full()
    }

    /// Waits until the data lane has room (or the session closed), for a small frame: large
    /// frames queued in parts have a bound of their own, which a small frame never waits for.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is queued.
    pub(crate) async fn data_room(&self) -> Result<(), QueueError> {
        self.out.wait_room(false).await
    }

    /// Queues a data frame now, even past the byte bound (callers wait for room first). A
    /// `Request` or `Open` is tagged with its mux so [`cancel_call`](Self::cancel_call) can take it
    /// back while it is still queued.
    pub(crate) fn push_data_now(&self, frame: &Frame) -> Result<(), QueueError> {
        let queued = match tag_of(frame) {
            tag if self.out.is_large(frame::encoded_len(frame, false)) => self
                .out
                .push_large(
                    frame::encode_split(frame),
                    frame.mux().0,
                    tag != 0,
                    Bound::None,
                )
                .map_err(|_| ()),
            0 => self.append_frame(frame, Bound::None).map_err(|_| ()),
            tag => self
                .out
                .push_tagged(self.encode(frame), tag, Bound::None)
                .map_err(|_| ()),
        };
        queued.map_err(|()| QueueError::Closed)
    }

    /// Queues a data frame, waiting for room; many waiters together overshoot the lane's bound
    /// by one frame at most. A frame that cannot be taken back is encoded straight into the
    /// lane.
    ///
    /// # Cancel safety
    /// Cancel safe: the frame is queued whole or not at all.
    pub(crate) async fn send_data(&self, frame: &Frame) -> Result<(), QueueError> {
        let tag = tag_of(frame);
        // One `queue_data` future, whichever frame goes (two would each take room in every
        // send's future).
        // (Boxed: a frame is large, and only a compressed one needs room of its own.)
        let compressed = self.compressed(frame).map(Box::new);
        self.queue_data(compressed.as_deref().unwrap_or(frame), tag)
            .await
    }

    /// The compressed form of a request or response, if compression was agreed, its payload
    /// reaches the threshold and compressing it is worth it (see `core/compress.rs`). Runs on
    /// the caller's task, never under a lock.
    fn compressed(&self, frame: &Frame) -> Option<Frame> {
        let payload = self.compressible(frame)?;
        if !worth_compressing(payload) {
            return None;
        }
        compress(frame, &self.encode(frame))
    }

    /// The payload of a request or response that reaches the compression threshold, if
    /// compression was agreed.
    fn compressible<'f>(&self, frame: &'f Frame) -> Option<&'f Bytes> {
        if self.compress_at == 0 {
            return None;
        }
        match frame {
            Frame::Request {
                payload: Some(p), ..
            }
            | Frame::Response {
                result: Ok(Some(p)),
                ..
            } if p.len() >= self.compress_at => Some(p),
            _ => None,
        }
    }

    /// [`send_data`](Self::send_data) of `frame` as it is; `tag` is its mux when it can be taken
    /// back (a request, compressed or not).
    async fn queue_data(&self, frame: &Frame, tag: u32) -> Result<(), QueueError> {
        /// What is still to be queued, as far as it was encoded.
        enum Pending {
            /// Encoded straight into the data lane when there is room.
            Run,
            /// A `Request`/`Open`, queued alone so it can be taken back; encoded once there is
            /// room, into a buffer the queue reuses.
            Tagged,
            /// A frame sent in parts: its head and its payload, not copied (boxed: rare, and
            /// every send's future would hold room for it).
            Large(Box<(Bytes, Bytes)>),
        }
        // A frame sent in parts is encoded here, not under the lane's lock, and waits for room
        // among the large frames; a small one only for room in the data lane, so small calls
        // never wait behind large transfers.
        let len = frame::encoded_len(frame, false);
        let large = self.out.is_large(len);
        let mut pending = if large {
            Pending::Large(Box::new(frame::encode_split(frame)))
        } else if tag != 0 {
            Pending::Tagged
        } else {
            Pending::Run
        };
        loop {
            let queued = match pending {
                Pending::Run => self.append_frame(frame, Bound::Room).map_err(|e| match e {
                    Refused::Closed => None,
                    _ => Some(Pending::Run),
                }),
                Pending::Tagged => self
                    .out
                    .push_tagged_with(tag, len, Bound::Room, |dst| {
                        frame::encode_frame(frame, false, dst)
                    })
                    .map_err(|e| match e {
                        Refused::Closed => None,
                        _ => Some(Pending::Tagged),
                    }),
                Pending::Large(parts) => self
                    .out
                    .push_large(*parts, frame.mux().0, tag != 0, Bound::Bulk)
                    .map_err(|e| match e {
                        Refused::By(back) => Some(Pending::Large(Box::new(back))),
                        Refused::Closed => None,
                        _ => Some(Pending::Large(Box::new(frame::encode_split(frame)))),
                    }),
            };
            match queued {
                Ok(()) => return Ok(()),
                Err(None) => return Err(QueueError::Closed),
                Err(Some(back)) => pending = back,
            }
            // Boxed: a rare wait, kept out of every send's future (see `Connection::call_once`).
            Box::pin(self.out.wait_room(large)).await?;
        }
    }

    /// Tells the callee that a call this side started is given up: takes back its `Request` /
    /// `Open` if the writer has not sent it yet (then the callee never hears of the call), else
    /// queues the `Cancel`, which then necessarily travels after it.
    pub(crate) fn cancel_call(&self, cancel: &Frame) {
        if !self.out.retract(cancel.mux().0) {
            self.send_control(cancel);
        }
    }

    /// The metadata a call on this link may carry; `None` when the peer takes none.
    pub(crate) fn metadata_limits(&self) -> Option<MetadataLimits> {
        self.metadata
    }

    /// The largest payload this link carries: the smaller of our limit and the peer's.
    pub(crate) fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// True when both sides agreed to `Items` frames (`PROTOCOL.md` section 12).
    pub(crate) fn items(&self) -> bool {
        self.items
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Resolves once the session is closed.
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await;
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.core.lock().close_reason().cloned()
    }

    pub(crate) fn in_flight(&self) -> InFlight {
        self.core.lock().in_flight()
    }

    /// Bytes held for the peer right now.
    pub(crate) fn held(&self) -> HeldBytes {
        self.budget.snapshot(self.out.data_bytes())
    }

    /// Calls in flight in both directions: a cheap hint of how busy the socket is.
    pub(crate) fn activity(&self) -> usize {
        self.core.lock().activity()
    }

    /// Ends the session. Idempotent; the first reason is kept.
    pub(crate) fn close(&self, reason: CloseReason) {
        self.with_core(|core| core.close(reason));
    }

    /// True once the peer said it is going away: new calls to it must fail with `GoingAway`.
    pub(crate) fn peer_leaving(&self) -> bool {
        self.peer_leaving.load(Ordering::Acquire)
    }

    /// Starts draining this session (see [`ConnCore::drain`]).
    pub(crate) fn drain(&self) {
        self.with_core(ConnCore::drain);
    }

    /// Resolves once this node drains, nothing is in flight on the session any more, and the
    /// writer has taken every frame queued (the last responses and stream ends included).
    pub(crate) async fn drained(&self) {
        self.drained.cancelled().await;
        self.out.wait_empty().await;
    }

    /// Ends the session because this node is shutting down: the peer is told with a go-away
    /// (its handlers see `ShuttingDown`, its callers a clean going-away), which the writer sends
    /// last.
    pub(crate) fn shut_down(&self) {
        let record = ErrorRecord::text(ErrorCode::ShuttingDown, "shutting down");
        self.with_core(|core| core.close_telling(CloseReason::local(CloseKind::Shutdown), record));
    }

    /// The writer marks its end here.
    pub(crate) fn writer_finished(&self) {
        self.writer_done.cancel();
    }

    /// Resolves once the writer has ended (after sending a last go-away, if one was queued).
    pub(crate) async fn writer_done(&self) {
        self.writer_done.cancelled().await;
    }

    // ---- handler tables ---------------------------------------------------------------------

    /// Sets what the handshake told (see [`ConnCore::set_tables`]).
    pub(crate) fn set_tables(&self, peer: Option<HandlerTable>, announced: usize) {
        self.with_core(|core| core.set_tables(peer, announced));
    }

    /// Tells the peer about registrations it has not heard of (see [`ConnCore::announce`]).
    pub(crate) fn announce(&self, local: &impl LocalTable) {
        let max_len = self.max_payload;
        self.with_core(|core| core.announce(local, max_len));
    }

    /// Whether the peer serves `route`, by the table it announced.
    pub(crate) fn peer_supports(&self, route: &Route) -> Supported {
        self.core.lock().peer_supports(route)
    }

    // ---- calls this side starts ------------------------------------------------------------

    /// Registers a unary call to `route`; the receiver gets its result, [`MuxError::Deadline`]
    /// once `deadline` (if any) passes (the timer task serves it). Refused without a frame sent when the
    /// peer's complete table lacks the route (checked under the lock the registration takes
    /// anyway).
    pub(crate) fn register_unary(
        &self,
        route: &Route,
        deadline: Option<Instant>,
    ) -> Result<(MuxId, oneshot::Receiver<Result<Payload, MuxError>>), NotStarted> {
        let (tx, rx) = oneshot::channel();
        let mux = self.with_core(|core| {
            if core.peer_lacks(route) {
                return Err(NotStarted::Unserved);
            }
            core.register_unary(tx, deadline)
                .map_err(|_| NotStarted::Closed)
        })?;
        Ok((mux, rx))
    }

    /// Forgets a unary call that ended locally; true if the callee should be told.
    pub(crate) fn forget_unary(&self, mux: MuxId) -> bool {
        self.with_core(|core| core.forget_unary(mux))
    }

    /// Registers a stream this side opens to `route`; `make` builds the machine for the
    /// allocated id. Refused like [`register_unary`](Self::register_unary).
    pub(crate) fn register_stream(
        &self,
        route: &Route,
        make: impl FnOnce(MuxId) -> (StreamCaller, Frame),
    ) -> Result<(Shared<StreamCaller>, Frame), NotStarted> {
        self.with_core(|core| {
            if core.peer_lacks(route) {
                return Err(NotStarted::Unserved);
            }
            core.register_stream(make).ok_or(NotStarted::Closed)
        })
    }

    /// Forgets a stream this side opened.
    pub(crate) fn forget_stream(&self, mux: MuxId) {
        self.with_core(|core| core.forget_stream(mux));
    }

    // ---- inbound ----------------------------------------------------------------------------

    /// Handles one inbound frame. Runs on the reader; never awaits. A call to run comes back.
    pub(crate) fn dispatch<R: Router>(
        &self,
        frame: Frame,
        now: Instant,
        router: &R,
    ) -> Option<Start<R::Handler, CancelSignal>> {
        if let Frame::Cancel { mux, .. }
        | Frame::Response { mux, .. }
        | Frame::Error { mux, .. }
        | Frame::Compressed { mux, .. } = frame
        {
            // The call is over (the caller gave up; the callee answered, or refused a request
            // still in parts): what it still had to send in parts goes at once.
            self.out.abandon(mux.0);
        }
        let backlog_full = self.out.is_full();
        self.with_core(|core| {
            core.set_backlog_full(backlog_full);
            core.handle_frame(frame, now, router)
        })
    }

    /// Handles the `Response` frames the reader found in one message, under one lock of the
    /// core, and hands each caller its answer once the lock is let go (a caller woken under it
    /// would wait for it to start its next call). Leaves `frames` and `replies` empty.
    pub(crate) fn dispatch_responses<R: Router>(
        &self,
        frames: &mut Vec<Frame>,
        replies: &mut Replies,
        now: Instant,
        router: &R,
    ) {
        for f in frames.iter() {
            self.out.abandon(f.mux().0);
        }
        let backlog_full = self.out.is_full();
        self.with_core_into(
            |core| {
                core.set_backlog_full(backlog_full);
                for f in frames.drain(..) {
                    // A response starts no call.
                    let _ = core.handle_frame(f, now, router);
                }
            },
            Some(replies),
        );
        for (tx, result) in replies.drain(..) {
            let _ = tx.send(result);
        }
    }

    /// Handles a run of messages of stream `mux` (sequence number, payload), in `Data` or
    /// `Items` frames (`op`: the first one's) as the reader found them back to back: one
    /// lookup, one lock of the stream, one wake. Leaves `run` empty.
    pub(crate) fn dispatch_run(
        &self,
        op: Op,
        mux: MuxId,
        run: &mut Vec<(u32, Payload)>,
        now: Instant,
    ) {
        self.with_core(|core| core.handle_data_run(op, mux, run, now));
    }

    // ---- served calls -----------------------------------------------------------------------

    /// See [`ConnCore::commit_response`].
    pub(crate) fn commit_response(&self, key: CallKey) -> bool {
        self.core.lock().commit_response(key)
    }

    /// See [`ConnCore::finish`].
    pub(crate) fn finish(&self, key: CallKey) {
        self.with_core(|core| core.finish(key));
    }

    /// Queues a finished handler's response, waiting for room; while it waits, its bytes count
    /// against the pending-response budget, so a peer that does not read stops new admissions.
    ///
    /// # Cancel safety
    /// Cancel safe: the response is queued whole or not at all, and the charge is released.
    pub(crate) async fn send_response(&self, frame: &Frame) {
        let _pending = PendingCharge::new(&*self.budget, frame);
        let _ = self.send_data(frame).await;
    }

    /// [`send_response`](Self::send_response) for a task: the charge is taken now, before the
    /// task first runs (so a reader that hands a response to a task admits no call past the
    /// budget meanwhile), and released once the response is queued or the future dropped.
    pub(crate) fn send_response_later(
        self: &Arc<Self>,
        frame: Frame,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let pending = PendingCharge::new(self.budget.clone(), &frame);
        let session = self.clone();
        async move {
            let _pending = pending;
            let _ = session.send_data(&frame).await;
        }
    }

    /// True when `frame` may be compressed before it is queued (compression agreed and its
    /// payload reaches the threshold): work for a task, not for the reader.
    pub(crate) fn may_compress(&self, frame: &Frame) -> bool {
        self.compressible(frame).is_some()
    }

    // ---- timers -----------------------------------------------------------------------------

    /// When the timer task must next call [`fire_timers`](Self::fire_timers).
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.core.lock().poll_timeout()
    }

    /// Runs due timers (unary deadlines, stream timers).
    pub(crate) fn fire_timers(&self, now: Instant) {
        self.with_core(|core| core.handle_timeout(now));
    }

    /// Resolves when an earlier timer was set or the session closed.
    pub(crate) async fn timers_changed(&self) {
        self.timer_wake.notified().await;
    }
}

/// A response's payload bytes, charged to the pending-response budget while it waits to be
/// queued, released when dropped.
struct PendingCharge<B: std::ops::Deref<Target = Budget>>(B, usize);

impl<B: std::ops::Deref<Target = Budget>> PendingCharge<B> {
    fn new(budget: B, frame: &Frame) -> Self {
        let len = match frame {
            Frame::Response {
                result: Ok(Some(p)),
                ..
            } => p.len(),
            _ => 0,
        };
        budget.charge_pending(len);
        PendingCharge(budget, len)
    }
}

impl<B: std::ops::Deref<Target = Budget>> Drop for PendingCharge<B> {
    fn drop(&mut self) {
        self.0.release_pending(self.1);
    }
}

/// The tag [`OutQueue::retract`] finds a queued `Request`/`Open` by (0: not retractable).
fn tag_of(frame: &Frame) -> u32 {
    match frame {
        Frame::Request { mux, .. } | Frame::Open { mux, .. } => mux.0,
        _ => 0,
    }
}
