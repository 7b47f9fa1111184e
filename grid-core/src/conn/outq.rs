//! The outbound queue of one socket: two lanes feeding one writer.
//!
//! - The **control** lane (credits, pongs, pings, cancels, acks, refusals) never makes anyone wait.
//!   The socket reader pushes only into this lane, so it can never block on a queue that user tasks
//!   fill (MinIO's deadlocks 40fb337, 3415c4d and 22aa16a all came from a reader blocked on a full
//!   queue). Its length is bounded by [`Config::max_queued_control`](crate::Config): a peer that
//!   makes us reply but never reads gets its connection closed instead of growing our memory.
//! - The **data** lane (requests, responses, stream messages) is bounded in bytes; producers wait
//!   for room. A single frame larger than the bound is admitted when the lane is empty.
//!
//! Data frames are encoded straight into the lane: the lane is a list of *runs*, each a buffer
//! that starts with room for a batch header and holds frames back to back, at most one batch's
//! worth ([`MAX_FRAMES_PER_BATCH`] frames, `max_batch_bytes`). A producer appends to the last run
//! under the lane's lock ([`OutQueue::append`]), so a stream that sends many messages encodes them
//! one after the other into one buffer, with no buffer per frame and no copy after. The writer
//! takes a whole run as one WebSocket message, header patched in place. A frame that goes in
//! parts is not kept in a run: its producer hands it over as its head and its shared payload
//! ([`DataWriter::large`]), or, written by an encoder, it is moved out of the run it was written
//! into ([`DataWriter::frame`]). Only a `Request` or `Open` is queued as a frame of its own, so
//! that a call given up before it was written can be taken back ([`OutQueue::retract`]).
//!
//! The writer drains control first, so pings and credits never wait behind bulk data, then takes
//! data: a run as it is, or small runs and single frames copied into one batch. When the queue is
//! empty the writer sleeps, and the first frame to arrive wakes it and goes out alone: an idle
//! connection adds no latency. Producers wake the writer only when they make an empty queue
//! non-empty (the writer takes everything there is before it sleeps again).
//!
//! Every queue belongs to exactly one socket and dies with it: nothing queued for an old socket
//! is ever sent on a new one.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Notify;

use super::bulk::Bulk;
use super::lock::{Mutex, MutexGuard};
use super::stats::Padded;
use crate::frame::{
    self, seal_batch, Frame, BATCH_HEADER_LEN, FRAME_HEADER_LEN, ITEM_HEADER_LEN,
    MAX_FRAMES_PER_BATCH,
};
use crate::ids::MuxId;

/// A run smaller than this is copied into a batch with the frames around it rather than sent as
/// a message of its own (a lone credit or response should not cost a write of its own).
const COPY_RUN_MAX: usize = 16 << 10;

/// Bytes of parts (`Chunk` bodies) the writer may have sent that the peer has not yet said it
/// read (`ChunkAck`, `PROTOCOL.md` section 10.4). Small enough that the socket's buffers never
/// hold much more than this of parts ahead of a small call; large enough to keep a loopback
/// link busy while the acks travel back (see `BENCHMARKS.md`).
pub(crate) const PARTS_IN_FLIGHT: usize = 256 << 10;

/// Request buffers the queue keeps for reuse, and the largest it keeps.
const FRAME_BUFS_KEPT: usize = 64;
const FRAME_BUF_MAX: usize = 4 << 10;

/// The capacity a new run starts with when no spare buffer is at hand.
const FIRST_RUN_CAPACITY: usize = 4 << 10;

/// Longest stream message packed into an `Items` frame: past it the 14 bytes of a `Data`
/// header are under a third of a percent of the message.
pub(crate) const ITEM_MAX: usize = 4 << 10;

/// An `Items` frame takes more messages while it is shorter than this.
const ITEMS_FRAME_MAX: usize = 32 << 10;

/// A `Data` frame's bytes before its payload: the header and the sequence number.
const DATA_HEAD_LEN: usize = FRAME_HEADER_LEN + 4;

/// Why [`OutQueue::append`] queued nothing.
#[derive(Debug)]
pub(crate) enum Refused<E> {
    /// The socket is gone.
    Closed,
    /// The data lane is at its bound: wait for room.
    Full,
    /// The lane holds twice its bound: the peer is not reading.
    Stuck,
    /// The frame's maker refused.
    By(E),
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueError {
    /// The socket is gone.
    Closed,
    /// The control lane is full: the peer is not reading.
    Stuck,
}

/// How far past its bound an append may take the data lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    /// Only while the lane is under its bound ([`Refused::Full`] otherwise): producers that can
    /// wait. The lane overshoots by at most what one append adds past the bound, in all.
    Room,
    /// Refused with [`Refused::Stuck`] once the lane holds twice its bound: tasks that must not
    /// wait (the reader, timers) queueing a frame that must follow a mux's data.
    Twice,
    /// Only while both the data lane and the large frames (sent in parts) are under their
    /// bound: a producer of a frame that may be large.
    Bulk,
    /// Always (a producer that waited for room first, or a frame that must not be lost).
    None,
}

/// One entry of the data lane.
#[derive(Debug)]
enum Entry {
    /// A `Request`/`Open`, tagged with its mux so it can be taken back until it is written.
    Tagged(u32, Bytes),
    /// Frames back to back after [`BATCH_HEADER_LEN`] bytes reserved for the batch header;
    /// `open` when the last of them is an `Items` frame more messages may join. `msgs` counts
    /// each frame, and each message packed in one: a run holds at most a batch's worth of
    /// them, so packing changes how many bytes a batch takes, not how much it holds.
    Run {
        buf: BytesMut,
        frames: usize,
        msgs: usize,
        open: Option<OpenItems>,
    },
}

