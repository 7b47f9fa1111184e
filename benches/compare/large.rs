//! Small calls on a link that carries large transfers (issue 15), and the transfers' throughput.
//!
//! Per system, one connection: (1) the large echo alone — 3 concurrent echoes of a large random
//! payload (64 MiB; 4 MiB with `--quick`), so 3 transfers each way, repeated — gives the
//! throughput, in MB/s each way; (2) a 512 B echo at concurrency 1, first on the idle link, then
//! beside 3 large echoes that run in a loop for the whole measurement: p50, p99 and max latency.
//! Every answer is checked against its request (a large one by 64 windows of 4 KiB).
//!
//! Systems: grid with its defaults (large frames in parts of 64 KiB), grid with chunks off (every
//! payload one frame in one WebSocket message: the behaviour before issue 15), grid with each
//! large payload as the one message of a two-way stream (echoed by the stream handler; the 512 B
//! calls stay unary), and tonic (h2's 16 KiB DATA frames). grid's inbound and pending-response
//! budgets are raised to 256 MiB here, tonic's message limits to 96 MiB: with the defaults
//! (64 MiB budget; tonic's 4 MiB messages) three 64 MiB calls at once are refused.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use grid::Config;

use crate::common::{payloads, EchoFn, Failures, Opts, System};
use crate::report::{dur, Cell};
use crate::{grid_sys, tonic_sys};

/// Concurrent large echoes.
const TRANSFERS: usize = 3;

/// One system's figures.
#[derive(Debug, Clone, Default)]
pub(crate) struct LargeStat {
    /// Size of each large payload.
    pub(crate) size: usize,
    /// Large echo alone: MB/s each way.
    pub(crate) mb_per_sec: f64,
    /// 512 B echo on the idle link.
    pub(crate) idle_p50: Duration,
    pub(crate) idle_p99: Duration,
    /// 512 B echo beside the large echoes.
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    pub(crate) probes: usize,
    /// Large echoes completed during the latency measurement.
    pub(crate) large_done: u64,
}

fn big_payload(size: usize) -> Bytes {
    let mut rng = fastrand::Rng::with_seed(0x6c61_7267);
    let mut v = vec![0u8; size];
    rng.fill(&mut v);
    Bytes::from(v)
}

async fn echo_checked(echo: &EchoFn, b: &Bytes) -> Result<(), String> {
    let got = echo(b.clone()).await?;
    if got.len() != b.len() || !same(&got, b) {
        return Err(format!("echo of {} bytes came back wrong", b.len()));
    }
    Ok(())
}

/// Whole for small payloads; for large ones 64 windows of 4 KiB spread over the payload (its
/// start and end included): comparing 64 MiB at once would hold a worker for milliseconds, and
/// the small calls measured here would wait for the benchmark's own check.
fn same(a: &[u8], b: &[u8]) -> bool {
    const WINDOW: usize = 4096;
    if a.len() <= 64 * WINDOW {
        return a == b;
    }
    let step = (a.len() - WINDOW) / 63;
    (0..64).all(|i| {
        let at = i * step;
        a[at..at + WINDOW] == b[at..at + WINDOW]
    })
}

fn quantile(lat: &mut [Duration], p: f64) -> Duration {
    lat.sort_unstable();
    if lat.is_empty() {
        return Duration::ZERO;
    }
    let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
    lat[i]
}

/// Sequential 512 B echoes for `time`; their latencies.
async fn probe(echo: &EchoFn, time: Duration) -> Result<Vec<Duration>, String> {
    let small = payloads(16);
    let end = Instant::now() + time;
    let mut lat = Vec::new();
    let mut i = 0;
    while Instant::now() < end {
        let t = Instant::now();
        echo_checked(echo, &small[i % small.len()]).await?;
        lat.push(t.elapsed());
        i += 1;
    }
    Ok(lat)
}

