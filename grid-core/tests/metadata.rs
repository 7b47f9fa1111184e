//! Call metadata end to end: what a handler reads from its context over real sockets, the limits
//! enforced before anything is sent, a hostile member sending more than it was told, and an
//! older peer that takes no metadata.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;
mod scripted;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::bound;
use futures::StreamExt;
use grid_core::frame::{ErrorCode, Frame, Metadata, MetadataError, Route};
use grid_core::{CallOptions, Config, Error, HandlerSpec, Manager, RemoteError, StreamOptions};
use parking_lot::Mutex;
use scripted::{Cluster, ECHO, WAIT};

const SEEN: HandlerSpec = HandlerSpec::named("Meta.seen");
const FEED: HandlerSpec = HandlerSpec::named("Meta.feed");

/// Two nodes over TCP; `b` serves `SEEN` (unary) and `FEED` (stream), each recording the
/// metadata its context carried.
struct Pair {
    a: Manager,
    b: Manager,
    seen: Arc<Mutex<Vec<Metadata>>>,
}

async fn pair(config_a: Config, config_b: Config) -> Pair {
    let (la, a) = bound();
    let (lb, b) = bound();
    let names = [a.clone(), b.clone()];
    let start = |l, me: &str, config: Config| {
        Manager::builder(me)
            .peers(names.iter().cloned())
            .secret("s")
            .config(config)
            .listener(l)
            .start()
    };
    let ma = start(la, &a, config_a).await.unwrap();
    let mb = start(lb, &b, config_b).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    mb.register_unary(SEEN, move |ctx, _payload| {
        s.lock().push(ctx.metadata().clone());
        let n = ctx.metadata().len();
        async move { Ok::<_, RemoteError>(Bytes::from(n.to_string())) }
    })
    .unwrap();
    let s = seen.clone();
    mb.register_stream(FEED, move |ctx, _payload, _input, mut out| {
        s.lock().push(ctx.metadata().clone());
        async move {
            out.send(Bytes::from_static(b"one"))
                .await
                .map_err(|e| RemoteError::text(ErrorCode::Internal, e.to_string()))
        }
    })
    .unwrap();
    ma.connection(&b)
        .unwrap()
        .wait_for_connect(WAIT)
        .await
        .unwrap();
    Pair { a: ma, b: mb, seen }
}

impl Pair {
    fn conn(&self) -> grid_core::Connection {
        self.a.connection(self.b.name()).unwrap()
    }

    async fn shutdown(self) {
        self.a.shutdown().await;
        self.b.shutdown().await;
    }
}

