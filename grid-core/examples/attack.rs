//! A hostile cluster member against one real node, in one process over real TCP (issue 10): the
//! slow-reader flood and the mux-id reuse loop, with the node's memory and handler count printed
//! against their bounds, during the attack and after the attacker has left.
//!
//! ```text
//! cargo run --release -p grid-core --example attack -- [--seconds 5] [--ceiling-mib 1024] [--phase all|flood|reuse]
//! ```
//!
//! The attacker holds the cluster secret and completes the real handshake (the scripted peer of
//! `tests/scripted`), then:
//! 1. **slow-reader flood**: keeps sending requests to a handler that answers 128 KiB, while it
//!    reads one WebSocket message per 100 ms (never slow enough to trip the write timeout);
//! 2. **mux-id reuse**: `Request(m) Cancel(m) Request(m)` and `Open(m) Cancel(m) Open(m)`, 3000 ids
//!    per round, under `max_incoming_calls = 1000`, to handlers that run until cancelled; then it
//!    cuts the socket.
//!
//! RSS is read from `/proc/self/status` (`VmRSS`, `VmHWM`; Linux only) and covers the whole
//! process, the attacker's side included (which holds little: small requests, a slow reader). The
//! flood stops early when RSS passes `--ceiling-mib`, so a node that does not bound what it holds
//! cannot take the machine down. The allocator may keep freed memory: RSS after the attacker left
//! shows what was returned to the system, not what the node still uses.

#![allow(clippy::unwrap_used)]

#[path = "../tests/scripted/mod.rs"]
mod scripted;

use std::time::{Duration, Instant};

use bytes::Bytes;
use grid_core::frame::Frame;
use grid_core::{Config, Manager, RemoteError};
use scripted::{
    base_config, cancel, dialer_names, open, register_blocking_stream, register_blocking_unary,
    request, Gauge, ScriptedPeer, TrackedBytes, SECRET,
};

const NODE: &str = "http://attacked.example:9000";
const BIG: grid_core::HandlerSpec = grid_core::HandlerSpec::named("Attack.big");
const BLOCK: grid_core::HandlerSpec = grid_core::HandlerSpec::named("Attack.block");
const HOLD: grid_core::HandlerSpec = grid_core::HandlerSpec::named("Attack.hold");
const RESPONSE: usize = 128 << 10;
/// The call cap of the attacked node: it bounds how many handlers run at once, and so how many
/// responses can be in hand when the byte budgets fill.
const CAP: usize = 64;

/// What the node may hold for one peer beyond its idle footprint: its response budget (pending
/// responses, the queue, and the responses of the calls running when those filled; see
/// `scripted::response_budget`), its inbound budget, and 16 MiB of slack for tasks, tables and
/// allocator overhead.
fn bound_over_baseline(config: &Config) -> u64 {
    (scripted::response_budget(config, RESPONSE) + scripted::inbound_budget(config) + (16 << 20))
        as u64
}

/// `VmRSS` and `VmHWM` of this process, in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

struct Args {
    seconds: u64,
    ceiling: u64,
    flood: bool,
    reuse: bool,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 5,
        ceiling: 1024 << 20,
        flood: true,
        reuse: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        let number = value.parse::<u64>().ok();
        match (flag.as_str(), number, value.as_str()) {
            ("--seconds", Some(v), _) => a.seconds = v,
            ("--ceiling-mib", Some(v), _) => a.ceiling = v << 20,
            ("--phase", _, "all") => {}
            ("--phase", _, "flood") => a.reuse = false,
            ("--phase", _, "reuse") => a.flood = false,
            _ => {
                eprintln!(
                    "usage: attack [--seconds N] [--ceiling-mib M] [--phase all|flood|reuse]"
                );
                std::process::exit(2);
            }
        }
    }
    a
}

