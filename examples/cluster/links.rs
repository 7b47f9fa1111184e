//! Watches every link while the example runs: a link that goes down is named at once, with the
//! library's reason, and remembered for the checks. A cut made on purpose is announced first
//! ([`LinkWatch::plan_cut`]) so it is not counted as a failure.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use grid::{LinkEvent, LinkEvents, Manager};
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
        for m in managers {
            // Subscribed here, before the caller goes on: no event can be missed.
            let events = m.events();
            tokio::spawn(watch(
                m.name().to_owned(),
                events,
                shared.clone(),
                progress.clone(),
            ));
        }
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

/// Follows one manager's link events: a drop is named when it happens, with its typed reason; a
/// restart (a new process under the same name) and a peer going away are printed too.
async fn watch(local: String, mut events: LinkEvents, shared: Arc<Shared>, progress: Progress) {
    let mut down_since: HashMap<String, Instant> = HashMap::new();
    while let Some(event) = events.recv().await {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        match event {
            LinkEvent::Disconnected { peer, reason } => {
                let link = format!("{local} → {peer}");
                down_since.insert(peer.to_string(), Instant::now());
                let planned = shared
                    .planned
                    .lock()
                    .contains(&(local.clone(), peer.to_string()));
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
                    link,
                    reason: reason.to_string(),
                    planned,
                    during_workload,
                });
            }
            LinkEvent::Connected { peer, .. } => {
                if let Some(t) = down_since.remove(peer.as_ref()) {
                    progress.print(&format!(
                        "  link {local} → {peer} up again after {:.1?}",
                        t.elapsed()
                    ));
                }
            }
            LinkEvent::Restarted { peer, old, new } => progress.print(&format!(
                "  {peer} restarted (instance {} → {})",
                short(&old),
                short(&new)
            )),
            LinkEvent::GoingAway { peer } => {
                progress.print(&format!("  {peer} is going away (draining)"));
            }
            LinkEvent::Missed { count } => {
                progress.print(&format!("  ({count} link events missed)"));
            }
            _ => {}
        }
    }
}

/// The first bytes of an instance id, in hex.
fn short(instance: &[u8]) -> String {
    instance
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}
