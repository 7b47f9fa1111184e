//! Property tests of the frame codec.
//!
//! - Round trip: every frame the strategies can build (every variant; payloads absent, empty and
//!   non-empty; subroutes of 1..=255 bytes; error records with every code, unknown ones included)
//!   decodes to itself, alone or in batches of 1..=40, with and without checksums.
//! - Robustness: decoding arbitrary short inputs, and valid batches with bytes overwritten or cut
//!   off, never panics; and whatever it accepts is exactly the canonical encoding of what it
//!   returned, so the decoder is as strict as `PROTOCOL.md` says.
//! - Integrity: one flipped bit in a checksummed frame is always an error, never another frame.

#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use grid_core::frame::{
    decode_batch, encode_batch, encode_checked_batch, encode_frame, encoded_len, flags,
    BatchDecoder, BatchEncoder, CancelReason, ErrorCode, ErrorRecord, Frame, FrameError, Limits,
    Metadata, Op, Route, BATCH_HEADER_LEN, MAX_SUBROUTE_LEN,
};
use grid_core::{HandlerId, MuxId};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

/// Absent, present but empty, or present with content: the three must stay distinct.
fn payload() -> impl Strategy<Value = Option<Bytes>> {
    prop_oneof![
        Just(None),
        Just(Some(Bytes::new())),
        vec(any::<u8>(), 1..100).prop_map(|v| Some(Bytes::from(v))),
    ]
}

fn mux() -> impl Strategy<Value = MuxId> {
    (1..=u32::MAX).prop_map(MuxId)
}

fn route() -> impl Strategy<Value = Route> {
    let subroute = prop_oneof![
        Just(None),
        vec(any::<u8>(), 1..=16).prop_map(|v| Some(Bytes::from(v))),
        // The longest name the length byte can carry.
        vec(any::<u8>(), MAX_SUBROUTE_LEN).prop_map(|v| Some(Bytes::from(v))),
    ];
    ((1..=u32::MAX).prop_map(HandlerId), subroute)
        .prop_map(|(handler, subroute)| Route { handler, subroute })
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        // Every known code...
        (1u16..=11).prop_map(ErrorCode::from_u16),
        // ...and anything else, which `from_u16` keeps as `Other(n)`.
        any::<u16>().prop_map(ErrorCode::from_u16),
    ]
}

fn record() -> impl Strategy<Value = ErrorRecord> {
    (error_code(), bytes(40)).prop_map(|(code, message)| ErrorRecord { code, message })
}

/// Metadata of 0 to 4 entries: keys of 1 to 6 characters (non-ASCII ones included), values of
/// 0 to 12 arbitrary bytes.
fn metadata() -> impl Strategy<Value = Metadata> {
    vec(("[a-zé€]{1,6}", vec(any::<u8>(), 0..12)), 0..5).prop_map(|entries| {
        let mut m = Metadata::new();
        for (k, v) in entries {
            m.insert(&k, v).expect("within the per-entry bounds");
        }
        m
    })
}

fn cancel_reason() -> impl Strategy<Value = CancelReason> {
    prop_oneof![
        Just(CancelReason::CallerGaveUp),
        Just(CancelReason::Deadline),
        Just(CancelReason::ShuttingDown),
    ]
}

fn handshake_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Hello),
        Just(Op::Welcome),
        Just(Op::Confirm),
        Just(Op::Ready),
        Just(Op::Reject),
    ]
}

