//! Decoding: one received message to [`Frame`]s, checking every rule of `PROTOCOL.md` in the
//! order its "Decoding order" lists them.

use std::iter::FusedIterator;

use bytes::Bytes;

use super::ERROR_CODE_LEN;
use crate::frame::{
    flags, CancelReason, ErrorCode, ErrorRecord, Frame, FrameError, Limits, Metadata, Op, Payload,
    Route, WireFault, BATCH_HEADER_LEN, CHECKSUM_LEN, FRAME_HEADER_LEN, ITEM_HEADER_LEN,
    PROTOCOL_VERSION,
};
use crate::ids::{HandlerId, MuxId};

/// Flags an op may carry; `CHECKSUM` is allowed on every op.
const fn allowed_flags(op: Op) -> u8 {
    let specific = match op {
        Op::Request => flags::SUBROUTE | flags::METADATA | flags::PAYLOAD,
        Op::Response => flags::PAYLOAD | flags::ERROR,
        Op::Open => flags::END | flags::SUBROUTE | flags::METADATA | flags::PAYLOAD,
        Op::Data => flags::PAYLOAD,
        Op::End => flags::ERROR,
        _ => 0,
    };
    specific | flags::CHECKSUM
}

/// Which mux ids an op may carry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MuxRule {
    /// A call or stream: never the connection.
    Call,
    /// The connection itself: always 0.
    Connection,
    /// Either (pings and pongs).
    Any,
}

const fn mux_rule(op: Op) -> MuxRule {
    match op {
        Op::Request
        | Op::Response
        | Op::Open
        | Op::Ack
        | Op::Data
        | Op::Credit
        | Op::End
        | Op::Error
        | Op::Cancel
        | Op::Chunk
        | Op::ChunkAbort
        | Op::Compressed
        | Op::Items => MuxRule::Call,
        Op::Ping | Op::Pong => MuxRule::Any,
        Op::GoAway
        | Op::Hello
        | Op::Welcome
        | Op::Confirm
        | Op::Ready
        | Op::Reject
        | Op::Handlers
        | Op::ChunkAck => MuxRule::Connection,
    }
}

/// The body length an op requires, known from the header alone: `(minimum, exact)`. When `exact`
/// the body must be exactly `minimum` bytes; otherwise a variable tail (subroute, payload, error
/// message) follows. Request and Open without `PAYLOAD` but with `SUBROUTE` or `METADATA` are
/// not exact here; their end is checked once the subroute and metadata lengths are read.
const fn body_shape(op: Op, fl: u8) -> (usize, bool) {
    let payload = fl & flags::PAYLOAD != 0;
    let subroute = fl & flags::SUBROUTE != 0;
    let metadata = fl & flags::METADATA != 0;
    let error = fl & flags::ERROR != 0;
    // With SUBROUTE, at least its length byte follows; its value is checked while parsing, so that
    // a zero length is reported as the bad field it is. With METADATA, at least its count.
    let sub_min = if subroute { 1 } else { 0 };
    let meta_min = if metadata { 2 } else { 0 };
    let tail = payload || subroute || metadata;
    match op {
        Op::Request => (8 + sub_min + meta_min, !tail),
        Op::Open => (24 + sub_min + meta_min, !tail),
        Op::Response if error => (ERROR_CODE_LEN, false),
        Op::Response => (0, !payload),
        Op::Ack => (0, true),
        Op::Data => (4, !payload),
        Op::Credit => (8, true),
        Op::End if error => (4 + ERROR_CODE_LEN, false),
        Op::End => (4, true),
        Op::Error | Op::GoAway => (ERROR_CODE_LEN, false),
        Op::Cancel => (1, true),
        Op::Ping | Op::Pong => (8, true),
        Op::Hello | Op::Welcome | Op::Confirm | Op::Ready | Op::Reject => (0, false),
        // At least the table message's flags byte.
        Op::Handlers => (1, false),
        // At least one byte of the frame in parts.
        Op::Chunk => (1, false),
        Op::ChunkAbort => (0, true),
        Op::ChunkAck => (4, true),
        // The decompressed length, then at least one byte of block.
        Op::Compressed => (5, false),
        // The first sequence number, then at least one message's length.
        Op::Items => (4 + ITEM_HEADER_LEN, false),
    }
}

