//! The test vectors of `PROTOCOL.md` section 8, checked against the codec.
//!
//! The document is the source of truth. This test reads it, finds every `V<n> <name>` line and the
//! hex block after it, and checks that encoding the typed frames registered here under that name
//! gives exactly those bytes, and that decoding the bytes gives exactly those frames. A vector in the
//! document without frames here, or frames here without a vector in the document, fails the test:
//! the two cannot drift apart.
//!
//! The hex blocks were written by [`spec_lines`], an encoder transcribed field by field from the
//! tables of `PROTOCOL.md` sections 2-5 and sharing no code with the codec, so each vector is
//! checked by two independent encoders. To print the section again after adding a vector:
//! `cargo test -p grid-core --test protocol_vectors -- --ignored --nocapture print_vectors`.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use grid_core::frame::{
    decode_batch, encode_batch, encode_checked_batch, CancelReason, ErrorCode, ErrorRecord, Frame,
    Limits, Metadata, Op, Route,
};
use grid_core::table::{self, HandlerTable};
use grid_core::{HandlerId, MuxId};

const DOC: &str = include_str!("../../PROTOCOL.md");
const SECTION: &str = "## 8. Test vectors";

/// One vector: a whole batch (one WebSocket message).
struct Vector {
    name: &'static str,
    about: &'static str,
    /// A checksum on every frame.
    checksum: bool,
    /// The batch checksum (section 2).
    batch_checksum: bool,
    frames: Vec<Frame>,
    /// The handler-table message of each `Handlers` frame, in order, as section 9 lays it out.
    tables: Vec<SpecTable>,
}

