//! Complete handshakes, authentication failures and replays.

use super::*;

#[test]
fn handshake_happy_path() {
    let (d, a) = pair();
    let (seen_by_dialer, seen_by_acceptor) = run(
        dialer_params(d, a, 1, T0),
        acceptor_params(a, 2),
        &auth(),
        &auth(),
        1500,
    )
    .expect("handshake completes");

    assert_eq!(seen_by_dialer.name, a);
    assert_eq!(seen_by_dialer.instance, [0xa1; INSTANCE_LEN]);
    assert_eq!(seen_by_dialer.max_payload, 2 << 20);
    assert!(!seen_by_dialer.checksum);
    // Welcome stamped at T0+1510 (acceptor clock), our midpoint is T0+10: 1.5 s ahead.
    assert_eq!(seen_by_dialer.clock_offset_ms, 1500);

    assert_eq!(seen_by_acceptor.name, d);
    assert_eq!(seen_by_acceptor.instance, [0xd1; INSTANCE_LEN]);
    assert_eq!(seen_by_acceptor.max_payload, 1 << 20);
    assert!(!seen_by_acceptor.checksum);
    // Hello stamped T0, received at acceptor time T0+1510.
    assert_eq!(seen_by_acceptor.clock_offset_ms, -1510);
}

#[test]
fn handshake_frames_are_connection_level_handshake_ops() {
    let (d, a) = pair();
    let (dialer, hello) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    assert_eq!((hello.op(), hello.mux()), (Op::Hello, MuxId::CONNECTION));
    assert_eq!(dialer.remote(), a);
    let (welcome, acceptor) = AcceptorHandshake::new(acceptor_params(a, 2))
        .on_hello(hello, T0, &anyone, &auth())
        .expect("hello accepted");
    assert_eq!(acceptor.claimed_peer(), d);
    assert_eq!(
        (welcome.op(), welcome.mux()),
        (Op::Welcome, MuxId::CONNECTION)
    );
    let (confirm, dialer) = dialer.on_welcome(welcome, T0, &auth()).expect("welcome ok");
    assert_eq!(dialer.peer().name, a);
    assert_eq!(confirm.op(), Op::Confirm);
    let (ready, _) = acceptor.on_confirm(confirm, &auth()).expect("confirm ok");
    assert_eq!(ready.op(), Op::Ready);
    assert_eq!(payload(&ready).as_ref(), [0x80]);
}

#[test]
fn handshake_checksum_is_on_when_either_side_wants_it() {
    let (d, a) = pair();
    for (dialer_wants, acceptor_wants) in
        [(false, false), (true, false), (false, true), (true, true)]
    {
        let mut dp = dialer_params(d, a, 1, T0);
        dp.checksum = dialer_wants;
        let mut ap = acceptor_params(a, 2);
        ap.checksum = acceptor_wants;
        let (by_d, by_a) = run(dp, ap, &auth(), &auth(), 0).expect("handshake completes");
        let want = dialer_wants || acceptor_wants;
        assert_eq!((by_d.checksum, by_a.checksum), (want, want));
    }
}

#[test]
fn handshake_dialer_with_wrong_secret_is_refused_at_confirm() {
    let (d, a) = pair();
    let (dialer, hello) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let (welcome, acceptor) = AcceptorHandshake::new(acceptor_params(a, 2))
        .on_hello(hello, T0, &anyone, &auth())
        .expect("hello accepted");
    // The dialer cannot check the Welcome's proof with its wrong secret either; skip that check
    // with an authenticator that accepts anything, to reach the acceptor's check of the Confirm.
    let (confirm, dialer) = dialer
        .on_welcome(welcome, T0, &TrustingProver(HmacAuth::new("wrong")))
        .expect("welcome accepted by the trusting dialer");
    let rejection = acceptor
        .on_confirm(confirm, &auth())
        .expect_err("bad proof refused");
    assert!(matches!(
        &rejection.error,
        HandshakeError::Refused { code: RejectCode::BadProof, peer, .. } if peer == d
    ));
    let frame = *rejection.frame.expect("a Reject to send");
    assert_eq!(reject_of(&frame).0, RejectCode::BadProof);

    // The dialer sees the acceptor's reason.
    let seen = dialer.on_ready(frame).expect_err("rejected");
    assert!(seen.frame.is_none(), "nobody answers a Reject");
    assert!(seen.error.is_remote());
    assert_eq!(seen.error.code(), RejectCode::BadProof);
    let line = seen.error.to_string();
    assert!(
        line.starts_with(&format!("peer {a} rejected us: ")),
        "{line}"
    );
    assert!(line.contains("proof does not verify"), "{line}");
}

