//! The test vector of `PROTOCOL.md` section 7, checked byte for byte.

use super::*;

fn seq<const N: usize>(start: u8) -> [u8; N] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

#[test]
fn handshake_protocol_vector() {
    let dialer_name = "http://10.0.0.1:9000";
    let acceptor_name = "http://10.0.0.2:9000";
    assert!(should_dial(dialer_name, acceptor_name));
    let auth = HmacAuth::new("test-secret");

    let (dialer, hello) = DialerHandshake::start(DialerParams {
        local: dialer_name.to_owned(),
        remote: acceptor_name.to_owned(),
        instance: seq(0x00),
        nonce: seq(0x10),
        now_ms: 1_700_000_000_000,
        checksum: true,
        max_payload: 64 << 20,
        max_skew_ms: DEFAULT_MAX_SKEW_MS,
    });
    let (welcome, acceptor) = AcceptorHandshake::new(AcceptorParams {
        local: acceptor_name.to_owned(),
        instance: seq(0x30),
        nonce: seq(0x40),
        checksum: false,
        max_payload: 64 << 20,
        max_skew_ms: DEFAULT_MAX_SKEW_MS,
    })
    .on_hello(hello.clone(), 1_700_000_000_250, &anyone, &auth)
    .expect("hello");
    let (confirm, dialer) = dialer
        .on_welcome(welcome.clone(), 1_700_000_000_010, &auth)
        .expect("welcome");
    let (ready, _) = acceptor
        .on_confirm(confirm.clone(), &auth)
        .expect("confirm");
    dialer.on_ready(ready.clone()).expect("ready");

    let welcome_rec: SignedRecord = records::decode("Welcome", &payload(&welcome)).expect("w");
    let confirm_rec: SignedRecord = records::decode("Confirm", &payload(&confirm)).expect("c");
    let got = [
        ("hello", hex::encode(payload(&hello))),
        ("welcome body", hex::encode(&welcome_rec.body)),
        ("welcome proof", hex::encode(&welcome_rec.proof)),
        ("welcome", hex::encode(payload(&welcome))),
        ("confirm proof", hex::encode(&confirm_rec.proof)),
        ("confirm", hex::encode(payload(&confirm))),
        ("ready", hex::encode(payload(&ready))),
        (
            "reject",
            hex::encode(payload(&reject_frame(RejectCode::BadProof, "bad proof"))),
        ),
    ];
    let want = [
        ("hello", VECTOR_HELLO),
        ("welcome body", VECTOR_WELCOME_BODY),
        ("welcome proof", VECTOR_WELCOME_PROOF),
        ("welcome", VECTOR_WELCOME),
        ("confirm proof", VECTOR_CONFIRM_PROOF),
        ("confirm", VECTOR_CONFIRM),
        ("ready", "80"),
        ("reject", VECTOR_REJECT),
    ];
    for ((what, got), (_, want)) in got.iter().zip(want) {
        assert_eq!(got, &want.replace([' ', '\n'], ""), "{what}");
    }

    // Both proofs, computed by hand from the transcript definitions of section 7.4.
    let lp = |x: &[u8]| {
        let mut v = u32::try_from(x.len())
            .expect("short")
            .to_be_bytes()
            .to_vec();
        v.extend_from_slice(x);
        v
    };
    let hello_bytes = payload(&hello);
    let welcome_t = [
        b"grid/1 welcome\0".to_vec(),
        lp(&hello_bytes),
        lp(&welcome_rec.body),
    ]
    .concat();
    assert_eq!(auth.prove("unused", &welcome_t), welcome_rec.proof);
    let confirm_t = [
        b"grid/1 confirm\0".to_vec(),
        lp(&hello_bytes),
        lp(&payload(&welcome)),
        lp(&[0x80]),
    ]
    .concat();
    assert_eq!(auth.prove("unused", &confirm_t), confirm_rec.proof);
}

