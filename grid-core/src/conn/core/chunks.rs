//! Frames that arrive in parts (`PROTOCOL.md` section 10): gathering them, within bounds.
//!
//! The first `Chunk` of a mux starts with the header of the frame it carries; that header says
//! how long the whole frame is, so the receiver knows where it ends without a flag, and checks
//! the length against the payload limit before it keeps a byte. Later parts of that mux add to it
//! until it is whole; then the core decodes it like any frame of a batch. A `ChunkAbort` drops it.
//!
//! Bounds:
//! - a new call in parts (`Request`, `Open`) is admitted by its size at its first part, and its
//!   whole payload counts against the connection's inbound [`Budget`] from then until it is
//!   whole; a full budget refuses it at once (`Overloaded`) and its parts are only counted;
//! - a stream message in parts counts each part as it arrives; one that would take the budget
//!   past twice its bound fails its stream, as a whole message would;
//! - a response in parts is kept only for a call this side is waiting for, like a whole one;
//! - at most [`MAX_PARTIAL_FRAMES`] frames in parts at once;
//! - a whole frame (not a part) of a data-carrying op on a mux whose frame is in parts is a
//!   violation: the sender keeps a mux's frames in order, so it cannot come before the last part.
//!
//! A frame whose call ended here while it arrived (the caller gave up) is *discarded*: its parts
//! are counted to find its end, but not kept, and nothing is charged.

use std::collections::HashMap;
use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::conn::budget::Budget;
use crate::frame::{flags, Op, CHECKSUM_LEN, FRAME_HEADER_LEN};
use crate::ids::MuxId;

/// Most frames one connection may have in parts at once. Bounds the bookkeeping a peer can make
/// us keep with first parts it never finishes (each one's bytes count against the budget too).
pub const MAX_PARTIAL_FRAMES: usize = 65_536;

/// A rule about frames in parts that the peer broke.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkViolation {
    /// A `Chunk` or `ChunkAbort` from a peer that did not agree to chunks in its handshake.
    NotAgreed,
    /// A first part that does not start with the header of a frame that may travel in parts
    /// (`Request`, `Response`, `Open`, `Data`, `Compressed`), or is shorter than a header.
    BadHeader {
        /// The mux.
        mux: MuxId,
    },
    /// The frame in parts names another mux than its parts.
    MuxMismatch {
        /// The parts' mux.
        mux: MuxId,
        /// The frame's.
        frame: u32,
    },
    /// The frame in parts carries a payload over the payload limit.
    TooLarge {
        /// Its declared payload length.
        len: usize,
        /// The largest allowed.
        limit: usize,
    },
    /// A part that runs past the end its frame declared.
    Overrun {
        /// The mux.
        mux: MuxId,
    },
    /// A `ChunkAbort` for a mux with no frame in parts.
    UnknownAbort {
        /// The mux.
        mux: MuxId,
    },
    /// A whole frame of a mux in the middle of that mux's frame in parts.
    Interleaved {
        /// The mux.
        mux: MuxId,
        /// The whole frame's op.
        op: Op,
    },
    /// Parts beyond the connection's inbound byte budget.
    Budget {
        /// The mux.
        mux: MuxId,
    },
    /// More than [`MAX_PARTIAL_FRAMES`] frames in parts at once.
    TooMany,
}

impl fmt::Display for ChunkViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkViolation::NotAgreed => {
                f.write_str("chunks from a peer that did not agree to them")
            }
            ChunkViolation::BadHeader { mux } => {
                write!(
                    f,
                    "first chunk on mux {mux} does not start a frame that may be chunked"
                )
            }
            ChunkViolation::MuxMismatch { mux, frame } => {
                write!(f, "chunk on mux {mux} carries a frame of mux {frame}")
            }
            ChunkViolation::TooLarge { len, limit } => {
                write!(
                    f,
                    "chunked frame of {len} bytes exceeds the limit of {limit}"
                )
            }
            ChunkViolation::Overrun { mux } => {
                write!(f, "chunk on mux {mux} runs past the end of its frame")
            }
            ChunkViolation::UnknownAbort { mux } => {
                write!(
                    f,
                    "chunk abort on mux {mux} with no chunked frame in progress"
                )
            }
            ChunkViolation::Interleaved { mux, op } => {
                write!(f, "{op:?} on mux {mux} in the middle of its chunked frame")
            }
            ChunkViolation::Budget { mux } => {
                write!(f, "chunks on mux {mux} beyond the connection's byte budget")
            }
            ChunkViolation::TooMany => write!(
                f,
                "more than {MAX_PARTIAL_FRAMES} chunked frames in progress at once"
            ),
        }
    }
}

