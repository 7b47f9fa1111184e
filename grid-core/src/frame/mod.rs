//! Frames: the unit of the wire protocol, and the pure codec that turns them into bytes and back.
//!
//! One WebSocket binary message carries a *batch* of one or more frames (see `PROTOCOL.md`). This
//! module owns the in-memory form ([`Frame`]), the limits a decoder enforces ([`Limits`]) and the
//! typed decode errors ([`FrameError`]). It does no IO and never panics on input: every byte
//! sequence either decodes into frames or yields a `FrameError`.
//!
//! Payloads are [`bytes::Bytes`] slices of the received message, so decoding copies no payload.

mod codec;
mod metadata;

pub use codec::{
    decode_batch, decode_frame_bytes, encode_batch, encode_checked_batch, encode_frame,
    encoded_len, seal_batch, BatchDecoder, BatchEncoder,
};
pub(crate) use codec::{
    encode_chunk_header, encode_data_with, encode_item_with, encode_items_head, encode_split,
};

pub(crate) use metadata::WireFault;
pub use metadata::{
    Metadata, MetadataError, MetadataLimits, MAX_METADATA_KEY_LEN, MAX_METADATA_VALUE_LEN,
};

use bytes::Bytes;

use crate::ids::{HandlerId, MuxId};

/// The protocol version carried in every batch header. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u8 = 1;

/// Bytes of the batch header: version, flags, frame count.
pub const BATCH_HEADER_LEN: usize = 4;

/// Bytes of the fixed frame header: op, flags, mux id, body length.
pub const FRAME_HEADER_LEN: usize = 10;

/// Bytes of the optional checksum trailer.
pub const CHECKSUM_LEN: usize = 4;

/// Most frames in one batch. Bounds the work (and the `Vec` of frames) one message can demand.
pub const MAX_FRAMES_PER_BATCH: usize = 1024;

/// Bytes before each message of an `Items` frame: its length, a u16.
pub const ITEM_HEADER_LEN: usize = 2;

/// Longest message an `Items` frame can carry.
pub const MAX_ITEM_LEN: usize = u16::MAX as usize;

/// Longest subroute name in bytes; its length travels in one byte. Bounds per-call routing memory.
pub const MAX_SUBROUTE_LEN: usize = 255;

/// Largest default payload: 64 MiB. A peer cannot make us allocate more for one frame.
pub const DEFAULT_MAX_PAYLOAD: usize = 64 << 20;

/// Limits a decoder enforces. Each one names the attack it bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one frame. Stops a peer from making us buffer unbounded memory for one
    /// frame (MinIO's reader allocated whatever length the header claimed).
    pub max_payload: usize,
    /// Largest batch (one WebSocket message) in bytes. Stops a peer from pinning memory with one
    /// message of many frames.
    pub max_batch: usize,
    /// Most frames in one batch. Stops a peer from making one message cost unbounded dispatch work.
    pub max_frames: usize,
    /// `Items` frames are accepted (the connection agreed to them, `PROTOCOL.md` section 12).
    /// Without it an `Items` frame is an [`FrameError::UnknownOp`], as it is to a node of the
    /// version before items.
    pub items: bool,
    /// Payloads, error messages, subroutes, metadata and packed messages are copied out of the
    /// received message instead of sliced from it. A slice keeps the whole message alive: a
    /// reader sets this while the messages its slices keep alive are over its bound, so that a
    /// few bytes a peer makes it hold cannot keep a batch of up to `max_batch` bytes.
    pub copy_payloads: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::for_payload(DEFAULT_MAX_PAYLOAD)
    }
}

impl Limits {
    /// Limits that admit payloads up to `max_payload` bytes, with room in a batch for one such frame
    /// plus 1 MiB of smaller frames.
    pub const fn for_payload(max_payload: usize) -> Limits {
        Limits {
            max_payload,
            max_batch: max_payload + (1 << 20),
            max_frames: MAX_FRAMES_PER_BATCH,
            items: false,
            copy_payloads: false,
        }
    }
}

/// A payload that can be absent, empty or non-empty; the three stay distinct on the wire.
pub type Payload = Option<Bytes>;

