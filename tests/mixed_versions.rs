//! A rolling upgrade in one process: one node runs the old build of a service, two run the new
//! one (`mixed_versions/old.rs`, `mixed_versions/new.rs`, same wire names), over real sockets.
//! The new build added a defaulted field to the request and to the response, added a method and
//! retired one; old and new nodes call each other in both directions and each change behaves as
//! grid-build's lock check says (its verdict on this very step is pinned by
//! `grid-build/tests/mixed_versions_lock.rs`).
//!
//! Each node registers its build's handlers before it takes peers (it starts not ready, as a
//! node restarted into a new build would), so each announces a complete handler table in its
//! handshakes: a call to the method the other build lacks fails at once, with no request frame
//! on the wire (`PROTOCOL.md` section 9).

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

#[path = "mixed_versions/new.rs"]
mod new;
#[path = "mixed_versions/old.rs"]
mod old;

use std::net::TcpListener;
use std::time::Duration;

use futures::StreamExt;
use grid::{CallError, Config, Manager, Supported};

/// Node 0 runs the old build, nodes 1 and 2 the new one. Each registers its handlers, then
/// opens (so its handler table is complete); pings are rare enough that the frame counters move
/// only with the tests' calls.
async fn upgrade_in_progress() -> Vec<Manager> {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let names: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().unwrap()))
        .collect();
    let config = Config {
        ping_interval: Duration::from_secs(120),
        idle_timeout: Duration::from_secs(360),
        ..common::test_config()
    };
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let node = Manager::builder(names[i].clone())
            .peers(names.clone())
            .secret("test-secret")
            .config(config.clone())
            .listener(listener)
            .start_not_ready()
            .start()
            .await
            .unwrap();
        if i == 0 {
            old::CatalogServer::new(old::Server)
                .register(&node)
                .unwrap();
        } else {
            new::CatalogServer::new(new::Server)
                .register(&node)
                .unwrap();
        }
        node.set_ready();
        nodes.push(node);
    }
    common::wait_mesh(&nodes).await;
    nodes
}

/// Frames node `from` sent to `to`, and frames `to` received from `from`, so far.
fn frames_between(nodes: &[Manager], from: usize, to: usize) -> (u64, u64) {
    let sent = nodes[from].connection(nodes[to].name()).unwrap().stats();
    let received = nodes[to].connection(nodes[from].name()).unwrap().stats();
    (sent.frames_out, received.frames_in)
}

fn old_client(nodes: &[Manager], from: usize, to: usize) -> old::CatalogClient {
    old::CatalogClient::new(nodes[from].connection(nodes[to].name()).unwrap())
}

fn new_client(nodes: &[Manager], from: usize, to: usize) -> new::CatalogClient {
    new::CatalogClient::new(nodes[from].connection(nodes[to].name()).unwrap())
}

fn is_unknown_handler<E: std::fmt::Debug>(r: &Result<impl std::fmt::Debug, CallError<E>>) -> bool {
    matches!(
        r,
        Err(CallError::Transport(grid::Error::UnknownHandler { .. }))
    )
}

