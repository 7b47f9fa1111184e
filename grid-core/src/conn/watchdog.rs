//! Liveness of one socket without a timer per message.
//!
//! The reader stamps every inbound message and the writer stamps the start and end of every
//! write; the keepalive task looks at the stamps a few times per timeout. A per-message
//! `tokio::time::timeout` would register and cancel a timer for every read and every write, which
//! on a busy connection costs more than the reads themselves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::core::CloseKind;
use super::stats::Padded;

const IDLE: u64 = u64::MAX;

/// Stamps of the last inbound message and of the write in progress.
#[derive(Debug)]
pub(crate) struct Watchdog {
    epoch: Instant,
    /// Stamped by the reader at every message, and by the writer around every write: apart,
    /// as the two often run on different workers.
    last_inbound_us: Padded<AtomicU64>,
    write_since_us: Padded<AtomicU64>,
}

impl Watchdog {
    pub(crate) fn new() -> Watchdog {
        Watchdog {
            epoch: Instant::now(),
            last_inbound_us: Padded(AtomicU64::new(0)),
            write_since_us: Padded(AtomicU64::new(IDLE)),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(IDLE - 1)
    }

    /// A message arrived.
    pub(crate) fn inbound(&self) {
        self.last_inbound_us.store(self.now_us(), Ordering::Relaxed);
    }

    /// A write starts.
    pub(crate) fn write_begin(&self) {
        self.write_since_us.store(self.now_us(), Ordering::Relaxed);
    }

    /// The write finished.
    pub(crate) fn write_end(&self) {
        self.write_since_us.store(IDLE, Ordering::Relaxed);
    }

    /// Why the socket must be declared dead, if it must.
    pub(crate) fn check(
        &self,
        idle_timeout: Duration,
        write_timeout: Duration,
    ) -> Option<CloseKind> {
        let now = self.now_us();
        let silent =
            Duration::from_micros(now.saturating_sub(self.last_inbound_us.load(Ordering::Relaxed)));
        if silent >= idle_timeout {
            return Some(CloseKind::Idle);
        }
        let since = self.write_since_us.load(Ordering::Relaxed);
        if since != IDLE {
            let writing = Duration::from_micros(now.saturating_sub(since));
            if writing >= write_timeout {
                return Some(CloseKind::WriteStalled);
            }
        }
        None
    }

    /// How often [`check`](Self::check) should run for these timeouts.
    pub(crate) fn period(ping: Duration, idle: Duration, write: Duration) -> Duration {
        ping.min(idle / 4)
            .min(write / 4)
            .max(Duration::from_millis(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_and_stuck_writes_are_reported() {
        let w = Watchdog::new();
        w.inbound();
        assert_eq!(
            w.check(Duration::from_secs(5), Duration::from_secs(5)),
            None
        );
        assert_eq!(
            w.check(Duration::ZERO, Duration::from_secs(5)),
            Some(CloseKind::Idle)
        );
        w.write_begin();
        assert_eq!(
            w.check(Duration::from_secs(5), Duration::ZERO),
            Some(CloseKind::WriteStalled)
        );
        w.write_end();
        assert_eq!(w.check(Duration::from_secs(5), Duration::ZERO), None);
    }
}
