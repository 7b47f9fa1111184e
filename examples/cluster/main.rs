//! The main job: a small grid cluster running a workload that exercises every capability.
//!
//! ```text
//! cargo run --release --example cluster                       # 3 nodes in this process
//! cargo run --release --example cluster -- --nodes 5 --duration 5
//! cargo run --release --example cluster -- --node http://127.0.0.1:7001 \
//!     --peers http://127.0.0.1:7001,http://127.0.0.1:7002,http://127.0.0.1:7003
//! ```
//!
//! Every node runs the real embedded listener, WebSocket upgrade, handshake and authentication.
//! The workload: unary echo between every pair in both directions; a listing streamed from node
//! to node; a quorum lock contended by several clients and kept alive over two-way refresh
//! streams; a link cut on purpose, with its recovery timed. A link that goes down is named when
//! it does, with the library's reason. It ends with tables and exits 0 only if every check
//! passed (1 if one failed, 2 for a bad argument or a node that cannot start).
//!
//! Library warnings (a refused handshake, a peer that cannot be reached) are shown by default;
//! `RUST_LOG` takes a `tracing` filter: `RUST_LOG=grid=debug` shows a line per call as its span
//! closes, on each side (`call`/`open` on the caller, `serve` on the callee, inside the
//! connection's `conn` span), with the handler's name, the peer, the mux, the outcome and the
//! duration. `--metrics 127.0.0.1:9000` serves the library's metrics (calls, errors, latency,
//! bytes, frames, reconnects, queue depth, in-flight) at `http://127.0.0.1:9000/metrics`.

mod links;
mod report;
mod services;
mod workload;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use grid::{CallError, Config, Connection, Manager};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

use links::LinkWatch;
use report::{Check, Progress};
use services::{DLockServer, LockTable, StoreClient, StoreImpl, StoreServer};
use workload::Params;

/// The most entries a listing may ask for (the store refuses more).
const MAX_ENTRIES: u32 = 10_000_000;

/// Room for the echo request's encoding (msgpack field names, string header) inside one call.
const ENCODING_ROOM: usize = 64;

/// Echo bodies in flight at once above which the example refuses to start (memory).
const MAX_BODIES_IN_FLIGHT: u64 = 1 << 30;

/// Starts a grid cluster and runs a workload that shows every capability, with a report.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "cluster",
    about,
    after_help = "One node per process: run the same --peers list with each --node NAME \
                  (every name http://host:port)."
)]
struct Args {
    /// Nodes started in this process
    #[arg(long, value_name = "N", default_value_t = 3, conflicts_with = "node",
          value_parser = clap::value_parser!(u16).range(2..=500))]
    nodes: u16,
    /// Seconds of unary load; the lock phase runs half as long (0.2 to 86400)
    #[arg(long, value_name = "SECS", default_value = "3", allow_negative_numbers = true,
          value_parser = parse_duration)]
    duration: Duration,
    /// Echo body size in bytes (at most the per-call limit, 64 MiB less its encoding)
    #[arg(long, value_name = "BYTES", default_value_t = 512, allow_negative_numbers = true,
          value_parser = parse_payload)]
    payload: usize,
    /// Concurrent callers per ordered pair of nodes
    #[arg(long, value_name = "N", default_value_t = 8, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Entries in each streamed listing
    #[arg(long, value_name = "N", default_value_t = 5000, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_ENTRIES)))]
    entries: u32,
    /// Run one node of a multi-process cluster, named NAME (http://host:port)
    #[arg(long, value_name = "NAME", requires = "peers")]
    node: Option<String>,
    /// Every node's name, comma-separated (NAME may be among them)
    #[arg(long, value_name = "LIST", value_delimiter = ',', requires = "node")]
    peers: Vec<String>,
    /// Address to bind (default: the host:port in NAME)
    #[arg(long, value_name = "ADDR", requires = "node")]
    listen: Option<String>,
    /// The cluster secret; use a real one across machines, the same on every node
    #[arg(long, value_name = "TEXT", default_value = "grid example secret")]
    secret: String,
    /// Seconds a node waits for every peer to connect and to finish (multi-process mode)
    #[arg(long, value_name = "SECS", default_value = "60", allow_negative_numbers = true,
          value_parser = parse_peer_timeout)]
    peer_timeout: Duration,
    /// Serve the library's metrics for Prometheus at http://ADDR/metrics while running
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
}

