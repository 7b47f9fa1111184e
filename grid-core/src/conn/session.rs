//! One live socket: its mux tables, its outbound queue, and the dispatch of every inbound frame.
//!
//! A `Session` lives exactly as long as one WebSocket. When the socket ends, [`Session::close`]
//! fails every call it started with `Disconnected`, cancels every handler it serves, and closes
//! its queue; a reconnect builds a new `Session` with empty tables and an empty queue, so nothing
//! of the old socket can leak into the new one.
//!
//! [`Session::dispatch`] runs on the socket reader. It never awaits: each frame is a short,
//! bounded state change under a mutex, and any reply goes to the control lane of the queue, which
//! never blocks. Handlers run on their own tasks.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::outq::{OutQueue, QueueError};
use super::stats::ConnStats;
use super::timers::Timers;
use crate::config::Config;
use crate::frame::{self, ErrorCode, ErrorRecord, Frame, Payload};
use crate::handler::{panic_record, CancelSignal, Context, Registered, Registry};
use crate::ids::MuxId;
use crate::mux::{
    unknown_mux_reply, CalleeLimits, CancelCause, Direction, MuxError, OpenRequest, Role,
    StreamCallee, StreamCaller, UnaryCallee,
};
use crate::stream::{HandlerInput, HandlerOutput, Machine};

/// A stream machine and the wakers of the tasks waiting on it.
#[derive(Debug)]
pub(crate) struct Slot<M> {
    pub(crate) machine: M,
    pub(crate) recv_waker: Option<Waker>,
    pub(crate) send_waker: Option<Waker>,
}

impl<M> Slot<M> {
    fn new(machine: M) -> Slot<M> {
        Slot {
            machine,
            recv_waker: None,
            send_waker: None,
        }
    }

    pub(crate) fn wake(&mut self) {
        if let Some(w) = self.recv_waker.take() {
            w.wake();
        }
        if let Some(w) = self.send_waker.take() {
            w.wake();
        }
    }
}

pub(crate) type Shared<M> = Arc<Mutex<Slot<M>>>;

/// A call this side started.
#[derive(Debug)]
enum Outgoing {
    Unary(oneshot::Sender<Result<Payload, MuxError>>),
    Stream(Shared<StreamCaller>),
}

/// A call this side serves.
#[derive(Debug)]
enum Incoming {
    Unary(CancelSignal),
    Stream(Shared<StreamCallee>, CancelSignal),
}

/// Counts of calls in flight on one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InFlight {
    /// Unary calls this side started and is waiting for.
    pub unary_out: usize,
    /// Streams this side opened.
    pub streams_out: usize,
    /// Unary calls this side is serving.
    pub unary_in: usize,
    /// Streams this side is serving.
    pub streams_in: usize,
}

impl InFlight {
    /// Sum of all four.
    pub fn total(&self) -> usize {
        self.unary_out + self.streams_out + self.unary_in + self.streams_in
    }
}

/// One live socket.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: u32,
    pub(crate) peer: Arc<str>,
    pub(crate) role: Role,
    checksum: bool,
    max_payload: usize,
    pub(crate) config: Arc<Config>,
    pub(crate) out: OutQueue,
    registry: Arc<Registry>,
    pub(crate) stats: Arc<ConnStats>,
    pub(crate) timers: Timers,
    next_mux: AtomicU32,
    closing: AtomicBool,
    /// Set when this node or the peer is shutting down: the session's end is then reported to
    /// served handlers as `ShuttingDown`, whichever side notices the closed socket first.
    going_away: AtomicBool,
    closed: CancellationToken,
    close_reason: Mutex<Option<String>>,
    kill: CancellationToken,
    kill_reason: Mutex<Option<String>>,
    calls: Mutex<HashMap<MuxId, Outgoing>>,
    served: Mutex<HashMap<MuxId, Incoming>>,
}

