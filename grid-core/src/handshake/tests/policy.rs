//! Policy checks: clock skew, membership, target name, dial direction.

use super::*;

#[test]
fn handshake_clock_skew_is_refused_by_the_acceptor_both_ways() {
    let (d, a) = pair();
    for (ahead_ms, word) in [(-400_000, "ahead of"), (400_000, "behind")] {
        let rejection = run(
            dialer_params(d, a, 1, T0),
            {
                let mut ap = acceptor_params(a, 2);
                ap.max_skew_ms = 300_000;
                ap
            },
            &auth(),
            &auth(),
            ahead_ms,
        )
        .expect_err("skew refused");
        assert_eq!(rejection.error.code(), RejectCode::ClockSkew);
        assert!(!rejection.error.is_remote());
        let (code, reason) = reject_of(rejection.frame.as_ref().expect("a Reject"));
        assert_eq!(code, RejectCode::ClockSkew);
        // The acceptor's clock is ahead: the dialer is behind it, and vice versa.
        assert!(
            reason.starts_with("clock skew of ") && reason.contains("exceeds the allowed 300.0 s"),
            "{reason}"
        );
        assert!(reason.ends_with(&format!("{d} is {word} {a}")), "{reason}");
    }

    // Within the bound: accepted.
    let ok = run(
        dialer_params(d, a, 1, T0),
        acceptor_params(a, 2),
        &auth(),
        &auth(),
        DEFAULT_MAX_SKEW_MS - 1000,
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn handshake_clock_skew_is_refused_by_the_dialer_both_ways() {
    let (d, a) = pair();
    for ahead_ms in [400_000, -400_000] {
        let mut dp = dialer_params(d, a, 1, T0);
        dp.max_skew_ms = 300_000;
        let mut ap = acceptor_params(a, 2);
        ap.max_skew_ms = i64::MAX; // the acceptor does not care
        let (dialer, hello) = DialerHandshake::start(dp);
        let (welcome, acceptor) = AcceptorHandshake::new(ap)
            .on_hello(hello, T0 + ahead_ms, &anyone, &auth())
            .expect("lax acceptor");
        let rejection = dialer
            .on_welcome(welcome, T0, &auth())
            .expect_err("strict dialer");
        assert!(matches!(
            &rejection.error,
            HandshakeError::Refused { code: RejectCode::ClockSkew, reason, .. }
                if reason.contains("400.0 s exceeds the allowed 300.0 s")
        ));
        let seen = acceptor
            .on_confirm(*rejection.frame.expect("a Reject"), &auth())
            .expect_err("rejected");
        assert_eq!(seen.error.code(), RejectCode::ClockSkew);
        assert!(seen.error.to_string().contains("clock skew of 400.0 s"));
    }
}

#[test]
fn handshake_error_lines_read_well() {
    let (d, a) = pair();
    let mut ap = acceptor_params(a, 2);
    ap.max_skew_ms = 300_000;
    let (dialer, hello) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let refused = AcceptorHandshake::new(ap)
        .on_hello(hello, T0 + 400_000, &anyone, &auth())
        .expect_err("skew");
    assert_eq!(
        refused.error.to_string(),
        format!(
            "refused peer {d}: clock skew of 400.0 s exceeds the allowed 300.0 s: \
             {d} is behind {a} [clock skew]"
        )
    );
    let seen = dialer
        .on_welcome(*refused.frame.expect("a Reject"), T0, &auth())
        .expect_err("rejected");
    assert_eq!(
        seen.to_string(),
        format!(
            "peer {a} rejected us: clock skew of 400.0 s exceeds the allowed 300.0 s: \
             {d} is behind {a} [clock skew]"
        )
    );
    assert_eq!(HandshakeError::from(seen.clone()), seen.error);
    let timeout = HandshakeError::Timeout {
        peer: String::new(),
        after_ms: 5000,
    };
    assert_eq!(
        timeout.to_string(),
        "handshake with (unnamed) did not complete within 5000 ms"
    );
}

#[test]
fn handshake_unknown_peer_is_refused() {
    let (d, a) = pair();
    let (dialer, hello) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let only_c = |name: &str| name == "http://10.0.0.3:9000";
    let rejection = AcceptorHandshake::new(acceptor_params(a, 2))
        .on_hello(hello, T0, &only_c, &auth())
        .expect_err("unknown");
    assert!(matches!(
        &rejection.error,
        HandshakeError::Refused { code: RejectCode::UnknownPeer, reason, .. }
            if reason == &format!("{d} is not a member of {a}'s cluster")
    ));
    let seen = dialer
        .on_welcome(*rejection.frame.expect("a Reject"), T0, &auth())
        .expect_err("rejected");
    assert_eq!(seen.error.code(), RejectCode::UnknownPeer);
}

#[test]
fn handshake_own_name_as_peer_is_refused() {
    let (_, a) = pair();
    let (_, hello) = DialerHandshake::start(dialer_params(a, a, 1, T0));
    let rejection = AcceptorHandshake::new(acceptor_params(a, 2))
        .on_hello(hello, T0, &anyone, &auth())
        .expect_err("self");
    assert_eq!(rejection.error.code(), RejectCode::UnknownPeer);
}

#[test]
fn handshake_wrong_target_is_refused() {
    let (d, a) = pair();
    // The dialer meant to call node C, but its address led to node A.
    let c = "http://10.0.0.3:9000";
    let (dialer, hello) = DialerHandshake::start(dialer_params(d, c, 1, T0));
    let rejection = AcceptorHandshake::new(acceptor_params(a, 2))
        .on_hello(hello, T0, &anyone, &auth())
        .expect_err("wrong target");
    assert!(matches!(
        &rejection.error,
        HandshakeError::Refused { code: RejectCode::WrongTarget, reason, .. }
            if reason == &format!("{d} dialed {c} but reached {a}")
    ));
    let seen = dialer
        .on_welcome(*rejection.frame.expect("a Reject"), T0, &auth())
        .expect_err("rejected");
    assert!(seen
        .error
        .to_string()
        .starts_with(&format!("peer {c} rejected us")));
}

#[test]
fn handshake_dialer_refuses_a_welcome_from_another_node() {
    // A member holding the secret answers in another member's place: the proof verifies, the
    // name does not match.
    let (d, a) = pair();
    let c = "http://10.0.0.3:9000";
    let (dialer, hello) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let body = encode(&WelcomeBody {
        version: PROTOCOL_VERSION,
        from: c.to_owned(),
        instance: [3; INSTANCE_LEN],
        time_ms: T0,
        nonce: [4; NONCE_LEN],
        checksum: false,
        max_payload: 1,
        features: 0,
    });
    let proof = auth().prove(
        "unused",
        &transcript(WELCOME_TAG, &[&payload(&hello), &body]),
    );
    let welcome = records::handshake_frame(Op::Welcome, encode(&SignedRecord { body, proof }));
    let rejection = dialer
        .on_welcome(welcome, T0, &auth())
        .expect_err("wrong node");
    assert!(matches!(
        &rejection.error,
        HandshakeError::Refused { code: RejectCode::WrongTarget, reason, .. }
            if reason == &format!("{d} dialed {a} but reached {c}")
    ));
}

#[test]
fn handshake_wrong_direction_is_refused() {
    let (d, a) = pair();
    // `a` should be dialed by `d`; here `a` dials `d`.
    let (dialer, hello) = DialerHandshake::start(dialer_params(a, d, 1, T0));
    let rejection = AcceptorHandshake::new(acceptor_params(d, 2))
        .on_hello(hello, T0, &anyone, &auth())
        .expect_err("wrong direction");
    assert!(matches!(
        &rejection.error,
        HandshakeError::Refused { code: RejectCode::WrongDirection, reason, .. }
            if reason.starts_with(&format!("{d} dials {a}, not the other way round"))
    ));
    let seen = dialer
        .on_welcome(*rejection.frame.expect("a Reject"), T0, &auth())
        .expect_err("rejected");
    assert_eq!(seen.error.code(), RejectCode::WrongDirection);
}

/// Runs a handshake in which the dialer offers `dialer` and the acceptor `acceptor`; returns
/// the features each side ends up with.
fn agreed(dialer: Features, acceptor: Features) -> (Features, Features) {
    let (d, a) = pair();
    let (hs, hello) = DialerHandshake::start_offering(dialer_params(d, a, 1, T0), dialer);
    let (welcome, acc) = AcceptorHandshake::new(acceptor_params(a, 2))
        .offer(acceptor)
        .on_hello(hello, T0, &anyone, &auth())
        .expect("hello accepted");
    let (confirm, next) = hs.on_welcome(welcome, T0, &auth()).expect("welcome ok");
    let (ready, seen_by_acceptor) = acc.on_confirm(confirm, &auth()).expect("confirm ok");
    let seen_by_dialer = next.on_ready(ready).expect("ready ok");
    (seen_by_dialer.features, seen_by_acceptor.features)
}

#[test]
fn handshake_features_are_those_both_sides_offer() {
    let both = Features::CHUNKS.union(Features::LZ4);
    let cases = [
        (both, Features::CHUNKS, Features::CHUNKS),
        (Features::CHUNKS, both, Features::CHUNKS),
        (Features::NONE, both, Features::NONE),
        (both, Features::NONE, Features::NONE),
        (both, both, both),
    ];
    for (d, a, want) in cases {
        assert_eq!(agreed(d, a), (want, want), "dialer {d:?}, acceptor {a:?}");
    }
}

#[test]
fn handshake_records_without_features_are_those_of_before() {
    // Offering nothing leaves the key out: the Hello is byte for byte the one of before.
    let (d, a) = pair();
    let (_, plain) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let (_, none) = DialerHandshake::start_offering(dialer_params(d, a, 1, T0), Features::NONE);
    assert_eq!(payload(&plain), payload(&none));
    let (_, offering) =
        DialerHandshake::start_offering(dialer_params(d, a, 1, T0), Features::CHUNKS);
    let record: HelloRecord = records::decode("Hello", &payload(&offering)).expect("decodes");
    assert_eq!(record.features, Features::CHUNKS.bits());
}

#[test]
fn handshake_dialer_refuses_a_welcome_agreeing_to_what_it_did_not_offer() {
    let (d, a) = pair();
    let (dialer, hello) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let body = encode(&WelcomeBody {
        version: PROTOCOL_VERSION,
        from: a.to_owned(),
        instance: [3; INSTANCE_LEN],
        time_ms: T0,
        nonce: [4; NONCE_LEN],
        checksum: false,
        max_payload: 1,
        features: Features::CHUNKS.bits(),
    });
    let proof = auth().prove(a, &transcript(WELCOME_TAG, &[&payload(&hello), &body]));
    let welcome = records::handshake_frame(Op::Welcome, encode(&SignedRecord { body, proof }));
    let rejection = dialer
        .on_welcome(welcome, T0, &auth())
        .expect_err("features not offered");
    assert_eq!(rejection.error.code(), RejectCode::Malformed);
}
