//! How a connection core ends: draining (this node leaving, or the peer), violations, and the
//! close that empties both tables.

use super::*;

impl<H: Handles> ConnCore<H> {
    /// True while this node drains: new calls from the peer are refused.
    pub(super) fn draining_locally(&self) -> bool {
        matches!(self.life, Lifecycle::Draining { local: true, .. })
    }

    /// True once the peer said it is going away: new calls to it fail at once.
    pub(crate) fn peer_leaving(&self) -> bool {
        matches!(self.life, Lifecycle::Draining { remote: true, .. })
    }

    /// True when this node drains and nothing is in flight any more, either way.
    pub(crate) fn drained(&self) -> bool {
        self.draining_locally() && self.admitted.is_empty() && self.calls.is_empty()
    }

    /// Starts draining: the peer is told with a go-away (code `ShuttingDown`), new calls from it
    /// are refused, calls in flight carry on. The shell closes the core once
    /// [`drained`](Self::drained) or when its bound passes.
    pub(crate) fn drain(&mut self) {
        let remote = match self.life {
            Lifecycle::Open => false,
            Lifecycle::Draining {
                local: false,
                remote,
            } => remote,
            _ => return,
        };
        self.life = Lifecycle::Draining {
            local: true,
            remote,
        };
        self.push_control(Frame::GoAway {
            error: ErrorRecord::text(ErrorCode::ShuttingDown, "draining"),
        });
    }

    // ---- the end of the connection ----------------------------------------------------------

    /// The peer broke a connection-level rule: tell it why (a go-away) and close.
    pub(super) fn violate(&mut self, violation: ProtocolViolation) {
        let record = ErrorRecord::text(ErrorCode::Protocol, violation.to_string());
        self.close_telling(CloseReason::violation(violation), record);
    }

    /// Closes like [`close`](Self::close), leaving one last frame to send: a go-away carrying
    /// `record`, so the peer learns why (a violation, or that this node is shutting down).
    pub(crate) fn close_telling(&mut self, reason: CloseReason, record: ErrorRecord) {
        if !self.is_open() {
            return;
        }
        self.close(reason);
        self.push_control(Frame::GoAway { error: record });
    }

    /// Closes the connection: every call this side started fails `Disconnected`, every call it
    /// serves is cancelled (`ShuttingDown` when a node is leaving, else `Disconnected`), and
    /// nothing more is admitted. Idempotent; the first reason is kept. Admission slots stay
    /// until each task reports [`finish`](Self::finish).
    pub(crate) fn close(&mut self, reason: CloseReason) {
        if !self.is_open() {
            return;
        }
        // A node that said it was leaving and then closed left cleanly: its callers and its
        // handlers learn that, not a crash.
        let leaving = reason.is_going_away() || self.peer_leaving();
        let reason = match reason.kind {
            CloseKind::SocketClosed if self.peer_leaving() => {
                CloseReason::remote(CloseKind::GoingAway("the peer drained and closed".into()))
            }
            _ => reason,
        };
        let (cause, lost) = if leaving {
            (CancelCause::ShuttingDown, MuxError::GoingAway)
        } else {
            (CancelCause::Disconnected, MuxError::Disconnected)
        };
        self.life = Lifecycle::Closed(reason.clone());
        self.reasm.clear(&self.budget);
        self.transmit.clear();
        self.timers.clear();
        self.unary_due = None;
        self.unary_walk_after = None;
        for (_, call) in self.calls.drain() {
            match call {
                Outgoing::Unary(reply, _) => self
                    .events
                    .push_back(Event::Reply(reply, Err(lost.clone()))),
                Outgoing::Stream(shared) => {
                    let mut slot = shared.lock();
                    slot.machine.link_lost(lost.clone());
                    slot.wake();
                }
            }
        }
        for (_, entry) in self.served.drain() {
            match entry.kind {
                ServedKind::Unary(cancel) => self.events.push_back(Event::Cancel(cancel, cause)),
                ServedKind::Stream(shared, cancel) => {
                    // The machine first: once it is aborted, a handler that returns because of
                    // the cancellation can no longer queue a clean end (which would turn a
                    // disconnect into a clean end of stream for the caller).
                    let mut slot = shared.lock();
                    slot.machine.abort(cause);
                    slot.settle();
                    slot.wake();
                    drop(slot);
                    self.events.push_back(Event::Cancel(cancel, cause));
                }
            }
        }
        self.events.push_back(Event::Closed(reason));
    }
}
