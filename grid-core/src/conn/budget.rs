//! The bytes one connection holds for its peer, counted against `Config` bounds.
//!
//! Two counters, each an atomic so the socket reader, handler tasks and stream handles can charge
//! and release without a shared lock:
//! - **inbound**: request payloads of calls still running and stream messages received but not
//!   yet consumed — what a peer makes us hold by sending;
//! - **pending responses**: responses a finished handler holds while it waits for room in the
//!   data lane — what a peer makes us hold by not reading;
//! - **received**: received messages (batches) still alive because something sliced out of them
//!   is: a payload of a few bytes, charged as a few bytes above, keeps its whole message
//!   ([`Received`]). Past the inbound bound, the reader copies what it keeps out of each new
//!   message instead, so what a peer makes us hold this way stays near that bound, however
//!   small the pieces it leaves in each. The socket reads messages into shared buffers; one
//!   under 32 KiB is copied into a buffer of its own first, so the count is its real size. A
//!   longer one is counted at its length, though it can share its read buffer with what came
//!   before it (see ARCHITECTURE.md, "Received messages kept alive").
//!
//! The connection core consults them to admit calls; stream machines consult the inbound one to
//! hold back credit. Releases saturate at zero, so a double release can only under-count, never
//! wrap.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

/// Byte counters of one connection, with their bounds.
#[derive(Debug)]
pub(crate) struct Budget {
    inbound: AtomicUsize,
    pending: AtomicUsize,
    peak_inbound: AtomicUsize,
    peak_pending: AtomicUsize,
    received: AtomicUsize,
    max_inbound: usize,
    max_pending: usize,
}

/// A snapshot of a connection's budget: bytes held now and the highest seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeldBytes {
    /// Request payloads of running calls and buffered stream messages.
    pub inbound: usize,
    /// The highest `inbound` seen on this connection.
    pub peak_inbound: usize,
    /// Responses finished but waiting for room to be written.
    pub pending_responses: usize,
    /// The highest `pending_responses` seen on this connection.
    pub peak_pending_responses: usize,
    /// Data frames queued for the socket.
    pub queued: usize,
    /// Received messages kept alive by what was sliced out of them (see the module docs).
    pub received: usize,
}

impl Budget {
    pub(crate) fn new(max_inbound: usize, max_pending: usize) -> Budget {
        Budget {
            inbound: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            peak_inbound: AtomicUsize::new(0),
            peak_pending: AtomicUsize::new(0),
            received: AtomicUsize::new(0),
            max_inbound,
            max_pending,
        }
    }

    pub(crate) fn charge_inbound(&self, n: usize) {
        let now = self.inbound.fetch_add(n, Ordering::Relaxed) + n;
        self.peak_inbound.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn release_inbound(&self, n: usize) {
        release(&self.inbound, n);
    }

    pub(crate) fn charge_pending(&self, n: usize) {
        let now = self.pending.fetch_add(n, Ordering::Relaxed) + n;
        self.peak_pending.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn release_pending(&self, n: usize) {
        release(&self.pending, n);
    }

    /// True while the inbound bytes are at or over their bound: admit nothing, credit nothing.
    pub(crate) fn inbound_full(&self) -> bool {
        self.inbound.load(Ordering::Relaxed) >= self.max_inbound
    }

    /// True when `n` more inbound bytes would pass twice the bound: a peer that keeps sending
    /// into a full budget (it can, with credit granted before the budget filled) has its stream
    /// failed rather than our memory grown.
    pub(crate) fn inbound_overrun(&self, n: usize) -> bool {
        self.inbound.load(Ordering::Relaxed).saturating_add(n) > self.max_inbound.saturating_mul(2)
    }

    /// Bytes that can still arrive before [`inbound_overrun`](Self::inbound_overrun) says yes.
    pub(crate) fn overrun_room(&self) -> usize {
        self.max_inbound
            .saturating_mul(2)
            .saturating_sub(self.inbound.load(Ordering::Relaxed))
    }

    /// Whether a new call carrying `payload` bytes may be admitted.
    pub(crate) fn admits(&self, payload: usize) -> bool {
        self.inbound.load(Ordering::Relaxed).saturating_add(payload) <= self.max_inbound
            && self.pending.load(Ordering::Relaxed) < self.max_pending
    }

    pub(crate) fn snapshot(&self, queued: usize) -> HeldBytes {
        HeldBytes {
            inbound: self.inbound.load(Ordering::Relaxed),
            peak_inbound: self.peak_inbound.load(Ordering::Relaxed),
            pending_responses: self.pending.load(Ordering::Relaxed),
            peak_pending_responses: self.peak_pending.load(Ordering::Relaxed),
            queued,
            received: self.received.load(Ordering::Relaxed),
        }
    }

    /// True while the received messages kept alive are over the inbound bound: the reader then
    /// copies out of each new message what it keeps.
    pub(crate) fn received_full(&self) -> bool {
        self.received.load(Ordering::Relaxed) > self.max_inbound
    }
}

/// A received message counted in its connection's [`Budget`] while anything sliced out of it
/// is alive.
pub(crate) struct Received {
    bytes: Bytes,
    budget: Arc<Budget>,
}

impl Received {
    /// `bytes`, counted until the last slice of it is dropped.
    pub(crate) fn track(bytes: Bytes, budget: &Arc<Budget>) -> Bytes {
        budget.received.fetch_add(bytes.len(), Ordering::Relaxed);
        Bytes::from_owner(Received {
            bytes,
            budget: budget.clone(),
        })
    }
}

impl AsRef<[u8]> for Received {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        release(&self.budget.received, self.bytes.len());
    }
}

fn release(counter: &AtomicUsize, n: usize) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_stops_at_the_bounds_and_resumes_after_release() {
        let b = Budget::new(100, 10);
        assert!(b.admits(100));
        b.charge_inbound(60);
        assert!(!b.admits(41), "60 + 41 > 100");
        assert!(b.admits(40));
        b.charge_pending(10);
        assert!(!b.admits(0), "pending responses at their bound");
        b.release_pending(10);
        b.release_inbound(60);
        assert!(b.admits(100));
        assert_eq!(b.snapshot(0).peak_inbound, 60);
    }

    #[test]
    fn overrun_is_twice_the_bound_and_release_saturates() {
        let b = Budget::new(100, 10);
        b.charge_inbound(150);
        assert!(b.inbound_full());
        assert!(!b.inbound_overrun(50));
        assert!(b.inbound_overrun(51));
        b.release_inbound(1_000);
        assert_eq!(b.snapshot(0).inbound, 0);
    }
}
