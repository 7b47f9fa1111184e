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
//! The writer drains control first, so pings and credits never wait behind bulk data, then packs
//! as many data frames as fit into one batch. When the queue is empty the writer sleeps, and the
//! first frame to arrive wakes it and goes out alone: an idle connection adds no latency.
//!
//! Every queue belongs to exactly one socket and dies with it: nothing queued for an old socket
//! is ever sent on a new one.

use std::collections::VecDeque;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Why [`OutQueue::push_data_with`] queued nothing.
#[derive(Debug)]
pub(crate) enum Refused<E> {
    /// The socket is gone.
    Closed,
    /// The data lane is at its bound: wait for room.
    Full,
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

#[derive(Debug, Default)]
struct Lanes {
    control: VecDeque<Bytes>,
    /// Data frames, each tagged with the mux id of a `Request`/`Open` (0 for any other frame) so
    /// that a call given up before it was sent can be taken back.
    data: VecDeque<(u32, Bytes)>,
    data_bytes: usize,
    closed: bool,
    /// A last frame the writer still sends after the close (the go-away naming a violation).
    last: Option<Bytes>,
}

/// The two lanes and the wake-ups around them.
#[derive(Debug)]
pub(crate) struct OutQueue {
    lanes: Mutex<Lanes>,
    writer: Notify,
    room: Notify,
    emptied: Notify,
    max_data_bytes: usize,
    max_control: usize,
    /// Mirrors `data_bytes >= max_data_bytes`, updated under the lanes' lock.
    full: std::sync::atomic::AtomicBool,
}

/// One batch's worth of frames taken by the writer.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    pub(crate) frames: Vec<Bytes>,
    pub(crate) bytes: usize,
}

