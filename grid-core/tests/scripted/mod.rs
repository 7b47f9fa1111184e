//! A scripted peer, in h2's style: one real node, and a test that plays the other end of its
//! socket frame by frame.
//!
//! The scripted peer is a *member*: it holds the cluster secret and performs the real handshake as
//! the dialing side (with grid_core's own handshake state machines), so the node treats it as an
//! authenticated peer. After that it sends whatever the test scripts, encoded with the crate's own
//! codec (protocol violations included: the encoder writes what it is given), and hands the frames
//! the node sends back to the test one by one.
//!
//! - [`Cluster`] starts the node (no listener) and an honest second peer, a real [`Manager`]
//!   connected through an in-memory socket, so a test can check that honest calls keep working
//!   while it attacks.
//! - [`ScriptedPeer`] is one connection: [`Cluster::attacker`] connects it over
//!   `tokio::io::duplex` into [`Manager::accept`]; [`ScriptedPeer::connect_over`] takes any byte
//!   stream (the `attack` example uses TCP).
//! - Its reader runs on a task of its own and reads only as many WebSocket messages as the test
//!   allows ([`ScriptedPeer::allow_reads`], [`ScriptedPeer::read_eagerly`]): a peer that reads
//!   slowly or never is one call away.
//! - [`Gauge`] is what handlers registered on the node report into: how many run at once (and the
//!   high-water mark), how many saw cancellation.
//!
//! Every wait is bounded by [`WAIT`] and fails loudly with what it was waiting for.

#![allow(dead_code, unreachable_pub, missing_docs)]

mod gauge;
mod peer;
// The bounded waits of `common/`, loaded here too: the `attack` example and the scripted-only
// tests have no `common` module. A test binary with both harnesses loads the file twice, on
// purpose.
#[allow(clippy::duplicate_mod)]
#[path = "../common/wait.rs"]
mod wait;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use grid_core::dialer_of;
use grid_core::frame::{CancelReason, Frame, Metadata, Route};
use grid_core::handshake::Features;
use grid_core::{
    BoxedTransport, CloseKind, Config, ConnState, DialFn, HandlerSpec, Manager, MuxId, RemoteError,
};

// Each test binary uses a part of the harness.
#[allow(unused_imports)]
pub use gauge::*;
#[allow(unused_imports)]
pub use peer::*;
#[allow(unused_imports)]
pub use wait::{eventually, next_event};

/// Every wait of the harness is bounded by this and fails loudly.
pub const WAIT: Duration = Duration::from_secs(5);

/// The cluster secret of every node and scripted peer here.
pub const SECRET: &str = "scripted-peer-secret";

/// Bytes each direction of an in-memory socket buffers: about a loopback TCP socket's worth.
pub const PIPE_BYTES: usize = 64 << 10;

/// The honest peers' echo handler, registered on the node and on the honest peer.
pub const ECHO: HandlerSpec = HandlerSpec::named("Scripted.echo");

/// The node's name: the scripted peers and the honest peer are the dialing side of every pair.
pub const NODE: &str = "http://node.scripted:9000";

/// The configuration the tests start from: reconnects quick, pings rare enough that a test of a
/// few seconds sees none on its scripted socket.
pub fn base_config() -> Config {
    Config {
        max_inbound_bytes: 8 << 20,
        max_pending_response_bytes: 8 << 20,
        ping_interval: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(90),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        ..Config::default()
    }
}

/// `n` names, each of which dials `node` by the protocol's rule (so `node` never dials them).
pub fn dialer_names(node: &str, prefix: &str, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..100_000)
        .map(|i| format!("http://{prefix}-{i}.scripted:9000"))
        .filter(|name| dialer_of(name, node) == name.as_str())
        .take(n)
        .collect();
    assert_eq!(names.len(), n, "not enough dialing names for {node}");
    names
}

/// The wall clock, unix milliseconds, as the handshake wants it.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

