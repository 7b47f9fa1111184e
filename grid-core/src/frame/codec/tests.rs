//! One small test per decode error path, plus the encoder's bookkeeping. Round trips over
//! arbitrary frames live in `tests/codec_props.rs`, byte-exact vectors in
//! `tests/protocol_vectors.rs`.

#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};

use super::{decode_batch, encode_batch, encode_frame, encoded_len, BatchDecoder, BatchEncoder};
use crate::frame::{
    flags, ErrorCode, ErrorRecord, Frame, FrameError, Limits, Metadata, Op, Route, BATCH_HEADER_LEN,
    PROTOCOL_VERSION,
};
use crate::ids::{HandlerId, MuxId};

const LIMITS: Limits = Limits::for_payload(64);

/// One raw frame: header fields as given, then `body`, no checksum.
fn raw(op: u8, fl: u8, mux: u32, body: &[u8]) -> Vec<u8> {
    let mut v = vec![op, fl];
    v.extend_from_slice(&mux.to_be_bytes());
    v.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A batch header declaring `count` frames, then `bytes`.
fn batch_of(count: u16, bytes: &[u8]) -> Bytes {
    let mut v = vec![PROTOCOL_VERSION, 0];
    v.extend_from_slice(&count.to_be_bytes());
    v.extend_from_slice(bytes);
    Bytes::from(v)
}

/// Decodes `frame` as the only frame of a batch.
fn decode_one(frame: &[u8]) -> Result<Frame, FrameError> {
    let mut frames = decode_batch(batch_of(1, frame), &LIMITS)?;
    assert_eq!(frames.len(), 1);
    Ok(frames.remove(0))
}

fn bad_field(op: Op, field: &'static str) -> Result<Frame, FrameError> {
    Err(FrameError::BadField { op, field })
}

fn bad_length(op: Op, len: usize) -> Result<Frame, FrameError> {
    Err(FrameError::BadLength { op, len })
}

fn ping(mux: u32) -> Vec<u8> {
    raw(Op::Ping as u8, 0, mux, &7u64.to_be_bytes())
}

/// handler 7, deadline 0
const CALL: [u8; 8] = [0, 0, 0, 7, 0, 0, 0, 0];

#[test]
fn valid_raw_frame_decodes() {
    assert_eq!(
        decode_one(&ping(0)),
        Ok(Frame::Ping {
            mux: MuxId(0),
            nonce: 7
        })
    );
}

// --- batch header ---------------------------------------------------------------------------

#[test]
fn batch_over_limit_is_rejected_before_parsing() {
    let msg = Bytes::from(vec![0xff; LIMITS.max_batch + 1]);
    assert_eq!(
        BatchDecoder::new(msg, &LIMITS).err(),
        Some(FrameError::BatchTooLarge {
            len: LIMITS.max_batch + 1,
            limit: LIMITS.max_batch
        })
    );
}

#[test]
fn batch_header_truncated() {
    let err = BatchDecoder::new(Bytes::from_static(&[1, 0, 0]), &LIMITS).err();
    assert_eq!(
        err,
        Some(FrameError::Truncated {
            needed: 4,
            available: 3
        })
    );
}

#[test]
fn batch_version_other_than_1() {
    let err = BatchDecoder::new(Bytes::from_static(&[2, 0, 0, 1]), &LIMITS).err();
    assert_eq!(err, Some(FrameError::Version(2)));
}

#[test]
fn batch_flags_reserved() {
    let err = BatchDecoder::new(Bytes::from_static(&[1, 0x80, 0, 1]), &LIMITS).err();
    assert_eq!(err, Some(FrameError::BatchFlags(0x80)));
}

#[test]
fn batch_checksum_is_checked_before_any_frame() {
    let ping = Frame::Ping {
        mux: MuxId(0),
        nonce: 9,
    };
    let good = super::encode_checked_batch(std::slice::from_ref(&ping));
    assert_eq!(good[1], crate::frame::batch_flags::CHECKSUM);
    assert_eq!(decode_batch(good.clone(), &LIMITS), Ok(vec![ping]));
    let mut bad = good.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        decode_batch(Bytes::from(bad), &LIMITS),
        Err(FrameError::Checksum { .. })
    ));
    // A garbage frame under a wrong checksum is reported as the checksum, not as the frame.
    let mut garbage = good.to_vec();
    garbage[4] = 0xee;
    assert!(matches!(
        decode_batch(Bytes::from(garbage), &LIMITS),
        Err(FrameError::Checksum { .. })
    ));
}

