//! The connection core driven frame by frame, with no socket, no runtime and no clock: every
//! rule of admission, ids, budgets and closing, as the peer could test it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use super::*;
use crate::frame::{CancelReason, Metadata, MetadataLimits, Op};
use crate::ids::HandlerId;
use crate::table::{HandlerTable, Supported};

/// A cancellation handle that remembers its cause.
#[derive(Debug, Clone, Default)]
struct Flag(Arc<Mutex<Option<CancelCause>>>);

type Reply = Arc<Mutex<Option<Result<Payload, MuxError>>>>;

struct Test;
impl Handles for Test {
    type Reply = Reply;
    type Cancel = Flag;
}

const UNARY: HandlerId = HandlerId(1);
const STREAM: HandlerId = HandlerId(2);

/// Knows one unary and one stream handler.
struct Routes;
impl Router for Routes {
    type Handler = HandlerId;
    fn route(&self, route: &Route, kind: CallKind) -> Result<HandlerId, ErrorRecord> {
        match (route.handler, kind) {
            (UNARY, CallKind::Unary) | (STREAM, CallKind::Stream) => Ok(route.handler),
            _ => Err(ErrorRecord::text(
                ErrorCode::UnknownHandler,
                "no such handler",
            )),
        }
    }
}

struct Harness {
    core: ConnCore<Test>,
    budget: Arc<Budget>,
    now: Instant,
}

impl Harness {
    /// An acceptor: the peer (a dialer) allocates odd mux ids.
    fn new(max_calls: usize, max_inbound: usize) -> Harness {
        let budget = Arc::new(Budget::new(max_inbound, 1 << 20));
        let limits = CoreLimits {
            max_incoming_calls: max_calls,
            max_stream_capacity: 64,
            stream_liveness_timeout: Duration::from_secs(60),
            max_payload: 1 << 20,
            chunks: true,
            compression: true,
            metadata: MetadataLimits {
                entries: 4,
                bytes: 64,
            },
        };
        Harness {
            core: ConnCore::new(Role::Acceptor, limits, budget.clone()),
            budget,
            now: Instant::now(),
        }
    }

    fn frame(&mut self, f: Frame) -> Option<Start<HandlerId, Flag>> {
        self.core.handle_frame(f, self.now, &Routes)
    }

    fn request(&mut self, mux: u32, len: usize) -> Option<CallKey> {
        self.frame(Frame::Request {
            mux: MuxId(mux),
            route: route(UNARY),
            deadline_ms: 0,
            metadata: Metadata::new(),
            payload: Some(Bytes::from(vec![7u8; len])),
        })
        .map(|s| s.key)
    }

    fn open(&mut self, mux: u32, in_cap: u32) -> Option<Start<HandlerId, Flag>> {
        self.frame(Frame::Open {
            mux: MuxId(mux),
            route: route(STREAM),
            deadline_ms: 0,
            metadata: Metadata::new(),
            in_cap,
            out_cap: 4,
            in_window: if in_cap > 0 { 1 << 20 } else { 0 },
            out_window: 1 << 20,
            input: in_cap > 0,
            payload: None,
        })
    }

    fn cancel(&mut self, mux: u32) {
        let _ = self.frame(Frame::Cancel {
            mux: MuxId(mux),
            reason: CancelReason::CallerGaveUp,
        });
    }

    fn sent(&mut self) -> Vec<Frame> {
        self.sent_with_lanes().into_iter().map(|(f, _)| f).collect()
    }

    fn sent_with_lanes(&mut self) -> Vec<(Frame, Lane)> {
        std::iter::from_fn(|| self.core.poll_transmit()).collect()
    }

    /// Applies the events as the shell would; returns the close reason if one came.
    fn events(&mut self) -> Option<CloseReason> {
        let mut closed = None;
        while let Some(e) = self.core.poll_event() {
            match e {
                Event::Reply(r, result) => *r.lock() = Some(result),
                Event::Cancel(flag, cause) => {
                    flag.0.lock().get_or_insert(cause);
                }
                Event::Pong(_) | Event::PeerLeaving | Event::ChunksRead(_) => {}
                Event::Closed(reason) => closed = Some(reason),
            }
        }
        closed
    }
}

/// A deadline no test reaches.
fn far() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(3600))
}

fn route(handler: HandlerId) -> Route {
    Route {
        handler,
        subroute: None,
    }
}

fn refusal_code(frames: &[Frame]) -> Option<ErrorCode> {
    frames.iter().find_map(|f| match f {
        Frame::Error { error, .. } => Some(error.code),
        _ => None,
    })
}

