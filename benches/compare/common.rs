//! What every system shares: the call shapes, the load runner, latency samples, CPU and memory
//! readings from `/proc`, and the checks of correctness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;

/// Size of the unary echo payload.
pub(crate) const PAYLOAD: usize = 512;
/// Size of one stream message.
pub(crate) const STREAM_MSG: usize = 64;

/// One unary echo: send the bytes, get the peer's answer back.
pub(crate) type EchoFn =
    Arc<dyn Fn(Bytes) -> BoxFuture<'static, Result<Bytes, String>> + Send + Sync>;
/// Which echo function serves call `k` of a load (the mesh picks a node pair per call).
pub(crate) type PickFn = Arc<dyn Fn(u64) -> EchoFn + Send + Sync>;

/// Open a stream of `n` messages (server streaming) or send and receive `n` messages (two-way);
/// checks every message's size and sequence number and returns how many arrived.
pub(crate) type CountFn = Arc<dyn Fn(u64) -> BoxFuture<'static, Result<u64, String>> + Send + Sync>;

/// One system under test, set up and connected.
pub(crate) struct System {
    /// Name in the tables.
    pub(crate) name: &'static str,
    /// Unary echo through the system's one connection.
    pub(crate) echo: EchoFn,
    /// Server streaming, if the system has it.
    pub(crate) stream: Option<CountFn>,
    /// Two-way streaming echo, if the system has it.
    pub(crate) bidi: Option<CountFn>,
    /// How the numbers were obtained, when something about it needs saying.
    pub(crate) note: &'static str,
    /// Wire counters, where the system exposes them (grid).
    pub(crate) wire: Option<WireFn>,
}

/// Frames and WebSocket messages sent so far by the caller's end and the callee's end.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Wire {
    pub(crate) caller_frames: u64,
    pub(crate) caller_messages: u64,
    pub(crate) callee_frames: u64,
    pub(crate) callee_messages: u64,
}

impl Wire {
    /// Counters since `before`.
    pub(crate) fn since(self, before: Wire) -> Wire {
        Wire {
            caller_frames: self.caller_frames - before.caller_frames,
            caller_messages: self.caller_messages - before.caller_messages,
            callee_frames: self.callee_frames - before.callee_frames,
            callee_messages: self.callee_messages - before.callee_messages,
        }
    }
}

/// Reads a system's wire counters.
pub(crate) type WireFn = Arc<dyn Fn() -> Wire + Send + Sync>;

/// Run settings.
#[derive(Debug, Clone)]
pub(crate) struct Opts {
    pub(crate) quick: bool,
    /// Measured time of one unary point.
    pub(crate) unary_time: Duration,
    /// Unmeasured warm-up before each unary point.
    pub(crate) warmup: Duration,
    pub(crate) concurrency: Vec<usize>,
    /// Messages of the server-streaming workload.
    pub(crate) stream_n: u64,
    /// Messages each way of the two-way workload.
    pub(crate) bidi_n: u64,
    /// Rounds of the unary points (sharing `unary_time`), the server-streaming and the two-way
    /// workloads, each round running every system once (`--rounds N`; 5, quick 2).
    pub(crate) rounds: usize,
    /// Idle streams opened on one grid connection.
    pub(crate) idle_streams: usize,
    /// Managers in the idle-connection memory workload.
    pub(crate) idle_nodes: usize,
    pub(crate) mesh: Vec<usize>,
    /// Concurrency of the mesh workload (spread over all nodes).
    pub(crate) mesh_concurrency: usize,
    /// Longest any one workload of one system may take before it counts as failed.
    pub(crate) limit: Duration,
    /// Systems to run (`--only a,b`); empty: all.
    pub(crate) only: Vec<String>,
    /// Workloads to run (`--workloads unary,stream,bidi,cap1,memory,mesh`); empty: all.
    pub(crate) workloads: Vec<String>,
    /// `--log FILTER`: run with a tracing subscriber (fmt to stderr) filtered by `FILTER`
    /// (`grid=info`); none by default.
    pub(crate) log: Option<String>,
    /// `--metrics`: run with a Prometheus recorder installed; none by default.
    pub(crate) metrics: bool,
}