fn parse_seconds(s: &str, min: f64, max: f64) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !secs.is_finite() {
        return Err(format!("{s:?} is not a finite number of seconds"));
    }
    if !(min..=max).contains(&secs) {
        return Err(format!("{secs} s: must be from {min} to {max} seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_seconds(s, 0.2, 86_400.0)
}

fn parse_peer_timeout(s: &str) -> Result<Duration, String> {
    parse_seconds(s, 0.1, 86_400.0)
}

/// The largest echo body one call carries with the example's configuration.
fn max_body() -> usize {
    node_config().max_payload.saturating_sub(ENCODING_ROOM)
}

fn parse_payload(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of bytes"))?;
    let limit = node_config().max_payload;
    if n > max_body() {
        return Err(format!(
            "{n} bytes is over the limit: one call carries at most {limit} bytes \
             (Config::max_payload, {} MiB), so an echo body may have at most {} bytes",
            limit >> 20,
            max_body()
        ));
    }
    Ok(n)
}

/// The configuration of every node: the defaults, with keepalive pings every second so even a
/// short run reports each link's round-trip time.
fn node_config() -> Config {
    Config {
        ping_interval: Duration::from_secs(1),
        ..Config::default()
    }
}

impl Args {
    fn params(&self) -> Params {
        Params {
            duration: self.duration,
            payload: self.payload,
            concurrency: self.concurrency,
            list_entries: self.entries,
        }
    }

    /// Every peer's name but this node's (multi-process mode).
    fn other_peers(&self) -> Vec<String> {
        let mut peers: Vec<String> = self
            .peers
            .iter()
            .filter(|p| Some(*p) != self.node.as_ref())
            .cloned()
            .collect();
        peers.sort_unstable();
        peers.dedup();
        peers
    }

    /// Checks that span several arguments, and what the machine allows, before anything starts.
    fn validate(&self) -> Result<(), String> {
        if let Some(node) = &self.node {
            if self.other_peers().is_empty() {
                return Err(format!(
                    "--peers names no node other than {node}: list every node of the cluster"
                ));
            }
        }
        let ordered_pairs = match &self.node {
            Some(_) => self.other_peers().len() as u64,
            None => u64::from(self.nodes) * u64::from(self.nodes - 1),
        };
        let callers = ordered_pairs * u64::from(self.concurrency);
        let in_flight = callers * self.payload as u64;
        if in_flight > MAX_BODIES_IN_FLIGHT {
            return Err(format!(
                "{callers} callers (--concurrency {} per ordered pair of nodes) with \
                 --payload {} would keep {} MiB of echo bodies in flight at once (the limit \
                 here is {} MiB): lower --concurrency or --payload",
                self.concurrency,
                self.payload,
                in_flight >> 20,
                MAX_BODIES_IN_FLIGHT >> 20
            ));
        }
        self.check_open_files()
    }

    /// Every link holds a socket on each side; in one process both sides are ours. Reads the
    /// descriptor limit (RLIMIT_NOFILE), raises the soft limit up to the hard one if needed,
    /// and refuses to start when even that is too low.
    fn check_open_files(&self) -> Result<(), String> {
        let (need, why) = match &self.node {
            Some(_) => {
                let peers = self.other_peers().len() as u64;
                (peers + 64, format!("{peers} links and a listener"))
            }
            None => {
                let n = u64::from(self.nodes);
                let links = n * (n - 1) / 2;
                (
                    2 * links + n + 64,
                    format!("both ends of {links} links and {n} listeners"),
                )
            }
        };
        let (soft, hard) = rlimit::Resource::NOFILE
            .get()
            .map_err(|e| format!("cannot read the open-file limit: {e}"))?;
        if soft >= need {
            return Ok(());
        }
        let raised = if hard >= need {
            rlimit::Resource::NOFILE.set(need, hard).is_ok()
        } else {
            false
        };
        if raised {
            return Ok(());
        }
        let mode = match &self.node {
            Some(_) => format!("this node of {} needs", self.other_peers().len() + 1),
            None => format!("--nodes {} needs", self.nodes),
        };
        Err(format!(
            "{mode} about {need} open files ({why}), but this process may open only \
             {soft} (soft limit) / {hard} (hard limit): raise it with `ulimit -n {need}` \
             (the hard limit may need root) or use fewer nodes"
        ))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(msg) = args.validate() {
        Args::command()
            .error(ErrorKind::ValueValidation, msg)
            .exit();
    }
    let progress = Progress::new();
    // Warnings of the library (a refused handshake, a peer that cannot be reached) are shown
    // by default; RUST_LOG replaces the default.
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .parse(std::env::var("RUST_LOG").unwrap_or_default());
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: RUST_LOG is not a valid tracing filter: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // A call span has no event of its own: its line is the one printed when it closes,
        // with the outcome and duration recorded by then.
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(progress.log_writer())
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(async {
        // Before any manager starts: a connection takes its metric handles from the recorder
        // installed when it is created.
        if let Some(addr) = args.metrics {
            install_metrics(addr)?;
        }
        if args.node.is_some() {
            run_one(&args, &progress).await
        } else {
            run_local(&args, &progress).await
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Serves the metrics for Prometheus at `addr`, latencies as histograms.
fn install_metrics(addr: std::net::SocketAddr) -> Result<(), String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    const BUCKETS: [f64; 12] = [
        25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3, 250e-3, 1.0,
    ];
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Full("grid_call_duration_seconds".into()), &BUCKETS)
        .and_then(PrometheusBuilder::install)
        .map_err(|e| format!("cannot serve metrics at {addr}: {e}"))
}

/// Starts one node with both services registered.
async fn start_node(
    name: &str,
    peers: &[String],
    listen: Option<&str>,
    secret: &str,
) -> Result<(Manager, LockTable, StoreImpl), String> {
    let mut b = Manager::builder(name)
        .peers(peers.iter().cloned())
        .secret(secret)
        .config(node_config());
    if let Some(addr) = listen {
        b = b.listen(addr);
    }
    let manager = b.start().await.map_err(|e| match e {
        grid::Error::Io(io) if io.kind() == std::io::ErrorKind::AddrInUse => format!(
            "cannot listen for {name}: {} is already in use",
            listen.unwrap_or(name)
        ),
        other => format!("cannot start {name}: {other}"),
    })?;
    let table = LockTable::default();
    let store = StoreImpl::default();
    DLockServer::new(table.clone())
        .register(&manager)
        .map_err(|e| e.to_string())?;
    StoreServer::new(store.clone())
        .register(&manager)
        .map_err(|e| e.to_string())?;
    Ok((manager, table, store))
}

/// `n` loopback names on ports that were free a moment ago. (The embedded listener binds the
/// address in the name, so the port is released and bound again: a small window in which
/// another process could take it, reported as "already in use".)
fn free_names(n: usize) -> Result<Vec<String>, String> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find free ports: {e}"))?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| format!("http://{a}"))
                .map_err(|e| e.to_string())
        })
        .collect()
}

fn connections(m: &Manager) -> Result<Vec<Connection>, String> {
    m.peers()
        .iter()
        .map(|p| m.connection(p).map_err(|e| e.to_string()))
        .collect()
}

/// Counts live links (not managers): in one process both ends of each link are ours, and a
/// link counts when both ends are connected; in multi-process mode, this node's end.
fn links_up(nodes: &[(Manager, Vec<Connection>)], multi_process: bool, when: &str) -> Check {
    let up = |c: &Connection| c.state() == grid::ConnState::Connected;
    if multi_process {
        let conns = nodes.first().map(|(_, c)| c.as_slice()).unwrap_or_default();
        let live = conns.iter().filter(|c| up(c)).count();
        let down: Vec<&str> = conns.iter().filter(|c| !up(c)).map(|c| c.peer()).collect();
        return Check::that(
            format!("every link from this node to a peer is up {when}"),
            down.is_empty(),
            if down.is_empty() {
                format!("{live} of {} links up", conns.len())
            } else {
                format!(
                    "{live} of {} links up; down: {}",
                    conns.len(),
                    down.join(", ")
                )
            },
        );
    }
    let mut ends = std::collections::HashMap::new();
    for (_, conns) in nodes {
        for c in conns {
            let key = if c.local() < c.peer() {
                (c.local().to_owned(), c.peer().to_owned())
            } else {
                (c.peer().to_owned(), c.local().to_owned())
            };
            let e: &mut (u32, u32) = ends.entry(key).or_default();
            e.0 += 1;
            e.1 += u32::from(up(c));
        }
    }
    let total = ends.len();
    let down: Vec<String> = ends
        .iter()
        .filter(|(_, (n, live))| live < n)
        .map(|((a, b), _)| format!("{a} ↔ {b}"))
        .collect();
    Check::that(
        format!("every link is up at both ends {when}"),
        down.is_empty(),
        if down.is_empty() {
            format!("{total} of {total} links up")
        } else {
            format!(
                "{} of {total} links up; down: {}",
                total - down.len(),
                down.join(", ")
            )
        },
    )
}

async fn run_local(args: &Args, progress: &Progress) -> Result<bool, String> {
    let n = usize::from(args.nodes);
    progress.phase(&format!("starting {n} nodes on loopback"));
    let names = free_names(n)?;
    let mut nodes = Vec::new();
    let mut tables = Vec::new();
    for name in &names {
        let (m, t, _) = start_node(name, &names, None, &args.secret).await?;
        nodes.push((m.clone(), connections(&m)?));
        tables.push(t);
    }
    let t = Instant::now();
    let bar = progress.spinner(&format!("waiting for {} links", n * (n - 1) / 2));
    for (m, _) in &nodes {
        m.wait_for_peers(Duration::from_secs(30))
            .await
            .map_err(|e| format!("{}: {e}", m.name()))?;
    }
    let mesh_time = t.elapsed();
    bar.finish(&format!("full mesh up in {mesh_time:.1?}"));
    let managers: Vec<&Manager> = nodes.iter().map(|(m, _)| m).collect();
    let links = LinkWatch::start(&managers, progress);
    let mut run = Run {
        args,
        nodes: &nodes,
        tables: &tables,
        links: &links,
        progress,
        checks: vec![links_up(&nodes, false, "at the start")],
        rows: vec![
            ("nodes".to_owned(), format!("{n}, in this process")),
            (
                "links".to_owned(),
                format!("{}, full mesh up in {mesh_time:.1?}", n * (n - 1) / 2),
            ),
        ],
    };
    run.workload().await;
    run.cut(&nodes[0].1[0]).await;
    links.workload_over();
    run.checks.push(links.check());
    run.checks.push(links_up(&nodes, false, "at the end"));
    progress.phase("checking that nothing is left in flight");
    run.checks.push(workload::drained(&managers).await);
    let ok = run.report(&managers);
    drop(links); // our own leaving below is no news
                 // Every node drains: peers learn it at once (a go-away), calls in flight may finish.
    futures::future::join_all(managers.iter().map(|m| m.drain(DRAIN))).await;
    Ok(ok)
}

/// How long a leaving node lets calls in flight finish.
const DRAIN: Duration = Duration::from_secs(2);

/// One node of a multi-process cluster. Besides its own workload it keeps the others' in step:
/// round 1 ends when every node finished its workload, round 2 when the one node that cuts a
/// link (the smallest name) has done so; only then does each node check and report.
async fn run_one(args: &Args, progress: &Progress) -> Result<bool, String> {
    let name = args.node.clone().unwrap_or_default();
    let peers = args.other_peers();
    let mut everyone = peers.clone();
    everyone.push(name.clone());
    progress.phase(&format!("starting node {name}"));
    let (m, table, store) =
        start_node(&name, &everyone, args.listen.as_deref(), &args.secret).await?;
    let t = Instant::now();
    let bar = progress.spinner(&format!(
        "waiting for {} peer(s) to connect (up to {:.0?}); a refused handshake is logged",
        peers.len(),
        args.peer_timeout
    ));
    if let Err(e) = m.wait_for_peers(args.peer_timeout).await {
        bar.finish("not every peer connected");
        let down: Vec<String> = connections(&m)?
            .iter()
            .filter(|c| c.state() != grid::ConnState::Connected)
            .map(|c| c.peer().to_owned())
            .collect();
        m.shutdown().await;
        return Err(format!(
            "peers did not come up within {:.0?}: {e} (still down: {}); see the warnings \
             above for why",
            args.peer_timeout,
            down.join(", ")
        ));
    }
    let mesh_time = t.elapsed();
    bar.finish(&format!("every peer connected after {mesh_time:.1?}"));
    let nodes = vec![(m.clone(), connections(&m)?)];
    let managers = vec![&m];
    let links = LinkWatch::start(&managers, progress);
    let tables = [table];
    let mut run = Run {
        args,
        nodes: &nodes,
        tables: &tables,
        links: &links,
        progress,
        checks: vec![links_up(&nodes, true, "at the start")],
        rows: vec![
            (
                "nodes".to_owned(),
                format!(
                    "{} in the cluster; this process runs {name}",
                    everyone.len()
                ),
            ),
            (
                "peers connected".to_owned(),
                format!("{} after {mesh_time:.1?}", peers.len()),
            ),
        ],
    };
    run.workload().await;
    links.workload_over();
    run.checks.push(links.check());

    progress.phase("round 1: waiting for every node to finish its workload");
    let round_1 = round(&nodes[0].1, &name, &store, &peers, 1, args.peer_timeout).await;
    let everyone_done = round_1.ok;
    run.checks.push(round_1);
    // One node cuts a link, once every node's workload is over (so no other node's calls are
    // in the way): the smallest name. Not when a peer is missing: there may be no link to cut.
    if peers.iter().all(|p| *p > name) {
        if everyone_done {
            run.cut(&nodes[0].1[0]).await;
        } else {
            progress.print("  link cut skipped: not every peer finished round 1");
        }
    }
    progress.phase("round 2: waiting for the link cut and every node");
    run.checks
        .push(round(&nodes[0].1, &name, &store, &peers, 2, args.peer_timeout).await);
    progress.phase("checking that nothing is left in flight");
    run.checks.push(workload::drained(&managers).await);
    let ok = run.report(&managers);
    drop(links); // our own leaving below is no news
                 // Drain: a peer's call still in flight (its last round, say) is answered before we go.
    m.drain(DRAIN).await;
    Ok(ok)
}

/// Tells every peer this node finished round `n`, then waits until every peer said the same.
///
/// A peer may finish the last round and leave while our `done` is on its way back to us: it
/// counted ours (it leaves only once it heard from every node), so a lost answer from a peer
/// that already told us it finished this round is not a failure.
async fn round(
    conns: &[Connection],
    name: &str,
    store: &StoreImpl,
    peers: &[String],
    n: u32,
    timeout: Duration,
) -> Check {
    let mut failed = Vec::new();
    for conn in conns {
        let client = StoreClient::new(conn.clone());
        // (peer, why, whether the link dropped: the one failure a departed peer explains)
        let failure = match tokio::time::timeout(timeout, client.done(name.to_owned())).await {
            Ok(Ok(())) => continue,
            Ok(Err(CallError::Transport(e))) if e.is_connection_error() => (e.to_string(), true),
            Ok(Err(e)) => (e.to_string(), false),
            Err(_) => ("no answer".to_owned(), false),
        };
        failed.push((conn.peer().to_owned(), failure.0, failure.1));
    }
    let missing = store.wait_round(peers, n, timeout).await;
    let (left, failed): (Vec<_>, Vec<_>) = failed
        .into_iter()
        .partition(|(peer, _, dropped)| *dropped && !missing.contains(peer));
    let check = format!("every peer finished round {n}");
    let left_note = if left.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = left.iter().map(|(p, _, _)| p.as_str()).collect();
        format!(" ({} finished and left first)", names.join(", "))
    };
    if missing.is_empty() && failed.is_empty() {
        return Check::pass(check, format!("{} peer(s){left_note}", peers.len()));
    }
    let mut why: Vec<String> = failed
        .iter()
        .map(|(peer, e, _)| format!("telling {peer}: {e}"))
        .collect();
    if !missing.is_empty() {
        let reasons: Vec<String> = missing
            .iter()
            .map(|p| {
                let reason = conns
                    .iter()
                    .find(|c| c.peer() == p)
                    .and_then(Connection::last_close_reason)
                    .map_or(String::new(), |r| format!(" (its link: {r})"));
                format!("{p}{reason}")
            })
            .collect();
        why.push(format!(
            "not heard from within {timeout:.0?}: {}",
            reasons.join(", ")
        ));
    }
    Check::fail(check, why.join("; "))
}

/// The phases both modes share, and what they found.
struct Run<'a> {
    args: &'a Args,
    nodes: &'a [(Manager, Vec<Connection>)],
    tables: &'a [LockTable],
    links: &'a LinkWatch,
    progress: &'a Progress,
    checks: Vec<Check>,
    rows: Vec<(String, String)>,
}

