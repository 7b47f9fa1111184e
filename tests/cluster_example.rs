//! Runs the main job, `examples/cluster`, with small parameters: once with three nodes in one
//! process, once as three separate processes on loopback. Checks exit status and summary.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The example binary that `cargo test` built next to this test's binary.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("examples").join("cluster");
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}

/// Waits for a child with a bound; kills it and fails loudly if it runs over.
fn wait_bounded(mut child: std::process::Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            child.kill().ok();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the example ran over {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_passed(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("RESULT: all checks passed"),
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for needle in [
        "unary calls/s",
        "unary p50 / p99",
        "stream entries/s",
        "node stats",
    ] {
        assert!(
            stdout.contains(needle),
            "summary lacks {needle:?}:\n{stdout}"
        );
    }
}

#[test]
fn three_nodes_in_one_process() {
    let child = Command::new(example_binary())
        .args([
            "--nodes",
            "3",
            "--duration",
            "1",
            "--entries",
            "2000",
            "--concurrency",
            "4",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(120));
    assert_passed(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("link cut: reconnect time"));
}

#[test]
fn three_nodes_as_three_processes() {
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let names: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().unwrap()))
        .collect();
    drop(listeners);
    let peers = names.join(",");
    let children: Vec<_> = names
        .iter()
        .map(|name| {
            Command::new(example_binary())
                .args(["--node", name, "--peers", &peers, "--duration", "1"])
                .args(["--entries", "2000", "--concurrency", "4"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        assert_passed(&wait_bounded(child, Duration::from_secs(180)));
    }
}

#[test]
fn bad_arguments_exit_non_zero_with_a_message() {
    let out = Command::new(example_binary())
        .args(["--nodes", "zero"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a valid number") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_is_reported_not_panicked() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let name = format!("http://{}", busy.local_addr().unwrap());
    let out = Command::new(example_binary())
        .args([
            "--node",
            &name,
            "--peers",
            &format!("{name},http://127.0.0.1:1"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already in use") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