impl Session {
    pub(crate) fn new(
        peer: Arc<str>,
        role: Role,
        checksum: bool,
        config: Arc<Config>,
        registry: Arc<Registry>,
        stats: Arc<ConnStats>,
        peer_max_payload: u64,
    ) -> Arc<Session> {
        // Sending more than the peer accepts would make it drop the whole connection.
        let max_payload = usize::try_from(peer_max_payload)
            .unwrap_or(usize::MAX)
            .min(config.max_payload);
        Arc::new(Session {
            id: fastrand::u32(..),
            peer,
            role,
            checksum,
            max_payload,
            out: OutQueue::new(config.max_queued_bytes, config.max_queued_control),
            config,
            registry,
            stats,
            timers: Timers::default(),
            next_mux: AtomicU32::new(role.first_id()),
            closing: AtomicBool::new(false),
            going_away: AtomicBool::new(false),
            closed: CancellationToken::new(),
            close_reason: Mutex::new(None),
            kill: CancellationToken::new(),
            kill_reason: Mutex::new(None),
            calls: Mutex::new(HashMap::new()),
            served: Mutex::new(HashMap::new()),
        })
    }

    /// Encodes one frame for this socket.
    pub(crate) fn encode(&self, frame: &Frame) -> Bytes {
        let mut buf = BytesMut::with_capacity(frame::encoded_len(frame, self.checksum));
        frame::encode_frame(frame, self.checksum, &mut buf);
        buf.freeze()
    }

    /// Queues a frame without waiting; a stuck peer closes the session.
    ///
    /// Frames that *end* a mux on the callee's side (`End`, `Error`) go in the data lane, behind
    /// the messages already queued for that mux, so a clean end or an error can never overtake
    /// the data before it (MinIO lost stream tails exactly that way, 40fb337 / 02a67cb). Everything
    /// else (credits, pings, pongs, acks, cancels) goes in the control lane, ahead of bulk data.
    pub(crate) fn send_control(&self, frame: &Frame) {
        let bytes = self.encode(frame);
        let queued = match frame {
            Frame::End { .. } | Frame::Error { .. } => self.out.push_data_nowait(bytes),
            _ => self.out.push_control(bytes),
        };
        match queued {
            Ok(()) => {}
            Err(QueueError::Closed) => {}
            Err(QueueError::Stuck) => {
                self.request_close("peer stopped reading: control queue full".into());
            }
        }
    }

    /// Queues every frame a stream machine has to send (credits, pings, pongs, ends, errors).
    pub(crate) fn transmit<M: Machine>(&self, machine: &mut M) {
        while let Some(f) = machine.poll_transmit() {
            self.send_control(&f);
        }
    }

    /// Asks the keepalive task to close the session. Used where closing in place could deadlock
    /// (the caller may hold a stream's lock, which closing takes).
    pub(crate) fn request_close(&self, reason: String) {
        let mut r = self.kill_reason.lock();
        if r.is_none() {
            *r = Some(reason);
        }
        drop(r);
        self.kill.cancel();
    }

    /// Resolves with the reason once [`request_close`](Self::request_close) was called.
    pub(crate) async fn kill_requested(&self) -> String {
        self.kill.cancelled().await;
        self.kill_reason.lock().clone().unwrap_or_default()
    }

    /// Waits until the data lane has room (or the session closed).
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is queued.
    pub(crate) async fn data_room(&self) -> Result<(), QueueError> {
        self.out.wait_room().await
    }

    /// Queues a data frame now, even past the byte bound (callers wait for room first). A
    /// `Request` or `Open` is tagged with its mux so [`cancel_call`](Self::cancel_call) can take it
    /// back while it is still queued.
    pub(crate) fn push_data_now(&self, frame: &Frame) -> Result<(), QueueError> {
        let tag = match frame {
            Frame::Request { mux, .. } | Frame::Open { mux, .. } => mux.0,
            _ => 0,
        };
        self.out.push_data_unbounded(self.encode(frame), tag)
    }