/// The `Items` frame a run ends with, while messages may still join it.
#[derive(Debug, Clone, Copy)]
struct OpenItems {
    mux: u32,
    /// The sequence number of the message that would come next.
    next_seq: u32,
    /// Where the frame starts in the run.
    start: usize,
}

impl Entry {
    fn frames(&self) -> usize {
        match self {
            Entry::Tagged(..) => 1,
            Entry::Run { frames, .. } => *frames,
        }
    }

    /// Messages it holds: its frames, with each message of an `Items` frame counted.
    fn msgs(&self) -> usize {
        match self {
            Entry::Tagged(..) => 1,
            Entry::Run { msgs, .. } => *msgs,
        }
    }

    /// Bytes of frames (without a run's reserved header).
    fn len(&self) -> usize {
        match self {
            Entry::Tagged(_, f) => f.len(),
            Entry::Run { buf, .. } => buf.len() - BATCH_HEADER_LEN,
        }
    }
}

#[derive(Debug, Default)]
struct Lanes {
    control: VecDeque<Bytes>,
    data: VecDeque<Entry>,
    /// Bytes of frames in `data`.
    data_bytes: usize,
    closed: bool,
    /// A last frame the writer still sends after the close (the go-away naming a violation).
    last: Option<Bytes>,
    /// A cleared buffer the writer gave back, for the next run.
    spare: Option<BytesMut>,
    /// Buffers of requests the writer copied out, for the next requests: a request is encoded
    /// into one of these under the lock, so a busy connection allocates (and frees, often on
    /// another worker) no buffer per call. Kept while the queue empties between bursts, let go
    /// by [`trim_idle`](OutQueue::trim_idle) once no data came for a whole tick.
    frame_bufs: Vec<BytesMut>,
    /// `put` at the last [`trim_idle`](OutQueue::trim_idle).
    put_at_trim: u64,
    /// How long the last run the writer took had grown: the capacity of a new run, so a busy
    /// stream's runs do not grow by doubling (and copying) every time.
    run_hint: usize,
    /// Frames longer than the chunk size, sent in parts (see [`Bulk`]).
    bulk: Bulk,
    /// Bytes ever put in the data lane, and ever taken out of it (by the writer or a retract):
    /// a mux's large frames wait until what was queued before them is gone.
    put: u64,
    taken: u64,
    /// The next batch goes to the large frames, if any is ready.
    bulk_turn: bool,
    /// Bytes of parts sent and not yet acknowledged by the peer.
    in_flight: usize,
}

impl Lanes {
    fn is_empty(&self) -> bool {
        self.control.is_empty() && self.data.is_empty() && self.bulk.is_empty()
    }

    fn add_data(&mut self, n: usize) {
        self.data_bytes += n;
        self.put += n as u64;
    }

    fn take_data(&mut self, n: usize) {
        self.data_bytes -= n;
        self.taken += n as u64;
    }
}

/// The two lanes and the wake-ups around them.
#[derive(Debug)]
pub(crate) struct OutQueue {
    /// On lines of its own: written by every producer, while the fields below are read by them.
    lanes: Padded<Mutex<Lanes>>,
    writer: Notify,
    room: Notify,
    emptied: Notify,
    max_data_bytes: usize,
    max_batch_bytes: usize,
    max_control: usize,
    /// Frames longer than this go in parts (0: never; the peer did not agree to chunks).
    chunk: usize,
    /// Mirrors `data_bytes >= max_data_bytes`, updated under the lanes' lock.
    full: AtomicBool,
    /// Mirrors "some frame waits to be sent in parts", updated under the lanes' lock: a reply
    /// looks here before it takes the lock to abandon its call's parts.
    bulk_busy: AtomicBool,
}

/// A batch the writer took: one WebSocket message once [`finish`](Self::finish)ed.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The batch header's room, then the frames.
    buf: BytesMut,
    /// Frames in `buf`.
    pub(crate) frames: usize,
    /// Messages in `buf`: each frame, and each message packed in an `Items` frame. The
    /// receiver takes at most [`MAX_FRAMES_PER_BATCH`] in a batch (`PROTOCOL.md` section 12).
    msgs: usize,
}

impl Batch {
    fn new(mut buf: BytesMut) -> Batch {
        buf.clear();
        buf.put_bytes(0, BATCH_HEADER_LEN);
        Batch {
            buf,
            frames: 0,
            msgs: 0,
        }
    }

    /// Bytes of the finished message.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// The message: the header written over its reserved room and, with `checksum`, the batch's
    /// CRC-32 after the frames.
    pub(crate) fn finish(mut self, checksum: bool) -> Bytes {
        seal_batch(&mut self.buf, self.frames, checksum);
        self.buf.freeze()
    }
}

/// What an [`OutQueue::append`] writes through: frames encoded straight into the data lane.
#[derive(Debug)]
pub(crate) struct DataWriter<'a> {
    lanes: &'a mut Lanes,
    queue: &'a OutQueue,
    /// Frames appended by this writer.
    appended: usize,
}

