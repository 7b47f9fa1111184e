//! grid side by side with its peers (issue 5), in one process, in one run.
//!
//! `cargo bench -p grid-bench --bench compare` (full run, a few minutes) or
//! `cargo bench -p grid-bench --bench compare -- --quick` (about a second per workload; checks that every
//! system completed every workload with correct responses and exits non-zero if not; asserts no
//! speed).
//!
//! Every system runs over loopback through one connection, server and client in this process,
//! on a 2-worker tokio runtime: raw-ws (a minimal mux over one tokio-tungstenite socket), tarpc,
//! tonic, jsonrpsee and grid (raw byte API). Workloads: unary echo of 512 random bytes at
//! concurrency 1, 16, 64, 256; server streaming of 64-byte messages; two-way streaming echo;
//! CPU time per call; grid's memory per idle connection and per idle stream; MinIO's mesh shape;
//! 512 B calls beside large transfers (`large.rs`).
//! The output is Markdown, one table per workload, with grid's ratio to each system. The unary
//! points and the two streaming workloads run `--rounds N` rounds (5; quick 2), each round
//! running every system once in turn, and report medians with the spread of the rounds.
//!
//! For profiling one part: `--only grid,raw-ws` selects systems, `--workloads unary,stream`
//! selects workloads (unary, stream, bidi, cap1, memory, mesh, large), `--concurrency 256` the
//! unary points, `--log grid=info` runs with a tracing subscriber (fmt to stderr) and `--metrics`
//! with a Prometheus recorder, to measure what one costs.

use std::sync::Arc;
use std::time::Duration;

use grid::Config;

mod common;
mod grid_sys;
mod grid_typed_sys;
mod heap;
mod jsonrpsee_sys;
mod large;
mod raw_ws;
mod report;
mod tarpc_sys;
mod tonic_sys;

use common::{
    run_count, unary_round, warm_unary, CountFn, Failures, Opts, PickFn, StreamRound, StreamStat,
    System, UnaryRound, UnaryStat, Wire,
};
use report::{Cell, Results, Rows};

#[global_allocator]
static ALLOC: heap::Counting = heap::Counting;

