//! Credit-based flow control for one direction of a stream, as two plain structs with no IO.
//!
//! The receiving side declares a capacity (carried in the `Open` frame) and buffers at most that
//! many messages; the sending side starts with that many credits and spends one per `Data` frame.
//! As the consumer takes messages, the receiver returns credits in batches of about half the
//! window, so a busy stream costs one `Credit` frame per half-window, not one per message.

use std::collections::VecDeque;

use crate::frame::{ErrorRecord, Frame, Payload};
use crate::ids::MuxId;

use super::{SendRefusal, SendRejected, Violation};

/// The sending half of one direction.
#[derive(Debug)]
pub(crate) struct SendHalf {
    /// Credits we hold: `Data` frames we may still send.
    credits: u32,
    /// The peer's declared capacity: credits can never exceed it.
    capacity: u32,
    /// Sequence number of the next `Data` frame.
    seq: u32,
    /// We sent `End`.
    ended: bool,
}

impl SendHalf {
    pub(crate) fn new(capacity: u32) -> SendHalf {
        SendHalf {
            credits: capacity,
            capacity,
            seq: 0,
            ended: false,
        }
    }

    pub(crate) fn credits(&self) -> u32 {
        self.credits
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended
    }

    /// Spends one credit on a `Data` frame, or hands the payload back.
    pub(crate) fn send(&mut self, mux: MuxId, payload: Payload) -> Result<Frame, SendRejected> {
        if self.ended {
            return Err(SendRejected {
                payload,
                reason: SendRefusal::Closed,
            });
        }
        if self.credits == 0 {
            return Err(SendRejected {
                payload,
                reason: SendRefusal::NoCredit,
            });
        }
        self.credits -= 1;
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        Ok(Frame::Data { mux, seq, payload })
    }

    /// Ends this direction (cleanly or with an error). `None` if it had already ended.
    pub(crate) fn end(&mut self, mux: MuxId, error: Option<ErrorRecord>) -> Option<Frame> {
        if self.ended {
            return None;
        }
        self.ended = true;
        Some(Frame::End {
            mux,
            seq: self.seq,
            error,
        })
    }

    /// Marks the direction closed without sending anything (the mux is being torn down).
    pub(crate) fn close(&mut self) {
        self.ended = true;
    }

    /// Takes `n` credits granted by the peer.
    pub(crate) fn grant(&mut self, n: u32) -> Result<(), Violation> {
        match self.credits.checked_add(n) {
            Some(c) if c <= self.capacity => {
                self.credits = c;
                Ok(())
            }
            _ => Err(Violation::CreditOverflow {
                capacity: self.capacity,
            }),
        }
    }
}

/// How the receiving direction ended, once the peer's `End` arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    Clean,
    Error(ErrorRecord),
}

/// The receiving half of one direction: the bounded buffer and the credits owed to the peer.
#[derive(Debug)]
pub(crate) struct RecvHalf {
    /// Our declared capacity.
    window: u32,
    /// Credits the peer holds right now.
    peer_credits: u32,
    /// Messages consumed since we last returned credits.
    unreturned: u32,
    /// Next expected sequence number.
    seq: u32,
    /// Received, not yet consumed. Never longer than `window`.
    queue: VecDeque<Payload>,
    /// Payload bytes in `queue`: what the connection's inbound budget is charged for.
    bytes: usize,
    /// While set, consumed messages are not credited back unless the queue runs empty: the
    /// connection's inbound byte budget is full (back-pressure onto the peer).
    hold_credit: bool,
    /// The peer's end of this direction, delivered after the queue drains.
    ended: Option<Ended>,
}

impl RecvHalf {
    pub(crate) fn new(window: u32) -> RecvHalf {
        RecvHalf {
            window,
            peer_credits: window,
            unreturned: 0,
            seq: 0,
            queue: VecDeque::new(),
            bytes: 0,
            hold_credit: false,
            ended: None,
        }
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.is_some()
    }

    /// Payload bytes received and not yet consumed.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds back credit while `hold` (see the field's doc). A hold never stalls the stream: the
    /// message that empties the queue returns every credit owed.
    pub(crate) fn hold_credit(&mut self, hold: bool) {
        self.hold_credit = hold;
    }

    pub(crate) fn on_data(&mut self, seq: u32, payload: Payload) -> Result<(), Violation> {
        if self.ended.is_some() {
            return Err(Violation::Unexpected("data after end of stream"));
        }
        if seq != self.seq {
            return Err(Violation::SequenceGap {
                expected: self.seq,
                got: seq,
            });
        }
        if self.peer_credits == 0 {
            return Err(Violation::NoCredit);
        }
        self.peer_credits -= 1;
        self.seq = self.seq.wrapping_add(1);
        self.bytes += payload.as_ref().map_or(0, bytes::Bytes::len);
        self.queue.push_back(payload);
        Ok(())
    }