impl DataWriter<'_> {
    /// True while the lane is under its bound: a batching producer appends while this holds.
    /// The large frames sent in parts have a bound of their own, which small frames never wait
    /// for.
    pub(crate) fn has_room(&self) -> bool {
        self.lanes.data_bytes < self.queue.max_data_bytes
    }

    /// True once the last run holds a whole batch: a batching producer lets go of the lane here,
    /// so the writer can send that run while the producer fills the next one.
    pub(crate) fn run_full(&self) -> bool {
        match self.lanes.data.back() {
            Some(Entry::Run { buf, msgs, .. }) => {
                *msgs >= MAX_FRAMES_PER_BATCH || buf.len() >= self.queue.max_batch_bytes
            }
            _ => false,
        }
    }

    /// The length above which a frame goes in parts (`usize::MAX`: none does): a producer that
    /// holds the payload of such a frame as shared bytes queues it with [`large`](Self::large)
    /// instead, without copying it.
    pub(crate) fn large_above(&self) -> usize {
        match self.queue.chunk {
            0 => usize::MAX,
            chunk => chunk,
        }
    }

    /// Queues a frame of `mux` that goes in parts (see [`large_above`](Self::large_above)) as
    /// `head` and `tail`, its payload, which is not copied (see `encode_split`): behind the frames
    /// of `mux` in parts, as [`frame`](Self::frame) would queue it after copying it into the run.
    pub(crate) fn large(&mut self, mux: u32, (head, tail): (Bytes, Bytes)) {
        debug_assert!(
            self.queue.is_large(head.len() + tail.len()),
            "a small frame queued as large"
        );
        let put = self.lanes.put;
        self.lanes.bulk.push(mux, head, tail, false, put);
        self.appended += 1;
    }

    /// Encodes one frame into the lane with `encode`, which appends exactly one frame to the
    /// buffer it is given (and nothing if it fails: whatever it wrote is cut off again).
    ///
    /// # Errors
    /// Whatever `encode` returns; the lane is then as before.
    ///
    /// # Panics
    /// Passes on a panic of `encode` (a user's encoder or `Serialize` runs in it), after cutting
    /// off what it wrote: the lane stays as before, so the link never sends half a frame, and the
    /// lock's state is whole for whoever takes it next.
    pub(crate) fn frame<T, E>(
        &mut self,
        encode: impl FnOnce(&mut BytesMut) -> Result<T, E>,
    ) -> Result<T, E> {
        let lanes = &mut *self.lanes;
        let max_batch = self.queue.max_batch_bytes;
        let (buf, frames, open) =
            last_run(&mut lanes.data, &mut lanes.spare, lanes.run_hint, max_batch);
        // The run's `Items` frame, if it has one, is no longer its last.
        *open = None;
        let before = buf.len();
        let encoded = std::panic::catch_unwind(AssertUnwindSafe(|| encode(&mut *buf)));
        let encoded = match encoded {
            Ok(encoded) => encoded,
            Err(panic) => {
                buf.truncate(before);
                if *frames == 0 {
                    self.lanes.data.pop_back();
                }
                std::panic::resume_unwind(panic);
            }
        };
        match encoded {
            Ok(out) => {
                let chunk = self.queue.chunk;
                let len = buf.len() - before;
                let mux = frame_mux(&buf[before..]);
                if chunk > 0 && (len > chunk || lanes.bulk.holds(mux)) {
                    // Sent in parts, or behind this mux's frames that are: out of the run.
                    let frame = buf.split_off(before).freeze();
                    if *frames == 0 {
                        self.lanes.data.pop_back();
                    }
                    let put = self.lanes.put;
                    self.lanes.bulk.push(mux, frame, Bytes::new(), false, put);
                } else {
                    *frames += 1;
                    self.lanes.add_data(len);
                }
                self.appended += 1;
                Ok(out)
            }
            Err(e) => {
                buf.truncate(before);
                if *frames == 0 {
                    self.lanes.data.pop_back();
                }
                Err(e)
            }
        }
    }
}