/// Frame operation codes. The numeric values are the wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// Unary call: caller → callee.
    Request = 1,
    /// Unary reply: callee → caller (success, or an error record with the `ERROR` flag).
    Response = 2,
    /// Open a stream: caller → callee, carries both capacities, both byte windows and the
    /// deadline.
    Open = 3,
    /// Accept a stream: callee → caller.
    Ack = 4,
    /// One stream message, either direction.
    Data = 5,
    /// Grant send credits (messages and bytes) on a stream, either direction.
    Credit = 6,
    /// End of one direction of a stream (with an error record when the `ERROR` flag is set).
    End = 7,
    /// The mux could not be served or was aborted by the transport: callee → caller.
    Error = 8,
    /// The caller gave up: caller → callee, unary or stream.
    Cancel = 9,
    /// Liveness probe, connection level (mux 0) or stream level.
    Ping = 10,
    /// Reply to a ping, echoing its nonce.
    Pong = 11,
    /// Graceful close of the whole connection, with a reason.
    GoAway = 12,
    /// Handshake: dialer → acceptor, first message.
    Hello = 13,
    /// Handshake: acceptor → dialer, accepts the hello and proves the acceptor.
    Welcome = 14,
    /// Handshake: dialer → acceptor, proves the dialer.
    Confirm = 15,
    /// Handshake: acceptor → dialer, the connection is live.
    Ready = 16,
    /// Handshake: either side refuses, with a reason.
    Reject = 17,
    /// Routes the sender serves, added to what it announced (a handler-table message,
    /// `PROTOCOL.md` section 9; see the `table` module). Connection level, either side.
    Handlers = 18,
    /// The next bytes of one large frame sent in parts (`PROTOCOL.md` section 10), on the mux
    /// that frame belongs to. Only to a peer that agreed to chunks in the handshake.
    Chunk = 19,
    /// The frame whose parts were in flight on this mux will not be finished: the receiver
    /// drops what it gathered.
    ChunkAbort = 20,
    /// The receiver of parts has read this many more bytes of them: the sender may have that
    /// many more in flight (`PROTOCOL.md` section 10.4). Connection level.
    ChunkAck = 21,
    /// A `Request` or `Response` of this mux, LZ4-compressed (`PROTOCOL.md` section 11). Only to
    /// a peer that agreed to compression in the handshake.
    Compressed = 22,
    /// Messages of one stream direction packed back to back, numbered on from a first sequence
    /// number (`PROTOCOL.md` section 12): what a run of small `Data` frames says, in fewer
    /// bytes. Only to a peer that agreed to items in the handshake.
    Items = 23,
}

impl Op {
    /// Parses a wire op code.
    pub const fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Open,
            4 => Op::Ack,
            5 => Op::Data,
            6 => Op::Credit,
            7 => Op::End,
            8 => Op::Error,
            9 => Op::Cancel,
            10 => Op::Ping,
            11 => Op::Pong,
            12 => Op::GoAway,
            13 => Op::Hello,
            14 => Op::Welcome,
            15 => Op::Confirm,
            16 => Op::Ready,
            17 => Op::Reject,
            18 => Op::Handlers,
            19 => Op::Chunk,
            20 => Op::ChunkAbort,
            21 => Op::ChunkAck,
            22 => Op::Compressed,
            23 => Op::Items,
            _ => return None,
        })
    }

    /// True for the handshake ops (`Hello` ..= `Reject`), the only ops a `Frame::Handshake`
    /// carries.
    pub const fn is_handshake(self) -> bool {
        matches!(
            self,
            Op::Hello | Op::Welcome | Op::Confirm | Op::Ready | Op::Reject
        )
    }
}

/// Batch flag bits (the second byte of a batch). Bits not listed here must be zero.
pub mod batch_flags {
    /// A CRC-32 of the whole batch (header and frames) follows the last frame: the integrity
    /// check of links without TLS, one pass over a whole message instead of one per frame.
    pub const CHECKSUM: u8 = 0x01;
    /// Every defined bit.
    pub const ALL: u8 = CHECKSUM;
}

/// Frame flag bits. Bits not listed here must be zero.
pub mod flags {
    /// On `Open` only: the caller has no input stream (and `in_cap` is 0). A stream direction
    /// ends with an `End` frame, not a flag.
    pub const END: u8 = 0x01;
    /// The payload is an error record (`Response`, `End`).
    pub const ERROR: u8 = 0x02;
    /// A payload is present (possibly empty). Without it the payload is absent.
    pub const PAYLOAD: u8 = 0x04;
    /// A subroute name is present (`Request`, `Open`).
    pub const SUBROUTE: u8 = 0x08;
    /// A CRC-32 trailer follows the body.
    pub const CHECKSUM: u8 = 0x10;
    /// A metadata block is present (`Request`, `Open`). Sent only to a peer that announced
    /// metadata limits in its handshake: an older node refuses the flag as reserved.
    pub const METADATA: u8 = 0x20;
    /// Every defined bit.
    pub const ALL: u8 = END | ERROR | PAYLOAD | SUBROUTE | CHECKSUM | METADATA;
}

