//! Metrics through the [`metrics`] facade: the handles of one connection and of each handler
//! called or served over it.
//!
//! Handles are registered with the recorder installed at the time — once per connection, and
//! once per connection, handler and side on its first call — and kept, so a call costs a lookup
//! and a few handle updates, with no label built, no allocation and no lock: the first
//! [`SLOTS`] handlers of a connection live in a table read with plain atomic loads (two cores
//! calling through one connection do not bounce a lock's cache line), the rest in a map behind a
//! lock. With no recorder installed every handle is the facade's no-op, and a call neither
//! looks its handler up nor reads the clock: the facade has no "is a recorder installed"
//! call, so a connection takes the recorder it sees at creation for the facade's no-op one when
//! it is zero-sized (a recorder with no state of its own). A recorder installed after a
//! connection was created is not seen by that connection (the facade's rule for handles):
//! install it first.
//!
//! Names and labels (every series has `node`, this node's name):
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `grid_calls_total` | counter | `handler`, `side` | calls started (`side="client"`) or admitted (`"server"`); a stream counts once |
//! | `grid_call_errors_total` | counter | `handler`, `side`, `kind` | calls that did not end `ok`, by outcome |
//! | `grid_call_duration_seconds` | histogram | `handler`, `side` | a unary call on the client; a handler's run on the server, unary or stream |
//! | `grid_connection_bytes_total` | counter | `peer`, `direction` | WebSocket payload bytes (`"in"`, `"out"`) |
//! | `grid_connection_frames_total` | counter | `peer`, `direction` | frames |
//! | `grid_connection_messages_total` | counter | `peer`, `direction` | WebSocket messages sent (batches of frames; `"out"` only) |
//! | `grid_connection_reconnects_total` | counter | `peer` | sessions installed after the first |
//! | `grid_connection_queued_bytes` | gauge | `peer` | data bytes left in the outbound queue after the writer took a batch |
//! | `grid_connection_in_flight` | gauge | `peer`, `side` | calls in flight: started here (`"client"`), served here (`"server"`) |
//!
//! The per-handler map of a connection holds the handlers this node called on it and those it
//! served (only registered handlers are ever served): a peer cannot grow it with made-up ids.
//!
//! Handler metrics have no `peer` label: a 500-node cluster would multiply every handler's
//! series by 500. Connection metrics say which peer.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Label};
use parking_lot::RwLock;

use super::outcome::Outcome;
use super::Side;
use crate::ids::HandlerId;

/// A connection counter: the atomic the stats snapshot reads, and its metric.
#[derive(Debug)]
pub(crate) struct Counted {
    n: AtomicU64,
    metric: Counter,
}

impl Counted {
    fn new(metric: Counter) -> Counted {
        Counted {
            n: AtomicU64::new(0),
            metric,
        }
    }

    pub(crate) fn add(&self, n: u64) {
        self.n.fetch_add(n, Ordering::Relaxed);
        self.metric.increment(n);
    }

    pub(crate) fn get(&self) -> u64 {
        self.n.load(Ordering::Relaxed)
    }
}

/// The metric handles of one connection (shared by its successive sessions).
#[derive(Debug)]
pub(crate) struct ConnMetrics {
    /// Whether a recorder was installed when the connection was created.
    recording: bool,
    node: Arc<str>,
    peer: Arc<str>,
    reconnects: Counter,
    queued: Gauge,
    in_flight: [Gauge; 2],
    /// Open addressing on the key; a slot, once set, never changes.
    slots: [OnceLock<Box<Slot>>; SLOTS],
    overflow: RwLock<HashMap<u64, Arc<HandlerMetrics>, BuildHasherDefault<IdHasher>>>,
}

/// Handlers of one connection whose handles are found without a lock.
pub(crate) const SLOTS: usize = 32;

#[derive(Debug)]
struct Slot {
    key: u64,
    meters: HandlerMetrics,
}

/// Where a call's handler handles are: a slot of its connection's table, or the overflow map.
#[derive(Debug)]
pub(crate) enum HandlerRef {
    /// No recorder: nothing to record.
    None,
    Slot(usize),
    Shared(Arc<HandlerMetrics>),
}