/// Any valid frame: every variant, every optional part.
fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (mux(), route(), any::<u32>(), metadata(), payload()).prop_map(
            |(mux, route, deadline_ms, metadata, payload)| Frame::Request {
                mux,
                route,
                deadline_ms,
                metadata,
                payload,
            }
        ),
        (mux(), payload()).prop_map(|(mux, p)| Frame::Response { mux, result: Ok(p) }),
        (mux(), record()).prop_map(|(mux, e)| Frame::Response {
            mux,
            result: Err(e)
        }),
        (
            mux(),
            route(),
            any::<u32>(),
            (any::<u32>(), any::<u32>()),
            (any::<u32>(), any::<u32>()),
            any::<bool>(),
            (metadata(), payload())
        )
            .prop_map(
                |(
                    mux,
                    route,
                    deadline_ms,
                    (in_cap, out_cap),
                    (in_window, out_window),
                    input,
                    (metadata, payload),
                )| {
                    Frame::Open {
                        mux,
                        route,
                        deadline_ms,
                        // Without input there is nothing to buffer.
                        in_cap: if input { in_cap } else { 0 },
                        out_cap,
                        in_window: if input { in_window } else { 0 },
                        out_window,
                        input,
                        metadata,
                        payload,
                    }
                }
            ),
        mux().prop_map(|mux| Frame::Ack { mux }),
        (mux(), any::<u32>(), payload()).prop_map(|(mux, seq, payload)| Frame::Data {
            mux,
            seq,
            payload
        }),
        (mux(), any::<u32>(), any::<u32>())
            .prop_filter("credits and bytes not both zero", |(_, c, b)| *c != 0
                || *b != 0)
            .prop_map(|(mux, credits, bytes)| Frame::Credit {
                mux,
                credits,
                bytes
            }),
        (mux(), any::<u32>(), proptest::option::of(record()))
            .prop_map(|(mux, seq, error)| Frame::End { mux, seq, error }),
        (mux(), record()).prop_map(|(mux, error)| Frame::Error { mux, error }),
        (mux(), cancel_reason()).prop_map(|(mux, reason)| Frame::Cancel { mux, reason }),
        (any::<u32>(), any::<u64>()).prop_map(|(m, nonce)| Frame::Ping {
            mux: MuxId(m),
            nonce
        }),
        (any::<u32>(), any::<u64>()).prop_map(|(m, nonce)| Frame::Pong {
            mux: MuxId(m),
            nonce
        }),
        record().prop_map(|error| Frame::GoAway { error }),
        // The codec carries a table message as it is; at least its flags byte.
        vec(any::<u8>(), 1..=64).prop_map(|b| Frame::Handlers {
            update: Bytes::from(b)
        }),
        (handshake_op(), bytes(64)).prop_map(|(op, payload)| Frame::Handshake { op, payload }),
        // Frames in parts and compressed frames (issue 15): the codec carries their bytes.
        (mux(), vec(any::<u8>(), 1..=64)).prop_map(|(mux, b)| Frame::Chunk {
            mux,
            bytes: Bytes::from(b)
        }),
        mux().prop_map(|mux| Frame::ChunkAbort { mux }),
        (1..=u32::MAX).prop_map(|bytes| Frame::ChunkAck { bytes }),
        (mux(), 1..=u32::MAX, vec(any::<u8>(), 1..=64)).prop_map(|(mux, raw_len, b)| {
            Frame::Compressed {
                mux,
                raw_len,
                block: Bytes::from(b),
            }
        }),
    ]
}

/// Frames, each with its own choice of checksum.
fn batch(max: usize) -> impl Strategy<Value = Vec<(Frame, bool)>> {
    vec((frame(), any::<bool>()), 1..=max)
}

fn encode_mixed(frames: &[(Frame, bool)]) -> Bytes {
    let mut enc = BatchEncoder::new();
    for (frame, checksum) in frames {
        enc.push(frame, *checksum);
    }
    enc.finish()
}

/// Up to `max` (at most 64) arbitrary bytes, drawn as eight words: far cheaper per case than one
/// strategy per byte, which is what lets the no-panic property run 100 000 cases in seconds.
fn cheap_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    (0..=max.min(64), any::<[u64; 8]>()).prop_map(|(len, words)| {
        let mut v: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        v.truncate(len);
        v
    })
}

/// Short arbitrary inputs; half start with a plausible batch header so frame parsing is reached.
fn short_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        cheap_bytes(64),
        (1u8..=3, cheap_bytes(60)).prop_map(|(count, rest)| {
            let mut v = vec![1, 0, 0, count];
            v.extend(rest);
            v
        }),
    ]
}

