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
//! streams; a link cut on purpose, with its recovery timed. It ends with a table and exits 0
//! only if every check passed.

mod report;
mod services;
mod workload;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use grid::{Config, Connection, Manager};

use report::{Check, Progress};
use services::{DLockServer, LockTable, StoreImpl, StoreServer};
use workload::Params;

const USAGE: &str = "\
usage: cluster [--nodes N] [--duration SECS] [--payload BYTES] [--concurrency N] [--entries N]
       cluster --node NAME --peers NAME,NAME,... [--listen ADDR] [--duration SECS] ...

  --nodes N         nodes started in this process (default 3)
  --duration SECS   seconds of unary load; the lock phase runs half as long (default 3)
  --payload BYTES   echo body size (default 512)
  --concurrency N   concurrent callers per ordered pair of nodes (default 8)
  --entries N       entries in each streamed listing (default 5000)
  --node NAME       run one node of a multi-process cluster, named NAME (http://host:port)
  --peers LIST      every node's name, comma-separated (NAME may be among them)
  --listen ADDR     address to bind (default: the host:port in NAME)
  --secret TEXT     the cluster secret (default: a demo secret; use a real one across machines)";

#[derive(Debug, Clone)]
struct Args {
    nodes: usize,
    params: Params,
    node: Option<String>,
    peers: Vec<String>,
    listen: Option<String>,
    secret: String,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        nodes: 3,
        params: Params {
            duration: Duration::from_secs(3),
            payload: 512,
            concurrency: 8,
            list_entries: 5000,
        },
        node: None,
        peers: Vec::new(),
        listen: None,
        secret: "grid example secret".to_owned(),
    };
    fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse()
            .map_err(|_| format!("{flag}: {v:?} is not a valid number"))
    }
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--nodes" => a.nodes = num("--nodes", it.next())?,
            "--duration" => {
                a.params.duration = Duration::from_secs_f64(num("--duration", it.next())?)
            }
            "--payload" => a.params.payload = num("--payload", it.next())?,
            "--concurrency" => a.params.concurrency = num("--concurrency", it.next())?,
            "--entries" => a.params.list_entries = num("--entries", it.next())?,
            "--node" => a.node = Some(it.next().ok_or("--node needs a name")?),
            "--peers" => {
                let list = it.next().ok_or("--peers needs a comma-separated list")?;
                a.peers = list.split(',').map(str::trim).map(str::to_owned).collect();
            }
            "--listen" => a.listen = Some(it.next().ok_or("--listen needs an address")?),
            "--secret" => a.secret = it.next().ok_or("--secret needs a value")?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    if a.params.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    if a.params.duration < Duration::from_millis(200) {
        return Err("--duration must be at least 0.2 s".into());
    }
    if let Some(node) = &a.node {
        if a.peers.iter().filter(|p| *p != node).count() == 0 {
            return Err("--node needs --peers naming at least one other node".into());
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
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
        if args.node.is_some() {
            run_one(args).await
        } else {
            run_local(args).await
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
        .config(Config::default());
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

async fn run_local(args: Args) -> Result<bool, String> {
    let progress = Progress::new();
    progress.phase(&format!("starting {} nodes on loopback", args.nodes));
    let names = free_names(args.nodes)?;
    let mut nodes = Vec::new();
    let mut tables = Vec::new();
    for name in &names {
        let (m, t, _) = start_node(name, &names, None, &args.secret).await?;
        nodes.push((m.clone(), connections(&m)?));
        tables.push(t);
    }
    let t = Instant::now();
    for (m, _) in &nodes {
        m.wait_for_peers(Duration::from_secs(10))
            .await
            .map_err(|e| format!("{}: {e}", m.name()))?;
    }
    let mesh_time = t.elapsed();
    progress.line(&format!("full mesh up in {mesh_time:.1?}"));
    let managers: Vec<&Manager> = nodes.iter().map(|(m, _)| m).collect();
    let ok = run_phases(&args, &nodes, &tables, &managers, mesh_time, &progress).await;
    for m in &managers {
        m.shutdown().await;
    }
    Ok(ok)
}

async fn run_one(args: Args) -> Result<bool, String> {
    let progress = Progress::new();
    let name = args.node.clone().unwrap_or_default();
    progress.phase(&format!("starting node {name}"));
    let (m, table, store) =
        start_node(&name, &args.peers, args.listen.as_deref(), &args.secret).await?;
    let t = Instant::now();
    progress.line("waiting for every peer (up to 60 s)");
    m.wait_for_peers(Duration::from_secs(60))
        .await
        .map_err(|e| format!("peers did not come up: {e}"))?;
    let mesh_time = t.elapsed();
    let nodes = vec![(m.clone(), connections(&m)?)];
    let managers = vec![&m];
    let ok = run_phases(&args, &nodes, &[table], &managers, mesh_time, &progress).await;
    // Stay up until every peer finished its own workload.
    progress.phase("waiting for the other nodes to finish");
    for conn in &nodes[0].1 {
        let _ = services::StoreClient::new(conn.clone())
            .done(name.clone())
            .await;
    }
    let peers = nodes[0].1.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.done.lock().len() < peers && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    m.shutdown().await;
    Ok(ok)
}

async fn run_phases(
    args: &Args,
    nodes: &[(Manager, Vec<Connection>)],
    tables: &[LockTable],
    managers: &[&Manager],
    mesh_time: Duration,
    progress: &Progress,
) -> bool {
    let p = &args.params;
    let mut checks = vec![Check::pass(format!("{} connections up", managers.len()))];

    progress.phase("unary echo between every pair of nodes, both directions");
    let mut unary = workload::unary_load(nodes, p, progress).await;
    checks.push(Check::that(
        "every unary call succeeded",
        unary.errors == 0 && unary.calls > 0,
        format!("{} calls, {} errors", unary.calls, unary.errors),
    ));

    progress.phase("server stream: a listing from node to node");
    let (first_node, conns) = &nodes[0];
    let mut listed = 0u64;
    let mut list_time = Duration::ZERO;
    for conn in conns {
        let (r, took) = workload::listing(conn, p.list_entries).await;
        list_time += took;
        match r {
            Ok(n) => {
                listed += u64::from(n);
                checks.push(Check::that(
                    format!(
                        "listing {} → {} arrived whole and in order",
                        conn.peer(),
                        first_node.name()
                    ),
                    n == p.list_entries,
                    format!("{n} of {} entries", p.list_entries),
                ));
            }
            Err(e) => checks.push(Check::fail(format!("listing from {}", conn.peer()), e)),
        }
        progress.line(&format!("listed {listed} entries"));
    }

    progress.phase("quorum lock contended by 2 clients per node, refreshed over two-way streams");
    let lock = workload::lock_contention(nodes, tables, 2, p.duration / 2, progress).await;
    checks.push(Check::that(
        "the lock was never held by two clients at once",
        lock.violations == 0,
        format!("{} violations", lock.violations),
    ));
    checks.push(Check::that(
        "the lock was acquired and refreshed",
        lock.acquired > 0 && lock.refreshes > 0,
        format!(
            "{} acquisitions, {} refreshes",
            lock.acquired, lock.refreshes
        ),
    ));
    checks.push(Check::that(
        "no lock call failed in the transport",
        lock.errors == 0,
        format!("{} errors", lock.errors),
    ));

    // In multi-process mode only the node with the smallest name cuts a link.
    let cutter = args.node.is_none()
        || args
            .peers
            .iter()
            .min()
            .is_some_and(|min| Some(min) == args.node.as_ref());
    let cut = if cutter {
        progress.phase("link cut: killing one connection under load");
        let conn = &conns[0];
        let f = workload::link_cut(conn, Duration::from_secs(2), progress).await;
        checks.push(Check::that(
            "calls failed during the cut only as Disconnected/NotConnected",
            f.other_errors == 0,
            format!("{} other errors", f.other_errors),
        ));
        checks.push(Check::that(
            "the link came back by itself",
            f.reconnect.is_some() && f.recovered,
            format!(
                "reconnect {:?}, call after recovery ok: {}",
                f.reconnect, f.recovered
            ),
        ));
        Some(f)
    } else {
        None
    };

    progress.phase("checking that nothing is left in flight");
    checks.push(workload::drained(managers).await);
    progress.finish();

    let secs = unary.elapsed.as_secs_f64().max(1e-9);
    let mut rows = vec![
        (
            "nodes".to_owned(),
            format!("{}", args.nodes.max(managers.len())),
        ),
        ("full mesh up in".to_owned(), format!("{mesh_time:.1?}")),
        (
            "unary calls".to_owned(),
            format!(
                "{} ({} B bodies, {} callers per pair)",
                unary.calls, p.payload, p.concurrency
            ),
        ),
        (
            "unary calls/s".to_owned(),
            format!("{:.0}", unary.calls as f64 / secs),
        ),
        (
            "unary p50 / p99".to_owned(),
            format!(
                "{:.2?} / {:.2?}",
                unary.latencies.percentile(50.0),
                unary.latencies.percentile(99.0)
            ),
        ),
        (
            "stream entries/s".to_owned(),
            format!(
                "{:.0} ({listed} entries)",
                listed as f64 / list_time.as_secs_f64().max(1e-9)
            ),
        ),
        (
            "lock acquisitions".to_owned(),
            format!(
                "{} (contended attempts {}, refreshes {})",
                lock.acquired, lock.contended, lock.refreshes
            ),
        ),
    ];
    if let Some(f) = &cut {
        rows.push((
            "link cut: reconnect time".to_owned(),
            f.reconnect
                .map_or("did not reconnect".to_owned(), |d| format!("{d:.1?}")),
        ));
        rows.push((
            "link cut: calls ok / disconnected".to_owned(),
            format!("{} / {}", f.ok, f.disconnected),
        ));
    }
    report::table("summary", &rows);
    report::node_stats(managers);
    report::checks(&checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(s.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        assert!(args("--nodes 1").unwrap_err().contains("at least 2"));
        assert!(args("--nodes x")
            .unwrap_err()
            .contains("not a valid number"));
        assert!(args("--frobnicate")
            .unwrap_err()
            .contains("unknown argument"));
        assert!(args("--node http://a:1").unwrap_err().contains("--peers"));
        assert_eq!(args("--nodes 4").map(|a| a.nodes), Ok(4));
    }
}