// --- frames ----------------------------------------------------------------------------------

/// A unary `Request` to `handler` with no deadline.
pub fn request(mux: MuxId, handler: HandlerSpec, payload: Bytes) -> Frame {
    Frame::Request {
        mux,
        route: Route {
            handler: handler.id,
            subroute: None,
        },
        deadline_ms: 0,
        metadata: Metadata::new(),
        payload: Some(payload),
    }
}

/// The caller gives up on `mux`.
pub fn cancel(mux: MuxId) -> Frame {
    Frame::Cancel {
        mux,
        reason: CancelReason::CallerGaveUp,
    }
}

/// A stream `Open` to `handler` with no deadline; `in_cap == 0` means no input stream. The byte
/// windows are as large as the protocol allows, so the message caps are what bind.
pub fn open(mux: MuxId, handler: HandlerSpec, in_cap: u32, out_cap: u32) -> Frame {
    Frame::Open {
        mux,
        route: Route {
            handler: handler.id,
            subroute: None,
        },
        deadline_ms: 0,
        metadata: Metadata::new(),
        in_cap,
        out_cap,
        in_window: if in_cap > 0 { u32::MAX } else { 0 },
        out_window: u32::MAX,
        input: in_cap > 0,
        payload: Some(Bytes::new()),
    }
}

/// One stream message from the caller.
pub fn data(mux: MuxId, seq: u32, payload: Bytes) -> Frame {
    Frame::Data {
        mux,
        seq,
        payload: Some(payload),
    }
}

