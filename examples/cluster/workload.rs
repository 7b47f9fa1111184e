//! The workload phases: unary load between every pair, a streamed listing, a contended quorum
//! lock, and a link cut with its recovery. Each phase returns figures and checks for the report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use grid::{CallError, Connection, Error, Manager};
use parking_lot::Mutex;

use crate::links::LinkWatch;
use crate::report::{Check, Latencies, Progress};
use crate::services::{DLockClient, LockRequest, LockTable, StoreClient};

/// Parameters of a run.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    /// Seconds of unary load.
    pub(crate) duration: Duration,
    /// Bytes of each echo body.
    pub(crate) payload: usize,
    /// Concurrent callers per ordered pair of nodes.
    pub(crate) concurrency: u32,
    /// Entries in the streamed listing.
    pub(crate) list_entries: u32,
}

/// What the unary phase measured.
#[derive(Debug, Default)]
pub(crate) struct UnaryFigures {
    /// Completed calls.
    pub(crate) calls: u64,
    /// Failed calls.
    pub(crate) errors: u64,
    /// Why calls failed: the library's message, and how many times.
    pub(crate) reasons: BTreeMap<String, u64>,
    /// Wall time.
    pub(crate) elapsed: Duration,
    /// Per-call latencies.
    pub(crate) latencies: Latencies,
}