/// Connects a scripted member to the node over a fresh TCP socket.
async fn attacker(node: &Manager, name: &str) -> ScriptedPeer {
    let addr = node.local_addr().expect("the node listens");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let peer = ScriptedPeer::connect_over(
        Box::new(tcp),
        "attacked.example:9000",
        "/grid/v1",
        name,
        NODE,
    )
    .await;
    node.connection(name)
        .expect("known peer")
        .wait_for_connect(scripted::WAIT)
        .await
        .expect("the node installs the attacker's connection");
    peer
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let names = dialer_names(NODE, "attacker", 2);
    let config = Config {
        max_incoming_calls: CAP,
        ..base_config()
    };
    let node = Manager::builder(NODE)
        .peers(names.clone())
        .secret(SECRET)
        .config(config.clone())
        .listen("127.0.0.1:0")
        .start()
        .await
        .expect("start the node");
    let tracked = TrackedBytes::new();
    let t = tracked.clone();
    node.register_unary(BIG, move |_ctx, _payload| {
        let t = t.clone();
        async move { Ok::<_, RemoteError>(t.make(RESPONSE)) }
    })
    .expect("register");
    let gauge = Gauge::new();
    register_blocking_unary(&node, BLOCK, &gauge);
    register_blocking_stream(&node, HOLD, &gauge);

    let (baseline, _) = rss();
    let bound = baseline + bound_over_baseline(&config);
    println!(
        "node at {}; baseline RSS {}; bound {} (baseline + {})",
        node.local_addr().expect("addr"),
        mib(baseline),
        mib(bound),
        mib(bound_over_baseline(&config))
    );

    if args.flood {
        slow_reader_flood(&node, &names[0], &tracked, &args, bound).await;
    }
    if args.reuse {
        mux_reuse(&node, &names[1], &gauge).await;
    }
    gauge.release_all();
    node.shutdown().await;
}

/// 1. Slow reader + unary flood.
async fn slow_reader_flood(
    node: &Manager,
    name: &str,
    tracked: &TrackedBytes,
    args: &Args,
    bound: u64,
) {
    let (baseline, _) = rss();
    let mut peer = attacker(node, name).await;
    let started = Instant::now();
    let mut sent = 0usize;
    let mut peak_rss = 0;
    let mut peak_held = 0;
    let mut stopped_at_ceiling = false;
    let mut next_read = Instant::now();
    while started.elapsed() < Duration::from_secs(args.seconds) {
        let frames: Vec<Frame> = (0..64)
            .map(|_| request(peer.mux(), BIG, Bytes::new()))
            .collect();
        if peer.send(&frames).await.is_err() {
            println!("  the node closed the flooding connection after {sent} requests");
            break;
        }
        sent += frames.len();
        if Instant::now() >= next_read {
            peer.allow_reads(1);
            next_read += Duration::from_millis(100);
        }
        let (now, _) = rss();
        peak_rss = peak_rss.max(now);
        peak_held = peak_held.max(tracked.live());
        if now > args.ceiling {
            stopped_at_ceiling = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_, hwm) = rss();
    println!(
        "slow-reader flood: {sent} requests in {:.1} s; peak RSS {} (VmHWM {}), bound {}: {}{}",
        started.elapsed().as_secs_f64(),
        mib(peak_rss),
        mib(hwm),
        mib(bound),
        if peak_rss <= bound { "within" } else { "OVER" },
        if stopped_at_ceiling {
            " (stopped at the ceiling)"
        } else {
            ""
        },
    );
    println!(
        "  responses held waiting to be written: peak {} ({} of 128 KiB), node in flight {:?}",
        mib(peak_held as u64),
        peak_held / RESPONSE,
        node.stats().in_flight
    );
    peer.cut().await;
    let left = Instant::now();
    while tracked.live() > 0 && left.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "  after the attacker left ({:.1} s): RSS {} (baseline {}); responses still held {}",
        left.elapsed().as_secs_f64(),
        mib(rss().0),
        mib(baseline),
        mib(tracked.live() as u64)
    );
}

/// 2. Mux-id reuse, unary then streams, several rounds each.
async fn mux_reuse(node: &Manager, name: &str, gauge: &Gauge) {
    for (kind, rounds) in [("unary", 3), ("stream", 3)] {
        let mut peer = attacker(node, name).await;
        peer.read_eagerly();
        let before = gauge.counts();
        let mut closed = false;
        for _ in 0..rounds {
            let mut frames = Vec::with_capacity(9000);
            for _ in 0..3000 {
                let m = peer.mux();
                let call = if kind == "unary" {
                    request(m, BLOCK, Bytes::new())
                } else {
                    open(m, HOLD, 0, 8)
                };
                frames.extend([call.clone(), cancel(m), call]);
            }
            if peer.send(&frames).await.is_err() || peer.try_barrier().await.is_err() {
                closed = true;
                break;
            }
        }
        let during = gauge.settle(Duration::from_millis(300)).await;
        let (rss_during, _) = rss();
        peer.cut().await;
        let (_, after) = gauge
            .wait_for(Duration::from_secs(3), |c| c.running == before.running)
            .await;
        println!(
            "mux reuse ({kind}, {rounds} x 3000 ids, cap {CAP}){}: {} handlers alive at once (bound {CAP}), RSS {}; \
             {} still alive 3 s after the socket was cut (bound 0), RSS {}",
            if closed { ", closed by the node" } else { "" },
            during.running.saturating_sub(before.running),
            mib(rss_during),
            after.running.saturating_sub(before.running),
            mib(rss().0),
        );
    }
}