impl DataWriter<'_> {
    /// The last entry, a run (the one a message was just written into).
    fn back_run(&mut self) -> (&mut BytesMut, &mut usize, &mut Option<OpenItems>) {
        match self.lanes.data.back_mut() {
            Some(Entry::Run {
                buf, frames, open, ..
            }) => (buf, frames, open),
            _ => unreachable!("a message was just written into the last run"),
        }
    }

    /// Queues message `seq` of the stream `mux`, whose payload `write` appends (exactly one
    /// message, and nothing if it fails), packed: into the `Items` frame the run ends with when
    /// it is of `mux`, `seq` comes next in it and it has room, or into a new one. A message
    /// longer than [`ITEM_MAX`] (or than a frame that does not go in parts) becomes a `Data`
    /// frame of its own once written: moved in place, or queued in parts as it is when large.
    /// Returns the payload's length.
    ///
    /// Only for a link whose peer agreed to `Items` frames. A mux with frames in parts queued
    /// gets `Data` frames, which queue behind them.
    ///
    /// # Errors
    /// Whatever `write` returns; the lane is then as before.
    ///
    /// # Panics
    /// Passes on a panic of `write`, after cutting off what it wrote, as [`frame`](Self::frame).
    #[inline]
    pub(crate) fn item<E>(
        &mut self,
        mux: u32,
        seq: u32,
        write: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<usize, E> {
        if self.queue.chunk > 0 && self.lanes.bulk.holds(mux) {
            return self.frame(|dst| frame::encode_data_with(MuxId(mux), seq, false, dst, write));
        }
        let item_max = ITEM_MAX.min(self.large_above().saturating_sub(DATA_HEAD_LEN));
        // Under the chunk size too: a packed frame is no longer than a message sent whole, by
        // more than one message.
        let frame_max = ITEMS_FRAME_MAX.min(self.large_above());
        let lanes = &mut *self.lanes;
        let max_batch = self.queue.max_batch_bytes;
        let (buf, frames, open) =
            last_run(&mut lanes.data, &mut lanes.spare, lanes.run_hint, max_batch);
        let joins =
            open.filter(|o| o.mux == mux && o.next_seq == seq && buf.len() - o.start < frame_max);
        let before = buf.len();
        let start = match joins {
            Some(o) => o.start,
            None => {
                frame::encode_items_head(MuxId(mux), seq, buf);
                before
            }
        };
        let at = buf.len() + ITEM_HEADER_LEN;
        let written =
            std::panic::catch_unwind(AssertUnwindSafe(|| frame::encode_item_with(buf, write)));
        match written {
            Ok(Ok(len)) if len <= item_max => {
                let body = u32::try_from(buf.len() - start - FRAME_HEADER_LEN).unwrap_or(u32::MAX);
                buf[start + 6..start + FRAME_HEADER_LEN].copy_from_slice(&body.to_be_bytes());
                if joins.is_none() {
                    *frames += 1;
                }
                *open = Some(OpenItems {
                    mux,
                    next_seq: seq.wrapping_add(1),
                    start,
                });
                let added = buf.len() - before;
                self.lanes.add_data(added);
                self.appended += 1;
                Ok(len)
            }
            Ok(Ok(_)) => Ok(self.unpack(mux, seq, before, at, joins.is_none())),
            Ok(Err(e)) => {
                self.cut(before, joins.is_none());
                Err(e)
            }
            Err(panic) => {
                self.cut(before, joins.is_none());
                std::panic::resume_unwind(panic);
            }
        }
    }

    /// Makes the message [`item`](Self::item) wrote at `at` (after its `Items` frame's head at
    /// `before`, with `new_frame`, or its length) a `Data` frame of `mux` and `seq` of its own,
    /// there or, if it goes in parts, among the large frames; returns its length.
    #[cold]
    #[inline(never)]
    fn unpack(&mut self, mux: u32, seq: u32, before: usize, at: usize, new_frame: bool) -> usize {
        let large = self
            .queue
            .is_large(DATA_HEAD_LEN + self.back_run().0.len() - at);
        let (buf, frames, open) = self.back_run();
        let len = buf.len() - at;
        if large {
            // As it is: the run lets go of the bytes after `at`.
            let payload = Some(buf.split_off(at).freeze());
            self.cut(before, new_frame);
            let data = Frame::Data {
                mux: MuxId(mux),
                seq,
                payload,
            };
            self.large(mux, frame::encode_split(&data));
            return len;
        }
        // In place: the payload moves to just after a `Data` header written at `before`.
        let to = before + DATA_HEAD_LEN;
        if to > at {
            buf.resize(buf.len() + (to - at), 0);
        }
        buf.copy_within(at..at + len, to);
        buf.truncate(to + len);
        let mut head = BytesMut::with_capacity(DATA_HEAD_LEN);
        frame::encode_data_with(MuxId(mux), seq, false, &mut head, |_| Ok::<_, ()>(()))
            .unwrap_or_default();
        let body = u32::try_from(4 + len).unwrap_or(u32::MAX).to_be_bytes();
        head[6..FRAME_HEADER_LEN].copy_from_slice(&body);
        buf[before..to].copy_from_slice(&head);
        *frames += 1;
        *open = None;
        self.lanes.add_data(DATA_HEAD_LEN + len);
        self.appended += 1;
        len
    }

    /// Cuts the last run back to `len` bytes after a message that was not packed; with
    /// `new_frame`, the `Items` frame it had started goes too (and the run, if it is then empty).
    fn cut(&mut self, len: usize, new_frame: bool) {
        let (buf, frames, _) = self.back_run();
        buf.truncate(len);
        if new_frame && *frames == 0 {
            self.lanes.data.pop_back();
        }
    }
}

/// The run frames are appended to: the last entry of `data`, or a new run (in `spare`, or of
/// `hint` bytes) when that is not a run with room for another frame of a batch of at most
/// `max_batch` bytes.
#[inline(always)]
fn last_run<'a>(
    data: &'a mut VecDeque<Entry>,
    spare: &mut Option<BytesMut>,
    hint: usize,
    max_batch: usize,
) -> (&'a mut BytesMut, &'a mut usize, &'a mut Option<OpenItems>) {
    let fits = |e: &Entry| match e {
        Entry::Run { buf, msgs, .. } => *msgs < MAX_FRAMES_PER_BATCH && buf.len() < max_batch,
        Entry::Tagged(..) => false,
    };
    if !data.back().is_some_and(fits) {
        let buf = match spare.take() {
            Some(buf) => buf,
            None => BytesMut::with_capacity(hint.clamp(
                FIRST_RUN_CAPACITY,
                max_batch.saturating_add(FIRST_RUN_CAPACITY),
            )),
        };
        let Batch { buf, .. } = Batch::new(buf);
        data.push_back(Entry::Run {
            buf,
            frames: 0,
            msgs: 0,
            open: None,
        });
    }
    match data.back_mut() {
        Some(Entry::Run {
            buf,
            frames,
            msgs,
            open,
        }) => {
            // Counted now: a message that fails is cut off again, and a run's count may
            // overstate what it holds, never understate it.
            *msgs += 1;
            (buf, frames, open)
        }
        _ => unreachable!("a run was just made the last entry"),
    }
}

