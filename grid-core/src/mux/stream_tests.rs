//! Stream machines driven back to back with virtual time and no sockets.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::frame::{CancelReason, ErrorCode, ErrorRecord, Frame, Metadata, Route};
use crate::ids::{HandlerId, MuxId};
use crate::mux::{CancelCause, MuxError, SendRefusal, Violation};

const MUX: MuxId = MuxId(1);

/// Message caps only: byte windows as large as the protocol allows.
fn params(out_cap: u32, input: Option<u32>) -> StreamParams {
    StreamParams {
        in_cap: input.unwrap_or(0),
        out_cap,
        in_window: u32::MAX,
        out_window: u32::MAX,
        input: input.is_some(),
        timeout: None,
        ping_interval: None,
        liveness_timeout: Duration::from_secs(60),
    }
}

fn limits() -> CalleeLimits {
    CalleeLimits {
        max_in_cap: 1000,
        liveness_timeout: None,
    }
}

fn item(i: u32) -> Payload {
    Some(Bytes::from(i.to_be_bytes().to_vec()))
}

/// A caller and a callee joined by two in-memory wires.
struct Pair {
    now: Instant,
    caller: StreamCaller,
    callee: StreamCallee,
    to_callee: VecDeque<Frame>,
    to_caller: VecDeque<Frame>,
}

impl Pair {
    fn open(p: StreamParams) -> Pair {
        Pair::open_at(MUX, p)
    }

    fn open_at(mux: MuxId, p: StreamParams) -> Pair {
        let now = Instant::now();
        let route = Route {
            handler: HandlerId(7),
            subroute: None,
        };
        let (caller, open) = StreamCaller::open(
            mux,
            route,
            Metadata::new(),
            Some(Bytes::from_static(b"init")),
            p,
            now,
        );
        let Frame::Open {
            mux,
            deadline_ms,
            in_cap,
            out_cap,
            in_window,
            out_window,
            input,
            ..
        } = open
        else {
            panic!("open() must produce an Open frame, got {open:?}");
        };
        let req = OpenRequest {
            mux,
            deadline_ms,
            in_cap,
            out_cap,
            in_window,
            out_window,
            input,
        };
        let (callee, ack) = StreamCallee::accept(req, limits(), now).expect("accepted");
        Pair {
            now,
            caller,
            callee,
            to_callee: VecDeque::new(),
            to_caller: VecDeque::from([ack]),
        }
    }

    /// Moves every control frame onto the wires and delivers everything in flight.
    fn pump(&mut self) {
        loop {
            while let Some(f) = self.caller.poll_transmit() {
                self.to_callee.push_back(f);
            }
            while let Some(f) = self.callee.poll_transmit() {
                self.to_caller.push_back(f);
            }
            if self.to_callee.is_empty() && self.to_caller.is_empty() {
                return;
            }
            while let Some(f) = self.to_callee.pop_front() {
                self.callee.handle_frame(f, self.now);
            }
            while let Some(f) = self.to_caller.pop_front() {
                self.caller.handle_frame(f, self.now);
            }
        }
    }

    /// The callee sends if it has credit; true if it did.
    fn callee_send(&mut self, p: Payload) -> bool {
        match self.callee.send(p) {
            Ok(f) => {
                self.to_caller.push_back(f);
                true
            }
            Err(rej) => {
                assert_eq!(rej.reason, SendRefusal::NoCredit);
                false
            }
        }
    }
}