impl ConnMetrics {
    pub(crate) fn new(node: &Arc<str>, peer: &Arc<str>) -> ConnMetrics {
        let labels = |extra: Option<(&'static str, &'static str)>| {
            let mut l = vec![
                Label::new("node", node.clone()),
                Label::new("peer", peer.clone()),
            ];
            l.extend(extra.map(|(k, v)| Label::new(k, v)));
            l
        };
        let side = |s: Side| Some(("side", s.as_str()));
        ConnMetrics {
            recording: metrics::with_recorder(|r| std::mem::size_of_val(r) != 0),
            reconnects: metrics::counter!("grid_connection_reconnects_total", labels(None)),
            queued: metrics::gauge!("grid_connection_queued_bytes", labels(None)),
            in_flight: [
                metrics::gauge!("grid_connection_in_flight", labels(side(Side::Client))),
                metrics::gauge!("grid_connection_in_flight", labels(side(Side::Server))),
            ],
            node: node.clone(),
            peer: peer.clone(),
            slots: Default::default(),
            overflow: RwLock::default(),
        }
    }

    /// A connection counter `name` for `direction` (`"in"` or `"out"`).
    pub(crate) fn counted(&self, name: &'static str, direction: &'static str) -> Counted {
        Counted::new(metrics::counter!(
            name,
            "node" => self.node.clone(),
            "peer" => self.peer.clone(),
            "direction" => direction
        ))
    }

    pub(crate) fn reconnected(&self) {
        self.reconnects.increment(1);
    }

    /// Samples the queue depth (`bytes` takes the queue's lock: only with a recorder).
    pub(crate) fn queued(&self, bytes: impl FnOnce() -> usize) {
        if self.recording {
            self.queued.set(bytes() as f64);
        }
    }

    pub(crate) fn in_flight(&self, side: Side) -> &Gauge {
        &self.in_flight[side as usize]
    }

    /// Where the handles of `handler` on `side` are, registered on first use.
    pub(crate) fn handler(&self, handler: HandlerId, side: Side) -> HandlerRef {
        if !self.recording {
            return HandlerRef::None;
        }
        let key = u64::from(handler.0) << 1 | side as u64;
        let start = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize;
        for i in 0..SLOTS {
            let at = (start + i) % SLOTS;
            let slot = self.slots[at].get_or_init(|| {
                Box::new(Slot {
                    key,
                    meters: HandlerMetrics::new(&self.node, handler, side),
                })
            });
            if slot.key == key {
                return HandlerRef::Slot(at);
            }
        }
        let found = self.overflow.read().get(&key).cloned();
        HandlerRef::Shared(found.unwrap_or_else(|| {
            self.overflow
                .write()
                .entry(key)
                .or_insert_with(|| Arc::new(HandlerMetrics::new(&self.node, handler, side)))
                .clone()
        }))
    }

    /// The handles `at` points to.
    pub(crate) fn at<'a>(&'a self, at: &'a HandlerRef) -> Option<&'a HandlerMetrics> {
        match at {
            HandlerRef::None => None,
            HandlerRef::Slot(i) => self.slots[*i].get().map(|slot| &slot.meters),
            HandlerRef::Shared(m) => Some(m),
        }
    }

    /// Whether calls are timed for the duration histogram.
    pub(crate) fn timed(&self) -> bool {
        self.recording
    }
}

/// The metric handles of one handler on one side.
#[derive(Debug)]
pub(crate) struct HandlerMetrics {
    labels: [Label; 3],
    calls: Counter,
    duration: Histogram,
    /// Registered on the first error of each kind.
    errors: [OnceLock<Counter>; Outcome::ERRORS.len()],
}

impl HandlerMetrics {
    fn new(node: &Arc<str>, handler: HandlerId, side: Side) -> HandlerMetrics {
        let name: metrics::SharedString = match handler.name() {
            Some(n) => n.into(),
            None => handler.to_string().into(),
        };
        let labels = [
            Label::new("node", node.clone()),
            Label::new("handler", name),
            Label::new("side", side.as_str()),
        ];
        HandlerMetrics {
            calls: metrics::counter!("grid_calls_total", labels.to_vec()),
            duration: metrics::histogram!("grid_call_duration_seconds", labels.to_vec()),
            labels,
            errors: Default::default(),
        }
    }

    pub(crate) fn started(&self) {
        self.calls.increment(1);
    }

    pub(crate) fn ended(&self, outcome: Outcome, took: Option<Duration>) {
        if let Some(t) = took {
            self.duration.record(t.as_secs_f64());
        }
        if let Some(i) = outcome.error_index() {
            self.errors[i]
                .get_or_init(|| {
                    let mut labels = self.labels.to_vec();
                    labels.push(Label::new("kind", outcome.as_str()));
                    metrics::counter!("grid_call_errors_total", labels)
                })
                .increment(1);
        }
    }
}

/// Keys are a handler id (already a hash) and a side bit: no hashing needed.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // Spread the id's bits into the top bits hashbrown uses for its control bytes.
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
