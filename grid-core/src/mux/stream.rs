//! The two halves of a stream: an initial payload, an optional caller→callee stream and a
//! callee→caller stream, each with its own credits.
//!
//! ```text
//! caller:  Opening ──Ack──▶ Open ──End (clean or error)──▶ Ended      (queued messages first)
//!             │               │ ──Error frame────────────▶ Failed(Remote)
//!             └───────────────┴─ cancel() / deadline / unresponsive / violation / disconnect
//!                                                         ──▶ Failed(..) + Cancel frame (not on
//!                                                             disconnect)
//!
//! callee:  Running ──finish(result)──▶ Finished                      + End frame
//!             │ ──Cancel frame / deadline / caller silent / violation / abort()
//!             └────────────────────────▶ Cancelled(cause)           (+ Error or End(error) frame)
//! ```
//!
//! The caller may send input as soon as it has opened: `in_cap` and `in_window` in the `Open`
//! frame are both the callee's buffer and the caller's initial credit (messages and bytes), so the
//! callee never has to grant anything before the first message. Liveness: the caller pings an open stream every `ping_interval`; each
//! side treats *any* frame from the other as a sign of life, and gives up after
//! `liveness_timeout` of silence. Pings are answered by the connection reader, so a slow consumer
//! never makes a healthy stream look dead.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::frame::{CancelReason, ErrorCode, ErrorRecord, Frame, Metadata, Payload, Route};
use crate::ids::MuxId;

use super::flow::{Ended, RecvHalf, SendHalf};
use super::unary::{cause_of, deadline_ms};
use super::{CancelCause, MuxError, SendRefusal, SendRejected, Violation};

/// What a stream's consumer gets when it asks for the next message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvItem {
    /// The next message.
    Item(Payload),
    /// The direction is over: `Ok` for a clean end, else why. Returned again on every later call.
    End(Result<(), MuxError>),
    /// Nothing yet: wait for the next inbound frame.
    Empty,
}

/// What a stream's consumer gets when it asks for the next chunk of messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvChunk {
    /// This many messages were moved into the consumer's buffer.
    Items(usize),
    /// The direction is over: `Ok` for a clean end, else why. Returned again on every later call.
    End(Result<(), MuxError>),
    /// Nothing yet: wait for the next inbound frame.
    Empty,
}

/// The caller's choices for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamParams {
    /// Caller→callee messages the callee buffers (ignored without `input`).
    pub in_cap: u32,
    /// Callee→caller messages the caller buffers; at least 1.
    pub out_cap: u32,
    /// Caller→callee payload bytes the callee buffers (ignored without `input`); at least 1.
    pub in_window: u32,
    /// Callee→caller payload bytes the caller buffers; at least 1.
    pub out_window: u32,
    /// Whether the caller sends a stream of messages after the initial payload.
    pub input: bool,
    /// How long the whole stream may take; `None` for no deadline.
    pub timeout: Option<Duration>,
    /// How often the caller pings the stream; `None` disables stream liveness checks.
    pub ping_interval: Option<Duration>,
    /// Silence after which either side gives up on the other.
    pub liveness_timeout: Duration,
}

/// The callee's half of a stream.
#[derive(Debug)]
pub struct StreamCallee {
    mux: MuxId,
    send: SendHalf,
    /// Boxed: most streams have no input, and an idle stream should stay small.
    recv: Option<Box<RecvHalf>>,
    deadline: Option<Instant>,
    liveness_timeout: Option<Duration>,
    last_heard: Instant,
    cancelled: Option<CancelCause>,
    finished: bool,
    outbox: VecDeque<Frame>,
}