/// Decodes one received batch frame by frame.
///
/// [`new`](Self::new) checks the batch header; iterating yields each frame in order. Payloads are
/// [`Bytes::slice`]s of the message. After the declared frames, leftover bytes yield one
/// [`FrameError::TrailingBytes`]. After the first error the iterator yields `None`: a batch is not
/// resynchronised, since nothing after a bad frame can be trusted.
#[derive(Debug, Clone)]
pub struct BatchDecoder {
    msg: Bytes,
    limits: Limits,
    /// Offset of the next frame in `msg`.
    pos: usize,
    /// Frames declared but not yet decoded.
    remaining: usize,
    /// Messages the batch may still hold beyond one per declared frame: a batch holds at most
    /// `limits.max_frames` messages, each frame counting one and each message of an `Items`
    /// frame one (`PROTOCOL.md` section 12), so packing bounds dispatch work as frames do.
    spare_msgs: usize,
    /// Set after an error or after the end was checked: nothing more is yielded.
    done: bool,
}

impl BatchDecoder {
    /// Checks the batch header of `msg`: length at most `limits.max_batch`, version, reserved flags,
    /// a frame count in `1..=limits.max_frames` and, with the batch flag `CHECKSUM`, the batch's
    /// CRC-32 trailer (which the frames then end before).
    ///
    /// # Errors
    ///
    /// [`FrameError::BatchTooLarge`], [`FrameError::Truncated`] (under 4 bytes),
    /// [`FrameError::Version`], [`FrameError::BatchFlags`], [`FrameError::FrameCount`], then
    /// [`FrameError::Truncated`] (no room for the trailer) or [`FrameError::Checksum`], checked in
    /// that order.
    pub fn new(mut msg: Bytes, limits: &Limits) -> Result<BatchDecoder, FrameError> {
        if msg.len() > limits.max_batch {
            return Err(FrameError::BatchTooLarge {
                len: msg.len(),
                limit: limits.max_batch,
            });
        }
        let Some(&[version, batch_flags, c0, c1]) = msg.first_chunk::<BATCH_HEADER_LEN>() else {
            return Err(FrameError::Truncated {
                needed: BATCH_HEADER_LEN,
                available: msg.len(),
            });
        };
        if version != PROTOCOL_VERSION {
            return Err(FrameError::Version(version));
        }
        if batch_flags & !crate::frame::batch_flags::ALL != 0 {
            return Err(FrameError::BatchFlags(batch_flags));
        }
        let count = usize::from(u16::from_be_bytes([c0, c1]));
        if count == 0 || count > limits.max_frames {
            return Err(FrameError::FrameCount {
                count,
                limit: limits.max_frames,
            });
        }
        if batch_flags & crate::frame::batch_flags::CHECKSUM != 0 {
            let Some(end) = msg
                .len()
                .checked_sub(CHECKSUM_LEN)
                .filter(|&e| e >= BATCH_HEADER_LEN)
            else {
                return Err(FrameError::Truncated {
                    needed: BATCH_HEADER_LEN + CHECKSUM_LEN,
                    available: msg.len(),
                });
            };
            let expected = msg
                .get(end..)
                .and_then(|t| t.first_chunk::<4>())
                .map_or(0, |t| u32::from_be_bytes(*t));
            let actual = crc32fast::hash(msg.get(..end).unwrap_or_default());
            if expected != actual {
                return Err(FrameError::Checksum { expected, actual });
            }
            // The frames end where the trailer starts.
            msg.truncate(end);
        }
        Ok(BatchDecoder {
            msg,
            limits: *limits,
            pos: BATCH_HEADER_LEN,
            remaining: count,
            spare_msgs: limits.max_frames - count,
            done: false,
        })
    }

