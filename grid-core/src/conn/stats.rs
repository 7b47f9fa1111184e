//! Counters of one peer connection, shared by its successive sessions.
//!
//! The byte, frame and message counters are also metrics (`crate::observe`): each add goes to
//! the atomic the snapshot reads and to its metric handle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::observe::{ConnMetrics, Counted};

/// A value on cache lines of its own (two: neighbouring lines are fetched in pairs), so that
/// the task writing it takes no line another task is reading or writing at the same time.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// The counters the socket reader adds to at every message.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub(crate) frames: Counted,
    pub(crate) bytes: Counted,
}

/// The counters the writer adds to at every message.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) frames: Counted,
    pub(crate) bytes: Counted,
    pub(crate) messages: Counted,
}

/// Live counters of one connection; read with [`ConnStats::snapshot`].
///
/// The reader's and the writer's counters are apart from each other and from the fields every
/// call reads (the metric handles), as the two tasks often run on different workers.
#[derive(Debug)]
pub(crate) struct ConnStats {
    epoch: Instant,
    /// This node's name (for spans and metric labels).
    pub(crate) node: Arc<str>,
    pub(crate) inbound: Padded<Inbound>,
    pub(crate) outbound: Padded<Outbound>,
    pub(crate) connects: AtomicU64,
    last_rtt_us: AtomicU64,
    /// The connection's metric handles, and its handlers'.
    pub(crate) metrics: ConnMetrics,
}

impl ConnStats {
    /// The counters of the connection from `node` to `peer`.
    pub(crate) fn new(node: &Arc<str>, peer: &Arc<str>) -> ConnStats {
        let metrics = ConnMetrics::new(node, peer);
        ConnStats {
            epoch: Instant::now(),
            node: node.clone(),
            inbound: Padded(Inbound {
                frames: metrics.counted("grid_connection_frames_total", "in"),
                bytes: metrics.counted("grid_connection_bytes_total", "in"),
            }),
            outbound: Padded(Outbound {
                frames: metrics.counted("grid_connection_frames_total", "out"),
                bytes: metrics.counted("grid_connection_bytes_total", "out"),
                messages: metrics.counted("grid_connection_messages_total", "out"),
            }),
            connects: AtomicU64::new(0),
            last_rtt_us: AtomicU64::new(u64::MAX),
            metrics,
        }
    }

    /// A session was installed: counts the connect, and a reconnect after the first.
    pub(crate) fn connected(&self) {
        if self.connects.fetch_add(1, Ordering::Relaxed) > 0 {
            self.metrics.reconnected();
        }
    }

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

    pub(crate) fn add(counter: &Counted, n: usize) {
        counter.add(n as u64);
    }

    pub(crate) fn get(counter: &Counted) -> u64 {
        counter.get()
    }
}
