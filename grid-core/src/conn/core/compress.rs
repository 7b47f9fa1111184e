//! Unary requests and responses sent LZ4-compressed (`PROTOCOL.md` section 11), both ways: the
//! sender's choice of what to compress, and the receiver's bounded decompression.
//!
//! A `Compressed` frame carries a whole encoded `Request` or `Response` of its mux as one LZ4
//! block, with the block's decompressed length in front. The receiver checks that length against
//! the payload limit before it allocates, decompresses into exactly that much room (a block that
//! would write more, or less, is corrupt), and hands the frame on as if it had come as it is.
//!
//! The sender compresses only what is worth it: a payload at or over the configured threshold
//! whose first 4 KiB shrink by at least a tenth under LZ4 (so random, encrypted or already
//! compressed data costs one small trial, not a pass over the whole payload), and keeps the
//! result only if the whole frame shrank by a tenth too. LZ4 over zstd: see `BENCHMARKS.md`.

use std::fmt;

use bytes::Bytes;

use crate::frame::{Frame, Op, FRAME_HEADER_LEN};
use crate::ids::MuxId;

/// Bytes of the sample the cheap check compresses.
const SAMPLE: usize = 4096;

/// A rule about compressed frames that the peer broke.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompressViolation {
    /// A `Compressed` frame from a peer that did not agree to compression.
    NotAgreed,
    /// A decompressed length over what the payload limit allows.
    TooLarge {
        /// The declared length.
        len: usize,
        /// The largest allowed.
        limit: usize,
    },
    /// A block that does not decompress to exactly its declared length.
    Corrupt {
        /// The mux.
        mux: MuxId,
    },
    /// A block that holds something other than a `Request` or `Response` of its own mux.
    BadInner {
        /// The mux.
        mux: MuxId,
    },
}

impl fmt::Display for CompressViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompressViolation::NotAgreed => {
                f.write_str("a compressed frame from a peer that did not agree to compression")
            }
            CompressViolation::TooLarge { len, limit } => write!(
                f,
                "compressed frame of {len} bytes decompressed exceeds the limit of {limit}"
            ),
            CompressViolation::Corrupt { mux } => {
                write!(f, "compressed frame on mux {mux} does not decompress")
            }
            CompressViolation::BadInner { mux } => write!(
                f,
                "compressed frame on mux {mux} is not a request or response of that mux"
            ),
        }
    }
}

/// Most bytes a compressed frame may decompress to: the payload limit, plus the frame header,
/// the fixed fields and subroute of a `Request`, and `metadata` bytes of metadata at most.
pub(crate) fn max_raw_len(max_payload: usize, metadata: usize) -> usize {
    max_payload
        .saturating_add(FRAME_HEADER_LEN + 8 + 256)
        .saturating_add(metadata)
}

/// True when LZ4 shrinks the first 4 KiB of `payload` by at least a tenth.
pub(crate) fn worth_compressing(payload: &[u8]) -> bool {
    let sample = &payload[..payload.len().min(SAMPLE)];
    !sample.is_empty() && lz4_flex::block::compress(sample).len() * 10 <= sample.len() * 9
}

/// The `Compressed` form of `frame` (a `Request` or `Response`) whose encoding is `encoded`, when
/// it shrinks by at least a tenth.
pub(crate) fn compress(frame: &Frame, encoded: &[u8]) -> Option<Frame> {
    if !matches!(frame, Frame::Request { .. } | Frame::Response { .. }) {
        return None;
    }
    let raw_len = u32::try_from(encoded.len()).ok()?;
    let block = lz4_flex::block::compress(encoded);
    (block.len() * 10 <= encoded.len() * 9).then(|| Frame::Compressed {
        mux: frame.mux(),
        raw_len,
        block: Bytes::from(block),
    })
}

/// Decompresses the block of a `Compressed` frame of `mux` into the encoded frame it holds,
/// within `max_payload`; checks that it is a `Request` or `Response` of `mux` by its header (the
/// rest is the decoder's).
///
/// # Errors
/// The rule the frame broke; the connection must close.
pub(super) fn decompress(
    mux: MuxId,
    raw_len: u32,
    block: &[u8],
    (max_payload, metadata): (usize, usize),
) -> Result<Bytes, CompressViolation> {
    let len = raw_len as usize;
    let limit = max_raw_len(max_payload, metadata);
    if len > limit {
        return Err(CompressViolation::TooLarge { len, limit });
    }
    let mut out = vec![0u8; len];
    match lz4_flex::block::decompress_into(block, &mut out) {
        Ok(n) if n == len => {}
        _ => return Err(CompressViolation::Corrupt { mux }),
    }
    let header_ok = out.first_chunk::<FRAME_HEADER_LEN>().is_some_and(|h| {
        matches!(Op::from_u8(h[0]), Some(Op::Request | Op::Response))
            && u32::from_be_bytes([h[2], h[3], h[4], h[5]]) == mux.0
    });
    if !header_ok {
        return Err(CompressViolation::BadInner { mux });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_frame;
    use bytes::BytesMut;

    fn response(payload: Vec<u8>) -> (Frame, Bytes) {
        let frame = Frame::Response {
            mux: MuxId(2),
            result: Ok(Some(Bytes::from(payload))),
        };
        let mut b = BytesMut::new();
        encode_frame(&frame, false, &mut b);
        (frame, b.freeze())
    }

    #[test]
    fn a_compressible_response_round_trips() {
        let text = b"bucket/dir-0001/object-000042.dat size 1234 etag abcdef ".repeat(200);
        assert!(worth_compressing(&text));
        let (frame, encoded) = response(text);
        let Some(Frame::Compressed {
            mux,
            raw_len,
            block,
        }) = compress(&frame, &encoded)
        else {
            panic!("it shrinks");
        };
        assert!(block.len() < encoded.len() / 4);
        assert_eq!(decompress(mux, raw_len, &block, (1 << 20, 0)), Ok(encoded));
    }

    #[test]
    fn incompressible_data_is_left_as_it_is() {
        let mut random = vec![0u8; 64 << 10];
        fastrand::Rng::with_seed(3).fill(&mut random);
        assert!(!worth_compressing(&random));
        let (frame, encoded) = response(random);
        assert_eq!(compress(&frame, &encoded), None);
    }

    #[test]
    fn bad_blocks_are_violations() {
        let (frame, encoded) = response(b"abcabcabc".repeat(100));
        let Some(Frame::Compressed { block, .. }) = compress(&frame, &encoded) else {
            panic!("it shrinks");
        };
        let n = encoded.len() as u32;
        assert_eq!(
            decompress(MuxId(2), n, &block, (16, 0)),
            Err(CompressViolation::TooLarge {
                len: n as usize,
                limit: max_raw_len(16, 0)
            })
        );
        assert_eq!(
            decompress(MuxId(2), n + 1, &block, (1 << 20, 0)),
            Err(CompressViolation::Corrupt { mux: MuxId(2) })
        );
        assert_eq!(
            decompress(MuxId(2), n, &block[..block.len() / 2], (1 << 20, 0)),
            Err(CompressViolation::Corrupt { mux: MuxId(2) })
        );
        assert_eq!(
            decompress(MuxId(4), n, &block, (1 << 20, 0)),
            Err(CompressViolation::BadInner { mux: MuxId(4) })
        );
    }
}
