//! Handler tables in the handshake: carried both ways, absent from older peers, refused when
//! malformed (after the proof, so a stranger learns nothing from it).

use super::*;
use crate::table::{self, HandlerTable};
use crate::HandlerId;

fn table_of(ids: &[u32], complete: bool) -> Bytes {
    let routes: Vec<crate::frame::Route> = ids
        .iter()
        .map(|id| crate::frame::Route {
            handler: HandlerId(*id),
            subroute: None,
        })
        .collect();
    table::encode(&routes, complete).expect("valid table")
}

#[test]
fn handshake_carries_both_tables() {
    let (d, a) = pair();
    let (dialer, hello) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let dialer = dialer.announce(table_of(&[1, 2], true));
    let acceptor = AcceptorHandshake::new(acceptor_params(a, 2)).announce(table_of(&[3], false));
    let (welcome, acceptor) = acceptor
        .on_hello(hello, T0, &anyone, &auth())
        .expect("hello");
    let (confirm, dialer) = dialer.on_welcome(welcome, T0, &auth()).expect("welcome");
    let (ready, by_acceptor) = acceptor.on_confirm(confirm, &auth()).expect("confirm");
    let by_dialer = dialer.on_ready(ready).expect("ready");
    let want_d = HandlerTable::decode(&table_of(&[1, 2], true)).expect("valid");
    let want_a = HandlerTable::decode(&table_of(&[3], false)).expect("valid");
    assert_eq!(by_acceptor.handlers, Some(want_d));
    assert_eq!(by_dialer.handlers, Some(want_a));
}

#[test]
fn handshake_with_a_side_that_announces_no_table_reads_as_none() {
    let (d, a) = pair();
    // The dialer announces, the acceptor is of an older version: it ignores the dialer's table
    // and sends none.
    let (dialer, hello) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let dialer = dialer.announce(table_of(&[1], true));
    let (welcome, acceptor) = AcceptorHandshake::new(acceptor_params(a, 2))
        .on_hello(hello, T0, &anyone, &auth())
        .expect("hello");
    let (confirm, dialer) = dialer.on_welcome(welcome, T0, &auth()).expect("welcome");
    let (ready, by_acceptor) = acceptor.on_confirm(confirm, &auth()).expect("confirm");
    assert_eq!(payload(&ready).as_ref(), [0x80], "a Ready of before");
    assert!(by_acceptor.handlers.is_some());
    assert_eq!(dialer.on_ready(ready).expect("ready").handlers, None);

    // Neither announces: the records are those of before, and neither side has a table.
    let (seen_by_dialer, seen_by_acceptor) = run(
        dialer_params(d, a, 1, T0),
        acceptor_params(a, 2),
        &auth(),
        &auth(),
        0,
    )
    .expect("handshake completes");
    assert_eq!(
        (seen_by_dialer.handlers, seen_by_acceptor.handlers),
        (None, None)
    );
}

#[test]
fn handshake_malformed_tables_are_refused_as_malformed() {
    let (d, a) = pair();
    // Reserved flags, ids out of order, a truncated group.
    for bad in [
        &[0x80][..],
        &[0x00, 0x00, 0x00, 0x02, 0, 0, 0, 2, 0, 0, 0, 1],
        &[0x00, 0x05],
    ] {
        // In the dialer's Confirm: refused by the acceptor, with a Reject to send.
        let (dialer, hello) = DialerHandshake::start(dialer_params(d, a, 1, T0));
        let dialer = dialer.announce(Bytes::copy_from_slice(bad));
        let (welcome, acceptor) = AcceptorHandshake::new(acceptor_params(a, 2))
            .on_hello(hello, T0, &anyone, &auth())
            .expect("hello");
        let (confirm, _) = dialer.on_welcome(welcome, T0, &auth()).expect("welcome");
        let r = acceptor
            .on_confirm(confirm, &auth())
            .expect_err("bad table");
        assert!(
            matches!(&r.error, HandshakeError::Malformed { op: Op::Confirm, detail, .. } if detail.contains("handler table")),
            "{:?}",
            r.error
        );
        assert_eq!(
            reject_of(r.frame.as_deref().expect("a Reject")).0,
            RejectCode::Malformed
        );

        // In the acceptor's Ready: refused by the dialer.
        let (dialer, hello) = DialerHandshake::start(dialer_params(d, a, 1, T0));
        let (welcome, acceptor) = AcceptorHandshake::new(acceptor_params(a, 2))
            .announce(Bytes::copy_from_slice(bad))
            .on_hello(hello, T0, &anyone, &auth())
            .expect("hello");
        let (confirm, dialer) = dialer.on_welcome(welcome, T0, &auth()).expect("welcome");
        let (ready, _) = acceptor.on_confirm(confirm, &auth()).expect("confirm");
        let r = dialer.on_ready(ready).expect_err("bad table");
        assert!(
            matches!(&r.error, HandshakeError::Malformed { op: Op::Ready, detail, .. } if detail.contains("handler table")),
            "{:?}",
            r.error
        );
    }
}

#[test]
fn handshake_checks_the_proof_before_the_table() {
    let (d, a) = pair();
    let (dialer, hello) = DialerHandshake::start(dialer_params(d, a, 1, T0));
    let dialer = dialer.announce(Bytes::from_static(&[0xff]));
    let (welcome, acceptor) = AcceptorHandshake::new(acceptor_params(a, 2))
        .on_hello(hello, T0, &anyone, &auth())
        .expect("hello");
    let (confirm, _) = dialer
        .on_welcome(welcome, T0, &TrustingProver(HmacAuth::new("wrong")))
        .expect("welcome, not checked");
    let r = acceptor.on_confirm(confirm, &auth()).expect_err("refused");
    assert_eq!(r.error.code(), RejectCode::BadProof, "{:?}", r.error);
}

#[test]
fn a_handshake_table_of_the_largest_size_fits_the_record_limit() {
    let table = vec![0u8; table::MAX_HANDSHAKE_TABLE_LEN];
    // Confirm: {body: bin(body), proof: bin(32)}, with body = {handlers: bin(table)}.
    let most = Some(records::MetadataRecord {
        entries: u64::MAX,
        bytes: u64::MAX,
    });
    let body = records::encode(&records::ConfirmBody {
        handlers: Some(table.clone()),
        metadata: most,
    });
    let confirm = records::encode(&SignedRecord {
        body,
        proof: vec![0; 32],
    });
    assert!(confirm.len() <= MAX_RECORD_LEN, "{}", confirm.len());
    let ready = records::encode(&records::ReadyRecord {
        handlers: Some(table),
        metadata: most,
    });
    assert!(ready.len() <= MAX_RECORD_LEN, "{}", ready.len());
}