/// Unary echo from every node to every other node, `concurrency` callers per ordered pair.
pub(crate) async fn unary_load(
    nodes: &[(Manager, Vec<Connection>)],
    params: &Params,
    progress: &Progress,
) -> UnaryFigures {
    let body = "x".repeat(params.payload);
    let calls = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let reasons = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let lat = Arc::new(Mutex::new(Latencies::default()));
    let end = Instant::now() + params.duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (_, conns) in nodes {
        for conn in conns {
            for _ in 0..params.concurrency {
                let client = StoreClient::new(conn.clone());
                let (body, calls, errors, reasons, lat) = (
                    body.clone(),
                    calls.clone(),
                    errors.clone(),
                    reasons.clone(),
                    lat.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let mut local = Latencies::default();
                    while Instant::now() < end {
                        let t = Instant::now();
                        match client.echo(body.clone()).await {
                            Ok(b) if b.len() == body.len() => {
                                local.record(t.elapsed());
                                calls.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                let why = match other {
                                    Ok(b) => {
                                        format!("echo returned {} of {} bytes", b.len(), body.len())
                                    }
                                    Err(e) => e.to_string(),
                                };
                                *reasons.lock().entry(why).or_insert(0) += 1;
                                // A failing call returns at once: do not spin on it.
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                    lat.lock().merge(&local);
                }));
            }
        }
    }
    let bar = progress.timed(params.duration);
    let counts = || {
        format!(
            "{} calls, {} errors",
            calls.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed)
        )
    };
    while Instant::now() < end {
        bar.elapsed(started.elapsed());
        bar.message(counts());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    bar.finish(&format!("unary: {}", counts()));
    let latencies = std::mem::take(&mut *lat.lock());
    let reasons = std::mem::take(&mut *reasons.lock());
    UnaryFigures {
        calls: calls.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        reasons,
        elapsed: started.elapsed(),
        latencies,
    }
}

/// A listing streamed from `conn`'s peer, counted and checked in order.
pub(crate) async fn listing(conn: &Connection, entries: u32) -> (Result<u32, String>, Duration) {
    let client = StoreClient::new(conn.clone());
    let started = Instant::now();
    let result = async {
        let mut stream = client
            .list("bucket".to_owned(), entries)
            .await
            .map_err(|e| e.to_string())?;
        let mut n = 0u32;
        while let Some(item) = stream.next().await {
            let entry = item.map_err(|e| format!("after {n} entries: {e}"))?;
            if entry.index != n {
                return Err(format!("entry {} arrived at position {n}", entry.index));
            }
            n += 1;
        }
        Ok(n)
    }
    .await;
    (result, started.elapsed())
}

/// What the lock phase measured.
#[derive(Debug, Default)]
pub(crate) struct LockFigures {
    /// Times a client held the lock.
    pub(crate) acquired: u64,
    /// Attempts that did not reach a quorum.
    pub(crate) contended: u64,
    /// Times two clients of this process held the lock at once (must be 0).
    pub(crate) violations: u64,
    /// Refresh pings answered "still held".
    pub(crate) refreshes: u64,
    /// Calls that failed in the transport.
    pub(crate) errors: u64,
}

/// A client of the cluster-wide lock: its own node's table plus a client per peer.
struct Locker {
    owner: String,
    local: LockTable,
    remotes: Vec<DLockClient>,
}

impl Locker {
    fn quorum(&self) -> usize {
        let nodes = self.remotes.len() + 1;
        nodes / 2 + 1
    }

    /// Asks every node; keeps the grant if a quorum agreed, else gives back what it got.
    async fn acquire(&self, resource: &str, figures: &Mutex<LockFigures>) -> Option<Vec<usize>> {
        let req = LockRequest {
            resource: resource.to_owned(),
            owner: self.owner.clone(),
        };
        let local = self.local.try_lock(&req);
        let answers =
            futures::future::join_all(self.remotes.iter().map(|c| c.lock(req.clone()))).await;
        let granted: Vec<usize> = answers
            .iter()
            .enumerate()
            .filter_map(|(i, a)| matches!(a, Ok(true)).then_some(i))
            .collect();
        let failed = answers.iter().filter(|a| a.is_err()).count() as u64;
        figures.lock().errors += failed;
        if granted.len() + usize::from(local) >= self.quorum() {
            return Some(granted);
        }
        self.release(resource, &granted, local).await;
        None
    }

    async fn release(&self, resource: &str, granted: &[usize], local: bool) {
        let req = LockRequest {
            resource: resource.to_owned(),
            owner: self.owner.clone(),
        };
        if local {
            self.local.unlock(&req);
        }
        let calls = granted.iter().map(|&i| self.remotes[i].unlock(req.clone()));
        let _ = futures::future::join_all(calls).await;
    }
}

/// `clients_per_node` clients on every node contend for one resource until `until`.
pub(crate) async fn lock_contention(
    nodes: &[(Manager, Vec<Connection>)],
    tables: &[LockTable],
    clients_per_node: usize,
    run_for: Duration,
    progress: &Progress,
) -> LockFigures {
    let figures = Arc::new(Mutex::new(LockFigures::default()));
    let holders = Arc::new(AtomicUsize::new(0));
    let end = Instant::now() + run_for;
    let mut tasks = Vec::new();
    for (n, (manager, conns)) in nodes.iter().enumerate() {
        for c in 0..clients_per_node {
            let locker = Locker {
                owner: format!("{}#{c}", manager.name()),
                local: tables[n].clone(),
                remotes: conns.iter().cloned().map(DLockClient::new).collect(),
            };
            let (figures, holders) = (figures.clone(), holders.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < end {
                    let Some(granted) = locker.acquire("cluster-lock", &figures).await else {
                        figures.lock().contended += 1;
                        let backoff = 1 + fastrand::u64(..5);
                        tokio::time::sleep(Duration::from_millis(backoff)).await;
                        continue;
                    };
                    if holders.fetch_add(1, Ordering::SeqCst) != 0 {
                        figures.lock().violations += 1;
                    }
                    hold(&locker, &granted, &figures).await;
                    holders.fetch_sub(1, Ordering::SeqCst);
                    figures.lock().acquired += 1;
                    locker.release("cluster-lock", &granted, true).await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }));
        }
    }
    let started = Instant::now();
    let bar = progress.timed(run_for);
    let counts = || {
        let f = figures.lock();
        format!(
            "{} acquired, {} contended, {} violations",
            f.acquired, f.contended, f.violations
        )
    };
    while Instant::now() < end {
        bar.elapsed(started.elapsed());
        bar.message(counts());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    bar.finish(&format!("lock: {}", counts()));
    Arc::try_unwrap(figures)
        .map(Mutex::into_inner)
        .unwrap_or_default()
}

/// The critical section: keep the lock alive over two-way refresh streams for a few pings.
async fn hold(locker: &Locker, granted: &[usize], figures: &Mutex<LockFigures>) {
    let req = LockRequest {
        resource: "cluster-lock".to_owned(),
        owner: locker.owner.clone(),
    };
    let mut streams = Vec::new();
    for &i in granted {
        match locker.remotes[i].refresh(req.clone()).await {
            Ok(s) => streams.push(s),
            Err(_) => figures.lock().errors += 1,
        }
    }
    for ping in 0..3u64 {
        for (sink, replies) in &mut streams {
            if sink.send(ping).await.is_err() {
                figures.lock().errors += 1;
                continue;
            }
            match replies.next().await {
                Some(Ok(true)) => figures.lock().refreshes += 1,
                Some(Ok(false)) | None => {}
                Some(Err(_)) => figures.lock().errors += 1,
            }
        }
    }
    // Dropping the sinks ends the refresh streams cleanly.
    for (sink, mut replies) in streams {
        sink.finish();
        while let Some(r) = replies.next().await {
            if r.is_err() {
                figures.lock().errors += 1;
            }
        }
    }
}

/// What the link-cut phase measured.
#[derive(Debug, Default)]
pub(crate) struct CutFigures {
    /// Calls that succeeded during the phase.
    pub(crate) ok: u64,
    /// Calls that failed because the link was down (`Disconnected` / `NotConnected`).
    pub(crate) disconnected: u64,
    /// Calls that failed any other way (must be 0).
    pub(crate) other_errors: u64,
    /// From the cut until the connection was up again.
    pub(crate) reconnect: Option<Duration>,
    /// A call after recovery succeeded.
    pub(crate) recovered: bool,
}

/// Unary load on one link while its socket is killed; measures the recovery. The cut is
/// announced to `links` first, so the watcher does not count it as a failure.
pub(crate) async fn link_cut(
    conn: &Connection,
    run_for: Duration,
    links: &LinkWatch,
    progress: &Progress,
) -> CutFigures {
    let figures = Arc::new(Mutex::new(CutFigures::default()));
    let end = Instant::now() + run_for;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = StoreClient::new(conn.clone());
        let figures = figures.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let r = client.echo("ping".to_owned()).await;
                let link_down = matches!(
                    r,
                    Err(CallError::Transport(
                        Error::Disconnected { .. } | Error::NotConnected { .. }
                    ))
                );
                {
                    let mut f = figures.lock();
                    match r {
                        Ok(_) => f.ok += 1,
                        Err(_) if link_down => f.disconnected += 1,
                        Err(_) => f.other_errors += 1,
                    }
                }
                if link_down {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
    }
    // Let the load run before the cut.
    tokio::time::sleep(run_for / 4).await;
    links.plan_cut(conn.local(), conn.peer());
    progress.print(&format!(
        "  killing the socket of {} → {}",
        conn.local(),
        conn.peer()
    ));
    let connects = conn.stats().connects;
    let cut = Instant::now();
    conn.kill_socket();
    // `wait_for_connect` returns on a live session: the killed one no longer counts.
    let reconnect = match conn.wait_for_connect(Duration::from_secs(10)).await {
        Ok(()) if conn.stats().connects > connects => Some(cut.elapsed()),
        _ => None,
    };
    for t in tasks {
        let _ = t.await;
    }
    links.cut_done();
    let recovered = StoreClient::new(conn.clone())
        .echo("after".to_owned())
        .await
        .is_ok();
    let mut f = Arc::try_unwrap(figures)
        .map(Mutex::into_inner)
        .unwrap_or_default();
    f.reconnect = reconnect;
    f.recovered = recovered;
    f
}

/// Waits (bounded) until no call is in flight on any node.
pub(crate) async fn drained(managers: &[&Manager]) -> Check {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let busy: Vec<String> = managers
            .iter()
            .filter(|m| m.stats().in_flight.total() != 0)
            .map(|m| format!("{}: {:?}", m.name(), m.stats().in_flight))
            .collect();
        if busy.is_empty() {
            return Check::pass(
                "in-flight counts back at zero on every node",
                format!("{} node(s) checked", managers.len()),
            );
        }
        if Instant::now() > deadline {
            return Check::fail(
                "in-flight counts back at zero on every node",
                busy.join("; "),
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
