//! Codec benchmark: grid's frame codec against MinIO's way of framing the same messages.
//!
//! Two workloads, each encoded and decoded:
//! - `unary512`, `unary64k`: one Request frame with a 512-byte (64 KiB) payload, alone in its
//!   message;
//! - `batch32x64`: 32 Data frames with 64-byte payloads in one message.
//!
//! "MinIO's way" is a msgpack array of 7 elements per message, `[mux u64, seq u32, deadline u32,
//! handler u8, op u8, flags u8, payload bin]` (MinIO's `message` with `msg:tuple`), through
//! rmp-serde; a batch is MinIO's `OpMerged`: an outer 7-array whose `seq` is the count, followed by
//! one msgpack `bin` per inner message. Decoding copies each payload out, as MinIO's
//! `ReadBytesBytes` does, while grid's decoder hands out slices of the received message. MinIO's
//! optional xxh3 trailer is left out; `grid+crc` shows what grid's CRC-32 trailer costs.
//!
//! Run: `cargo bench -p grid-core --bench codec -- --quick` (or `--measurement-time 2`).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use grid_core::frame::{decode_batch, encode_batch, Frame, Limits, Metadata, Route};
use grid_core::{HandlerId, MuxId};
use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};

// ---------------------------------------------------------------------------------------------
// The workloads
// ---------------------------------------------------------------------------------------------

fn unary_frames(payload_len: usize) -> Vec<Frame> {
    vec![Frame::Request {
        mux: MuxId(41),
        route: Route {
            handler: HandlerId::from_wire_name("Storage.readFile"),
            subroute: None,
        },
        deadline_ms: 30_000,
        metadata: Metadata::new(),
        payload: Some(Bytes::from(vec![0xa5; payload_len])),
    }]
}

fn batch_frames() -> Vec<Frame> {
    (0..32)
        .map(|seq| Frame::Data {
            mux: MuxId(43),
            seq,
            payload: Some(Bytes::from(vec![0x5a; 64])),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// MinIO's way
// ---------------------------------------------------------------------------------------------

/// MinIO's op codes for the ops used here, in the newest ordering of `internal/grid/msg.go`. Any
/// value below 128 is one msgpack byte, so the exact numbers do not change the cost.
const MINIO_OP_REQUEST: u8 = 14;
const MINIO_OP_MUX_CLIENT_MSG: u8 = 9;
const MINIO_OP_MERGED: u8 = 17;

/// A byte slice serialized as msgpack `bin` (serde would otherwise write an array of integers).
struct Bin<'a>(&'a [u8]);

impl Serialize for Bin<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// An owned `bin` read back from msgpack.
struct BinBuf(Vec<u8>);

/// A borrowed `bin`: the parts of a merged message are read in place, as MinIO's `ReadBytesZC`.
struct BinRef<'a>(&'a [u8]);

struct BinVisitor;

impl<'de> Visitor<'de> for BinVisitor {
    type Value = BinBuf;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("msgpack bin")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<BinBuf, E> {
        Ok(BinBuf(v.to_vec()))
    }
}

impl<'de> Deserialize<'de> for BinBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(BinVisitor)
    }
}

struct BinRefVisitor;

impl<'de> Visitor<'de> for BinRefVisitor {
    type Value = BinRef<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("borrowed msgpack bin")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<BinRef<'de>, E> {
        Ok(BinRef(v))
    }
}

impl<'de> Deserialize<'de> for BinRef<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(BinRefVisitor)
    }
}

/// MinIO's `message`, as the 7-tuple it is on the wire.
type MinioOut<'a> = (u64, u32, u32, u8, u8, u8, Bin<'a>);
type MinioIn = (u64, u32, u32, u8, u8, u8, BinBuf);

/// The same fields grid's frames carry, in MinIO's layout.
fn minio_fields(frame: &Frame) -> MinioOut<'_> {
    match frame {
        Frame::Request {
            mux,
            deadline_ms,
            payload,
            ..
        } => (
            u64::from(mux.0),
            0,
            *deadline_ms,
            1, // MinIO's handler ids are one byte
            MINIO_OP_REQUEST,
            0,
            Bin(payload.as_deref().unwrap_or_default()),
        ),
        Frame::Data { mux, seq, payload } => (
            u64::from(mux.0),
            *seq,
            0,
            0,
            MINIO_OP_MUX_CLIENT_MSG,
            0,
            Bin(payload.as_deref().unwrap_or_default()),
        ),
        _ => unreachable!("the benchmark only uses requests and data"),
    }
}

