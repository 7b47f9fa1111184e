//! Flow control for one direction of a stream, as two plain structs with no IO.
//!
//! Each direction has two windows, both declared by the receiving side in the `Open` frame:
//!
//! - a **message cap**: the receiver buffers at most that many messages; the sender starts with
//!   that many message credits and spends one per `Data` frame;
//! - a **byte window**: the sender may send while the payload bytes it has sent and not yet had
//!   credited back are *under* the window. The message that crosses the window is still sent
//!   whole (messages are never split), so one message larger than the whole window can travel
//!   alone, and a receiver holds at most `window - 1` bytes plus one message.
//!
//! The receiver returns both kinds of credit together in one `Credit` frame once the consumer
//! has taken half of either window since the last credit (or, while the connection's inbound
//! budget is full, once the stream has nothing buffered): a busy stream costs one `Credit` frame
//! per half window, not one per message. Half a window can never be out of reach: a sender
//! blocked on messages has all `cap` of them outstanding, one blocked on bytes has at least the
//! whole window outstanding, so a consumer that takes what arrived always returns credit.
//!
//! The consumer takes messages one at a time ([`RecvHalf::pop`]) or a chunk at a time
//! ([`RecvHalf::take_chunk`]): a chunk is at most half of either window, and counts as consumed
//! (is credited, and leaves the byte budget) when the consumer comes back for the next one, so
//! one lock per chunk moves the whole chunk while the credit still flows every half window.

use std::collections::VecDeque;

use crate::frame::{ErrorRecord, Frame, Payload};
use crate::ids::MuxId;

use super::{SendRefusal, SendRejected, Violation};

fn len_of(payload: &Payload) -> u64 {
    payload.as_ref().map_or(0, |p| p.len() as u64)
}

/// The sending half of one direction.
#[derive(Debug)]
pub(crate) struct SendHalf {
    /// Message credits we hold: `Data` frames we may still send.
    credits: u32,
    /// The peer's declared message cap: credits can never exceed it.
    capacity: u32,
    /// The peer's declared byte window.
    window: u32,
    /// Payload bytes sent and not yet credited back.
    in_flight: u64,
    /// Sequence number of the next `Data` frame.
    seq: u32,
    /// We sent `End`.
    ended: bool,
}

