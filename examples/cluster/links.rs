//! Watches every link while the example runs: a link that goes down is named at once, with the
//! library's reason, and remembered for the checks. A cut made on purpose is announced first
//! ([`LinkWatch::plan_cut`]) so it is not counted as a failure.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grid::{ConnState, Connection, Manager};
use parking_lot::Mutex;

use crate::report::{Check, Progress};

/// One link going down.
#[derive(Debug, Clone)]
pub(crate) struct LinkDrop {
    /// `local → peer`.
    pub(crate) link: String,
    /// Why, as the library says.
    pub(crate) reason: String,
    /// Whether it was a cut made on purpose.
    pub(crate) planned: bool,
    /// Whether it happened while this process's workload ran.
    pub(crate) during_workload: bool,
}

#[derive(Debug, Default)]
struct Shared {
    planned: Mutex<HashSet<(String, String)>>,
    drops: Mutex<Vec<LinkDrop>>,
    workload_over: AtomicBool,
    stop: AtomicBool,
}

/// The watcher's handle. Dropping it stops the watcher task.
#[derive(Debug)]
pub(crate) struct LinkWatch {
    shared: Arc<Shared>,
}

impl Drop for LinkWatch {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

impl LinkWatch {
    /// Starts watching every connection of every manager in `managers`.
    pub(crate) fn start(managers: &[&Manager], progress: &Progress) -> LinkWatch {
        let shared = Arc::new(Shared::default());
        let mut conns: Vec<Connection> = Vec::new();
        for m in managers {
            conns.extend(m.peers().iter().filter_map(|p| m.connection(p).ok()));
        }
        tokio::spawn(watch(conns, shared.clone(), progress.clone()));
        LinkWatch { shared }
    }

    /// Announces a cut of the link between `a` and `b` (both directions).
    pub(crate) fn plan_cut(&self, a: &str, b: &str) {
        let mut planned = self.shared.planned.lock();
        planned.insert((a.to_owned(), b.to_owned()));
        planned.insert((b.to_owned(), a.to_owned()));
    }

    /// The planned cut is over: a later drop of that link counts again.
    pub(crate) fn cut_done(&self) {
        self.shared.planned.lock().clear();
    }

    /// This process's workload has ended: later drops (a peer leaving, a peer's own planned cut
    /// seen from this side) are still printed but are not failures.
    pub(crate) fn workload_over(&self) {
        self.shared.workload_over.store(true, Ordering::Relaxed);
    }

    /// Every drop seen so far.
    pub(crate) fn drops(&self) -> Vec<LinkDrop> {
        self.shared.drops.lock().clone()
    }

    /// The check: no link went down during the workload except on purpose.
    pub(crate) fn check(&self) -> Check {
        let drops = self.drops();
        let unplanned: Vec<String> = drops
            .iter()
            .filter(|d| d.during_workload && !d.planned)
            .map(|d| format!("{} ({})", d.link, d.reason))
            .collect();
        let planned = drops.iter().filter(|d| d.planned).count();
        Check::that(
            "no link went down during the workload, except the cut made on purpose",
            unplanned.is_empty(),
            if unplanned.is_empty() {
                format!("{planned} planned drop(s), no other")
            } else {
                format!("went down: {}", unplanned.join("; "))
            },
        )
    }
}

/// What the watcher last saw of one link.
#[derive(Debug, Clone, Copy)]
struct Seen {
    state: ConnState,
    connects: u64,
    since: Instant,
}

fn seen(conn: &Connection) -> Seen {
    Seen {
        state: conn.state(),
        connects: conn.stats().connects,
        since: Instant::now(),
    }
}

/// Polls every link (the library has no change notification): a state change, or a connect
/// count that moved while the state looked the same (a drop shorter than one poll), is a drop.
async fn watch(conns: Vec<Connection>, shared: Arc<Shared>, progress: Progress) {
    let mut last: Vec<Seen> = conns.iter().map(seen).collect();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !shared.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        for (conn, before) in conns.iter().zip(last.iter_mut()) {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let now = seen(conn);
            let went_down = before.state == ConnState::Connected
                && (now.state != ConnState::Connected || now.connects > before.connects);
            let came_up = now.state == ConnState::Connected
                && (before.state != ConnState::Connected || now.connects > before.connects);
            if now.state == before.state && now.connects == before.connects {
                continue;
            }
            let link = format!("{} → {}", conn.local(), conn.peer());
            if went_down {
                let reason = conn
                    .last_close_reason()
                    .map_or_else(|| "no reason recorded".to_owned(), |r| r.to_string());
                let planned = shared
                    .planned
                    .lock()
                    .contains(&(conn.local().to_owned(), conn.peer().to_owned()));
                let during_workload = !shared.workload_over.load(Ordering::Relaxed);
                let what = if planned {
                    "down (cut on purpose)"
                } else if during_workload {
                    "DOWN"
                } else {
                    "down (after this node's workload)"
                };
                progress.print(&format!("  link {link} {what}: {reason}"));
                shared.drops.lock().push(LinkDrop {
                    link: link.clone(),
                    reason,
                    planned,
                    during_workload,
                });
            }
            if came_up && went_down {
                progress.print(&format!("  link {link} up again within one poll (10 ms)"));
            } else if came_up {
                // `before.since` is when this link was first seen down.
                progress.print(&format!(
                    "  link {link} up again after {:.1?}",
                    before.since.elapsed()
                ));
            }
            *before = now;
        }
    }
}
