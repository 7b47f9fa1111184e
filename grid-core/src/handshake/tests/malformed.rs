//! Bad input: undecodable or oversized records, other versions, unknown fields, frames out of
//! order.

use super::*;

fn hello_frame(bytes: Vec<u8>) -> Frame {
    records::handshake_frame(Op::Hello, bytes)
}

fn acceptor_on(bytes: Vec<u8>) -> Rejection {
    let (_, a) = pair();
    AcceptorHandshake::new(acceptor_params(a, 2))
        .on_hello(hello_frame(bytes), T0, &anyone, &auth())
        .expect_err("refused")
}

#[derive(Serialize)]
struct LooseHello<'a> {
    version: u8,
    from: &'a str,
    to: &'a str,
    #[serde(with = "serde_bin")]
    instance: &'a [u8],
    time_ms: i64,
    #[serde(with = "serde_bin")]
    nonce: &'a [u8],
    checksum: bool,
    max_payload: u64,
    future_field: &'a str,
}

mod serde_bin {
    pub(super) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
}

fn loose_hello<'a>(from: &'a str, to: &'a str) -> LooseHello<'a> {
    LooseHello {
        version: PROTOCOL_VERSION,
        from,
        to,
        instance: &[0xd1; INSTANCE_LEN],
        time_ms: T0,
        nonce: &[1; NONCE_LEN],
        checksum: false,
        max_payload: 1,
        future_field: "added in a later version",
    }
}

#[test]
fn handshake_malformed_hello_is_refused() {
    let (d, a) = pair();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\xff\x00not msgpack".to_vec()),
        ("empty", vec![]),
        ("not a map", encode(&(1u8, 2u8))),
        ("nonce of 31 bytes", {
            let mut h = loose_hello(d, a);
            h.nonce = &[1; 31];
            encode(&h)
        }),
        ("nonce as an array", {
            #[derive(Serialize)]
            struct H<'a> {
                version: u8,
                from: &'a str,
                to: &'a str,
                instance: [u8; 16],
                time_ms: i64,
                nonce: [u8; 32],
                checksum: bool,
                max_payload: u64,
            }
            encode(&H {
                version: PROTOCOL_VERSION,
                from: d,
                to: a,
                instance: [0; 16],
                time_ms: T0,
                nonce: [0; 32],
                checksum: false,
                max_payload: 0,
            })
        }),
        (
            "control characters in a name",
            encode(&loose_hello("http://evil\n:1", a)),
        ),
        ("empty name", encode(&loose_hello("", a))),
        ("trailing bytes", {
            let mut b = encode(&loose_hello(d, a));
            b.push(0xc0);
            b
        }),
        ("missing field", {
            #[derive(Serialize)]
            struct H {
                version: u8,
            }
            encode(&H {
                version: PROTOCOL_VERSION,
            })
        }),
    ];
    for (what, bytes) in cases {
        let rejection = acceptor_on(bytes);
        assert!(
            matches!(
                rejection.error,
                HandshakeError::Malformed { op: Op::Hello, .. }
            ),
            "{what}: {:?}",
            rejection.error
        );
        let (code, reason) = reject_of(rejection.frame.as_ref().expect("a Reject"));
        assert_eq!(code, RejectCode::Malformed, "{what}");
        assert!(
            reason.starts_with("Hello record") || reason.starts_with('`'),
            "{what}: {reason}"
        );
    }
}

#[test]
fn handshake_malformed_answers_are_refused() {
    let (d, a) = pair();
    let garbage = Bytes::from_static(b"\x93\x01");

    let (dialer, _) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let r = dialer
        .on_welcome(
            Frame::Handshake {
                op: Op::Welcome,
                payload: garbage.clone(),
            },
            T0,
            &auth(),
        )
        .expect_err("garbage Welcome");
    assert!(matches!(
        r.error,
        HandshakeError::Malformed {
            op: Op::Welcome,
            ..
        }
    ));
    assert!(r.frame.is_some());

    // A Welcome whose signed body is garbage.
    let (dialer, _) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let bad_body = encode(&SignedRecord {
        body: b"\xc1".to_vec(),
        proof: vec![0; 32],
    });
    let r = dialer
        .on_welcome(records::handshake_frame(Op::Welcome, bad_body), T0, &auth())
        .expect_err("garbage body");
    assert!(matches!(
        r.error,
        HandshakeError::Malformed {
            op: Op::Welcome,
            ..
        }
    ));

    // Garbage Confirm, garbage Ready, garbage Reject.
    let (dialer, hello) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let (welcome, acceptor) = AcceptorHandshake::new(acceptor_params(a, 2))
        .on_hello(hello, T0, &anyone, &auth())
        .expect("hello");
    let (_, dialer) = dialer.on_welcome(welcome, T0, &auth()).expect("welcome");
    let r = acceptor
        .on_confirm(
            Frame::Handshake {
                op: Op::Confirm,
                payload: garbage.clone(),
            },
            &auth(),
        )
        .expect_err("garbage Confirm");
    assert!(matches!(
        r.error,
        HandshakeError::Malformed {
            op: Op::Confirm,
            ..
        }
    ));

    let r = dialer
        .on_ready(Frame::Handshake {
            op: Op::Reject,
            payload: garbage,
        })
        .expect_err("garbage Reject");
    assert!(matches!(
        r.error,
        HandshakeError::Malformed { op: Op::Reject, .. }
    ));
    assert!(
        r.frame.is_none(),
        "nobody answers a Reject, even a broken one"
    );
}

