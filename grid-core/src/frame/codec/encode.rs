//! Encoding: [`Frame`]s to bytes, one frame ([`encode_frame`]) or one batch ([`BatchEncoder`]).

use bytes::{BufMut, Bytes, BytesMut};

use super::ERROR_CODE_LEN;
use crate::frame::{
    flags, ErrorRecord, Frame, Metadata, Op, Payload, Route, BATCH_HEADER_LEN, CHECKSUM_LEN,
    FRAME_HEADER_LEN, ITEM_HEADER_LEN, MAX_FRAMES_PER_BATCH, MAX_ITEM_LEN, MAX_SUBROUTE_LEN,
    PROTOCOL_VERSION,
};
use crate::ids::MuxId;

/// The subroute bytes as written. A name the one-byte length cannot carry (over
/// [`MAX_SUBROUTE_LEN`]) is written as length 0 with no bytes, which every receiver rejects;
/// truncating it instead could route the call to another subroute.
fn wire_subroute(route: &Route) -> Option<&[u8]> {
    route.subroute.as_ref().map(|s| {
        debug_assert!(
            s.len() <= MAX_SUBROUTE_LEN,
            "subroute of {} bytes exceeds {MAX_SUBROUTE_LEN}",
            s.len()
        );
        if s.len() <= MAX_SUBROUTE_LEN {
            &s[..]
        } else {
            &[][..]
        }
    })
}

fn subroute_len(route: &Route) -> usize {
    wire_subroute(route).map_or(0, |s| 1 + s.len())
}

fn payload_len(payload: &Payload) -> usize {
    payload.as_ref().map_or(0, Bytes::len)
}

fn record_len(record: &ErrorRecord) -> usize {
    ERROR_CODE_LEN + record.message.len()
}

/// The op byte as written. A [`Frame::Handshake`] whose op is not a handshake op is written with
/// op 0, which every receiver rejects, rather than as the frame its op names.
fn wire_op(frame: &Frame) -> u8 {
    match frame {
        Frame::Handshake { op, .. } => {
            debug_assert!(
                op.is_handshake(),
                "Frame::Handshake with non-handshake op {op:?}"
            );
            if op.is_handshake() {
                *op as u8
            } else {
                0
            }
        }
        Frame::Items { items, .. } => {
            let fits = !items.is_empty() && items.iter().all(|i| i.len() <= MAX_ITEM_LEN);
            debug_assert!(fits, "an Items frame empty or with a message over {MAX_ITEM_LEN} bytes");
            if fits {
                Op::Items as u8
            } else {
                0
            }
        }
        other => other.op() as u8,
    }
}

/// The flags a frame's typed fields imply (without `CHECKSUM`).
fn frame_flags(frame: &Frame) -> u8 {
    fn payload_flag(p: &Payload) -> u8 {
        if p.is_some() {
            flags::PAYLOAD
        } else {
            0
        }
    }
    fn subroute_flag(r: &Route) -> u8 {
        if r.subroute.is_some() {
            flags::SUBROUTE
        } else {
            0
        }
    }
    fn metadata_flag(m: &Metadata) -> u8 {
        if m.is_empty() {
            0
        } else {
            flags::METADATA
        }
    }
    match frame {
        Frame::Request {
            route,
            metadata,
            payload,
            ..
        } => subroute_flag(route) | metadata_flag(metadata) | payload_flag(payload),
        Frame::Response { result: Ok(p), .. } => payload_flag(p),
        Frame::Response { result: Err(_), .. } => flags::ERROR,
        Frame::Open {
            route,
            input,
            metadata,
            payload,
            ..
        } => {
            let end = if *input { 0 } else { flags::END };
            end | subroute_flag(route) | metadata_flag(metadata) | payload_flag(payload)
        }
        Frame::Data { payload, .. } => payload_flag(payload),
        Frame::End { error, .. } => {
            if error.is_some() {
                flags::ERROR
            } else {
                0
            }
        }
        Frame::Ack { .. }
        | Frame::Credit { .. }
        | Frame::Error { .. }
        | Frame::Cancel { .. }
        | Frame::Ping { .. }
        | Frame::Pong { .. }
        | Frame::GoAway { .. }
        | Frame::Handlers { .. }
        | Frame::Chunk { .. }
        | Frame::ChunkAbort { .. }
        | Frame::ChunkAck { .. }
        | Frame::Compressed { .. }
        | Frame::Items { .. }
        | Frame::Handshake { .. } => 0,
    }
}

