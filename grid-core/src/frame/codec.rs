//! The frame codec: pure functions between [`Frame`]s and the bytes of `PROTOCOL.md`.
//!
//! Encoding appends to a [`BytesMut`]; decoding reads a received message as [`Bytes`] and hands out
//! payloads as [`Bytes::slice`]s of it, so no payload is copied. There is no IO and no clock here.
//!
//! Invariants, each checked by `tests/codec_props.rs` and the fuzz target:
//! - **Decoding never panics** and never allocates in proportion to a length read from the input:
//!   a declared length is only ever compared with the bytes actually present. The one allocation,
//!   the `Vec` of [`decode_batch`], is bounded by both `limits.max_frames` and the number of frame
//!   headers the message can physically hold.
//! - **The encoding is canonical.** Every typed field maps to exactly one flag and byte layout, and
//!   the decoder rejects everything else, so a byte string the decoder accepts is exactly what
//!   [`encode_frame`] writes for the frame it decoded to (with the `CHECKSUM` flag as received).
//! - **Errors are deterministic.** The decoder runs its checks in the order listed in
//!   `PROTOCOL.md` ("Decoding order"), so one input always yields the same [`FrameError`].
//!
//! Encoding trusts its caller: a frame the decoder would reject (mux 0 on a call, handler 0, credit
//! 0, ...) is written as given, so scripted-peer tests can send protocol violations. Only what the
//! wire cannot represent is asserted in debug builds; release builds then write something every
//! receiver rejects instead of something it would misread (see [`encode_frame`]).

mod decode;
mod encode;
#[cfg(test)]
mod tests;

pub use decode::{decode_batch, decode_frame_bytes, BatchDecoder};
pub use encode::{
    encode_batch, encode_checked_batch, encode_frame, encoded_len, seal_batch, BatchEncoder,
};
pub(crate) use encode::{
    encode_chunk_header, encode_data_with, encode_item_with, encode_items_head, encode_split,
};

/// Bytes of the code in an error record.
const ERROR_CODE_LEN: usize = 2;