const VECTOR_HELLO: &str = "88a776657273696f6e01a466726f6db4687474703a2f2f31302e302e302e313a39303030a2746fb4687474703a2f2f31302e302e302e323a39303030a8696e7374616e6365c410000102030405060708090a0b0c0d0e0fa774696d655f6d73cf0000018bcfe56800a56e6f6e6365c420101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2fa8636865636b73756dc3ab6d61785f7061796c6f6164ce04000000";
const VECTOR_WELCOME_BODY: &str = "87a776657273696f6e01a466726f6db4687474703a2f2f31302e302e302e323a39303030a8696e7374616e6365c410303132333435363738393a3b3c3d3e3fa774696d655f6d73cf0000018bcfe568faa56e6f6e6365c420404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5fa8636865636b73756dc3ab6d61785f7061796c6f6164ce04000000";
const VECTOR_WELCOME_PROOF: &str =
    "ecd45a6f89b262050423b14770d9ca6c6ffb437b352ea60be1a72050118d7f4b";
const VECTOR_WELCOME: &str = "82a4626f6479c49387a776657273696f6e01a466726f6db4687474703a2f2f31302e302e302e323a39303030a8696e7374616e6365c410303132333435363738393a3b3c3d3e3fa774696d655f6d73cf0000018bcfe568faa56e6f6e6365c420404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5fa8636865636b73756dc3ab6d61785f7061796c6f6164ce04000000a570726f6f66c420ecd45a6f89b262050423b14770d9ca6c6ffb437b352ea60be1a72050118d7f4b";
const VECTOR_CONFIRM_PROOF: &str =
    "ea16187f2a1740de9a01ec6e621de2c86925a0ce18944d5124a736fc6606a061";
const VECTOR_CONFIRM: &str = "82a4626f6479c40180a570726f6f66c420ea16187f2a1740de9a01ec6e621de2c86925a0ce18944d5124a736fc6606a061";
const VECTOR_REJECT: &str = "82a4636f646506a6726561736f6ea96261642070726f6f66";

#[test]
fn handshake_frames_travel_in_batches_of_one_under_handshake_limits() {
    use crate::frame::{decode_batch, encode_batch};

    let (_, hello) = DialerHandshake::start(DialerParams {
        local: "http://10.0.0.1:9000".to_owned(),
        remote: "http://10.0.0.2:9000".to_owned(),
        instance: seq(0x00),
        nonce: seq(0x10),
        now_ms: 1_700_000_000_000,
        checksum: true,
        max_payload: 64 << 20,
        max_skew_ms: DEFAULT_MAX_SKEW_MS,
    });
    let batch = encode_batch(std::slice::from_ref(&hello), false);
    // version 1, flags 0, count 1 | op 13, flags 0, mux 0, body length 171 | the Hello record
    let want = format!("01000001 0d00 00000000 000000ab {VECTOR_HELLO}").replace(' ', "");
    assert_eq!(hex::encode(&batch), want);
    assert_eq!(
        decode_batch(batch, &HANDSHAKE_LIMITS).expect("fits the handshake limits"),
        vec![hello]
    );

    // A record over the cap does not get past the frame decoder in the handshake phase.
    let big = records::handshake_frame(Op::Hello, vec![0x80; MAX_RECORD_LEN + 1]);
    let batch = encode_batch(&[big], false);
    assert!(decode_batch(batch, &HANDSHAKE_LIMITS).is_err());
}

/// The table of `PROTOCOL.md` vector V19: `Handlers` frames and handshake records carry the same
/// table messages.
const VECTOR_TABLE: &str = "01 00 0002 00000002 b5937eee 05 6469736b31 0001 0a0b0c0d";