impl Opts {
    /// Whether system `name` is selected.
    pub(crate) fn system(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }

    /// Whether workload `name` is selected.
    pub(crate) fn workload(&self, name: &str) -> bool {
        self.workloads.is_empty() || self.workloads.iter().any(|w| w == name)
    }

    /// Settings from the command line: `--quick`, `--only a,b`, `--workloads a,b`,
    /// `--concurrency 64,256`, `--stream-n N`, `--bidi-n N`, `--rounds N`. Anything
    /// else (cargo bench passes `--bench`) is ignored.
    pub(crate) fn from_args() -> Opts {
        let args: Vec<String> = std::env::args().collect();
        let mut o = Opts::new(args.iter().any(|a| a == "--quick"));
        let list = |flag: &str| -> Vec<String> {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .map(|v| v.split(',').map(str::to_owned).collect())
                .unwrap_or_default()
        };
        o.only = list("--only");
        o.workloads = list("--workloads");
        let c: Vec<usize> = list("--concurrency")
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        if !c.is_empty() {
            o.concurrency = c;
        }
        // Longer streams for steadier figures on a busy machine (and for profiles).
        if let Some(n) = list("--stream-n").first().and_then(|n| n.parse().ok()) {
            o.stream_n = n;
        }
        if let Some(n) = list("--bidi-n").first().and_then(|n| n.parse().ok()) {
            o.bidi_n = n;
        }
        if let Some(n) = list("--rounds")
            .first()
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
        {
            o.rounds = n;
        }
        // A tracing subscriber (fmt to stderr) with this filter, to measure what one costs.
        o.log = args
            .iter()
            .position(|a| a == "--log")
            .and_then(|i| args.get(i + 1))
            .cloned();
        // A metrics recorder (Prometheus, rendered at the end), to measure what one costs.
        o.metrics = args.iter().any(|a| a == "--metrics");
        o
    }

    pub(crate) fn new(quick: bool) -> Opts {
        if quick {
            Opts {
                quick,
                unary_time: Duration::from_millis(150),
                warmup: Duration::from_millis(30),
                concurrency: vec![1, 16, 64, 256],
                stream_n: 100_000,
                bidi_n: 20_000,
                rounds: 2,
                idle_streams: 1_000,
                idle_nodes: 8,
                mesh: vec![2, 4],
                mesh_concurrency: 64,
                limit: Duration::from_secs(30),
                only: Vec::new(),
                workloads: Vec::new(),
                log: None,
                metrics: false,
            }
        } else {
            Opts {
                quick,
                unary_time: Duration::from_secs(3),
                warmup: Duration::from_millis(300),
                concurrency: vec![1, 16, 64, 256],
                stream_n: 1_000_000,
                bidi_n: 200_000,
                rounds: 5,
                idle_streams: 10_000,
                idle_nodes: 16,
                mesh: vec![2, 4, 8, 16],
                mesh_concurrency: 256,
                limit: Duration::from_secs(120),
                only: Vec::new(),
                workloads: Vec::new(),
                log: None,
                metrics: false,
            }
        }
    }
}

/// Failures of correctness, reported at the end (and in `--quick` mode, the exit status).
#[derive(Debug, Default)]
pub(crate) struct Failures(Mutex<Vec<String>>);

impl Failures {
    pub(crate) fn add(&self, what: String) {
        eprintln!("FAILED: {what}");
        self.0.lock().expect("failures lock").push(what);
    }

    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("failures lock"))
    }
}