#[test]
fn batch_checksum_needs_room_for_its_trailer() {
    let err = BatchDecoder::new(Bytes::from_static(&[1, 1, 0, 1, 0, 0, 0]), &LIMITS).err();
    assert_eq!(
        err,
        Some(FrameError::Truncated {
            needed: 8,
            available: 7
        })
    );
}

#[test]
fn batch_count_zero() {
    let err = BatchDecoder::new(batch_of(0, &[]), &LIMITS).err();
    assert_eq!(
        err,
        Some(FrameError::FrameCount {
            count: 0,
            limit: 1024
        })
    );
}

#[test]
fn batch_count_over_limit() {
    let limits = Limits {
        max_frames: 2,
        ..LIMITS
    };
    let err = BatchDecoder::new(batch_of(3, &[]), &limits).err();
    assert_eq!(err, Some(FrameError::FrameCount { count: 3, limit: 2 }));
}

#[test]
fn batch_trailing_bytes_then_none() {
    let mut bytes = ping(0);
    bytes.extend_from_slice(&[9, 9]);
    let mut dec = BatchDecoder::new(batch_of(1, &bytes), &LIMITS).unwrap();
    assert!(matches!(dec.next(), Some(Ok(Frame::Ping { .. }))));
    assert_eq!(dec.next(), Some(Err(FrameError::TrailingBytes(2))));
    assert_eq!(dec.next(), None);
    assert_eq!(
        decode_batch(batch_of(1, &bytes), &LIMITS),
        Err(FrameError::TrailingBytes(2))
    );
}

#[test]
fn batch_missing_frame_is_truncated_and_ends_iteration() {
    let mut dec = BatchDecoder::new(batch_of(3, &ping(0)), &LIMITS).unwrap();
    assert!(matches!(dec.next(), Some(Ok(_))));
    assert_eq!(
        dec.next(),
        Some(Err(FrameError::Truncated {
            needed: 10,
            available: 0
        }))
    );
    assert_eq!(dec.next(), None);
    assert_eq!(dec.next(), None);
}

// --- frame header -------------------------------------------------------------------------

#[test]
fn frame_header_truncated() {
    assert_eq!(
        decode_one(&ping(0)[..9]),
        Err(FrameError::Truncated {
            needed: 10,
            available: 9
        })
    );
}

#[test]
fn frame_body_truncated() {
    let mut frame = ping(0);
    frame.pop();
    assert_eq!(
        decode_one(&frame),
        Err(FrameError::Truncated {
            needed: 18,
            available: 17
        })
    );
}

#[test]
fn frame_huge_declared_body_is_truncated_not_allocated() {
    let mut frame = raw(Op::Hello as u8, 0, 0, &[]);
    frame[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        decode_one(&frame),
        Err(FrameError::Truncated { available: 10, .. })
    ));
}

#[test]
fn unknown_op() {
    assert_eq!(
        decode_one(&raw(0, 0, 0, &[])),
        Err(FrameError::UnknownOp(0))
    );
    assert_eq!(
        decode_one(&raw(23, 0, 0, &[])),
        Err(FrameError::UnknownOp(23))
    );
}

#[test]
fn handlers_frames_are_connection_level_with_at_least_a_flags_byte() {
    let frame = Frame::Handlers {
        update: Bytes::from_static(&[1, 0, 0, 1, 0, 0, 0, 9]),
    };
    let bytes = encode_batch(std::slice::from_ref(&frame), false);
    assert_eq!(decode_batch(bytes, &LIMITS), Ok(vec![frame]));
    let op = Op::Handlers as u8;
    assert_eq!(
        decode_one(&raw(op, 0, 3, &[0])),
        Err(FrameError::BadMux {
            op: Op::Handlers,
            mux: 3
        })
    );
    assert_eq!(decode_one(&raw(op, 0, 0, &[])), bad_length(Op::Handlers, 0));
    assert_eq!(
        decode_one(&raw(op, flags::PAYLOAD, 0, &[0])),
        Err(FrameError::BadFlags {
            op: Op::Handlers,
            flags: flags::PAYLOAD
        })
    );
    assert_eq!(
        decode_one(&raw(op, 0, 0, &[0; 65])),
        Err(FrameError::PayloadTooLarge { len: 65, limit: 64 })
    );
}

#[test]
fn undefined_flag_bit() {
    let frame = raw(Op::Ping as u8, 0x20, 0, &[0; 8]);
    assert_eq!(
        decode_one(&frame),
        Err(FrameError::BadFlags {
            op: Op::Ping,
            flags: 0x20
        })
    );
}