#[test]
fn handshake_protocol_vector_with_handler_tables() {
    let dialer_name = "http://10.0.0.1:9000";
    let acceptor_name = "http://10.0.0.2:9000";
    let auth = HmacAuth::new("test-secret");
    let table = Bytes::from(hex::decode(VECTOR_TABLE.replace(' ', "")).expect("hex"));

    // The same handshake as above; the dialer announces an empty, incomplete table (it has
    // registered nothing yet), the acceptor the table of V19.
    let (dialer, hello) = DialerHandshake::start(DialerParams {
        local: dialer_name.to_owned(),
        remote: acceptor_name.to_owned(),
        instance: seq(0x00),
        nonce: seq(0x10),
        now_ms: 1_700_000_000_000,
        checksum: true,
        max_payload: 64 << 20,
        max_skew_ms: DEFAULT_MAX_SKEW_MS,
    });
    let dialer = dialer.announce(Bytes::from_static(&[0x00]));
    let (welcome, acceptor) = AcceptorHandshake::new(AcceptorParams {
        local: acceptor_name.to_owned(),
        instance: seq(0x30),
        nonce: seq(0x40),
        checksum: false,
        max_payload: 64 << 20,
        max_skew_ms: DEFAULT_MAX_SKEW_MS,
    })
    .announce(table.clone())
    .on_hello(hello.clone(), 1_700_000_000_250, &anyone, &auth)
    .expect("hello");
    // The tables change neither the Hello nor the Welcome.
    assert_eq!(hex::encode(payload(&hello)), VECTOR_HELLO);
    assert_eq!(hex::encode(payload(&welcome)), VECTOR_WELCOME);
    let (confirm, dialer) = dialer
        .on_welcome(welcome.clone(), 1_700_000_000_010, &auth)
        .expect("welcome");
    let (ready, seen_by_acceptor) = acceptor
        .on_confirm(confirm.clone(), &auth)
        .expect("confirm");
    let seen_by_dialer = dialer.on_ready(ready.clone()).expect("ready");

    let confirm_rec: SignedRecord = records::decode("Confirm", &payload(&confirm)).expect("c");
    let got = [
        ("confirm body", hex::encode(&confirm_rec.body)),
        ("confirm proof", hex::encode(&confirm_rec.proof)),
        ("confirm", hex::encode(payload(&confirm))),
        ("ready", hex::encode(payload(&ready))),
    ];
    let want = [
        ("confirm body", VECTOR_CONFIRM_BODY_TABLE),
        ("confirm proof", VECTOR_CONFIRM_PROOF_TABLE),
        ("confirm", VECTOR_CONFIRM_TABLE),
        ("ready", VECTOR_READY_TABLE),
    ];
    for ((what, got), (_, want)) in got.iter().zip(want) {
        assert_eq!(got, &want.replace([' ', '\n'], ""), "{what}");
    }

    // The proof covers the body with its table, by the definition of section 7.4.
    let lp = |x: &[u8]| [&u32::try_from(x.len()).expect("short").to_be_bytes()[..], x].concat();
    let confirm_t = [
        b"grid/1 confirm\0".to_vec(),
        lp(&payload(&hello)),
        lp(&payload(&welcome)),
        lp(&confirm_rec.body),
    ]
    .concat();
    assert_eq!(auth.prove("unused", &confirm_t), confirm_rec.proof);

    let to_dialer = seen_by_dialer.handlers.expect("the acceptor's table");
    assert!(to_dialer.is_complete() && to_dialer.len() == 3);
    assert!(to_dialer.contains(crate::HandlerId(0x0a0b_0c0d), Some(b"disk1")));
    let to_acceptor = seen_by_acceptor.handlers.expect("the dialer's table");
    assert!(to_acceptor.is_empty() && !to_acceptor.is_complete());
}

const VECTOR_CONFIRM_BODY_TABLE: &str = "81a868616e646c657273c40100";
const VECTOR_CONFIRM_PROOF_TABLE: &str =
    "adf8c1efffe148007f12bfd7ee7ad3c563e7b9555d2f9916cc74ea1785c36ce4";
const VECTOR_CONFIRM_TABLE: &str = "82a4626f6479c40d81a868616e646c657273c40100a570726f6f66c420adf8c1efffe148007f12bfd7ee7ad3c563e7b9555d2f9916cc74ea1785c36ce4";
const VECTOR_READY_TABLE: &str =
    "81a868616e646c657273c4180100000200000002b5937eee056469736b3100010a0b0c0d";
