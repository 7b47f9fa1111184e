//! The typed layer end to end over real sockets: every shape, typed errors, subroutes and the
//! context a handler sees.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use futures::StreamExt;
use grid::{CallError, Context, HandlerId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockArgs {
    pub resource: String,
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LockError {
    Busy { holder: String },
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub caller: String,
    pub subroute: Option<String>,
    pub has_deadline: bool,
}

#[grid::handler]
pub trait Locker {
    /// Takes a lock.
    async fn lock(&self, args: LockArgs) -> Result<bool, LockError>;
    /// Counts to `n`, failing after `fail_after` items if set.
    #[grid(out_capacity = 4)]
    async fn count(
        &self,
        n: u32,
        fail_after: Option<u32>,
        out: grid::ResponseSender<u32>,
    ) -> Result<(), LockError>;
    /// Echoes each input, prefixed.
    async fn echo(
        &self,
        prefix: String,
        input: grid::RequestReceiver<String>,
        out: grid::ResponseSender<String>,
    ) -> Result<(), LockError>;
    /// Sums the input.
    #[grid(in_capacity = 2)]
    async fn sum(&self, input: grid::RequestReceiver<u64>) -> Result<u64, LockError>;
    /// What the handler's context says.
    #[grid(name = "Locker.whoami.v1", timeout_ms = 5000)]
    async fn whoami(&self, ctx: &grid::Context) -> Result<Seen, LockError>;
    /// Sends one item, then waits for the caller to cancel and reports the cause.
    async fn hang(
        &self,
        ctx: &grid::Context,
        out: grid::ResponseSender<u32>,
    ) -> Result<(), LockError>;
}

struct Impl {
    node: String,
    cancelled: tokio::sync::mpsc::UnboundedSender<grid::CancelCause>,
}

impl Locker for Impl {
    async fn lock(&self, args: LockArgs) -> Result<bool, LockError> {
        match args.resource.as_str() {
            "busy" => Err(LockError::Busy {
                holder: self.node.clone(),
            }),
            "" => Err(LockError::Invalid("empty resource".into())),
            _ => Ok(args.owner == "me"),
        }
    }

    async fn count(
        &self,
        n: u32,
        fail_after: Option<u32>,
        mut out: grid::ResponseSender<u32>,
    ) -> Result<(), LockError> {
        for i in 0..n {
            if Some(i) == fail_after {
                return Err(LockError::Invalid(format!("stopped at {i}")));
            }
            out.send(i)
                .await
                .map_err(|e| LockError::Invalid(e.to_string()))?;
        }
        Ok(())
    }

    async fn echo(
        &self,
        prefix: String,
        mut input: grid::RequestReceiver<String>,
        mut out: grid::ResponseSender<String>,
    ) -> Result<(), LockError> {
        while let Some(item) = input.recv().await {
            let item = item.map_err(|e| LockError::Invalid(e.to_string()))?;
            out.send(format!("{prefix}{item}"))
                .await
                .map_err(|e| LockError::Invalid(e.to_string()))?;
        }
        Ok(())
    }

    async fn sum(&self, mut input: grid::RequestReceiver<u64>) -> Result<u64, LockError> {
        let mut total = 0;
        while let Some(item) = input.next().await {
            total += item.map_err(|e| LockError::Invalid(e.to_string()))?;
        }
        Ok(total)
    }

    async fn whoami(&self, ctx: &Context) -> Result<Seen, LockError> {
        Ok(Seen {
            caller: ctx.caller().to_owned(),
            subroute: ctx.subroute().map(str::to_owned),
            has_deadline: ctx.deadline().is_some(),
        })
    }

    async fn hang(
        &self,
        ctx: &Context,
        mut out: grid::ResponseSender<u32>,
    ) -> Result<(), LockError> {
        out.send(1)
            .await
            .map_err(|e| LockError::Invalid(e.to_string()))?;
        let cause = ctx.cancelled().await;
        let _ = self.cancelled.send(cause);
        Ok(())
    }
}

async fn setup() -> Vec<grid::Manager> {
    setup_with_cancel().await.0
}

async fn setup_with_cancel() -> (
    Vec<grid::Manager>,
    tokio::sync::mpsc::UnboundedReceiver<grid::CancelCause>,
) {
    let nodes = common::cluster(2).await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for m in &nodes {
        let server = LockerServer::new(Impl {
            node: m.name().to_owned(),
            cancelled: tx.clone(),
        });
        server.register(m).unwrap();
        server.register_subroute(m, "disk1").unwrap();
    }
    common::wait_mesh(&nodes).await;
    (nodes, rx)
}

fn client(nodes: &[grid::Manager], from: usize, to: usize) -> LockerClient {
    LockerClient::new(nodes[from].connection(nodes[to].name()).unwrap())
}

#[test]
fn handler_ids_follow_the_wire_names() {
    assert_eq!(
        LockerClient::LOCK.id,
        HandlerId::from_wire_name("Locker.lock")
    );
    assert_eq!(LockerClient::LOCK.name, "Locker.lock");
    assert_eq!(LockerClient::WHOAMI.name, "Locker.whoami.v1");
    assert_eq!(
        LockerClient::WHOAMI.id,
        HandlerId::from_wire_name("Locker.whoami.v1")
    );
    assert_eq!(LockerClient::HANDLERS.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_round_trips_and_errors_arrive_typed() {
    let nodes = setup().await;
    let c = client(&nodes, 0, 1);
    let ok = c
        .lock(LockArgs {
            resource: "a".into(),
            owner: "me".into(),
        })
        .await
        .unwrap();
    assert!(ok);
    let err = c
        .lock(LockArgs {
            resource: "busy".into(),
            owner: "me".into(),
        })
        .await
        .unwrap_err();
    match err {
        CallError::Remote(LockError::Busy { holder }) => assert_eq!(holder, nodes[1].name()),
        other => panic!("expected a typed error, got {other:?}"),
    }
    // Both directions at once.
    let back = client(&nodes, 1, 0);
    let (a, b) = tokio::join!(
        c.lock(LockArgs {
            resource: "x".into(),
            owner: "me".into()
        }),
        back.lock(LockArgs {
            resource: "y".into(),
            owner: "you".into()
        }),
    );
    assert!(a.unwrap());
    assert!(!b.unwrap());
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stream_items_then_typed_error() {
    let nodes = setup().await;
    let c = client(&nodes, 0, 1);
    let items: Vec<u32> = c
        .count(100, None)
        .await
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(items, (0..100).collect::<Vec<_>>());

    let mut s = c.count(10, Some(3)).await.unwrap();
    for i in 0..3 {
        assert_eq!(s.next().await.unwrap().unwrap(), i);
    }
    match s.next().await {
        Some(Err(CallError::Remote(LockError::Invalid(msg)))) => assert_eq!(msg, "stopped at 3"),
        other => panic!("expected the typed error, got {other:?}"),
    }
    assert!(s.next().await.is_none());
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_way_echo_and_client_stream() {
    let nodes = setup().await;
    let c = client(&nodes, 1, 0);
    let (mut sink, mut stream) = c.echo("> ".into()).await.unwrap();
    for word in ["a", "b", "c"] {
        sink.send(word.to_owned()).await.unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), format!("> {word}"));
    }
    sink.finish();
    assert!(stream.next().await.is_none());

    let (mut sink, response) = c.sum().await.unwrap();
    for i in 1..=10u64 {
        sink.send(i).await.unwrap();
    }
    sink.finish();
    assert_eq!(response.response().await.unwrap(), 55);
    common::assert_drained(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subroutes_and_context_fields() {
    let nodes = setup().await;
    let conn = nodes[0].connection(nodes[1].name()).unwrap();
    let plain = LockerClient::new(conn.clone());
    let seen = plain.whoami().await.unwrap();
    assert_eq!(
        seen,
        Seen {
            caller: nodes[0].name().to_owned(),
            subroute: None,
            has_deadline: true,
        }
    );
    let disk = LockerClient::new(conn.subroute("disk1"));
    let seen = disk.whoami().await.unwrap();
    assert_eq!(seen.subroute.as_deref(), Some("disk1"));
    assert_eq!(seen.caller, nodes[0].name());

    let missing = LockerClient::new(conn.subroute("disk9"));
    match missing.whoami().await {
        Err(CallError::Transport(grid::Error::UnknownHandler { .. })) => {}
        other => panic!("expected an unknown handler, got {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(10), common::assert_drained(&nodes))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_cancels_the_typed_handler() {
    let (nodes, mut cancelled) = setup_with_cancel().await;
    let c = client(&nodes, 0, 1);
    let mut s = c.hang().await.unwrap();
    assert_eq!(s.next().await.unwrap().unwrap(), 1);
    drop(s);
    let cause = tokio::time::timeout(common::WAIT, cancelled.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cause, grid::CancelCause::CallerGaveUp);
    common::assert_drained(&nodes).await;
}

#[grid::handler]
pub trait First {
    #[grid(id = 77)]
    async fn a(&self) -> Result<(), ()>;
}

#[grid::handler]
pub trait Second {
    #[grid(id = 77)]
    async fn b(&self) -> Result<(), ()>;
}

struct Both;

impl First for Both {
    async fn a(&self) -> Result<(), ()> {
        Ok(())
    }
}

impl Second for Both {
    async fn b(&self) -> Result<(), ()> {
        Ok(())
    }
}

#[tokio::test]
async fn an_id_collision_across_traits_is_a_registration_error_naming_both() {
    let m = grid::Manager::builder("http://127.0.0.1:1")
        .secret("test-secret")
        .no_listener()
        .start()
        .await
        .unwrap();
    FirstServer::new(Both).register(&m).unwrap();
    let err = SecondServer::new(Both).register(&m).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("First.a") && msg.contains("Second.b"), "{msg}");
    m.shutdown().await;
}
