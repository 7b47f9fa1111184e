//! Stream messages packed in `Items` frames (`PROTOCOL.md` section 12): what goes packed and
//! what as `Data` frames, to a peer that agreed and to one that did not; a peer's mix of both
//! read in order; `Items` frames that break the rules.

#![allow(clippy::unwrap_used)]

mod scripted;

use bytes::{BufMut, Bytes, BytesMut};
use grid_core::frame::{
    decode_frame_bytes, encode_frame, ErrorCode, Frame, FrameError, Limits, FRAME_HEADER_LEN,
};
use grid_core::handshake::Features;
use grid_core::{
    CloseKind, CompressViolation, Config, HandlerSpec, Manager, MuxId, ProtocolViolation,
    RemoteError, RequestReceiver, ResponseSender,
};
use scripted::{base_config, open, Cluster, ScriptedPeer};

/// Sends messages of the lengths its request lists (u32 each, big-endian) with `send_all`.
const SIZES: HandlerSpec = HandlerSpec::named("Items.sizes");
/// The same messages, written by an encoder (`send_encoded`): lengths known only once written.
const ENCODED: HandlerSpec = HandlerSpec::named("Items.encoded");
/// Sends every input message back, in order.
const ECHO: HandlerSpec = HandlerSpec::named("Items.echo");

/// Message `i` of `len` bytes: distinct in every byte position, so a swap or a shift shows.
fn message(i: usize, len: usize) -> Bytes {
    (0..len).map(|k| (i * 31 + k * 7) as u8).collect()
}

fn lengths(req: &Bytes) -> Vec<usize> {
    req.chunks(4)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()) as usize)
        .collect()
}

fn register(m: &Manager) {
    m.register_stream(
        SIZES,
        |_ctx, req: Bytes, _in, mut out: ResponseSender| async move {
            let items = lengths(&req)
                .into_iter()
                .enumerate()
                .map(|(i, l)| message(i, l));
            out.send_all(items)
                .await
                .map_err(|e| RemoteError::application(e.to_string()))
        },
    )
    .unwrap();
    m.register_stream(
        ENCODED,
        |_ctx, req: Bytes, _in, mut out: ResponseSender| async move {
            let lens: Vec<(usize, usize)> = lengths(&req).into_iter().enumerate().collect();
            out.send_encoded(lens, |&(i, l), dst: &mut BytesMut| {
                dst.put_slice(&message(i, l));
                Ok::<_, grid_core::Error>(())
            })
            .await
            .map_err(|e| RemoteError::application(e.to_string()))
        },
    )
    .unwrap();
    m.register_stream(
        ECHO,
        |_ctx, _req: Bytes, input: Option<RequestReceiver>, mut out: ResponseSender| async move {
            let mut input = input.ok_or_else(|| RemoteError::application("no input"))?;
            while let Some(m) = input.recv().await {
                let m = m.map_err(|e| RemoteError::application(e.to_string()))?;
                if out.send(m).await.is_err() {
                    break;
                }
            }
            Ok(())
        },
    )
    .unwrap();
}

async fn cluster(config: Config, attackers: usize) -> Cluster {
    let c = Cluster::start(config, attackers).await;
    register(&c.node);
    register(&c.honest);
    c
}

/// Messages of `mux` as they arrived: `(seq, payload, came packed)`, until its clean `End`.
/// A frame in parts is put together first.
async fn read_stream(peer: &mut ScriptedPeer, mux: MuxId, what: &str) -> Vec<(u32, Bytes, bool)> {
    let mut got = Vec::new();
    let mut parts = BytesMut::new();
    loop {
        let frame = match peer.frame().await {
            Frame::Chunk { mux: m, bytes } if m == mux => {
                parts.extend_from_slice(&bytes);
                let body = parts
                    .get(6..10)
                    .map(|l| u32::from_be_bytes(l.try_into().unwrap()));
                if body.is_none_or(|b| parts.len() < FRAME_HEADER_LEN + b as usize) {
                    continue;
                }
                let limits = Limits::for_payload(64 << 20);
                decode_frame_bytes(std::mem::take(&mut parts).freeze(), &limits).unwrap()
            }
            frame => frame,
        };
        match frame {
            Frame::Items { mux: m, seq, items } if m == mux => {
                for (i, item) in (0u32..).zip(items) {
                    got.push((seq.wrapping_add(i), item, true));
                }
            }
            Frame::Data {
                mux: m,
                seq,
                payload,
            } if m == mux => got.push((seq, payload.unwrap(), false)),
            Frame::End {
                mux: m,
                seq,
                error: None,
            } if m == mux => {
                assert_eq!(seq as usize, got.len(), "{what}: the End's count");
                return got;
            }
            Frame::Ack { .. } | Frame::Credit { .. } | Frame::Pong { .. } => {}
            other => panic!("{what}: unexpected {other:?}"),
        }
    }
}

