//! The outbound queue alone: lanes, runs, bounds and wake-ups, with no socket.

use super::*;
use crate::frame::{decode_batch, encode_frame, encode_split, Frame, Limits};
use crate::ids::MuxId;

fn b(n: usize) -> Bytes {
    Bytes::from(vec![0u8; n])
}

/// A whole encoded frame of `payload` bytes (a `Data` frame: 14 + payload bytes).
fn data_frame(seq: u32, payload: usize) -> Frame {
    Frame::Data {
        mux: MuxId(1),
        seq,
        payload: Some(b(payload)),
    }
}

fn append_frame(q: &OutQueue, f: &Frame, bound: Bound) -> Result<(), Refused<()>> {
    q.append(bound, |w| {
        w.frame(|dst| {
            encode_frame(f, false, dst);
            Ok::<_, ()>(())
        })
    })
}

fn encoded(f: &Frame) -> Bytes {
    let mut buf = BytesMut::new();
    encode_frame(f, false, &mut buf);
    buf.freeze()
}

async fn drained_frames(q: &OutQueue, max_bytes: usize) -> Vec<Frame> {
    let batch = q.drain(max_bytes).await.expect("open");
    let n = batch.frames;
    let frames = decode_batch(batch.finish(false), &Limits::default()).expect("a valid batch");
    assert_eq!(
        frames.len(),
        n,
        "the count in the header is the frames in it"
    );
    frames
}

#[tokio::test]
async fn control_goes_first_and_data_is_packed() {
    let q = OutQueue::new(1000, 1 << 20, 10, 0);
    append_frame(&q, &data_frame(0, 10), Bound::None).expect("open");
    q.push_tagged(encoded(&data_frame(1, 20)), 3, Bound::None)
        .expect("open");
    let ping = Frame::Ping {
        mux: MuxId(0),
        nonce: 1,
    };
    q.push_control(encoded(&ping)).expect("room");
    let frames = drained_frames(&q, 1 << 20).await;
    assert_eq!(frames, vec![ping, data_frame(0, 10), data_frame(1, 20)]);
}

#[tokio::test]
async fn frames_appended_together_share_one_run_sent_as_it_is() {
    let q = OutQueue::new(1 << 20, 1 << 20, 10, 0);
    q.append(Bound::Room, |w| {
        for seq in 0..100 {
            w.frame(|dst| {
                encode_frame(&data_frame(seq, 64), false, dst);
                Ok::<_, ()>(())
            })?;
        }
        Ok::<_, ()>(())
    })
    .expect("room");
    assert_eq!(q.lens(), (0, 100));
    let frames = drained_frames(&q, 1 << 20).await;
    assert_eq!(
        frames,
        (0..100).map(|s| data_frame(s, 64)).collect::<Vec<_>>()
    );
    assert_eq!(q.data_bytes(), 0);
}

#[tokio::test]
async fn a_run_holds_one_batch_at_most() {
    let q = OutQueue::new(usize::MAX, 1 << 20, 10, 0);
    let n = MAX_FRAMES_PER_BATCH as u32 + 10;
    for seq in 0..n {
        append_frame(&q, &data_frame(seq, 1), Bound::Room).expect("room");
    }
    let first = drained_frames(&q, usize::MAX).await;
    assert_eq!(first.len(), MAX_FRAMES_PER_BATCH);
    let second = drained_frames(&q, usize::MAX).await;
    assert_eq!(second.len(), 10);
    assert_eq!(second[0], data_frame(MAX_FRAMES_PER_BATCH as u32, 1));
}

#[tokio::test]
async fn a_failed_encode_leaves_the_lane_as_it_was() {
    let q = OutQueue::new(1 << 20, 1 << 20, 10, 0);
    let r = q.append(Bound::Room, |w| {
        w.frame(|dst| {
            dst.extend_from_slice(b"half a frame");
            Err::<(), _>("refused")
        })
    });
    assert!(matches!(r, Err(Refused::By("refused"))));
    assert_eq!(q.lens(), (0, 0));
    assert_eq!(q.data_bytes(), 0);
    assert!(q.is_empty());
    append_frame(&q, &data_frame(0, 3), Bound::Room).expect("room");
    let r = q.append(Bound::Room, |w| {
        w.frame(|dst| {
            dst.extend_from_slice(b"junk");
            Err::<(), _>("refused")
        })
    });
    assert!(r.is_err());
    assert_eq!(drained_frames(&q, 1 << 20).await, vec![data_frame(0, 3)]);
}

