//! A stream machine shared by the socket reader and the stream's user-facing handle, and the
//! wakers of the tasks waiting on it.
//!
//! Every stream has its own mutex (not one per connection), so a busy stream never serialises
//! the others. The slot also keeps the stream's share of the connection's inbound
//! [`Budget`]: [`Slot::settle`] charges or releases the difference between what the machine
//! buffers now and what was charged before, and dropping the slot releases the rest, so the
//! budget returns to zero with the last handle of the stream whatever path ended it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;

use super::budget::Budget;
use super::lock::Mutex;
use crate::frame::{Frame, Payload};
use crate::ids::MuxId;
use crate::mux::{RecvChunk, SendRefusal, StreamCallee, StreamCaller};

/// What the stream handles need from a stream machine, caller or callee half.
pub(crate) trait Machine: Send + 'static {
    fn mux(&self) -> MuxId;
    fn poll_recv_chunk(&mut self, out: &mut VecDeque<Payload>) -> RecvChunk;
    fn send_ready(&self) -> Result<(), SendRefusal>;
    fn next_seq(&self) -> u32;
    fn spend(&mut self, len: usize) -> u32;
    fn is_terminal(&self) -> bool;
    fn poll_transmit(&mut self) -> Option<Frame>;
    fn buffered_bytes(&self) -> usize;
    fn hold_credit(&mut self, hold: bool);
    fn handle_frame(&mut self, frame: Frame, now: Instant);
    fn handle_data_run(&mut self, run: &mut Vec<(u32, Payload)>, now: Instant);
    fn fail_budget(&mut self);
    fn handle_timeout(&mut self, now: Instant);
}

macro_rules! impl_machine {
    ($t:ty) => {
        impl Machine for $t {
            fn mux(&self) -> MuxId {
                <$t>::mux(self)
            }
            fn poll_recv_chunk(&mut self, out: &mut VecDeque<Payload>) -> RecvChunk {
                <$t>::poll_recv_chunk(self, out)
            }
            fn send_ready(&self) -> Result<(), SendRefusal> {
                <$t>::send_ready(self)
            }
            fn next_seq(&self) -> u32 {
                <$t>::next_seq(self)
            }
            fn spend(&mut self, len: usize) -> u32 {
                <$t>::spend(self, len)
            }
            fn is_terminal(&self) -> bool {
                <$t>::is_terminal(self)
            }
            fn poll_transmit(&mut self) -> Option<Frame> {
                <$t>::poll_transmit(self)
            }
            fn buffered_bytes(&self) -> usize {
                <$t>::buffered_bytes(self)
            }
            fn hold_credit(&mut self, hold: bool) {
                <$t>::hold_credit(self, hold)
            }
            fn handle_frame(&mut self, frame: Frame, now: Instant) {
                <$t>::handle_frame(self, frame, now)
            }
            #[inline]
            fn handle_data_run(&mut self, run: &mut Vec<(u32, Payload)>, now: Instant) {
                <$t>::handle_data_run(self, run, now)
            }
            fn fail_budget(&mut self) {
                <$t>::fail_budget(self)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$t>::handle_timeout(self, now)
            }
        }
    };
}

impl_machine!(StreamCaller);
impl_machine!(StreamCallee);

/// A stream machine, the wakers of its two directions, and its charge against the budget.
#[derive(Debug)]
pub(crate) struct Slot<M: Machine> {
    pub(crate) machine: M,
    pub(crate) recv_waker: Option<Waker>,
    pub(crate) send_waker: Option<Waker>,
    budget: Arc<Budget>,
    charged: usize,
}

/// A slot as the reader and the handles share it.
pub(crate) type Shared<M> = Arc<Mutex<Slot<M>>>;

impl<M: Machine> Slot<M> {
    pub(crate) fn shared(machine: M, budget: Arc<Budget>) -> Shared<M> {
        Arc::new(Mutex::new(Slot {
            machine,
            recv_waker: None,
            send_waker: None,
            budget,
            charged: 0,
        }))
    }

    /// Wakes both directions' waiters.
    pub(crate) fn wake(&mut self) {
        self.wake_only(Wake::BOTH);
    }

    /// Wakes the waiters of the directions in `wake` only.
    pub(crate) fn wake_only(&mut self, wake: Wake) {
        if wake.recv {
            if let Some(w) = self.recv_waker.take() {
                w.wake();
            }
        }
        if wake.send {
            if let Some(w) = self.send_waker.take() {
                w.wake();
            }
        }
    }

    /// Brings the budget's charge for this stream in line with what the machine buffers.
    pub(crate) fn settle(&mut self) {
        let now = self.machine.buffered_bytes();
        if now > self.charged {
            self.budget.charge_inbound(now - self.charged);
        } else if now < self.charged {
            self.budget.release_inbound(self.charged - now);
        }
        self.charged = now;
    }

    /// True when `len` more bytes would overrun the budget (see [`Budget::inbound_overrun`]).
    pub(crate) fn would_overrun(&self, len: usize) -> bool {
        self.budget.inbound_overrun(len)
    }

    /// Bytes the budget can still take before this stream overruns it (one read of the counter
    /// for a whole run of frames).
    pub(crate) fn overrun_room(&self) -> usize {
        self.budget.overrun_room()
    }

    /// Moves the next chunk of messages into `out` for the consumer (the chunk before counts as
    /// consumed), holding back credit while the budget is full.
    pub(crate) fn poll_recv_chunk(&mut self, out: &mut VecDeque<Payload>) -> RecvChunk {
        let hold = self.budget.inbound_full();
        self.machine.hold_credit(hold);
        let chunk = self.machine.poll_recv_chunk(out);
        self.settle();
        chunk
    }
}

impl<M: Machine> Drop for Slot<M> {
    fn drop(&mut self) {
        self.budget.release_inbound(self.charged);
    }
}

/// Which directions of a stream inbound frames concern: data and ends wake the consumer, credits
/// the producer, anything else (a cancel, an error, a violation) both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Wake {
    recv: bool,
    send: bool,
}

impl Wake {
    pub(crate) const BOTH: Wake = Wake {
        recv: true,
        send: true,
    };

    /// Adds what data frames concern: the consumer.
    pub(crate) fn add_data(&mut self) {
        self.recv = true;
    }

    /// Adds the directions `frame` concerns.
    pub(crate) fn add(&mut self, frame: &Frame) {
        match frame {
            Frame::Data { .. } => self.recv = true,
            Frame::Credit { .. } => self.send = true,
            // An end of input also closes output on the caller's side (the callee read no more).
            _ => *self = Wake::BOTH,
        }
    }
}

/// The payload length a frame would add to a stream's buffer.
pub(crate) fn data_len(frame: &Frame) -> usize {
    match frame {
        Frame::Data { payload, .. } => payload.as_ref().map_or(0, Bytes::len),
        _ => 0,
    }
}