/// Why a mux failed, as carried in error records. Values are wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The handler returned an error; the message is the application's encoded error value.
    Application,
    /// No handler is registered under this id.
    UnknownHandler,
    /// The handler exists but not under this subroute.
    UnknownSubroute,
    /// The handler panicked.
    Panic,
    /// The call's deadline passed on the callee.
    Deadline,
    /// The callee cancelled the call.
    Cancelled,
    /// A payload or capacity over the callee's limits.
    TooLarge,
    /// The callee refuses new calls for now (too many in flight).
    Overloaded,
    /// The peer broke the protocol on this mux (sequence gap, credit overflow, ...).
    Protocol,
    /// The callee is shutting down.
    ShuttingDown,
    /// Any other failure inside the callee.
    Internal,
    /// A code this version does not know; kept so it can be reported.
    Other(u16),
}

impl ErrorCode {
    /// The wire value.
    pub const fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Application => 1,
            ErrorCode::UnknownHandler => 2,
            ErrorCode::UnknownSubroute => 3,
            ErrorCode::Panic => 4,
            ErrorCode::Deadline => 5,
            ErrorCode::Cancelled => 6,
            ErrorCode::TooLarge => 7,
            ErrorCode::Overloaded => 8,
            ErrorCode::Protocol => 9,
            ErrorCode::ShuttingDown => 10,
            ErrorCode::Internal => 11,
            ErrorCode::Other(v) => v,
        }
    }

    /// Parses a wire value; unknown values are kept as [`ErrorCode::Other`].
    pub const fn from_u16(v: u16) -> ErrorCode {
        match v {
            1 => ErrorCode::Application,
            2 => ErrorCode::UnknownHandler,
            3 => ErrorCode::UnknownSubroute,
            4 => ErrorCode::Panic,
            5 => ErrorCode::Deadline,
            6 => ErrorCode::Cancelled,
            7 => ErrorCode::TooLarge,
            8 => ErrorCode::Overloaded,
            9 => ErrorCode::Protocol,
            10 => ErrorCode::ShuttingDown,
            11 => ErrorCode::Internal,
            v => ErrorCode::Other(v),
        }
    }
}

/// An error as it travels on the wire: a code and an opaque message (UTF-8 text, or for
/// [`ErrorCode::Application`] the application's encoded error value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorRecord {
    /// What kind of failure.
    pub code: ErrorCode,
    /// Details: text, or the application's encoded error.
    pub message: Bytes,
}

impl ErrorRecord {
    /// An error record with a text message.
    pub fn text(code: ErrorCode, message: impl Into<String>) -> ErrorRecord {
        ErrorRecord {
            code,
            message: Bytes::from(message.into()),
        }
    }
}

/// Why a caller cancelled a call. Values are wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelReason {
    /// The caller dropped the call or cancelled it explicitly.
    CallerGaveUp = 1,
    /// The caller's deadline passed.
    Deadline = 2,
    /// The calling node is shutting down.
    ShuttingDown = 3,
}

impl CancelReason {
    /// Parses a wire value.
    pub const fn from_u8(v: u8) -> Option<CancelReason> {
        match v {
            1 => Some(CancelReason::CallerGaveUp),
            2 => Some(CancelReason::Deadline),
            3 => Some(CancelReason::ShuttingDown),
            _ => None,
        }
    }
}

/// A call's destination inside a handler: a handler id plus an optional subroute name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// The handler.
    pub handler: HandlerId,
    /// The subroute name (at most [`MAX_SUBROUTE_LEN`] bytes), if any.
    pub subroute: Option<Bytes>,
}