/// Process CPU time (user + system, all threads, exited ones included), to the nanosecond:
/// `CLOCK_PROCESS_CPUTIME_ID`. (`/proc/self/stat` counts 10 ms ticks: a stream round of
/// 100 ms of CPU read to ±10 %.)
pub(crate) fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// CPU time the hypervisor gave to other guests while this machine's vCPUs wanted to run
/// ("steal", all online vCPUs together) since boot, from `/proc/stat`, and how many vCPUs that
/// line sums (its `cpuN` lines; not `available_parallelism`, which an affinity mask or a quota
/// shrinks). Zero steal where it is not reported.
pub(crate) fn steal_time() -> (Duration, usize) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (Duration::ZERO, 1);
    };
    // "cpu  user nice system idle iowait irq softirq steal ...": steal is the 8th number.
    let steal = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .and_then(|l| l.split_whitespace().nth(7))
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let cpus = stat
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    // USER_HZ is 100 on Linux for every architecture we run on.
    (Duration::from_millis(steal * 10), cpus.max(1))
}

/// Resident set size of this process, in bytes, from `/proc/self/status`.
pub(crate) fn rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes of RSS each of `n` items added between two readings; NaN when the RSS did not grow
/// (the allocator reused memory freed earlier: nothing was measured, which is not zero).
pub(crate) fn rss_per_item(grown: f64, n: usize) -> f64 {
    if grown > 0.0 && n > 0 {
        grown / n as f64
    } else {
        f64::NAN
    }
}

/// Random payloads for the unary echo: each call sends one of them and expects it back.
pub(crate) fn payloads(n: usize) -> Arc<Vec<Bytes>> {
    let mut rng = fastrand::Rng::with_seed(0x6772_6964);
    Arc::new(
        (0..n)
            .map(|_| {
                let mut v = vec![0u8; PAYLOAD];
                rng.fill(&mut v);
                Bytes::from(v)
            })
            .collect(),
    )
}

/// What follows the sequence number in every stream message.
const FILLER: [u8; STREAM_MSG - 8] = [0x5a; STREAM_MSG - 8];

/// The `i`th message of a stream: its sequence number, then a fixed filler.
pub(crate) fn stream_msg(i: u64) -> Bytes {
    let mut v = Vec::with_capacity(STREAM_MSG);
    v.extend_from_slice(&i.to_le_bytes());
    v.extend_from_slice(&FILLER);
    Bytes::from(v)
}

/// Checks that `msg` is message `i` of a stream.
pub(crate) fn check_msg(msg: &[u8], i: u64) -> Result<(), String> {
    if msg.len() != STREAM_MSG {
        return Err(format!(
            "message {i}: {} bytes, want {STREAM_MSG}",
            msg.len()
        ));
    }
    let (seq, filler) = msg.split_at(8);
    let got = u64::from_le_bytes(seq.try_into().map_err(|_| "short message")?);
    if got != i {
        return Err(format!("message {i}: sequence number {got}"));
    }
    if filler != FILLER {
        return Err(format!("message {i}: filler corrupted"));
    }
    Ok(())
}

/// Result of one unary point: over all its rounds, or of one run.
#[derive(Debug, Clone, Default)]
pub(crate) struct UnaryStat {
    pub(crate) calls: u64,
    /// Median req/s over the rounds.
    pub(crate) per_sec: f64,
    /// Slowest round, req/s.
    pub(crate) min_per_sec: f64,
    /// Fastest round, req/s.
    pub(crate) max_per_sec: f64,
    /// Latency percentiles over every call of every round.
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// Process CPU time per completed call (client and server: both live in this process),
    /// over all the rounds.
    pub(crate) cpu_per_call: Duration,
    /// Calls that failed or returned wrong bytes.
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// Rounds measured.
    pub(crate) rounds: usize,
}

/// One timed run of unary load.
#[derive(Debug, Default)]
pub(crate) struct UnaryRound {
    /// Latency of every correct call, in nanoseconds.
    lat: Vec<u64>,
    elapsed: Duration,
    cpu: Duration,
    errors: u64,
    first_error: Option<String>,
}