/// MinIO lost the tail of streams whose consumer was slower than the producer (40fb337, 02a67cb).
fn n_items_then_end_with_slow_consumer(n: u32, cap: u32) {
    let mut pair = Pair::open(params(cap, None));
    let mut sent = 0;
    let mut got = Vec::new();
    let mut ended = false;
    let mut round = 0u64;
    while !ended {
        round += 1;
        // The producer pushes whatever its credits allow.
        while sent < n && pair.callee_send(item(sent)) {
            sent += 1;
        }
        if sent == n && !pair.callee.is_terminal() {
            let end = pair.callee.finish(Ok(())).expect("handler finished");
            pair.to_caller.push_back(end);
        }
        pair.pump();
        // The consumer takes one message every third round only.
        if round % 3 == 0 {
            match pair.caller.poll_recv() {
                RecvItem::Item(p) => got.push(p),
                RecvItem::End(Ok(())) => ended = true,
                other => panic!(
                    "round {round}: unexpected {other:?} after {} items",
                    got.len()
                ),
            }
        }
        assert!(
            pair.caller.queued() <= cap as usize,
            "buffer grew past capacity"
        );
        assert!(
            round < 10 * u64::from(n) + 100,
            "stream stalled after {} items",
            got.len()
        );
    }
    assert_eq!(got.len(), n as usize);
    assert!(
        got.iter().enumerate().all(|(i, p)| *p == item(i as u32)),
        "order kept"
    );
    assert_eq!(
        pair.caller.poll_recv(),
        RecvItem::End(Ok(())),
        "end is sticky"
    );
}

#[test]
fn ten_thousand_items_capacity_1_slow_consumer() {
    n_items_then_end_with_slow_consumer(10_000, 1);
}

#[test]
fn ten_thousand_items_capacity_100_slow_consumer() {
    n_items_then_end_with_slow_consumer(10_000, 100);
}

/// How the consumer of [`windowed_stream`] takes what arrived.
#[derive(Debug, Clone, Copy)]
enum Take {
    /// One message per call (`poll_recv`).
    One,
    /// A chunk per call (`poll_recv_chunk`), consumed before the next call.
    Chunk,
}

fn sized(i: usize, len: usize) -> Payload {
    let mut v = vec![0u8; len];
    for (k, b) in v.iter_mut().enumerate() {
        *b = (i + k) as u8;
    }
    Some(Bytes::from(v))
}

/// A server stream of messages of the given sizes through a byte window, consumed every
/// `every`-th round: every message arrives once, in order, then the end; the receiver never
/// holds more than the windows allow; the stream never stalls.
fn windowed_stream(sizes: &[usize], cap: u32, window: u32, take: Take, every: u64) {
    let mut p = params(cap, None);
    p.out_window = window;
    let mut pair = Pair::open(p);
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let (mut sent, mut got, mut ended, mut round) = (0, Vec::new(), false, 0u64);
    let mut chunk = VecDeque::new();
    while !ended {
        round += 1;
        while sent < sizes.len() && pair.callee_send(sized(sent, sizes[sent])) {
            sent += 1;
        }
        if sent == sizes.len() && !pair.callee.is_terminal() {
            let end = pair.callee.finish(Ok(())).expect("handler finished");
            pair.to_caller.push_back(end);
        }
        pair.pump();
        assert!(
            pair.caller.queued() <= cap as usize,
            "more messages than the cap"
        );
        assert!(
            pair.caller.buffered_bytes() < window as usize + largest,
            "round {round}: {} bytes buffered, window {window}",
            pair.caller.buffered_bytes()
        );
        if round % every == 0 {
            match take {
                Take::One => match pair.caller.poll_recv() {
                    RecvItem::Item(p) => got.push(p),
                    RecvItem::End(Ok(())) => ended = true,
                    // The credit for the last message is still on its way.
                    RecvItem::Empty => {}
                    other => panic!("round {round}: {other:?} after {} items", got.len()),
                },
                Take::Chunk => match pair.caller.poll_recv_chunk(&mut chunk) {
                    RecvChunk::Items(n) => {
                        assert_eq!(n, chunk.len());
                        got.extend(chunk.drain(..));
                    }
                    RecvChunk::End(Ok(())) => ended = true,
                    RecvChunk::Empty => {}
                    other => panic!("round {round}: {other:?} after {} items", got.len()),
                },
            }
        }
        assert!(
            round < 10 * sizes.len() as u64 + 100,
            "stream stalled after {} of {} items",
            got.len(),
            sizes.len()
        );
    }
    assert_eq!(got.len(), sizes.len(), "every message once");
    for (i, p) in got.iter().enumerate() {
        assert_eq!(*p, sized(i, sizes[i]), "message {i} in order and intact");
    }
    assert_eq!(pair.caller.buffered_bytes(), 0, "nothing left charged");
}

