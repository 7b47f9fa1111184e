//! Watches every link while the example runs: a link that goes down is named at once, with the
//! library's reason, and remembered for the checks. A cut made on purpose is announced first
//! ([`LinkWatch::plan_cut`]) so it is not counted as a failure.

use std::collections::{HashMap, HashSet};
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
            let mut peers: Vec<&str> = m.peers().collect();
            peers.sort_unstable();
            conns.extend(peers.into_iter().filter_map(|p| m.connection(p).ok()));
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

async fn watch(conns: Vec<Connection>, shared: Arc<Shared>, progress: Progress) {
    let mut last: HashMap<usize, (ConnState, Instant)> = conns
        .iter()
        .enumerate()
        .map(|(i, c)| (i, (c.state(), Instant::now())))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !shared.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        for (i, conn) in conns.iter().enumerate() {
            let now = conn.state();
            let Some((before, since)) = last.get(&i).copied() else {
                continue;
            };
            if now == before {
                continue;
            }
            last.insert(i, (now, Instant::now()));
            let link = format!("{} → {}", conn.local(), conn.peer());
            if before == ConnState::Connected {
                let reason = conn
                    .last_close_reason()
                    .unwrap_or_else(|| "no reason recorded".to_owned());
                let planned = shared
                    .planned
                    .lock()
                    .contains(&(conn.local().to_owned(), conn.peer().to_owned()));
                let during_workload = !shared.workload_over.load(Ordering::Relaxed);
                let what = if planned {
                    "down (cut on purpose)"
                } else {
                    "DOWN"
                };
                progress.print(&format!("  link {link} {what}: {reason}"));
                shared.drops.lock().push(LinkDrop {
                    link,
                    reason,
                    planned,
                    during_workload,
                });
            } else if now == ConnState::Connected {
                progress.print(&format!(
                    "  link {link} up again after {:.1?}",
                    since.elapsed()
                ));
            }
        }
    }
}