#[test]
fn a_reused_id_after_cancel_is_a_new_call_the_old_task_cannot_remove() {
    let mut h = Harness::new(10, 1 << 20);
    let first = h.request(1, 4).expect("admitted");
    h.cancel(1);
    h.events();
    let second = h.request(1, 4).expect("the id is free once cancelled");
    assert_ne!(first, second);
    // The first call's task ends after its grace: it releases its own slot only.
    h.core.finish(first);
    let n = h.core.in_flight();
    assert_eq!((n.unary_in, n.handlers), (1, 1), "{n:?}");
    assert!(
        h.core.commit_response(second),
        "the second call is still wanted"
    );
    h.core.finish(second);
    assert_eq!(h.core.in_flight(), InFlight::default());
    assert_eq!(h.budget.snapshot(0).inbound, 0, "every charge released");
}

#[test]
fn a_request_on_a_live_id_closes_the_connection_with_a_typed_violation() {
    let mut h = Harness::new(10, 1 << 20);
    let start = h.frame(Frame::Request {
        mux: MuxId(1),
        route: route(UNARY),
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: None,
    });
    let flag = start.expect("admitted").cancel;
    assert!(h.request(1, 0).is_none());
    let sent = h.sent();
    assert!(
        matches!(sent.last(), Some(Frame::GoAway { error }) if error.code == ErrorCode::Protocol),
        "{sent:?}"
    );
    let reason = h.events().expect("closed");
    assert_eq!(
        reason,
        CloseReason::violation(ProtocolViolation::MuxReused { mux: MuxId(1) })
    );
    assert_eq!(*flag.0.lock(), Some(CancelCause::Disconnected));
    assert!(h.request(3, 0).is_none(), "nothing is admitted once closed");
}

#[test]
fn slots_are_held_through_the_cancel_grace_until_the_task_finishes() {
    let mut h = Harness::new(2, 1 << 20);
    let a = h.request(1, 0).expect("slot 1");
    h.cancel(1);
    let _b = h.request(3, 0).expect("slot 2");
    h.sent();
    assert!(
        h.request(5, 0).is_none(),
        "the cancelled call still holds its slot"
    );
    assert_eq!(refusal_code(&h.sent()), Some(ErrorCode::Overloaded));
    h.core.finish(a);
    assert!(
        h.request(7, 0).is_some(),
        "its slot is free once its task ended"
    );
}

#[test]
fn a_loop_of_request_cancel_request_never_exceeds_the_cap() {
    let mut h = Harness::new(100, 1 << 20);
    let mut admitted = Vec::new();
    for i in 0..3000u32 {
        let mux = 2 * (i % 7) + 1;
        if let Some(k) = h.request(mux, 0) {
            admitted.push(k);
        }
        h.cancel(mux);
        if let Some(k) = h.request(mux, 0) {
            admitted.push(k);
        }
        h.cancel(mux);
        assert!(h.core.in_flight().handlers <= 100);
    }
    assert_eq!(admitted.len(), 100, "exactly the cap was admitted");
    for k in admitted {
        h.core.finish(k);
    }
    assert_eq!(h.core.in_flight(), InFlight::default());
}

#[test]
fn refusals_go_ahead_of_data_and_a_failed_streams_end_goes_behind_it() {
    let mut h = Harness::new(1, 100);
    let start = h.open(1, 8).expect("admitted");
    h.sent();
    assert!(h.request(3, 0).is_none(), "over the cap");
    let refusal = h.sent_with_lanes();
    assert!(
        matches!(&refusal[..], [(Frame::Error { .. }, Lane::Control)]),
        "{refusal:?}"
    );
    for seq in 0..3 {
        h.frame(Frame::Data {
            mux: MuxId(1),
            seq,
            payload: Some(Bytes::from(vec![0u8; 90])),
        });
    }
    let end = h.sent_with_lanes();
    assert!(
        end.iter()
            .any(|(f, lane)| matches!(f, Frame::End { .. }) && *lane == Lane::AfterData),
        "{end:?}"
    );
    h.core.finish(start.key);
}

#[test]
fn a_caller_that_does_not_read_its_responses_gets_no_new_calls() {
    let mut h = Harness::new(10, 1 << 20);
    h.core.set_backlog_full(true);
    assert!(h.request(1, 0).is_none());
    assert_eq!(refusal_code(&h.sent()), Some(ErrorCode::Overloaded));
    h.core.set_backlog_full(false);
    assert!(h.request(3, 0).is_some());
}