/// Sizes from zero up to several windows, in a repeating pattern.
fn mixed_sizes(n: usize, window: usize) -> Vec<usize> {
    (0..n)
        .map(|i| match i % 7 {
            0 => 0,
            1 => 1,
            2 => window / 3,
            3 => window,
            4 => 3 * window + 1,
            5 => window - 1,
            _ => 17,
        })
        .collect()
}

#[test]
fn messages_larger_than_the_byte_window_arrive_whole_and_in_order() {
    for take in [Take::One, Take::Chunk] {
        windowed_stream(&[200; 300], 64, 50, take, 1);
        windowed_stream(&mixed_sizes(700, 100), 64, 100, take, 3);
    }
}

#[test]
fn a_byte_window_of_one_sends_one_message_at_a_time() {
    let mut p = params(100, None);
    p.out_window = 1;
    let mut pair = Pair::open(p);
    pair.pump();
    assert!(pair.callee_send(sized(0, 5)));
    assert!(!pair.callee_send(sized(1, 5)), "5 bytes in flight >= 1");
    for take in [Take::One, Take::Chunk] {
        windowed_stream(&[5; 200], 100, 1, take, 1);
        windowed_stream(&mixed_sizes(300, 1), 100, 1, take, 2);
    }
}

#[test]
fn a_message_cap_of_one_with_a_byte_window_flows() {
    for take in [Take::One, Take::Chunk] {
        windowed_stream(&mixed_sizes(500, 64), 1, 64, take, 2);
    }
}

#[test]
fn zero_length_messages_flow_within_the_message_cap() {
    for take in [Take::One, Take::Chunk] {
        windowed_stream(&[0; 1000], 8, 1, take, 1);
        windowed_stream(&[0; 1000], 8, 1 << 20, take, 4);
    }
}

#[test]
fn a_slow_consumer_with_byte_windows_gets_everything_once() {
    for take in [Take::One, Take::Chunk] {
        windowed_stream(&[64; 5000], 4096, 1 << 12, take, 5);
        windowed_stream(&mixed_sizes(3000, 1000), 16, 1000, take, 7);
    }
}

#[test]
fn a_chunk_is_charged_until_the_consumer_comes_back_for_more() {
    let mut p = params(100, None);
    p.out_window = 1000;
    let mut pair = Pair::open(p);
    for i in 0..10 {
        assert!(pair.callee_send(sized(i, 10)));
    }
    pair.pump();
    let mut chunk = VecDeque::new();
    assert_eq!(
        pair.caller.poll_recv_chunk(&mut chunk),
        RecvChunk::Items(10)
    );
    assert_eq!(pair.caller.buffered_bytes(), 100, "taken, not yet consumed");
    assert_eq!(
        pair.caller.poll_transmit(),
        None,
        "no credit before consumption"
    );
    chunk.clear();
    assert_eq!(pair.caller.poll_recv_chunk(&mut chunk), RecvChunk::Empty);
    assert_eq!(pair.caller.buffered_bytes(), 0);
    assert_eq!(
        pair.caller.poll_transmit(),
        None,
        "10 of 100 messages and 100 of 1000 bytes: not yet half a window"
    );
}

#[test]
fn cancel_with_a_chunk_taken_ends_at_once_and_charges_nothing() {
    let mut pair = Pair::open(params(10, None));
    for i in 0..4 {
        assert!(pair.callee_send(item(i)));
    }
    pair.pump();
    let mut chunk = VecDeque::new();
    assert_eq!(pair.caller.poll_recv_chunk(&mut chunk), RecvChunk::Items(4));
    assert!(pair.caller.cancel().is_some());
    assert_eq!(pair.caller.buffered_bytes(), 0);
    chunk.clear();
    assert_eq!(
        pair.caller.poll_recv_chunk(&mut chunk),
        RecvChunk::End(Err(MuxError::Cancelled))
    );
}