    /// Tells the callee that a call this side started is given up: takes back its `Request` /
    /// `Open` if the writer has not sent it yet (then the callee never hears of the call), else
    /// queues the `Cancel`, which then necessarily travels after it.
    pub(crate) fn cancel_call(&self, cancel: &Frame) {
        if !self.out.retract(cancel.mux().0) {
            self.send_control(cancel);
        }
    }

    /// The largest payload this link carries: the smaller of our limit and the peer's.
    pub(crate) fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Queues a data frame, waiting for room.
    pub(crate) async fn send_data(&self, frame: &Frame) -> Result<(), QueueError> {
        self.data_room().await?;
        self.push_data_now(frame)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Resolves once the session is closed.
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await;
    }

    pub(crate) fn close_reason(&self) -> Option<String> {
        self.close_reason.lock().clone()
    }

    pub(crate) fn in_flight(&self) -> InFlight {
        let mut n = InFlight::default();
        for c in self.calls.lock().values() {
            match c {
                Outgoing::Unary(_) => n.unary_out += 1,
                Outgoing::Stream(_) => n.streams_out += 1,
            }
        }
        for c in self.served.lock().values() {
            match c {
                Incoming::Unary(_) => n.unary_in += 1,
                Incoming::Stream(..) => n.streams_in += 1,
            }
        }
        n
    }

    /// Calls in flight in both directions: a cheap hint of how busy the socket is.
    pub(crate) fn activity(&self) -> usize {
        self.calls.lock().len() + self.served.lock().len()
    }

    /// Ends the session: fails every call it started, cancels every handler it serves, drops its
    /// queue. Idempotent; the first reason is kept.
    pub(crate) fn close(&self, reason: String) {
        let cause = if self.going_away.load(Ordering::Acquire) {
            CancelCause::ShuttingDown
        } else {
            CancelCause::Disconnected
        };
        self.close_as(reason, cause);
    }

    /// Marks the session as ending because a node is shutting down (see [`close`](Self::close)).
    pub(crate) fn mark_going_away(&self) {
        self.going_away.store(true, Ordering::Release);
    }