impl Run<'_> {
    fn multi_process(&self) -> bool {
        self.args.node.is_some()
    }

    /// Unary load, a listing from every peer, the contended quorum lock.
    async fn workload(&mut self) {
        let p = self.args.params();
        let from = if self.multi_process() {
            " from this node"
        } else {
            ""
        };
        self.progress
            .phase("unary echo between every pair of nodes, both directions");
        let unary = workload::unary_load(self.nodes, &p, self.progress).await;
        let mut why = format!("{} calls, {} errors", unary.calls, unary.errors);
        let mut reasons: Vec<(&String, &u64)> = unary.reasons.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1));
        for (reason, n) in reasons.into_iter().take(3) {
            why.push_str(&format!("; {n} × {reason}"));
        }
        self.checks.push(Check::that(
            "every unary call succeeded",
            unary.errors == 0 && unary.calls > 0,
            why,
        ));
        let secs = unary.elapsed.as_secs_f64().max(1e-9);
        self.rows.push((
            format!("unary calls{from}"),
            format!(
                "{} ({} B bodies, {} callers per ordered pair)",
                unary.calls, p.payload, p.concurrency
            ),
        ));
        self.rows.push((
            "unary calls/s".to_owned(),
            format!("{:.0}", unary.calls as f64 / secs),
        ));
        self.rows.push((
            "unary p50 / p99 / p99.9 / max".to_owned(),
            unary.latencies.summary(),
        ));

        self.progress
            .phase("server stream: a listing from node to node");
        let (first_node, conns) = &self.nodes[0];
        let mut listed = 0u64;
        let mut list_time = Duration::ZERO;
        let bar = self.progress.spinner("listing");
        for conn in conns {
            let (r, took) = workload::listing(conn, p.list_entries).await;
            list_time += took;
            match r {
                Ok(n) => {
                    listed += u64::from(n);
                    self.checks.push(Check::that(
                        format!(
                            "listing {} → {} arrived whole and in order",
                            conn.peer(),
                            first_node.name()
                        ),
                        n == p.list_entries,
                        format!("{n} of {} entries", p.list_entries),
                    ));
                }
                Err(e) => self
                    .checks
                    .push(Check::fail(format!("listing from {}", conn.peer()), e)),
            }
            bar.message(format!("listed {listed} entries"));
        }
        bar.finish(&format!("listed {listed} entries in {list_time:.1?}"));
        self.rows.push((
            format!("stream entries/s{from}"),
            format!(
                "{:.0} ({listed} entries)",
                listed as f64 / list_time.as_secs_f64().max(1e-9)
            ),
        ));

        self.progress
            .phase("quorum lock contended by 2 clients per node, refreshed over two-way streams");
        let lock =
            workload::lock_contention(self.nodes, self.tables, 2, p.duration / 2, self.progress)
                .await;
        let whose = if self.multi_process() {
            "two of this node's clients"
        } else {
            "two clients"
        };
        self.checks.push(Check::that(
            format!("the lock was never held by {whose} at once"),
            lock.violations == 0,
            format!("{} violations", lock.violations),
        ));
        self.checks.push(Check::that(
            "the lock was acquired and refreshed",
            lock.acquired > 0 && lock.refreshes > 0,
            format!(
                "{} acquisitions, {} refreshes",
                lock.acquired, lock.refreshes
            ),
        ));
        self.checks.push(Check::that(
            "no lock call failed in the transport",
            lock.errors == 0,
            format!("{} errors", lock.errors),
        ));
        self.rows.push((
            format!("lock acquisitions{from}"),
            format!(
                "{} (contended attempts {}, refreshes {})",
                lock.acquired, lock.contended, lock.refreshes
            ),
        ));
    }

    /// Kills `conn`'s socket under load and times the recovery.
    async fn cut(&mut self, conn: &Connection) {
        self.progress
            .phase("link cut: killing one connection under load");
        let f = workload::link_cut(conn, Duration::from_secs(2), self.links, self.progress).await;
        self.checks.push(Check::that(
            "calls failed during the cut only as Disconnected/NotConnected",
            f.other_errors == 0,
            format!("{} other errors", f.other_errors),
        ));
        self.checks.push(Check::that(
            "the link came back by itself",
            f.reconnect.is_some() && f.recovered,
            format!(
                "reconnected: {}, call after recovery ok: {}",
                f.reconnect
                    .map_or("no".to_owned(), |d| format!("after {d:.1?}")),
                f.recovered
            ),
        ));
        self.rows.push((
            "link cut: reconnect time".to_owned(),
            f.reconnect
                .map_or("did not reconnect".to_owned(), |d| format!("{d:.1?}")),
        ));
        self.rows.push((
            "link cut: calls ok / disconnected".to_owned(),
            format!("{} / {}", f.ok, f.disconnected),
        ));
    }

    /// Prints the tables; true if every check held.
    fn report(mut self, managers: &[&Manager]) -> bool {
        let drops = self.links.drops();
        if !drops.is_empty() {
            let list: Vec<String> = drops
                .iter()
                .map(|d| {
                    let when = if d.planned {
                        "on purpose"
                    } else if d.during_workload {
                        "during the workload"
                    } else {
                        "after the workload"
                    };
                    format!("{} {when} ({})", d.link, d.reason)
                })
                .collect();
            self.rows
                .push(("links that went down".to_owned(), list.join("\n")));
        }
        report::table("summary", &self.rows);
        report::node_stats(managers);
        report::checks(&self.checks)
    }
}