#[test]
fn handshake_acceptor_with_wrong_secret_is_refused_by_the_dialer() {
    let (d, a) = pair();
    let (dialer, hello) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let (welcome, acceptor) = AcceptorHandshake::new(acceptor_params(a, 2))
        .on_hello(hello, T0, &anyone, &HmacAuth::new("impostor"))
        .expect("policy checks pass");
    let rejection = dialer
        .on_welcome(welcome, T0, &auth())
        .expect_err("mutual auth: the dialer refuses the impostor");
    assert!(matches!(
        &rejection.error,
        HandshakeError::Refused { code: RejectCode::BadProof, peer, .. } if peer == a
    ));
    let frame = *rejection.frame.expect("a Reject to send");
    let seen = acceptor
        .on_confirm(frame, &HmacAuth::new("impostor"))
        .expect_err("rejected");
    assert!(matches!(
        seen.error,
        HandshakeError::Rejected {
            code: RejectCode::BadProof,
            ..
        }
    ));
}

#[test]
fn handshake_replayed_confirm_fails_against_a_fresh_acceptor_nonce() {
    let (d, a) = pair();
    // Handshake 1, recorded by an eavesdropper.
    let (dialer, hello1) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let (welcome1, acceptor1) = AcceptorHandshake::new(acceptor_params(a, 2))
        .on_hello(hello1.clone(), T0, &anyone, &auth())
        .expect("hello");
    let (confirm1, _) = dialer.on_welcome(welcome1, T0, &auth()).expect("welcome");
    acceptor1
        .on_confirm(confirm1.clone(), &auth())
        .expect("the real handshake succeeds");

    // Handshake 2: the attacker replays Hello 1 and Confirm 1; the acceptor draws a new nonce.
    let (_welcome2, acceptor2) = AcceptorHandshake::new(acceptor_params(a, 3))
        .on_hello(hello1, T0 + 1000, &anyone, &auth())
        .expect("a replayed Hello is only a request");
    let rejection = acceptor2
        .on_confirm(confirm1, &auth())
        .expect_err("replayed Confirm refused");
    assert_eq!(rejection.error.code(), RejectCode::BadProof);
}

#[test]
fn handshake_replayed_welcome_fails_against_a_fresh_dialer_nonce() {
    let (d, a) = pair();
    let (_, hello1) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let (welcome1, _) = AcceptorHandshake::new(acceptor_params(a, 2))
        .on_hello(hello1, T0, &anyone, &auth())
        .expect("hello");

    // A later dial (fresh nonce) answered by an impostor replaying Welcome 1.
    let (dialer2, _hello2) = DialerHandshake::start(dialer_params(d, a, 9, T0 + 1000));
    let rejection = dialer2
        .on_welcome(welcome1, T0 + 1000, &auth())
        .expect_err("replayed Welcome refused");
    assert!(matches!(
        rejection.error,
        HandshakeError::Refused {
            code: RejectCode::BadProof,
            ..
        }
    ));
}

#[test]
fn handshake_driver_rejections_reach_the_peer() {
    let (d, a) = pair();
    let (dialer, _) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let seen = dialer
        .on_welcome(
            reject_frame(RejectCode::ShuttingDown, "node is stopping"),
            T0,
            &auth(),
        )
        .expect_err("rejected");
    assert_eq!(
        seen.error,
        HandshakeError::Rejected {
            peer: a.to_owned(),
            code: RejectCode::ShuttingDown,
            reason: "node is stopping".to_owned()
        }
    );
    let long = reject_frame(RejectCode::Timeout, &"y".repeat(5000));
    assert_eq!(reject_of(&long).1.len(), MAX_REASON_LEN);
}

#[test]
fn handshake_limits_fit_the_largest_record() {
    assert_eq!(HANDSHAKE_LIMITS.max_frames, 1);
    const { assert!(HANDSHAKE_LIMITS.max_payload >= MAX_RECORD_LEN) };
    // Two maximal names fit in one Hello under the record cap.
    let name = "n".repeat(MAX_NAME_LEN);
    let hello = encode(&HelloRecord {
        version: PROTOCOL_VERSION,
        from: name.clone(),
        to: name,
        instance: [0xff; INSTANCE_LEN],
        time_ms: i64::MIN,
        nonce: [0xff; NONCE_LEN],
        checksum: true,
        max_payload: u64::MAX,
        features: u64::MAX,
    });
    assert!(hello.len() <= MAX_RECORD_LEN, "{}", hello.len());
}

#[test]
fn handshake_random_values_differ() {
    let a = random_nonce().expect("os rng");
    let b = random_nonce().expect("os rng");
    assert_ne!(a, b);
    assert_ne!(random_instance().expect("os rng"), [0; INSTANCE_LEN]);
}
