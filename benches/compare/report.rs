//! The tables: Markdown, one per workload, every system's figure and grid's ratio to each.

use std::fmt::Write as _;
use std::time::Duration;

use crate::common::{StreamStat, UnaryStat, Wire};
use crate::grid_sys::{MemStat, PerItem};

/// The system every ratio is taken for.
pub(crate) const GRID: &str = "grid";

/// Outcome of one system in one workload.
#[derive(Debug, Clone)]
pub(crate) enum Cell<T> {
    Done(T),
    /// The system has no such call kind.
    Unsupported,
    Failed(String),
}

impl<T> Cell<T> {
    fn get(&self) -> Option<&T> {
        match self {
            Cell::Done(t) => Some(t),
            _ => None,
        }
    }

    /// The same outcome with `f` applied to a result.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Cell<U> {
        match self {
            Cell::Done(t) => Cell::Done(f(t)),
            Cell::Unsupported => Cell::Unsupported,
            Cell::Failed(e) => Cell::Failed(e),
        }
    }
}

/// One workload's row per system.
pub(crate) type Rows<T> = Vec<(&'static str, Cell<T>)>;

/// Everything measured in one run.
#[derive(Debug, Default)]
pub(crate) struct Results {
    /// Per concurrency, per system.
    pub(crate) unary: Vec<(usize, Rows<UnaryStat>)>,
    /// Per system, over `rounds` rounds.
    pub(crate) stream: Rows<StreamStat>,
    pub(crate) bidi: Rows<StreamStat>,
    /// Rounds of the streaming workloads.
    pub(crate) rounds: usize,
    pub(crate) memory: Option<Cell<MemStat>>,
    pub(crate) mesh: Vec<(usize, Cell<UnaryStat>)>,
    /// A capacity-1 stream beside unary load (grid only).
    pub(crate) beside: Option<Cell<crate::grid_sys::BesideStat>>,
    pub(crate) notes: Vec<(&'static str, &'static str)>,
    /// Wire counters per workload, for systems that have them.
    pub(crate) wire: Vec<(String, &'static str, Wire)>,
    /// Tables a workload renders itself (`large.rs`), in order.
    pub(crate) extra: Vec<String>,
}

pub(crate) fn rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// A range of rates in the unit of its top: `11.3–21.0M`.
pub(crate) fn spread(lo: f64, hi: f64) -> String {
    let (div, unit) = if hi >= 1e6 {
        (1e6, "M")
    } else if hi >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    format!("{:.1}–{:.1}{unit}", lo / div, hi / div)
}

pub(crate) fn dur(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn bytes(b: f64) -> String {
    if !b.is_finite() {
        // A reading that measured nothing (see `rss_per_item`).
        "— (RSS did not grow)".into()
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.2} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

fn ratio(x: f64) -> String {
    if x.is_finite() && x > 0.0 {
        format!("{x:.2}×")
    } else {
        "—".into()
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn unary_table(out: &mut String, c: usize, rows: &[(&'static str, Cell<UnaryStat>)]) {
    let grid = rows
        .iter()
        .find(|(n, _)| *n == GRID)
        .and_then(|(_, c)| c.get());
    let _ = writeln!(out, "\n### Unary echo, 512 B, concurrency {c}\n");
    if let Some(n) = rows.iter().find_map(|(_, c)| c.get()).map(|s| s.rounds) {
        let _ = writeln!(
            out,
            "Median req/s of {n} rounds, each round running every system once in turn; spread = \
             slowest–fastest round; p50, p99 and CPU/call over every call of every round; ratios \
             are of medians.\n"
        );
    }
    let _ = writeln!(
        out,
        "| system | req/s | spread | p50 | p99 | CPU/call | grid req/s ÷ this | grid p50 ÷ this | grid CPU ÷ this |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, cell) in rows {
        match cell {
            Cell::Done(s) => {
                let (r, l, u) = match grid {
                    Some(g) => (
                        ratio(g.per_sec / s.per_sec),
                        ratio(secs(g.p50) / secs(s.p50)),
                        ratio(secs(g.cpu_per_call) / secs(s.cpu_per_call)),
                    ),
                    None => ("—".into(), "—".into(), "—".into()),
                };
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {} | {} | {} | {r} | {l} | {u} |",
                    rate(s.per_sec),
                    spread(s.min_per_sec, s.max_per_sec),
                    dur(s.p50),
                    dur(s.p99),
                    dur(s.cpu_per_call)
                );
            }
            Cell::Unsupported => {
                let _ = writeln!(out, "| {name} | — | — | — | — | — | — | — | — |");
            }
            Cell::Failed(e) => {
                let _ = writeln!(out, "| {name} | FAILED: {e} | | | | | | | |");
            }
        }
    }
}

fn stream_table(
    out: &mut String,
    title: &str,
    rounds: usize,
    rows: &[(&'static str, Cell<StreamStat>)],
) {
    let grid = rows
        .iter()
        .find(|(n, _)| *n == GRID)
        .and_then(|(_, c)| c.get());
    let _ = writeln!(out, "\n### {title}\n");
    let _ = writeln!(
        out,
        "Median of {rounds} rounds, each round running every system once in turn; spread = \
         slowest–fastest round; MB/s at the median; CPU/msg = median over the rounds; ratios \
         are of medians.\n"
    );
    let _ = writeln!(
        out,
        "| system | msgs/s | spread | MB/s | CPU/msg | grid msgs/s ÷ this | grid CPU ÷ this |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, cell) in rows {
        match cell {
            Cell::Done(s) => {
                let (r, u) = match grid {
                    Some(g) => (
                        ratio(g.per_sec / s.per_sec),
                        ratio(secs(g.cpu_per_msg) / secs(s.cpu_per_msg)),
                    ),
                    None => ("—".into(), "—".into()),
                };
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {:.1} | {} | {r} | {u} |",
                    rate(s.per_sec),
                    spread(s.min_per_sec, s.max_per_sec),
                    s.mb_per_sec,
                    dur(s.cpu_per_msg)
                );
            }
            Cell::Unsupported => {
                let _ = writeln!(out, "| {name} | — | — | — | — | — | — |");
            }
            Cell::Failed(e) => {
                let _ = writeln!(out, "| {name} | FAILED: {e} | | | | | |");
            }
        }
    }
}

fn cpu_table(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "\n### CPU time per unary call (process user+sys, client and server together)\n"
    );
    let mut head = String::from("| system |");
    let mut rule = String::from("|---|");
    for (c, _) in &r.unary {
        let _ = write!(head, " c={c} |");
        rule.push_str("---:|");
    }
    head.push_str(" grid ÷ this, c=256 |");
    rule.push_str("---:|");
    let _ = writeln!(out, "{head}\n{rule}");
    let names: Vec<&'static str> = r
        .unary
        .first()
        .map(|(_, rows)| rows.iter().map(|(n, _)| *n).collect())
        .unwrap_or_default();
    let at = |c: usize, name: &str| -> Option<Duration> {
        r.unary
            .iter()
            .find(|(cc, _)| *cc == c)
            .and_then(|(_, rows)| rows.iter().find(|(n, _)| *n == name))
            .and_then(|(_, cell)| cell.get())
            .map(|s| s.cpu_per_call)
    };
    for name in names {
        let mut line = format!("| {name} |");
        for (c, _) in &r.unary {
            let _ = write!(line, " {} |", at(*c, name).map_or("—".into(), dur));
        }
        let rr = match (at(256, GRID), at(256, name)) {
            (Some(g), Some(s)) => ratio(secs(g) / secs(s)),
            _ => "—".into(),
        };
        let _ = writeln!(out, "{line} {rr} |");
    }
}

fn memory_table(out: &mut String, m: &Cell<MemStat>) {
    let _ = writeln!(
        out,
        "\n### grid memory (both ends live in this process)\n\nRSS: VmRSS deltas, in pages and \
         with the allocator's caches. Heap: live bytes of the allocations made in between, \
         counted by the benchmark's allocator (exact; neither counts kernel socket buffers).\n"
    );
    match m {
        Cell::Done(m) => {
            let _ = writeln!(out, "| what | count | RSS per item | heap per item |");
            let _ = writeln!(out, "|---|---:|---:|---:|");
            // What a row is, how many were built, and which of its readings to print.
            type Row<'a> = (&'a str, &'a str, fn(&PerItem) -> f64);
            let pairs = m.connections.to_string();
            let rows: [Row<'_>; 5] = [
                (
                    "idle stream on one connection (caller + callee state, handler task)",
                    &m.streams.to_string(),
                    |p| p.per_stream,
                ),
                (
                    "idle connection (both ends, manager cost subtracted)",
                    &pairs,
                    |p| p.per_connection,
                ),
                (
                    "manager with no peers (listener, registry, tasks)",
                    "—",
                    |p| p.per_manager,
                ),
                (
                    "for scale: bare tokio-tungstenite connection, default config (128 KiB read buffer), both ends",
                    &pairs,
                    |p| p.ws_default,
                ),
                (
                    "for scale: the same with `read_buffer_size` 16 KiB",
                    &pairs,
                    |p| p.ws_small_read,
                ),
            ];
            for (what, count, of) in rows {
                let _ = writeln!(
                    out,
                    "| {what} | {count} | {} | {} |",
                    bytes(of(&m.rss)),
                    bytes(of(&m.heap))
                );
            }
        }
        Cell::Unsupported => {}
        Cell::Failed(e) => {
            let _ = writeln!(out, "FAILED: {e}");
        }
    }
}

fn beside_table(out: &mut String, cell: &Cell<crate::grid_sys::BesideStat>) {
    out.push_str(
        "\n### grid: a stream of capacity 1 beside unary load (one connection; every item waits \
         for the credit of the one before)\n\n",
    );
    match cell {
        Cell::Done(st) => {
            out.push_str("| stream items/s alone | items/s beside unary | unary callers | unary req/s meanwhile | unary p50 |\n|---:|---:|---:|---:|---:|\n");
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                rate(st.alone),
                rate(st.beside),
                st.concurrency,
                rate(st.unary.per_sec),
                dur(st.unary.p50)
            ));
        }
        Cell::Failed(e) => out.push_str(&format!("failed: {e}\n")),
        Cell::Unsupported => out.push_str("—\n"),
    }
}

fn mesh_table(out: &mut String, rows: &[(usize, Cell<UnaryStat>)], concurrency: usize) {
    let _ = writeln!(
        out,
        "\n### grid mesh (MinIO's shape): N managers in one process, {concurrency} callers, each call \
         from a random node to a different random node, 512 B echo\n"
    );
    let _ = writeln!(out, "| nodes | req/s | p50 | p99 | CPU/call |");
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|");
    for (n, cell) in rows {
        match cell {
            Cell::Done(s) => {
                let _ = writeln!(
                    out,
                    "| {n} | {} | {} | {} | {} |",
                    rate(s.per_sec),
                    dur(s.p50),
                    dur(s.p99),
                    dur(s.cpu_per_call)
                );
            }
            Cell::Unsupported => {}
            Cell::Failed(e) => {
                let _ = writeln!(out, "| {n} | FAILED: {e} | | | |");
            }
        }
    }
}

fn wire_table(out: &mut String, rows: &[(String, &'static str, Wire)]) {
    let _ = writeln!(
        out,
        "\n### On the wire: frames per socket write (batching), per workload\n\n\
         grid: frames per WebSocket message (each message is one write and flush); raw-ws: \
         messages fed per flush. Caller = the side that calls, callee = the side that serves. \
         Stream and two-way rows count round 1 only (each later round repeats it).\n"
    );
    let _ = writeln!(
        out,
        "| workload | system | caller frames | caller writes | frames/write | callee frames | callee writes | frames/write |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
    let per = |f: u64, m: u64| if m == 0 { 0.0 } else { f as f64 / m as f64 };
    for (w, name, d) in rows {
        let _ = writeln!(
            out,
            "| {w} | {name} | {} | {} | {:.1} | {} | {} | {:.1} |",
            d.caller_frames,
            d.caller_messages,
            per(d.caller_frames, d.caller_messages),
            d.callee_frames,
            d.callee_messages,
            per(d.callee_frames, d.callee_messages)
        );
    }
}

fn unary_of(r: &Results, c: usize, name: &str) -> Option<UnaryStat> {
    r.unary
        .iter()
        .find(|(cc, _)| *cc == c)
        .and_then(|(_, rows)| rows.iter().find(|(n, _)| *n == name))
        .and_then(|(_, cell)| cell.get().cloned())
}

/// The targets of issue 11 (and issue 5's latency rows), each measured in this run.
fn targets_table(out: &mut String, r: &Results) {
    let _ = writeln!(out, "\n### Targets\n");
    let _ = writeln!(out, "| target | measured | met |");
    let _ = writeln!(out, "|---|---:|:---:|");
    let mut row = |what: &str, measured: Option<f64>, ok: &dyn Fn(f64) -> bool, unit: &str| {
        let (m, met) = match measured {
            Some(x) if x.is_finite() => (format!("{x:.2}{unit}"), if ok(x) { "yes" } else { "no" }),
            _ => ("—".into(), "—"),
        };
        let _ = writeln!(out, "| {what} | {m} | {met} |");
    };
    let at_least = |bound: f64| move |x: f64| x >= bound;
    let rps = |c: usize, a: &str, b: &str| -> Option<f64> {
        Some(unary_of(r, c, a)?.per_sec / unary_of(r, c, b)?.per_sec)
    };
    row(
        "unary c=64: grid ≥ 1.8× tarpc",
        rps(64, GRID, "tarpc"),
        &at_least(1.8),
        "×",
    );
    row(
        "unary c=256: grid ≥ 2.2× tarpc",
        rps(256, GRID, "tarpc"),
        &at_least(2.2),
        "×",
    );
    row(
        "unary c=64: grid ≥ 1.0× raw-ws",
        rps(64, GRID, "raw-ws"),
        &at_least(1.0),
        "×",
    );
    let p50 = (|| Some(secs(unary_of(r, 1, GRID)?.p50) / secs(unary_of(r, 1, "raw-ws")?.p50)))();
    row("unary c=1: grid p50 ≤ 1.1× raw-ws", p50, &|x| x <= 1.1, "×");
    let of = |rows: &Rows<StreamStat>, name: &str| {
        rows.iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, c)| c.get())
            .cloned()
    };
    let ratio = |rows: &Rows<StreamStat>, a: &str, b: &str| {
        Some(of(rows, a)?.per_sec / of(rows, b)?.per_sec)
    };
    row(
        "server streaming 64 B, medians: grid ≥ 1.5× tonic",
        ratio(&r.stream, GRID, "tonic"),
        &at_least(1.5),
        "×",
    );
    row(
        "two-way 64 B, medians: grid ≥ 1.5× tonic",
        ratio(&r.bidi, GRID, "tonic"),
        &at_least(1.5),
        "×",
    );
    let ns = of(&r.stream, GRID).map(|s| secs(s.cpu_per_msg) * 1e9);
    row(
        "server streaming: grid CPU per message ≤ 100 ns",
        ns,
        &|x| x <= 100.0,
        " ns",
    );
    row(
        "unary c=64: grid-typed ≥ 0.9× grid",
        rps(64, "grid-typed", GRID),
        &at_least(0.9),
        "×",
    );
    row(
        "unary c=256: grid-typed ≥ 0.9× grid",
        rps(256, "grid-typed", GRID),
        &at_least(0.9),
        "×",
    );
    row(
        "server streaming: grid-typed ≥ 0.9× grid",
        ratio(&r.stream, "grid-typed", GRID),
        &at_least(0.9),
        "×",
    );
    row(
        "two-way: grid-typed ≥ 0.9× grid",
        ratio(&r.bidi, "grid-typed", GRID),
        &at_least(0.9),
        "×",
    );
    let mem = match &r.memory {
        Some(Cell::Done(m)) => Some(m),
        _ => None,
    };
    row(
        "open idle streams on one connection: ≤ 2 KiB each",
        mem.map(|m| m.rss.per_stream / 1024.0),
        &|x| x <= 2.0,
        " KiB",
    );
    row(
        "idle connection, both ends: ≤ 64 KiB",
        mem.map(|m| m.rss.per_connection / 1024.0),
        &|x| x <= 64.0,
        " KiB",
    );
    row(
        "the same, live heap bytes: ≤ 2 KiB per idle stream",
        mem.map(|m| m.heap.per_stream / 1024.0),
        &|x| x <= 2.0,
        " KiB",
    );
    row(
        "the same, live heap bytes: ≤ 64 KiB per idle connection",
        mem.map(|m| m.heap.per_connection / 1024.0),
        &|x| x <= 64.0,
        " KiB",
    );
}

/// Renders every table.
pub(crate) fn render(r: &Results, mesh_concurrency: usize) -> String {
    let mut out = String::new();
    for (c, rows) in &r.unary {
        unary_table(&mut out, *c, rows);
    }
    if !r.unary.is_empty() {
        cpu_table(&mut out, r);
    }
    if !r.stream.is_empty() {
        stream_table(
            &mut out,
            "Server streaming, 64 B messages (one stream)",
            r.rounds,
            &r.stream,
        );
    }
    if !r.bidi.is_empty() {
        stream_table(
            &mut out,
            "Two-way streaming echo, 64 B messages (one stream; msgs/s = messages echoed back)",
            r.rounds,
            &r.bidi,
        );
    }
    if let Some(m) = &r.memory {
        memory_table(&mut out, m);
    }
    if let Some(cell) = &r.beside {
        beside_table(&mut out, cell);
    }
    if !r.mesh.is_empty() {
        mesh_table(&mut out, &r.mesh, mesh_concurrency);
    }
    for t in &r.extra {
        out.push_str(t);
    }
    if !r.wire.is_empty() {
        wire_table(&mut out, &r.wire);
    }
    targets_table(&mut out, r);
    if !r.notes.is_empty() {
        let _ = writeln!(out, "\nNotes:");
        for (name, note) in &r.notes {
            let _ = writeln!(out, "- {name}: {note}");
        }
    }
    out
}
