//! Counters of one peer connection, shared by its successive sessions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Live counters of one connection; read with [`ConnStats::snapshot`].
#[derive(Debug)]
pub(crate) struct ConnStats {
    epoch: Instant,
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) connects: AtomicU64,
    last_rtt_us: AtomicU64,
}

impl Default for ConnStats {
    fn default() -> ConnStats {
        ConnStats {
            epoch: Instant::now(),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            last_rtt_us: AtomicU64::new(u64::MAX),
        }
    }
}

impl ConnStats {
    /// A ping nonce: microseconds since this connection's stats were created.
    pub(crate) fn ping_nonce(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// A pong came back carrying a nonce from [`ping_nonce`](Self::ping_nonce).
    pub(crate) fn record_pong(&self, nonce: u64) {
        let now = self.ping_nonce();
        if nonce <= now {
            self.last_rtt_us.store(now - nonce, Ordering::Relaxed);
        }
    }

    pub(crate) fn last_rtt(&self) -> Option<Duration> {
        match self.last_rtt_us.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