impl OutQueue {
    pub(crate) fn new(max_data_bytes: usize, max_control: usize) -> OutQueue {
        OutQueue {
            lanes: Mutex::new(Lanes::default()),
            writer: Notify::new(),
            room: Notify::new(),
            emptied: Notify::new(),
            max_data_bytes,
            max_control,
            full: std::sync::atomic::AtomicBool::new(false),
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
        lanes.control.push_back(frame);
        drop(lanes);
        self.writer.notify_one();
        Ok(())
    }

    /// Waits until the data lane has room for another frame (or the queue closed).
    ///
    /// # Cancel safety
    /// Cancel safe: it changes nothing.
    pub(crate) async fn wait_room(&self) -> Result<(), QueueError> {
        // Fast path: room now. Registering a waiter costs a lock on the notifier's list.
        {
            let lanes = self.lanes.lock();
            if lanes.closed {
                return Err(QueueError::Closed);
            }
            if lanes.data_bytes < self.max_data_bytes {
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
                if lanes.data_bytes < self.max_data_bytes {
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Queues a data frame without waiting. Producers call [`wait_room`](Self::wait_room) first,
    /// then build and push the frame in one synchronous step, so a frame whose sequence number is
    /// taken is never lost to a dropped future; the lane may overshoot its bound by one frame per
    /// producer.
    pub(crate) fn push_data_unbounded(&self, frame: Bytes, tag: u32) -> Result<(), QueueError> {
        let mut lanes = self.lanes.lock();
        if lanes.closed {
            return Err(QueueError::Closed);
        }
        lanes.data_bytes += frame.len();
        self.mark(&lanes);
        lanes.data.push_back((tag, frame));
        drop(lanes);
        self.writer.notify_one();
        Ok(())
    }

    /// Queues a data frame if the lane has room now; else hands it back (`Err(Some(frame))`), or
    /// `Err(None)` once closed. Unlike a [`wait_room`](Self::wait_room) then push, many
    /// producers woken together cannot each add a frame past the bound: the lane overshoots by
    /// at most one frame in all.
    pub(crate) fn push_data_if_room(&self, frame: Bytes, tag: u32) -> Result<(), Option<Bytes>> {
        let mut lanes = self.lanes.lock();
        if lanes.closed {
            return Err(None);
        }
        if lanes.data_bytes >= self.max_data_bytes {
            return Err(Some(frame));
        }
        lanes.data_bytes += frame.len();
        self.mark(&lanes);
        lanes.data.push_back((tag, frame));
        drop(lanes);
        self.writer.notify_one();
        Ok(())
    }

    /// Queues the data frame `make` builds, if the lane has room now; `make` runs under the
    /// lane's lock, so a producer that holds a stream's lock can take a credit, number the frame
    /// and queue it in one step without overshooting the bound (one frame past it at most, in
    /// all). `make` may refuse, and its refusal is handed back.
    pub(crate) fn push_data_with<E>(
        &self,
        make: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<(), Refused<E>> {
        let mut lanes = self.lanes.lock();
        if lanes.closed {
            return Err(Refused::Closed);
        }
        if lanes.data_bytes >= self.max_data_bytes {
            return Err(Refused::Full);
        }
        let frame = make().map_err(Refused::By)?;
        lanes.data_bytes += frame.len();
        self.mark(&lanes);
        lanes.data.push_back((0, frame));
        drop(lanes);
        self.writer.notify_one();
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
                if lanes.closed || lanes.control.is_empty() && lanes.data.is_empty() {
                    return;
                }
            }
            emptied.await;
        }
    }

    /// Bytes of data frames queued.
    pub(crate) fn data_bytes(&self) -> usize {
        self.lanes.lock().data_bytes
    }

    fn mark(&self, lanes: &Lanes) {
        self.full.store(
            lanes.data_bytes >= self.max_data_bytes,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// True while the data lane is at its bound. Read without the lane's lock (a hint, exact
    /// at the moment the lane last changed): the reader asks it for every new call.
    pub(crate) fn is_full(&self) -> bool {
        self.full.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues a frame in the data lane from a task that must not wait (the reader, a timer): it
    /// goes after the frames already queued for its mux. Refused with `Stuck` once the lane holds
    /// twice its bound, so a peer that makes us answer but never reads cannot grow it forever.
    pub(crate) fn push_data_nowait(&self, frame: Bytes) -> Result<(), QueueError> {
        {
            let lanes = self.lanes.lock();
            if lanes.data_bytes > self.max_data_bytes.saturating_mul(2) {
                return Err(QueueError::Stuck);
            }
        }
        self.push_data_unbounded(frame, 0)
    }

    /// Takes back the queued `Request`/`Open` of `mux`, if the writer has not taken it yet. When
    /// this returns false the frame was written (or never queued), so a `Cancel` queued now can
    /// only travel after it.
    pub(crate) fn retract(&self, mux: u32) -> bool {
        let mut lanes = self.lanes.lock();
        let Some(pos) = lanes.data.iter().position(|(tag, _)| *tag == mux) else {
            return false;
        };
        if let Some((_, f)) = lanes.data.remove(pos) {
            lanes.data_bytes -= f.len();
            self.mark(&lanes);
        }
        true
    }

    /// Waits until there is something to write, then takes control frames first and data frames
    /// up to `max_bytes` (at least one frame) and `max_frames`. `None` once closed.
    ///
    /// # Cancel safety
    /// Cancel safe: frames are only taken in the same poll that returns them.
    pub(crate) async fn drain(&self, max_bytes: usize, max_frames: usize) -> Option<Drained> {
        // Fast path: frames are waiting (a busy connection), no need to register a waiter.
        if let Some(out) = self.take(max_bytes, max_frames) {
            return out;
        }
        loop {
            let wake = self.writer.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            if let Some(out) = self.take(max_bytes, max_frames) {
                return out;
            }
            wake.await;
        }
    }

    /// Appends to `batch` whatever is queued now, within the bounds; never waits.
    pub(crate) fn top_up(&self, batch: &mut Drained, max_bytes: usize, max_frames: usize) {
        let bytes = max_bytes.saturating_sub(batch.bytes);
        let frames = max_frames.saturating_sub(batch.frames.len());
        if bytes == 0 || frames == 0 {
            return;
        }
        if let Some(Some(more)) = self.take(bytes, frames) {
            // `take` admits one frame past the byte bound when the batch is empty; here the batch
            // is not, so the bound only loosens by that one frame.
            batch.bytes += more.bytes;
            batch.frames.extend(more.frames);
        }
    }

    /// Takes a batch if there is one: `Some(None)` when closed, `None` when empty.
    fn take(&self, max_bytes: usize, max_frames: usize) -> Option<Option<Drained>> {
        {
            {
                let mut lanes = self.lanes.lock();
                if lanes.closed {
                    return Some(lanes.last.take().map(|f| Drained {
                        bytes: f.len(),
                        frames: vec![f],
                    }));
                }
                if !lanes.control.is_empty() || !lanes.data.is_empty() {
                    // Producers wait only while the lane is full: wake them only then.
                    let was_full = lanes.data_bytes >= self.max_data_bytes;
                    let mut out = Drained::default();
                    while out.frames.len() < max_frames {
                        let Some(f) = lanes.control.pop_front() else {
                            break;
                        };
                        out.bytes += f.len();
                        out.frames.push(f);
                    }
                    let mut took_data = false;
                    while out.frames.len() < max_frames {
                        let Some((_, next)) = lanes.data.front() else {
                            break;
                        };
                        if !out.frames.is_empty() && out.bytes + next.len() > max_bytes {
                            break;
                        }
                        let Some((_, f)) = lanes.data.pop_front() else {
                            break;
                        };
                        lanes.data_bytes -= f.len();
                        out.bytes += f.len();
                        out.frames.push(f);
                        took_data = true;
                    }
                    self.mark(&lanes);
                    let empty = lanes.control.is_empty() && lanes.data.is_empty();
                    drop(lanes);
                    if took_data && was_full {
                        self.room.notify_waiters();
                    }
                    if empty {
                        self.emptied.notify_waiters();
                    }
                    return Some(Some(out));
                }
            }
        }
        None
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
        (lanes.control.len(), lanes.data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[tokio::test]
    async fn control_goes_first_and_data_is_packed() {
        let q = OutQueue::new(1000, 10);
        q.push_data_unbounded(b(10), 0).expect("open");
        q.push_data_unbounded(b(20), 0).expect("open");
        q.push_control(b(1)).expect("room");
        let d = q.drain(1 << 20, 1024).await.expect("open");
        let lens: Vec<usize> = d.frames.iter().map(Bytes::len).collect();
        assert_eq!(lens, vec![1, 10, 20]);
    }

    #[tokio::test]
    async fn producers_wait_for_room_until_the_writer_drains() {
        let q = std::sync::Arc::new(OutQueue::new(100, 10));
        q.push_data_unbounded(b(500), 0)
            .expect("a large frame goes alone");
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.wait_room().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "over the bound: the producer waits");
        q.drain(1 << 20, 1024).await.expect("open");
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken by the drain")
            .expect("no panic");
        assert_eq!(r, Ok(()));
    }

    #[tokio::test]
    async fn a_queued_call_can_be_taken_back_until_the_writer_takes_it() {
        let q = OutQueue::new(1000, 10);
        q.push_data_unbounded(b(10), 3).expect("open");
        q.push_data_unbounded(b(20), 5).expect("open");
        assert!(q.retract(3), "still queued");
        assert!(!q.retract(3), "already taken back");
        let d = q.drain(1 << 20, 1024).await.expect("open");
        assert_eq!(
            d.frames.iter().map(Bytes::len).collect::<Vec<_>>(),
            vec![20]
        );
        assert!(!q.retract(5), "written: a cancel must follow instead");
    }

    #[tokio::test]
    async fn control_lane_overflow_reports_stuck() {
        let q = OutQueue::new(100, 2);
        q.push_control(b(1)).expect("room");
        q.push_control(b(1)).expect("room");
        assert_eq!(q.push_control(b(1)), Err(QueueError::Stuck));
    }

    #[tokio::test]
    async fn close_drops_everything_and_wakes_waiters() {
        let q = std::sync::Arc::new(OutQueue::new(10, 10));
        q.push_data_unbounded(b(10), 0).expect("open");
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.wait_room().await });
        tokio::task::yield_now().await;
        q.close();
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("waiter woke")
            .expect("no panic");
        assert_eq!(r, Err(QueueError::Closed));
        assert_eq!(q.lens(), (0, 0));
        assert!(q.drain(100, 10).await.is_none());
    }

    #[tokio::test]
    async fn a_last_frame_survives_the_close_and_goes_out_alone() {
        let q = OutQueue::new(100, 10);
        q.push_data_unbounded(b(10), 0).expect("open");
        q.close_with(Some(b(3)));
        let d = q.drain(100, 10).await.expect("the last frame");
        assert_eq!(d.frames.iter().map(Bytes::len).collect::<Vec<_>>(), vec![3]);
        assert!(q.drain(100, 10).await.is_none());
    }

    #[test]
    fn woken_producers_cannot_each_overshoot_the_bound() {
        let q = OutQueue::new(100, 10);
        q.push_data_if_room(b(60), 0).expect("room");
        q.push_data_if_room(b(60), 0).expect("room: 60 < 100");
        assert_eq!(q.push_data_if_room(b(60), 0), Err(Some(b(60))));
        assert_eq!(q.data_bytes(), 120);
    }

    #[tokio::test]
    async fn batches_respect_byte_and_frame_bounds() {
        let q = OutQueue::new(1 << 20, 10);
        for _ in 0..10 {
            q.push_data_unbounded(b(100), 0).expect("open");
        }
        assert_eq!(q.drain(250, 1024).await.expect("open").frames.len(), 2);
        assert_eq!(q.drain(1 << 20, 3).await.expect("open").frames.len(), 3);
    }
}