impl UnaryRound {
    /// Correct calls per second.
    pub(crate) fn per_sec(&self) -> f64 {
        self.lat.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// True when every call of the round was answered correctly and at least one was made.
    pub(crate) fn clean(&self) -> bool {
        self.errors == 0 && !self.lat.is_empty()
    }

    /// Why the round is not clean.
    pub(crate) fn failure(&self) -> String {
        format!(
            "{} errors in {} calls, first: {}",
            self.errors,
            self.lat.len() as u64 + self.errors,
            self.first_error.as_deref().unwrap_or("none completed")
        )
    }
}

impl UnaryStat {
    /// Median rate and spread of `rounds` (at least one), with latencies and CPU over all.
    pub(crate) fn of(rounds: Vec<UnaryRound>) -> UnaryStat {
        let (per_sec, min_per_sec, max_per_sec) =
            median_and_range(rounds.iter().map(UnaryRound::per_sec).collect());
        let cpu: Duration = rounds.iter().map(|r| r.cpu).sum();
        let errors = rounds.iter().map(|r| r.errors).sum();
        let n = rounds.len();
        let mut first_error = None;
        let mut lat = Vec::new();
        for r in rounds {
            lat.extend(r.lat);
            if first_error.is_none() {
                first_error = r.first_error;
            }
        }
        lat.sort_unstable();
        let q = |p: f64| -> Duration {
            if lat.is_empty() {
                return Duration::ZERO;
            }
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            Duration::from_nanos(lat[i])
        };
        let calls = lat.len() as u64;
        UnaryStat {
            calls,
            per_sec,
            min_per_sec,
            max_per_sec,
            p50: q(0.50),
            p99: q(0.99),
            cpu_per_call: Duration::from_secs_f64(cpu.as_secs_f64() / calls.max(1) as f64),
            errors,
            first_error,
            rounds: n,
        }
    }
}

/// Runs `concurrency` loops of `echo` for `time` (after `warmup`), as one round; every answer
/// must equal the request. `pick` chooses the echo function per call (the mesh uses it to
/// choose nodes).
pub(crate) async fn run_unary(
    pick: PickFn,
    concurrency: usize,
    warmup: Duration,
    time: Duration,
) -> UnaryStat {
    warm_unary(pick.clone(), concurrency, warmup).await;
    UnaryStat::of(vec![unary_round(pick, concurrency, time).await])
}

/// Runs unary load for `warmup`, measuring nothing.
pub(crate) async fn warm_unary(pick: PickFn, concurrency: usize, warmup: Duration) {
    if !warmup.is_zero() {
        let _ = load(pick, payloads(64), concurrency, warmup).await;
    }
}

/// One measured round of `concurrency` loops of `echo` for `time`.
pub(crate) async fn unary_round(pick: PickFn, concurrency: usize, time: Duration) -> UnaryRound {
    let data = payloads(64);
    let cpu0 = cpu_time();
    let started = Instant::now();
    let (lat, errors, first_error) = load(pick, data, concurrency, time).await;
    UnaryRound {
        lat,
        elapsed: started.elapsed(),
        cpu: cpu_time().saturating_sub(cpu0),
        errors,
        first_error,
    }
}

/// Aborts its tasks when dropped (a no-op for the ones that finished).
struct AbortAll(Vec<tokio::task::AbortHandle>);

impl Drop for AbortAll {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

type LoadOut = (Vec<u64>, u64, Option<String>);

async fn load(pick: PickFn, data: Arc<Vec<Bytes>>, concurrency: usize, time: Duration) -> LoadOut {
    let end = Instant::now() + time;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let (pick, data, stop) = (pick.clone(), data.clone(), stop.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(4096);
                let mut errors = 0u64;
                let mut first_error = None;
                let mut k = t as u64;
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    let p = &data[(k as usize) % data.len()];
                    let echo = pick(k);
                    k = k.wrapping_add(0x9e37_79b9);
                    match echo(p.clone()).await {
                        Ok(r) if r == *p => lat.push(now.elapsed().as_nanos() as u64),
                        Ok(r) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| {
                                format!("echo returned {} wrong bytes", r.len())
                            });
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                            if errors > 100 {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                }
                (lat, errors, first_error)
            })
        })
        .collect();
    // A load given up (its point timed out) stops at once, not during the next system's rounds.
    let _abort = AbortAll(tasks.iter().map(|t| t.abort_handle()).collect());
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok((lat, e, f)) => {
                all.extend(lat);
                errors += e;
                if first_error.is_none() {
                    first_error = f;
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(format!("load task panicked: {e}"));
            }
        }
    }
    (all, errors, first_error)
}