    /// Frames declared by the header and not yet decoded.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Byte offset in the message of the next frame (after the last one: the message length, or
    /// where the trailing bytes start). Lets a caller point at the frame an error came from.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl Iterator for BatchDecoder {
    type Item = Result<Frame, FrameError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.remaining == 0 {
            self.done = true;
            let trailing = self.msg.len().saturating_sub(self.pos);
            return (trailing > 0).then_some(Err(FrameError::TrailingBytes(trailing)));
        }
        // An `Items` frame may hold what the batch has left (checked message by message, as
        // `next_non_data` does, so both report the same error for the same input).
        let limits = Limits {
            max_frames: self.spare_msgs + 1,
            ..self.limits
        };
        let decoded = decode_frame(&self.msg, self.pos, &limits).map_err(|e| match e {
            FrameError::TooManyMessages { .. } => FrameError::TooManyMessages {
                limit: self.limits.max_frames,
            },
            e => e,
        });
        match decoded {
            Ok((frame, len)) => {
                if let Frame::Items { items, .. } = &frame {
                    if let Err(e) = self.charge(items.len()) {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                self.pos += len;
                self.remaining -= 1;
                Some(Ok(frame))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            // Each declared frame, plus possibly one TrailingBytes error; any error ends it early.
            (0, Some(self.remaining + 1))
        }
    }
}

impl FusedIterator for BatchDecoder {}

impl BatchDecoder {
    /// Takes the messages of an `Items` frame of `n` (its own count, one, is already taken by
    /// the header's frame count) from the batch's spare messages.
    fn charge(&mut self, n: usize) -> Result<(), FrameError> {
        match self.spare_msgs.checked_sub(n.saturating_sub(1)) {
            Some(left) => {
                self.spare_msgs = left;
                Ok(())
            }
            None => Err(FrameError::TooManyMessages {
                limit: self.limits.max_frames,
            }),
        }
    }

    /// Like [`next`](Iterator::next), but hands every `Data` frame, and each message of an
    /// `Items` frame, to `on_data` (the frame's op, mux, sequence number, payload) as it goes,
    /// without building a [`Frame`] for it, and returns the next frame of any other op, the
    /// error, or the end. The same checks run in the same order; a reader uses it to move a
    /// stream's messages in runs.
    #[inline]
    pub fn next_non_data(
        &mut self,
        mut on_data: impl FnMut(Op, MuxId, u32, Payload),
    ) -> Option<Result<Frame, FrameError>> {
        while !self.done && self.remaining > 0 {
            let header = match decode_header(&self.msg, self.pos, &self.limits) {
                Ok(h) => h,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if header.op == Op::Items {
                let body = header.body(&self.msg, self.pos, &self.limits);
                let most = self.spare_msgs + 1;
                let items = body
                    .items(most, |seq, item| on_data(Op::Items, header.mux, seq, Some(item)))
                    .and_then(|(_, n)| self.charge(n));
                if let Err(e) = items {
                    self.done = true;
                    return Some(Err(e));
                }
                self.pos += header.frame_len;
                self.remaining -= 1;
                continue;
            }
            if header.op != Op::Data {
                break;
            }
            let mut body = header.body(&self.msg, self.pos, &self.limits);
            let data = body.u32().and_then(|seq| {
                let payload = body.payload(header.flags)?;
                body.finish()?;
                Ok((seq, payload))
            });
            match data {
                Ok((seq, payload)) => {
                    self.pos += header.frame_len;
                    self.remaining -= 1;
                    on_data(Op::Data, header.mux, seq, payload);
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.next()
    }
}

/// Decodes a whole batch into its frames; fails on the first error.
///
/// # Errors
///
/// The first [`FrameError`] of [`BatchDecoder::new`] or of its iteration.
pub fn decode_batch(msg: Bytes, limits: &Limits) -> Result<Vec<Frame>, FrameError> {
    // Bound the Vec by what the message can physically hold, not only by the declared count.
    let room = msg.len().saturating_sub(BATCH_HEADER_LEN) / FRAME_HEADER_LEN;
    let decoder = BatchDecoder::new(msg, limits)?;
    let mut frames = Vec::with_capacity(decoder.remaining().min(room));
    for frame in decoder {
        frames.push(frame?);
    }
    Ok(frames)
}

/// Decodes `msg` as exactly one frame, without a batch header: a frame that travelled in parts
/// (`Chunk` frames), once whole. The same checks run as for a frame of a batch.
///
/// # Errors
///
/// The first [`FrameError`] of the frame; [`FrameError::TrailingBytes`] when bytes follow it.
pub fn decode_frame_bytes(msg: Bytes, limits: &Limits) -> Result<Frame, FrameError> {
    let (frame, len) = decode_frame(&msg, 0, limits)?;
    match msg.len() - len {
        0 => Ok(frame),
        n => Err(FrameError::TrailingBytes(n)),
    }
}

/// Decodes the frame at `msg[pos..]`, returning it and its length on the wire.
#[inline]
fn decode_frame(msg: &Bytes, pos: usize, limits: &Limits) -> Result<(Frame, usize), FrameError> {
    let header = decode_header(msg, pos, limits)?;
    let mut body = header.body(msg, pos, limits);
    let frame = decode_body(header.op, header.flags, header.mux, &mut body)?;
    body.finish()?;
    Ok((frame, header.frame_len))
}

/// A frame's header, checked (steps 4-10 of the decoding order) and its checksum verified.
struct Header {
    op: Op,
    flags: u8,
    mux: MuxId,
    body_len: usize,
    /// Header, body and trailer.
    frame_len: usize,
}

impl Header {
    /// A cursor over the body of the frame at `pos`.
    #[inline]
    fn body<'a>(&self, msg: &'a Bytes, pos: usize, limits: &'a Limits) -> Body<'a> {
        Body {
            msg,
            op: self.op,
            len: self.body_len,
            pos: pos + FRAME_HEADER_LEN,
            end: pos + FRAME_HEADER_LEN + self.body_len,
            limits,
        }
    }
}

/// Checks the header of the frame at `msg[pos..]` and, when flagged, its checksum.
#[inline(always)]
fn decode_header(msg: &Bytes, pos: usize, limits: &Limits) -> Result<Header, FrameError> {
    let input = msg.get(pos..).unwrap_or_default();
    let Some(header) = input.first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(FrameError::Truncated {
            needed: FRAME_HEADER_LEN,
            available: input.len(),
        });
    };
    let [op_byte, fl, m0, m1, m2, m3, l0, l1, l2, l3] = *header;
    let mux = u32::from_be_bytes([m0, m1, m2, m3]);
    let body_len = usize::try_from(u32::from_be_bytes([l0, l1, l2, l3])).unwrap_or(usize::MAX);

    // `Items` is an op only on a connection that agreed to it.
    let op = Op::from_u8(op_byte)
        .filter(|&op| op != Op::Items || limits.items)
        .ok_or(FrameError::UnknownOp(op_byte))?;

    let both = flags::PAYLOAD | flags::ERROR;
    if fl & !allowed_flags(op) != 0 || (op == Op::Response && fl & both == both) {
        return Err(FrameError::BadFlags { op, flags: fl });
    }

    let mux_ok = match mux_rule(op) {
        MuxRule::Call => mux != 0,
        MuxRule::Connection => mux == 0,
        MuxRule::Any => true,
    };
    if !mux_ok {
        return Err(FrameError::BadMux { op, mux });
    }

    let (min, exact) = body_shape(op, fl);
    if body_len < min || (exact && body_len != min) {
        return Err(FrameError::BadLength { op, len: body_len });
    }

    let checksum = fl & flags::CHECKSUM != 0;
    let trailer = if checksum { CHECKSUM_LEN } else { 0 };
    let frame_len = FRAME_HEADER_LEN
        .saturating_add(body_len)
        .saturating_add(trailer);
    if input.len() < frame_len {
        return Err(FrameError::Truncated {
            needed: frame_len,
            available: input.len(),
        });
    }
    let body_end = FRAME_HEADER_LEN + body_len;

    if checksum {
        let covered = input.get(..body_end).unwrap_or_default();
        let expected = input
            .get(body_end..frame_len)
            .and_then(|t| t.first_chunk::<4>())
            .map_or(0, |t| u32::from_be_bytes(*t));
        let actual = crc32fast::hash(covered);
        if expected != actual {
            return Err(FrameError::Checksum { expected, actual });
        }
    }

    Ok(Header {
        op,
        flags: fl,
        mux: MuxId(mux),
        body_len,
        frame_len,
    })
}

/// A cursor over one frame's body inside the message. Reads past the body's end are errors, never
/// panics, although the shape check before parsing already rules most of them out.
struct Body<'a> {
    msg: &'a Bytes,
    op: Op,
    /// Declared body length, for errors.
    len: usize,
    pos: usize,
    end: usize,
    limits: &'a Limits,
}

impl Body<'_> {
    fn bad_length(&self) -> FrameError {
        FrameError::BadLength {
            op: self.op,
            len: self.len,
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let next = self.pos.checked_add(N).filter(|&n| n <= self.end);
        let bytes = next
            .and_then(|n| self.msg.get(self.pos..n))
            .and_then(|b| b.first_chunk::<N>())
            .copied()
            .ok_or_else(|| self.bad_length())?;
        self.pos += N;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        self.take::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        self.take().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        self.take().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        self.take().map(u64::from_be_bytes)
    }

    /// The rest of the body, as a slice of the message (never copied: its taker lets go of it
    /// at once), bounded only by the message.
    fn part(&mut self) -> Bytes {
        let bytes = self.msg.slice(self.pos..self.end);
        self.pos = self.end;
        bytes
    }

    /// The rest of the body, within the payload limit, as a slice of the message even with
    /// `copy_payloads`: for what its taker reads and lets go of at once.
    fn transient(&mut self) -> Result<Bytes, FrameError> {
        self.rest_within_limit()?;
        Ok(self.part())
    }

    /// Checks that the rest of the body is within the payload limit.
    #[inline]
    fn rest_within_limit(&self) -> Result<(), FrameError> {
        match self.end - self.pos {
            len if len > self.limits.max_payload => Err(FrameError::PayloadTooLarge {
                len,
                limit: self.limits.max_payload,
            }),
            _ => Ok(()),
        }
    }

    /// `range` of the message, kept: a slice of it, or with `copy_payloads` a copy.
    #[inline]
    fn cut(&self, range: std::ops::Range<usize>) -> Bytes {
        if self.limits.copy_payloads {
            copy_out(self.msg, range)
        } else {
            self.msg.slice(range)
        }
    }

    /// The rest of the body, as a slice of the message (see [`cut`](Self::cut)), within the
    /// payload limit.
    #[inline]
    fn rest(&mut self) -> Result<Bytes, FrameError> {
        self.rest_within_limit()?;
        let bytes = self.cut(self.pos..self.end);
        self.pos = self.end;
        Ok(bytes)
    }

    /// The body of an `Items` frame: hands each message to `each` with its sequence number, in
    /// order, as it is read, and returns the first one's and how many there were. On an error
    /// the messages before the bad one were handed on, as the frames before a bad one of a
    /// batch are. More than `most` messages is [`FrameError::TooManyMessages`], found before
    /// the one past `most` is handed on.
    #[inline]
    fn items(
        mut self,
        most: usize,
        mut each: impl FnMut(u32, Bytes),
    ) -> Result<(u32, usize), FrameError> {
        let first = self.u32()?;
        let mut seq = first;
        let mut n = 0;
        let max = self.limits.max_payload;
        while self.pos < self.end {
            if n == most {
                return Err(FrameError::TooManyMessages {
                    limit: self.limits.max_frames,
                });
            }
            n += 1;
            let len = usize::from(self.u16()?);
            if len > max {
                return Err(FrameError::PayloadTooLarge { len, limit: max });
            }
            if self.end - self.pos < len {
                return Err(self.bad_length());
            }
            each(seq, self.cut(self.pos..self.pos + len));
            self.pos += len;
            seq = seq.wrapping_add(1);
        }
        Ok((first, n))
    }

    /// The payload when `PAYLOAD` is set; otherwise absent (and the body must end here).
    #[inline]
    fn payload(&mut self, fl: u8) -> Result<Payload, FrameError> {
        if fl & flags::PAYLOAD != 0 {
            self.rest().map(Some)
        } else {
            Ok(None)
        }
    }

    fn record(&mut self) -> Result<ErrorRecord, FrameError> {
        let code = ErrorCode::from_u16(self.u16()?);
        let message = self.rest()?;
        Ok(ErrorRecord { code, message })
    }

    fn handler(&mut self) -> Result<HandlerId, FrameError> {
        match self.u32()? {
            0 => Err(self.bad_field("handler")),
            id => Ok(HandlerId(id)),
        }
    }

    /// The subroute when `SUBROUTE` is set: a length byte in 1..=255, then that many bytes.
    fn subroute(&mut self, fl: u8) -> Result<Option<Bytes>, FrameError> {
        if fl & flags::SUBROUTE == 0 {
            return Ok(None);
        }
        let len = usize::from(self.u8()?);
        if len == 0 {
            return Err(self.bad_field("subroute"));
        }
        if self.end - self.pos < len {
            return Err(self.bad_length());
        }
        let name = self.cut(self.pos..self.pos + len);
        self.pos += len;
        Ok(Some(name))
    }

    /// The metadata block when `METADATA` is set (see [`Metadata`]); otherwise none.
    fn metadata(&mut self, fl: u8) -> Result<Metadata, FrameError> {
        if fl & flags::METADATA == 0 {
            return Ok(Metadata::new());
        }
        let block = self.msg.slice(self.pos..self.end);
        match Metadata::split_wire(&block) {
            Ok((metadata, used)) => {
                if used > self.limits.max_payload {
                    return Err(FrameError::PayloadTooLarge {
                        len: used,
                        limit: self.limits.max_payload,
                    });
                }
                self.pos += used;
                if self.limits.copy_payloads {
                    // The block kept is the metadata alone, copied: read again, it is the same.
                    let copied = copy_out(&block, 0..used);
                    return Metadata::split_wire(&copied)
                        .map(|(m, _)| m)
                        .map_err(|_| self.bad_field("metadata"));
                }
                Ok(metadata)
            }
            Err(WireFault::Length) => Err(self.bad_length()),
            Err(WireFault::Field) => Err(self.bad_field("metadata")),
        }
    }

    fn bad_field(&self, field: &'static str) -> FrameError {
        FrameError::BadField { op: self.op, field }
    }

    /// Every body byte must have been read.
    fn finish(&self) -> Result<(), FrameError> {
        if self.pos == self.end {
            Ok(())
        } else {
            Err(self.bad_length())
        }
    }
}

/// `range` of `msg` as bytes of their own, which keep nothing else alive; empty ones hold none.
#[cold]
fn copy_out(msg: &Bytes, range: std::ops::Range<usize>) -> Bytes {
    match msg.get(range) {
        Some([]) | None => Bytes::new(),
        Some(bytes) => Bytes::copy_from_slice(bytes),
    }
}

#[inline]
fn decode_body(op: Op, fl: u8, mux: MuxId, b: &mut Body<'_>) -> Result<Frame, FrameError> {
    Ok(match op {
        Op::Request => {
            let handler = b.handler()?;
            let deadline_ms = b.u32()?;
            let subroute = b.subroute(fl)?;
            let metadata = b.metadata(fl)?;
            Frame::Request {
                mux,
                route: Route { handler, subroute },
                deadline_ms,
                metadata,
                payload: b.payload(fl)?,
            }
        }
        Op::Response => {
            let result = if fl & flags::ERROR != 0 {
                Err(b.record()?)
            } else {
                Ok(b.payload(fl)?)
            };
            Frame::Response { mux, result }
        }
        Op::Open => {
            let handler = b.handler()?;
            let deadline_ms = b.u32()?;
            let in_cap = b.u32()?;
            let out_cap = b.u32()?;
            let input = fl & flags::END == 0;
            if !input && in_cap != 0 {
                return Err(b.bad_field("in_cap"));
            }
            let in_window = b.u32()?;
            let out_window = b.u32()?;
            if !input && in_window != 0 {
                return Err(b.bad_field("in_window"));
            }
            let subroute = b.subroute(fl)?;
            let metadata = b.metadata(fl)?;
            Frame::Open {
                mux,
                route: Route { handler, subroute },
                deadline_ms,
                in_cap,
                out_cap,
                in_window,
                out_window,
                input,
                metadata,
                payload: b.payload(fl)?,
            }
        }
        Op::Ack => Frame::Ack { mux },
        Op::Data => Frame::Data {
            mux,
            seq: b.u32()?,
            payload: b.payload(fl)?,
        },
        Op::Credit => {
            let credits = b.u32()?;
            let bytes = b.u32()?;
            if credits == 0 && bytes == 0 {
                return Err(b.bad_field("credits"));
            }
            Frame::Credit {
                mux,
                credits,
                bytes,
            }
        }
        Op::End => {
            let seq = b.u32()?;
            let error = if fl & flags::ERROR != 0 {
                Some(b.record()?)
            } else {
                None
            };
            Frame::End { mux, seq, error }
        }
        Op::Error => Frame::Error {
            mux,
            error: b.record()?,
        },
        Op::Cancel => match CancelReason::from_u8(b.u8()?) {
            Some(reason) => Frame::Cancel { mux, reason },
            None => return Err(b.bad_field("reason")),
        },
        Op::Ping => Frame::Ping {
            mux,
            nonce: b.u64()?,
        },
        Op::Pong => Frame::Pong {
            mux,
            nonce: b.u64()?,
        },
        Op::GoAway => Frame::GoAway { error: b.record()? },
        // Read and dropped at once: a slice, even with `copy_payloads`.
        Op::Handlers => Frame::Handlers {
            update: b.transient()?,
        },
        // A part is bounded by the batch it came in; the whole frame's length is checked
        // against the payload limit when its first part arrives.
        Op::Chunk => Frame::Chunk {
            mux,
            bytes: b.part(),
        },
        Op::ChunkAbort => Frame::ChunkAbort { mux },
        Op::Compressed => match b.u32()? {
            0 => return Err(b.bad_field("raw_len")),
            // Decompressed and dropped at once: a slice, even with `copy_payloads`.
            raw_len => Frame::Compressed {
                mux,
                raw_len,
                block: b.transient()?,
            },
        },
        Op::ChunkAck => match b.u32()? {
            0 => return Err(b.bad_field("bytes")),
            bytes => Frame::ChunkAck { bytes },
        },
        Op::Items => {
            // At most a batch's worth: a frame alone cannot hold more (`BatchDecoder` then
            // counts them against the rest of its batch).
            let mut items = Vec::new();
            let (seq, _) = Body { ..*b }.items(b.limits.max_frames, |_, item| items.push(item))?;
            b.pos = b.end;
            Frame::Items { mux, seq, items }
        }
        Op::Hello | Op::Welcome | Op::Confirm | Op::Ready | Op::Reject => Frame::Handshake {
            op,
            payload: b.rest()?,
        },
    })
}