fn minio_encode(frames: &[Frame]) -> Vec<u8> {
    if let [one] = frames {
        return rmp_serde::to_vec(&minio_fields(one)).expect("msgpack encoding");
    }
    let count = u32::try_from(frames.len()).expect("small batch");
    let outer: MinioOut<'_> = (0, count, 0, 0, MINIO_OP_MERGED, 0, Bin(&[]));
    let mut out = rmp_serde::to_vec(&outer).expect("msgpack encoding");
    let mut inner = Vec::with_capacity(128);
    for frame in frames {
        inner.clear();
        rmp_serde::encode::write(&mut inner, &minio_fields(frame)).expect("msgpack encoding");
        rmp_serde::encode::write(&mut out, &Bin(&inner)).expect("msgpack encoding");
    }
    out
}

fn minio_decode(msg: &[u8]) -> Vec<MinioIn> {
    let mut de = rmp_serde::Deserializer::from_read_ref(msg);
    let first = MinioIn::deserialize(&mut de).expect("msgpack message");
    if first.4 != MINIO_OP_MERGED {
        return vec![first];
    }
    (0..first.1)
        .map(|_| {
            let part = BinRef::deserialize(&mut de).expect("merged part");
            rmp_serde::from_slice::<MinioIn>(part.0).expect("inner message")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The benchmarks
// ---------------------------------------------------------------------------------------------

fn bench_workload(c: &mut Criterion, name: &str, frames: &[Frame]) {
    let limits = Limits::default();
    let grid_msg = encode_batch(frames, false);
    let minio_msg = minio_encode(frames);
    assert_eq!(
        decode_batch(grid_msg.clone(), &limits).as_deref(),
        Ok(frames)
    );
    let decoded = minio_decode(&minio_msg);
    assert_eq!(decoded.len(), frames.len());
    assert!(decoded.iter().all(|m| !m.6 .0.is_empty()));

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(frames.len() as u64));
    println!(
        "{name}: {} frames, grid {} bytes, grid+crc {} bytes, MinIO-way {} bytes",
        frames.len(),
        grid_msg.len(),
        encode_batch(frames, true).len(),
        minio_msg.len()
    );

    group.bench_function(BenchmarkId::new("encode", "grid"), |b| {
        b.iter(|| encode_batch(black_box(frames), false));
    });
    group.bench_function(BenchmarkId::new("encode", "grid+crc"), |b| {
        b.iter(|| encode_batch(black_box(frames), true));
    });
    group.bench_function(BenchmarkId::new("encode", "minio"), |b| {
        b.iter(|| minio_encode(black_box(frames)));
    });

    let grid_crc_msg = encode_batch(frames, true);
    // The reader owns each received message and hands it to the decoder; cloning the `Bytes`
    // (one atomic increment) is the benchmark's doing, so it happens outside the timing.
    group.bench_function(BenchmarkId::new("decode", "grid"), |b| {
        b.iter_batched(
            || grid_msg.clone(),
            |msg| decode_batch(msg, &limits),
            BatchSize::SmallInput,
        );
    });
    group.bench_function(BenchmarkId::new("decode", "grid+crc"), |b| {
        b.iter_batched(
            || grid_crc_msg.clone(),
            |msg| decode_batch(msg, &limits),
            BatchSize::SmallInput,
        );
    });
    group.bench_function(BenchmarkId::new("decode", "minio"), |b| {
        b.iter(|| minio_decode(black_box(&minio_msg)));
    });

    group.bench_function(BenchmarkId::new("roundtrip", "grid"), |b| {
        b.iter(|| decode_batch(encode_batch(black_box(frames), false), &limits));
    });
    group.bench_function(BenchmarkId::new("roundtrip", "minio"), |b| {
        b.iter(|| minio_decode(&minio_encode(black_box(frames))));
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    bench_workload(c, "unary512", &unary_frames(512));
    bench_workload(c, "unary64k", &unary_frames(64 << 10));
    bench_workload(c, "batch32x64", &batch_frames());
}

/// `criterion_group!` without its undocumented `pub fn`.
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    codec(&mut c);
}

criterion_main!(benches);