#[tokio::test]
async fn an_encoder_that_panics_leaves_the_frames_before_it_and_wakes_the_writer() {
    let q = OutQueue::new(1 << 20, 1 << 20, 10, 0);
    // The writer is asleep on an idle queue when the producer starts.
    let writer = q.drain(1 << 20);
    let mut writer = std::pin::pin!(writer);
    assert!(futures::poll!(writer.as_mut()).is_pending());
    let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let _: Result<(), Refused<()>> = q.append(Bound::Room, |w| {
            w.frame(|dst| {
                encode_frame(&data_frame(0, 3), false, dst);
                Ok::<_, ()>(())
            })?;
            w.frame(|dst| {
                dst.extend_from_slice(b"half a frame");
                panic!("the encoder gave up");
            })
        });
    }));
    assert!(panicked.is_err(), "the encoder's panic is passed on");
    assert_eq!(
        q.data_bytes(),
        encoded(&data_frame(0, 3)).len(),
        "only the whole frame"
    );
    // Woken for the frame queued before the panic (a writer not notified stays pending on this
    // poll), and it takes that frame alone.
    let std::task::Poll::Ready(batch) = futures::poll!(writer.as_mut()) else {
        panic!("the writer was not woken for the frame queued before the panic");
    };
    let batch = batch.expect("open");
    let frames = decode_batch(batch.finish(false), &Limits::default()).expect("a valid batch");
    assert_eq!(frames, vec![data_frame(0, 3)]);
    assert!(q.is_empty());
}

#[tokio::test]
async fn producers_wait_for_room_until_the_writer_drains() {
    let q = std::sync::Arc::new(OutQueue::new(100, 1 << 20, 10, 0));
    append_frame(&q, &data_frame(0, 500), Bound::None).expect("a large frame goes alone");
    assert!(matches!(
        append_frame(&q, &data_frame(1, 1), Bound::Room),
        Err(Refused::Full)
    ));
    let q2 = q.clone();
    let waiter = tokio::spawn(async move { q2.wait_room(false).await });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "over the bound: the producer waits");
    q.drain(1 << 20).await.expect("open");
    let r = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("woken by the drain")
        .expect("no panic");
    assert_eq!(r, Ok(()));
}

#[tokio::test]
async fn a_queued_call_can_be_taken_back_until_the_writer_takes_it() {
    let q = OutQueue::new(1000, 1 << 20, 10, 0);
    q.push_tagged(encoded(&data_frame(0, 10)), 3, Bound::None)
        .expect("open");
    q.push_tagged(encoded(&data_frame(1, 20)), 5, Bound::None)
        .expect("open");
    assert!(q.retract(3), "still queued");
    assert!(!q.retract(3), "already taken back");
    assert_eq!(drained_frames(&q, 1 << 20).await, vec![data_frame(1, 20)]);
    assert!(!q.retract(5), "written: a cancel must follow instead");
}

#[tokio::test]
async fn control_lane_overflow_reports_stuck() {
    let q = OutQueue::new(100, 1 << 20, 2, 0);
    q.push_control(b(1)).expect("room");
    q.push_control(b(1)).expect("room");
    assert_eq!(q.push_control(b(1)), Err(QueueError::Stuck));
}

#[tokio::test]
async fn a_frame_that_must_not_wait_is_refused_past_twice_the_bound() {
    let q = OutQueue::new(100, 1 << 20, 2, 0);
    append_frame(&q, &data_frame(0, 250), Bound::None).expect("open");
    assert!(matches!(
        append_frame(&q, &data_frame(1, 0), Bound::Twice),
        Err(Refused::Stuck)
    ));
}