/// The caller's half of a stream.
#[derive(Debug)]
pub struct StreamCaller {
    mux: MuxId,
    acked: bool,
    input: bool,
    send: SendHalf,
    recv: RecvHalf,
    deadline: Option<Instant>,
    ping: Option<(Duration, Instant)>,
    liveness_timeout: Duration,
    last_heard: Instant,
    nonce: u64,
    /// Boxed: it comes at most once, and an idle stream should stay small.
    failure: Option<Box<MuxError>>,
    outbox: VecDeque<Frame>,
}

impl StreamCaller {
    /// Opens a stream; returns the machine and the `Open` frame to send.
    pub fn open(
        mux: MuxId,
        route: Route,
        metadata: Metadata,
        payload: Payload,
        params: StreamParams,
        now: Instant,
    ) -> (StreamCaller, Frame) {
        let (in_cap, in_window) = if params.input {
            (params.in_cap.max(1), params.in_window.max(1))
        } else {
            (0, 0)
        };
        let (out_cap, out_window) = (params.out_cap.max(1), params.out_window.max(1));
        let mut send = SendHalf::new(in_cap, in_window);
        if !params.input {
            send.close();
        }
        let frame = Frame::Open {
            mux,
            route,
            deadline_ms: params.timeout.map_or(0, deadline_ms),
            in_cap,
            out_cap,
            in_window,
            out_window,
            input: params.input,
            metadata,
            payload,
        };
        let caller = StreamCaller {
            mux,
            acked: false,
            input: params.input,
            send,
            recv: RecvHalf::new(out_cap, out_window),
            deadline: params.timeout.and_then(|t| now.checked_add(t)),
            ping: params
                .ping_interval
                .and_then(|i| now.checked_add(i).map(|next| (i, next))),
            liveness_timeout: params.liveness_timeout,
            last_heard: now,
            nonce: 0,
            failure: None,
            outbox: VecDeque::new(),
        };
        (caller, frame)
    }

    /// The stream's id.
    pub fn mux(&self) -> MuxId {
        self.mux
    }

    /// True once the callee accepted the stream.
    pub fn is_acked(&self) -> bool {
        self.acked
    }

    /// True once no frame from the callee can change anything: it ended or the stream failed.
    /// Queued messages may still be waiting for [`poll_recv`](Self::poll_recv).
    pub fn is_terminal(&self) -> bool {
        self.failure.is_some() || self.recv.is_ended()
    }

    /// Messages received and not yet taken.
    pub fn queued(&self) -> usize {
        self.recv.queued()
    }

    /// Payload bytes received and not yet taken.
    pub fn buffered_bytes(&self) -> usize {
        self.recv.bytes()
    }

    /// Holds back credit while the connection's inbound budget is full (never stalling the
    /// stream: the message that empties the queue returns what is owed).
    pub fn hold_credit(&mut self, hold: bool) {
        self.recv.hold_credit(hold);
    }

    /// The connection's inbound byte budget cannot take this stream's next message: the stream
    /// fails with [`MuxError::BudgetExceeded`], its queue is dropped, and the callee is told to
    /// stop (a `Cancel` frame).
    pub fn fail_budget(&mut self) {
        if self.is_terminal() {
            return;
        }
        self.fail(MuxError::BudgetExceeded);
        self.recv.discard();
        self.outbox.push_back(Frame::Cancel {
            mux: self.mux,
            reason: CancelReason::CallerGaveUp,
        });
    }

    /// Send credits held right now.
    pub fn credits(&self) -> u32 {
        self.send.credits()
    }

    /// True once the input direction can take no more messages.
    pub fn send_closed(&self) -> bool {
        self.send.is_ended()
    }

    /// Takes a run of `Data` frames' sequence numbers and payloads from the start of `run`, as
    /// [`handle_frame`](Self::handle_frame) takes each `Data` frame (for a reader that hands a
    /// run of them over without building each frame), up to one that breaks a rule; the rest is
    /// left in `run`, not taken.
    #[inline]
    pub fn handle_data_run(&mut self, run: &mut Vec<(u32, Payload)>, now: Instant) {
        if self.is_terminal() || run.is_empty() {
            return;
        }
        self.last_heard = now;
        if let Err(v) = self.recv.on_data_run(run) {
            self.violated(v);
        }
    }

