//! Who a member can claim to be, over real sockets: per-pair keys stop a member from taking
//! another's name, and the handshake's clock check works through the builder's clock hook.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::{dialer_and_acceptor, eventually, test_config, WAIT};
use grid_core::{Authenticator, CallOptions, DialFailure, HandlerSpec, Keyring, Manager};
use grid_core::{HandshakeError, RejectCode};

const ECHO: HandlerSpec = HandlerSpec::named("Id.echo");

/// Proves with the keys it holds, and trusts every proof: a member that skips checking the
/// node it dialed, as an impostor would.
struct Impostor(Keyring);

impl Authenticator for Impostor {
    fn prove(&self, peer: &str, transcript: &[u8]) -> Vec<u8> {
        self.0.prove(peer, transcript)
    }
    fn verify(&self, _: &str, _: &[u8], _: &[u8]) -> bool {
        true
    }
}

/// Waits until `m`'s link to `peer` records a dial failure, and returns it.
async fn dial_failure(m: &Manager, peer: &str) -> DialFailure {
    let conn = m.connection(peer).unwrap();
    let what = format!("a dial failure recorded for {peer}");
    eventually(&what, WAIT, || conn.last_dial_failure().ok_or(conn.state())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_its_own_keys_cannot_take_another_members_name() {
    let ((la, a), (lb, b)) = dialer_and_acceptor();
    let c = "http://127.0.0.1:9".to_owned();
    let names = [a.clone(), b.clone(), c.clone()];
    let master = "operator master secret, never on a node";
    let start = |l: TcpListener, me: &str| {
        let ring = Keyring::derive(master, me, &names);
        Manager::builder(me)
            .peers(names.iter().cloned())
            .authenticator(Arc::new(ring))
            .config(test_config())
            .listener(l)
            .start()
    };
    let ma = start(la, &a).await.unwrap();
    let mb = start(lb, &b).await.unwrap();
    mb.register_unary(ECHO, |_, p| async move { Ok(p) })
        .unwrap();
    let a_to_b = ma.connection(&b).unwrap();
    a_to_b.wait_for_connect(WAIT).await.unwrap();
    let b_to_a = mb.connection(&a).unwrap();
    b_to_a.wait_for_connect(WAIT).await.unwrap();
    let mut b_events = b_to_a.events();

    // c holds only the keys of its own pairs, and claims to be a.
    let impostor = Manager::builder(a.as_str())
        .peers([b.clone()])
        .authenticator(Arc::new(Impostor(Keyring::derive(master, &c, &names))))
        .config(test_config())
        .no_listener()
        .start()
        .await
        .unwrap();
    match dial_failure(&impostor, &b).await {
        DialFailure::Handshake(HandshakeError::Rejected { code, reason, .. }) => {
            assert_eq!(code, RejectCode::BadProof, "{reason}");
        }
        other => panic!("expected a rejection for a bad proof, got {other:?}"),
    }
    impostor.shutdown().await;

    // The real a's session was never replaced: still the first connect, still serving.
    assert_eq!(b_to_a.stats().connects, 1);
    let echoed = a_to_b
        .call(
            ECHO.id,
            Bytes::from_static(b"still me"),
            CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(echoed, Bytes::from_static(b"still me"));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), b_events.recv())
            .await
            .is_err(),
        "no link event: the live session was untouched"
    );
    ma.shutdown().await;
    mb.shutdown().await;
}

/// Starts a dialer whose clock runs `skew` ahead (or behind) against a fresh acceptor, and
/// returns whether they connected (`Ok`) or how the dial failed.
async fn connect_with_skew(skew: Duration, ahead: bool) -> Result<(), DialFailure> {
    let ((la, a), (lb, b)) = dialer_and_acceptor();
    let names = [a.clone(), b.clone()];
    let clock = Arc::new(move || {
        let now = SystemTime::now();
        if ahead {
            now + skew
        } else {
            now - skew
        }
    });
    let ma = Manager::builder(a.as_str())
        .peers(names.iter().cloned())
        .secret("skew")
        .config(test_config())
        .clock(clock)
        .listener(la)
        .start()
        .await
        .unwrap();
    let mb = Manager::builder(b.as_str())
        .peers(names.iter().cloned())
        .secret("skew")
        .config(test_config())
        .listener(lb)
        .start()
        .await
        .unwrap();
    let conn = ma.connection(&b).unwrap();
    let result = tokio::select! {
        r = conn.wait_for_connect(WAIT) => {
            r.map_err(|e| DialFailure::Other(e.to_string()))
        }
        f = dial_failure(&ma, &b) => Err(f),
    };
    ma.shutdown().await;
    mb.shutdown().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_six_minutes_ahead_is_refused_and_four_minutes_behind_is_accepted() {
    match connect_with_skew(Duration::from_secs(6 * 60), true).await {
        Err(DialFailure::Handshake(HandshakeError::Rejected { code, .. })) => {
            assert_eq!(code, RejectCode::ClockSkew);
        }
        other => panic!("+6 min must be refused for clock skew, got {other:?}"),
    }
    connect_with_skew(Duration::from_secs(4 * 60), false)
        .await
        .expect("-4 min is within the default 5 min bound");
}