#[test]
fn a_disconnect_after_a_chunk_delivers_the_rest_then_disconnected() {
    let mut pair = Pair::open(params(100, None));
    for i in 0..30 {
        assert!(pair.callee_send(item(i)));
    }
    pair.pump();
    let mut chunk = VecDeque::new();
    let mut got = Vec::new();
    assert!(matches!(
        pair.caller.poll_recv_chunk(&mut chunk),
        RecvChunk::Items(_)
    ));
    got.extend(chunk.drain(..));
    pair.caller.disconnect();
    loop {
        match pair.caller.poll_recv_chunk(&mut chunk) {
            RecvChunk::Items(_) => got.extend(chunk.drain(..)),
            RecvChunk::End(end) => {
                assert_eq!(end, Err(MuxError::Disconnected));
                break;
            }
            RecvChunk::Empty => panic!("a disconnected stream is never merely empty"),
        }
    }
    assert_eq!(got, (0..30).map(item).collect::<Vec<_>>());
    assert_eq!(
        pair.caller.poll_transmit(),
        None,
        "no credit to a dead link"
    );
}

#[test]
fn two_way_input_with_byte_windows_and_chunks() {
    let mut p = params(4, Some(16));
    p.in_window = 100;
    let mut pair = Pair::open(p);
    let sizes = mixed_sizes(400, 100);
    let (mut next, mut seen, mut chunk) = (0, Vec::new(), VecDeque::new());
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 10_000, "stalled after {} items", seen.len());
        while next < sizes.len() {
            match pair.caller.send(sized(next, sizes[next])) {
                Ok(f) => {
                    pair.to_callee.push_back(f);
                    next += 1;
                }
                Err(rej) => {
                    assert_eq!(rej.reason, SendRefusal::NoCredit);
                    break;
                }
            }
        }
        if next == sizes.len() {
            if let Some(end) = pair.caller.finish() {
                pair.to_callee.push_back(end);
            }
        }
        pair.pump();
        match pair.callee.poll_recv_chunk(&mut chunk) {
            RecvChunk::Items(_) => seen.extend(chunk.drain(..)),
            RecvChunk::End(Ok(())) => break,
            RecvChunk::Empty => {}
            other => panic!("{other:?}"),
        }
        pair.pump();
    }
    assert_eq!(seen.len(), sizes.len());
    assert!(seen
        .iter()
        .enumerate()
        .all(|(i, p)| *p == sized(i, sizes[i])));
}

#[test]
fn data_past_the_byte_window_is_a_violation_of_that_stream() {
    let mut p = params(100, None);
    p.out_window = 10;
    let mut pair = Pair::open(p);
    pair.pump();
    pair.caller.handle_frame(
        Frame::Data {
            mux: MUX,
            seq: 0,
            payload: sized(0, 10),
        },
        pair.now,
    );
    pair.caller.handle_frame(
        Frame::Data {
            mux: MUX,
            seq: 1,
            payload: Some(Bytes::new()),
        },
        pair.now,
    );
    assert_eq!(pair.caller.poll_recv(), RecvItem::Item(sized(0, 10)));
    assert_eq!(
        pair.caller.poll_recv(),
        RecvItem::End(Err(MuxError::Protocol(Violation::NoCredit)))
    );
}

#[test]
fn byte_credit_beyond_what_was_sent_ends_the_stream() {
    let mut pair = Pair::open(params(2, None));
    pair.pump();
    assert!(pair.callee_send(item(0)));
    pair.callee.handle_frame(
        Frame::Credit {
            mux: MUX,
            credits: 1,
            bytes: 5,
        },
        pair.now,
    );
    assert_eq!(pair.callee.cancelled(), Some(CancelCause::Protocol));
}

#[test]
fn remote_error_arrives_after_the_items_before_it() {
    let mut pair = Pair::open(params(10, None));
    for i in 0..3 {
        assert!(pair.callee_send(item(i)));
    }
    let rec = ErrorRecord::text(ErrorCode::Application, "disk gone");
    let end = pair.callee.finish(Err(rec.clone())).expect("running");
    pair.to_caller.push_back(end);
    pair.pump();
    for i in 0..3 {
        assert_eq!(pair.caller.poll_recv(), RecvItem::Item(item(i)));
    }
    assert_eq!(
        pair.caller.poll_recv(),
        RecvItem::End(Err(MuxError::Remote(rec)))
    );
}

