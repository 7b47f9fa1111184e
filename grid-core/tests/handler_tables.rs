//! Handler tables over real sockets (`PROTOCOL.md` section 9): each node announces what it serves
//! in its handshake and, for what it registers later, in `Handlers` updates. A call to a handler
//! that a peer's complete table lacks fails at once, with no frame sent (the connection's own
//! frame counters say so); a node that is ready at once announces an incomplete table, so calls
//! to it go out as before; an older peer, which announces no table, gets its calls as before and
//! no update it could not read.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;
mod scripted;

use bytes::Bytes;
use common::{bound, eventually, quiet_config, WAIT};
use futures::StreamExt;
use grid_core::frame::{ErrorCode, ErrorRecord, Frame};
use grid_core::table::HandlerTable;
use grid_core::{
    Connection, Error, HandlerSpec, InFlight, Manager, RemoteError, StreamOptions, Supported,
};

const ECHO: HandlerSpec = HandlerSpec::named("Tables.echo");
const FEED: HandlerSpec = HandlerSpec::named("Tables.feed");
const LATE: HandlerSpec = HandlerSpec::named("Tables.late");
const MISSING: HandlerSpec = HandlerSpec::named("Tables.missing");

fn register_echo(m: &Manager, spec: HandlerSpec) {
    m.register_unary(spec, |_, b| async move { Ok::<_, RemoteError>(b) })
        .unwrap();
}

/// `FEED` under subroute `disk1`: streams its payload back three times.
fn register_feed(m: &Manager) {
    m.register_stream_at(FEED, Some("disk1"), |_, b, _, mut out| async move {
        for _ in 0..3 {
            out.send(b.clone())
                .await
                .map_err(|_| RemoteError::text(ErrorCode::Cancelled, "the caller went away"))?;
        }
        Ok(())
    })
    .unwrap();
}

/// Two nodes on loopback. With `not_ready`, each starts not ready, runs `register`, then opens:
/// their tables are complete. Otherwise each starts ready, connects, then runs `register`.
async fn pair(not_ready: bool, register: impl Fn(&Manager)) -> (Manager, Manager) {
    let (la, a) = bound();
    let (lb, b) = bound();
    let names = [a.clone(), b.clone()];
    let mut nodes = Vec::new();
    for (l, name) in [(la, &a), (lb, &b)] {
        // Pings so rare that no test here sees one: the frame counters move only with the calls.
        let builder = common::builder(l, name, &names, quiet_config());
        let builder = if not_ready {
            builder.start_not_ready()
        } else {
            builder
        };
        nodes.push(builder.start().await.unwrap());
    }
    for m in &nodes {
        if not_ready {
            register(m);
            m.set_ready();
        }
    }
    for m in &nodes {
        m.wait_for_peers(WAIT).await.unwrap();
    }
    if !not_ready {
        for m in &nodes {
            register(m);
        }
    }
    let b = nodes.pop().unwrap();
    (nodes.pop().unwrap(), b)
}

async fn echo(conn: &Connection, spec: HandlerSpec, text: &'static str) -> Result<Bytes, Error> {
    tokio::time::timeout(
        WAIT,
        conn.request(spec.id, Bytes::from_static(text.as_bytes())),
    )
    .await
    .expect("a call hung")
}

