//! The large frames of the outbound queue, sent in parts and interleaved fairly.
//!
//! A frame longer than the link's chunk size (`Config::chunk_size`, agreed in the handshake)
//! does not go into the data lane's runs: it waits here, in the queue of its mux, and the writer
//! sends it as `Chunk` frames of at most one chunk size each (`PROTOCOL.md` section 10). Once a
//! mux has a frame here, every later data frame of that mux joins its queue too, small ones
//! included (they go out whole, in their turn), so a mux's frames keep their order: a stream's
//! messages, and the `End` behind them.
//!
//! **Fairness** is deficit round robin by bytes over the muxes with frames here: each turn gives
//! a mux one chunk size of credit, and it sends pieces while its credit covers the next one. With
//! pieces of at most one quantum every turn sends something, so a mux with many large frames and
//! one with a single small one alternate, and each of *n* muxes gets 1/*n* of the link. The
//! writer alternates batches of these parts with batches of the data lane, and control frames
//! lead every batch, so a small call waits for at most one batch of parts, never for a whole
//! large payload.
//!
//! **Order against the data lane**: frames of a mux queued in the data lane before its first
//! frame here must be sent first. A mux's queue therefore records how many bytes had been put in
//! the data lane when it was made (`barrier`), and is not served until the writer has taken that
//! many (the data lane is a FIFO, so everything before it is gone by then).
//!
//! **Pacing**: parts in flight are bounded by a window the peer reopens with `ChunkAck` as it
//! reads them, so the socket's buffers never fill up with parts ahead of a small call (h2's
//! connection window does the same for DATA frames).
//!
//! **Giving up**: [`Bulk::abandon`] drops everything a mux has here at once (its call was
//! cancelled, or a queued request taken back). If a frame had been sent in part, the peer is
//! holding its first parts: the caller queues a `ChunkAbort` ahead of anything else, and the
//! writer, which takes parts only under the queue's lock, has then sent nothing more of it.

use std::collections::{HashMap, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::{encode_chunk_header, FRAME_HEADER_LEN, MAX_FRAMES_PER_BATCH};
use crate::ids::MuxId;

/// One frame waiting here: its encoding is `head` then `tail` (the payload, shared with the
/// producer rather than copied into a buffer of its own).
#[derive(Debug)]
struct Queued {
    head: Bytes,
    tail: Bytes,
    /// A `Request`/`Open`: taking it back unsent means the peer never hears of the call.
    tagged: bool,
}

impl Queued {
    fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// Copies bytes `from..to` of the frame into `buf`.
    fn put(&self, buf: &mut BytesMut, from: usize, to: usize) {
        let h = self.head.len();
        if from < h {
            buf.put_slice(&self.head[from..to.min(h)]);
        }
        if to > h {
            buf.put_slice(&self.tail[from.max(h) - h..to - h]);
        }
    }
}

/// The frames of one mux, in order.
#[derive(Debug)]
struct MuxFrames {
    frames: VecDeque<Queued>,
    /// Bytes of the front frame already sent.
    sent: usize,
    /// Bytes this mux may still send in its current turn (deficit round robin).
    deficit: usize,
    /// The data lane's `put` count when this queue was made: served only once the writer has
    /// taken that many bytes of the data lane.
    barrier: u64,
}

/// What [`Bulk::abandon`] dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Abandoned {
    /// Bytes dropped.
    pub(super) bytes: usize,
    /// A frame had been sent in part: the peer must be told with a `ChunkAbort`.
    pub(super) partial: bool,
    /// The mux's `Request`/`Open` was dropped before any of it was sent.
    pub(super) retracted: bool,
}

/// The large frames of one socket, per mux, and the round robin over them.
#[derive(Debug, Default)]
pub(super) struct Bulk {
    muxes: HashMap<u32, MuxFrames>,
    /// Muxes with frames here, in round-robin order; the front one has the turn.
    order: VecDeque<u32>,
    /// Bytes of frames here not yet sent.
    bytes: usize,
    /// The front mux was given its quantum for the turn it is in.
    in_turn: bool,
}

impl Bulk {
    /// Bytes waiting here.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// True when `mux` has frames here: its next data frames must queue behind them.
    #[inline]
    pub(super) fn holds(&self, mux: u32) -> bool {
        self.muxes.contains_key(&mux)
    }

    /// Frames waiting here.
    #[cfg(test)]
    pub(super) fn frames(&self) -> usize {
        self.muxes.values().map(|m| m.frames.len()).sum()
    }

