//! A stream machine shared by the socket reader and the stream's user-facing handle, and the
//! wakers of the tasks waiting on it.
//!
//! Every stream has its own mutex (not one per connection), so a busy stream never serialises
//! the others. The slot also keeps the stream's share of the connection's inbound
//! [`Budget`]: [`Slot::settle`] charges or releases the difference between what the machine
//! buffers now and what was charged before, and dropping the slot releases the rest, so the
//! budget returns to zero with the last handle of the stream whatever path ended it.

use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;

use super::budget::Budget;
use crate::frame::{Frame, Payload};
use crate::mux::{RecvItem, SendRejected, StreamCallee, StreamCaller};

/// What the stream handles need from a stream machine, caller or callee half.
pub(crate) trait Machine: Send + 'static {
    fn poll_recv(&mut self) -> RecvItem;
    fn send(&mut self, payload: Payload) -> Result<Frame, SendRejected>;
    fn credits(&self) -> u32;
    fn send_closed(&self) -> bool;
    fn poll_transmit(&mut self) -> Option<Frame>;
    fn buffered_bytes(&self) -> usize;
    fn hold_credit(&mut self, hold: bool);
    fn handle_frame(&mut self, frame: Frame, now: Instant);
    fn fail_budget(&mut self);
    fn handle_timeout(&mut self, now: Instant);
}

macro_rules! impl_machine {
    ($t:ty) => {
        impl Machine for $t {
            fn poll_recv(&mut self) -> RecvItem {
                <$t>::poll_recv(self)
            }
            fn send(&mut self, payload: Payload) -> Result<Frame, SendRejected> {
                <$t>::send(self, payload)
            }
            fn credits(&self) -> u32 {
                <$t>::credits(self)
            }
            fn send_closed(&self) -> bool {
                <$t>::send_closed(self)
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
        self.wake_recv();
        if let Some(w) = self.send_waker.take() {
            w.wake();
        }
    }

    pub(crate) fn wake_recv(&mut self) {
        if let Some(w) = self.recv_waker.take() {
            w.wake();
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

    /// Takes the next message for the consumer, holding back credit while the budget is full.
    pub(crate) fn poll_recv(&mut self) -> RecvItem {
        let hold = self.budget.inbound_full();
        self.machine.hold_credit(hold);
        let item = self.machine.poll_recv();
        self.settle();
        item
    }
}

impl<M: Machine> Drop for Slot<M> {
    fn drop(&mut self) {
        self.budget.release_inbound(self.charged);
    }
}

/// The payload length a frame would add to a stream's buffer.
pub(crate) fn data_len(frame: &Frame) -> usize {
    match frame {
        Frame::Data { payload, .. } => payload.as_ref().map_or(0, Bytes::len),
        _ => 0,
    }
}