#[tokio::test]
async fn close_drops_everything_and_wakes_waiters() {
    let q = std::sync::Arc::new(OutQueue::new(10, 1 << 20, 10, 0));
    append_frame(&q, &data_frame(0, 10), Bound::None).expect("open");
    let q2 = q.clone();
    let waiter = tokio::spawn(async move { q2.wait_room(false).await });
    tokio::task::yield_now().await;
    q.close();
    let r = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("waiter woke")
        .expect("no panic");
    assert_eq!(r, Err(QueueError::Closed));
    assert_eq!(q.lens(), (0, 0));
    assert!(q.drain(100).await.is_none());
}

#[tokio::test]
async fn a_last_frame_survives_the_close_and_goes_out_alone() {
    let q = OutQueue::new(100, 1 << 20, 10, 0);
    append_frame(&q, &data_frame(0, 10), Bound::None).expect("open");
    let last = Frame::GoAway {
        error: crate::frame::ErrorRecord::text(crate::frame::ErrorCode::Protocol, "bad"),
    };
    q.close_with(Some(encoded(&last)));
    assert_eq!(drained_frames(&q, 100).await, vec![last]);
    assert!(q.drain(100).await.is_none());
}

#[test]
fn woken_producers_cannot_each_overshoot_the_bound() {
    let q = OutQueue::new(100, 1 << 20, 10, 0);
    append_frame(&q, &data_frame(0, 46), Bound::Room).expect("room");
    append_frame(&q, &data_frame(1, 46), Bound::Room).expect("room: 60 < 100");
    assert!(matches!(
        append_frame(&q, &data_frame(2, 46), Bound::Room),
        Err(Refused::Full)
    ));
    assert_eq!(q.data_bytes(), 120);
}

#[tokio::test]
async fn batches_respect_the_byte_bound_and_big_runs_go_alone() {
    let q = OutQueue::new(1 << 20, 1 << 20, 10, 0);
    for seq in 0..10 {
        q.push_tagged(encoded(&data_frame(seq, 86)), 100 + seq, Bound::None)
            .expect("open");
    }
    assert_eq!(
        drained_frames(&q, 250).await.len(),
        2,
        "100-byte frames, 250 bytes"
    );
    // A run over the copy limit behind a control frame: the control frame goes first, alone.
    let q = OutQueue::new(1 << 20, 1 << 20, 10, 0);
    append_frame(&q, &data_frame(0, COPY_RUN_MAX), Bound::None).expect("open");
    q.push_control(b(0)).expect("room");
    let batch = q.drain(1 << 20).await.expect("open");
    assert_eq!((batch.frames, batch.len()), (1, BATCH_HEADER_LEN));
    assert_eq!(
        drained_frames(&q, 1 << 20).await,
        vec![data_frame(0, COPY_RUN_MAX)]
    );
}

#[tokio::test]
async fn top_up_copies_what_arrived_meanwhile() {
    let q = OutQueue::new(1 << 20, 1 << 20, 10, 0);
    append_frame(&q, &data_frame(0, 8), Bound::Room).expect("room");
    let mut batch = q.drain(1 << 20).await.expect("open");
    append_frame(&q, &data_frame(1, 8), Bound::Room).expect("room");
    q.top_up(&mut batch, 1 << 20);
    assert!(q.is_empty());
    let frames = decode_batch(batch.finish(false), &Limits::default()).expect("valid");
    assert_eq!(frames, vec![data_frame(0, 8), data_frame(1, 8)]);
}

#[tokio::test]
async fn a_spare_buffer_is_kept_only_while_there_is_more_to_write() {
    let q = OutQueue::new(1 << 20, 1 << 20, 10, 0);
    q.recycle(BytesMut::with_capacity(1 << 16));
    assert!(q.lanes.lock().spare.is_none(), "idle: no buffer kept");
    append_frame(&q, &data_frame(0, 8), Bound::Room).expect("room");
    q.recycle(BytesMut::with_capacity(1 << 16));
    assert!(
        q.lanes.lock().spare.is_some(),
        "busy: kept for the next run"
    );
    // The run goes alone, with no copy: the spare is still there once it is taken.
    let _ = q.drain(1 << 20).await.expect("open");
    assert!(q.take(1 << 20).is_none(), "nothing left");
    assert!(q.lanes.lock().spare.is_none(), "idle again: let go");
}