    /// Ends the session, telling served handlers `cause`.
    pub(crate) fn close_as(&self, reason: String, cause: CancelCause) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        debug!(conn = %format_args!("{:08x}", self.id), peer = %self.peer, %reason, "session closed");
        *self.close_reason.lock() = Some(reason);
        // Take the tables under their locks, then act without them: waking a task must never
        // happen while holding a table lock the task might take. Handlers learn the cause before
        // the queue closes, so a handler blocked on sending reports why, not just "closed".
        let calls = std::mem::take(&mut *self.calls.lock());
        let served = std::mem::take(&mut *self.served.lock());
        for (_, call) in calls {
            match call {
                Outgoing::Unary(tx) => {
                    let _ = tx.send(Err(MuxError::Disconnected));
                }
                Outgoing::Stream(shared) => {
                    let mut slot = shared.lock();
                    slot.machine.disconnect();
                    slot.wake();
                }
            }
        }
        for (_, call) in served {
            match call {
                Incoming::Unary(signal) => signal.cancel(cause),
                Incoming::Stream(shared, signal) => {
                    // The machine first: once it is aborted, a handler that returns because of
                    // the cancellation can no longer queue a clean end (which would turn a
                    // disconnect into a clean end of stream for the caller).
                    let mut slot = shared.lock();
                    slot.machine.abort(cause);
                    slot.wake();
                    drop(slot);
                    signal.cancel(cause);
                }
            }
        }
        self.out.close();
        self.closed.cancel();
        self.timers.wake();
    }

    /// Allocates the next mux id from this side's half of the space, skipping ids in use.
    fn alloc_mux(&self, calls: &HashMap<MuxId, Outgoing>) -> MuxId {
        loop {
            let id = self.next_mux.fetch_add(2, Ordering::Relaxed);
            let mux = MuxId(id);
            if id != 0 && self.role.allocated(mux) && !calls.contains_key(&mux) {
                return mux;
            }
        }
    }

    /// Registers a unary call; the receiver gets its result.
    pub(crate) fn register_unary(
        &self,
    ) -> Result<(MuxId, oneshot::Receiver<Result<Payload, MuxError>>), QueueError> {
        let (tx, rx) = oneshot::channel();
        let mut calls = self.calls.lock();
        if self.is_closed() {
            return Err(QueueError::Closed);
        }
        let mux = self.alloc_mux(&calls);
        calls.insert(mux, Outgoing::Unary(tx));
        Ok((mux, rx))
    }

    /// Forgets a unary call that ended locally (result taken, cancelled, or timed out). Returns
    /// true if it was still pending, i.e. the callee should be told.
    pub(crate) fn forget_unary(&self, mux: MuxId) -> bool {
        matches!(self.calls.lock().remove(&mux), Some(Outgoing::Unary(_)))
    }

    /// Registers a stream this side opens; `make` builds the machine for the allocated id.
    pub(crate) fn register_stream(
        &self,
        make: impl FnOnce(MuxId) -> (StreamCaller, Frame),
    ) -> Result<(Shared<StreamCaller>, Frame), QueueError> {
        let mut calls = self.calls.lock();
        if self.is_closed() {
            return Err(QueueError::Closed);
        }
        let mux = self.alloc_mux(&calls);
        let (machine, open) = make(mux);
        let deadline = machine.poll_timeout();
        let shared = Arc::new(Mutex::new(Slot::new(machine)));
        calls.insert(mux, Outgoing::Stream(shared.clone()));
        drop(calls);
        if let Some(t) = deadline {
            self.timers.schedule(t, mux);
        }
        Ok((shared, open))
    }

    /// Forgets a stream this side opened.
    pub(crate) fn forget_stream(&self, mux: MuxId) {
        self.calls.lock().remove(&mux);
    }

    /// Handles one inbound frame. Runs on the reader; never awaits.
    ///
    /// # Errors
    /// A connection-level protocol violation: the caller must close the session with it.
    pub(crate) fn dispatch(self: &Arc<Self>, frame: Frame, now: Instant) -> Result<(), String> {
        match Direction::of(self.role, &frame) {
            Err(op) => Err(format!("{op:?} on mux {} from the wrong side", frame.mux())),
            Ok(Direction::Connection) => self.on_connection_frame(frame),
            Ok(dir @ Direction::Outgoing(mux)) => {
                self.on_outgoing(dir, mux, frame, now);
                Ok(())
            }
            Ok(dir @ Direction::Incoming(mux)) => self.on_incoming(dir, mux, frame, now),
        }
    }

    fn on_connection_frame(&self, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::Ping { nonce, .. } => {
                self.send_control(&Frame::Pong {
                    mux: MuxId::CONNECTION,
                    nonce,
                });
                Ok(())
            }
            Frame::Pong { nonce, .. } => {
                self.stats.record_pong(nonce);
                Ok(())
            }
            Frame::GoAway { error } => {
                // A clean close, not a violation: the peer is shutting down (or refusing us).
                self.mark_going_away();
                self.close(format!(
                    "the peer is going away: {}",
                    String::from_utf8_lossy(&error.message)
                ));
                Ok(())
            }
            other => Err(format!("unexpected {:?} after the handshake", other.op())),
        }
    }

    fn on_outgoing(&self, dir: Direction, mux: MuxId, frame: Frame, now: Instant) {
        let mut calls = self.calls.lock();
        match calls.get(&mux) {
            None => {
                drop(calls);
                if let Some(reply) = unknown_mux_reply(dir, &frame) {
                    self.send_control(&reply);
                }
            }
            Some(Outgoing::Unary(_)) => {
                let result = match frame {
                    Frame::Response { result, .. } => result.map_err(MuxError::Remote),
                    Frame::Error { error, .. } => Err(MuxError::Remote(error)),
                    other => {
                        debug!(?mux, op = ?other.op(), "ignoring frame for a unary call");
                        return;
                    }
                };
                if let Some(Outgoing::Unary(tx)) = calls.remove(&mux) {
                    drop(calls);
                    let _ = tx.send(result);
                }
            }
            Some(Outgoing::Stream(shared)) => {
                let shared = shared.clone();
                drop(calls);
                let mut slot = shared.lock();
                slot.machine.handle_frame(frame, now);
                self.transmit(&mut slot.machine);
                let terminal = slot.machine.is_terminal();
                slot.wake();
                drop(slot);
                if terminal {
                    self.forget_stream(mux);
                }
            }
        }
    }

    fn on_incoming(
        self: &Arc<Self>,
        dir: Direction,
        mux: MuxId,
        frame: Frame,
        now: Instant,
    ) -> Result<(), String> {
        match frame {
            Frame::Request {
                route,
                deadline_ms,
                payload,
                ..
            } => self.start_unary(mux, route, deadline_ms, payload, now),
            Frame::Open {
                route,
                deadline_ms,
                in_cap,
                out_cap,
                input,
                payload,
                ..
            } => {
                let open = OpenRequest {
                    mux,
                    deadline_ms,
                    in_cap,
                    out_cap,
                    input,
                };
                self.start_stream(open, route, payload, now)
            }
            frame => {
                let served = self.served.lock();
                match served.get(&mux) {
                    None => {
                        drop(served);
                        if let Some(reply) = unknown_mux_reply(dir, &frame) {
                            self.send_control(&reply);
                        }
                    }
                    Some(Incoming::Unary(signal)) => {
                        let signal = signal.clone();
                        drop(served);
                        if let Frame::Cancel { reason, .. } = frame {
                            signal.cancel(CancelCause::from(reason));
                            self.served.lock().remove(&mux);
                        }
                    }
                    Some(Incoming::Stream(shared, signal)) => {
                        let (shared, signal) = (shared.clone(), signal.clone());
                        drop(served);
                        let mut slot = shared.lock();
                        slot.machine.handle_frame(frame, now);
                        self.transmit(&mut slot.machine);
                        let cancelled = slot.machine.cancelled();
                        let terminal = slot.machine.is_terminal();
                        slot.wake();
                        drop(slot);
                        if let Some(cause) = cancelled {
                            signal.cancel(cause);
                        }
                        if terminal {
                            self.served.lock().remove(&mux);
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Admits a new served call: `Ok(false)` if the session is closing (nothing to run),
    /// `Err` if the peer reused a live id (a connection-level violation).
    fn admit(&self, mux: MuxId, entry: Incoming) -> Result<bool, String> {
        let mut served = self.served.lock();
        if self.is_closed() {
            return Ok(false);
        }
        if served.contains_key(&mux) {
            return Err(format!("mux {mux} opened twice"));
        }
        served.insert(mux, entry);
        Ok(true)
    }

    fn refuse(&self, mux: MuxId, error: ErrorRecord) {
        self.send_control(&Frame::Error { mux, error });
    }

    fn overloaded(&self) -> bool {
        self.served.lock().len() >= self.config.max_incoming_calls
    }

    /// Finds the handler for a new call of the given kind, or answers the refusal (unknown
    /// handler or subroute, wrong kind, overloaded) and returns `None`.
    fn route_call(&self, mux: MuxId, route: &frame::Route, stream: bool) -> Option<Registered> {
        let refusal = match self
            .registry
            .lookup(route.handler, route.subroute.as_deref())
        {
            Ok(Registered::Unary(_)) if stream => {
                ErrorRecord::text(ErrorCode::UnknownHandler, "handler is a unary handler")
            }
            Ok(Registered::Stream(_)) if !stream => {
                ErrorRecord::text(ErrorCode::UnknownHandler, "handler is a stream handler")
            }
            Ok(_) if self.overloaded() => {
                ErrorRecord::text(ErrorCode::Overloaded, "too many calls in flight")
            }
            Ok(h) => return Some(h),
            Err(rec) => rec,
        };
        self.refuse(mux, refusal);
        None
    }

    fn start_unary(
        self: &Arc<Self>,
        mux: MuxId,
        route: frame::Route,
        deadline_ms: u32,
        payload: Payload,
        now: Instant,
    ) -> Result<(), String> {
        let Some(Registered::Unary(handler)) = self.route_call(mux, &route, false) else {
            return Ok(());
        };
        let machine = UnaryCallee::accept(mux, deadline_ms, now);
        let signal = CancelSignal::default();
        if !self.admit(mux, Incoming::Unary(signal.clone()))? {
            return Ok(());
        }
        let ctx = Context::new(
            self.peer.clone(),
            route.handler,
            route.subroute.as_deref(),
            machine.deadline(),
            signal.clone(),
        );
        let session = self.clone();
        tokio::spawn(async move {
            let deadline = machine.deadline();
            let mut machine = machine;
            // The handler is called inside the guarded future: a closure that panics before it
            // returns its future is caught like one that panics while running.
            let payload = payload.unwrap_or_default();
            let run = AssertUnwindSafe(async move { handler(ctx, payload).await }).catch_unwind();
            let mut run = std::pin::pin!(run);
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            // Biased, handler first: a handler that finishes on its first poll never registers
            // the deadline timer or the cancellation waiter.
            let result = tokio::select! {
                biased;
                r = &mut run => r,
                cause = signal.cancelled() => {
                    machine.abort(cause);
                    session.served.lock().remove(&mux);
                    drop(session);
                    cancel_grace(run).await;
                    return;
                }
                () = sleep => {
                    signal.cancel(CancelCause::Deadline);
                    if let Some(f) = machine.handle_timeout(Instant::now()) {
                        session.send_control(&f);
                    }
                    session.served.lock().remove(&mux);
                    drop(session);
                    cancel_grace(run).await;
                    return;
                }
            };
            let result = match result {
                Ok(Ok(bytes)) if bytes.len() > session.config.max_payload => {
                    Err(ErrorRecord::text(
                        ErrorCode::TooLarge,
                        format!(
                            "response of {} bytes exceeds the limit of {}",
                            bytes.len(),
                            session.config.max_payload
                        ),
                    ))
                }
                Ok(Ok(bytes)) => Ok(Some(bytes)),
                Ok(Err(e)) => Err(e.into_record()),
                Err(panic) => {
                    let rec = panic_record(panic);
                    warn!(peer = %session.peer, handler = %route.handler, "{}", String::from_utf8_lossy(&rec.message));
                    Err(rec)
                }
            };
            // Removing first means a Cancel that arrives now finds nothing: the response is
            // already committed.
            let still_wanted = session.served.lock().remove(&mux).is_some();
            if let (true, Some(frame)) = (still_wanted, machine.respond(result)) {
                let _ = session.send_data(&frame).await;
            }
        });
        Ok(())
    }

    fn start_stream(
        self: &Arc<Self>,
        open: OpenRequest,
        route: frame::Route,
        payload: Payload,
        now: Instant,
    ) -> Result<(), String> {
        let mux = open.mux;
        let Some(Registered::Stream(handler)) = self.route_call(mux, &route, true) else {
            return Ok(());
        };
        // Long or endless streams are watched for liveness; short ones rely on their deadline.
        let liveness = self.config.stream_liveness_timeout;
        let watch = open.deadline_ms == 0 || u128::from(open.deadline_ms) > liveness.as_millis();
        let limits = CalleeLimits {
            max_in_cap: self.config.max_stream_capacity,
            liveness_timeout: watch.then_some(liveness),
        };
        let (machine, ack) = match StreamCallee::accept(open, limits, now) {
            Ok(ok) => ok,
            Err(refusal) => {
                self.send_control(&refusal);
                return Ok(());
            }
        };
        let deadline = machine.deadline();
        let first_timer = machine.poll_timeout();
        let shared = Arc::new(Mutex::new(Slot::new(machine)));
        let signal = CancelSignal::default();
        if !self.admit(mux, Incoming::Stream(shared.clone(), signal.clone()))? {
            return Ok(());
        }
        self.send_control(&ack);
        if let Some(t) = first_timer {
            self.timers.schedule(t, mux);
        }
        let ctx = Context::new(
            self.peer.clone(),
            route.handler,
            route.subroute.as_deref(),
            deadline,
            signal.clone(),
        );
        let input = open
            .input
            .then(|| HandlerInput::new(self.clone(), shared.clone()));
        let output = HandlerOutput::new(self.clone(), shared.clone(), signal.clone());
        let session = self.clone();
        tokio::spawn(async move {
            let payload = payload.unwrap_or_default();
            let run = AssertUnwindSafe(async move { handler(ctx, payload, input, output).await })
                .catch_unwind();
            let mut run = std::pin::pin!(run);
            let result = tokio::select! {
                biased;
                r = &mut run => r,
                _ = signal.cancelled() => {
                    session.served.lock().remove(&mux);
                    drop(session);
                    cancel_grace(run).await;
                    return;
                }
            };
            let result = match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.into_record()),
                Err(panic) => Err(panic_record(panic)),
            };
            // The end travels in the data lane, behind the messages the handler sent.
            if session.data_room().await.is_ok() {
                let mut slot = shared.lock();
                if let Some(end) = slot.machine.finish(result) {
                    let _ = session.push_data_now(&end);
                }
                slot.wake();
            }
            session.served.lock().remove(&mux);
        });
        Ok(())
    }

    /// Runs due stream timers (deadlines, pings, liveness). Called by the timer task.
    pub(crate) fn fire_timer(&self, mux: MuxId, now: Instant) {
        if self.role.allocated(mux) {
            let shared = match self.calls.lock().get(&mux) {
                Some(Outgoing::Stream(s)) => s.clone(),
                _ => return,
            };
            let mut slot = shared.lock();
            slot.machine.handle_timeout(now);
            self.transmit(&mut slot.machine);
            let next = slot.machine.poll_timeout();
            let terminal = slot.machine.is_terminal();
            slot.wake();
            drop(slot);
            if terminal {
                self.forget_stream(mux);
            } else if let Some(t) = next {
                self.timers.schedule(t, mux);
            }
        } else {
            let (shared, signal) = match self.served.lock().get(&mux) {
                Some(Incoming::Stream(s, sig)) => (s.clone(), sig.clone()),
                _ => return,
            };
            let mut slot = shared.lock();
            slot.machine.handle_timeout(now);
            self.transmit(&mut slot.machine);
            let next = slot.machine.poll_timeout();
            let cancelled = slot.machine.cancelled();
            slot.wake();
            drop(slot);
            if let Some(cause) = cancelled {
                signal.cancel(cause);
                self.served.lock().remove(&mux);
            } else if let Some(t) = next {
                self.timers.schedule(t, mux);
            }
        }
    }
}

/// How long a cancelled handler keeps running so it can observe
/// [`Context::cancelled`](crate::handler::Context::cancelled) and clean up; after that its future
/// is dropped (a handler that ignores its context cannot outlive its call by more than this).
const CANCEL_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Polls a cancelled handler for at most [`CANCEL_GRACE`], then drops it. Its result is discarded:
/// the call is already over for the caller.
async fn cancel_grace<F: std::future::Future>(run: F) {
    let _ = tokio::time::timeout(CANCEL_GRACE, run).await;
}