fn body_len(frame: &Frame) -> usize {
    match frame {
        Frame::Request {
            route,
            metadata,
            payload,
            ..
        } => 8 + subroute_len(route) + metadata.encoded_len() + payload_len(payload),
        Frame::Response { result: Ok(p), .. } => payload_len(p),
        Frame::Response { result: Err(e), .. } => record_len(e),
        Frame::Open {
            route,
            metadata,
            payload,
            ..
        } => 24 + subroute_len(route) + metadata.encoded_len() + payload_len(payload),
        Frame::Ack { .. } => 0,
        Frame::Data { payload, .. } => 4 + payload_len(payload),
        Frame::Credit { .. } => 8,
        Frame::End { error, .. } => 4 + error.as_ref().map_or(0, record_len),
        Frame::Error { error, .. } | Frame::GoAway { error } => record_len(error),
        Frame::Cancel { .. } => 1,
        Frame::Ping { .. } | Frame::Pong { .. } => 8,
        Frame::Handlers { update } => update.len(),
        Frame::Chunk { bytes, .. } => bytes.len(),
        Frame::ChunkAbort { .. } => 0,
        Frame::ChunkAck { .. } => 4,
        Frame::Compressed { block, .. } => 4 + block.len(),
        Frame::Items { items, .. } => 4 + items.iter().map(|i| ITEM_HEADER_LEN + i.len()).sum::<usize>(),
        Frame::Handshake { payload, .. } => payload.len(),
    }
}

/// Bytes [`encode_frame`] appends for `frame`: header, body and, with `checksum`, the trailer.
pub fn encoded_len(frame: &Frame, checksum: bool) -> usize {
    FRAME_HEADER_LEN + body_len(frame) + if checksum { CHECKSUM_LEN } else { 0 }
}

/// Appends one frame to `dst`: the 10-byte header, the body and, with `checksum`, a CRC-32 of both.
///
/// Exactly [`encoded_len`]`(frame, checksum)` bytes are appended (reserved up front).
///
/// The frame is written as given, even one the decoder rejects, so tests can play a misbehaving
/// peer. Three things the wire cannot represent are caller bugs, asserted in debug builds; release
/// builds write them so that every receiver rejects the frame instead of misreading it:
/// - a subroute over 255 bytes is written as subroute length 0 (rejected as a bad field);
/// - a [`Frame::Handshake`] with a non-handshake op, or a [`Frame::Items`] with no message or
///   one over [`MAX_ITEM_LEN`] bytes, is written with op 0 (rejected as unknown);
/// - a body over `u32::MAX` bytes is written with body length `u32::MAX` (no receiver admits it).
pub fn encode_frame(frame: &Frame, checksum: bool, dst: &mut BytesMut) {
    let body = body_len(frame);
    let checksum_len = if checksum { CHECKSUM_LEN } else { 0 };
    dst.reserve(FRAME_HEADER_LEN + body + checksum_len);
    let start = dst.len();

    dst.put_u8(wire_op(frame));
    let checksum_flag = if checksum { flags::CHECKSUM } else { 0 };
    dst.put_u8(frame_flags(frame) | checksum_flag);
    dst.put_u32(frame.mux().0);
    debug_assert!(u32::try_from(body).is_ok(), "frame body of {body} bytes");
    dst.put_u32(u32::try_from(body).unwrap_or(u32::MAX));
    encode_body(frame, dst, true);
    debug_assert_eq!(dst.len() - start, FRAME_HEADER_LEN + body);

    if checksum {
        let crc = crc32fast::hash(&dst[start..]);
        dst.put_u32(crc);
    }
}

/// Encodes `frame` (without a checksum trailer) as two pieces whose concatenation is exactly what
/// [`encode_frame`] writes: everything up to its payload (or a compressed frame's block), and
/// that payload itself, shared rather than copied. A large frame sent in parts is queued so, and
/// its payload is copied once, part by part, into the batches that carry it.
pub(crate) fn encode_split(frame: &Frame) -> (Bytes, Bytes) {
    let tail = match frame {
        Frame::Request { payload, .. }
        | Frame::Open { payload, .. }
        | Frame::Data { payload, .. }
        | Frame::Response {
            result: Ok(payload),
            ..
        } => payload.clone().unwrap_or_default(),
        Frame::Compressed { block, .. } => block.clone(),
        _ => Bytes::new(),
    };
    let body = body_len(frame);
    let mut head = BytesMut::with_capacity(FRAME_HEADER_LEN + body - tail.len());
    head.put_u8(wire_op(frame));
    head.put_u8(frame_flags(frame));
    head.put_u32(frame.mux().0);
    head.put_u32(u32::try_from(body).unwrap_or(u32::MAX));
    encode_body(frame, &mut head, false);
    debug_assert_eq!(head.len() + tail.len(), FRAME_HEADER_LEN + body);
    (head.freeze(), tail)
}