/// One frame in parts.
#[derive(Debug)]
struct Partial {
    /// The bytes so far; `None` once discarded.
    buf: Option<BytesMut>,
    received: usize,
    total: usize,
    /// Bytes charged to the budget for it (released when it ends).
    charged: usize,
    /// Each part is charged as it arrives (a stream message), rather than all at the start.
    per_part: bool,
}

/// What a frame's first part says about it, for the core to decide how to hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FirstPart {
    /// The op of the frame in parts.
    pub(super) op: Op,
    /// Bytes of its payload (or error message).
    pub(super) payload: usize,
}

/// How the core holds a frame in parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    /// Kept, and its whole payload charged to the budget at once: a new call, admitted by its
    /// size at its first part, so calls in parts at once never add up past the bound.
    Reserve,
    /// Kept, each part charged as it arrives: a stream message (its window bounds it).
    PerPart,
    /// Kept, not charged: the response to a call this side is waiting for (as a whole response
    /// is not).
    Free,
    /// Counted to its end, not kept: nobody wants it (a call refused at its first part, a reply
    /// to a call that is over).
    Discard,
}

/// What [`Reassembly::part`] made of a part.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Part {
    /// More parts to come (or a discarded frame).
    Pending,
    /// The frame is whole.
    Whole(Bytes),
    /// A stream message in parts would take the budget past twice its bound: it is discarded
    /// and its stream must fail, as a whole message would make it.
    OverBudget,
}

/// The frames in parts of one connection.
#[derive(Debug, Default)]
pub(super) struct Reassembly {
    partial: HashMap<MuxId, Partial>,
}

impl Reassembly {
    pub(super) fn is_empty(&self) -> bool {
        self.partial.is_empty()
    }

    /// True when `mux` has a frame in parts.
    pub(super) fn holds(&self, mux: MuxId) -> bool {
        !self.partial.is_empty() && self.partial.contains_key(&mux)
    }

    /// Takes one part. A first part's header is checked (`max_payload` bounds the frame's
    /// payload, and `metadata` more bytes its metadata when it has some), then
    /// `keep` decides how the frame is held; `budget` holds its bytes meanwhile.
    ///
    /// # Errors
    /// The rule the part broke; the connection must close.
    pub(super) fn part(
        &mut self,
        mux: MuxId,
        bytes: Bytes,
        (max_payload, metadata): (usize, usize),
        budget: &Budget,
        keep: impl FnOnce(FirstPart) -> Keep,
    ) -> Result<Part, ChunkViolation> {
        let n = bytes.len();
        let Some(p) = self.partial.get_mut(&mux) else {
            let (total, first) = first_part(mux, &bytes, max_payload, metadata)?;
            if self.partial.len() >= MAX_PARTIAL_FRAMES {
                return Err(ChunkViolation::TooMany);
            }
            if n > total {
                return Err(ChunkViolation::Overrun { mux });
            }
            if n == total {
                return Ok(Part::Whole(bytes));
            }
            let (kept, charged, per_part) = match keep(first) {
                Keep::Discard => (false, 0, false),
                Keep::Free => (true, 0, false),
                Keep::Reserve => (true, total, false),
                Keep::PerPart => {
                    if budget.inbound_overrun(n) {
                        return Ok(Part::OverBudget);
                    }
                    (true, n, true)
                }
            };
            budget.charge_inbound(charged);
            // A call is charged (and a response bounded by a call of ours) for its whole length
            // already: its room is taken at once, so gathering it copies each part once. A
            // stream message grows as it arrives: a peer that declares 64 MiB and sends one
            // part costs one part.
            let room = if per_part {
                total.min(n.saturating_mul(4))
            } else {
                total
            };
            let buf = kept.then(|| {
                let mut buf = BytesMut::with_capacity(room);
                buf.extend_from_slice(&bytes);
                buf
            });
            self.partial.insert(
                mux,
                Partial {
                    buf,
                    received: n,
                    total,
                    charged,
                    per_part,
                },
            );
            return Ok(Part::Pending);
        };
        if p.received + n > p.total {
            return Err(ChunkViolation::Overrun { mux });
        }
        p.received += n;
        if let Some(buf) = &mut p.buf {
            if p.per_part {
                if budget.inbound_overrun(n) {
                    budget.release_inbound(std::mem::take(&mut p.charged));
                    p.buf = None;
                    p.per_part = false;
                    return Ok(Part::OverBudget);
                }
                budget.charge_inbound(n);
                p.charged += n;
            }
            buf.extend_from_slice(&bytes);
        }
        if p.received < p.total {
            return Ok(Part::Pending);
        }
        let Some(p) = self.partial.remove(&mux) else {
            return Ok(Part::Pending);
        };
        budget.release_inbound(p.charged);
        Ok(p.buf.map_or(Part::Pending, |b| Part::Whole(b.freeze())))
    }