#[tokio::test]
async fn a_batch_finished_with_a_checksum_carries_one_the_decoder_checks() {
    let q = OutQueue::new(1 << 20, 1 << 20, 10, 0);
    for seq in 0..3 {
        append_frame(&q, &data_frame(seq, 5), Bound::Room).expect("room");
    }
    let msg = q.drain(1 << 20).await.expect("open").finish(true);
    assert_eq!(msg[1], crate::frame::batch_flags::CHECKSUM);
    let frames = decode_batch(msg.clone(), &Limits::default()).expect("valid");
    assert_eq!(frames, (0..3).map(|s| data_frame(s, 5)).collect::<Vec<_>>());
    let mut bad = msg.to_vec();
    bad[20] ^= 0x04;
    assert!(matches!(
        decode_batch(Bytes::from(bad), &Limits::default()),
        Err(crate::frame::FrameError::Checksum { .. })
    ));
}

// ---- frames in parts ------------------------------------------------------------------------

/// A `Data` frame of `mux` whose payload bytes say which frame they belong to.
fn marked(mux: u32, seq: u32, payload: usize) -> Frame {
    Frame::Data {
        mux: MuxId(mux),
        seq,
        payload: Some(Bytes::from(vec![(mux * 16 + seq) as u8; payload])),
    }
}

/// Drains batches until `n` frames were taken; returns them in order.
async fn take_frames(q: &OutQueue, max_bytes: usize, n: usize) -> Vec<Frame> {
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(drained_frames(q, max_bytes).await);
    }
    out
}

#[tokio::test]
async fn large_frames_go_in_parts_round_robin_with_control_frames_first() {
    let chunk = 1024;
    let q = OutQueue::new(1 << 20, 1 << 20, 10, chunk);
    let frames: Vec<Frame> = [1, 3, 5].map(|m| marked(m, 0, 4000)).into();
    for f in &frames {
        q.push_large(encode_split(f), f.mux().0, false, Bound::None)
            .expect("open");
    }
    let ping = Frame::Ping {
        mux: MuxId(0),
        nonce: 1,
    };
    q.push_control(encoded(&ping)).expect("room");
    // 4014 bytes each: 4 parts of at most 1024.
    let got = take_frames(&q, 1 << 20, 1 + 12).await;
    assert_eq!(got[0], ping, "control frames lead");
    let order: Vec<u32> = got[1..].iter().map(|f| f.mux().0).collect();
    assert_eq!(order, [1, 3, 5].repeat(4), "one part per mux per turn");
    for f in &frames {
        let mut whole = BytesMut::new();
        for g in &got[1..] {
            if let Frame::Chunk { mux, bytes } = g {
                assert!(bytes.len() <= chunk);
                if *mux == f.mux() {
                    whole.extend_from_slice(bytes);
                }
            }
        }
        assert_eq!(whole.freeze(), encoded(f), "the parts make the frame");
    }
    assert!(q.is_empty());
    assert_eq!(q.data_bytes(), 0);
}

#[tokio::test]
async fn a_muxs_frames_keep_their_order_across_the_data_lane_and_its_parts() {
    let q = OutQueue::new(1 << 20, 1 << 20, 10, 1024);
    let (before, large, after) = (marked(1, 0, 10), marked(1, 1, 3000), marked(1, 2, 10));
    append_frame(&q, &before, Bound::None).expect("open");
    q.push_large(encode_split(&large), 1, false, Bound::None)
        .expect("open");
    // Behind its mux's large frame, though small.
    append_frame(&q, &after, Bound::None).expect("open");
    let other = marked(3, 0, 10);
    append_frame(&q, &other, Bound::None).expect("open");
    let got = take_frames(&q, 1 << 20, 3 + 3).await;
    let pos = |pred: &dyn Fn(&Frame) -> bool| got.iter().position(pred).expect("sent");
    let first_part = pos(&|f| matches!(f, Frame::Chunk { .. }));
    assert!(pos(&|f| *f == before) < first_part, "{got:?}");
    assert!(pos(&|f| *f == after) > first_part, "{got:?}");
    assert!(got.contains(&other));
}