#[test]
fn flag_not_allowed_on_op() {
    let frame = raw(Op::Data as u8, flags::SUBROUTE, 1, &[0; 4]);
    assert_eq!(
        decode_one(&frame),
        Err(FrameError::BadFlags {
            op: Op::Data,
            flags: flags::SUBROUTE
        })
    );
}

#[test]
fn response_with_payload_and_error() {
    let fl = flags::PAYLOAD | flags::ERROR;
    let frame = raw(Op::Response as u8, fl, 1, &[0, 1]);
    assert_eq!(
        decode_one(&frame),
        Err(FrameError::BadFlags {
            op: Op::Response,
            flags: fl
        })
    );
}

#[test]
fn mux_zero_on_call_op() {
    let frame = raw(Op::Ack as u8, 0, 0, &[]);
    assert_eq!(
        decode_one(&frame),
        Err(FrameError::BadMux {
            op: Op::Ack,
            mux: 0
        })
    );
}

#[test]
fn mux_non_zero_on_goaway() {
    let frame = raw(Op::GoAway as u8, 0, 3, &[0, 10]);
    assert_eq!(
        decode_one(&frame),
        Err(FrameError::BadMux {
            op: Op::GoAway,
            mux: 3
        })
    );
}

#[test]
fn mux_non_zero_on_handshake() {
    let frame = raw(Op::Hello as u8, 0, 1, &[0x80]);
    assert_eq!(
        decode_one(&frame),
        Err(FrameError::BadMux {
            op: Op::Hello,
            mux: 1
        })
    );
}

#[test]
fn ping_on_a_stream_is_allowed() {
    assert!(matches!(
        decode_one(&ping(5)),
        Ok(Frame::Ping { mux: MuxId(5), .. })
    ));
}

// --- body length --------------------------------------------------------------------------

#[test]
fn fixed_body_too_short() {
    let frame = raw(Op::Ping as u8, 0, 0, &[0; 7]);
    assert_eq!(decode_one(&frame), bad_length(Op::Ping, 7));
}

#[test]
fn fixed_body_too_long() {
    let frame = raw(Op::Ack as u8, 0, 1, &[0]);
    assert_eq!(decode_one(&frame), bad_length(Op::Ack, 1));
}

#[test]
fn bytes_after_fields_without_payload_flag() {
    let frame = raw(Op::Data as u8, 0, 1, &[0; 5]);
    assert_eq!(decode_one(&frame), bad_length(Op::Data, 5));
}

#[test]
fn response_without_flags_has_empty_body() {
    let frame = raw(Op::Response as u8, 0, 1, &[0]);
    assert_eq!(decode_one(&frame), bad_length(Op::Response, 1));
}

#[test]
fn error_record_without_code() {
    let frame = raw(Op::Error as u8, 0, 1, &[0]);
    assert_eq!(decode_one(&frame), bad_length(Op::Error, 1));
}

#[test]
fn end_error_record_without_code() {
    let frame = raw(Op::End as u8, flags::ERROR, 1, &[0, 0, 0, 0, 0]);
    assert_eq!(decode_one(&frame), bad_length(Op::End, 5));
}

#[test]
fn subroute_overruns_body() {
    let mut body = CALL.to_vec();
    body.extend_from_slice(&[3, b'a', b'b']);
    let frame = raw(Op::Request as u8, flags::SUBROUTE, 1, &body);
    assert_eq!(decode_one(&frame), bad_length(Op::Request, 11));
}

#[test]
fn bytes_after_subroute_without_payload_flag() {
    let mut body = CALL.to_vec();
    body.extend_from_slice(&[1, b'a', b'x']);
    let frame = raw(Op::Request as u8, flags::SUBROUTE, 1, &body);
    assert_eq!(decode_one(&frame), bad_length(Op::Request, 11));
}

// --- limits -------------------------------------------------------------------------------

#[test]
fn payload_over_limit() {
    let mut body = 0u32.to_be_bytes().to_vec();
    body.extend_from_slice(&[0; 65]);
    let frame = raw(Op::Data as u8, flags::PAYLOAD, 1, &body);
    assert_eq!(
        decode_one(&frame),
        Err(FrameError::PayloadTooLarge { len: 65, limit: 64 })
    );
}

#[test]
fn payload_at_limit() {
    let frame = raw(Op::Response as u8, flags::PAYLOAD, 1, &[0; 64]);
    assert!(decode_one(&frame).is_ok());
}