impl SendHalf {
    pub(crate) fn new(capacity: u32, window: u32) -> SendHalf {
        SendHalf {
            credits: capacity,
            capacity,
            window,
            in_flight: 0,
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

    /// Whether one more message may go now, of any size.
    pub(crate) fn ready(&self) -> Result<(), SendRefusal> {
        if self.ended {
            Err(SendRefusal::Closed)
        } else if self.credits == 0 || self.in_flight >= u64::from(self.window) {
            Err(SendRefusal::NoCredit)
        } else {
            Ok(())
        }
    }

    /// Sequence number of the next `Data` frame.
    pub(crate) fn next_seq(&self) -> u32 {
        self.seq
    }

    /// Spends a message credit and `len` bytes of the window on the next `Data` frame, and
    /// returns its sequence number. Only after [`ready`](Self::ready) said yes.
    pub(crate) fn spend(&mut self, len: usize) -> u32 {
        debug_assert!(self.ready().is_ok(), "spend without ready");
        self.credits = self.credits.saturating_sub(1);
        self.in_flight += len as u64;
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        seq
    }

    /// Spends one credit on a `Data` frame, or hands the payload back.
    pub(crate) fn send(&mut self, mux: MuxId, payload: Payload) -> Result<Frame, SendRejected> {
        if let Err(reason) = self.ready() {
            return Err(SendRejected { payload, reason });
        }
        let len = payload.as_ref().map_or(0, bytes::Bytes::len);
        let seq = self.spend(len);
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

    /// Takes `n` message credits and `bytes` of window granted by the peer.
    pub(crate) fn grant(&mut self, n: u32, bytes: u32) -> Result<(), Violation> {
        let credits = match self.credits.checked_add(n) {
            Some(c) if c <= self.capacity => c,
            _ => {
                return Err(Violation::CreditOverflow {
                    capacity: self.capacity,
                })
            }
        };
        if u64::from(bytes) > self.in_flight {
            return Err(Violation::ByteCreditOverflow {
                in_flight: self.in_flight,
            });
        }
        self.credits = credits;
        self.in_flight -= u64::from(bytes);
        Ok(())
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
    /// Our declared message cap.
    window: u32,
    /// Our declared byte window.
    byte_window: u32,
    /// Message credits the peer holds right now.
    peer_credits: u32,
    /// Payload bytes received and not yet credited back (queued, taken or consumed).
    outstanding: u64,
    /// Messages consumed since we last returned credits.
    unreturned: u32,
    /// Payload bytes consumed since we last returned credits.
    unreturned_bytes: u64,
    /// The chunk the consumer took last and has not come back from: messages, bytes.
    taken: (u32, u64),
    /// Next expected sequence number.
    seq: u32,
    /// Received, not yet taken. Never longer than `window`.
    queue: VecDeque<Payload>,
    /// Payload bytes in `queue`.
    bytes: u64,
    /// While set, consumed messages are not credited back unless the queue runs empty: the
    /// connection's inbound byte budget is full (back-pressure onto the peer).
    hold_credit: bool,
    /// The peer's end of this direction, delivered after the queue drains (boxed: it comes
    /// once, and an idle stream should stay small).
    ended: Option<Box<Ended>>,
}

impl RecvHalf {
    pub(crate) fn new(window: u32, byte_window: u32) -> RecvHalf {
        RecvHalf {
            window,
            byte_window,
            peer_credits: window,
            outstanding: 0,
            unreturned: 0,
            unreturned_bytes: 0,
            taken: (0, 0),
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

    /// Payload bytes received and not yet consumed: queued, plus the chunk the consumer holds.
    /// What the connection's inbound budget is charged for.
    pub(crate) fn bytes(&self) -> usize {
        usize::try_from(self.bytes + self.taken.1).unwrap_or(usize::MAX)
    }

    /// Holds back credit while `hold` (see the field's doc). A hold never stalls the stream: the
    /// message that empties the queue returns every credit owed.
    pub(crate) fn hold_credit(&mut self, hold: bool) {
        self.hold_credit = hold;
    }

    pub(crate) fn on_data(&mut self, seq: u32, payload: Payload) -> Result<(), Violation> {
        self.admit(seq, len_of(&payload))?;
        self.queue.push_back(payload);
        Ok(())
    }

    /// Takes the messages of `run` (sequence number, payload) from its start, each checked and
    /// counted as [`on_data`](Self::on_data) would, up to the first that breaks a rule; what is
    /// left in `run` is not taken.
    ///
    /// Checked in one pass and queued in a second, one `extend` from the run's buffer: a
    /// `push_back` per message was not inlined, and the message it was handed had just been
    /// stored on the stack in four 8-byte stores that its two 16-byte loads could not forward
    /// from, a stall per message (BENCHMARKS.md, "eleventh session").
    #[inline]
    pub(crate) fn on_data_run(&mut self, run: &mut Vec<(u32, Payload)>) -> Result<(), Violation> {
        let mut taken = 0;
        let mut broken = Ok(());
        for (seq, payload) in run.iter() {
            if let Err(v) = self.admit(*seq, len_of(payload)) {
                broken = Err(v);
                break;
            }
            taken += 1;
        }
        self.queue.extend(run.drain(..taken).map(|(_, payload)| payload));
        broken
    }

    /// Checks message `seq` of `len` bytes against the stream's rules and counts it as received.
    #[inline]
    fn admit(&mut self, seq: u32, len: u64) -> Result<(), Violation> {
        if self.ended.is_some() {
            return Err(Violation::Unexpected("data after end of stream"));
        }
        if seq != self.seq {
            return Err(Violation::SequenceGap {
                expected: self.seq,
                got: seq,
            });
        }
        if self.peer_credits == 0 || self.outstanding >= u64::from(self.byte_window) {
            return Err(Violation::NoCredit);
        }
        self.peer_credits -= 1;
        self.outstanding += len;
        self.seq = self.seq.wrapping_add(1);
        self.bytes += len;
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
        self.ended = Some(Box::new(match error {
            None => Ended::Clean,
            Some(rec) => Ended::Error(rec),
        }));
        Ok(())
    }

    /// Counts `n` messages of `bytes` as consumed, and queues the `Credit` frames now due.
    fn consumed(&mut self, mux: MuxId, n: u32, bytes: u64, credit: &mut VecDeque<Frame>) {
        if n == 0 || self.ended.is_some() {
            // The peer is done sending: credits would be wasted.
            return;
        }
        self.unreturned += n;
        self.unreturned_bytes += bytes;
        let due = if self.hold_credit {
            // Held: credit goes back only once this stream has nothing buffered, so a hold
            // slows the peer down but can never stall the stream.
            self.queue.is_empty()
        } else {
            self.unreturned >= self.window.div_ceil(2).max(1)
                || self.unreturned_bytes >= u64::from(self.byte_window.div_ceil(2).max(1))
        };
        if !due {
            return;
        }
        self.peer_credits += self.unreturned;
        self.outstanding -= self.unreturned_bytes;
        let mut credits = std::mem::take(&mut self.unreturned);
        let mut left = std::mem::take(&mut self.unreturned_bytes);
        // A frame carries at most u32::MAX bytes; the rest follows with no message credit.
        loop {
            let bytes = u32::try_from(left).unwrap_or(u32::MAX);
            left -= u64::from(bytes);
            credit.push_back(Frame::Credit {
                mux,
                credits,
                bytes,
            });
            credits = 0;
            if left == 0 {
                return;
            }
        }
    }

    /// The chunk taken last is consumed: counts it, and queues the credit now due.
    pub(crate) fn release_taken(&mut self, mux: MuxId, credit: &mut VecDeque<Frame>) {
        let (n, bytes) = std::mem::take(&mut self.taken);
        self.consumed(mux, n, bytes, credit);
    }

    /// Takes the next message; may queue a `Credit` frame for the peer.
    pub(crate) fn pop(&mut self, mux: MuxId, credit: &mut VecDeque<Frame>) -> Option<Payload> {
        self.release_taken(mux, credit);
        let item = self.queue.pop_front()?;
        let len = len_of(&item);
        self.bytes -= len;
        self.consumed(mux, 1, len, credit);
        Some(item)
    }

    /// Counts the last chunk as consumed, then moves the next one into `out` (which the caller
    /// has emptied): every queued message, up to half of either window (at least one). Returns
    /// how many were moved; may queue `Credit` frames for the peer.
    pub(crate) fn take_chunk(
        &mut self,
        mux: MuxId,
        out: &mut VecDeque<Payload>,
        credit: &mut VecDeque<Frame>,
    ) -> usize {
        self.release_taken(mux, credit);
        let max_n = self.window.div_ceil(2).max(1) as usize;
        let max_bytes = u64::from(self.byte_window.div_ceil(2).max(1));
        let (mut n, mut bytes) = (0usize, 0u64);
        if self.queue.len() <= max_n && self.bytes <= max_bytes && out.is_empty() {
            // The common case: everything queued fits one chunk; swap the buffers.
            std::mem::swap(&mut self.queue, out);
            n = out.len();
            bytes = self.bytes;
        } else {
            while n < max_n && (n == 0 || bytes < max_bytes) {
                let Some(item) = self.queue.pop_front() else {
                    break;
                };
                bytes += len_of(&item);
                out.push_back(item);
                n += 1;
            }
        }
        self.bytes -= bytes;
        // `n` is at most the message cap, a u32.
        self.taken = (u32::try_from(n).unwrap_or(u32::MAX), bytes);
        n
    }

    /// The end, once every queued message has been taken.
    pub(crate) fn end_if_drained(&self) -> Option<&Ended> {
        if self.queue.is_empty() {
            self.ended.as_deref()
        } else {
            None
        }
    }

    /// Drops every queued message (a local cancel).
    pub(crate) fn discard(&mut self) {
        self.queue.clear();
        self.bytes = 0;
        self.taken = (0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const NO_BYTE_LIMIT: u32 = u32::MAX;

    fn p(s: &str) -> Payload {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn n_bytes(n: usize) -> Payload {
        Some(Bytes::from(vec![7u8; n]))
    }

    /// Pops one message and returns it with the credit frames it made due.
    fn pop(r: &mut RecvHalf, m: MuxId) -> (Option<Payload>, Vec<Frame>) {
        let mut credit = VecDeque::new();
        let item = r.pop(m, &mut credit);
        (item, credit.into())
    }

    #[test]
    fn send_spends_credits_and_numbers_frames() {
        let mut s = SendHalf::new(2, NO_BYTE_LIMIT);
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
        s.grant(1, 1).expect("within capacity");
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
        let mut s = SendHalf::new(4, NO_BYTE_LIMIT);
        assert_eq!(
            s.grant(1, 0),
            Err(Violation::CreditOverflow { capacity: 4 })
        );
        let mut s = SendHalf::new(4, NO_BYTE_LIMIT);
        assert_eq!(
            s.grant(u32::MAX, 0),
            Err(Violation::CreditOverflow { capacity: 4 })
        );
    }

    #[test]
    fn byte_credit_beyond_what_is_in_flight_is_a_violation() {
        let m = MuxId(1);
        let mut s = SendHalf::new(4, 100);
        s.send(m, n_bytes(10)).expect("window open");
        assert_eq!(
            s.grant(1, 11),
            Err(Violation::ByteCreditOverflow { in_flight: 10 })
        );
        s.grant(1, 10).expect("exactly what is in flight");
    }

    #[test]
    fn the_byte_window_closes_once_reached_and_the_crossing_message_goes_whole() {
        let m = MuxId(1);
        let mut s = SendHalf::new(100, 10);
        s.send(m, n_bytes(6)).expect("6 of 10");
        s.send(m, n_bytes(30))
            .expect("under the window: the crossing message goes whole");
        let refused = s.send(m, n_bytes(0)).expect_err("36 in flight >= 10");
        assert_eq!(refused.reason, SendRefusal::NoCredit);
        s.grant(1, 30).expect("30 of 36 back");
        s.send(m, n_bytes(1000)).expect("6 in flight < 10");
    }

    #[test]
    fn a_message_larger_than_the_whole_window_travels_alone() {
        let m = MuxId(1);
        let mut s = SendHalf::new(100, 4);
        let mut r = RecvHalf::new(100, 4);
        for round in 0..3u32 {
            let Frame::Data { seq, payload, .. } = s.send(m, n_bytes(64)).expect("window empty")
            else {
                panic!("a data frame")
            };
            assert_eq!(s.ready(), Err(SendRefusal::NoCredit), "round {round}");
            r.on_data(seq, payload).expect("the receiver admits it");
            let (item, credit) = pop(&mut r, m);
            assert_eq!(item, Some(n_bytes(64)));
            assert_eq!(
                credit,
                vec![Frame::Credit {
                    mux: m,
                    credits: 1,
                    bytes: 64
                }]
            );
            s.grant(1, 64).expect("all of it back");
        }
    }

    #[test]
    fn recv_checks_sequence_and_credit() {
        let mut r = RecvHalf::new(1, NO_BYTE_LIMIT);
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

    /// A run is taken as its messages one by one would be: the ones before the first that
    /// breaks a rule are queued in order, and that one and the rest are left untaken.
    #[test]
    fn a_run_is_taken_up_to_its_first_broken_message() {
        let m = MuxId(1);
        let mut one_by_one = RecvHalf::new(3, NO_BYTE_LIMIT);
        let mut by_run = RecvHalf::new(3, NO_BYTE_LIMIT);
        let msgs = [p("a"), p("bc"), None, p("d")];
        let singly: Vec<_> = (0u32..)
            .zip(msgs.clone())
            .map(|(seq, msg)| one_by_one.on_data(seq, msg))
            .collect();
        assert_eq!(singly.last(), Some(&Err(Violation::NoCredit)));
        let mut run: Vec<_> = (0u32..).zip(msgs.clone()).collect();
        assert_eq!(by_run.on_data_run(&mut run), Err(Violation::NoCredit));
        assert_eq!(run, vec![(3, p("d"))], "the message over the cap is not taken");
        assert_eq!(by_run.queued(), 3);
        assert_eq!(by_run.bytes(), one_by_one.bytes());
        for want in &msgs[..3] {
            assert_eq!(pop(&mut by_run, m).0.as_ref(), Some(want));
        }

        // A gap: the messages before it are taken, the rest are left.
        let mut r = RecvHalf::new(10, NO_BYTE_LIMIT);
        let mut run = vec![(0, p("a")), (1, p("b")), (5, p("c")), (2, p("d"))];
        assert_eq!(
            r.on_data_run(&mut run),
            Err(Violation::SequenceGap {
                expected: 2,
                got: 5
            })
        );
        assert_eq!(run.len(), 2);
        assert_eq!(r.queued(), 2);
        // The run goes on from where it left off.
        let mut rest = vec![(2, p("d")), (3, None)];
        assert_eq!(r.on_data_run(&mut rest), Ok(()));
        assert!(rest.is_empty());
        assert_eq!(r.queued(), 4);

        // After the end, nothing is taken.
        let mut ended = RecvHalf::new(10, NO_BYTE_LIMIT);
        ended.on_end(0, None).expect("in order");
        let mut run = vec![(0, p("a"))];
        assert_eq!(
            ended.on_data_run(&mut run),
            Err(Violation::Unexpected("data after end of stream"))
        );
        assert_eq!(ended.queued(), 0);
    }

    #[test]
    fn recv_refuses_data_once_the_byte_window_is_full() {
        let mut r = RecvHalf::new(100, 8);
        r.on_data(0, n_bytes(5)).expect("5 < 8");
        r.on_data(1, n_bytes(50))
            .expect("5 < 8: the crossing message");
        assert_eq!(r.on_data(2, n_bytes(0)), Err(Violation::NoCredit));
    }

    #[test]
    fn zero_length_messages_are_bounded_by_the_message_cap_alone() {
        let m = MuxId(1);
        let mut s = SendHalf::new(3, 1);
        let mut r = RecvHalf::new(3, 1);
        for seq in 0..3 {
            let f = s
                .send(m, Some(Bytes::new()))
                .expect("zero bytes never fill the window");
            assert!(matches!(f, Frame::Data { seq: s, .. } if s == seq));
            r.on_data(seq, Some(Bytes::new())).expect("within the cap");
        }
        assert_eq!(s.ready(), Err(SendRefusal::NoCredit));
        assert_eq!(r.on_data(3, Some(Bytes::new())), Err(Violation::NoCredit));
        assert_eq!(pop(&mut r, m).1, vec![]);
        assert_eq!(
            pop(&mut r, m).1,
            vec![Frame::Credit {
                mux: m,
                credits: 2,
                bytes: 0
            }]
        );
    }

    #[test]
    fn credits_return_in_half_window_batches() {
        let m = MuxId(2);
        let mut r = RecvHalf::new(4, NO_BYTE_LIMIT);
        for seq in 0..4 {
            r.on_data(seq, p("x")).expect("within window");
        }
        let two = Frame::Credit {
            mux: m,
            credits: 2,
            bytes: 2,
        };
        assert_eq!(pop(&mut r, m).1, vec![]);
        assert_eq!(pop(&mut r, m).1, vec![two.clone()]);
        assert_eq!(pop(&mut r, m).1, vec![]);
        assert_eq!(pop(&mut r, m).1, vec![two]);
        assert_eq!(pop(&mut r, m), (None, vec![]));
    }

    #[test]
    fn half_the_byte_window_returns_credit_before_half_the_messages() {
        let m = MuxId(2);
        let mut r = RecvHalf::new(1000, 100);
        r.on_data(0, n_bytes(30)).expect("open");
        r.on_data(1, n_bytes(30)).expect("open");
        assert_eq!(pop(&mut r, m).1, vec![], "30 < 50");
        assert_eq!(
            pop(&mut r, m).1,
            vec![Frame::Credit {
                mux: m,
                credits: 2,
                bytes: 60
            }]
        );
    }

    #[test]
    fn a_chunk_is_half_a_window_and_is_credited_when_the_consumer_comes_back() {
        let m = MuxId(3);
        let mut r = RecvHalf::new(8, NO_BYTE_LIMIT);
        for seq in 0..8 {
            r.on_data(seq, p("ab")).expect("within window");
        }
        let (mut out, mut credit) = (VecDeque::new(), VecDeque::new());
        assert_eq!(r.take_chunk(m, &mut out, &mut credit), 4, "half the cap");
        assert!(credit.is_empty(), "nothing consumed yet");
        assert_eq!(r.bytes(), 16, "the taken chunk is still charged");
        out.clear();
        assert_eq!(r.take_chunk(m, &mut out, &mut credit), 4);
        assert_eq!(
            Vec::from(credit.split_off(0)),
            vec![Frame::Credit {
                mux: m,
                credits: 4,
                bytes: 8
            }],
            "the first chunk, credited on the way back"
        );
        assert_eq!(r.bytes(), 8);
        out.clear();
        assert_eq!(r.take_chunk(m, &mut out, &mut credit), 0);
        assert_eq!(credit.len(), 1, "the second chunk");
        assert_eq!(r.bytes(), 0);
    }

    #[test]
    fn a_chunk_stops_after_the_message_that_crosses_half_the_byte_window() {
        let m = MuxId(3);
        let mut r = RecvHalf::new(100, 10);
        r.on_data(0, n_bytes(3)).expect("open");
        r.on_data(1, n_bytes(3)).expect("open");
        r.on_data(2, n_bytes(3)).expect("open");
        let (mut out, mut credit) = (VecDeque::new(), VecDeque::new());
        assert_eq!(r.take_chunk(m, &mut out, &mut credit), 2, "3 + 3 >= 5");
    }

    #[test]
    fn end_is_seen_only_after_the_queue_drains() {
        let m = MuxId(2);
        let mut r = RecvHalf::new(4, NO_BYTE_LIMIT);
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
        assert_eq!(
            pop(&mut r, m),
            (Some(p("x")), vec![]),
            "no credits after end"
        );
        assert_eq!(r.end_if_drained(), Some(&Ended::Clean));
        assert_eq!(
            r.on_data(1, None),
            Err(Violation::Unexpected("data after end of stream"))
        );
    }

    #[test]
    fn byte_credit_larger_than_a_frame_carries_is_split() {
        let m = MuxId(4);
        let mut r = RecvHalf::new(4, u32::MAX);
        r.on_data(0, n_bytes(1)).expect("open");
        // Play a consumer that took a huge message: the outstanding bytes exceed u32::MAX.
        r.outstanding = u64::from(u32::MAX) + 10;
        let mut credit = VecDeque::new();
        r.consumed(m, 2, u64::from(u32::MAX) + 10, &mut credit);
        assert_eq!(
            Vec::from(credit),
            vec![
                Frame::Credit {
                    mux: m,
                    credits: 2,
                    bytes: u32::MAX
                },
                Frame::Credit {
                    mux: m,
                    credits: 0,
                    bytes: 10
                }
            ]
        );
    }
}