/// One frame, fully typed: each variant holds exactly the fields its op carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Unary call.
    Request {
        /// The call.
        mux: MuxId,
        /// Where it goes.
        route: Route,
        /// Milliseconds the caller will wait, relative to receipt; 0 = none.
        deadline_ms: u32,
        /// The call's metadata (empty: none, and no `METADATA` flag).
        metadata: Metadata,
        /// The request.
        payload: Payload,
    },
    /// Unary reply.
    Response {
        /// The call.
        mux: MuxId,
        /// The response payload, or the handler's error.
        result: Result<Payload, ErrorRecord>,
    },
    /// Open a stream.
    Open {
        /// The stream.
        mux: MuxId,
        /// Where it goes.
        route: Route,
        /// Milliseconds the caller will wait, relative to receipt; 0 = none.
        deadline_ms: u32,
        /// Caller → callee messages the callee must buffer (the caller's initial send credits).
        /// 0 together with `input == false`.
        in_cap: u32,
        /// Callee → caller messages the caller buffers (the callee's initial send credits).
        out_cap: u32,
        /// Caller → callee bytes the callee must buffer (the caller's initial byte window; see
        /// `PROTOCOL.md` section 4, "Flow control"). 0 together with `input == false`.
        in_window: u32,
        /// Callee → caller bytes the caller buffers (the callee's initial byte window).
        out_window: u32,
        /// Whether the caller will send a stream of messages after the initial payload.
        input: bool,
        /// The stream's metadata (empty: none, and no `METADATA` flag).
        metadata: Metadata,
        /// The initial payload.
        payload: Payload,
    },
    /// Accept a stream.
    Ack {
        /// The stream.
        mux: MuxId,
    },
    /// One stream message.
    Data {
        /// The stream.
        mux: MuxId,
        /// Position of this message in its direction, from 0.
        seq: u32,
        /// The message.
        payload: Payload,
    },
    /// More send credits: messages and bytes the receiver of this frame may send again.
    Credit {
        /// The stream.
        mux: MuxId,
        /// How many more messages the receiver of this frame may send (at least 1).
        credits: u32,
        /// How many payload bytes of its window the receiver of this frame gets back.
        bytes: u32,
    },
    /// End of one direction of a stream.
    End {
        /// The stream.
        mux: MuxId,
        /// How many `Data` frames preceded it in this direction.
        seq: u32,
        /// `Some` when the direction ended with an error after `seq` messages.
        error: Option<ErrorRecord>,
    },
    /// The mux failed in the transport.
    Error {
        /// The call.
        mux: MuxId,
        /// What went wrong.
        error: ErrorRecord,
    },
    /// The caller gave up.
    Cancel {
        /// The call.
        mux: MuxId,
        /// Why.
        reason: CancelReason,
    },
    /// Liveness probe.
    Ping {
        /// 0 for the connection, else the stream.
        mux: MuxId,
        /// Echoed in the pong.
        nonce: u64,
    },
    /// Liveness reply.
    Pong {
        /// As in the ping.
        mux: MuxId,
        /// As in the ping.
        nonce: u64,
    },
    /// Graceful close.
    GoAway {
        /// Why, as an error record.
        error: ErrorRecord,
    },
    /// Routes the sender serves, added to the handler table it announced.
    Handlers {
        /// A handler-table message (`PROTOCOL.md` section 9), checked by [`crate::table`]: the
        /// codec checks only its length.
        update: Bytes,
    },
    /// The next bytes of one large encoded frame of this mux (`PROTOCOL.md` section 10): the
    /// first chunk of a message starts with that frame's header, whose body length says where
    /// the message ends.
    Chunk {
        /// The mux of the frame in parts.
        mux: MuxId,
        /// At least one byte of the encoded frame.
        bytes: Bytes,
    },
    /// The frame in parts on this mux is abandoned (its call was cancelled mid-transfer).
    ChunkAbort {
        /// The mux.
        mux: MuxId,
    },
    /// The sender of this frame has read `bytes` more bytes of parts (the bodies of `Chunk`
    /// frames): the receiver of it may have that many more in flight.
    ChunkAck {
        /// Bytes read since the last ack (at least 1).
        bytes: u32,
    },
    /// A `Request` or `Response` of this mux, encoded as usual, then compressed as one LZ4 block
    /// (`PROTOCOL.md` section 11).
    Compressed {
        /// The mux of the compressed frame.
        mux: MuxId,
        /// Length of the encoded frame once decompressed (at least 1).
        raw_len: u32,
        /// The LZ4 block.
        block: Bytes,
    },
    /// Messages `seq`, `seq + 1`, ... of one stream direction, each as a `Data` frame of it
    /// with a payload would carry them (`PROTOCOL.md` section 12).
    Items {
        /// The stream.
        mux: MuxId,
        /// The first message's sequence number.
        seq: u32,
        /// The messages, at least one, each under 64 KiB.
        items: Vec<Bytes>,
    },
    /// A handshake message; the payload is a msgpack map defined in `PROTOCOL.md`.
    Handshake {
        /// One of `Hello`, `Welcome`, `Confirm`, `Ready`, `Reject`.
        op: Op,
        /// The encoded handshake record.
        payload: Bytes,
    },
}