fn main() {
    let opts = Opts::from_args();
    if let Some(filter) = &opts.log {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let prometheus = opts.metrics.then(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("a Prometheus recorder")
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let failures = Failures::default();
    let (started, (stolen, _)) = (std::time::Instant::now(), common::steal_time());
    let results = rt.block_on(run(&opts, &failures));
    println!("{}", report::render(&results, opts.mesh_concurrency));
    let (steal_now, vcpus) = common::steal_time();
    let (wall, stolen) = (started.elapsed(), steal_now.saturating_sub(stolen));
    // The machine is a VM on a shared host: time the host gave to other guests is time the
    // systems here lost, unevenly between them.
    println!(
        "Host steal during the run: {:.1} s of CPU time over {:.0} s ({:.1} % of {vcpus} vCPUs); \
         a run with more than a few per cent is a busy host, its ratios less steady.",
        stolen.as_secs_f64(),
        wall.as_secs_f64(),
        100.0 * stolen.as_secs_f64() / (wall.as_secs_f64() * vcpus as f64).max(1e-9),
    );
    if let Some(p) = prometheus {
        let text = p.render();
        eprintln!(
            "compare: {} lines of metrics recorded",
            text.lines().count()
        );
    }
    let failed = failures.take();
    if failed.is_empty() {
        eprintln!("compare: every system completed every workload with correct responses");
        std::process::exit(0);
    }
    eprintln!("compare: {} failure(s):", failed.len());
    for f in &failed {
        eprintln!("  - {f}");
    }
    std::process::exit(1);
}

async fn start_systems(opts: &Opts, failures: &Failures) -> Vec<System> {
    type Start = futures::future::BoxFuture<'static, Result<System, String>>;
    let n = opts.stream_n;
    let no_crc = Config {
        checksum: Some(false),
        ..Config::default()
    };
    let starts: Vec<(&str, Start)> = vec![
        ("raw-ws", Box::pin(raw_ws::start())),
        ("tarpc", Box::pin(tarpc_sys::start())),
        ("tonic", Box::pin(tonic_sys::start())),
        ("jsonrpsee", Box::pin(jsonrpsee_sys::start(n))),
        (
            report::GRID,
            Box::pin(grid_sys::start(report::GRID, Config::default())),
        ),
        (
            "grid, CRC off",
            Box::pin(grid_sys::start("grid, CRC off", no_crc)),
        ),
        ("grid-typed", Box::pin(grid_typed_sys::start())),
    ];
    let mut systems = Vec::new();
    for (name, start) in starts {
        if !opts.system(name) {
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(30), start).await {
            Ok(Ok(s)) => systems.push(s),
            Ok(Err(e)) => failures.add(format!("{name}: start: {e}")),
            Err(_) => failures.add(format!("{name}: start timed out")),
        }
    }
    systems
}

async fn run(opts: &Opts, failures: &Failures) -> Results {
    let mut r = Results::default();
    eprintln!(
        "compare: {} mode, {:?} per unary point",
        if opts.quick { "quick" } else { "full" },
        opts.unary_time
    );

    // Memory first, while the heap is still small and unfragmented.
    let grid = opts.system(report::GRID);
    if grid && opts.workload("memory") {
        eprintln!(
            "grid memory: {} idle streams, {} nodes",
            opts.idle_streams, opts.idle_nodes
        );
        heap::counting(true);
        r.memory = Some(match grid_sys::memory(opts).await {
            Ok(mut m) => {
                use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
                let k = m.connections;
                let small = WebSocketConfig::default().read_buffer_size(16 << 10);
                for (slot, heap, config) in [
                    (
                        &mut m.rss.ws_default,
                        &mut m.heap.ws_default,
                        WebSocketConfig::default(),
                    ),
                    (&mut m.rss.ws_small_read, &mut m.heap.ws_small_read, small),
                ] {
                    match raw_ws::idle_connection_bytes(k, config).await {
                        Ok((rss, live)) => (*slot, *heap) = (rss, live),
                        Err(e) => failures.add(format!("raw-ws idle connections: {e}")),
                    }
                }
                Cell::Done(m)
            }
            Err(e) => {
                failures.add(format!("grid memory: {e}"));
                Cell::Failed(e)
            }
        });
        heap::counting(false);
    }

    let systems = start_systems(opts, failures).await;
    for s in &systems {
        if !s.note.is_empty() {
            r.notes.push((s.name, s.note));
        }
    }

    // Unary: concurrency outermost, so each point compares systems measured minutes apart at most.
    let concurrency = if opts.workload("unary") {
        opts.concurrency.clone()
    } else {
        Vec::new()
    };
    for &c in &concurrency {
        let rows = unary_rounds(opts, &systems, c, failures, &mut r.wire).await;
        r.unary.push((c, rows));
    }

    r.rounds = opts.rounds;
    for kind in [Streaming::Server, Streaming::TwoWay] {
        if !opts.workload(kind.workload()) {
            continue;
        }
        let rows = stream_rounds(opts, &systems, kind, failures, &mut r.wire).await;
        match kind {
            Streaming::Server => r.stream = rows,
            Streaming::TwoWay => r.bidi = rows,
        }
    }

    if grid && opts.workload("cap1") {
        let c = 64;
        r.beside = Some(match grid_sys::small_stream_beside_load(opts, c).await {
            Ok(st) if st.unary.errors == 0 => {
                eprintln!(
                    "capacity-1 stream: {} items/s alone, {} items/s beside unary c={c} ({} req/s)",
                    report::rate(st.alone),
                    report::rate(st.beside),
                    report::rate(st.unary.per_sec)
                );
                Cell::Done(st)
            }
            Ok(st) => {
                let e = format!("{} unary errors", st.unary.errors);
                failures.add(format!("grid capacity-1 stream beside load: {e}"));
                Cell::Failed(e)
            }
            Err(e) => {
                failures.add(format!("grid capacity-1 stream beside load: {e}"));
                Cell::Failed(e)
            }
        });
    }

    let mesh = if grid && opts.workload("mesh") {
        opts.mesh.clone()
    } else {
        Vec::new()
    };
    for &n in &mesh {
        let cell = match grid_sys::mesh(opts, n).await {
            Ok(st) if st.errors == 0 && st.calls > 0 => {
                eprintln!(
                    "mesh {n:<3} {:>9} req/s  p50 {:>9}  p99 {:>9}",
                    report::rate(st.per_sec),
                    report::dur(st.p50),
                    report::dur(st.p99)
                );
                Cell::Done(st)
            }
            Ok(st) => {
                let e = format!(
                    "{} errors, first: {}",
                    st.errors,
                    st.first_error.as_deref().unwrap_or("none completed")
                );
                failures.add(format!("grid mesh of {n}: {e}"));
                Cell::Failed(e)
            }
            Err(e) => {
                failures.add(format!("grid mesh of {n}: {e}"));
                Cell::Failed(e)
            }
        };
        r.mesh.push((n, cell));
    }

    if opts.workload("large") {
        let rows = large::run(opts, failures).await;
        r.extra.push(large::table(&rows));
    }
    r
}

/// The two streaming workloads.
#[derive(Debug, Clone, Copy)]
enum Streaming {
    Server,
    TwoWay,
}

impl Streaming {
    /// Name in the output.
    fn name(self) -> &'static str {
        match self {
            Streaming::Server => "stream",
            Streaming::TwoWay => "two-way",
        }
    }

    /// Name in `--workloads`.
    fn workload(self) -> &'static str {
        match self {
            Streaming::Server => "stream",
            Streaming::TwoWay => "bidi",
        }
    }

    fn messages(self, opts: &Opts) -> u64 {
        match self {
            Streaming::Server => opts.stream_n,
            Streaming::TwoWay => opts.bidi_n,
        }
    }

    fn of(self, s: &System) -> Option<&CountFn> {
        match self {
            Streaming::Server => s.stream.as_ref(),
            Streaming::TwoWay => s.bidi.as_ref(),
        }
    }
}