#[test]
fn error_message_over_limit() {
    let mut body = vec![0, 11];
    body.extend_from_slice(&[b'x'; 65]);
    let frame = raw(Op::GoAway as u8, 0, 0, &body);
    assert_eq!(
        decode_one(&frame),
        Err(FrameError::PayloadTooLarge { len: 65, limit: 64 })
    );
}

#[test]
fn handshake_body_over_limit() {
    let frame = raw(Op::Reject as u8, 0, 0, &[0; 65]);
    assert_eq!(
        decode_one(&frame),
        Err(FrameError::PayloadTooLarge { len: 65, limit: 64 })
    );
}

// --- field values -------------------------------------------------------------------------

#[test]
fn subroute_of_length_zero() {
    let mut body = CALL.to_vec();
    body.push(0);
    let frame = raw(Op::Request as u8, flags::SUBROUTE, 1, &body);
    assert_eq!(decode_one(&frame), bad_field(Op::Request, "subroute"));
}

#[test]
fn subroute_bytes_are_not_utf8_checked() {
    let mut body = CALL.to_vec();
    body.extend_from_slice(&[2, 0xff, 0xfe]);
    let frame = raw(Op::Request as u8, flags::SUBROUTE, 1, &body);
    let Ok(Frame::Request { route, .. }) = decode_one(&frame) else {
        panic!("expected a request");
    };
    assert_eq!(route.subroute.as_deref(), Some(&[0xff, 0xfe][..]));
}

#[test]
fn handler_zero() {
    let frame = raw(Op::Request as u8, 0, 1, &[0; 8]);
    assert_eq!(decode_one(&frame), bad_field(Op::Request, "handler"));
}

#[test]
fn open_handler_zero() {
    let frame = raw(Op::Open as u8, 0, 1, &[0; 24]);
    assert_eq!(decode_one(&frame), bad_field(Op::Open, "handler"));
}

#[test]
fn unknown_cancel_reason() {
    for reason in [0, 4, 255] {
        let frame = raw(Op::Cancel as u8, 0, 1, &[reason]);
        assert_eq!(decode_one(&frame), bad_field(Op::Cancel, "reason"));
    }
}

#[test]
fn credit_of_zero() {
    let frame = raw(Op::Credit as u8, 0, 1, &[0; 8]);
    assert_eq!(decode_one(&frame), bad_field(Op::Credit, "credits"));
}

#[test]
fn credit_of_bytes_without_messages_is_valid() {
    // The rest of a byte credit too large for one frame.
    let frame = raw(Op::Credit as u8, 0, 1, &[0, 0, 0, 0, 0, 0, 0, 9]);
    assert_eq!(
        decode_one(&frame),
        Ok(Frame::Credit {
            mux: MuxId(1),
            credits: 0,
            bytes: 9
        })
    );
}

#[test]
fn credit_of_messages_without_bytes_is_valid() {
    // Zero-length items give back message credit and no bytes.
    let frame = raw(Op::Credit as u8, 0, 1, &[0, 0, 0, 3, 0, 0, 0, 0]);
    assert_eq!(
        decode_one(&frame),
        Ok(Frame::Credit {
            mux: MuxId(1),
            credits: 3,
            bytes: 0
        })
    );
}

#[test]
fn credit_with_the_old_four_byte_body() {
    let frame = raw(Op::Credit as u8, 0, 1, &[0, 0, 0, 1]);
    assert_eq!(
        decode_one(&frame),
        Err(FrameError::BadLength {
            op: Op::Credit,
            len: 4
        })
    );
}

#[test]
fn open_without_input_but_in_cap() {
    let mut body = CALL.to_vec();
    body.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
    let frame = raw(Op::Open as u8, flags::END, 1, &body);
    assert_eq!(decode_one(&frame), bad_field(Op::Open, "in_cap"));
}

#[test]
fn open_without_input_but_in_window() {
    let mut body = CALL.to_vec();
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1]);
    let frame = raw(Op::Open as u8, flags::END, 1, &body);
    assert_eq!(decode_one(&frame), bad_field(Op::Open, "in_window"));
}

#[test]
fn unknown_error_code_is_kept() {
    let frame = raw(Op::Error as u8, 0, 1, &[0xab, 0xcd, b'?']);
    let Ok(Frame::Error { error, .. }) = decode_one(&frame) else {
        panic!("expected an error frame");
    };
    assert_eq!(error.code, ErrorCode::Other(0xabcd));
}

// --- checksum -----------------------------------------------------------------------------