#[test]
fn the_inbound_byte_budget_refuses_new_calls_until_released() {
    let mut h = Harness::new(10, 100);
    let a = h.request(1, 80).expect("80 of 100");
    assert!(h.request(3, 30).is_none());
    assert_eq!(refusal_code(&h.sent()), Some(ErrorCode::Overloaded));
    assert_eq!(h.budget.snapshot(0).inbound, 80);
    h.core.finish(a);
    assert!(h.request(5, 30).is_some());
}

#[test]
fn a_stream_sending_past_twice_the_budget_fails_alone_with_a_typed_end() {
    let mut h = Harness::new(10, 100);
    let start = h.open(1, 8).expect("admitted");
    h.sent();
    let data = |seq, n| Frame::Data {
        mux: MuxId(1),
        seq,
        payload: Some(Bytes::from(vec![1u8; n])),
    };
    assert!(h.frame(data(0, 90)).is_none());
    assert!(h.frame(data(1, 90)).is_none());
    assert_eq!(h.budget.snapshot(0).inbound, 180, "within twice the bound");
    assert!(h.frame(data(2, 30)).is_none());
    let sent = h.sent();
    assert!(
        sent.iter().any(
            |f| matches!(f, Frame::End { error: Some(e), .. } if e.code == ErrorCode::Overloaded)
        ),
        "{sent:?}"
    );
    h.events();
    assert_eq!(*start.cancel.0.lock(), Some(CancelCause::Overloaded));
    assert_eq!(
        h.budget.snapshot(0).inbound,
        0,
        "the failed stream's buffer is dropped"
    );
    assert!(h.core.is_open(), "the connection carries on");
    h.core.finish(start.key);
    assert!(h.request(3, 10).is_some());
}

#[test]
fn frames_from_the_wrong_side_or_with_unexpected_ops_close_with_their_reason() {
    let mut h = Harness::new(10, 100);
    // A response on an id of the peer's half: we never called on it.
    h.frame(Frame::Response {
        mux: MuxId(1),
        result: Ok(None),
    });
    assert_eq!(
        h.events(),
        Some(CloseReason::violation(ProtocolViolation::WrongSide {
            op: Op::Response,
            mux: MuxId(1)
        }))
    );
    let mut h = Harness::new(10, 100);
    h.frame(Frame::Handshake {
        op: Op::Hello,
        payload: Bytes::new(),
    });
    assert_eq!(
        h.events(),
        Some(CloseReason::violation(ProtocolViolation::UnexpectedOp {
            op: Op::Hello
        }))
    );
}

#[test]
fn unknown_handlers_are_refused_without_a_slot() {
    let mut h = Harness::new(10, 100);
    let none = h.frame(Frame::Request {
        mux: MuxId(1),
        route: route(HandlerId(99)),
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: None,
    });
    assert!(none.is_none());
    assert_eq!(refusal_code(&h.sent()), Some(ErrorCode::UnknownHandler));
    assert_eq!(h.core.in_flight(), InFlight::default());
}

#[test]
fn a_peer_going_away_keeps_calls_in_flight_until_it_closes_then_they_fail_going_away() {
    let mut h = Harness::new(10, 100);
    let reply: Reply = Arc::default();
    let mux = h.core.register_unary(reply.clone(), far()).expect("open");
    assert!(mux.0 % 2 == 0, "an acceptor allocates even ids");
    let served = h.frame(Frame::Request {
        mux: MuxId(1),
        route: route(UNARY),
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: None,
    });
    let served = served.expect("admitted");
    h.frame(Frame::GoAway {
        error: ErrorRecord::text(ErrorCode::ShuttingDown, "bye"),
    });
    assert!(h.events().is_none(), "a go-away is not a close");
    assert!(h.core.peer_leaving());
    assert!(
        h.core.register_unary(Reply::default(), far()).is_err(),
        "no new calls to a leaving peer"
    );
    let second = h.request(3, 0).expect("its calls to us are still served");
    h.core.close(CloseReason::remote(CloseKind::SocketClosed));
    let reason = h.events().expect("closed");
    assert_eq!(reason.initiator, Initiator::Remote);
    assert!(reason.is_going_away(), "{reason}");
    assert_eq!(*reply.lock(), Some(Err(MuxError::GoingAway)));
    assert_eq!(*served.cancel.0.lock(), Some(CancelCause::ShuttingDown));
    let n = h.core.in_flight();
    assert_eq!(
        (n.total(), n.handlers),
        (0, 2),
        "the tasks still hold their slots"
    );
    h.core.finish(served.key);
    h.core.finish(second);
    assert_eq!(h.core.in_flight(), InFlight::default());
}

