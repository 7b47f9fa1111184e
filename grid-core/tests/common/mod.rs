//! What grid-core's real-socket tests share: the bounded waits, the test configurations, and
//! loopback listeners bound on port 0 and kept (no port is reserved, released and bound again,
//! which another process could take in between).
//!
//! The scripted-peer tests (`scripted/`) have their own harness; this is for tests that run
//! real managers against each other.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::net::TcpListener;
use std::time::Duration;

use grid_core::{Config, Manager, ManagerBuilder};

mod wait;
#[allow(unused_imports)]
pub use wait::{eventually, next_event};

/// The bound of a wait that fails loudly.
pub const WAIT: Duration = Duration::from_secs(10);

/// The cluster secret of every test node.
pub const SECRET: &str = "test-secret";

/// The configuration of the tests (a test that needs another value changes one field of it):
/// short liveness and reconnect times so failures show quickly.
pub fn test_config() -> Config {
    Config {
        ping_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(3),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        ..Config::default()
    }
}

/// [`test_config`] with pings so rare that no test sees one: the frame counters move only with
/// the test's calls.
pub fn quiet_config() -> Config {
    Config {
        ping_interval: Duration::from_secs(120),
        idle_timeout: Duration::from_secs(360),
        ..test_config()
    }
}

/// A loopback listener on port 0, kept, and the `http://` node name that points at it.
pub fn bound() -> (TcpListener, String) {
    bound_as("http")
}

/// A loopback listener on port 0, kept, and the node name of `scheme` (`http` or `https`) that
/// points at it.
pub fn bound_as(scheme: &str) -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let name = format!("{scheme}://{}", l.local_addr().unwrap());
    (l, name)
}

/// Two bound listeners, ordered so that the first one's node dials the second's (the dial
/// rule, [`grid_core::dialer_of`]).
pub fn dialer_and_acceptor() -> ((TcpListener, String), (TcpListener, String)) {
    let (x, y) = (bound(), bound());
    if grid_core::dialer_of(&x.1, &y.1) == x.1 {
        (x, y)
    } else {
        (y, x)
    }
}

/// A builder for node `name` among `peers`, serving on `listener`, with [`SECRET`] and
/// `config`.
pub fn builder(
    listener: TcpListener,
    name: &str,
    peers: &[String],
    config: Config,
) -> ManagerBuilder {
    Manager::builder(name)
        .peers(peers.iter().cloned())
        .secret(SECRET)
        .config(config)
        .listener(listener)
}