#[test]
fn checksum_mismatch() {
    let mut frame = BytesMut::new();
    encode_frame(&Frame::Ack { mux: MuxId(1) }, true, &mut frame);
    let good = crc32fast::hash(&frame[..10]);
    frame[13] ^= 1;
    assert_eq!(
        decode_one(&frame),
        Err(FrameError::Checksum {
            expected: good ^ 1,
            actual: good
        })
    );
}

#[test]
fn checksum_trailer_missing() {
    let mut frame = BytesMut::new();
    encode_frame(&Frame::Ack { mux: MuxId(1) }, true, &mut frame);
    assert_eq!(
        decode_one(&frame[..12]),
        Err(FrameError::Truncated {
            needed: 14,
            available: 12
        })
    );
}

// --- metadata -----------------------------------------------------------------------------

/// A request body: CALL, then `rest` (metadata block and payload), with the given flags.
fn request_with(fl: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = CALL.to_vec();
    body.extend_from_slice(rest);
    raw(Op::Request as u8, fl, 1, &body)
}

#[test]
fn metadata_block_then_payload_decodes_as_slices() {
    // 1 entry: "k" -> ff 00, then payload "p".
    let frame = request_with(
        flags::METADATA | flags::PAYLOAD,
        &[0, 1, 1, b'k', 0, 2, 0xff, 0, b'p'],
    );
    let Ok(Frame::Request {
        metadata, payload, ..
    }) = decode_one(&frame)
    else {
        panic!("decodes");
    };
    assert_eq!(metadata.get("k"), Some(&[0xffu8, 0][..]));
    assert_eq!(metadata.len(), 1);
    assert_eq!(payload.as_deref(), Some(&b"p"[..]));
}

#[test]
fn metadata_flag_is_refused_where_it_does_not_belong() {
    let frame = raw(Op::Response as u8, flags::METADATA, 1, &[]);
    assert_eq!(
        decode_one(&frame),
        Err(FrameError::BadFlags {
            op: Op::Response,
            flags: flags::METADATA
        })
    );
}

#[test]
fn metadata_without_its_count_is_too_short() {
    let frame = request_with(flags::METADATA, &[0]);
    assert_eq!(decode_one(&frame), bad_length(Op::Request, 9));
}

#[test]
fn metadata_malformed_entries_are_bad_fields() {
    for rest in [
        &[0u8, 0][..],                             // count 0
        &[0, 1, 0, 0, 0][..],                      // empty key
        &[0, 1, 1, 0xc3, 0, 0][..],                // key not UTF-8
        &[0, 2, 1, b'b', 0, 0, 1, b'a', 0, 0][..], // out of order
        &[0, 2, 1, b'a', 0, 0, 1, b'a', 0, 0][..], // repeated
    ] {
        let frame = request_with(flags::METADATA, rest);
        assert_eq!(
            decode_one(&frame),
            bad_field(Op::Request, "metadata"),
            "{rest:?}"
        );
    }
}

#[test]
fn metadata_running_past_the_body_or_leaving_bytes_is_a_bad_length() {
    // Value length 5 with 1 byte of body left.
    let frame = request_with(flags::METADATA, &[0, 1, 1, b'a', 0, 5, 1]);
    assert_eq!(decode_one(&frame), bad_length(Op::Request, 15));
    // A well-formed block, then a byte no flag accounts for.
    let frame = request_with(flags::METADATA, &[0, 1, 1, b'a', 0, 0, 9]);
    assert_eq!(decode_one(&frame), bad_length(Op::Request, 15));
}

#[test]
fn metadata_over_the_payload_limit_is_too_large() {
    // LIMITS allow 64 bytes of payload; one 70-byte value makes a 76-byte block.
    let mut rest = vec![0, 1, 1, b'a', 0, 70];
    rest.extend_from_slice(&[1u8; 70]);
    let frame = request_with(flags::METADATA, &rest);
    assert_eq!(
        decode_one(&frame),
        Err(FrameError::PayloadTooLarge { len: 76, limit: 64 })
    );
}

#[test]
fn frames_without_metadata_are_the_bytes_of_before() {
    // The flag is clear and no byte is added: the encoding of a call without metadata is
    // unchanged (vector V1 holds the same frame).
    let frame = sample();
    let mut dst = BytesMut::new();
    encode_frame(&frame, false, &mut dst);
    assert_eq!(dst[1] & flags::METADATA, 0);
    assert_eq!(dst.len(), 10 + 8 + 6 + 5);
}

// --- encoding -----------------------------------------------------------------------------