#[test]
fn caller_cancel_does_not_wait_for_a_blocked_consumer() {
    let mut pair = Pair::open(params(2, None));
    assert!(pair.callee_send(item(0)));
    assert!(pair.callee_send(item(1)));
    pair.pump();
    assert!(!pair.callee_send(item(2)), "producer is blocked on credit");
    // The consumer never reads; cancelling is immediate and needs nothing from it.
    let cancel = pair.caller.cancel().expect("live stream");
    assert_eq!(
        cancel,
        Frame::Cancel {
            mux: MUX,
            reason: CancelReason::CallerGaveUp
        }
    );
    assert_eq!(
        pair.caller.poll_recv(),
        RecvItem::End(Err(MuxError::Cancelled))
    );
    assert!(pair.caller.is_terminal());
    pair.to_callee.push_back(cancel);
    pair.pump();
    assert_eq!(pair.callee.cancelled(), Some(CancelCause::CallerGaveUp));
    assert_eq!(
        pair.callee.send(item(2)).err().map(|r| r.reason),
        Some(SendRefusal::Closed)
    );
    assert_eq!(pair.callee.finish(Ok(())), None, "no end after a cancel");
}

#[test]
fn callee_cancel_does_not_wait_for_a_blocked_handler() {
    // The handler never reads its input; the caller filled the callee's buffer.
    let mut pair = Pair::open(params(1, Some(3)));
    for i in 0..3 {
        let f = pair.caller.send(item(i)).expect("initial credits");
        pair.to_callee.push_back(f);
    }
    assert_eq!(
        pair.caller.send(item(3)).err().map(|r| r.reason),
        Some(SendRefusal::NoCredit)
    );
    pair.pump();
    pair.to_callee
        .push_back(pair.caller.cancel().expect("live"));
    pair.pump();
    assert_eq!(pair.callee.cancelled(), Some(CancelCause::CallerGaveUp));
    assert_eq!(
        pair.callee.poll_recv(),
        RecvItem::End(Err(MuxError::Cancelled))
    );
}

#[test]
fn two_way_input_flows_with_credits_and_ends() {
    let mut pair = Pair::open(params(4, Some(2)));
    let mut seen = Vec::new();
    let mut next = 0;
    while seen.len() < 50 {
        while next < 50 {
            match pair.caller.send(item(next)) {
                Ok(f) => {
                    pair.to_callee.push_back(f);
                    next += 1;
                }
                Err(rej) => {
                    assert_eq!(rej.reason, SendRefusal::NoCredit);
                    assert_eq!(rej.payload, item(next), "payload handed back");
                    break;
                }
            }
        }
        if next == 50 {
            if let Some(end) = pair.caller.finish() {
                pair.to_callee.push_back(end);
            }
        }
        pair.pump();
        if let RecvItem::Item(p) = pair.callee.poll_recv() {
            seen.push(p);
        }
        pair.pump();
    }
    assert_eq!(pair.callee.poll_recv(), RecvItem::End(Ok(())));
    assert!(seen.iter().enumerate().all(|(i, p)| *p == item(i as u32)));
    let end = pair.callee.finish(Ok(())).expect("running");
    pair.to_caller.push_back(end);
    pair.pump();
    assert_eq!(pair.caller.poll_recv(), RecvItem::End(Ok(())));
}

#[test]
fn empty_and_absent_messages_stay_distinct() {
    let mut pair = Pair::open(params(4, None));
    assert!(pair.callee_send(None));
    assert!(pair.callee_send(Some(Bytes::new())));
    pair.pump();
    assert_eq!(pair.caller.poll_recv(), RecvItem::Item(None));
    assert_eq!(pair.caller.poll_recv(), RecvItem::Item(Some(Bytes::new())));
}

#[test]
fn sequence_gap_ends_only_that_stream() {
    let mut bad = Pair::open_at(MuxId(1), params(4, None));
    let mut good = Pair::open_at(MuxId(3), params(4, None));
    bad.pump();
    good.pump();
    // seq 1 before seq 0: a gap.
    bad.caller.handle_frame(
        Frame::Data {
            mux: MuxId(1),
            seq: 1,
            payload: None,
        },
        bad.now,
    );
    assert_eq!(
        bad.caller.poll_recv(),
        RecvItem::End(Err(MuxError::Protocol(Violation::SequenceGap {
            expected: 0,
            got: 1
        })))
    );
    assert!(
        matches!(
            bad.caller.poll_transmit(),
            Some(Frame::Cancel { mux: MuxId(1), .. })
        ),
        "the callee is told to stop"
    );
    assert!(good.callee_send(item(0)));
    good.pump();
    assert_eq!(good.caller.poll_recv(), RecvItem::Item(item(0)));
}