#[test]
fn handshake_malformed_ready_is_refused() {
    let (d, a) = pair();
    let (dialer, hello) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let (welcome, _) = AcceptorHandshake::new(acceptor_params(a, 2))
        .on_hello(hello, T0, &anyone, &auth())
        .expect("hello");
    let (_, dialer) = dialer.on_welcome(welcome, T0, &auth()).expect("welcome");
    let r = dialer
        .on_ready(records::handshake_frame(Op::Ready, vec![0x01]))
        .expect_err("Ready that is not a map");
    assert!(matches!(
        r.error,
        HandshakeError::Malformed { op: Op::Ready, .. }
    ));
}

#[test]
fn handshake_oversized_records_are_refused() {
    let (d, a) = pair();
    let mut big = encode(&loose_hello(d, a));
    big.resize(MAX_RECORD_LEN + 1, 0);
    let rejection = acceptor_on(big);
    assert!(matches!(
        &rejection.error,
        HandshakeError::Malformed { detail, .. }
            if detail == &format!("Hello record of {} bytes exceeds the 4096-byte limit", MAX_RECORD_LEN + 1)
    ));

    let long_name = format!("http://{}:9000", "x".repeat(MAX_NAME_LEN));
    let rejection = acceptor_on(encode(&loose_hello(&long_name, a)));
    assert!(matches!(
        &rejection.error,
        HandshakeError::Malformed { detail, .. } if detail.contains("1024-byte limit")
    ));
    // The error does not carry the oversized name.
    assert!(rejection.error.peer().is_empty());
}

#[test]
fn handshake_version_mismatch_is_refused_with_bad_version() {
    let (d, a) = pair();
    // A v2 Hello whose other fields changed shape entirely.
    #[derive(Serialize)]
    struct HelloV2<'a> {
        version: u8,
        from: &'a str,
        nonce: u64,
    }
    let rejection = acceptor_on(encode(&HelloV2 {
        version: 2,
        from: d,
        nonce: 7,
    }));
    assert_eq!(
        rejection.error,
        HandshakeError::Version {
            peer: d.to_owned(),
            ours: PROTOCOL_VERSION,
            theirs: 2
        }
    );
    let frame = *rejection.frame.expect("a Reject");
    assert_eq!(
        reject_of(&frame),
        (
            RejectCode::BadVersion,
            "we speak protocol version 1, you speak 2".to_owned()
        )
    );
    let (dialer, _) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let seen = dialer.on_welcome(frame, T0, &auth()).expect_err("rejected");
    assert_eq!(seen.error.code(), RejectCode::BadVersion);

    // A Welcome of another version: the dialer refuses it.
    #[derive(Serialize)]
    struct BodyV2 {
        version: u8,
    }
    let (dialer, _) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let welcome = encode(&SignedRecord {
        body: encode(&BodyV2 { version: 9 }),
        proof: vec![],
    });
    let r = dialer
        .on_welcome(records::handshake_frame(Op::Welcome, welcome), T0, &auth())
        .expect_err("v9");
    assert!(matches!(r.error, HandshakeError::Version { theirs: 9, .. }));
    assert_eq!(
        reject_of(&r.frame.expect("a Reject")).0,
        RejectCode::BadVersion
    );
}

