//! Compression candidates on a realistic workload (issue 15): msgpack listings, as a storage
//! node sends them (object names, sizes, times, etags, version ids, metadata), encoded the way
//! grid's typed layer encodes (`rmp_serde::to_vec_named`, maps with field names).
//!
//! `cargo bench -p grid-bench --bench compress` (add `-- --quick` for a short run). For each
//! codec and level: the compression ratio, compression and decompression throughput on one
//! thread (MB of uncompressed data per second of that thread's time), and the same on random
//! bytes (incompressible), where the cost of trying is what matters, and of the cheap check that
//! skips it.

use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Serialize)]
struct ObjectInfo {
    bucket: String,
    name: String,
    mod_time: i64,
    size: u64,
    etag: String,
    version_id: String,
    is_latest: bool,
    delete_marker: bool,
    content_type: String,
    storage_class: String,
    parts: u32,
    user_defined: Vec<(String, String)>,
}

/// A listing page of `n` entries, like a `ListObjects` answer between nodes.
fn listing(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let types = [
        "application/octet-stream",
        "image/jpeg",
        "text/plain",
        "application/json",
    ];
    let entries: Vec<ObjectInfo> = (0..n)
        .map(|i| {
            let dir = rng.u32(0..64);
            let mut etag = String::new();
            for _ in 0..16 {
                etag.push_str(&format!("{:02x}", rng.u8(..)));
            }
            let mut vid = String::new();
            for k in 0..16 {
                if matches!(k, 4 | 6 | 8 | 10) {
                    vid.push('-');
                }
                vid.push_str(&format!("{:02x}", rng.u8(..)));
            }
            ObjectInfo {
                bucket: "photos-eu-west".into(),
                name: format!(
                    "tenant-{}/2024/{dir:02}/img_{:08}.jpg",
                    rng.u32(0..8),
                    i * 7 + 3
                ),
                mod_time: 1_700_000_000_000 + rng.i64(0..10_000_000_000),
                size: rng.u64(100..50_000_000),
                etag,
                version_id: vid,
                is_latest: rng.bool(),
                delete_marker: rng.u8(0..20) == 0,
                content_type: types[rng.usize(..types.len())].into(),
                storage_class: "STANDARD".into(),
                parts: rng.u32(1..20),
                user_defined: vec![
                    (
                        "x-amz-meta-owner".into(),
                        format!("user-{}", rng.u32(0..100)),
                    ),
                    ("x-amz-meta-camera".into(), "NIKON D750".into()),
                ],
            }
        })
        .collect();
    rmp_serde::to_vec_named(&entries).expect("encodes")
}

struct Codec {
    name: &'static str,
    compress: fn(&[u8]) -> Vec<u8>,
    decompress: fn(&[u8], usize) -> Vec<u8>,
}

fn lz4_c(b: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress(b)
}
fn lz4_d(b: &[u8], n: usize) -> Vec<u8> {
    lz4_flex::block::decompress(b, n).expect("lz4 round trip")
}
fn zstd1_c(b: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(b, 1).expect("zstd")
}
fn zstd3_c(b: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(b, 3).expect("zstd")
}
fn zstd_neg_c(b: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(b, -3).expect("zstd")
}
fn zstd_d(b: &[u8], n: usize) -> Vec<u8> {
    zstd::bulk::decompress(b, n).expect("zstd round trip")
}

/// Runs `f` over `data` until `min` has passed; MB of `data` per second of one busy thread (a
/// tight loop on one thread: its wall time is its CPU time, on a machine with a core free).
fn rate(min: Duration, data: &[u8], mut f: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    let mut sink = 0usize;
    while start.elapsed() < min {
        sink = sink.wrapping_add(f());
        n += 1;
    }
    std::hint::black_box(sink);
    (n as f64 * data.len() as f64) / start.elapsed().as_secs_f64() / 1e6
}

/// The cheap check grid uses before compressing: LZ4 on the first 4 KiB; below a 10 % saving
/// the payload is sent as it is.
fn worth_it(b: &[u8]) -> bool {
    let sample = &b[..b.len().min(4096)];
    lz4_flex::block::compress(sample).len() * 10 < sample.len() * 9
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let min = if quick {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(1500)
    };
    let codecs = [
        Codec {
            name: "lz4_flex (block)",
            compress: lz4_c,
            decompress: lz4_d,
        },
        Codec {
            name: "zstd -3 (fast)",
            compress: zstd_neg_c,
            decompress: zstd_d,
        },
        Codec {
            name: "zstd 1",
            compress: zstd1_c,
            decompress: zstd_d,
        },
        Codec {
            name: "zstd 3",
            compress: zstd3_c,
            decompress: zstd_d,
        },
    ];
    let mut random = vec![0u8; 256 << 10];
    fastrand::Rng::with_seed(7).fill(&mut random);
    for (what, data) in [
        ("msgpack listing, 1000 entries", listing(1000, 1)),
        ("msgpack listing, 100 entries", listing(100, 2)),
        ("random bytes, 256 KiB", random.clone()),
    ] {
        println!("\n### {what}: {} bytes\n", data.len());
        println!("| codec | ratio | compress MB/s | decompress MB/s |");
        println!("|---|---:|---:|---:|");
        for c in &codecs {
            let packed = (c.compress)(&data);
            assert_eq!((c.decompress)(&packed, data.len()), data);
            let ratio = data.len() as f64 / packed.len() as f64;
            let comp = rate(min, &data, || (c.compress)(&data).len());
            let dec = rate(min, &data, || (c.decompress)(&packed, data.len()).len());
            println!("| {} | {ratio:.2} | {comp:.0} | {dec:.0} |", c.name);
        }
        let check = rate(min, &data, || usize::from(worth_it(&data)));
        println!(
            "| cheap check (LZ4 of the first 4 KiB): {} | | {check:.0} (of the whole payload) | |",
            if worth_it(&data) { "compress" } else { "skip" }
        );
    }
}
