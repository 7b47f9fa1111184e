//! A rolling upgrade in one process: one node runs the old build of a service, two run the new
//! one (`mixed_versions/old.rs`, `mixed_versions/new.rs`, same wire names), over real sockets.
//! The new build added a defaulted field to the request and to the response, added a method and
//! retired one; old and new nodes call each other in both directions and each change behaves as
//! grid-build's lock check says (its verdict on this very step is pinned by
//! `grid-build/tests/mixed_versions_lock.rs`).

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

#[path = "mixed_versions/new.rs"]
mod new;
#[path = "mixed_versions/old.rs"]
mod old;

use futures::StreamExt;
use grid::{CallError, Manager};

/// Node 0 runs the old build, nodes 1 and 2 the new one.
async fn upgrade_in_progress() -> Vec<Manager> {
    let nodes = common::cluster(3).await;
    old::CatalogServer::new(old::Server)
        .register(&nodes[0])
        .unwrap();
    for n in &nodes[1..] {
        new::CatalogServer::new(new::Server).register(n).unwrap();
    }
    common::wait_mesh(&nodes).await;
    nodes
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

    // The old node has no `Catalog.list`: a typed, prompt error (at the open, or as the
    // stream's first item), and the connection stays usable.
    match new_client(&nodes, 1, 0).list("a".into()).await {
        Err(e) => assert!(
            matches!(e, CallError::Transport(grid::Error::UnknownHandler { .. })),
            "{e:?}"
        ),
        Ok(mut s) => {
            let first = s.next().await.expect("the stream reports why it ended");
            assert!(is_unknown_handler(&first), "{first:?}");
        }
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
