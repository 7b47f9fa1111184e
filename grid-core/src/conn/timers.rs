//! The stream timers of one session: deadlines, stream pings and liveness checks, in one heap
//! served by one task, instead of a task or a timer per stream.
//!
//! Entries are hints: when one fires, the session asks the stream's machine to handle the time,
//! and the machine decides whether anything is due and when to be asked next. Stale or duplicate
//! entries therefore cost one lookup and nothing else.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::ids::MuxId;

/// A min-heap of (when, mux) and the wake-up of the task that serves it.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: Mutex<BinaryHeap<Reverse<(Instant, u32)>>>,
    changed: Notify,
}

impl Timers {
    /// Asks for `mux` to be looked at no earlier than `at`.
    pub(crate) fn schedule(&self, at: Instant, mux: MuxId) {
        let mut heap = self.heap.lock();
        let earlier = heap.peek().is_none_or(|Reverse((t, _))| at < *t);
        heap.push(Reverse((at, mux.0)));
        drop(heap);
        if earlier {
            self.changed.notify_one();
        }
    }

    /// Wakes the serving task (it re-reads the heap, or notices the session closed).
    pub(crate) fn wake(&self) {
        self.changed.notify_one();
    }

    /// Takes every entry due at `now`.
    pub(crate) fn due(&self, now: Instant) -> Vec<MuxId> {
        let mut heap = self.heap.lock();
        let mut out = Vec::new();
        while let Some(Reverse((t, mux))) = heap.peek() {
            if *t > now {
                break;
            }
            out.push(MuxId(*mux));
            heap.pop();
        }
        out
    }

    /// The earliest entry.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.lock().peek().map(|Reverse((t, _))| *t)
    }

    /// Waits until an earlier entry is scheduled or [`wake`](Self::wake) is called.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Entries queued (stale ones included).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_entries_come_out_in_time_order() {
        let t = Timers::default();
        let now = Instant::now();
        t.schedule(now + Duration::from_secs(3), MuxId(3));
        t.schedule(now + Duration::from_secs(1), MuxId(1));
        t.schedule(now + Duration::from_secs(2), MuxId(2));
        assert_eq!(t.next(), Some(now + Duration::from_secs(1)));
        assert_eq!(
            t.due(now + Duration::from_secs(2)),
            vec![MuxId(1), MuxId(2)]
        );
        assert_eq!(t.len(), 1);
    }
}
