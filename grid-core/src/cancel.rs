//! The cancellation signal of one served call, with its cause.
//!
//! The connection core hands one to the shell with every admitted call and fires it (through an
//! event) when the caller cancels, the deadline passes or the connection drops; the handler's
//! [`Context`](crate::Context) and its stream ends watch it.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::mux::CancelCause;

/// The cancellation signal of one handler invocation, with its cause.
///
/// One small allocation per call: the cause (0 while not cancelled) and the waiters. (A
/// `CancellationToken` keeps a tree node for child tokens, which a call never has: about
/// 110 bytes more per running handler, which an idle stream pays for its whole life.)
#[derive(Clone, Default)]
pub(crate) struct CancelSignal(Arc<CancelInner>);

#[derive(Default)]
struct CancelInner {
    /// [`code`] of the first cause; 0 until cancelled.
    cause: AtomicU8,
    waiters: Notify,
}

const CAUSES: [CancelCause; 7] = [
    CancelCause::CallerGaveUp,
    CancelCause::Deadline,
    CancelCause::Disconnected,
    CancelCause::ShuttingDown,
    CancelCause::CallerUnresponsive,
    CancelCause::Protocol,
    CancelCause::Overloaded,
];

/// The non-zero code a cause is stored as: one more than its place in [`CAUSES`] (a match, so
/// a new cause does not compile until it has a code).
fn code(cause: CancelCause) -> u8 {
    match cause {
        CancelCause::CallerGaveUp => 1,
        CancelCause::Deadline => 2,
        CancelCause::Disconnected => 3,
        CancelCause::ShuttingDown => 4,
        CancelCause::CallerUnresponsive => 5,
        CancelCause::Protocol => 6,
        CancelCause::Overloaded => 7,
    }
}

impl fmt::Debug for CancelSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CancelSignal({:?})", self.cause())
    }
}

impl CancelSignal {
    /// Cancels with `cause`; the first cause wins.
    pub(crate) fn cancel(&self, cause: CancelCause) {
        let won = self
            .0
            .cause
            .compare_exchange(0, code(cause), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won {
            self.0.waiters.notify_waiters();
        }
    }

    pub(crate) fn cause(&self) -> Option<CancelCause> {
        match self.0.cause.load(Ordering::Acquire) {
            0 => None,
            c => CAUSES.get(usize::from(c) - 1).copied(),
        }
    }

    /// Resolves once cancelled, with the cause.
    ///
    /// # Cancel safety
    /// Cancel safe: it only waits.
    pub(crate) async fn cancelled(&self) -> CancelCause {
        loop {
            // Registered before the cause is read, so a cancel in between still wakes us
            // (`notify_waiters` reaches only waiters that are enabled).
            let notified = self.0.waiters.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(cause) = self.cause() {
                return cause;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_cancel_cause_wins() {
        let s = CancelSignal::default();
        s.cancel(CancelCause::Deadline);
        s.cancel(CancelCause::Disconnected);
        assert_eq!(s.cancelled().await, CancelCause::Deadline);
    }

    #[test]
    fn every_cause_round_trips() {
        for cause in CAUSES {
            let s = CancelSignal::default();
            assert_eq!(s.cause(), None);
            s.cancel(cause);
            assert_eq!(s.cause(), Some(cause));
            assert_eq!(CAUSES[usize::from(code(cause)) - 1], cause);
        }
    }

    #[tokio::test]
    async fn a_waiter_registered_before_the_cancel_wakes() {
        let s = CancelSignal::default();
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.cancelled().await }
        });
        tokio::task::yield_now().await;
        s.cancel(CancelCause::CallerGaveUp);
        let cause = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the waiter was not woken")
            .expect("the waiter panicked");
        assert_eq!(cause, CancelCause::CallerGaveUp);
    }
}
