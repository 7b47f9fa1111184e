//! Helpers shared by the integration tests: clusters of real managers on loopback.
//!
//! Every manager binds its embedded listener on `127.0.0.1:0` and keeps it (no port is reserved,
//! released and bound again, which another process could take in between). A node's name is
//! its identity only (`http://node0.test:7000`); where it listens is in an [`AddressBook`] that
//! each node's dialer reads, filled as the nodes start.
//!
//! The bounded wait, the secret and the test configurations are grid-core's test module's
//! (`grid-core/tests/common`), so both crates' tests run on one configuration.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]
// What an `eventually` check saw (its `Err`) is printed once if the wait fails: size is no matter.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use grid::{BoxedTransport, Config, DialFn, DialTarget, Manager, ManagerBuilder};
use tokio::sync::watch;

#[path = "../../grid-core/tests/common/mod.rs"]
mod shared;

pub use shared::{eventually, test_config, SECRET, WAIT};

/// `n` node names. They are identities, not addresses: see [`AddressBook`].
pub fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("http://node{i}.test:7000"))
        .collect()
}

/// Where each node of a test cluster listens, by name. A dial to a node not yet started waits
/// for its entry (bounded by the dialing manager's `dial_timeout`).
#[derive(Clone)]
pub struct AddressBook {
    book: Arc<watch::Sender<HashMap<String, SocketAddr>>>,
}

impl Default for AddressBook {
    fn default() -> AddressBook {
        AddressBook {
            book: Arc::new(watch::channel(HashMap::new()).0),
        }
    }
}

impl AddressBook {
    /// Records where `name` listens.
    pub fn insert(&self, name: &str, addr: SocketAddr) {
        self.book.send_modify(|b| {
            b.insert(name.to_owned(), addr);
        });
    }

    /// Where `name` listens, once it is known.
    pub async fn lookup(&self, name: &str) -> SocketAddr {
        let mut rx = self.book.subscribe();
        let book = rx.wait_for(|b| b.contains_key(name)).await.unwrap();
        book[name]
    }

    /// A dialer that connects to the address recorded for the peer's name.
    pub fn dialer(&self) -> DialFn {
        let this = self.clone();
        Arc::new(move |target: DialTarget| {
            let this = this.clone();
            Box::pin(async move {
                let addr = this.lookup(&target.peer).await;
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                Ok(Box::new(tcp) as BoxedTransport)
            })
        })
    }

    /// A builder for node `name` of the cluster `names`: the shared secret, `config`, a listener
    /// on `127.0.0.1:0` and this book's dialer. Start it with [`AddressBook::start`].
    pub fn builder(&self, name: &str, names: &[String], config: Config) -> ManagerBuilder {
        Manager::builder(name)
            .peers(names.iter().cloned())
            .secret(SECRET)
            .config(config)
            .listen("127.0.0.1:0")
            .dialer(self.dialer())
    }

    /// Starts `builder` and records where it listens.
    pub async fn start(&self, builder: ManagerBuilder) -> Manager {
        let m = builder.start().await.unwrap();
        self.insert(m.name(), m.local_addr().unwrap());
        m
    }
}

/// Starts `n` managers that know each other, with `config` (the mesh forms in the background).
pub async fn cluster_with(n: usize, config: Config) -> Vec<Manager> {
    let book = AddressBook::default();
    let names = names(n);
    let mut managers = Vec::new();
    for name in &names {
        managers.push(book.start(book.builder(name, &names, config.clone())).await);
    }
    managers
}

/// Starts `n` managers with [`test_config`] (handlers are registered later; calls wait).
pub async fn cluster(n: usize) -> Vec<Manager> {
    cluster_with(n, test_config()).await
}

/// Waits for every manager to be connected to every peer.
pub async fn wait_mesh(managers: &[Manager]) {
    for m in managers {
        m.wait_for_peers(WAIT).await.unwrap();
    }
}

/// Asserts that every in-flight count on every manager returns to zero, handler tasks included
/// (bounded wait: a cancelled handler may hold its slot for the cancel grace).
pub async fn assert_drained(managers: &[Manager]) {
    eventually("in-flight counts return to zero", WAIT, || {
        let busy: Vec<String> = managers
            .iter()
            .filter(|m| {
                let f = m.stats().in_flight;
                f.total() != 0 || f.handlers != 0
            })
            .map(|m| format!("{}: {:?}", m.name(), m.stats().in_flight))
            .collect();
        if busy.is_empty() {
            Ok(())
        } else {
            Err(busy)
        }
    })
    .await;
}