    fn violated(&mut self, v: Violation) {
        self.fail(MuxError::Protocol(v));
        self.outbox.push_back(Frame::Cancel {
            mux: self.mux,
            reason: CancelReason::CallerGaveUp,
        });
    }

    /// Takes a frame addressed to this stream.
    pub fn handle_frame(&mut self, frame: Frame, now: Instant) {
        if self.is_terminal() {
            return;
        }
        self.last_heard = now;
        let outcome = match frame {
            Frame::Ack { .. } if self.acked => Err(Violation::Unexpected("second ack")),
            Frame::Ack { .. } => {
                self.acked = true;
                Ok(())
            }
            Frame::Data { seq, payload, .. } => self.recv.on_data(seq, payload),
            Frame::End { seq, error, .. } => {
                let r = self.recv.on_end(seq, error);
                if r.is_ok() {
                    // The callee is done: it reads no more input.
                    self.send.close();
                }
                r
            }
            Frame::Credit { .. } if !self.input => {
                Err(Violation::Unexpected("credit on a stream without input"))
            }
            Frame::Credit { credits, bytes, .. } => self.send.grant(credits, bytes),
            Frame::Error { error, .. } => {
                self.fail(MuxError::Remote(error));
                Ok(())
            }
            Frame::Pong { .. } => Ok(()),
            Frame::Ping { nonce, .. } => {
                self.outbox.push_back(Frame::Pong {
                    mux: self.mux,
                    nonce,
                });
                Ok(())
            }
            _ => Err(Violation::Unexpected("frame for a stream caller")),
        };
        if let Err(v) = outcome {
            self.violated(v);
        }
    }

    fn fail(&mut self, err: MuxError) {
        if self.failure.is_none() {
            self.failure = Some(Box::new(err));
        }
        self.send.close();
    }

    /// Takes the next message or the end; may queue a `Credit` frame for the callee.
    pub fn poll_recv(&mut self) -> RecvItem {
        if matches!(self.failure.as_deref(), Some(MuxError::Cancelled)) {
            return RecvItem::End(Err(MuxError::Cancelled));
        }
        let before = self.outbox.len();
        let item = self.recv.pop(self.mux, &mut self.outbox);
        if self.failure.is_some() {
            // Over: the callee will send nothing more, credit would be wasted.
            self.outbox.truncate(before);
        }
        match item {
            Some(item) => RecvItem::Item(item),
            None => match self.end_of_output() {
                Some(end) => RecvItem::End(end),
                None => RecvItem::Empty,
            },
        }
    }

    /// Moves the next chunk of messages (at most half of either window) into `out`, counting the
    /// chunk taken before as consumed; or the end. May queue a `Credit` frame for the callee.
    pub fn poll_recv_chunk(&mut self, out: &mut VecDeque<Payload>) -> RecvChunk {
        if matches!(self.failure.as_deref(), Some(MuxError::Cancelled)) {
            return RecvChunk::End(Err(MuxError::Cancelled));
        }
        let before = self.outbox.len();
        let n = self.recv.take_chunk(self.mux, out, &mut self.outbox);
        if self.failure.is_some() {
            self.outbox.truncate(before);
        }
        if n > 0 {
            return RecvChunk::Items(n);
        }
        match self.end_of_output() {
            Some(end) => RecvChunk::End(end),
            None => RecvChunk::Empty,
        }
    }

    /// How the output ended, once every message before the end was taken.
    fn end_of_output(&self) -> Option<Result<(), MuxError>> {
        match (self.recv.end_if_drained(), self.failure.as_deref()) {
            (Some(Ended::Clean), _) => Some(Ok(())),
            (Some(Ended::Error(rec)), _) => Some(Err(MuxError::Remote(rec.clone()))),
            (None, Some(err)) => Some(Err(err.clone())),
            (None, None) => None,
        }
    }