    pub(crate) fn on_end(&mut self, seq: u32, error: Option<ErrorRecord>) -> Result<(), Violation> {
        if self.ended.is_some() {
            return Err(Violation::Unexpected("second end of stream"));
        }
        if seq != self.seq {
            return Err(Violation::SequenceGap {
                expected: self.seq,
                got: seq,
            });
        }
        self.ended = Some(match error {
            None => Ended::Clean,
            Some(rec) => Ended::Error(rec),
        });
        Ok(())
    }

    /// Takes the next message; may produce a `Credit` frame for the peer.
    pub(crate) fn pop(&mut self, mux: MuxId) -> (Option<Payload>, Option<Frame>) {
        let Some(item) = self.queue.pop_front() else {
            return (None, None);
        };
        self.bytes -= item.as_ref().map_or(0, bytes::Bytes::len);
        if self.ended.is_some() {
            // The peer is done sending: credits would be wasted.
            return (Some(item), None);
        }
        self.unreturned += 1;
        let threshold = self.window.div_ceil(2).max(1);
        let due = if self.hold_credit {
            // Held: credit goes back only once this stream has nothing buffered, so a hold
            // slows the peer down but can never stall the stream.
            self.queue.is_empty()
        } else {
            self.unreturned >= threshold
        };
        if due {
            let credits = self.unreturned;
            self.unreturned = 0;
            self.peer_credits += credits;
            return (Some(item), Some(Frame::Credit { mux, credits }));
        }
        (Some(item), None)
    }

    /// The end, once every queued message has been taken.
    pub(crate) fn end_if_drained(&self) -> Option<&Ended> {
        if self.queue.is_empty() {
            self.ended.as_ref()
        } else {
            None
        }
    }

    /// Drops every queued message (a local cancel).
    pub(crate) fn discard(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn p(s: &str) -> Payload {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn send_spends_credits_and_numbers_frames() {
        let mut s = SendHalf::new(2);
        let m = MuxId(1);
        assert_eq!(
            s.send(m, p("a")).ok(),
            Some(Frame::Data {
                mux: m,
                seq: 0,
                payload: p("a")
            })
        );
        assert_eq!(
            s.send(m, p("b")).ok(),
            Some(Frame::Data {
                mux: m,
                seq: 1,
                payload: p("b")
            })
        );
        let err = s.send(m, p("c")).expect_err("no credit left");
        assert_eq!(err.reason, SendRefusal::NoCredit);
        assert_eq!(err.payload, p("c"));
        s.grant(1).expect("within capacity");
        assert!(s.send(m, p("c")).is_ok());
        assert_eq!(
            s.end(m, None),
            Some(Frame::End {
                mux: m,
                seq: 3,
                error: None
            })
        );
        assert_eq!(s.end(m, None), None, "end is sent once");
        assert_eq!(
            s.send(m, None).err().map(|e| e.reason),
            Some(SendRefusal::Closed)
        );
    }

    #[test]
    fn credit_beyond_capacity_is_a_violation() {
        let mut s = SendHalf::new(4);
        assert_eq!(s.grant(1), Err(Violation::CreditOverflow { capacity: 4 }));
        let mut s = SendHalf::new(4);
        assert_eq!(
            s.grant(u32::MAX),
            Err(Violation::CreditOverflow { capacity: 4 })
        );
    }

    #[test]
    fn recv_checks_sequence_and_credit() {
        let mut r = RecvHalf::new(1);
        assert_eq!(
            r.on_data(1, None),
            Err(Violation::SequenceGap {
                expected: 0,
                got: 1
            })
        );
        r.on_data(0, p("x")).expect("in order");
        assert_eq!(r.on_data(1, p("y")), Err(Violation::NoCredit));
    }

    #[test]
    fn credits_return_in_half_window_batches() {
        let m = MuxId(2);
        let mut r = RecvHalf::new(4);
        for seq in 0..4 {
            r.on_data(seq, p("x")).expect("within window");
        }
        assert_eq!(r.pop(m).1, None);
        assert_eq!(r.pop(m).1, Some(Frame::Credit { mux: m, credits: 2 }));
        assert_eq!(r.pop(m).1, None);
        assert_eq!(r.pop(m).1, Some(Frame::Credit { mux: m, credits: 2 }));
        assert_eq!(r.pop(m), (None, None));
    }

    #[test]
    fn end_is_seen_only_after_the_queue_drains() {
        let m = MuxId(2);
        let mut r = RecvHalf::new(4);
        r.on_data(0, p("x")).expect("ok");
        assert_eq!(
            r.on_end(0, None),
            Err(Violation::SequenceGap {
                expected: 1,
                got: 0
            })
        );
        r.on_end(1, None).expect("seq matches");
        assert!(r.end_if_drained().is_none());
        assert_eq!(r.pop(m), (Some(p("x")), None), "no credits after end");
        assert_eq!(r.end_if_drained(), Some(&Ended::Clean));
        assert_eq!(
            r.on_data(1, None),
            Err(Violation::Unexpected("data after end of stream"))
        );
    }
}