/// Starts `n` managers with `config`, registers nothing, and waits for the full mesh.
pub async fn connected(n: usize, config: Config) -> Vec<Manager> {
    let nodes = cluster_with(n, config).await;
    wait_mesh(&nodes).await;
    nodes
}

/// A deterministic pseudo-random payload of `len` bytes.
pub fn pattern(len: usize, seed: u8) -> bytes::Bytes {
    let mut x: u32 = 0x9E37_79B9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect::<Vec<u8>>()
        .into()
}

/// A call of the echo handler `echo` through `conn` gets `payload` back: the link works.
pub async fn assert_echo(conn: &grid::Connection, echo: grid::HandlerSpec, payload: &'static [u8]) {
    let got = conn
        .request(echo.id, bytes::Bytes::from_static(payload))
        .await
        .unwrap_or_else(|e| panic!("echo of {:?}: {e}", String::from_utf8_lossy(payload)));
    assert_eq!(&got[..], payload);
}

/// Waits (bounded) for a value from a channel fed by a handler.
pub async fn recv_within<T>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    limit: Duration,
) -> T {
    tokio::time::timeout(limit, rx.recv())
        .await
        .expect("timed out waiting for a handler report")
        .expect("report channel closed")
}

/// A fault-injecting transport for [`grid::ManagerBuilder::dialer`]: every dial goes through an
/// in-process proxy (a duplex pipe copied to a real TCP socket) whose client-to-server direction
/// can be paused, so the remote peer looks as if it stopped reading.
#[derive(Clone, Default)]
pub struct Proxy {
    pauses: std::sync::Arc<std::sync::Mutex<Vec<tokio::sync::watch::Sender<bool>>>>,
}

impl Proxy {
    /// Dials made so far.
    pub fn dials(&self) -> usize {
        self.pauses.lock().unwrap().len()
    }

    /// Stops forwarding what the local node writes on the newest connection.
    pub fn pause_current(&self) {
        if let Some(tx) = self.pauses.lock().unwrap().last() {
            tx.send_replace(true);
        }
    }

    /// Resumes forwarding on every connection.
    pub fn resume_all(&self) {
        for tx in self.pauses.lock().unwrap().iter() {
            tx.send_replace(false);
        }
    }

    /// The dial function to hand to the manager builder: it finds the peer in `book`.
    pub fn dialer(&self, book: &AddressBook) -> grid::DialFn {
        let this = self.clone();
        let book = book.clone();
        std::sync::Arc::new(move |target: grid::DialTarget| {
            let this = this.clone();
            let book = book.clone();
            Box::pin(async move {
                let addr = book.lookup(&target.peer).await;
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let (client, proxy_end) = tokio::io::duplex(64 << 10);
                let (pause_tx, pause_rx) = tokio::sync::watch::channel(false);
                this.pauses.lock().unwrap().push(pause_tx);
                tokio::spawn(run_proxy(proxy_end, tcp, pause_rx));
                Ok(Box::new(client) as grid::BoxedTransport)
            })
        })
    }
}

async fn run_proxy(
    local: tokio::io::DuplexStream,
    remote: tokio::net::TcpStream,
    mut paused: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut lr, mut lw) = tokio::io::split(local);
    let (mut rr, mut rw) = remote.into_split();
    let up = async move {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            if paused.wait_for(|p| !*p).await.is_err() {
                return;
            }
            match lr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if rw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let down = async move {
        let _ = tokio::io::copy(&mut rr, &mut lw).await;
    };
    // Either direction ending tears down both, so the remote side sees the close promptly.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Waits (bounded) until `conn` has connected `n` times and is connected now.
pub async fn wait_connects(conn: &grid::Connection, n: u64) {
    let what = format!("{} -> {}: connected {n} times", conn.local(), conn.peer());
    eventually(&what, WAIT, || {
        let (stats, state) = (conn.stats(), conn.state());
        if stats.connects >= n && state == grid::ConnState::Connected {
            Ok(())
        } else {
            Err((state, stats))
        }
    })
    .await;
}
