//! Payload evolution across versions: a request or response struct that gains a
//! `#[serde(default)]` field still talks to a peer built with the old struct, in both directions.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use serde::{Deserialize, Serialize};

/// The service as version 1 of the cluster built it.
mod v1 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Put {
        pub(crate) key: String,
        pub(crate) value: u64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Stored {
        pub(crate) key: String,
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub(crate) enum Error {
        Full,
    }

    #[grid::handler]
    pub(crate) trait Kv {
        async fn put(&self, req: Put) -> Result<Stored, Error>;
    }

    pub(crate) struct Server;

    impl Kv for Server {
        async fn put(&self, req: Put) -> Result<Stored, Error> {
            Ok(Stored { key: req.key })
        }
    }
}

/// Version 2: both structs gained a field with a default.
mod v2 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Put {
        pub(crate) key: String,
        pub(crate) value: u64,
        #[serde(default)]
        pub(crate) ttl_secs: Option<u32>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Stored {
        pub(crate) key: String,
        #[serde(default)]
        pub(crate) version: u64,
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub(crate) enum Error {
        Full,
    }

    #[grid::handler]
    pub(crate) trait Kv {
        async fn put(&self, req: Put) -> Result<Stored, Error>;
    }

    pub(crate) struct Server;

    impl Kv for Server {
        async fn put(&self, req: Put) -> Result<Stored, Error> {
            // An old caller's request arrives with the default.
            let version = if req.ttl_secs.is_none() { 1 } else { 2 };
            Ok(Stored {
                key: req.key,
                version,
            })
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_structs_talk_both_ways() {
    let nodes = common::cluster(2).await;
    // Same wire name and id on both sides: `Kv.put`.
    assert_eq!(v1::KvClient::PUT.id, v2::KvClient::PUT.id);
    v1::KvServer::new(v1::Server).register(&nodes[0]).unwrap();
    v2::KvServer::new(v2::Server).register(&nodes[1]).unwrap();
    common::wait_mesh(&nodes).await;

    // Old caller → new handler: the missing field takes its default; the new response's extra
    // field is ignored by the old caller.
    let old = v1::KvClient::new(nodes[0].connection(nodes[1].name()).unwrap());
    let r = old
        .put(v1::Put {
            key: "a".into(),
            value: 1,
        })
        .await
        .unwrap();
    assert_eq!(r, v1::Stored { key: "a".into() });

    // New caller → old handler: the extra request field is ignored; the missing response field
    // takes its default.
    let new = v2::KvClient::new(nodes[1].connection(nodes[0].name()).unwrap());
    let r = new
        .put(v2::Put {
            key: "b".into(),
            value: 2,
            ttl_secs: Some(30),
        })
        .await
        .unwrap();
    assert_eq!(
        r,
        v2::Stored {
            key: "b".into(),
            version: 0
        }
    );
    common::assert_drained(&nodes).await;
}
