//! Helpers shared by the integration tests: clusters of real managers on loopback.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use grid::{Config, Manager};

/// A bounded wait that fails loudly.
pub const WAIT: Duration = Duration::from_secs(10);

/// Test configuration: short liveness and reconnect times so failures show quickly.
pub fn test_config() -> Config {
    Config {
        ping_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(3),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        ..Config::default()
    }
}

/// Reserves `n` loopback names with free ports (bound, read, released).
pub fn free_names(n: usize) -> Vec<String> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().unwrap()))
        .collect()
}

/// Starts `n` managers that know each other, with `config`, and waits for the full mesh.
pub async fn cluster_with(n: usize, config: Config) -> Vec<Manager> {
    let names = free_names(n);
    let mut managers = Vec::new();
    for name in &names {
        let m = Manager::builder(name.clone())
            .peers(names.clone())
            .secret("test-secret")
            .config(config.clone())
            .start()
            .await
            .unwrap();
        managers.push(m);
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

/// Asserts that every in-flight count on every manager returns to zero (bounded wait).
pub async fn assert_drained(managers: &[Manager]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let busy: Vec<String> = managers
            .iter()
            .filter(|m| m.stats().in_flight.total() != 0)
            .map(|m| format!("{}: {:?}", m.name(), m.stats().in_flight))
            .collect();
        if busy.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "in-flight counts did not return to zero: {busy:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