#[test]
fn open_cancel_loops_leave_no_stale_timers() {
    let mut h = Harness::new(10, 1 << 20);
    for i in 0..10_000u32 {
        let mux = 2 * i + 1;
        let start = h.open(mux, 0).expect("admitted");
        h.cancel(mux);
        h.core.finish(start.key);
    }
    h.events();
    assert_eq!(h.core.in_flight(), InFlight::default());
    assert!(
        h.core.timers.len() <= 100,
        "{} timer entries",
        h.core.timers.len()
    );
}

#[test]
fn a_served_stream_times_out_on_silence_and_its_cancel_reaches_the_handler() {
    let mut h = Harness::new(10, 1 << 20);
    let start = h.open(1, 0).expect("admitted");
    let due = h.core.poll_timeout().expect("liveness timer");
    h.core.handle_timeout(due);
    h.events();
    assert_eq!(
        *start.cancel.0.lock(),
        Some(CancelCause::CallerUnresponsive)
    );
    let sent = h.sent();
    assert!(
        sent.iter().any(|f| matches!(f, Frame::Error { .. })),
        "{sent:?}"
    );
}

#[test]
fn a_draining_core_refuses_new_calls_tells_the_peer_and_reports_drained() {
    let mut h = Harness::new(10, 100);
    let running = h.request(1, 0).expect("admitted");
    h.core.drain();
    let sent = h.sent();
    assert!(
        matches!(&sent[..], [Frame::GoAway { error }] if error.code == ErrorCode::ShuttingDown),
        "{sent:?}"
    );
    assert!(h.request(3, 0).is_none());
    assert_eq!(refusal_code(&h.sent()), Some(ErrorCode::ShuttingDown));
    let reply: Reply = Arc::default();
    let ours = h
        .core
        .register_unary(reply.clone(), far())
        .expect("our own calls still go out");
    assert!(!h.core.drained(), "two calls in flight");
    h.frame(Frame::Response {
        mux: ours,
        result: Ok(None),
    });
    h.events();
    assert_eq!(*reply.lock(), Some(Ok(None)));
    assert!(!h.core.drained(), "the served call is still running");
    assert!(h.core.commit_response(running));
    h.core.finish(running);
    assert!(h.core.drained());
    assert!(h.core.is_open(), "drained is not closed: the shell closes");
}

// ---- handler tables ---------------------------------------------------------------------------

/// A table message announcing `ids` without subroutes.
fn table_of(ids: &[HandlerId], complete: bool) -> Bytes {
    let routes: Vec<Route> = ids.iter().map(|id| route(*id)).collect();
    crate::table::encode(&routes, complete).expect("valid table")
}

fn peer_table(ids: &[HandlerId], complete: bool) -> Option<HandlerTable> {
    Some(HandlerTable::decode(&table_of(ids, complete)).expect("valid table"))
}

/// This node's registrations, as the registry would list them.
struct Local(Vec<crate::table::Entry>, bool);

impl crate::table::LocalTable for Local {
    fn entries_since(&self, from: usize) -> Vec<crate::table::Entry> {
        self.0.get(from..).unwrap_or_default().to_vec()
    }
    fn is_complete(&self) -> bool {
        self.1
    }
}

#[test]
fn only_a_complete_peer_table_says_a_route_is_not_served() {
    let mut h = Harness::new(10, 100);
    assert_eq!(h.core.peer_supports(&route(UNARY)), Supported::Unknown);
    h.core.set_tables(peer_table(&[UNARY], false), 0);
    assert_eq!(h.core.peer_supports(&route(UNARY)), Supported::Yes);
    assert_eq!(h.core.peer_supports(&route(STREAM)), Supported::Unknown);
    assert!(
        !h.core.peer_lacks(&route(STREAM)),
        "an incomplete table fails nothing fast"
    );
    h.core.set_tables(peer_table(&[UNARY], true), 0);
    assert_eq!(h.core.peer_supports(&route(STREAM)), Supported::No);
    assert!(h.core.peer_lacks(&route(STREAM)));
    assert!(!h.core.peer_lacks(&route(UNARY)));
    // The subroute is part of the route.
    let under = Route {
        handler: UNARY,
        subroute: Some(Bytes::from_static(b"disk1")),
    };
    assert_eq!(h.core.peer_supports(&under), Supported::No);
}