#[test]
fn both_builds_give_a_kept_method_the_same_id() {
    assert_eq!(old::CatalogClient::GET, new::CatalogClient::GET);
    assert_eq!(old::CatalogClient::GET.name, "Catalog.get");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaulted_fields_cross_between_builds_in_both_directions() {
    let nodes = upgrade_in_progress().await;

    // Old caller → new handler: `with_owner` is missing and reads as false; the response's
    // new `owner` field is ignored by the old caller.
    let item = old_client(&nodes, 0, 1)
        .get(old::Get { key: "a".into() })
        .await
        .unwrap();
    assert_eq!(
        item,
        old::Item {
            key: "a".into(),
            size: 20
        }
    );

    // New caller → old handler: the old handler ignores `with_owner`; the missing `owner`
    // reads as empty.
    let item = new_client(&nodes, 1, 0)
        .get(new::Get {
            key: "a".into(),
            with_owner: true,
        })
        .await
        .unwrap();
    assert_eq!(
        item,
        new::Item {
            key: "a".into(),
            size: 10,
            owner: String::new()
        }
    );

    // New caller → new handler: the new field does its job.
    let item = new_client(&nodes, 2, 1)
        .get(new::Get {
            key: "a".into(),
            with_owner: true,
        })
        .await
        .unwrap();
    assert_eq!(item.owner, "new");

    // The error type did not change, so each build decodes the other's errors as `Remote`.
    let err = old_client(&nodes, 0, 2)
        .get(old::Get { key: "zz".into() })
        .await
        .unwrap_err();
    assert_eq!(
        err.remote(),
        Some(&old::CatalogError::NotFound("zz".into()))
    );
    let err = new_client(&nodes, 2, 0)
        .get(new::Get {
            key: "zz".into(),
            with_owner: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.remote(),
        Some(&new::CatalogError::NotFound("zz".into()))
    );
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_method_works_between_new_nodes_and_is_unknown_to_the_old_one() {
    let nodes = upgrade_in_progress().await;

    let mut items = new_client(&nodes, 1, 2).list("a".into()).await.unwrap();
    let mut keys = Vec::new();
    while let Some(item) = items.next().await {
        keys.push(item.unwrap().key);
    }
    assert_eq!(keys, ["a", "ab"]);

    // The old node has no `Catalog.list`: a typed error at the open (its table says so), and the
    // connection stays usable.
    match new_client(&nodes, 1, 0).list("a".into()).await {
        Err(e) => assert!(
            matches!(e, CallError::Transport(grid::Error::UnknownHandler { .. })),
            "{e:?}"
        ),
        Ok(_) => panic!("the old node's table has no Catalog.list"),
    }
    let item = new_client(&nodes, 1, 0)
        .get(new::Get {
            key: "a".into(),
            with_owner: false,
        })
        .await
        .unwrap();
    assert_eq!(item.size, 10);
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_method_is_unknown_to_new_nodes_and_still_served_by_old_ones() {
    let nodes = upgrade_in_progress().await;

    // The old build still calls `count`; the new nodes retired it.
    for to in [1, 2] {
        let r = old_client(&nodes, 0, to).count().await;
        assert!(is_unknown_handler(&r), "{r:?}");
    }
    // Old nodes still serve it to whoever still has the old build (here, the old node's own
    // client type, used from a new node: the ids are on the wire, not the build).
    assert_eq!(old_client(&nodes, 1, 0).count().await.unwrap(), 1);

    // The connections survive the unknown calls.
    let item = old_client(&nodes, 0, 1)
        .get(old::Get { key: "ab".into() })
        .await
        .unwrap();
    assert_eq!(item.size, 21);
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_the_other_build_lacks_fails_at_once_with_no_request_frame_sent() {
    let nodes = upgrade_in_progress().await;
    let old_to_new = old_client(&nodes, 0, 1);
    let new_to_old = new_client(&nodes, 1, 0);

    // What each build serves, as the other learned it in the handshake.
    let (o, n) = (old_to_new.connection(), new_to_old.connection());
    assert_eq!(o.supports(old::CatalogClient::GET), Supported::Yes);
    assert_eq!(o.supports(old::CatalogClient::COUNT), Supported::No);
    assert_eq!(n.supports(new::CatalogClient::GET), Supported::Yes);
    assert_eq!(n.supports(new::CatalogClient::LIST), Supported::No);
    assert_eq!(n.supports(old::CatalogClient::COUNT), Supported::Yes);

    // A round trip each way, after which the counters move only with calls.
    let get = || old::Get { key: "a".into() };
    old_to_new.get(get()).await.unwrap();
    old_client(&nodes, 1, 0).get(get()).await.unwrap();
    let before = [frames_between(&nodes, 0, 1), frames_between(&nodes, 1, 0)];

    // The old build calls its retired method on a new node; the new build opens its added
    // stream on the old node: both fail at once, and nothing crosses either way.
    let r = old_to_new.count().await;
    assert!(is_unknown_handler(&r), "{r:?}");
    match new_to_old.list("a".into()).await {
        Err(CallError::Transport(grid::Error::UnknownHandler { handler, .. })) => {
            assert_eq!(handler, new::CatalogClient::LIST.id)
        }
        Err(e) => panic!("expected UnknownHandler, got {e:?}"),
        Ok(_) => panic!("the open went out"),
    }
    assert_eq!(
        [frames_between(&nodes, 0, 1), frames_between(&nodes, 1, 0)],
        before,
        "a request frame was sent"
    );

    // What both builds serve still goes out (one request, one response each way).
    assert_eq!(old_to_new.get(get()).await.unwrap().size, 20);
    let (sent, received) = frames_between(&nodes, 0, 1);
    assert_eq!((sent, received), (before[0].0 + 1, before[0].1 + 1));
    common::assert_drained(&nodes).await;
}
