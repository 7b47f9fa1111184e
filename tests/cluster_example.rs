//! Runs the main job, `examples/cluster`, with small parameters: once with three nodes in one
//! process, once as three separate processes on loopback. Checks exit status and summary.

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "link cut: reconnect time",
        "3 of 3 links up",
        "planned drop(s), no other",
    ] {
        assert!(
            stdout.contains(needle),
            "summary lacks {needle:?}:\n{stdout}"
        );
    }
    // Pings run every second and the run lasts longer: every link has a round-trip time.
    assert!(!stdout.contains("no ping yet"), "{stdout}");
}

/// `n` loopback names on ports free a moment ago. The processes bind them again themselves (a
/// node listens on the address in its name), so another process could take one in between:
/// the only reserve-then-rebind left in this suite, because a child process cannot be handed a
/// bound listener.
fn reserved_names(n: usize) -> Vec<String> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().unwrap()))
        .collect()
}

#[test]
fn three_nodes_as_three_processes() {
    let names = reserved_names(3);
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
        let out = wait_bounded(child, Duration::from_secs(180));
        assert_passed(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        for needle in [
            "3 in the cluster",
            "every peer finished round 1",
            "every peer finished round 2",
            "2 of 2 links up",
        ] {
            assert!(
                stdout.contains(needle),
                "summary lacks {needle:?}:\n{stdout}"
            );
        }
    }
}

/// Runs the example with `args` (bounded) and returns its exit code and stderr.
fn run_example(args: &[&str]) -> (Option<i32>, String) {
    let child = Command::new(example_binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(60));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_arguments_exit_2_with_a_message_not_a_panic() {
    for (args, says) in [
        (
            &["--nodes", "zero"][..],
            "invalid value 'zero' for '--nodes",
        ),
        (&["--nodes", "1"][..], "not in 2..=500"),
        (&["--duration", "-5"][..], "must be from 0.2"),
        (&["--duration", "NaN"][..], "not a finite number"),
        (&["--duration", "inf"][..], "not a finite number"),
        (&["--duration", "1e400"][..], "not a finite number"),
        (&["--payload", "100000000"][..], "over the limit"),
        (&["--payload", "-1"][..], "not a whole number of bytes"),
        (&["--payload", "60000000"][..], "in flight at once"),
        (&["--concurrency", "0"][..], "not in 1..=4096"),
        (&["--entries", "20000000"][..], "not in 1..=10000000"),
        (&["--frobnicate"][..], "unexpected argument"),
        (&["--node", "http://127.0.0.1:1"][..], "--peers"),
        (
            &[
                "--node",
                "http://127.0.0.1:1",
                "--peers",
                "http://127.0.0.1:1",
            ][..],
            "names no node other than",
        ),
    ] {
        let (code, stderr) = run_example(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says) && !stderr.contains("panicked"),
            "{args:?} should say {says:?}:\n{stderr}"
        );
    }
}

#[test]
fn a_bad_rust_log_is_refused_with_exit_2() {
    let out = Command::new(example_binary())
        .args(["--duration", "0.2"])
        .env("RUST_LOG", "grid=[")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("RUST_LOG"), "{stderr}");
}

/// With a descriptor limit too low for the mesh, the example says so before starting any node.
#[test]
fn too_many_nodes_for_the_descriptor_limit_is_refused_up_front() {
    // `ulimit -n` lowers both the soft and the hard limit, so the example cannot raise it.
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" --nodes 200")
        .arg(example_binary())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--nodes 200 needs about")
            && stderr.contains("open files")
            && stderr.contains("ulimit -n"),
        "{stderr}"
    );
    assert!(!stderr.contains("starting"), "it started anyway:\n{stderr}");
}

/// Two processes with different secrets: both give up after `--peer-timeout`, exit 2, and show
/// the library's reason (the handshake proof does not verify) rather than only "waiting".
#[test]
fn a_wrong_secret_shows_the_librarys_reason() {
    let names = reserved_names(2);
    let peers = names.join(",");
    let children: Vec<_> = names
        .iter()
        .zip(["right secret", "wrong secret"])
        .map(|(name, secret)| {
            Command::new(example_binary())
                .args(["--node", name, "--peers", &peers, "--secret", secret])
                .args(["--peer-timeout", "3"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = wait_bounded(child, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("cluster secret") && stderr.contains("bad proof"),
            "the handshake's reason is not shown:\n{stderr}"
        );
        assert!(stderr.contains("peers did not come up"), "{stderr}");
    }
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

/// Reads `child`'s stderr line by line on a thread; the lines arrive on the returned channel.
fn stderr_lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (bounded) for a line containing `needle`; returns every line read so far.
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.last().is_some_and(|l| l.contains(needle)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "no line with {needle:?}; stderr so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// In multi-process mode a peer that dies mid-run is named when it dies (with the library's
/// reason), and the run fails its checks instead of passing or hanging.
#[test]
fn a_peer_that_dies_is_named_when_it_dies() {
    let names = reserved_names(2);
    let peers = names.join(",");
    let spawn = |name: &str| {
        Command::new(example_binary())
            .args(["--node", name, "--peers", &peers, "--duration", "4"])
            .args(["--peer-timeout", "3", "--concurrency", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut survivor = spawn(&names[0]);
    let mut victim = spawn(&names[1]);
    let lines = stderr_lines(&mut survivor);
    let mut seen = Vec::new();
    wait_for_line(&lines, "== unary echo", &mut seen);
    victim.kill().unwrap();
    victim.wait().unwrap();
    let down = format!("→ {} DOWN", names[1]);
    wait_for_line(&lines, &down, &mut seen);
    // Drain the rest so the child never blocks on a full pipe, then check how it ended.
    let rest = std::thread::spawn(move || lines.iter().collect::<Vec<_>>());
    let out = wait_bounded(survivor, Duration::from_secs(120));
    seen.extend(rest.join().unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", seen.join("\n"));
    assert!(stdout.contains("RESULT: some checks FAILED"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("FAIL") && l.contains("every peer finished round 1"))
            && stdout.contains("links that went down"),
        "the summary does not report the dead peer:\n{stdout}"
    );
}