/// Measures `large` (the large echo) alone, then `small` (the 512 B echo) idle and beside it.
async fn measure(large: EchoFn, small: EchoFn, opts: &Opts) -> Result<LargeStat, String> {
    let size = if opts.quick { 4 << 20 } else { 64 << 20 };
    let rounds = if opts.quick { 1 } else { 3 };
    let time = if opts.quick {
        Duration::from_millis(400)
    } else {
        Duration::from_secs(5)
    };
    let big = big_payload(size);
    let mut out = LargeStat {
        size,
        ..LargeStat::default()
    };

    // Warm-up, then the large echo alone.
    echo_checked(&large, &big).await?;
    let started = Instant::now();
    for _ in 0..rounds {
        let all = (0..TRANSFERS).map(|_| {
            let (echo, big) = (large.clone(), big.clone());
            tokio::spawn(async move { echo_checked(&echo, &big).await })
        });
        for r in futures::future::join_all(all).await {
            r.map_err(|e| e.to_string())??;
        }
    }
    let moved = (rounds * TRANSFERS * size) as f64;
    out.mb_per_sec = moved / started.elapsed().as_secs_f64() / 1e6;

    let mut idle = probe(&small, time / 4).await?;
    out.idle_p50 = quantile(&mut idle, 0.50);
    out.idle_p99 = quantile(&mut idle, 0.99);

    // Small calls beside large echoes that run for the whole measurement.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let loops: Vec<_> = (0..TRANSFERS)
        .map(|_| {
            let (echo, big, stop, done) = (large.clone(), big.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    echo_checked(&echo, &big).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    // Let every transfer get going first.
    tokio::time::sleep(Duration::from_millis(if opts.quick { 50 } else { 300 })).await;
    let at_start = done.load(Ordering::Relaxed);
    let probed = probe(&small, time).await;
    out.large_done = done.load(Ordering::Relaxed) - at_start;
    stop.store(true, Ordering::Relaxed);
    for l in futures::future::join_all(loops).await {
        l.map_err(|e| e.to_string())??;
    }
    let mut lat = probed?;
    out.probes = lat.len();
    out.max = lat.iter().copied().max().unwrap_or_default();
    out.p50 = quantile(&mut lat, 0.50);
    out.p99 = quantile(&mut lat, 0.99);
    Ok(out)
}

/// Runs the workload on each system; failures are also reported to `failures`.
pub(crate) async fn run(opts: &Opts, failures: &Failures) -> Vec<(&'static str, Cell<LargeStat>)> {
    // `--chunk-size N` measures another chunk size than the default (how it was chosen).
    let args: Vec<String> = std::env::args().collect();
    let chunk_size = args
        .iter()
        .position(|a| a == "--chunk-size")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(Config::default().chunk_size);
    let roomy = Config {
        max_inbound_bytes: 256 << 20,
        max_pending_response_bytes: 256 << 20,
        chunk_size,
        ..Config::default()
    };
    // Before issue 15: without this, the large responses filling the data lane make the
    // callee refuse the small calls ("not reading its responses").
    let unchunked = Config {
        chunk_size: 0,
        max_queued_bytes: 256 << 20,
        ..roomy.clone()
    };
    let mut rows = Vec::new();
    for name in ["grid", "grid, unchunked", "grid, stream messages", "tonic"] {
        // `--only grid` selects every grid row.
        let selected = opts.system(name) || (name.starts_with("grid") && opts.system("grid"));
        if !selected {
            continue;
        }
        // The large and the small echo: the same calls, but for the row with stream messages.
        let both = |s: System| (s.echo.clone(), s.echo);
        let echoes = match name {
            "grid" => grid_sys::start("grid", roomy.clone()).await.map(both),
            "grid, unchunked" => grid_sys::start("grid, unchunked", unchunked.clone())
                .await
                .map(both),
            "grid, stream messages" => grid_sys::start_stream_echo(roomy.clone()).await,
            _ => tonic_sys::start().await.map(both),
        };
        let cell = match echoes {
            Err(e) => Cell::Failed(format!("start: {e}")),
            Ok((large, small)) => {
                match tokio::time::timeout(opts.limit, measure(large, small, opts)).await {
                    Ok(Ok(st)) => {
                        eprintln!(
                        "large {name:<22} {:>7.0} MB/s each way; 512 B beside: p50 {:>9}  p99 {:>9}  max {:>9} ({} calls)",
                        st.mb_per_sec,
                        dur(st.p50),
                        dur(st.p99),
                        dur(st.max),
                        st.probes
                    );
                        Cell::Done(st)
                    }
                    Ok(Err(e)) => Cell::Failed(e),
                    Err(_) => Cell::Failed("timed out".into()),
                }
            }
        };
        if let Cell::Failed(e) = &cell {
            failures.add(format!("{name} large transfers: {e}"));
        }
        rows.push((name, cell));
    }
    rows
}

/// The Markdown table of the workload.
pub(crate) fn table(rows: &[(&'static str, Cell<LargeStat>)]) -> String {
    let size = rows
        .iter()
        .find_map(|(_, c)| match c {
            Cell::Done(s) => Some(s.size),
            _ => None,
        })
        .unwrap_or(0);
    let mut out = format!(
        "\n### 512 B calls beside {TRANSFERS} concurrent {} MiB transfers each way (one connection)\n\n\
         | system | large echo alone, MB/s each way | 512 B idle p50 / p99 | beside: p50 | p99 | max | 512 B calls | large echoes done meanwhile |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
        size >> 20
    );
    for (name, cell) in rows {
        match cell {
            Cell::Done(s) => out.push_str(&format!(
                "| {name} | {:.0} | {} / {} | {} | {} | {} | {} | {} |\n",
                s.mb_per_sec,
                dur(s.idle_p50),
                dur(s.idle_p99),
                dur(s.p50),
                dur(s.p99),
                dur(s.max),
                s.probes,
                s.large_done
            )),
            Cell::Failed(e) => out.push_str(&format!("| {name} | failed: {e} | | | | | | |\n")),
            Cell::Unsupported => out.push_str(&format!("| {name} | — | | | | | | |\n")),
        }
    }
    out
}