fn sample() -> Frame {
    Frame::Request {
        mux: MuxId(9),
        route: Route {
            handler: HandlerId(3),
            subroute: Some(Bytes::from_static(b"disk1")),
        },
        deadline_ms: 250,
        metadata: Metadata::new(),
        payload: Some(Bytes::from_static(b"hello")),
    }
}

#[test]
fn encoded_len_matches_encoding() {
    for checksum in [false, true] {
        let mut dst = BytesMut::from(&b"prefix"[..]);
        encode_frame(&sample(), checksum, &mut dst);
        assert_eq!(dst.len() - 6, encoded_len(&sample(), checksum));
    }
}

#[test]
fn payload_is_a_slice_of_the_message() {
    let msg = encode_batch(&[sample()], false);
    let frames = decode_batch(msg.clone(), &LIMITS).unwrap();
    let Frame::Request {
        payload: Some(p), ..
    } = &frames[0]
    else {
        panic!("expected a request with payload");
    };
    let range = msg.as_ptr_range();
    assert!(range.contains(&p.as_ptr()), "payload was copied");
}

#[test]
fn batch_encoder_bookkeeping() {
    let mut enc = BatchEncoder::new();
    assert!(enc.is_empty());
    assert_eq!(enc.len(), BATCH_HEADER_LEN);
    enc.push(&sample(), false);
    let mut one = BytesMut::new();
    encode_frame(&Frame::Ack { mux: MuxId(2) }, true, &mut one);
    enc.push_encoded(&one);
    assert_eq!(enc.count(), 2);
    assert!(!enc.is_empty());
    let expected_len = BATCH_HEADER_LEN + encoded_len(&sample(), false) + one.len();
    assert_eq!(enc.len(), expected_len);
    let msg = enc.finish();
    assert_eq!(msg.len(), expected_len);
    assert_eq!(&msg[..4], &[1, 0, 0, 2]);
    let frames = decode_batch(msg, &LIMITS).unwrap();
    assert_eq!(frames, vec![sample(), Frame::Ack { mux: MuxId(2) }]);
}

#[test]
fn decoder_reports_position_and_remaining() {
    let msg = encode_batch(&[sample(), sample()], false);
    let mut dec = BatchDecoder::new(msg.clone(), &LIMITS).unwrap();
    assert_eq!((dec.position(), dec.remaining()), (4, 2));
    dec.next();
    let one = encoded_len(&sample(), false);
    assert_eq!((dec.position(), dec.remaining()), (4 + one, 1));
    dec.next();
    assert_eq!((dec.position(), dec.remaining()), (msg.len(), 0));
    assert_eq!(dec.next(), None);
}

#[test]
fn invalid_frames_are_encoded_as_given() {
    // Scripted-peer tests rely on this to send protocol violations.
    let frame = Frame::Credit {
        mux: MuxId(0),
        credits: 0,
        bytes: 0,
    };
    let msg = encode_batch(&[frame], false);
    assert_eq!(
        decode_batch(msg, &LIMITS),
        Err(FrameError::BadMux {
            op: Op::Credit,
            mux: 0
        })
    );
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "non-handshake op")]
fn handshake_frame_with_other_op_is_a_caller_bug() {
    let frame = Frame::Handshake {
        op: Op::Ping,
        payload: Bytes::new(),
    };
    encode_frame(&frame, false, &mut BytesMut::new());
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "exceeds 255")]
fn subroute_over_255_bytes_is_a_caller_bug() {
    let frame = Frame::Request {
        mux: MuxId(1),
        route: Route {
            handler: HandlerId(1),
            subroute: Some(Bytes::from(vec![b'a'; 256])),
        },
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: None,
    };
    encode_frame(&frame, false, &mut BytesMut::new());
}

/// Release builds write what the wire cannot carry so that the receiver rejects it.
#[test]
#[cfg(not(debug_assertions))]
fn release_writes_unrepresentable_frames_as_rejected_ones() {
    let bad_op = Frame::Handshake {
        op: Op::Ping,
        payload: Bytes::from_static(&[0; 8]),
    };
    assert_eq!(
        decode_batch(encode_batch(&[bad_op], false), &LIMITS),
        Err(FrameError::UnknownOp(0))
    );
    let long_subroute = Frame::Request {
        mux: MuxId(1),
        route: Route {
            handler: HandlerId(1),
            subroute: Some(Bytes::from(vec![b'a'; 256])),
        },
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: None,
    };
    assert_eq!(
        decode_batch(encode_batch(&[long_subroute], false), &LIMITS),
        Err(FrameError::BadField {
            op: Op::Request,
            field: "subroute"
        })
    );
}