/// A valid batch with up to 4 bytes overwritten and possibly cut short.
fn mutated_batch() -> impl Strategy<Value = Vec<u8>> {
    (
        batch(4),
        vec((any::<Index>(), any::<u8>()), 0..=4),
        proptest::option::of(any::<Index>()),
    )
        .prop_map(|(frames, edits, cut)| {
            let mut v = encode_mixed(&frames).to_vec();
            for (at, byte) in edits {
                let i = at.index(v.len());
                v[i] = byte;
            }
            if let Some(cut) = cut {
                v.truncate(cut.index(v.len() + 1));
            }
            v
        })
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn limits() -> Limits {
    Limits::default()
}

/// Decodes `msg` (never panicking, or the test fails) and checks that every frame it accepts was
/// encoded canonically: re-encoding it, with the checksum flag it came with, gives its exact bytes.
fn decode_strictly(msg: &[u8]) -> Result<(), TestCaseError> {
    let msg = Bytes::copy_from_slice(msg);
    let whole = decode_batch(msg.clone(), &limits());
    let Ok(mut dec) = BatchDecoder::new(msg.clone(), &limits()) else {
        prop_assert!(whole.is_err());
        return Ok(());
    };
    let mut start = dec.position();
    let mut frames = Vec::new();
    let mut failed = false;
    while let Some(item) = dec.next() {
        let Ok(frame) = item else {
            failed = true;
            continue; // The iterator must end right after its first error.
        };
        prop_assert!(!failed, "a frame after an error");
        let raw = &msg[start..dec.position()];
        let checksum = raw[1] & flags::CHECKSUM != 0;
        let mut again = BytesMut::new();
        encode_frame(&frame, checksum, &mut again);
        prop_assert_eq!(
            &again[..],
            raw,
            "accepted a non-canonical encoding of {:?}",
            frame
        );
        start = dec.position();
        frames.push(frame);
    }
    // `decode_batch` agrees with the iterator.
    match whole {
        Ok(all) => prop_assert_eq!(all, frames),
        Err(_) => prop_assert!(failed),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// `cases` cases with a cheap generator: proptest's default ChaCha, unoptimized in debug builds,
/// would dominate the run time, and these properties need no cryptographic randomness.
fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::with_cases(cases)
    }
}

proptest! {
    #![proptest_config(cases(2_000))]

    #[test]
    fn one_frame_round_trips(frame in frame(), checksum in any::<bool>()) {
        let msg = encode_batch(std::slice::from_ref(&frame), checksum);
        prop_assert_eq!(msg.len(), BATCH_HEADER_LEN + encoded_len(&frame, checksum));
        prop_assert_eq!(decode_batch(msg, &limits()), Ok(vec![frame]));
    }

    #[test]
    fn packing_encoded_frames_equals_encoding_in_place(frames in batch(8)) {
        let mut packed = BatchEncoder::new();
        for (frame, checksum) in &frames {
            let mut one = BytesMut::new();
            encode_frame(frame, *checksum, &mut one);
            prop_assert_eq!(one.len(), encoded_len(frame, *checksum));
            packed.push_encoded(&one);
        }
        prop_assert_eq!(packed.finish(), encode_mixed(&frames));
    }

    #[test]
    fn every_valid_batch_is_canonical(frames in batch(8)) {
        decode_strictly(&encode_mixed(&frames))?;
    }

    #[test]
    fn a_flipped_bit_in_a_checksummed_frame_is_detected(frame in frame(), bit in any::<Index>()) {
        // Alone in its batch, every bit is covered: header and body by the CRC, the body length
        // and the CHECKSUM bit by the batch's exact length.
        let mut msg = encode_batch(std::slice::from_ref(&frame), true).to_vec();
        let bit = bit.index(msg.len() * 8);
        msg[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode_batch(Bytes::from(msg), &limits()).is_err());
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_batch_with_a_batch_checksum_is_detected(
        frames in vec(frame(), 1..=6),
        bit in any::<Index>(),
    ) {
        let msg = encode_checked_batch(&frames);
        prop_assert_eq!(decode_batch(msg.clone(), &limits()), Ok(frames));
        let mut msg = msg.to_vec();
        let bit = bit.index(msg.len() * 8);
        msg[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode_batch(Bytes::from(msg), &limits()).is_err());
    }

    #[test]
    fn a_flipped_bit_in_a_checksummed_batch_is_detected(
        frames in vec(frame(), 2..=6),
        bit in any::<Index>(),
    ) {
        let mut msg = encode_batch(&frames, true).to_vec();
        // Where each frame starts; a flip in a body length or a CHECKSUM bit moves where the next
        // frame is read (see PROTOCOL.md section 3), so those bits are the single-frame test's.
        let mut starts = Vec::new();
        let mut at = BATCH_HEADER_LEN;
        for f in &frames {
            starts.push(at);
            at += encoded_len(f, true);
        }
        let bit = bit.index(msg.len() * 8);
        let (byte, mask) = (bit / 8, 1u8 << (bit % 8));
        let shifts_frames = starts.iter().any(|&s| {
            (s + 6..s + 10).contains(&byte) || (byte == s + 1 && mask == flags::CHECKSUM)
        });
        prop_assume!(!shifts_frames);
        msg[byte] ^= mask;
        let decoded: Vec<_> = BatchDecoder::new(Bytes::from(msg), &limits())
            .map(|dec| dec.collect())
            .unwrap_or_default();
        // Frames before the damaged one are intact, then an error; never a different frame.
        let ok: Vec<&Frame> = decoded.iter().map_while(|r| r.as_ref().ok()).collect();
        for (got, want) in ok.iter().zip(&frames) {
            prop_assert_eq!(*got, want);
        }
        prop_assert!(decoded.is_empty() || decoded.iter().any(Result::is_err));
    }
}

/// Every item `next_non_data` yields, `Data` frames rebuilt from what it handed to its callback,
/// in the order they came.
fn split_decode(msg: &[u8]) -> Option<Vec<Result<Frame, FrameError>>> {
    let mut dec = BatchDecoder::new(Bytes::copy_from_slice(msg), &limits()).ok()?;
    let mut out = Vec::new();
    loop {
        let mut data = Vec::new();
        let next = dec.next_non_data(|_, mux, seq, payload| {
            data.push(Ok(Frame::Data { mux, seq, payload }));
        });
        out.extend(data);
        match next {
            Some(item) => out.push(item),
            None => return Some(out),
        }
    }
}

proptest! {
    #![proptest_config(cases(2_000))]

    #[test]
    fn decoding_data_apart_yields_what_iterating_yields(msg in mutated_batch()) {
        let iterated = BatchDecoder::new(Bytes::from(msg.clone()), &limits())
            .ok()
            .map(|dec| dec.collect::<Vec<_>>());
        prop_assert_eq!(split_decode(&msg), iterated);
    }

    #[test]
    fn decoding_data_apart_fails_as_iterating_does_with_items_on(msg in mutated_batch()) {
        // With `Items` frames accepted (a mutated op may become 23), the two ways of decoding
        // stop at the same error, or at none.
        let limits = Limits {
            items: true,
            ..limits()
        };
        let iterated = BatchDecoder::new(Bytes::from(msg.clone()), &limits)
            .ok()
            .map(|mut dec| dec.find_map(Result::err));
        let apart = BatchDecoder::new(Bytes::from(msg), &limits).ok().map(|mut dec| loop {
            match dec.next_non_data(|_, _, _, _| {}) {
                None => break None,
                Some(Err(e)) => break Some(e),
                Some(Ok(_)) => {}
            }
        });
        prop_assert_eq!(apart, iterated);
    }

    #[test]
    fn decoding_valid_batches_data_apart_yields_every_frame(frames in batch(40)) {
        let msg = encode_mixed(&frames);
        let expected: Vec<Result<Frame, FrameError>> =
            frames.into_iter().map(|(f, _)| Ok(f)).collect();
        prop_assert_eq!(split_decode(&msg), Some(expected));
    }
}

proptest! {
    // Batches of up to 40 frames cost more to generate; fewer cases, on top of the single-frame
    // property.
    #![proptest_config(cases(1_000))]

    #[test]
    fn batches_round_trip(frames in batch(40)) {
        let msg = encode_mixed(&frames);
        let expected: Vec<Frame> = frames.into_iter().map(|(f, _)| f).collect();
        prop_assert_eq!(decode_batch(msg, &limits()), Ok(expected));
    }

    #[test]
    fn batches_round_trip_with_one_checksum_setting(
        frames in vec(frame(), 1..=40),
        checksum in any::<bool>(),
    ) {
        let msg = encode_batch(&frames, checksum);
        prop_assert_eq!(decode_batch(msg, &limits()), Ok(frames));
    }
}

proptest! {
    #![proptest_config(cases(100_000))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(input in short_input()) {
        decode_strictly(&input)?;
    }
}

proptest! {
    #![proptest_config(cases(20_000))]

    #[test]
    fn decoding_damaged_batches_never_panics(input in mutated_batch()) {
        decode_strictly(&input)?;
    }
}