/// Messages over this go in parts (the 64 KiB chunk size).
const IN_PARTS: usize = 64 << 10;

/// Empty, tiny, at and around the packing bound (4 KiB), long, a run of small ones, then one
/// in parts and more behind it.
fn mixed_lengths() -> Vec<usize> {
    let mut lens = vec![0, 1, 64, 4096, 4097, 0, 64, 20_000, 3, 4095, 60_000, 0, 5];
    lens.extend(std::iter::repeat_n(64, 2500));
    lens.extend([5000, 64, 100_000, 5, 64, 4096, 4097, 4096]);
    lens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_messages_go_packed_only_to_a_peer_that_agreed() {
    let c = cluster(base_config(), 2).await;
    let lens = mixed_lengths();
    let req: Bytes = lens
        .iter()
        .flat_map(|l| (*l as u32).to_be_bytes())
        .collect();
    let (items, chunks) = (Features::ITEMS, Features::CHUNKS);
    for (i, features) in [(0, items.union(chunks)), (1, chunks)] {
        let agreed = features.contains(Features::ITEMS);
        let mut peer = c.attacker_with(i, None, features).await;
        peer.read_eagerly();
        for handler in [SIZES, ENCODED] {
            let what = format!("{} to a peer that offered {features:?}", handler.name);
            let mux = peer.mux();
            let mut open = open(mux, handler, 0, lens.len() as u32 + 1);
            if let Frame::Open { payload, .. } = &mut open {
                *payload = Some(req.clone());
            }
            peer.send(&[open]).await.unwrap();
            let got = read_stream(&mut peer, mux, &what).await;
            assert_eq!(got.len(), lens.len(), "{what}: how many arrived");
            let mut packed = 0;
            let mut after_parts = false;
            for (i, ((seq, item, was_packed), len)) in got.iter().zip(&lens).enumerate() {
                assert_eq!(*seq as usize, i, "{what}: message {i}'s sequence number");
                assert!(
                    *item == message(i, *len),
                    "{what}: message {i} ({len} bytes) differs"
                );
                // At most 4 KiB goes packed, to a peer that agreed; the rest as `Data`. While a
                // message's parts are still queued, the ones behind it may go as `Data` too.
                let packable = agreed && *len <= 4096;
                if !after_parts || !packable {
                    assert_eq!(*was_packed, packable, "{what}: message {i}, {len} bytes");
                }
                after_parts |= *len > IN_PARTS;
                packed += usize::from(*was_packed);
            }
            if agreed {
                assert!(packed > 2500, "{what}: only {packed} packed");
            }
        }
    }
    c.assert_honest_works("after the streams").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_mix_of_items_and_data_frames_is_read_in_order() {
    let c = cluster(base_config(), 1).await;
    let mut peer = c.attacker_with(0, None, Features::ITEMS).await;
    peer.read_eagerly();
    let mux = peer.mux();
    let sent: Vec<Bytes> = (0..9).map(|i| message(i, i * 3)).collect();
    let items = |r: std::ops::Range<usize>| sent[r].to_vec();
    let frames = [
        open(mux, ECHO, 64, 64),
        Frame::Items {
            mux,
            seq: 0,
            items: items(0..3),
        },
        scripted::data(mux, 3, sent[3].clone()),
        Frame::Items {
            mux,
            seq: 4,
            items: items(4..5),
        },
        Frame::Items {
            mux,
            seq: 5,
            items: items(5..9),
        },
        Frame::End {
            mux,
            seq: 9,
            error: None,
        },
    ];
    peer.send(&frames).await.unwrap();
    let got = read_stream(&mut peer, mux, "the echo").await;
    let back: Vec<Bytes> = got.into_iter().map(|(_, b, _)| b).collect();
    assert_eq!(back, sent, "the echo, in order");
    c.assert_honest_works("after the echo").await;
}

/// One batch of one frame: `frame` encoded, then `patch` applied to its bytes.
fn raw_batch(frame: &Frame, patch: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut f = BytesMut::new();
    encode_frame(frame, false, &mut f);
    patch(&mut f);
    let mut batch = BytesMut::from(&[1u8, 0, 0, 1][..]);
    batch.extend_from_slice(&f);
    batch.freeze()
}

/// An `Items` frame of `mux` carrying `n` empty messages from 0.
fn empties(mux: MuxId, n: usize) -> Frame {
    Frame::Items {
        mux,
        seq: 0,
        items: vec![Bytes::new(); n],
    }
}

/// An `Items` frame of `mux` carrying one 3-byte message.
fn abc(mux: MuxId) -> Frame {
    Frame::Items {
        mux,
        seq: 0,
        items: vec![Bytes::from_static(b"abc")],
    }
}

/// One way to break the rules: the peer's features, the frame and how its bytes are patched,
/// and the violation the node must close with.
struct Case {
    what: &'static str,
    features: Features,
    frame: fn(MuxId) -> Frame,
    patch: fn(&mut BytesMut),
    error: ProtocolViolation,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_frames_that_break_the_rules_close_the_link() {
    let items = grid_core::frame::Op::Items;
    let cases = [
        Case {
            what: "from a peer that did not agree",
            features: Features::NONE,
            frame: abc,
            patch: |_| {},
            error: ProtocolViolation::Frame(FrameError::UnknownOp(23)),
        },
        Case {
            what: "a message running past the body",
            features: Features::ITEMS,
            frame: abc,
            // The length of the one message, 3, claims 4.
            patch: |f| f[15] = 4,
            error: ProtocolViolation::Frame(FrameError::BadLength { op: items, len: 9 }),
        },
        Case {
            what: "a length cut short by the end of the body",
            features: Features::ITEMS,
            frame: abc,
            // One byte more in the body: half of a second message's length.
            patch: |f| {
                f[9] += 1;
                f.put_u8(0);
            },
            error: ProtocolViolation::Frame(FrameError::BadLength { op: items, len: 10 }),
        },
        Case {
            what: "an Items frame inside a compressed one",
            features: Features::ITEMS.union(Features::LZ4),
            frame: |mux| {
                let mut inner = BytesMut::new();
                encode_frame(&abc(mux), false, &mut inner);
                Frame::Compressed {
                    mux,
                    raw_len: inner.len() as u32,
                    block: lz4_flex::block::compress(&inner).into(),
                }
            },
            patch: |_| {},
            // Only a call's request or response goes compressed.
            error: ProtocolViolation::Compressed(CompressViolation::BadInner { mux: MuxId(1) }),
        },
        Case {
            what: "more messages than a batch may hold",
            features: Features::ITEMS,
            frame: |mux| empties(mux, 1025),
            patch: |_| {},
            error: ProtocolViolation::Frame(FrameError::TooManyMessages { limit: 1024 }),
        },
    ];
    // Compression on, for the case that needs it: the others offer no `lz4`.
    let config = Config {
        compress_threshold: 1024,
        ..base_config()
    };
    let c = cluster(config, cases.len()).await;
    for (i, case) in cases.iter().enumerate() {
        let what = case.what;
        let mut peer = c.attacker_with(i, None, case.features).await;
        peer.read_eagerly();
        let mux = peer.mux();
        peer.send(&[open(mux, ECHO, 8, 8)]).await.unwrap();
        let _ = peer
            .send_raw(raw_batch(&(case.frame)(mux), case.patch))
            .await;
        match &c.closed_by_node(&mut peer, i, what).await {
            CloseKind::Violation(v) if *v == case.error => {}
            other => panic!("{what}: closed with {other:?}"),
        }
        c.assert_honest_works(what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_items_frame_out_of_sequence_or_credit_ends_only_its_stream() {
    let c = cluster(base_config(), 1).await;
    let mut peer = c.attacker_with(0, None, Features::ITEMS).await;
    peer.read_eagerly();
    let two = || vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")];
    // A gap (the first message numbered 1), then more messages than the 2 credits.
    for (what, seq, items) in [
        ("a gap", 1, two()),
        ("past the credit", 0, vec![Bytes::new(); 3]),
    ] {
        let mux = peer.mux();
        peer.send(&[open(mux, ECHO, 2, 8), Frame::Items { mux, seq, items }])
            .await
            .unwrap();
        // The stream fails as a protocol error; the link carries on.
        let error = loop {
            match peer.frame().await {
                Frame::Error { mux: m, error }
                | Frame::End {
                    mux: m,
                    error: Some(error),
                    ..
                } if m == mux => break error,
                Frame::Ack { .. }
                | Frame::Credit { .. }
                | Frame::Data { .. }
                | Frame::Items { .. } => {}
                other => panic!("{what}: unexpected {other:?}"),
            }
        };
        assert_eq!(error.code, ErrorCode::Protocol, "{what}: {error:?}");
        peer.barrier().await;
    }
    c.assert_honest_works("after the bad streams").await;
}