#[test]
fn handlers_updates_grow_the_peer_table_and_bad_ones_close_with_their_reason() {
    let mut h = Harness::new(10, 100);
    h.core.set_tables(peer_table(&[], false), 0);
    h.frame(Frame::Handlers {
        update: table_of(&[STREAM], true),
    });
    assert_eq!(h.core.peer_supports(&route(STREAM)), Supported::Yes);
    assert_eq!(h.core.peer_supports(&route(UNARY)), Supported::No);
    assert_eq!(h.sent(), vec![], "an update is not answered");
    assert_eq!(h.events(), None);

    // A route announced twice: the connection closes, and the peer is told why.
    h.frame(Frame::Handlers {
        update: table_of(&[STREAM], true),
    });
    let reason = h.events().expect("closed");
    assert!(
        matches!(
            &reason.kind,
            CloseKind::Violation(ProtocolViolation::HandlerTable(
                crate::table::TableError::Duplicate { handler, .. }
            )) if *handler == STREAM
        ),
        "{reason:?}"
    );
    assert!(
        matches!(&h.sent()[..], [Frame::GoAway { error }] if error.code == ErrorCode::Protocol)
    );

    // Too many routes.
    let mut h = Harness::new(10, 100);
    h.core.set_tables(peer_table(&[], false), 0);
    let many: Vec<HandlerId> = (1..=crate::table::MAX_TABLE_ENTRIES as u32)
        .map(HandlerId)
        .collect();
    h.frame(Frame::Handlers {
        update: table_of(&many, false),
    });
    assert_eq!(h.events(), None, "at the bound");
    h.frame(Frame::Handlers {
        update: table_of(&[HandlerId(u32::MAX)], false),
    });
    assert_eq!(
        h.events().map(|r| r.kind),
        Some(CloseKind::Violation(ProtocolViolation::HandlerTable(
            crate::table::TableError::TooManyEntries {
                limit: crate::table::MAX_TABLE_ENTRIES
            }
        )))
    );

    // From a peer that announced no table in its handshake, an update is out of place.
    let mut h = Harness::new(10, 100);
    h.frame(Frame::Handlers {
        update: table_of(&[STREAM], true),
    });
    assert_eq!(
        h.events(),
        Some(CloseReason::violation(ProtocolViolation::UnexpectedOp {
            op: Op::Handlers
        }))
    );
}

#[test]
fn announce_tells_the_peer_only_what_it_has_not_heard_in_parts_that_fit() {
    let entries: Vec<crate::table::Entry> = (1..=40u32)
        .map(|i| {
            (
                HandlerId(i),
                (i % 3 == 0).then(|| format!("disk{i}").into()),
            )
        })
        .collect();
    let local = Local(entries.clone(), true);

    // The handshake carried the first 10; the rest go now, in parts of at most 128 bytes, the
    // last one complete; all of them in the control lane.
    let mut h = Harness::new(10, 100);
    h.core.set_tables(peer_table(&[], false), 10);
    h.core.announce(&local, 128);
    let sent = h.sent_with_lanes();
    assert!(sent.len() > 1, "{} parts", sent.len());
    let mut seen = HandlerTable::decode(&[0]).expect("empty");
    for (i, (frame, lane)) in sent.iter().enumerate() {
        assert_eq!(*lane, Lane::Control);
        let Frame::Handlers { update } = frame else {
            panic!("not a Handlers frame: {frame:?}")
        };
        assert!(update.len() <= 128);
        assert_eq!(update[0] == crate::table::COMPLETE, i + 1 == sent.len());
        seen.apply(update).expect("each part is a valid update");
    }
    assert_eq!(seen.len(), 30);
    assert!(seen.contains(HandlerId(11), None));
    assert!(
        !seen.contains(HandlerId(10), None),
        "already in the handshake"
    );
    assert!(seen.contains(HandlerId(12), Some(b"disk12")));

    // Nothing new: nothing sent. One more registration: one more update.
    h.core.announce(&local, 128);
    assert_eq!(h.sent(), vec![]);
    let mut more = entries;
    more.push((HandlerId(99), None));
    h.core.announce(&Local(more.clone(), true), 128);
    assert!(matches!(&h.sent()[..], [Frame::Handlers { .. }]));

    // A peer that announced no table gets no `Handlers` frame: it would not know the op.
    let mut h = Harness::new(10, 100);
    h.core.announce(&Local(more, true), 128);
    assert_eq!(h.sent(), vec![]);
}