#[tokio::test]
async fn abandoning_a_frame_in_parts_drops_the_rest_and_queues_an_abort() {
    let q = OutQueue::new(1 << 20, 1 << 20, 10, 1024);
    let f = marked(1, 0, 10_000);
    q.push_large(encode_split(&f), 1, false, Bound::None)
        .expect("open");
    // One batch of a little over one part.
    let first = drained_frames(&q, 1100).await;
    assert!(
        matches!(first.as_slice(), [Frame::Chunk { .. }]),
        "{first:?}"
    );
    assert!(!q.abandon(1), "it was not a request taken back unsent");
    assert_eq!(q.data_bytes(), 0, "the rest is gone");
    let next = drained_frames(&q, 1 << 20).await;
    assert_eq!(next, vec![Frame::ChunkAbort { mux: MuxId(1) }]);
    assert!(q.is_empty());
}

#[tokio::test]
async fn a_request_in_parts_not_yet_sent_is_taken_back_whole() {
    let q = OutQueue::new(1 << 20, 1 << 20, 10, 1024);
    let req = Frame::Request {
        mux: MuxId(7),
        route: crate::frame::Route {
            handler: crate::ids::HandlerId(1),
            subroute: None,
        },
        deadline_ms: 0,
        metadata: crate::frame::Metadata::new(),
        payload: Some(b(5000)),
    };
    q.push_tagged(encoded(&req), 7, Bound::None).expect("open");
    assert!(q.retract(7), "unsent: the callee never hears of it");
    assert!(q.is_empty());
}

#[tokio::test(start_paused = true)]
async fn parts_in_flight_wait_for_the_peers_acks() {
    let q = OutQueue::new(4 << 20, 256 << 10, 10, 64 << 10);
    let f = marked(1, 0, 3 << 20);
    q.push_large(encode_split(&f), 1, false, Bound::None)
        .expect("open");
    let mut sent = 0;
    while sent < PARTS_IN_FLIGHT {
        for g in drained_frames(&q, 256 << 10).await {
            if let Frame::Chunk { bytes, .. } = g {
                sent += bytes.len();
            }
        }
    }
    assert_eq!(sent, PARTS_IN_FLIGHT, "up to the window, in whole parts");
    assert!(!q.sendable(), "the window is shut");
    let waiting = tokio::time::timeout(std::time::Duration::from_secs(1), q.drain(256 << 10)).await;
    assert!(waiting.is_err(), "no part beyond the window");
    q.parts_read(64 << 10);
    let next = drained_frames(&q, 256 << 10).await;
    assert!(matches!(next.as_slice(), [Frame::Chunk { bytes, .. }] if bytes.len() == 64 << 10));
}

/// A request encoded into the queue's own buffer goes out byte for byte like one pushed whole,
/// can be taken back the same way, waits for room like any data frame, and its buffer serves
/// the next request once the writer has copied it out (no buffer per call on a busy link); a
/// queue that stays quiet for a keepalive tick keeps none.
#[tokio::test]
async fn requests_encoded_in_reused_buffers_go_out_whole_and_in_order() {
    let q = OutQueue::new(1000, 1 << 20, 10, 0);
    let push = |seq: u32, tag: u32, bound: Bound| {
        let f = data_frame(seq, 20);
        q.push_tagged_with(tag, crate::frame::encoded_len(&f, false), bound, |dst| {
            encode_frame(&f, false, dst)
        })
    };
    push(0, 3, Bound::Room).expect("open");
    push(1, 5, Bound::Room).expect("open");
    assert!(q.retract(3), "still queued: taken back");
    assert_eq!(drained_frames(&q, 1 << 20).await, vec![data_frame(1, 20)]);
    assert_eq!(
        q.lanes.lock().frame_bufs.len(),
        1,
        "the written request's buffer is kept"
    );
    push(2, 7, Bound::Room).expect("open");
    assert!(
        q.lanes.lock().frame_bufs.is_empty(),
        "and serves the next request"
    );
    assert_eq!(drained_frames(&q, 1 << 20).await, vec![data_frame(2, 20)]);
    // Nothing queued: the writer's next look finds the queue idle; the buffer stays for the
    // next burst, and the first tick with no data since the last one lets it go.
    assert!(q.take(1 << 20).is_none());
    assert_eq!(q.lanes.lock().frame_bufs.len(), 1, "kept between bursts");
    q.trim_idle();
    assert_eq!(
        q.lanes.lock().frame_bufs.len(),
        1,
        "data came since the last tick"
    );
    q.trim_idle();
    assert!(
        q.lanes.lock().frame_bufs.is_empty(),
        "a quiet tick lets it go"
    );

    // Past the bound, a request waits like any data frame, and nothing is encoded.
    let small = OutQueue::new(30, 1 << 20, 10, 0);
    append_frame(&small, &data_frame(0, 40), Bound::None).expect("open");
    let mut encoded_now = false;
    let refused = small.push_tagged_with(9, 34, Bound::Room, |_| encoded_now = true);
    assert!(matches!(refused, Err(Refused::Full)), "{refused:?}");
    assert!(!encoded_now);
}