/// The mux id in the header of an encoded frame.
fn frame_mux(frame: &[u8]) -> u32 {
    match frame.get(2..6) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

impl OutQueue {
    /// A queue whose frames longer than `chunk` bytes go in parts (`chunk` 0: never).
    pub(crate) fn new(
        max_data_bytes: usize,
        max_batch_bytes: usize,
        max_control: usize,
        chunk: usize,
    ) -> OutQueue {
        OutQueue {
            lanes: Padded(Mutex::new(Lanes::default())),
            writer: Notify::new(),
            room: Notify::new(),
            emptied: Notify::new(),
            max_data_bytes,
            max_batch_bytes,
            max_control,
            chunk,
            full: AtomicBool::new(false),
            bulk_busy: AtomicBool::new(false),
        }
    }

    /// Queues a control frame without waiting.
    pub(crate) fn push_control(&self, frame: Bytes) -> Result<(), QueueError> {
        let mut lanes = self.lanes.lock();
        if lanes.closed {
            return Err(QueueError::Closed);
        }
        if lanes.control.len() >= self.max_control {
            return Err(QueueError::Stuck);
        }
        let wake = !self.can_send(&lanes);
        lanes.control.push_back(frame);
        drop(lanes);
        if wake {
            self.writer.notify_one();
        }
        Ok(())
    }

    /// True when the writer has something to take now: control or data frames, or parts it
    /// may send (some are ready and the window has room).
    fn can_send(&self, lanes: &Lanes) -> bool {
        !lanes.control.is_empty() || !lanes.data.is_empty() || self.parts_ready(lanes)
    }

    fn parts_ready(&self, lanes: &Lanes) -> bool {
        self.chunk > 0 && lanes.in_flight < PARTS_IN_FLIGHT && lanes.bulk.ready(lanes.taken)
    }

    /// True when the writer has something to take now (see [`can_send`](Self::can_send)).
    pub(crate) fn sendable(&self) -> bool {
        self.can_send(&self.lanes.lock())
    }

    /// The peer read `bytes` more bytes of our parts: as many more may be sent.
    pub(crate) fn parts_read(&self, bytes: usize) {
        let mut lanes = self.lanes.lock();
        let blocked = lanes.in_flight >= PARTS_IN_FLIGHT;
        lanes.in_flight = lanes.in_flight.saturating_sub(bytes);
        let wake = blocked && !lanes.closed && self.parts_ready(&lanes);
        drop(lanes);
        if wake {
            self.writer.notify_one();
        }
    }

    /// True when a frame of `len` encoded bytes goes in parts.
    pub(crate) fn is_large(&self, len: usize) -> bool {
        self.chunk > 0 && len > self.chunk
    }

    fn has_room(&self, lanes: &Lanes, large: bool) -> bool {
        lanes.data_bytes < self.max_data_bytes
            && (!large || lanes.bulk.bytes() < self.max_data_bytes)
    }

    /// Waits until the data lane has room for another frame (or the queue closed); with
    /// `large`, until the large frames sent in parts are under their bound too.
    ///
    /// # Cancel safety
    /// Cancel safe: it changes nothing.
    pub(crate) async fn wait_room(&self, large: bool) -> Result<(), QueueError> {
        // Fast path: room now. Registering a waiter costs a lock on the notifier's list.
        {
            let lanes = self.lanes.lock();
            if lanes.closed {
                return Err(QueueError::Closed);
            }
            if self.has_room(&lanes, large) {
                return Ok(());
            }
        }
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let lanes = self.lanes.lock();
                if lanes.closed {
                    return Err(QueueError::Closed);
                }
                if self.has_room(&lanes, large) {
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Appends data frames under the lane's lock: `write` encodes them through the
    /// [`DataWriter`], as many as it likes (checking [`DataWriter::has_room`] between frames if it
    /// batches). Whatever `write` returns is handed back, its error as [`Refused::By`] (frames it
    /// appended before failing stay queued). A producer that holds a stream's lock can take a
    /// credit, number the frame and queue it in one step, so a numbered frame is never lost to a
    /// dropped future and frames are queued in sequence order.
    // Inlined, with `DataWriter::item`, `last_run` and `Bulk::holds`: a stream producer's loop
    // runs in `write`, and compiled into its caller it read 7-19 % faster on the server stream
    // (BENCHMARKS.md, "tenth session"); `append` alone slowed the typed two-way stream. `last_run`
    // and `encode_item_with` are inlined always: left to the compiler, both stayed calls per
    // message, and inlined the server stream read 5-7 % faster ("eleventh session").
    #[inline]
    pub(crate) fn append<T, E>(
        &self,
        bound: Bound,
        write: impl FnOnce(&mut DataWriter<'_>) -> Result<T, E>,
    ) -> Result<T, Refused<E>> {
        let mut lanes = self.lanes.lock();
        if lanes.closed {
            return Err(Refused::Closed);
        }
        match bound {
            Bound::Room if lanes.data_bytes >= self.max_data_bytes => return Err(Refused::Full),
            Bound::Bulk if !self.has_room(&lanes, true) => return Err(Refused::Full),
            Bound::Twice if lanes.data_bytes > self.max_data_bytes.saturating_mul(2) => {
                return Err(Refused::Stuck)
            }
            _ => {}
        }
        let wake = !self.can_send(&lanes);
        let mut w = DataWriter {
            lanes: &mut lanes,
            queue: self,
            appended: 0,
        };
        // A panic in `write` (a user's encoder runs in it) still leaves the lane marked and the
        // writer woken for the frames appended before it: a writer left asleep with frames
        // queued would never be woken again (producers wake it only when the lane was idle).
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| write(&mut w)));
        let appended = w.appended;
        self.mark(&lanes);
        drop(lanes);
        if wake && appended > 0 {
            self.writer.notify_one();
        }
        match out {
            Ok(out) => out.map_err(Refused::By),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Like [`push_tagged`](Self::push_tagged), for a frame of `len` bytes that `encode`
    /// writes (whole, and only it) into a buffer the queue gives it, once it is admitted.
    pub(crate) fn push_tagged_with(
        &self,
        tag: u32,
        len: usize,
        bound: Bound,
        encode: impl FnOnce(&mut BytesMut),
    ) -> Result<(), Refused<()>> {
        self.push_tagged_made(tag, len, bound, |lanes, bulk| {
            let mut buf = match lanes.frame_bufs.pop() {
                Some(b) if !bulk => b,
                _ => BytesMut::with_capacity(len),
            };
            encode(&mut buf);
            buf.freeze()
        })
    }

    /// Queues a `Request`/`Open` as a frame of its own, tagged with its mux for
    /// [`retract`](Self::retract); refused like [`append`](Self::append) with the same `bound`
    /// (the frame is handed back).
    pub(crate) fn push_tagged(
        &self,
        frame: Bytes,
        tag: u32,
        bound: Bound,
    ) -> Result<(), Refused<Bytes>> {
        let len = frame.len();
        let mut frame = Some(frame);
        match self.push_tagged_made(tag, len, bound, |_, _| frame.take().unwrap_or_default()) {
            Ok(()) => Ok(()),
            Err(Refused::Full) => Err(Refused::By(frame.take().unwrap_or_default())),
            Err(Refused::Closed) => Err(Refused::Closed),
            Err(Refused::Stuck) => Err(Refused::Stuck),
            Err(Refused::By(())) => Err(Refused::By(frame.take().unwrap_or_default())),
        }
    }

    /// Queues the tagged frame of `len` bytes `make` produces, once it is admitted under
    /// `bound` (told whether it goes among the frames sent in parts).
    fn push_tagged_made(
        &self,
        tag: u32,
        len: usize,
        bound: Bound,
        make: impl FnOnce(&mut Lanes, bool) -> Bytes,
    ) -> Result<(), Refused<()>> {
        let mut lanes = self.lanes.lock();
        if lanes.closed {
            return Err(Refused::Closed);
        }
        let bulk = self.chunk > 0 && (len > self.chunk || lanes.bulk.holds(tag));
        match bound {
            Bound::Room | Bound::Bulk if !self.has_room(&lanes, bulk) => return Err(Refused::Full),
            Bound::Twice if lanes.data_bytes > self.max_data_bytes.saturating_mul(2) => {
                return Err(Refused::Stuck)
            }
            _ => {}
        }
        let wake = !self.can_send(&lanes);
        let frame = make(&mut lanes, bulk);
        if bulk {
            let put = lanes.put;
            lanes.bulk.push(tag, frame, Bytes::new(), true, put);
        } else {
            lanes.add_data(frame.len());
            lanes.data.push_back(Entry::Tagged(tag, frame));
        }
        self.mark(&lanes);
        drop(lanes);
        if wake {
            self.writer.notify_one();
        }
        Ok(())
    }

    /// Queues a frame that goes in parts (longer than the chunk size: see
    /// [`is_large`](Self::is_large)), encoded by its producer outside the lane's lock as `head`
    /// and `tail` (its payload, not copied: see `encode_split`), behind the frames of `mux` in
    /// parts; `tagged` for a `Request`/`Open` ([`retract`](Self::retract) takes it back while
    /// none of it is sent). Refused like [`append`](Self::append) with `bound` (the frame is
    /// handed back).
    pub(crate) fn push_large(
        &self,
        (head, tail): (Bytes, Bytes),
        mux: u32,
        tagged: bool,
        bound: Bound,
    ) -> Result<(), Refused<(Bytes, Bytes)>> {
        debug_assert!(
            self.is_large(head.len() + tail.len()),
            "push_large of a small frame"
        );
        let mut lanes = self.lanes.lock();
        if lanes.closed {
            return Err(Refused::Closed);
        }
        if matches!(bound, Bound::Room | Bound::Bulk) && !self.has_room(&lanes, true) {
            return Err(Refused::By((head, tail)));
        }
        let wake = !self.can_send(&lanes);
        let put = lanes.put;
        lanes.bulk.push(mux, head, tail, tagged, put);
        self.mark(&lanes);
        drop(lanes);
        if wake {
            self.writer.notify_one();
        }
        Ok(())
    }

    /// Waits until the writer has taken every queued frame (or the queue closed).
    ///
    /// # Cancel safety
    /// Cancel safe: it changes nothing.
    pub(crate) async fn wait_empty(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            {
                let lanes = self.lanes.lock();
                if lanes.closed || lanes.is_empty() {
                    return;
                }
            }
            emptied.await;
        }
    }

    /// Bytes of data frames queued (large frames waiting to be sent in parts included).
    pub(crate) fn data_bytes(&self) -> usize {
        let lanes = self.lanes.lock();
        lanes.data_bytes + lanes.bulk.bytes()
    }

    /// True when nothing is queued in either lane.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.lanes.lock().is_empty()
    }

    /// Updates the lock-free mirrors. Stored only when they change: every call reads them, and
    /// a store, even of the same value, takes their cache line from the other workers.
    fn mark(&self, lanes: &Lanes) {
        let full = lanes.data_bytes >= self.max_data_bytes;
        if self.full.load(Ordering::Relaxed) != full {
            self.full.store(full, Ordering::Relaxed);
        }
        let busy = !lanes.bulk.is_empty();
        if self.bulk_busy.load(Ordering::Relaxed) != busy {
            self.bulk_busy.store(busy, Ordering::Relaxed);
        }
    }

    /// True while the data lane is at its bound. Read without the lane's lock (a hint, exact
    /// at the moment the lane last changed): the reader asks it for every new call.
    pub(crate) fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// Takes back the queued `Request`/`Open` of `mux`, if the writer has not taken it yet. When
    /// this returns false the frame was written (or never queued), so a `Cancel` queued now can
    /// only travel after it.
    ///
    /// Whatever else of `mux` waits to be sent in parts is dropped too (its call is over), and
    /// a frame sent in part is abandoned with a `ChunkAbort` (see [`abandon`](Self::abandon)).
    pub(crate) fn retract(&self, mux: u32) -> bool {
        let mut lanes = self.lanes.lock();
        let dropped = self.abandon_locked(&mut lanes, mux);
        let Some(pos) = lanes
            .data
            .iter()
            .position(|e| matches!(e, Entry::Tagged(tag, _) if *tag == mux))
        else {
            return dropped;
        };
        if let Some(e) = lanes.data.remove(pos) {
            lanes.take_data(e.len());
            self.mark(&lanes);
        }
        true
    }

    /// Drops at once everything of `mux` still waiting to be sent in parts (its call was
    /// cancelled). If a frame was sent in part, a `ChunkAbort` goes ahead of every other frame,
    /// so the peer drops the parts it holds. True if the mux's `Request`/`Open` was dropped
    /// before any of it was sent.
    pub(crate) fn abandon(&self, mux: u32) -> bool {
        if self.chunk == 0 || !self.bulk_busy.load(Ordering::Relaxed) {
            return false;
        }
        let mut lanes = self.lanes.lock();
        self.abandon_locked(&mut lanes, mux)
    }

    fn abandon_locked(&self, lanes: &mut Lanes, mux: u32) -> bool {
        let gone = lanes.bulk.abandon(mux);
        if gone.partial && !lanes.closed {
            let mut abort = BytesMut::with_capacity(FRAME_HEADER_LEN);
            crate::frame::encode_frame(
                &crate::frame::Frame::ChunkAbort {
                    mux: crate::ids::MuxId(mux),
                },
                false,
                &mut abort,
            );
            // Past the control lane's bound if need be: the peer must hear it.
            lanes.control.push_back(abort.freeze());
            self.writer.notify_one();
        }
        if gone.bytes > 0 {
            self.room.notify_waiters();
        }
        gone.retracted
    }

    /// Gives the writer's last message buffer back for the next run, if there is more to write
    /// (an idle queue keeps no buffer: an idle connection stays small).
    pub(crate) fn recycle(&self, buf: BytesMut) {
        if buf.capacity() > 2 * self.max_batch_bytes {
            return;
        }
        let mut lanes = self.lanes.lock();
        if !lanes.closed && !lanes.is_empty() && lanes.spare.is_none() {
            lanes.spare = Some(buf);
        }
    }

    /// Lets the requests' buffers go if no data was queued since the last call: called once per
    /// keepalive tick, so a connection that went quiet holds none after at most two ticks, and
    /// one between bursts keeps them (freeing them at every pause cost an allocation per call,
    /// and a free on the other worker, under glibc's arena lock).
    pub(crate) fn trim_idle(&self) {
        let mut lanes = self.lanes.lock();
        if lanes.put == lanes.put_at_trim {
            lanes.frame_bufs = Vec::new();
        }
        lanes.put_at_trim = lanes.put;
    }

    /// Waits until there is something to write, then takes one batch: control frames first, then
    /// data frames, within `max_bytes` (at least one frame) and [`MAX_FRAMES_PER_BATCH`]. `None`
    /// once closed.
    ///
    /// # Cancel safety
    /// Cancel safe: frames are only taken in the same poll that returns them.
    pub(crate) async fn drain(&self, max_bytes: usize) -> Option<Batch> {
        // Fast path: frames are waiting (a busy connection), no need to register a waiter.
        if let Some(out) = self.take(max_bytes) {
            return out;
        }
        loop {
            let wake = self.writer.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            if let Some(out) = self.take(max_bytes) {
                return out;
            }
            wake.await;
        }
    }

    /// Copies into `batch` whatever is queued now and fits within `max_bytes`; never waits.
    pub(crate) fn top_up(&self, batch: &mut Batch, max_bytes: usize) {
        let mut lanes = self.lanes.lock();
        if lanes.closed || lanes.is_empty() {
            return;
        }
        let was_full = lanes.data_bytes >= self.max_data_bytes;
        let took = Self::fill(&mut lanes, batch, max_bytes);
        self.after_take(lanes, was_full, took);
    }

    /// Takes a batch if there is one, never waiting (see [`drain`](Self::drain)):
    /// `Some(None)` when closed, `None` when empty.
    pub(crate) fn take(&self, max_bytes: usize) -> Option<Option<Batch>> {
        let mut lanes = self.lanes.lock();
        if lanes.closed {
            return Some(lanes.last.take().map(|f| {
                let mut b = Batch::new(BytesMut::with_capacity(BATCH_HEADER_LEN + f.len()));
                b.buf.extend_from_slice(&f);
                b.frames = 1;
                b.msgs = 1;
                b
            }));
        }
        if !self.can_send(&lanes) {
            // The writer is about to sleep: an idle queue keeps no batch buffer (the requests'
            // buffers stay for the next burst, see `trim_idle`).
            if lanes.is_empty() {
                lanes.spare = None;
            }
            return None;
        }
        // Producers wait only while the lane is full: wake them only then.
        let was_full =
            lanes.data_bytes >= self.max_data_bytes || lanes.bulk.bytes() >= self.max_data_bytes;
        // Batches of parts alternate with batches of the data lane; control frames lead both.
        let bulk_ready = self.parts_ready(&lanes);
        if bulk_ready && (lanes.bulk_turn || lanes.data.is_empty()) {
            lanes.bulk_turn = false;
            let buf = lanes
                .spare
                .take()
                .unwrap_or_else(|| BytesMut::with_capacity(FIRST_RUN_CAPACITY));
            let mut batch = Batch::new(buf);
            Self::fill_control(&mut lanes, &mut batch);
            let taken = lanes.taken;
            let mut window = PARTS_IN_FLIGHT - lanes.in_flight;
            let Lanes { bulk, .. } = &mut *lanes;
            // A batch of parts is at most half the window: acks come back while the other half
            // is written, and a small frame waits for one short write, not a whole window.
            let sent = bulk.fill(
                &mut batch.buf,
                &mut batch.frames,
                max_bytes
                    .min(PARTS_IN_FLIGHT / 2)
                    .saturating_add(BATCH_HEADER_LEN),
                self.chunk,
                taken,
                &mut window,
            );
            lanes.in_flight = PARTS_IN_FLIGHT - window;
            // Control frames and parts are one message each.
            batch.msgs = batch.frames;
            self.after_take(lanes, was_full, sent > 0);
            return Some(Some(batch));
        }
        lanes.bulk_turn = bulk_ready;
        let alone = lanes.data.len() == 1;
        let run_first = lanes.control.is_empty()
            && matches!(lanes.data.front(), Some(Entry::Run { buf, frames, .. })
                if *frames > 0 && (alone || buf.len() > COPY_RUN_MAX));
        if run_first {
            // A whole run is a whole batch: sent as it is, without a copy.
            if let Some(Entry::Run {
                buf, frames, msgs, ..
            }) = lanes.data.pop_front()
            {
                lanes.take_data(buf.len() - BATCH_HEADER_LEN);
                lanes.run_hint = buf.len();
                self.after_take(lanes, was_full, true);
                return Some(Some(Batch { buf, frames, msgs }));
            }
        }
        let buf = lanes
            .spare
            .take()
            .unwrap_or_else(|| BytesMut::with_capacity(FIRST_RUN_CAPACITY));
        let mut batch = Batch::new(buf);
        let took = Self::fill(&mut lanes, &mut batch, max_bytes);
        self.after_take(lanes, was_full, took);
        Some(Some(batch))
    }

    /// Copies control frames, then data frames, into `batch` while they fit; a run too big to
    /// copy stops it (it goes as a message of its own), unless `batch` is still empty. True if
    /// data frames were taken.
    fn fill(lanes: &mut Lanes, batch: &mut Batch, max_bytes: usize) -> bool {
        Self::fill_control(lanes, batch);
        let mut took_data = false;
        while let Some(next) = lanes.data.front() {
            let (len, frames, msgs) = (next.len(), next.frames(), next.msgs());
            let fits = batch.msgs + msgs <= MAX_FRAMES_PER_BATCH
                && batch.buf.len() + len <= max_bytes.saturating_add(BATCH_HEADER_LEN);
            let big = len > COPY_RUN_MAX && matches!(next, Entry::Run { .. });
            if batch.frames > 0 && (!fits || big) {
                break;
            }
            let Some(e) = lanes.data.pop_front() else {
                break;
            };
            lanes.take_data(len);
            took_data = true;
            match e {
                Entry::Tagged(_, f) => {
                    batch.buf.extend_from_slice(&f);
                    Self::keep_frame_buf(lanes, f);
                }
                Entry::Run { buf, .. } => {
                    lanes.run_hint = buf.len();
                    batch.buf.extend_from_slice(&buf[BATCH_HEADER_LEN..]);
                }
            }
            batch.frames += frames;
            batch.msgs += msgs;
        }
        took_data
    }

    /// Keeps the buffer of a request the writer copied out for a later request, if it is small
    /// and no one else holds it.
    fn keep_frame_buf(lanes: &mut Lanes, frame: Bytes) {
        if lanes.frame_bufs.len() >= FRAME_BUFS_KEPT || frame.len() > FRAME_BUF_MAX {
            return;
        }
        if let Ok(mut buf) = frame.try_into_mut() {
            buf.clear();
            lanes.frame_bufs.push(buf);
        }
    }

    /// Copies the queued control frames into `batch`, within [`MAX_FRAMES_PER_BATCH`].
    fn fill_control(lanes: &mut Lanes, batch: &mut Batch) {
        while batch.msgs < MAX_FRAMES_PER_BATCH {
            let Some(f) = lanes.control.pop_front() else {
                break;
            };
            batch.buf.extend_from_slice(&f);
            batch.frames += 1;
            batch.msgs += 1;
        }
    }

    fn after_take(&self, lanes: MutexGuard<'_, Lanes>, was_full: bool, took_data: bool) {
        self.mark(&lanes);
        let empty = lanes.is_empty();
        drop(lanes);
        if took_data && was_full {
            self.room.notify_waiters();
        }
        if empty {
            self.emptied.notify_waiters();
        }
    }

    /// Closes the queue: drops everything queued and wakes every waiter.
    #[cfg(test)]
    pub(crate) fn close(&self) {
        self.close_with(None);
    }

    /// Closes the queue like [`close`](Self::close), but the writer still sends `last` (the
    /// go-away telling the peer why) before it sees the close.
    pub(crate) fn close_with(&self, last: Option<Bytes>) {
        let mut lanes = self.lanes.lock();
        if !lanes.closed {
            lanes.last = last;
        }
        lanes.closed = true;
        lanes.control.clear();
        lanes.data.clear();
        lanes.data_bytes = 0;
        lanes.bulk.clear();
        lanes.spare = None;
        self.mark(&lanes);
        drop(lanes);
        self.writer.notify_one();
        self.room.notify_waiters();
        self.emptied.notify_waiters();
    }

    /// Frames queued in each lane (control, data).
    #[cfg(test)]
    pub(crate) fn lens(&self) -> (usize, usize) {
        let lanes = self.lanes.lock();
        (
            lanes.control.len(),
            lanes.data.iter().map(Entry::frames).sum::<usize>() + lanes.bulk.frames(),
        )
    }
}

#[cfg(test)]
#[path = "outq_tests.rs"]
mod tests;