fn metadata_of(n: usize, value_len: usize) -> Metadata {
    let mut m = Metadata::new();
    for i in 0..n {
        m.insert(&format!("k{i}"), vec![0xffu8; value_len])
            .expect("valid entry");
    }
    m
}

#[test]
fn metadata_within_the_limits_reaches_the_call_and_is_charged() {
    let mut h = Harness::new(10, 1 << 20);
    let metadata = metadata_of(4, 10);
    let start = h
        .frame(Frame::Request {
            mux: MuxId(1),
            route: route(UNARY),
            deadline_ms: 0,
            metadata: metadata.clone(),
            payload: Some(Bytes::from_static(b"abc")),
        })
        .expect("admitted");
    assert_eq!(start.metadata, metadata);
    assert_eq!(
        h.budget.snapshot(0).inbound,
        3 + metadata.encoded_len(),
        "payload and metadata are charged"
    );
    h.core.finish(start.key);
    assert_eq!(h.budget.snapshot(0).inbound, 0);
}

#[test]
fn metadata_over_the_limits_is_refused_for_that_call_only() {
    let mut h = Harness::new(10, 1 << 20);
    // 5 entries where 4 are allowed; then 4 entries of 17 bytes each (68 > 64 bytes).
    for (mux, metadata) in [(1, metadata_of(5, 0)), (3, metadata_of(4, 15))] {
        let start = h.frame(Frame::Request {
            mux: MuxId(mux),
            route: route(UNARY),
            deadline_ms: 0,
            metadata,
            payload: None,
        });
        assert!(start.is_none(), "refused");
        let sent = h.sent();
        assert_eq!(refusal_code(&sent), Some(ErrorCode::TooLarge), "{sent:?}");
    }
    let open = h.frame(Frame::Open {
        mux: MuxId(5),
        route: route(STREAM),
        deadline_ms: 0,
        metadata: metadata_of(5, 0),
        in_cap: 0,
        out_cap: 4,
        in_window: 0,
        out_window: 1 << 20,
        input: false,
        payload: None,
    });
    assert!(open.is_none(), "refused");
    assert_eq!(refusal_code(&h.sent()), Some(ErrorCode::TooLarge));
    assert!(h.events().is_none(), "the connection stays open");
    assert!(h.core.is_open());
    assert_eq!(h.core.in_flight(), InFlight::default());
    // The next call is served.
    assert!(h.request(7, 1).is_some());
}

/// A unary `Request` on `mux` with `len` payload bytes, encoded, to be sent in parts.
fn request_bytes(mux: u32, len: usize) -> Bytes {
    let mut b = bytes::BytesMut::new();
    let frame = Frame::Request {
        mux: MuxId(mux),
        route: route(UNARY),
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: Some(Bytes::from(vec![9u8; len])),
    };
    crate::frame::encode_frame(&frame, false, &mut b);
    b.freeze()
}

fn part(mux: u32, bytes: Bytes) -> Frame {
    Frame::Chunk {
        mux: MuxId(mux),
        bytes,
    }
}

#[test]
fn a_request_in_parts_is_reserved_at_its_first_part_acked_part_by_part_and_run_once_whole() {
    let mut h = Harness::new(10, 1 << 20);
    let whole = request_bytes(1, 3000);
    assert!(h.frame(part(1, whole.slice(..1000))).is_none());
    assert_eq!(h.sent(), vec![Frame::ChunkAck { bytes: 1000 }]);
    assert_eq!(h.budget.snapshot(0).inbound, whole.len(), "reserved whole");
    let start = h
        .frame(part(1, whole.slice(1000..)))
        .expect("admitted once whole");
    assert_eq!(start.payload.len(), 3000);
    assert_eq!(
        h.sent(),
        vec![Frame::ChunkAck {
            bytes: (whole.len() - 1000) as u32
        }]
    );
    assert_eq!(
        h.budget.snapshot(0).inbound,
        3000,
        "the call's own charge only"
    );
    h.core.finish(start.key);
    assert_eq!(h.budget.snapshot(0).inbound, 0);
}

#[test]
fn a_request_in_parts_over_the_budget_is_refused_at_its_first_part() {
    let mut h = Harness::new(10, 2000);
    let whole = request_bytes(1, 3000);
    assert!(h.frame(part(1, whole.slice(..1000))).is_none());
    assert_eq!(refusal_code(&h.sent()), Some(ErrorCode::Overloaded));
    assert_eq!(h.budget.snapshot(0).inbound, 0, "nothing kept");
    assert!(
        h.frame(part(1, whole.slice(1000..))).is_none(),
        "only counted"
    );
    assert!(h.events().is_none(), "the connection stays");
    assert_eq!(h.core.in_flight(), InFlight::default());
}