/// One round of one streaming workload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamRound {
    pub(crate) per_sec: f64,
    /// Process CPU time per message (client and server together).
    pub(crate) cpu_per_msg: Duration,
}

/// One streaming workload of one system over all its rounds. One run of 50–150 ms swings by
/// 1.5× on a shared 2-core machine, so the figures are medians and the spread is kept beside them.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamStat {
    /// Median msgs/s over the rounds.
    pub(crate) per_sec: f64,
    /// Slowest round, msgs/s.
    pub(crate) min_per_sec: f64,
    /// Fastest round, msgs/s.
    pub(crate) max_per_sec: f64,
    /// MB/s at the median rate.
    pub(crate) mb_per_sec: f64,
    /// Median CPU time per message (taken over the rounds on its own, not the median round's).
    pub(crate) cpu_per_msg: Duration,
    /// Rounds measured.
    pub(crate) rounds: usize,
}

impl StreamStat {
    /// Medians and spread of `rounds` (at least one).
    pub(crate) fn of(rounds: &[StreamRound]) -> StreamStat {
        let (per_sec, min_per_sec, max_per_sec) =
            median_and_range(rounds.iter().map(|r| r.per_sec).collect());
        let cpu: Vec<f64> = rounds.iter().map(|r| r.cpu_per_msg.as_secs_f64()).collect();
        StreamStat {
            per_sec,
            min_per_sec,
            max_per_sec,
            mb_per_sec: per_sec * STREAM_MSG as f64 / 1e6,
            cpu_per_msg: Duration::from_secs_f64(median(cpu)),
            rounds: rounds.len(),
        }
    }
}

/// The median of rates, the slowest and the fastest (one round each at least).
fn median_and_range(rates: Vec<f64>) -> (f64, f64, f64) {
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rates.iter().copied().fold(0.0, f64::max);
    (median(rates), min, max)
}

/// The middle value; of an even count, the mean of the two middle values. 0 for none.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_unstable_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Runs one round of a streaming workload of `n` messages and checks the count.
pub(crate) async fn run_count(f: &CountFn, n: u64, limit: Duration) -> Result<StreamRound, String> {
    let cpu0 = cpu_time();
    let started = Instant::now();
    // Spawned, so the consumer runs on the 2 workers like everything else (not on the thread
    // that blocks on the whole benchmark).
    let got = tokio::time::timeout(limit, tokio::spawn(f(n)))
        .await
        .map_err(|_| format!("did not finish within {limit:?}"))?
        .map_err(|e| format!("workload task failed: {e}"))??;
    let elapsed = started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    if got != n {
        return Err(format!("received {got} messages, want {n}"));
    }
    Ok(StreamRound {
        per_sec: n as f64 / elapsed.as_secs_f64(),
        cpu_per_msg: Duration::from_secs_f64(cpu.as_secs_f64() / n.max(1) as f64),
    })
}

/// `n` loopback listeners on port 0, to keep and hand to the nodes, and the `http://` names
/// that point at them (no port is released and bound again).
pub(crate) fn bound_names(n: usize) -> (Vec<std::net::TcpListener>, Vec<String>) {
    (0..n)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            let name = format!("http://{}", l.local_addr().expect("local addr"));
            (l, name)
        })
        .unzip()
}
