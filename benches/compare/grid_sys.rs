//! grid through its raw byte API (`Connection::request`, `open_stream`, `register_unary`,
//! `register_stream`): two managers in this process, one WebSocket between them. Also the
//! grid-only workloads: memory per idle connection and per idle stream, and MinIO's mesh.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use grid::{Config, Connection, HandlerSpec, Manager, RemoteError, StreamOptions};

use crate::common::{
    bound_names, check_msg, rss_bytes, rss_per_item, run_unary, stream_msg, CountFn, EchoFn, Opts,
    PickFn, System, UnaryStat, Wire, WireFn,
};

const ECHO: HandlerSpec = HandlerSpec::named("Bench.echo");
const STREAM: HandlerSpec = HandlerSpec::named("Bench.stream");
const BIDI: HandlerSpec = HandlerSpec::named("Bench.bidi");
const IDLE: HandlerSpec = HandlerSpec::named("Bench.idle");

const SECRET: &str = "bench-secret";

fn gone(e: grid::Error) -> RemoteError {
    RemoteError::application(e.to_string())
}

fn register(m: &Manager) -> Result<(), String> {
    m.register_unary(ECHO, |_ctx, b| async move { Ok::<_, RemoteError>(b) })
        .map_err(|e| e.to_string())?;
    m.register_stream(STREAM, |_ctx, payload, _input, mut out| async move {
        let n = u64::from_be_bytes(
            payload[..]
                .try_into()
                .map_err(|_| RemoteError::application("bad count"))?,
        );
        out.send_all((0..n).map(stream_msg)).await.map_err(gone)
    })
    .map_err(|e| e.to_string())?;
    m.register_stream(BIDI, |_ctx, _payload, input, mut out| async move {
        let Some(mut input) = input else {
            return Err(RemoteError::application("no input"));
        };
        // Echo in batches: whatever input has arrived goes back together.
        let mut batch = Vec::new();
        while input.recv_many(&mut batch, 4096).await.map_err(gone)? > 0 {
            out.send_all(batch.drain(..)).await.map_err(gone)?;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    m.register_stream(IDLE, |ctx, _payload, _input, _out| async move {
        ctx.cancelled().await;
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Starts `n` managers that know each other, with the bench handlers, and waits for the mesh.
async fn cluster(n: usize, config: &Config) -> Result<Vec<Manager>, String> {
    cluster_with(n, config, register).await
}

/// Starts `n` managers that know each other, runs `register` on each, and waits for the mesh.
pub(crate) async fn cluster_with(
    n: usize,
    config: &Config,
    register: impl Fn(&Manager) -> Result<(), String>,
) -> Result<Vec<Manager>, String> {
    let (listeners, names) = bound_names(n);
    let mut managers = Vec::new();
    for (name, listener) in names.iter().zip(listeners) {
        let m = Manager::builder(name.clone())
            .peers(names.clone())
            .secret(SECRET)
            .config(config.clone())
            .listener(listener)
            .start()
            .await
            .map_err(|e| e.to_string())?;
        register(&m)?;
        managers.push(m);
    }
    for m in &managers {
        m.wait_for_peers(Duration::from_secs(30))
            .await
            .map_err(|e| format!("mesh of {n} did not connect: {e}"))?;
    }
    Ok(managers)
}

fn echo_fn(conn: Connection) -> EchoFn {
    Arc::new(move |b| {
        let c = conn.clone();
        async move { c.request(ECHO.id, b).await.map_err(|e| e.to_string()) }.boxed()
    })
}

async fn server_stream(conn: Connection, n: u64) -> Result<u64, String> {
    // The defaults, as every system here runs with its own.
    let opts = StreamOptions::default();
    let mut s = conn
        .open_stream(STREAM.id, Bytes::copy_from_slice(&n.to_be_bytes()), opts)
        .await
        .map_err(|e| e.to_string())?;
    let mut got = 0;
    while let Some(m) = s.receiver.recv().await {
        check_msg(&m.map_err(|e| e.to_string())?, got)?;
        got += 1;
    }
    Ok(got)
}

async fn bidi(conn: Connection, n: u64) -> Result<u64, String> {
    let opts = StreamOptions::two_way();
    let s = conn
        .open_stream(BIDI.id, Bytes::new(), opts)
        .await
        .map_err(|e| e.to_string())?;
    let mut sender = s.sender.ok_or("no sender")?;
    let mut receiver = s.receiver;
    let feeder = tokio::spawn(async move {
        sender
            .send_all((0..n).map(stream_msg))
            .await
            .map_err(|e| e.to_string())?;
        sender.finish();
        Ok::<_, String>(())
    });
    let mut got = 0;
    while let Some(m) = receiver.recv().await {
        check_msg(&m.map_err(|e| e.to_string())?, got)?;
        got += 1;
    }
    feeder.await.map_err(|e| e.to_string())??;
    Ok(got)
}

/// The same echo through a two-way stream: the payload goes as the one input message, and the
/// handler's one message back is the answer.
fn stream_echo_fn(conn: Connection) -> EchoFn {
    Arc::new(move |b| {
        let c = conn.clone();
        async move {
            let s = c
                .open_stream(BIDI.id, Bytes::new(), StreamOptions::two_way())
                .await
                .map_err(|e| e.to_string())?;
            let mut sender = s.sender.ok_or("no sender")?;
            let mut receiver = s.receiver;
            sender.send(b).await.map_err(|e| e.to_string())?;
            sender.finish();
            let back = receiver
                .recv()
                .await
                .ok_or("the stream ended without its echo")?
                .map_err(|e| e.to_string())?;
            match receiver.recv().await {
                None => Ok(back),
                Some(Ok(_)) => Err("a second message".into()),
                Some(Err(e)) => Err(e.to_string()),
            }
        }
        .boxed()
    })
}

/// Two grid managers with `config`, seen from the first: an echo of each payload as a message
/// of a two-way stream, and the unary echo.
pub(crate) async fn start_stream_echo(config: Config) -> Result<(EchoFn, EchoFn), String> {
    let managers = cluster(2, &config).await?;
    let conn = managers[0]
        .connection(managers[1].name())
        .map_err(|e| e.to_string())?;
    // The managers live as long as the process.
    std::mem::forget(managers);
    Ok((stream_echo_fn(conn.clone()), echo_fn(conn)))
}

/// Starts two grid managers with `config` and returns the system as seen from the first.
pub(crate) async fn start(name: &'static str, config: Config) -> Result<System, String> {
    let managers = cluster(2, &config).await?;
    let peer = managers[1].name().to_owned();
    let conn = managers[0].connection(&peer).map_err(|e| e.to_string())?;
    let wire = wire_fn(&managers)?;
    // The managers live as long as the process.
    std::mem::forget(managers);
    let c = conn.clone();
    let stream: CountFn = Arc::new(move |n| server_stream(c.clone(), n).boxed());
    let c = conn.clone();
    let bidi: CountFn = Arc::new(move |n| bidi(c.clone(), n).boxed());
    Ok(System {
        name,
        echo: echo_fn(conn),
        stream: Some(stream),
        bidi: Some(bidi),
        note: "",
        wire: Some(wire),
    })
}

/// The frames and messages each side of the first two managers' link has sent.
pub(crate) fn wire_fn(managers: &[Manager]) -> Result<WireFn, String> {
    let a = managers[0]
        .connection(managers[1].name())
        .map_err(|e| e.to_string())?;
    let b = managers[1]
        .connection(managers[0].name())
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(move || {
        let (a, b) = (a.stats(), b.stats());
        Wire {
            caller_frames: a.frames_out,
            caller_messages: a.messages_out,
            callee_frames: b.frames_out,
            callee_messages: b.messages_out,
        }
    }))
}

/// Memory of grid's idle state, per item, as RSS and as live heap bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemStat {
    pub(crate) streams: usize,
    pub(crate) connections: usize,
    /// VmRSS deltas: in pages, and with the allocator's caches.
    pub(crate) rss: PerItem,
    /// Live heap bytes (the benchmark's allocator counts them): exact.
    pub(crate) heap: PerItem,
}

/// Bytes per item of each thing the memory workload builds.
#[derive(Debug, Clone, Default)]
pub(crate) struct PerItem {
    pub(crate) per_stream: f64,
    pub(crate) per_connection: f64,
    pub(crate) per_manager: f64,
    /// A bare tokio-tungstenite connection (both ends), default `WebSocketConfig`.
    pub(crate) ws_default: f64,
    /// The same with a 16 KiB read buffer instead of the default 128 KiB.
    pub(crate) ws_small_read: f64,
}

/// Opens `opts.idle_streams` idle streams on one connection and reads the RSS; starts isolated
/// managers, then a full mesh, and reads the RSS after each to price one idle connection.
pub(crate) async fn memory(opts: &Opts) -> Result<MemStat, String> {
    let config = Config::default();
    let mut out = MemStat::default();

    // Idle connections: k isolated managers price a manager; a mesh of k adds the connections.
    let k = opts.idle_nodes;
    let base = rss_bytes();
    let heap_base = crate::heap::live();
    let mut isolated = Vec::new();
    let (listeners, names) = bound_names(k);
    for (name, listener) in names.into_iter().zip(listeners) {
        let m = Manager::builder(name.clone())
            .peers([name])
            .secret(SECRET)
            .config(config.clone())
            .listener(listener)
            .start()
            .await
            .map_err(|e| e.to_string())?;
        register(&m)?;
        isolated.push(m);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after_isolated = rss_bytes();
    let heap_isolated = crate::heap::live();
    let mesh = cluster(k, &config).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_mesh = rss_bytes();
    let heap_mesh = crate::heap::live();
    let per_manager = rss_per_item(after_isolated as f64 - base as f64, k);
    let pairs = k * (k - 1) / 2;
    let mesh_delta = after_mesh as f64 - after_isolated as f64;
    out.rss.per_manager = per_manager;
    out.connections = pairs;
    out.rss.per_connection = rss_per_item(mesh_delta - per_manager * k as f64, pairs);
    out.heap.per_manager = (heap_isolated - heap_base) as f64 / k as f64;
    out.heap.per_connection =
        ((heap_mesh - heap_isolated) as f64 - out.heap.per_manager * k as f64) / pairs as f64;

    // Idle streams on one connection of that mesh.
    let conn = mesh[0]
        .connection(mesh[1].name())
        .map_err(|e| e.to_string())?;
    let n = opts.idle_streams;
    let before = rss_bytes();
    let heap_before = crate::heap::live();
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let s = conn
            .open_stream(IDLE.id, Bytes::new(), StreamOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        streams.push(s);
    }
    let deadline = Instant::now() + opts.limit;
    while mesh[1].stats().in_flight.streams_in < n {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {n} idle streams reached the handler",
                mesh[1].stats().in_flight.streams_in
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = rss_bytes();
    out.heap.per_stream = (crate::heap::live() - heap_before) as f64 / n as f64;
    out.streams = n;
    out.rss.per_stream = rss_per_item(after as f64 - before as f64, n);
    drop(streams);
    let deadline = Instant::now() + opts.limit;
    while mesh[1].stats().in_flight.streams_in > 0 {
        if Instant::now() > deadline {
            return Err("idle streams were not released after the caller dropped them".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for m in mesh.iter().chain(&isolated) {
        m.shutdown().await;
    }
    Ok(out)
}

/// MinIO's shape: `n` managers in one process, each call from a random node to a different
/// random node.
pub(crate) async fn mesh(opts: &Opts, n: usize) -> Result<UnaryStat, String> {
    let managers = cluster(n, &Config::default()).await?;
    let mut pairs: Vec<EchoFn> = Vec::new();
    for a in &managers {
        for b in &managers {
            if a.name() != b.name() {
                pairs.push(echo_fn(a.connection(b.name()).map_err(|e| e.to_string())?));
            }
        }
    }
    let pairs = Arc::new(pairs);
    let pick: PickFn = Arc::new(move |_| pairs[fastrand::usize(..pairs.len())].clone());
    let stat = tokio::time::timeout(
        opts.limit,
        run_unary(pick, opts.mesh_concurrency, opts.warmup, opts.unary_time),
    )
    .await
    .map_err(|_| format!("mesh of {n} did not finish within {:?}", opts.limit))?;
    for m in &managers {
        m.shutdown().await;
    }
    Ok(stat)
}

/// A capacity-1 stream beside unary load.
#[derive(Debug, Clone, Default)]
pub(crate) struct BesideStat {
    /// Unary callers running meanwhile.
    pub(crate) concurrency: usize,
    /// Items per second of the capacity-1 stream on an otherwise idle connection.
    pub(crate) alone: f64,
    /// Items per second of the same stream while the callers run.
    pub(crate) beside: f64,
    /// The callers' rate meanwhile.
    pub(crate) unary: UnaryStat,
}

/// Reads a capacity-1 stream for `time` and returns its items per second (every item checked).
async fn read_small_stream(conn: &Connection, time: Duration) -> Result<f64, String> {
    let opts = StreamOptions {
        out_capacity: 1,
        ..StreamOptions::default()
    };
    let mut s = conn
        .open_stream(
            STREAM.id,
            Bytes::copy_from_slice(&u64::MAX.to_be_bytes()),
            opts,
        )
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut got = 0;
    while started.elapsed() < time {
        match s.receiver.recv().await {
            Some(Ok(m)) => check_msg(&m, got)?,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the stream ended".into()),
        }
        got += 1;
    }
    Ok(got as f64 / started.elapsed().as_secs_f64())
}

/// A stream with an output capacity of one message (each item waits for the credit of the one
/// before), alone and then beside `concurrency` unary callers on the same connection.
pub(crate) async fn small_stream_beside_load(
    opts: &Opts,
    concurrency: usize,
) -> Result<BesideStat, String> {
    let managers = cluster(2, &Config::default()).await?;
    let conn = managers[0]
        .connection(managers[1].name())
        .map_err(|e| e.to_string())?;
    let alone = read_small_stream(&conn, opts.unary_time).await?;
    let echo = echo_fn(conn.clone());
    let pick: PickFn = Arc::new(move |_| echo.clone());
    let load = tokio::spawn(run_unary(pick, concurrency, opts.warmup, opts.unary_time));
    // The stream starts once the load is under way and stops before it ends.
    tokio::time::sleep(opts.warmup).await;
    let beside = read_small_stream(&conn, opts.unary_time.mul_f64(0.8)).await?;
    let unary = load.await.map_err(|e| e.to_string())?;
    for m in &managers {
        m.shutdown().await;
    }
    Ok(BesideStat {
        concurrency,
        alone,
        beside,
        unary,
    })
}