#[test]
fn a_whole_frame_amid_its_muxs_parts_is_a_violation() {
    let mut h = Harness::new(10, 1 << 20);
    let whole = request_bytes(1, 3000);
    assert!(h.frame(part(1, whole.slice(..1000))).is_none());
    assert!(h.request(1, 0).is_none());
    assert_eq!(
        h.events(),
        Some(CloseReason::violation(ProtocolViolation::Chunk(
            ChunkViolation::Interleaved {
                mux: MuxId(1),
                op: Op::Request
            }
        )))
    );
    assert_eq!(
        h.budget.snapshot(0).inbound,
        0,
        "the close releases the parts"
    );
}

#[test]
fn parts_from_a_peer_that_did_not_agree_are_a_violation() {
    let mut h = Harness::new(10, 1 << 20);
    h.core.limits.chunks = false;
    assert!(h.frame(part(1, request_bytes(1, 10))).is_none());
    assert_eq!(
        h.events(),
        Some(CloseReason::violation(ProtocolViolation::Chunk(
            ChunkViolation::NotAgreed
        )))
    );
}

#[test]
fn a_request_in_parts_with_metadata_and_a_payload_at_the_limit_is_admitted() {
    let mut h = Harness::new(10, 4 << 20);
    let frame = Frame::Request {
        mux: MuxId(1),
        route: route(UNARY),
        deadline_ms: 0,
        metadata: metadata_of(2, 10),
        payload: Some(Bytes::from(vec![1u8; 1 << 20])),
    };
    let mut whole = bytes::BytesMut::new();
    crate::frame::encode_frame(&frame, false, &mut whole);
    let whole = whole.freeze();
    let mut start = None;
    for at in (0..whole.len()).step_by(64 << 10) {
        let end = (at + (64 << 10)).min(whole.len());
        start = h.frame(part(1, whole.slice(at..end)));
    }
    let start = start.expect("admitted once whole");
    assert_eq!(start.payload.len(), 1 << 20);
    assert_eq!(start.metadata, metadata_of(2, 10));
    assert!(h.events().is_none());
}

#[test]
fn a_unary_call_fails_at_its_deadline_alone_and_sends_nothing() {
    let mut h = Harness::new(10, 100);
    let now = Instant::now();
    let ms = Duration::from_millis;
    let (late, soon, answered) = (Reply::default(), Reply::default(), Reply::default());
    let forever = Reply::default();
    h.core.register_unary(forever.clone(), None).expect("open");
    assert!(!h.core.take_timer_moved(), "no deadline arms nothing");
    h.core
        .register_unary(late.clone(), Some(now + ms(300)))
        .expect("open");
    assert!(
        h.core.take_timer_moved(),
        "the first deadline arms the timer"
    );
    let soon_mux = h
        .core
        .register_unary(soon.clone(), Some(now + ms(100)))
        .expect("open");
    assert!(h.core.take_timer_moved(), "an earlier deadline re-arms it");
    let answered_mux = h
        .core
        .register_unary(answered.clone(), Some(now + ms(200)))
        .expect("open");
    assert!(!h.core.take_timer_moved(), "a later one does not");
    assert_eq!(h.core.poll_timeout(), Some(now + ms(100)));
    h.frame(Frame::Response {
        mux: answered_mux,
        result: Ok(None),
    });
    h.events();
    assert_eq!(*answered.lock(), Some(Ok(None)));

    h.core.handle_timeout(now + ms(99));
    h.events();
    assert_eq!(*soon.lock(), None, "not due yet");
    h.core.handle_timeout(now + ms(250));
    h.events();
    assert_eq!(*soon.lock(), Some(Err(MuxError::Deadline)));
    assert_eq!(
        *answered.lock(),
        Some(Ok(None)),
        "an answered call is not failed again"
    );
    assert_eq!(*late.lock(), None);
    assert_eq!(
        h.core.in_flight().unary_out,
        2,
        "the late call and the one without a deadline are left"
    );
    // The caller tells the callee (it knows whether its request was queued); the core does not.
    assert_eq!(h.sent(), vec![]);
    // A response after the deadline finds no call.
    h.frame(Frame::Response {
        mux: soon_mux,
        result: Ok(None),
    });
    h.events();
    assert_eq!(*soon.lock(), Some(Err(MuxError::Deadline)));
    h.core.handle_timeout(now + ms(300));
    h.events();
    assert_eq!(*late.lock(), Some(Err(MuxError::Deadline)));
    assert_eq!(
        h.core.poll_timeout(),
        None,
        "a call without a deadline is never timed"
    );
    assert_eq!(*forever.lock(), None);
    assert_eq!(h.core.in_flight().unary_out, 1);
}