    /// Whether one input message may be sent now (credit in both windows).
    ///
    /// # Errors
    /// `NoCredit` until the callee grants more; `Closed` once input ended or the stream is over.
    pub fn send_ready(&self) -> Result<(), SendRefusal> {
        self.send.ready()
    }

    /// Sequence number of the next input message.
    pub fn next_seq(&self) -> u32 {
        self.send.next_seq()
    }

    /// Takes the credit for one input message of `len` payload bytes and returns its sequence
    /// number, for a `Data` frame the caller builds itself; only after
    /// [`send_ready`](Self::send_ready) said yes.
    pub fn spend(&mut self, len: usize) -> u32 {
        self.send.spend(len)
    }

    /// Sends one input message: the `Data` frame, or the payload handed back.
    ///
    /// # Errors
    /// [`SendRefusal::NoCredit`](super::SendRefusal::NoCredit) until the callee grants more;
    /// [`SendRefusal::Closed`](super::SendRefusal::Closed) once input ended or the stream is over.
    pub fn send(&mut self, payload: Payload) -> Result<Frame, SendRejected> {
        self.send.send(self.mux, payload)
    }

    /// Ends the input stream: the `End` frame, or `None` if it was already over.
    pub fn finish(&mut self) -> Option<Frame> {
        if self.is_terminal() {
            return None;
        }
        self.send.end(self.mux, None)
    }

    /// Gives up on the stream: drops queued messages and returns the `Cancel` frame.
    pub fn cancel(&mut self) -> Option<Frame> {
        if self.is_terminal() {
            return None;
        }
        self.fail(MuxError::Cancelled);
        self.recv.discard();
        Some(Frame::Cancel {
            mux: self.mux,
            reason: CancelReason::CallerGaveUp,
        })
    }

    /// The connection dropped: messages already received are still delivered, then
    /// `Disconnected`.
    pub fn disconnect(&mut self) {
        self.link_lost(MuxError::Disconnected);
    }

    /// The connection ended with `err` (`Disconnected`, or `GoingAway` when the callee's node
    /// left): messages already received are still delivered, then `err`.
    pub fn link_lost(&mut self, err: MuxError) {
        if !self.is_terminal() {
            self.fail(err);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_terminal() {
            return None;
        }
        let ping = self.ping.map(|(_, next)| next);
        match (self.deadline, ping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires the deadline, the liveness check and the next ping, as due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_terminal() {
            return;
        }
        if self.deadline.is_some_and(|d| now >= d) {
            self.fail(MuxError::Deadline);
            self.outbox.push_back(Frame::Cancel {
                mux: self.mux,
                reason: CancelReason::Deadline,
            });
            return;
        }
        let Some((interval, next)) = self.ping else {
            return;
        };
        if now.saturating_duration_since(self.last_heard) >= self.liveness_timeout {
            self.fail(MuxError::Unresponsive);
            self.outbox.push_back(Frame::Cancel {
                mux: self.mux,
                reason: CancelReason::CallerGaveUp,
            });
        } else if now >= next {
            self.nonce = self.nonce.wrapping_add(1);
            self.outbox.push_back(Frame::Ping {
                mux: self.mux,
                nonce: self.nonce,
            });
            self.ping = Some((interval, now + interval));
        }
    }

    /// The next control frame to send (credits, pings, cancels).
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        self.outbox.pop_front()
    }
}

/// What a callee accepts in an `Open` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalleeLimits {
    /// Largest `in_cap` the callee will buffer.
    pub max_in_cap: u32,
    /// Silence from the caller after which the handler is cancelled; `None` disables it.
    pub liveness_timeout: Option<Duration>,
}

