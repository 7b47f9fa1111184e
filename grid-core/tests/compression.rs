//! Compressed requests and responses (issue 15, `PROTOCOL.md` section 11): round trips both
//! ways, in parts too; incompressible payloads sent as they are; a peer with compression off;
//! peers that break the rules.

#![allow(clippy::unwrap_used)]

mod scripted;

use bytes::Bytes;
use grid_core::frame::Frame;
use grid_core::handshake::Features;
use grid_core::{
    CloseKind, CompressViolation, Config, Connection, HandlerSpec, MuxId, ProtocolViolation,
    RemoteError,
};
use scripted::{base_config, Cluster, WAIT};

const MIRROR: HandlerSpec = HandlerSpec::named("Compression.mirror");

fn compressing() -> Config {
    Config {
        compress_threshold: 1024,
        max_inbound_bytes: 64 << 20,
        ..base_config()
    }
}

async fn cluster(node: Config, honest: Config, attackers: usize) -> Cluster {
    let c = Cluster::start_with(node, honest, attackers).await;
    for m in [&c.node, &c.honest] {
        m.register_unary(
            MIRROR,
            |_ctx, b: Bytes| async move { Ok::<_, RemoteError>(b) },
        )
        .unwrap();
    }
    c
}

/// Text that compresses about as a msgpack listing does.
fn listing(len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len + 100);
    let mut i = 0u64;
    while out.len() < len {
        let line = format!(
            "{{name: tenant-{}/2024/{:02}/img_{:08}.jpg, size: {}, etag: {:016x}}}",
            i % 7,
            i % 31,
            i * 7 + 3,
            (i * 7919) % 50_000_000,
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        );
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    out.truncate(len);
    Bytes::from(out)
}

fn random(len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    fastrand::Rng::with_seed(5).fill(&mut v);
    Bytes::from(v)
}

/// Mirrors `payload` over `conn`; returns the bytes the caller sent for it.
async fn mirror(conn: &Connection, payload: Bytes, what: &str) -> u64 {
    let before = conn.stats().bytes_out;
    let got = tokio::time::timeout(WAIT * 4, conn.request(MIRROR.id, payload.clone()))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(got == payload, "{what}: the bytes differ");
    conn.stats().bytes_out - before
}

fn conns(c: &Cluster) -> [(Connection, &'static str); 2] {
    [
        (c.honest.connection(c.node.name()).unwrap(), "peer -> node"),
        (c.node.connection(c.honest.name()).unwrap(), "node -> peer"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressible_calls_travel_compressed_both_ways_whole_and_in_parts() {
    let c = cluster(compressing(), compressing(), 0).await;
    for (conn, dir) in conns(&c) {
        for len in [2000, 300_000, 8 << 20] {
            let sent = mirror(&conn, listing(len), &format!("{dir}: {len}")).await;
            assert!(
                sent * 3 < len as u64 * 2,
                "{dir}: {len} bytes of listing cost {sent} bytes on the wire"
            );
        }
        // Under the threshold: as it is.
        let sent = mirror(&conn, listing(1000), dir).await;
        assert!(sent >= 1000, "{dir}: {sent}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompressible_payloads_go_as_they_are() {
    let c = cluster(compressing(), compressing(), 0).await;
    for (conn, dir) in conns(&c) {
        let len = 300_000;
        let sent = mirror(&conn, random(len), dir).await;
        assert!(sent >= len as u64, "{dir}: {sent}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_compression_off_gets_plain_frames() {
    let off = Config {
        max_inbound_bytes: 64 << 20,
        ..base_config()
    };
    let c = cluster(compressing(), off, 0).await;
    for (conn, dir) in conns(&c) {
        let len = 300_000;
        let sent = mirror(&conn, listing(len), dir).await;
        assert!(sent >= len as u64, "{dir}: nothing compressed, {sent}");
    }
}

/// What the peer offers, the frame's `raw_len` and block, and the violation expected.
type Case = (
    &'static str,
    Features,
    u32,
    Bytes,
    fn(&CompressViolation) -> bool,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_frames_that_break_the_rules_close_the_link() {
    let c = cluster(compressing(), compressing(), 3).await;
    let cases: [Case; 3] = [
        (
            "from a peer that did not agree",
            Features::CHUNKS,
            100,
            Bytes::from_static(b"\x10hello"),
            |v| matches!(v, CompressViolation::NotAgreed),
        ),
        (
            "a corrupt block",
            Features::LZ4,
            100,
            Bytes::from_static(b"\xff\xff\xff\xff"),
            |v| matches!(v, CompressViolation::Corrupt { .. }),
        ),
        (
            "a length over the limit",
            Features::LZ4,
            96 << 20,
            Bytes::from_static(b"\x10hello"),
            |v| matches!(v, CompressViolation::TooLarge { .. }),
        ),
    ];
    for (i, (what, features, raw_len, block, expect)) in cases.into_iter().enumerate() {
        let mut peer = c.attacker_with(i, None, features).await;
        let mux: MuxId = peer.mux();
        let _ = peer
            .send(&[Frame::Compressed {
                mux,
                raw_len,
                block,
            }])
            .await;
        match &c.closed_by_node(&mut peer, i, what).await {
            CloseKind::Violation(ProtocolViolation::Compressed(v)) if expect(v) => {}
            other => panic!("{what}: closed with {other:?}"),
        }
        c.assert_honest_works(what).await;
    }
}