/// Appends one `Data` frame with a present payload that `payload` writes straight into `dst`
/// (a producer encodes its message into the outgoing batch, with no buffer of its own): the
/// header with the body length patched in once the payload is written, and, with `checksum`,
/// the trailer. Returns the payload's length.
///
/// # Errors
/// Whatever `payload` returns; `dst` may then hold part of a frame, which the caller cuts off.
pub(crate) fn encode_data_with<E>(
    mux: MuxId,
    seq: u32,
    checksum: bool,
    dst: &mut BytesMut,
    payload: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<usize, E> {
    let start = dst.len();
    dst.reserve(FRAME_HEADER_LEN + 4 + CHECKSUM_LEN);
    dst.put_u8(Op::Data as u8);
    let checksum_flag = if checksum { flags::CHECKSUM } else { 0 };
    dst.put_u8(flags::PAYLOAD | checksum_flag);
    dst.put_u32(mux.0);
    dst.put_u32(0); // body length, patched below
    dst.put_u32(seq);
    let payload_start = dst.len();
    payload(dst)?;
    let len = dst.len() - payload_start;
    let body = 4 + len;
    debug_assert!(u32::try_from(body).is_ok(), "frame body of {body} bytes");
    let body = u32::try_from(body).unwrap_or(u32::MAX).to_be_bytes();
    dst[start + 6..start + FRAME_HEADER_LEN].copy_from_slice(&body);
    if checksum {
        let crc = crc32fast::hash(&dst[start..]);
        dst.put_u32(crc);
    }
    Ok(len)
}

fn put_payload(payload: &Payload, dst: &mut BytesMut, tail: bool) {
    if let (Some(p), true) = (payload, tail) {
        dst.put_slice(p);
    }
}

fn put_subroute(route: &Route, dst: &mut BytesMut) {
    if let Some(s) = wire_subroute(route) {
        // `wire_subroute` never returns more than MAX_SUBROUTE_LEN (255) bytes.
        dst.put_u8(u8::try_from(s.len()).unwrap_or(0));
        dst.put_slice(s);
    }
}

fn put_record(record: &ErrorRecord, dst: &mut BytesMut) {
    dst.put_u16(record.code.to_u16());
    dst.put_slice(&record.message);
}

/// Writes the body of `frame`; without `tail`, everything but its last variable part (the
/// payload, or a compressed frame's block), which [`encode_split`] hands back as it is.
fn encode_body(frame: &Frame, dst: &mut BytesMut, tail: bool) {
    match frame {
        Frame::Request {
            route,
            deadline_ms,
            metadata,
            payload,
            ..
        } => {
            dst.put_u32(route.handler.0);
            dst.put_u32(*deadline_ms);
            put_subroute(route, dst);
            dst.put_slice(metadata.wire());
            put_payload(payload, dst, tail);
        }
        Frame::Response { result, .. } => match result {
            Ok(payload) => put_payload(payload, dst, tail),
            Err(record) => put_record(record, dst),
        },
        Frame::Open {
            route,
            deadline_ms,
            in_cap,
            out_cap,
            in_window,
            out_window,
            metadata,
            payload,
            ..
        } => {
            dst.put_u32(route.handler.0);
            dst.put_u32(*deadline_ms);
            dst.put_u32(*in_cap);
            dst.put_u32(*out_cap);
            dst.put_u32(*in_window);
            dst.put_u32(*out_window);
            put_subroute(route, dst);
            dst.put_slice(metadata.wire());
            put_payload(payload, dst, tail);
        }
        Frame::Ack { .. } => {}
        Frame::Data { seq, payload, .. } => {
            dst.put_u32(*seq);
            put_payload(payload, dst, tail);
        }
        Frame::Credit { credits, bytes, .. } => {
            dst.put_u32(*credits);
            dst.put_u32(*bytes);
        }
        Frame::End { seq, error, .. } => {
            dst.put_u32(*seq);
            if let Some(record) = error {
                put_record(record, dst);
            }
        }
        Frame::Error { error, .. } | Frame::GoAway { error } => put_record(error, dst),
        Frame::Cancel { reason, .. } => dst.put_u8(*reason as u8),
        Frame::Ping { nonce, .. } | Frame::Pong { nonce, .. } => dst.put_u64(*nonce),
        Frame::Handlers { update } => dst.put_slice(update),
        Frame::Chunk { bytes, .. } => dst.put_slice(bytes),
        Frame::ChunkAbort { .. } => {}
        Frame::ChunkAck { bytes } => dst.put_u32(*bytes),
        Frame::Compressed { raw_len, block, .. } => {
            dst.put_u32(*raw_len);
            if tail {
                dst.put_slice(block);
            }
        }
        Frame::Items { seq, items, .. } => {
            dst.put_u32(*seq);
            for item in items {
                // One too long makes the op 0 (see `wire_op`): the length is then never read.
                dst.put_u16(u16::try_from(item.len()).unwrap_or(u16::MAX));
                dst.put_slice(item);
            }
        }
        Frame::Handshake { payload, .. } => dst.put_slice(payload),
    }
}

/// Appends the head of an `Items` frame of `mux` whose first message is `seq`, with no message
/// yet: [`encode_item_with`] adds them.
pub(crate) fn encode_items_head(mux: MuxId, seq: u32, dst: &mut BytesMut) {
    dst.reserve(ITEMS_HEAD_LEN + ITEM_HEADER_LEN);
    dst.put_u8(Op::Items as u8);
    dst.put_u8(0);
    dst.put_u32(mux.0);
    dst.put_u32(4); // body length: the sequence number so far
    dst.put_u32(seq);
}

/// Bytes of an `Items` frame before its first message: the header and the first sequence
/// number.
pub(crate) const ITEMS_HEAD_LEN: usize = FRAME_HEADER_LEN + 4;

/// Appends one message of an `Items` frame to `dst`: its length, then what `payload` writes.
/// Returns the payload's length; the caller patches the frame's body length once it keeps the
/// message. A payload over [`MAX_ITEM_LEN`] keeps the length 0: the caller must not keep it
/// in the frame.
///
/// # Errors
/// Whatever `payload` returns; `dst` may then hold part of the message, which the caller cuts
/// off.
#[inline(always)]
pub(crate) fn encode_item_with<E>(
    dst: &mut BytesMut,
    payload: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<usize, E> {
    let at = dst.len();
    dst.put_u16(0); // the message's length, patched below
    payload(dst)?;
    let len = dst.len() - at - ITEM_HEADER_LEN;
    if let Ok(wire_len) = u16::try_from(len) {
        dst[at..at + ITEM_HEADER_LEN].copy_from_slice(&wire_len.to_be_bytes());
    }
    Ok(len)
}

/// Appends the header of a `Chunk` frame of `mux` whose body (`len` bytes of a larger encoded
/// frame) the caller appends next: the writer copies each part straight from the queued frame.
pub(crate) fn encode_chunk_header(mux: MuxId, len: usize, dst: &mut BytesMut) {
    dst.reserve(FRAME_HEADER_LEN + len);
    dst.put_u8(Op::Chunk as u8);
    dst.put_u8(0);
    dst.put_u32(mux.0);
    debug_assert!(u32::try_from(len).is_ok(), "chunk of {len} bytes");
    dst.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// Builds one batch, i.e. one WebSocket message: the 4-byte batch header, then frames back to back.
///
/// The connection writer packs frames that producers already encoded with [`encode_frame`] using
/// [`push_encoded`](Self::push_encoded); [`push`](Self::push) encodes in place.
///
/// The caller keeps the batch within the peer's limits: at most [`MAX_FRAMES_PER_BATCH`] frames
/// (asserted in debug builds), and as many messages, each message of an `Items` frame counting
/// one (`PROTOCOL.md` section 12), and at most `max_batch` bytes ([`len`](Self::len) tells). A
/// batch of more than 65535 frames, which the `u16` count cannot carry, is finished with count
/// 0, and an empty batch also has count 0: every receiver rejects both.
#[derive(Debug, Clone)]
pub struct BatchEncoder {
    buf: BytesMut,
    count: usize,
}

impl Default for BatchEncoder {
    fn default() -> Self {
        BatchEncoder::new()
    }
}

impl BatchEncoder {
    /// An empty batch.
    pub fn new() -> BatchEncoder {
        BatchEncoder::with_capacity(0)
    }

    /// An empty batch with room for `bytes` bytes of frames (beyond the batch header).
    pub fn with_capacity(bytes: usize) -> BatchEncoder {
        let mut buf = BytesMut::with_capacity(BATCH_HEADER_LEN + bytes);
        buf.put_u8(PROTOCOL_VERSION);
        buf.put_u8(0); // batch flags: reserved
        buf.put_u16(0); // count: patched by `finish`
        BatchEncoder { buf, count: 0 }
    }

    /// Encodes `frame` into the batch (see [`encode_frame`]).
    pub fn push(&mut self, frame: &Frame, checksum: bool) {
        self.note_frame();
        encode_frame(frame, checksum, &mut self.buf);
    }

    /// Appends one frame already encoded by [`encode_frame`]. `frame_bytes` must be exactly one
    /// frame (checked in debug builds); the bytes are copied as they are.
    pub fn push_encoded(&mut self, frame_bytes: &[u8]) {
        debug_assert!(
            is_one_frame(frame_bytes),
            "push_encoded: {} bytes are not exactly one encoded frame",
            frame_bytes.len()
        );
        self.note_frame();
        self.buf.extend_from_slice(frame_bytes);
    }

    fn note_frame(&mut self) {
        self.count += 1;
        debug_assert!(
            self.count <= MAX_FRAMES_PER_BATCH,
            "batch exceeds {MAX_FRAMES_PER_BATCH} frames"
        );
    }

    /// Frames pushed so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Bytes of the batch so far, including its 4-byte header: the length of the message
    /// [`finish`](Self::finish) would return, to compare with the peer's `max_batch`.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no frame has been pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished message. The batch should hold at least one frame (asserted in debug builds).
    pub fn finish(self) -> Bytes {
        self.finish_with(false)
    }

    /// The finished message with, when `checksum`, the batch flag `CHECKSUM` and the batch's
    /// CRC-32 trailer (see [`seal_batch`]).
    pub fn finish_with(mut self, checksum: bool) -> Bytes {
        debug_assert!(self.count > 0, "finishing an empty batch");
        seal_batch(&mut self.buf, self.count, checksum);
        self.buf.freeze()
    }
}

/// Finishes a batch built in `buf`: writes the batch header over the [`BATCH_HEADER_LEN`] bytes
/// the buffer starts with (version, flags, `count`) and, with `checksum`, sets the batch flag
/// `CHECKSUM` and appends a CRC-32 of everything before it. A count the `u16` cannot carry is
/// written as 0, which every receiver rejects.
pub fn seal_batch(buf: &mut BytesMut, count: usize, checksum: bool) {
    let count = u16::try_from(count).unwrap_or(0).to_be_bytes();
    let flags = if checksum {
        crate::frame::batch_flags::CHECKSUM
    } else {
        0
    };
    if let Some(header) = buf.get_mut(..BATCH_HEADER_LEN) {
        header.copy_from_slice(&[PROTOCOL_VERSION, flags, count[0], count[1]]);
    }
    if checksum {
        let crc = crc32fast::hash(buf);
        buf.put_u32(crc);
    }
}

/// True when `bytes` hold exactly one frame according to its header's body length and flags.
fn is_one_frame(bytes: &[u8]) -> bool {
    let Some(h) = bytes.first_chunk::<FRAME_HEADER_LEN>() else {
        return false;
    };
    let body = u32::from_be_bytes([h[6], h[7], h[8], h[9]]) as usize;
    let trailer = if h[1] & flags::CHECKSUM != 0 {
        CHECKSUM_LEN
    } else {
        0
    };
    bytes.len() == FRAME_HEADER_LEN + body + trailer
}

/// Encodes `frames` as one batch. See [`BatchEncoder`] for the caller's limits.
pub fn encode_batch(frames: &[Frame], checksum: bool) -> Bytes {
    let bytes = frames.iter().map(|f| encoded_len(f, checksum)).sum();
    let mut batch = BatchEncoder::with_capacity(bytes);
    for frame in frames {
        batch.push(frame, checksum);
    }
    batch.finish()
}

/// Encodes `frames` as one batch with a batch checksum (and no checksum per frame).
pub fn encode_checked_batch(frames: &[Frame]) -> Bytes {
    let bytes: usize = frames.iter().map(|f| encoded_len(f, false)).sum();
    let mut batch = BatchEncoder::with_capacity(bytes + CHECKSUM_LEN);
    for frame in frames {
        batch.push(frame, false);
    }
    batch.finish_with(true)
}