impl Frame {
    /// The op this frame is sent with.
    pub fn op(&self) -> Op {
        match self {
            Frame::Request { .. } => Op::Request,
            Frame::Response { .. } => Op::Response,
            Frame::Open { .. } => Op::Open,
            Frame::Ack { .. } => Op::Ack,
            Frame::Data { .. } => Op::Data,
            Frame::Credit { .. } => Op::Credit,
            Frame::End { .. } => Op::End,
            Frame::Error { .. } => Op::Error,
            Frame::Cancel { .. } => Op::Cancel,
            Frame::Ping { .. } => Op::Ping,
            Frame::Pong { .. } => Op::Pong,
            Frame::GoAway { .. } => Op::GoAway,
            Frame::Handlers { .. } => Op::Handlers,
            Frame::Chunk { .. } => Op::Chunk,
            Frame::ChunkAbort { .. } => Op::ChunkAbort,
            Frame::ChunkAck { .. } => Op::ChunkAck,
            Frame::Compressed { .. } => Op::Compressed,
            Frame::Items { .. } => Op::Items,
            Frame::Handshake { op, .. } => *op,
        }
    }

    /// The mux this frame belongs to ([`MuxId::CONNECTION`] for connection-level frames).
    pub fn mux(&self) -> MuxId {
        match self {
            Frame::Request { mux, .. }
            | Frame::Response { mux, .. }
            | Frame::Open { mux, .. }
            | Frame::Ack { mux }
            | Frame::Data { mux, .. }
            | Frame::Credit { mux, .. }
            | Frame::End { mux, .. }
            | Frame::Error { mux, .. }
            | Frame::Cancel { mux, .. }
            | Frame::Ping { mux, .. }
            | Frame::Pong { mux, .. }
            | Frame::Chunk { mux, .. }
            | Frame::ChunkAbort { mux }
            | Frame::Compressed { mux, .. }
            | Frame::Items { mux, .. } => *mux,
            Frame::GoAway { .. }
            | Frame::Handlers { .. }
            | Frame::ChunkAck { .. }
            | Frame::Handshake { .. } => MuxId::CONNECTION,
        }
    }
}

/// Why bytes could not be decoded into frames. Any of these is a protocol violation by the peer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer bytes than a header or a declared length needs.
    #[error("truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes required, counted from the start of the batch (for the batch header) or of the
        /// frame (for a frame header, or a frame's body and checksum trailer).
        needed: usize,
        /// Bytes present from that same start to the end of the message.
        available: usize,
    },
    /// A batch header with a version we do not speak.
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// A batch header with a reserved flag bit set.
    #[error("reserved batch flags {0:#04x} set")]
    BatchFlags(u8),
    /// A batch with zero frames or more than the limit.
    #[error("bad frame count {count} (limit {limit})")]
    FrameCount {
        /// Declared count.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A batch holding more messages than its limit of frames, each message of an `Items`
    /// frame counting as one frame would (`PROTOCOL.md` section 12).
    #[error("more than {limit} messages in one batch")]
    TooManyMessages {
        /// The limit (`Limits::max_frames`).
        limit: usize,
    },
    /// Bytes left over after the declared frames.
    #[error("{0} trailing bytes after the last frame")]
    TrailingBytes(usize),
    /// A batch larger than the limit.
    #[error("batch of {len} bytes exceeds limit {limit}")]
    BatchTooLarge {
        /// Batch length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An op code we do not know.
    #[error("unknown op {0}")]
    UnknownOp(u8),
    /// Flag bits that are undefined, or not allowed on this op.
    #[error("flags {flags:#04x} not allowed on {op:?}")]
    BadFlags {
        /// The op.
        op: Op,
        /// The flags.
        flags: u8,
    },
    /// A body length that does not match what the op requires.
    #[error("{op:?} body length {len} is invalid")]
    BadLength {
        /// The op.
        op: Op,
        /// The declared body length.
        len: usize,
    },
    /// A payload over the configured limit.
    #[error("payload of {len} bytes exceeds limit {limit}")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A checksum that does not match the frame's bytes.
    #[error("checksum mismatch: frame says {expected:#010x}, bytes give {actual:#010x}")]
    Checksum {
        /// The trailer's value.
        expected: u32,
        /// Computed over the frame.
        actual: u32,
    },
    /// A mux id that is not allowed for this op (0 on a mux op, non-zero on a connection op).
    #[error("{op:?} with invalid mux id {mux}")]
    BadMux {
        /// The op.
        op: Op,
        /// The id.
        mux: u32,
    },
    /// A field value outside its domain (unknown cancel reason, zero handler id, ...).
    #[error("{op:?}: invalid {field}")]
    BadField {
        /// The op.
        op: Op,
        /// Which field.
        field: &'static str,
    },
}