/// The fields of an `Open` frame a callee needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenRequest {
    /// The stream.
    pub mux: MuxId,
    /// Relative deadline in ms, 0 for none.
    pub deadline_ms: u32,
    /// Caller→callee buffer, in messages.
    pub in_cap: u32,
    /// Callee→caller buffer, in messages.
    pub out_cap: u32,
    /// Caller→callee buffer, in payload bytes.
    pub in_window: u32,
    /// Callee→caller buffer, in payload bytes.
    pub out_window: u32,
    /// Whether the caller sends input.
    pub input: bool,
}

impl StreamCallee {
    /// Accepts an `Open`: the machine and the `Ack` frame, or the `Error` frame refusing it.
    ///
    /// # Errors
    /// An `Error` frame (`TooLarge` or `Protocol`) when the capacities are out of bounds.
    // The refusal is a frame to send, as the `Ok` side carries one: boxing it would cost an
    // allocation per refusal and gain nothing (the `Ok` side is the larger).
    #[allow(clippy::result_large_err)]
    pub fn accept(
        open: OpenRequest,
        limits: CalleeLimits,
        now: Instant,
    ) -> Result<(StreamCallee, Frame), Frame> {
        let refuse = |code, msg: String| Frame::Error {
            mux: open.mux,
            error: ErrorRecord::text(code, msg),
        };
        if open.out_cap == 0 {
            return Err(refuse(
                ErrorCode::Protocol,
                "out_cap must be at least 1".into(),
            ));
        }
        if open.out_window == 0 {
            return Err(refuse(
                ErrorCode::Protocol,
                "out_window must be at least 1".into(),
            ));
        }
        if open.in_cap > limits.max_in_cap {
            return Err(refuse(
                ErrorCode::TooLarge,
                format!("in_cap {} exceeds limit {}", open.in_cap, limits.max_in_cap),
            ));
        }
        if open.input && open.in_cap == 0 {
            return Err(refuse(
                ErrorCode::Protocol,
                "input stream with in_cap 0".into(),
            ));
        }
        if open.input && open.in_window == 0 {
            return Err(refuse(
                ErrorCode::Protocol,
                "input stream with in_window 0".into(),
            ));
        }
        let callee = StreamCallee {
            mux: open.mux,
            send: SendHalf::new(open.out_cap, open.out_window),
            recv: open
                .input
                .then(|| Box::new(RecvHalf::new(open.in_cap, open.in_window))),
            deadline: (open.deadline_ms > 0)
                .then(|| now + Duration::from_millis(open.deadline_ms.into())),
            liveness_timeout: limits.liveness_timeout,
            last_heard: now,
            cancelled: None,
            finished: false,
            outbox: VecDeque::new(),
        };
        Ok((callee, Frame::Ack { mux: open.mux }))
    }

    /// The stream's id.
    pub fn mux(&self) -> MuxId {
        self.mux
    }

    /// The deadline as the callee sees it.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Why the handler must stop, if it must.
    pub fn cancelled(&self) -> Option<CancelCause> {
        self.cancelled
    }

    /// True once the handler finished or was cancelled: no inbound frame matters any more.
    pub fn is_terminal(&self) -> bool {
        self.cancelled.is_some() || self.finished
    }

    /// Send credits held right now.
    pub fn credits(&self) -> u32 {
        self.send.credits()
    }

    /// Payload bytes of input received and not yet taken.
    pub fn buffered_bytes(&self) -> usize {
        self.recv.as_deref().map_or(0, RecvHalf::bytes)
    }

    /// Holds back input credit while the connection's inbound budget is full.
    pub fn hold_credit(&mut self, hold: bool) {
        if let Some(recv) = self.recv.as_deref_mut() {
            recv.hold_credit(hold);
        }
    }

