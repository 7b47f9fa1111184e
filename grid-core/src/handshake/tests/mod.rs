//! Handshake tests: both state machines driven back to back by passing frames, with virtual time
//! and no sockets; plus the test vector of `PROTOCOL.md` section 7.
//!
//! - `flow`: complete handshakes, authentication failures on either side, replays;
//! - `policy`: the acceptor's and the dialer's policy checks (clock, names, direction);
//! - `malformed`: bad bytes, oversized records, versions, unknown fields, unexpected frames;
//! - `tables`: the handler tables the `Confirm` and the `Ready` carry;
//! - `vector`: the byte-exact test vector.

mod flow;
mod malformed;
mod policy;
mod tables;
mod vector;

use bytes::Bytes;
use serde::Serialize;

use super::records::{
    encode, transcript, HelloRecord, RejectRecord, SignedRecord, WelcomeBody, WELCOME_TAG,
};
use super::*;
use crate::auth::{Authenticator, HmacAuth};
use crate::frame::{Frame, Op, PROTOCOL_VERSION};
use crate::ids::MuxId;

const T0: i64 = 1_700_000_000_000;
const SECRET: &str = "test-secret";

/// Two member names, ordered (dialer, acceptor) by the dial rule.
fn pair() -> (&'static str, &'static str) {
    let (a, b) = ("http://10.0.0.1:9000", "http://10.0.0.2:9000");
    if should_dial(a, b) {
        (a, b)
    } else {
        (b, a)
    }
}

fn dialer_params(local: &str, remote: &str, nonce: u8, now_ms: i64) -> DialerParams {
    DialerParams {
        local: local.to_owned(),
        remote: remote.to_owned(),
        instance: [0xd1; INSTANCE_LEN],
        nonce: [nonce; NONCE_LEN],
        now_ms,
        checksum: false,
        max_payload: 1 << 20,
        max_skew_ms: DEFAULT_MAX_SKEW_MS,
    }
}

fn acceptor_params(local: &str, nonce: u8) -> AcceptorParams {
    AcceptorParams {
        local: local.to_owned(),
        instance: [0xa1; INSTANCE_LEN],
        nonce: [nonce; NONCE_LEN],
        checksum: false,
        max_payload: 2 << 20,
        max_skew_ms: DEFAULT_MAX_SKEW_MS,
    }
}

/// Proves with a real key but accepts every proof: a dialer that skipped authenticating the
/// acceptor.
struct TrustingProver(HmacAuth);

impl Authenticator for TrustingProver {
    fn prove(&self, peer: &str, transcript: &[u8]) -> Vec<u8> {
        self.0.prove(peer, transcript)
    }
    fn verify(&self, _: &str, _: &[u8], _: &[u8]) -> bool {
        true
    }
}

fn anyone(_: &str) -> bool {
    true
}

fn auth() -> HmacAuth {
    HmacAuth::new(SECRET)
}

fn payload(frame: &Frame) -> Bytes {
    match frame {
        Frame::Handshake { payload, .. } => payload.clone(),
        other => panic!("not a handshake frame: {other:?}"),
    }
}

/// Decodes a `Reject` frame into (code, reason).
fn reject_of(frame: &Frame) -> (RejectCode, String) {
    assert_eq!(frame.op(), Op::Reject);
    let rec: RejectRecord = records::decode("Reject", &payload(frame)).expect("reject decodes");
    (RejectCode::from_u8(rec.code), rec.reason)
}

/// Runs a whole handshake; returns what each side learned about the other.
fn run(
    d: DialerParams,
    a: AcceptorParams,
    d_auth: &dyn Authenticator,
    a_auth: &dyn Authenticator,
    a_clock_ahead_ms: i64,
) -> Result<(PeerInfo, PeerInfo), Rejection> {
    let t = d.now_ms;
    let (dialer, hello) = DialerHandshake::start(d);
    let acceptor = AcceptorHandshake::new(a);
    let (welcome, acceptor) =
        acceptor.on_hello(hello, t + a_clock_ahead_ms + 10, &anyone, a_auth)?;
    let (confirm, dialer) = dialer.on_welcome(welcome, t + 20, d_auth)?;
    let (ready, dialer_view) = acceptor.on_confirm(confirm, a_auth)?;
    let acceptor_view = dialer.on_ready(ready)?;
    Ok((acceptor_view, dialer_view))
}