#[test]
fn handshake_records_with_unknown_fields_still_work() {
    let (d, a) = pair();
    // A Hello from a later version with an extra field: decodes, and the proofs cover its exact
    // bytes, extra field included.
    let hello = hello_frame(encode(&loose_hello(d, a)));
    let (welcome, acceptor) = AcceptorHandshake::new(acceptor_params(a, 2))
        .on_hello(hello.clone(), T0, &anyone, &auth())
        .expect("extra field ignored");
    assert_eq!(acceptor.claimed_peer(), d);
    // (The real dialer's own Hello differs, so check the proof the way a newer dialer would.)
    let signed: SignedRecord = records::decode("Welcome", &payload(&welcome)).expect("decodes");
    assert!(auth().verify(
        a,
        &transcript(WELCOME_TAG, &[&payload(&hello), &signed.body]),
        &signed.proof
    ));

    // A Welcome body from a later version with an extra field: the dialer verifies the exact
    // body bytes, so the proof still checks and the extra field is ignored.
    #[derive(Serialize)]
    struct WelcomeBodyV1_1<'a> {
        version: u8,
        from: &'a str,
        #[serde(with = "serde_bin")]
        instance: &'a [u8],
        time_ms: i64,
        #[serde(with = "serde_bin")]
        nonce: &'a [u8],
        checksum: bool,
        max_payload: u64,
        compression: &'a str,
    }
    let (dialer, hello) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let body = encode(&WelcomeBodyV1_1 {
        version: PROTOCOL_VERSION,
        from: a,
        instance: &[7; INSTANCE_LEN],
        time_ms: T0,
        nonce: &[8; NONCE_LEN],
        checksum: false,
        max_payload: 5,
        compression: "zstd",
    });
    let proof = auth().prove(
        "unused",
        &transcript(WELCOME_TAG, &[&payload(&hello), &body]),
    );
    let welcome = records::handshake_frame(Op::Welcome, encode(&SignedRecord { body, proof }));
    let (_, dialer) = dialer
        .on_welcome(welcome, T0, &auth())
        .expect("extra Welcome field ignored, proof intact");
    assert_eq!(dialer.peer().max_payload, 5);
    assert_eq!(dialer.peer().instance, [7; INSTANCE_LEN]);
}

#[test]
fn handshake_unexpected_frames_are_refused() {
    let (d, a) = pair();
    let acceptor = || AcceptorHandshake::new(acceptor_params(a, 2));

    // A Confirm before any Hello.
    let r = acceptor()
        .on_hello(
            records::handshake_frame(Op::Confirm, vec![0x80]),
            T0,
            &anyone,
            &auth(),
        )
        .expect_err("out of order");
    assert_eq!(
        r.error,
        HandshakeError::UnexpectedFrame {
            peer: String::new(),
            got: Op::Confirm,
            expected: Op::Hello
        }
    );
    assert_eq!(
        reject_of(&r.frame.expect("a Reject")).0,
        RejectCode::Unexpected
    );

    // A call before the handshake.
    let r = acceptor()
        .on_hello(
            Frame::Ping {
                mux: MuxId::CONNECTION,
                nonce: 1,
            },
            T0,
            &anyone,
            &auth(),
        )
        .expect_err("not a handshake frame");
    assert!(matches!(
        r.error,
        HandshakeError::UnexpectedFrame { got: Op::Ping, .. }
    ));

    // A second Welcome where Ready was due.
    let (dialer, hello) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let (welcome, _) = acceptor()
        .on_hello(hello, T0, &anyone, &auth())
        .expect("hello");
    let (_, dialer) = dialer
        .on_welcome(welcome.clone(), T0, &auth())
        .expect("welcome");
    let r = dialer.on_ready(welcome).expect_err("Welcome again");
    assert!(matches!(
        r.error,
        HandshakeError::UnexpectedFrame {
            got: Op::Welcome,
            expected: Op::Ready,
            ..
        }
    ));
}

#[test]
fn handshake_peer_reject_reasons_are_bounded_and_sanitized() {
    let (d, a) = pair();
    let reason = format!("line one\nline two {}", "x".repeat(3000));
    let frame = records::handshake_frame(Op::Reject, encode(&RejectRecord { code: 200, reason }));
    let (dialer, _) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let seen = dialer.on_welcome(frame, T0, &auth()).expect_err("rejected");
    let HandshakeError::Rejected { code, reason, .. } = seen.error else {
        panic!("{:?}", seen.error)
    };
    assert_eq!(code, RejectCode::Other(200));
    assert!(reason.len() <= MAX_REASON_LEN);
    assert!(reason.starts_with("line one\u{fffd}line two"), "{reason}");
}