    /// The connection's inbound byte budget cannot take the caller's next message: the caller
    /// is sent an `Overloaded` end and the handler is cancelled with
    /// [`CancelCause::Overloaded`].
    pub fn fail_budget(&mut self) {
        if self.is_terminal() {
            return;
        }
        let rec = ErrorRecord::text(
            ErrorCode::Overloaded,
            "the callee's inbound buffer budget for this connection is full",
        );
        if let Some(end) = self.send.end(self.mux, Some(rec)) {
            self.outbox.push_back(end);
        }
        self.cancel(CancelCause::Overloaded);
    }

    /// True once the output direction can take no more messages.
    pub fn send_closed(&self) -> bool {
        self.send.is_ended()
    }

    /// Takes a run of `Data` frames' sequence numbers and payloads from the start of `run`, as
    /// [`handle_frame`](Self::handle_frame) takes each `Data` frame (for a reader that hands a
    /// run of them over without building each frame), up to one that breaks a rule; the rest is
    /// left in `run`, not taken.
    #[inline]
    pub fn handle_data_run(&mut self, run: &mut Vec<(u32, Payload)>, now: Instant) {
        if self.is_terminal() || run.is_empty() {
            return;
        }
        self.last_heard = now;
        let outcome = match self.recv.as_deref_mut() {
            Some(recv) => recv.on_data_run(run),
            None => Err(Violation::Unexpected("input on a stream without input")),
        };
        if let Err(v) = outcome {
            self.violated(v);
        }
    }

    fn violated(&mut self, v: Violation) {
        if let Some(end) = self.send.end(self.mux, Some(v.to_record())) {
            self.outbox.push_back(end);
        }
        self.cancel(CancelCause::Protocol);
    }

    /// Takes a frame addressed to this stream.
    pub fn handle_frame(&mut self, frame: Frame, now: Instant) {
        if self.is_terminal() {
            return;
        }
        self.last_heard = now;
        let outcome = match (frame, self.recv.as_deref_mut()) {
            (Frame::Data { seq, payload, .. }, Some(recv)) => recv.on_data(seq, payload),
            (Frame::End { seq, error, .. }, Some(recv)) => recv.on_end(seq, error),
            (Frame::Data { .. } | Frame::End { .. }, None) => {
                Err(Violation::Unexpected("input on a stream without input"))
            }
            (Frame::Credit { credits, bytes, .. }, _) => self.send.grant(credits, bytes),
            (Frame::Cancel { reason, .. }, _) => {
                self.cancel(cause_of(reason));
                Ok(())
            }
            (Frame::Ping { nonce, .. }, _) => {
                self.outbox.push_back(Frame::Pong {
                    mux: self.mux,
                    nonce,
                });
                Ok(())
            }
            (Frame::Pong { .. }, _) => Ok(()),
            _ => Err(Violation::Unexpected("frame for a stream callee")),
        };
        if let Err(v) = outcome {
            self.violated(v);
        }
    }

    fn cancel(&mut self, cause: CancelCause) {
        if self.cancelled.is_none() {
            self.cancelled = Some(cause);
        }
        self.send.close();
        if let Some(recv) = self.recv.as_deref_mut() {
            recv.discard();
        }
    }

    /// Takes the next input message or the end of input; may queue a `Credit` frame.
    pub fn poll_recv(&mut self) -> RecvItem {
        if self.cancelled.is_some() {
            return RecvItem::End(Err(MuxError::Cancelled));
        }
        let Some(recv) = self.recv.as_deref_mut() else {
            return RecvItem::End(Ok(()));
        };
        let before = self.outbox.len();
        let item = recv.pop(self.mux, &mut self.outbox);
        if self.finished {
            // The handler is done: the caller's further input is not wanted.
            self.outbox.truncate(before);
        }
        match item {
            Some(item) => RecvItem::Item(item),
            None => match self.end_of_input() {
                Some(end) => RecvItem::End(end),
                None => RecvItem::Empty,
            },
        }
    }