// ---- packed stream messages (`DataWriter::item`) ---------------------------------------------

/// The limits of a receiver that agreed to `Items` frames.
fn items_limits() -> Limits {
    Limits {
        items: true,
        ..Limits::default()
    }
}

/// Queues message `seq` of mux 1, `len` bytes of `seq as u8`, as an encoder would write it.
fn item(q: &OutQueue, seq: u32, len: usize) {
    q.append(Bound::None, |w| {
        w.item(1, seq, |dst| {
            dst.put_bytes(seq as u8, len);
            Ok::<_, ()>(())
        })
    })
    .expect("open");
}

/// Drains every batch queued, checking each against a receiver's limits, and returns the
/// messages of mux 1 as `(seq, payload, came packed)` with the frames, batch by batch.
async fn drain_messages(
    q: &OutQueue,
    max_bytes: usize,
) -> (Vec<(u32, Bytes, bool)>, Vec<Vec<Frame>>) {
    let (mut msgs, mut batches) = (Vec::new(), Vec::new());
    while !q.is_empty() {
        let batch = q.drain(max_bytes).await.expect("open");
        let frames = decode_batch(batch.finish(false), &items_limits()).expect("a valid batch");
        for f in &frames {
            match f {
                Frame::Items { seq, items, .. } => msgs.extend(
                    (0u32..)
                        .zip(items)
                        .map(|(i, m)| (seq.wrapping_add(i), m.clone(), true)),
                ),
                Frame::Data {
                    seq,
                    payload: Some(p),
                    ..
                } => msgs.push((*seq, p.clone(), false)),
                other => panic!("unexpected {other:?}"),
            }
        }
        batches.push(frames);
    }
    (msgs, batches)
}

/// Checks that `msgs` are messages 0.. of the lengths `lens`, as [`item`] wrote them.
fn check_messages(msgs: &[(u32, Bytes, bool)], lens: &[usize]) {
    assert_eq!(msgs.len(), lens.len(), "how many");
    for (i, ((seq, m, _), len)) in msgs.iter().zip(lens).enumerate() {
        assert_eq!(*seq as usize, i, "message {i}'s number");
        assert_eq!(m.len(), *len, "message {i}'s length");
        assert!(m.iter().all(|&b| b == i as u8), "message {i}'s bytes");
    }
}

#[tokio::test]
async fn a_batch_of_packed_messages_holds_at_most_a_batchs_worth_of_them() {
    // Runs of empty messages are a few KiB each: several fit in a batch's bytes, but a batch
    // takes at most `MAX_FRAMES_PER_BATCH` messages, or the receiver refuses it.
    let q = OutQueue::new(usize::MAX, 1 << 20, 10, 0);
    let lens = vec![0; 5000];
    for seq in 0..5000 {
        item(&q, seq, 0);
    }
    let (msgs, batches) = drain_messages(&q, 1 << 20).await;
    for frames in &batches {
        let n: usize = items_per_frame(frames).iter().sum();
        assert!(n <= MAX_FRAMES_PER_BATCH, "a batch of {n} messages");
    }
    assert_eq!(batches.len(), 5, "5,000 messages in batches of 1,024");
    check_messages(&msgs, &lens);
}

