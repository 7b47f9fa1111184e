//! The stream timers of one connection (deadlines, stream pings, liveness checks) in one heap,
//! instead of a task or a timer per stream. Pure: time is an argument.
//!
//! Each mux has at most one live entry, recorded in `due`; an entry in the heap whose time no
//! longer matches is stale and skipped. Finished calls take their entry out of `due` at once,
//! and the heap is rebuilt when stale entries outnumber live ones, so its size stays within
//! twice the number of live streams (plus a small constant), whatever a peer does with
//! open/cancel loops.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use crate::ids::MuxId;

/// Slack before a rebuild: small heaps are never compacted.
const COMPACT_SLACK: usize = 64;

/// A min-heap of (when, mux) with one live entry per mux.
#[derive(Debug, Default)]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<Reverse<(Instant, u32)>>,
    due: HashMap<u32, Instant>,
}

impl TimerHeap {
    /// Asks for `mux` to be looked at at `at`, replacing its earlier entry. True when this is
    /// now the earliest entry (the task serving the heap must re-arm).
    pub(crate) fn schedule(&mut self, mux: MuxId, at: Instant) -> bool {
        if self.due.get(&mux.0) == Some(&at) {
            return false;
        }
        let earliest = self.next().is_none_or(|t| at < t);
        self.due.insert(mux.0, at);
        self.heap.push(Reverse((at, mux.0)));
        self.compact();
        earliest
    }

    /// Forgets `mux`'s entry (its call ended).
    pub(crate) fn cancel(&mut self, mux: MuxId) {
        if self.due.remove(&mux.0).is_some() {
            self.compact();
        }
    }

    /// Takes every live entry due at `now`, in time order.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Vec<MuxId> {
        let mut out = Vec::new();
        while let Some(&Reverse((t, mux))) = self.heap.peek() {
            if t > now {
                break;
            }
            self.heap.pop();
            if self.due.get(&mux) == Some(&t) {
                self.due.remove(&mux);
                out.push(MuxId(mux));
            }
        }
        out
    }

    /// The earliest entry (possibly stale: waking early costs one empty `pop_due`).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    pub(crate) fn clear(&mut self) {
        self.heap.clear();
        self.due.clear();
    }

    /// Entries in the heap, stale ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    fn compact(&mut self) {
        if self.heap.len() > 2 * self.due.len() + COMPACT_SLACK {
            self.heap = self.due.iter().map(|(m, t)| Reverse((*t, *m))).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_entries_come_out_in_time_order_once() {
        let mut t = TimerHeap::default();
        let now = Instant::now();
        let s = Duration::from_secs;
        assert!(t.schedule(MuxId(3), now + s(3)));
        assert!(t.schedule(MuxId(1), now + s(1)));
        assert!(!t.schedule(MuxId(2), now + s(2)));
        assert_eq!(t.next(), Some(now + s(1)));
        assert_eq!(t.pop_due(now + s(2)), vec![MuxId(1), MuxId(2)]);
        assert_eq!(t.pop_due(now + s(2)), vec![]);
        assert_eq!(t.pop_due(now + s(9)), vec![MuxId(3)]);
    }

    #[test]
    fn a_rescheduled_or_cancelled_entry_does_not_fire() {
        let mut t = TimerHeap::default();
        let now = Instant::now();
        let s = Duration::from_secs;
        t.schedule(MuxId(1), now + s(1));
        t.schedule(MuxId(1), now + s(5));
        t.schedule(MuxId(2), now + s(1));
        t.cancel(MuxId(2));
        assert_eq!(t.pop_due(now + s(2)), vec![]);
        assert_eq!(t.pop_due(now + s(5)), vec![MuxId(1)]);
    }

    #[test]
    fn open_cancel_loops_cannot_grow_the_heap() {
        let mut t = TimerHeap::default();
        let now = Instant::now();
        for i in 0..100_000u32 {
            let mux = MuxId(2 * i + 1);
            t.schedule(mux, now + Duration::from_secs(60));
            t.cancel(mux);
        }
        assert!(
            t.len() <= COMPACT_SLACK + 1,
            "heap holds {} entries",
            t.len()
        );
    }

    /// Entries beside long-lived ones that are cancelled (their call ended) or popped (due), a
    /// hundred thousand of each, keep the heap within twice the live
    /// entries plus the slack at every step.
    #[test]
    fn floods_of_cancelled_or_due_entries_keep_the_heap_bounded() {
        let mut t = TimerHeap::default();
        let now = Instant::now();
        let live = 1000u32;
        for i in 0..live {
            t.schedule(MuxId(2 * i), now + Duration::from_secs(3600));
        }
        let bound = |t: &TimerHeap| 2 * t.due.len() + COMPACT_SLACK + 1;
        for i in 0..100_000u32 {
            let mux = MuxId(2 * (live + i));
            t.schedule(mux, now + Duration::from_millis(u64::from(i % 50)));
            t.cancel(mux);
            assert!(t.len() <= bound(&t), "answered: {} entries", t.len());
        }
        let mut at = now;
        for i in 0..100_000u32 {
            let mux = MuxId(2 * (live + 100_000 + i));
            at += Duration::from_micros(10);
            t.schedule(mux, at);
            assert_eq!(t.pop_due(at), vec![mux]);
            assert!(t.len() <= bound(&t), "expired: {} entries", t.len());
        }
        assert_eq!(t.due.len(), live as usize);
    }
}