/// The order of `n` systems in round `round` (from 1): each round starts one system later, so no
/// system always runs right after the same other one.
fn turn(n: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (k + round - 1) % n)
}

/// Runs `opts.rounds` rounds of unary load at concurrency `c`, interleaved like
/// [`stream_rounds`]: each round runs every system once, in turn, for its share of
/// `opts.unary_time`, so a burst of steal lands on one round of one system, not on a whole point.
/// Each system warms up before its first round, and for a share of the warm-up before each
/// later one. A system that fails a round is reported failed and not run again at this point.
/// The wire counters cover every round and the warm-up.
async fn unary_rounds(
    opts: &Opts,
    systems: &[System],
    c: usize,
    failures: &Failures,
    wire: &mut Vec<(String, &'static str, Wire)>,
) -> Rows<UnaryStat> {
    let rounds = opts.rounds.max(1);
    let time = opts.unary_time / u32::try_from(rounds).unwrap_or(u32::MAX);
    let share = opts.warmup / u32::try_from(rounds).unwrap_or(u32::MAX);
    let picks: Vec<PickFn> = systems
        .iter()
        .map(|s| {
            let echo = s.echo.clone();
            Arc::new(move |_| echo.clone()) as PickFn
        })
        .collect();
    let w0: Vec<Option<Wire>> = systems
        .iter()
        .map(|s| s.wire.as_ref().map(|w| w()))
        .collect();
    let mut cells: Vec<Cell<Vec<UnaryRound>>> = systems
        .iter()
        .map(|_| Cell::Done(Vec::with_capacity(rounds)))
        .collect();
    for round in 1..=rounds {
        let mut line = format!("unary c={c:<3} round {round}/{rounds}:");
        for i in turn(systems.len(), round) {
            let (s, pick, cell) = (&systems[i], &picks[i], &mut cells[i]);
            let Cell::Done(done) = &mut *cell else {
                continue;
            };
            let run = async {
                // The whole warm-up before the first round; a share of it before each later
                // one, which starts right after another system's load.
                let warmup = if round == 1 { opts.warmup } else { share };
                warm_unary(pick.clone(), c, warmup).await;
                unary_round(pick.clone(), c, time).await
            };
            match tokio::time::timeout(opts.limit, run).await {
                Ok(st) if st.clean() => {
                    line.push_str(&format!("  {} {}", s.name, report::rate(st.per_sec())));
                    done.push(st);
                }
                Ok(st) => {
                    let e = st.failure();
                    failures.add(format!("{} unary c={c}, round {round}: {e}", s.name));
                    *cell = Cell::Failed(format!("round {round}: {e}"));
                }
                Err(_) => {
                    failures.add(format!("{} unary c={c}, round {round}: timed out", s.name));
                    *cell = Cell::Failed(format!("round {round}: timed out"));
                }
            }
        }
        eprintln!("{line}");
    }
    for (s, w0) in systems.iter().zip(w0) {
        if let (Some(w), Some(w0)) = (&s.wire, w0) {
            wire.push((
                format!("unary c={c} (incl. warm-up)"),
                s.name,
                w().since(w0),
            ));
        }
    }
    systems
        .iter()
        .zip(cells)
        .map(|(s, cell)| {
            let cell = cell.map(UnaryStat::of);
            if let Cell::Done(st) = &cell {
                eprintln!(
                    "unary c={c:<3} {:<14} {:>9} req/s ({}, {} rounds)  p50 {:>9}  p99 {:>9}  cpu/call {:>8}",
                    s.name,
                    report::rate(st.per_sec),
                    report::spread(st.min_per_sec, st.max_per_sec),
                    st.rounds,
                    report::dur(st.p50),
                    report::dur(st.p99),
                    report::dur(st.cpu_per_call)
                );
            }
            (s.name, cell)
        })
        .collect()
}

/// Runs `opts.rounds` rounds of one streaming workload. Rounds are interleaved: each runs every
/// system once, in turn (each round starting one system later), so a change in the machine's
/// state (another process, a CPU's clock) lands on every system alike rather than on whichever
/// ran during it. Every round is checked;
/// a system that fails one is reported failed and not run again in this workload. The wire
/// counters are taken over round 1 only.
async fn stream_rounds(
    opts: &Opts,
    systems: &[System],
    kind: Streaming,
    failures: &Failures,
    wire: &mut Vec<(String, &'static str, Wire)>,
) -> Rows<StreamStat> {
    let (name, n) = (kind.name(), kind.messages(opts));
    let mut cells: Vec<Cell<Vec<StreamRound>>> = systems
        .iter()
        .map(|s| match kind.of(s) {
            Some(_) => Cell::Done(Vec::with_capacity(opts.rounds)),
            None => Cell::Unsupported,
        })
        .collect();
    for round in 1..=opts.rounds {
        let mut line = format!("{name:<8} round {round}/{}:", opts.rounds);
        for i in turn(systems.len(), round) {
            let (s, cell) = (&systems[i], &mut cells[i]);
            let (Some(f), Cell::Done(done)) = (kind.of(s), &mut *cell) else {
                continue;
            };
            let w0 = s.wire.as_ref().filter(|_| round == 1).map(|w| w());
            let res = run_count(f, n, opts.limit).await;
            if let (Some(w), Some(w0)) = (&s.wire, w0) {
                wire.push((format!("{name} of {n}, round 1"), s.name, w().since(w0)));
            }
            match res {
                Ok(st) => {
                    line.push_str(&format!("  {} {}", s.name, report::rate(st.per_sec)));
                    done.push(st);
                }
                Err(e) => {
                    failures.add(format!("{} {name} of {n}, round {round}: {e}", s.name));
                    *cell = Cell::Failed(format!("round {round}: {e}"));
                }
            }
        }
        eprintln!("{line}");
    }
    systems
        .iter()
        .zip(cells)
        .map(|(s, cell)| {
            let cell = cell.map(|done| StreamStat::of(&done));
            if let Cell::Done(st) = &cell {
                eprintln!(
                    "{name:<8} {:<14} {:>9} msgs/s ({}, {} rounds)  {:>6.1} MB/s  cpu/msg {:>8}",
                    s.name,
                    report::rate(st.per_sec),
                    report::spread(st.min_per_sec, st.max_per_sec),
                    st.rounds,
                    st.mb_per_sec,
                    report::dur(st.cpu_per_msg)
                );
            }
            (s.name, cell)
        })
        .collect()
}
