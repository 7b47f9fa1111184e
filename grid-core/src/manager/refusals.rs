//! A rate limit on the log lines of refused incoming sockets: at most one line per peer address
//! per interval, the next one carrying how many refusals it stood for.
//!
//! Anyone who can reach the port can make the node refuse a socket (a bad secret, a stalled
//! handshake, the pending-handshake cap), so one WARN line per refusal would let them fill the
//! log. [`RefusalLog`] is plain state with the time passed in: no clock, no IO, no tracing.
//!
//! Per address it keeps a *window*: the time its last line was logged and the refusals suppressed
//! since. A refusal inside the window is counted and not logged; the first refusal after it is
//! logged with that count and opens a new window. The table holds at most `capacity` addresses,
//! so a flood from many source addresses cannot grow it without bound either: when it is full,
//! windows that are over are evicted (a count they still hold moves to the shared *overflow*
//! window, so no refusal goes unreported), and if none is over, further addresses share the
//! overflow window: still at most one line per interval for all of them together.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Most addresses tracked one by one. Bounds the table's memory under a flood from many source
/// addresses; beyond it, addresses share one window.
pub(crate) const MAX_TRACKED_ADDRESSES: usize = 1024;

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log a line for this address; `suppressed` refusals from it were not logged since its last
    /// line.
    Log {
        /// Refusals counted but not logged since the address's previous line.
        suppressed: u64,
    },
    /// Log a line for "other addresses" (the table is full); `suppressed` refusals were not logged
    /// since that window's previous line.
    LogOverflow {
        /// Refusals counted but not logged since the overflow window's previous line.
        suppressed: u64,
    },
    /// Do not log: it is counted and reported with the next line.
    Quiet,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    logged_at: Instant,
    suppressed: u64,
}

impl Window {
    fn is_over(&self, now: Instant, interval: Duration) -> bool {
        now.saturating_duration_since(self.logged_at) >= interval
    }
}

/// The per-address windows; see the module doc.
#[derive(Debug)]
pub(crate) struct RefusalLog<K> {
    interval: Duration,
    capacity: usize,
    windows: HashMap<K, Window>,
    /// The shared window of addresses that found the table full, and the counts of evicted
    /// windows.
    overflow: Option<Window>,
    /// Counts moved here by evictions before the overflow window existed.
    orphaned: u64,
}

impl<K: Hash + Eq> RefusalLog<K> {
    /// At most one line per address per `interval`, for up to `capacity` addresses tracked apart.
    pub(crate) fn new(interval: Duration, capacity: usize) -> RefusalLog<K> {
        RefusalLog {
            interval,
            capacity,
            windows: HashMap::new(),
            overflow: None,
            orphaned: 0,
        }
    }

    /// Notes one refusal of a socket from `key` at `now`, and says whether to log it.
    pub(crate) fn refusal(&mut self, key: K, now: Instant) -> Verdict {
        let interval = self.interval;
        if let Some(w) = self.windows.get_mut(&key) {
            return if w.is_over(now, interval) {
                let suppressed = w.suppressed;
                *w = Window {
                    logged_at: now,
                    suppressed: 0,
                };
                Verdict::Log { suppressed }
            } else {
                w.suppressed += 1;
                Verdict::Quiet
            };
        }
        if self.windows.len() >= self.capacity {
            self.evict_over(now);
        }
        if self.windows.len() < self.capacity {
            self.windows.insert(
                key,
                Window {
                    logged_at: now,
                    suppressed: 0,
                },
            );
            return Verdict::Log { suppressed: 0 };
        }
        self.refusal_in_overflow(now)
    }