#[test]
fn unary_deadline_walks_come_once_per_due_deadline_not_per_call() {
    let mut h = Harness::new(10, 1 << 20);
    let now = Instant::now();
    let s = Duration::from_secs;
    let first = Reply::default();
    h.core
        .register_unary(first.clone(), Some(now + s(10)))
        .expect("open");
    // Calls answered in time move nothing.
    for i in 0..1000u64 {
        let mux = h
            .core
            .register_unary(
                Reply::default(),
                Some(now + s(11) + Duration::from_millis(i)),
            )
            .expect("open");
        h.frame(Frame::Response {
            mux,
            result: Ok(None),
        });
    }
    h.events();
    assert_eq!(h.core.poll_timeout(), Some(now + s(10)));
    let later = Reply::default();
    h.core
        .register_unary(later.clone(), Some(now + s(20)))
        .expect("open");
    let close_behind = Reply::default();
    let behind = now + s(10) + Duration::from_micros(300);
    h.core
        .register_unary(close_behind.clone(), Some(behind))
        .expect("open");
    // At the first deadline the walk fails that call and finds the next one; one due within
    // a step of the walk waits for the next step.
    h.core.handle_timeout(now + s(10));
    h.events();
    assert_eq!(*first.lock(), Some(Err(MuxError::Deadline)));
    assert_eq!(*close_behind.lock(), None);
    assert_eq!(h.core.poll_timeout(), Some(now + s(10) + UNARY_STEP));
    h.core.handle_timeout(now + s(10) + UNARY_STEP);
    h.events();
    assert_eq!(*close_behind.lock(), Some(Err(MuxError::Deadline)));
    assert_eq!(*later.lock(), None);
    assert_eq!(h.core.poll_timeout(), Some(now + s(20)));
    // A new call due sooner than the bound moves it.
    let soon = Reply::default();
    h.core
        .register_unary(soon.clone(), Some(now + s(15)))
        .expect("open");
    assert!(h.core.take_timer_moved());
    assert_eq!(h.core.poll_timeout(), Some(now + s(15)));
    h.core.handle_timeout(now + s(15));
    h.events();
    assert_eq!(*soon.lock(), Some(Err(MuxError::Deadline)));
    assert_eq!(h.core.poll_timeout(), Some(now + s(20)));
    h.core.handle_timeout(now + s(20));
    h.events();
    assert_eq!(*later.lock(), Some(Err(MuxError::Deadline)));
    assert_eq!(h.core.poll_timeout(), None, "nothing left to time");
    assert_eq!(h.core.in_flight(), InFlight::default());
}

/// A peer that answers nothing leaves many calls waiting: walks come further apart as they
/// grow, so a walk's cost stays a small share of the time between walks.
#[test]
fn walks_over_many_waiting_calls_come_further_apart() {
    let mut h = Harness::new(10, 1 << 20);
    let now = Instant::now();
    let s = Duration::from_secs;
    for i in 0..10_000u64 {
        h.core
            .register_unary(
                Reply::default(),
                Some(now + s(1) + Duration::from_micros(i)),
            )
            .expect("open");
    }
    h.core.handle_timeout(now + s(1));
    h.events();
    assert_eq!(
        h.core.in_flight().unary_out,
        9_999,
        "only the first was due"
    );
    let next = h.core.poll_timeout().expect("more to time");
    assert!(
        next >= now + s(1) + UNARY_STEP_PER_CALL * 9_999,
        "the next walk is {:?} after this one",
        next - (now + s(1))
    );
    h.core.handle_timeout(next);
    h.events();
    let left = h.core.in_flight().unary_out;
    assert!(left < 9_999, "the next walk fails what is due by then");
    // New calls due at once, one after another, do not bring the next walk within the step
    // of the last one: each is failed by the next walk, not by one of its own.
    let step = UNARY_STEP_PER_CALL * u32::try_from(left).expect("fits");
    for _ in 0..100 {
        h.core
            .register_unary(Reply::default(), Some(Instant::now()))
            .expect("open");
        let walk = h.core.poll_timeout().expect("armed");
        assert!(
            walk >= next + step,
            "a call due now brought the walk to {:?} after the last one",
            walk - next
        );
    }
}