#[test]
fn a_data_frame_encoded_in_place_is_the_frame_the_codec_writes() {
    for checksum in [false, true] {
        for payload in [&b""[..], b"abc", &[9u8; 300][..]] {
            let mut dst = BytesMut::from(&b"before"[..]);
            let len = super::encode::encode_data_with(MuxId(5), 7, checksum, &mut dst, |d| {
                d.extend_from_slice(payload);
                Ok::<_, ()>(())
            })
            .expect("written");
            assert_eq!(len, payload.len());
            let mut want = BytesMut::from(&b"before"[..]);
            let frame = Frame::Data {
                mux: MuxId(5),
                seq: 7,
                payload: Some(Bytes::copy_from_slice(payload)),
            };
            encode_frame(&frame, checksum, &mut want);
            assert_eq!(dst, want, "checksum {checksum}, {} bytes", payload.len());
        }
    }
}

#[test]
fn a_split_encoding_is_the_whole_encoding_with_the_payload_shared() {
    let payload = Bytes::from_static(b"payload bytes");
    let frames = [
        Frame::Request {
            mux: MuxId(1),
            route: Route {
                handler: HandlerId(7),
                subroute: Some(Bytes::from_static(b"disk1")),
            },
            deadline_ms: 9,
            metadata: crate::frame::Metadata::new(),
            payload: Some(payload.clone()),
        },
        Frame::Response {
            mux: MuxId(2),
            result: Ok(Some(payload.clone())),
        },
        Frame::Data {
            mux: MuxId(3),
            seq: 4,
            payload: Some(payload.clone()),
        },
        Frame::Compressed {
            mux: MuxId(2),
            raw_len: 40,
            block: payload.clone(),
        },
        Frame::Ack { mux: MuxId(5) },
    ];
    for f in &frames {
        let (head, tail) = super::encode::encode_split(f);
        let mut whole = BytesMut::new();
        encode_frame(f, false, &mut whole);
        assert_eq!([&head[..], &tail[..]].concat(), &whole[..], "{f:?}");
        if !tail.is_empty() {
            assert_eq!(tail.as_ptr(), payload.as_ptr(), "shared, not copied: {f:?}");
        }
    }
}

/// An `Items` frame of mux 1 with `n` empty messages from sequence number 0.
fn empty_items(n: usize) -> Vec<u8> {
    let mut body = 0u32.to_be_bytes().to_vec();
    body.resize(4 + 2 * n, 0);
    raw(Op::Items as u8, 0, 1, &body)
}

/// What each way of decoding `batch` makes of it: the messages the fast path handed on before
/// its end or error, and its error; the iterator's error.
fn decode_items_both_ways(
    batch: &Bytes,
    limits: &Limits,
) -> (usize, Option<FrameError>, Option<FrameError>) {
    let mut dec = BatchDecoder::new(batch.clone(), limits).unwrap();
    let mut handed = 0;
    // Only `Items` frames here: one call takes the whole batch, to its end or its error.
    let fast = match dec.next_non_data(|op, _, _, _| {
        assert_eq!(op, Op::Items);
        handed += 1;
    }) {
        None => None,
        Some(Ok(f)) => panic!("unexpected {f:?}"),
        Some(Err(e)) => Some(e),
    };
    let iterated = decode_batch(batch.clone(), limits).err();
    (handed, fast, iterated)
}

#[test]
fn a_batch_holds_at_most_max_frames_messages_counting_packed_ones() {
    let limits = Limits {
        max_frames: 8,
        items: true,
        ..LIMITS
    };
    let too_many = Some(FrameError::TooManyMessages { limit: 8 });
    // One frame of 8, two of 4 and 4, a ping and 7: at the limit.
    for frames in [vec![empty_items(8)], vec![empty_items(4), empty_items(4)]] {
        let batch = batch_of(frames.len() as u16, &frames.concat());
        assert_eq!(decode_items_both_ways(&batch, &limits), (8, None, None));
    }
    let mut at_limit = ping(0);
    at_limit.extend(empty_items(7));
    assert!(decode_batch(batch_of(2, &at_limit), &limits).is_ok());
    // One past it, whichever frame holds the one too many: the fast path hands on the messages
    // before it (8 in one frame; 5, then 2 of the second frame, whose third would leave no
    // message for the third frame's one), and both ways give the same error.
    for (frames, before) in [
        (vec![empty_items(9)], 8),
        (vec![empty_items(5), empty_items(4), empty_items(1)], 7),
    ] {
        let batch = batch_of(frames.len() as u16, &frames.concat());
        let (handed, fast, iterated) = decode_items_both_ways(&batch, &limits);
        assert_eq!(handed, before, "messages handed on");
        assert_eq!((fast, iterated), (too_many.clone(), too_many.clone()));
    }
    // The same error both ways when a later frame would also be bad: the count is checked
    // before each message, so the one too many is found before the bad length after it.
    let mut bad_after = empty_items(7);
    let mut second = empty_items(2);
    second[9] += 1; // one byte more in the body: a length cut short after the second message
    second.push(0);
    bad_after.extend(second);
    let batch = batch_of(2, &bad_after);
    let (_, fast, iterated) = decode_items_both_ways(&batch, &limits);
    assert_eq!((fast, iterated), (too_many.clone(), too_many.clone()));
    let mut past = ping(0);
    past.extend(empty_items(8));
    assert_eq!(decode_batch(batch_of(2, &past), &limits).err(), too_many);
    // A frame decoded alone holds at most `max_frames` messages.
    let lone = empty_items(9);
    assert_eq!(
        super::decode_frame_bytes(Bytes::from(lone), &limits).err(),
        too_many
    );
}