    /// The peer abandoned `mux`'s frame in parts.
    ///
    /// # Errors
    /// [`ChunkViolation::UnknownAbort`] when it has none.
    pub(super) fn abort(&mut self, mux: MuxId, budget: &Budget) -> Result<(), ChunkViolation> {
        match self.partial.remove(&mux) {
            Some(p) => {
                budget.release_inbound(p.charged);
                Ok(())
            }
            None => Err(ChunkViolation::UnknownAbort { mux }),
        }
    }

    /// The call of `mux` ended here: its frame in parts, if any, is no longer wanted. Its bytes
    /// are released; its later parts are counted until it ends.
    pub(super) fn discard(&mut self, mux: MuxId, budget: &Budget) {
        if let Some(p) = self.partial.get_mut(&mux) {
            p.buf = None;
            p.per_part = false;
            budget.release_inbound(std::mem::take(&mut p.charged));
        }
    }

    /// Drops everything (the connection closed).
    pub(super) fn clear(&mut self, budget: &Budget) {
        for (_, p) in self.partial.drain() {
            budget.release_inbound(p.charged);
        }
    }
}

/// Checks the header a first part starts with (and, for a call, its fixed fields and subroute
/// length, which the first part must hold); returns the frame's whole length and what it is.
fn first_part(
    mux: MuxId,
    bytes: &[u8],
    max_payload: usize,
    metadata: usize,
) -> Result<(usize, FirstPart), ChunkViolation> {
    let bad = ChunkViolation::BadHeader { mux };
    let Some(h) = bytes.first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(bad);
    };
    let fl = h[1];
    let error = fl & flags::ERROR != 0;
    let (op, fixed) = match Op::from_u8(h[0]) {
        Some(Op::Request) => (Op::Request, 8),
        Some(Op::Open) => (Op::Open, 24),
        Some(Op::Response) => (Op::Response, if error { 2 } else { 0 }),
        Some(Op::Data) => (Op::Data, 4),
        Some(Op::Compressed) => (Op::Compressed, 4),
        _ => return Err(bad),
    };
    let frame_mux = u32::from_be_bytes([h[2], h[3], h[4], h[5]]);
    if frame_mux != mux.0 {
        return Err(ChunkViolation::MuxMismatch {
            mux,
            frame: frame_mux,
        });
    }
    let body = u32::from_be_bytes([h[6], h[7], h[8], h[9]]) as usize;
    let trailer = if fl & flags::CHECKSUM != 0 {
        CHECKSUM_LEN
    } else {
        0
    };
    let subroute = if fl & flags::SUBROUTE != 0 && matches!(op, Op::Request | Op::Open) {
        match bytes.get(FRAME_HEADER_LEN + fixed) {
            Some(len) => 1 + usize::from(*len),
            None => return Err(bad),
        }
    } else {
        0
    };
    // Shorter bodies are the decoder's to reject once the frame is whole.
    let payload = body.saturating_sub(fixed + subroute);
    // With metadata, which sits between the subroute and the payload, the payload is known only
    // once the frame is whole (the decoder then checks it exactly): its bound allows for it.
    let meta = fl & flags::METADATA != 0 && matches!(op, Op::Request | Op::Open);
    let max_payload = max_payload.saturating_add(if meta { metadata } else { 0 });
    if payload > max_payload {
        return Err(ChunkViolation::TooLarge {
            len: payload,
            limit: max_payload,
        });
    }
    Ok((FRAME_HEADER_LEN + body + trailer, FirstPart { op, payload }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode_frame, Frame};

    fn data(mux: u32, len: usize) -> Bytes {
        let mut b = BytesMut::new();
        let frame = Frame::Data {
            mux: MuxId(mux),
            seq: 0,
            payload: Some(Bytes::from(vec![7u8; len])),
        };
        encode_frame(&frame, false, &mut b);
        b.freeze()
    }

    const MAX: usize = 1 << 20;

    #[test]
    fn parts_make_the_frame_and_release_their_charge() {
        let budget = Budget::new(MAX, MAX);
        let mut r = Reassembly::default();
        let frame = data(5, 1000);
        let (a, b) = (frame.slice(..300), frame.slice(300..));
        let mut seen = None;
        let keep = |f| {
            seen = Some(f);
            Keep::PerPart
        };
        assert_eq!(
            r.part(MuxId(5), a, (MAX, 0), &budget, keep),
            Ok(Part::Pending)
        );
        assert_eq!(
            seen,
            Some(FirstPart {
                op: Op::Data,
                payload: 1000
            })
        );
        assert_eq!(budget.snapshot(0).inbound, 300);
        let whole = r.part(MuxId(5), b, (MAX, 0), &budget, |_| unreachable!());
        assert_eq!(whole, Ok(Part::Whole(frame)));
        assert_eq!(budget.snapshot(0).inbound, 0);
        assert!(r.is_empty());
    }

    #[test]
    fn a_reserved_frame_is_charged_whole_at_its_first_part() {
        let budget = Budget::new(MAX, MAX);
        let mut r = Reassembly::default();
        let frame = data(5, 1000);
        let first = r.part(MuxId(5), frame.slice(..20), (MAX, 0), &budget, |_| {
            Keep::Reserve
        });
        assert_eq!(first, Ok(Part::Pending));
        assert_eq!(budget.snapshot(0).inbound, frame.len());
        r.abort(MuxId(5), &budget).expect("a frame in parts");
        assert_eq!(budget.snapshot(0).inbound, 0);
    }

    #[test]
    fn a_first_part_is_checked_before_anything_is_kept() {
        let budget = Budget::new(MAX, MAX);
        let mut r = Reassembly::default();
        let frame = data(5, 1000);
        let keep = |_| Keep::PerPart;
        assert_eq!(
            r.part(MuxId(7), frame.slice(..20), (MAX, 0), &budget, keep),
            Err(ChunkViolation::MuxMismatch {
                mux: MuxId(7),
                frame: 5
            })
        );
        assert_eq!(
            r.part(MuxId(5), frame.slice(..20), (999, 0), &budget, keep),
            Err(ChunkViolation::TooLarge {
                len: 1000,
                limit: 999
            })
        );
        assert_eq!(
            r.part(MuxId(5), frame.slice(..9), (MAX, 0), &budget, keep),
            Err(ChunkViolation::BadHeader { mux: MuxId(5) })
        );
        let mut credit = BytesMut::new();
        let c = Frame::Credit {
            mux: MuxId(5),
            credits: 1,
            bytes: 1,
        };
        encode_frame(&c, false, &mut credit);
        assert_eq!(
            r.part(MuxId(5), credit.freeze(), (MAX, 0), &budget, keep),
            Err(ChunkViolation::BadHeader { mux: MuxId(5) })
        );
        assert!(r.is_empty());
        assert_eq!(budget.snapshot(0).inbound, 0);
    }

    #[test]
    fn overruns_and_aborts_break_the_rules_and_a_stream_over_budget_is_dropped() {
        let budget = Budget::new(600, MAX);
        let mut r = Reassembly::default();
        let frame = data(5, 2000);
        let keep = |_| Keep::PerPart;
        let part = |r: &mut Reassembly, range: std::ops::Range<usize>| {
            r.part(MuxId(5), frame.slice(range), (MAX, 0), &budget, keep)
        };
        assert_eq!(part(&mut r, 0..1000), Ok(Part::Pending));
        assert_eq!(part(&mut r, 1000..1500), Ok(Part::OverBudget));
        assert_eq!(budget.snapshot(0).inbound, 0, "released");
        assert_eq!(
            part(&mut r, 1500..frame.len()),
            Ok(Part::Pending),
            "counted"
        );
        assert!(r.is_empty());
        assert_eq!(
            r.abort(MuxId(5), &budget),
            Err(ChunkViolation::UnknownAbort { mux: MuxId(5) })
        );
        assert_eq!(part(&mut r, 0..100), Ok(Part::Pending));
        assert_eq!(
            part(&mut r, 0..frame.len()),
            Err(ChunkViolation::Overrun { mux: MuxId(5) })
        );
    }

    #[test]
    fn a_discarded_frame_is_counted_to_its_end_and_not_kept() {
        let budget = Budget::new(MAX, MAX);
        let mut r = Reassembly::default();
        let frame = data(5, 1000);
        let first = r.part(MuxId(5), frame.slice(..300), (MAX, 0), &budget, |_| {
            Keep::PerPart
        });
        assert_eq!(first, Ok(Part::Pending));
        r.discard(MuxId(5), &budget);
        assert_eq!(budget.snapshot(0).inbound, 0);
        assert!(r.holds(MuxId(5)));
        let rest = r.part(MuxId(5), frame.slice(300..), (MAX, 0), &budget, |_| {
            Keep::PerPart
        });
        assert_eq!(rest, Ok(Part::Pending));
        assert!(r.is_empty());
    }
}