fn is_unknown(r: &Result<impl std::fmt::Debug, Error>, spec: HandlerSpec, sub: Option<&str>) {
    match r {
        Err(Error::UnknownHandler { handler, subroute })
            if *handler == spec.id && subroute.as_deref() == sub => {}
        other => panic!(
            "expected UnknownHandler for {} {sub:?}, got {other:?}",
            spec.name
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_handler_a_complete_peer_lacks_fails_at_once_with_no_frame_sent() {
    let (a, b) = pair(true, |m| {
        register_echo(m, ECHO);
        register_feed(m);
    })
    .await;
    for (from, to) in [(&a, &b), (&b, &a)] {
        let conn = from.connection(to.name()).unwrap();
        let back = to.connection(from.name()).unwrap();
        // A round trip first: after it, both counters stand still until the next call.
        assert_eq!(echo(&conn, ECHO, "warm").await.unwrap(), "warm");

        assert_eq!(conn.supports(ECHO), Supported::Yes);
        assert_eq!(conn.supports(MISSING), Supported::No);
        assert_eq!(
            conn.supports(FEED),
            Supported::No,
            "only under its subroute"
        );
        assert_eq!(conn.subroute("disk1").supports(FEED), Supported::Yes);
        assert_eq!(conn.subroute("disk2").supports(FEED), Supported::No);

        let (sent, arrived) = (conn.stats().frames_out, back.stats().frames_in);
        is_unknown(&echo(&conn, MISSING, "x").await, MISSING, None);
        is_unknown(
            &echo(&conn.subroute("nope"), ECHO, "x").await,
            ECHO,
            Some("nope"),
        );
        let opened = conn
            .subroute("disk2")
            .open_stream(FEED.id, Bytes::new(), StreamOptions::default())
            .await;
        is_unknown(&opened.map(|_| ()), FEED, Some("disk2"));
        assert_eq!(conn.stats().frames_out, sent, "no frame was sent");
        assert_eq!(back.stats().frames_in, arrived, "no frame arrived");
        assert_eq!(conn.stats().in_flight, InFlight::default());

        // What the peer serves still works, and the calls did go out this time.
        assert_eq!(echo(&conn, ECHO, "still").await.unwrap(), "still");
        let mut feed = conn
            .subroute("disk1")
            .open_stream(FEED.id, Bytes::from_static(b"i"), StreamOptions::default())
            .await
            .unwrap();
        let mut items = 0;
        while let Some(item) = tokio::time::timeout(WAIT, feed.receiver.next())
            .await
            .expect("the stream hung")
        {
            assert_eq!(item.unwrap(), "i");
            items += 1;
        }
        assert_eq!(items, 3);
        assert!(conn.stats().frames_out > sent);
        // The feed's handler may still be finishing on the peer when its `End` has arrived; the
        // next round starts by checking that nothing is in flight, so both ends settle first.
        for end in [&conn, &back] {
            eventually("the feed leaves both ends' tables", WAIT, || {
                match end.stats().in_flight {
                    f if f == InFlight::default() => Ok(()),
                    f => Err(f),
                }
            })
            .await;
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_registered_later_reaches_the_peer_as_an_update() {
    let (a, b) = pair(true, |m| register_echo(m, ECHO)).await;
    let to_b = a.connection(b.name()).unwrap();
    let from_b = b.connection(a.name()).unwrap();
    assert_eq!(echo(&to_b, ECHO, "warm").await.unwrap(), "warm");
    assert_eq!(to_b.supports(LATE), Supported::No);
    let sent = from_b.stats().frames_out;

    register_echo(&b, LATE);
    // The update leaves `b` in its control lane, which the writer empties before the data lane,
    // and the call below reaches `b` after it was queued: once its response is back, `a` has
    // read the update.
    assert_eq!(echo(&to_b, ECHO, "after").await.unwrap(), "after");
    assert_eq!(to_b.supports(LATE), Supported::Yes);
    assert_eq!(
        from_b.stats().frames_out,
        sent + 2,
        "one update frame, one response"
    );
    assert_eq!(echo(&to_b, LATE, "late").await.unwrap(), "late");
    // The other way round nothing changed.
    assert_eq!(from_b.supports(LATE), Supported::No);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_ready_at_once_announce_incomplete_tables_so_calls_go_out_as_before() {
    let (a, b) = pair(false, |m| register_echo(m, ECHO)).await;
    let to_b = a.connection(b.name()).unwrap();
    // Registered a moment ago, its update may still be on its way: the call goes out anyway and
    // `b`, which has it, serves it.
    register_echo(&b, LATE);
    assert_eq!(echo(&to_b, LATE, "now").await.unwrap(), "now");
    assert_eq!(to_b.supports(LATE), Supported::Yes);
    assert_eq!(to_b.supports(MISSING), Supported::Unknown);

    let sent = to_b.stats().frames_out;
    is_unknown(&echo(&to_b, MISSING, "x").await, MISSING, None);
    assert_eq!(
        to_b.stats().frames_out,
        sent + 1,
        "the request went out and `b` answered it"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// An older peer (the scripted peer without a table in its handshake, as a node of a version
/// before tables): the node's calls to it go out as before, and it gets no `Handlers` frame, not
/// even for a handler registered while it is connected. A newer one gets that update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_peer_gets_calls_as_before_and_no_update() {
    let cluster = scripted::Cluster::start(scripted::base_config(), 2).await;
    let mut old = cluster.attacker(0).await;
    old.read_eagerly();
    let empty = grid_core::table::encode(&[], false).unwrap();
    let mut new = cluster.attacker_announcing(1, Some(empty)).await;
    new.read_eagerly();
    let to_old = cluster.node.connection(&old.name).unwrap();
    assert_eq!(to_old.supports(MISSING), Supported::Unknown);

    register_echo(&cluster.node, LATE);
    assert_eq!(old.barrier().await, Vec::<Frame>::new(), "no update");
    match &new.barrier().await[..] {
        [Frame::Handlers { update }] => {
            let table = HandlerTable::decode(update).unwrap();
            assert!(table.contains(LATE.id, None));
            assert!(!table.is_complete(), "the node was ready at once");
        }
        other => panic!("expected one Handlers update, got {other:?}"),
    }

    // A call to the older peer goes out; it answers that it has no such handler.
    let call = tokio::spawn({
        let conn = to_old.clone();
        async move { conn.request(MISSING.id, Bytes::from_static(b"x")).await }
    });
    let mux = match old.frame().await {
        Frame::Request { mux, route, .. } if route.handler == MISSING.id => mux,
        other => panic!("expected the request, got {other:?}"),
    };
    old.send(&[Frame::Response {
        mux,
        result: Err(ErrorRecord::text(ErrorCode::UnknownHandler, "no handler")),
    }])
    .await
    .unwrap();
    let r = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
    is_unknown(&r, MISSING, None);
    cluster.assert_honest_works("with an older peer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_too_large_for_the_handshake_follows_in_updates_and_is_complete_at_the_end() {
    // 400 disks: about 8 KiB of table, more than a handshake record carries.
    let disks: Vec<String> = (0..400).map(|i| format!("/mnt/disk{i:03}")).collect();
    let (a, b) = pair(true, |m| {
        register_echo(m, ECHO);
        for d in &disks {
            m.register_unary_at(LATE, Some(d), |_, p| async move { Ok::<_, RemoteError>(p) })
                .unwrap();
        }
    })
    .await;
    for (from, to) in [(&a, &b), (&b, &a)] {
        let conn = from.connection(to.name()).unwrap();
        // The rest of the table was queued before any response: after a round trip it is in.
        assert_eq!(echo(&conn, ECHO, "sync").await.unwrap(), "sync");
        for d in [&disks[0], &disks[399]] {
            assert_eq!(
                conn.subroute(d.as_str()).supports(LATE),
                Supported::Yes,
                "{d}"
            );
        }
        assert_eq!(conn.subroute("/mnt/disk400").supports(LATE), Supported::No);
        let sent = conn.stats().frames_out;
        is_unknown(
            &echo(&conn.subroute("/mnt/disk400"), LATE, "x").await,
            LATE,
            Some("/mnt/disk400"),
        );
        assert_eq!(conn.stats().frames_out, sent, "no frame was sent");
        assert_eq!(
            echo(&conn.subroute("/mnt/disk399"), LATE, "y")
                .await
                .unwrap(),
            "y"
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}