/// How many messages each of `frames`, all `Items` frames, carries.
fn items_per_frame(frames: &[Frame]) -> Vec<usize> {
    frames
        .iter()
        .map(|f| match f {
            Frame::Items { items, .. } => items.len(),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_packed_frame_stops_taking_messages_at_its_size_bound() {
    let q = OutQueue::new(usize::MAX, 1 << 20, 10, 0);
    let lens = vec![1000; 70];
    for (seq, &len) in (0..).zip(&lens) {
        item(&q, seq, len);
    }
    let (msgs, batches) = drain_messages(&q, 1 << 20).await;
    let frames = batches.concat();
    check_messages(&msgs, &lens);
    // A frame takes another message while under 32 KiB: 33 of 1,002 bytes after its head.
    assert_eq!(items_per_frame(&frames), vec![33, 33, 4]);
}

#[tokio::test]
async fn a_packed_frame_stays_near_a_small_chunk_size() {
    // With parts of 1 KiB, a packed frame takes messages while under 1 KiB, so it ends under
    // 1 KiB and one message. (A message over 1 KiB less a Data frame's head would go in parts.)
    let q = OutQueue::new(usize::MAX, 1 << 20, 10, 1024);
    let lens = [400, 400, 400, 400, 1010, 5];
    for (seq, &len) in (0..).zip(&lens) {
        item(&q, seq, len);
    }
    let (msgs, batches) = drain_messages(&q, 1 << 20).await;
    let frames = batches.concat();
    check_messages(&msgs, &lens);
    assert!(msgs.iter().all(|m| m.2), "all packed");
    assert_eq!(items_per_frame(&frames), vec![3, 2, 1]);
    for f in &frames {
        let mut buf = BytesMut::new();
        encode_frame(f, false, &mut buf);
        assert!(
            buf.len() <= 1024 + 1010 + 2,
            "a frame of {} bytes",
            buf.len()
        );
    }
}

#[tokio::test]
async fn an_encoded_message_too_long_to_pack_becomes_a_data_frame_in_its_place() {
    let q = OutQueue::new(usize::MAX, 1 << 20, 10, 0);
    // Too long first in a run (the frame it would have opened goes), after a packed one (it
    // leaves the frame), then between two packed ones, then two long ones in a row.
    let lens = [5000, 10, 4097, 4096, 7, 6000, 6000, 0];
    for (seq, &len) in (0..).zip(&lens) {
        item(&q, seq, len);
    }
    let queued = q.data_bytes();
    let (msgs, batches) = drain_messages(&q, 1 << 20).await;
    let frames = batches.concat();
    check_messages(&msgs, &lens);
    let packed: Vec<bool> = msgs.iter().map(|m| m.2).collect();
    assert_eq!(packed, [false, true, false, true, true, false, false, true]);
    assert_eq!(frames.len(), 7, "{frames:?}");
    let wire: usize = frames
        .iter()
        .map(|f| {
            let mut buf = BytesMut::new();
            encode_frame(f, false, &mut buf);
            buf.len()
        })
        .sum();
    assert_eq!(queued, wire, "the lane counted the bytes it held");
}

#[tokio::test]
async fn a_failed_or_panicking_encoder_of_a_packed_message_leaves_the_lane_as_it_was() {
    let q = OutQueue::new(usize::MAX, 1 << 20, 10, 0);
    let fail = |q: &OutQueue, seq| {
        let r = q.append(Bound::None, |w| {
            w.item(1, seq, |dst| {
                dst.put_bytes(0xee, 30);
                Err::<(), _>("refused")
            })
        });
        assert!(matches!(r, Err(Refused::By("refused"))));
    };
    // In a new frame, then in a frame it would have joined.
    fail(&q, 0);
    assert_eq!((q.lens(), q.data_bytes()), ((0, 0), 0));
    item(&q, 0, 3);
    let before = q.data_bytes();
    fail(&q, 1);
    assert_eq!(q.data_bytes(), before);
    let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let _ = q.append(Bound::None, |w| {
            w.item(1, 1, |dst| -> Result<(), ()> {
                dst.put_bytes(0xee, 30);
                panic!("an encoder's bug")
            })
        });
    }));
    assert!(panicked.is_err());
    assert_eq!(q.data_bytes(), before);
    item(&q, 1, 2);
    let (msgs, batches) = drain_messages(&q, 1 << 20).await;
    let frames = batches.concat();
    check_messages(&msgs, &[3, 2]);
    assert_eq!(frames.len(), 1, "both in one frame: {frames:?}");
}