#[test]
fn data_beyond_credit_ends_the_stream_with_a_protocol_error() {
    let mut pair = Pair::open(params(1, None));
    pair.pump();
    pair.caller.handle_frame(
        Frame::Data {
            mux: MUX,
            seq: 0,
            payload: None,
        },
        pair.now,
    );
    pair.caller.handle_frame(
        Frame::Data {
            mux: MUX,
            seq: 1,
            payload: None,
        },
        pair.now,
    );
    assert_eq!(
        pair.caller.poll_recv(),
        RecvItem::Item(None),
        "the valid message is kept"
    );
    assert_eq!(
        pair.caller.poll_recv(),
        RecvItem::End(Err(MuxError::Protocol(Violation::NoCredit)))
    );
}

#[test]
fn credit_overflow_at_the_callee_ends_the_stream_with_an_error_end() {
    let mut pair = Pair::open(params(2, None));
    pair.pump();
    pair.callee.handle_frame(
        Frame::Credit {
            mux: MUX,
            credits: 5,
            bytes: 0,
        },
        pair.now,
    );
    assert_eq!(pair.callee.cancelled(), Some(CancelCause::Protocol));
    pair.pump();
    match pair.caller.poll_recv() {
        RecvItem::End(Err(MuxError::Remote(rec))) => assert_eq!(rec.code, ErrorCode::Protocol),
        other => panic!("expected a protocol error end, got {other:?}"),
    }
}

#[test]
fn second_ack_is_a_violation() {
    let mut pair = Pair::open(params(2, None));
    pair.pump();
    assert!(pair.caller.is_acked());
    pair.caller.handle_frame(Frame::Ack { mux: MUX }, pair.now);
    assert!(matches!(
        pair.caller.poll_recv(),
        RecvItem::End(Err(MuxError::Protocol(Violation::Unexpected(_))))
    ));
}

#[test]
fn disconnect_delivers_what_arrived_then_disconnected() {
    let mut pair = Pair::open(params(4, Some(1)));
    assert!(pair.callee_send(item(0)));
    pair.pump();
    pair.caller.disconnect();
    pair.callee.abort(CancelCause::Disconnected);
    assert_eq!(pair.caller.poll_recv(), RecvItem::Item(item(0)));
    assert_eq!(
        pair.caller.poll_recv(),
        RecvItem::End(Err(MuxError::Disconnected))
    );
    assert_eq!(
        pair.caller.send(item(1)).err().map(|r| r.reason),
        Some(SendRefusal::Closed)
    );
    assert_eq!(pair.callee.cancelled(), Some(CancelCause::Disconnected));
    assert!(
        pair.caller.poll_transmit().is_none(),
        "nothing is sent on a dead link"
    );
}

#[test]
fn deadline_fails_both_sides() {
    let mut p = params(4, None);
    p.timeout = Some(Duration::from_secs(2));
    let mut pair = Pair::open(p);
    pair.pump();
    let t = pair.now + Duration::from_secs(2);
    assert_eq!(pair.caller.poll_timeout(), Some(t));
    assert_eq!(pair.callee.poll_timeout(), Some(t));
    pair.callee.handle_timeout(t);
    pair.caller.handle_timeout(t);
    assert_eq!(pair.callee.cancelled(), Some(CancelCause::Deadline));
    assert_eq!(
        pair.caller.poll_recv(),
        RecvItem::End(Err(MuxError::Deadline))
    );
    assert!(matches!(
        pair.caller.poll_transmit(),
        Some(Frame::Cancel {
            reason: CancelReason::Deadline,
            ..
        })
    ));
}