/// A handler-table message as `PROTOCOL.md` section 9 writes it: the `COMPLETE` flag, then each
/// group (subroute, empty for none; its handler ids), in wire order.
#[derive(Clone)]
struct SpecTable {
    complete: bool,
    groups: Vec<(&'static [u8], Vec<u32>)>,
}

impl SpecTable {
    /// Every route the message announces.
    fn routes(&self) -> Vec<Route> {
        self.groups
            .iter()
            .flat_map(|(sub, ids)| {
                ids.iter()
                    .map(move |id| route(*id, (!sub.is_empty()).then_some(*sub)))
            })
            .collect()
    }
}

/// A vector of one `Handlers` frame whose body the crate's table encoder writes from the routes
/// of `spec`, given in reverse (the encoder must put them in order).
fn handlers_vector(name: &'static str, about: &'static str, spec: SpecTable) -> Vector {
    let mut routes = spec.routes();
    routes.reverse();
    let update = table::encode(&routes, spec.complete).unwrap();
    Vector {
        tables: vec![spec],
        ..vector(name, about, vec![Frame::Handlers { update }])
    }
}

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

fn route(handler: u32, subroute: Option<&'static [u8]>) -> Route {
    Route {
        handler: HandlerId(handler),
        subroute: subroute.map(b),
    }
}

fn record(code: ErrorCode, message: &'static [u8]) -> ErrorRecord {
    ErrorRecord {
        code,
        message: b(message),
    }
}

fn vector(name: &'static str, about: &'static str, frames: Vec<Frame>) -> Vector {
    Vector {
        name,
        about,
        checksum: false,
        batch_checksum: false,
        frames,
        tables: Vec::new(),
    }
}

/// Every vector, in the order of the document.
fn vectors() -> Vec<Vector> {
    vec![
        vector(
            "request-subroute-payload",
            "Unary call from the dialer (odd mux) to a handler under a subroute, with a payload.",
            vec![Frame::Request {
                mux: MuxId(1),
                route: route(0x0a0b_0c0d, Some(b"disk1")),
                deadline_ms: 5000,
                metadata: Metadata::new(),
                payload: Some(b(b"ping")),
            }],
        ),
        vector(
            "request-absent-payload",
            "Unary call from the acceptor (even mux): no deadline, no subroute, no payload.",
            vec![Frame::Request {
                mux: MuxId(2),
                route: route(0x0000_0002, None),
                deadline_ms: 0,
                metadata: Metadata::new(),
                payload: None,
            }],
        ),
        vector(
            "response-empty-payload",
            "Successful reply whose payload is present but empty (not the same as absent).",
            vec![Frame::Response {
                mux: MuxId(1),
                result: Ok(Some(Bytes::new())),
            }],
        ),
        vector(
            "response-error",
            "Failed reply: an error record, code 2 (unknown handler).",
            vec![Frame::Response {
                mux: MuxId(2),
                result: Err(record(ErrorCode::UnknownHandler, b"no handler")),
            }],
        ),
        vector(
            "open-two-way",
            "Open a stream with input: 8 messages / 4 KiB caller to callee, 16 / 1 MiB back, initial payload.",
            vec![Frame::Open {
                mux: MuxId(5),
                route: route(0x1122_3344, None),
                deadline_ms: 30_000,
                metadata: Metadata::new(),
                in_cap: 8,
                out_cap: 16,
                in_window: 4096,
                out_window: 1 << 20,
                input: true,
                payload: Some(b(b"hi")),
            }],
        ),
        vector(
            "open-no-input",
            "Open a stream without input (END, so in_cap and in_window 0), under subroute \"a\", no payload.",
            vec![Frame::Open {
                mux: MuxId(7),
                route: route(0x1122_3344, Some(b"a")),
                deadline_ms: 0,
                metadata: Metadata::new(),
                in_cap: 0,
                out_cap: 4,
                in_window: 0,
                out_window: 1,
                input: false,
                payload: None,
            }],
        ),
        vector(
            "ack",
            "The callee accepts stream 5.",
            vec![Frame::Ack { mux: MuxId(5) }],
        ),
        vector(
            "data",
            "Message number 3 of one direction of stream 5.",
            vec![Frame::Data {
                mux: MuxId(5),
                seq: 3,
                payload: Some(b(b"abc")),
            }],
        ),
        vector(
            "credit",
            "32 more messages and 2048 more bytes of window on stream 6.",
            vec![Frame::Credit {
                mux: MuxId(6),
                credits: 32,
                bytes: 2048,
            }],
        ),

        vector(
            "end-error",
            "One direction of stream 5 ends after 4 messages with an application error.",
            vec![Frame::End {
                mux: MuxId(5),
                seq: 4,
                error: Some(record(ErrorCode::Application, b"boom")),
            }],
        ),
        vector(
            "error-unknown-code",
            "A mux failed with a code this version does not know (kept as Other(300)).",
            vec![Frame::Error {
                mux: MuxId(3),
                error: record(ErrorCode::Other(300), b"?"),
            }],
        ),
        vector(
            "cancel",
            "The caller of mux 9 gave up because its deadline passed.",
            vec![Frame::Cancel {
                mux: MuxId(9),
                reason: CancelReason::Deadline,
            }],
        ),
        vector(
            "ping-connection",
            "Connection-level liveness probe (mux 0).",
            vec![Frame::Ping {
                mux: MuxId(0),
                nonce: 0x0102_0304_0506_0708,
            }],
        ),
        vector(
            "pong-stream",
            "Stream-level reply to a ping on stream 5, echoing the nonce.",
            vec![Frame::Pong {
                mux: MuxId(5),
                nonce: 42,
            }],
        ),
        vector(
            "goaway",
            "Graceful close of the connection: code 10 (shutting down).",
            vec![Frame::GoAway {
                error: record(ErrorCode::ShuttingDown, b"bye"),
            }],
        ),
        vector(
            "handshake-hello",
            "A handshake message; here the body is an empty msgpack map (0x80).",
            vec![Frame::Handshake {
                op: Op::Hello,
                payload: b(&[0x80]),
            }],
        ),
        Vector {
            checksum: true,
            ..vector(
                "data-checksum",
                "Message 0 of stream 5 with a CRC-32 trailer over header and body.",
                vec![Frame::Data {
                    mux: MuxId(5),
                    seq: 0,
                    payload: Some(b(b"abc")),
                }],
            )
        },
        vector(
            "batch-of-two",
            "Two frames in one message: the last message of stream 5 and its End.",
            vec![
                Frame::Data {
                    mux: MuxId(5),
                    seq: 7,
                    payload: None,
                },
                Frame::End {
                    mux: MuxId(5),
                    seq: 8,
                    error: None,
                },
            ],
        ),
        handlers_vector(
            "handlers-complete",
            "A complete handler table: two handlers without a subroute, one under \"disk1\".",
            SpecTable {
                complete: true,
                groups: vec![
                    (b"", vec![0x0000_0002, 0xb593_7eee]),
                    (b"disk1", vec![0x0a0b_0c0d]),
                ],
            },
        ),
        handlers_vector(
            "handlers-update",
            "An update of an incomplete table: one more handler, under two subroutes.",
            SpecTable {
                complete: false,
                groups: vec![(b"a", vec![0x1122_3344]), (b"b", vec![0x1122_3344])],
            },
        ),
        vector(
            "credit-bytes-only",
            "The rest of a byte credit larger than one frame carries: no messages, 4 GiB - 1 bytes.",
            vec![Frame::Credit {
                mux: MuxId(6),
                credits: 0,
                bytes: u32::MAX,
            }],
        ),
        Vector {
            batch_checksum: true,
            ..vector(
                "batch-checksum",
                "A batch with the batch checksum: two frames, then a CRC-32 of all the bytes before it.",
                vec![
                    Frame::Credit {
                        mux: MuxId(6),
                        credits: 2,
                        bytes: 128,
                    },
                    Frame::Data {
                        mux: MuxId(5),
                        seq: 0,
                        payload: Some(b(b"abc")),
                    },
                ],
            )
        },
        vector(
            "request-metadata",
            "Unary call with three metadata entries (a non-ASCII value, an empty one), then a payload.",
            vec![Frame::Request {
                mux: MuxId(3),
                route: route(0x0a0b_0c0d, None),
                deadline_ms: 250,
                metadata: metadata(&[("auth", b"\xffk\x00"), ("trace", b"00-ab-01"), ("x", b"")]),
                payload: Some(b(b"hi")),
            }],
        ),
        vector(
            "open-metadata-subroute",
            "Open without input under subroute \"d\", one metadata entry, no payload.",
            vec![Frame::Open {
                mux: MuxId(9),
                route: route(0x1122_3344, Some(b"d")),
                deadline_ms: 0,
                metadata: metadata(&[("tenant", b"7")]),
                in_cap: 0,
                out_cap: 4,
                in_window: 0,
                out_window: 64,
                input: false,
                payload: None,
            }],
        ),
        vector(
            "chunked-response",
            "A Response of mux 2 with payload \"hello, world\" (22 bytes encoded), in two parts.",
            vec![
                Frame::Chunk {
                    mux: MuxId(2),
                    bytes: b(b"\x02\x04\x00\x00\x00\x02\x00\x00\x00\x0chello,"),
                },
                Frame::Chunk {
                    mux: MuxId(2),
                    bytes: b(b" world"),
                },
            ],
        ),
        vector(
            "chunk-abort",
            "The frame in parts on mux 2 is abandoned (its call was cancelled mid-transfer).",
            vec![Frame::ChunkAbort { mux: MuxId(2) }],
        ),
        vector(
            "chunk-ack",
            "The receiver of parts has read 65536 more bytes of them.",
            vec![Frame::ChunkAck { bytes: 65536 }],
        ),
        vector(
            "compressed-response",
            "A Response of mux 2 with payload \"hello hello hello hello hello hello\" (45 bytes encoded), compressed.",
            vec![Frame::Compressed {
                mux: MuxId(2),
                raw_len: 45,
                block: b(b"\xff\x01\x02\x04\0\0\0\x02\0\0\0#hello \x06\0\x04` hello"),
            }],
        ),
        vector(
            "items",
            "Messages 7, 8 and 9 of stream 5, \"one\", an empty one and \"three\", packed in one frame.",
            vec![Frame::Items {
                mux: MuxId(5),
                seq: 7,
                items: vec![b(b"one"), Bytes::new(), b(b"three")],
            }],
        ),
    ]
}

/// Metadata of `entries`, inserted in reverse (the type must put them in order).
fn metadata(entries: &[(&str, &[u8])]) -> Metadata {
    let mut m = Metadata::new();
    for (k, v) in entries.iter().rev() {
        m.insert(k, v).unwrap();
    }
    m
}

// ---------------------------------------------------------------------------------------------
// An independent encoder, transcribed from PROTOCOL.md, that also writes the annotations.
// ---------------------------------------------------------------------------------------------

/// One annotated line of a hex block: fields (each printed as one hex group) and a comment.
type Line = (Vec<Vec<u8>>, String);

fn be32(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn show(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

fn flag_names(fl: u8) -> String {
    let names = [
        (0x01, "END"),
        (0x02, "ERROR"),
        (0x04, "PAYLOAD"),
        (0x08, "SUBROUTE"),
        (0x10, "CHECKSUM"),
        (0x20, "METADATA"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| fl & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if set.is_empty() {
        "no flags".to_owned()
    } else {
        set.join("|")
    }
}

fn payload_line(payload: &[u8], what: &str) -> Option<Line> {
    // An empty payload has no bytes; its presence is in the flags.
    (!payload.is_empty()).then(|| {
        let comment = format!(
            "{what} {} ({})",
            show(payload),
            count(payload.len(), "byte")
        );
        (vec![payload.to_vec()], comment)
    })
}

fn record_lines(r: &ErrorRecord) -> Vec<Line> {
    let code = r.code.to_u16();
    let mut lines = vec![(
        vec![code.to_be_bytes().to_vec()],
        format!("error code {code} ({:?})", r.code),
    )];
    lines.extend(payload_line(&r.message, "message"));
    lines
}

fn subroute_lines(route: &Route) -> Vec<Line> {
    route
        .subroute
        .iter()
        .map(|s| {
            let len = u8::try_from(s.len()).unwrap();
            let comment = format!("subroute: length {len}, {}", show(s));
            (vec![vec![len], s.to_vec()], comment)
        })
        .collect()
}

/// The lines of a metadata block, straight from section 3: a `u16` count, then per entry a
/// one-byte key length, the key, a `u16` value length and the value.
fn metadata_lines(m: &Metadata) -> Vec<Line> {
    if m.is_empty() {
        return Vec::new();
    }
    let n = u16::try_from(m.len()).unwrap();
    let mut lines = vec![(
        vec![n.to_be_bytes().to_vec()],
        format!(
            "metadata: {}",
            count(m.len(), "entry").replace("entrys", "entries")
        ),
    )];
    for (key, value) in m.iter() {
        let klen = u8::try_from(key.len()).unwrap();
        let vlen = u16::try_from(value.len()).unwrap();
        let fields = [
            vec![klen],
            key.as_bytes().to_vec(),
            vlen.to_be_bytes().to_vec(),
            value.to_vec(),
        ]
        .into_iter()
        .filter(|f| !f.is_empty())
        .collect();
        lines.push((
            fields,
            format!(
                "key length {klen}, {}, value length {vlen}, {}",
                show(key.as_bytes()),
                show(value)
            ),
        ));
    }
    lines
}

/// The lines of a handler-table message, straight from section 9.
fn table_lines(t: &SpecTable) -> Vec<Line> {
    let flags = u8::from(t.complete);
    let mut lines = vec![(
        vec![vec![flags]],
        format!(
            "table flags {flags:#04x} ({})",
            if t.complete { "COMPLETE" } else { "none" }
        ),
    )];
    for (sub, ids) in &t.groups {
        let len = u8::try_from(sub.len()).unwrap();
        let comment = if sub.is_empty() {
            "group: no subroute (length 0)".to_owned()
        } else {
            format!("group: subroute length {len}, {}", show(sub))
        };
        lines.push((
            [vec![len], sub.to_vec()]
                .into_iter()
                .filter(|f| !f.is_empty())
                .collect(),
            comment,
        ));
        let n = u16::try_from(ids.len()).unwrap();
        let names: Vec<String> = ids.iter().map(|id| format!("{id:#010x}")).collect();
        lines.push((
            std::iter::once(n.to_be_bytes().to_vec())
                .chain(ids.iter().map(|id| be32(*id)))
                .collect(),
            format!("{}: {}", count(ids.len(), "handler"), names.join(", ")),
        ));
    }
    lines
}

/// `(op, flags, mux, body lines)` of a frame, straight from the tables of sections 3-5 (and 9,
/// for the body of a `Handlers` frame, taken from `tables` in order).
fn spec_frame<'a>(
    frame: &Frame,
    tables: &mut impl Iterator<Item = &'a SpecTable>,
) -> (u8, u8, u32, Vec<Line>) {
    const END: u8 = 0x01;
    const ERROR: u8 = 0x02;
    const PAYLOAD: u8 = 0x04;
    const SUBROUTE: u8 = 0x08;
    const METADATA: u8 = 0x20;
    let call = |handler: HandlerId, deadline: u32| {
        (
            vec![be32(handler.0), be32(deadline)],
            format!("handler {:#010x}, deadline_ms {deadline}", handler.0),
        )
    };
    let mut body = Vec::new();
    let (op, fl, mux) = match frame {
        Frame::Request {
            mux,
            route,
            deadline_ms,
            metadata,
            payload,
        } => {
            body.push(call(route.handler, *deadline_ms));
            body.extend(subroute_lines(route));
            body.extend(metadata_lines(metadata));
            body.extend(payload.as_deref().and_then(|p| payload_line(p, "payload")));
            let fl = if route.subroute.is_some() {
                SUBROUTE
            } else {
                0
            } | if metadata.is_empty() { 0 } else { METADATA }
                | if payload.is_some() { PAYLOAD } else { 0 };
            (1, fl, mux.0)
        }
        Frame::Response { mux, result } => match result {
            Ok(payload) => {
                body.extend(payload.as_deref().and_then(|p| payload_line(p, "payload")));
                (2, if payload.is_some() { PAYLOAD } else { 0 }, mux.0)
            }
            Err(r) => {
                body.extend(record_lines(r));
                (2, ERROR, mux.0)
            }
        },
        Frame::Open {
            mux,
            route,
            deadline_ms,
            in_cap,
            out_cap,
            in_window,
            out_window,
            input,
            metadata,
            payload,
        } => {
            body.push(call(route.handler, *deadline_ms));
            body.push((
                vec![be32(*in_cap), be32(*out_cap)],
                format!("in_cap {in_cap}, out_cap {out_cap}"),
            ));
            body.push((
                vec![be32(*in_window), be32(*out_window)],
                format!("in_window {in_window}, out_window {out_window}"),
            ));
            body.extend(subroute_lines(route));
            body.extend(metadata_lines(metadata));
            body.extend(payload.as_deref().and_then(|p| payload_line(p, "payload")));
            let fl = if *input { 0 } else { END }
                | if route.subroute.is_some() {
                    SUBROUTE
                } else {
                    0
                }
                | if metadata.is_empty() { 0 } else { METADATA }
                | if payload.is_some() { PAYLOAD } else { 0 };
            (3, fl, mux.0)
        }
        Frame::Ack { mux } => (4, 0, mux.0),
        Frame::Data { mux, seq, payload } => {
            body.push((vec![be32(*seq)], format!("seq {seq}")));
            body.extend(payload.as_deref().and_then(|p| payload_line(p, "payload")));
            (5, if payload.is_some() { PAYLOAD } else { 0 }, mux.0)
        }
        Frame::Credit {
            mux,
            credits,
            bytes,
        } => {
            body.push((
                vec![be32(*credits), be32(*bytes)],
                format!("credits {credits}, bytes {bytes}"),
            ));
            (6, 0, mux.0)
        }
        Frame::End { mux, seq, error } => {
            body.push((vec![be32(*seq)], format!("seq {seq}")));
            body.extend(error.iter().flat_map(record_lines));
            (7, if error.is_some() { ERROR } else { 0 }, mux.0)
        }
        Frame::Error { mux, error } => {
            body.extend(record_lines(error));
            (8, 0, mux.0)
        }
        Frame::Cancel { mux, reason } => {
            let r = *reason as u8;
            body.push((vec![vec![r]], format!("reason {r} ({reason:?})")));
            (9, 0, mux.0)
        }
        Frame::Ping { mux, nonce } | Frame::Pong { mux, nonce } => {
            let op = if matches!(frame, Frame::Ping { .. }) {
                10
            } else {
                11
            };
            body.push((
                vec![nonce.to_be_bytes().to_vec()],
                format!("nonce {nonce:#018x}"),
            ));
            (op, 0, mux.0)
        }
        Frame::GoAway { error } => {
            body.extend(record_lines(error));
            (12, 0, 0)
        }
        Frame::Handlers { .. } => {
            body.extend(table_lines(
                tables.next().expect("a table for each Handlers frame"),
            ));
            (18, 0, 0)
        }
        Frame::Handshake { op, payload } => {
            body.push((vec![payload.to_vec()], "msgpack record".to_owned()));
            (*op as u8, 0, 0)
        }
        Frame::Chunk { mux, bytes } => {
            // A first part starts with the header of the frame in parts (section 10).
            let inner = (bytes.len() >= 10 && be32(mux.0) == bytes[2..6])
                .then(|| Op::from_u8(bytes[0]))
                .flatten()
                .filter(|op| matches!(op, Op::Request | Op::Response | Op::Open | Op::Data));
            let rest = match inner {
                Some(op) => {
                    let len = u32::from_be_bytes(bytes[6..10].try_into().unwrap());
                    body.push((
                        vec![bytes[..10].to_vec()],
                        format!(
                            "part: the {op:?} header, {}, mux {}, body {}",
                            flag_names(bytes[1]),
                            mux.0,
                            count(len as usize, "byte")
                        ),
                    ));
                    &bytes[10..]
                }
                None => &bytes[..],
            };
            body.push((
                vec![rest.to_vec()],
                format!("part: {} ({})", show(rest), count(rest.len(), "byte")),
            ));
            (19, 0, mux.0)
        }
        Frame::ChunkAbort { mux } => (20, 0, mux.0),
        Frame::Compressed {
            mux,
            raw_len,
            block,
        } => {
            body.push((vec![be32(*raw_len)], format!("raw_len {raw_len}")));
            body.push((
                vec![block.to_vec()],
                format!("LZ4 block ({})", count(block.len(), "byte")),
            ));
            (22, 0, mux.0)
        }
        Frame::ChunkAck { bytes } => {
            body.push((vec![be32(*bytes)], format!("bytes {bytes}")));
            (21, 0, 0)
        }
        Frame::Items { mux, seq, items } => {
            body.push((vec![be32(*seq)], format!("first seq {seq}")));
            for item in items {
                let len = u16::try_from(item.len()).unwrap();
                let mut fields = vec![len.to_be_bytes().to_vec()];
                let mut about = format!("message length {len}");
                if !item.is_empty() {
                    fields.push(item.to_vec());
                    about = format!("{about}, {}", show(item));
                }
                body.push((fields, about));
            }
            (23, 0, mux.0)
        }
    };
    (op, fl, mux, body)
}

/// The annotated lines of a whole batch.
fn spec_lines(v: &Vector) -> Vec<Line> {
    let (frames, checksum) = (&v.frames, v.checksum);
    let mut tables = v.tables.iter();
    const CHECKSUM: u8 = 0x10;
    let n = u16::try_from(frames.len()).unwrap();
    let (batch_flags, flags_name) = if v.batch_checksum {
        (1, "flags 0x01 (CHECKSUM)")
    } else {
        (0, "flags 0")
    };
    let mut lines: Vec<Line> = vec![(
        vec![vec![1], vec![batch_flags], n.to_be_bytes().to_vec()],
        format!(
            "batch: version 1, {flags_name}, {}",
            count(frames.len(), "frame")
        ),
    )];
    for frame in frames {
        let (op, fl, mux, body) = spec_frame(frame, &mut tables);
        let fl = fl | if checksum { CHECKSUM } else { 0 };
        let body_len: usize = body.iter().flat_map(|(f, _)| f).map(Vec::len).sum();
        let body_len = u32::try_from(body_len).unwrap();
        let header: Line = (
            vec![vec![op], vec![fl], be32(mux), be32(body_len)],
            format!(
                "{:?}, {}, mux {mux}, body {}",
                Op::from_u8(op).unwrap(),
                flag_names(fl),
                count(body_len as usize, "byte")
            ),
        );
        let mut covered: Vec<u8> = header.0.concat();
        covered.extend(body.iter().flat_map(|(f, _)| f.concat()));
        lines.push(header);
        lines.extend(body);
        if checksum {
            let crc = crc32fast::hash(&covered);
            lines.push((
                vec![be32(crc)],
                format!("CRC-32 of the {} bytes above", covered.len()),
            ));
        }
    }
    if v.batch_checksum {
        let all = line_bytes(&lines);
        lines.push((
            vec![be32(crc32fast::hash(&all))],
            format!("batch checksum: CRC-32 of all {} bytes above", all.len()),
        ));
    }
    lines
}

/// The codec's encoding of a vector.
fn codec_bytes(v: &Vector) -> Bytes {
    if v.batch_checksum {
        assert!(!v.checksum, "grid's encoder does not mix the two");
        encode_checked_batch(&v.frames)
    } else {
        encode_batch(&v.frames, v.checksum)
    }
}

fn line_bytes(lines: &[Line]) -> Vec<u8> {
    lines.iter().flat_map(|(f, _)| f.concat()).collect()
}

/// The vector as it appears in the document.
fn render(n: usize, v: &Vector) -> String {
    let lines = spec_lines(v);
    let mut out = format!("V{n} {}\n\n```hex\n# {}\n", v.name, v.about);
    for (fields, comment) in &lines {
        let hex: Vec<String> = fields.iter().map(hex::encode).collect();
        out.push_str(&format!("{:<40}# {comment}\n", hex.join(" ")));
    }
    out.push_str("```\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Reading the document
// ---------------------------------------------------------------------------------------------

struct DocVector {
    number: usize,
    name: String,
    bytes: Vec<u8>,
}

/// Every `V<n> <name>` line of section 8 and the hex block that follows it. In a hex block, `#`
/// starts a comment and whitespace separates groups of hex digits.
fn doc_vectors() -> Vec<DocVector> {
    let (_, section) = DOC.split_once(SECTION).expect("PROTOCOL.md has section 8");
    // Section 8 ends where the next one starts.
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut lines = section.lines();
    let mut found = Vec::new();
    while let Some(line) = lines.next() {
        let mut words = line.split_whitespace();
        let Some(number) = words
            .next()
            .and_then(|w| w.strip_prefix('V'))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let name = words.next().expect("a vector line names the vector");
        let mut block = lines
            .by_ref()
            .skip_while(|l| l.trim().is_empty())
            .take_while(|l| l.trim() != "```");
        let fence = block.next().unwrap_or_default();
        assert_eq!(
            fence.trim(),
            "```hex",
            "V{number} {name}: a ```hex block must follow"
        );
        let hex: String = block
            .map(|l| l.split('#').next().unwrap_or_default())
            .flat_map(str::split_whitespace)
            .collect();
        let bytes = hex::decode(&hex).unwrap_or_else(|e| panic!("V{number} {name}: bad hex: {e}"));
        found.push(DocVector {
            number,
            name: name.to_owned(),
            bytes,
        });
    }
    found
}

// ---------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------

#[test]
fn document_and_frames_list_the_same_vectors_in_order() {
    let doc: Vec<(usize, String)> = doc_vectors()
        .into_iter()
        .map(|v| (v.number, v.name))
        .collect();
    let here: Vec<(usize, String)> = vectors()
        .iter()
        .enumerate()
        .map(|(i, v)| (i + 1, v.name.to_owned()))
        .collect();
    assert_eq!(
        doc, here,
        "PROTOCOL.md section 8 and this test disagree on the vectors"
    );
    assert!(here.len() >= 10);
}

#[test]
fn every_vector_encodes_to_the_documented_bytes() {
    let frames = vectors();
    for doc in doc_vectors() {
        let v = frames.iter().find(|v| v.name == doc.name).unwrap();
        let encoded = codec_bytes(v);
        assert_eq!(
            hex::encode(&encoded),
            hex::encode(&doc.bytes),
            "V{} {}: the codec's encoding differs from PROTOCOL.md",
            doc.number,
            doc.name
        );
    }
}

#[test]
fn every_vector_decodes_to_its_frames() {
    let frames = vectors();
    for doc in doc_vectors() {
        let v = frames.iter().find(|v| v.name == doc.name).unwrap();
        let limits = Limits {
            items: true,
            ..Limits::default()
        };
        let decoded = decode_batch(Bytes::from(doc.bytes), &limits);
        assert_eq!(
            decoded.as_ref(),
            Ok(&v.frames),
            "V{} {}",
            doc.number,
            doc.name
        );
    }
}

#[test]
fn the_independent_spec_encoder_agrees_with_the_codec() {
    for v in vectors() {
        let spec = line_bytes(&spec_lines(&v));
        let codec = codec_bytes(&v);
        assert_eq!(hex::encode(spec), hex::encode(codec), "{}", v.name);
    }
}

#[test]
fn every_table_vector_decodes_to_its_routes() {
    let mut checked = 0;
    for v in vectors() {
        let bodies = v.frames.iter().filter_map(|f| match f {
            Frame::Handlers { update } => Some(update),
            _ => None,
        });
        for (update, spec) in bodies.zip(&v.tables) {
            let table = HandlerTable::decode(update).unwrap();
            assert_eq!(table.routes(), spec.routes(), "{}", v.name);
            assert_eq!(table.is_complete(), spec.complete, "{}", v.name);
            checked += 1;
        }
    }
    assert_eq!(checked, 2);
}

#[test]
fn the_document_shows_the_annotated_vectors_verbatim() {
    // The comments in the document are generated too; a hand edit to a block must be redone with
    // `print_vectors`, not patched.
    for (i, v) in vectors().iter().enumerate() {
        let text = render(i + 1, v);
        assert!(
            DOC.contains(&text),
            "PROTOCOL.md lacks this exact block (regenerate with print_vectors):\n{text}"
        );
    }
}

// Not a check but a generator: it prints section 8 of PROTOCOL.md from the typed frames, for
// regenerating the document after a deliberate format change. The checks are the tests above,
// which compare the document with the codec; this one is ignored because it asserts nothing.
#[test]
#[ignore = "prints PROTOCOL.md section 8's vectors; run with --ignored --nocapture"]
fn print_vectors() {
    for (i, v) in vectors().iter().enumerate() {
        println!("{}", render(i + 1, v));
    }
}