/// Waits until `pred` holds of the node's stats (polled: no event announces them), at most
/// [`WAIT`]; fails loudly with the last stats.
pub async fn expect_stats(
    node: &Manager,
    what: &str,
    pred: impl Fn(&grid_core::ManagerStats) -> bool,
) -> grid_core::ManagerStats {
    eventually(what, WAIT, || {
        let s = node.stats();
        if pred(&s) {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await
}

// --- the node and its honest peer ------------------------------------------------------------

/// One node under test, an honest peer connected to it, and the names scripted peers may use.
#[derive(Debug)]
pub struct Cluster {
    pub node: Manager,
    pub honest: Manager,
    pub attackers: Vec<String>,
    pub config: Config,
}

impl Cluster {
    /// Starts the node with `config` (no listener), an honest peer, and room for `attackers`
    /// scripted members; waits until the honest peer is connected.
    pub async fn start(config: Config, attackers: usize) -> Cluster {
        Cluster::start_with(config, base_config(), attackers).await
    }

    /// [`start`](Self::start), with `honest_config` for the honest peer.
    pub async fn start_with(config: Config, honest_config: Config, attackers: usize) -> Cluster {
        let honest_name = dialer_names(NODE, "honest", 1).remove(0);
        let attackers = dialer_names(NODE, "scripted", attackers);
        let mut members = vec![honest_name.clone()];
        members.extend(attackers.iter().cloned());
        let node = Manager::builder(NODE)
            .peers(members)
            .secret(SECRET)
            .config(config.clone())
            .no_listener()
            .start()
            .await
            .expect("start the node");
        let to_node = node.clone();
        let dial: DialFn = Arc::new(move |_target| {
            let node = to_node.clone();
            Box::pin(async move {
                let (client, server) = tokio::io::duplex(PIPE_BYTES);
                tokio::spawn(async move { node.accept(Box::new(server)).await });
                Ok(Box::new(client) as BoxedTransport)
            })
        });
        let honest = Manager::builder(honest_name)
            .peers([NODE])
            .secret(SECRET)
            .config(honest_config)
            .no_listener()
            .dialer(dial)
            .start()
            .await
            .expect("start the honest peer");
        for m in [&node, &honest] {
            let name = m.name().to_owned();
            m.register_unary(ECHO, move |_ctx, payload: Bytes| {
                let name = name.clone();
                async move {
                    let mut out = name.into_bytes();
                    out.extend_from_slice(b" <- ");
                    out.extend_from_slice(&payload);
                    Ok::<_, RemoteError>(Bytes::from(out))
                }
            })
            .expect("register echo");
        }
        honest
            .wait_for_peers(WAIT)
            .await
            .expect("the honest peer connects to the node");
        Cluster {
            node,
            honest,
            attackers,
            config,
        }
    }

    /// Connects scripted peer `i` to the node through an in-memory socket.
    pub async fn attacker(&self, i: usize) -> ScriptedPeer {
        self.attacker_announcing(i, None).await
    }

    /// [`attacker`](Self::attacker), announcing `table` (a handler-table message) in the
    /// handshake when given.
    pub async fn attacker_announcing(&self, i: usize, table: Option<Bytes>) -> ScriptedPeer {
        self.attacker_with(i, table, Features::NONE).await
    }

    /// [`attacker_announcing`](Self::attacker_announcing), offering `features` in the
    /// handshake.
    pub async fn attacker_with(
        &self,
        i: usize,
        table: Option<Bytes>,
        features: Features,
    ) -> ScriptedPeer {
        let (client, server) = tokio::io::duplex(PIPE_BYTES);
        let node = self.node.clone();
        tokio::spawn(async move { node.accept(Box::new(server)).await });
        let peer = ScriptedPeer::connect_with(
            Box::new(client),
            "node.scripted:9000",
            &self.config.route,
            &self.attackers[i],
            NODE,
            table,
            features,
        )
        .await;
        // The node installs the connection just after its `Ready`: wait for it, so that what the
        // test reads of the node's connection is about this socket.
        self.node
            .connection(&self.attackers[i])
            .expect("known peer")
            .wait_for_connect(WAIT)
            .await
            .expect("the node installs the scripted connection");
        peer
    }

    /// A real call each way between the honest peer and the node succeeds, within [`WAIT`].
    pub async fn assert_honest_works(&self, when: &str) {
        for (from, to) in [(&self.honest, &self.node), (&self.node, &self.honest)] {
            let conn = from.connection(to.name()).expect("known peer");
            let payload = Bytes::from(format!("honest call {when}"));
            let got = tokio::time::timeout(WAIT, conn.request(ECHO.id, payload))
                .await
                .unwrap_or_else(|_| {
                    panic!("{when}: honest call {} -> {} hung", from.name(), to.name())
                })
                .unwrap_or_else(|e| {
                    panic!(
                        "{when}: honest call {} -> {} failed: {e}",
                        from.name(),
                        to.name()
                    )
                });
            let want = format!("{} <- honest call {when}", to.name());
            assert_eq!(String::from_utf8_lossy(&got), want, "{when}");
        }
    }

    /// After attacker `i` broke a rule: waits until its peer end sees the link closed and the
    /// node lets go of it, and returns why the node closed it.
    pub async fn closed_by_node(&self, peer: &mut ScriptedPeer, i: usize, what: &str) -> CloseKind {
        peer.expect_closed(what).await;
        self.expect_node_disconnected(&self.attackers[i], what)
            .await;
        self.node
            .connection(&self.attackers[i])
            .expect("known peer")
            .last_close_reason()
            .unwrap_or_else(|| panic!("{what}: no close reason"))
            .kind
    }

    /// Waits until the node no longer has a live connection to `peer`. Polled: the link's
    /// `Disconnected` event comes a moment before its state changes, and also when a newer
    /// session replaces the old one.
    pub async fn expect_node_disconnected(&self, peer: &str, what: &str) {
        let conn = self.node.connection(peer).expect("known peer");
        let what = format!("{what}: the node lets go of its connection to {peer}");
        eventually(&what, WAIT, || match conn.state() {
            ConnState::Connected => Err(ConnState::Connected),
            _ => Ok(()),
        })
        .await;
    }
}