#[test]
fn pings_keep_a_slow_stream_alive_and_silence_kills_it() {
    let mut p = params(1, None);
    p.ping_interval = Some(Duration::from_secs(1));
    p.liveness_timeout = Duration::from_secs(4);
    let mut pair = Pair::open(p);
    pair.callee = {
        let req = OpenRequest {
            mux: MUX,
            deadline_ms: 0,
            in_cap: 0,
            out_cap: 1,
            in_window: 0,
            out_window: 1,
            input: false,
        };
        let l = CalleeLimits {
            max_in_cap: 10,
            liveness_timeout: Some(Duration::from_secs(4)),
        };
        StreamCallee::accept(req, l, pair.now).expect("accepted").0
    };
    assert!(pair.callee_send(item(0)));
    // Ten seconds with a consumer that never reads: pings and pongs keep both sides alive.
    for _ in 0..10 {
        pair.now += Duration::from_secs(1);
        pair.caller.handle_timeout(pair.now);
        pair.callee.handle_timeout(pair.now);
        pair.pump();
    }
    assert!(!pair.caller.is_terminal() && !pair.callee.is_terminal());
    // Now the callee goes silent: the caller's pings go nowhere.
    for _ in 0..5 {
        pair.now += Duration::from_secs(1);
        pair.caller.handle_timeout(pair.now);
        while pair.caller.poll_transmit().is_some() {}
    }
    assert_eq!(
        pair.caller.poll_recv(),
        RecvItem::Item(item(0)),
        "data first"
    );
    assert_eq!(
        pair.caller.poll_recv(),
        RecvItem::End(Err(MuxError::Unresponsive))
    );
    // And a callee that hears nothing cancels its handler.
    pair.callee
        .handle_timeout(pair.now + Duration::from_secs(5));
    assert_eq!(
        pair.callee.cancelled(),
        Some(CancelCause::CallerUnresponsive)
    );
}

#[test]
fn callee_refuses_capacities_over_its_limit() {
    let req = OpenRequest {
        mux: MUX,
        deadline_ms: 0,
        in_cap: 1001,
        out_cap: 1,
        in_window: 1,
        out_window: 1,
        input: true,
    };
    let err = StreamCallee::accept(req, limits(), Instant::now()).expect_err("refused");
    assert!(matches!(err, Frame::Error { ref error, .. } if error.code == ErrorCode::TooLarge));
    let req = OpenRequest {
        mux: MUX,
        deadline_ms: 0,
        in_cap: 0,
        out_cap: 0,
        in_window: 0,
        out_window: 1,
        input: false,
    };
    assert!(StreamCallee::accept(req, limits(), Instant::now()).is_err());
    for (in_window, out_window) in [(1, 0), (0, 1)] {
        let req = OpenRequest {
            mux: MUX,
            deadline_ms: 0,
            in_cap: 1,
            out_cap: 1,
            in_window,
            out_window,
            input: true,
        };
        let err = StreamCallee::accept(req, limits(), Instant::now()).expect_err("refused");
        assert!(
            matches!(err, Frame::Error { ref error, .. } if error.code == ErrorCode::Protocol),
            "windows {in_window}/{out_window}: {err:?}"
        );
    }
}

#[test]
fn input_on_a_stream_without_input_is_a_violation() {
    let mut pair = Pair::open(params(1, None));
    pair.callee.handle_frame(
        Frame::Data {
            mux: MUX,
            seq: 0,
            payload: None,
        },
        pair.now,
    );
    assert_eq!(pair.callee.cancelled(), Some(CancelCause::Protocol));
    assert!(matches!(
        pair.callee.poll_transmit(),
        Some(Frame::End { error: Some(ref e), .. }) if e.code == ErrorCode::Protocol
    ));
}

#[test]
fn remote_rejection_fails_the_caller() {
    let mut pair = Pair::open(params(1, None));
    let rec = ErrorRecord::text(ErrorCode::UnknownHandler, "no handler 7");
    pair.caller.handle_frame(
        Frame::Error {
            mux: MUX,
            error: rec.clone(),
        },
        pair.now,
    );
    assert_eq!(
        pair.caller.poll_recv(),
        RecvItem::End(Err(MuxError::Remote(rec)))
    );
    assert_eq!(pair.caller.cancel(), None, "nothing to cancel");
}
