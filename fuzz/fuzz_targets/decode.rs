//! Fuzz target: decoding any message never panics, and whatever the decoder accepts is canonical.
//!
//! For every frame the decoder returns, re-encoding it (with the checksum flag it arrived with)
//! must give back exactly its bytes, and the re-encoded frames, packed as one batch, must decode to
//! the same frames. A decoder that accepted two spellings of one frame, or read a field it then
//! lost, fails here.

#![no_main]

use bytes::{Bytes, BytesMut};
use grid_core::frame::{
    decode_batch, encode_frame, flags, BatchDecoder, BatchEncoder, Frame, Limits,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small limits so the fuzzer reaches the limit checks with small inputs.
    let limits = Limits {
        max_payload: 256,
        max_batch: 4096,
        max_frames: 16,
        items: true,
        // Both ways of keeping payloads: sliced from the message, or copied out of it.
        copy_payloads: data.len() % 2 == 1,
    };
    let msg = Bytes::copy_from_slice(data);
    let Ok(mut decoder) = BatchDecoder::new(msg.clone(), &limits) else {
        return;
    };

    let mut frames: Vec<Frame> = Vec::new();
    let mut repacked = BatchEncoder::new();
    let mut start = decoder.position();
    while let Some(Ok(frame)) = decoder.next() {
        let raw = &msg[start..decoder.position()];
        let checksum = raw[1] & flags::CHECKSUM != 0;
        let mut again = BytesMut::new();
        encode_frame(&frame, checksum, &mut again);
        assert_eq!(
            &again[..],
            raw,
            "non-canonical encoding accepted for {frame:?}"
        );
        repacked.push_encoded(&again);
        frames.push(frame);
        start = decoder.position();
    }

    if !frames.is_empty() {
        let decoded = decode_batch(repacked.finish(), &limits);
        assert_eq!(
            decoded.as_ref(),
            Ok(&frames),
            "re-encoded frames decode differently"
        );
    }
});