#[test]
fn packed_messages_are_numbered_on_past_u32_max() {
    let limits = Limits {
        items: true,
        ..LIMITS
    };
    let mut body = (u32::MAX - 1).to_be_bytes().to_vec();
    for m in [&b"x"[..], b"", b"yz"] {
        body.extend_from_slice(&u16::try_from(m.len()).unwrap().to_be_bytes());
        body.extend_from_slice(m);
    }
    let batch = batch_of(1, &raw(Op::Items as u8, 0, 1, &body));
    let mut got = Vec::new();
    let mut dec = BatchDecoder::new(batch.clone(), &limits).unwrap();
    assert!(dec
        .next_non_data(|_, _, seq, p| got.push((seq, p.unwrap())))
        .is_none());
    let want = [(u32::MAX - 1, "x"), (u32::MAX, ""), (0, "yz")]
        .map(|(s, m)| (s, Bytes::from_static(m.as_bytes())));
    assert_eq!(got, want);
    let frames = decode_batch(batch, &limits).unwrap();
    assert_eq!(
        frames,
        [Frame::Items {
            mux: MuxId(1),
            seq: u32::MAX - 1,
            items: want.map(|(_, m)| m).to_vec(),
        }]
    );
}

#[test]
fn payloads_copied_out_equal_the_slices_and_keep_nothing_else_alive() {
    let frames = vec![
        Frame::Request {
            mux: MuxId(1),
            route: Route {
                handler: HandlerId(7),
                subroute: Some(Bytes::from_static(b"bucket/a")),
            },
            deadline_ms: 9,
            metadata: Metadata::new().with("trace", b"abc").unwrap(),
            payload: Some(Bytes::from_static(b"request")),
        },
        Frame::Response {
            mux: MuxId(3),
            result: Err(ErrorRecord::text(ErrorCode::Application, "no such key")),
        },
        Frame::Data {
            mux: MuxId(5),
            seq: 2,
            payload: Some(Bytes::from_static(b"message")),
        },
        Frame::Items {
            mux: MuxId(5),
            seq: 3,
            items: vec![Bytes::from_static(b"x"), Bytes::new(), Bytes::from_static(b"yz")],
        },
    ];
    let msg = encode_batch(&frames, false);
    let sliced = Limits {
        items: true,
        ..Limits::default()
    };
    let copied = Limits {
        copy_payloads: true,
        ..sliced
    };
    assert_eq!(decode_batch(msg.clone(), &sliced).unwrap(), frames);
    let got = decode_batch(msg.clone(), &copied).unwrap();
    assert_eq!(got, frames);
    // `msg` is still held here: a slice of it would not be the only owner of its bytes.
    let mut kept: Vec<Bytes> = Vec::new();
    for f in got {
        match f {
            Frame::Request {
                route,
                metadata,
                payload,
                ..
            } => {
                kept.extend(route.subroute);
                kept.push(metadata.wire().clone());
                kept.extend(payload);
            }
            Frame::Response { result: Err(e), .. } => kept.push(e.message),
            Frame::Data { payload, .. } => kept.extend(payload),
            Frame::Items { items, .. } => kept.extend(items),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(kept.len(), 8);
    for (i, mut b) in kept.into_iter().enumerate() {
        assert!(b.is_empty() || b.is_unique(), "piece {i} shares the message");
        b.clear();
    }
    assert!(msg.is_unique(), "nothing decoded keeps the message");
}
