//! Without the `metrics` feature: the same handles, doing nothing, so call sites need no `cfg`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::outcome::Outcome;
use super::Side;
use crate::ids::HandlerId;

/// A connection counter: the atomic the stats snapshot reads.
#[derive(Debug, Default)]
pub(crate) struct Counted {
    n: AtomicU64,
}

impl Counted {
    pub(crate) fn add(&self, n: u64) {
        self.n.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.n.load(Ordering::Relaxed)
    }
}

/// Nothing to register.
#[derive(Debug)]
pub(crate) struct ConnMetrics;

/// A gauge that records nothing.
#[derive(Debug)]
pub(crate) struct Gauge;

impl Gauge {
    pub(crate) fn increment(&self, _: f64) {}
    pub(crate) fn decrement(&self, _: f64) {}
}

impl ConnMetrics {
    pub(crate) fn new(_: &Arc<str>, _: &Arc<str>) -> ConnMetrics {
        ConnMetrics
    }

    pub(crate) fn counted(&self, _: &'static str, _: &'static str) -> Counted {
        Counted::default()
    }

    pub(crate) fn reconnected(&self) {}

    pub(crate) fn queued(&self, _: impl FnOnce() -> usize) {}

    pub(crate) fn in_flight(&self, _: Side) -> &Gauge {
        &Gauge
    }

    pub(crate) fn handler(&self, _: HandlerId, _: Side) -> HandlerRef {
        HandlerRef
    }

    pub(crate) fn at(&self, _: &HandlerRef) -> Option<&HandlerMetrics> {
        None
    }

    pub(crate) fn timed(&self) -> bool {
        false
    }
}

/// Where a handler's handles are: nowhere.
#[derive(Debug)]
pub(crate) struct HandlerRef;

/// Nothing to record.
#[derive(Debug)]
pub(crate) struct HandlerMetrics;

impl HandlerMetrics {
    pub(crate) fn started(&self) {}
    pub(crate) fn ended(&self, _: Outcome, _: Option<Duration>) {}
}