    /// Moves the next chunk of input messages (at most half of either window) into `out`,
    /// counting the chunk taken before as consumed; or the end of input. May queue a `Credit`
    /// frame.
    pub fn poll_recv_chunk(&mut self, out: &mut VecDeque<Payload>) -> RecvChunk {
        if self.cancelled.is_some() {
            return RecvChunk::End(Err(MuxError::Cancelled));
        }
        let Some(recv) = self.recv.as_deref_mut() else {
            return RecvChunk::End(Ok(()));
        };
        let before = self.outbox.len();
        let n = recv.take_chunk(self.mux, out, &mut self.outbox);
        if self.finished {
            self.outbox.truncate(before);
        }
        if n > 0 {
            return RecvChunk::Items(n);
        }
        match self.end_of_input() {
            Some(end) => RecvChunk::End(end),
            None => RecvChunk::Empty,
        }
    }

    /// The consumer of the input let go of the chunk it took (it stopped reading): the chunk
    /// counts as consumed.
    pub fn release_taken(&mut self) {
        if self.is_terminal() {
            return;
        }
        if let Some(recv) = self.recv.as_deref_mut() {
            recv.release_taken(self.mux, &mut self.outbox);
        }
    }

    fn end_of_input(&self) -> Option<Result<(), MuxError>> {
        match self.recv.as_deref()?.end_if_drained()? {
            Ended::Clean => Some(Ok(())),
            Ended::Error(rec) => Some(Err(MuxError::Remote(rec.clone()))),
        }
    }

    /// Whether one output message may be sent now (credit in both windows).
    ///
    /// # Errors
    /// `NoCredit` until the caller grants more; `Closed` once the stream is over.
    pub fn send_ready(&self) -> Result<(), SendRefusal> {
        self.send.ready()
    }

    /// Sequence number of the next output message.
    pub fn next_seq(&self) -> u32 {
        self.send.next_seq()
    }

    /// Takes the credit for one output message of `len` payload bytes and returns its sequence
    /// number, for a `Data` frame the callee builds itself; only after
    /// [`send_ready`](Self::send_ready) said yes.
    pub fn spend(&mut self, len: usize) -> u32 {
        self.send.spend(len)
    }

    /// Sends one output message: the `Data` frame, or the payload handed back.
    ///
    /// # Errors
    /// `NoCredit` until the caller grants more; `Closed` once the stream is over.
    pub fn send(&mut self, payload: Payload) -> Result<Frame, SendRejected> {
        self.send.send(self.mux, payload)
    }

    /// The handler returned: the `End` frame (with its error, if any), or `None` if nobody is
    /// listening any more.
    pub fn finish(&mut self, result: Result<(), ErrorRecord>) -> Option<Frame> {
        if self.is_terminal() {
            return None;
        }
        self.finished = true;
        self.send.end(self.mux, result.err())
    }

    /// The connection dropped or the node is stopping.
    pub fn abort(&mut self, cause: CancelCause) {
        if !self.is_terminal() {
            self.cancel(cause);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_terminal() {
            return None;
        }
        let silent = self.liveness_timeout.map(|t| self.last_heard + t);
        match (self.deadline, silent) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires the deadline and the liveness check, as due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_terminal() {
            return;
        }
        let (cause, text) = if self.deadline.is_some_and(|d| now >= d) {
            (CancelCause::Deadline, "deadline passed on the callee")
        } else if self
            .liveness_timeout
            .is_some_and(|t| now.saturating_duration_since(self.last_heard) >= t)
        {
            (CancelCause::CallerUnresponsive, "caller stopped pinging")
        } else {
            return;
        };
        let code = if cause == CancelCause::Deadline {
            ErrorCode::Deadline
        } else {
            ErrorCode::Cancelled
        };
        self.cancel(cause);
        self.outbox.push_back(Frame::Error {
            mux: self.mux,
            error: ErrorRecord::text(code, text),
        });
    }

    /// The next control frame to send (credits, pongs, errors).
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        self.outbox.pop_front()
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