    /// Queues one encoded frame of `mux`, `head` then `tail`; `put` is the data lane's count of
    /// bytes put in so far.
    pub(super) fn push(&mut self, mux: u32, head: Bytes, tail: Bytes, tagged: bool, put: u64) {
        let frame = Queued { head, tail, tagged };
        self.bytes += frame.len();
        let order = &mut self.order;
        let q = self.muxes.entry(mux).or_insert_with(|| {
            order.push_back(mux);
            MuxFrames {
                frames: VecDeque::new(),
                sent: 0,
                deficit: 0,
                barrier: put,
            }
        });
        q.frames.push_back(frame);
    }

    /// True when some mux may be served now (`taken`: bytes of the data lane the writer took).
    pub(super) fn ready(&self, taken: u64) -> bool {
        self.order
            .iter()
            .any(|m| self.muxes.get(m).is_some_and(|q| q.barrier <= taken))
    }

    /// Drops everything `mux` has here.
    pub(super) fn abandon(&mut self, mux: u32) -> Abandoned {
        let Some(q) = self.muxes.remove(&mux) else {
            return Abandoned::default();
        };
        if let Some(pos) = self.order.iter().position(|m| *m == mux) {
            self.order.remove(pos);
            if pos == 0 {
                self.in_turn = false;
            }
        }
        let bytes = q.frames.iter().map(Queued::len).sum::<usize>() - q.sent;
        self.bytes -= bytes;
        Abandoned {
            bytes,
            partial: q.sent > 0,
            retracted: q.sent == 0 && q.frames.front().is_some_and(|f| f.tagged),
        }
    }

    /// Drops everything (the socket closed).
    pub(super) fn clear(&mut self) {
        *self = Bulk::default();
    }

    /// Writes parts into `buf` (a batch holding `frames` frames) by deficit round robin, while
    /// the batch stays within `max_bytes` and [`MAX_FRAMES_PER_BATCH`] (its first part always
    /// fits). A frame of at most `chunk` bytes goes whole, a longer one as `Chunk` frames of at
    /// most `chunk` bytes. `taken` is how much of the data lane the writer has taken, for the
    /// barriers. Parts (not frames sent whole) spend `window`; none is sent once it is 0.
    /// Returns the bytes of queued frames it sent.
    pub(super) fn fill(
        &mut self,
        buf: &mut BytesMut,
        frames: &mut usize,
        max_bytes: usize,
        chunk: usize,
        taken: u64,
        window: &mut usize,
    ) -> usize {
        let quantum = chunk.max(1);
        let mut sent = 0;
        let mut skipped = 0;
        while let Some(&mux) = self.order.front() {
            let Some(q) = self.muxes.get_mut(&mux) else {
                self.order.pop_front();
                continue;
            };
            if q.barrier > taken {
                // Frames of this mux are still in the data lane ahead of it.
                self.order.rotate_left(1);
                self.in_turn = false;
                skipped += 1;
                if skipped >= self.order.len() {
                    break;
                }
                continue;
            }
            skipped = 0;
            if !self.in_turn {
                q.deficit += quantum;
                self.in_turn = true;
            }
            while let Some(front) = q.frames.front() {
                let len = front.len();
                let whole = q.sent == 0 && len <= chunk;
                let cost = if whole {
                    len
                } else {
                    (len - q.sent).min(chunk)
                };
                if cost > q.deficit {
                    break;
                }
                if !whole && *window == 0 {
                    // The peer has not read enough of what is in flight yet.
                    return sent;
                }
                let wire = if whole { cost } else { FRAME_HEADER_LEN + cost };
                if *frames >= MAX_FRAMES_PER_BATCH || (*frames > 0 && buf.len() + wire > max_bytes)
                {
                    // The batch is full; this mux keeps its turn for the next one.
                    return sent;
                }
                if whole {
                    front.put(buf, 0, len);
                } else {
                    encode_chunk_header(MuxId(mux), cost, buf);
                    front.put(buf, q.sent, q.sent + cost);
                }
                *frames += 1;
                if !whole {
                    *window = window.saturating_sub(cost);
                }
                q.deficit -= cost;
                q.sent += if whole { 0 } else { cost };
                sent += cost;
                self.bytes -= cost;
                if whole || q.sent == len {
                    q.frames.pop_front();
                    q.sent = 0;
                }
            }
            self.in_turn = false;
            if q.frames.is_empty() {
                self.muxes.remove(&mux);
                self.order.pop_front();
            } else {
                self.order.rotate_left(1);
            }
        }
        sent
    }
}