    /// Addresses tracked one by one right now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.windows.len()
    }

    fn refusal_in_overflow(&mut self, now: Instant) -> Verdict {
        let interval = self.interval;
        match &mut self.overflow {
            Some(w) if !w.is_over(now, interval) => {
                w.suppressed += 1;
                Verdict::Quiet
            }
            slot => {
                let suppressed =
                    slot.map_or(0, |w| w.suppressed) + std::mem::take(&mut self.orphaned);
                *slot = Some(Window {
                    logged_at: now,
                    suppressed: 0,
                });
                Verdict::LogOverflow { suppressed }
            }
        }
    }

    /// Drops the windows that are over; counts they still hold move to the overflow window.
    fn evict_over(&mut self, now: Instant) {
        let interval = self.interval;
        let mut moved = 0;
        self.windows.retain(|_, w| {
            let keep = !w.is_over(now, interval);
            if !keep {
                moved += w.suppressed;
            }
            keep
        });
        match &mut self.overflow {
            Some(w) => w.suppressed += moved,
            None => self.orphaned += moved,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_S: Duration = Duration::from_secs(10);

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn one_line_per_address_per_interval_with_the_count() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(TEN_S, 16);
        assert_eq!(log.refusal("a", t0), Verdict::Log { suppressed: 0 });
        for i in 1..=99 {
            assert_eq!(
                log.refusal("a", at(t0, i * 10)),
                Verdict::Quiet,
                "refusal {i}"
            );
        }
        // Just before the interval ends: still quiet.
        assert_eq!(log.refusal("a", at(t0, 9_999)), Verdict::Quiet);
        // The first refusal after it is logged with the 100 in between.
        assert_eq!(
            log.refusal("a", at(t0, 10_000)),
            Verdict::Log { suppressed: 100 }
        );
        // And it opened a new window, counted from zero.
        assert_eq!(log.refusal("a", at(t0, 10_001)), Verdict::Quiet);
        assert_eq!(
            log.refusal("a", at(t0, 20_000)),
            Verdict::Log { suppressed: 1 }
        );
    }

    #[test]
    fn addresses_are_limited_apart() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(TEN_S, 16);
        assert_eq!(log.refusal("a", t0), Verdict::Log { suppressed: 0 });
        assert_eq!(log.refusal("b", at(t0, 1)), Verdict::Log { suppressed: 0 });
        assert_eq!(log.refusal("a", at(t0, 2)), Verdict::Quiet);
        assert_eq!(log.refusal("b", at(t0, 3)), Verdict::Quiet);
        assert_eq!(log.refusal("b", at(t0, 4)), Verdict::Quiet);
        assert_eq!(
            log.refusal("a", at(t0, 10_000)),
            Verdict::Log { suppressed: 1 }
        );
        assert_eq!(
            log.refusal("b", at(t0, 10_001)),
            Verdict::Log { suppressed: 2 }
        );
    }

    #[test]
    fn a_zero_interval_logs_every_refusal() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(Duration::ZERO, 16);
        for i in 0..5 {
            assert_eq!(log.refusal("a", at(t0, i)), Verdict::Log { suppressed: 0 });
        }
    }

    #[test]
    fn a_full_table_shares_one_window_and_stays_bounded() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(TEN_S, 4);
        for k in 0..4u32 {
            assert_eq!(log.refusal(k, t0), Verdict::Log { suppressed: 0 });
        }
        // A flood from 10 000 more addresses inside the interval: one line, then quiet.
        assert_eq!(
            log.refusal(100, at(t0, 1)),
            Verdict::LogOverflow { suppressed: 0 }
        );
        for k in 101..10_100u32 {
            assert_eq!(log.refusal(k, at(t0, 2)), Verdict::Quiet);
        }
        assert_eq!(log.tracked(), 4);
        // The tracked addresses keep their own windows meanwhile.
        assert_eq!(log.refusal(0, at(t0, 3)), Verdict::Quiet);
        // After the interval the old windows are evicted to make room for new addresses.
        assert_eq!(
            log.refusal(20_000, at(t0, 10_000)),
            Verdict::Log { suppressed: 0 }
        );
        assert!(log.tracked() <= 4);
    }

    #[test]
    fn evicted_counts_are_reported_not_lost() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(TEN_S, 2);
        assert_eq!(log.refusal("a", t0), Verdict::Log { suppressed: 0 });
        assert_eq!(log.refusal("b", t0), Verdict::Log { suppressed: 0 });
        // Three refusals from "a" that are not logged, then "a" goes quiet.
        for i in 1..=3 {
            assert_eq!(log.refusal("a", at(t0, i)), Verdict::Quiet);
        }
        // Much later, two new addresses need room: "a" and "b" are evicted, "a"'s three move to the
        // overflow window.
        assert_eq!(
            log.refusal("c", at(t0, 30_000)),
            Verdict::Log { suppressed: 0 }
        );
        assert_eq!(
            log.refusal("d", at(t0, 30_001)),
            Verdict::Log { suppressed: 0 }
        );
        // The table is full of live windows: the next address reports through the overflow window,
        // with the three evicted refusals.
        assert_eq!(
            log.refusal("e", at(t0, 30_002)),
            Verdict::LogOverflow { suppressed: 3 }
        );
    }
}