fn many() -> Metadata {
    let mut m = Metadata::new();
    m.insert("trace", "00-4bf92f3577b34da6-00f067aa0ba902b7-01")
        .unwrap();
    m.insert("token", [0xffu8, 0x00, 0xfe, 0x80]).unwrap();
    m.insert("empty", "").unwrap();
    m.insert("clé", "värde ✓").unwrap();
    for i in 0..20 {
        m.insert(&format!("k{i:02}"), vec![i; usize::from(i)])
            .unwrap();
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_read_the_metadata_of_0_1_and_many_entries() {
    let p = pair(Config::default(), Config::default()).await;
    let conn = p.conn();
    let one = Metadata::new().with("token", "abc").unwrap();
    let cases = [Metadata::new(), one, many()];
    for md in &cases {
        let got = conn
            .call(
                SEEN.id,
                Bytes::new(),
                CallOptions {
                    metadata: md.clone(),
                    ..CallOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(got, Bytes::from(md.len().to_string()));
        let opts = StreamOptions {
            metadata: md.clone(),
            ..StreamOptions::default()
        };
        let mut s = conn.open_stream(FEED.id, Bytes::new(), opts).await.unwrap();
        assert_eq!(
            s.receiver.next().await.unwrap().unwrap(),
            Bytes::from_static(b"one")
        );
        assert!(s.receiver.next().await.is_none(), "the stream ends cleanly");
    }
    let seen = p.seen.lock().clone();
    let want: Vec<Metadata> = cases.iter().flat_map(|m| [m.clone(), m.clone()]).collect();
    assert_eq!(
        seen, want,
        "unary and stream handlers saw the caller's entries"
    );
    let last = &seen[4];
    assert_eq!(last.get("token"), Some(&[0xffu8, 0x00, 0xfe, 0x80][..]));
    assert_eq!(last.get("empty"), Some(&b""[..]));
    assert_eq!(last.get("clé"), Some("värde ✓".as_bytes()));
    assert_eq!(last.get("k07"), Some(&[7u8; 7][..]));
    assert_eq!(last.get("missing"), None);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_over_either_sides_limits_fails_before_anything_is_sent() {
    // `a` allows 4 entries; `b` announces at most 32 bytes of keys and values.
    let config_a = Config {
        max_metadata_entries: 4,
        ..Config::default()
    };
    let config_b = Config {
        max_metadata_bytes: 32,
        ..Config::default()
    };
    let p = pair(config_a, config_b).await;
    let conn = p.conn();
    let before = conn.stats().frames_out;
    let too_many = many();
    let too_big = Metadata::new().with("k", [1u8; 40]).unwrap();
    for (md, want) in [
        (
            &too_many,
            MetadataError::TooManyEntries {
                count: too_many.len(),
                limit: 4,
            },
        ),
        (
            &too_big,
            MetadataError::TooLarge {
                bytes: 41,
                limit: 32,
            },
        ),
    ] {
        let r = conn
            .call(
                SEEN.id,
                Bytes::new(),
                CallOptions {
                    metadata: md.clone(),
                    ..CallOptions::default()
                },
            )
            .await;
        match r {
            Err(Error::Metadata(e)) => assert_eq!(e, want),
            other => panic!("expected {want:?}, got {other:?}"),
        }
        let opts = StreamOptions {
            metadata: md.clone(),
            ..StreamOptions::default()
        };
        match conn.open_stream(FEED.id, Bytes::new(), opts).await {
            Err(Error::Metadata(e)) => assert_eq!(e, want),
            other => panic!("expected {want:?}, got {other:?}"),
        }
    }
    assert_eq!(conn.stats().frames_out, before, "nothing was sent");
    assert!(p.seen.lock().is_empty(), "no handler ran");
    // Within both limits the call goes through.
    let ok = Metadata::new().with("k", [1u8; 31]).unwrap();
    let r = conn
        .call(
            SEEN.id,
            Bytes::new(),
            CallOptions {
                metadata: ok,
                ..CallOptions::default()
            },
        )
        .await;
    assert_eq!(r.unwrap(), Bytes::from_static(b"1"));
    p.shutdown().await;
}

/// A member that sends more metadata than the node accepts gets that call refused (code 7),
/// and its link stays up: the next call on the same socket is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_too_much_metadata_gets_the_call_refused_and_keeps_its_link() {
    let config = Config {
        max_metadata_entries: 2,
        max_metadata_bytes: 64,
        ..scripted::base_config()
    };
    let cluster = Cluster::start(config, 1).await;
    cluster
        .node
        .register_stream(FEED, |_, _, _, _| async { Ok(()) })
        .unwrap();
    let mut peer = cluster.attacker(0).await;
    peer.read_eagerly();
    let mut three = Metadata::new();
    for k in ["a", "b", "c"] {
        three.insert(k, "v").unwrap();
    }
    let big = Metadata::new().with("a", [0u8; 100]).unwrap();
    for md in [three, big] {
        let m = peer.mux();
        let Frame::Request {
            mux,
            route,
            deadline_ms,
            payload,
            ..
        } = scripted::request(m, ECHO, Bytes::from_static(b"x"))
        else {
            unreachable!()
        };
        let frame = Frame::Request {
            mux,
            route,
            deadline_ms,
            metadata: md,
            payload,
        };
        peer.send(&[frame]).await.unwrap();
        match peer.frame().await {
            Frame::Error { mux, error } => {
                assert_eq!(mux, m);
                assert_eq!(error.code, ErrorCode::TooLarge);
                let text = String::from_utf8_lossy(&error.message).into_owned();
                assert!(text.contains("metadata"), "{text}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // A stream with too much metadata is refused the same way.
    let m = peer.mux();
    let Frame::Open {
        mux,
        route,
        deadline_ms,
        in_cap,
        out_cap,
        in_window,
        out_window,
        input,
        payload,
        ..
    } = scripted::open(m, FEED, 0, 4)
    else {
        unreachable!()
    };
    let mut many = Metadata::new();
    for k in ["a", "b", "c", "d"] {
        many.insert(k, "").unwrap();
    }
    let frame = Frame::Open {
        mux,
        route,
        deadline_ms,
        in_cap,
        out_cap,
        in_window,
        out_window,
        input,
        metadata: many,
        payload,
    };
    peer.send(&[frame]).await.unwrap();
    match peer.frame().await {
        Frame::Error { mux, error } => {
            assert_eq!(mux, m);
            assert_eq!(error.code, ErrorCode::TooLarge);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Same socket: a call within the limits is served.
    let m = peer.mux();
    let frame = Frame::Request {
        mux: m,
        route: Route {
            handler: ECHO.id,
            subroute: None,
        },
        deadline_ms: 0,
        metadata: Metadata::new().with("a", "ok").unwrap(),
        payload: Some(Bytes::from_static(b"after")),
    };
    peer.send(&[frame]).await.unwrap();
    match peer.frame().await {
        Frame::Response {
            mux,
            result: Ok(Some(p)),
        } => {
            assert_eq!(mux, m);
            assert!(p.ends_with(b"<- after"), "{p:?}");
        }
        other => panic!("expected the echo, got {other:?}"),
    }
    cluster.assert_honest_works("after the refusals").await;
    assert_eq!(
        cluster
            .node
            .connection(&cluster.attackers[0])
            .unwrap()
            .stats()
            .connects,
        1,
        "the scripted link never dropped"
    );
}

/// The scripted peer's handshake announces no metadata, as a node of the version before: the
/// node sends it calls without metadata as before, and refuses to send one with metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_takes_no_metadata_gets_no_metadata_flag() {
    let cluster = Cluster::start(scripted::base_config(), 1).await;
    let mut peer = cluster.attacker(0).await;
    peer.read_eagerly();
    let conn = cluster.node.connection(&cluster.attackers[0]).unwrap();
    let before = conn.stats().frames_out;
    let md = Metadata::new().with("trace", "t").unwrap();
    let r = conn
        .call(
            ECHO.id,
            Bytes::new(),
            CallOptions {
                metadata: md.clone(),
                ..CallOptions::default()
            },
        )
        .await;
    assert!(
        matches!(&r, Err(Error::Metadata(MetadataError::Unsupported { peer })) if *peer == cluster.attackers[0]),
        "{r:?}"
    );
    let opts = StreamOptions {
        metadata: md,
        ..StreamOptions::default()
    };
    let r = conn.open_stream(ECHO.id, Bytes::new(), opts).await;
    assert!(
        matches!(r, Err(Error::Metadata(MetadataError::Unsupported { .. }))),
        "{r:?}"
    );
    assert_eq!(conn.stats().frames_out, before, "nothing was sent");
    // Without metadata the call goes out as before: a plain Request, no METADATA flag.
    let call = tokio::spawn({
        let conn = conn.clone();
        async move {
            conn.call(
                ECHO.id,
                Bytes::from_static(b"q"),
                CallOptions {
                    timeout: Some(Duration::from_secs(5)),
                    ..CallOptions::default()
                },
            )
            .await
        }
    });
    match peer.frame().await {
        Frame::Request {
            mux,
            metadata,
            payload,
            ..
        } => {
            assert!(metadata.is_empty());
            assert_eq!(payload.as_deref(), Some(&b"q"[..]));
            peer.send(&[Frame::Response {
                mux,
                result: Ok(Some(Bytes::from_static(b"a"))),
            }])
            .await
            .unwrap();
        }
        other => panic!("expected the request, got {other:?}"),
    }
    assert_eq!(call.await.unwrap().unwrap(), Bytes::from_static(b"a"));
}
